//! Data for vlp: pixels in, samples out.
//!
//! What belongs here: image decoding and preprocessing that match the reference pipelines
//! (`CLIPImageProcessor`, open_clip's transforms), augmentation, the built-in ShapesWorld
//! generator with its ground truth, the dataset formats users bring (CSV/JSONL, WebDataset
//! shards, ImageFolder, COCO captions) and the loader that batches them for training. What does
//! not: models and losses (`vlp-align`), evaluation protocols (`vlp-tasks`), the training loop
//! (`vlp-train`). Tokenisation is `vlp-text`'s; this crate only calls it.

pub mod augment;
pub mod error;
pub mod loader;
pub mod preprocess;
pub mod render;
pub mod sample;
pub mod scenes;
pub mod shapes;
pub mod source;
pub mod text;
pub mod writer;

pub use error::{DataError, Result};
pub use loader::{Batch, Epoch, Loader, LoaderConfig, SkipStats, TextInput, TextTransform};
pub use preprocess::{ImagePipeline, Interpolation, Preprocess, ResizeMode};
pub use sample::{Annotations, Field, Geometry, Mask, ObjectBox};
pub use source::{Source, open_source};
