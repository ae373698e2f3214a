//! Label-free robustness monitoring (`hardy serve --monitor-rate`), end to end: the real
//! binary on loopback, the shipped Fashion-MNIST model, the committed sample photos, and the
//! flip counts read back from `/metrics`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::serve::{Server, add_model, b64, samples};

/// The perturbation labels the monitor exports.
const PERTURBATIONS: [&str; 3] = ["gaussian_noise", "brightness", "translate"];

/// The sum of the samples of metric `name` whose label sets contain every one of `labels`
/// (`model="fmnist"`, ...), or `None` when it has no such sample.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        if labels.iter().all(|l| line.contains(l)) {
            let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The name, nice value and scheduling policy of each thread of process `pid`.
fn threads(pid: u32) -> Vec<(String, i64, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, nice 19, policy 41.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let field = |n: usize| after.split_whitespace().nth(n - 3).unwrap_or_default().to_string();
        let nice = field(19).parse().unwrap_or(0);
        let policy = field(41).parse().unwrap_or(0);
        out.push((name.trim().to_string(), nice, policy));
    }
    out
}

#[test]
fn sampled_live_images_are_reclassified_under_every_perturbation() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 1, None);
    let server = Server::start(repo.path(), &["--monitor-rate", "1"]);
    let samples = samples();
    assert!(samples.len() >= 8, "the committed samples");

    // Every sample through /classify, then three of them as one /infer request of
    // encoded images (BYTES): each image is a live image to monitor.
    for (file, _) in &samples {
        let png = std::fs::read(file).expect("sample");
        let r = server.post("/v1/models/fmnist/classify", &[("Content-Type", "image/png")], &png);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let data: Vec<String> = samples[..3]
        .iter()
        .map(|(p, _)| b64(&std::fs::read(p).expect("sample")))
        .collect();
    let r = server.post_json(
        "/v2/models/fmnist/infer",
        &json!({"inputs": [{"name": "input", "shape": [3], "datatype": "BYTES", "data": data}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Raw pixels (UINT8) are not images the monitor can perturb: not sampled.
    let r = server.post_json(
        "/v2/models/fmnist/infer",
        &json!({"inputs": [{"name": "input", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": vec![0u8; 784]}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let live = (samples.len() + 3) as f64;

    // The monitor runs behind the requests at the lowest priority: wait for it.
    let mv = ["model=\"fmnist\"", "version=\"1\""];
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = server.get("/metrics").text();
        let done = metric(&text, "hardy_monitor_images_total", &mv).unwrap_or(0.0)
            + metric(&text, "hardy_monitor_dropped_total", &mv).unwrap_or(0.0);
        if done >= live {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor handled {done} of {live} images in 60 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The queue holds 64 images, so none of these was dropped; every one was re-classified.
    assert_eq!(metric(&text, "hardy_monitor_images_total", &mv), Some(live), "{text}");
    assert_eq!(metric(&text, "hardy_monitor_dropped_total", &mv), None, "{text}");
    for p in PERTURBATIONS {
        let labels = [mv[0], mv[1], &format!("perturbation=\"{p}\"")];
        let trials = metric(&text, "hardy_monitor_trials_total", &labels);
        let flips = metric(&text, "hardy_monitor_flips_total", &labels).unwrap_or(f64::NAN);
        let probability = metric(&text, "hardy_monitor_flip_probability", &labels).unwrap_or(f64::NAN);
        assert_eq!(trials, Some(live), "{p}: {text}");
        assert!((0.0..=live).contains(&flips), "{p}: {flips} flips");
        assert!(
            (0.0..=1.0).contains(&probability),
            "{p}: flip probability {probability}"
        );
        assert!(
            (probability - flips / live).abs() < 1e-9,
            "{p}: {probability} != {flips} / {live}"
        );
    }
    // The monitor has its own session: the serving counters saw only the live images (the
    // UINT8 one included), not the monitor's 4 per image.
    assert_eq!(
        metric(&text, "hardy_inference_images_total", &mv),
        Some(live + 1.0),
        "{text}"
    );
    // Its thread runs at nice 19 under SCHED_IDLE (policy 5), and so does anything it
    // started (under its name); the live threads do not.
    let threads = threads(server.pid());
    let monitor: Vec<_> = threads.iter().filter(|(name, ..)| name == "monitor").collect();
    assert_eq!(monitor.len(), 1, "{threads:?}");
    assert_eq!((monitor[0].1, monitor[0].2), (19, 5), "{threads:?}");
    assert!(
        threads
            .iter()
            .any(|(name, nice, policy)| name != "monitor" && (*nice, *policy) == (0, 0)),
        "{threads:?}"
    );
}

#[test]
fn monitoring_is_off_by_default() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 1, None);
    let server = Server::start(repo.path(), &[]);
    for (file, _) in samples().iter().take(4) {
        let png = std::fs::read(file).expect("sample");
        let r = server.post("/v1/models/fmnist/classify", &[("Content-Type", "image/png")], &png);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Give a monitor, were there one, time to report.
    std::thread::sleep(Duration::from_millis(500));
    let text = server.get("/metrics").text();
    assert_eq!(
        metric(&text, "hardy_inference_images_total", &["model=\"fmnist\""]),
        Some(4.0),
        "{text}"
    );
    for name in [
        "hardy_monitor_images_total",
        "hardy_monitor_dropped_total",
        "hardy_monitor_trials_total",
        "hardy_monitor_flips_total",
        "hardy_monitor_flip_probability",
    ] {
        assert_eq!(metric(&text, name, &[]), None, "{name} has samples:\n{text}");
    }
    let threads = threads(server.pid());
    assert!(threads.iter().all(|(name, ..)| name != "monitor"), "{threads:?}");
    assert!(!threads.is_empty(), "the server's threads are readable");
}
