//! NVIDIA's Triton HTTP client (PyPI `tritonclient[http]`, unmodified) against `hardy serve`.
//!
//! The client is installed with `pip install --target` into Hardy's cache on first use
//! (no virtual environment needed); the checks live in `tritonclient_check.py`.

use std::{path::PathBuf, process::Command};

use super::serve::{Server, add_model};
use crate::common::{pip_package, root};

const TRITONCLIENT: &str = "tritonclient[http]==2.73.0";

/// The directory holding it and its dependencies, installed on first use.
pub(crate) fn tritonclient() -> PathBuf {
    pip_package("tritonclient-2.73.0", TRITONCLIENT)
}

#[test]
fn triton_http_client_works_unmodified() {
    let site = tritonclient();
    let repo = tempfile::tempdir().expect("tempdir");
    add_model(repo.path(), "fmnist", 1, 2, None);
    let server = Server::start(repo.path(), &["--admin-token", "tc-token"]);
    let cfg = engine::artifact::ModelArtifact::open(&repo.path().join("fmnist"), None)
        .expect("artifact")
        .config;
    let output = Command::new("python3")
        .arg(root().join("tests/integration/tritonclient_check.py"))
        .arg(server.base.trim_start_matches("http://"))
        .args(["fmnist", "tc-token"])
        .arg(root().join("samples/fashion-mnist"))
        .arg(cfg.preprocess.mean[0].to_string())
        .arg(cfg.preprocess.std[0].to_string())
        .env("PYTHONPATH", &site)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "tritonclient checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all tritonclient checks passed"));
}
