//! The server's settings: one struct, read from an optional TOML file and overridden by flags
//! and environment variables (the `hardy serve` command does the overriding).
//!
//! Batching settings here are *defaults* for every model: they sit between the `hardy.config`
//! metadata in a model's ONNX file (the exporter's own defaults, which they override) and the
//! model's `config.toml` (which overrides them field by field); see
//! `engine::artifact::ModelArtifact::open_with_defaults`.

use std::{net::SocketAddr, path::PathBuf};

use engine::device::{Device, DevicePolicy};
use serde::{Deserialize, Serialize};

/// Which versions of each model to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionPolicy {
    /// Only the highest version (Triton's `latest(1)`).
    #[default]
    Latest,
    /// Every version directory; the highest answers requests that name none.
    All,
}

impl std::str::FromStr for VersionPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(Self::Latest),
            "all" => Ok(Self::All),
            _ => Err(format!("version policy {s:?} is not `latest` or `all`")),
        }
    }
}

/// Dynamic batching defaults for models that do not set them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingDefaults {
    /// Largest batch one session run takes.
    pub max_batch_size: Option<usize>,
    /// How long the oldest waiting request may wait for others, in microseconds.
    pub max_queue_delay_us: Option<u64>,
    /// Requests that may be admitted and waiting; beyond this the server answers 503.
    pub queue_capacity: Option<usize>,
    /// Images that may be admitted at once per model version.
    pub max_queue_images: Option<usize>,
    /// Bytes of decoded input tensors that may be admitted at once per model version.
    pub max_queue_bytes: Option<usize>,
    /// Microseconds a request may wait in the queue before it is rejected (0: no limit).
    pub queue_timeout_us: Option<u64>,
    /// Priority levels requests may name (0: off).
    pub priority_levels: Option<u32>,
    /// The level of requests that name none (0: the lowest).
    pub default_priority_level: Option<u32>,
    /// Microseconds of waiting that raise a request one level.
    pub priority_aging_us: Option<u64>,
}

impl BatchingDefaults {
    /// These defaults as a `[batching]` TOML layer for [`engine::artifact::ModelArtifact`].
    pub fn as_layer(&self) -> toml::Table {
        let mut batching = toml::Table::new();
        if let Some(v) = self.max_batch_size {
            batching.insert("max_batch_size".into(), toml::Value::Integer(v as i64));
        }
        let fields = [
            ("max_queue_delay_us", self.max_queue_delay_us),
            ("queue_timeout_us", self.queue_timeout_us),
            ("priority_aging_us", self.priority_aging_us),
            ("priority_levels", self.priority_levels.map(u64::from)),
            ("default_priority_level", self.default_priority_level.map(u64::from)),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                batching.insert(name.into(), toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)));
            }
        }
        let fields = [
            ("queue_capacity", self.queue_capacity),
            ("max_queue_images", self.max_queue_images),
            ("max_queue_bytes", self.max_queue_bytes),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                batching.insert(name.into(), toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)));
            }
        }
        let mut table = toml::Table::new();
        if !batching.is_empty() {
            table.insert("batching".into(), toml::Value::Table(batching));
        }
        table
    }
}

/// Everything `hardy serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 picks a free one (printed at start).
    pub port: u16,
    /// Whether to serve the Open Inference Protocol over gRPC too.
    pub grpc: bool,
    /// gRPC port (on `host`); 0 picks a free one (printed at start).
    pub grpc_port: u16,
    /// The model repository: `<repo>/<model>/<version>/model.onnx`.
    pub model_repository: PathBuf,
    /// Which versions of each model to load.
    pub versions: VersionPolicy,
    /// Bearer token for the repository API; without one the API is off.
    pub admin_token: Option<String>,
    /// `cpu`, `cuda` (or `gpu`) or `cuda:N`.
    pub device: Device,
    /// Fail to load instead of falling back to CPU when the device cannot be used.
    pub strict_device: bool,
    /// Inference threads (one ONNX Runtime session each) per model version.
    pub instances: usize,
    /// ONNX Runtime intra-op threads per session; 0 lets ORT use one per core.
    pub intra_threads: usize,
    /// Threads that decode and preprocess images; 0 means one per core.
    pub preprocess_threads: usize,
    /// HTTP worker threads; 0 means one per core.
    pub http_workers: usize,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Seconds to wait for admitted requests after SIGTERM/SIGINT before exiting anyway.
    pub shutdown_timeout_s: u64,
    /// Open connections the server keeps at most (more wait in the listen backlog); lowered
    /// to fit the process's file-descriptor limit.
    pub max_connections: usize,
    /// Seconds a request body may take to arrive (then 408).
    pub body_timeout_s: u64,
    /// Bytes of request bodies held in memory at once, server-wide (then 503).
    pub max_inflight_body_bytes: usize,
    /// Batching defaults for models that do not set their own.
    pub batching: BatchingDefaults,
    /// Where evaluation jobs live (one directory each); without it the jobs API is off.
    pub jobs_dir: Option<PathBuf>,
    /// The directory under which job specs may name data paths; without it jobs may only
    /// use the named sets (`fashion-mnist:test`, `foolbox:imagenet`).
    pub data_root: Option<PathBuf>,
    /// Evaluation jobs running at once.
    pub max_jobs: usize,
    /// Threads each running job may use (ONNX Runtime intra-op threads and decoding threads).
    pub job_threads: usize,
    /// Jobs that may wait in the queue; beyond this a submission is 503.
    pub max_queued_jobs: usize,
    /// Units of work (images, or sequences for suite p) one job may plan; beyond this 413.
    pub max_job_images: usize,
    /// Fraction of live /classify and /infer images re-classified under small perturbations
    /// for robustness monitoring (0: off).
    pub monitor_rate: f64,
    /// Single-image robustness requests (attack, corrupt, robustness profile) running at once;
    /// beyond this 503.
    pub max_robustness_requests: usize,
    /// OTLP/gRPC collector to export request traces to (`http://host:4317`); none: tracing off.
    pub otlp_endpoint: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            grpc: true,
            grpc_port: 8001,
            model_repository: PathBuf::from("models"),
            versions: VersionPolicy::Latest,
            admin_token: None,
            device: Device::Cpu,
            strict_device: false,
            instances: 1,
            intra_threads: 0,
            preprocess_threads: 0,
            http_workers: 0,
            max_body_bytes: 64 << 20,
            shutdown_timeout_s: 30,
            max_connections: 1024,
            body_timeout_s: 30,
            max_inflight_body_bytes: 1 << 30,
            batching: BatchingDefaults::default(),
            jobs_dir: None,
            data_root: None,
            max_jobs: 1,
            job_threads: 1,
            max_queued_jobs: 16,
            max_job_images: 200_000,
            monitor_rate: 0.0,
            max_robustness_requests: 2,
            otlp_endpoint: None,
        }
    }
}

/// Why a server configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The TOML does not parse or has an unknown field.
    #[error("invalid server config {}: {reason}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the field and line).
        reason: String,
    },
    /// A value that cannot be used.
    #[error("invalid server setting `{field}`: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl ServerConfig {
    /// Reads a TOML file; fields it does not set keep their defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            reason: e.to_string().trim().replace('\n', " "),
        })
    }

    /// Checks the values and resolves the device.
    pub fn validate(&self) -> Result<(SocketAddr, Device, DevicePolicy), ConfigError> {
        let invalid = |field, reason: String| ConfigError::Invalid { field, reason };
        let addr = format!("{}:{}", self.host, self.port);
        let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&addr)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| invalid("host", format!("cannot resolve {addr:?}")))?;
        let device = self.device;
        if self.instances == 0 || self.instances > 64 {
            return Err(invalid("instances", format!("{} is not in 1..=64", self.instances)));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid(
                "max_body_bytes",
                format!("{} is below 1024", self.max_body_bytes),
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if self.body_timeout_s == 0 {
            return Err(invalid("body_timeout_s", "must be at least 1".into()));
        }
        if self.max_inflight_body_bytes < self.max_body_bytes {
            return Err(invalid(
                "max_inflight_body_bytes",
                format!(
                    "{} is below max_body_bytes ({}): no body of the largest size could be read",
                    self.max_inflight_body_bytes, self.max_body_bytes
                ),
            ));
        }
        if let Some(token) = &self.admin_token
            && token.trim().is_empty()
        {
            return Err(invalid("admin_token", "is empty".into()));
        }
        if self.max_jobs == 0 || self.max_jobs > 64 {
            return Err(invalid("max_jobs", format!("{} is not in 1..=64", self.max_jobs)));
        }
        if self.job_threads == 0 || self.job_threads > 256 {
            return Err(invalid(
                "job_threads",
                format!("{} is not in 1..=256", self.job_threads),
            ));
        }
        if self.max_queued_jobs == 0 {
            return Err(invalid("max_queued_jobs", "must be at least 1".into()));
        }
        if self.max_job_images == 0 {
            return Err(invalid("max_job_images", "must be at least 1".into()));
        }
        if !(self.monitor_rate.is_finite() && (0.0..=1.0).contains(&self.monitor_rate)) {
            return Err(invalid(
                "monitor_rate",
                format!("{} is not in [0, 1]", self.monitor_rate),
            ));
        }
        if self.max_robustness_requests == 0 {
            return Err(invalid("max_robustness_requests", "must be at least 1".into()));
        }
        let policy = if self.strict_device {
            DevicePolicy::Strict
        } else {
            DevicePolicy::FallBackToCpu
        };
        Ok((addr, device, policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(&path, "port = 9000\n[batching]\nmax_batch_size = 8\n").unwrap();
        let c = ServerConfig::from_file(&path).unwrap();
        assert_eq!((c.port, c.batching.max_batch_size, c.instances), (9000, Some(8), 1));
        let layer = c.batching.as_layer();
        assert_eq!(layer["batching"]["max_batch_size"].as_integer(), Some(8));
        std::fs::write(&path, "prot = 9000\n").unwrap();
        let err = ServerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        std::fs::write(&path, "device = \"tpu\"\n").unwrap();
        let err = ServerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("invalid device \"tpu\""), "{err}");
        std::fs::write(&path, "device = \"GPU\"\n").unwrap();
        assert_eq!(ServerConfig::from_file(&path).unwrap().device, Device::Cuda(0));
    }
}
