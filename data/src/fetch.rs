//! The data sets Hardy fetches itself, and ffmpeg for ImageNet-P's videos.
//!
//! Tests, examples and `hardy eval --data fashion-mnist:test` use small real data sets that
//! Hardy fetches on first use into its cache: Fashion-MNIST from Debian's
//! `dataset-fashion-mnist` (the installed copy when there is one) and the 20 labelled ImageNet
//! photos of the PyPI `foolbox` wheel (pinned in the engine, whose parity tests need them, and
//! re-exported here). They are data, not inference, so they live here rather than in the
//! engine; the machinery they use (pinned wheels, the cache, the offline switch,
//! [`ProvisionError`]) is the engine's, shared with ONNX Runtime's own provisioning. Nothing is
//! fetched when downloads are off (`HARDY_OFFLINE`, `--offline`).

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use engine::provision::{ProvisionError, WheelSpec, cache_root, ensure_unpacked, offline};

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The foolbox wheel and its 20 labelled ImageNet photos: pinned in the engine, whose own
/// parity tests need them, and offered here with the other data sets.
pub use engine::provision::{FOOLBOX, foolbox_imagenet_samples};

/// Where Debian installs `dataset-fashion-mnist`.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four IDX files of Fashion-MNIST.
pub const FASHION_MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The directory holding Fashion-MNIST's IDX files: the system's copy when the Debian
/// package `dataset-fashion-mnist` is installed, otherwise the package's files fetched with
/// `apt-get download` and unpacked into Hardy's cache (no root needed).
pub fn fashion_mnist() -> Result<PathBuf, ProvisionError> {
    let system = Path::new(FASHION_MNIST_SYSTEM_DIR);
    if FASHION_MNIST_FILES.iter().all(|f| system.join(f).is_file()) {
        return Ok(system.to_path_buf());
    }
    let dest = cache_root().join("dataset-fashion-mnist");
    if FASHION_MNIST_FILES.iter().all(|f| dest.join(f).is_file()) {
        return Ok(dest);
    }
    ensure_debian_package("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist", &dest)
}

fn run_tool(package: &str, cmd: &mut Command) -> Result<(), ProvisionError> {
    let out = cmd.output().map_err(|e| ProvisionError::Debian {
        package: package.to_string(),
        reason: format!("cannot run {cmd:?}: {e}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ProvisionError::Debian {
        package: package.to_string(),
        reason: format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// Downloads Debian package `package` (`apt-get download`), extracts it (`dpkg-deb -x`) and
/// moves the directory `subdir` of its contents to `dest`, atomically. When the package lists
/// are missing and we are root, runs `apt-get update` once and retries.
pub fn ensure_debian_package(package: &str, subdir: &str, dest: &Path) -> Result<PathBuf, ProvisionError> {
    if offline() {
        return Err(ProvisionError::Offline {
            what: format!("Debian package {package}"),
            dest: dest.to_path_buf(),
        });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    // One staging directory per thread: tests in one process may provision concurrently.
    let staging = parent.join(format!(
        ".{package}.partial-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    let result = (|| {
        eprintln!("hardy: fetching Debian package {package} into {}", dest.display());
        let download = || {
            run_tool(
                package,
                Command::new("apt-get")
                    .arg("download")
                    .arg(package)
                    .current_dir(&staging),
            )
        };
        if let Err(first) = download() {
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
            if !root {
                return Err(first);
            }
            run_tool(package, Command::new("apt-get").args(["update", "-qq"]))?;
            download()?;
        }
        let deb = fs::read_dir(&staging)
            .map_err(io_err(&staging))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .ok_or_else(|| ProvisionError::Debian {
                package: package.to_string(),
                reason: "apt-get download left no .deb file".into(),
            })?;
        let tree = staging.join("tree");
        run_tool(package, Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        let wanted = tree.join(subdir);
        if !wanted.is_dir() {
            return Err(ProvisionError::Debian {
                package: package.to_string(),
                reason: format!("the package has no {subdir}"),
            });
        }
        match fs::rename(&wanted, dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(io_err(dest)(e)),
        }
    })();
    let _ = fs::remove_dir_all(&staging);
    result.map(|()| dest.to_path_buf())
}

/// The imageio-ffmpeg wheel: a static ffmpeg 7.0.2 build for Linux x86-64, used to decode
/// the H.264 streams OpenH264 cannot (the released ImageNet-P videos are High 4:4:4).
pub const FFMPEG: WheelSpec = WheelSpec {
    name: "imageio-ffmpeg",
    version: "0.7.0",
    platform: Some("manylinux2014_x86_64"),
};

/// The ffmpeg executable of the [`FFMPEG`] wheel, fetched on first use (29 MB download, 80 MB
/// unpacked). Only for Linux x86-64, the wheel's platform.
pub fn ffmpeg() -> Result<PathBuf, ProvisionError> {
    let dest = cache_root().join(format!("imageio-ffmpeg-{}", FFMPEG.version));
    let dir = ensure_unpacked(&FFMPEG, &dest, |name| {
        let file = name.strip_prefix("imageio_ffmpeg/binaries/")?;
        file.starts_with("ffmpeg-linux-x86_64").then(|| PathBuf::from("ffmpeg"))
    })?;
    let exe = dir.join("ffmpeg");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(&exe).map_err(io_err(&exe))?;
        if meta.permissions().mode() & 0o111 != 0o111 {
            fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).map_err(io_err(&exe))?;
        }
    }
    Ok(exe)
}
