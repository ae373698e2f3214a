//! The engine's one error enum. Each module keeps its own detailed error type; this enum
//! wraps them so that callers (CLI, server) map one type to exit codes or HTTP statuses.

use std::path::PathBuf;

/// Anything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime library could not be found, fetched or started.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// A model artifact or its configuration is missing or invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// An image could not be decoded or preprocessed.
    #[error(transparent)]
    Image(#[from] crate::preprocess::ImageError),
    /// An ONNX file could not be read, or a graph could not be built.
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    /// Inference failed: a shape mismatch, or ONNX Runtime reported an error.
    #[error(transparent)]
    Inference(#[from] crate::session::InferenceError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
