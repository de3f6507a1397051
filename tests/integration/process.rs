//! The real `otelephant` binary under load, stopped by SIGTERM or killed by SIGKILL: every
//! request it acknowledged is in the database.

use std::{
    collections::HashSet,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio::process::Command;

use crate::common::{binary::*, *};

#[tokio::test]
async fn sigterm_drains_and_answers_everything_then_exits() {
    let schema = TestSchema::new();
    let mut server = start(&schema).await;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let clients = load(server.grpc, 0..4, acked.clone());
    acked_at_least(&acked, 50).await;
    signal(&server.child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("exits within the grace period")
        .expect("exit status");
    assert!(status.success(), "clean exit: {status}");
    for client in clients {
        client.await.expect("client task");
    }
    let acked = acked.lock().expect("acked").clone();
    assert_all_acknowledged_stored(&schema.sql().await, &acked).await;
}

#[tokio::test]
async fn sigkill_loses_nothing_that_was_acknowledged() {
    let schema = TestSchema::new();
    let mut server = start(&schema).await;
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let clients = load(server.grpc, 0..4, acked.clone());
    acked_at_least(&acked, 50).await;
    signal(&server.child, "-KILL");
    server.child.wait().await.expect("killed");
    for client in clients {
        client.await.expect("client task");
    }
    let acked = acked.lock().expect("acked").clone();
    assert_all_acknowledged_stored(&schema.sql().await, &acked).await;
}

#[tokio::test]
async fn logs_json_lines_at_the_configured_level() {
    let schema = TestSchema::new();
    let mut server = start_with(&schema, |command| {
        command
            .env_remove("RUST_LOG")
            .env("OTELEPHANT_LOG__FORMAT", "json")
            .env("OTELEPHANT_LOG__LEVEL", "otelephant=info,warn")
            .stderr(Stdio::piped())
    })
    .await;
    signal(&server.child, "-TERM");
    let output = server.logs.take().expect("piped").await.expect("logs");
    let status = server.child.wait().await.expect("exit status");
    assert!(status.success(), "{status}: {output}");

    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("listening")), "{output}");
    assert!(messages.contains(&"stopped"), "{output}");
    for line in &lines {
        assert!(["INFO", "WARN", "ERROR"].contains(&line["level"].as_str().unwrap_or("")), "{line}");
        assert!(line["target"].as_str().is_some_and(|t| t.starts_with("otelephant")), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn a_first_start_logs_one_line_per_step_without_colour_or_notices() {
    let schema = TestSchema::new();
    let mut server =
        start_with(&schema, |command| command.env_remove("RUST_LOG").stderr(Stdio::piped())).await;
    signal(&server.child, "-TERM");
    let output = server.logs.take().expect("piped").await.expect("logs");
    assert!(server.child.wait().await.expect("exit status").success(), "{output}");
    assert!(!output.contains('\u{1b}'), "no colour codes when standard error is not a terminal:\n{output}");
    assert!(!output.contains("NOTICE"), "the database's notices stay out:\n{output}");
    let lines: Vec<&str> = output.lines().collect();
    let ready = lines.iter().position(|l| l.contains("ready, listening")).expect("a ready line");
    let startup = &lines[..=ready];
    assert!(startup[0].contains(&format!("schema {}, PostgreSQL ", schema.name)), "{output}");
    assert!(startup.iter().any(|l| l.contains("applied migration 1 (schema)")), "{output}");
    let partitions: Vec<&&str> = startup.iter().filter(|l| l.contains("partition")).collect();
    assert_eq!(partitions.len(), 1, "one summary line for the partitions:\n{output}");
    let today = otelephant::time::date_text((nanos_now() / 86_400_000_000_000) as i64);
    assert!(
        partitions[0].contains("created 55 daily partitions") && partitions[0].contains(&today),
        "{output}"
    );
    assert!(startup[ready].contains("point an exporter at http://127.0.0.1:"), "{output}");
    assert!(startup[ready].contains("to look at what arrives"), "names the web UI: {output}");
    // The database, each migration, the partitions, ready.
    let steps = otelephant::store::migrate::MIGRATIONS.len() + 3;
    assert!(startup.len() <= steps, "one line per step:\n{output}");
}

#[tokio::test]
async fn a_bad_configuration_is_named_once_and_stops_the_start() {
    for (key, value, says) in [
        ("OTELEPHANT_PIPELINE__WRITERS", "0", "pipeline.writers must be greater than 0"),
        ("OTELEPHANT_POSTGRES__POOL_SIZE", "many", "POOL_SIZE"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_otelephant"))
            .env(key, value)
            .env("RUST_BACKTRACE", "0")
            .output()
            .await
            .expect("run otelephant");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{key}={value} stops the start");
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.matches("invalid configuration").count(), 1, "said once: {stderr}");
    }
    // A start that fails further on names each cause once too, on one line.
    let output = Command::new(env!("CARGO_BIN_EXE_otelephant"))
        .env("OTELEPHANT_POSTGRES__URL", "postgres://postgres@127.0.0.1:1/otelephant")
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .expect("run otelephant");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let error = stderr.lines().find(|l| l.starts_with("Error: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(error.matches("error connecting to server").count(), 1, "{stderr}");
    assert_eq!(error.matches("Connection refused").count(), 1, "{stderr}");
}

#[tokio::test]
async fn tokens_never_appear_in_the_logs() {
    const INGEST: &str = "ingest-secret-5d0c77e1";
    const QUERY: &str = "query-secret-90af3b2c";
    const WRONG: &str = "presented-wrong-1b8e4f";
    let schema = TestSchema::new();
    let file = std::env::temp_dir().join(format!("otelephant-query-tokens-{}", nanos_now()));
    std::fs::write(&file, format!("{QUERY}\n")).expect("token file");
    let mut server = start_with(&schema, |command| {
        command
            .env("RUST_LOG", "debug")
            .env("OTELEPHANT_AUTH__INGEST_TOKEN", INGEST)
            .env("OTELEPHANT_AUTH__QUERY_TOKEN_FILE", &file)
            .stderr(Stdio::piped())
    })
    .await;
    let mut client =
        TraceServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc)).await.expect("connect");
    for (token, stored) in [(WRONG, false), (INGEST, true)] {
        let mut export = tonic::Request::new(request(7));
        export.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
        assert_eq!(client.export(export).await.is_ok(), stored);
    }
    signal(&server.child, "-TERM");
    let output = server.logs.take().expect("piped").await.expect("logs");
    server.child.wait().await.expect("exits");
    let _ = std::fs::remove_file(&file);
    assert!(output.contains("bearer tokens required"), "the logs were captured: {output}");
    for secret in [INGEST, QUERY, WRONG] {
        assert!(!output.contains(secret), "{secret} is in the logs");
    }
}
