//! Build steps:
//! - embeds every `migrations/NNNN_name.sql` file into the binary, in version order, so that
//!   adding a migration is adding a file (`src/store/migrate.rs` includes the generated list);
//! - compiles `proto/otelephant/query/v1/query.proto` with protox (pure Rust, no protoc needed)
//!   into tonic code that reuses opentelemetry-proto's OTLP types, and writes the descriptor set
//!   of it and of the OTLP export services for gRPC server reflection, and (with pbjson-build)
//!   the protobuf JSON mapping of its messages for the HTTP/JSON form of the service.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// The files whose services reflection lists; their imports come along.
const PROTOS: &[&str] = &[
    "otelephant/query/v1/query.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
    "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
    "opentelemetry/proto/collector/logs/v1/logs_service.proto",
];

fn main() {
    migrations();
    protos();
}

fn protos() {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"]).unwrap_or_else(|e| panic!("proto/ does not compile: {e}"));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(out.join("descriptors.bin"), prost::Message::encode_to_vec(&fds)).expect("OUT_DIR is writable");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".opentelemetry.proto", "::opentelemetry_proto::tonic")
        .compile_fds(fds.clone())
        .unwrap_or_else(|e| panic!("generating the query service failed: {e}"));
    // The protobuf JSON mapping of the query messages, for the HTTP/JSON form of the service.
    pbjson_build::Builder::new()
        .register_descriptors(&prost::Message::encode_to_vec(&fds))
        .expect("the descriptor set decodes")
        .extern_path(".opentelemetry.proto", "::opentelemetry_proto::tonic")
        .out_dir(&out)
        .build(&[".otelephant.query.v1"])
        .unwrap_or_else(|e| panic!("generating the query service's JSON mapping failed: {e}"));
}

fn migrations() {
    println!("cargo:rerun-if-changed=migrations");
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("migrations");
    let mut files: Vec<(u32, String, String)> = Vec::new();
    for entry in fs::read_dir(&dir).expect("migrations/ is readable") {
        let path = entry.expect("migrations/ entry").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".sql") else {
            continue;
        };
        let (version, name) =
            stem.split_once('_').unwrap_or_else(|| panic!("migration {file} is not named NNNN_name.sql"));
        let version: u32 =
            version.parse().unwrap_or_else(|_| panic!("migration {file} does not start with a number"));
        files.push((version, name.to_owned(), path.display().to_string()));
    }
    files.sort();
    for pair in files.windows(2) {
        assert!(pair[0].0 != pair[1].0, "two migrations share version {}", pair[0].0);
    }
    let mut out = String::from("&[\n");
    for (version, name, path) in &files {
        out += &format!(
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({path:?}) }},\n"
        );
    }
    out += "]\n";
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("migrations.rs");
    fs::write(dest, out).expect("OUT_DIR is writable");
}
