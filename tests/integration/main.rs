//! Integration tests with real parts: ONNX Runtime loaded from the pinned PyPI wheel, models
//! written by our graph builder, real images, and the real `hardy` binary.

mod cli;
mod common;
mod console;
mod docker;
mod eval;
mod fuzz;
mod grpc;
mod hostile;
mod inference;
mod jobs;
mod kubernetes;
mod monitor;
mod one_path;
mod robust;
mod schemathesis;
mod serve;
mod shipped;
mod telemetry;
mod train;
mod tritonclient;
mod zoo;
