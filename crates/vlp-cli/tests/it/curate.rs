//! `vlp curate describe` and `vlp curate filter` end to end.

use std::path::Path;

use crate::{reference, text, vlp};

fn last_json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().expect("a summary line")).unwrap()
}

/// Writes ShapesWorld samples with `vlp data shapes --out OUT ARGS...`.
fn shapes(out: &Path, args: &[&str]) {
    let mut all = vec!["data", "shapes", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = vlp(&all);
    assert!(o.status.success(), "{}", text(&o));
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn describe_writes_descriptions_from_templates_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(
        &classes,
        "# colours and shapes\nred circle\n\nblue square\n",
    )
    .unwrap();
    let out = dir.path().join("d.json");
    let args = |out: &Path| {
        vec![
            "curate".to_string(),
            "describe".into(),
            "--classes".into(),
            classes.display().to_string(),
            "--per-class".into(),
            "4".into(),
            "--error-rate".into(),
            "0.5".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let a: Vec<String> = args(&out);
    let v = last_json(&vlp(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(v["classes"], 2);
    assert_eq!(v["descriptions"], 8);
    let d = read_json(&out);
    assert_eq!(d["classes"][0]["class"], "red circle");
    assert_eq!(d["classes"][1]["descriptions"].as_array().unwrap().len(), 4);
    let again = dir.path().join("again.json");
    let a = args(&again);
    last_json(&vlp(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());

    // A labelled source's own class names.
    let from_data = dir.path().join("shapes.json");
    let v = last_json(&vlp(&[
        "curate",
        "describe",
        "--data",
        "shapes:test:8",
        "--per-class",
        "1",
        "--out",
        from_data.to_str().unwrap(),
    ]));
    let n = v["classes"].as_u64().unwrap();
    assert!(n > 2, "{v}");
    assert_eq!(
        read_json(&from_data)["classes"].as_array().unwrap().len() as u64,
        n
    );
}

#[test]
fn an_unreachable_or_interrupted_llm_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "red circle\nblue square\n").unwrap();
    let llm = dir.path().join("llm.toml");
    // Nothing listens on port 1: the connection is refused at once; no retries keeps it quick.
    std::fs::write(
        &llm,
        "base_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\nmax_retries = 0\n",
    )
    .unwrap();
    let out = dir.path().join("d.json");
    let o = vlp(&[
        "curate",
        "describe",
        "--classes",
        classes.to_str().unwrap(),
        "--source",
        "llm",
        "--llm-config",
        llm.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("http://127.0.0.1:1/v1") && t.contains("class \"red circle\""),
        "{t}"
    );
    assert!(!out.exists());
    // Offline with an empty cache: an error that says so, nothing written.
    let o = vlp(&[
        "curate",
        "describe",
        "--classes",
        classes.to_str().unwrap(),
        "--source",
        "llm",
        "--llm-config",
        llm.to_str().unwrap(),
        "--offline",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("offline"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());

    // A server that accepts and never answers; the run is killed while it waits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", silent.local_addr().unwrap());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vlp"))
        .args([
            "curate",
            "describe",
            "--classes",
            classes.to_str().unwrap(),
            "--source",
            "llm",
            "--llm-url",
            &url,
            "--llm-model",
            "m",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting on the server"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("d.json"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn filter_keeps_high_scores_and_drops_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("csv");
    shapes(
        &data,
        &["--samples", "12", "--format", "csv", "--split", "test"],
    );
    // One image again under another name, with another caption.
    let table = data.join("test.csv");
    let csv = std::fs::read_to_string(&table).unwrap();
    let first = csv.lines().nth(1).unwrap();
    let (path, _) = first.split_once(',').unwrap();
    let original = data.join(path);
    let stem = original.file_stem().unwrap().to_string_lossy().into_owned();
    let copy = original.with_file_name(format!("copy{}.png", stem));
    std::fs::copy(&original, &copy).unwrap();
    let copy_rel = copy.strip_prefix(&data).unwrap().display().to_string();
    std::fs::write(&table, format!("{csv}{copy_rel},a copy of an image\n")).unwrap();
    let spec = format!("csv:{}", table.display());
    let model = reference("clip_hf");
    let run = |min: &str, out: &Path| {
        let min = format!("--min-score={min}");
        last_json(&vlp(&[
            "curate",
            "filter",
            "--model",
            model.to_str().unwrap(),
            "--data",
            &spec,
            &min,
            // The fixture's random weights put every ShapesWorld image within 0.96 of the
            // others; only the exact copy is a duplicate at this threshold.
            "--dedup",
            "0.99999",
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    let all = dir.path().join("all.json");
    let v = run("-1", &all);
    assert_eq!(v["samples"], 13);
    assert_eq!(v["kept"], 12, "{v}");
    assert_eq!(v["dropped_duplicate"], 1);
    let body = read_json(&all);
    let dup = &body["dropped"][0];
    assert_eq!(dup["reason"], "duplicate");
    let keys = [
        dup["key"].as_str().unwrap(),
        dup["duplicate_of"].as_str().unwrap(),
    ];
    assert_eq!(keys, [format!("copy{stem}").as_str(), stem.as_str()]);

    // At the median score about half the pairs go; every kept score passes, every dropped fails.
    let mut scores: Vec<f64> = body["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["score"].as_f64().unwrap())
        .collect();
    scores.sort_by(f64::total_cmp);
    let median = scores[scores.len() / 2];
    let half = dir.path().join("half.json");
    let v = run(&format!("{median}"), &half);
    let body = read_json(&half);
    let kept = v["kept"].as_u64().unwrap();
    assert!((5..=8).contains(&kept), "{v}");
    assert_eq!(
        kept + v["dropped_low_score"].as_u64().unwrap() + v["dropped_duplicate"].as_u64().unwrap(),
        13
    );
    for k in body["kept"].as_array().unwrap() {
        assert!(k["score"].as_f64().unwrap() >= median - 1e-6, "{k}");
    }
    for d in body["dropped"].as_array().unwrap() {
        if d["reason"] == "low score" {
            assert!(d["score"].as_f64().unwrap() < median, "{d}");
        }
    }
}

#[test]
fn cocu_writes_a_ranked_archive_and_reuses_embed_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("csv");
    shapes(&data, &["--samples", "16", "--format", "csv"]);
    let spec = format!("csv:{}", data.join("train.csv").display());
    let gallery = dir.path().join("gallery.txt");
    let colours = ["red", "green", "blue", "yellow", "purple", "orange"];
    let shape_names = ["circle", "square", "triangle", "star", "cross"];
    let lines: Vec<String> = colours
        .iter()
        .flat_map(|c| shape_names.iter().map(move |s| format!("{c} {s}")))
        .collect();
    std::fs::write(&gallery, lines.join("\n")).unwrap();
    let model = reference("clip_hf");
    // `vlp curate cocu` of the data into `out`.
    let curate = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "curate",
            "cocu",
            "--model",
            model.to_str().unwrap(),
            "--data",
            &spec,
            "--gallery",
            gallery.to_str().unwrap(),
            "--neighbours",
            "4",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        vlp(&args)
    };
    let run = |out: &Path, extra: &[&str]| last_json(&curate(out, extra));
    let out = dir.path().join("archive.json");
    let v = run(&out, &[]);
    assert_eq!(v["images"], 16);
    assert_eq!(v["gallery"], 60, "30 concepts and their plurals");
    let body = read_json(&out);
    let images = body["images"].as_array().unwrap();
    assert_eq!(images.len(), 16);
    for img in images {
        let concepts = img["concepts"].as_array().unwrap();
        // The image is its own nearest neighbour: its caption's concepts are in its archive.
        let caption = img["caption"].as_str().unwrap().to_lowercase();
        for c in concepts {
            let name = c["concept"].as_str().unwrap();
            assert!(lines.iter().any(|l| name.starts_with(l.as_str())), "{name}");
        }
        let mentioned: Vec<&String> = lines
            .iter()
            .filter(|l| caption.contains(l.as_str()))
            .collect();
        for m in mentioned {
            assert!(
                concepts.iter().any(|c| c["concept"] == m.as_str()),
                "{m} of {caption:?} not in its archive"
            );
        }
        let scores: Vec<f64> = concepts
            .iter()
            .map(|c| c["score"].as_f64().unwrap())
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }

    // The same from `vlp embed`'s file, without decoding an image again.
    let embeds = dir.path().join("e.safetensors");
    let o = vlp(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &spec,
        "--out",
        embeds.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let again = dir.path().join("again.json");
    run(&again, &["--embeddings", embeds.to_str().unwrap()]);
    assert_eq!(read_json(&again)["images"], body["images"]);

    // Embeddings of other images: every sample is reported skipped, and the run fails.
    let other = dir.path().join("other");
    shapes(
        &other,
        &[
            "--samples",
            "4",
            "--format",
            "csv",
            "--seed",
            "9",
            "--split",
            "val",
        ],
    );
    let other_embeds = dir.path().join("other.safetensors");
    let o = vlp(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &format!("csv:{}", other.join("val.csv").display()),
        "--out",
        other_embeds.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let fail = dir.path().join("fail.json");
    let with_embeddings = |file: &Path| curate(&fail, &["--embeddings", file.to_str().unwrap()]);
    let o = with_embeddings(&other_embeds);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("no embedding"), "{t}");
    assert!(!fail.exists());

    // Embeddings of another model's width: an error naming the file.
    let wide = dir.path().join("siglip.safetensors");
    let o = vlp(&[
        "embed",
        "--model",
        reference("siglip_hf").to_str().unwrap(),
        "--data",
        &spec,
        "--out",
        wide.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = with_embeddings(&wide);
    let t = text(&o);
    assert!(
        !o.status.success()
            && t.contains("siglip.safetensors")
            && t.contains("not 16 rows of the model's width 32"),
        "{t}"
    );
    assert!(!fail.exists());
}

#[test]
fn curate_commands_read_a_written_shard_set() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("wds");
    shapes(&shards, &["--samples", "12", "--shard-size", "5"]);
    let spec = format!("wds:{}", shards.display());
    let model = reference("clip_hf");
    let out = dir.path().join("filter.json");
    let v = last_json(&vlp(&[
        "curate",
        "filter",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &spec,
        "--min-score=-1",
        "--dedup",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(
        (v["samples"].as_u64(), v["kept"].as_u64()),
        (Some(12), Some(12)),
        "{v}"
    );
    let archive = dir.path().join("archive.json");
    let v = last_json(&vlp(&[
        "curate",
        "cocu",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &spec,
        "--min-count",
        "2",
        "--out",
        archive.to_str().unwrap(),
    ]));
    assert_eq!(v["images"], 12);
    // The gallery mined from the shards' captions has the shapes' names in it.
    assert!(v["gallery"].as_u64().unwrap() > 4, "{v}");
    let body = read_json(&archive);
    assert_eq!(body["images"].as_array().unwrap().len(), 12);
    let described = dir.path().join("d.json");
    let v = last_json(&vlp(&[
        "curate",
        "describe",
        "--data",
        "shapes:test:4",
        "--out",
        described.to_str().unwrap(),
    ]));
    assert_eq!(
        v["descriptions"].as_u64(),
        Some(v["classes"].as_u64().unwrap() * 5)
    );
}
