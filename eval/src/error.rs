//! The evaluator's error: one enum for the runner, wrapping each part's own.

use std::path::PathBuf;

/// Why an evaluation (or `hardy corrupt`) failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model could not be opened or its settings are wrong.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// ONNX Runtime failed to load or run the model.
    #[error(transparent)]
    Inference(#[from] engine::session::InferenceError),
    /// An image could not be decoded or preprocessed.
    #[error(transparent)]
    Image(#[from] engine::preprocess::ImageError),
    /// A data set Hardy fetches itself could not be fetched.
    #[error(transparent)]
    Provision(#[from] engine::provision::ProvisionError),
    /// A data set could not be found, fetched or read.
    #[error(transparent)]
    Dataset(#[from] data::DatasetError),
    /// A corruption failed.
    #[error(transparent)]
    Corrupt(#[from] crate::corrupt::CorruptError),
    /// A perturbation sequence could not be made or read.
    #[error(transparent)]
    Perturb(#[from] crate::perturb::PerturbError),
    /// An attack failed.
    #[error(transparent)]
    Attack(#[from] crate::attack::AttackError),
    /// A metric could not be computed.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// A suite needs data that was not given.
    #[error("suite `{suite}` needs data: pass {option} DIR")]
    NoData {
        /// The suite.
        suite: &'static str,
        /// The option that provides it.
        option: &'static str,
    },
    /// An option has an impossible value.
    #[error("{option}: {reason}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An item without a label in a suite that scores against labels.
    #[error("{key} has no label; accuracy suites need labelled data")]
    Unlabelled {
        /// The item.
        key: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file is malformed.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// Stored results do not belong to this evaluation.
    #[error("{}: {reason}", path.display())]
    Mismatch {
        /// The file or directory.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// Encoding or decoding an image we made ourselves failed.
    #[error("image codec: {0}")]
    Codec(String),
    /// A report plot could not be drawn.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The PNG being drawn.
        path: String,
        /// What failed.
        reason: String,
    },
    /// A broken invariant of the evaluator itself (a bug, reported instead of a panic).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// An item's file (or a data set's label file) resolves to a path outside the data root the
    /// evaluation is confined to (e.g. a symlink inside the set pointing out of it). An item
    /// that does fails alone, counted in the result.
    #[error("{}: outside the data root", path.display())]
    OutsideDataRoot {
        /// The file as listed.
        path: PathBuf,
    },
    /// The observer asked the run to stop; the parts finished before are kept.
    #[error("cancelled")]
    Cancelled,
}
