#!/usr/bin/env python3
"""Where PostgreSQL's CPU goes while it takes one signal's rows as fast as it can.

    bench/pg_profile.py [--seconds 12] [--signals traces,metrics,logs] [--sslmode disable|prefer]

For each signal, `examples/copy_ceiling` streams the rows otelephant would write (binary COPY,
2 connections, 50,000-row transactions, fresh trace ids) into the database `otelephant_bench`;
after 5 s of that, `perf record -a --call-graph dwarf` samples every CPU for SECONDS. Then, for
the PostgreSQL server's processes alone (command name `postgres`), it prints the share of their
CPU samples spent in each step of a COPY, inclusive of what each step calls, and the functions
with the most samples of their own.

The steps overlap where one calls another (the jsonb input is part of the COPY input; the btree
is one of the index inserts), so the shares do not add up to 100%. PostgreSQL's static
functions have no symbols in Debian's build and show as addresses. Needs `perf` (Debian's
linux-perf) and the right to sample every process (root, or kernel.perf_event_paranoid <= -1).
"""

import argparse
import os
import re
import subprocess
import tempfile
import time

from ingest import psql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARM_UP_SECONDS = 5
# (what, the function whose inclusive samples measure it)
STEPS = [
    ("COPY input: rows parsed and converted", "NextCopyFrom"),
    ("  jsonb input", "jsonb_recv"),
    ("  array input", "array_recv"),
    ("  sorting (qsort_arg, mostly jsonb keys)", "qsort_arg"),
    ("index inserts", "ExecInsertIndexTuples"),
    ("  btree", "btinsert"),
    ("    btree key comparisons", "_bt_compare"),
    ("  hash", "hashinsert"),
    ("  BRIN", "brininsert"),
    ("heap insert", "heap_multi_insert"),
    ("WAL records inserted", "XLogInsert"),
    ("WAL flushed at commit", "XLogFlush"),
    ("data file writes", "FileWrite"),
    ("reading from the client", "pq_getbytes"),
    ("  of which TLS", "be_tls_read"),
    ("commit", "CommitTransaction"),
]
LINE = re.compile(r"^\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.+?)\s*$")


def profile(signal, seconds, url, data):
    ceiling = subprocess.Popen(
        [f"{ROOT}/target/release/examples/copy_ceiling", "--signal", signal, "--fresh-trace-ids",
         "--seconds", str(WARM_UP_SECONDS + seconds + 3), "--url", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    time.sleep(WARM_UP_SECONDS)
    subprocess.run(["perf", "record", "-q", "-a", "--call-graph", "dwarf,16384", "-F", "199", "-o", data,
                    "--", "sleep", str(seconds)], check=True, capture_output=True)
    output, _ = ceiling.communicate()
    if ceiling.returncode != 0:
        raise SystemExit(f"copy_ceiling failed:\n{output}")
    rate = output.strip().splitlines()[-1]
    report = subprocess.run(
        ["perf", "report", "-i", data, "--children", "--comm", "postgres", "--percentage", "relative",
         "--stdio", "-g", "none", "--sort", "sym"],
        check=True, capture_output=True, text=True,
    ).stdout
    samples = re.search(r"# Samples: (\S+)", report)
    inclusive, own = {}, {}
    for line in report.splitlines():
        match = LINE.match(line)
        if match:
            children, self_, symbol = float(match[1]), float(match[2]), match[3]
            inclusive[symbol] = max(inclusive.get(symbol, 0.0), children)
            own[symbol] = own.get(symbol, 0.0) + self_
    return rate, samples[1] if samples else "?", inclusive, own


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--signals", default="traces,metrics,logs")
    parser.add_argument("--sslmode", default="disable", choices=["disable", "prefer", "require"])
    args = parser.parse_args()
    url = f"postgres://postgres@127.0.0.1:5432/otelephant_bench?sslmode={args.sslmode}"
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "copy_ceiling"], check=True, cwd=ROOT)
    psql("SELECT 1 FROM pg_database WHERE datname = 'otelephant_bench'") or psql("CREATE DATABASE otelephant_bench")
    with tempfile.TemporaryDirectory() as scratch:
        for signal in args.signals.split(","):
            rate, samples, inclusive, own = profile(signal, args.seconds, url, f"{scratch}/{signal}.data")
            print(f"\n{signal}: {rate}\nPostgreSQL's CPU samples (perf, 199 Hz, {args.seconds} s): "
                  f"{samples} in all processes; shares below are of the postgres processes' samples")
            for what, function in STEPS:
                share = inclusive.get(function)
                if share is not None:
                    print(f"  {what:<44} {share:5.1f}%   ({function})")
            print("  most samples of their own:")
            for symbol, share in sorted(own.items(), key=lambda item: -item[1])[:12]:
                print(f"    {share:5.1f}%  {symbol}")


if __name__ == "__main__":
    main()
