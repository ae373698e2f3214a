//! `hardy serve` against hostile clients: one test per class of fault, each tried as an
//! attacker would, over real HTTP on loopback. The server must answer every one of them with
//! a JSON error and keep serving the others.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::serve::{Server, add_model, b64, binary_request, headers_of, request, samples};

/// Sends `bytes` on a new connection and reads the whole answer: its status and body.
/// `None` when the server closed the connection without answering.
fn raw(addr: &str, bytes: &[u8], timeout: Duration) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    stream.write_all(bytes).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => answer[at + 4..].to_vec(),
        None => Vec::new(),
    };
    Some((status, body))
}

fn png(i: usize) -> Vec<u8> {
    let all = samples();
    std::fs::read(&all[i % all.len()].0).expect("read sample")
}

/// An OIP binary request of encoded images (`BYTES [N]`).
fn bytes_request(images: &[Vec<u8>]) -> (Vec<(String, String)>, Vec<u8>) {
    let mut raw = Vec::new();
    for image in images {
        raw.extend((image.len() as u32).to_le_bytes());
        raw.extend(image);
    }
    let header = json!({
        "inputs": [{"name": "input", "shape": [images.len()], "datatype": "BYTES",
                    "parameters": {"binary_data_size": raw.len()}}]
    });
    binary_request(&header, &raw)
}

#[test]
fn declared_shapes_must_match_the_data_sent() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 2, None);
    let server = Server::start(repo.path(), &[]);
    let infer = "/v2/models/fmnist/infer";
    let fp32 = |shape: Value, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]});
    // A billion images declared, one value sent: this aborted the server on allocation.
    server
        .post_json(infer, &fp32(json!([1_000_000_000, 1, 28, 28]), json!([0.0])))
        .assert_error(400, &["1 values", "784000000000"]);
    // Products that overflow 64 bits (they wrapped around in a release build).
    for n in [1i64 << 62, i64::MAX, 23_529_411_764_705_883] {
        let r = server.post_json(infer, &fp32(json!([n, 1, 28, 28]), json!([0.0])));
        r.assert_error(400, &["FP32"]);
    }
    let r = server.post_json(infer, &fp32(json!([-1, 1, 28, 28]), json!([0.0])));
    r.assert_error(400, &["[-1, 1, 28, 28]"]);
    // The same lies in binary: the byte count must match the shape exactly.
    for (shape, bytes) in [
        (json!([1_000_000_000, 1, 28, 28]), 16usize),
        (json!([2, 1, 28, 28]), 3136),
    ] {
        let header = json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                         "parameters": {"binary_data_size": bytes}}]});
        let (h, body) = binary_request(&header, &vec![0u8; bytes]);
        server
            .post(infer, &headers_of(&h), &body)
            .assert_error(400, &[&format!("{bytes} bytes"), "shape needs"]);
    }
    let header = json!({"inputs": [{"name": "input", "shape": [1_000_000_000, 28, 28, 1], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 784}}]});
    let (h, body) = binary_request(&header, &[0u8; 784]);
    server
        .post(infer, &headers_of(&h), &body)
        .assert_error(400, &["784 bytes"]);
    // BYTES: a billion elements declared, one sent (JSON and binary).
    let one = png(0);
    server
        .post_json(
            infer,
            &json!({"inputs": [{"name": "input", "shape": [1_000_000_000], "datatype": "BYTES", "data": [b64(&one)]}]}),
        )
        .assert_error(400, &["1 elements", "1000000000"]);
    let (h, mut body) = bytes_request(std::slice::from_ref(&one));
    let at = body.windows(3).position(|w| w == b"[1]").expect("shape in header");
    body.splice(at..at + 3, *b"[9]");
    server
        .post(infer, &headers_of(&h), &body)
        .assert_error(400, &["1 elements", "9"]);
    // Non-finite inputs are refused; huge finite ones never give "NaN" labels.
    let mut inf = vec![0f32; 784];
    inf[5] = f32::INFINITY;
    let wire: Vec<u8> = inf.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": wire.len()}}]});
    let (h, body) = binary_request(&header, &wire);
    server
        .post(infer, &headers_of(&h), &body)
        .assert_error(400, &["value 5", "finite"]);
    let huge: Vec<u8> = (0..784)
        .flat_map(|i| if i % 2 == 0 { 3e38f32 } else { -3e38 }.to_le_bytes())
        .collect();
    let header = json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": huge.len()}}],
                        "outputs": [{"name": "logits", "parameters": {"classification": 3}}]});
    let (h, body) = binary_request(&header, &huge);
    let r = server.post(infer, &headers_of(&h), &body);
    assert!(
        r.status == 200 || r.status == 400,
        "huge inputs: {} {}",
        r.status,
        r.text()
    );
    assert!(!r.text().to_lowercase().contains("nan:"), "a NaN label: {}", r.text());
    // Still serving.
    let r = server.post("/v1/models/fmnist/classify", &[("Content-Type", "image/png")], &one);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn admission_counts_images_and_bytes_and_big_requests_take_turns() {
    let repo = tempfile::tempdir().expect("tempdir");
    // "held": a request waits 3 s for company, and 8 images may be admitted in all.
    add_model(
        repo.path(),
        "held",
        1,
        2,
        Some("[batching]\nmax_batch_size = 64\nmax_queue_delay_us = 3000000\nmax_queue_images = 8\n"),
    );
    // "small": batches of one image, so a big request takes many session runs.
    add_model(
        repo.path(),
        "small",
        1,
        2,
        Some("[batching]\nmax_batch_size = 1\nmax_queue_delay_us = 500\nmax_queue_images = 8000\n"),
    );
    let server = Server::start(repo.path(), &[]);
    let infer = |model: &str| format!("/v2/models/{model}/infer");

    // More than half of the budget in one request: 413, naming the limit.
    let five: Vec<Vec<u8>> = (0..5).map(png).collect();
    let (h, body) = bytes_request(&five);
    server
        .post(&infer("held"), &headers_of(&h), &body)
        .assert_error(413, &["5 images", "at most 4 images"]);

    // Two requests of 4 fill the budget; a third, of one image, is 503 at once.
    let four: Vec<Vec<u8>> = (0..4).map(png).collect();
    std::thread::scope(|s| {
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let (h, body) = bytes_request(&four);
                let url = format!("{}{}", server.base, infer("held"));
                s.spawn(move || request("POST", &url, &headers_of(&h), &body))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        let (h, body) = bytes_request(&five[..1]);
        let refused = server.post(&infer("held"), &headers_of(&h), &body);
        refused.assert_error(503, &["queue", "8 images"]);
        assert_eq!(refused.header("Retry-After"), Some("1"));
        assert_eq!(server.metric("hardy_queue_depth_images{model=\"held\""), 8.0);
        for w in waiting {
            let r = w.join().expect("client");
            assert_eq!(r.status, 200, "{}", r.text());
        }
    });
    assert_eq!(server.metric("hardy_queue_depth_images{model=\"held\""), 0.0);

    // A request of 4,000 images and one of a single image sent after it: the small one is
    // answered first, its images taking turns with the big one's in preprocessing and in
    // the batcher.
    let big: Vec<Vec<u8>> = (0..4000).map(png).collect();
    let (h, body) = bytes_request(&big);
    let url = format!("{}{}", server.base, infer("small"));
    let (big_done, small_done, small_took) = std::thread::scope(|s| {
        let t0 = Instant::now();
        let (url, h, body) = (&url, &h, &body);
        let big = s.spawn(move || {
            let r = request("POST", url, &headers_of(h), body);
            assert_eq!(r.status, 200, "{}", r.text());
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        let t1 = Instant::now();
        let r = server.post("/v1/models/small/classify", &[("Content-Type", "image/png")], &png(1));
        assert_eq!(r.status, 200, "{}", r.text());
        let small = t0.elapsed();
        (big.join().expect("big client"), small, t1.elapsed())
    });
    println!("4,000-image request answered after {big_done:?}; 1-image request sent at 0.1 s took {small_took:?}");
    assert!(
        small_done < big_done,
        "the small request ({small_done:?}) waited for the big one ({big_done:?})"
    );
}

/// Polls `done` every 20 ms for up to 20 s; panics with `what` when it never holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn requests_beyond_the_tickets_wait_unread_and_slow_bodies_give_theirs_back() {
    let repo = tempfile::tempdir().expect("tempdir");
    // One image per run and one instance: 2 tickets. A request waits at most 0.5 s.
    add_model(
        repo.path(),
        "one",
        1,
        2,
        Some("[batching]\nmax_batch_size = 1\nqueue_timeout_us = 500000\n"),
    );
    let server = Server::start(repo.path(), &["--preprocess-threads", "1", "--body-timeout", "20"]);
    let metric = |name: &str| server.metric(&format!("{name}{{model=\"one\""));
    let infer = format!("{}/v2/models/one/infer", server.base);

    // Two requests of 150 heavy images (seconds of decoding on one thread) hold both
    // tickets; a third request waits for one, unread, and gives up at its queue timeout.
    let image = heavy_png(2048);
    let heavy: Vec<Vec<u8>> = (0..150).map(|_| image.clone()).collect();
    let (h, body) = bytes_request(&heavy);
    std::thread::scope(|s| {
        let big: Vec<_> = (0..2)
            .map(|_| {
                let (infer, h, body) = (&infer, &h, &body);
                s.spawn(move || request("POST", infer, &headers_of(h), body))
            })
            .collect();
        wait_until("both heavy requests admitted", || {
            metric("hardy_queue_depth_requests") == 2.0
        });
        let t0 = Instant::now();
        let small = s.spawn(|| server.post("/v1/models/one/classify", &[("Content-Type", "image/png")], &png(0)));
        wait_until("the small request waiting for a ticket", || {
            metric("hardy_queue_waiting_requests") == 1.0
        });
        let small = small.join().expect("small client");
        let waited = t0.elapsed();
        println!(
            "a request behind two that hold both tickets: {} after {waited:?}",
            small.status
        );
        small.assert_error(503, &["queue timeout"]);
        assert!(waited >= Duration::from_millis(500), "answered after {waited:?}");
        assert_eq!(metric("hardy_queue_waiting_requests"), 0.0);
        assert_eq!(
            server.metric("hardy_queue_withdrawn_total{model=\"one\",reason=\"timeout\""),
            1.0
        );
        for b in big {
            let r = b.join().expect("heavy client");
            assert_eq!(r.status, 200, "{}", r.text());
        }
    });

    // Three bodies that stop half-way hold the tickets only for the read grace: a normal
    // request is answered long before their body timeout (20 s).
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        s.write_all(b"POST /v1/models/one/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nab")
            .expect("write");
        stalled.push(s);
    }
    wait_until("the stalled bodies counted", || {
        server.metric("hardy_inflight_body_bytes") >= 2000.0
    });
    let t1 = Instant::now();
    let r = server.post("/v1/models/one/classify", &[("Content-Type", "image/png")], &png(1));
    let took = t1.elapsed();
    println!(
        "a request behind 3 stalled bodies (2 tickets): {} after {took:?}",
        r.status
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took < Duration::from_secs(5), "waited {took:?} behind stalled bodies");
    drop(stalled);
}

/// A grey PNG of `side` x `side` pixels, all zero: a few kilobytes that take milliseconds
/// to decode and resize.
fn heavy_png(side: u32) -> Vec<u8> {
    let img = image::GrayImage::new(side, side);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encode");
    out.into_inner()
}

#[test]
fn a_client_that_hangs_up_stops_its_preprocessing() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(
        repo.path(),
        "slow",
        1,
        2,
        Some("[batching]\nqueue_capacity = 2\nmax_queue_images = 1000\n"),
    );
    add_model(repo.path(), "other", 1, 2, None);
    let server = Server::start(repo.path(), &["--preprocess-threads", "2"]);
    let heavy = heavy_png(2048);
    let images: Vec<Vec<u8>> = (0..200).map(|_| heavy.clone()).collect();
    let (h, body) = bytes_request(&images);
    let mut head = format!(
        "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in &h {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // Twenty clients each send 200 images (seconds of decoding) and hang up at once.
    let t0 = Instant::now();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(server.addr()).expect("connect");
        stream.write_all(head.as_bytes()).expect("head");
        stream.write_all(&body).expect("body");
        std::thread::sleep(Duration::from_millis(50));
        let _ = stream.shutdown(Shutdown::Both);
    }
    // A request to another model is not held behind their work.
    let r = server.post("/v1/models/other/classify", &[("Content-Type", "image/png")], &png(0));
    let took = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    println!("20 hung-up requests of 200 heavy images, then a small request: answered after {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "the small request waited {took:?}: hung-up work went on"
    );
    // Each was withdrawn (or refused while the queue was full), none ran.
    let t1 = Instant::now();
    let count = |outcome: &str| {
        server.metric(&format!(
            "hardy_requests_total{{endpoint=\"infer\",model=\"slow\",outcome=\"{outcome}\""
        ))
    };
    while count("client_gone") + count("queue_full") < 20.0 {
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "{} client_gone",
            count("client_gone")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "hung-up requests: {} withdrawn, {} refused while the queue was full",
        count("client_gone"),
        count("queue_full")
    );
    assert_eq!(server.metric("hardy_inference_images_total{model=\"slow\""), 0.0);
    // A withdrawn request keeps its place until its last running image is done.
    while server.metric("hardy_queue_depth_requests{model=\"slow\"") > 0.0 {
        assert!(t1.elapsed() < Duration::from_secs(30), "places still taken");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sockets the process has open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn slow_bodies_time_out_and_connections_are_capped() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 2, None);
    let server = Server::start(
        repo.path(),
        &["--body-timeout", "1", "--max-connections", "40", "--http-workers", "1"],
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().skip(3).take(2).collect())
        .unwrap_or_default();
    assert_eq!(
        files.first(),
        files.get(1),
        "soft limit not raised to the hard one: {files:?}"
    );

    // A body that never finishes: 408 with a JSON body after the deadline.
    let t0 = Instant::now();
    let (status, body) = raw(
        &server.addr(),
        b"POST /v1/models/fmnist/classify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n0123456789",
        Duration::from_secs(10),
    )
    .expect("an answer");
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).expect("JSON body");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("did not arrive")));
    assert!(t0.elapsed() < Duration::from_secs(5), "408 after {:?}", t0.elapsed());

    // 100 connections that send half a body and wait: the server holds at most 40, each
    // one descriptor, and answers normal clients once the slow ones time out.
    let before = sockets(server.pid());
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(server.addr()).expect("connect");
        let _ = s.write_all(b"POST /v1/models/fmnist/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\nab");
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let held = sockets(server.pid());
    println!("sockets: {before} before, {held} with 100 slow clients (cap 40)");
    assert!(held <= before + 40, "{held} sockets open (cap 40, {before} before)");
    let t1 = Instant::now();
    let r = server.post("/v1/models/fmnist/classify", &[("Content-Type", "image/png")], &png(0));
    assert_eq!(r.status, 200, "{}", r.text());
    println!(
        "a normal request behind 100 slow bodies answered after {:?}",
        t1.elapsed()
    );
    drop(slow);
}

#[test]
fn health_answers_while_large_json_bodies_are_parsed() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 2, None);
    let server = Server::start(repo.path(), &["--http-workers", "2"]);
    // 1,000 images as JSON numbers: about 9 MB of text per request (three at once stay
    // within the default budget of 4,096 images).
    let values: Vec<String> = (0..1000 * 784).map(|i| format!("0.{:08}", i % 99_991)).collect();
    let body = format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1000, 1, 28, 28], "datatype": "FP32", "data": [{}]}}]}}"#,
        values.join(",")
    )
    .into_bytes();
    println!("JSON body: {} bytes", body.len());
    let url = format!("{}/v2/models/fmnist/infer", server.base);
    let (worst, probes) = std::thread::scope(|s| {
        let uploads: Vec<_> = (0..3)
            .map(|_| {
                let (url, body) = (&url, &body);
                s.spawn(move || {
                    for _ in 0..2 {
                        let r = request("POST", url, &[("Content-Type", "application/json")], body);
                        assert_eq!(r.status, 200, "{}", r.text());
                    }
                })
            })
            .collect();
        let mut worst = Duration::ZERO;
        let mut probes = 0;
        while uploads.iter().any(|u| !u.is_finished()) {
            let t = Instant::now();
            assert_eq!(server.get("/v2/health/live").status, 200);
            worst = worst.max(t.elapsed());
            probes += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        for u in uploads {
            u.join().expect("upload");
        }
        (worst, probes)
    });
    println!(
        "liveness during 6 uploads of {} MB of JSON: {probes} probes, slowest {worst:?}",
        body.len() >> 20
    );
    assert!(probes >= 5, "uploads too quick to probe ({probes})");
    assert!(worst < Duration::from_millis(1000), "a liveness probe took {worst:?}");
}

#[test]
fn repository_faults_version_names_symlinks_readiness_and_loading() {
    let repo = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "a", 1, 1, None);
    add_model(repo.path(), "a", 7, 2, None);
    // "07" would count as version 7, but loading reads "7/".
    std::fs::rename(repo.path().join("a/7"), repo.path().join("a/07")).expect("rename");
    add_model(outside.path(), "evil", 1, 2, None);
    std::os::unix::fs::symlink(outside.path().join("evil"), repo.path().join("evil")).expect("symlink");
    let server = Server::start(repo.path(), &["--admin-token", "t0ken"]);
    let auth = [("Authorization", "Bearer t0ken")];

    assert_eq!(server.get("/v2/models/a").json()["versions"], json!(["1"]));
    server.get("/v2/models/evil").assert_error(404, &["evil"]);
    server
        .post("/v2/repository/models/evil/load", &auth, b"")
        .assert_error(400, &["outside the model repository"]);
    // A version directory linked from outside is refused too.
    add_model(outside.path(), "b", 1, 2, None);
    std::fs::create_dir(repo.path().join("b")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path().join("b/1"), repo.path().join("b/1")).expect("symlink");
    server
        .post("/v2/repository/models/b/load", &auth, b"")
        .assert_error(400, &["outside the model repository"]);
    // Loading a model that does not exist fails, and the server stays ready.
    server
        .post("/v2/repository/models/ghost/load", &auth, b"")
        .assert_error(400, &["ghost"]);
    assert_eq!(server.get("/v2/health/ready").status, 200);
    assert_eq!(server.get("/v2/models/a/ready").status, 200);
}

#[test]
fn models_still_loading_answer_503_not_404() {
    let repo = tempfile::tempdir().expect("tempdir");
    for i in 0..8 {
        add_model(repo.path(), &format!("m{i}"), 1, 2, None);
    }
    // Loaded in name order, each warmed up on four sessions: "m7" comes last.
    let server = Server::spawn(repo.path(), &["--instances", "4"], Stdio::inherit());
    let r = server.get("/v2/models/m7/ready");
    r.assert_error(503, &["still loading"]);
    assert_eq!(r.header("Retry-After"), Some("1"));
    let infer = server.post_json(
        "/v2/models/m7/infer",
        &json!({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [b64(&png(0))]}]}),
    );
    assert!(infer.status == 503 || infer.status == 200, "{}", infer.text());
    let t0 = Instant::now();
    while server.get("/v2/health/ready").status != 200 {
        assert!(t0.elapsed() < Duration::from_secs(60), "not ready in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get("/v2/models/m7/ready").status, 200);
    server.get("/v2/models/nope/ready").assert_error(404, &["nope"]);
}

#[test]
fn every_error_is_json_and_malformed_requests_do_not_flood_the_log() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 2, None);
    let log_dir = tempfile::tempdir().expect("tempdir");
    let log_path = log_dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let server = Server::start_logging(repo.path(), &["--admin-token", "secret"], Stdio::from(log));
    let classify = "/v1/models/fmnist/classify";
    let one = png(0);
    for query in ["top_k=-1", "top_k=abc", "top_k=99999999999999999999999"] {
        server
            .post(&format!("{classify}?{query}"), &[("Content-Type", "image/png")], &one)
            .assert_error(400, &["query string"]);
    }
    server.get(classify).assert_error(405, &["GET"]);
    server.get("/v2/models/fmnist/infer").assert_error(405, &["GET"]);
    let lines_before = std::fs::read_to_string(&log_path).unwrap_or_default().lines().count();
    // 300 malformed requests: garbage HTTP, bad JSON, bad images, wrong tokens.
    for i in 0..100 {
        let _ = raw(
            &server.addr(),
            format!("GARBAGE {i} \u{1}\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        );
        server
            .post(
                "/v2/models/fmnist/infer",
                &[("Content-Type", "application/json")],
                b"{nope",
            )
            .assert_error(400, &["JSON"]);
        server
            .post("/v2/repository/index", &[("Authorization", "Bearer wrong")], b"")
            .assert_error(401, &["token"]);
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let added = log.lines().count() - lines_before;
    println!("log lines added by 300 malformed requests: {added}");
    assert!(added < 10, "{added} log lines for 300 malformed requests:\n{log}");
    assert_eq!(server.get("/v2/health/live").status, 200);
}
