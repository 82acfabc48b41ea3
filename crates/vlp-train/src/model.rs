//! The tokenizer a configuration asks for (models are built by their [`Method`](crate::method::Method)).

use vlp_text::Padding;
use vlp_text::tokenizer::{ResolvedTokenizer, resolve};

use vlp_data::source::Source;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// A tokenizer plus what the text tower must know about it (`vlp_text`'s resolver decides).
pub type BuiltTokenizer = ResolvedTokenizer;

/// Builds the tokenizer of `[tokenizer]`: `words` (ShapesWorld's vocabulary), `clip` (the
/// built-in BPE, zero padding as open_clip trains) or a `tokenizer.json` path.
pub fn build_tokenizer(cfg: &TrainConfig) -> Result<BuiltTokenizer> {
    Ok(resolve(
        &cfg.tokenizer.kind,
        cfg.tokenizer.context_length,
        Padding::Zero,
        &vlp_data::shapes::vocabulary(),
    )?)
}

/// Training samples the `words` vocabulary check reads.
const VOCABULARY_CHECK_SAMPLES: usize = 64;

/// With `tokenizer.kind = "words"`, refuses a training source whose captions hold words the
/// closed vocabulary lacks: they would all train as `<unk>` and the run would end with numbers
/// that mean nothing (SceneWorld's or a user's captions under ShapesWorld's vocabulary). Names
/// the words, the first sample that has one, and the fix. Reads the first 64 samples of a
/// random-access source; a streaming (`wds:`) source is not read ahead.
pub fn check_vocabulary(cfg: &TrainConfig, tok: &BuiltTokenizer, source: &Source) -> Result<()> {
    let (Some(hf), Source::Indexed(s)) = (&tok.hf, source) else {
        return Ok(());
    };
    if cfg.tokenizer.kind != "words" {
        return Ok(());
    }
    let mut unknown: Vec<String> = Vec::new();
    let mut first = None;
    for i in 0..s.len().min(VOCABULARY_CHECK_SAMPLES) {
        // Samples the loader would skip are its business (it counts and bounds them).
        let Ok(sample) = s.get(i) else { continue };
        let caps: Vec<&str> = sample.captions.iter().map(String::as_str).collect();
        for w in vlp_text::tokenizer::unknown_words(hf, &caps) {
            first.get_or_insert_with(|| sample.key.clone());
            if !unknown.contains(&w) {
                unknown.push(w);
            }
        }
    }
    let Some(key) = first else { return Ok(()) };
    let shown: Vec<String> = unknown.iter().take(8).map(|w| format!("\"{w}\"")).collect();
    let more = unknown.len().saturating_sub(shown.len());
    Err(TrainError::Config(format!(
        "tokenizer.kind = \"words\" is ShapesWorld's closed vocabulary; the captions of `{}` use \
         words it does not know ({}{}; first in sample `{key}`), which would all train as \
         `<unk>`: set tokenizer.kind = \"clip\" (the built-in BPE) or the path of a \
         tokenizer.json",
        cfg.data.train,
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(overrides: &[&str]) -> Result<()> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let cfg = TrainConfig::load(None, &o).unwrap();
        let source = vlp_data::source::open_source(&cfg.data.train, &cfg.data.shapes).unwrap();
        check_vocabulary(&cfg, &build_tokenizer(&cfg).unwrap(), &source)
    }

    #[test]
    fn words_tokenizer_refuses_captions_it_cannot_read() {
        // ShapesWorld's own captions, every mode: known words only.
        check(&["data.train=\"shapes:train:64\""]).unwrap();
        check(&["data.train=\"shapes:train:64\"", "data.shapes.actions=true"]).unwrap();
        // SceneWorld's words are not ShapesWorld's.
        let e = check(&["data.train=\"scenes:train:64\""])
            .unwrap_err()
            .to_string();
        for part in [
            "scenes:train:64",
            "scenes-train-",
            "tokenizer.kind = \"clip\"",
        ] {
            assert!(e.contains(part), "{part} missing from: {e}");
        }
        assert!(
            e.contains(" more;"),
            "more than 8 unknown words are counted: {e}"
        );
        // The 8 words shown are SceneWorld's and outside ShapesWorld's vocabulary.
        let shown = &e[e.find("know (").unwrap() + 6..e.find(" and ").unwrap()];
        let words: Vec<&str> = shown.split(", ").map(|w| w.trim_matches('"')).collect();
        assert_eq!(words.len(), 8, "{e}");
        let shapes = TrainConfig::default().data.shapes;
        let world = vlp_data::scenes::SceneWorld::new(shapes.image_size, shapes.seed).unwrap();
        let captions = (0..64)
            .flat_map(|i| world.sample(vlp_data::shapes::Split::Train, i).captions)
            .collect::<Vec<_>>()
            .join(" ");
        let known = vlp_data::shapes::vocabulary();
        for w in words {
            assert!(!known.contains(&w), "\"{w}\" is in the vocabulary: {e}");
            assert!(captions.contains(w), "\"{w}\" is in no caption: {e}");
        }
        // The BPE reads anything.
        check(&["data.train=\"scenes:train:64\"", "tokenizer.kind=\"clip\""]).unwrap();
    }
}
