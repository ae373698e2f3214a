//! The `hardy` binary's LibTorch run path under the `tch` feature: the trainer's rule
//! (trainer/build.rs).

#[path = "trainer/build.rs"]
mod libtorch_rpath;

fn main() {
    libtorch_rpath::main();
}
