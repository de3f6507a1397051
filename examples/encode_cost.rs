//! Where otelephant's CPU goes per item, on one core with nothing else in the way: decoding the
//! protobuf request into prost structs (and dropping them), and encoding them into COPY rows.
//!
//! `cargo run --release --example encode_cost`
//!
//! Uses the load generator's requests (1,000 items each, 16 distinct ones). Each signal is also
//! encoded straight from its protobuf bytes, as the receivers do.
//!
//! `encode_cost [--rounds N] [NAME...]` runs only the measurements whose name (`spans/prost`,
//! `spans/wire`, `spans/reencoded` (a decoded request written as protobuf and encoded from
//! those bytes, as OTLP/JSON requests are), `points/prost`, ...) contains one of the NAMEs, N requests each (300 unless
//! given): `valgrind --tool=callgrind` then counts the instructions of one path.

#[path = "loadgen/workload.rs"]
#[allow(dead_code)] // Fresh trace ids are for the load generator and the ceiling.
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

/// What a decoded request (OTLP/JSON, or protobuf only prost reads) costs the receivers: written
/// out as protobuf, then encoded from those bytes.
#[inline(never)]
fn reencode<R: Message>(
    request: &R,
    known: &KnownIds,
    encode: fn(&[u8], &KnownIds) -> Result<Encoded, otelephant::encode::wire::Unusual>,
) -> Encoded {
    encode(&request.encode_to_vec(), known).expect("read from the wire")
}

fn measure_reencoded<R: Message + Default>(
    rounds: usize,
    signal: Signal,
    encode: fn(&[u8], &KnownIds) -> Result<Encoded, otelephant::encode::wire::Unusual>,
) {
    let bodies = workload::requests(signal, 16, ITEMS, 1, 1_700_000_000_000_000_000);
    let decoded: Vec<R> = bodies.iter().map(|b| R::decode(&b[..]).expect("decodes")).collect();
    let known = KnownIds::default();
    let started = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(reencode(&decoded[i % decoded.len()], &known, encode));
    }
    let total = per_item(started.elapsed(), rounds);
    println!(
        "{:<12} decoded, written as protobuf, from those bytes: {total:>6.0} ns per item",
        signal.unit(),
    );
}

/// Decoding OTLP/JSON bodies of the same requests, as the HTTP receiver does.
#[inline(never)]
fn decode_json<R: serde::de::DeserializeOwned + otelephant::receive::json::Doubles>(body: &[u8]) -> R {
    otelephant::receive::json::decode(body, &mut || Ok::<(), String>(())).expect("OTLP/JSON")
}

fn measure_json<
    R: Message + Default + serde::Serialize + serde::de::DeserializeOwned + otelephant::receive::json::Doubles,
>(
    rounds: usize,
    signal: Signal,
) {
    let bodies = workload::requests(signal, 16, ITEMS, 1, 1_700_000_000_000_000_000);
    let json: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| serde_json::to_vec(&R::decode(&b[..]).expect("decodes")).expect("JSON"))
        .collect();
    let started = Instant::now();
    for i in 0..rounds {
        std::hint::black_box(decode_json::<R>(&json[i % json.len()]));
    }
    let total = per_item(started.elapsed(), rounds);
    println!("{:<12} OTLP/JSON decoded: {total:>6.0} ns per item", signal.unit());
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
    if wanted("spans/json") {
        measure_json::<ExportTraceServiceRequest>(rounds, Signal::Traces);
    }
    if wanted("points/json") {
        measure_json::<ExportMetricsServiceRequest>(rounds, Signal::Metrics);
    }
    if wanted("logs/json") {
        measure_json::<ExportLogsServiceRequest>(rounds, Signal::Logs);
    }
    if wanted("spans/reencoded") {
        measure_reencoded::<ExportTraceServiceRequest>(rounds, Signal::Traces, traces::encode_wire);
    }
    if wanted("points/reencoded") {
        measure_reencoded::<ExportMetricsServiceRequest>(rounds, Signal::Metrics, metrics::encode_wire);
    }
    if wanted("logs/reencoded") {
        measure_reencoded::<ExportLogsServiceRequest>(rounds, Signal::Logs, logs::encode_wire);
    }
}
