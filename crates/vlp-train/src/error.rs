//! Errors raised by `vlp-train`.

use std::path::PathBuf;

/// Result type of `vlp-train`.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Everything that can go wrong in a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is invalid (the message names the field).
    #[error("config: {0}")]
    Config(String),
    /// From data loading.
    #[error(transparent)]
    Data(#[from] vlp_data::DataError),
    /// From model building or loading.
    #[error(transparent)]
    Align(#[from] vlp_align::AlignError),
    /// From checkpoint import/export.
    #[error(transparent)]
    Core(#[from] vlp_core::CoreError),
    /// From evaluation.
    #[error(transparent)]
    Task(#[from] vlp_tasks::TaskError),
    /// From tokenizers.
    #[error(transparent)]
    Text(#[from] vlp_text::TextError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint could not be saved or restored.
    #[error("checkpoint \"{path}\": {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Training diverged: too many consecutive non-finite losses.
    #[error(
        "training stopped at step {step}: {count} consecutive non-finite losses (limit optim.max_nonfinite)"
    )]
    Diverged {
        /// The step.
        step: usize,
        /// How many in a row.
        count: usize,
    },
    /// Collective communication failed.
    #[error("distributed: {0}")]
    Distributed(String),
    /// The run was interrupted (Ctrl-C); a checkpoint was written.
    #[error("interrupted at step {step}; checkpoint written to {path}")]
    Interrupted {
        /// The step.
        step: usize,
        /// The checkpoint.
        path: PathBuf,
    },
}
