//! Hostile and careless input: every case ends in a clear error or a counted skip — never a
//! panic, an abort, an allocation the input size does not justify, or data lost without a word.

use std::io::Write;
use std::path::Path;

use vlp_data::loader::{Loader, LoaderConfig};
use vlp_data::preprocess::{ImagePipeline, decode_image};
use vlp_data::shapes::{ShapesWorld, ShapesWorldConfig, Split};
use vlp_data::source::{IndexedSource, RawSample, Skip, Source, open_source, read_shard};
use vlp_data::writer::png_bytes;

fn world() -> ShapesWorld {
    ShapesWorld::new(ShapesWorldConfig {
        image_size: 32,
        ..Default::default()
    })
    .unwrap()
}

/// A tar member written by hand, with a size field that may lie.
fn member(out: &mut Vec<u8>, name: &str, data: &[u8], claimed: Option<u64>) {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_size(claimed.unwrap_or(data.len() as u64));
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn sample_members(out: &mut Vec<u8>, i: u64) -> String {
    let s = world().sample(Split::Train, i);
    member(out, &format!("{}.png", s.key), &png_bytes(&s.image), None);
    member(
        out,
        &format!("{}.txt", s.key),
        s.captions.short.as_bytes(),
        None,
    );
    s.key
}

fn read_all(path: &Path) -> (Vec<String>, Vec<Skip>) {
    let (mut ok, mut skips) = (Vec::new(), Vec::new());
    read_shard(path, |r| {
        match r {
            Ok(s) => ok.push(s.key),
            Err(s) => skips.push(s),
        }
        true
    });
    (ok, skips)
}

#[test]
fn a_tar_size_field_of_2_62_is_a_counted_skip_not_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    let a = sample_members(&mut bytes, 0);
    let b = sample_members(&mut bytes, 1);
    member(&mut bytes, "evil.png", b"tiny", Some(1 << 62));
    bytes.extend(std::iter::repeat_n(0u8, 1024));
    let p = dir.path().join("s.tar");
    std::fs::write(&p, &bytes).unwrap();
    let (ok, skips) = read_all(&p);
    assert_eq!(ok, vec![a, b], "the samples before the damage are kept");
    assert_eq!(skips.len(), 1, "{skips:?}");
    assert!(
        skips[0].detail.contains("evil.png") && skips[0].detail.contains(&(1u64 << 62).to_string()),
        "{skips:?}"
    );
}

#[test]
fn gzip_shards_and_gz_members_are_read_as_webdataset_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut plain = Vec::new();
    let mut keys = Vec::new();
    for i in 0..3 {
        let s = world().sample(Split::Train, i);
        member(
            &mut plain,
            &format!("{}.png", s.key),
            &png_bytes(&s.image),
            None,
        );
        // A compressed caption member: `.txt.gz` is the `txt` member.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(s.captions.short.as_bytes()).unwrap();
        member(
            &mut plain,
            &format!("{}.txt.gz", s.key),
            &gz.finish().unwrap(),
            None,
        );
        keys.push(s.key);
    }
    plain.extend(std::iter::repeat_n(0u8, 1024));
    for name in ["a.tgz", "b.tar.gz"] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        std::fs::write(dir.path().join(name), gz.finish().unwrap()).unwrap();
    }
    // The directory form finds both compressed shards.
    let src = open_source(
        &format!("wds:{}", dir.path().display()),
        &Default::default(),
    )
    .unwrap();
    let Source::Wds(w) = &src else {
        panic!("a wds source")
    };
    assert_eq!(w.shards().len(), 2);
    let (ok, skips) = read_all(&dir.path().join("a.tgz"));
    assert_eq!((ok, skips.len()), (keys.clone(), 0));
    let loader = Loader::new(
        src,
        ImagePipeline::clip(32),
        None,
        LoaderConfig {
            batch_size: 2,
            shuffle: false,
            drop_last: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut epoch = loader.epoch(0, 0);
    let batches: Vec<_> = epoch.by_ref().map(|b| b.unwrap()).collect();
    let captions: Vec<String> = batches.iter().flat_map(|b| b.captions.clone()).collect();
    assert_eq!(captions.len(), 6);
    assert_eq!(epoch.stats().skipped_count(), 0);
    assert!(captions.iter().all(|c| !c.is_empty()));
}

#[test]
fn malformed_json_and_non_numeric_labels_are_counted_skips() {
    let dir = tempfile::tempdir().unwrap();
    let s = world().sample(Split::Train, 0);
    let png = png_bytes(&s.image);
    let mut bytes = Vec::new();
    member(&mut bytes, "a.png", &png, None);
    member(&mut bytes, "a.txt", b"a red circle", None);
    member(&mut bytes, "a.json", b"{not json", None);
    member(&mut bytes, "b.png", &png, None);
    member(&mut bytes, "b.txt", b"a red circle", None);
    member(&mut bytes, "b.cls", b"seven", None);
    member(&mut bytes, "c.png", &png, None);
    member(&mut bytes, "c.txt", b"a red circle", None);
    member(&mut bytes, "c.cls", b" 7\n", None);
    bytes.extend(std::iter::repeat_n(0u8, 1024));
    let p = dir.path().join("s.tar");
    std::fs::write(&p, &bytes).unwrap();
    let (ok, skips) = read_all(&p);
    assert_eq!(ok, vec!["c".to_string()]);
    let reasons: Vec<(&str, &str)> = skips
        .iter()
        .map(|s| (s.key.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![("a", "invalid json"), ("b", "invalid class label")]
    );
}

#[test]
fn image_folders_follow_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let png = png_bytes(&world().sample(Split::Train, 0).image);
    for rel in [
        "cat/a.png",
        "cat/sub/deeper/b.png",
        "cat/.hidden.png",
        "dog/c.PNG",
        "dog/notes.txt",
        ".ipynb_checkpoints/x.png",
        "emu/d.bmp",
    ] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // A BMP header: a format vlp does not decode.
        let bytes = if rel.ends_with(".bmp") {
            b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0".to_vec()
        } else {
            png.clone()
        };
        std::fs::write(&p, &bytes).unwrap();
    }
    let src = vlp_data::source::ImageFolderSource::open(root).unwrap();
    assert_eq!(src.classes(), &["cat", "dog", "emu"]);
    assert_eq!(src.class_counts(), vec![2, 1, 1]);
    let keys: Vec<String> = (0..src.len()).map(|i| src.get(i).unwrap().key).collect();
    assert_eq!(keys, vec!["cat/a", "cat/sub/deeper/b", "dog/c", "emu/d"]);
    // The BMP (not a format vlp decodes) is a counted skip, not a silent omission.
    let loader = Loader::new(
        Source::Indexed(Box::new(src)),
        ImagePipeline::clip(32),
        None,
        LoaderConfig {
            batch_size: 4,
            shuffle: false,
            drop_last: false,
            max_skip_fraction: 1.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut epoch = loader.epoch(0, 0);
    let n: usize = epoch.by_ref().map(|b| b.unwrap().len()).sum();
    assert_eq!(n, 3);
    assert_eq!(epoch.stats().skipped_count(), 1);
    assert!(
        epoch.stats().summary().contains("emu/d"),
        "{}",
        epoch.stats().summary()
    );
}

#[test]
fn images_claiming_huge_sizes_are_refused_before_decoding() {
    // A valid 1×1 PNG whose header is patched to claim 100000×100000 pixels (69 bytes).
    let mut png = Vec::new();
    let img = image::RgbImage::new(1, 1);
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    // The IHDR chunk's CRC (type and data, bytes 12..29) must still match, or the decoder
    // stops at the checksum and the size limit is never reached.
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let e = decode_image(&png, "huge.png").unwrap_err().to_string();
    assert!(e.contains("huge.png") && e.contains("100000"), "{e}");
    // 1 × 100000: few pixels, but a side beyond the limit.
    let mut png = Vec::new();
    image::RgbImage::new(1, 20_000)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let e = decode_image(&png, "tall.png").unwrap_err().to_string();
    assert!(e.contains("tall.png") && e.contains("limit"), "{e}");
}

#[test]
fn spec_sizes_are_bounded_before_allocation() {
    let e = open_source("wds:x{0..99999999999}.tar", &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("limit"), "{e}");
    let e = open_source("shapes:train:1e14", &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("1e14"), "{e}");
}

/// A source whose sample 5 panics while being read.
struct Faulty;

impl IndexedSource for Faulty {
    fn name(&self) -> String {
        "faulty".into()
    }
    fn len(&self) -> usize {
        12
    }
    fn get(&self, index: usize) -> Result<RawSample, Skip> {
        assert!(index != 5, "a bug in a source");
        let s = world().sample(Split::Train, index as u64);
        Ok(RawSample::new(
            s.key,
            vlp_data::source::RawImage::Decoded(s.image),
            vec![s.captions.short],
            Some(s.label),
        ))
    }
}

#[test]
fn a_worker_that_dies_is_an_error_naming_what_it_read_not_an_early_end() {
    for workers in [0, 1, 2, 3] {
        let loader = Loader::new(
            Source::Indexed(Box::new(Faulty)),
            ImagePipeline::clip(32),
            None,
            LoaderConfig {
                batch_size: 4,
                workers,
                shuffle: false,
                drop_last: false,
                ..Default::default()
            },
        )
        .unwrap();
        let results: Vec<_> = loader.epoch(0, 0).collect();
        let err = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .unwrap_or_else(|| panic!("workers {workers}: the epoch ended without an error"));
        let e = err.to_string();
        assert!(
            e.contains("faulty") && e.contains("4..8") && e.contains("a bug in a source"),
            "workers {workers}: {e}"
        );
    }
}
