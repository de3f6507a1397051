//! otelephant on a Citus cluster: a private coordinator and two workers (PostgreSQL 15 with
//! the citus extension, run as user postgres on free ports), or the cluster whose coordinator
//! `OTELEPHANT_TEST_CITUS_URL` names. Skipped, with one line saying so, where Citus is not
//! installed.

use std::{io::Write, path::PathBuf, process::Command};

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{any_value::Value, AnyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
};
use otelephant::{
    config::CitusMode,
    query::proto::{query_service_client::QueryServiceClient, GetTraceRequest},
    server::Server,
    store::maintenance,
};
use tokio_postgres::{Client, NoTls};

use crate::common::{fixtures, *};

const PGBIN: &str = "/usr/lib/postgresql/15/bin";
const CITUS_LIBRARY: &str = "/usr/lib/postgresql/15/lib/citus.so";
const DATABASE: &str = "otelephant_citus";

/// Runs a PostgreSQL program as the postgres user.
fn as_postgres(program: &str, args: &[&str]) {
    let path = format!("{PGBIN}/{program}");
    let status = Command::new("runuser")
        .args(["-u", "postgres", "--", &path])
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

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
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn sql(url: &str) -> Client {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    tokio::spawn(connection);
    client
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

/// Log records with and without a trace context.
fn log_records(now: u64) -> ExportLogsServiceRequest {
    let records = (0..50u8)
        .map(|i| LogRecord {
            time_unix_nano: now + u64::from(i),
            body: Some(AnyValue { value: Some(Value::StringValue(format!("record {i}"))) }),
            trace_id: if i % 2 == 0 { vec![i + 1; 16] } else { vec![] },
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        }],
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
    logs_client.export(log_records(now)).await.expect("records stored");

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
    assert_eq!(count("spans").await, spans);
    assert!(count("metric_points_number").await > 0);
    assert_eq!(count("logs").await, 50);

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
    assert_eq!(per_node.iter().map(|(_, rows)| rows).sum::<i64>(), spans);

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
    let got: usize = trace
        .into_inner()
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    assert_eq!(got, expected);

    // Storage maintenance: a pass 60 days on, when every partition holding records has expired,
    // drops them all and collects the resources, scopes and series nothing references any
    // more; `retention --dry-run` (a plan) says so beforehand.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60 * 86_400);
    let (partitions, retention) = (&schema.config().partitions, &schema.config().retention);
    let planned = {
        let mut client = server.pool.get().await.expect("client");
        maintenance::plan(&mut client, partitions, retention, later).await.expect("plan")
    };
    let done = maintenance::run_pass(&server.pool, partitions, retention, later)
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
