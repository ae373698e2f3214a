//! The gRPC endpoint and the queue policy: NVIDIA's tritonclient[grpc], unmodified; hostile
//! messages from a client of Hardy's own generated types; queue timeouts, priorities and
//! cancellation over both transports, each shown by what the server counts (a withdrawn
//! request is counted in `hardy_queue_withdrawn_total` and never in
//! `hardy_inference_images_total`).
//!
//! The queue tests use copies of the shipped Fashion-MNIST model whose `config.toml` holds
//! requests in a long batching window, so a request's place in the queue is known without
//! racing the inference threads.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use serde_json::json;
use serve::grpc::proto::{
    self, InferParameter, ModelInferRequest, grpc_inference_service_client::GrpcInferenceServiceClient,
    infer_parameter::ParameterChoice, model_infer_request::InferInputTensor,
};
use tonic::Code;

use super::serve::{Server, add_model, samples};
use crate::common::pip_package;

const TRITONCLIENT_GRPC: &str = "tritonclient[grpc]==2.73.0";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn client(server: &Server) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect over gRPC")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A request for `model` with one input; its data in `raw_input_contents` when given.
fn infer_request(model: &str, datatype: &str, shape: &[i64], raw: Option<Vec<u8>>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..Default::default()
        }],
        raw_input_contents: raw.map(|r| vec![r.into()]).unwrap_or_default(),
        ..Default::default()
    }
}

fn int_parameter(n: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(n)),
    }
}

/// One PNG sample as a BYTES tensor's raw contents (a 4-byte length, then the bytes).
fn png_raw() -> Vec<u8> {
    let png = std::fs::read(&samples()[0].0).expect("sample");
    let mut raw = (png.len() as u32).to_le_bytes().to_vec();
    raw.extend(png);
    raw
}

#[test]
fn triton_grpc_client_works_unmodified() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(
        repo.path(),
        "fmnist",
        1,
        2,
        Some("[batching]\nmax_batch_size = 8\npriority_levels = 2\n"),
    );
    let server = Server::start(repo.path(), &["--admin-token", "tc-token"]);
    let descriptors = repo.path().join("grpc_service.bin");
    std::fs::write(&descriptors, proto::FILE_DESCRIPTOR_SET).expect("write descriptors");
    super::tritonclient::run_script(
        "tritonclient_grpc_check.py",
        &pip_package("tritonclient-grpc-2.73.0", TRITONCLIENT_GRPC),
        &server.grpc,
        "fmnist",
        "tc-token",
        &repo.path().join("fmnist"),
        &[&descriptors],
    );
}

#[test]
fn hostile_grpc_messages_get_clear_statuses_and_the_server_stays_up() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 2, Some("[batching]\nmax_queue_images = 64\n"));
    let server = Server::start(repo.path(), &["--max-body-bytes", "1000000"]);
    let rt = runtime();
    rt.block_on(async {
        let mut c = client(&server).await;
        let image = 784usize;
        let mut cases: Vec<(&str, ModelInferRequest, Code, &str)> = vec![
            (
                "raw FP32 shorter than its shape",
                infer_request("fmnist", "FP32", &[2, 1, 28, 28], Some(vec![0; 4 * image])),
                Code::InvalidArgument,
                "bytes, but its shape needs",
            ),
            (
                "a huge shape",
                infer_request("fmnist", "FP32", &[1 << 60, 1, 28, 28], Some(vec![0; 4 * image])),
                Code::InvalidArgument,
                "overflows",
            ),
            (
                "a negative batch",
                infer_request("fmnist", "FP32", &[-1, 1, 28, 28], Some(vec![0; 4 * image])),
                Code::InvalidArgument,
                "this model needs",
            ),
            (
                "a BYTES element longer than the data",
                infer_request(
                    "fmnist",
                    "BYTES",
                    &[1],
                    Some([&200u32.to_le_bytes()[..], b"abc"].concat()),
                ),
                Code::InvalidArgument,
                "declares 200 bytes",
            ),
            (
                "more BYTES elements than the shape",
                infer_request("fmnist", "BYTES", &[1], Some([png_raw(), png_raw()].concat())),
                Code::InvalidArgument,
                "more than the 1 elements",
            ),
            (
                "a non-finite FP32 value",
                infer_request(
                    "fmnist",
                    "FP32",
                    &[1, 1, 28, 28],
                    Some(std::iter::repeat_n(f32::NAN.to_le_bytes(), image).flatten().collect()),
                ),
                Code::InvalidArgument,
                "must be finite",
            ),
            (
                "an unsupported datatype",
                infer_request("fmnist", "INT64", &[1, 1, 28, 28], Some(vec![0; 8 * image])),
                Code::InvalidArgument,
                "not supported",
            ),
            (
                "a message over --max-body-bytes",
                infer_request("fmnist", "FP32", &[400, 1, 28, 28], Some(vec![0; 400 * 4 * image])),
                // tonic's code for a message over the limit
                Code::OutOfRange,
                "the limit is: 1000000 bytes",
            ),
            (
                "more images than the model takes in one request",
                infer_request("fmnist", "BYTES", &[40], Some(png_raw().repeat(40))),
                Code::ResourceExhausted,
                "split it",
            ),
            (
                "an unknown model",
                infer_request("nope", "FP32", &[1, 1, 28, 28], Some(vec![0; 4 * image])),
                Code::NotFound,
                "unknown model",
            ),
        ];
        let mut no_contents = infer_request("fmnist", "FP32", &[1, 1, 28, 28], None);
        cases.push((
            "an input without data",
            no_contents.clone(),
            Code::InvalidArgument,
            "neither contents nor raw_input_contents",
        ));
        no_contents.inputs[0].contents = Some(proto::InferTensorContents {
            fp32_contents: vec![0.0; image],
            ..Default::default()
        });
        no_contents.raw_input_contents = vec![vec![0u8; 4 * image].into()];
        cases.push((
            "contents and raw_input_contents at once",
            no_contents,
            Code::InvalidArgument,
            "both contents and raw_input_contents",
        ));
        let mut two_raw = infer_request("fmnist", "FP32", &[1, 1, 28, 28], Some(vec![0; 4 * image]));
        two_raw.raw_input_contents.push(vec![0u8; 4].into());
        cases.push((
            "more raw tensors than inputs",
            two_raw,
            Code::InvalidArgument,
            "holds 2 tensors for 1 inputs",
        ));
        let mut negative = infer_request("fmnist", "FP32", &[1, 1, 28, 28], Some(vec![0; 4 * image]));
        negative.parameters.insert("timeout".into(), int_parameter(-5));
        cases.push(("a negative timeout", negative, Code::InvalidArgument, "timeout -5"));
        let mut priority = infer_request("fmnist", "FP32", &[1, 1, 28, 28], Some(vec![0; 4 * image]));
        priority.parameters.insert("priority".into(), int_parameter(1));
        cases.push((
            "a priority without levels",
            priority,
            Code::InvalidArgument,
            "no priority levels",
        ));
        let mut text_param = infer_request("fmnist", "FP32", &[1, 1, 28, 28], Some(vec![0; 4 * image]));
        text_param.parameters.insert(
            "priority".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam("high".into())),
            },
        );
        cases.push((
            "a priority that is not an integer",
            text_param,
            Code::InvalidArgument,
            "must be an integer",
        ));
        for (what, request, code, needle) in cases {
            let status = c.model_infer(request).await.expect_err(what);
            assert_eq!(status.code(), code, "{what}: {}", status.message());
            assert!(status.message().contains(needle), "{what}: {}", status.message());
        }
        // Still serving, with the same answer as HTTP gives.
        let good = c
            .model_infer(infer_request("fmnist", "BYTES", &[1], Some(png_raw())))
            .await
            .expect("a good request after the bad ones");
        let queue_ms: f64 = good
            .metadata()
            .get("x-queue-time")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("x-queue-time metadata");
        assert!(queue_ms >= 0.0);
        let good = good.into_inner();
        assert_eq!(good.outputs[0].shape, vec![1, 10]);
        assert_eq!(good.raw_output_contents[0].len(), 40);
    });
    let invalid = server.metric(
        "hardy_requests_total{endpoint=\"grpc_infer\",model=\"fmnist\",outcome=\"invalid_argument\",version=\"1\"}",
    );
    assert!(invalid >= 12.0, "invalid_argument counted {invalid}");
    assert_eq!(server.get("/v2/health/ready").status, 200);
}

/// A repository of one model whose batching window (3 s) holds requests in the queue.
fn held_queue(extra: &str) -> (tempfile::TempDir, Server) {
    let repo = tempfile::tempdir().expect("tempdir");
    let config = format!("[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 3000000\n{extra}");
    add_model(repo.path(), "held", 1, 2, Some(&config));
    let server = Server::start(repo.path(), &[]);
    (repo, server)
}

fn withdrawn(server: &Server, reason: &str) -> f64 {
    server.metric(&format!(
        "hardy_queue_withdrawn_total{{model=\"held\",reason=\"{reason}\",version=\"1\"}}"
    ))
}

fn images_run(server: &Server) -> f64 {
    server.metric("hardy_inference_images_total{model=\"held\",version=\"1\"}")
}

#[test]
fn queue_timeouts_reject_over_http_and_grpc_and_never_run() {
    let (_repo, server) = held_queue("");
    let png = std::fs::read(&samples()[0].0).expect("sample");
    let body = |timeout: Option<u64>| {
        let mut request = json!({
            "inputs": [{ "name": "input", "shape": [1], "datatype": "BYTES", "data": [super::serve::b64(&png)] }],
        });
        if let Some(t) = timeout {
            request["parameters"] = json!({ "timeout": t });
        }
        request
    };
    // HTTP: the request's own timeout (200 ms) ends its wait long before the 3 s window.
    let t = Instant::now();
    let reply = server.post_json("/v2/models/held/infer", &body(Some(200_000)));
    let waited = t.elapsed();
    reply.assert_error(503, &["queue timeout", "held:1", "did not run"]);
    assert_eq!(reply.header("Retry-After"), Some("1"));
    assert!(waited < Duration::from_millis(1500), "rejected after {waited:?}");
    // gRPC: the same, as UNAVAILABLE with the same message.
    let rt = runtime();
    let status = rt.block_on(async {
        let mut c = client(&server).await;
        let mut request = infer_request("held", "BYTES", &[1], Some(png_raw()));
        request.parameters.insert("timeout".into(), int_parameter(200_000));
        let t = Instant::now();
        let status = c.model_infer(request).await.expect_err("timed out");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "rejected after {:?}",
            t.elapsed()
        );
        status
    });
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(status.message().contains("queue timeout"), "{}", status.message());
    assert_eq!(withdrawn(&server, "timeout"), 2.0);
    // Past the window: neither request ran, and the queue is empty.
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(images_run(&server), 0.0);
    assert_eq!(server.metric("hardy_queue_depth_requests{model=\"held\""), 0.0);
    assert_eq!(
        server
            .metric("hardy_requests_total{endpoint=\"infer\",model=\"held\",outcome=\"queue_timeout\",version=\"1\"}"),
        1.0
    );
    // A request without a timeout waits out the window and runs.
    let t = Instant::now();
    assert_eq!(server.post_json("/v2/models/held/infer", &body(None)).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(2500));
    assert_eq!(images_run(&server), 1.0);

    // The model's default (config.toml `queue_timeout_us`) applies to requests without one.
    let (_repo, server) = held_queue("queue_timeout_us = 300000\n");
    let t = Instant::now();
    server
        .post_json("/v2/models/held/infer", &body(None))
        .assert_error(503, &["queue timeout"]);
    assert!(t.elapsed() < Duration::from_millis(1500));
    assert_eq!(withdrawn(&server, "timeout"), 1.0);
    let config = server.get("/v2/models/held/config").json();
    assert_eq!(
        config["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"],
        300000
    );
}

/// Sends `priority` requests of `images` images each at once and returns, in sending order,
/// how long each took. The model's batch holds 4 images, and its window 1.5 s.
fn timed_requests(server: &Server, requests: &[(Option<u64>, usize)], pause: Duration) -> Vec<Duration> {
    let png = std::fs::read(&samples()[0].0).expect("sample");
    let t0 = Instant::now();
    let handles: Vec<_> = requests
        .iter()
        .map(|&(priority, images)| {
            let mut request = json!({
                "inputs": [{
                    "name": "input", "shape": [images], "datatype": "BYTES",
                    "data": vec![super::serve::b64(&png); images],
                }],
            });
            if let Some(p) = priority {
                request["parameters"] = json!({ "priority": p });
            }
            let url = format!("{}/v2/models/held/infer", server.base);
            // Requests arrive in order: each waits `pause` after the one before.
            std::thread::sleep(pause);
            std::thread::spawn(move || {
                let reply = super::serve::request(
                    "POST",
                    &url,
                    &[("Content-Type", "application/json")],
                    request.to_string().as_bytes(),
                );
                assert_eq!(reply.status, 200, "{}", reply.text());
                t0.elapsed()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("request thread")).collect()
}

#[test]
fn higher_priorities_fill_batches_first() {
    // Three low-priority requests wait in the window; a high-priority request of two images
    // fills the batch (4 images) and runs at once with two of them. The third low one waits
    // for the next window.
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(
        repo.path(),
        "held",
        1,
        2,
        Some(
            "[batching]\nmax_batch_size = 4\nmax_queue_delay_us = 1500000\npriority_levels = 2\npriority_aging_us = 5000000\n",
        ),
    );
    let server = Server::start(repo.path(), &[]);
    let pause = Duration::from_millis(100);
    let took = timed_requests(
        &server,
        &[(Some(2), 1), (Some(2), 1), (Some(2), 1), (Some(1), 2)],
        pause,
    );
    let fast = Duration::from_millis(1000);
    assert!(took[3] < fast, "the high-priority request took {:?}", took[3]);
    assert!(took[0] < fast && took[1] < fast, "the first two low ones: {took:?}");
    assert!(took[2] > Duration::from_millis(1300), "the third low one: {took:?}");
    let stats = server.get("/v2/models/held/stats").json();
    let sizes: Vec<u64> = stats["model_stats"][0]["batch_stats"]
        .as_array()
        .expect("batch stats")
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(sizes, vec![1, 4], "batches formed");

    // Without priorities the same arrivals are served in order: the high one's second image
    // waits for the next window.
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(
        repo.path(),
        "held",
        1,
        2,
        Some("[batching]\nmax_batch_size = 4\nmax_queue_delay_us = 1500000\n"),
    );
    let server = Server::start(repo.path(), &[]);
    let took = timed_requests(&server, &[(None, 1), (None, 1), (None, 1), (None, 2)], pause);
    assert!(took[3] > Duration::from_millis(1300), "in arrival order: {took:?}");
    assert!(took[2] < fast, "in arrival order: {took:?}");
}

#[test]
fn cancelled_requests_are_withdrawn_before_they_run() {
    let (_repo, server) = held_queue("");
    // HTTP: the client sends a request and hangs up while it waits in the window.
    let png = std::fs::read(&samples()[0].0).expect("sample");
    let body = json!({
        "inputs": [{ "name": "input", "shape": [1], "datatype": "BYTES", "data": [super::serve::b64(&png)] }],
    })
    .to_string();
    let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
    write!(
        stream,
        "POST /v2/models/held/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let depth = "hardy_queue_depth_requests{model=\"held\"";
    let t = Instant::now();
    while server.metric(depth) < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(2), "the request never queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stream);
    let cancel_at = Instant::now();
    while withdrawn(&server, "cancelled") < 1.0 {
        assert!(cancel_at.elapsed() < Duration::from_secs(1), "not withdrawn within 1 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.metric(depth), 0.0);

    // gRPC: a call the client drops, and a call past its deadline.
    let rt = runtime();
    rt.block_on(async {
        let mut c = client(&server).await;
        let call = c.model_infer(infer_request("held", "BYTES", &[1], Some(png_raw())));
        assert!(tokio::time::timeout(Duration::from_millis(300), call).await.is_err());
        let mut request = tonic::Request::new(infer_request("held", "BYTES", &[1], Some(png_raw())));
        request.set_timeout(Duration::from_millis(300));
        // tonic's client reports its own deadline as CANCELLED; the server's as DEADLINE_EXCEEDED
        let status = c.model_infer(request).await.expect_err("deadline");
        assert!(
            matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
            "{status:?}"
        );
    });
    let t = Instant::now();
    while withdrawn(&server, "cancelled") < 3.0 {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "gRPC calls not withdrawn within 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past the window nothing has run: the three requests were withdrawn, not batched.
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(images_run(&server), 0.0);
    assert_eq!(withdrawn(&server, "cancelled"), 3.0);
    assert_eq!(withdrawn(&server, "timeout"), 0.0);
}
