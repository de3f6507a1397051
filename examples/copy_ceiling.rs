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

    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos() as u64;
    let known = KnownIds::default();
    let payloads: Vec<Payload> = workload::requests(args.signal, args.distinct, args.batch, 1, now)
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
    let payloads = Arc::new(payloads);
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
        writers.push(tokio::spawn(async move {
            let mut next = writer * requests_per_batch;
            while Instant::now() < deadline {
                let batch: Vec<&Payload> =
                    (0..requests_per_batch).map(|i| &payloads[(next + i) % payloads.len()]).collect();
                next += stride;
                let mut client = pool.get().await?;
                let tx = client.transaction().await?;
                let mut rows = 0;
                for (index, table) in TABLES.iter().enumerate().skip(DIMENSION_TABLES) {
                    let chunks: Vec<&Bytes> = batch
                        .iter()
                        .map(|p| &p.tables[index])
                        .filter(|(_, n)| *n > 0)
                        .map(|(b, _)| b)
                        .collect();
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
