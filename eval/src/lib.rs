//! Hardy's evaluator: how robust is an ONNX image classifier?
//!
//! It exists so that the `hardy eval` / `hardy corrupt` commands and the server's robustness
//! jobs measure robustness in one way, on any model the engine can load:
//!
//! - [`names`]: the corruptions and perturbations, named as in the released datasets.
//! - [`corrupt`]: the 19 ImageNet-C corruptions at severities 1..5, seeded, and fetching the
//!   reference's frost textures.
//! - [`perturb`]: ImageNet-P perturbation sequences, and a reader of the released videos.
//! - [`metrics`]: top-1/top-5 error, CE/mCE (AlexNet-normalised and relative), flip rate,
//!   top-5 distance, calibration error.
//! - [`subsets`]: the 200-class subsets of ImageNet-A and ImageNet-R.
//! - [`dataset`]: ImageFolder, ImageNet-C/-P layouts and IDX files, streamed and sharded.
//! - [`attack`]: the input gradient added to any ONNX graph, FGSM and PGD run by ONNX Runtime.
//! - [`suite`]: the `hardy eval` runner (resumable, sharded), with [`result`], [`store`] and
//!   [`report`] for what it writes; [`corrupt_set`]: `hardy corrupt`.
//!
//! The corruptions, the sequences and the names are the crate `hardy-corrupt` (lib `corrupt`),
//! which needs no ONNX Runtime; [`corrupt`], [`perturb`] and [`names`] re-export it under the
//! paths the rest of Hardy uses, adding what needs the engine (downloads, video decoding).
//! Data sets (the `--data` grammar, the layouts, items, shards, the ImageNet class lists and
//! the sets Hardy fetches) are the crate `hardy-data` (lib `data`), shared with the trainer;
//! [`dataset`], [`subsets`] and [`suite::DataSource`] re-export it, adding streaming.

pub mod attack;
pub mod autoattack;
pub mod corrupt;
pub mod corrupt_set;
pub mod dataset;
mod error;
pub mod metrics;
pub use ::corrupt::names;
pub mod perturb;
pub mod report;
pub mod result;
pub mod store;
pub mod subsets;
pub mod suite;

pub use error::EvalError;
pub use names::{Corruption, CorruptionGroup, Perturbation};
