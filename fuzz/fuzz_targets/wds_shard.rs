//! Any bytes as a WebDataset shard (plain, and gzip-compressed when they start like gzip):
//! reading must end in samples and counted skips, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let gz = data.starts_with(&[0x1f, 0x8b]);
    let path = dir.path().join(if gz { "s.tar.gz" } else { "s.tar" });
    std::fs::write(&path, data).unwrap();
    let mut n = 0usize;
    vlp_data::source::read_shard(&path, |r| {
        if let Ok(s) = r {
            // Decoding what a shard holds is the loader's next step.
            if let vlp_data::source::RawImage::Encoded(b) = &s.image {
                let _ = vlp_data::preprocess::decode_image(b, &s.key);
            }
        }
        n += 1;
        n < 10_000
    });
});
