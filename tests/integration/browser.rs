//! The web UI in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/ui.mjs`), after the OpenTelemetry Python SDK has sent real OTLP
//! (`tests/e2e/ui_data.py`). `tests/browser/setup.sh` installs both on first use. Screenshots
//! of every screen are written to `target/browser-screenshots/`, with the render time of a
//! 5,000-span trace in `target/browser-screenshots/ui/render.txt`.

use std::path::PathBuf;

use otelephant::auth::Secret;
use tokio::process::Command;

use crate::common::{
    clients::{e2e_python, repo},
    *,
};

/// The browser's path, after making sure it and playwright-core are installed.
async fn browser() -> String {
    let output = Command::new(repo().join("tests/browser/setup.sh")).output().await.expect("run setup.sh");
    assert!(
        output.status.success(),
        "setting up the browser tests failed (needs Debian's chromium and npm):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 path").trim().to_owned()
}

fn screenshots(run: &str) -> PathBuf {
    repo().join("target/browser-screenshots").join(run)
}

/// Runs `tests/browser/ui.mjs` against the server with `env`; its output, checked to pass.
async fn run_browser(t: &TestServer, env: &[(&str, String)]) -> String {
    let chromium = browser().await;
    let mut command = Command::new("node");
    command
        .arg(repo().join("tests/browser/ui.mjs"))
        .current_dir(repo().join("tests/browser"))
        .env("BASE_URL", format!("http://{}", t.server.as_ref().expect("running").http_addr))
        .env("CHROMIUM", chromium);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), command.output())
        .await
        .expect("the browser run finishes within 5 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the browser checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_finds_services_traces_logs_and_metrics_in_the_web_ui() {
    let mut t = TestServer::start().await;
    let python = e2e_python().await;
    let endpoint = format!("http://{}", t.server.as_ref().expect("running").http_addr);
    let sent = Command::new(&python)
        .arg(repo().join("tests/e2e/ui_data.py"))
        .arg(&endpoint)
        .output()
        .await
        .expect("run ui_data.py");
    assert!(sent.status.success(), "the SDK's exports failed:\n{}", String::from_utf8_lossy(&sent.stderr));
    let data = String::from_utf8(sent.stdout).expect("utf-8");
    // The calls between services, as the server's own pass pairs them once their minute closes.
    t.rollup_pass().await;
    let shots = screenshots("ui");
    let output = run_browser(&t, &[("DATA", data), ("SHOTS", shots.display().to_string())]).await;
    print!("{output}");
    // The render time of the 5,000-span trace is printed for the record, not asserted.
    assert!(output.contains("RENDER 5000 spans"), "{output}");
    println!("screenshots in {}", shots.display());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_asks_for_the_query_token_and_works_once_given() {
    let mut t = TestServer::start_with(|c| c.auth.query_token = Some(Secret("ui-token-51c8".into()))).await;
    let shots = screenshots("token");
    let env = [
        ("MODE", "token".to_owned()),
        ("QUERY_TOKEN", "ui-token-51c8".to_owned()),
        ("SHOTS", shots.display().to_string()),
    ];
    print!("{}", run_browser(&t, &env).await);
    t.stop().await;
}

#[tokio::test]
async fn the_web_ui_can_be_turned_off() {
    let mut t = TestServer::start_with(|c| c.ui.enabled = false).await;
    let base = format!("http://{}", t.server.as_ref().expect("running").http_addr);
    let page = reqwest::get(format!("{base}/")).await.expect("answered");
    assert_eq!(page.status(), reqwest::StatusCode::NOT_FOUND);
    let api = reqwest::Client::new()
        .post(format!("{base}/otelephant.query.v1.QueryService/ListServices"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(api.status(), reqwest::StatusCode::OK, "the JSON API stays");
    t.stop().await;
}
