//! Pixel-Linguist through the runner (Xiao et al., 2024): stage 1 (typo and shuffle positives)
//! trained by `model.init_from`, stage 3 (paraphrase positives, contradiction hard negatives)
//! on top, and the paper's claims in miniature against the untrained encoder of the same seed.

use burn::module::Module;
use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_train::TrainConfig;
use vlp_train::method::pixel_linguist::PixelLinguistMethod;
use vlp_train::method::{EvalContext, Method, Metrics};
use vlp_train::model::build_tokenizer;

use crate::per_seed;

fn config(seed: u64, root: &std::path::Path, extra: &[String]) -> TrainConfig {
    let mut o: Vec<String> = [
        "method.kind=\"pixel_linguist\"",
        "data.batch_size=64",
        "data.shapes.image_size=16",
        "data.eval=\"\"",
        "data.eval_unseen=\"\"",
        "optim.lr=0.001",
        "optim.warmup_steps=20",
        "log.progress=false",
        "eval.every=0",
        "checkpoint.every=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("run.seed={seed}"));
    o.push(format!("run.dir={:?}", root.to_str().unwrap()));
    o.extend_from_slice(extra);
    TrainConfig::load(None, &o).unwrap()
}

/// The metrics of the untrained encoder `cfg`'s run starts from.
fn untrained(cfg: &TrainConfig) -> Metrics {
    let method = PixelLinguistMethod::from_config(cfg).unwrap();
    let dev = default_device();
    let model = vlp_train::optim::seeded_model::<DefaultBackend, _, ()>(&dev, cfg.run.seed, || {
        Ok(method.architecture().init::<DefaultBackend>(&dev))
    })
    .unwrap();
    let tok = build_tokenizer(cfg).unwrap();
    let ctx = EvalContext {
        eval: None,
        unseen: None,
        tokenizer: tok.tokenizer.as_ref(),
        templates: &cfg.eval.templates,
        device: &dev,
    };
    method.evaluate(&model, &ctx).unwrap()
}

struct Run {
    untrained: Metrics,
    stage1: serde_json::Value,
    last: vlp_train::FinalReport,
    root: tempfile::TempDir,
}

/// Stage 1 for `steps` through `model.init_from`, then stage 3 for `steps`.
fn two_stages(seed: u64, steps: usize) -> Run {
    let root = tempfile::tempdir().unwrap();
    let stage1 = config(
        seed,
        root.path(),
        &[
            "run.name=\"unsup\"".into(),
            "method.pixel_linguist.stage=\"unsupervised\"".into(),
            format!("optim.steps={steps}"),
        ],
    );
    let untrained = untrained(&stage1);
    let file = root.path().join("unsup.toml");
    std::fs::write(&file, toml::to_string_pretty(&stage1).unwrap()).unwrap();
    let cfg = config(
        seed,
        root.path(),
        &[
            "run.name=\"sup\"".into(),
            "method.pixel_linguist.stage=\"supervised\"".into(),
            format!("model.init_from={:?}", file.to_str().unwrap()),
            "optim.lr=0.0005".into(),
            format!("optim.steps={steps}"),
        ],
    );
    let last = vlp_train::train_method::<TrainBackend, _>(
        &cfg,
        PixelLinguistMethod::from_config(&cfg).unwrap(),
        crate::devices(&cfg),
        vlp_train::RunOptions {
            run_dir: Some(root.path().join("sup")),
            ..Default::default()
        },
    )
    .unwrap();
    let stage1 = serde_json::from_str(
        &std::fs::read_to_string(root.path().join("unsup/final.json")).unwrap(),
    )
    .unwrap();
    Run {
        untrained,
        stage1,
        last,
        root,
    }
}

fn stage1_metric(v: &serde_json::Value, k: &str) -> f64 {
    v.pointer(&format!("/final/{k}"))
        .or_else(|| v.get(k))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("{k} missing from {v}"))
}

/// The claims: after training, a held-out sentence is closer to a typo of itself than to another
/// sentence ≥ 95 % of the time, and synthetic STS Spearman is ≥ 0.6 and above the untrained
/// encoder's; averaged over seeds 1–3 (stages of 150 steps at batch 64).
///
/// Measured (2026-12-01, 176 s on 2 cores, the three seeds side by side): untrained STS
/// Spearman 0.156 / 0.175 / 0.143 and typo robustness 0.87 / 0.86 / 0.85; after stage 1, STS
/// 0.634 / 0.594 / 0.571, typo 1.000 on every seed; after stage 3, STS 0.773 / 0.769 / 0.762
/// (mean 0.768), typo 0.998 / 0.995 / 0.993; written in the mirrored script (never trained on)
/// STS 0.57–0.60, flipped 0.39–0.44.
#[test]
#[ignore = "claim test: about 3 minutes on 2 cores; cargo test -p vlp-train --test it pixel_sentence -- --ignored --nocapture"]
fn pixel_sentence_encoder_learns_typo_robust_graded_similarity() {
    let runs: Vec<Run> = per_seed(&[1, 2, 3], |s| two_stages(s, 150));
    let mean = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
    let m = |r: &Run, k: &str| r.last.metric(k).unwrap_or_else(|| panic!("{k} missing"));
    for (i, r) in runs.iter().enumerate() {
        eprintln!(
            "seed {}: untrained sts {:.3} typo {:.3} | stage 1 sts {:.3} typo {:.3} | \
             stage 3 sts {:.3} typo {:.3} (mirrored sts {:.3}, flipped {:.3})",
            i + 1,
            r.untrained["sts_spearman"],
            r.untrained["typo_robustness"],
            stage1_metric(&r.stage1, "sts_spearman"),
            stage1_metric(&r.stage1, "typo_robustness"),
            m(r, "sts_spearman"),
            m(r, "typo_robustness"),
            m(r, "sts_spearman_mirrored"),
            m(r, "sts_spearman_flipped"),
        );
    }
    let sts = mean(&|r| m(r, "sts_spearman"));
    let sts0 = mean(&|r| r.untrained["sts_spearman"]);
    let typo = mean(&|r| m(r, "typo_robustness"));
    eprintln!("mean: untrained sts {sts0:.3}, trained sts {sts:.3}, typo {typo:.3}");
    assert!(typo >= 0.95, "typo robustness {typo}");
    assert!(sts >= 0.6, "STS Spearman {sts}");
    assert!(sts > sts0 + 0.2, "STS {sts} vs untrained {sts0}");
    // The export is the encoder the run ended with, and reloads.
    let dir = runs[0].root.path().join("sup/final");
    let (model, cfg) =
        vlp_vision::pixel_text::load_pixel_text::<DefaultBackend>(&dir, &default_device()).unwrap();
    assert_eq!(cfg.d_model, 64);
    assert!(model.num_params() > 0);
}

/// Mixed precision: the rendered strips go in in the compute type (they were f32 against bf16
/// weights before, and the first matmul refused them).
#[test]
fn pixel_linguist_trains_under_bf16() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(
        0,
        root.path(),
        &[
            "precision.mode=\"bf16\"".into(),
            "data.batch_size=8".into(),
            "optim.steps=3".into(),
            "optim.warmup_steps=1".into(),
            "method.pixel_linguist.width=16".into(),
            "method.pixel_linguist.heads=2".into(),
            "method.pixel_linguist.eval_pairs=20".into(),
            "method.pixel_linguist.eval_sentences=20".into(),
        ],
    );
    let r = vlp_train::train_method::<TrainBackend, _>(
        &cfg,
        PixelLinguistMethod::from_config(&cfg).unwrap(),
        crate::devices(&cfg),
        vlp_train::RunOptions {
            run_dir: Some(root.path().join("bf16")),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.steps, 3);
    assert_eq!(r.skipped_steps, 0);
    assert!(r.final_loss.is_finite() && r.final_loss > 0.0);
}
