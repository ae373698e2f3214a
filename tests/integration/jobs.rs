//! Evaluation jobs end to end: the real `hardy serve` with `--jobs-dir`, driven over real
//! HTTP: submit, watch progress, fetch result and report, cancel, refusals (token, spec,
//! confinement, size, queue), equality with the CLI's `hardy eval` on the same settings,
//! `hardy eval merge` on a job's output, and SIGKILL at several moments of a running job
//! followed by a restart that finishes it with the uninterrupted result.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    cli::hardy,
    serve::{Reply, Server, add_model},
};

const TOKEN: &str = "jobs-s3cret";
const AUTH: (&str, &str) = ("Authorization", "Bearer jobs-s3cret");

fn submit(server: &Server, spec: &Value) -> Reply {
    server.post(
        "/v1/evaluations",
        &[AUTH, ("Content-Type", "application/json")],
        spec.to_string().as_bytes(),
    )
}

fn get(server: &Server, path: &str) -> Reply {
    crate::serve::request("GET", &format!("{}{path}", server.base), &[AUTH], &[])
}

fn delete(server: &Server, path: &str) -> Reply {
    crate::serve::request("DELETE", &format!("{}{path}", server.base), &[AUTH], &[])
}

/// Polls a job until `done` says so (or panics after `limit`).
fn wait_for(server: &Server, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let status = get(server, &format!("/v1/evaluations/{id}"));
        assert_eq!(status.status, 200, "{}", status.text());
        let status = status.json();
        if done(&status) {
            return status;
        }
        assert!(
            t0.elapsed() < limit,
            "job {id} did not get there in {limit:?}: {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finished(status: &Value) -> bool {
    matches!(status["state"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

fn repo_with_model() -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fm", 1, 1, None);
    repo
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The job's spec and the `hardy eval` flags that say the same.
fn spec_and_flags() -> (Value, Vec<&'static str>) {
    (
        json!({
            "model": "fm", "suites": ["clean", "c", "fgsm"], "data": "fashion-mnist:test",
            "limit": 48, "corruptions": ["fog", "contrast"], "severities": [1, 3],
            "eps": [2], "batch_size": 16
        }),
        vec![
            "--suite",
            "clean,c,fgsm",
            "--data",
            "fashion-mnist:test",
            "--limit",
            "48",
            "--corruptions",
            "fog,contrast",
            "--severities",
            "1,3",
            "--eps",
            "2",
            "--batch-size",
            "16",
        ],
    )
}

#[test]
fn jobs_run_like_the_cli_and_refuse_what_they_must() {
    let repo = repo_with_model();
    let jobs = tempfile::tempdir().unwrap();
    let data_root = tempfile::tempdir().unwrap();
    std::fs::create_dir(data_root.path().join("inside")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), data_root.path().join("escape")).unwrap();
    let server = Server::start(
        repo.path(),
        &[
            "--admin-token",
            TOKEN,
            "--jobs-dir",
            jobs.path().to_str().unwrap(),
            "--data-root",
            data_root.path().to_str().unwrap(),
            "--max-job-images",
            "5000",
        ],
    );
    let (spec, flags) = spec_and_flags();

    // Refusals: the token, the spec's fields, confinement, size, the model.
    server.get("/v1/evaluations").assert_error(401, &["token"]);
    crate::serve::request(
        "GET",
        &format!("{}/v1/evaluations", server.base),
        &[("Authorization", "Bearer wrong")],
        &[],
    )
    .assert_error(401, &["token"]);
    server
        .post(
            "/v1/evaluations",
            &[("Content-Type", "application/json")],
            spec.to_string().as_bytes(),
        )
        .assert_error(401, &["token"]);
    submit(&server, &json!({"model": "fm", "severity": [1]})).assert_error(400, &["unknown field `severity`"]);
    submit(&server, &json!({"model": "fm", "severities": [9]})).assert_error(400, &["severities"]);
    submit(&server, &json!({"model": "fm", "eps": [-1]})).assert_error(400, &["eps"]);
    submit(&server, &json!({"model": "fm", "data": "/etc"})).assert_error(400, &["data", "outside the data root"]);
    submit(&server, &json!({"model": "fm", "data": "escape"})).assert_error(400, &["data", "outside the data root"]);
    submit(&server, &json!({"model": "fm", "data": "../../etc"})).assert_error(400, &["data"]);
    submit(&server, &json!({"model": "fm", "suites": ["c"], "data": "inside"})).assert_error(400, &[]);
    submit(&server, &json!({"model": "nope", "data": "fashion-mnist:test"})).assert_error(404, &["nope"]);
    submit(&server, &json!({"model": "fm", "suites": ["clean"]})).assert_error(400, &["--data"]);
    submit(
        &server,
        &json!({"model": "fm", "suites": ["clean", "c"], "data": "fashion-mnist:test", "corruptions": "all"}),
    )
    .assert_error(413, &["--max-job-images"]);
    server
        .post(
            "/v1/evaluations",
            &[AUTH, ("Content-Type", "application/json")],
            b"{\"model\": ",
        )
        .assert_error(400, &["spec"]);
    get(&server, "/v1/evaluations/0123456789abcdef0123").assert_error(404, &["0123456789abcdef0123"]);
    get(&server, "/v1/evaluations/..%2F..%2Fetc").assert_error(404, &[]);

    // Submit, watch progress, fetch the result and report.
    let r = submit(&server, &spec);
    assert_eq!(r.status, 202, "{}", r.text());
    let accepted = r.json();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(accepted["links"]["result"], format!("/v1/evaluations/{id}/result"));
    assert_eq!(r.header("location"), Some(format!("/v1/evaluations/{id}").as_str()));
    assert_eq!(
        accepted["progress"]["total"],
        48 * 6,
        "clean + 4 corruption parts + 1 attack part"
    );
    let status = wait_for(&server, &id, Duration::from_secs(300), finished);
    assert_eq!(status["state"], "succeeded", "{status}");
    let parts = status["progress"]["parts"].as_array().unwrap();
    let keys: Vec<&str> = parts.iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "clean",
            "c/fog/1",
            "c/fog/3",
            "c/contrast/1",
            "c/contrast/3",
            "fgsm/0.007843"
        ]
    );
    assert!(
        parts
            .iter()
            .all(|p| p["done"] == 48 && p["total"] == 48 && p["state"] == "done"),
        "{status}"
    );
    assert_eq!(status["progress"]["done"], 48 * 6);
    assert_eq!(status["model"], "fm");
    assert_eq!(status["version"], 1);
    assert_eq!(status["sha256"].as_str().map(str::len), Some(64));
    assert!(status["finished_at"].as_f64() >= status["started_at"].as_f64());

    let job_result = get(&server, &format!("/v1/evaluations/{id}/result"));
    assert_eq!(job_result.status, 200);
    let job_result = job_result.json();

    // The CLI on the same settings writes the identical result.json.
    let cli_out = tempfile::tempdir().unwrap();
    let model_dir = repo.path().join("fm");
    let mut args = vec!["eval", "--quiet", "--model", model_dir.to_str().unwrap()];
    args.extend(flags.iter().copied());
    args.extend(["--out", cli_out.path().to_str().unwrap()]);
    let o = hardy(&args, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        job_result,
        read_json(&cli_out.path().join("result.json")),
        "job and CLI results differ"
    );
    let job_out = jobs.path().join(&id).join("out");
    assert_eq!(
        std::fs::read(job_out.join("result.json")).unwrap(),
        std::fs::read(cli_out.path().join("result.json")).unwrap(),
        "the files are byte-identical too"
    );

    // `hardy eval merge` reads a job's output directory.
    let merged = tempfile::tempdir().unwrap();
    let o = hardy(
        &[
            "eval",
            "merge",
            "--out",
            merged.path().to_str().unwrap(),
            job_out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let merged = read_json(&merged.path().join("result.json"));
    assert_eq!(merged["clean"], job_result["clean"]);
    assert_eq!(merged["corruptions"], job_result["corruptions"]);

    // The report page, its plots and report.md.
    let page = get(&server, &format!("/v1/evaluations/{id}/report"));
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap_or_default().starts_with("text/html"));
    let html = page.text();
    assert!(html.contains("<table>"), "{html}");
    let plot = html
        .split("<img src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no plot in {html}"));
    let png = get(&server, &format!("/v1/evaluations/{id}/{plot}"));
    assert_eq!(png.status, 200);
    assert!(png.body.starts_with(b"\x89PNG"), "{plot}");
    let md = get(&server, &format!("/v1/evaluations/{id}/report.md"));
    assert_eq!(md.status, 200);
    assert!(md.text().contains(plot));
    get(&server, &format!("/v1/evaluations/{id}/job.sh")).assert_error(404, &[]);
    get(&server, &format!("/v1/evaluations/{id}/.lock")).assert_error(404, &[]);

    // Listing and filters.
    let list = get(&server, "/v1/evaluations?state=succeeded&model=fm").json();
    assert_eq!(list["jobs"][0]["id"], id.as_str());
    assert_eq!(get(&server, "/v1/evaluations?model=other").json()["jobs"], json!([]));
    get(&server, "/v1/evaluations?state=done").assert_error(400, &["state"]);
    delete(&server, &format!("/v1/evaluations/{id}")).assert_error(409, &["succeeded"]);

    // Inside a set under the data root, an image that links out of the root fails as a bad
    // image, counted in the result; the job itself succeeds.
    let set = data_root.path().join("set");
    crate::serve::sample_folder(&set, 4);
    let secret = outside.path().join("secret.png");
    std::fs::copy(&crate::serve::samples()[0].0, &secret).unwrap();
    let first_class = std::fs::read_dir(&set).unwrap().next().unwrap().unwrap().path();
    std::os::unix::fs::symlink(&secret, first_class.join("linked.png")).unwrap();
    let r = submit(&server, &json!({"model": "fm", "data": "set"}));
    assert_eq!(r.status, 202, "{}", r.text());
    let confined = r.json()["id"].as_str().unwrap().to_string();
    let status = wait_for(&server, &confined, Duration::from_secs(120), finished);
    assert_eq!(status["state"], "succeeded", "{status}");
    let result = get(&server, &format!("/v1/evaluations/{confined}/result")).json();
    assert_eq!(result["clean"]["images"], 4, "{result}");
    assert_eq!(result["failed_images"]["clean"], 1, "{result}");
    assert!(
        result["failures"]["clean"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("outside the data root"),
        "{result}"
    );

    // Cancel a long job while it runs: it stops within about a second, keeping finished parts.
    let long = json!({
        "model": "fm", "suites": ["clean", "pgd"], "data": "fashion-mnist:test", "limit": 900,
        "eps": [1, 2, 4, 8], "pgd_steps": 20, "batch_size": 16
    });
    let r = submit(&server, &long);
    assert_eq!(r.status, 202, "{}", r.text());
    let long_id = r.json()["id"].as_str().unwrap().to_string();
    wait_for(&server, &long_id, Duration::from_secs(120), |s| {
        s["state"] == "running"
            && s["progress"]["parts"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["key"].as_str().unwrap_or("").starts_with("pgd") && p["done"].as_u64() > Some(0))
            })
    });
    let t0 = Instant::now();
    let cancelled = delete(&server, &format!("/v1/evaluations/{long_id}"));
    let took = t0.elapsed();
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["state"], "cancelled");
    assert!(took < Duration::from_secs(2), "cancelling took {took:?}");
    eprintln!(
        "a running PGD part stopped {:.0} ms after DELETE",
        took.as_secs_f64() * 1e3
    );
    let kept = jobs.path().join(&long_id).join("out/parts/clean.json");
    assert!(kept.is_file(), "the finished clean part is kept");
    delete(&server, &format!("/v1/evaluations/{long_id}")).assert_error(409, &["cancelled"]);
    get(&server, &format!("/v1/evaluations/{long_id}/result")).assert_error(409, &["cancelled"]);

    assert_eq!(server.metric("hardy_eval_jobs{state=\"succeeded\"}"), 2.0);
    assert_eq!(server.metric("hardy_eval_jobs{state=\"cancelled\"}"), 1.0);
    assert!(server.metric("hardy_eval_images_total{model=\"fm\",suite=\"c\"}") >= 4.0 * 48.0);
    assert!(server.metric("hardy_eval_job_duration_seconds_count{outcome=\"succeeded\"}") >= 1.0);
}

#[test]
fn jobs_are_off_without_a_jobs_dir_and_the_queue_is_bounded() {
    let repo = repo_with_model();
    let server = Server::start(repo.path(), &["--admin-token", TOKEN]);
    get(&server, "/v1/evaluations").assert_error(403, &["--jobs-dir"]);
    drop(server);

    let jobs = tempfile::tempdir().unwrap();
    let server = Server::start(
        repo.path(),
        &[
            "--admin-token",
            TOKEN,
            "--jobs-dir",
            jobs.path().to_str().unwrap(),
            "--max-queued-jobs",
            "1",
        ],
    );
    let long = json!({"model": "fm", "suites": ["pgd"], "data": "fashion-mnist:test", "limit": 3000, "eps": [8], "pgd_steps": 50});
    let first = submit(&server, &long).json()["id"].as_str().unwrap().to_string();
    wait_for(&server, &first, Duration::from_secs(60), |s| s["state"] == "running");
    let second = submit(&server, &long);
    assert_eq!(second.status, 202, "{}", second.text());
    let third = submit(&server, &long);
    third.assert_error(503, &["--max-queued-jobs"]);
    assert_eq!(third.header("retry-after"), Some("1"));
    // A queued job is cancelled at once; then there is room again.
    let second = second.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        delete(&server, &format!("/v1/evaluations/{second}")).json()["state"],
        "cancelled"
    );
    assert_eq!(submit(&server, &long).status, 202);
    // A second server cannot run the same jobs directory.
    let err = hardy(
        &[
            "serve",
            "--port",
            "0",
            "--model-repository",
            repo.path().to_str().unwrap(),
            "--jobs-dir",
            jobs.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(err.code, 0);
    assert!(err.stderr.contains("another server"), "{}", err.stderr);
}

/// The part files of a job's output directory.
fn part_files(out: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out.join("parts"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
}

#[test]
fn a_job_killed_anywhere_resumes_to_the_uninterrupted_result() {
    let repo = repo_with_model();
    let jobs = tempfile::tempdir().unwrap();
    let flags = ["--admin-token", TOKEN, "--jobs-dir", jobs.path().to_str().unwrap()];
    let start = || Server::start_logging(repo.path(), &flags, Stdio::null());
    let spec = json!({
        "model": "fm", "suites": ["clean", "c", "fgsm"], "data": "fashion-mnist:test", "limit": 400,
        "corruptions": ["gaussian_noise", "fog", "contrast", "pixelate"], "severities": [1, 2, 3], "eps": [1, 4],
        "batch_size": 8
    });
    let server = start();
    let r = submit(&server, &spec);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let out = jobs.path().join(&id).join("out");
    let planned = 1 + 4 * 3 + 2;

    // Dropping a `Server` kills it with SIGKILL (`Child::kill`) and reaps it.
    let kill = |server: Server| drop(server);

    // 1. During a part: some images of a part done, its file not written.
    wait_for(&server, &id, Duration::from_secs(120), |s| {
        s["progress"]["parts"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["state"] == "running" && p["done"].as_u64() > Some(0))
        })
    });
    kill(server);
    let after_first = part_files(&out).len();
    eprintln!("killed during a part with {after_first} of {planned} parts stored");
    assert!(after_first < planned, "the job finished before the kill");

    // 2. Between parts: right after a new part file appears.
    let server = start();
    let t0 = Instant::now();
    while part_files(&out).len() == after_first {
        assert!(t0.elapsed() < Duration::from_secs(120), "no new part after the restart");
        std::thread::sleep(Duration::from_millis(2));
    }
    kill(server);
    eprintln!("killed right after part {} was stored", part_files(&out).len());

    // 3. While writing: at a series of short delays after restarts, which land in planning,
    // in a part or in a store write.
    for delay_ms in [150u64, 400, 40, 900] {
        let server = start();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if get(&server, &format!("/v1/evaluations/{id}")).json()["state"] == "succeeded" {
            break;
        }
        kill(server);
        eprintln!(
            "killed {delay_ms} ms after a restart, {} parts stored",
            part_files(&out).len()
        );
    }

    // Restart and let it finish.
    let server = start();
    let status = wait_for(&server, &id, Duration::from_secs(600), finished);
    assert_eq!(status["state"], "succeeded", "{status}");
    let resumed = get(&server, &format!("/v1/evaluations/{id}/result")).json();

    // No part lost, none twice, no corrupt file.
    let files = part_files(&out);
    assert_eq!(files.len(), planned, "{files:?}");
    for file in &files {
        let record = read_json(file);
        assert!(record["tally"].is_object(), "{}", file.display());
    }
    for name in ["run.json", "result.json"] {
        read_json(&out.join(name));
    }
    read_json(&jobs.path().join(&id).join("job.json"));

    // The same job, uninterrupted.
    let r = submit(&server, &spec);
    let fresh = r.json()["id"].as_str().unwrap().to_string();
    let status = wait_for(&server, &fresh, Duration::from_secs(600), finished);
    assert_eq!(status["state"], "succeeded", "{status}");
    let uninterrupted = get(&server, &format!("/v1/evaluations/{fresh}/result")).json();
    assert_eq!(
        resumed, uninterrupted,
        "a resumed job's result differs from an uninterrupted run's"
    );
    for part in resumed["corruptions"]["corruptions"].as_object().unwrap().values() {
        assert_eq!(part["images"], json!([400, 400, 400, 0, 0]), "{part}");
    }
}
