//! Any text through the built-in CLIP BPE: exactly `context_length` ids, a start token, an end
//! token, a mask of ones then zeros; decoding never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vlp_text::{ClipTokenizer, Padding, Tokenizer};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for pad in [Padding::Zero, Padding::Eot] {
        let tok = ClipTokenizer::new(16, pad);
        let e = tok
            .encode(&text)
            .expect("the CLIP tokenizer represents any text");
        assert_eq!(e.ids.len(), 16);
        assert_eq!(e.attention_mask.len(), 16);
        assert_eq!(e.ids[0], 49406);
        let real = e.attention_mask.iter().filter(|&&m| m == 1).count();
        assert!(real >= 2 && e.attention_mask[..real].iter().all(|&m| m == 1));
        assert_eq!(e.ids[real - 1], 49407);
        let _ = tok.decode(&e.ids);
    }
});
