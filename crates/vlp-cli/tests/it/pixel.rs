//! `vlp train --config configs/pixel-linguist.toml` (a tiny first stage through
//! `model.init_from`, a few steps each), then `vlp embed --texts` with the pixel text encoder it
//! exported, and the command's errors.

use std::path::{Path, PathBuf};

use crate::{text, vlp};

const SMALL: [&str; 11] = [
    "data.train=\"shapes:train:64\"",
    "data.batch_size=8",
    "data.workers=1",
    "optim.steps=3",
    "optim.warmup_steps=1",
    "checkpoint.every=0",
    "log.progress=false",
    "method.pixel_linguist.width=16",
    "method.pixel_linguist.heads=2",
    "method.pixel_linguist.mlp=32",
    "method.pixel_linguist.eval_pairs=40",
];

fn config(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(name)
}

/// Trains both stages; returns the final report and the exported model directory.
fn train(dir: &Path) -> (serde_json::Value, PathBuf) {
    // The shipped first stage, made small (a stage is a whole config file: `--set` does not
    // reach it).
    let mut stage1: toml::Table =
        toml::from_str(&std::fs::read_to_string(config("pixel-linguist-unsup.toml")).unwrap())
            .unwrap();
    let small = overrides_table(&SMALL);
    merge(&mut stage1, small);
    let run = stage1.get_mut("run").unwrap().as_table_mut().unwrap();
    run.insert("dir".into(), dir.display().to_string().into());
    let stage1_file = dir.join("unsup.toml");
    std::fs::write(&stage1_file, toml::to_string(&stage1).unwrap()).unwrap();

    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        config("pixel-linguist.toml").display().to_string(),
        "--run-dir".into(),
        dir.join("sup").display().to_string(),
        "--set".into(),
        format!("model.init_from={:?}", stage1_file.display().to_string()),
    ];
    for s in SMALL {
        args.push("--set".into());
        args.push(s.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = vlp(&refs);
    assert!(o.status.success(), "{}", text(&o));
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .expect("a final line")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert!(
        text(&o).contains("training the first stage"),
        "{}",
        text(&o)
    );
    (v, dir.join("sup/final"))
}

/// `a.b.c=v` overrides as a TOML table.
fn overrides_table(overrides: &[&str]) -> toml::Table {
    let mut t = toml::Table::new();
    for kv in overrides {
        let (k, v) = kv.split_once('=').unwrap();
        let parts: Vec<&str> = k.split('.').collect();
        let mut node = &mut t;
        for p in &parts[..parts.len() - 1] {
            node = node
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        let v: toml::Table = toml::from_str(&format!("x = {v}")).unwrap();
        node.insert(parts[parts.len() - 1].to_string(), v["x"].clone());
    }
    t
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[test]
fn pixel_linguist_trains_from_its_config_and_embeds_texts() {
    let dir = tempfile::tempdir().unwrap();
    let (report, model) = train(dir.path());
    let f = &report["final"];
    assert_eq!(f["method"], "pixel_linguist", "{report}");
    for k in [
        "sts_spearman",
        "typo_robustness",
        "sts_spearman_mirrored",
        "typo_robustness_flipped",
    ] {
        let x = f[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing: {report}"));
        assert!((-1.0..=1.0).contains(&x), "{k} = {x}");
    }
    assert!(model.join("pixel_text_config.json").is_file());

    let lines = dir.path().join("lines.txt");
    let long = "a very long sentence ".repeat(40);
    std::fs::write(
        &lines,
        format!("There is a red circle.\n\nthere is a red circel.\n{long}\nçà\n"),
    )
    .unwrap();
    let out = dir.path().join("emb.safetensors");
    let args = [
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--texts",
        lines.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = vlp(&args);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["tensors"]["text_embeds"],
        serde_json::json!([4, 16]),
        "{v}"
    );
    assert_eq!(v["cut_texts"], 1, "{v}");
    assert_eq!(v["unsupported_chars"], 2, "{v}");
    let file = vlp_core::checkpoint::TensorFile::open(&out).unwrap();
    let t = file.get("text_embeds").unwrap();
    assert_eq!(t.shape, vec![4, 16]);
    let t = t.data;
    for row in t.chunks(16) {
        let n: f32 = row.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4, "rows are unit vectors: {n}");
    }

    // Images are not what this model embeds; no texts is an error too.
    let o = vlp(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "shapes:test:4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("pixel text encoder"), "{}", text(&o));
    let mut with_tokenizer = args.to_vec();
    with_tokenizer.extend(["--tokenizer", "clip"]);
    let o = vlp(&with_tokenizer);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--tokenizer clip does not apply"),
        "{}",
        text(&o)
    );
    std::fs::write(&lines, "\n \n").unwrap();
    let o = vlp(&args);
    assert!(!o.status.success());
    assert!(text(&o).contains("no text lines"), "{}", text(&o));
}
