//! Generates the Rust code for every contract in `proto/` with tonic's build tooling.
//! protoc comes from `protoc-bin-vendored`, so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "mmc/common/v1/common.proto",
        "mmc/embed/v1/embed.proto",
        "mmc/caption/v1/caption.proto",
        "mmc/speech/v1/speech.proto",
        "mmc/textgen/v1/textgen.proto",
        "mmc/gateway/v1/gateway.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    // SAFETY-free in edition 2021: build scripts are single-threaded here.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("mmc_descriptor.bin"))
        // Methods a service has not implemented yet answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        // Image bytes as `bytes::Bytes`: the gateway sends one upload to several stages
        // (and retries) without copying it, and services decode from the received buffer.
        .bytes(".mmc.common.v1.Image.data")
        .compile_protos(&paths, &[root])?;
    Ok(())
}
