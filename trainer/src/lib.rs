//! Hardy's trainer: EfficientNet and ResNet families in burn, their ONNX export through
//! Hardy's own writer, and the import of published weights.
//!
//! Architectures are data ([`efficientnet::EfficientNetSpec`], [`resnet::ResNetSpec`]) built
//! from [`layers`]; [`export`] turns a trained [`model::Classifier`] into an ONNX file that
//! the engine serves with no extra configuration.

pub mod assemble;
pub mod augment;
pub mod autoaugment;
pub mod curve;
pub mod data;
pub mod distill;
pub mod efficientnet;
mod error;
pub mod export;
pub mod import;
pub mod layers;
pub mod model;
pub mod noisy_student;
pub mod resnet;
pub mod train;

pub use error::TrainerError;
pub use model::{Classifier, ModelSpec};

/// The device training runs on: burn's pure-Rust CPU backend (`flex`).
pub fn default_device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
