//! Hardy's HTTP server: the part of Hardy that applications and standard inference clients
//! talk to.
//!
//! It is built like text-embeddings-inference: a thin HTTP layer ([`http`]) over a model
//! [`repository`], where each loaded model version owns a [`batcher`] actor (a thread that
//! merges requests into session runs) in front of the engine's inference pool (dedicated
//! threads, one ONNX Runtime session each). Image decoding and preprocessing run on a
//! separate worker pool ([`prep`]). The async runtime's threads only parse requests and wait.
//! Every failure a client can see is one [`ServeError`] variant, mapped to an HTTP status, a
//! JSON body and a metrics label in one place; [`metrics`] holds every Prometheus metric, and
//! [`stats`] the figures of Triton's statistics extension.

pub mod batcher;
pub mod config;
mod error;
pub mod grpc;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod monitor;
pub mod oip;
pub mod prep;
pub mod repository;
pub mod robust;
pub mod server;
pub mod stats;
pub mod telemetry;

pub use config::ServerConfig;
pub use error::ServeError;
pub use server::run;
