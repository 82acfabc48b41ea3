//! SemAIM through the runner (Song et al., 2023): image-only pretraining (no captions), the
//! export, and the paper's claims in miniature against the randomly
//! initialised encoder of the same seed, probed the same way.

use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_train::TrainConfig;
use vlp_train::method::Metrics;
use vlp_train::method::semaim::{SemAimMethod, load_semaim};

use crate::per_seed;

/// The model of the measurements in the module doc of `vlp_train::method::semaim`: a CLIP
/// vision tower in patches of 4 on 32-pixel ShapesWorld images, AdamW at 1e-3.
fn config(seed: u64, steps: usize, extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = [
        "method.kind=\"semaim\"",
        "model.patch_size=4",
        "data.eval_unseen=\"\"",
        "optim.lr=0.001",
        "optim.weight_decay=0.05",
        "optim.warmup_steps=50",
        "eval.every=0",
        "log.progress=false",
        "checkpoint.every=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("run.seed={seed}"));
    o.push(format!("optim.steps={steps}"));
    o.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::load(None, &o).unwrap()
}

/// One line of a claim test's per-seed report: the probes before and after, and the orders.
fn describe(before: &Metrics, after: &vlp_train::FinalReport) -> String {
    let m = |k: &str| after.metric(k).unwrap();
    format!(
        "probe shape {:.3} -> {:.3}, colour {:.3} -> {:.3}; first quarter on objects {:.3} \
         (random {:.3}); first patch on main object {:.3} (raster {:.3})",
        before["probe_shape"],
        m("probe_shape"),
        before["probe_colour"],
        m("probe_colour"),
        m("first_quarter_on_objects"),
        m("random_quarter_on_objects"),
        m("first_patch_on_main_object"),
        m("raster_first_patch_on_main_object"),
    )
}

/// A 16-wide 2-layer SemAIM on 64 training and 40 held-out images: seconds per run.
const TINY: [&str; 7] = [
    "model.width=16",
    "model.layers=2",
    "model.heads=2",
    "data.batch_size=8",
    "data.train=\"shapes:train:64\"",
    "data.eval=\"shapes:test:40\"",
    "optim.warmup_steps=1",
];

/// Metrics of the encoder `cfg`'s run starts from.
fn untrained(cfg: &TrainConfig) -> Metrics {
    use vlp_train::method::{BuildContext, Method};
    let method = SemAimMethod::from_config(cfg).unwrap();
    let tok = vlp_train::model::build_tokenizer(cfg).unwrap();
    let ctx = BuildContext {
        config: cfg,
        tokenizer: &tok,
    };
    let dev = default_device();
    let model = vlp_train::optim::seeded_model::<DefaultBackend, _, _>(&dev, cfg.run.seed, || {
        method.build::<DefaultBackend>(&ctx, &dev)
    })
    .unwrap();
    let set = crate::held_out(cfg, &cfg.data.eval);
    crate::evaluated(&method, &model, &set, cfg)
}

fn train(cfg: &TrainConfig, dir: &std::path::Path) -> vlp_train::FinalReport {
    vlp_train::train_method::<TrainBackend, _>(
        cfg,
        SemAimMethod::from_config(cfg).unwrap(),
        crate::devices(cfg),
        vlp_train::RunOptions {
            run_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
}

/// A few steps of a small model without captions: every metric is reported and the export
/// reloads to the same probe features.
#[test]
fn semaim_trains_without_captions_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(0, 3, &TINY);
    let report = train(&cfg, dir.path());
    for k in [
        "probe_shape",
        "probe_colour",
        "first_patch_on_main_object",
        "raster_first_patch_on_main_object",
        "first_quarter_on_objects",
        "random_quarter_on_objects",
    ] {
        let v = report
            .metric(k)
            .unwrap_or_else(|| panic!("{k} missing: {report:?}"));
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    let (model, got) =
        load_semaim::<DefaultBackend>(&dir.path().join("final"), &default_device()).unwrap();
    assert_eq!(got.vit.hidden_size, 16);
    assert_eq!(got.query_depth, 2);
    let method = SemAimMethod::from_config(&cfg).unwrap();
    let set = crate::held_out(&cfg, "shapes:test:40");
    let again = crate::evaluated(&method, &model, &set, &cfg);
    assert_eq!(again["probe_shape"], report.metric("probe_shape").unwrap());
    // Sizes in the exported config are bounded before anything is allocated from them.
    let mut bad = got.clone();
    bad.vit.intermediate_size = 1 << 40;
    let file = dir
        .path()
        .join("final")
        .join(vlp_train::method::semaim::CONFIG_FILE);
    std::fs::write(&file, serde_json::to_string(&bad).unwrap()).unwrap();
    let e = load_semaim::<DefaultBackend>(&dir.path().join("final"), &default_device())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vit.intermediate_size") && e.contains("semaim_config.json"),
        "{e}"
    );
}

/// Teacher features as targets (`[model] teacher`, the code's `predict_feature =
/// 'clip'`): the head predicts the teacher's token width, the export leaves the teacher out and
/// reloads, and a teacher whose patches differ from the run's is refused naming the setting.
#[test]
fn semaim_predicts_a_teachers_features_and_checks_its_grid() {
    let dir = tempfile::tempdir().unwrap();
    let runs = format!("run.dir={:?}", dir.path().to_str().unwrap());
    let clip = |name: &str, patch: usize| {
        crate::tiny(&[
            "optim.steps=2",
            "optim.warmup_steps=1",
            "model.embed_dim=24",
            &format!("model.patch_size={patch}"),
            &runs,
            &format!("run.name={name:?}"),
        ])
    };
    // The coarse teacher is trained here; the fine one is a first stage (`teacher_from`).
    let coarse = clip("coarse", 8);
    crate::train_into(&coarse, &dir.path().join("coarse"));
    let coarse = dir
        .path()
        .join("coarse/final")
        .to_str()
        .unwrap()
        .to_string();
    let stage = dir.path().join("teacher.toml");
    std::fs::write(&stage, toml::to_string_pretty(&clip("teacher", 4)).unwrap()).unwrap();
    let fine = dir
        .path()
        .join("teacher/final")
        .to_str()
        .unwrap()
        .to_string();
    let small = |teacher: String| config(0, 3, &[&TINY[..], &[teacher.as_str()]].concat());
    let cfg = small(format!("model.teacher_from={:?}", stage.to_str().unwrap()));
    let run = dir.path().join("semaim");
    let report = train(&cfg, &run);
    assert_eq!((report.steps, report.skipped_steps), (3, 0));
    // Squared distance of unit vectors: between 0 and 4.
    assert!(
        report.final_loss > 0.0 && report.final_loss < 4.0,
        "{report:?}"
    );
    // The run records the teacher the stage exported.
    let saved: vlp_train::TrainConfig =
        toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    assert_eq!(saved.model.teacher.as_deref(), Some(fine.as_str()));
    assert_eq!(saved.model.teacher_from, None);
    // Mixed precision: the teacher's tokens meet the half-precision student as f32 targets;
    // the centre is read from the teacher's last-block attention (recorded in bf16 too).
    let teacher = format!("model.teacher={fine:?}");
    let self_attention = "method.semaim.attention_type=\"self\"";
    let mut half = config(
        0,
        3,
        &[&TINY[..], &[teacher.as_str(), self_attention]].concat(),
    );
    half.precision.mode = "bf16".into();
    let r = train(&half, &dir.path().join("half"));
    assert_eq!((r.steps, r.skipped_steps), (3, 0));
    assert!(r.final_loss > 0.0 && r.final_loss < 4.0, "{r:?}");
    let (model, got) =
        load_semaim::<DefaultBackend>(&run.join("final"), &default_device()).unwrap();
    assert_eq!(got.target_dim, 24);
    assert!(model.features.is_none());
    let file = vlp_core::checkpoint::TensorFile::open(run.join("final/model.safetensors")).unwrap();
    let keys: Vec<&str> = file.keys().collect();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("aim.") || k.starts_with("teacher.")),
        "{keys:?}"
    );
    let bad = small(format!("model.teacher={coarse:?}"));
    let e = SemAimMethod::from_config(&bad)
        .and_then(|m| {
            let tok = vlp_train::model::build_tokenizer(&bad).unwrap();
            let ctx = vlp_train::method::BuildContext {
                config: &bad,
                tokenizer: &tok,
            };
            m.architecture(&ctx)
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.teacher") && e.contains("patches of 8") && e.contains("patches of 4"),
        "{e}"
    );
    // A method that would ignore a teacher refuses one.
    let mut clip = crate::tiny(&[]);
    clip.model.teacher = Some(fine);
    let e = vlp_train::train::<TrainBackend>(
        &clip,
        crate::devices(&clip),
        vlp_train::RunOptions {
            run_dir: Some(dir.path().join("clip")),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("model.teacher") && e.contains("clip"), "{e}");
}

/// The claims in miniature, averaged over seeds 1–3 (a 64-wide 2-layer tower, 400 steps at
/// batch 64, 600 held-out images): pretraining raises the linear-probe shape accuracy of the
/// encoder's mean patch feature over the random encoder probed the same way, and the
/// attention-centre orders start on objects — their first quarter of patches covers objects more
/// than a random quarter, their first patch lies on the main object more often than raster's.
///
/// Measured (2026-12-01, 219 s on 2 cores, seeds side by side, two-fold probe): probe shape
/// 0.269 → 0.322 (+0.050, +0.043, +0.065), colour 0.490 → 0.577; first quarter on objects 0.216
/// against 0.132 for a random quarter (1.6×); first patch on the main object 0.223 against
/// raster's 0.003. The bars (+15 points, 2×) are not reached; the asserted ones are
/// about half the measured effects.
#[test]
#[ignore = "claim test: about 4 minutes on 2 cores; cargo test -p vlp-train --test it semaim_claim -- --ignored --nocapture"]
fn semaim_claim_pretraining_helps_the_probe_and_orders_start_on_objects() {
    let small = [
        "model.width=64",
        "model.layers=2",
        "model.heads=2",
        "data.batch_size=64",
        "data.eval=\"shapes:test:600\"",
    ];
    let runs = per_seed(&[1, 2, 3], |seed| {
        let cfg = config(seed, 400, &small);
        let before = untrained(&cfg);
        let dir = tempfile::tempdir().unwrap();
        let after = train(&cfg, dir.path());
        (before, after)
    });
    let mean = |f: &dyn Fn(&(Metrics, vlp_train::FinalReport)) -> f64| {
        runs.iter().map(f).sum::<f64>() / runs.len() as f64
    };
    for (i, (b, a)) in runs.iter().enumerate() {
        eprintln!("seed {}: {}", i + 1, describe(b, a));
    }
    let shape0 = mean(&|r| r.0["probe_shape"]);
    let shape = mean(&|r| r.1.metric("probe_shape").unwrap());
    let first = mean(&|r| r.1.metric("first_quarter_on_objects").unwrap());
    let random = mean(&|r| r.1.metric("random_quarter_on_objects").unwrap());
    let start = mean(&|r| r.1.metric("first_patch_on_main_object").unwrap());
    let raster = mean(&|r| r.1.metric("raster_first_patch_on_main_object").unwrap());
    eprintln!(
        "mean: shape {shape0:.3} -> {shape:.3}; first quarter {first:.3} vs {random:.3}; start {start:.3} vs raster {raster:.3}"
    );
    assert!(shape >= shape0 + 0.025, "probe shape {shape0} -> {shape}");
    assert!(
        first >= 1.3 * random,
        "first quarter {first} vs random {random}"
    );
    assert!(
        start >= raster + 0.1,
        "first patch {start} vs raster {raster}"
    );
}

/// Mixed precision: the model reads the images in the compute type, the targets come from the
/// f32 pixels (the blur's f32 kernel met bf16 images before).
#[test]
fn semaim_trains_under_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        0,
        3,
        &[
            "precision.mode=\"bf16\"",
            "model.width=16",
            "model.layers=2",
            "model.heads=2",
            "data.batch_size=8",
            "data.train=\"shapes:train:64\"",
            "data.eval=\"\"",
            "optim.warmup_steps=1",
        ],
    );
    let r = train(&cfg, dir.path());
    assert_eq!((r.steps, r.skipped_steps), (3, 0));
    assert!(r.final_loss.is_finite() && r.final_loss > 0.0);
}

/// The claim with teacher features as targets (the paper's SemAIM with CLIP targets, the code's
/// `predict_feature = 'clip'`), at the scale of `configs/semaim-clip.toml`: one teacher, the
/// default run's CLIP (`configs/shapes-clip.toml`, seed 0, trained in this test), and SemAIM
/// students of that config's shape (128 wide, 3 layers, patches of 8, 600 steps at batch 128,
/// the centre where the teacher's class token looks in its last block) from seeds 1–3, each
/// probed against the random encoder of its seed. The teacher's own probe (its image tower's
/// mean patch feature) is printed for reference. The orders come from the one teacher, so they
/// are the same for every seed.
///
/// Measured (2026-12-01, 2626 s on 2 cores of a machine about twice as slow as the one that ran
/// it in 860 s): probe shape 0.219 → 0.416, 0.265 → 0.490, 0.271 → 0.477 (mean +0.209; the
/// teacher itself probes 0.659), colour 0.45 → 0.78; the first quarter of the orders covers
/// 0.287 of the objects against 0.132 for a random quarter (2.17×), the first patch lies on the
/// main object in 0.471 of the images (raster 0.030). Asserted: the issue's +0.15 and 2×. With
/// the centre read as the code reads it from feature teachers (`attention_type = "cls"`) the
/// probe gain was the same (+0.199) and the first quarter 0.149. At the miniature scale of the
/// claim test above (64 wide, 2 layers, 400 steps at batch 64) with a 64-wide teacher of 300 or
/// 1500 steps (probing 0.31–0.39 itself) the gain is only +0.03: the student is too small and
/// too short to take the teacher's features in.
#[test]
#[ignore = "claim test: 15 to 45 minutes on 2 cores; cargo test -p vlp-train --test it semaim_claim_with -- --ignored --nocapture"]
fn semaim_claim_with_a_clip_teacher_raises_the_probe_and_starts_on_objects() {
    use vlp_train::method::semaim::probe_halves;
    let dir = tempfile::tempdir().unwrap();
    let file =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/shapes-clip.toml");
    let quiet: Vec<String> = [
        "log.progress=false",
        "eval.every=0",
        "checkpoint.every=0",
        "data.eval=\"\"",
        "data.eval_unseen=\"\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let clip_cfg = vlp_train::TrainConfig::load(Some(&file), &quiet).unwrap();
    crate::train_into(&clip_cfg, &dir.path().join("clip"));
    let teacher = dir.path().join("clip/final");
    let runs = per_seed(&[1, 2, 3], |seed| {
        let cfg = config(
            seed,
            600,
            &[
                "model.patch_size=8",
                "method.semaim.attention_type=\"self\"",
                "data.eval=\"shapes:test:1000\"",
                &format!("model.teacher={:?}", teacher.to_str().unwrap()),
            ],
        );
        let before = untrained(&cfg);
        let run = tempfile::tempdir().unwrap();
        let after = train(&cfg, run.path());
        // The teacher's image tower, probed the same way.
        let dev = default_device();
        let clip = vlp_align::pretrained::load_pretrained::<DefaultBackend>(&teacher, &dev)
            .unwrap()
            .model;
        let method = SemAimMethod::from_config(&cfg).unwrap();
        let set = crate::held_out(&cfg, &cfg.data.eval);
        let f = method.features(&clip.vision_model, &set, &dev);
        let (shapes, _) = vlp_train::method::semaim::shape_and_colour(&set).unwrap();
        let own = probe_halves::<DefaultBackend>(
            &f,
            &shapes,
            vlp_data::shapes::Shape::ALL.len(),
            0,
            &dev,
        )
        .unwrap();
        (before, after, own)
    });
    let n = runs.len() as f64;
    let (mut gain, mut first, mut random) = (0.0, 0.0, 0.0);
    for (i, (b, a, own)) in runs.iter().enumerate() {
        let (s0, s1) = (b["probe_shape"], a.metric("probe_shape").unwrap());
        eprintln!(
            "seed {}: {} (teacher probes shape {own:.3})",
            i + 1,
            describe(b, a)
        );
        gain += (s1 - s0) / n;
        first += a.metric("first_quarter_on_objects").unwrap() / n;
        random += a.metric("random_quarter_on_objects").unwrap() / n;
    }
    eprintln!(
        "mean probe shape gain {gain:.3}; first quarter on objects {first:.3}, random {random:.3} \
         ({:.2}x)",
        first / random
    );
    assert!(gain >= 0.15, "probe shape gain {gain}");
    assert!(
        first >= 2.0 * random,
        "first quarter on objects {first:.3}, a random quarter {random:.3}"
    );
}
