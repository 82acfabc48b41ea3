//! The training runner.
//!
//! What belongs here: the loop that turns a configuration into a trained model for any training
//! [`Method`] (the seam methods plug into: CLIP, SigLIP, FILIP, ...): tokenizer and data from
//! `[sections]` of a TOML file, AdamW or SGD per parameter group with warm-up + cosine, constant
//! or poly schedules, global-norm clipping, gradient accumulation that keeps the whole batch in
//! the loss, frozen parameters, mixed precision with f32 master weights, checkpoints that resume
//! exactly, evaluation during training, metrics and plots, and data parallelism over
//! `burn::collective` with features of any shape gathered across ranks. What does not: model definitions and losses
//! (`vlp-align`), datasets (`vlp-data`), evaluation protocols (`vlp-tasks`), the command line
//! (`vlp-cli`).

pub mod checkpoint;
pub mod comm;
pub mod config;
pub mod distributed;
pub mod error;
pub mod liveness;
pub mod method;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod run;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use method::registry::train_named as train;
pub use method::{Method, registry};
pub use run::{FinalReport, RunOptions, train_method};
