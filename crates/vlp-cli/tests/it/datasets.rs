//! Every layout `datasets/*/README.md` documents, read on a tiny sample laid out the same way,
//! and the class-name files there checked.

use std::path::{Path, PathBuf};

use crate::{reference, text, vlp};

fn datasets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

/// An 8×8 image of one colour in `path`'s format (by extension).
fn image(path: &Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([shade, 255 - shade, 128]));
    let format = match path
        .extension()
        .unwrap()
        .to_string_lossy()
        .to_lowercase()
        .as_str()
    {
        "png" => image::ImageFormat::Png,
        _ => image::ImageFormat::Jpeg,
    };
    img.save_with_format(path, format).unwrap();
}

fn inspect(spec: &str) -> serde_json::Value {
    let o = vlp(&["data", "inspect", spec, "--size", "32"]);
    assert!(o.status.success(), "{spec}: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

fn tsv(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').expect("FOLDER<TAB>NAME");
            (a.to_string(), b.to_string())
        })
        .collect()
}

#[test]
fn class_name_files_are_complete_and_unambiguous() {
    let imagenet = tsv(&datasets().join("imagenet-1k/classes.tsv"));
    assert_eq!(imagenet.len(), 1000);
    let folders: std::collections::HashSet<&str> = imagenet.iter().map(|r| r.0.as_str()).collect();
    let names: std::collections::HashSet<&str> = imagenet.iter().map(|r| r.1.as_str()).collect();
    assert_eq!((folders.len(), names.len()), (1000, 1000));
    assert!(
        imagenet
            .iter()
            .all(|(f, _)| f.len() == 9 && f.starts_with('n'))
    );
    assert_eq!(imagenet[0], ("n01440764".into(), "tench".into()));
    let cifar100 = tsv(&datasets().join("cifar-100/classes.tsv"));
    assert_eq!(cifar100.len(), 100);
    assert!(cifar100.iter().all(|(f, n)| n.replace(' ', "_") == *f));
    let cifar10 = std::fs::read_to_string(datasets().join("cifar-10/classes.txt")).unwrap();
    assert_eq!(cifar10.lines().count(), 10);
}

#[test]
fn imagenet_folders_take_their_names_from_classes_tsv() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("imagenet/val");
    let classes = datasets().join("imagenet-1k/classes.tsv");
    for (i, (wnid, _)) in tsv(&classes).iter().enumerate() {
        image(
            &val.join(wnid).join(format!("ILSVRC2012_val_{i:08}.JPEG")),
            (i % 256) as u8,
        );
    }
    let model = reference("clip_hf");
    let o = vlp(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "zero-shot",
        "--data",
        &format!("imagefolder:{}", val.display()),
        "--classes",
        classes.to_str().unwrap(),
        "--templates",
        "simple",
        "--batch-size",
        "250",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["count"], 1000);
    let per_class = v["per_class"].as_object().unwrap();
    assert_eq!(per_class.len(), 1000);
    assert!(per_class.contains_key("tench") && per_class.contains_key("construction crane"));
    assert!(!per_class.contains_key("n01440764"));

    // A folder the file does not name is an error naming it.
    image(&val.join("n99999999/x.JPEG"), 3);
    let o = vlp(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        "zero-shot",
        "--data",
        &format!("imagefolder:{}", val.display()),
        "--classes",
        classes.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("n99999999"),
        "{}",
        text(&o)
    );
}

#[test]
fn coco_and_flickr_karpathy_layouts_read() {
    let dir = tempfile::tempdir().unwrap();
    // COCO 2017: annotations/ beside val2017/.
    let coco = dir.path().join("coco");
    for (id, name) in [(139, "000000000139.jpg"), (285, "000000000285.jpg")] {
        image(&coco.join("val2017").join(name), id as u8);
    }
    std::fs::create_dir_all(coco.join("annotations")).unwrap();
    std::fs::write(
        coco.join("annotations/captions_val2017.json"),
        serde_json::json!({
            "images": [{"id": 139, "file_name": "000000000139.jpg"}, {"id": 285, "file_name": "000000000285.jpg"}],
            "annotations": [
                {"image_id": 139, "id": 1, "caption": "A living room."},
                {"image_id": 139, "id": 2, "caption": "A room with a couch."},
                {"image_id": 285, "id": 3, "caption": "A big brown bear."}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let v = inspect(&format!(
        "coco:{}",
        coco.join("annotations/captions_val2017.json").display()
    ));
    assert_eq!(
        (v["samples_read"].as_u64(), v["samples_skipped"].as_u64()),
        (Some(2), Some(0))
    );

    // Flickr30k: Karpathy's split file, images under flickr30k-images/.
    let images = dir.path().join("flickr30k-images");
    for (i, name) in ["1000092795.jpg", "10002456.jpg", "1000268201.jpg"]
        .iter()
        .enumerate()
    {
        image(&images.join(name), i as u8 * 40);
    }
    let split = dir.path().join("dataset_flickr30k.json");
    std::fs::write(
        &split,
        serde_json::json!({"dataset": "flickr30k", "images": [
            {"filename": "1000092795.jpg", "split": "test", "sentences": [{"raw": "Two young guys."}]},
            {"filename": "10002456.jpg", "split": "test", "sentences": [{"raw": "Several men in hard hats."}]},
            {"filename": "1000268201.jpg", "split": "val", "sentences": [{"raw": "A child in a pink dress."}]}
        ]})
        .to_string(),
    )
    .unwrap();
    let spec = format!("coco:{}@{}", split.display(), images.display());
    assert_eq!(inspect(&spec)["samples_read"], 2);
    let val = format!("coco:{}#val@{}", split.display(), images.display());
    assert_eq!(inspect(&val)["samples_read"], 1);
}

#[test]
fn img2dataset_shards_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cc3m");
    std::fs::create_dir_all(&out).unwrap();
    // img2dataset's webdataset output: KEY.jpg, KEY.txt, KEY.json per sample, shards 00000.tar...
    for shard in 0..2 {
        let file = std::fs::File::create(out.join(format!("{shard:05}.tar"))).unwrap();
        let mut tar = tar::Builder::new(file);
        for i in 0..3 {
            let key = format!("{shard:05}{i:04}");
            let jpg = dir.path().join("x.jpg");
            image(&jpg, (shard * 3 + i) as u8 * 20);
            let members: [(String, Vec<u8>); 3] = [
                (format!("{key}.jpg"), std::fs::read(&jpg).unwrap()),
                (format!("{key}.txt"), format!("caption {key}").into_bytes()),
                (
                    format!("{key}.json"),
                    serde_json::json!({"url": "http://example.com/x.jpg", "caption": format!("caption {key}"), "status": "success"})
                        .to_string()
                        .into_bytes(),
                ),
            ];
            for (name, bytes) in members {
                let mut h = tar::Header::new_gnu();
                h.set_size(bytes.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                tar.append_data(&mut h, name, bytes.as_slice()).unwrap();
            }
        }
        tar.finish().unwrap();
    }
    let v = inspect(&format!("wds:{}/{{00000..00001}}.tar", out.display()));
    assert_eq!(
        (v["samples_read"].as_u64(), v["samples_skipped"].as_u64()),
        (Some(6), Some(0))
    );
    assert_eq!(
        inspect(&format!("wds:{}", out.display()))["samples_read"],
        6
    );
}
