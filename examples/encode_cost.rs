//! Where otelephant's CPU goes per item, on one core with nothing else in the way: decoding the
//! protobuf request into prost structs (and dropping them), and encoding them into COPY rows.
//!
//! `cargo run --release --example encode_cost`
//!
//! Uses the load generator's requests (1,000 items each, 16 distinct ones). Each signal is also
//! encoded straight from its protobuf bytes, as the receivers do.
//!
//! `encode_cost [--rounds N] [NAME...]` runs only the measurements whose name (`spans/prost`,
//! `spans/wire`, `points/prost`, ...) contains one of the NAMEs, N requests each (300 unless
//! given): `valgrind --tool=callgrind` then counts the instructions of one path.

#[path = "loadgen/workload.rs"]
mod workload;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use otelephant::encode::{dims::KnownIds, logs, metrics, traces, Encoded};
use prost::Message;
use workload::Signal;

const ITEMS: usize = 1000;

fn per_item(elapsed: Duration, rounds: usize) -> f64 {
    elapsed.as_nanos() as f64 / (rounds * ITEMS) as f64
}

fn measure<R: Message + Default>(rounds: usize, signal: Signal, encode: fn(&R, &KnownIds) -> Encoded) {
    let bodies = workload::requests(signal, 16, ITEMS, 1, 1_700_000_000_000_000_000);
    // Decoding and dropping one request after another, as the server does, so memory is reused.
    let started = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(R::decode(&bodies[i % bodies.len()][..]).expect("decodes"));
    }
    let decode_and_drop = per_item(started.elapsed(), rounds);
    let decoded: Vec<R> = bodies.iter().map(|b| R::decode(&b[..]).expect("decodes")).collect();
    let known = KnownIds::default();
    let started = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(encode(&decoded[i % decoded.len()], &known));
    }
    let encode = per_item(started.elapsed(), rounds);
    let total = decode_and_drop + encode;
    println!(
        "{:<12} decode and drop {decode_and_drop:>6.0} ns  encode {encode:>6.0} ns  total {total:>6.0} ns per item = {:>9.0} items per CPU-second",
        signal.unit(),
        1e9 / total
    );
}

/// Encoding straight from the protobuf bytes, where a signal has it.
fn measure_wire(
    rounds: usize,
    signal: Signal,
    encode: fn(&[u8], &KnownIds) -> Result<Encoded, otelephant::encode::wire::Unusual>,
) {
    let bodies = workload::requests(signal, 16, ITEMS, 1, 1_700_000_000_000_000_000);
    let known = KnownIds::default();
    let started = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(encode(&bodies[i % bodies.len()], &known).expect("read from the wire"));
    }
    let total = per_item(started.elapsed(), rounds);
    let encoded = encode(&bodies[0], &known).expect("read from the wire");
    let rows: usize = encoded.rows.iter().map(|r| r.buf.len()).sum();
    let capacity: usize = encoded.rows.iter().map(|r| r.buf.capacity()).sum();
    println!(
        "{:<12} {} protobuf bytes become {rows} bytes of COPY rows in {capacity} bytes of buffers",
        signal.unit(),
        bodies[0].len()
    );
    println!(
        "{:<12} from the wire bytes                total {total:>6.0} ns per item = {:>9.0} items per CPU-second",
        signal.unit(),
        1e9 / total
    );
}

fn main() {
    let mut rounds = 300;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args.next().and_then(|n| n.parse().ok()).expect("--rounds takes a number");
        } else {
            names.push(arg);
        }
    }
    let wanted = |name: &str| names.is_empty() || names.iter().any(|n| name.contains(n.as_str()));
    if wanted("spans/prost") {
        measure::<ExportTraceServiceRequest>(rounds, Signal::Traces, traces::encode);
    }
    if wanted("points/prost") {
        measure::<ExportMetricsServiceRequest>(rounds, Signal::Metrics, metrics::encode);
    }
    if wanted("logs/prost") {
        measure::<ExportLogsServiceRequest>(rounds, Signal::Logs, logs::encode);
    }
    if wanted("spans/wire") {
        measure_wire(rounds, Signal::Traces, traces::encode_wire);
    }
    if wanted("points/wire") {
        measure_wire(rounds, Signal::Metrics, metrics::encode_wire);
    }
    if wanted("logs/wire") {
        measure_wire(rounds, Signal::Logs, logs::encode_wire);
    }
}
