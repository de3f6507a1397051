//! Query latency on a few million spans: GetTrace by id and SearchTraces(service, last hour),
//! through a running server's gRPC API, and the web UI's span details (one span of a trace)
//! over HTTP, with p50/p99 over many calls.
//!
//! `cargo run --release --example query_bench [SPANS] [DATABASE_URL] [--columnar]`
//!
//! The spans are generated inside PostgreSQL (INSERT ... SELECT generate_series) into a scratch
//! schema: 10 spans a trace (trace ids scattered, as random ids are), 50 services, 20 operation
//! names, spread evenly over the last 24 hours, each with 6 attributes. The schema is dropped at
//! the end.
//!
//! With `--columnar`, every partition holding spans (today's too) is converted to columnar
//! storage, as maintenance converts closed days, before the queries run: the database needs
//! the `citus_columnar` extension.

use std::time::{Duration, Instant};

use otelephant::{
    config::Config,
    query::proto::{query_service_client::QueryServiceClient, GetTraceRequest, SearchTracesRequest},
    server::Server,
};

const SERVICES: i64 = 50;
const SPANS_PER_TRACE: i64 = 10;
const CALLS: usize = 200;
/// Trace t's id is t * SCATTER mod 2^32 (odd, so no two traces share one): ids in no relation
/// to the order spans are stored in, as random trace ids are.
const SCATTER: i64 = 2_654_435_761;

fn trace_id(trace: i64) -> String {
    format!("{:032x}", trace * SCATTER % (1 << 32))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<34} calls {:>4}  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let columnar = std::env::args().any(|arg| arg == "--columnar");
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--columnar");
    let spans: i64 = args.next().map_or(Ok(3_000_000), |n| n.parse())?;
    let url = args.next().unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/otelephant_bench".into());
    let schema = format!("query_bench_{}", std::process::id());
    let mut config = Config::default();
    config.postgres.url = url.clone();
    config.postgres.schema = schema.clone();
    config.otlp.grpc_addr = ([127, 0, 0, 1], 0).into();
    config.otlp.http_addr = ([127, 0, 0, 1], 0).into();
    config.admin.addr = ([127, 0, 0, 1], 0).into();
    let server = Server::start(config).await?;

    let (sql, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    sql.batch_execute(&format!("SET search_path = {schema}")).await?;
    let now_ns: i64 = sql.query_one("SELECT (extract(epoch FROM now()) * 1e9)::bigint", &[]).await?.get(0);
    let loaded = Instant::now();
    sql.execute(
        "INSERT INTO resources (resource_id, attributes, dropped_attributes_count, schema_url)
         SELECT s, jsonb_build_object('service.name', 'service-' || s, 'host.name', 'host-' || s), 0, ''
         FROM generate_series(1, $1::bigint) s",
        &[&SERVICES],
    )
    .await?;
    sql.execute(
        "INSERT INTO scopes (scope_id, name, version, attributes, dropped_attributes_count, schema_url)
         VALUES (1, 'bench', '1.0', '{}', 0, '')",
        &[],
    )
    .await?;
    // Trace t holds spans t*10 .. t*10+9 and belongs to service t % 50; the first span is the root.
    sql.execute(
        "INSERT INTO spans
         SELECT $2::bigint - (i * (86400 * 1000000000::bigint / $1::bigint)) AS start_time_unix_nano,
                $2::bigint - (i * (86400 * 1000000000::bigint / $1::bigint)) + 1000000 * (1 + i % 97),
                decode(lpad(to_hex((i / 10) * $4::bigint % 4294967296), 32, '0'), 'hex'),
                decode(lpad(to_hex(i), 16, '0'), 'hex'),
                CASE WHEN i % 10 = 0 THEN NULL ELSE decode(lpad(to_hex(i - i % 10), 16, '0'), 'hex') END,
                '', 1, 'operation-' || (i % 20), 2, (i / 10) % $3::bigint + 1, 1,
                jsonb_build_object('http.route', '/api/' || (i % 20), 'http.response.status_code', 200 + (i % 3) * 100,
                                   'http.request.method', 'GET', 'net.peer.port', 40000 + i % 1000,
                                   'user.id', 'user-' || (i % 5000), 'sampled', true),
                0, NULL, 0, NULL, 0, CASE WHEN i % 50 = 0 THEN 2 ELSE 0 END, ''
         FROM generate_series(0, $1::bigint - 1) i",
        &[&spans, &now_ns, &SERVICES, &SCATTER],
    )
    .await?;
    if columnar {
        let partitions = sql
            .query(
                "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'spans'::regclass AND c.relname ~ '_p[0-9]{8}$'",
                &[],
            )
            .await?;
        for partition in partitions {
            let name: String = partition.get(0);
            let started = Instant::now();
            sql.batch_execute("BEGIN").await?;
            for statement in otelephant::store::maintenance::columnar_rewrite("spans", &name) {
                sql.batch_execute(&statement).await?;
            }
            sql.batch_execute("COMMIT").await?;
            println!("{name}: converted to columnar in {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    sql.batch_execute("ANALYZE spans; ANALYZE resources; ANALYZE scopes").await?;
    let size: i64 = sql
        .query_one(
            "SELECT sum(pg_total_relation_size(inhrelid))::bigint FROM pg_inherits WHERE inhparent = 'spans'::regclass",
            &[],
        )
        .await?
        .get(0);
    println!(
        "loaded {spans} spans ({} traces, {SERVICES} services, last 24 h) in {:.1} s; spans on disk ({}): {} MiB",
        spans / SPANS_PER_TRACE,
        loaded.elapsed().as_secs_f64(),
        if columnar { "columnar" } else { "rows" },
        size / (1 << 20)
    );

    let mut client = QueryServiceClient::connect(format!("http://{}", server.grpc_addr)).await?;
    let traces = spans / SPANS_PER_TRACE;
    let mut samples = Vec::with_capacity(CALLS);
    for call in 0..CALLS as i64 {
        // Spread over all traces, old and new.
        let trace = (call * 7919 * 104_729) % traces;
        let started = Instant::now();
        let data = client.get_trace(GetTraceRequest { trace_id: trace_id(trace) }).await?.into_inner();
        samples.push(started.elapsed());
        let got: usize = data.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        anyhow::ensure!(got == SPANS_PER_TRACE as usize, "trace {trace} came back with {got} spans");
    }
    report("GetTrace (10 spans)", samples);

    let mut samples = Vec::with_capacity(CALLS);
    for call in 0..CALLS as i64 {
        let service = format!("service-{}", call % SERVICES + 1);
        let started = Instant::now();
        let page =
            client.search_traces(SearchTracesRequest { service, ..Default::default() }).await?.into_inner();
        samples.push(started.elapsed());
        anyhow::ensure!(!page.traces.is_empty(), "{call}: no traces in the last hour");
    }
    report("SearchTraces(service, last hour)", samples);

    let http = reqwest::Client::new();
    let mut samples = Vec::with_capacity(CALLS);
    for call in 0..CALLS as i64 {
        let trace = (call * 7919 * 104_729) % traces;
        let span = format!("{:016x}", trace * SPANS_PER_TRACE + 3);
        let url = format!("http://{}/trace/{}/span/{span}", server.http_addr, trace_id(trace));
        let started = Instant::now();
        let answer = http.get(url).send().await?;
        let status = answer.status();
        let body = answer.text().await?;
        samples.push(started.elapsed());
        anyhow::ensure!(status.is_success() && body.contains("span-details"), "{call}: {status} {body}");
    }
    report("span details (UI, one span)", samples);

    let plan = sql
        .query(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
             SELECT * FROM spans WHERE trace_id = decode($1, 'hex')",
            &[&trace_id(12345)],
        )
        .await?;
    println!("\nGetTrace's span lookup:");
    for line in plan.iter().take(6) {
        println!("  {}", line.get::<_, String>(0));
    }

    server.shutdown().await?;
    sql.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await?;
    Ok(())
}
