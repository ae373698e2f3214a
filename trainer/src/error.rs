//! The trainer's one error type. Every variant says what kind of thing went wrong and carries
//! the names and numbers needed to fix it (the setting and its value, the file, the teacher,
//! the two shapes that disagree), so that callers can match on the kind and users can read the
//! message without a debugger.

use std::fmt::Display;
use std::path::PathBuf;

use crate::augment::AugmentError;
use crate::data::DataError;

/// Why a trainer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A model, training, export or experiment setting is out of range or contradicts another.
    #[error("invalid {scope} setting `{key}` = {value}: {reason}")]
    InvalidSetting {
        /// Where the setting lives: `training`, `distill`, `augment`, `EfficientNet`, a config
        /// file's name, ...
        scope: String,
        /// The setting's name within that scope (e.g. `optimizer.lr`).
        key: String,
        /// The value given.
        value: String,
        /// What is wrong with it, or what it needs.
        reason: String,
    },
    /// A published architecture name that the trainer does not know.
    #[error("unknown {family} `{name}`; known: {known}")]
    UnknownModel {
        /// `EfficientNet` or `ResNet`.
        family: &'static str,
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// Two things that must have the same size (channels, classes, values per channel) do not.
    #[error("{what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// What is being compared, naming the tensor, setting or data.
        what: String,
        /// What the model (or the other side) needs.
        expected: String,
        /// What was given.
        found: String,
    },
    /// The backend or processor asked for cannot be had in this build or on this machine.
    #[error("cannot train with {device}: {reason}")]
    DeviceUnavailable {
        /// The backend and processor asked for (`tch on cuda:0`).
        device: String,
        /// Why not, and what to do.
        reason: String,
    },
    /// A TOML config file could not be parsed into the expected settings.
    #[error("{file}: {reason}")]
    ConfigFile {
        /// The file's name (as the user gave it).
        file: String,
        /// The parser's message, naming the line and key.
        reason: String,
    },
    /// Reading, splitting or batching images failed.
    #[error("data: {0}")]
    Data(#[from] DataError),
    /// A RandAugment setting was rejected.
    #[error("augment: {0}")]
    Augment(#[from] AugmentError),
    /// A data set could not be provisioned (downloaded or unpacked).
    #[error("provisioning data: {0}")]
    Provision(#[from] engine::provision::ProvisionError),
    /// Training was asked to run without a single labelled image.
    #[error("no labelled training images")]
    NoTrainingImages,
    /// The loss stopped being a finite number.
    #[error("the loss became {loss} at epoch {epoch} step {step}: lower optimizer.lr")]
    Diverged {
        /// The loss value (NaN or infinite).
        loss: f32,
        /// 1-based epoch.
        epoch: usize,
        /// 0-based step within the epoch.
        step: usize,
    },
    /// A run directory holds a run of another model or configuration.
    #[error(
        "{} holds a run with a different model or configuration ({differs}); use another directory",
        dir.display()
    )]
    RunMismatch {
        /// The run directory.
        dir: PathBuf,
        /// What differs: `model`, or the configuration fields that changed.
        differs: String,
    },
    /// A checkpoint file (weights, optimiser state, run state, `model.json`) could not be
    /// written or does not hold what it should.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Something could not be serialised (a config, a report, metrics).
    #[error("serialising {what}: {reason}")]
    Serialize {
        /// What was being written.
        what: String,
        /// The serialiser's message.
        reason: String,
    },
    /// A distillation teacher could not be loaded or run, or does not fit the student.
    #[error("distill teacher {teacher}: {reason}")]
    Teacher {
        /// The teacher's name (or path, when it could not be opened).
        teacher: String,
        /// What failed or does not fit.
        reason: String,
    },
    /// ONNX Runtime, which runs the distillation teachers, did not start.
    #[error("distill: ONNX Runtime: {0}")]
    OnnxRuntime(String),
    /// Shared state was left inconsistent by a panic on another thread.
    #[error("{what} poisoned by an earlier panic")]
    Poisoned {
        /// The state.
        what: &'static str,
    },
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

impl TrainerError {
    /// [`TrainerError::InvalidSetting`] from displayable parts.
    pub fn invalid(
        scope: impl Into<String>,
        key: impl Into<String>,
        value: impl Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidSetting {
            scope: scope.into(),
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// [`TrainerError::ShapeMismatch`] from displayable parts.
    pub fn shape(what: impl Into<String>, expected: impl Display, found: impl Display) -> Self {
        Self::ShapeMismatch {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    /// [`TrainerError::Serialize`] for `what`.
    pub fn serialize(what: impl Into<String>, reason: impl Display) -> Self {
        Self::Serialize {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// [`TrainerError::Checkpoint`] for the file at `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Display) -> Self {
        Self::Checkpoint {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// [`TrainerError::Teacher`] for the teacher called `teacher`.
    pub fn teacher(teacher: impl Display, reason: impl Display) -> Self {
        Self::Teacher {
            teacher: teacher.to_string(),
            reason: reason.to_string(),
        }
    }
}
