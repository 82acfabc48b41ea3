//! Any bytes as a `tokenizer.json`: loading fails with an error naming the file, or the
//! tokenizer encodes to the context length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vlp_text::{HfTokenizer, Tokenizer};

static QUIET_PANICS: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    // `HfTokenizer::from_file` catches the panics the tokenizers crate raises on some malformed
    // files and returns an error; libfuzzer-sys's panic hook would abort on them before the
    // catch. A silent hook keeps them caught; a panic that escapes still aborts (libfuzzer-sys
    // checks the target's result with `catch_unwind`).
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, data).unwrap();
    match HfTokenizer::from_file(&path, Some(8)) {
        Ok(tok) => {
            if let Ok(e) = tok.encode("a photo of a cat") {
                assert_eq!(e.ids.len(), 8);
            }
        }
        Err(e) => assert!(e.to_string().contains("tokenizer.json")),
    }
});
