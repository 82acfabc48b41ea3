//! `vlp eval`, `vlp embed` and `vlp bench` end to end on fixtures the tests create.

use vlp_core::checkpoint::TensorFile;
use vlp_data::shapes::{ShapesWorld, ShapesWorldConfig, Split};
use vlp_data::writer::{Format, png_bytes, write_shapes};

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

/// ShapesWorld at the fixtures' 32 px, as an ImageFolder tree.
fn image_folder(dir: &std::path::Path) -> std::path::PathBuf {
    let w = ShapesWorld::new(ShapesWorldConfig {
        image_size: 32,
        ..Default::default()
    })
    .unwrap();
    let p = dir.join("folder");
    write_shapes(&w, Split::Test, 40, &p, Format::ImageFolder).unwrap();
    p
}

#[test]
fn zero_shot_linear_probe_and_few_shot_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let folder = image_folder(dir.path());
    let model = reference("clip_hf");
    let data = format!("imagefolder:{}", folder.display());
    let out = dir.path().join("zs.json");
    let png = dir.path().join("confusion.png");
    let o = vlp(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "zero-shot",
        "--data",
        &data,
        "--templates",
        "simple",
        "--out",
        out.to_str().unwrap(),
        "--confusion",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v = last_json(&o);
    assert_eq!(v["count"], 40);
    // The same evaluation through the library, in this process: the command reports exactly it.
    let want = library_zero_shot(&model, &data);
    assert_eq!(v["top1"].as_f64().unwrap(), want.top1);
    assert_eq!(v["top5"].as_f64().unwrap(), want.top5);
    assert_eq!(
        v["per_class"],
        serde_json::to_value(&want.per_class).unwrap()
    );
    // The class list in another order names the same classes: the same result (matching is by
    // name, not position); a repeated name is an error.
    let mut names: Vec<String> = want.classes.clone();
    names.reverse();
    let list = dir.path().join("classes.txt");
    std::fs::write(&list, names.join("\n")).unwrap();
    let args = [
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "zero-shot",
        "--data",
        &data,
        "--templates",
        "simple",
        "--classes",
        list.to_str().unwrap(),
    ];
    let o = vlp(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(last_json(&o)["top1"].as_f64().unwrap(), want.top1);
    names.push(names[0].clone());
    std::fs::write(&list, names.join("\n")).unwrap();
    let o = vlp(&args);
    assert!(
        !o.status.success() && text(&o).contains("twice"),
        "{}",
        text(&o)
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&out).unwrap()).unwrap(),
        v
    );
    assert!(png.is_file());
    for task in ["linear-probe", "few-shot"] {
        let mut args = vec![
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--task",
            task,
            "--data",
            &data,
            "--train-data",
            &data,
            "--templates",
            "simple",
        ];
        if task == "few-shot" {
            args.extend(["--k", "1,2", "--seeds", "1,2"]);
        }
        let o = vlp(&args);
        assert!(o.status.success(), "{task}: {}", text(&o));
        let v = last_json(&o);
        if task == "few-shot" {
            assert_eq!(
                v["few_shot"].as_array().unwrap().len(),
                6,
                "3 methods × 2 k"
            );
        } else {
            assert!(v["linear_probe"]["accuracy"].as_f64().is_some());
        }
    }
}

/// Zero-shot of `model` on `data` computed with vlp-tasks directly.
fn library_zero_shot(model: &std::path::Path, data: &str) -> vlp_tasks::battery::ZeroShotReport {
    use vlp_core::backend::{DefaultBackend, default_device};
    let dev = default_device();
    let bundle = vlp_tasks::bundle::load_bundle::<DefaultBackend>(model, None, &dev).unwrap();
    let shapes = ShapesWorldConfig {
        image_size: 32,
        ..Default::default()
    };
    let source = vlp_data::source::open_source(data, &shapes).unwrap();
    let classes = source.class_names().unwrap();
    let loader = vlp_data::loader::Loader::new(
        source,
        bundle.pipeline.clone(),
        None,
        vlp_data::loader::LoaderConfig {
            // The command's default batch: the same matrix products, the same numbers.
            batch_size: 64,
            workers: 1,
            shuffle: false,
            drop_last: false,
            ..Default::default()
        },
    )
    .unwrap();
    let set = vlp_tasks::embed::embed_images(&bundle.model, &loader, &dev, |_| {}).unwrap();
    let labels: Vec<usize> = set.labels.iter().map(|l| l.unwrap()).collect();
    let templates = vlp_tasks::templates::load_templates("simple").unwrap();
    vlp_tasks::battery::clip_zero_shot(
        &bundle.model,
        bundle.tokenizer.as_ref(),
        &set.features,
        &labels,
        &classes,
        &templates,
        &dev,
    )
    .unwrap()
}

#[test]
fn a_probe_trained_without_a_test_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = image_folder(dir.path());
    // A training copy of the folder with one class left out.
    let train = dir.path().join("train");
    let mut classes: Vec<std::path::PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    classes.sort();
    let dropped = classes[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for c in &classes[1..] {
        let to = train.join(c.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(c).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let o = vlp(&[
        "eval",
        "--model",
        reference("clip_hf").to_str().unwrap(),
        "--task",
        "linear-probe",
        "--data",
        &format!("imagefolder:{}", folder.display()),
        "--train-data",
        &format!("imagefolder:{}", train.display()),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let readable = dropped.replace(['_', '-'], " ");
    assert!(
        text(&o).contains("different classes") && text(&o).contains(&readable),
        "{}",
        text(&o)
    );
}

#[test]
fn missing_class_folder_and_uncaptioned_image_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let folder = image_folder(dir.path());
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "magenta hexagon\n").unwrap();
    let model = reference("clip_hf");
    let o = vlp(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "zero-shot",
        "--data",
        &format!("imagefolder:{}", folder.display()),
        "--classes",
        classes.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("magenta hexagon") && text(&o).contains("not a class"),
        "{}",
        text(&o)
    );
    let o = vlp(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "zero-shot",
        "--data",
        "imagefolder:/nonexistent/val",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("/nonexistent/val"),
        "{}",
        text(&o)
    );

    // COCO captions where one image has none.
    let coco = dir.path().join("coco");
    std::fs::create_dir_all(coco.join("annotations")).unwrap();
    std::fs::create_dir_all(coco.join("val2017")).unwrap();
    let w = ShapesWorld::new(ShapesWorldConfig {
        image_size: 32,
        ..Default::default()
    })
    .unwrap();
    let (mut images, mut anns) = (Vec::new(), Vec::new());
    for i in 0..6u64 {
        let s = w.sample(Split::Test, i);
        std::fs::write(coco.join(format!("val2017/{i}.png")), png_bytes(&s.image)).unwrap();
        images.push(serde_json::json!({"id": i, "file_name": format!("{i}.png")}));
        for c in [&s.captions.short, &s.captions.long] {
            anns.push(serde_json::json!({"image_id": i, "caption": c}));
        }
    }
    let ann = coco.join("annotations/captions_val2017.json");
    std::fs::write(
        &ann,
        serde_json::json!({"images": images, "annotations": anns}).to_string(),
    )
    .unwrap();
    let o = vlp(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "retrieval",
        "--data",
        &format!("coco:{}", ann.display()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v = last_json(&o);
    assert_eq!(v["retrieval"]["images"], 6);
    assert_eq!(v["retrieval"]["texts"], 12);
    // Drop image 3's captions: retrieval refuses to score it.
    let anns: Vec<serde_json::Value> = anns.into_iter().filter(|a| a["image_id"] != 3).collect();
    std::fs::write(
        &ann,
        serde_json::json!({"images": images, "annotations": anns}).to_string(),
    )
    .unwrap();
    let o = vlp(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "retrieval",
        "--data",
        &format!("coco:{}", ann.display()),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("3.png") && text(&o).contains("caption"),
        "{}",
        text(&o)
    );
}

#[test]
fn embed_writes_keyed_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let folder = image_folder(dir.path());
    let texts = dir.path().join("t.txt");
    std::fs::write(&texts, "a red circle\na blue square\n").unwrap();
    let out = dir.path().join("e.safetensors");
    let o = vlp(&[
        "embed",
        "--model",
        reference("clip_openclip").to_str().unwrap(),
        "--data",
        &format!("imagefolder:{}", folder.display()),
        "--texts",
        texts.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let f = TensorFile::open(&out).unwrap();
    assert_eq!(f.shape("image_embeds"), Some(vec![40, 32]));
    assert_eq!(f.shape("text_embeds"), Some(vec![2, 32]));
    assert_eq!(f.shape("labels"), Some(vec![40]));
    let e = f.get("image_embeds").unwrap();
    let norm: f32 = e.data[..32].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
}

#[test]
fn bench_harness_runs_a_tiny_model() {
    for workload in ["train", "encode-image", "encode-text"] {
        let o = vlp(&[
            "bench",
            workload,
            "--model",
            "shapes-tiny",
            "--batch",
            "4",
            "--steps",
            "2",
            "--warmup",
            "1",
        ]);
        assert!(o.status.success(), "{workload}: {}", text(&o));
        let v = last_json(&o);
        for k in [
            "workload",
            "backend",
            "dtype",
            "batch",
            "samples_per_s",
            "step_ms",
        ] {
            assert!(!v[k].is_null(), "{workload}: no {k} in {v}");
        }
        assert!(v["samples_per_s"].as_f64().unwrap() > 0.0);
    }
}

/// `--task swaps`: the ARO-like benchmark on ShapesWorld's named boxes reports what the library
/// computes; data without named boxes is a clear error.
#[test]
fn compositional_swaps_run_from_the_command_line() {
    use vlp_core::backend::{DefaultBackend, default_device};
    let model = reference("clip_hf");
    let args = |data: &str| {
        vlp(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--task",
            "swaps",
            "--data",
            data,
        ])
    };
    let o = args("shapes:test:40");
    assert!(o.status.success(), "{}", text(&o));
    let v = last_json(&o);
    let dev = default_device();
    let bundle = vlp_tasks::bundle::load_bundle::<DefaultBackend>(&model, None, &dev).unwrap();
    let shapes = ShapesWorldConfig {
        image_size: bundle.config.vision.image_size,
        ..Default::default()
    };
    let source = vlp_data::source::open_source("shapes:test:40", &shapes).unwrap();
    let set = vlp_tasks::battery::EvalImages::load(source, &bundle.pipeline, 1).unwrap();
    let want = vlp_tasks::compositional::clip_swaps(
        &bundle.model,
        bundle.tokenizer.as_ref(),
        &set,
        0,
        &dev,
    )
    .unwrap()
    .unwrap();
    assert_eq!(v["swaps"], serde_json::to_value(&want).unwrap());
    // Every image with a box gives an object item; those with two objects more.
    assert_eq!(v["swaps"]["kinds"]["object"]["items"], 40);
    for k in ["attribute", "relation"] {
        assert!(v["swaps"]["kinds"][k]["items"].as_u64().unwrap() > 5, "{v}");
    }
    let dir = tempfile::tempdir().unwrap();
    let folder = image_folder(dir.path());
    let o = args(&format!("imagefolder:{}", folder.display()));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no image has a named box"),
        "{}",
        text(&o)
    );
}
