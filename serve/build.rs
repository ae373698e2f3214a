//! Generates the gRPC service (`proto/grpc_service.proto`) with tonic. The .proto is compiled
//! by protox, in Rust, so building needs no `protoc`; the descriptor set is kept beside the
//! generated code for the test that compares it field by field with tritonclient's.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("grpc_service.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // raw tensor bytes arrive as `Bytes`, sliced from the received buffer without a copy
        .bytes(".inference")
        .compile_fds(fds)?;
    Ok(())
}
