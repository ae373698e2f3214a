//! Finding, provisioning and starting ONNX Runtime.
//!
//! Hardy links ONNX Runtime at run time (`ort`'s `load-dynamic`), so one binary works with the
//! CPU library and the CUDA one. This module decides which library file to load, fetches the
//! pinned PyPI wheel when none is found and downloads are allowed, and starts the process-wide
//! ORT environment exactly once. `ort::init()` panics when the library is missing; we never call
//! it and return a [`RuntimeError`] that says how to provide the library instead.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

use crate::provision::{self, ProvisionError, WheelSpec};

/// The ONNX Runtime release Hardy is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// The shared library's file name inside the wheels and in the cache.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// Which ONNX Runtime build to provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// PyPI `onnxruntime`: CPU only, 24 MB.
    Cpu,
    /// PyPI `onnxruntime-gpu`: CPU plus the CUDA 13 execution provider, 256 MB.
    Gpu,
}

impl Flavor {
    /// The pinned wheel that holds this flavour's libraries.
    pub fn wheel(self) -> WheelSpec {
        let name = match self {
            Flavor::Cpu => "onnxruntime",
            Flavor::Gpu => "onnxruntime-gpu",
        };
        WheelSpec {
            name,
            version: ORT_VERSION,
            platform: Some("manylinux_2_28_x86_64"),
        }
    }

    /// Where this flavour is unpacked in the cache.
    pub fn cache_dir(self) -> PathBuf {
        let tag = match self {
            Flavor::Cpu => "cpu",
            Flavor::Gpu => "gpu",
        };
        provision::cache_root().join(format!("onnxruntime-{ORT_VERSION}-{tag}"))
    }
}

/// How to find the ONNX Runtime library.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// An explicit library file (`--ort-library`); takes precedence over everything else.
    pub library: Option<PathBuf>,
    /// Which build to fetch when nothing is found (and to prefer in the cache); derive it from
    /// the device with [`crate::device::Device::flavor`].
    pub flavor: Flavor,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            library: None,
            flavor: Flavor::Cpu,
        }
    }
}

/// Why ONNX Runtime could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No library was found and downloading was not allowed.
    #[error(
        "ONNX Runtime {ORT_VERSION} was not found (looked in: {}). Provide it in one of these ways: \
         set ORT_DYLIB_PATH=/path/to/{LIBRARY_FILE} (or pass --ort-library); put the library next to \
         the hardy binary; or run `hardy setup`, which fetches onnxruntime=={ORT_VERSION} from PyPI \
         into {}. Downloads are off because HARDY_OFFLINE is set.",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        cache.display()
    )]
    NotFound {
        /// Every place that was searched, in order.
        searched: Vec<PathBuf>,
        /// The cache directory `hardy setup` would fill.
        cache: PathBuf,
    },
    /// An explicitly named library file does not exist.
    #[error("ONNX Runtime library {} (from {origin}) does not exist", path.display())]
    MissingExplicit {
        /// The file that was named.
        path: PathBuf,
        /// Who named it: `--ort-library` or `ORT_DYLIB_PATH`.
        origin: &'static str,
    },
    /// Fetching the wheel failed.
    #[error("could not provision ONNX Runtime: {0}")]
    Provision(#[from] ProvisionError),
    /// The file exists but is not a loadable ONNX Runtime library (wrong version, corrupt...).
    #[error("could not load ONNX Runtime from {}: {reason}", path.display())]
    Load {
        /// The library file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// Starting a second runtime from a different library in the same process.
    #[error("ONNX Runtime is already running from {}; cannot switch to {} in the same process", running.display(), requested.display())]
    AlreadyStarted {
        /// The library in use.
        running: PathBuf,
        /// The library that was asked for.
        requested: PathBuf,
    },
}

/// The started ONNX Runtime: the environment sessions are built in, and where it came from.
/// Cheap to clone; there is one per process.
#[derive(Clone)]
pub struct Runtime {
    env: ort::environment::Environment,
    library: PathBuf,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// The ORT environment, for `Session::builder`.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }

    /// The library file that was loaded.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Whether the loaded library directory also holds the CUDA execution provider.
    pub fn has_cuda_provider(&self) -> bool {
        self.library
            .parent()
            .is_some_and(|d| d.join("libonnxruntime_providers_cuda.so").is_file())
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Starts ONNX Runtime (once per process) and returns it. Later calls return the running one;
/// asking for a different explicit library then is an error.
pub fn init(options: &RuntimeOptions) -> Result<Runtime, RuntimeError> {
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = RUNTIME.get() {
        if let Some(requested) = &options.library
            && requested != &rt.library
        {
            return Err(RuntimeError::AlreadyStarted {
                running: rt.library.clone(),
                requested: requested.clone(),
            });
        }
        return Ok(rt.clone());
    }
    let library = resolve_library(options)?;
    tracing::info!(library = %library.display(), "loading ONNX Runtime");
    let builder = ort::init_from(&library).map_err(|e| RuntimeError::Load {
        path: library.clone(),
        reason: e.to_string(),
    })?;
    let env = builder.with_name("hardy").build().map_err(|e| RuntimeError::Load {
        path: library.clone(),
        reason: e.to_string(),
    })?;
    let rt = Runtime { env, library };
    // Cannot already be set: we hold INIT and checked above.
    let _ = RUNTIME.set(rt.clone());
    Ok(rt)
}

/// Finds the library by the documented order, provisioning it if allowed. Returns the file.
pub fn resolve_library(options: &RuntimeOptions) -> Result<PathBuf, RuntimeError> {
    if let Some(path) = &options.library {
        return explicit(path, "--ort-library");
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return explicit(Path::new(&path), "ORT_DYLIB_PATH");
    }
    let searched = candidates(options.flavor);
    if let Some(found) = searched.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    // The one offline switch (`--offline`, HARDY_OFFLINE): production images set it and ship
    // the library next to the binary.
    if crate::provision::offline() {
        return Err(RuntimeError::NotFound {
            searched,
            cache: options.flavor.cache_dir(),
        });
    }
    provision_library(options.flavor)
}

/// Fetches the pinned wheel of `flavor` into the cache (if not already there) and returns the
/// library file.
pub fn provision_library(flavor: Flavor) -> Result<PathBuf, RuntimeError> {
    let dir = provision::ensure_unpacked(&flavor.wheel(), &flavor.cache_dir(), |name| {
        let file = name.strip_prefix("onnxruntime/capi/")?;
        (file.starts_with("libonnxruntime") && !file.contains('/') && file.contains(".so")).then(|| PathBuf::from(file))
    })?;
    let lib = dir.join(LIBRARY_FILE);
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(ProvisionError::BadWheel {
            wheel: dir,
            reason: format!("it holds no {LIBRARY_FILE}"),
        }
        .into())
    }
}

fn explicit(path: &Path, origin: &'static str) -> Result<PathBuf, RuntimeError> {
    let path = if path.is_dir() {
        path.join(LIBRARY_FILE)
    } else {
        path.to_path_buf()
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(RuntimeError::MissingExplicit { path, origin })
    }
}

/// The implicit places searched, in order: next to the executable, then the cache (the
/// requested flavour first; the GPU build also runs on CPU, so it serves a CPU request too).
fn candidates(flavor: Flavor) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(LIBRARY_FILE));
        out.push(dir.join("libonnxruntime.so"));
    }
    let other = if flavor == Flavor::Cpu {
        Flavor::Gpu
    } else {
        Flavor::Cpu
    };
    out.push(flavor.cache_dir().join(LIBRARY_FILE));
    if flavor == Flavor::Cpu {
        out.push(other.cache_dir().join(LIBRARY_FILE));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_missing_library_is_a_clear_error() {
        let opts = RuntimeOptions {
            library: Some(PathBuf::from("/nonexistent/libonnxruntime.so")),
            flavor: Flavor::Cpu,
        };
        let err = resolve_library(&opts).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/libonnxruntime.so") && msg.contains("--ort-library"),
            "{msg}"
        );
    }

    #[test]
    fn not_found_message_says_how_to_provide_the_library() {
        let err = RuntimeError::NotFound {
            searched: vec![PathBuf::from("/a/lib.so")],
            cache: PathBuf::from("/c"),
        };
        let msg = err.to_string();
        for needle in ["/a/lib.so", "ORT_DYLIB_PATH", "hardy setup", "onnxruntime==1.31.1"] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
    }
}
