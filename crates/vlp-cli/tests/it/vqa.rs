//! `vlp train` with `configs/lxmert.toml` (a few steps of a tiny model), then `vlp vqa` and
//! `vlp eval --task vqa` on what it wrote, and their errors for bad inputs.

use std::path::{Path, PathBuf};

use vlp_data::shapes::{ShapesWorld, ShapesWorldConfig, Split};

use crate::{reference, text, vlp};

fn last_json(o: &std::process::Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// `vlp train --config configs/lxmert.toml` with a tiny model for 4 steps, in `dir/run`, with
/// `extra` settings.
fn train_args(dir: &Path, run: &str, extra: &[&str]) -> Vec<String> {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/lxmert.toml");
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--run-dir".into(),
        dir.join(run).display().to_string(),
    ];
    let tiny = [
        "data.shapes.image_size=32",
        "data.train=\"shapes:train:32\"",
        "data.eval=\"shapes:test:6\"",
        "data.batch_size=8",
        "data.workers=1",
        "optim.steps=4",
        "optim.warmup_steps=1",
        "eval.every=0",
        "checkpoint.every=0",
        "log.progress=false",
        "method.lxmert.d_model=16",
        "method.lxmert.n_heads=2",
        "method.lxmert.d_hidden=16",
        "method.lxmert.cnn_channels=8",
        "method.lxmert.roi_size=2",
    ];
    for s in tiny.iter().chain(extra) {
        args.push("--set".into());
        args.push(s.to_string());
    }
    args
}

/// Trains a tiny LXMERT for 4 steps; returns its `final/` directory.
fn train(dir: &Path) -> PathBuf {
    let args = train_args(dir, "run", &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = vlp(&refs);
    assert!(o.status.success(), "{}", text(&o));
    let v = last_json(&o);
    let f = &v["final"];
    assert_eq!(f["method"], "lxmert", "{v}");
    let acc = f["vqa_accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("no vqa_accuracy in {v}"));
    assert!((0.0..=1.0).contains(&acc), "{v}");
    assert!(f["vqa_questions"].as_f64().unwrap() >= 30.0, "{v}");
    assert_eq!(f["vqa_whole_image"], 0.0, "{v}");
    for k in [
        "vqa_accuracy_colour",
        "vqa_accuracy_count",
        "vqa_accuracy_existence",
    ] {
        assert!(f[k].is_number(), "no {k} in {v}");
    }
    PathBuf::from(f["run_dir"].as_str().unwrap()).join("final")
}

#[test]
fn a_trained_lxmert_answers_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    for f in [
        "lxmert_config.json",
        "model.safetensors",
        "answers.json",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        assert!(model.join(f).is_file(), "final/ lacks {f}");
    }
    // A ShapesWorld test image with its objects' boxes.
    let world = ShapesWorld::new(ShapesWorldConfig {
        image_size: 32,
        ..Default::default()
    })
    .unwrap();
    let scene = world.sample(Split::Test, 3);
    let image = dir.path().join("scene.png");
    scene.image.save(&image).unwrap();
    let m = model.to_str().unwrap();
    let mut args = vec![
        "vqa",
        "--model",
        m,
        "--image",
        image.to_str().unwrap(),
        "--question",
        "how many objects are there?",
    ];
    let boxes: Vec<String> = scene
        .objects
        .iter()
        .map(|o| format!("{},{},{},{}", o.bbox[0], o.bbox[1], o.bbox[2], o.bbox[3]))
        .collect();
    for b in &boxes {
        args.extend(["--box", b.as_str()]);
    }
    let o = vlp(&args);
    assert!(o.status.success(), "{}", text(&o));
    let v = last_json(&o);
    let answers: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(model.join("answers.json")).unwrap())
            .unwrap();
    assert!(
        answers.contains(&v["answer"].as_str().unwrap().to_string()),
        "{v}"
    );
    let p = v["probability"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0, "{v}");
    assert_eq!(v["objects"], scene.objects.len(), "{v}");

    let o = vlp(&[
        "eval",
        "--model",
        m,
        "--task",
        "vqa",
        "--data",
        "shapes:test:5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v = last_json(&o);
    assert!(
        v["accuracy"].is_number() && v["count"].as_u64().unwrap() >= 20,
        "{v}"
    );
    assert_eq!(
        v["whole_image"], 0,
        "every ShapesWorld image has boxes: {v}"
    );
    assert_eq!(v["out_of_table"], 0, "{v}");
    assert!(
        v["per_kind"]["relation"].is_number() || v["per_kind"]["count"].is_number(),
        "{v}"
    );

    // Bad inputs: each a failure whose message names what is wrong.
    let bad = |args: &[&str], want: &str| {
        let o = vlp(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let t = text(&o);
        assert!(t.contains(want), "{args:?}: expected \"{want}\" in: {t}");
    };
    let img = image.to_str().unwrap();
    // `vlp vqa` on `image` with `extra` arguments after the question.
    let ask = |model: &str, image: &str, question: &str, extra: &[&str], want: &str| {
        let mut args = vec![
            "vqa",
            "--model",
            model,
            "--image",
            image,
            "--question",
            question,
        ];
        args.extend(extra);
        bad(&args, want);
    };
    let missing = dir.path().join("nope.png");
    ask(m, missing.to_str().unwrap(), "what?", &[], "nope.png");
    let clip = reference("clip_hf");
    ask(
        clip.to_str().unwrap(),
        img,
        "what?",
        &[],
        "not a question-answering model",
    );
    ask(m, img, "what?", &["--box", "1,2,3"], "x0,y0,x1,y1");
    ask(
        m,
        img,
        "what?",
        &["--box", "0,0,40,10"],
        "outside the 32×32 image",
    );
    ask(m, img, " ", &[], "--question is empty");
    // A 64×32 image is centre-cropped to its middle 32×32: a box on its left edge is cut away,
    // which must be an error, not a silent whole-image answer.
    let wide = dir.path().join("wide.png");
    image::RgbImage::new(64, 32).save(&wide).unwrap();
    let wide = wide.to_str().unwrap();
    ask(
        m,
        wide,
        "what?",
        &["--box", "0,0,8,8"],
        "1 of the 1 boxes lie outside the model's centre crop",
    );

    // Fine-tuning from it on questions alone ([model] init), and a size that does not match.
    let init = format!("model.init={:?}", model.display().to_string());
    let args = train_args(
        dir.path(),
        "tuned",
        &[
            &init,
            "method.lxmert.tasks=[\"qa\"]",
            "method.lxmert.question_fraction=1.0",
        ],
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = vlp(&refs);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(last_json(&o)["final"]["steps"], 4);
    let args = train_args(dir.path(), "wrong", &[&init, "method.lxmert.d_hidden=24"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bad(&refs, "d_hidden 16, this run's lxmert settings 24");
}
