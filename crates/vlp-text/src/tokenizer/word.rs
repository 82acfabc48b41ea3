//! Word-level tokenizers over a closed vocabulary (small synthetic worlds, ablations).
//!
//! Built on `tokenizers`' `WordLevel` model so the result is an ordinary [`HfTokenizer`]: it
//! saves to a `tokenizer.json` that transformers and vlp both load. Ids follow CLIP's layout:
//! `<pad>` = 0 and the end token is the largest id, so pooling at the argmax id (open_clip) and
//! at the first end token (transformers) agree.

use std::collections::HashMap;

use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::{Lowercase, NFC, Sequence};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PaddingParams, PaddingStrategy, TruncationParams};

use super::HfTokenizer;

/// Special tokens of word tokenizers.
pub const PAD: &str = "<pad>";
/// Unknown word.
pub const UNK: &str = "<unk>";
/// Start of text.
pub const SOT: &str = "<|startoftext|>";
/// End of text (the largest id).
pub const EOT: &str = "<|endoftext|>";

/// A tokenizer that lower-cases, splits on whitespace and punctuation, and maps each word of
/// `words` to its own id (others to `<unk>`), framed by start/end tokens, padded with `<pad>`.
pub fn word_tokenizer(words: &[&str], context_length: usize) -> HfTokenizer {
    assert!(
        context_length >= 2,
        "word tokenizer: context length {context_length} cannot hold start and end tokens"
    );
    let mut vocab: Vec<String> = vec![PAD.into()];
    for w in words {
        let w = w.to_lowercase();
        if !vocab.contains(&w) {
            vocab.push(w);
        }
    }
    for t in [UNK, SOT, EOT] {
        vocab.push(t.into());
    }
    let ids: HashMap<String, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let (sot, eot) = (ids[SOT], ids[EOT]);
    let model = WordLevel::builder()
        .vocab(ids.into_iter().collect())
        .unk_token(UNK.into())
        .build()
        .expect("closed vocabulary with <unk>");
    let mut t = tokenizers::Tokenizer::new(model);
    t.with_normalizer(Some(Sequence::new(vec![NFC.into(), Lowercase.into()])));
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    let post = TemplateProcessing::builder()
        .try_single(format!("{SOT} $A {EOT}"))
        .expect("valid template")
        .special_tokens(vec![(SOT.to_string(), sot), (EOT.to_string(), eot)])
        .build()
        .expect("valid post-processor");
    t.with_post_processor(Some(post));
    t.add_special_tokens(&[
        AddedToken::from(SOT, true),
        AddedToken::from(EOT, true),
        AddedToken::from(PAD, true),
    ]);
    t.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(context_length),
        pad_id: 0,
        pad_token: PAD.into(),
        ..Default::default()
    }));
    t.with_truncation(Some(TruncationParams {
        max_length: context_length,
        ..Default::default()
    }))
    .expect("valid truncation");
    HfTokenizer::from_tokenizer(t, context_length)
}

/// The words of `texts` that `tok`, a [`word_tokenizer`], maps to `<unk>`, lower-cased as it
/// reads them, each once in order of first appearance (the whole texts: no truncation). Empty
/// for a tokenizer without `<unk>`.
pub fn unknown_words(tok: &HfTokenizer, texts: &[&str]) -> Vec<String> {
    let Some(unk) = tok.token_to_id(UNK) else {
        return Vec::new();
    };
    let mut whole = tok.inner().clone();
    whole.with_padding(None);
    // Cannot fail: `None` turns truncation off.
    let _ = whole.with_truncation(None);
    let mut out: Vec<String> = Vec::new();
    for text in texts {
        let Ok(e) = whole.encode(*text, false) else {
            continue;
        };
        for (&id, &(a, b)) in e.get_ids().iter().zip(e.get_offsets()) {
            let Some(word) = text.get(a..b) else { continue };
            let word = word.to_lowercase();
            if id == unk && !out.contains(&word) {
                out.push(word);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    #[test]
    fn frames_pads_and_round_trips() {
        let tok = word_tokenizer(&["a", "red", "circle", "photo", "of"], 8);
        let e = tok.encode("A photo of a RED circle").unwrap();
        // <pad>=0, a=1, red=2, circle=3, photo=4, of=5, <unk>=6, sot=7, eot=8
        assert_eq!(e.ids, vec![7, 1, 4, 5, 1, 2, 3, 8]);
        assert_eq!(e.attention_mask, vec![1; 8]);
        let e = tok.encode("a red star.").unwrap();
        assert_eq!(e.ids, vec![7, 1, 2, 6, 6, 8, 0, 0]);
        assert_eq!(e.attention_mask, vec![1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(
            tok.decode(&tok.encode("a red circle").unwrap().ids),
            "a red circle"
        );
        assert_eq!(tok.vocab_size(), 9);
        // Truncation keeps the end token.
        let e = tok.encode("a a a a a a a a a a a").unwrap();
        assert_eq!(e.ids[7], 8);
    }

    #[test]
    fn unknown_words_are_listed_once_beyond_the_context() {
        let tok = word_tokenizer(&["a", "red", "circle", "in", "the"], 4);
        let got = unknown_words(
            &tok,
            &[
                "a red circle",
                "A Lake in the north-west, a LAKE",
                "a red circle by a lake",
            ],
        );
        // "north-west" is three words to the BERT pre-tokenizer; "by" comes after the context.
        assert_eq!(got, ["lake", "north", "-", "west", ",", "by"]);
        assert!(unknown_words(&tok, &["a red circle", "the circle"]).is_empty());
    }

    #[test]
    fn saved_file_loads_back_identically() {
        let tok = word_tokenizer(&["a", "blue", "square"], 6);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        tok.save(&p).unwrap();
        let back = HfTokenizer::from_file(&p, None).unwrap();
        for t in ["a blue square", "blue", "unknown words here"] {
            assert_eq!(back.encode(t).unwrap(), tok.encode(t).unwrap());
        }
    }
}
