//! Data for vlp: pixels in, samples out.
//!
//! What belongs here: image decoding and preprocessing that match the reference pipelines
//! (`CLIPImageProcessor`, open_clip's transforms), augmentation, the built-in ShapesWorld
//! generator with its ground truth, the dataset formats users bring (CSV/JSONL, WebDataset
//! shards, ImageFolder, COCO captions) and the loader that batches them for training. What does
//! not: models and losses (`vlp-align`), evaluation protocols (`vlp-tasks`), the training loop
//! (`vlp-train`). Tokenisation is `vlp-text`'s; this crate only calls it.

pub mod error;
pub mod preprocess;
pub mod shapes;

pub use error::{DataError, Result};
pub use preprocess::{ImagePipeline, Interpolation, ResizeMode};
