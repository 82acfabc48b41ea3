//! Sources, writer and loader: round trips, bad data, determinism, sharding.

use std::collections::BTreeSet;
use std::path::Path;

use vlp_data::loader::{Batch, Loader, LoaderConfig};
use vlp_data::preprocess::{ImagePipeline, Preprocess};
use vlp_data::shapes::{ShapesWorld, ShapesWorldConfig, Split};
use vlp_data::source::{Source, open_source};
use vlp_data::writer::{Format, ShardWriter, png_bytes, write_shapes};

fn world() -> ShapesWorld {
    ShapesWorld::new(ShapesWorldConfig::default()).unwrap()
}

fn cfg(batch: usize, workers: usize, shuffle: bool) -> LoaderConfig {
    LoaderConfig {
        batch_size: batch,
        workers,
        shuffle,
        drop_last: false,
        shuffle_buffer: 16,
        ..Default::default()
    }
}

fn load_all(source: Source, c: LoaderConfig) -> (Vec<Batch>, vlp_data::SkipStats) {
    let loader = Loader::new(source, ImagePipeline::clip(64), None, c).unwrap();
    let mut epoch = loader.epoch(0, 0);
    let batches: Vec<Batch> = epoch.by_ref().map(|b| b.unwrap()).collect();
    (batches, epoch.stats().clone())
}

fn flat(batches: &[Batch]) -> Vec<(String, String, Vec<f32>)> {
    let mut out = Vec::new();
    for b in batches {
        let n = b.images.len() / b.len();
        for i in 0..b.len() {
            out.push((
                b.keys[i].clone(),
                b.captions[i].clone(),
                b.images[i * n..(i + 1) * n].to_vec(),
            ));
        }
    }
    out
}

fn in_memory(n: usize) -> Vec<(String, String, Vec<f32>)> {
    let w = world();
    let pipe = ImagePipeline::clip(64);
    (0..n)
        .map(|i| {
            let s = w.sample(Split::Train, i as u64);
            (s.key, s.captions.short, pipe.process(&s.image))
        })
        .collect()
}

#[test]
fn shapes_round_trip_through_wds_csv_and_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let n = 50;
    let want = in_memory(n);
    let shards = write_shapes(
        &world(),
        Split::Train,
        n,
        dir.path().join("wds"),
        Format::Wds { shard_size: 16 },
    )
    .unwrap();
    assert_eq!(shards.len(), 4);
    let spec = format!(
        "wds:{}/shapes-train-{{00000..00003}}.tar",
        dir.path().join("wds").display()
    );
    let (b, stats) = load_all(
        open_source(&spec, &Default::default()).unwrap(),
        cfg(8, 1, false),
    );
    assert_eq!(stats.skipped_count(), 0);
    assert_eq!(flat(&b), want);

    let csv = write_shapes(
        &world(),
        Split::Train,
        n,
        dir.path().join("csv"),
        Format::Csv,
    )
    .unwrap();
    let (b, _) = load_all(
        open_source(&format!("csv:{}", csv[0].display()), &Default::default()).unwrap(),
        cfg(8, 2, false),
    );
    let got: Vec<_> = flat(&b)
        .into_iter()
        .map(|(k, c, p)| (k.to_string(), c, p))
        .collect();
    assert_eq!(got, want);

    // JSONL with the same rows.
    let text = std::fs::read_to_string(&csv[0]).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let jsonl: String = rdr
        .records()
        .map(|r| {
            let r = r.unwrap();
            serde_json::json!({"filepath": r.get(0).unwrap(), "caption": r.get(1).unwrap()})
                .to_string()
                + "\n"
        })
        .collect();
    let jp = dir.path().join("csv/train.jsonl");
    std::fs::write(&jp, jsonl).unwrap();
    let (b, _) = load_all(
        open_source(&format!("jsonl:{}", jp.display()), &Default::default()).unwrap(),
        cfg(8, 2, false),
    );
    assert_eq!(flat(&b), want);
}

/// Three shards with injected problems, returning the keys of every valid sample.
fn damaged_shards(dir: &Path) -> BTreeSet<String> {
    let w = world();
    let mut valid = BTreeSet::new();
    let mut writer = ShardWriter::new(dir, "bad", 10).unwrap();
    for i in 0..30u64 {
        let s = w.sample(Split::Train, i);
        let png = png_bytes(&s.image);
        match i {
            3 => writer
                .write(
                    &s.key,
                    &[
                        ("jpg", b"\xff\xd8\xff\xe0 this is not a jpeg"),
                        ("txt", b"a red circle"),
                    ],
                )
                .unwrap(),
            7 => writer
                .write(&s.key, &[("png", &png), ("txt", b"   ")])
                .unwrap(),
            12 => writer
                .write(&s.key, &[("txt", b"caption without image")])
                .unwrap(),
            _ => {
                writer
                    .write(
                        &s.key,
                        &[("png", &png), ("txt", s.captions.short.as_bytes())],
                    )
                    .unwrap();
                valid.insert(s.key.clone());
            }
        }
    }
    let shards = writer.finish().unwrap();
    // An entry escaping the directory, in its own shard.
    let evil = dir.join("bad-evil.tar");
    {
        let f = std::fs::File::create(&evil).unwrap();
        let mut b = tar::Builder::new(f);
        let s = w.sample(Split::Train, 100);
        for (name, bytes) in [
            ("../evil.png".to_string(), png_bytes(&s.image)),
            (format!("{}.png", s.key), png_bytes(&s.image)),
            (
                format!("{}.txt", s.key),
                s.captions.short.clone().into_bytes(),
            ),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses "..": write the raw name like a hostile archive would.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, bytes.as_slice()).unwrap();
        }
        b.finish().unwrap();
        valid.insert(s.key);
    }
    // Truncate the last shard in the middle of its 6th sample's image.
    let last = &shards[2];
    let bytes = std::fs::read(last).unwrap();
    let s25 = w.sample(Split::Train, 25);
    let cut = bytes
        .windows(s25.key.len())
        .position(|x| x == s25.key.as_bytes())
        .unwrap()
        + 700;
    std::fs::write(last, &bytes[..cut]).unwrap();
    for i in 25..30u64 {
        valid.remove(&w.sample(Split::Train, i).key);
    }
    valid
}

#[test]
fn damaged_shards_lose_no_valid_sample_and_report_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let valid = damaged_shards(dir.path());
    for workers in [1, 3] {
        let mut c = cfg(7, workers, true);
        c.max_skip_fraction = 0.5;
        let (b, stats) = load_all(
            open_source(
                &format!("wds:{}", dir.path().display()),
                &Default::default(),
            )
            .unwrap(),
            c,
        );
        let got: BTreeSet<String> = b.iter().flat_map(|b| b.keys.clone()).collect();
        assert_eq!(got, valid, "workers {workers}");
        assert_eq!(
            b.iter().map(Batch::len).sum::<usize>(),
            valid.len(),
            "a sample was delivered twice"
        );
        let reasons: Vec<&str> = stats.skipped.keys().map(String::as_str).collect();
        for r in [
            "corrupt image",
            "empty caption",
            "missing image",
            "truncated shard",
            "unsafe path",
        ] {
            assert!(
                reasons.contains(&r),
                "{r} not reported: {}",
                stats.summary()
            );
        }
        let keys = |r: &str| {
            stats.skipped[r]
                .iter()
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys("corrupt image"),
            vec![world().sample(Split::Train, 3).key]
        );
        assert_eq!(
            keys("empty caption"),
            vec![world().sample(Split::Train, 7).key]
        );
        assert_eq!(keys("unsafe path"), vec!["../evil.png".to_string()]);
        assert!(keys("truncated shard")[0].ends_with("bad-00002.tar"));
        assert!(
            stats.skipped["truncated shard"][0]
                .1
                .contains("after 5 samples"),
            "{:?}",
            stats.skipped["truncated shard"]
        );
    }
    // The same data under a strict ceiling stops the epoch with a clear error.
    let loader = Loader::new(
        open_source(
            &format!("wds:{}", dir.path().display()),
            &Default::default(),
        )
        .unwrap(),
        ImagePipeline::clip(64),
        None,
        cfg(7, 1, false),
    )
    .unwrap();
    let err = loader
        .epoch(0, 0)
        .find_map(|b| b.err())
        .expect("ceiling exceeded");
    assert!(err.to_string().contains("too many bad samples"), "{err}");
}

#[test]
fn order_is_deterministic_and_independent_of_workers_for_indexed_sources() {
    let run = |workers| {
        let (b, _) = load_all(
            open_source("shapes:train:40", &Default::default()).unwrap(),
            LoaderConfig {
                augment: Some(Default::default()),
                ..cfg(6, workers, true)
            },
        );
        flat(&b)
    };
    let base = run(0);
    assert_eq!(base.len(), 40);
    assert_eq!(run(1), base);
    assert_eq!(run(3), base);
    // Shuffled: not the generation order.
    assert_ne!(
        base.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
        in_memory(40).into_iter().map(|x| x.0).collect::<Vec<_>>()
    );
}

#[test]
fn streaming_order_is_deterministic_for_a_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    write_shapes(
        &world(),
        Split::Train,
        60,
        dir.path(),
        Format::Wds { shard_size: 10 },
    )
    .unwrap();
    let spec = format!("wds:{}", dir.path().display());
    let keys = |workers| {
        let (b, _) = load_all(
            open_source(&spec, &Default::default()).unwrap(),
            cfg(8, workers, true),
        );
        b.iter().flat_map(|b| b.keys.clone()).collect::<Vec<_>>()
    };
    let a = keys(2);
    assert_eq!(a, keys(2));
    let mut s1 = a.clone();
    let mut s3 = keys(3);
    s1.sort();
    s3.sort();
    assert_eq!(s1, s3);
    assert_eq!(s1.len(), 60);
}

#[test]
fn ranks_read_disjoint_parts() {
    let dir = tempfile::tempdir().unwrap();
    write_shapes(
        &world(),
        Split::Train,
        60,
        dir.path(),
        Format::Wds { shard_size: 10 },
    )
    .unwrap();
    for spec in [
        "shapes:train:50".to_string(),
        format!("wds:{}", dir.path().display()),
    ] {
        let mut all = Vec::new();
        for rank in 0..2 {
            let c = LoaderConfig {
                rank,
                world_size: 2,
                ..cfg(4, 2, true)
            };
            let (b, _) = load_all(open_source(&spec, &Default::default()).unwrap(), c);
            all.push(
                b.iter()
                    .flat_map(|b| b.keys.clone())
                    .collect::<BTreeSet<_>>(),
            );
        }
        assert!(
            all[0].is_disjoint(&all[1]),
            "{spec}: a sample was read by both ranks"
        );
        assert!(all[0].len() + all[1].len() >= 50, "{spec}");
    }
}

#[test]
fn resuming_mid_epoch_gives_the_remaining_batches() {
    {
        let spec = "shapes:train:30";
        let loader = Loader::new(
            open_source(spec, &Default::default()).unwrap(),
            ImagePipeline::clip(64),
            None,
            cfg(4, 2, true),
        )
        .unwrap();
        let full: Vec<Vec<String>> = loader.epoch(3, 0).map(|b| b.unwrap().keys).collect();
        let tail: Vec<Vec<String>> = loader.epoch(3, 5).map(|b| b.unwrap().keys).collect();
        assert_eq!(tail, full[5..].to_vec());
    }
}

#[test]
fn bad_sources_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_source(
        &format!("imagefolder:{}", dir.path().display()),
        &Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("no class subdirectories"), "{e}");
    let e = open_source(
        &format!("wds:{}/x-{{0..2}}.tar", dir.path().display()),
        &Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("missing shard") && e.contains("x-0.tar"), "{e}");
    let p = dir.path().join("t.csv");
    std::fs::write(&p, "path_to_img,words\na.png,hello\n").unwrap();
    let e = open_source(&format!("csv:{}", p.display()), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no image column"), "{e}");
    std::fs::write(&p, "filepath,title\n").unwrap();
    let e = open_source(&format!("csv:{}", p.display()), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no rows"), "{e}");
    for spec in [
        "shapes:train:0",
        "shapes:train:1e14",
        "shapes:train:200000000",
    ] {
        let e = open_source(spec, &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(spec) && e.contains("sample"), "{e}");
    }
    let e = open_source("parquet:x", &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("parquet:x"), "{e}");
    // A missing image file is a counted skip, not a crash.
    std::fs::write(&p, "filepath,title\nnope.png,a caption\n").unwrap();
    let mut c = cfg(4, 1, false);
    c.max_skip_fraction = 1.0;
    let (b, stats) = load_all(
        open_source(&format!("csv:{}", p.display()), &Default::default()).unwrap(),
        c,
    );
    assert!(b.is_empty());
    assert_eq!(stats.skipped["missing image"][0].0, "nope");
}

#[test]
fn imagefolder_and_coco_sources() {
    let dir = tempfile::tempdir().unwrap();
    write_shapes(
        &world(),
        Split::Test,
        20,
        dir.path().join("if"),
        Format::ImageFolder,
    )
    .unwrap();
    let src = open_source(
        &format!("imagefolder:{}", dir.path().join("if").display()),
        &Default::default(),
    )
    .unwrap();
    let classes = src.class_names().unwrap();
    let (b, _) = load_all(src, cfg(5, 1, false));
    for batch in &b {
        for (label, cap) in batch.labels.iter().zip(&batch.captions) {
            assert_eq!(cap, &format!("a photo of a {}.", classes[label.unwrap()]));
        }
    }
    // COCO captions format, several captions per image, one image without captions.
    let root = dir.path().join("coco");
    std::fs::create_dir_all(root.join("annotations")).unwrap();
    std::fs::create_dir_all(root.join("val2017")).unwrap();
    let w = world();
    let mut images = Vec::new();
    let mut anns = Vec::new();
    for i in 0..4u64 {
        let s = w.sample(Split::Test, i);
        std::fs::write(root.join(format!("val2017/{i}.png")), png_bytes(&s.image)).unwrap();
        images.push(serde_json::json!({"id": i, "file_name": format!("{i}.png")}));
        if i != 2 {
            anns.push(serde_json::json!({"image_id": i, "caption": s.captions.short}));
            anns.push(serde_json::json!({"image_id": i, "caption": s.captions.long}));
        }
    }
    let ann = root.join("annotations/captions_val2017.json");
    std::fs::write(
        &ann,
        serde_json::json!({"images": images, "annotations": anns}).to_string(),
    )
    .unwrap();
    let mut c = cfg(4, 1, false);
    c.max_skip_fraction = 1.0;
    let (b, stats) = load_all(
        open_source(&format!("coco:{}", ann.display()), &Default::default()).unwrap(),
        c,
    );
    assert_eq!(b[0].len(), 3);
    assert!(b[0].all_captions.iter().all(|c| c.len() == 2));
    assert_eq!(stats.skipped["no caption"][0].0, "2.png");
}

/// PTP's position prompt through the loader: the block it names is where the object is in the
/// augmented view (crop and flip), not in the source image.
#[test]
fn position_prompts_name_the_block_of_the_object_in_the_view() {
    use std::sync::Arc;
    use vlp_data::augment::AugmentConfig;
    use vlp_data::text::{OUTSIDE, PositionPrompt};
    let loader = Loader::new(
        open_source("shapes:train:96", &Default::default()).unwrap(),
        ImagePipeline::clip(32),
        None,
        LoaderConfig {
            augment: Some(AugmentConfig {
                scale: [0.3, 0.6],
                hflip: 0.5,
                ..Default::default()
            }),
            ..cfg(32, 1, false)
        },
    )
    .unwrap()
    .with_text_transform(Arc::new(PositionPrompt::default()));
    let (mut checked, mut outside, mut differs) = (0, 0, 0);
    for b in loader.epoch(0, 0) {
        let b = b.unwrap();
        for i in 0..b.len() {
            let text = &b.captions[i];
            let (_, prompt) = text.rsplit_once(". The block ").expect(text);
            let (block, rest) = prompt.split_once(" has a ").expect(text);
            let name = rest.trim_end_matches('.');
            let g = &b.geometry[0][i];
            // Source boxes of that name (the batch's annotations are already in view pixels).
            let sources: Vec<[f32; 4]> = world()
                .sample(
                    Split::Train,
                    b.keys[i].rsplit('-').next().unwrap().parse().unwrap(),
                )
                .objects
                .iter()
                .filter(|o| format!("{} {}", o.colour.name(), o.shape.name()) == name)
                .map(|o| o.bbox.map(|v| v as f32))
                .collect();
            assert!(!sources.is_empty(), "{text}: no object named {name}");
            let in_view = |s: &[f32; 4]| {
                let (u, v) = g.map_point((s[0] + s[2]) / 2.0, (s[1] + s[3]) / 2.0);
                let side = g.size as f32;
                if !(0.0..side).contains(&u) || !(0.0..side).contains(&v) {
                    return OUTSIDE.to_string();
                }
                let cell = |t: f32| ((t / side * 3.0) as usize).min(2);
                (3 * cell(v) + cell(u)).to_string()
            };
            let in_source = |s: &[f32; 4]| {
                let side = 64.0;
                let cell = |t: f32| ((t / side * 3.0) as usize).min(2);
                (3 * cell((s[1] + s[3]) / 2.0) + cell((s[0] + s[2]) / 2.0)).to_string()
            };
            assert!(
                sources.iter().any(|s| in_view(s) == block),
                "{text}: block {block} is not where {name} is in the view"
            );
            checked += 1;
            outside += usize::from(block == OUTSIDE);
            differs += usize::from(sources.iter().all(|s| in_source(s) != block));
        }
    }
    assert_eq!(checked, 96);
    // Crops of 30–60 % of the image lose some centres and move most blocks.
    assert!(
        outside > 0 && differs > checked / 3,
        "{outside} outside, {differs} moved of {checked}"
    );
}
