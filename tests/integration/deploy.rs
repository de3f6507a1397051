//! The deploy kit (`deploy/`) checked as far as this machine allows without a container engine:
//! every YAML file parses, the files they name exist, the Kubernetes probes point at the admin
//! endpoints, the systemd unit passes `systemd-analyze verify`, and every SQL query of the
//! Grafana dashboard runs against the real schema and finds the data it is about. (The
//! collector configuration is validated and run by the real otelcol-contrib in `e2e.rs`.)

use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value::Value, AnyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use yaml_rust2::{Yaml, YamlLoader};

use crate::common::{fixtures::traces, *};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML document in `path`.
fn yaml(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

#[test]
fn deploy_files_parse_and_name_what_exists() {
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    assert!(files.len() >= 6, "{files:?}");
    for file in &files {
        assert!(!yaml(file).is_empty(), "{} is empty", file.display());
    }

    let compose = &yaml(&deploy().join("docker-compose.yml"))[0];
    let services = &compose["services"];
    for service in ["postgres", "otelephant", "collector", "grafana"] {
        assert!(!services[service].is_badvalue(), "compose has {service}");
    }
    let build = &services["otelephant"]["build"];
    let context = deploy().join(build["context"].as_str().expect("context"));
    assert!(context.join(build["dockerfile"].as_str().expect("dockerfile")).is_file());
    for service in ["collector", "grafana"] {
        for volume in services[service]["volumes"].as_vec().expect("volumes") {
            let source = volume.as_str().expect("volume").split(':').next().expect("source");
            if source.starts_with('.') {
                assert!(deploy().join(source).exists(), "{service} mounts {source}");
            }
        }
    }
    // The host name Grafana reads the Jaeger API by is one the read side answers to.
    let sources = yaml(&deploy().join("grafana/provisioning/datasources/otelephant.yaml"));
    let jaeger = sources[0]["datasources"]
        .as_vec()
        .expect("datasources")
        .iter()
        .find(|d| d["type"].as_str() == Some("jaeger"))
        .expect("a Jaeger data source");
    let loki = sources[0]["datasources"]
        .as_vec()
        .expect("datasources")
        .iter()
        .find(|d| d["type"].as_str() == Some("loki"))
        .expect("a Loki data source");
    let allowed = services["otelephant"]["environment"]["OTELEPHANT_UI__ALLOWED_HOSTS"]
        .as_str()
        .expect("allowed hosts");
    let allowed: Vec<String> = serde_json::from_str(allowed).expect("a JSON list");
    for (source, path) in [(jaeger, "/jaeger"), (loki, "/loki")] {
        let url = source["url"].as_str().expect("url");
        let authority = url.split("://").nth(1).expect("authority");
        let host = authority.split(['/', ':']).next();
        assert!(allowed.iter().any(|a| Some(a.as_str()) == host), "{host:?} in {allowed:?}");
        assert!(url.ends_with(path), "{url} is otelephant's {path} API");
    }
    // Trace to logs: the Jaeger data source links a span to its service's logs of the trace
    // through the Loki one, service.name as Loki's service_name.
    let to_logs = &jaeger["jsonData"]["tracesToLogsV2"];
    assert_eq!(to_logs["datasourceUid"].as_str(), loki["uid"].as_str());
    assert_eq!(to_logs["tags"][0]["key"].as_str(), Some("service.name"));
    assert_eq!(to_logs["tags"][0]["value"].as_str(), Some("service_name"));
    assert_eq!(to_logs["filterByTraceID"].as_bool(), Some(true));
    let derived = &loki["jsonData"]["derivedFields"][0];
    assert_eq!(
        derived["datasourceUid"].as_str(),
        jaeger["uid"].as_str(),
        "a log line's trace opens in Jaeger's"
    );
    let collector_args = services["collector"]["command"].as_vec().expect("command");
    for arg in collector_args {
        let file = arg.as_str().expect("arg").rsplit('/').next().expect("file");
        assert!(deploy().join("otelcol").join(file).is_file(), "collector config {file}");
    }

    // The Dockerfile copies what the build needs, and all of it exists.
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).expect("Dockerfile");
    let root = deploy().join("..");
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(root.join(source).exists(), "Dockerfile copies {source}");
        }
    }
    assert!(dockerfile.contains("USER 10001"), "runs as a non-root user");

    let kubernetes = yaml(&deploy().join("kubernetes/otelephant.yaml"));
    let kinds: Vec<&str> = kubernetes.iter().map(|d| d["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service"]);
    let container = &kubernetes[1]["spec"]["template"]["spec"]["containers"][0];
    let admin =
        container["ports"].as_vec().expect("ports").iter().find(|p| p["name"].as_str() == Some("admin"));
    assert_eq!(admin.expect("an admin port")["containerPort"].as_i64(), Some(9464));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    // The ConfigMap's file is a configuration otelephant accepts.
    let toml = kubernetes[0]["data"]["otelephant.toml"].as_str().expect("otelephant.toml");
    let file = std::env::temp_dir().join(format!("otelephant-k8s-{}.toml", nanos_now()));
    std::fs::write(&file, toml).expect("write");
    let loaded = otelephant::config::Config::load(Some(&file), figment::Figment::new());
    let _ = std::fs::remove_file(&file);
    let loaded = loaded.expect("the ConfigMap's otelephant.toml loads");
    loaded.validate().expect("and is valid");
    let service = kubernetes[2]["metadata"]["name"].as_str().expect("the Service's name");
    assert!(loaded.ui.allowed_hosts.iter().any(|h| h == service), "the read side answers to {service}");
}

#[test]
fn systemd_unit_verifies() {
    // systemd-analyze checks that ExecStart's binary exists: point it at the one just built.
    let unit = std::fs::read_to_string(deploy().join("systemd/otelephant.service")).expect("unit");
    let unit = unit.replace("/usr/local/bin/otelephant", env!("CARGO_BIN_EXE_otelephant"));
    let path = std::env::temp_dir().join(format!("otelephant-{}.service", nanos_now()));
    std::fs::write(&path, unit).expect("write");
    let output = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output();
    let _ = std::fs::remove_file(&path);
    let output = output.expect("systemd-analyze (Debian package systemd) is installed");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stderr.is_empty(), "warnings: {}", String::from_utf8_lossy(&output.stderr));
}

/// The trace the dashboard test sends, as the `trace_id` variable holds it.
const TRACE_ID: &str = "abcd0102030405060708090a0b0c0d00";

/// Every dashboard's SQL queries, with Grafana's time-range macro expanded for the last hour and
/// the trace dashboard's variable set to [`TRACE_ID`]; the other queries (the trace panel's, on
/// the Jaeger data source) must name a provisioned data source.
fn dashboard_queries() -> Vec<(String, String)> {
    let provisioned =
        std::fs::read_to_string(deploy().join("grafana/provisioning/datasources/otelephant.yaml"))
            .expect("data sources");
    let now = nanos_now();
    let hour = 3_600_000_000_000u64;
    let mut queries = Vec::new();
    for file in ["otelephant.json", "trace.json"] {
        let text =
            std::fs::read_to_string(deploy().join("grafana/dashboards").join(file)).expect("dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        for panel in dashboard["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().expect("title").to_owned();
            for target in panel["targets"].as_array().expect("targets") {
                let uid = target["datasource"]["uid"].as_str().expect("a data source");
                assert!(
                    provisioned.contains(&format!("uid: {uid}\n")),
                    "{title}: data source {uid} is provisioned"
                );
                let Some(sql) = target["rawSql"].as_str() else {
                    assert_eq!(
                        target["query"], "${trace_id}",
                        "{title}: the trace panel looks up the variable"
                    );
                    continue;
                };
                let mut sql = sql.replace("${trace_id}", TRACE_ID);
                while let Some(start) = sql.find("$__unixEpochNanoFilter(") {
                    let open = start + "$__unixEpochNanoFilter(".len();
                    let close = open + sql[open..].find(')').expect("closing parenthesis");
                    let column = sql[open..close].to_owned();
                    sql.replace_range(start..=close, &format!("{column} BETWEEN {} AND {now}", now - hour));
                }
                assert!(!sql.contains('$'), "a macro or variable the test does not expand: {sql}");
                queries.push((title.clone(), sql));
            }
        }
    }
    queries
}

#[tokio::test]
async fn dashboard_queries_run_against_the_schema_and_find_the_data() {
    let mut t = TestServer::start().await;
    let ten_seconds_ago = nanos_now() - 10_000_000_000;
    t.traces().await.export(traces::request(ten_seconds_ago)).await.expect("spans");
    let record = |severity_number, text: &str| LogRecord {
        time_unix_nano: ten_seconds_ago,
        severity_number,
        severity_text: text.into(),
        body: Some(AnyValue { value: Some(Value::StringValue("payment failed".into())) }),
        trace_id: hex::decode(TRACE_ID).expect("hex"),
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("checkout"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record(17, "ERROR"), record(9, "INFO"), record(9, "")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.logs().await.export(logs).await.expect("logs");

    let queries = dashboard_queries();
    assert_eq!(queries.len(), 6, "one SQL query per panel but the trace view's");
    for (title, sql) in queries {
        let rows = t.sql.query(&sql, &[]).await.unwrap_or_else(|e| panic!("{title}: {e}\n{sql}"));
        assert!(!rows.is_empty(), "{title} finds the data sent:\n{sql}");
        if title == "Logs of the trace" {
            assert_eq!(rows.len(), 3, "the trace's log records");
            assert_eq!(rows[0].get::<_, String>("body"), "payment failed");
        }
        if title == "Log volume by severity" {
            let series: Vec<String> = rows.iter().map(|r| r.get("metric")).collect();
            assert!(
                series.contains(&"ERROR".to_owned()) && series.contains(&"severity 9".to_owned()),
                "{series:?}"
            );
        }
    }
    t.stop().await;
}
