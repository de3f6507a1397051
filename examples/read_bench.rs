//! The read side at volume: the reads a person (the web UI's pages) and Grafana (the JSON and
//! Jaeger APIs) make by default, timed against any running otelephant, on millions of spans
//! spread over the last 24 hours. `bench/reads.sh` runs it at 1M and 10M spans, against this
//! build and an earlier one on the same data.
//!
//! `cargo run --release --example read_bench -- load SPANS DATABASE_URL SCHEMA`
//!   makes SCHEMA (migrations of this build) and stores SPANS spans in it (and SPANS / 10 log
//!   records, and 2.88M metric points of 2,000 series: a counter and a histogram per service
//!   and route, a point a minute), in the order they
//!   start: traces of 10 spans whose children cross services (client spans calling server spans
//!   of other services, or databases, queues and remote hosts that send no spans), 50 services
//!   with a server and a client operation each (60 names in all), 2% failed, durations of 1-97 ms with a tail of 2 s spans. They are generated inside PostgreSQL (INSERT ... SELECT), so their
//!   rollups are built as `otelephant rollups rebuild` builds them, the state ingest leaves once
//!   its minutes are folded; then every minute is paired.
//! `cargo run --release --example read_bench -- time BASE_URL LABEL [RUNS]`
//!   times each read RUNS times (default 5) through BASE_URL (the OTLP/HTTP port) and prints
//!   the median and the slowest.

use std::time::{Duration, Instant, SystemTime};

use otelephant::{config::Config, server::Server};

const SERVICES: i64 = 50;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") => {
            let spans: i64 = args.get(1).map_or(Ok(1_000_000), |n| n.parse())?;
            let url = args
                .get(2)
                .cloned()
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/otelephant_bench".into());
            let schema = args.get(3).cloned().unwrap_or_else(|| "read_bench".into());
            load(spans, &url, &schema).await
        }
        Some("time") => {
            let base = args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:4318".into());
            let label = args.get(2).cloned().unwrap_or_default();
            let runs: usize = args.get(3).map_or(Ok(5), |n| n.parse())?;
            time(&base, &label, runs).await
        }
        _ => anyhow::bail!("usage: read_bench load SPANS DATABASE_URL SCHEMA | time BASE_URL LABEL [RUNS]"),
    }
}

async fn load(spans: i64, url: &str, schema: &str) -> anyhow::Result<()> {
    let (sql, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    sql.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
    let mut config = Config::default();
    config.postgres.url = url.to_owned();
    config.postgres.schema = schema.to_owned();
    config.otlp.grpc_addr = ([127, 0, 0, 1], 0).into();
    config.otlp.http_addr = ([127, 0, 0, 1], 0).into();
    config.admin.addr = ([127, 0, 0, 1], 0).into();
    // Migrations and partitions of this build; the server's own passes are not wanted here.
    config.rollups.pass_interval_secs = 86_400;
    let server = Server::start(config.clone()).await?;
    sql.batch_execute(&format!("SET search_path = {schema}")).await?;
    let now: i64 = sql.query_one("SELECT (extract(epoch FROM now()) * 1e9)::bigint", &[]).await?.get(0);
    let started = Instant::now();
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
    // Span i is span j = i % 10 of trace t = i / 10; its parent is span (j - 1) / 2. Even spans
    // are servers, odd ones clients; span j belongs to service s = (t + 7 (j / 2)) % 50, so each
    // client calls a server of another service. A service's server spans are named op-s, its
    // client spans op-((s + 50) % 60): 60 operations in all. Traces start in order over the last
    // 24 hours. Clients 1 and 3 name the host of the server they call (`server.address`
    // service-N.internal); clients 5, 7 and 9, which call no span, name a database (5 of them),
    // a Kafka topic (8) and a remote host (10): the service map's leaves.
    sql.execute(
        "INSERT INTO spans
         SELECT start, start + CASE WHEN i % 101 = 0 THEN 2000000000 ELSE 1000000 * (1 + i * 13 % 97) END,
                decode(lpad(to_hex(t * 2654435761 % 4294967296), 32, '0'), 'hex'),
                decode(lpad(to_hex(i), 16, '0'), 'hex'),
                CASE WHEN j = 0 THEN NULL ELSE decode(lpad(to_hex(t * 10 + (j - 1) / 2), 16, '0'), 'hex') END,
                '', 1, 'op-' || (((t + 7 * (j / 2)) % $3::bigint + 50 * (j % 2)) % 60), CASE WHEN j % 2 = 0 THEN 2 ELSE 3 END,
                (t + 7 * (j / 2)) % $3::bigint + 1, 1,
                jsonb_build_object('http.route', '/api/' || (i % 20), 'http.response.status_code', 200,
                                   'user.id', 'user-' || (i % 5000))
                || CASE j
                     WHEN 1 THEN jsonb_build_object('server.address', 'service-' || ((t + 14) % $3::bigint + 1) || '.internal')
                     WHEN 3 THEN jsonb_build_object('server.address', 'service-' || ((t + 28) % $3::bigint + 1) || '.internal')
                     WHEN 5 THEN jsonb_build_object('db.system.name', 'postgresql', 'db.namespace', 'db-' || (t % 5))
                     WHEN 7 THEN jsonb_build_object('messaging.system', 'kafka', 'messaging.destination.name', 'topic-' || (t % 8))
                     WHEN 9 THEN jsonb_build_object('server.address', 'api-' || (t % 10) || '.example.com')
                     ELSE '{}'::jsonb END,
                0, NULL, 0, NULL, 0, CASE WHEN i * 7919 % 50 = 0 THEN 2 ELSE 0 END, ''
         FROM (SELECT i, i / 10 AS t, i % 10 AS j,
                      $2::bigint - 86400000000000 + (i / 10) * (864000000000000 / $1::bigint) + (i % 10) * 1000000 AS start
               FROM generate_series(0, $1::bigint - 1) i) g",
        &[&spans, &now, &SERVICES],
    )
    .await?;
    println!("stored {spans} spans in {:.1} s", started.elapsed().as_secs_f64());
    // A log record per ten spans over the same 24 hours, of every service, a fifth WARN or
    // worse, with a route and a user as attributes.
    let started = Instant::now();
    let records = spans / 10;
    sql.execute(
        "INSERT INTO logs (timestamp_unix_nano, time_unix_nano, observed_time_unix_nano, severity_number,
                           severity_text, body, attributes, dropped_attributes_count, flags, trace_id,
                           span_id, event_name, resource_id, scope_id)
         SELECT t, t, t, (ARRAY[9, 9, 9, 13, 17])[1 + i % 5], '',
                to_jsonb('request ' || i || ' for user-' || (i % 5000) || ' on /api/' || (i % 20) || ' took ' || (i % 97) || ' ms'),
                jsonb_build_object('http.route', '/api/' || (i % 20), 'user.id', 'user-' || (i % 5000)),
                0, 0, NULL, NULL, '', i % $3::bigint + 1, 1
         FROM (SELECT i, $2::bigint - 86400000000000 + i * (86400000000000 / $1::bigint) AS t
               FROM generate_series(0, $1::bigint - 1) i) g",
        &[&records, &now, &SERVICES],
    )
    .await?;
    println!("stored {records} log records in {:.1} s", started.elapsed().as_secs_f64());
    // Metrics, a point a minute for 24 hours: per service and route (1000 series each) a delta
    // request counter and a delta duration histogram in HTTP's buckets.
    let started = Instant::now();
    sql.execute(
        "INSERT INTO metric_series (series_id, metric_name, metric_type, description, unit,
                                    aggregation_temporality, is_monotonic, metadata, attributes, resource_id, scope_id)
         SELECT k * 100000 + s * 100 + r, m, CASE k WHEN 1 THEN 'sum' ELSE 'histogram' END, '',
                CASE k WHEN 1 THEN '{request}' ELSE 's' END, 1, CASE k WHEN 1 THEN true END, '{}',
                jsonb_build_object('http.route', '/api/' || r, 'http.request.method', 'GET'), s, 1
         FROM (VALUES (1, 'http.server.requests'), (2, 'http.server.request.duration')) AS metric(k, m),
              generate_series(1, $1::bigint) s, generate_series(0, 19) r",
        &[&SERVICES],
    )
    .await?;
    sql.execute(
        "INSERT INTO metric_points_number (time_unix_nano, start_time_unix_nano, series_id, value_int, flags)
         SELECT t, t - 60000000000, 100000 + s * 100 + r, 50 + (s * 7 + r + m) % 40, 0
         FROM generate_series(1, $2::bigint) s, generate_series(0, 19) r, generate_series(0, 1439) m,
              LATERAL (SELECT $1::bigint - 86400000000000 + m * 60000000000 AS t) x",
        &[&now, &SERVICES],
    )
    .await?;
    sql.execute(
        "INSERT INTO metric_points_histogram (time_unix_nano, start_time_unix_nano, series_id, count, sum, min, max,
                                              bucket_counts, explicit_bounds, flags)
         SELECT t, t - 60000000000, 200000 + s * 100 + r, 60, 60 * 0.08, 0.002, 1.5 + (m % 10),
                ARRAY[2, 6, 10, 14, 10, 6, 4, 3, 2, 1, 1, 1, 0, 0, 0], ARRAY[0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]::float8[], 0
         FROM generate_series(1, $2::bigint) s, generate_series(0, 19) r, generate_series(0, 1439) m,
              LATERAL (SELECT $1::bigint - 86400000000000 + m * 60000000000 AS t) x",
        &[&now, &SERVICES],
    )
    .await?;
    println!("stored 2,880,000 metric points of 2,000 series in {:.1} s", started.elapsed().as_secs_f64());
    // As autovacuum leaves a table that takes inserts: its start-time index summarized but for
    // the newest block range, its statistics current.
    let started = Instant::now();
    sql.batch_execute("VACUUM (ANALYZE) spans").await?;
    for table in ["logs", "metric_points_number", "metric_points_histogram", "metric_series"] {
        sql.batch_execute(&format!("VACUUM (ANALYZE) {table}")).await?;
    }
    sql.batch_execute("ANALYZE resources").await?;
    println!("vacuumed in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let rebuilt = otelephant::store::rollups::rebuild(
        &server.pool,
        now - 86_400_000_000_000 - 3_600_000_000_000,
        now + 60_000_000_000,
    )
    .await?;
    println!("rollups built in {:.1} s: {rebuilt:?}", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let later = SystemTime::now() + Duration::from_secs(120);
    let mut paired = 0;
    loop {
        let Some(report) =
            otelephant::store::rollups::run_pass(&server.pool, &config.rollups, later, true).await?
        else {
            continue;
        };
        paired += report.paired;
        if report.paired == 0 {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("{paired} child spans paired in {elapsed:.1} s ({:.0} spans/s)", spans as f64 / elapsed);
    sql.batch_execute("ANALYZE span_rollup; ANALYZE service_edges; ANALYZE peer_calls").await?;
    let rows: i64 = sql.query_one("SELECT count(*) FROM span_rollup", &[]).await?.get(0);
    let edges: i64 = sql.query_one("SELECT count(*) FROM service_edges", &[]).await?.get(0);
    let peers: i64 = sql.query_one("SELECT count(*) FROM peer_calls", &[]).await?.get(0);
    println!("span_rollup rows: {rows}; service_edges rows: {edges}; peer_calls rows: {peers}");
    server.shutdown().await?;
    Ok(())
}

async fn time(base: &str, label: &str, runs: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_millis() as u64;
    let (hour_ago_us, now_us) = ((now_ms - 3_600_000) * 1000, now_ms * 1000);
    let day = format!(
        r#"{{"timeRange": {{"startUnixNano": "{}", "endUnixNano": "{}"}}}}"#,
        (now_ms - 86_400_000) * 1_000_000,
        now_ms * 1_000_000
    );
    let service = "service-7";
    let query = "/otelephant.query.v1.QueryService";
    let reads: Vec<(&str, String, Option<String>)> = vec![
        ("UI services (home), last hour", "/".into(), None),
        ("UI traces, all services, last hour", "/traces".into(), None),
        ("UI traces, one service, last hour", format!("/traces?service={service}"), None),
        ("UI operations of a service", format!("/operations?service={service}"), None),
        ("ListServiceStats, last hour", format!("{query}/ListServiceStats"), Some("{}".into())),
        ("ListServiceStats, 24 h", format!("{query}/ListServiceStats"), Some(day.clone())),
        (
            "SearchTraces, one service",
            format!("{query}/SearchTraces"),
            Some(format!(r#"{{"service": "{service}"}}"#)),
        ),
        ("Jaeger services", "/jaeger/api/services".into(), None),
        ("Jaeger operations of a service", format!("/jaeger/api/services/{service}/operations"), None),
        (
            "Jaeger traces, service, limit 20",
            format!("/jaeger/api/traces?service={service}&limit=20&start={hour_ago_us}&end={now_us}"),
            None,
        ),
        (
            "Jaeger dependencies, last hour",
            format!("/jaeger/api/dependencies?endTs={now_ms}&lookback=3600000"),
            None,
        ),
        (
            "Jaeger dependencies, 24 h",
            format!("/jaeger/api/dependencies?endTs={now_ms}&lookback=86400000"),
            None,
        ),
    ];
    // A trace to open: the newest of the service's, as its traces page lists them.
    let found: serde_json::Value = http
        .post(format!("{base}{query}/SearchTraces"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"service": "{service}", "pageSize": 1}}"#))
        .send()
        .await?
        .json()
        .await?;
    let trace_id = found["traces"][0]["traceId"].as_str().unwrap_or_default().to_owned();
    let pages: Vec<(&str, String, Option<String>)> = vec![
        ("UI a trace (10 spans)", format!("/trace/{trace_id}"), None),
        ("UI logs, last hour", "/logs".into(), None),
        ("UI logs, one service, last hour", format!("/logs?service={service}"), None),
        ("UI logs, body text matching 1 in 5000, last hour", "/logs?body=user-4242%20".into(), None),
        ("UI metrics list", "/metrics".into(), None),
        ("UI counter chart (1000 series), last hour", "/metric?name=http.server.requests".into(), None),
        (
            "UI counter chart grouped by route, last hour",
            "/metric?name=http.server.requests&by=http.route".into(),
            None,
        ),
        (
            "UI histogram chart (1000 series), last hour",
            "/metric?name=http.server.request.duration".into(),
            None,
        ),
    ];
    let reads: Vec<_> = reads.into_iter().chain(pages).collect();
    println!("{label}");
    println!("| read | median | slowest | runs |");
    println!("|---|---:|---:|---:|");
    for (name, path, body) in reads {
        let mut samples = Vec::new();
        let mut failed = None;
        for _ in 0..runs {
            let url = format!("{base}{path}");
            let request = match &body {
                Some(body) => http.post(url).header("content-type", "application/json").body(body.clone()),
                None => http.get(url),
            };
            let started = Instant::now();
            match request.send().await {
                Ok(answer) => {
                    let status = answer.status();
                    let text = answer.text().await.unwrap_or_default();
                    if !status.is_success() || text.contains("The server answered with an error") {
                        failed = Some(format!("{status} {}", text.chars().take(120).collect::<String>()));
                        break;
                    }
                    samples.push(started.elapsed());
                }
                Err(err) => {
                    failed = Some(if err.is_timeout() { "over 60 s".into() } else { err.to_string() });
                    break;
                }
            }
        }
        samples.sort();
        match failed {
            Some(why) => println!("| {name} | {why} | | {} |", samples.len()),
            None => println!(
                "| {name} | {:.0} ms | {:.0} ms | {} |",
                samples[samples.len() / 2].as_secs_f64() * 1e3,
                samples[samples.len() - 1].as_secs_f64() * 1e3,
                samples.len()
            ),
        }
    }
    Ok(())
}
