//! The HTTP layer: routes, and what every inference endpoint shares (body limits, the
//! admission -> preprocessing -> batcher pipeline, timing headers, and the one place where a
//! request's outcome is counted).
//!
//! Handlers parse and wait; they never decode images or run models on the async threads.

mod admin;
mod binary;
mod classify;
mod console;
mod jobs;
mod oip;
pub mod openapi;
mod robust;

pub(crate) use admin::check_token;
pub(crate) use classify::{decode_base64, finite};

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::{
    ServeError,
    batcher::{BatchOutput, Permit, QueuePolicy, Ticket},
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
    /// Request body bytes held at once, server-wide.
    pub bodies: Arc<BodyBudget>,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Set once the models present at start have loaded.
    pub started: AtomicBool,
    /// The GPU to sample for metrics, when serving on CUDA.
    pub gpu: Option<u32>,
    /// The threads of the single-image attack, corruption and robustness endpoints.
    pub robust: crate::robust::Robust,
    /// Evaluation jobs, when the server has a jobs directory.
    pub jobs: Option<Arc<crate::jobs::Jobs>>,
    /// The robustness monitor that live images are offered to (off unless `--monitor-rate`).
    pub monitor: crate::monitor::Monitor,
    /// OpenTelemetry tracing (off unless `--otlp-endpoint`).
    pub telemetry: crate::telemetry::Telemetry,
}

/// The server's name in the protocol's server metadata.
pub const SERVER_NAME: &str = "hardy";

/// The protocol extensions the server supports (HTTP and gRPC).
pub const EXTENSIONS: [&str; 5] = [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_configuration",
    "statistics",
];

impl AppState {
    /// Whether every model present at start has loaded and every loaded version is ready.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && self.repo.all_ready()
    }

    /// The model version a request names. While the models present at start are still
    /// loading, a model not loaded yet is 503 (retry), not 404.
    pub fn model(&self, name: &str, version: Option<&str>) -> Result<Arc<LoadedModel>, ServeError> {
        match self.repo.get(name, version) {
            Err(ServeError::ModelNotFound(name)) if !self.started.load(Ordering::Acquire) => {
                Err(ServeError::Loading(name))
            }
            other => other,
        }
    }
}

/// Registers every route. Each path answers a method it does not serve with a JSON 405,
/// and an unknown path with a JSON 404.
pub fn routes(cfg: &mut web::ServiceConfig) {
    macro_rules! route {
        ($path:expr, $method:ident, $handler:expr) => {
            cfg.service(
                web::resource($path)
                    .route(web::$method().to($handler))
                    .default_service(web::to(method_not_allowed)),
            );
        };
    }
    route!("/v2/health/live", get, live);
    route!("/v2/health/ready", get, ready);
    route!("/v2", get, oip::server_metadata);
    route!("/v2/models/stats", get, oip::statistics);
    route!(
        [
            "/v2/models/{model}/stats",
            "/v2/models/{model}/versions/{version}/stats"
        ],
        get,
        oip::statistics
    );
    route!(
        ["/v2/models/{model}", "/v2/models/{model}/versions/{version}"],
        get,
        oip::model_metadata
    );
    route!(
        [
            "/v2/models/{model}/config",
            "/v2/models/{model}/versions/{version}/config"
        ],
        get,
        oip::model_config
    );
    route!(
        [
            "/v2/models/{model}/ready",
            "/v2/models/{model}/versions/{version}/ready"
        ],
        get,
        oip::model_ready
    );
    route!(
        [
            "/v2/models/{model}/infer",
            "/v2/models/{model}/versions/{version}/infer"
        ],
        post,
        oip::infer
    );
    route!("/v2/repository/index", post, admin::index);
    route!("/v2/repository/models/{model}/load", post, admin::load);
    route!("/v2/repository/models/{model}/unload", post, admin::unload);
    route!(
        [
            "/v1/models/{model}/classify",
            "/v1/models/{model}/versions/{version}/classify"
        ],
        post,
        classify::classify
    );
    cfg.service(
        web::resource("/v1/evaluations")
            .route(web::get().to(jobs::list))
            .route(web::post().to(jobs::submit))
            .default_service(web::to(method_not_allowed)),
    );
    cfg.service(
        web::resource("/v1/evaluations/{id}")
            .route(web::get().to(jobs::status))
            .route(web::delete().to(jobs::cancel))
            .default_service(web::to(method_not_allowed)),
    );
    route!("/v1/evaluations/{id}/result", get, jobs::result);
    route!("/v1/evaluations/{id}/report", get, jobs::report);
    route!("/v1/evaluations/{id}/{file}", get, jobs::file);
    route!(
        [
            "/v1/models/{model}/attack",
            "/v1/models/{model}/versions/{version}/attack"
        ],
        post,
        robust::attack
    );
    route!(
        [
            "/v1/models/{model}/robustness",
            "/v1/models/{model}/versions/{version}/robustness"
        ],
        post,
        robust::robustness
    );
    route!("/v1/corrupt", post, robust::corrupt);
    route!("/metrics", get, metrics);
    route!("/openapi.json", get, openapi::document);
    // The web console: the page at `/` (other unknown paths stay JSON 404s) and its assets.
    route!("/", get, console::index);
    route!("/console/{file}", get, console::asset);
    route!("/v1/models", get, console::models);
    cfg.default_service(web::to(not_found));
}

/// The model and optional version in a route.
#[derive(serde::Deserialize)]
pub struct ModelPath {
    model: String,
    version: Option<String>,
}

/// The body of every error response.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, naming the field, shape, limit or model involved.
    pub error: String,
}

/// `GET /v2/health/live`'s body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Live {
    /// Always true: the process answers.
    pub live: bool,
}

/// `GET /v2/health/ready`'s body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// Whether every model has loaded.
    pub ready: bool,
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/v2/health/live", tag = "health",
    responses((status = 200, description = "The server is live", body = Live)))]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Live { live: true })
}

/// Readiness: 200 once every model present at start has loaded, 400 before.
#[utoipa::path(get, path = "/v2/health/ready", tag = "health",
    responses(
        (status = 200, description = "Every model is loaded", body = Ready),
        (status = 400, description = "Models are still loading, or one failed", body = Ready),
    ))]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let ready = state.is_ready();
    let status = if ready {
        actix_web::http::StatusCode::OK
    } else {
        actix_web::http::StatusCode::BAD_REQUEST
    };
    HttpResponse::build(status).json(Ready { ready })
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
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
    HttpResponse::NotFound().json(ErrorBody {
        error: format!("no route for {} {}", req.method(), req.path()),
    })
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(ErrorBody {
        error: format!("{} is not a method of {}", req.method(), req.path()),
    })
}

/// The server-wide budget of request body bytes held in memory (being read or parsed).
pub struct BodyBudget {
    held: AtomicUsize,
    limit: usize,
    gauge: prometheus::IntGauge,
}

impl BodyBudget {
    /// A budget of `limit` bytes, reported through `gauge`.
    pub fn new(limit: usize, gauge: prometheus::IntGauge) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            limit,
            gauge,
        })
    }

    /// An empty claim on the budget.
    pub fn guard(self: &Arc<Self>) -> BodyGuard {
        BodyGuard {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }
}

/// Bytes of one request body counted against the [`BodyBudget`]; given back when dropped.
pub struct BodyGuard {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyGuard {
    /// Grows the claim to `bytes` in all, or fails (503) when the budget has no room.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), ServeError> {
        let Some(more) = bytes.checked_sub(self.bytes).filter(|&m| m > 0) else {
            return Ok(());
        };
        let b = &self.budget;
        let claimed = b.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(more).filter(|&n| n <= b.limit)
        });
        match claimed {
            Ok(before) => {
                self.bytes = bytes;
                b.gauge.set((before + more) as i64);
                Ok(())
            }
            Err(held) => Err(ServeError::BodiesBusy {
                held: held.saturating_add(more),
                limit: b.limit,
            }),
        }
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        let before = self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.gauge.set(before.saturating_sub(self.bytes) as i64);
    }
}

/// Reads a request's body chunks until the end, the size limit (413), the server's body
/// budget (503) or the body deadline (408). The declared `Content-Length` is checked and
/// claimed before reading (so a flood of large bodies is refused before it is sent); bytes
/// beyond it (chunked bodies) are claimed as they arrive.
pub async fn read_chunks(
    state: &AppState,
    req: &HttpRequest,
    mut payload: web::Payload,
    mut sink: impl FnMut(Bytes) -> Result<(), ServeError>,
) -> Result<BodyGuard, ServeError> {
    let limit = state.max_body_bytes;
    let declared = content_length(req);
    if declared.is_some_and(|n| n > limit) {
        return Err(ServeError::PayloadTooLarge { limit });
    }
    let mut guard = state.bodies.guard();
    guard.reserve(declared.unwrap_or(0))?;
    let deadline = tokio::time::Instant::now() + state.body_timeout;
    let mut total = 0usize;
    loop {
        let next = tokio::time::timeout_at(deadline, payload.next())
            .await
            .map_err(|_| ServeError::BodyTimeout {
                seconds: state.body_timeout.as_secs(),
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| ServeError::Invalid(format!("cannot read the request body: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total > limit {
            return Err(ServeError::PayloadTooLarge { limit });
        }
        guard.reserve(total)?;
        sink(chunk)?;
    }
    Ok(guard)
}

/// Reads a whole body (see [`read_chunks`]); the guard keeps its bytes counted.
pub async fn read_body(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(Bytes, BodyGuard), ServeError> {
    // The declared length is within the limit and already claimed from the budget: room
    // for it up front spares the copies of a growing buffer (pages are only touched as the
    // bytes arrive).
    let mut body = BytesMut::with_capacity(content_length(req).unwrap_or(0).min(state.max_body_bytes));
    let guard = read_chunks(state, req, payload, |chunk| {
        body.extend_from_slice(&chunk);
        Ok(())
    })
    .await?;
    Ok((body.freeze(), guard))
}

/// A request's declared `Content-Length`, if it has a valid one.
pub fn content_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// A request's W3C `traceparent` header, if any.
pub fn traceparent(req: &HttpRequest) -> Option<&str> {
    req.headers().get("traceparent").and_then(|v| v.to_str().ok())
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
    /// Waiting for a ticket and for a batch.
    pub queue: Duration,
    /// Session runs.
    pub inference: Duration,
    /// When the logits arrived.
    pub outputs_at: Option<Instant>,
    /// When the request entered the model's queue.
    pub queued_at: Option<Instant>,
    /// Images in the last session run it took part in.
    pub batch_images: usize,
    /// Session runs it took part in.
    pub runs: usize,
    /// ONNX Runtime's run time of its last session run.
    pub run: Duration,
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

/// Admits (with the request's `ticket`), preprocesses and runs encoded images through a model.
///
/// If the client goes away, actix drops this future (connections do not allow half-closing),
/// which withdraws the request wherever it is: its preprocessing stops claiming images, and
/// the batcher drops it before its images run.
///
/// A sampled share of the images that ran is offered to the robustness monitor (never
/// waiting for it; see [`crate::monitor`]).
pub async fn run_images(
    state: &AppState,
    model: &Arc<LoadedModel>,
    ticket: Ticket,
    images: Vec<Bytes>,
    policy: QueuePolicy,
) -> Result<(BatchOutput, Timings), ServeError> {
    let monitored = state.monitor.pick(&images);
    let ran = run_images_unmonitored(state, model, ticket, images, policy).await?;
    state.monitor.offer(model, monitored, &ran.0);
    Ok(ran)
}

/// [`run_images`] without offering anything to the robustness monitor: for images that are
/// not live traffic (an attack's adversarial image would skew the live flip probability).
pub async fn run_images_unmonitored(
    state: &AppState,
    model: &LoadedModel,
    ticket: Ticket,
    images: Vec<Bytes>,
    policy: QueuePolicy,
) -> Result<(BatchOutput, Timings), ServeError> {
    if images.is_empty() {
        return Err(ServeError::Invalid("the request holds no image".into()));
    }
    let permit = model.batcher.admit(ticket, images.len())?;
    let t = Instant::now();
    let (input, permit) = state.prep.images(images, Arc::clone(&model.spec), permit).await?;
    run_tensor(state, model, permit, input, t.elapsed(), policy).await
}

/// Runs an already preprocessed batch (`permit.images()` rows of the model's input), queued
/// as `policy` says.
pub async fn run_tensor(
    state: &AppState,
    model: &LoadedModel,
    permit: Permit,
    input: Vec<f32>,
    preprocess: Duration,
    policy: QueuePolicy,
) -> Result<(BatchOutput, Timings), ServeError> {
    let version = model.version.to_string();
    state
        .metrics
        .preprocess_time
        .with_label_values(&[&model.name, &version])
        .observe(preprocess.as_secs_f64());
    let queued_at = Instant::now();
    let out = model
        .batcher
        .submit(permit, input, model.signature.classes, policy)?
        .await?;
    let timings = Timings {
        preprocess,
        queue: out.queue,
        inference: out.inference,
        outputs_at: Some(Instant::now()),
        queued_at: Some(queued_at),
        batch_images: out.batch_images,
        runs: out.batches,
        run: out.run,
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
    /// Where the time went, once the request has run (for its trace).
    timings: Option<Timings>,
    /// The caller's W3C `traceparent`, if it sent one.
    traceparent: Option<String>,
    /// The request's trace, once begun (see [`Outcome::trace_id`]).
    trace: Option<crate::telemetry::RequestTrace>,
}

impl Outcome {
    /// Starts timing a request to `endpoint`; `traceparent` (a W3C `traceparent` value)
    /// continues the caller's trace when tracing is on.
    pub fn start(state: &web::Data<AppState>, endpoint: &'static str, traceparent: Option<&str>) -> Self {
        Self {
            state: state.clone(),
            endpoint,
            model: String::new(),
            version: String::new(),
            started: Instant::now(),
            done: false,
            parts: None,
            stats: None,
            timings: None,
            traceparent: traceparent.map(str::to_string),
            trace: None,
        }
    }

    /// The request's trace id when tracing is on (the trace begins at the first call).
    pub fn trace_id(&mut self) -> Option<String> {
        if self.trace.is_none() {
            self.trace = self.state.telemetry.begin(self.started, self.traceparent.as_deref());
        }
        self.trace.as_ref().map(|t| t.trace_id())
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
        self.timed(timings);
        timings.headers(response, self.started.elapsed());
        if let Some(id) = self.trace_id() {
            response.insert_header((crate::telemetry::TRACE_ID_HEADER, id));
        }
    }

    /// Notes where a request that ran spent its time (for the statistics extension).
    pub fn timed(&mut self, timings: &Timings) {
        self.timings = Some(*timings);
        self.parts = Some(RequestParts {
            queue: timings.queue,
            input: timings.preprocess,
            infer: timings.inference,
            output: timings.outputs_at.map(|t| t.elapsed()).unwrap_or_default(),
        });
    }

    /// Records the outcome and passes the result on (for transports that write their own
    /// errors, such as gRPC).
    pub fn settle<T>(mut self, result: Result<T, ServeError>) -> Result<T, ServeError> {
        self.done = true;
        match &result {
            Ok(_) => self.record("success"),
            Err(e) => {
                tracing::debug!(endpoint = self.endpoint, model = %self.model, "request failed: {e}");
                self.record(e.reason());
            }
        }
        result
    }

    /// Records the outcome and turns an error into its response.
    pub fn finish(mut self, result: Result<HttpResponse, ServeError>) -> HttpResponse {
        let trace_id = if result.is_err() { self.trace_id() } else { None };
        self.settle(result).unwrap_or_else(|e| {
            let mut response = e.error_response();
            if let Some(id) = trace_id
                && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id)
            {
                response.headers_mut().insert(
                    actix_web::http::header::HeaderName::from_static(crate::telemetry::TRACE_ID_HEADER),
                    value,
                );
            }
            response
        })
    }

    fn record(&mut self, outcome: &str) {
        self.record_trace(outcome);
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

impl Outcome {
    /// Records the request's spans (see [`crate::telemetry`]) when tracing is on.
    fn record_trace(&mut self, outcome: &str) {
        if self.trace.is_none() {
            self.trace_id();
        }
        let Some(trace) = self.trace.take() else { return };
        let end = Instant::now();
        let timed = self.timings.and_then(|t| Some((t, t.queued_at?, t.outputs_at?)));
        match timed {
            Some((t, queued_at, outputs_at)) => {
                let preprocess_at = queued_at
                    .checked_sub(t.preprocess)
                    .unwrap_or(queued_at)
                    .max(self.started);
                let batched_at = (queued_at + t.queue).min(outputs_at);
                trace.child("receive", self.started, preprocess_at, vec![]);
                trace.child("preprocess", preprocess_at, queued_at, vec![]);
                trace.child("queue", queued_at, batched_at, vec![]);
                trace.child(
                    "batch",
                    batched_at,
                    outputs_at,
                    vec![
                        opentelemetry::KeyValue::new("hardy.batch_size", t.batch_images as i64),
                        opentelemetry::KeyValue::new("hardy.session_runs", t.runs as i64),
                    ],
                );
                let run_at = outputs_at.checked_sub(t.run).unwrap_or(batched_at).max(batched_at);
                trace.child("inference", run_at, outputs_at, vec![]);
                trace.child("respond", outputs_at, end, vec![]);
            }
            None => trace.child("receive", self.started, end, vec![]),
        }
        let attributes = vec![
            opentelemetry::KeyValue::new("hardy.endpoint", self.endpoint),
            opentelemetry::KeyValue::new("hardy.model", self.model.clone()),
            opentelemetry::KeyValue::new("hardy.version", self.version.clone()),
            opentelemetry::KeyValue::new("hardy.outcome", outcome.to_string()),
        ];
        let error = (outcome != "success").then(|| outcome.to_string());
        trace.end(end, attributes, error);
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
