//! OpenTelemetry traces of inference requests, exported over OTLP/gRPC; off unless the
//! server is started with `--otlp-endpoint`.
//!
//! Each inference request (HTTP or gRPC) is one trace (or continues the caller's, when the
//! request carries a W3C `traceparent` header or metadata): a root span `hardy.request`
//! (endpoint, model, version, outcome) with the children `receive` (reading and parsing the
//! request, admission), `preprocess` (decoding and preprocessing, or tensor conversion),
//! `queue` (waiting in the model's queue), `batch` (from the batch being formed until its
//! logits came back; `hardy.batch_size` images, `hardy.session_runs` runs this request took
//! part in), `inference` (ONNX Runtime's run of that batch, inside `batch`) and `respond`
//! (building the response). The trace id comes back in the `x-trace-id` header (gRPC
//! metadata).
//!
//! Why spans with explicit timestamps instead of spans entered around the code: a request's
//! queue, batch and inference happen on the batcher's and the inference threads, shared with
//! other requests; the request learns their times from the batcher ([`crate::http::Timings`])
//! and records its spans when it finishes, without carrying a span context through threads
//! that serve many requests at once.
//!
//! The exporter (the SDK's batch span processor with the OTLP tonic exporter) runs on a Tokio
//! runtime of one thread of its own, so tracing costs the request threads only the creation
//! of the span records.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{
    Context, KeyValue,
    propagation::TextMapPropagator,
    trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _},
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, SdkTracer, SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};

use crate::ServeError;

/// The response header (and gRPC metadata key) holding a traced request's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// The tracer, or nothing when tracing is off.
#[derive(Default)]
pub struct Telemetry {
    inner: Option<Inner>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    // The exporter's tasks run here; dropped after the provider has shut down.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Tracing off.
    pub fn off() -> Self {
        Self::default()
    }

    /// Exports spans to the OTLP/gRPC collector at `endpoint` (`http://host:4317`).
    pub fn start(endpoint: &str) -> Result<Self, ServeError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            ServeError::Internal(format!("OpenTelemetry ({what}, --otlp-endpoint {endpoint}): {e}"))
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp")
            .enable_all()
            .build()
            .map_err(|e| fail("runtime", &e))?;
        let _entered = runtime.enter();
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| fail("exporter", &e))?;
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .with_max_queue_size(8192)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("hardy")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        use opentelemetry::trace::TracerProvider as _;
        let tracer = provider.tracer("hardy");
        tracing::info!(endpoint, "exporting traces over OTLP");
        Ok(Self {
            inner: Some(Inner {
                provider,
                tracer,
                runtime: Some(runtime),
            }),
        })
    }

    /// Begins the trace of a request that started at `started`, continuing the caller's
    /// trace when `traceparent` is a valid W3C `traceparent`.
    pub fn begin(&self, started: Instant, traceparent: Option<&str>) -> Option<RequestTrace> {
        let inner = self.inner.as_ref()?;
        let parent = match traceparent {
            Some(value) => {
                let carrier = HashMap::from([("traceparent".to_string(), value.to_string())]);
                TraceContextPropagator::new().extract(&carrier)
            }
            None => Context::new(),
        };
        let anchor = (Instant::now(), SystemTime::now());
        let root = inner
            .tracer
            .span_builder("hardy.request")
            .with_kind(SpanKind::Server)
            .with_start_time(at(anchor, started))
            .start_with_context(&inner.tracer, &parent);
        let context = parent.with_remote_span_context(root.span_context().clone());
        Some(RequestTrace {
            tracer: inner.tracer.clone(),
            root,
            context,
            anchor,
        })
    }

    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(&mut self) {
        if let Some(inner) = &mut self.inner {
            if let Err(e) = inner.provider.shutdown() {
                tracing::warn!("OpenTelemetry shutdown: {e}");
            }
            if let Some(runtime) = inner.runtime.take() {
                runtime.shutdown_timeout(Duration::from_secs(1));
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `t` as wall-clock time, by its distance from `anchor`.
fn at(anchor: (Instant, SystemTime), t: Instant) -> SystemTime {
    let (instant, wall) = anchor;
    if t >= instant {
        wall.checked_add(t - instant).unwrap_or(wall)
    } else {
        wall.checked_sub(instant - t).unwrap_or(wall)
    }
}

/// One request's trace, open until [`RequestTrace::end`].
pub struct RequestTrace {
    tracer: SdkTracer,
    root: opentelemetry_sdk::trace::Span,
    context: Context,
    anchor: (Instant, SystemTime),
}

impl RequestTrace {
    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.root.span_context().trace_id().to_string()
    }

    /// Records a finished child span of the request from `start` to `end`.
    pub fn child(&self, name: &'static str, start: Instant, end: Instant, attributes: Vec<KeyValue>) {
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(at(self.anchor, start))
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.context);
        span.end_with_timestamp(at(self.anchor, end.max(start)));
    }

    /// Ends the request's span at `end` with its attributes; `error` marks a failure.
    pub fn end(mut self, end: Instant, attributes: Vec<KeyValue>, error: Option<String>) {
        self.root.set_attributes(attributes);
        if let Some(message) = error {
            self.root.set_status(Status::error(message));
        }
        self.root.end_with_timestamp(at(self.anchor, end));
    }
}
