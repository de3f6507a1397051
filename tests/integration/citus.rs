//! otelephant on a Citus cluster: a private coordinator and two workers (PostgreSQL 15 with
//! the citus extension, run as user postgres on free ports), or the cluster whose coordinator
//! `OTELEPHANT_TEST_CITUS_URL` names. Skipped, with one line saying so, where Citus is not
//! installed.

use std::{
    collections::HashSet,
    io::Write,
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    logs::v1::LogRecord,
    resource::v1::Resource,
    trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span},
};
use otelephant::{
    config::CitusMode,
    query::proto::{
        query_service_client::QueryServiceClient, GetTraceRequest, QueryMetricsRequest, SearchLogsRequest,
        TimeRange,
    },
    server::Server,
    store::maintenance,
};
use tokio_postgres::{Client, NoTls};

use crate::common::{
    binary::{self, free_port},
    fixtures,
    postgres::{as_postgres, PGBIN},
    *,
};

const CITUS_LIBRARY: &str = "/usr/lib/postgresql/15/lib/citus.so";
const DATABASE: &str = "otelephant_citus";

/// A private Citus cluster: a coordinator and workers, each a PostgreSQL cluster of its own on
/// a free port; stopped and removed on drop.
struct PrivateCitus {
    dir: PathBuf,
    ports: Vec<u16>,
}

impl PrivateCitus {
    fn start(workers: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("otelephant-citus-{}", nanos_now()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ports: Vec<u16> = (0..=workers).map(|_| free_port()).collect();
        let cluster = Self { dir, ports };
        cluster.chown();
        for (node, port) in cluster.ports.iter().enumerate() {
            let data = cluster.data(node);
            as_postgres("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-N"]);
            let conf = format!(
                "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 shared_preload_libraries = 'citus'\ncitus.node_conninfo = 'sslmode=disable'\n\
                 fsync = off\nshared_buffers = 32MB\nmax_connections = 100\n",
                cluster.dir.display()
            );
            let path = format!("{data}/postgresql.conf");
            let mut existing = std::fs::read_to_string(&path).expect("conf");
            existing.push_str(&conf);
            std::fs::write(&path, existing).expect("conf");
            let log = cluster.dir.join(format!("node{node}.log")).display().to_string();
            as_postgres("pg_ctl", &["-D", &data, "-l", &log, "-w", "start"]);
        }
        cluster
    }

    /// Stops node `node` (a worker when above 0), as an outage would.
    fn stop(&self, node: usize) {
        as_postgres("pg_ctl", &["-D", &self.data(node), "-m", "fast", "-w", "stop"]);
    }

    /// Starts node `node` again.
    fn start_node(&self, node: usize) {
        let log = self.dir.join(format!("node{node}.log")).display().to_string();
        as_postgres("pg_ctl", &["-D", &self.data(node), "-l", &log, "-w", "start"]);
    }

    fn data(&self, node: usize) -> String {
        self.dir.join(format!("node{node}")).display().to_string()
    }

    fn chown(&self) {
        Command::new("chown")
            .args(["-R", "postgres:", &self.dir.display().to_string()])
            .status()
            .expect("chown");
    }

    fn url(&self, node: usize, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.ports[node])
    }

    /// Makes `database` on every node with the extension in it, and registers the workers
    /// for it on the coordinator: what a Citus database needs.
    async fn create_database(&self, database: &str) {
        for node in 0..self.ports.len() {
            sql(&self.url(node, "postgres"))
                .await
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await
                .expect("create");
            sql(&self.url(node, database))
                .await
                .batch_execute("CREATE EXTENSION citus")
                .await
                .expect("extension");
        }
        let coordinator = sql(&self.url(0, database)).await;
        coordinator
            .execute("SELECT citus_set_coordinator_host('127.0.0.1', $1)", &[&i32::from(self.ports[0])])
            .await
            .expect("coordinator");
        for port in &self.ports[1..] {
            coordinator
                .execute("SELECT citus_add_node('127.0.0.1', $1)", &[&i32::from(*port)])
                .await
                .expect("worker");
        }
    }
}

impl Drop for PrivateCitus {
    fn drop(&mut self) {
        for node in 0..self.ports.len() {
            let data = self.data(node);
            let _ = Command::new("runuser")
                .args([
                    "-u",
                    "postgres",
                    "--",
                    &format!("{PGBIN}/pg_ctl"),
                    "-D",
                    &data,
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ])
                .stdout(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn sql(url: &str) -> Client {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    tokio::spawn(connection);
    client
}

/// The private cluster, for a test that stops its nodes or makes databases on them: `None`,
/// after saying why, under `OTELEPHANT_TEST_CITUS_URL` or without Citus.
async fn private_cluster(test: &str) -> Option<PrivateCitus> {
    if std::env::var("OTELEPHANT_TEST_CITUS_URL").is_ok() {
        let _ = writeln!(std::io::stderr(), "citus {test} test skipped: it needs a cluster of its own");
        return None;
    }
    coordinator().await.and_then(|(_, cluster)| cluster)
}

/// The coordinator's URL: the private cluster's (held by the caller) or the one named in
/// `OTELEPHANT_TEST_CITUS_URL`; `None`, after saying why, when there is neither.
async fn coordinator() -> Option<(String, Option<PrivateCitus>)> {
    if let Ok(url) = std::env::var("OTELEPHANT_TEST_CITUS_URL") {
        return Some((url, None));
    }
    if !std::path::Path::new(CITUS_LIBRARY).exists() {
        // Straight to standard error, past the test harness's capture, so that the skip shows.
        let _ = writeln!(
            std::io::stderr(),
            "citus tests skipped: Citus is not installed ({CITUS_LIBRARY} is missing; README: Scaling out with Citus)"
        );
        return None;
    }
    let cluster = PrivateCitus::start(2);
    cluster.create_database(DATABASE).await;
    Some((cluster.url(0, DATABASE), Some(cluster)))
}

/// A metric's data points, each as text that compares exactly (attribute maps normalized),
/// with the metric's identity.
fn points(metric: &opentelemetry_proto::tonic::metrics::v1::Metric) -> Vec<String> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let identity = (&metric.name, &metric.description, &metric.unit, normalize(&metric.metadata));
    let exemplars = |exemplars: &[opentelemetry_proto::tonic::metrics::v1::Exemplar]| {
        exemplars
            .iter()
            .map(|e| {
                format!(
                    "{:?} {:?}",
                    normalize(&e.filtered_attributes),
                    (e.time_unix_nano, &e.span_id, &e.trace_id, e.value)
                )
            })
            .collect::<Vec<_>>()
    };
    macro_rules! each {
        ($points:expr, $with_exemplars:expr, $strip:expr) => {
            $points
                .iter()
                .map(|p| {
                    let mut bare = p.clone();
                    bare.attributes.clear();
                    $strip(&mut bare);
                    let extra: Vec<String> = $with_exemplars(p);
                    format!("{identity:?} {:?} {bare:?} {extra:?}", normalize(&p.attributes))
                })
                .collect()
        };
    }
    use opentelemetry_proto::tonic::metrics::v1 as m;
    match &metric.data {
        Some(Data::Gauge(g)) => {
            each!(
                g.data_points,
                |p: &m::NumberDataPoint| exemplars(&p.exemplars),
                |b: &mut m::NumberDataPoint| b.exemplars.clear()
            )
        }
        Some(Data::Sum(sum)) => {
            let mut out: Vec<String> = each!(
                sum.data_points,
                |p: &m::NumberDataPoint| exemplars(&p.exemplars),
                |b: &mut m::NumberDataPoint| b.exemplars.clear()
            );
            let kind = format!(" {} {}", sum.aggregation_temporality, sum.is_monotonic);
            out.iter_mut().for_each(|p| p.push_str(&kind));
            out
        }
        Some(Data::Histogram(h)) => {
            each!(
                h.data_points,
                |p: &m::HistogramDataPoint| exemplars(&p.exemplars),
                |b: &mut m::HistogramDataPoint| b.exemplars.clear()
            )
        }
        Some(Data::ExponentialHistogram(h)) => each!(
            h.data_points,
            |p: &m::ExponentialHistogramDataPoint| exemplars(&p.exemplars),
            |b: &mut m::ExponentialHistogramDataPoint| b.exemplars.clear()
        ),
        Some(Data::Summary(summary)) => {
            each!(summary.data_points, |_: &m::SummaryDataPoint| Vec::new(), |_: &mut m::SummaryDataPoint| ())
        }
        None => Vec::new(),
    }
}

async fn start(url: &str, schema: &TestSchema) -> Server {
    let mut config = schema.config();
    config.postgres.url = url.to_owned();
    config.postgres.citus = CitusMode::On;
    Server::start(config).await.expect("starts on Citus")
}

#[tokio::test]
async fn every_signal_is_stored_spread_over_the_workers_and_read_back() {
    let Some((url, _cluster)) = coordinator().await else { return };
    let schema = TestSchema::new();
    let server = start(&url, &schema).await;
    let endpoint = format!("http://{}", server.grpc_addr);
    let now = nanos_now();

    // Many traces, so that they land on shards of both workers.
    let mut traces = fixtures::traces::request(now);
    for i in 0..40u8 {
        let mut more: ExportTraceServiceRequest = fixtures::traces::request(now + u64::from(i));
        for rs in &mut more.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    span.trace_id[0] = i;
                    span.trace_id[15] = i.wrapping_mul(37);
                }
            }
        }
        traces.resource_spans.extend(more.resource_spans);
    }
    let mut trace_client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            endpoint.clone(),
        )
        .await
        .expect("connect");
    let answer = trace_client.export(traces.clone()).await.expect("spans stored").into_inner();
    assert_eq!(answer.partial_success, None);
    let mut metrics_client =
        opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient::connect(
            endpoint.clone(),
        )
        .await
        .expect("connect");
    metrics_client.export(fixtures::metrics::request(now)).await.expect("points stored");
    let mut logs_client =
        opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient::connect(
            endpoint.clone(),
        )
        .await
        .expect("connect");
    logs_client.export(fixtures::logs::request(now)).await.expect("records stored");

    // And over OTLP/HTTP, as protobuf and as JSON.
    let http = reqwest::Client::new();
    let mut over_http = fixtures::traces::request(now);
    for span in
        over_http.resource_spans.iter_mut().flat_map(|rs| &mut rs.scope_spans).flat_map(|ss| &mut ss.spans)
    {
        span.trace_id[2] = 0xaa;
    }
    let http_spans = over_http
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum::<usize>();
    let response = http
        .post(format!("http://{}/v1/traces", server.http_addr))
        .header("content-type", "application/x-protobuf")
        .body(prost::Message::encode_to_vec(&over_http))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let response = http
        .post(format!("http://{}/v1/metrics", server.http_addr))
        .json(&serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "over.http", "gauge": {"dataPoints": [{"timeUnixNano": now.to_string(), "asInt": "7"}]}}
        ]}]}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let response = http
        .post(format!("http://{}/v1/logs", server.http_addr))
        .json(&serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "citus-logs"}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": (now + 1_000).to_string(), "severityNumber": 17,
             "body": {"stringValue": "over OTLP/HTTP JSON"}}
        ]}]}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let db = sql(&format!("{url}?options=-csearch_path%3D{}", schema.name)).await;
    let count = |table: &'static str| {
        let db = &db;
        async move {
            db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get::<_, i64>(0)
        }
    };
    let spans = traces
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as i64)
        .sum::<i64>();
    assert_eq!(count("spans").await, spans + http_spans as i64);
    assert!(count("metric_points_number").await > 0);
    let over_http: i64 = db
        .query_one(
            "SELECT count(*) FROM metric_points_number JOIN metric_series USING (series_id) \
             WHERE metric_name = 'over.http' AND value_int = 7",
            &[],
        )
        .await
        .expect("the point sent over HTTP")
        .get(0);
    assert_eq!(over_http, 1);
    assert_eq!(count("logs").await, 51);

    // Every table is distributed (or a reference table) as the layout says.
    let kinds: Vec<(String, String, Option<String>)> = db
        .query(
            "SELECT logicalrelid::regclass::text, partmethod::text, column_to_column_name(logicalrelid, partkey) \
             FROM pg_dist_partition JOIN pg_class c ON c.oid = logicalrelid WHERE NOT c.relispartition ORDER BY 1",
            &[],
        )
        .await
        .expect("pg_dist_partition")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let kind = |table: &str| kinds.iter().find(|k| k.0 == table).map(|k| (k.1.clone(), k.2.clone()));
    assert_eq!(kind("resources"), Some(("n".into(), None)), "{kinds:?}");
    assert_eq!(kind("scopes"), Some(("n".into(), None)));
    assert_eq!(kind("spans"), Some(("h".into(), Some("trace_id".into()))));
    assert_eq!(kind("metric_series"), Some(("h".into(), Some("series_id".into()))));
    assert_eq!(kind("metric_points_number"), Some(("h".into(), Some("series_id".into()))));
    assert_eq!(kind("logs"), Some(("h".into(), Some("timestamp_unix_nano".into()))));
    for rollup in ["span_rollup", "log_rollup", "service_edges", "peer_calls"] {
        assert_eq!(kind(rollup), Some(("h".into(), Some("minute_unix_nano".into()))), "{rollup}");
    }
    // LLM calls lie with their spans, so a trace's calls join its spans on one node.
    assert_eq!(kind("llm_calls"), Some(("h".into(), Some("trace_id".into()))));
    let colocated: bool = db
        .query_one(
            "SELECT count(DISTINCT colocationid) = 1 FROM pg_dist_partition \
             WHERE logicalrelid IN ('spans'::regclass, 'llm_calls'::regclass)",
            &[],
        )
        .await
        .expect("colocation")
        .get(0);
    assert!(colocated, "llm_calls is co-located with spans");

    // The spans' rows are on both workers: counted in each shard, where it lies.
    let per_node: Vec<(i32, i64)> = db
        .query(
            "SELECT s.nodeport, sum(r.result::bigint)::bigint \
             FROM run_command_on_shards('spans', $$SELECT count(*) FROM %s$$) r \
             JOIN citus_shards s USING (shardid) GROUP BY s.nodeport ORDER BY 1",
            &[],
        )
        .await
        .expect("rows per node")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let workers: Vec<i32> = db
        .query(
            "SELECT nodeport FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0 ORDER BY 1",
            &[],
        )
        .await
        .expect("nodes")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(per_node.iter().map(|(port, _)| *port).collect::<Vec<_>>(), workers, "{per_node:?}");
    assert!(per_node.iter().all(|(_, rows)| *rows > 0), "spans on both workers: {per_node:?}");
    assert_eq!(per_node.iter().map(|(_, rows)| rows).sum::<i64>(), spans + http_spans as i64);

    // A trace is read from one shard.
    let trace_id = traces.resource_spans[0].scope_spans[0].spans[0].trace_id.clone();
    let plan: Vec<String> = db
        .query("EXPLAIN SELECT * FROM spans WHERE trace_id = $1", &[&trace_id])
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(plan.iter().any(|line| line.contains("Task Count: 1")), "{}", plan.join("\n"));

    // And the query service reads it back whole.
    let mut query = QueryServiceClient::connect(endpoint).await.expect("connect");
    let trace = query.get_trace(GetTraceRequest { trace_id: hex::encode(&trace_id) }).await.expect("trace");
    let expected = traces
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .filter(|span| span.trace_id == trace_id)
        .count();
    let mut sent = traces.resource_spans.clone();
    for rs in &mut sent {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| span.trace_id == trace_id);
        }
    }
    let got = trace.into_inner().resource_spans;
    assert_eq!(fixtures::query::flatten(&got).len(), expected);
    assert_eq!(fixtures::query::flatten(&got), fixtures::query::flatten(&sent), "every field of every span");

    // An LLM call is derived, stored with its span's trace, listed and summed on the cluster.
    let mut call = crate::llm::model_call("gpt-4o-mini", 1000, 100);
    call.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(crate::common::otlp::kv("user.id", crate::common::otlp::s("citus-user")));
    trace_client.export(call).await.expect("an LLM call stored");
    let calls = query
        .list_llm_calls(otelephant::query::proto::ListLlmCallsRequest::default())
        .await
        .expect("LLM calls")
        .into_inner()
        .calls;
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].input_tokens, calls[0].cost_source.as_str()), (Some(1000), "priced"));
    let overview = query
        .get_llm_overview(otelephant::query::proto::GetLlmOverviewRequest {
            step_nanos: 60_000_000_000,
            ..Default::default()
        })
        .await
        .expect("the LLM overview")
        .into_inner();
    assert_eq!(overview.groups.len(), 1);
    assert_eq!(overview.total.as_ref().map(|t| t.calls), Some(1));
    assert_eq!(overview.steps.iter().map(|s| s.calls).sum::<u64>(), 1);
    assert!((overview.groups[0].cost - (1000.0 * 1.5e-7 + 100.0 * 6e-7)).abs() < 1e-12);
    let per_user = query
        .get_llm_overview(otelephant::query::proto::GetLlmOverviewRequest {
            group_by: "user".into(),
            ..Default::default()
        })
        .await
        .expect("the LLM overview per user")
        .into_inner();
    let users: Vec<(&str, u64)> = per_user.groups.iter().map(|g| (g.user.as_str(), g.calls)).collect();
    assert_eq!(users, [("citus-user", 1)]);
    let conversation = query
        .get_llm_conversation(otelephant::query::proto::GetLlmConversationRequest {
            trace_id: calls[0].trace_id.clone(),
            ..Default::default()
        })
        .await
        .expect("the call as a conversation")
        .into_inner();
    assert_eq!(conversation.calls.len(), 1);
    assert_eq!(conversation.input_tokens, 1000);

    // Log records and data points, field by field.
    let range = Some(TimeRange { start_unix_nano: now - 1, end_unix_nano: now + 1_000 });
    let logs = query
        .search_logs(SearchLogsRequest { time_range: range, page_size: 1000, ..Default::default() })
        .await
        .expect("logs")
        .into_inner();
    let mut got_records: Vec<LogRecord> = logs
        .logs
        .iter()
        .flat_map(|data| &data.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| sl.log_records.clone())
        .collect();
    got_records.sort_by_key(|record| record.time_unix_nano);
    let sent_records = fixtures::logs::request(now).resource_logs[0].scope_logs[0].log_records.clone();
    assert_eq!(got_records, sent_records);
    let sent_metrics = fixtures::metrics::request(now);
    for metric in
        sent_metrics.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics)
    {
        let answer = query
            .query_metrics(QueryMetricsRequest {
                name: metric.name.clone(),
                time_range: Some(TimeRange {
                    start_unix_nano: now - 3_600_000_000_000,
                    end_unix_nano: now + 3_600_000_000_000,
                }),
                ..Default::default()
            })
            .await
            .expect("points")
            .into_inner();
        let got: Vec<String> = answer
            .raw
            .iter()
            .flat_map(|data| &data.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .flat_map(points)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut expected: Vec<String> = points(metric);
        expected.sort();
        expected.dedup();
        assert_eq!(got, expected, "{}", metric.name);
    }

    // The rollups count every span and record on the cluster too, and a pass folds and pairs
    // there (as it would two minutes from now, when these minutes have closed): a call from
    // checkout to payment (its client span naming the host payment.internal), each side
    // exported on its own, and a query from checkout to PostgreSQL, which sends no spans.
    for (service, span_id, parent, kind, peer) in [
        ("checkout", [0xc1; 8], vec![], SpanKind::Client, ("server.address", "payment.internal")),
        ("payment", [0xc2; 8], vec![0xc1; 8], SpanKind::Server, ("", "")),
        ("checkout", [0xc3; 8], vec![], SpanKind::Client, ("db.system.name", "postgresql")),
    ] {
        let span = Span {
            trace_id: vec![0xee; 16],
            span_id: span_id.to_vec(),
            parent_span_id: parent,
            name: "charge".into(),
            kind: kind as i32,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: if peer.0.is_empty() { vec![] } else { vec![kv(peer.0, s(peer.1))] },
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s(service))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        };
        trace_client.export(request).await.expect("a side of the call stored");
    }
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(120);
    let config = schema.config();
    let (pool, rollups) = (&server.pool, &config.rollups);
    let pass = |sweep| async move {
        loop {
            match otelephant::store::rollups::run_pass(pool, rollups, later, sweep).await {
                Ok(Some(report)) => return report,
                Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(err) => panic!("rollup pass on Citus: {err}"),
            }
        }
    };
    let calls = || async {
        db.query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM service_edges
             WHERE parent_service = 'checkout' AND child_service = 'payment'",
            &[],
        )
        .await
        .expect("edges")
        .get::<_, i64>(0)
    };
    let report = pass(true).await;
    assert!(report.paired >= 1, "{report:?}");
    assert_eq!(calls().await, 1, "the call from checkout to payment is paired on the cluster");
    let peers = || async {
        let learned: Vec<(String, String)> = db
            .query("SELECT caller_service, peer FROM peer_services", &[])
            .await
            .expect("peer_services")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let called: Vec<(String, i64)> = db
            .query("SELECT peer, sum(calls)::bigint FROM peer_calls GROUP BY 1 ORDER BY 1", &[])
            .await
            .expect("peer_calls")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        (learned, called)
    };
    let expected_peers = (
        vec![("checkout".to_owned(), "payment.internal".to_owned())],
        vec![("payment.internal".to_owned(), 1), ("postgresql".to_owned(), 1)],
    );
    assert_eq!(peers().await, expected_peers, "payment.internal is payment; both calls counted");
    // Rebuilt, the hour counts the same spans, records and call.
    let hour = (now - now % 3_600_000_000_000) as i64;
    otelephant::store::rollups::rebuild(&server.pool, hour, hour + 3_600_000_000_000)
        .await
        .expect("rebuilt on the cluster");
    pass(false).await;
    assert_eq!(calls().await, 1, "the rebuilt hour pairs the call once");
    assert_eq!(peers().await, expected_peers, "the rebuilt hour counts the calls to peers once");
    let counted: (i64, i64) = db
        .query_one("SELECT (SELECT sum(spans)::bigint FROM span_rollup), (SELECT sum(records)::bigint FROM log_rollup)", &[])
        .await
        .map(|row| (row.get(0), row.get(1)))
        .expect("rollups");
    // The spans sent, the HTTP ones, three calling spans and the LLM call's.
    assert_eq!(counted, (spans + http_spans as i64 + 4, 51));

    // Every read surface answers from the cluster: each query service RPC in its HTTP/JSON
    // form, Jaeger's API, and the web UI's pages.
    read_surfaces(&format!("http://{}", server.http_addr), now, &hex::encode(&trace_id)).await;

    // Late records, three days old, land in the catch-all (days_behind is 1); the next pass
    // makes their day's partition and moves them into it.
    let late = now - 3 * 86_400_000_000_000;
    let config = schema.config();
    let mut late_spans = fixtures::traces::request(late);
    for span in
        late_spans.resource_spans.iter_mut().flat_map(|rs| &mut rs.scope_spans).flat_map(|ss| &mut ss.spans)
    {
        span.trace_id[1] = 0xee;
    }
    trace_client.export(late_spans).await.expect("late spans stored");
    logs_client.export(fixtures::logs::request(late)).await.expect("late records stored");
    assert!(count("spans_default").await > 0);
    let late_spans = count("spans_default").await;
    assert!(late_spans > 0);
    let (partitions, retention) = (&config.partitions, &config.retention);
    // With columnar storage in the database, closed days are converted (on the workers).
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS citus_columnar").await.expect("citus_columnar");
    let moved = maintenance::run_pass(
        &server.pool,
        partitions,
        retention,
        &config.storage,
        std::time::SystemTime::now(),
    )
    .await
    .expect("maintenance pass")
    .expect("no other pass");
    let day = (late / 86_400_000_000_000) as i32;
    assert!(
        moved.created.contains(&("spans", day)) && moved.created.contains(&("logs", day)),
        "{:?}",
        moved.created
    );
    assert_eq!((count("spans_default").await, count("logs_default").await), (0, 0));
    // Closed days are analyzed on the cluster too (the late day among them).
    assert!(moved.analyzed.iter().any(|name| name.starts_with("spans_p")), "{:?}", moved.analyzed);
    let partition = format!("spans_p{}", otelephant::time::date_text(day.into()).replace('-', ""));
    let placed: Vec<(i32, i64)> = db
        .query(
            "SELECT s.nodeport, sum(r.result::bigint)::bigint \
             FROM run_command_on_shards($1::text::regclass, $$SELECT count(*) FROM %s$$) r \
             JOIN citus_shards s USING (shardid) GROUP BY s.nodeport ORDER BY 1",
            &[&partition],
        )
        .await
        .expect("the late day's partition is distributed")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(placed.iter().map(|(port, _)| *port).collect::<Vec<_>>(), workers, "{placed:?}");
    assert_eq!(placed.iter().map(|(_, rows)| rows).sum::<i64>(), late_spans, "{partition}: {placed:?}");
    // The late day ended more than two days ago: it was converted to columnar storage, on the
    // workers' shards too.
    assert!(moved.converted.iter().any(|p| p.name == partition), "{:?}", moved.converted);
    let methods: Vec<String> = db
        .query(
            "SELECT DISTINCT r.result FROM run_command_on_shards($1::text::regclass, \
             $$SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = '%s'::regclass$$) r",
            &[&partition],
        )
        .await
        .expect("shards' access method")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(methods, ["columnar"]);
    // Laid out as on a single PostgreSQL (the workers were told the coordinator's SET LOCALs):
    // spans in 1,000-row chunk groups of 10,000-row stripes, kept as the shards' options (the
    // last figure counts stripes laid out otherwise).
    let layouts: Vec<String> = db
        .query(
            "SELECT DISTINCT r.result FROM run_command_on_shards($1::text::regclass, \
             $$SELECT o.chunk_group_row_limit || ' ' || o.stripe_row_limit || ' ' \
                      || count(*) FILTER (WHERE s.chunk_row_count <> o.chunk_group_row_limit) \
               FROM columnar.options o LEFT JOIN columnar.stripe s USING (relation) \
               WHERE o.relation = '%s'::regclass GROUP BY o.chunk_group_row_limit, o.stripe_row_limit$$) r",
            &[&partition],
        )
        .await
        .expect("shards' columnar layout")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(layouts, ["1000 10000 0"]);

    // LLM message content past `retention.llm_content` is replaced on the workers' shards; the
    // late day, columnar now, cannot be updated and is said to be kept.
    trace_client.export(crate::content::call_with_content(0x5c, now)).await.expect("a call with content");
    let short_content = otelephant::config::RetentionConfig {
        llm_content: otelephant::config::Retention::days(1),
        ..retention.clone()
    };
    let two_days_on = std::time::SystemTime::now() + std::time::Duration::from_secs(2 * 86_400);
    let removed =
        maintenance::run_pass(&server.pool, partitions, &short_content, &config.storage, two_days_on)
            .await
            .expect("maintenance pass")
            .expect("no other pass");
    let today_spans =
        format!("spans_p{}", otelephant::time::date_text((now / 86_400_000_000_000) as i64).replace('-', ""));
    assert!(
        removed.content_removed.iter().any(|(p, n)| p.name == today_spans && n.is_some_and(|n| n >= 1)),
        "{:?}",
        removed.content_removed
    );
    assert!(removed.content_kept.iter().any(|p| p.name == partition), "{:?}", removed.content_kept);
    let (attributes, _) = crate::content::stored_span(&db, 0x5c).await;
    assert_eq!(attributes["gen_ai.input.messages"], "[content removed after 1day]");
    assert_eq!(attributes["gen_ai.request.model"], "gpt-4o-mini");

    // Storage maintenance: a pass 60 days on, when every partition holding records has expired,
    // drops them all and collects the resources, scopes and series nothing references any
    // more; `retention --dry-run` (a plan) says so beforehand.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60 * 86_400);
    let planned = {
        let mut client = server.pool.get().await.expect("client");
        maintenance::plan(&mut client, partitions, retention, &config.storage, later).await.expect("plan")
    };
    let done = maintenance::run_pass(&server.pool, partitions, retention, &config.storage, later)
        .await
        .expect("maintenance pass")
        .expect("no other pass");
    let names =
        |report: &maintenance::Report| report.dropped.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&planned), names(&done));
    assert_eq!(planned.collected, done.collected);
    for table in ["spans", "logs", "metric_points_number"] {
        assert!(done.dropped.iter().any(|p| p.table == table), "{table} dropped: {:?}", names(&done));
        assert_eq!(count(table).await, 0, "{table}");
    }
    assert!(done.collected.series > 0 && done.collected.resources > 0 && done.collected.scopes > 0);
    for table in ["metric_series", "resources", "scopes"] {
        assert_eq!(count(table).await, 0, "{table} collected");
    }

    server.shutdown().await.expect("clean shutdown");
    db.batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.name)).await.expect("drop schema");
}

/// The binary on the Citus coordinator at `url`.
fn on_citus<'c>(command: &'c mut tokio::process::Command, url: &str) -> &'c mut tokio::process::Command {
    command
        .env("OTELEPHANT_POSTGRES__URL", url)
        .env("OTELEPHANT_POSTGRES__CITUS", "on")
        .env("RUST_LOG", "warn")
}

#[tokio::test]
async fn replicas_write_at_once_and_a_killed_one_loses_nothing_acknowledged() {
    let Some((url, _cluster)) = coordinator().await else { return };
    let schema = TestSchema::new();

    // Both start at once on a new schema: the migrations and the layout take turns under the
    // coordinator's locks.
    let (mut first, mut second) = tokio::join!(
        binary::start_with(&schema, |command| on_citus(command, &url)),
        binary::start_with(&schema, |command| on_citus(command, &url))
    );
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let acked_second = Arc::new(Mutex::new(HashSet::new()));
    let first_clients = binary::load(first.grpc, 0..4, acked.clone());
    let second_clients = binary::load(second.grpc, 4..8, acked_second.clone());
    binary::acked_at_least(&acked, 50).await;
    binary::acked_at_least(&acked_second, 50).await;

    binary::signal(&first.child, "-KILL");
    first.child.wait().await.expect("killed");
    // The other replica goes on.
    let before = acked_second.lock().expect("acked").len();
    binary::acked_at_least(&acked_second, before + 50).await;
    binary::signal(&second.child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), second.child.wait())
        .await
        .expect("exits within the grace period")
        .expect("exit status");
    assert!(status.success(), "clean exit: {status}");
    for client in first_clients.into_iter().chain(second_clients) {
        client.await.expect("client task");
    }

    let db = sql(&format!("{url}?options=-csearch_path%3D{}", schema.name)).await;
    let mut all = acked.lock().expect("acked").clone();
    all.extend(acked_second.lock().expect("acked").iter());
    binary::assert_all_acknowledged_stored(&db, &all).await;
    db.batch_execute(&format!("DROP SCHEMA {} CASCADE", schema.name)).await.expect("drop schema");
}

#[tokio::test]
async fn a_worker_down_is_unavailable_and_ingest_resumes_when_it_is_back() {
    let Some(cluster) = private_cluster("worker outage").await else { return };
    let url = cluster.url(0, DATABASE);
    let schema = TestSchema::new();
    let server = start(&url, &schema).await;
    let mut client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            format!("http://{}", server.grpc_addr),
        )
        .await
        .expect("connect");
    let mut acked = HashSet::new();
    let mut refused = Vec::new();
    let mut trace = 0u64;
    let mut send = async |acked: &mut HashSet<u64>, refused: &mut Vec<tonic::Code>| {
        trace += 1;
        match client.export(binary::request(trace)).await {
            Ok(_) => {
                acked.insert(trace);
            }
            Err(status) => refused.push(status.code()),
        }
    };
    while acked.len() < 30 {
        send(&mut acked, &mut refused).await;
    }
    assert!(refused.is_empty(), "{refused:?}");

    // With a worker down, requests whose rows have shards on it cannot be stored: retryable.
    cluster.stop(2);
    while refused.len() < 5 {
        send(&mut acked, &mut refused).await;
    }
    assert!(refused.iter().all(|code| *code == tonic::Code::Unavailable), "{refused:?}");

    // Back, ingest resumes by itself.
    cluster.start_node(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut resumed = 0;
    while resumed < 30 {
        assert!(tokio::time::Instant::now() < deadline, "ingest did not resume: {refused:?}");
        let before = acked.len();
        send(&mut acked, &mut refused).await;
        if acked.len() > before {
            resumed += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    server.shutdown().await.expect("clean shutdown");
    let db = sql(&format!("{url}?options=-csearch_path%3D{}", schema.name)).await;
    binary::assert_all_acknowledged_stored(&db, &acked).await;
}

/// Calls every query service RPC over HTTP/JSON, Jaeger's API and the web UI's pages at `base`,
/// where traces, metrics and logs of around `now` are stored, and checks that each answers
/// with what is there.
async fn read_surfaces(base: &str, now: u64, trace_id: &str) {
    let http = reqwest::Client::new();
    let range = serde_json::json!({
        "startUnixNano": (now - 3_600_000_000_000).to_string(),
        "endUnixNano": (now + 3_600_000_000_000).to_string(),
    });
    let call = |method: &'static str, mut body: serde_json::Value| {
        if !matches!(method, "GetTrace" | "ListMetrics" | "CountLogs" | "LogFacets" | "ScatterTraces") {
            body["timeRange"] = range.clone();
        }
        let request = http.post(format!("{base}/otelephant.query.v1.QueryService/{method}")).json(&body);
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status();
            let json: serde_json::Value = response.json().await.expect("JSON");
            assert_eq!(status, 200, "{method}: {json}");
            json
        }
    };
    let services = call("ListServices", serde_json::json!({})).await;
    let service =
        services["services"][0].as_str().unwrap_or_else(|| panic!("services: {services}")).to_owned();
    let nonempty = |method: &str, json: &serde_json::Value, field: &str| {
        let list = json.pointer(field).and_then(|list| list.as_array());
        assert!(list.is_some_and(|list| !list.is_empty()), "{method}: {json}");
    };
    let traces = call("SearchTraces", serde_json::json!({ "service": service })).await;
    nonempty("SearchTraces", &traces, "/traces");
    let trace = call("GetTrace", serde_json::json!({ "traceId": trace_id })).await;
    nonempty("GetTrace", &trace, "/resourceSpans");
    let stats = call("ListServiceStats", serde_json::json!({})).await;
    nonempty("ListServiceStats", &stats, "/services");
    let dependencies = call("ListServiceDependencies", serde_json::json!({})).await;
    // checkout's query to PostgreSQL is a leaf; its call to payment.internal is the edge to payment.
    let peers: Vec<&str> = dependencies["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("ListServiceDependencies: {dependencies}"))
        .iter()
        .filter_map(|p| p["peer"].as_str())
        .collect();
    assert_eq!(peers, ["postgresql"], "{dependencies}");
    let operations = call("ListOperations", serde_json::json!({ "service": service })).await;
    nonempty("ListOperations", &operations, "/operations");
    let logs = call("SearchLogs", serde_json::json!({})).await;
    nonempty("SearchLogs", &logs, "/logs/resourceLogs");
    let filters = serde_json::json!({ "timeRange": range });
    let counted = call("CountLogs", serde_json::json!({ "filters": filters })).await;
    nonempty("CountLogs", &counted, "/steps");
    let facets = call("LogFacets", serde_json::json!({ "filters": filters })).await;
    // The records' resource is empty (no service) and their attributes differ: a sample only.
    assert!(facets["sampled"].as_str().is_some_and(|n| n != "0"), "LogFacets: {facets}");
    let scatter =
        call("ScatterTraces", serde_json::json!({ "filters": { "timeRange": range, "service": service } }))
            .await;
    nonempty("ScatterTraces", &scatter, "/points");
    // More requests than points: the sample, a stretch at a time, on the cluster too.
    let sample =
        call("ScatterTraces", serde_json::json!({ "filters": { "timeRange": range }, "maxPoints": 1 })).await;
    assert_eq!(sample["sampled"], serde_json::json!(true), "ScatterTraces: {sample}");
    assert_eq!(sample["points"].as_array().map(Vec::len), Some(1), "ScatterTraces: {sample}");
    // Loki's API: a log query, Explore's log volume (counted by the workers), a metric read
    // through the pipeline, stats of the selector.
    let loki = |path: &'static str, query: &'static str| {
        let request = http.get(format!("{base}/loki/api/v1/{path}")).query(&[
            ("query", query.to_owned()),
            ("start", (now - 3_600_000_000_000).to_string()),
            ("end", (now + 3_600_000_000_000).to_string()),
            ("step", "3600000ms".to_owned()),
        ]);
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status();
            let json: serde_json::Value = response.json().await.expect("JSON");
            assert_eq!(status, 200, "{query}: {json}");
            json
        }
    };
    let lines = loki("query_range", r#"{service_name="citus-logs"} |= "OTLP""#).await;
    assert_eq!(lines["data"]["result"][0]["values"][0][1], "over OTLP/HTTP JSON", "{lines}");
    let total = |json: &serde_json::Value| -> f64 {
        json["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{json}"))
            .iter()
            .flat_map(|series| series["values"].as_array().expect("values").iter())
            .map(|value| value[1].as_str().expect("a sample").parse::<f64>().expect("a number"))
            .sum()
    };
    let volume = loki(
        "query_range",
        r#"sum by (level, detected_level) (count_over_time({service_name="citus-logs"} | drop __error__ [1h]))"#,
    )
    .await;
    assert_eq!(volume["data"]["result"][0]["metric"]["detected_level"], "error", "{volume}");
    assert_eq!(total(&volume), 1.0, "{volume}");
    let piped =
        loki("query_range", r#"sum(count_over_time({service_name="citus-logs"} |~ "over .*" [1h]))"#).await;
    assert_eq!(total(&piped), 1.0, "{piped}");
    let stats = loki("index/stats", r#"{service_name="citus-logs"}"#).await;
    assert_eq!(stats["entries"], 1, "{stats}");

    let metrics = call("ListMetrics", serde_json::json!({})).await;
    nonempty("ListMetrics", &metrics, "/metrics");
    let metric = metrics["metrics"][0]["name"].as_str().expect("a metric name").to_owned();
    let points = call("QueryMetrics", serde_json::json!({ "name": metric })).await;
    assert_ne!(points, serde_json::json!({}), "QueryMetrics: {points}");

    let start = now / 1_000 - 3_600_000_000;
    let end = now / 1_000 + 3_600_000_000;
    for path in [
        "/jaeger/api/services".to_owned(),
        format!("/jaeger/api/services/{service}/operations"),
        format!("/jaeger/api/operations?service={service}"),
        format!("/jaeger/api/traces?service={service}&start={start}&end={end}"),
        format!("/jaeger/api/traces/{trace_id}"),
        format!("/jaeger/api/dependencies?endTs={}&lookback=7200000", end / 1_000),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.expect("sent");
        let status = response.status();
        let json: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(status, 200, "{path}: {json}");
        assert!(json["errors"].is_null(), "{path}: {json}");
    }
    for path in [
        "/".to_owned(),
        format!("/operations?service={service}"),
        format!("/traces?service={service}"),
        format!("/trace/{trace_id}"),
        "/logs".to_owned(),
        "/metrics".to_owned(),
        format!("/metric?name={metric}"),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.expect("sent");
        let status = response.status();
        let page = response.text().await.expect("page");
        assert_eq!(status, 200, "{path}");
        assert!(!page.contains("The server answered with an error"), "{path}: {page}");
    }
}

#[tokio::test]
async fn a_database_not_set_up_for_citus_is_refused_with_what_to_do() {
    let Some(cluster) = private_cluster("set-up").await else { return };
    let schema = TestSchema::new();
    let refusal = |url: String| {
        let mut config = schema.config();
        config.postgres.url = url;
        async move { Server::start(config).await.err().map(|e| e.to_string()).unwrap_or_default() }
    };
    // A database otelephant makes itself is made on the coordinator alone, without Citus.
    let missing = refusal(cluster.url(0, "otelephant_citus_missing")).await;
    assert!(missing.contains("has no citus extension although the server runs Citus"), "{missing}");
    assert!(
        missing.contains("CREATE EXTENSION citus") && missing.contains("postgres.citus = \"off\""),
        "{missing}"
    );
    // The extension on the coordinator alone: no workers, every shard would stay there.
    sql(&cluster.url(0, "postgres"))
        .await
        .batch_execute("CREATE DATABASE otelephant_citus_alone")
        .await
        .expect("db");
    sql(&cluster.url(0, "otelephant_citus_alone"))
        .await
        .batch_execute("CREATE EXTENSION citus")
        .await
        .expect("ext");
    let alone = refusal(cluster.url(0, "otelephant_citus_alone")).await;
    assert!(alone.contains("has the citus extension but no worker nodes"), "{alone}");
    // Told to keep it off Citus, it starts.
    let mut config = schema.config();
    config.postgres.url = cluster.url(0, "otelephant_citus_missing");
    config.postgres.citus = CitusMode::Off;
    let server = Server::start(config).await.expect("starts with postgres.citus = off");
    server.shutdown().await.expect("clean shutdown");
}
