//! With the `tch` feature, the tests and binaries link LibTorch (torch-sys links the libtorch
//! that `LIBTORCH` names: scripts/with-libtorch.sh sets it). This records that library
//! directory as their run path, so they start without LD_LIBRARY_PATH. The root package's
//! build script (the `hardy` binary) runs this same function.

/// Emits the run path when the `tch` feature is on and `LIBTORCH` is set.
pub fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
