//! NVIDIA's Triton HTTP client (PyPI `tritonclient[http]`, unmodified) against `hardy serve`.
//!
//! The client is installed with `pip install --target` into Hardy's cache on first use
//! (no virtual environment needed); the checks live in `tritonclient_check.py`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::serve::{Server, add_model};
use crate::common::{pip_package, root};

const TRITONCLIENT: &str = "tritonclient[http]==2.73.0";

/// The directory holding it and its dependencies, installed on first use.
fn tritonclient() -> PathBuf {
    pip_package("tritonclient-2.73.0", TRITONCLIENT)
}

#[test]
fn triton_http_client_works_unmodified() {
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 2, None);
    let server = Server::start(repo.path(), &["--admin-token", "tc-token"]);
    run_checks(
        server.base.trim_start_matches("http://"),
        "fmnist",
        "tc-token",
        &repo.path().join("fmnist"),
    );
}

/// Runs `tritonclient_check.py` against the server at `host_port` on `model` (whose
/// directory is `model_dir`, for its preprocessing), with the admin `token`; panics with the
/// client's output when a check fails. The checks count the images the server has run, so
/// they expect a model that has run none yet.
pub(crate) fn run_checks(host_port: &str, model: &str, token: &str, model_dir: &Path) {
    run_script(
        "tritonclient_check.py",
        &tritonclient(),
        host_port,
        model,
        token,
        model_dir,
        &[],
    );
}

/// Runs one of the tritonclient check scripts (tests/integration/`script`, with `packages`
/// on its Python path) with its arguments `HOST:PORT MODEL TOKEN SAMPLES MEAN STD [extra...]`.
pub(crate) fn run_script(
    script: &str,
    packages: &Path,
    host_port: &str,
    model: &str,
    token: &str,
    model_dir: &Path,
    extra: &[&Path],
) {
    let cfg = engine::artifact::ModelArtifact::open(model_dir, None)
        .expect("artifact")
        .config;
    let output = Command::new("python3")
        .arg(root().join("tests/integration").join(script))
        .arg(host_port)
        .args([model, token])
        .arg(root().join("samples/fashion-mnist"))
        .arg(cfg.preprocess.mean[0].to_string())
        .arg(cfg.preprocess.std[0].to_string())
        .args(extra)
        .env("PYTHONPATH", packages)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{script} against {host_port} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all tritonclient") && stdout.contains("checks passed"));
}
