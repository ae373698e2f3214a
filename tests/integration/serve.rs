//! `hardy serve` end to end: the real binary on a loopback port, driven over real HTTP.
//!
//! One server per test, on port 0 (the test reads the port from the server's stdout line).
//! The repository is built in a temp dir from the shipped Fashion-MNIST models, with
//! `config.toml` files that give some copies slow or tiny queues, so that batching, overload
//! (503) and a client that goes away happen deterministically.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::common::{root, runtime};

/// A running `hardy serve`; killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    /// The gRPC endpoint, `host:port`.
    pub grpc: String,
    _repo: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the server on `repo` with extra flags and waits until it is ready.
    pub fn start(repo: &Path, flags: &[&str]) -> Self {
        Self::start_logging(repo, flags, Stdio::inherit())
    }

    /// [`Server::start`] with the server's log (stderr) sent to `log`.
    pub fn start_logging(repo: &Path, flags: &[&str], log: Stdio) -> Self {
        let server = Self::spawn(repo, flags, log);
        let t0 = Instant::now();
        while server.get("/v2/health/ready").status != 200 {
            assert!(t0.elapsed() < Duration::from_secs(60), "server not ready in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Starts the server and returns as soon as it listens, before its models have loaded.
    pub fn spawn(repo: &Path, flags: &[&str], log: Stdio) -> Self {
        runtime(); // provision ONNX Runtime once, before the binary looks for it
        let mut child = Command::new(env!("CARGO_BIN_EXE_hardy"))
            .args(["serve", "--port", "0", "--grpc-port", "0", "--model-repository"])
            .arg(repo)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start hardy serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let grpc = line
            .split("gRPC on ")
            .nth(1)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| panic!("no gRPC address in {line:?}"));
        Self {
            child,
            base: format!("http://{addr}"),
            grpc,
            _repo: None,
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> Reply {
        request("GET", &format!("{}{path}", self.base), &[], &[])
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request("POST", &format!("{}{path}", self.base), headers, body)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// The value of a metric sample whose line starts with `prefix` (0 when absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read completely.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Asserts the status and a JSON `{"error": ...}` body containing every needle.
    #[track_caller]
    pub fn assert_error(&self, status: u16, needles: &[&str]) {
        assert_eq!(self.status, status, "{}", self.text());
        let error = self.json()["error"].as_str().unwrap_or_default().to_string();
        for n in needles {
            assert!(error.contains(n), "{n:?} not in {error:?}");
        }
    }
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let result = if method == "GET" || method == "DELETE" {
        let mut r = if method == "GET" {
            agent.get(url)
        } else {
            agent.delete(url)
        };
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.call()
    } else {
        let mut r = agent.post(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send(body)
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .expect("read body");
    Reply { status, headers, body }
}

pub fn samples() -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(root().join("samples/fashion-mnist"))
        .expect("samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .map(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let label = stem.split_once('-').map(|(_, l)| l.to_string()).unwrap_or_default();
            (p, label)
        })
        .collect();
    out.sort();
    out
}

/// The first `n` samples as an ImageFolder under `dir`: one folder per class index
/// (Fashion-MNIST's order), `<i>.png` inside.
pub fn sample_folder(dir: &Path, n: usize) {
    for (i, (sample, label)) in samples().into_iter().take(n).enumerate() {
        let index = data::fetch::FASHION_MNIST_CLASSES
            .iter()
            .position(|c| slug(c) == label)
            .expect("a sample's label is a Fashion-MNIST class");
        let class = dir.join(index.to_string());
        std::fs::create_dir_all(&class).expect("mkdir");
        std::fs::copy(&sample, class.join(format!("{i}.png"))).expect("copy sample");
    }
}

/// `Ankle boot` -> `ankle-boot`, `T-shirt/top` -> `t-shirt-top`, as in the sample names.
pub fn slug(label: &str) -> String {
    label.to_lowercase().replace(['/', ' '], "-")
}

/// Copies a shipped model version into `repo/name/version`, with an optional config.toml.
pub fn add_model(repo: &Path, name: &str, version: u64, from_version: u64, config: Option<&str>) {
    let dir = repo.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).expect("mkdir");
    let src = root().join(format!("models/fashion-mnist-effnet/{from_version}/model.onnx"));
    std::fs::copy(src, dir.join("model.onnx")).expect("copy model");
    if let Some(text) = config {
        std::fs::write(dir.join("config.toml"), text).expect("write config.toml");
    }
}

fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "hardy-test-boundary-7d1f";
    let mut body = Vec::new();
    for (field, file, data) in parts {
        body.extend(format!("--{boundary}\r\n").bytes());
        match file {
            Some(f) => body.extend(
                format!("Content-Disposition: form-data; name=\"{field}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n")
                    .bytes(),
            ),
            None => body.extend(format!("Content-Disposition: form-data; name=\"{field}\"\r\n\r\n").bytes()),
        }
        body.extend_from_slice(data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A binary OIP request: JSON header then the raw bytes.
pub fn binary_request(header: &Value, data: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let head = header.to_string().into_bytes();
    let mut body = head.clone();
    body.extend_from_slice(data);
    (
        vec![
            ("Inference-Header-Content-Length".into(), head.len().to_string()),
            ("Content-Type".into(), "application/octet-stream".into()),
        ],
        body,
    )
}

/// Splits a binary OIP response into its JSON header and binary part.
fn split_binary(reply: &Reply) -> (Value, Vec<u8>) {
    let n: usize = reply
        .header("Inference-Header-Content-Length")
        .expect("Inference-Header-Content-Length")
        .parse()
        .expect("length");
    (
        serde_json::from_slice(&reply.body[..n]).expect("JSON header"),
        reply.body[n..].to_vec(),
    )
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn headers_of(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// The grey pixels of a 28x28 sample, row-major.
fn pixels(path: &Path) -> Vec<u8> {
    image::open(path).expect("decode sample").to_luma8().into_raw()
}

#[test]
fn classify_endpoint_answers_every_input_form_and_rejects_bad_ones() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 1, None);
    add_model(repo.path(), "fmnist", 2, 2, None);
    let server = Server::start(repo.path(), &["--max-body-bytes", "200000", "--max-batch-size", "8"]);
    let samples = samples();
    let path = "/v1/models/fmnist/classify";

    // One raw image per request: every sample gets its own label.
    let mut single_scores = Vec::new();
    let mut queued_ms = Vec::new();
    for (file, label) in &samples {
        let png = std::fs::read(file).expect("sample");
        let r = server.post(path, &[("Content-Type", "image/png")], &png);
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(
            (j["model_name"].as_str(), j["model_version"].as_str()),
            (Some("fmnist"), Some("2"))
        );
        assert_eq!(j["device"], "cpu");
        let top = &j["results"][0]["predictions"][0];
        assert_eq!(slug(top["label"].as_str().unwrap_or_default()), *label, "{j}");
        assert_eq!(j["results"][0]["predictions"].as_array().map(Vec::len), Some(5));
        for h in ["x-queue-time", "x-preprocess-time", "x-inference-time", "x-total-time"] {
            let ms: f64 = r
                .header(h)
                .unwrap_or_else(|| panic!("{h} missing"))
                .parse()
                .expect("ms");
            assert!(ms >= 0.0);
            if h == "x-queue-time" {
                queued_ms.push(ms);
            }
        }
        single_scores.push(top["score"].as_f64().unwrap_or_default());
    }
    // A lone request finds the session idle and runs at once: with the default settings it
    // waits for no batching window (it used to wait out 2 ms for company that never came).
    queued_ms.sort_by(f64::total_cmp);
    let median = queued_ms[queued_ms.len() / 2];
    assert!(
        median < 0.5,
        "a lone request waited {median} ms in the queue: {queued_ms:?}"
    );

    // A named version, and one that does not exist.
    let png = std::fs::read(&samples[0].0).expect("sample");
    let r = server.post(
        "/v1/models/fmnist/versions/2/classify?top_k=2",
        &[("Content-Type", "image/png")],
        &png,
    );
    assert_eq!(r.json()["results"][0]["predictions"].as_array().map(Vec::len), Some(2));
    server
        .post(
            "/v1/models/fmnist/versions/1/classify",
            &[("Content-Type", "image/png")],
            &png,
        )
        .assert_error(404, &["version 1", "[2]"]);
    server
        .post("/v1/models/nope/classify", &[("Content-Type", "image/png")], &png)
        .assert_error(404, &["unknown model", "nope"]);

    // Multipart with all samples (more than max_batch_size = 8: split, never capped).
    let files: Vec<(String, Vec<u8>)> = samples
        .iter()
        .map(|(p, _)| {
            (
                p.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                std::fs::read(p).expect("read"),
            )
        })
        .collect();
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = files
        .iter()
        .map(|(n, d)| ("image", Some(n.as_str()), d.as_slice()))
        .collect();
    parts.push(("top_k", None, b"1"));
    let batches_before = server.metric("hardy_batch_executions_total{model=\"fmnist\"");
    let (ct, body) = multipart(&parts);
    let r = server.post(path, &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), samples.len());
    for ((res, (_, label)), (name, _)) in results.iter().zip(&samples).zip(&files) {
        assert_eq!(res["name"].as_str(), Some(name.as_str()));
        let preds = res["predictions"].as_array().cloned().unwrap_or_default();
        assert_eq!(preds.len(), 1);
        assert_eq!(slug(preds[0]["label"].as_str().unwrap_or_default()), *label);
    }
    let batches = server.metric("hardy_batch_executions_total{model=\"fmnist\"") - batches_before;
    assert!(
        batches >= 2.0,
        "{} images in batches of <= 8 ran as {batches} batch(es)",
        samples.len()
    );

    // JSON with base64 images (one as a data URL); scores match the single-image runs.
    let body = json!({
        "images": [b64(&files[0].1), format!("data:image/png;base64,{}", b64(&files[1].1))],
        "top_k": 1
    });
    let r = server.post_json(path, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    for i in 0..2 {
        let score = j["results"][i]["predictions"][0]["score"].as_f64().unwrap_or_default();
        assert!(
            (score - single_scores[i]).abs() < 1e-5,
            "{score} vs {}",
            single_scores[i]
        );
    }

    // Malformed inputs: clear JSON errors with the right statuses.
    server
        .post(path, &[("Content-Type", "text/plain")], b"hello")
        .assert_error(415, &["text/plain"]);
    server.post(path, &[], &png).assert_error(415, &["multipart/form-data"]);
    server
        .post(path, &[("Content-Type", "image/png")], b"definitely not a png")
        .assert_error(400, &["image 0"]);
    server
        .post(path, &[("Content-Type", "image/png")], &crate::cli::huge_png_header())
        .assert_error(400, &["image 0", "100000"]);
    server
        .post(path, &[("Content-Type", "image/png")], b"")
        .assert_error(400, &["empty"]);
    server
        .post(path, &[("Content-Type", "image/png")], &vec![0u8; 300_000])
        .assert_error(413, &["200000"]);
    server
        .post(path, &[("Content-Type", "application/json")], b"{\"images\": [")
        .assert_error(400, &["invalid JSON"]);
    server
        .post_json(path, &json!({"images": ["@@@not base64"]}))
        .assert_error(400, &["image 0", "base64"]);
    server
        .post(&format!("{path}?top_k=0"), &[("Content-Type", "image/png")], &png)
        .assert_error(400, &["top_k"]);
    let (ct, body) = multipart(&[
        ("image", Some("a.png"), &files[0].1),
        ("image", Some("junk.png"), b"junk"),
    ]);
    server
        .post(path, &[("Content-Type", &ct)], &body)
        .assert_error(400, &["image 1"]);
    server.get("/no/such/route").assert_error(404, &["/no/such/route"]);

    // Every outcome was counted with its reason.
    for (outcome, at_least) in [
        ("success", 13.0),
        ("not_found", 2.0),
        ("unsupported_media_type", 2.0),
        ("bad_image", 4.0),
        ("payload_too_large", 1.0),
        ("invalid_argument", 3.0),
    ] {
        let n = server.metric(&format!(
            "hardy_requests_total{{endpoint=\"classify\",model=\"fmnist\",outcome=\"{outcome}\""
        )) + server.metric(&format!(
            "hardy_requests_total{{endpoint=\"classify\",model=\"\",outcome=\"{outcome}\""
        ));
        assert!(n >= at_least, "{outcome}: {n} < {at_least}");
    }
    assert!(server.metric("hardy_request_duration_seconds_count{endpoint=\"classify\",model=\"fmnist\"") >= 13.0);
    assert!(server.metric("process_resident_memory_bytes") > 1e6);
}

#[test]
fn open_inference_protocol_json_binary_and_errors() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 1, None);
    add_model(repo.path(), "fmnist", 2, 2, None);
    let server = Server::start(repo.path(), &["--versions", "all"]);
    let samples = samples();

    assert_eq!(server.get("/v2/health/live").status, 200);
    assert_eq!(server.get("/v2/health/ready").status, 200);
    let meta = server.get("/v2").json();
    assert_eq!(meta["name"], "hardy");
    assert!(
        meta["extensions"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("classification")))
    );

    let m = server.get("/v2/models/fmnist").json();
    assert_eq!(m["versions"], json!(["1", "2"]));
    assert_eq!(
        m["inputs"][0],
        json!({"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]})
    );
    assert_eq!(
        m["outputs"][0],
        json!({"name": "logits", "datatype": "FP32", "shape": [-1, 10]})
    );
    assert_eq!(
        server.get("/v2/models/fmnist/versions/1").json()["parameters"]["version"],
        "1"
    );
    assert_eq!(server.get("/v2/models/fmnist/ready").status, 200);
    assert_eq!(server.get("/v2/models/fmnist/versions/1/ready").status, 200);
    server
        .get("/v2/models/fmnist/versions/7/ready")
        .assert_error(404, &["version 7"]);
    server.get("/v2/models/nope").assert_error(404, &["nope"]);

    // BYTES (encoded PNGs, binary) with the classification extension, binary output.
    let pngs: Vec<Vec<u8>> = samples
        .iter()
        .take(3)
        .map(|(p, _)| std::fs::read(p).expect("read"))
        .collect();
    let mut raw = Vec::new();
    for png in &pngs {
        raw.extend((png.len() as u32).to_le_bytes());
        raw.extend(png);
    }
    let header = json!({
        "id": "req-7",
        "inputs": [{"name": "input", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2, "binary_data": true}}]
    });
    let (h, body) = binary_request(&header, &raw);
    let r = server.post("/v2/models/fmnist/infer", &headers_of(&h), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let (json_part, bin) = split_binary(&r);
    assert_eq!(json_part["id"], "req-7");
    assert_eq!(json_part["model_version"], "2");
    assert_eq!(json_part["outputs"][0]["datatype"], "BYTES");
    assert_eq!(json_part["outputs"][0]["shape"], json!([3, 2]));
    let mut strings = Vec::new();
    let mut rest = bin.as_slice();
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        strings.push(String::from_utf8_lossy(&rest[4..4 + n]).into_owned());
        rest = &rest[4 + n..];
    }
    assert_eq!(strings.len(), 6);
    for (i, (_, label)) in samples.iter().take(3).enumerate() {
        let parts: Vec<&str> = strings[2 * i].splitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "{}", strings[2 * i]);
        let score: f64 = parts[0].parse().expect("score");
        assert!(score > 0.0 && score <= 1.0);
        assert_eq!(slug(parts[2]), *label);
    }

    // The same images as UINT8 pixels (JSON) and as FP32 (binary): same logits as BYTES.
    let bytes_logits = {
        let header = json!({
            "inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [b64(&pngs[0])]}]
        });
        let r = server.post_json("/v2/models/fmnist/versions/1/infer", &header);
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["model_version"], "1");
        assert_eq!(j["outputs"][0]["shape"], json!([1, 10]));
        j["outputs"][0]["data"].as_array().cloned().unwrap_or_default()
    };
    let px = pixels(&samples[0].0);
    let nested: Vec<Vec<Vec<u8>>> = px
        .chunks(28)
        .map(|row| row.iter().map(|&p| vec![p]).collect())
        .collect();
    let r = server.post_json(
        "/v2/models/fmnist/versions/1/infer",
        &json!({"inputs": [{"name": "input", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": [nested]}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let uint8_logits = r.json()["outputs"][0]["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(uint8_logits.len(), 10);
    for (a, b) in uint8_logits.iter().zip(&bytes_logits) {
        let (a, b) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
        assert!((a - b).abs() < 1e-4, "UINT8 {a} vs BYTES {b}");
    }
    // FP32 binary in, binary out: normalise like the model's config (mean/std from metadata).
    let cfg = engine::artifact::ModelArtifact::open(&repo.path().join("fmnist"), Some(1))
        .expect("artifact")
        .config;
    let (mean, std) = (cfg.preprocess.mean[0], cfg.preprocess.std[0]);
    let input: Vec<u8> = px
        .iter()
        .flat_map(|&p| ((p as f32 / 255.0 - mean) / std).to_le_bytes())
        .collect();
    let header = json!({
        "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": input.len()}}],
        "parameters": {"binary_data_output": true}
    });
    let (h, body) = binary_request(&header, &input);
    let r = server.post("/v2/models/fmnist/versions/1/infer", &headers_of(&h), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let (json_part, bin) = split_binary(&r);
    assert_eq!(json_part["outputs"][0]["parameters"]["binary_data_size"], 40);
    for (a, b) in floats(&bin).iter().zip(&bytes_logits) {
        let b = b.as_f64().unwrap_or(f64::NAN);
        assert!((*a as f64 - b).abs() < 1e-4, "FP32 {a} vs BYTES {b}");
    }

    // Malformed requests: 400 with the reason.
    let infer = "/v2/models/fmnist/infer";
    let fp32 = |shape: Value, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]});
    server
        .post_json(infer, &fp32(json!([1, 3, 28, 28]), json!([0.0])))
        .assert_error(400, &["[1, 3, 28, 28]", "[N, 1, 28, 28]"]);
    server
        .post_json(infer, &fp32(json!([1, 1, 28, 28]), json!([0.0, 1.0])))
        .assert_error(400, &["2 values", "784"]);
    server
        .post_json(infer, &fp32(json!([1, 1, 28, 28]), json!(["a"])))
        .assert_error(400, &["non-number"]);
    server
        .post_json(
            infer,
            &json!({"inputs": [{"name": "input", "shape": [1], "datatype": "INT64", "data": [1]}]}),
        )
        .assert_error(400, &["INT64"]);
    server
        .post_json(
            infer,
            &json!({"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}),
        )
        .assert_error(400, &["pixels", "\"input\""]);
    server
        .post_json(infer, &json!({"inputs": []}))
        .assert_error(400, &["exactly one input"]);
    // Two binary inputs: counted before the binary part is shared out between them.
    let two = json!({"inputs": [
        {"name": "input", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
        {"name": "input", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}},
    ]})
    .to_string();
    let mut body = two.clone().into_bytes();
    body.extend_from_slice(&[0; 8]);
    server
        .post(
            infer,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Inference-Header-Content-Length", &two.len().to_string()),
            ],
            &body,
        )
        .assert_error(400, &["exactly one input", "got 2"]);
    server
        .post_json(
            infer,
            &json!({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [b64(&pngs[0])]}],
                    "outputs": [{"name": "probs"}]}),
        )
        .assert_error(400, &["probs", "logits"]);
    server
        .post_json(
            infer,
            &json!({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [b64(b"not an image")]}]}),
        )
        .assert_error(400, &["image 0"]);
    server
        .post_json(
            infer,
            &json!({"inputs": [{"name": "input", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": [300]}]}),
        )
        .assert_error(400, &["300"]);
    let header = json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 4000}}]});
    let (h, body) = binary_request(&header, &[0u8; 16]);
    server
        .post(infer, &headers_of(&h), &body)
        .assert_error(400, &["binary_data_size 4000", "16"]);
    server
        .post(infer, &[("Inference-Header-Content-Length", "9999")], b"{}")
        .assert_error(400, &["9999"]);
    server
        .post(infer, &[("Content-Type", "application/json")], b"{not json")
        .assert_error(400, &["invalid inference request JSON"]);
    server
        .post_json("/v2/models/nope/infer", &fp32(json!([1]), json!([0.0])))
        .assert_error(404, &["nope"]);
    assert!(
        server.metric("hardy_requests_total{endpoint=\"infer\",model=\"fmnist\",outcome=\"invalid_argument\"") >= 11.0
    );
}

#[test]
fn batching_merges_clients_overload_answers_503_and_gone_clients_are_dropped() {
    let repo = tempfile::tempdir().expect("tempdir");
    // "merge": a 300 ms window, so 12 concurrent clients share a few session runs.
    add_model(
        repo.path(),
        "merge",
        1,
        2,
        Some("[batching]\nmax_batch_size = 16\nmax_queue_delay_us = 300000\n"),
    );
    // "slow": a request waits 2 s for company, and only one may wait.
    add_model(
        repo.path(),
        "slow",
        1,
        2,
        Some("[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 2000000\nqueue_capacity = 1\n"),
    );
    let server = Server::start(repo.path(), &[]);
    let samples = samples();

    let results: Vec<(u16, String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let (file, label) = samples[i % samples.len()].clone();
                let base = server.base.clone();
                s.spawn(move || {
                    let png = std::fs::read(&file).expect("read");
                    let r = request(
                        "POST",
                        &format!("{base}/v1/models/merge/classify"),
                        &[("Content-Type", "image/png")],
                        &png,
                    );
                    let got = r.json()["results"][0]["predictions"][0]["label"]
                        .as_str()
                        .map(slug)
                        .unwrap_or_default();
                    (r.status, got, label)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    for (status, got, want) in &results {
        assert_eq!((*status, got), (200, want));
    }
    let batches = server.metric("hardy_batch_executions_total{model=\"merge\"");
    let images = server.metric("hardy_inference_images_total{model=\"merge\"");
    assert_eq!(images, 12.0);
    assert!(batches <= 3.0, "12 concurrent requests ran as {batches} batches");
    assert!(server.metric("hardy_batch_size_images_sum{model=\"merge\"") == 12.0);

    // Overload: the first request holds the only place; the second is refused at once.
    let png = std::fs::read(&samples[0].0).expect("read");
    let slow = format!("{}/v1/models/slow/classify", server.base);
    std::thread::scope(|s| {
        let waiting = s.spawn(|| request("POST", &slow, &[("Content-Type", "image/png")], &png));
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let refused = request("POST", &slow, &[("Content-Type", "image/png")], &png);
        let took = t.elapsed();
        refused.assert_error(503, &["queue", "full"]);
        assert_eq!(refused.header("Retry-After"), Some("1"));
        assert!(took < Duration::from_millis(1000), "503 took {took:?}");
        assert_eq!(server.metric("hardy_queue_depth_requests{model=\"slow\""), 1.0);
        let first = waiting.join().expect("client");
        assert_eq!(first.status, 200, "{}", first.text());
    });
    assert_eq!(
        server.metric("hardy_requests_total{endpoint=\"classify\",model=\"slow\",outcome=\"queue_full\""),
        1.0
    );

    // A client that disconnects while its request waits: dropped before it runs.
    let images_before = server.metric("hardy_inference_images_total{model=\"slow\"");
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    let head = format!(
        "POST /v1/models/slow/classify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        png.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(&png).expect("write");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(server.metric("hardy_queue_depth_requests{model=\"slow\""), 1.0);
    drop(stream);
    let t0 = Instant::now();
    while server.metric("hardy_requests_total{endpoint=\"classify\",model=\"slow\",outcome=\"client_gone\"") < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the gone client was never noticed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(2500)); // past the 2 s window
    assert_eq!(
        server.metric("hardy_inference_images_total{model=\"slow\""),
        images_before,
        "the gone client's image was run"
    );
    assert_eq!(server.metric("hardy_queue_depth_requests{model=\"slow\""), 0.0);
    // The model still serves.
    let r = request("POST", &slow, &[("Content-Type", "image/png")], &png);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn repository_api_needs_the_token_and_a_failed_reload_keeps_serving() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 1, None);
    let server = Server::start(repo.path(), &["--admin-token", "s3cret"]);
    let auth = [("Authorization", "Bearer s3cret")];
    let png = std::fs::read(&samples()[0].0).expect("read");
    let classify = |version: &str| {
        server.post(
            &format!("/v1/models/fmnist{version}/classify"),
            &[("Content-Type", "image/png")],
            &png,
        )
    };

    server
        .post("/v2/repository/index", &[], b"")
        .assert_error(401, &["token"]);
    server
        .post("/v2/repository/index", &[("Authorization", "Bearer nope")], b"")
        .assert_error(401, &["token"]);
    let index = server.post("/v2/repository/index", &auth, b"").json();
    assert_eq!(
        index,
        json!([{"name": "fmnist", "version": "1", "state": "READY", "reason": ""}])
    );

    // Unload, then requests get 404; load brings it back.
    assert_eq!(
        server.post("/v2/repository/models/fmnist/unload", &auth, b"").status,
        200
    );
    classify("").assert_error(404, &["fmnist"]);
    assert_eq!(server.get("/v2/models/fmnist/ready").status, 404);
    assert_eq!(
        server.get("/v2/health/ready").status,
        200,
        "an unloaded model does not make the server unready"
    );
    assert_eq!(server.metric("hardy_model_ready{model=\"fmnist\""), 0.0);
    let r = server.post("/v2/repository/models/fmnist/load", &auth, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(classify("").json()["model_version"], "1");

    // A new version appears: load picks it up.
    add_model(repo.path(), "fmnist", 2, 2, None);
    assert_eq!(
        server.post("/v2/repository/models/fmnist/load", &auth, b"").json()["versions"],
        json!([2])
    );
    assert_eq!(classify("").json()["model_version"], "2");

    // A broken version 3: the reload fails, version 2 keeps serving, the index says why.
    let broken = repo.path().join("fmnist/3");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(broken.join("model.onnx"), b"not a model").expect("write");
    server
        .post("/v2/repository/models/fmnist/load", &auth, b"")
        .assert_error(400, &["fmnist", "version 3"]);
    assert_eq!(classify("").json()["model_version"], "2");
    let index = server.post("/v2/repository/index", &auth, b"").json();
    assert_eq!(index[0]["state"], "READY");
    assert!(
        index[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("last reload failed")),
        "{index}"
    );
    assert_eq!(server.metric("hardy_model_load_failures_total{model=\"fmnist\""), 1.0);
    assert_eq!(server.metric("hardy_model_ready{model=\"fmnist\",version=\"2\""), 1.0);

    server
        .post("/v2/repository/models/../etc/load", &auth, b"")
        .assert_error(404, &[]);
    server
        .post("/v2/repository/models/.hidden/load", &auth, b"")
        .assert_error(400, &["not a model name"]);
    server
        .post("/v2/repository/models/ghost/unload", &auth, b"")
        .assert_error(404, &["ghost"]);
}

#[test]
fn repository_api_is_off_without_a_token() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 2, None);
    let server = Server::start(repo.path(), &[]);
    server
        .post("/v2/repository/index", &[("Authorization", "Bearer x")], b"")
        .assert_error(403, &["--admin-token"]);
    server
        .post("/v2/repository/models/fmnist/unload", &[], b"")
        .assert_error(403, &["--admin-token"]);
    assert_eq!(server.get("/v2/models/fmnist/ready").status, 200);
}

#[test]
fn sigterm_drains_admitted_requests_then_exits() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(
        repo.path(),
        "slow",
        1,
        2,
        Some("[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 1500000\n"),
    );
    let mut server = Server::start(repo.path(), &[]);
    let png = std::fs::read(&samples()[0].0).expect("read");
    let url = format!("{}/v1/models/slow/classify", server.base);
    let grpc = format!("http://{}", server.grpc);
    let (replies, grpc_reply): (Vec<Reply>, Result<usize, String>) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|_| s.spawn(|| request("POST", &url, &[("Content-Type", "image/png")], &png)))
            .collect();
        // and a gRPC call waiting in the same window
        let grpc_client = s.spawn(|| {
            grpc_classify(&grpc, "slow", &png)
                .map(|r| r.into_inner().raw_output_contents.first().map_or(0, |r| r.len()))
        });
        std::thread::sleep(Duration::from_millis(500));
        let killed = Command::new("kill")
            .args(["-TERM", &server.pid().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let replies = clients.into_iter().map(|c| c.join().expect("client")).collect();
        (replies, grpc_client.join().expect("gRPC client"))
    });
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(grpc_reply, Ok(40), "the gRPC call in flight");
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let mut buf = Vec::new();
    if let Ok(mut s) = TcpStream::connect(server.base.trim_start_matches("http://")) {
        let _ = s.read_to_end(&mut buf);
        panic!("still accepting connections after exit");
    }
}

/// Triton's statistics extension counts requests, images and session runs per version; its
/// model configuration extension tells the settings a version runs with.
#[test]
fn statistics_and_model_configuration_extensions() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 1, None);
    add_model(repo.path(), "fmnist", 2, 2, None);
    add_model(repo.path(), "other", 1, 1, None);
    let server = Server::start(repo.path(), &[]);
    let all = server.get("/v2/models/stats");
    assert_eq!(all.status, 200, "{}", all.text());
    let names: Vec<(String, String)> = all.json()["model_stats"]
        .as_array()
        .expect("model_stats")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().into(),
                m["version"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    // the latest version of each model is loaded
    assert_eq!(names, pairs(&[("fmnist", "2"), ("other", "1")]));
    assert_eq!(all.json()["model_stats"][0]["execution_count"], 0);

    // two answered requests of one and three images, one that fails (not an image)
    let samples = samples();
    let png = std::fs::read(&samples[0].0).expect("sample");
    let r = server.post("/v1/models/fmnist/classify", &[("Content-Type", "image/png")], &png);
    assert_eq!(r.status, 200, "{}", r.text());
    let images: Vec<Value> = samples[..3]
        .iter()
        .map(|(f, _)| json!(b64(&std::fs::read(f).expect("sample"))))
        .collect();
    let r = server.post_json("/v1/models/fmnist/classify", &json!({ "images": images }));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.post(
        "/v1/models/fmnist/classify",
        &[("Content-Type", "image/png")],
        b"not a png",
    );
    assert_eq!(r.status, 400, "{}", r.text());

    let r = server.get("/v2/models/fmnist/stats");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let versions = j["model_stats"].as_array().expect("model_stats");
    assert_eq!(versions.len(), 1, "{j}");
    let v2 = &versions[0];
    assert_eq!(
        (v2["name"].as_str(), v2["version"].as_str()),
        (Some("fmnist"), Some("2"))
    );
    assert_eq!(v2["inference_count"], 4, "{v2}");
    let s = &v2["inference_stats"];
    assert_eq!(s["success"]["count"], 2, "{v2}");
    assert_eq!(s["fail"]["count"], 1, "{v2}");
    for part in ["success", "fail", "compute_input", "compute_infer"] {
        assert!(s[part]["ns"].as_u64().unwrap_or(0) > 0, "{part}: {v2}");
    }
    for part in ["queue", "compute_input", "compute_infer", "compute_output"] {
        assert_eq!(s[part]["count"], 2, "{part}: {v2}");
    }
    let batches = v2["batch_stats"].as_array().expect("batch_stats");
    let runs: u64 = batches
        .iter()
        .map(|b| b["compute_infer"]["count"].as_u64().unwrap_or(0))
        .sum();
    let imgs: u64 = batches
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap_or(0) * b["compute_infer"]["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!((runs, imgs), (v2["execution_count"].as_u64().unwrap_or(0), 4), "{v2}");
    assert!(v2["last_inference"].as_u64().unwrap_or(0) > 0);
    let other = server.get("/v2/models/other/stats").json();
    assert_eq!(
        other["model_stats"][0]["inference_count"], 0,
        "other served nothing: {other}"
    );

    let one = server.get("/v2/models/fmnist/versions/2/stats").json();
    assert_eq!(one["model_stats"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["model_stats"][0]["inference_count"], 4);
    server.get("/v2/models/nope/stats").assert_error(404, &["nope"]);

    // the model configuration extension: the settings the version runs with
    let c = server.get("/v2/models/fmnist/config");
    assert_eq!(c.status, 200, "{}", c.text());
    let c = c.json();
    assert_eq!(c["name"], "fmnist");
    assert_eq!(c["platform"], "onnxruntime_onnx");
    let meta = server.get("/v2/models/fmnist").json();
    assert_eq!(c["max_batch_size"], meta["parameters"]["max_batch_size"], "{c}");
    assert_eq!(c["input"][0]["dims"], json!([1, 28, 28]), "{c}");
    assert_eq!(c["input"][0]["format"], "FORMAT_NCHW");
    assert_eq!(c["output"][0]["dims"], json!([10]), "{c}");
    assert_eq!(c["dynamic_batching"]["max_queue_delay_microseconds"], 0, "{c}");
    assert_eq!(c["instance_group"][0]["kind"], "KIND_CPU");
    assert_eq!(c["version_policy"], json!({ "latest": { "num_versions": 1 } }));
    assert_eq!(server.get("/v2/models/fmnist/versions/2/config").json(), c);
    server.get("/v2/models/nope/config").assert_error(404, &["nope"]);
    server
        .get("/v2/models/fmnist/versions/1/config")
        .assert_error(404, &["1"]);
    server
        .get("/v2/models/fmnist/versions/9/stats")
        .assert_error(404, &["9"]);
}

/// One image through gRPC `ModelInfer` (raw contents): the response, with its metadata.
pub fn grpc_classify(
    endpoint: &str,
    model: &str,
    png: &[u8],
) -> Result<tonic::Response<serve::grpc::proto::ModelInferResponse>, String> {
    use serve::grpc::proto::{
        ModelInferRequest, grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(endpoint.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = (png.len() as u32).to_le_bytes().to_vec();
        raw.extend_from_slice(png);
        client
            .model_infer(ModelInferRequest {
                model_name: model.into(),
                inputs: vec![InferInputTensor {
                    name: "input".into(),
                    datatype: "BYTES".into(),
                    shape: vec![1],
                    ..Default::default()
                }],
                raw_input_contents: vec![raw.into()],
                ..Default::default()
            })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    })
}
