//! Any bytes as an image file, decoded and run through the CLIP pipeline.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vlp_data::preprocess::{ImagePipeline, Preprocess, decode_image};

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_image(data, "fuzz") {
        let px = ImagePipeline::clip(32).process(&img);
        assert_eq!(px.len(), 3 * 32 * 32);
        assert!(px.iter().all(|v| v.is_finite()));
        let g = ImagePipeline::siglip(16).geometry(img.width(), img.height());
        assert!(g.sx > 0.0 && g.sy > 0.0);
    }
});
