//! Any bytes as a safetensors checkpoint, a transformers `config.json`, an open_clip config and a
//! `preprocessor_config.json`: errors, not panics or huge allocations.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("model.safetensors");
    std::fs::write(&st, data).unwrap();
    if let Ok(f) = vlp_core::checkpoint::TensorFile::open(&st) {
        let keys: Vec<String> = f.keys().map(str::to_string).collect();
        for k in keys.iter().take(16) {
            let _ = f.get(k);
        }
    }
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, data).unwrap();
    if let Ok(c) = vlp_align::pretrained::read_hf_config(&cfg) {
        let _ = c.validate();
    }
    let oc = dir.path().join("open_clip_config.json");
    std::fs::write(&oc, data).unwrap();
    let _ = vlp_align::pretrained::read_open_clip_config(&oc);
    // A whole model directory: config, preprocessing and weights from the same bytes.
    std::fs::write(dir.path().join("preprocessor_config.json"), data).unwrap();
    let _ = vlp_align::pretrained::read_pretrained_config(dir.path());
});
