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
pub mod device;
pub mod distill;
pub mod efficientnet;
pub mod ema;
mod error;
pub mod evaluate;
pub mod export;
pub mod import;
pub mod layers;
#[cfg(all(test, feature = "tch"))]
mod libtorch_parity;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod noisy_student;
pub mod objective;
pub mod optimizer;
pub mod resnet;
pub mod schedule;
pub mod train;

pub use device::{Backend, Processor, TrainDevice};
pub use error::TrainerError;
pub use model::{Classifier, ModelSpec};

/// burn's pure-Rust CPU backend (`flex`): where weights are loaded for export and import, and
/// where the tests build models. Training runs where [`TrainDevice`] says.
pub fn default_device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
