//! Compiles envd's schema (`proto/envd/{process,filesystem}/*.proto`, made
//! from the E2B SDK by `proto/envd/regen.py`) with `protox` (pure Rust, no
//! system `protoc`) into prost types, plus `pbjson` serde impls for canonical
//! proto3 JSON (the Connect JSON codec the SDK speaks).
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["process/process.proto", "filesystem/filesystem.proto"];
    for f in files {
        println!("cargo:rerun-if-changed=proto/envd/{f}");
    }
    let fds = protox::compile(files, ["proto/envd"])?;
    let descriptors = fds.encode_to_vec();
    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .ignore_unknown_fields()
        .build(&[".process", ".filesystem"])?;
    Ok(())
}
