//! Compiles proto/faultline/v1 with protox (pure Rust), so no protoc is needed.
use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "faultline/v1/target.proto",
        "faultline/v1/fault.proto",
        "faultline/v1/experiment.proto",
        "faultline/v1/service.proto",
    ];
    println!("cargo:rerun-if-changed=faultline");
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Served by gRPC reflection so generic clients (grpcurl) can discover the API.
    fs::write(out.join("faultline_descriptor.bin"), fds.encode_to_vec())?;
    // The service stubs need tonic: only with the `grpc` feature (the core uses the messages).
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure().build_client(grpc).build_server(grpc).compile_fds(fds)?;
    Ok(())
}
