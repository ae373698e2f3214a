//! Hardy's Docker images, built and run for real.
//!
//! `docker/build.sh` starts a Docker engine (installing Debian's docker.io and debootstrap when
//! missing), makes the Debian base with debootstrap and builds the images offline, once per
//! test process, around this test build's own `hardy` (built with the default `cuda` feature,
//! like the release binary the shipped images hold; a release build here would add minutes
//! and test nothing more of the runtime stage). The containers then run as a user would run
//! them, with a read-only root file system, a tmpfs on /tmp and a volume for the data directory, on the
//! host network (these machines have no bridge): the image's own HEALTHCHECK must turn healthy,
//! the README's curl line and the unmodified tritonclient must work against it, a SIGTERM must
//! let the requests in flight finish, and the CUDA image must start without a GPU, on CPU.

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Output},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::serve::{Reply, add_model, request, sample_folder, samples};
use super::tritonclient::run_checks;
use crate::common::root;

/// Debian's client, which matches Debian's dockerd (and its built-in BuildKit).
const DOCKER: &str = "/usr/bin/docker";

fn docker(args: &[&str]) -> Output {
    Command::new(DOCKER)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {DOCKER} {args:?}: {e} (docker/engine.sh installs it)"))
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds `hardy-test:FLAVOR` with docker/build.sh, once per process and flavour.
fn image(flavor: &'static str) -> String {
    static CPU: OnceLock<String> = OnceLock::new();
    static CUDA: OnceLock<String> = OnceLock::new();
    let cell = if flavor == "cpu" { &CPU } else { &CUDA };
    cell.get_or_init(|| {
        // One build at a time: both share the engine start, the base image and the caches.
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let t0 = Instant::now();
        let out = Command::new(root().join("docker/build.sh"))
            .arg(flavor)
            .env("HARDY_IMAGE", "hardy-test")
            .env("HARDY_BIN", env!("CARGO_BIN_EXE_hardy"))
            .output()
            .expect("run docker/build.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "docker/build.sh {flavor} failed:\n{stderr}");
        eprintln!("{stderr}docker/build.sh {flavor}: {:.0} s", t0.elapsed().as_secs_f64());
        format!("hardy-test:{flavor}")
    })
    .clone()
}

/// An image's size in bytes, printed in MB.
fn image_size(image: &str) -> u64 {
    let size: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", image])
        .parse()
        .expect("image size");
    println!("{image}: {} MB", size / 1_000_000);
    size
}

/// A free loopback port (the containers share the host's network).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A running container, removed (with its volume) on drop.
struct Container {
    name: String,
    volume: String,
    base: String,
}

impl Container {
    /// `docker run` of `image` as a user would: read-only root, tmpfs /tmp, a named volume on
    /// the data directory, host network on a free port; `extra` goes before the image.
    fn run(image: &str, tag: &str, extra: &[&str]) -> Self {
        let name = format!("hardy-test-{tag}-{}", std::process::id());
        let volume = format!("{name}-data");
        let port = free_port();
        let _ = docker(&["rm", "-f", &name]);
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--network".into(),
            "host".into(),
            "--read-only".into(),
            "--tmpfs".into(),
            "/tmp".into(),
            "-v".into(),
            format!("{volume}:/var/lib/hardy"),
            "-e".into(),
            format!("HARDY_PORT={port}"),
            // tests run containers side by side on the host's network
            "-e".into(),
            "HARDY_GRPC_PORT=0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(image.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args);
        Self {
            name,
            volume,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    fn logs(&self) -> String {
        let out = docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits for the image's own HEALTHCHECK to report healthy.
    fn wait_healthy(&self, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let health = self.inspect("{{.State.Health.Status}}");
            if health == "healthy" {
                return;
            }
            let running = self.inspect("{{.State.Running}}");
            assert!(
                running == "true" && t0.elapsed() < limit,
                "container {} not healthy after {:?} (health {health}, running {running}); logs:\n{}",
                self.name,
                t0.elapsed(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn get(&self, path: &str) -> Reply {
        request("GET", &format!("{}{path}", self.base), &[], b"")
    }

    /// `POST /v1/models/{model}/classify` of one PNG.
    fn classify(&self, model: &str, png: &[u8]) -> Reply {
        let url = format!("{}/v1/models/{model}/classify", self.base);
        request("POST", &url, &[("Content-Type", "image/png")], png)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
        let _ = docker(&["volume", "rm", "-f", &self.volume]);
    }
}

#[test]
fn cpu_image_serves_the_readme_and_tritonclient_with_a_read_only_root() {
    let image = image("cpu");
    let size = image_size(&image);
    assert!(
        size <= 200_000_000,
        "the CPU image is {size} bytes, over the 200 MB goal"
    );
    assert_eq!(
        docker_ok(&["image", "inspect", "-f", "{{.Config.User}}", &image]),
        "10001:10001"
    );

    let c = Container::run(&image, "cpu", &["-e", "HARDY_ADMIN_TOKEN=docker-token"]);
    c.wait_healthy(Duration::from_secs(90));
    assert_eq!(c.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");

    // NVIDIA's unmodified Triton client (first: it counts the images the server has run).
    run_checks(
        c.base.trim_start_matches("http://"),
        "fashion-mnist-effnet",
        "docker-token",
        &root().join("models/fashion-mnist-effnet"),
    );

    // The README's curl line, against the container.
    let png = std::fs::read(root().join("samples/fashion-mnist/test00000-ankle-boot.png")).expect("sample");
    let reply = c.classify("fashion-mnist-effnet", &png);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let top = &reply.json()["results"][0]["predictions"][0];
    assert_eq!(top["label"], "Ankle boot", "{}", reply.text());

    // The shipped models, all ready; downloads off inside the image.
    let index = c.get("/v2/health/ready");
    assert_eq!(index.status, 200);
    for model in [
        "fashion-mnist-effnet",
        "fashion-mnist-linear",
        "fashion-mnist-resnet-meal",
    ] {
        assert_eq!(c.get(&format!("/v2/models/{model}/ready")).status, 200, "{model}");
    }
    let env = c.inspect("{{json .Config.Env}}");
    assert!(env.contains("HARDY_OFFLINE=1"), "{env}");

    // Nothing could be written outside the volume and /tmp: the root is read-only.
    let write = docker(&["exec", &c.name, "/bin/sh", "-c", "echo x > /opt/hardy/x"]);
    assert!(!write.status.success(), "wrote into the image's root");
    let write = docker(&["exec", &c.name, "/bin/sh", "-c", "echo x > /var/lib/hardy/x"]);
    assert!(
        write.status.success(),
        "the data volume is not writable by the image's user"
    );
}

#[test]
fn cpu_image_answers_requests_in_flight_on_sigterm() {
    let image = image("cpu");
    // A model repository mounted over the baked one, with a model whose batching window is
    // 1.5 s, so that requests are still queued when the stop signal arrives.
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(
        repo.path(),
        "slow",
        1,
        2,
        Some("[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 1500000\n"),
    );
    open_to_all(repo.path());
    let mount = format!("{}:/opt/hardy/models:ro", repo.path().display());
    let c = Container::run(&image, "drain", &["-v", &mount]);
    c.wait_healthy(Duration::from_secs(90));
    let png = std::fs::read(&samples()[0].0).expect("read");
    let url = format!("{}/v1/models/slow/classify", c.base);
    let (replies, stop) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3)
            .map(|_| s.spawn(|| request("POST", &url, &[("Content-Type", "image/png")], &png)))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // `docker stop` sends the image's STOPSIGNAL (SIGTERM), then waits up to 20 s.
        let t0 = Instant::now();
        let stop = docker(&["stop", "-t", "20", &c.name]);
        let took = t0.elapsed();
        assert!(
            stop.status.success(),
            "docker stop: {}",
            String::from_utf8_lossy(&stop.stderr)
        );
        let replies: Vec<Reply> = clients.into_iter().map(|c| c.join().expect("client")).collect();
        (replies, took)
    });
    for r in &replies {
        assert_eq!(r.status, 200, "a request in flight was not answered: {}", r.text());
    }
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "logs:\n{}", c.logs());
    assert!(
        stop < Duration::from_secs(15),
        "stopping took {stop:?}: SIGTERM was not handled"
    );
}

#[test]
fn cuda_image_starts_without_a_gpu_and_falls_back_to_cpu() {
    let image = image("cuda");
    image_size(&image);
    // 2.6 GB, and a container of it as much again (vfs storage): removed when the test ends.
    let _remove = RemoveImage(image.clone());
    let c = Container::run(&image, "cuda", &[]);
    c.wait_healthy(Duration::from_secs(120));
    let meta: Value = c.get("/v2/models/fashion-mnist-effnet").json();
    let logs = c.logs();
    let gpu = Path::new("/dev/nvidiactl").exists();
    if gpu {
        println!("a GPU is present: the CUDA image's metadata says {meta}");
    } else {
        // As documented: the CUDA provider cannot start, the server says so and runs on CPU.
        assert!(
            logs.contains("falling back to CPU") || logs.contains("fall back to CPU"),
            "no CPU fallback reported; logs:\n{logs}"
        );
        assert!(logs.contains("device=cpu"), "logs:\n{logs}");
    }
    let png = std::fs::read(&samples()[0].0).expect("read");
    let reply = c.classify("fashion-mnist-effnet", &png);
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Removes an image on drop.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

/// Lets the image's user (10001) read a host directory mounted into the container.
fn open_to_all(dir: &Path) {
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .expect("chmod");
    assert!(status.success());
}

/// Debian's Prometheus, installed with apt-get when missing, on a loopback port; killed on drop.
struct Prometheus {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second with docker/prometheus/prometheus.yml's job (the compose
    /// file's config, its target and interval swapped for the test's).
    fn start(target: &str) -> Self {
        debian_package("/usr/bin/prometheus", "prometheus");
        let shipped = root().join("docker/prometheus/prometheus.yml");
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&shipped)
            .output()
            .expect("promtool");
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        let text = std::fs::read_to_string(&shipped).expect("prometheus.yml");
        assert!(text.contains("hardy:8000") && text.contains("scrape_interval: 15s"));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            text.replace("hardy:8000", target)
                .replace("scrape_interval: 15s", "scrape_interval: 1s"),
        )
        .expect("write config");
        let port = free_port();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// An instant PromQL query's result vector (panics on a query error).
    fn query(&self, expr: &str) -> Vec<Value> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut response = agent
            .get(format!("{}/api/v1/query", self.base))
            .query("query", expr)
            .call()
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        let text = response.body_mut().read_to_string().expect("prometheus reply");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{expr}: {e}: {text}"));
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs Debian's `package` with apt-get when `binary` is missing.
fn debian_package(binary: &str, package: &str) {
    if Path::new(binary).exists() {
        return;
    }
    let install = || {
        Command::new("apt-get")
            // Tests install packages side by side: wait for another install's dpkg lock.
            .args([
                "-o",
                "DPkg::Lock::Timeout=900",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                package,
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap_or_else(|e| panic!("run apt-get for {package}: {e}"))
            .success()
    };
    if !install() {
        let _ = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=900", "update", "-q"])
            .status();
        assert!(
            install(),
            "apt-get install {package} failed (run as root, or install it)"
        );
    }
}

/// The compose file is valid for Debian's docker-compose, and mounts the files the test
/// checks (the Prometheus config, Grafana's provisioning and dashboard).
#[test]
fn compose_file_is_valid_and_mounts_the_checked_files() {
    debian_package("/usr/bin/docker-compose", "docker-compose");
    let out = Command::new("docker-compose")
        .args(["-f"])
        .arg(root().join("docker/compose.yaml"))
        .args(["config"])
        .output()
        .expect("docker-compose");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for mounted in [
        "docker/prometheus/prometheus.yml",
        "docker/grafana/provisioning",
        "docker/grafana/dashboards",
    ] {
        assert!(
            text.contains(&root().join(mounted).display().to_string()),
            "{mounted} not mounted:\n{text}"
        );
    }
    for service in ["hardy:", "prometheus:", "grafana:"] {
        assert!(text.contains(service), "{service} missing:\n{text}");
    }
}

/// The samples as an ImageFolder in a temp dir, mounted read-only at /data (the set is
/// /data/set), readable by the image's user: the temp dir and the `-v` argument.
fn sample_data_mount() -> (tempfile::TempDir, String) {
    let data = tempfile::tempdir().expect("tempdir");
    sample_folder(&data.path().join("set"), samples().len());
    open_to_all(data.path());
    let mount = format!("{}:/data:ro", data.path().display());
    (data, mount)
}

#[test]
fn prometheus_scrapes_the_container_and_every_dashboard_query_has_data() {
    let image = image("cpu");
    let (_data, mount) = sample_data_mount();
    let c = Container::run(
        &image,
        "prom",
        &[
            "-v",
            &mount,
            "-e",
            "HARDY_ADMIN_TOKEN=docker-token",
            "-e",
            "HARDY_JOBS_DIR=/var/lib/hardy/jobs",
            "-e",
            "HARDY_DATA_ROOT=/data",
        ],
    );
    c.wait_healthy(Duration::from_secs(90));
    let prometheus = Prometheus::start(c.base.trim_start_matches("http://"));

    // Load: good requests to two models, some bad ones, and one evaluation job.
    let png = std::fs::read(&samples()[0].0).expect("read");
    for i in 0..40 {
        let model = ["fashion-mnist-effnet", "fashion-mnist-resnet-meal"][i % 2];
        assert_eq!(c.classify(model, &png).status, 200);
        if i % 10 == 0 {
            let bad = c.classify(model, b"not a png");
            assert_eq!(bad.status, 400, "{}", bad.text());
        }
    }
    let auth = ("Authorization", "Bearer docker-token");
    let job = request(
        "POST",
        &format!("{}/v1/evaluations", c.base),
        &[auth, ("Content-Type", "application/json")],
        br#"{"model": "fashion-mnist-effnet", "suites": ["clean"], "data": "set"}"#,
    );
    assert_eq!(job.status, 202, "{}", job.text());
    let id = job.json()["id"].as_str().expect("job id").to_string();
    let t0 = Instant::now();
    loop {
        let status = request("GET", &format!("{}/v1/evaluations/{id}", c.base), &[auth], b"").json();
        if status["state"] == "succeeded" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60) && status["state"] != "failed",
            "evaluation job: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Wait until Prometheus has scraped the counters after the load (several 1 s scrapes).
    let t0 = Instant::now();
    loop {
        let up = prometheus.query(r#"up{job="hardy"}"#);
        let scraped = prometheus.query(r#"count_over_time(hardy_eval_images_total[1m])"#);
        let samples_seen = scraped.first().and_then(|r| r["value"][1].as_str()).unwrap_or("0");
        if up.first().and_then(|r| r["value"][1].as_str()) == Some("1")
            && samples_seen.parse::<f64>().unwrap_or(0.0) >= 3.0
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "Prometheus did not scrape the container: {up:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every query of every panel of the provisioned dashboard, with Grafana's variables set
    // as the dashboard's defaults would (all models) over a short range.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docker/grafana/dashboards/hardy.json")).expect("dashboard"),
    )
    .expect("dashboard json");
    let variable = prometheus.query("count by (model) (hardy_model_ready)");
    assert_eq!(variable.len(), 3, "the $model variable's values: {variable:?}");
    let gpu = Path::new("/dev/nvidiactl").exists();
    let mut broken = Vec::new();
    println!("{:<40} {:>7}  query", "panel", "results");
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let promql = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$model", ".*");
            let results = prometheus.query(&promql).len();
            println!("{title:<40} {results:>7}  {expr}");
            // Only a GPU can feed the GPU panels; without one they must be the only empty ones.
            let gpu_only = expr.contains("hardy_gpu_");
            if (results == 0) != (gpu_only && !gpu) {
                broken.push(format!("{title}: {results} results for {promql}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dashboard queries without data (or GPU data without a GPU):\n{}",
        broken.join("\n")
    );
}

#[test]
fn indexed_job_shards_merge_to_the_single_run() {
    let image = image("cpu");
    let (_data, mount) = sample_data_mount();
    let volume = format!("hardy-test-indexed-{}", std::process::id());
    let shared = format!("{volume}:/var/lib/hardy");
    let eval = |name: &str, env: &[&str], out: &str| {
        let mut args: Vec<String> = ["run", "--rm", "--name", name, "--network", "none", "--read-only"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(
            ["--tmpfs", "/tmp", "-v", &shared, "-v", &mount]
                .iter()
                .map(|s| s.to_string()),
        );
        for e in env {
            args.extend(["-e".to_string(), e.to_string()]);
        }
        args.push(image.clone());
        args.extend(
            [
                "eval",
                "--model",
                "/opt/hardy/models/fashion-mnist-effnet",
                "--suite",
                "clean,c",
                "--corruptions",
                "gaussian_noise,contrast",
                "--severities",
                "1,3",
                "--data",
                "/data/set",
                "--quiet",
                "--out",
                out,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args)
    };
    let name = |i: &str| format!("hardy-test-index-{i}-{}", std::process::id());
    // Three indexes as Kubernetes starts them (the index and the count in the environment),
    // index 1 twice, as a retried pod would run.
    for i in ["0", "1", "2", "1"] {
        eval(
            &name(i),
            &[&format!("JOB_COMPLETION_INDEX={i}"), "HARDY_SHARDS=3"],
            "/var/lib/hardy/eval",
        );
    }
    let merge = [
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "-v",
        &shared,
        "--entrypoint",
        "/bin/sh",
        &image,
        "-c",
        "exec /opt/hardy/hardy eval merge --out /var/lib/hardy/merged /var/lib/hardy/eval/shard-*",
    ];
    docker_ok(&merge);
    eval(&name("single"), &[], "/var/lib/hardy/single");
    let read = |path: &str| -> Value {
        let text = docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &shared,
            "--entrypoint",
            "/bin/cat",
            &image,
            path,
        ]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"))
    };
    let mut merged = read("/var/lib/hardy/merged/result.json");
    let mut single = read("/var/lib/hardy/single/result.json");
    let _ = docker(&["volume", "rm", "-f", &volume]);
    assert_eq!(merged["clean"]["images"], 10, "{merged}");
    // The one field that says how the counts were made; everything else must be equal.
    assert_eq!(merged["shard"], "merged:3", "{merged}");
    assert_eq!(single["shard"], "0/1", "{single}");
    for r in [&mut merged, &mut single] {
        r.as_object_mut().expect("result object").remove("shard");
    }
    let mut differences = Vec::new();
    json_differences("", &merged, &single, &mut differences);
    assert!(
        differences.is_empty(),
        "the merged shards differ from the single run at:\n{}",
        differences.join("\n")
    );
    println!("Indexed Job: 3 shards (index 1 run twice) merged == single run: {single}");
}

/// The JSON paths where `a` and `b` differ, with both values.
fn json_differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                json_differences(&format!("{path}/{k}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                json_differences(&format!("{path}/{i}"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} against {b}")),
        _ => {}
    }
}
