//! The error type of the attack module, in a file of its own so that every part of the
//! module (the rule table, the rules, the transform, the runner) can name it without
//! depending on the module root.

/// Why a gradient graph could not be made or an attack could not run.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// An operator on the path from the input to the logits has no backward rule.
    #[error("cannot differentiate operator {op} (node `{node}`): {reason}")]
    Unsupported {
        /// The operator type, e.g. `Erf`.
        op: String,
        /// The node's name (or `#index` when it has none).
        node: String,
        /// Why: no rule for the operator, or an attribute value the rule does not handle.
        reason: String,
    },
    /// A node attribute is stored with a type other than the one its operator defines (an
    /// `axis` given as a float, say): the model is malformed, and reading the field meant
    /// for the other type would give a silent zero.
    #[error("attribute `{attribute}` of {op} node `{node}` is {found}; the operator needs {expected}")]
    Attribute {
        /// The operator type, e.g. `Concat`.
        op: String,
        /// The node's name (or `#index` when it has none).
        node: String,
        /// The attribute's name, e.g. `axis`.
        attribute: String,
        /// The type the operator defines for it: `INT`, `FLOAT`, `INTS`, `STRING`.
        expected: &'static str,
        /// The type the model stores it as.
        found: String,
    },
    /// The model does not have the form the transform needs (one image input, logits output,
    /// an opset it can write).
    #[error("cannot add the input gradient: {0}")]
    Model(String),
    /// Tensor shapes that do not fit: the spec against the model's input, a batch against
    /// the image size, labels against the batch.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An attack parameter out of range (eps outside `[0, 1]`, a negative step size, ...).
    #[error("invalid attack parameter: {0}")]
    Parameter(String),
    /// A label outside `0..classes`.
    #[error("label {label} of image {index} is outside 0..{classes}")]
    Label {
        /// The image in the batch.
        index: usize,
        /// The label given.
        label: i64,
        /// The model's number of classes.
        classes: usize,
    },
    /// ONNX Runtime failed to load or run the gradient graph.
    #[error("ONNX Runtime {stage}: {reason}")]
    Ort {
        /// What was being done: "load", "run", ...
        stage: &'static str,
        /// ORT's message.
        reason: String,
    },
    /// The engine failed (reading the model, building the session on the device asked for).
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// The engine could not build a session.
    #[error(transparent)]
    Session(#[from] engine::session::InferenceError),
    /// The ONNX file could not be read, or the gradient graph could not be built.
    #[error(transparent)]
    Onnx(#[from] engine::onnx::OnnxError),
    /// The image could not be turned into pixels.
    #[error(transparent)]
    Image(#[from] engine::preprocess::ImageError),
    /// The caller asked the attack to stop (see [`super::Attacker::pgd_until`]).
    #[error("the attack was stopped before it finished")]
    Stopped,
}
