//! `vlp train` with `configs/ptp.toml` (a few steps of a tiny model), then `vlp caption` on what
//! it wrote, and its errors for bad inputs.

use std::path::{Path, PathBuf};

use vlp_data::shapes::{ShapesWorld, ShapesWorldConfig, Split};

use crate::{reference, text, vlp};

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Trains a tiny PTP model for 4 steps; returns its `final/` directory.
fn train(dir: &Path) -> PathBuf {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/ptp.toml");
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--run-dir".into(),
        dir.join("run").display().to_string(),
    ];
    for s in [
        "data.shapes.image_size=32",
        "data.train=\"shapes:train:32\"",
        "data.eval=\"shapes:test:6\"",
        "data.eval_unseen=\"\"",
        "data.batch_size=8",
        "data.workers=1",
        "model.width=16",
        "model.layers=1",
        "model.heads=2",
        "model.embed_dim=16",
        "optim.steps=4",
        "optim.warmup_steps=1",
        "eval.every=0",
        "checkpoint.every=0",
        "log.progress=false",
        "method.ptp.itm_layers=1",
        "method.ptp.decoder_layers=1",
        "method.ptp.n_heads=2",
        "method.ptp.d_hidden=16",
    ] {
        args.push("--set".into());
        args.push(s.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = vlp(&refs);
    assert!(o.status.success(), "{}", text(&o));
    let v = json_lines(&o).pop().expect("a final line");
    let f = &v["final"];
    assert_eq!(f["method"], "ptp", "{v}");
    // Six held-out images, each with a prompt to fill.
    assert_eq!(f["block_prompts"], 6.0, "{v}");
    let acc = f["block_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{v}");
    assert!(f["retrieval_i2t_r5"].is_number(), "{v}");
    PathBuf::from(f["run_dir"].as_str().unwrap()).join("final")
}

#[test]
fn a_trained_ptp_model_captions_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    for f in [
        "config.json",
        "model.safetensors",
        "decoder.safetensors",
        "decoder_config.json",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        assert!(model.join(f).is_file(), "final/ lacks {f}");
    }
    let world = ShapesWorld::new(ShapesWorldConfig {
        image_size: 32,
        ..Default::default()
    })
    .unwrap();
    let images: Vec<PathBuf> = (0..2)
        .map(|i| {
            let p = dir.path().join(format!("scene{i}.png"));
            world.sample(Split::Test, i).image.save(&p).unwrap();
            p
        })
        .collect();
    let m = model.to_str().unwrap();
    let (a, b) = (images[0].to_str().unwrap(), images[1].to_str().unwrap());
    for beams in ["1", "3"] {
        let o = vlp(&["caption", "--model", m, "--beams", beams, a, b]);
        assert!(o.status.success(), "{}", text(&o));
        let lines = json_lines(&o);
        assert_eq!(lines.len(), 2, "one line per image: {lines:?}");
        for (line, image) in lines.iter().zip([a, b]) {
            assert_eq!(line["image"], image, "{line}");
            let caption = line["caption"].as_str().unwrap();
            // Four steps teach little, but the words are the tokenizer's: no special tokens.
            assert!(!caption.contains("<|"), "{line}");
            let lp = line["log_prob"].as_f64().unwrap();
            assert!(lp.is_finite() && lp <= 0.0, "{line}");
            assert!(line["finished"].is_boolean(), "{line}");
        }
    }

    // Bad inputs: each a failure whose message names what is wrong.
    let bad = |args: &[&str], want: &str| {
        let o = vlp(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let t = text(&o);
        assert!(t.contains(want), "{args:?}: expected \"{want}\" in: {t}");
    };
    let missing = dir.path().join("nope.png");
    bad(
        &["caption", "--model", m, a, missing.to_str().unwrap()],
        "nope.png",
    );
    let clip = reference("clip_hf");
    bad(
        &["caption", "--model", clip.to_str().unwrap(), a],
        "has no decoder",
    );
    bad(&["caption", "--model", m, "--beams", "0", a], "--beams 0");
    // A decoder whose stored table does not fit its configuration: the load names the key.
    let cfg = model.join("decoder_config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let other = text.replace("\"context_positions\": 17", "\"context_positions\": 5");
    assert_ne!(other, text, "the decoder places the tower's 17 tokens");
    std::fs::write(&cfg, &other).unwrap();
    bad(
        &["caption", "--model", m, a],
        "\"context_position_embedding.weight\" has shape [17, 16], expected [5, 16]",
    );
    // A whole decoder that places 5 image tokens, where the tower writes 17 (16 patches at
    // 32 px, patch 8, and the class token).
    use vlp_core::backend::{DefaultBackend, default_device};
    let c: vlp_text::decoder::CausalDecoderConfig = serde_json::from_str(&other).unwrap();
    let decoder = c.init::<DefaultBackend>(&default_device());
    vlp_align::model::ptp::save_decoder(&decoder, &c, &model).unwrap();
    bad(
        &["caption", "--model", m, a],
        "the decoder places 5 image tokens, the image tower writes 17",
    );
}
