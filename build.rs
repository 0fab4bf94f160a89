//! Generates the Rust code of the public API from `proto/` with protox (a pure-Rust protobuf
//! compiler, so no protoc is needed) and tonic's code generator, and keeps the encoded file
//! descriptor set for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("proto/restock/v1")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("restock_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Maps encode in a stable order, so a request's bytes can fingerprint it.
        .btree_map(".")
        // Services declared ahead of their implementation answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
