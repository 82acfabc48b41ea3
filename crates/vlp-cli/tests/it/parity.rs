//! `vlp check-parity` and `vlp convert`.

use std::collections::BTreeMap;

use vlp_core::checkpoint::{StoredDType, TensorFile, write_safetensors};

use crate::{reference, text, vlp};

#[test]
fn check_parity_passes_on_the_three_fixtures() {
    for dir in ["clip_hf", "clip_openclip", "siglip_hf"] {
        let model = reference(dir);
        let expected = reference(&format!("{dir}/expected.safetensors"));
        let o = vlp(&[
            "check-parity",
            "--model",
            model.to_str().unwrap(),
            "--expected",
            expected.to_str().unwrap(),
        ]);
        let out = text(&o);
        assert!(o.status.success(), "{dir}: {out}");
        assert!(
            out.contains("logits_per_image") && out.contains("max abs err"),
            "{out}"
        );
    }
}

#[test]
fn check_parity_fails_on_a_perturbed_file_naming_the_tensor() {
    let f = TensorFile::open(reference("clip_hf/expected.safetensors")).unwrap();
    let mut t: BTreeMap<_, _> = f
        .keys()
        .map(|k| (k.to_string(), f.get(k).unwrap()))
        .collect();
    t.get_mut("text_embeds").unwrap().data[5] += 0.01;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("perturbed.safetensors");
    write_safetensors(&path, &t, StoredDType::F32, None).unwrap();
    let o = vlp(&[
        "check-parity",
        "--model",
        reference("clip_hf").to_str().unwrap(),
        "--expected",
        path.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("FAIL text_embeds"), "{out}");
    assert!(
        out.contains("parity failed") && out.contains("text_embeds"),
        "{out}"
    );

    // A file with no known output compares nothing, which is a failure too.
    let only_inputs: BTreeMap<_, _> = t.into_iter().filter(|(k, _)| k == "pixel_values").collect();
    write_safetensors(&path, &only_inputs, StoredDType::F32, None).unwrap();
    let o = vlp(&[
        "check-parity",
        "--model",
        reference("clip_hf").to_str().unwrap(),
        "--expected",
        path.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no known output"), "{}", text(&o));
}

#[test]
fn convert_open_clip_to_transformers_keeps_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hf");
    let o = vlp(&[
        "convert",
        "--model",
        reference("clip_openclip").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("config.json").is_file());
    let expected = reference("clip_openclip/expected.safetensors");
    let o = vlp(&[
        "check-parity",
        "--model",
        out.to_str().unwrap(),
        "--expected",
        expected.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
}
