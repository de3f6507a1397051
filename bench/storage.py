#!/usr/bin/env python3
"""Storage benchmark: bytes on disk per span, data point and log record.

    bench/storage.py [--seconds 15] [--signals traces,metrics,logs] [--variant default|toast-128] [--pg-port 5432]
                     [--build DIR ...] [--repeat-trace-ids] [--columnar]

For each signal it starts otelephant (release build, default settings) on a scratch database,
sends the load generator's realistic workload as fast as it is answered for --seconds, stops
otelephant, runs VACUUM ANALYZE, and prints per signal: rows stored, the rate they were
stored at, and bytes per item in the heap, TOAST, indexes, and all of them together, plus the
resources, scopes and series they reference (spread over the items). --build and
--repeat-trace-ids are as in bench/ingest.py: each signal is measured on every build in turn,
and every request sends trace ids of its own unless told otherwise. --columnar also converts
every partition to columnar storage afterwards, laid out as maintenance lays out closed days
(the database needs the citus_columnar extension), and prints a second line per signal with
the sizes then.

--variant:
  default    the schema as migrated (lz4 for jsonb, which PostgreSQL compresses only in rows
             past about 2 kB);
  toast-128  also toast_tuple_target = 128 on every partition, asking PostgreSQL to compress a
             row's large values once the row passes 128 bytes.
"""

import argparse
import os
import signal
import subprocess

import ingest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = {
    "traces": ["spans"],
    "logs": ["logs"],
    "metrics": ["metric_points_number", "metric_points_histogram", "metric_points_exp_histogram",
                "metric_points_summary"],
}
DIMENSIONS = ["resources", "scopes", "metric_series"]


def partitions(table):
    return ingest.psql(f"SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = '{table}'::regclass",
                       ingest.DATABASE).split()


def apply_variant(variant, signal_name):
    if variant == "default":
        return
    for table in TABLES[signal_name]:
        for relation in partitions(table):
            ingest.psql(f"ALTER TABLE {relation} SET (toast_tuple_target = 128)", ingest.DATABASE)


def sizes(tables):
    """Heap, TOAST and index bytes over every partition of `tables`."""
    names = ",".join(f"'{t}'" for t in tables)
    row = ingest.psql(
        "WITH parts AS (SELECT inhrelid AS oid FROM pg_inherits WHERE inhparent IN "
        f"(SELECT oid FROM pg_class WHERE relname IN ({names}) AND relnamespace = 'public'::regnamespace)) "
        "SELECT coalesce(sum(pg_relation_size(oid)), 0), "
        "coalesce(sum(pg_table_size(oid) - pg_relation_size(oid)), 0), "
        "coalesce(sum(pg_indexes_size(oid)), 0) FROM parts", ingest.DATABASE)
    return [int(x) for x in row.split("|")]


def dimension_bytes():
    return sum(int(ingest.psql(f"SELECT pg_total_relation_size('{t}')", ingest.DATABASE)) for t in DIMENSIONS)


# The layout maintenance gives a closed day (columnar_rewrite in src/store/maintenance.rs):
# 10,000-row stripes; 1,000-row chunk groups for spans, 10,000 for the other tables; zstd level
# 9 for log records, 3 for the others.
STRIPE_ROWS = 10_000
CHUNK_GROUP_ROWS = {"spans": 1_000}
COMPRESSION_LEVEL = {"logs": 9}


def to_columnar(tables):
    ingest.psql("CREATE EXTENSION IF NOT EXISTS citus_columnar", ingest.DATABASE)
    for table in tables:
        chunk_group_rows = CHUNK_GROUP_ROWS.get(table, 10_000)
        for relation in partitions(table):
            ingest.psql(
                f"BEGIN; SET LOCAL columnar.stripe_row_limit = {STRIPE_ROWS}; "
                f"SET LOCAL columnar.chunk_group_row_limit = {chunk_group_rows}; "
                f"SET LOCAL columnar.compression_level = {COMPRESSION_LEVEL.get(table, 3)}; "
                f"ALTER TABLE {relation} SET ACCESS METHOD columnar; COMMIT",
                ingest.DATABASE)
    ingest.psql("ANALYZE", ingest.DATABASE)


def run(signal_name, seconds, variant, build, columnar=False):
    process = ingest.start_otelephant(build)
    try:
        apply_variant(variant, signal_name)
        load = ingest.loadgen(signal_name, "grpc", seconds)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    ingest.psql("VACUUM ANALYZE", ingest.DATABASE)
    rows = int(ingest.psql(ingest.FACTS[signal_name], ingest.DATABASE))
    result = lambda name, sizes: {
        "signal": name, "build": ingest.build_name(build), "rows": rows, "rate": rows / load["seconds"],
        "heap": sizes[0] / rows, "toast": sizes[1] / rows, "index": sizes[2] / rows, "total": sum(sizes) / rows,
        "dims": dimension_bytes() / rows,
    }
    results = [result(signal_name, sizes(TABLES[signal_name]))]
    if columnar:
        # The same rows, every partition rewritten in columnar storage.
        to_columnar(TABLES[signal_name])
        results.append(result(signal_name + " (columnar)", sizes(TABLES[signal_name])))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--signals", default="traces,metrics,logs")
    parser.add_argument("--variant", default="default", choices=["default", "toast-128"])
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--build", action="append", default=[], help="an otelephant checkout to measure (repeatable)")
    parser.add_argument("--repeat-trace-ids", action="store_true")
    parser.add_argument("--columnar", action="store_true")
    args = parser.parse_args()
    ingest.PG_PORT = args.pg_port
    ingest.FRESH_IDS = not args.repeat_trace_ids
    builds = [os.path.abspath(b) for b in args.build] or [ROOT]
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "loadgen"], check=True, cwd=ROOT)
    for build in builds:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "otelephant"], check=True, cwd=build)
    print(f"{ingest.psql('SHOW server_version')} PostgreSQL; variant {args.variant}; {args.seconds} s of load per signal; "
          f"{'repeated' if args.repeat_trace_ids else 'fresh'} trace ids")
    header = ("signal", "build", "rows", "stored/s", "heap B", "TOAST B", "index B", "total B", "+dims B")
    print(" | ".join(f"{h:>10}" for h in header))
    runs = [(s, b) for s in args.signals.split(",") for b in builds]
    for r in (r for signal_name, build in runs for r in run(signal_name, args.seconds, args.variant, build, args.columnar)):
        row = (r["signal"], r["build"], f"{r['rows']:,}", f"{r['rate']:,.0f}", f"{r['heap']:.0f}", f"{r['toast']:.0f}",
               f"{r['index']:.0f}", f"{r['total']:.0f}", f"{r['dims']:.1f}")
        print(" | ".join(f"{c:>10}" for c in row), flush=True)


if __name__ == "__main__":
    main()
