//! A bounded, deterministic random-mutation fuzz of the inference endpoints against the real
//! `hardy serve` (hostile clients).
//!
//! Seed requests are built from the sample PNGs, one of each kind checked first to answer 200:
//! `/v1/.../classify` with a raw image, JSON base64 images and a multipart form, and
//! `/v2/.../infer` with OIP JSON (FP32 `[N,1,28,28]`, UINT8 `[N,28,28,1]`, BYTES `[N]`) and
//! Triton's binary extension (the same three datatypes). Each request is a seed with up to
//! three mutations drawn from a seeded [`StdRng`]: structured JSON edits (shapes with 0, -1,
//! 1e9, 2^62, i64::MAX, huge first dimensions with little data, wrong ranks, swapped
//! datatypes, dropped/duplicated/wrapped/added fields, non-number data, huge
//! `binary_data_size`, odd `top_k`), multipart edits, byte flips, truncation, insertion and
//! duplication of body ranges, wrong `Content-Type`, `Inference-Header-Content-Length` larger
//! or smaller than the JSON or not a number, odd query strings and model paths.
//!
//! Requests go one at a time, each over its own `TcpStream` (HTTP/1.1, a correct
//! `Content-Length`, `Connection: close`, 10 s timeouts), so the server is never overloaded
//! and a 503 is a fault like any 5xx. Every 4xx must carry a JSON body with a string
//! `"error"`. A request that gets no answer (reset, early close, timeout), or after which the
//! server is dead, is a fault too; a dead server is restarted (a few times at most) so that
//! one run reports several faults. Each fault is printed with its iteration and mutations,
//! and written as raw HTTP to `target/tmp/fuzz-faults/` for replay
//! (`nc 127.0.0.1 PORT < FILE`; the Host header names the port of the run).
//!
//! The run is fixed ([`FUZZ_SEED`], [`FUZZ_REQUESTS`]); `HARDY_FUZZ_SEED=N` and
//! `HARDY_FUZZ_REQUESTS=N` explore other streams.

use std::{
    collections::BTreeMap,
    io::{Cursor, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Map, Value, json};

use super::serve::{Server, add_model, samples};

/// Mutated requests sent per run (the seed checks and the final liveness checks come on top).
pub const FUZZ_REQUESTS: usize = 8000;
/// The seed of the mutation stream: the same seed sends the same requests.
pub const FUZZ_SEED: u64 = 19;
/// Connect, read and write timeout of one request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole loop stops sending after this long (hung requests cost `IO_TIMEOUT` each).
const TIME_LIMIT: Duration = Duration::from_secs(150);
/// Restarts of a server that died, before the fuzz gives up.
const MAX_RESTARTS: usize = 3;
/// Mutations never grow a body past this (far below `--max-body-bytes`).
const MAX_BODY: usize = 512 << 10;
/// Share of requests sent as unmutated seeds (they must answer 200).
const UNMUTATED: f64 = 0.08;
const MODEL: &str = "fmnist";
const INPUT: &str = "input";
const BOUNDARY: &str = "fuzz-boundary-19x";
const FLAGS: &[&str] = &["--versions", "all", "--max-queue-delay-us", "200"];

#[test]
fn fuzzed_inference_requests_never_get_5xx_non_json_errors_or_kill_the_server() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), MODEL, 1, 1, None);
    add_model(repo.path(), MODEL, 2, 2, None);
    let images = Images::new(repo.path());
    let mut server = Server::start(repo.path(), FLAGS);
    let mut addr = address(&server);
    let fault_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-faults");
    let _ = std::fs::remove_dir_all(&fault_dir);
    std::fs::create_dir_all(&fault_dir).expect("create the fault directory");
    // `HARDY_FUZZ_SEED` and `HARDY_FUZZ_REQUESTS` explore further; the defaults are fixed.
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let fuzz_seed = env("HARDY_FUZZ_SEED").unwrap_or(FUZZ_SEED);
    let requests = env("HARDY_FUZZ_REQUESTS").map_or(FUZZ_REQUESTS, |n| n as usize);
    let mut rng = StdRng::seed_from_u64(fuzz_seed);

    // Every kind of seed is a valid request.
    for kind in KINDS {
        let request = seed(kind, &mut rng, &images).request(&addr);
        let answer = exchange(&addr, &request, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("seed {kind:?}: {e}\n{}", request.summary()));
        assert_eq!(
            answer.status,
            200,
            "seed {kind:?}: {}\n{}",
            answer.text(),
            request.summary()
        );
    }

    let t0 = Instant::now();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    // Requests of Triton's binary tensor extension (the OIP binary parser's inputs).
    let mut binary_requests = 0usize;
    let mut faults: Vec<Fault> = Vec::new();
    let (mut sent, mut crashes, mut server_errors, mut bad_errors, mut timeouts) = (0, 0, 0, 0, 0);
    let (mut restarts, mut retried) = (0, 0);
    let mut stopped = None;
    for iteration in 0..requests {
        if t0.elapsed() > TIME_LIMIT {
            stopped = Some(format!("stopped after {TIME_LIMIT:?} at request {iteration}"));
            break;
        }
        let kind = *KINDS.choose(&mut rng).expect("kinds");
        binary_requests += usize::from(matches!(
            kind,
            SeedKind::BinaryFp32 | SeedKind::BinaryUint8 | SeedKind::BinaryBytes
        ));
        let mut draft = seed(kind, &mut rng, &images);
        let mutated = !rng.random_bool(UNMUTATED);
        if mutated {
            for _ in 0..rng.random_range(1..=3) {
                let before = draft.clone();
                mutate(&mut draft, &mut rng, &images);
                if draft.size() > MAX_BODY {
                    draft = before;
                }
            }
        }
        let request = draft.request(&addr);
        sent += 1;
        let mut result = exchange(&addr, &request, IO_TIMEOUT);
        let mut died = false;
        if let Err(e) = &mut result
            && !e.starts_with("timeout")
        {
            // No answer: was the server killed, or did only this connection go? (A fault
            // either way; the retry only tells whether it is repeatable.)
            if alive(&addr) {
                let again = exchange(&addr, &request, IO_TIMEOUT);
                retried += 1;
                e.push_str(&match again {
                    Ok(a) => format!("; sent again, it was answered {}", a.status),
                    Err(again) => format!("; sent again, no answer either: {again}"),
                });
            } else {
                died = true;
            }
        }
        let fault = match &result {
            Ok(answer) => {
                *by_status.entry(answer.status).or_default() += 1;
                match judge(answer, mutated) {
                    Ok(()) => None,
                    Err(e) => {
                        if answer.status >= 500 {
                            server_errors += 1;
                        } else {
                            bad_errors += 1;
                        }
                        Some(("bad answer", e))
                    }
                }
            }
            Err(e) if died => {
                crashes += 1;
                Some(("server died", e.clone()))
            }
            Err(e) if e.starts_with("timeout") => {
                timeouts += 1;
                Some(("no answer in time", e.clone()))
            }
            Err(e) => {
                crashes += 1;
                Some(("connection dropped without an answer (server alive)", e.clone()))
            }
        };
        if let Some((what, detail)) = fault {
            let file = fault_dir.join(format!("request-{iteration:04}.http"));
            let _ = std::fs::write(&file, request.wire());
            let fault = Fault {
                iteration,
                what,
                detail,
                notes: draft.notes.clone(),
                summary: request.summary(),
                file,
            };
            eprintln!("fuzz: fault\n{fault}");
            faults.push(fault);
        }
        if died {
            if restarts == MAX_RESTARTS {
                stopped = Some(format!(
                    "the server died {} times; stopped at request {iteration}",
                    restarts + 1
                ));
                break;
            }
            restarts += 1;
            drop(server);
            server = Server::start(repo.path(), FLAGS);
            addr = address(&server);
        }
        if (iteration + 1) % 500 == 0 {
            println!(
                "fuzz: {}/{requests} requests, {:.1} s",
                iteration + 1,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();

    // Still alive and still serving.
    let live = exchange(&addr, &Request::get("/v2/health/live").with_host(&addr), IO_TIMEOUT);
    let live_status = live.as_ref().map(|a| a.status).unwrap_or(0);
    let valid = seed(SeedKind::Raw, &mut rng, &images).request(&addr);
    let classify = exchange(&addr, &valid, IO_TIMEOUT);
    let classify_status = classify.as_ref().map(|a| a.status).unwrap_or(0);

    println!(
        "fuzz: {sent} requests (seed {fuzz_seed}), {crashes} crashes, {server_errors} 5xx, {bad_errors} 4xx \
         without a JSON error, {timeouts} timeouts, {restarts} restarts, {retried} sent again, \
         {elapsed:.1} s; by status {by_status:?}; {binary_requests} of the requests were OIP binary bodies"
    );
    if let Some(why) = &stopped {
        println!("fuzz: {why}");
    }
    if !faults.is_empty() {
        println!(
            "fuzz: {} faults (raw requests in {}):",
            faults.len(),
            fault_dir.display()
        );
        for f in faults.iter().take(25) {
            println!("{f}");
        }
    }
    assert_eq!(live_status, 200, "/v2/health/live after the fuzz: {live:?}");
    assert_eq!(classify_status, 200, "a valid classify after the fuzz");
    assert!(
        faults.is_empty(),
        "{} of {sent} fuzzed requests found faults (first at iteration {}); see above",
        faults.len(),
        faults[0].iteration
    );
    assert!(stopped.is_none(), "{stopped:?}");
}

// ---------------------------------------------------------------------------------------------
// Faults

struct Fault {
    iteration: usize,
    what: &'static str,
    detail: String,
    notes: Vec<String>,
    summary: String,
    file: PathBuf,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  #{} {}: {}", self.iteration, self.what, self.detail)?;
        writeln!(f, "    mutations: {}", self.notes.join("; "))?;
        for line in self.summary.lines() {
            writeln!(f, "    {line}")?;
        }
        write!(f, "    raw request: {}", self.file.display())
    }
}

/// Whether an answer is acceptable: never 5xx (nor 1xx/3xx); a 4xx with a JSON body holding a
/// string `"error"`; an unmutated seed answered 200.
fn judge(a: &Answer, mutated: bool) -> Result<(), String> {
    if a.status >= 500 || a.status < 200 || (300..400).contains(&a.status) {
        return Err(format!("status {}: {}", a.status, a.text()));
    }
    if (400..500).contains(&a.status) {
        let error = serde_json::from_slice::<Value>(&a.body)
            .ok()
            .and_then(|v| v.get("error").map(Value::is_string));
        if error != Some(true) {
            return Err(format!(
                "status {} without a JSON {{\"error\": \"...\"}} body: {:?}",
                a.status,
                a.text()
            ));
        }
    }
    if !mutated && a.status != 200 {
        return Err(format!("an unmutated seed got {}: {}", a.status, a.text()));
    }
    Ok(())
}

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// `/v2/health/live` answers 200 within a few tries.
fn alive(addr: &str) -> bool {
    for _ in 0..5 {
        let probe = Request::get("/v2/health/live").with_host(addr);
        if exchange(addr, &probe, Duration::from_secs(3)).is_ok_and(|a| a.status == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// HTTP over a raw socket

struct Request {
    method: &'static str,
    path: String,
    host: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn get(path: &str) -> Self {
        Self {
            method: "GET",
            path: path.into(),
            host: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn with_host(mut self, addr: &str) -> Self {
        self.host = addr.into();
        self
    }

    /// The bytes on the wire.
    fn wire(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.method, self.path, self.host
        );
        if self.method != "GET" || !self.body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// The request line, headers and (the start of) the body, for a report.
    fn summary(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.path);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        let shown = self.body.len().min(400);
        s.push_str(&format!(
            "body ({} bytes): {}{}",
            self.body.len(),
            String::from_utf8_lossy(&self.body[..shown]).escape_debug(),
            if shown < self.body.len() { " ..." } else { "" }
        ));
        s
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        let shown = self.body.len().min(300);
        String::from_utf8_lossy(&self.body[..shown]).into_owned()
    }
}

/// Sends one request on a fresh connection and reads the answer, all within `timeout`.
/// An error starting with "timeout" means no complete answer in time.
fn exchange(addr: &str, request: &Request, timeout: Duration) -> Result<Answer, String> {
    let deadline = Instant::now() + timeout;
    let socket: SocketAddr = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_nodelay(true);
    // A server may answer (say 413) and close before reading everything: read the answer anyway.
    let write_error = stream.write_all(&request.wire()).err();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "timeout: no complete answer within {timeout:?} ({} bytes read)",
                buf.len()
            ));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_answer(&buf, true)?.ok_or_else(|| {
                    format!(
                        "the connection closed after {} bytes without a complete answer{}",
                        buf.len(),
                        write_error
                            .as_ref()
                            .map(|e| format!(" (write: {e})"))
                            .unwrap_or_default()
                    )
                });
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(answer) = parse_answer(&buf, false)? {
                    return Ok(answer);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!(
                    "timeout: no complete answer within {timeout:?} ({} bytes read)",
                    buf.len()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return match parse_answer(&buf, true) {
                    Ok(Some(answer)) => Ok(answer),
                    _ => Err(format!(
                        "read: {e} after {} bytes{}",
                        buf.len(),
                        write_error
                            .as_ref()
                            .map(|e| format!(" (write: {e})"))
                            .unwrap_or_default()
                    )),
                };
            }
        }
    }
}

/// A complete answer in `buf`, `None` if more is needed (`eof`: no more will come).
fn parse_answer(buf: &[u8], eof: bool) -> Result<Option<Answer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("unparsable answer ({e}): {:?}", String::from_utf8_lossy(buf))),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &buf[head_len..];
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return match dechunk(rest)? {
            Some(body) => Ok(Some(Answer { status, body })),
            None if eof => Err("the connection closed inside a chunked body".into()),
            None => Ok(None),
        };
    }
    if let Some(length) = header("content-length") {
        let n: usize = length.parse().map_err(|_| format!("bad Content-Length {length:?}"))?;
        if rest.len() >= n {
            return Ok(Some(Answer {
                status,
                body: rest[..n].to_vec(),
            }));
        }
        if eof {
            return Err(format!("the connection closed after {} of {n} body bytes", rest.len()));
        }
        return Ok(None);
    }
    Ok(eof.then(|| Answer {
        status,
        body: rest.to_vec(),
    }))
}

/// A chunked body, `None` until its last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds

/// The images the seeds and mutations draw from.
struct Images {
    /// The sample PNGs.
    pngs: Vec<Vec<u8>>,
    /// Their 28x28 grey pixels.
    pixels: Vec<Vec<u8>>,
    /// Odd images: valid ones of unusual sizes and formats, and broken ones.
    odd: Vec<(&'static str, Vec<u8>)>,
    /// The model's normalisation.
    mean: f32,
    std: f32,
}

impl Images {
    fn new(repo: &Path) -> Self {
        let pngs: Vec<Vec<u8>> = samples()
            .iter()
            .map(|(p, _)| std::fs::read(p).expect("read a sample"))
            .collect();
        let pixels = pngs
            .iter()
            .map(|p| {
                image::load_from_memory(p)
                    .expect("decode a sample")
                    .to_luma8()
                    .into_raw()
            })
            .collect();
        let cfg = engine::artifact::ModelArtifact::open(&repo.join(MODEL), Some(1))
            .expect("artifact")
            .config;
        use image::{DynamicImage as D, ImageFormat as F};
        let encode = |img: D, format: F| {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, format).expect("encode an image");
            out.into_inner()
        };
        let gradient = |w: u32, h: u32| image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let odd = vec![
            (
                "1x1 grey PNG",
                encode(D::ImageLuma8(image::GrayImage::new(1, 1)), F::Png),
            ),
            ("3000x1 RGB PNG", encode(D::ImageRgb8(gradient(3000, 1)), F::Png)),
            (
                "1x3000 RGBA PNG",
                encode(D::ImageRgba8(image::RgbaImage::new(1, 3000)), F::Png),
            ),
            (
                "16-bit grey PNG",
                encode(D::ImageLuma16(image::ImageBuffer::new(28, 28)), F::Png),
            ),
            ("300x200 JPEG", encode(D::ImageRgb8(gradient(300, 200)), F::Jpeg)),
            ("BMP", encode(D::ImageRgb8(gradient(28, 28)), F::Bmp)),
            ("GIF", encode(D::ImageRgba8(image::RgbaImage::new(28, 28)), F::Gif)),
            ("WebP", encode(D::ImageRgb8(gradient(28, 28)), F::WebP)),
            ("PNG header of 100000x100000", crate::cli::huge_png_header()),
            ("truncated PNG", pngs[0][..pngs[0].len() / 2].to_vec()),
            ("PNG signature only", pngs[0][..8].to_vec()),
            ("text", b"definitely not an image".to_vec()),
            ("empty", Vec::new()),
        ];
        Self {
            pngs,
            pixels,
            odd,
            mean: cfg.preprocess.mean[0],
            std: cfg.preprocess.std[0],
        }
    }

    fn png(&self, rng: &mut StdRng) -> (usize, &[u8]) {
        let i = rng.random_range(0..self.pngs.len());
        (i, &self.pngs[i])
    }

    fn odd(&self, rng: &mut StdRng) -> (&'static str, &[u8]) {
        let (name, bytes) = self.odd.choose(rng).expect("odd images");
        (name, bytes)
    }
}

#[derive(Clone, Copy, Debug)]
enum SeedKind {
    Raw,
    ClassifyJson,
    Multipart,
    InferFp32,
    InferUint8,
    InferBytes,
    BinaryFp32,
    BinaryUint8,
    BinaryBytes,
}

const KINDS: [SeedKind; 9] = [
    SeedKind::Raw,
    SeedKind::ClassifyJson,
    SeedKind::Multipart,
    SeedKind::InferFp32,
    SeedKind::InferUint8,
    SeedKind::InferBytes,
    SeedKind::BinaryFp32,
    SeedKind::BinaryUint8,
    SeedKind::BinaryBytes,
];

#[derive(Clone)]
enum Body {
    /// Serialised at the end.
    Json(Value),
    /// An OIP binary request: the JSON header, then the data.
    Binary { header: Value, data: Vec<u8> },
    /// A multipart form.
    Form(Vec<Part>),
    /// Bytes as they go.
    Raw(Vec<u8>),
}

#[derive(Clone)]
struct Part {
    name: Option<String>,
    file: Option<String>,
    data: Vec<u8>,
}

#[derive(Clone)]
enum HeaderLength {
    /// The JSON header's length for a binary body, else none.
    Auto,
    Absent,
    Value(String),
}

/// A request being built and mutated.
#[derive(Clone)]
struct Draft {
    classify: bool,
    path: String,
    query: String,
    content_type: Option<String>,
    header_length: HeaderLength,
    body: Body,
    notes: Vec<String>,
}

impl Draft {
    fn new(classify: bool, content_type: &str, body: Body, note: String) -> Self {
        let path = if classify {
            format!("/v1/models/{MODEL}/classify")
        } else {
            format!("/v2/models/{MODEL}/infer")
        };
        Self {
            classify,
            path,
            query: String::new(),
            content_type: Some(content_type.into()),
            header_length: HeaderLength::Auto,
            body,
            notes: vec![note],
        }
    }

    /// The body's bytes, and the JSON header's length for a binary body.
    fn body_bytes(&self) -> (Vec<u8>, Option<usize>) {
        match &self.body {
            Body::Json(v) => (v.to_string().into_bytes(), None),
            Body::Binary { header, data } => {
                let mut bytes = header.to_string().into_bytes();
                let n = bytes.len();
                bytes.extend_from_slice(data);
                (bytes, Some(n))
            }
            Body::Form(parts) => (form_bytes(parts), None),
            Body::Raw(bytes) => (bytes.clone(), None),
        }
    }

    fn size(&self) -> usize {
        match &self.body {
            Body::Raw(b) => b.len(),
            Body::Binary { data, .. } if data.len() > MAX_BODY => data.len(),
            _ => self.body_bytes().0.len(),
        }
    }

    fn request(&self, addr: &str) -> Request {
        let (body, json_len) = self.body_bytes();
        let mut headers = Vec::new();
        if let Some(ct) = &self.content_type {
            headers.push(("Content-Type".to_string(), ct.clone()));
        }
        let length = match &self.header_length {
            HeaderLength::Auto => json_len.map(|n| n.to_string()),
            HeaderLength::Absent => None,
            HeaderLength::Value(v) => Some(v.clone()),
        };
        if let Some(v) = length {
            headers.push(("Inference-Header-Content-Length".to_string(), v));
        }
        Request {
            method: "POST",
            path: format!("{}{}", self.path, self.query),
            host: addr.into(),
            headers,
            body,
        }
    }

    /// Turns the body into bytes (keeping a binary body's header length), for byte mutations.
    fn freeze(&mut self) -> &mut Vec<u8> {
        if !matches!(self.body, Body::Raw(_)) {
            let (bytes, json_len) = self.body_bytes();
            if let (Some(n), HeaderLength::Auto) = (json_len, &self.header_length) {
                self.header_length = HeaderLength::Value(n.to_string());
            }
            self.body = Body::Raw(bytes);
        }
        match &mut self.body {
            Body::Raw(bytes) => bytes,
            _ => unreachable!("the body was just frozen"),
        }
    }
}

fn form_bytes(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend(format!("--{BOUNDARY}\r\nContent-Disposition: form-data").bytes());
        if let Some(name) = &p.name {
            body.extend(format!("; name=\"{name}\"").bytes());
        }
        if let Some(file) = &p.file {
            body.extend(format!("; filename=\"{file}\"\r\nContent-Type: image/png").bytes());
        }
        body.extend(b"\r\n\r\n");
        body.extend_from_slice(&p.data);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").bytes());
    body
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// A valid request of `kind` with 1-3 random sample images.
fn seed(kind: SeedKind, rng: &mut StdRng, images: &Images) -> Draft {
    let n = rng.random_range(1..=3usize);
    let picks: Vec<usize> = (0..n).map(|_| images.png(rng).0).collect();
    let pngs: Vec<&[u8]> = picks.iter().map(|&i| images.pngs[i].as_slice()).collect();
    let note = format!("seed {kind:?} with samples {picks:?}");
    let fp32 = |i: usize| -> Vec<f32> {
        images.pixels[i]
            .iter()
            .map(|&p| ((p as f32 / 255.0 - images.mean) / images.std * 1e4).round() / 1e4)
            .collect()
    };
    let outputs = |rng: &mut StdRng| match rng.random_range(0..4) {
        0 => json!([{"name": "logits", "parameters": {"classification": rng.random_range(1..=10)}}]),
        1 => json!([{"name": "logits", "parameters": {"binary_data": true}}]),
        2 => json!([{"name": "logits"}]),
        _ => json!([]),
    };
    let mut draft = match kind {
        SeedKind::Raw => Draft::new(true, "image/png", Body::Raw(pngs[0].to_vec()), note),
        SeedKind::ClassifyJson => {
            let encoded: Vec<String> = pngs.iter().map(|p| b64(p)).collect();
            let mut body = json!({ "images": encoded });
            if rng.random_bool(0.5) {
                body["top_k"] = json!(rng.random_range(1..=10));
            }
            Draft::new(true, "application/json", Body::Json(body), note)
        }
        SeedKind::Multipart => {
            let mut parts: Vec<Part> = pngs
                .iter()
                .enumerate()
                .map(|(i, p)| Part {
                    name: Some("image".into()),
                    file: Some(format!("img{i}.png")),
                    data: p.to_vec(),
                })
                .collect();
            if rng.random_bool(0.5) {
                parts.push(Part {
                    name: Some("top_k".into()),
                    file: None,
                    data: rng.random_range(1..=10).to_string().into_bytes(),
                });
            }
            let ct = format!("multipart/form-data; boundary={BOUNDARY}");
            Draft::new(true, &ct, Body::Form(parts), note)
        }
        SeedKind::InferFp32 | SeedKind::InferUint8 | SeedKind::InferBytes => {
            let (shape, datatype, data) = match kind {
                SeedKind::InferFp32 => {
                    let data = if rng.random_bool(0.5) {
                        let nested: Vec<Vec<Vec<Vec<f32>>>> = picks
                            .iter()
                            .map(|&i| vec![fp32(i).chunks(28).map(<[f32]>::to_vec).collect()])
                            .collect();
                        json!(nested)
                    } else {
                        json!(picks.iter().flat_map(|&i| fp32(i)).collect::<Vec<f32>>())
                    };
                    (json!([n, 1, 28, 28]), "FP32", data)
                }
                SeedKind::InferUint8 => {
                    let data: Vec<Value> = picks
                        .iter()
                        .map(|&i| {
                            let rows: Vec<Vec<[u8; 1]>> = images.pixels[i]
                                .chunks(28)
                                .map(|r| r.iter().map(|&p| [p]).collect())
                                .collect();
                            json!(rows)
                        })
                        .collect();
                    (json!([n, 28, 28, 1]), "UINT8", json!(data))
                }
                _ => {
                    let shape = if rng.random_bool(0.5) {
                        json!([n])
                    } else {
                        json!([n, 1])
                    };
                    let data: Vec<String> = pngs.iter().map(|p| b64(p)).collect();
                    (shape, "BYTES", json!(data))
                }
            };
            let mut body = json!({
                "inputs": [{"name": INPUT, "shape": shape, "datatype": datatype, "data": data}],
                "outputs": outputs(rng),
            });
            if rng.random_bool(0.3) {
                body["id"] = json!(format!("fuzz-{}", rng.random::<u32>()));
            }
            Draft::new(false, "application/json", Body::Json(body), note)
        }
        SeedKind::BinaryFp32 | SeedKind::BinaryUint8 | SeedKind::BinaryBytes => {
            let (shape, datatype, data): (Value, &str, Vec<u8>) = match kind {
                SeedKind::BinaryFp32 => (
                    json!([n, 1, 28, 28]),
                    "FP32",
                    picks.iter().flat_map(|&i| fp32(i)).flat_map(f32::to_le_bytes).collect(),
                ),
                SeedKind::BinaryUint8 => (
                    json!([n, 28, 28, 1]),
                    "UINT8",
                    picks.iter().flat_map(|&i| images.pixels[i].clone()).collect(),
                ),
                _ => (
                    json!([n]),
                    "BYTES",
                    pngs.iter()
                        .flat_map(|p| (p.len() as u32).to_le_bytes().into_iter().chain(p.iter().copied()))
                        .collect(),
                ),
            };
            let mut header = json!({
                "inputs": [{"name": INPUT, "shape": shape, "datatype": datatype,
                            "parameters": {"binary_data_size": data.len()}}],
                "outputs": outputs(rng),
            });
            if rng.random_bool(0.5) {
                header["parameters"] = json!({"binary_data_output": rng.random_bool(0.5)});
            }
            Draft::new(false, "application/octet-stream", Body::Binary { header, data }, note)
        }
    };
    if rng.random_bool(0.2) {
        let version = rng.random_range(1..=2);
        draft.path = draft
            .path
            .replacen(&format!("/{MODEL}/"), &format!("/{MODEL}/versions/{version}/"), 1);
    }
    draft
}

// ---------------------------------------------------------------------------------------------
// Mutations

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}... ({} chars)", &s[..s.floor_char_boundary(80)], s.len())
    } else {
        s
    }
}

/// One random mutation of any kind that applies.
fn mutate(d: &mut Draft, rng: &mut StdRng, images: &Images) {
    match rng.random_range(0..100) {
        0..40 => structured(d, rng, images),
        40..62 => {
            let notes = mutate_bytes(d.freeze(), rng);
            d.notes.push(notes);
        }
        62..66 => text_json(d, rng),
        66..77 => {
            let ct = CONTENT_TYPES.choose(rng).copied().flatten();
            d.content_type = ct.map(String::from);
            d.notes.push(format!("Content-Type {ct:?}"));
        }
        77..85 => header_length(d, rng),
        85..93 => {
            let q = *QUERIES.choose(rng).expect("queries");
            d.query = q.into();
            d.notes.push(format!("query {q:?}"));
        }
        _ => path(d, rng),
    }
}

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("text/plain"),
    Some("application/json"),
    Some("image/png"),
    Some("application/octet-stream"),
    Some("multipart/form-data"),
    Some("multipart/form-data; boundary=other"),
    Some("multipart/form-data; boundary="),
    Some("multipart/form-data; boundary=\"fuzz-boundary-19x\""),
    Some("image/"),
    Some("application/json; charset=utf-8"),
    Some("APPLICATION/JSON"),
    Some("*/*"),
    Some(";;;"),
    Some("image/png; q=0.5"),
    Some("application/x-www-form-urlencoded"),
    Some(""),
];

const QUERIES: &[&str] = &[
    "?top_k=-1",
    "?top_k=abc",
    "?top_k=99999999999999999999",
    "?top_k=18446744073709551616",
    "?top_k=4294967296",
    "?top_k=0",
    "?top_k=",
    "?top_k=1&top_k=2",
    "?foo=bar",
    "?top_k=1e3",
    "?top_k=%31",
    "?top_k=%ff",
    "?top_k=+5",
    "?top_k=3",
    "?top_k=10",
    "?top_k=11",
    "?",
    "?&&&",
    "?top_k",
];

/// A structured edit of the body: JSON, a multipart form, binary data or a raw image.
fn structured(d: &mut Draft, rng: &mut StdRng, images: &Images) {
    let note = match &mut d.body {
        Body::Json(v) => mutate_json(v, rng, images),
        Body::Binary { header, data } => {
            if rng.random_bool(0.3) {
                let note = mutate_binary_data(data, rng);
                if rng.random_bool(0.5) {
                    if let Some(p) = header.pointer_mut("/inputs/0/parameters/binary_data_size") {
                        *p = json!(data.len());
                    }
                    format!("{note}, binary_data_size follows")
                } else {
                    note
                }
            } else {
                mutate_json(header, rng, images)
            }
        }
        Body::Form(parts) => mutate_form(parts, rng, images),
        Body::Raw(bytes) => {
            if rng.random_bool(0.5) {
                let (name, odd) = images.odd(rng);
                *bytes = odd.to_vec();
                format!("body = {name}")
            } else {
                mutate_bytes(bytes, rng)
            }
        }
    };
    d.notes.push(note);
}

/// JSON pointers of the nodes of `v` (long arrays: their first, second and last element).
fn pointers(v: &Value, at: String, key: Option<&str>, depth: usize, out: &mut Vec<(String, Option<String>)>) {
    out.push((at.clone(), key.map(String::from)));
    if depth > 12 {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                pointers(x, format!("{at}/{escaped}"), Some(k), depth + 1, out);
            }
        }
        Value::Array(items) => {
            let n = items.len();
            let picked: Vec<usize> = if n <= 4 { (0..n).collect() } else { vec![0, 1, n - 1] };
            for i in picked {
                pointers(&items[i], format!("{at}/{i}"), None, depth + 1, out);
            }
        }
        _ => {}
    }
}

const KEYS: &[&str] = &[
    "shape",
    "datatype",
    "binary_data_size",
    "top_k",
    "classification",
    "images",
    "image",
    "data",
    "name",
    "inputs",
    "outputs",
    "parameters",
    "id",
    "binary_data",
    "binary_data_output",
];

fn interesting(rng: &mut StdRng) -> Value {
    let all = [
        json!(0),
        json!(-1),
        json!(1),
        json!(28),
        json!(784),
        json!(65536),
        json!(1_000_000_000),
        json!(1u64 << 31),
        json!(1u64 << 32),
        json!(1u64 << 53),
        json!(1u64 << 62),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(-0.0),
        json!(1e300),
        json!(""),
        json!("1"),
        json!("abc"),
        Value::Null,
        json!(true),
        json!([]),
        json!({}),
        json!([[[]]]),
        json!("AAAA"),
    ];
    all.choose(rng).cloned().unwrap_or(Value::Null)
}

fn interesting_int(rng: &mut StdRng) -> Value {
    let all = [
        json!(0),
        json!(-1),
        json!(1),
        json!(2),
        json!(3),
        json!(1_000_000_000),
        json!(1u64 << 32),
        json!(1u64 << 62),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(1e20),
        json!("1"),
        Value::Null,
    ];
    all.choose(rng).cloned().unwrap_or(Value::Null)
}

fn shape_value(cur: &Value, rng: &mut StdRng) -> Value {
    if let Some(items) = cur.as_array().filter(|a| !a.is_empty())
        && rng.random_bool(0.4)
    {
        let mut items = items.clone();
        let i = rng.random_range(0..items.len());
        items[i] = interesting_int(rng);
        return Value::Array(items);
    }
    let big = 1u64 << 62;
    let all = [
        json!([1_000_000_000, 1, 28, 28]),
        json!([big, 1, 28, 28]),
        json!([i64::MAX, 1, 28, 28]),
        json!([i64::MIN, 1, 28, 28]),
        json!([u64::MAX, 1, 28, 28]),
        json!([4_294_967_296u64, 1, 28, 28]),
        json!([65536, 1, 28, 28]),
        json!([1_000_000_000, 28, 28, 1]),
        json!([big, 28, 28, 1]),
        json!([i64::MAX, 28, 28, 1]),
        json!([1_000_000_000]),
        json!([big]),
        json!([i64::MAX]),
        json!([1_000_000_000, 1]),
        json!([2, 1, 28, 28]),
        json!([0, 1, 28, 28]),
        json!([-1, 1, 28, 28]),
        json!([1, 1, 28, 28, 1]),
        json!([1, 784]),
        json!([1, 1, 28]),
        json!([1, 1, 1u64 << 31, 1u64 << 31]),
        json!([1, big, 28, 28]),
        json!([1, 28, 28, 3]),
        json!([]),
        json!([0]),
        json!([1]),
        json!([3, 1]),
        json!([1.5, 1, 28, 28]),
        json!(["1", 1, 28, 28]),
        json!(null),
        json!(4),
    ];
    all.choose(rng).cloned().unwrap_or(Value::Null)
}

fn image_b64(rng: &mut StdRng, images: &Images) -> (String, String) {
    match rng.random_range(0..8) {
        0 => ("\"\"".into(), String::new()),
        1 => ("data URL, empty".into(), "data:image/png;base64,".into()),
        2 => ("not base64".into(), "@@@not base64".into()),
        3 => ("padding only".into(), "====".into()),
        4 => {
            let (i, png) = images.png(rng);
            (
                format!("sample {i} as a data URL"),
                format!("data:image/png;base64,{}", b64(png)),
            )
        }
        _ => {
            let (name, bytes) = images.odd(rng);
            (name.into(), b64(bytes))
        }
    }
}

/// A value for a known key.
fn keyed_value(key: &str, cur: &Value, rng: &mut StdRng, images: &Images) -> Value {
    match key {
        "shape" => shape_value(cur, rng),
        "datatype" => {
            let all = ["FP32", "UINT8", "BYTES", "INT64", "FP16", "BOOL", "fp32", "", "FP64"];
            if rng.random_bool(0.85) {
                json!(all.choose(rng).copied().unwrap_or("FP32"))
            } else {
                interesting(rng)
            }
        }
        "binary_data_size" => {
            let n = cur.as_u64().unwrap_or(0);
            let all = [
                json!(n.saturating_add(1)),
                json!(n.saturating_sub(1)),
                json!(0),
                json!(1),
                json!(n.saturating_mul(2)),
                json!(1u64 << 32),
                json!(1u64 << 62),
                json!(i64::MAX),
                json!(u64::MAX),
                json!(-1),
                json!(1.5),
                json!(1e20),
                json!(n.to_string()),
                Value::Null,
            ];
            all.choose(rng).cloned().unwrap_or(Value::Null)
        }
        "top_k" | "classification" => {
            let all = [
                json!(0),
                json!(-1),
                json!(1),
                json!(10),
                json!(11),
                json!(1_000_000_000),
                json!(1u64 << 32),
                json!(i64::MAX),
                json!(u64::MAX),
                json!(1e20),
                json!(2.5),
                json!("3"),
                Value::Null,
                json!([3]),
            ];
            all.choose(rng).cloned().unwrap_or(Value::Null)
        }
        "images" => match rng.random_range(0..8) {
            0 => json!([]),
            1 => json!([1, 2]),
            2 => json!("not an array"),
            3 => Value::Null,
            4 => {
                let copies = *[2usize, 16, 40].choose(rng).unwrap_or(&2);
                let (_, png) = images.png(rng);
                json!(vec![b64(png); copies])
            }
            _ => {
                let mut items = cur.as_array().cloned().unwrap_or_default();
                let (_, text) = image_b64(rng, images);
                let at = rng.random_range(0..=items.len());
                items.insert(at, json!(text));
                Value::Array(items)
            }
        },
        "image" => json!(image_b64(rng, images).1),
        "data" => data_value(cur, rng, images),
        "name" => [
            json!(""),
            json!("pixels"),
            json!("logits"),
            json!(123),
            Value::Null,
            json!("INPUT"),
        ]
        .choose(rng)
        .cloned()
        .unwrap_or(Value::Null),
        "inputs" => {
            let mut two = cur.as_array().cloned().unwrap_or_default();
            if let Some(first) = two.first().cloned() {
                two.push(first);
            }
            [
                json!([]),
                json!(two),
                json!({}),
                Value::Null,
                json!([{}]),
                json!("input"),
            ]
            .choose(rng)
            .cloned()
            .unwrap_or(Value::Null)
        }
        "outputs" => {
            let k = interesting_int(rng);
            [
                json!([{"name": "logits", "parameters": {"classification": k}}]),
                json!([{"name": "probs"}]),
                json!([{"name": "logits", "parameters": {"binary_data": "yes"}}]),
                json!([{"name": "logits"}, {"name": "logits", "parameters": {"classification": 3}}]),
                json!([{}]),
                json!({}),
                Value::Null,
            ]
            .choose(rng)
            .cloned()
            .unwrap_or(Value::Null)
        }
        "parameters" => [
            json!({"binary_data_output": 1}),
            json!({"binary_data_size": u64::MAX}),
            json!({"binary_data_size": -1}),
            json!([]),
            Value::Null,
            json!({"classification": 3}),
        ]
        .choose(rng)
        .cloned()
        .unwrap_or(Value::Null),
        "id" => [json!(123), json!("x".repeat(10_000)), Value::Null, json!({"a": 1})]
            .choose(rng)
            .cloned()
            .unwrap_or(Value::Null),
        _ => [json!("yes"), json!(1), Value::Null, json!(true), json!(false)]
            .choose(rng)
            .cloned()
            .unwrap_or(Value::Null),
    }
}

fn data_value(cur: &Value, rng: &mut StdRng, images: &Images) -> Value {
    let mut flat = Vec::new();
    fn walk(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
            leaf => out.push(leaf.clone()),
        }
    }
    walk(cur, &mut flat);
    match rng.random_range(0..14) {
        0 => json!(["a"]),
        1 => Value::Null,
        2 => json!([]),
        3 => json!([[]]),
        4 => json!("AAAA"),
        5 => json!({}),
        6 => json!(vec![3.5e38f64 * 10.0; flat.len().max(1)]),
        7 => {
            flat.truncate(flat.len() / 2);
            Value::Array(flat)
        }
        8 => {
            let again = flat.clone();
            flat.extend(again);
            Value::Array(flat)
        }
        9 => {
            let depth = *[3usize, 64, 200].choose(rng).unwrap_or(&3);
            let mut v = cur.clone();
            for _ in 0..depth {
                v = json!([v]);
            }
            v
        }
        10 => {
            let at = rng.random_range(0..flat.len().max(1));
            let bad = [
                json!(-1),
                json!(256),
                json!(1.5),
                json!(u64::MAX),
                json!("7"),
                Value::Null,
                json!(1e39),
            ]
            .choose(rng)
            .cloned()
            .unwrap_or(Value::Null);
            if at < flat.len() {
                flat[at] = bad;
            } else {
                flat.push(bad);
            }
            Value::Array(flat)
        }
        11 => json!([image_b64(rng, images).1]),
        12 => Value::Array(flat),
        _ => {
            // The same values as an object per element.
            Value::Array(flat.into_iter().take(8).map(|x| json!({ "v": x })).collect())
        }
    }
}

/// An edit of a JSON value: a known key's value, or a generic edit of a random node.
fn mutate_json(v: &mut Value, rng: &mut StdRng, images: &Images) -> String {
    let mut nodes = Vec::new();
    pointers(v, String::new(), None, 0, &mut nodes);
    let keyed: Vec<&(String, Option<String>)> = nodes
        .iter()
        .filter(|(_, k)| k.as_deref().is_some_and(|k| KEYS.contains(&k)))
        .collect();
    if !keyed.is_empty() && rng.random_bool(0.65) {
        let (at, key) = keyed.choose(rng).copied().cloned().expect("a keyed node");
        let key = key.unwrap_or_default();
        let cur = v.pointer(&at).cloned().unwrap_or(Value::Null);
        let new = keyed_value(&key, &cur, rng, images);
        let note = format!("{at} = {}", short(&new));
        if let Some(slot) = v.pointer_mut(&at) {
            *slot = new;
        }
        return note;
    }
    let (at, _) = nodes.choose(rng).cloned().unwrap_or_default();
    match rng.random_range(0..5) {
        0 => {
            let new = interesting(rng);
            let note = format!("{at} = {}", short(&new));
            if let Some(slot) = v.pointer_mut(&at) {
                *slot = new;
            }
            note
        }
        1 => {
            // Remove the node from its parent.
            let Some((parent, last)) = at.rsplit_once('/') else {
                *v = Value::Null;
                return "body = null".into();
            };
            let key = last.replace("~1", "/").replace("~0", "~");
            match v.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.remove(&key);
                }
                Some(Value::Array(items)) => {
                    if let Ok(i) = key.parse::<usize>()
                        && i < items.len()
                    {
                        items.remove(i);
                    }
                }
                _ => {}
            }
            format!("remove {at}")
        }
        2 => {
            // Duplicate the node within its parent array, or repeat an array's items.
            let parent = at.rsplit_once('/').map(|(p, _)| p.to_string());
            let times = *[1usize, 3, 7].choose(rng).unwrap_or(&1);
            match parent.as_deref().and_then(|p| v.pointer_mut(p)) {
                Some(Value::Array(items)) if !items.is_empty() => {
                    let i = rng.random_range(0..items.len());
                    for _ in 0..times {
                        let copy = items[i].clone();
                        items.insert(i, copy);
                    }
                    format!("{times} more copies of an element of {}", parent.unwrap_or_default())
                }
                _ => {
                    let mut map = v.as_object().cloned().unwrap_or_default();
                    map.insert("inputs_2".into(), map.get("inputs").cloned().unwrap_or(Value::Null));
                    *v = Value::Object(map);
                    "add inputs_2".into()
                }
            }
        }
        3 => {
            let depth = *[1usize, 2, 5, 130].choose(rng).unwrap_or(&1);
            if let Some(slot) = v.pointer_mut(&at) {
                let mut x = slot.take();
                for _ in 0..depth {
                    x = json!([x]);
                }
                *slot = x;
            }
            format!("wrap {at} in {depth} arrays")
        }
        _ => {
            // An unknown field in an object.
            let value = interesting(rng);
            let shown = short(&value);
            match v.pointer_mut(&at) {
                Some(Value::Object(map)) => {
                    map.insert("x_fuzz".into(), value);
                    format!("{at}/x_fuzz = {shown}")
                }
                _ => {
                    if let Value::Object(map) = v {
                        map.insert("x_fuzz".into(), value);
                    }
                    format!("/x_fuzz = {shown}")
                }
            }
        }
    }
}

/// Text-level JSON edits that a `Value` cannot hold: a duplicated key, an out-of-range number.
fn text_json(d: &mut Draft, rng: &mut StdRng) {
    let (value, data) = match &d.body {
        Body::Json(v) => (v.clone(), None),
        Body::Binary { header, data } => (header.clone(), Some(data.clone())),
        _ => {
            let note = mutate_bytes(d.freeze(), rng);
            d.notes.push(note);
            return;
        }
    };
    let (text, note) = if rng.random_bool(0.6) {
        let mut objects = 0;
        count_objects(&value, &mut objects);
        let target = rng.random_range(0..objects.max(1));
        let key_pick = rng.random_range(0..16);
        let alt = if rng.random_bool(0.5) {
            None
        } else {
            Some(interesting(rng))
        };
        let mut out = String::new();
        write_dup(&value, target, key_pick, alt.as_ref(), &mut 0, &mut out);
        (
            out,
            format!(
                "duplicate a key of object {target} ({})",
                alt.map_or_else(|| "same value".to_string(), |a| short(&a))
            ),
        )
    } else {
        let mut text = value.to_string();
        let numbers = number_spans(text.as_bytes());
        let literal = *NUMBERS.choose(rng).expect("numbers");
        match numbers.choose(rng) {
            Some(&(a, b)) => {
                let note = format!("number {:?} at {a} -> {literal}", &text[a..b]);
                text.replace_range(a..b, literal);
                (text, note)
            }
            None => (text, "no number to replace".into()),
        }
    };
    let mut bytes = text.into_bytes();
    if let Some(data) = data {
        if matches!(d.header_length, HeaderLength::Auto) {
            d.header_length = HeaderLength::Value(bytes.len().to_string());
        }
        bytes.extend_from_slice(&data);
    }
    d.body = Body::Raw(bytes);
    d.notes.push(note);
}

const NUMBERS: &[&str] = &[
    "99999999999999999999",
    "184467440737095516160",
    "-9223372036854775809",
    "1e400",
    "-1e400",
    "1E+9999",
    "-0",
    "0.0000000000000000000000001",
    "4294967296",
    "NaN",
    "Infinity",
    "0x10",
    "01",
];

/// Byte spans of number literals in JSON text (outside strings, roughly).
fn number_spans(text: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let (mut i, mut in_string) = (0, false);
    while i < text.len() && spans.len() < 5000 {
        let c = text[i];
        if in_string {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            i += 1;
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < text.len() && (text[i].is_ascii_digit() || b"-+.eE".contains(&text[i])) {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

fn count_objects(v: &Value, n: &mut usize) {
    match v {
        Value::Object(map) => {
            *n += 1;
            map.values().for_each(|x| count_objects(x, n));
        }
        Value::Array(items) => items.iter().for_each(|x| count_objects(x, n)),
        _ => {}
    }
}

/// Writes `v` as JSON text, with object number `target` (in writing order) holding one of
/// its keys twice: the second time with `alt`, or the same value.
fn write_dup(v: &Value, target: usize, key_pick: usize, alt: Option<&Value>, counter: &mut usize, out: &mut String) {
    match v {
        Value::Object(map) => {
            let me = *counter;
            *counter += 1;
            out.push('{');
            let mut first = true;
            let mut member = |k: &str, x: &Value, out: &mut String, counter: &mut usize| {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&Value::String(k.into()).to_string());
                out.push(':');
                write_dup(x, target, key_pick, alt, counter, out);
            };
            for (k, x) in map {
                member(k, x, out, counter);
            }
            if me == target
                && let Some((k, x)) = nth_entry(map, key_pick)
            {
                // Objects inside the copy are numbered apart, so none is the target again.
                let mut apart = usize::MAX / 2;
                member(k, alt.unwrap_or(x), out, &mut apart);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_dup(x, target, key_pick, alt, counter, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

fn nth_entry(map: &Map<String, Value>, pick: usize) -> Option<(&String, &Value)> {
    if map.is_empty() {
        return None;
    }
    map.iter().nth(pick % map.len())
}

/// Edits of a binary part: truncated, extended, an element's length prefix made huge.
fn mutate_binary_data(data: &mut Vec<u8>, rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => {
            let n = rng.random_range(0..=data.len());
            data.truncate(n);
            format!("binary data truncated to {n} bytes")
        }
        1 => {
            let n = rng.random_range(1..=64);
            data.extend((0..n).map(|_| rng.random::<u8>()));
            format!("{n} random bytes appended to the binary data")
        }
        2 => {
            let value = *[u32::MAX, 0x8000_0000, 0, 1].choose(rng).unwrap_or(&u32::MAX);
            if data.len() >= 4 {
                data[..4].copy_from_slice(&value.to_le_bytes());
            }
            format!("first 4 binary bytes = {value} (LE)")
        }
        3 => {
            let len = u32::from_le_bytes([
                *data.first().unwrap_or(&0),
                *data.get(1).unwrap_or(&0),
                *data.get(2).unwrap_or(&0),
                *data.get(3).unwrap_or(&0),
            ]);
            let value = len.wrapping_add(1);
            if data.len() >= 4 {
                data[..4].copy_from_slice(&value.to_le_bytes());
            }
            format!("first 4 binary bytes + 1 = {value}")
        }
        4 => {
            data.clear();
            "binary data emptied".into()
        }
        _ => {
            // NaN and infinities in FP32 data (or in whatever the bytes are).
            let v = *[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX]
                .choose(rng)
                .unwrap_or(&f32::NAN);
            for chunk in data.chunks_exact_mut(4).step_by(7) {
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            format!("every 7th f32 of the binary data = {v}")
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"\0",
    b"\xff\xfe",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"99999999999999999999",
    b"-1",
    b"1e400",
    b"null",
    b"\r\n",
    b"--fuzz-boundary-19x\r\n",
    b"--fuzz-boundary-19x--\r\n",
    b"\\u0000",
    b"\\ud800",
    b"\xc3\x28",
    b"data:image/png;base64,",
];

/// A random byte-level edit of `b`.
fn mutate_bytes(b: &mut Vec<u8>, rng: &mut StdRng) -> String {
    let len = b.len();
    let pos = |rng: &mut StdRng| rng.random_range(0..=len);
    match rng.random_range(0..10) {
        0 | 1 if len > 0 => {
            let flips = rng.random_range(1..=8);
            for _ in 0..flips {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            format!("{flips} bit flips")
        }
        2 => {
            let n = rng.random_range(0..=len);
            b.truncate(n);
            format!("truncated to {n} of {len} bytes")
        }
        3 => {
            let at = pos(rng);
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random::<u8>()).collect();
            b.splice(at..at, bytes);
            format!("{n} random bytes inserted at {at}")
        }
        4 => {
            let at = pos(rng);
            let token = *TOKENS.choose(rng).expect("tokens");
            b.splice(at..at, token.iter().copied());
            format!("{:?} inserted at {at}", String::from_utf8_lossy(token))
        }
        5 if len > 0 => {
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=4096)).min(len);
            let copy = b[start..end].to_vec();
            let times = rng.random_range(1..=4);
            let at = pos(rng);
            for _ in 0..times {
                b.splice(at..at, copy.iter().copied());
            }
            format!("bytes {start}..{end} copied {times} times to {at}")
        }
        6 if len > 0 => {
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=256)).min(len);
            b.drain(start..end);
            format!("bytes {start}..{end} removed")
        }
        7 if len > 0 => {
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=64)).min(len);
            let fill = *[0u8, 0xff, b'A', b'9'].choose(rng).unwrap_or(&0);
            b[start..end].fill(fill);
            format!("bytes {start}..{end} set to {fill:#04x}")
        }
        8 => {
            b.clear();
            "body emptied".into()
        }
        _ => {
            let spans = number_spans(b);
            let literal = NUMBERS.choose(rng).expect("numbers").as_bytes();
            match spans.choose(rng) {
                Some(&(s, e)) => {
                    b.splice(s..e, literal.iter().copied());
                    format!("number at {s} -> {}", String::from_utf8_lossy(literal))
                }
                None => {
                    let at = pos(rng);
                    b.splice(at..at, literal.iter().copied());
                    format!("{} inserted at {at}", String::from_utf8_lossy(literal))
                }
            }
        }
    }
}

fn mutate_form(parts: &mut Vec<Part>, rng: &mut StdRng, images: &Images) -> String {
    match rng.random_range(0..7) {
        0 => {
            let all = [
                "-1",
                "abc",
                "99999999999999999999",
                "0",
                "",
                "1e3",
                "3",
                "11",
                "\0",
                " 2 ",
            ];
            let value = *all.choose(rng).unwrap_or(&"-1");
            parts.retain(|p| p.name.as_deref() != Some("top_k"));
            parts.push(Part {
                name: Some("top_k".into()),
                file: None,
                data: value.as_bytes().to_vec(),
            });
            format!("form top_k = {value:?}")
        }
        1 => {
            let at = rng.random_range(0..=parts.len());
            parts.insert(
                at,
                Part {
                    name: Some("image".into()),
                    file: Some("empty.png".into()),
                    data: Vec::new(),
                },
            );
            format!("empty file part at {at}")
        }
        2 => {
            parts.retain(|p| p.file.is_none());
            "every file part removed".into()
        }
        3 if !parts.is_empty() => {
            let i = rng.random_range(0..parts.len());
            let (name, bytes) = images.odd(rng);
            parts[i].data = bytes.to_vec();
            format!("part {i} = {name}")
        }
        4 if !parts.is_empty() => {
            let copies = *[2usize, 10, 40].choose(rng).unwrap_or(&2);
            let first = parts[0].clone();
            for _ in 0..copies {
                parts.push(first.clone());
            }
            format!("{copies} more copies of part 0")
        }
        5 if !parts.is_empty() => {
            let i = rng.random_range(0..parts.len());
            match rng.random_range(0..3) {
                0 => {
                    parts[i].name = None;
                    parts[i].file = None;
                    format!("part {i} without a name or file name")
                }
                1 => {
                    parts[i].file = None;
                    format!("part {i} as a text field")
                }
                _ => {
                    parts[i].file = Some("x".repeat(4000));
                    format!("part {i} with a 4000-character file name")
                }
            }
        }
        _ => {
            parts.clear();
            "no parts".into()
        }
    }
}

/// `Inference-Header-Content-Length` larger or smaller than the JSON, not a number, or gone.
fn header_length(d: &mut Draft, rng: &mut StdRng) {
    let (body, json_len) = d.body_bytes();
    let json_len = match &d.header_length {
        HeaderLength::Value(v) => v.parse().unwrap_or(body.len()),
        _ => json_len.unwrap_or(body.len()),
    };
    let total = body.len();
    let all = [
        Some(json_len.saturating_add(1).to_string()),
        Some(json_len.saturating_sub(1).to_string()),
        Some("0".into()),
        Some(total.to_string()),
        Some((total + 1).to_string()),
        Some((total * 2 + 7).to_string()),
        Some(u64::MAX.to_string()),
        Some("18446744073709551616".into()),
        Some("99999999999999999999999".into()),
        Some(i64::MAX.to_string()),
        Some("-1".into()),
        Some("abc".into()),
        Some("".into()),
        Some(" 12 ".into()),
        Some("0x10".into()),
        Some("1e3".into()),
        None,
    ];
    let pick = all.choose(rng).cloned().unwrap_or(None);
    d.notes.push(format!(
        "Inference-Header-Content-Length {pick:?} (JSON {json_len}, body {total})"
    ));
    d.header_length = match pick {
        Some(v) => HeaderLength::Value(v),
        None => HeaderLength::Absent,
    };
}

/// Another model, version or endpoint in the path.
fn path(d: &mut Draft, rng: &mut StdRng) {
    let models = [
        "nope",
        "fmnist%00",
        "fmnist%ff",
        "..",
        "%2e%2e",
        "FMNIST",
        "fmnist%20",
        "%C3%A9",
    ];
    let versions = [
        "1",
        "2",
        "3",
        "0",
        "abc",
        "-1",
        "99999999999999999999",
        "18446744073709551615",
        "%ff",
        "1.0",
    ];
    let (prefix, endpoint) = if d.classify {
        ("/v1/models", "classify")
    } else {
        ("/v2/models", "infer")
    };
    let long = "a".repeat(300);
    let (model, version, endpoint) = match rng.random_range(0..4) {
        0 => (*models.choose(rng).unwrap_or(&"nope"), None, endpoint),
        1 => (MODEL, versions.choose(rng).copied(), endpoint),
        2 => (long.as_str(), None, endpoint),
        _ => {
            // The other endpoint of the same API family's body.
            let other = if d.classify { "/v2/models" } else { "/v1/models" };
            let endpoint = if d.classify { "infer" } else { "classify" };
            d.path = format!("{other}/{MODEL}/{endpoint}");
            d.notes.push(format!("path {}", d.path));
            return;
        }
    };
    d.path = match version {
        Some(v) => format!("{prefix}/{model}/versions/{v}/{endpoint}"),
        None => format!("{prefix}/{model}/{endpoint}"),
    };
    d.notes.push(format!("path {}", d.path));
}
