//! Checkpoint import errors, half-precision files, PyTorch files, export round trips and the
//! full-size layouts.

use std::collections::BTreeMap;
use std::path::Path;

use vlp_align::parity::check_parity;
use vlp_align::pretrained::{
    hf_state_dict_layout, load_pretrained, load_weights, read_hf_config, read_open_clip_config,
    save_hf,
};
use vlp_align::{ClipConfig, Layout};
use vlp_core::CoreError;
use vlp_core::backend::{DefaultBackend as B, default_device};
use vlp_core::checkpoint::{HostTensor, StoredDType, TensorFile, write_safetensors};

use crate::reference;

fn tensors(path: &Path) -> BTreeMap<String, HostTensor> {
    let f = TensorFile::open(path).unwrap();
    f.keys()
        .map(|k| (k.to_string(), f.get(k).unwrap()))
        .collect()
}

/// Loads `weights` with the clip_hf config and returns the error text.
fn load_error(weights: BTreeMap<String, HostTensor>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_safetensors(&path, &weights, StoredDType::F32, None).unwrap();
    let config = read_hf_config(reference("clip_hf/config.json")).unwrap();
    let err = load_weights::<B>(&config, &path, &default_device()).unwrap_err();
    assert!(
        matches!(
            err,
            vlp_align::AlignError::Core(CoreError::CheckpointMismatch { .. })
        ),
        "{err}"
    );
    err.to_string()
}

#[test]
fn missing_extra_and_misshaped_keys_are_named() {
    let good = tensors(&reference("clip_hf/model.safetensors"));

    let mut w = good.clone();
    w.remove("text_model.final_layer_norm.weight");
    let e = load_error(w);
    assert!(
        e.contains("missing key \"text_model.final_layer_norm.weight\""),
        "{e}"
    );

    let mut w = good.clone();
    w.insert(
        "vision_model.extra.weight".into(),
        HostTensor::new(vec![2], vec![0.0, 1.0]),
    );
    let e = load_error(w);
    assert!(
        e.contains("unused key \"vision_model.extra.weight\""),
        "{e}"
    );

    let mut w = good.clone();
    w.insert(
        "text_model.encoder.layers.1.mlp.fc1.bias".into(),
        HostTensor::new(vec![3], vec![0.0; 3]),
    );
    let e = load_error(w);
    assert!(
        e.contains("key \"text_model.encoder.layers.1.mlp.fc1.bias\" has shape [3], expected [64]"),
        "{e}"
    );

    // All three at once: one error lists all of them.
    let mut w = good;
    w.remove("logit_scale");
    w.insert("surplus".into(), HostTensor::new(vec![1], vec![0.0]));
    w.insert(
        "visual_projection.weight".into(),
        HostTensor::new(vec![64, 32], vec![0.0; 64 * 32]),
    );
    let e = load_error(w);
    for needle in [
        "missing key \"logit_scale\"",
        "unused key \"surplus\"",
        "key \"visual_projection.weight\" has shape [64, 32], expected [32, 64]",
    ] {
        assert!(e.contains(needle), "{needle} not in {e}");
    }
}

#[test]
fn unreadable_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = read_hf_config(reference("clip_hf/config.json")).unwrap();
    for (name, bytes) in [
        ("empty.safetensors", vec![]),
        ("junk.safetensors", b"not a checkpoint at all".to_vec()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = load_weights::<B>(&config, &p, &default_device())
            .unwrap_err()
            .to_string();
        assert!(e.contains(name), "{e}");
    }
    let full = std::fs::read(reference("clip_hf/model.safetensors")).unwrap();
    let p = dir.path().join("truncated.safetensors");
    std::fs::write(&p, &full[..full.len() / 2]).unwrap();
    let e = load_weights::<B>(&config, &p, &default_device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated.safetensors"), "{e}");
}

#[test]
fn half_precision_copies_load_and_match() {
    let dev = default_device();
    let good = tensors(&reference("clip_hf/model.safetensors"));
    // Rounding the weights costs ~2^-11 (f16) or ~2^-8 (bf16) relative; the largest outputs are
    // the logits (|x| up to ~15 after exp(logit_scale)), hence these absolute bounds. Measured:
    // f16 5.0e-3 (logits), bf16 see the note printed below.
    for (dtype, atol) in [(StoredDType::F16, 1e-2), (StoredDType::BF16, 1e-1)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            reference("clip_hf/config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        write_safetensors(dir.path().join("model.safetensors"), &good, dtype, None).unwrap();
        assert_eq!(
            TensorFile::open(dir.path().join("model.safetensors"))
                .unwrap()
                .dtype("logit_scale"),
            Some(dtype)
        );
        let p = load_pretrained::<B>(dir.path(), &dev).unwrap();
        let report =
            check_parity(&p, reference("clip_hf/expected.safetensors"), atol, &dev).unwrap();
        let worst = report
            .checks
            .iter()
            .map(|c| c.max_abs_err)
            .fold(0.0f32, f32::max);
        println!(
            "{dtype:?}: worst max abs error {worst:.3e} over {} outputs",
            report.checks.len()
        );
        assert!(report.passed(), "{dtype:?}: {:?}", report.checks);
        // And it really is lower precision than the f32 original.
        assert!(worst > 1e-5, "{dtype:?} copy suspiciously exact");
    }
}

#[test]
fn pytorch_files_load() {
    let dev = default_device();
    // transformers' pytorch_model.bin (zip) next to the HF config.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        reference("clip_hf/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        reference("pytorch/pytorch_model.bin"),
        dir.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let p = load_pretrained::<B>(dir.path(), &dev).unwrap();
    assert!(
        check_parity(&p, reference("clip_hf/expected.safetensors"), 1e-4, &dev)
            .unwrap()
            .passed()
    );
    // An open_clip training checkpoint: {"state_dict": {"module.visual...": ...}}.
    let (config, _) =
        read_open_clip_config(reference("clip_openclip/open_clip_config.json")).unwrap();
    let (model, layout) =
        load_weights::<B>(&config, reference("pytorch/open_clip_checkpoint.pt"), &dev).unwrap();
    assert_eq!(layout, Layout::OpenClip);
    let pre = vlp_align::Pretrained {
        model,
        config,
        layout,
        preprocess: p.preprocess.clone(),
        weights: "x".into(),
    };
    assert!(
        check_parity(
            &pre,
            reference("clip_openclip/expected.safetensors"),
            1e-4,
            &dev
        )
        .unwrap()
        .passed()
    );
}

#[test]
fn hf_export_round_trips_and_converts_open_clip() {
    let dev = default_device();
    for (src, expected) in [
        ("clip_hf", "clip_hf"),
        ("siglip_hf", "siglip_hf"),
        ("clip_openclip", "clip_openclip"),
    ] {
        let p = load_pretrained::<B>(reference(src), &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_hf(&p.model, &p.config, dir.path(), StoredDType::F32).unwrap();
        let back = load_pretrained::<B>(dir.path(), &dev).unwrap();
        assert_eq!(back.layout, Layout::Hf, "{src}");
        // Same outputs as the original reference, now from a transformers-layout file.
        let report = check_parity(
            &back,
            reference(&format!("{expected}/expected.safetensors")),
            1e-4,
            &dev,
        )
        .unwrap();
        assert!(report.passed(), "{src}: {:?}", report.checks);
        if src != "clip_openclip" {
            // HF → HF rewrites the same keys with the same shapes.
            let a = TensorFile::open(reference(&format!("{src}/model.safetensors"))).unwrap();
            let b = TensorFile::open(dir.path().join("model.safetensors")).unwrap();
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
            for k in a.keys() {
                assert_eq!(a.get(k).unwrap(), b.get(k).unwrap(), "{k}");
            }
        }
    }
}

#[test]
fn full_size_presets_match_public_checkpoint_manifests() {
    let manifests: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("manifests.json")).unwrap())
            .unwrap();
    for (id, config) in [
        ("hf:openai/clip-vit-base-patch32", ClipConfig::vit_b_32()),
        ("hf:openai/clip-vit-base-patch16", ClipConfig::vit_b_16()),
        ("hf:openai/clip-vit-large-patch14", ClipConfig::vit_l_14()),
        (
            "hf:google/siglip-base-patch16-224",
            ClipConfig::siglip_b_16_224(),
        ),
    ] {
        let want: BTreeMap<String, Vec<usize>> = manifests[id]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect(),
                )
            })
            .collect();
        let got = hf_state_dict_layout::<B>(&config, &default_device());
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{id}: missing {missing:?}, extra {extra:?}"
        );
        for (k, shape) in &want {
            assert_eq!(&got[k], shape, "{id}: {k}");
        }
        println!("{id}: {} keys match", want.len());
    }
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let mut w = tensors(&reference("clip_hf/model.safetensors"));
    w.get_mut("vision_model.post_layernorm.weight")
        .unwrap()
        .data[3] = f32::NAN;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write_safetensors(&path, &w, StoredDType::F32, None).unwrap();
    let config = read_hf_config(reference("clip_hf/config.json")).unwrap();
    let e = load_weights::<B>(&config, &path, &default_device())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vision_model.post_layernorm.weight") && e.contains("non-finite"),
        "{e}"
    );
}

#[test]
fn a_pipeline_that_does_not_fit_the_model_is_refused() {
    // The fixture model sees 32-pixel images; a preprocessor config cropping 36 would feed it
    // images of the wrong size.
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(reference(&format!("clip_hf/{f}")), dir.path().join(f)).unwrap();
    }
    let config = read_hf_config(reference("clip_hf/config.json")).unwrap();
    let side = config.vision.image_size;
    let write = |size: serde_json::Value, crop: serde_json::Value| {
        std::fs::write(
            dir.path().join("preprocessor_config.json"),
            serde_json::json!({"image_processor_type": "CLIPImageProcessor", "size": size, "crop_size": crop})
                .to_string(),
        )
        .unwrap();
    };
    write(serde_json::json!(side + 4), serde_json::json!(side + 4));
    let e = load_pretrained::<B>(dir.path(), &default_device())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("preprocessing") && e.contains(&format!("{side}x{side}")),
        "{e}"
    );
    // Resize larger, crop to the model's size: both steps kept.
    write(serde_json::json!(side + 4), serde_json::json!(side));
    let p = load_pretrained::<B>(dir.path(), &default_device()).unwrap();
    assert_eq!((p.preprocess.resize, p.preprocess.size), (side + 4, side));
}

#[test]
fn parity_fails_on_non_finite_outputs_whatever_the_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let mut want = tensors(&reference("clip_hf/expected.safetensors"));
    let key = want.keys().find(|k| k.contains("embeds")).unwrap().clone();
    want.get_mut(&key).unwrap().data[0] = f32::NAN;
    let path = dir.path().join("expected.safetensors");
    write_safetensors(&path, &want, StoredDType::F32, None).unwrap();
    let p = load_pretrained::<B>(reference("clip_hf"), &default_device()).unwrap();
    let report = check_parity(&p, &path, f32::INFINITY, &default_device()).unwrap();
    let check = report.checks.iter().find(|c| c.name == key).unwrap();
    assert!(!check.passed && !report.passed(), "{check:?}");
}
