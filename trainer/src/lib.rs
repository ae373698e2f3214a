//! Hardy's trainer: EfficientNet and ResNet families in burn, their ONNX export through
//! Hardy's own writer, and the import of published weights.
//!
//! Architectures are data ([`efficientnet::EfficientNetSpec`], [`resnet::ResNetSpec`]) built
//! from [`layers`]; [`export`] turns a trained [`model::Classifier`] into an ONNX file that
//! the engine serves with no extra configuration.
//!
//! Training is [`train::train`], a learner loop over an [`objective::Objective`] (supervised,
//! distillation, Noisy Student's pseudo-labels), with its settings in [`config`], the
//! learning-rate schedule in [`schedule`], the weight average in [`ema`], run directories and
//! checkpoints in [`checkpoint`] and per-epoch metrics in [`metrics`].

pub mod assemble;
pub mod augment;
pub mod autoaugment;
pub mod checkpoint;
pub mod config;
pub mod curve;
pub mod data;
pub mod distill;
pub mod efficientnet;
pub mod ema;
mod error;
pub mod evaluate;
pub mod export;
pub mod import;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod noisy_student;
pub mod objective;
pub mod optimizer;
pub mod resnet;
pub mod schedule;
pub mod train;

pub use error::TrainerError;
pub use model::{Classifier, ModelSpec};

/// The device training runs on: burn's pure-Rust CPU backend (`flex`).
pub fn default_device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
