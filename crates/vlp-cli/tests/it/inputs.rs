//! `vlp tokenize` and `vlp preprocess`.

use vlp_core::checkpoint::TensorFile;

use crate::{reference, text, vlp};

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn fixture_cases() -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(reference("tokens.json")).unwrap(),
    )
    .unwrap()
    .as_array()
    .unwrap()
    .clone()
}

#[test]
fn tokenize_prints_reference_ids() {
    let cases = fixture_cases();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let mut args = vec!["tokenize"];
    args.extend(texts.iter());
    let o = vlp(&args);
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), cases.len(), "one line per text");
    for (line, c) in lines.iter().zip(&cases) {
        assert_eq!(line["ids"], c["open_clip"], "{}", c["text"]);
    }
    let tj = reference("tokenizer/tokenizer.json");
    let mut args = vec!["tokenize", "--tokenizer", tj.to_str().unwrap()];
    args.extend(texts.iter());
    let o = vlp(&args);
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), cases.len(), "one line per text");
    for (line, c) in lines.iter().zip(&cases) {
        assert_eq!(line["ids"], c["hf"], "{}", c["text"]);
        assert_eq!(
            line["attention_mask"], c["hf_attention_mask"],
            "{}",
            c["text"]
        );
    }
    let o = vlp(&[
        "tokenize",
        "--pad",
        "eot",
        "--context-length",
        "8",
        "a photo of a cat",
    ]);
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(
        l["ids"],
        serde_json::json!([49406, 320, 1125, 539, 320, 2368, 49407, 49407])
    );
    assert_eq!(
        l["attention_mask"],
        serde_json::json!([1, 1, 1, 1, 1, 1, 1, 0])
    );
    let o = vlp(&[
        "tokenize",
        "--tokenizer",
        "/nonexistent/tokenizer.json",
        "x",
    ]);
    assert!(!o.status.success() && text(&o).contains("/nonexistent/tokenizer.json"));
    // A context that cannot hold the start and end tokens is refused, for both tokenizers.
    for tok in ["clip", tj.to_str().unwrap()] {
        let o = vlp(&["tokenize", "--tokenizer", tok, "--context-length", "0", "x"]);
        assert!(
            !o.status.success() && text(&o).contains("context length")
                || text(&o).contains("--context-length"),
            "{tok}: {}",
            text(&o)
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).trim().is_empty(),
            "ids printed"
        );
    }
}

#[test]
fn preprocess_writes_clip_image_processor_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("px.safetensors");
    let (a, b) = (
        reference("preprocess/chelsea.png"),
        reference("preprocess/astronaut.png"),
    );
    let o = vlp(&[
        "preprocess",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--size",
        "224",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let got = TensorFile::open(&out).unwrap();
    let want = TensorFile::open(reference("preprocess/expected.safetensors")).unwrap();
    for name in ["chelsea", "astronaut"] {
        let (g, w) = (got.get(name).unwrap(), want.get(name).unwrap());
        assert_eq!(g.shape, vec![3, 224, 224]);
        let max = g
            .data
            .iter()
            .zip(&w.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        // Measured 2.4e-7 against transformers' CLIPImageProcessor; one grey level is 0.015.
        assert!(max <= 1e-5, "{name}: {max}");
    }
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"nope").unwrap();
    let o = vlp(&[
        "preprocess",
        a.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("broken.jpg"),
        "{}",
        text(&o)
    );
}
