//! `hardy serve`: flags and environment over the server's TOML config, then the server.
//!
//! Precedence: a flag or its `HARDY_*` environment variable, then `--config FILE`, then the
//! defaults in [`serve::ServerConfig`].

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use engine::device::Device;
use engine::runtime::{self, RuntimeOptions};
use serve::{ServerConfig, config::VersionPolicy};

/// Arguments of `hardy serve`.
#[derive(clap::Args)]
pub struct Args {
    /// A TOML file with any of the settings below (flags and environment override it).
    #[arg(long, env = "HARDY_SERVE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "HARDY_HOST")]
    host: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 8000].
    #[arg(long, env = "HARDY_PORT")]
    port: Option<u16>,
    /// The model repository [default: models].
    #[arg(long, env = "HARDY_MODEL_REPOSITORY")]
    model_repository: Option<PathBuf>,
    /// Which versions to load: `latest` or `all` [default: latest].
    #[arg(long, env = "HARDY_VERSIONS")]
    versions: Option<VersionPolicy>,
    /// Bearer token that turns on the repository API (load, unload, index).
    #[arg(long, env = "HARDY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// `cpu`, `cuda` or `cuda:N` [default: cpu].
    #[arg(long, env = "HARDY_DEVICE")]
    device: Option<Device>,
    /// Fail instead of falling back to CPU when the device cannot be used.
    #[arg(long, env = "HARDY_STRICT_DEVICE", value_parser = clap::builder::FalseyValueParser::new())]
    strict_device: bool,
    /// Inference threads (one ONNX Runtime session each) per model version [default: 1].
    #[arg(long, env = "HARDY_INSTANCES")]
    instances: Option<usize>,
    /// ONNX Runtime intra-op threads per session; 0: one per core [default: 0].
    #[arg(long, env = "HARDY_INTRA_THREADS")]
    intra_threads: Option<usize>,
    /// Image decoding/preprocessing threads; 0: one per core [default: 0].
    #[arg(long, env = "HARDY_PREPROCESS_THREADS")]
    preprocess_threads: Option<usize>,
    /// HTTP worker threads; 0: one per core [default: 0].
    #[arg(long, env = "HARDY_HTTP_WORKERS")]
    http_workers: Option<usize>,
    /// Largest request body in bytes; larger bodies get 413 [default: 67108864].
    #[arg(long, env = "HARDY_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Seconds to drain admitted requests after SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "HARDY_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Option<u64>,
    /// Open connections kept at most; lowered to fit the open-file limit [default: 1024].
    #[arg(long, env = "HARDY_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a request body may take to arrive, then 408 [default: 30].
    #[arg(long, env = "HARDY_BODY_TIMEOUT")]
    body_timeout: Option<u64>,
    /// Bytes of request bodies held at once, server-wide, then 503 [default: 1073741824].
    #[arg(long, env = "HARDY_MAX_INFLIGHT_BODY_BYTES")]
    max_inflight_body_bytes: Option<usize>,
    /// Port of the gRPC endpoint (the Open Inference Protocol's `inference.GRPCInferenceService`);
    /// 0 picks a free one [default: 8001].
    #[arg(long, env = "HARDY_GRPC_PORT")]
    grpc_port: Option<u16>,
    /// Export a trace of every inference request over OTLP/gRPC to this collector
    /// (`http://host:4317`) [default: off].
    #[arg(long, env = "HARDY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Serve HTTP only, without the gRPC endpoint.
    #[arg(long, env = "HARDY_NO_GRPC")]
    no_grpc: bool,
    /// Default largest batch per session run, for models that do not set one [default: 32 on
    /// CUDA; on the CPU 32, or the largest power of two whose batch holds at most 1 Mi input
    /// values: 4 for a 224 px RGB model].
    #[arg(long, env = "HARDY_MAX_BATCH_SIZE")]
    max_batch_size: Option<usize>,
    /// Default longest wait of the oldest request for a batch to fill while an inference
    /// thread is free, microseconds; 0: a request that finds a free thread runs at once
    /// [default: 0].
    #[arg(long, env = "HARDY_MAX_QUEUE_DELAY_US")]
    max_queue_delay_us: Option<u64>,
    /// Default requests admitted per model before 503 [default: 1024].
    #[arg(long, env = "HARDY_QUEUE_CAPACITY")]
    queue_capacity: Option<usize>,
    /// Default images admitted per model before 503; one request may hold half [default: 4096].
    #[arg(long, env = "HARDY_MAX_QUEUE_IMAGES")]
    max_queue_images: Option<usize>,
    /// Default bytes of decoded input tensors admitted per model before 503; one request may
    /// hold half [default: 536870912].
    #[arg(long, env = "HARDY_MAX_QUEUE_BYTES")]
    max_queue_bytes: Option<usize>,
    /// Default longest wait in a model's queue before a request is rejected with 503,
    /// microseconds; a request's `timeout` parameter overrides it [default: 0, no limit].
    #[arg(long, env = "HARDY_QUEUE_TIMEOUT_US")]
    queue_timeout_us: Option<u64>,
    /// Default number of priority levels requests may name (`priority`, 1 the highest)
    /// [default: 0, off].
    #[arg(long, env = "HARDY_PRIORITY_LEVELS")]
    priority_levels: Option<u32>,
    /// Default level of requests that name none [default: 0, the lowest level].
    #[arg(long, env = "HARDY_DEFAULT_PRIORITY_LEVEL")]
    default_priority_level: Option<u32>,
    /// Default wait that raises a waiting request one priority level, microseconds
    /// [default: 1000000].
    #[arg(long, env = "HARDY_PRIORITY_AGING_US")]
    priority_aging_us: Option<u64>,
    /// Directory of evaluation jobs (one subdirectory each, resumed at start); turns on the
    /// jobs API, which needs --admin-token [default: off].
    #[arg(long, env = "HARDY_JOBS_DIR")]
    jobs_dir: Option<PathBuf>,
    /// Directory under which job specs may name data sets (symlinks out of it are refused)
    /// [default: named sets only].
    #[arg(long, env = "HARDY_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// Evaluation jobs running at once [default: 1].
    #[arg(long, env = "HARDY_MAX_JOBS")]
    max_jobs: Option<usize>,
    /// Threads each running job uses (inference and decoding) [default: 1].
    #[arg(long, env = "HARDY_JOB_THREADS")]
    job_threads: Option<usize>,
    /// Jobs waiting in the queue at most, then 503 [default: 16].
    #[arg(long, env = "HARDY_MAX_QUEUED_JOBS")]
    max_queued_jobs: Option<usize>,
    /// Images (or sequences) one job may plan, then 413 [default: 200000].
    #[arg(long, env = "HARDY_MAX_JOB_IMAGES")]
    max_job_images: Option<usize>,
    /// Fraction of live images re-classified under small perturbations to export flip
    /// probabilities, 0..1 [default: 0, off].
    #[arg(long, env = "HARDY_MONITOR_RATE")]
    monitor_rate: Option<f64>,
    /// Single-image attack/corrupt/robustness requests running at once, then 503 [default: 2].
    #[arg(long, env = "HARDY_MAX_ROBUSTNESS_REQUESTS")]
    max_robustness_requests: Option<usize>,
}

impl Args {
    /// The file's settings (or the defaults) with every given flag applied.
    pub fn resolve(self) -> Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => {
                $(if let Some(v) = self.$field { $target = v; })*
            };
        }
        set!(
            host => c.host,
            port => c.port,
            grpc_port => c.grpc_port,
            model_repository => c.model_repository,
            versions => c.versions,
            device => c.device,
            instances => c.instances,
            intra_threads => c.intra_threads,
            preprocess_threads => c.preprocess_threads,
            http_workers => c.http_workers,
            max_body_bytes => c.max_body_bytes,
            shutdown_timeout => c.shutdown_timeout_s,
            max_connections => c.max_connections,
            body_timeout => c.body_timeout_s,
            max_inflight_body_bytes => c.max_inflight_body_bytes,
            max_jobs => c.max_jobs,
            job_threads => c.job_threads,
            max_queued_jobs => c.max_queued_jobs,
            max_job_images => c.max_job_images,
            monitor_rate => c.monitor_rate,
            max_robustness_requests => c.max_robustness_requests,
        );
        if self.jobs_dir.is_some() {
            c.jobs_dir = self.jobs_dir;
        }
        if self.otlp_endpoint.is_some() {
            c.otlp_endpoint = self.otlp_endpoint;
        }
        if self.data_root.is_some() {
            c.data_root = self.data_root;
        }
        if self.admin_token.is_some() {
            c.admin_token = self.admin_token;
        }
        c.strict_device |= self.strict_device;
        c.grpc &= !self.no_grpc;
        if self.max_batch_size.is_some() {
            c.batching.max_batch_size = self.max_batch_size;
        }
        if self.max_queue_delay_us.is_some() {
            c.batching.max_queue_delay_us = self.max_queue_delay_us;
        }
        if self.queue_capacity.is_some() {
            c.batching.queue_capacity = self.queue_capacity;
        }
        if self.max_queue_images.is_some() {
            c.batching.max_queue_images = self.max_queue_images;
        }
        if self.max_queue_bytes.is_some() {
            c.batching.max_queue_bytes = self.max_queue_bytes;
        }
        if self.queue_timeout_us.is_some() {
            c.batching.queue_timeout_us = self.queue_timeout_us;
        }
        if self.priority_levels.is_some() {
            c.batching.priority_levels = self.priority_levels;
        }
        if self.default_priority_level.is_some() {
            c.batching.default_priority_level = self.default_priority_level;
        }
        if self.priority_aging_us.is_some() {
            c.batching.priority_aging_us = self.priority_aging_us;
        }
        Ok(c)
    }
}

pub fn run(args: Args, ort_library: Option<PathBuf>) -> Result<ExitCode> {
    let config = args.resolve()?;
    let rt = runtime::init(&RuntimeOptions {
        library: ort_library,
        flavor: config.device.flavor(),
    })?;
    let repository = config.model_repository.display().to_string();
    serve::run(config, rt, |listening| {
        let grpc = match listening.grpc {
            Some(addr) => format!(", gRPC on {addr}"),
            None => String::new(),
        };
        for addr in &listening.http {
            // The one line on stdout: scripts and tests read the ports from it.
            println!("hardy serve: listening on http://{addr} (model repository {repository}){grpc}");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
