//! Mixed precision for every method: each configuration under `configs/` that trains on
//! built-in data runs two steps under `precision.mode = "bf16"`. A method that builds a tensor
//! of its own (positions, targets, masks turned into numbers) in f32 meets the half-precision
//! parameters and Burn panics with a dtype mismatch; LXMERT and PTP both did before this test.

use std::collections::BTreeSet;
use std::path::PathBuf;

use vlp_core::backend::TrainBackend;
use vlp_train::{RunOptions, TrainConfig, registry};

use crate::devices;

/// The configurations' own models and data, trained for two small steps in bf16; a first
/// stage (`model.init_from`, `teacher_from`) is not trained (the method starts from fresh
/// weights, without a teacher).
#[test]
fn every_config_on_built_in_data_trains_under_bf16() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let overrides: Vec<String> = [
        "precision.mode=\"bf16\"",
        "optim.steps=2",
        "optim.warmup_steps=0",
        "data.batch_size=8",
        "data.workers=1",
        "data.eval=\"\"",
        "data.eval_unseen=\"\"",
        "distributed.devices=1",
        "eval.every=0",
        "checkpoint.every=0",
        "log.progress=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut trained = BTreeSet::new();
    for path in &paths {
        let mut cfg = TrainConfig::load(Some(path), &overrides).unwrap();
        if !cfg.data.train.starts_with("shapes") {
            continue; // a real dataset (clip-vit-b32.toml)
        }
        cfg.model.init_from = None;
        // A teacher stage (`semaim-clip.toml`) is not trained either: without a teacher the
        // method trains on its own (the teacher's path under bf16 is tested with SemAIM's).
        cfg.model.teacher_from = None;
        let run = tempfile::tempdir().unwrap();
        if cfg.method.kind == "cocu" {
            // CoCu's curation stage does train, with these overrides and into the run's
            // directory: its CLIP, trained in bf16, curates the configuration's data.
            cfg = with_curator(&cfg, path, &overrides, run.path());
        }
        let report = vlp_train::train::<TrainBackend>(
            &cfg,
            devices(&cfg),
            RunOptions {
                run_dir: Some(run.path().to_path_buf()),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            (report.steps, report.skipped_steps),
            (2, 0),
            "{}",
            path.display()
        );
        assert!(report.final_loss.is_finite(), "{}", path.display());
        trained.insert(cfg.method.kind.clone());
    }
    let missing: Vec<_> = registry::NAMES
        .iter()
        .filter(|n| !trained.contains(**n))
        .collect();
    assert!(
        missing.is_empty(),
        "registered methods without a built-in-data config: {missing:?}"
    );
}

/// `cfg` (CoCu, from `path`) with its `curate_with` configuration rewritten under `overrides`
/// into `dir`, and its archive there.
fn with_curator(
    cfg: &TrainConfig,
    path: &std::path::Path,
    overrides: &[String],
    dir: &std::path::Path,
) -> TrainConfig {
    let s: vlp_train::method::cocu::CocuSettings = cfg.method.parse("cocu").unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut o = overrides.to_vec();
    o.push(format!("run.dir={:?}", dir.to_str().unwrap()));
    let curator = TrainConfig::load(Some(&root.join(&s.curate_with)), &o).unwrap();
    let file = dir.join("curator.toml");
    std::fs::write(&file, toml::to_string_pretty(&curator).unwrap()).unwrap();
    let mut o = overrides.to_vec();
    o.push(format!(
        "method.cocu.curate_with={:?}",
        file.to_str().unwrap()
    ));
    o.push(format!(
        "method.cocu.archive={:?}",
        dir.join("archive.json").to_str().unwrap()
    ));
    let out = TrainConfig::load(Some(path), &o).unwrap();
    assert_eq!(out.method.kind, "cocu");
    out
}
