//! The HTTP layer: routes, and what every inference endpoint shares (body limits, the
//! admission -> preprocessing -> batcher pipeline, timing headers, and the one place where a
//! request's outcome is counted).
//!
//! Handlers parse and wait; they never decode images or run models on the async threads.

mod admin;
mod binary;
mod classify;
mod oip;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::{
    ServeError,
    batcher::{BatchOutput, Permit},
    metrics::Metrics,
    prep::PrepPool,
    repository::{LoadedModel, Repository},
    stats::{self, RequestParts, VersionHandle},
};

/// What every handler shares.
pub struct AppState {
    /// The loaded models.
    pub repo: Arc<Repository>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Decoding and preprocessing threads.
    pub prep: PrepPool,
    /// Bearer token of the repository API; `None` turns the API off.
    pub admin_token: Option<String>,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Set once the models present at start have loaded.
    pub started: AtomicBool,
    /// The GPU to sample for metrics, when serving on CUDA.
    pub gpu: Option<u32>,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v2/health/live", web::get().to(live))
        .route("/v2/health/ready", web::get().to(ready))
        .route("/v2", web::get().to(oip::server_metadata))
        .route("/v2/models/stats", web::get().to(oip::statistics))
        .route("/v2/models/{model}/stats", web::get().to(oip::statistics))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            web::get().to(oip::statistics),
        )
        .route("/v2/models/{model}", web::get().to(oip::model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            web::get().to(oip::model_metadata),
        )
        .route("/v2/models/{model}/config", web::get().to(oip::model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            web::get().to(oip::model_config),
        )
        .route("/v2/models/{model}/ready", web::get().to(oip::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            web::get().to(oip::model_ready),
        )
        .route("/v2/models/{model}/infer", web::post().to(oip::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            web::post().to(oip::infer),
        )
        .route("/v2/repository/index", web::post().to(admin::index))
        .route("/v2/repository/models/{model}/load", web::post().to(admin::load))
        .route("/v2/repository/models/{model}/unload", web::post().to(admin::unload))
        .route("/v1/models/{model}/classify", web::post().to(classify::classify))
        .route(
            "/v1/models/{model}/versions/{version}/classify",
            web::post().to(classify::classify),
        )
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(not_found));
}

/// The model and optional version in a route.
#[derive(serde::Deserialize)]
pub struct ModelPath {
    model: String,
    version: Option<String>,
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "live": true }))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let ready = state.started.load(Ordering::Acquire) && state.repo.all_ready();
    let status = if ready {
        actix_web::http::StatusCode::OK
    } else {
        actix_web::http::StatusCode::BAD_REQUEST
    };
    HttpResponse::build(status).json(serde_json::json!({ "ready": ready }))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Some(gpu) = state.gpu {
        crate::metrics::sample_gpu(&state.metrics, gpu);
    }
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => ServeError::Internal(format!("cannot render metrics: {e}")).error_response(),
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "error": format!("no route for {} {}", req.method(), req.path())
    }))
}

/// Reads a body up to the limit: a declared `Content-Length` over it is refused before
/// reading, and a stream that grows past it is cut off.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Bytes, ServeError> {
    let declared = content_length(req);
    if declared.is_some_and(|n| n > limit) {
        return Err(ServeError::PayloadTooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ServeError::Invalid(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ServeError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A request's declared `Content-Length`, if it has a valid one.
pub fn content_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// The media type of a request, lower-cased, without parameters (`""` when absent).
pub fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Where one request's time went.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Decoding and preprocessing (or tensor conversion), wall time.
    pub preprocess: Duration,
    /// Waiting for a batch.
    pub queue: Duration,
    /// Session runs.
    pub inference: Duration,
    /// When the logits arrived.
    pub outputs_at: Option<Instant>,
}

impl Timings {
    /// Adds `x-preprocess-time`, `x-queue-time`, `x-inference-time` and `x-total-time`
    /// (milliseconds) to a response.
    pub fn headers(&self, response: &mut HttpResponseBuilder, total: Duration) {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        response
            .insert_header(("x-preprocess-time", ms(self.preprocess)))
            .insert_header(("x-queue-time", ms(self.queue)))
            .insert_header(("x-inference-time", ms(self.inference)))
            .insert_header(("x-total-time", ms(total)));
    }
}

/// A duplicate of a connection's socket, to notice a client that went away.
///
/// actix keeps a handler running after its client disconnects (it only finds out when it
/// writes the response), so a waiting request peeks at its socket instead: end of stream or
/// a reset means nobody will read the answer, and the request is withdrawn from the queue.
/// (A client that half-closes its side after sending looks the same; HTTP clients do not.)
#[derive(Clone)]
pub struct Peer(Arc<std::net::TcpStream>);

impl Peer {
    /// Stores a duplicate of each new TCP connection's socket in its extensions
    /// (`HttpServer::on_connect`).
    pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
        use std::os::fd::AsFd;
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
            && let Ok(fd) = tcp.as_fd().try_clone_to_owned()
        {
            ext.insert(Peer(Arc::new(std::net::TcpStream::from(fd))));
        }
    }

    /// The peer of a request's connection, when known.
    pub fn of(req: &HttpRequest) -> Option<Peer> {
        req.conn_data::<Peer>().cloned()
    }

    fn gone(&self) -> bool {
        // The socket is non-blocking (tokio's), so this never waits.
        match self.0.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }
}

/// Awaits `work`, checking every 50 ms whether the client is still there.
pub async fn unless_gone<F: std::future::Future>(peer: Option<&Peer>, work: F) -> Result<F::Output, ServeError> {
    let Some(peer) = peer else {
        return Ok(work.await);
    };
    let mut work = std::pin::pin!(work);
    loop {
        let tick = std::pin::pin!(actix_web::rt::time::sleep(Duration::from_millis(50)));
        match futures_util::future::select(work.as_mut(), tick).await {
            futures_util::future::Either::Left((out, _)) => return Ok(out),
            futures_util::future::Either::Right(_) if peer.gone() => return Err(ServeError::ClientGone),
            futures_util::future::Either::Right(_) => {}
        }
    }
}

/// Admits, preprocesses and runs encoded images through a model.
pub async fn run_images(
    state: &AppState,
    model: &LoadedModel,
    peer: Option<&Peer>,
    images: Vec<Bytes>,
) -> Result<(BatchOutput, Timings), ServeError> {
    if images.is_empty() {
        return Err(ServeError::Invalid("the request holds no image".into()));
    }
    let permit = model.batcher.admit()?;
    let t = Instant::now();
    let n = images.len();
    let input = unless_gone(peer, state.prep.images(images, Arc::clone(&model.spec))).await??;
    run_tensor(state, model, peer, permit, input, n, t.elapsed()).await
}

/// Runs an already preprocessed batch (`images` rows of the model's input) through a model.
pub async fn run_tensor(
    state: &AppState,
    model: &LoadedModel,
    peer: Option<&Peer>,
    permit: Permit,
    input: Vec<f32>,
    images: usize,
    preprocess: Duration,
) -> Result<(BatchOutput, Timings), ServeError> {
    let version = model.version.to_string();
    state
        .metrics
        .preprocess_time
        .with_label_values(&[&model.name, &version])
        .observe(preprocess.as_secs_f64());
    let reply = model.batcher.submit(permit, input, images, model.signature.classes)?;
    let out = unless_gone(peer, reply)
        .await?
        .map_err(|_| ServeError::Internal("the batcher dropped the request".into()))??;
    let timings = Timings {
        preprocess,
        queue: out.queue,
        inference: out.inference,
        outputs_at: Some(Instant::now()),
    };
    Ok((out, timings))
}

/// Counts one inference request's outcome exactly once: when the handler finishes, or, if
/// the client goes away first and the handler is dropped, as `client_gone`.
pub struct Outcome {
    state: web::Data<AppState>,
    endpoint: &'static str,
    model: String,
    version: String,
    started: Instant,
    done: bool,
    /// Where the time went, once the request has run.
    parts: Option<RequestParts>,
    /// The serving version's statistics.
    stats: Option<VersionHandle>,
}

impl Outcome {
    /// Starts timing a request to `endpoint` for `model`.
    pub fn start(state: &web::Data<AppState>, endpoint: &'static str) -> Self {
        Self {
            state: state.clone(),
            endpoint,
            model: String::new(),
            version: String::new(),
            started: Instant::now(),
            done: false,
            parts: None,
            stats: None,
        }
    }

    /// Labels the request with the model version that serves it.
    pub fn serving(&mut self, model: &LoadedModel) {
        self.model = model.name.clone();
        self.version = model.version.to_string();
        self.stats = Some(Arc::clone(model.batcher.stats()));
    }

    /// Notes where a request that ran spent its time (for the statistics extension) and adds
    /// the timing headers to its response.
    pub fn ran(&mut self, timings: &Timings, response: &mut HttpResponseBuilder) {
        self.parts = Some(RequestParts {
            queue: timings.queue,
            input: timings.preprocess,
            infer: timings.inference,
            output: timings.outputs_at.map(|t| t.elapsed()).unwrap_or_default(),
        });
        timings.headers(response, self.started.elapsed());
    }

    /// Records the outcome and turns an error into its response.
    pub fn finish(mut self, result: Result<HttpResponse, ServeError>) -> HttpResponse {
        self.done = true;
        let (outcome, response) = match result {
            Ok(r) => ("success", r),
            Err(e) => {
                tracing::debug!(endpoint = self.endpoint, model = %self.model, "request failed: {e}");
                (e.reason(), e.error_response())
            }
        };
        self.record(outcome);
        response
    }

    fn record(&self, outcome: &str) {
        let m = &self.state.metrics;
        let labels = [self.model.as_str(), self.version.as_str(), self.endpoint];
        m.requests
            .with_label_values(&[labels[0], labels[1], labels[2], outcome])
            .inc();
        let total = self.started.elapsed();
        m.request_time.with_label_values(&labels).observe(total.as_secs_f64());
        let parts = if outcome == "success" {
            Ok(self.parts.unwrap_or_default())
        } else {
            Err(())
        };
        if let Some(h) = &self.stats {
            stats::lock(h).request(total, parts);
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.done {
            tracing::debug!(endpoint = self.endpoint, model = %self.model, "client went away");
            self.record("client_gone");
        }
    }
}
