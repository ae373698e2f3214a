//! The trainer's one error type.

use std::path::PathBuf;

/// Why a trainer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A model or training configuration is invalid; the message names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing or checking an ONNX model failed.
    #[error("ONNX export: {0}")]
    Onnx(#[from] engine::onnx::OnnxError),
    /// A tensor could not be read back from the backend.
    #[error("reading tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor's place in the model.
        name: String,
        /// The backend's message.
        reason: String,
    },
    /// The training curve could not be drawn.
    #[error("drawing the training curve: {0}")]
    Plot(String),
    /// Imported weights do not fit the model.
    #[error("importing {}: {reason}", path.display())]
    Import {
        /// The weights file.
        path: PathBuf,
        /// What did not fit, naming the tensor.
        reason: String,
    },
}
