//! Tokenizers against the reference ids of open_clip and transformers.

use std::path::PathBuf;

use vlp_text::{ClipTokenizer, HfTokenizer, Padding, Tokenizer};

fn reference(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference")
        .join(rel)
}

struct Case {
    text: String,
    open_clip: Vec<u32>,
    hf: Vec<u32>,
    hf_mask: Vec<u32>,
    same: bool,
}

fn cases() -> Vec<Case> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("tokens.json")).unwrap()).unwrap();
    let ids = |x: &serde_json::Value| {
        x.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect()
    };
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| Case {
            text: e["text"].as_str().unwrap().to_string(),
            open_clip: ids(&e["open_clip"]),
            hf: ids(&e["hf"]),
            hf_mask: ids(&e["hf_attention_mask"]),
            same: e["same"].as_bool().unwrap(),
        })
        .collect()
}

#[test]
fn builtin_tokenizer_gives_open_clip_ids() {
    let tok = ClipTokenizer::default();
    let cases = cases();
    assert!(cases.len() >= 6);
    for c in &cases {
        assert_eq!(
            tok.encode(&c.text).unwrap().ids,
            c.open_clip,
            "{:?}",
            c.text
        );
    }
    // Batch encoding gives the same rows.
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batch = tok.encode_batch(&texts).unwrap();
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(batch.row(i).ids, c.open_clip);
    }
}

#[test]
fn builtin_tokenizer_in_hf_layout_matches_transformers_where_they_agree() {
    let tok = ClipTokenizer::hf();
    for c in cases().iter().filter(|c| c.same) {
        let e = tok.encode(&c.text).unwrap();
        assert_eq!(e.ids, c.hf, "{:?}", c.text);
        assert_eq!(e.attention_mask, c.hf_mask, "{:?}", c.text);
    }
}

#[test]
fn tokenizer_json_gives_transformers_ids_and_mask() {
    let tok = HfTokenizer::from_file(reference("tokenizer/tokenizer.json"), None).unwrap();
    assert_eq!(tok.context_length(), 77);
    let cases = cases();
    for c in &cases {
        let e = tok.encode(&c.text).unwrap();
        assert_eq!(e.ids, c.hf, "{:?}", c.text);
        assert_eq!(e.attention_mask, c.hf_mask, "{:?}", c.text);
    }
    // The documented edge case: a literal <|endoftext|> is a special token for tokenizer.json
    // and plain characters for open_clip.
    let edge = cases
        .iter()
        .find(|c| !c.same)
        .expect("the fixture has the edge case");
    assert!(edge.text.contains("<|endoftext|>"));
    assert_eq!(tok.encode(&edge.text).unwrap().ids[1], 49407);
    assert_ne!(
        ClipTokenizer::default().encode(&edge.text).unwrap().ids[1],
        49407
    );
}

#[test]
fn builtin_vocabulary_is_the_reference_vocab_json() {
    let vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(reference("tokenizer/vocab.json")).unwrap())
            .unwrap();
    let tok = ClipTokenizer::default();
    assert_eq!(tok.vocab_size(), vocab.len());
    assert_eq!(tok.vocab_size(), 49408);
    // Every entry decodes to its own id: the built vocabulary has the reference order.
    for (token, id) in &vocab {
        let id = id.as_u64().unwrap() as u32;
        if id < 49406 {
            assert_eq!(tok.token(id), Some(token.as_str()), "id {id}");
        }
    }
}

#[test]
fn decode_inverts_encode_up_to_cleaning() {
    let tok = ClipTokenizer::default();
    for text in [
        "a photo of a cat",
        "two people riding bikes near the river",
        "café crème 🐱",
    ] {
        assert_eq!(tok.decode(&tok.encode(text).unwrap().ids), text);
    }
    // Like open_clip, every pre-token ends a word, so punctuation comes back spaced.
    assert_eq!(
        tok.decode(&tok.encode("bikes, near the river!").unwrap().ids),
        "bikes , near the river !"
    );
    let hf = ClipTokenizer::hf();
    assert_eq!(
        hf.decode(&hf.encode("A PHOTO of a dog").unwrap().ids),
        "a photo of a dog"
    );
}

#[test]
fn context_length_and_truncation() {
    let long = vec!["word"; 300].join(" ");
    for n in [8usize, 77, 248] {
        let e = ClipTokenizer::new(n, Padding::Zero).encode(&long).unwrap();
        assert_eq!(e.ids.len(), n);
        assert_eq!(e.ids[0], 49406);
        assert_eq!(e.ids[n - 1], 49407);
        assert!(e.attention_mask.iter().all(|&m| m == 1));
    }
    let hf = HfTokenizer::from_file(reference("tokenizer/tokenizer.json"), Some(248)).unwrap();
    let e = hf.encode(&long).unwrap();
    assert_eq!(e.ids.len(), 248);
    assert_eq!(e.ids[247], 49407);
}

#[test]
fn bad_tokenizer_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken-tokenizer.json");
    std::fs::write(&p, "{ not json").unwrap();
    let e = HfTokenizer::from_file(&p, None).unwrap_err().to_string();
    assert!(e.contains("broken-tokenizer.json"), "{e}");
    let e = HfTokenizer::from_file(dir.path().join("absent.json"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.json"), "{e}");
    // Found by fuzz/hf_tokenizer: a malformed `decoder` made tokenizers panic.
    let crash = env!("CARGO_MANIFEST_DIR").to_string()
        + "/tests/fuzz_regressions/hf_tokenizer_decoder_panic.json";
    let e = HfTokenizer::from_file(&crash, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("hf_tokenizer_decoder_panic.json"), "{e}");
    assert!(e.contains("malformed"), "{e}");
}

#[test]
fn builtin_tokenizer_matches_open_clip_on_extra_edge_cases() {
    // Generated by tests/reference/make_tokens_extra.py with open_clip's tokenizer: HTML
    // entities, curly quotes, ligatures, full-width forms, control characters, NFD input,
    // open_clip's own special-token names typed in text, ZWJ emoji.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("tokens_extra.json")).unwrap())
            .unwrap();
    let tok = ClipTokenizer::default();
    for c in v["cases"].as_array().unwrap() {
        let want: Vec<u32> = c["open_clip"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode(c["text"].as_str().unwrap()).unwrap().ids,
            want,
            "{:?}",
            c["text"]
        );
    }
}
