//! Compiles the .proto files with protox (a pure-Rust protobuf compiler), so no system `protoc`
//! is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "medchain/v1/types.proto",
        "medchain/v1/pbft.proto",
        "medchain/v1/dpos.proto",
        "medchain/v1/p2p.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
