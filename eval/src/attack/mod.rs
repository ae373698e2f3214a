//! Adversarial attacks (FGSM, PGD) on any ONNX classifier, run by ONNX Runtime.
//!
//! ONNX Runtime only runs forward graphs, and Hardy serves models it did not train, so the
//! gradient an attack needs is added to the model itself: [`add_input_gradient`] is an
//! ONNX-to-ONNX transform that differentiates the forward graph in reverse mode, written in
//! stock ONNX operators (no custom ops), so the result runs wherever the model runs, on CPU
//! and on CUDA. The model's normalisation (`(x - mean) / std` per channel) is put inside the
//! differentiated graph, so the attack works in `[0, 1]` pixel space, where `eps` is defined.
//!
//! The files, each depending only on those listed after it (this root only declares them
//! and re-exports their public items, so there is no cycle):
//!
//! - [`run`]: [`Attacker`], which loads the gradient graph into an ORT session and runs
//!   FGSM and PGD on batches of pixels.
//! - [`grad`]: the transform (which values depend on the input, the loss, the backward pass),
//!   driving the rule table.
//! - `rules`: the rule table, one row per supported operator: its check and its backward
//!   rule; [`SUPPORTED_OPS`] and the validation are read off it.
//! - `ops`, `resample`: the checks and backward rules themselves (`resample`: `Pad` and
//!   nearest `Resize`).
//! - `ctx`: the gradient graph being written, through which the rules write.
//! - `shape`: a light static shape inference that spares needless broadcast reductions.
//! - `attr`, `consts`: typed, checked attribute access and constant tensor values.
//! - `spec`, `error`: [`GradientSpec`], [`pixels`] and [`AttackError`].

mod attr;
mod consts;
mod ctx;
mod error;
pub mod grad;
mod loss;
mod ops;
mod resample;
mod rules;
pub mod run;
mod shape;
mod spec;

pub use error::AttackError;
pub use grad::{
    GRAD_OUTPUT, LABELS_INPUT, LOGITS_OUTPUT, LOSS_KIND_INPUT, LOSS_OUTPUT, PIXELS_INPUT, TARGETS_INPUT,
    add_input_gradient,
};
pub use loss::Loss;
pub use run::{AttackOutcome, Attacker, Gradient, PgdConfig};
pub use spec::{GradientSpec, pixels};

/// The operators the gradient transform can differentiate, in the rule table's order (one
/// row each; see `rules` for the forms of `Pad`, `Resize`, `Slice`, `Conv` and pooling it
/// handles). `Shape` and the other shape, index and comparison operators are not listed:
/// their outputs carry no gradient, so they may read image-dependent values freely.
pub const SUPPORTED_OPS: &[&str] = rules::SUPPORTED;
