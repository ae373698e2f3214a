//! The web console at `/`: its HTTP answers (types, caching, the Content-Security-Policy,
//! the public model list), and the page itself in a real headless browser.
//!
//! The browser is Debian's chromium with chromium-driver, installed by
//! `scripts/install-chromium.sh` (quick when already there), driven through PyPI's selenium
//! (`pip install --target` into Hardy's cache on first use) by `console_check.py`, which
//! acts like a user and records what the page showed. This file compares that with the
//! API's own answers for the same inputs. When the browser cannot be installed or driven,
//! the test fails: it never skips.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

use super::serve::{Reply, Server, add_model, request};
use crate::common::{pip_package, root};

const SELENIUM: &str = "selenium==4.38.0";
const TOKEN: &str = "console-test-token";
const MODEL: &str = "fmnist";
const SAMPLE: &str = "samples/fashion-mnist/test00013-dress.png";
const CORRUPTION: &str = "gaussian_noise";
const SEVERITY: &str = "3";
const EPS: &str = "8";

/// Selenium and its dependencies, installed on first use.
fn selenium() -> PathBuf {
    pip_package("selenium-4.38.0", SELENIUM)
}

/// Installs chromium and chromium-driver when missing, or fails the test loudly.
fn install_chromium() {
    let script = root().join("scripts/install-chromium.sh");
    let status = Command::new("sh")
        .arg(&script)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "{} failed: the console test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        script.display()
    );
}

fn get_with(server: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    request("GET", &format!("{}{path}", server.base), headers, &[])
}

/// The predictions of an API answer, as `(index, label, score)`.
fn predictions(v: &Value) -> Vec<(u64, String, f64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["index"].as_u64().unwrap_or(u64::MAX),
                        p["label"].as_str().unwrap_or_default().to_string(),
                        p["score"].as_f64().unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the page showed the API's predictions: same classes in the same order, same
/// scores (to float noise between two runs of the same image).
fn same_predictions(page: &Value, api: &Value) -> Result<(), String> {
    let (page, api) = (predictions(page), predictions(api));
    let same = !api.is_empty()
        && page.len() == api.len()
        && page
            .iter()
            .zip(&api)
            .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && (a.2 - b.2).abs() < 1e-5);
    if same {
        Ok(())
    } else {
        Err(format!("the page showed {page:?}, the API answers {api:?}"))
    }
}

#[test]
fn console_page_and_assets_are_served_with_strict_headers() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), MODEL, 1, 1, None);
    add_model(repo.path(), MODEL, 2, 2, None);
    let server = Server::start(repo.path(), &["--versions", "all"]);

    let page = server.get("/");
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let csp = page.header("content-security-policy").unwrap_or_default().to_string();
    for needle in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(needle), "{needle:?} not in the CSP {csp:?}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = page.text();
    assert!(html.contains("<title>Hardy console</title>"), "{html}");

    // Every asset the page names is served with its type; the browser revalidates by ETag.
    for (path, kind) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
        ("/console/names.json", "application/json"),
    ] {
        let name = path.trim_start_matches("/console/");
        if name != "names.json" {
            assert!(html.contains(path), "the page does not load {path}");
        }
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(kind), "{path}");
        assert!(r.header("content-security-policy").is_some(), "{path}");
        let tag = r.header("etag").expect("an ETag").to_string();
        let again = get_with(&server, path, &[("If-None-Match", &tag)]);
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        let stale = get_with(&server, path, &[("If-None-Match", "\"0000\"")]);
        assert_eq!((stale.status, stale.body.len()), (200, r.body.len()), "{path}");
    }
    let names = server.get("/console/names.json").json();
    assert_eq!(names["corruptions"].as_array().map(Vec::len), Some(19), "{names}");
    assert!(
        names["data_sets"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s == "fashion-mnist:test")),
        "{names}"
    );

    // Anything else stays a JSON 404 (no file is read from disk, so no path escapes).
    for path in [
        "/console/nope.js",
        "/console/..%2FCargo.toml",
        "/console/",
        "/index.html",
        "/nope",
    ] {
        server.get(path).assert_error(404, &["no route"]);
    }
    server.post("/", &[], b"").assert_error(405, &["POST"]);

    // The public model list: every loaded model with its versions.
    let r = server.get("/v1/models");
    assert_eq!(r.status, 200, "{}", r.text());
    let models = r.json();
    let list = models["models"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{models}");
    assert_eq!(list[0]["name"], MODEL);
    assert_eq!(list[0]["versions"], serde_json::json!(["1", "2"]), "{models}");
    assert_eq!(list[0]["device"], "cpu");
    let classes = server.get(&format!("/v2/models/{MODEL}")).json()["outputs"][0]["shape"][1].clone();
    assert_eq!(list[0]["classes"], classes, "{models}");
    assert_eq!(
        (list[0]["input_width"].as_u64(), list[0]["input_height"].as_u64()),
        (Some(28), Some(28))
    );
}

#[test]
fn console_classifies_corrupts_attacks_and_runs_a_job_in_a_real_browser() {
    install_chromium();
    let site = selenium();
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), MODEL, 1, 2, None);
    let jobs = tempfile::tempdir().expect("tempdir");
    let jobs_dir = jobs.path().to_string_lossy().into_owned();
    let server = Server::start(repo.path(), &["--admin-token", TOKEN, "--jobs-dir", &jobs_dir]);
    let image = root().join(SAMPLE);
    let png = std::fs::read(&image).expect("sample");
    let out = tempfile::tempdir().expect("tempdir");
    let report_path = out.path().join("console.json");

    let t0 = std::time::Instant::now();
    let run = Command::new("python3")
        .arg(root().join("tests/integration/console_check.py"))
        .arg(&server.base)
        .args([MODEL, TOKEN])
        .arg(&image)
        .args([CORRUPTION, SEVERITY, EPS])
        .arg(&report_path)
        .env("PYTHONPATH", &site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SE_OFFLINE", "true") // selenium must not look for drivers online: ours are Debian's
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("browser run: {:.1} s\n{stdout}", t0.elapsed().as_secs_f64());
    let text = std::fs::read_to_string(&report_path)
        .unwrap_or_else(|e| panic!("console_check.py wrote no report ({e}):\n{stdout}\n{stderr}"));
    let page: Value = serde_json::from_str(&text).expect("the report is JSON");
    assert!(
        run.status.success() && page.get("fatal").is_none(),
        "the browser could not be driven: {}\n{stderr}",
        page["fatal"]
    );

    // Each step is checked against the API; all are checked before failing, and the
    // summary says which passed.
    let mut passed: Vec<&str> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut check = |name: &'static str, result: Result<(), String>| match result {
        Ok(()) => passed.push(name),
        Err(e) => failed.push(format!("{name}: {e}")),
    };
    let step = |name: &str| -> Result<Value, String> {
        let s = &page["steps"][name];
        match s["ok"].as_bool() {
            Some(true) => Ok(s["value"].clone()),
            _ => Err(format!("{}\n{}", s["error"], s["trace"].as_str().unwrap_or_default())),
        }
    };
    let card = |name: &str| -> Result<Value, String> {
        let c = step(name)?;
        match c["state"].as_str() {
            Some("done") => Ok(c),
            _ => Err(format!("the card shows {:?}: {}", c["state"], c["error"])),
        }
    };

    check(
        "page lists the models",
        step("open").and_then(|v| {
            (v["models"] == serde_json::json!([MODEL]) && v["corruptions"].as_u64() == Some(19))
                .then_some(())
                .ok_or(format!("{v}"))
        }),
    );

    check("image picked in the page", step("try_image").map(|_| ()));

    let classified = server.post(
        &format!("/v1/models/{MODEL}/classify?top_k=5"),
        &[("Content-Type", "image/png")],
        &png,
    );
    assert_eq!(classified.status, 200, "{}", classified.text());
    check(
        "original: the page's top-5 are /classify's",
        card("card_original")
            .and_then(|c| same_predictions(&c["predictions"], &classified.json()["results"][0]["predictions"])),
    );

    check(
        "corrupted: the page's top-5 are those of /v1/corrupt's image",
        card("card_corrupted").and_then(|c| {
            let corrupted = server.post(
                &format!("/v1/corrupt?name={CORRUPTION}&severity={SEVERITY}"),
                &[("Content-Type", "image/png")],
                &png,
            );
            if corrupted.status != 200 {
                return Err(format!("/v1/corrupt: {} {}", corrupted.status, corrupted.text()));
            }
            let api = server.post(
                &format!("/v1/models/{MODEL}/classify?top_k=5"),
                &[("Content-Type", "image/png")],
                &corrupted.body,
            );
            if c["image_width"].as_u64().unwrap_or(0) == 0 {
                return Err(format!("the corrupted image is not shown: {c}"));
            }
            same_predictions(&c["predictions"], &api.json()["results"][0]["predictions"])
        }),
    );

    check(
        "adversarial: the page shows /attack's image and top-5",
        card("card_adversarial").and_then(|c| {
            let attack = server.post(
                &format!("/v1/models/{MODEL}/attack?method=fgsm&eps={EPS}&top_k=5"),
                &[("Content-Type", "image/png")],
                &png,
            );
            if attack.status != 200 {
                return Err(format!("/attack: {} {}", attack.status, attack.text()));
            }
            let a = attack.json();
            let src = format!("data:image/png;base64,{}", a["image"].as_str().unwrap_or_default());
            if c["image_src"].as_str() != Some(src.as_str()) || c["image_width"].as_u64().unwrap_or(0) == 0 {
                return Err("the page does not show the adversarial image /attack returns".into());
            }
            same_predictions(&c["predictions"], &a["after"])
        }),
    );

    check(
        "token kept in sessionStorage",
        step("token").and_then(|v| (v["stored"] == TOKEN).then_some(()).ok_or(format!("{v}"))),
    );

    check(
        "an API error is shown to the user",
        step("api_error").and_then(|v| {
            let shown = v["error"].as_str().unwrap_or_default();
            (shown.starts_with("400: ") && shown.contains("severities") && v["jobs"] == 0)
                .then_some(())
                .ok_or(format!("{v}"))
        }),
    );

    let id = step("submit_job").map(|v| v["id"].as_str().unwrap_or_default().to_string());
    check(
        "job submitted from the form",
        id.as_ref().map(|_| ()).map_err(Clone::clone),
    );
    let id = id.unwrap_or_default();
    check(
        "job shown as succeeded, with progress",
        step("job_finished").and_then(|v| {
            let status = get_with(
                &server,
                &format!("/v1/evaluations/{id}"),
                &[("Authorization", &format!("Bearer {TOKEN}"))],
            );
            let s = status.json();
            let spec_ok = s["spec"]["limit"] == 20
                && s["spec"]["suites"] == serde_json::json!(["clean", "c"])
                && s["spec"]["data"] == "fashion-mnist:test"
                && s["spec"]["corruptions"] == serde_json::json!(["gaussian_noise"]);
            let total = s["progress"]["total"].as_u64().unwrap_or(0);
            let row = v["row"].as_str().unwrap_or_default();
            (v["state"] == "succeeded"
                && s["state"] == "succeeded"
                && spec_ok
                && total > 0
                && row.contains(&format!("{total} / {total}")))
            .then_some(())
            .ok_or(format!("page: {v}\nAPI: {s}"))
        }),
    );
    check(
        "report shown with its plots through blob: URLs",
        step("report").and_then(|r| {
            let images = r["images"].as_array().cloned().unwrap_or_default();
            let plots_ok = !images.is_empty()
                && images.iter().all(|i| {
                    i["loaded"] == true
                        && i["width"].as_u64().unwrap_or(0) > 0
                        && i["src"].as_str().is_some_and(|s| s.starts_with("blob:"))
                });
            let text = r["text"].as_str().unwrap_or_default();
            (r["state"] == "done"
                && r["error"].is_null()
                && r["scripts"] == 0
                && r["tables"].as_u64().unwrap_or(0) > 0
                && text.contains("gaussian")
                && plots_ok)
                .then_some(())
                .ok_or(format!("{r}"))
        }),
    );

    // No CSP violation, script error or failed load in the browser's console, but the one
    // 400 the impossible spec provoked on purpose (the browser logs every failed fetch).
    let provoked = |e: &Value| {
        let m = e["message"].as_str().unwrap_or_default();
        e["source"] == "network" && m.contains("/v1/evaluations - ") && m.contains("status of 400")
    };
    let severe: Vec<&Value> = page["browser_log"]
        .as_array()
        .map(|l| l.iter().filter(|e| e["level"] == "SEVERE").collect())
        .unwrap_or_default();
    let unexpected: Vec<&&Value> = severe.iter().filter(|e| !provoked(e)).collect();
    check(
        "no error in the browser's console",
        (unexpected.is_empty() && severe.len() == 1)
            .then_some(())
            .ok_or(format!("{severe:?}")),
    );

    println!("passed: {passed:#?}");
    assert!(
        failed.is_empty(),
        "failed steps:\n{}\npassed: {passed:?}",
        failed.join("\n\n")
    );
}
