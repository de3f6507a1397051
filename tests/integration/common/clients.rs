//! Clients the tests share: OTLP/HTTP requests to a test server, and the real clients of the
//! end-to-end tests, installed into a venv by `tests/e2e/setup-venv.sh`.

use std::path::{Path, PathBuf};

use reqwest::header;
use tokio::process::Command;

use super::harness::TestServer;

pub const PROTOBUF: &str = "application/x-protobuf";

/// A URL on the test server's OTLP/HTTP port.
pub fn url(t: &TestServer, path: &str) -> String {
    format!("http://{}{path}", t.server.as_ref().expect("running").http_addr)
}

/// POSTs `body` to `path` on the OTLP/HTTP port.
pub async fn post(
    t: &TestServer,
    path: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().post(url(t, path)).header(header::CONTENT_TYPE, content_type).body(body);
    if let Some(encoding) = encoding {
        request = request.header(header::CONTENT_ENCODING, encoding);
    }
    request.send().await.expect("the request is answered")
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, creating the venv first if needed.
pub async fn e2e_python() -> PathBuf {
    let output =
        Command::new(repo().join("tests/e2e/setup-venv.sh")).output().await.expect("run setup-venv.sh");
    assert!(
        output.status.success(),
        "setting up the e2e venv failed (needs python3 and PyPI):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).expect("utf-8 path").trim())
}
