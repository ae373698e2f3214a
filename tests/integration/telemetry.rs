//! OpenTelemetry tracing against an OTLP receiver the test starts (the collector's own
//! `TraceService`, from the `opentelemetry-proto` crate): every inference request is a trace
//! with the spans receive, preprocess, queue, batch (with its size), inference and respond;
//! its id comes back in `x-trace-id`, and a caller's `traceparent` is continued.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use serde_json::json;

use super::serve::{Server, add_model, b64, samples};

/// Spans received, with the `service.name` of their resource.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.clone())
}

/// The spans of `trace_id` once its root and six children have arrived (10 s at most).
fn trace(receiver: &Receiver, trace_id: &str) -> Vec<Span> {
    let t = Instant::now();
    loop {
        let spans: Vec<Span> = receiver
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(service, s)| service == "hardy" && hex(&s.trace_id) == trace_id)
            .map(|(_, s)| s.clone())
            .collect();
        if spans.len() >= 7 {
            return spans;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "trace {trace_id}: {} spans",
            spans.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks the spans of one request: the root, its six children in order, nested in time.
fn check_request(spans: &[Span], endpoint: &str) -> HashMap<String, Span> {
    let by_name: HashMap<String, Span> = spans.iter().map(|s| (s.name.clone(), s.clone())).collect();
    assert_eq!(spans.len(), 7, "{:?}", by_name.keys());
    let root = &by_name["hardy.request"];
    assert_eq!(
        attribute(root, "hardy.endpoint"),
        Some(Value::StringValue(endpoint.into()))
    );
    assert_eq!(
        attribute(root, "hardy.model"),
        Some(Value::StringValue("fmnist".into()))
    );
    assert_eq!(
        attribute(root, "hardy.outcome"),
        Some(Value::StringValue("success".into()))
    );
    let names = ["receive", "preprocess", "queue", "batch", "inference", "respond"];
    let mut last_end = root.start_time_unix_nano;
    for name in names {
        let s = &by_name[name];
        assert_eq!(s.parent_span_id, root.span_id, "{name}'s parent");
        assert!(s.start_time_unix_nano <= s.end_time_unix_nano, "{name}");
        assert!(
            s.start_time_unix_nano >= root.start_time_unix_nano && s.end_time_unix_nano <= root.end_time_unix_nano,
            "{name} outside the request"
        );
        if name != "inference" {
            // one after the other (inference lies inside batch)
            assert!(
                s.start_time_unix_nano + 1_000 >= last_end,
                "{name} starts before the span before it ends"
            );
            last_end = s.end_time_unix_nano;
        }
    }
    let (batch, inference) = (&by_name["batch"], &by_name["inference"]);
    assert!(inference.start_time_unix_nano >= batch.start_time_unix_nano);
    assert!(inference.end_time_unix_nano <= batch.end_time_unix_nano);
    assert_eq!(attribute(batch, "hardy.batch_size"), Some(Value::IntValue(1)));
    assert_eq!(attribute(batch, "hardy.session_runs"), Some(Value::IntValue(1)));
    by_name
}

#[test]
fn requests_are_traced_over_otlp_when_asked() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let receiver = Receiver::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the receiver");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let service = TraceServiceServer::new(receiver.clone());
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });

    let repo = tempfile::tempdir().expect("tempdir");
    add_model(
        repo.path(),
        "fmnist",
        1,
        2,
        Some("[batching]\nmax_queue_delay_us = 0\n"),
    );
    let server = Server::start(repo.path(), &["--otlp-endpoint", &endpoint]);
    let png = std::fs::read(&samples()[0].0).expect("sample");
    let body = json!({
        "inputs": [{ "name": "input", "shape": [1], "datatype": "BYTES", "data": [b64(&png)] }],
    });

    // HTTP, continuing the caller's trace.
    let (caller_trace, caller_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let reply = server.post(
        "/v2/models/fmnist/infer",
        &[
            ("Content-Type", "application/json"),
            ("traceparent", &format!("00-{caller_trace}-{caller_span}-01")),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-trace-id"), Some(caller_trace));
    let spans = trace(&receiver, caller_trace);
    let http = check_request(&spans, "infer");
    assert_eq!(hex(&http["hardy.request"].parent_span_id), caller_span);

    // gRPC, a trace of its own, its id in the response metadata.
    let response = super::serve::grpc_classify(&format!("http://{}", server.grpc), "fmnist", &png).expect("gRPC infer");
    let trace_id = response
        .metadata()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-trace-id metadata")
        .to_string();
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, caller_trace);
    let spans = trace(&receiver, &trace_id);
    let grpc = check_request(&spans, "grpc_infer");
    assert!(grpc["hardy.request"].parent_span_id.is_empty(), "a root span");

    // A failed request is traced too, with its outcome, and says its trace id.
    let reply = server.post_json(
        "/v2/models/fmnist/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0] }] }),
    );
    assert_eq!(reply.status, 400);
    let failed = reply.header("x-trace-id").expect("x-trace-id on an error").to_string();
    let t = Instant::now();
    let root = loop {
        let found = receiver
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, s)| hex(&s.trace_id) == failed && s.name == "hardy.request")
            .map(|(_, s)| s.clone());
        if let Some(root) = found {
            break root;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the failed request's trace never came"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        attribute(&root, "hardy.outcome"),
        Some(Value::StringValue("invalid_argument".into()))
    );

    // Off by default: no trace id.
    let quiet = Server::start(repo.path(), &[]);
    let reply = quiet.post_json("/v2/models/fmnist/infer", &body);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-trace-id"), None);
}
