//! The ceiling otelephant is measured against: PostgreSQL ingesting the very rows otelephant
//! would write, through binary COPY, with nothing else in the way.
//!
//! `cargo run --release --example copy_ceiling -- --signal traces --seconds 20`
//!
//! It generates the load generator's requests (same workload, same seed), encodes them with
//! otelephant's own encoder before the clock starts, writes their resources, scopes and series
//! once, then streams the pre-encoded fact rows (spans, log records or data points) from
//! `--writers` connections in transactions of `--batch-rows` rows, each one COPY per table, for
//! `--seconds`, into a scratch schema that otelephant's migrations created (same tables, same
//! indexes, same partitions). The last line is the result as JSON.

#[path = "loadgen/workload.rs"]
mod workload;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use clap::Parser;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use otelephant::{
    config::Config,
    encode::{dims::KnownIds, logs, metrics, traces, DIMENSION_TABLES, TABLES},
    pipeline::Payload,
    server::prepare_database,
    store::writer::{copy, write_batch},
};
use prost::Message;
use workload::Signal;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum, default_value = "traces")]
    signal: Signal,
    /// Items per request, as the load generator sends them.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Distinct requests generated, as the load generator does.
    #[arg(long, default_value_t = 64)]
    distinct: usize,
    /// Parallel connections, as otelephant's writers.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Rows a transaction holds at most, as otelephant's `pipeline.batch_max_rows`.
    #[arg(long, default_value_t = 50_000)]
    batch_rows: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/otelephant_bench")]
    url: String,
    /// Give every request's rows trace ids of their own each time they are sent (see the load
    /// generator's option of the same name).
    #[arg(long)]
    fresh_trace_ids: bool,
    /// SQL run on the scratch schema after the migrations, to measure a change to the layout
    /// before writing it as a migration (e.g. `DROP INDEX spans_resource_time`).
    #[arg(long)]
    then_sql: Option<String>,
    /// postgres.citus: whether the tables are laid out over a Citus cluster (auto, on, off).
    #[arg(long, default_value = "auto")]
    citus: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let schema = format!("copy_ceiling_{}", std::process::id());
    let mut config = Config::default();
    config.postgres.url = args.url.clone();
    config.postgres.schema = schema.clone();
    config.postgres.pool_size = args.writers + 1;
    config.postgres.citus = serde_json::from_value(serde_json::Value::String(args.citus.clone()))?;
    let (pool, _) = prepare_database(&config).await?;
    if let Some(sql) = &args.then_sql {
        pool.get().await?.batch_execute(sql).await?;
    }

    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos() as u64;
    let known = KnownIds::default();
    let requests = workload::requests(args.signal, args.distinct, args.batch, 1, now);
    let payloads: Vec<Payload> = requests
        .iter()
        .map(|body| {
            let encoded = match args.signal {
                Signal::Traces => traces::encode(&ExportTraceServiceRequest::decode(&body[..])?, &known),
                Signal::Metrics => metrics::encode(&ExportMetricsServiceRequest::decode(&body[..])?, &known),
                Signal::Logs => logs::encode(&ExportLogsServiceRequest::decode(&body[..])?, &known),
            };
            Ok(Payload::new(encoded))
        })
        .collect::<Result<_, prost::DecodeError>>()?;
    // Resources, scopes and series once, outside the measurement.
    write_batch(&pool, &payloads.iter().map(|p| &p.tables).collect::<Vec<_>>()).await?;
    let fact_rows = |p: &Payload| p.tables[DIMENSION_TABLES..].iter().map(|(_, n)| *n).sum::<usize>();
    let requests_per_batch = (args.batch_rows / fact_rows(&payloads[0]).max(1)).max(1);
    // Per request and table: where its rows hold trace ids.
    let id_offsets: Vec<Vec<Vec<usize>>> = match args.fresh_trace_ids {
        true => requests
            .iter()
            .zip(&payloads)
            .map(|(request, p)| {
                p.tables.iter().map(|(b, _)| workload::trace_id_offsets(args.signal, request, b)).collect()
            })
            .collect(),
        false => Vec::new(),
    };
    let (payloads, id_offsets) = (Arc::new(payloads), Arc::new(id_offsets));
    let rounds = Arc::new(AtomicU64::new(0));
    {
        let client = pool.get().await?;
        client.batch_execute("TRUNCATE spans, logs, metric_points_number, metric_points_histogram, metric_points_exp_histogram, metric_points_summary").await?;
    }

    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut writers = Vec::new();
    for writer in 0..args.writers {
        let (pool, payloads, written, stride) =
            (pool.clone(), payloads.clone(), written.clone(), requests_per_batch * args.writers);
        let (id_offsets, rounds) = (id_offsets.clone(), rounds.clone());
        writers.push(tokio::spawn(async move {
            let mut next = writer * requests_per_batch;
            while Instant::now() < deadline {
                let batch: Vec<usize> =
                    (0..requests_per_batch).map(|i| (next + i) % payloads.len()).collect();
                next += stride;
                // With fresh trace ids, each request's rows are copied and given new ids
                // (before the transaction starts, as otelephant encodes before it writes).
                let fresh: Vec<Vec<Bytes>> = match id_offsets.is_empty() {
                    true => Vec::new(),
                    false => batch
                        .iter()
                        .map(|&p| {
                            let round = rounds.fetch_add(1, Ordering::Relaxed);
                            payloads[p]
                                .tables
                                .iter()
                                .zip(&id_offsets[p])
                                .map(|((b, _), offsets)| {
                                    let mut b = b.to_vec();
                                    workload::refresh_trace_ids(&mut b, offsets, round);
                                    Bytes::from(b)
                                })
                                .collect()
                        })
                        .collect(),
                };
                // The transaction's rollup rows, as otelephant's writer merges them.
                let rollups =
                    Payload::rollup_tuples(&batch.iter().map(|&p| &payloads[p]).collect::<Vec<_>>());
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                let mut rows = 0;
                for (index, table) in TABLES.iter().enumerate().skip(DIMENSION_TABLES) {
                    let mut chunks: Vec<&Bytes> = batch
                        .iter()
                        .enumerate()
                        .filter(|&(_, &p)| payloads[p].tables[index].1 > 0)
                        .map(|(i, &p)| {
                            fresh.get(i).map_or(&payloads[p].tables[index].0, |tables| &tables[index])
                        })
                        .collect();
                    if rollups[index].1 > 0 {
                        chunks.push(&rollups[index].0);
                    }
                    if !chunks.is_empty() {
                        rows += copy(&tx, &table.copy_statement(table.name), &chunks).await?;
                    }
                }
                tx.commit().await?;
                written.fetch_add(rows, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows = written.load(Ordering::Relaxed);
    let client = pool.get().await?;
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await?;
    println!(
        "copy ceiling, {}: {rows} rows in {seconds:.1} s = {:.0} rows/s ({} writers, {} rows a transaction)",
        args.signal.unit(),
        rows as f64 / seconds,
        args.writers,
        requests_per_batch * fact_rows(&payloads[0]),
    );
    println!(
        "{}",
        serde_json::json!({ "signal": format!("{:?}", args.signal).to_lowercase(), "rows": rows, "seconds": seconds, "rows_per_second": rows as f64 / seconds })
    );
    Ok(())
}
