//! Starting and stopping the server: bind, load the repository, serve until SIGTERM/SIGINT,
//! drain, exit.
//!
//! The listener is bound first so that `/v2/health/live` answers while models load;
//! `/v2/health/ready` turns 200 once every model has loaded and warmed up. A model that
//! fails to load at start stops the server with that error (as Triton does by default). On
//! SIGTERM or SIGINT actix stops accepting connections and waits up to
//! `shutdown_timeout_s` for the requests in flight, which the batchers keep serving.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
};

use actix_web::{App, HttpServer, web};
use engine::{preprocess::ImageLimits, runtime::Runtime, session::SessionOptions};

use crate::{
    ServeError, ServerConfig,
    http::{self, AppState},
    jobs::{Jobs, JobsConfig},
    metrics::Metrics,
    prep::PrepPool,
    repository::{LoadOptions, Repository},
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listener could not be bound or the server failed.
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A model failed to load at start, or another start-up step failed.
    #[error(transparent)]
    Startup(#[from] ServeError),
}

/// Descriptors kept free of connections: model files, libraries, threads' pipes, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft limit on open files to the hard limit where allowed, and returns how
/// many of the `wanted` connections fit below it (each connection is one descriptor).
fn fit_connections(wanted: usize) -> usize {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let limit = unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return wanted;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r = raised;
            }
        }
        r.rlim_cur
    };
    let room = usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX);
    if wanted > room {
        tracing::warn!(
            "--max-connections {wanted} lowered to {room}: the open-file limit is {limit} (raise it with ulimit -n)"
        );
    }
    wanted.min(room)
}

/// Where the server listens.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The HTTP addresses.
    pub http: Vec<SocketAddr>,
    /// The gRPC address, unless gRPC is off.
    pub grpc: Option<SocketAddr>,
}

/// Runs the server until it is told to stop. `on_listening` is called with the bound
/// addresses (useful with port 0).
pub fn run(config: ServerConfig, runtime: Runtime, on_listening: impl FnOnce(&Listening)) -> Result<(), RunError> {
    let (addr, device, policy) = config.validate()?;
    let metrics = Arc::new(Metrics::new().map_err(|e| ServeError::Internal(format!("metrics: {e}")))?);
    let options = LoadOptions {
        runtime,
        session: SessionOptions {
            device,
            policy,
            intra_threads: config.intra_threads,
            ..SessionOptions::default()
        },
        instances: config.instances,
        versions: config.versions,
        defaults: config.batching.as_layer(),
    };
    let (job_runtime, job_session) = (options.runtime.clone(), options.session.clone());
    if !config.model_repository.is_dir() {
        return Err(ServeError::Internal(format!(
            "model repository {} is not a directory",
            config.model_repository.display()
        ))
        .into());
    }
    let repo = Arc::new(Repository::new(
        config.model_repository.clone(),
        options,
        Arc::clone(&metrics),
    ));
    let gpu = match device {
        engine::device::Device::Cuda(id) => Some(id),
        engine::device::Device::Cpu => None,
    };
    let http_workers = match config.http_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let connections = fit_connections(config.max_connections);
    let jobs = match &config.jobs_dir {
        Some(dir) => {
            let data_root = match &config.data_root {
                Some(root) => Some(
                    root.canonicalize()
                        .map_err(|e| ServeError::Internal(format!("data root {}: {e}", root.display())))?,
                ),
                None => None,
            };
            let jobs_config = JobsConfig {
                dir: dir.clone(),
                data_root,
                max_jobs: config.max_jobs,
                job_threads: config.job_threads,
                max_queued: config.max_queued_jobs,
                max_units: config.max_job_images,
                runtime: job_runtime,
                session: job_session,
            };
            Some(Arc::new(
                Jobs::start(jobs_config, Arc::clone(&metrics)).map_err(ServeError::from)?,
            ))
        }
        None => None,
    };
    let monitor = crate::monitor::Monitor::start(
        config.monitor_rate,
        repo.options().runtime.clone(),
        ImageLimits::default(),
        Arc::clone(&metrics),
    )?;
    let state = web::Data::new(AppState {
        repo: Arc::clone(&repo),
        prep: PrepPool::new(config.preprocess_threads, ImageLimits::default())?,
        admin_token: config.admin_token.clone(),
        max_body_bytes: config.max_body_bytes,
        bodies: http::BodyBudget::new(config.max_inflight_body_bytes, metrics.body_bytes.clone()),
        body_timeout: std::time::Duration::from_secs(config.body_timeout_s),
        metrics,
        started: Default::default(),
        gpu,
        jobs,
        robust: crate::robust::Robust::new(
            config.max_robustness_requests,
            repo.options().runtime.clone(),
            repo.options().session.clone(),
        )?,
        monitor,
        telemetry: match &config.otlp_endpoint {
            Some(endpoint) => crate::telemetry::Telemetry::start(endpoint)?,
            None => crate::telemetry::Telemetry::off(),
        },
    });

    // gRPC's listener is bound before anything listens, so a taken port fails the start.
    let grpc_addr = SocketAddr::new(addr.ip(), config.grpc_port);
    let grpc_listener = match config.grpc {
        true => Some(std::net::TcpListener::bind(grpc_addr).map_err(|source| RunError::Bind {
            addr: grpc_addr,
            source,
        })?),
        false => None,
    };
    let startup_error: Arc<Mutex<Option<ServeError>>> = Arc::default();
    let mut grpc_server = None;
    let system = actix_web::rt::System::new();
    let served = system.block_on(async {
        let app_state = state.clone();
        // Without half-closed connections actix drops a handler as soon as its client hangs
        // up, which withdraws the request wherever it is (see `http::run_images`).
        let server = HttpServer::new(move || App::new().app_data(app_state.clone()).configure(http::routes))
            .workers(http_workers)
            .max_connections(connections.div_ceil(http_workers))
            .h1_allow_half_closed(false)
            .shutdown_timeout(config.shutdown_timeout_s);
        let server = server.bind(addr).map_err(|source| RunError::Bind { addr, source })?;
        let grpc = match &grpc_listener {
            Some(l) => Some(l.local_addr().map_err(|source| RunError::Bind {
                addr: grpc_addr,
                source,
            })?),
            None => None,
        };
        on_listening(&Listening {
            http: server.addrs(),
            grpc,
        });
        let server = server.run();
        let handle = server.handle();
        if let Some(listener) = grpc_listener {
            grpc_server = Some(crate::grpc::GrpcServer::start(
                state.clone(),
                crate::grpc::GrpcSettings {
                    listener,
                    threads: http_workers,
                    max_connections: connections,
                    shutdown_timeout: std::time::Duration::from_secs(config.shutdown_timeout_s),
                },
            )?);
        }
        let (loader_state, loader_error) = (state.clone(), Arc::clone(&startup_error));
        std::thread::Builder::new()
            .name("load-models".into())
            .spawn(move || match loader_state.repo.load_all() {
                Ok(names) => {
                    loader_state.started.store(true, Ordering::Release);
                    tracing::info!(models = ?names, "ready");
                }
                Err(e) => {
                    tracing::error!("stopping: {e}");
                    *loader_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    // `stop` sends its command at once; the returned future only waits for it.
                    drop(handle.stop(false));
                }
            })
            .map_err(|source| RunError::Bind { addr, source })?;
        server.await.map_err(|source| RunError::Bind { addr, source })
    });
    // gRPC stops with HTTP (it drains its own calls on the same signal).
    if let Some(grpc) = grpc_server {
        grpc.stop();
    }
    // Stop the batchers and inference threads of every model before returning.
    drop(state);
    drop(repo);
    served?;
    match startup_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
