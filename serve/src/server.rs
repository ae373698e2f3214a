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

/// Runs the server until it is told to stop. `on_listening` is called with the bound
/// addresses (useful with port 0).
pub fn run(config: ServerConfig, runtime: Runtime, on_listening: impl FnOnce(&[SocketAddr])) -> Result<(), RunError> {
    let (addr, device, policy) = config.validate()?;
    let metrics = Arc::new(Metrics::new().map_err(|e| ServeError::Internal(format!("metrics: {e}")))?);
    let options = LoadOptions {
        runtime,
        session: SessionOptions {
            device,
            policy,
            intra_threads: config.intra_threads,
        },
        instances: config.instances,
        versions: config.versions,
        defaults: config.batching.as_layer(),
    };
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
    let state = web::Data::new(AppState {
        repo: Arc::clone(&repo),
        metrics,
        prep: PrepPool::new(config.preprocess_threads, ImageLimits::default())?,
        admin_token: config.admin_token.clone(),
        max_body_bytes: config.max_body_bytes,
        started: Default::default(),
        gpu,
    });

    let startup_error: Arc<Mutex<Option<ServeError>>> = Arc::default();
    let system = actix_web::rt::System::new();
    let served = system.block_on(async {
        let app_state = state.clone();
        let mut server = HttpServer::new(move || App::new().app_data(app_state.clone()).configure(http::routes))
            .on_connect(http::Peer::on_connect)
            .shutdown_timeout(config.shutdown_timeout_s);
        if config.http_workers > 0 {
            server = server.workers(config.http_workers);
        }
        let server = server.bind(addr).map_err(|source| RunError::Bind { addr, source })?;
        on_listening(&server.addrs());
        let server = server.run();
        let handle = server.handle();
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
    // Stop the batchers and inference threads of every model before returning.
    drop(state);
    drop(repo);
    served?;
    match startup_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
