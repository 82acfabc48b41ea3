//! `vlp adapt` and `vlp eval --adapter` end to end on the transformers-layout fixture model.

use vlp_data::shapes::{ShapesWorld, ShapesWorldConfig, Split};
use vlp_data::writer::{Format, write_shapes};

use crate::{reference, text, vlp};

fn last_json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// ShapesWorld at the fixture's 32 px as ImageFolder trees: `n` images of `split`.
fn folder(dir: &std::path::Path, split: Split, n: usize) -> String {
    let w = ShapesWorld::new(ShapesWorldConfig {
        image_size: 32,
        ..Default::default()
    })
    .unwrap();
    let p = dir.join(format!("{split:?}"));
    write_shapes(&w, split, n, &p, Format::ImageFolder).unwrap();
    format!("imagefolder:{}", p.display())
}

/// The round trip: adapt on a transformers-layout model directory, save, reload with
/// `vlp eval --adapter`, same accuracy — for every method (MaPLe runs the image tower, whose
/// prompts must survive the trip too). The test set's classes are a subset of the training
/// set's; a class the adapter does not know and a wrong task are refused.
#[test]
fn an_adapter_saved_by_vlp_adapt_evaluates_the_same_after_reloading() {
    let dir = tempfile::tempdir().unwrap();
    let train = folder(dir.path(), Split::Train, 240);
    let test = folder(dir.path(), Split::Test, 30);
    let model = reference("clip_hf");
    let model = model.to_str().unwrap();
    for method in ["coop", "sgva", "maple", "tip-adapter", "linear-probe"] {
        let out = dir.path().join(method);
        let o = vlp(&[
            "adapt",
            "--model",
            model,
            "--method",
            method,
            "--train-data",
            &train,
            "--shots",
            "2",
            "--epochs",
            "2",
            "--n-ctx",
            "2",
            "--templates",
            "simple",
            "--eval-data",
            &test,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{method}: {}", text(&o));
        let adapted = last_json(&o);
        assert_eq!(adapted["method"], method);
        assert!(out.join("adapter.json").is_file() && out.join("adapter.safetensors").is_file());
        let o = vlp(&[
            "eval",
            "--model",
            model,
            "--task",
            "zero-shot",
            "--data",
            &test,
            "--adapter",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{method}: {}", text(&o));
        let evaluated = last_json(&o);
        assert_eq!(evaluated["count"], 30, "{method}");
        assert_eq!(evaluated["count"], adapted["count"], "{method}");
        assert_eq!(evaluated["top1"], adapted["top1"], "{method}");
        assert_eq!(evaluated["top5"], adapted["top5"], "{method}");
        assert_eq!(evaluated["method"], method);
    }
    // The training set as test data has classes the adapter knows; a folder with one more does not.
    let extra = dir.path().join("Test").join("unicorn");
    std::fs::create_dir_all(&extra).unwrap();
    let any = std::fs::read_dir(dir.path().join("Test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p != &extra)
        .unwrap();
    let png = std::fs::read_dir(&any)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&png, extra.join("x.png")).unwrap();
    let adapter = dir.path().join("coop");
    let o = vlp(&[
        "eval",
        "--model",
        model,
        "--task",
        "zero-shot",
        "--data",
        &test,
        "--adapter",
        adapter.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("\"unicorn\""), "{}", text(&o));
    let o = vlp(&[
        "eval",
        "--model",
        model,
        "--task",
        "retrieval",
        "--data",
        &test,
        "--adapter",
        adapter.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--adapter applies to --task zero-shot"),
        "{}",
        text(&o)
    );
}
