//! Where samples come from: ShapesWorld, CSV/TSV and JSONL lists, ImageFolder trees, COCO
//! caption files (random access), and WebDataset tar shards (streaming).
//!
//! A source yields [`RawSample`]s: encoded or decoded pixels plus text. Decoding, augmentation
//! and batching are the loader's job, on worker threads.

mod braces;
mod coco;
mod imagefolder;
mod scenes;
mod shapes;
mod table;
mod wds;

pub use braces::{MAX_EXPANSION, expand_braces};
pub use coco::CocoSource;
pub use imagefolder::ImageFolderSource;
pub use scenes::ScenesSource;
pub use shapes::{ShapesSource, annotations as shapes_annotations};
pub use table::TableSource;
pub use wds::{WdsSource, is_safe_member, read_shard};

use std::path::PathBuf;

use image::RgbImage;

use crate::error::{DataError, Result};
use crate::sample::{Annotations, Field};
use crate::shapes::{ShapesWorldConfig, Split};

/// Pixels of a sample, as the source has them.
#[derive(Debug, Clone)]
pub enum RawImage {
    /// Encoded file bytes (JPEG, PNG, WebP), decoded on a worker.
    Encoded(Vec<u8>),
    /// Already decoded (ShapesWorld).
    Decoded(RgbImage),
    /// A file to read and decode on a worker.
    Path(PathBuf),
}

/// One sample before decoding.
#[derive(Debug, Clone)]
pub struct RawSample {
    /// Unique key (file stem, row number or ShapesWorld key), used in every report.
    pub key: String,
    /// Pixels.
    pub image: RawImage,
    /// Further frames of a clip, after `image` (empty for still images).
    pub frames: Vec<RawImage>,
    /// Captions (COCO has five; most sources one). Empty means "no caption".
    pub captions: Vec<String>,
    /// Class index, when the source has labels.
    pub label: Option<usize>,
    /// Boxes, masks, long and per-object captions, referring expressions, Q/A: what the source has.
    pub annotations: Annotations,
}

impl RawSample {
    /// A still image with captions and an optional label, without annotations.
    pub fn new(key: String, image: RawImage, captions: Vec<String>, label: Option<usize>) -> Self {
        Self {
            key,
            image,
            frames: Vec::new(),
            captions,
            label,
            annotations: Annotations::default(),
        }
    }
}

/// Why a sample was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// Key of the sample (or the shard path when a whole tail of a shard is lost).
    pub key: String,
    /// Short reason, used to group counts: `corrupt image`, `missing image`, `empty caption`, ...
    pub reason: String,
    /// Details (the decoder's message, the offending path).
    pub detail: String,
}

/// A dataset with random access by index.
pub trait IndexedSource: Send + Sync {
    /// Human-readable name (the source spec).
    fn name(&self) -> String;
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `index`, or why it cannot be used.
    fn get(&self, index: usize) -> Result<RawSample, Skip>;
    /// Class names when the source is labelled (ImageFolder, ShapesWorld).
    fn class_names(&self) -> Option<Vec<String>> {
        None
    }
    /// What its samples carry besides pixels.
    fn provides(&self) -> Vec<Field> {
        vec![Field::Captions]
    }
}

/// Any source the loader can read.
pub enum Source {
    /// Random access: shuffled by permutation, sharded by index.
    Indexed(Box<dyn IndexedSource>),
    /// Streaming tar shards: shuffled by shard order and a sample buffer, sharded by shard.
    Wds(WdsSource),
}

impl Source {
    /// Human-readable name.
    pub fn name(&self) -> String {
        match self {
            Source::Indexed(s) => s.name(),
            Source::Wds(w) => w.name(),
        }
    }

    /// Class names, for labelled sources.
    pub fn class_names(&self) -> Option<Vec<String>> {
        match self {
            Source::Indexed(s) => s.class_names(),
            Source::Wds(_) => None,
        }
    }

    /// What its samples carry besides pixels. Tar shards carry what their members hold, which
    /// is only known while reading: captions (`.txt`) and labels (`.cls`) are assumed.
    pub fn provides(&self) -> Vec<Field> {
        match self {
            Source::Indexed(s) => s.provides(),
            Source::Wds(_) => vec![Field::Captions, Field::Labels],
        }
    }

    /// Fails when the source lacks one of `fields`, naming the source, the field and `user`
    /// (the method that needs it).
    pub fn require(&self, fields: &[Field], user: &str) -> Result<()> {
        let have = self.provides();
        let missing: Vec<&str> = fields
            .iter()
            .filter(|f| !have.contains(f))
            .map(|f| f.name())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(DataError::Dataset {
            source_name: self.name(),
            reason: format!(
                "{user} needs {} but this source provides only {}",
                missing.join(", "),
                have.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

/// Most samples a `shapes:` source may have: the loader keeps one index per sample.
pub const MAX_SHAPES_SAMPLES: usize = 100_000_000;

/// Opens a source from its spec:
/// - `shapes[:SPLIT[:N]]` — ShapesWorld (default split `train`, 10000 samples) with `shapes_cfg`;
/// - `scenes[:SPLIT[:N]]` — SceneWorld land-cover scenes (the same defaults), at `shapes_cfg`'s
///   image size and seed;
/// - `wds:PATTERN` — tar shards: a file, a directory of `*.tar`, or a brace pattern such as
///   `data/shards-{0000..0099}.tar`;
/// - `csv:FILE` / `tsv:FILE` — a table with image-path and caption columns (`filepath` and
///   `title` by default, as open_clip), paths relative to the file;
/// - `jsonl:FILE` — one JSON object per line with the same keys;
/// - `imagefolder:DIR` — `DIR/<class>/<image>`; captions are "a photo of a <class>.";
/// - `coco:FILE` — COCO captions JSON (`annotations/captions_*.json`) or a Karpathy split file
///   (`dataset_coco.json`, test split unless `coco:FILE#train`), images relative to the JSON's
///   parent directory's parent (COCO layout) or given by `coco:FILE@IMAGE_ROOT`.
pub fn open_source(spec: &str, shapes_cfg: &ShapesWorldConfig) -> Result<Source> {
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let bad = |reason: String| DataError::Dataset {
        source_name: spec.to_string(),
        reason,
    };
    match kind {
        "shapes" | "scenes" => {
            let mut parts = rest.split(':').filter(|p| !p.is_empty());
            let split = match parts.next().unwrap_or("train") {
                "train" => Split::Train,
                "val" => Split::Val,
                "test" => Split::Test,
                "unseen" => Split::Unseen,
                other => {
                    return Err(bad(format!(
                        "unknown {kind} split \"{other}\" (train, val, test, unseen)"
                    )));
                }
            };
            let n: usize = match parts.next() {
                Some(n) => n
                    .parse()
                    .map_err(|_| bad(format!("\"{n}\" is not a sample count")))?,
                None => 10_000,
            };
            if n == 0 || n > MAX_SHAPES_SAMPLES {
                return Err(bad(format!(
                    "{n} samples is not in 1..={MAX_SHAPES_SAMPLES} (generated on demand, but \
                     the loader permutes their indices in memory)"
                )));
            }
            if kind == "scenes" {
                return Ok(Source::Indexed(Box::new(ScenesSource::new(
                    shapes_cfg.image_size,
                    shapes_cfg.seed,
                    split,
                    n,
                )?)));
            }
            Ok(Source::Indexed(Box::new(ShapesSource::new(
                shapes_cfg.clone(),
                split,
                n,
            )?)))
        }
        "wds" => Ok(Source::Wds(WdsSource::open(rest)?)),
        "csv" | "tsv" | "jsonl" => Ok(Source::Indexed(Box::new(TableSource::open(kind, rest)?))),
        "imagefolder" => Ok(Source::Indexed(Box::new(ImageFolderSource::open(rest)?))),
        "coco" => Ok(Source::Indexed(Box::new(CocoSource::open(rest)?))),
        _ => Err(bad(
            "expected shapes:, scenes:, wds:, csv:, tsv:, jsonl:, imagefolder: or coco:".into(),
        )),
    }
}
