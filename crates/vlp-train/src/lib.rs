//! The training runner.
//!
//! What belongs here: the loop that turns a configuration into a trained model: building model,
//! tokenizer and data from `[sections]` of a TOML file, AdamW with open_clip's weight-decay
//! groups and a warm-up + cosine schedule, global-norm clipping, gradient accumulation that keeps
//! the whole batch in the loss, frozen towers, mixed precision with f32 master weights,
//! checkpoints that resume exactly, evaluation during training, metrics and plots, and data
//! parallelism over `burn::collective`. What does not: model definitions and losses
//! (`vlp-align`), datasets (`vlp-data`), evaluation protocols (`vlp-tasks`), the command line
//! (`vlp-cli`).

pub mod checkpoint;
pub mod comm;
pub mod config;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod run;
pub mod trainer;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use run::{FinalReport, RunOptions, train};
