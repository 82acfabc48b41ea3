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
    for method in [
        "coop",
        "sgva",
        "maple",
        "tip-adapter",
        "linear-probe",
        "proapo",
        "gist",
    ] {
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
    let none = dir.path().join("none");
    let o = vlp(&[
        "adapt",
        "--model",
        model,
        "--method",
        "maple",
        "--train-data",
        &train,
        "--shots",
        "0",
        "--out",
        none.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--shots must be at least 1"),
        "{}",
        text(&o)
    );
    assert!(!none.exists(), "nothing written for a refused run");
}

/// `--classes` names the data's classes in the prompts (`FOLDER<TAB>NAME`): the adapter keeps
/// the new names, `vlp eval --adapter` given the same file scores the same, and without it the
/// data's folder names are classes the adapter does not know. A file that misses a training
/// class or lists one twice is refused naming it.
#[test]
fn class_names_from_a_file_name_the_prompts_and_match_at_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let train = folder(dir.path(), Split::Train, 240);
    let test = folder(dir.path(), Split::Test, 30);
    let model = reference("clip_hf");
    let model = model.to_str().unwrap();
    // The data's class names (ImageFolder reads "red_circle" as "red circle"), the training
    // set's: the test set's are among them.
    let mut folders: Vec<String> = std::fs::read_dir(dir.path().join("Train"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .into_string()
                .unwrap()
                .replace('_', " ")
        })
        .collect();
    folders.sort();
    let listed = folders.len();
    let renamed = |f: &str| format!("kind {f}");
    let lines: Vec<String> = folders
        .iter()
        .map(|f| format!("{f}\t{}", renamed(f)))
        .collect();
    let file = dir.path().join("classes.tsv");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = dir.path().join("coop");
    let adapt = |classes: &std::path::Path, out: &std::path::Path| {
        vlp(&[
            "adapt",
            "--model",
            model,
            "--method",
            "coop",
            "--train-data",
            &train,
            "--shots",
            "2",
            "--epochs",
            "2",
            "--n-ctx",
            "2",
            "--classes",
            classes.to_str().unwrap(),
            "--eval-data",
            &test,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = adapt(&file, &out);
    assert!(o.status.success(), "{}", text(&o));
    let adapted = last_json(&o);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter.json")).unwrap()).unwrap();
    let mut kept: Vec<String> = info["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    kept.sort();
    let mut expected: Vec<String> = folders.iter().map(|f| renamed(f)).collect();
    expected.sort();
    assert_eq!(kept, expected);
    assert_eq!(kept.len(), listed);
    let eval = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--model",
            model,
            "--task",
            "zero-shot",
            "--data",
            &test,
            "--adapter",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        vlp(&a)
    };
    let o = eval(&["--classes", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let evaluated = last_json(&o);
    assert_eq!(evaluated["count"], 30);
    assert_eq!(evaluated["top1"], adapted["top1"]);
    assert_eq!(evaluated["top5"], adapted["top5"]);
    // Without the file the test set's classes keep their data names, unknown to the adapter.
    let o = eval(&[]);
    assert!(!o.status.success());
    let named = |t: &str| folders.iter().any(|f| t.contains(&format!("\"{f}\"")));
    assert!(
        text(&o).contains("classes the adapter") && named(&text(&o)),
        "{}",
        text(&o)
    );
    // A training class left out, then one listed twice.
    let short = dir.path().join("short.tsv");
    std::fs::write(&short, lines[1..].join("\n")).unwrap();
    let o = adapt(&short, &dir.path().join("short"));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("short.tsv") && text(&o).contains(&format!("\"{}\"", folders[0])),
        "{}",
        text(&o)
    );
    let doubled = dir.path().join("doubled.tsv");
    let mut twice = lines.clone();
    twice.push(lines[0].clone());
    std::fs::write(&doubled, twice.join("\n")).unwrap();
    let o = adapt(&doubled, &dir.path().join("doubled"));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("doubled.tsv") && text(&o).contains("listed twice"),
        "{}",
        text(&o)
    );
    // Two classes under one name would be one class to the adapter.
    let merged = dir.path().join("merged.tsv");
    let mut one = lines.clone();
    one[1] = format!("{}\t{}", folders[1], renamed(&folders[0]));
    std::fs::write(&merged, one.join("\n")).unwrap();
    let o = adapt(&merged, &dir.path().join("merged"));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("merged.tsv")
            && text(&o).contains(&format!("\"{}\"", folders[1]))
            && text(&o).contains(&format!("both \"{}\"", renamed(&folders[0]))),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("merged").exists(), "nothing written");
}

/// `--views` trains on augmented views of the shots (pixels are read for CoOp too), records
/// them in `adapter.json`, and a crop scale outside (0, 1] is refused by name.
#[test]
fn views_of_the_shots_are_trained_on_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let train = folder(dir.path(), Split::Train, 120);
    let model = reference("clip_hf");
    let model = model.to_str().unwrap();
    let out = dir.path().join("coop");
    let adapt = |scale: &str| {
        vlp(&[
            "adapt",
            "--model",
            model,
            "--method",
            "coop",
            "--train-data",
            &train,
            "--shots",
            "1",
            "--n-ctx",
            "2",
            "--views",
            "3",
            "--crop-scale",
            scale,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = adapt("0.5");
    assert!(o.status.success(), "{}", text(&o));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter.json")).unwrap()).unwrap();
    assert_eq!(saved["views"]["views"], 3);
    assert_eq!(saved["views"]["augment"]["scale"][0], 0.5);
    // 1 shot of each class, 3 views each; the default 50 epochs over 3 views: 17.
    assert_eq!(saved["samples"], saved["classes"].as_array().unwrap().len());
    assert_eq!(saved["losses"].as_array().unwrap().len(), 17);
    let o = adapt("1.5");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--crop-scale") && text(&o).contains("scale[0]"),
        "{}",
        text(&o)
    );
}

/// GIST reads an LLM's (here the template source's) descriptions as `vlp curate describe`
/// writes them, and refuses a file that lacks one of the data's classes, naming it.
#[test]
fn gist_takes_the_descriptions_vlp_curate_describe_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let train = folder(dir.path(), Split::Train, 120);
    let model = reference("clip_hf");
    let model = model.to_str().unwrap();
    let file = dir.path().join("descriptions.json");
    let o = vlp(&[
        "curate",
        "describe",
        "--data",
        &train,
        "--per-class",
        "3",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let adapt = |descriptions: &std::path::Path, out: &str| {
        vlp(&[
            "adapt",
            "--model",
            model,
            "--method",
            "gist",
            "--train-data",
            &train,
            "--shots",
            "1",
            "--epochs",
            "1",
            "--descriptions",
            descriptions.to_str().unwrap(),
            "--out",
            dir.path().join(out).to_str().unwrap(),
        ])
    };
    let o = adapt(&file, "ok");
    assert!(o.status.success(), "{}", text(&o));
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("ok").join("adapter.json")).unwrap(),
    )
    .unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let first = &written["classes"][0];
    let classes = saved["classes"].as_array().unwrap();
    let at = classes.iter().position(|c| *c == first["class"]).unwrap();
    assert_eq!(saved["descriptions"][at], first["descriptions"]);
    // The same file without its first class.
    let mut short = written.clone();
    short["classes"].as_array_mut().unwrap().remove(0);
    let partial = dir.path().join("partial.json");
    std::fs::write(&partial, serde_json::to_string(&short).unwrap()).unwrap();
    let o = adapt(&partial, "refused");
    assert!(!o.status.success());
    let want = format!("no descriptions of class {}", first["class"]);
    assert!(
        text(&o).contains("partial.json") && text(&o).contains(&want),
        "{}",
        text(&o)
    );
    // A class listed twice would silently lose one list.
    let mut twice = written.clone();
    let again = twice["classes"][0].clone();
    twice["classes"].as_array_mut().unwrap().push(again);
    let doubled = dir.path().join("twice.json");
    std::fs::write(&doubled, serde_json::to_string(&twice).unwrap()).unwrap();
    let o = adapt(&doubled, "refused2");
    assert!(!o.status.success());
    assert!(text(&o).contains("is listed twice"), "{}", text(&o));
}

/// The harness check: zero-shot, linear probe and CoOp on 3 domains (the source and two
/// ShapesWorld shifts) at 1 and 4 shots, in the test build (measured 23 s on 2 cores); the
/// table's rows, their factors (parameters, images, the domain gap), the JSON report and the
/// plot. Then base-to-novel with MaPLe, and the protocols' refusals.
#[test]
fn the_bench_runs_three_methods_on_three_domains() {
    let dir = tempfile::tempdir().unwrap();
    let model = reference("clip_hf");
    let model = model.to_str().unwrap();
    let (out, plot) = (dir.path().join("r.json"), dir.path().join("p.png"));
    let started = std::time::Instant::now();
    let o = vlp(&[
        "adapt",
        "bench",
        "--model",
        model,
        "--protocol",
        "cross-domain",
        "--train-data",
        "shapes:train:300",
        "--data",
        "shapes:test:200",
        "--domains",
        "pastel,grid",
        "--k",
        "1,4",
        "--seeds",
        "1",
        "--methods",
        "zero-shot,linear-probe,coop",
        "--out",
        out.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    println!(
        "cross-domain bench: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(o.status.success(), "{}", text(&o));
    let v = last_json(&o);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(saved, v);
    let rows = v["cross_domain"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 3 * 3);
    let key = |r: &serde_json::Value| {
        format!(
            "{} {} {}",
            r["k"],
            r["method"].as_str().unwrap(),
            r["domain"].as_str().unwrap()
        )
    };
    assert_eq!(key(&rows[0]), "1 zero-shot source");
    assert_eq!(key(&rows[5]), "1 linear-probe grid");
    assert_eq!(key(&rows[17]), "4 coop grid");
    // 25 of the 30 classes have training images (5 combinations are held out of training).
    assert_eq!(
        (rows[0]["samples"].clone(), rows[9]["samples"].clone()),
        (25.into(), 100.into())
    );
    // The probe: 32-wide embeddings × 30 classes + biases; CoOp: 16 vectors of the 32-wide tower.
    assert_eq!(rows[3]["trainable_params"], 32 * 30 + 30);
    assert_eq!(rows[6]["trainable_params"], 16 * 32);
    // The survey's families.
    let families: Vec<&str> = rows
        .iter()
        .take(9)
        .step_by(3)
        .map(|r| r["family"].as_str().unwrap())
        .collect();
    assert_eq!(families, ["baseline", "baseline", "prompt"]);
    // Each domain's gap is the same for every method; the source's own is about 0.
    for r in rows {
        let same = rows.iter().find(|q| q["domain"] == r["domain"]).unwrap();
        assert_eq!(r["mmd2"], same["mmd2"]);
        assert!(r["mean"].as_f64().unwrap() <= 1.0);
    }
    assert!(
        rows[0]["mmd2"].as_f64().unwrap().abs() < 0.02,
        "{}",
        rows[0]["mmd2"]
    );
    let img = image::open(&plot).unwrap();
    assert_eq!((img.width(), img.height()), (640, 480));

    let o = vlp(&[
        "adapt",
        "bench",
        "--model",
        model,
        "--protocol",
        "base-to-novel",
        "--train-data",
        "shapes:train:300",
        "--data",
        "shapes:test:200",
        "--k",
        "2",
        "--seeds",
        "1",
        "--methods",
        "zero-shot,maple",
        "--epochs",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = last_json(&o)["base_to_novel"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["method"], "maple");
    for r in &rows {
        let (b, n, h) = (
            r["base"].as_f64().unwrap(),
            r["novel"].as_f64().unwrap(),
            r["harmonic"].as_f64().unwrap(),
        );
        let want = if b + n == 0.0 {
            0.0
        } else {
            2.0 * b * n / (b + n)
        };
        assert!((h - want).abs() < 1e-12);
    }
    let o = vlp(&[
        "adapt",
        "bench",
        "--model",
        model,
        "--protocol",
        "few-shot",
        "--train-data",
        "shapes:train:50",
        "--data",
        "shapes:test:50",
        "--methods",
        "maple",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("base-to-novel only"), "{}", text(&o));
}
