//! Hardy's engine: the part that serving and evaluation share.
//!
//! It exists so that `serve`, `eval` and the `hardy` CLI load ONNX Runtime, read model
//! artifacts, preprocess images and run batched inference in exactly one way. Nothing here
//! knows about HTTP or benchmarks; those crates sit on top.
//!
//! - [`runtime`]: find (or provision) the ONNX Runtime shared library and start it.
//! - [`device`]: `cpu` / `cuda[:N]` and what happens when CUDA cannot be registered.
//! - [`artifact`] and [`config`]: `models/<name>/<version>/model.onnx` and its settings.
//! - [`decode`]: the one image decode path (libjpeg-turbo for JPEG, Pillow's settings).
//! - [`preprocess`]: decoded images to a normalised NCHW `f32` tensor.
//! - [`session`] and [`pool`]: batched inference, one ORT session per worker thread.
//! - [`classify`]: softmax and top-k with labels.
//! - [`onnx`]: read and build ONNX graphs (for `inspect`, tests, the exporter and attacks).
//! - [`provision`]: pinned wheels fetched into Hardy's cache, and the offline switch.
//!
//! Data sets (their layouts, the IDX reader, the sets Hardy fetches) are the `hardy-data`
//! crate's, which decodes through [`decode`].

pub mod artifact;
pub mod classify;
pub mod config;
pub mod decode;
pub mod device;
mod error;
mod jpeg;
pub mod onnx;
pub mod pool;
pub mod preprocess;
pub mod provision;
pub mod runtime;
pub mod session;

pub use error::{Error, Result};
