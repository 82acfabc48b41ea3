//! Errors raised by `vlp-tasks`.

/// Result type of `vlp-tasks`.
pub type Result<T, E = TaskError> = std::result::Result<T, E>;

/// Everything that can go wrong in `vlp-tasks`; messages name the dataset, class or file.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// From the data layer.
    #[error(transparent)]
    Data(#[from] vlp_data::DataError),
    /// From model loading.
    #[error(transparent)]
    Align(#[from] vlp_align::AlignError),
    /// The inputs cannot be evaluated as asked.
    #[error("{task}: {reason}")]
    Invalid {
        /// The task.
        task: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
