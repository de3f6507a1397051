#!/usr/bin/env python3
"""Ingest benchmark: otelephant against the raw COPY ceiling, in one run on one machine.

    bench/ingest.py [--seconds 20] [--signals traces,metrics,logs] [--protocol grpc|http] [--pg-port 5432]
                    [--sslmode prefer|disable|require] [--citus on|off] [--build DIR ...] [--repeat-trace-ids]

For each signal:
  1. the ceiling: `examples/copy_ceiling` streams the rows otelephant would write, pre-encoded,
     through binary COPY into the same schema (2 connections, 50,000-row transactions);
  2. otelephant (release build, default settings, a scratch database) under the load generator,
     as fast as requests are answered (16 connections x 4 in flight, 1,000 items a request);
     what arrived counts rows in the database, not acknowledgements;
  3. otelephant's CPU seconds (utime + stime) and peak resident memory (VmHWM) from /proc, and
     PostgreSQL's CPU seconds over the same run;
  4. after a CHECKPOINT and VACUUM, the same load at half the rate reached, for the
     acknowledgement latency there.
It prints one table, and per signal PostgreSQL's CPU and the WAL it wrote per item, at the
ceiling and end to end. PostgreSQL, otelephant and the load generator share the machine.

--build DIR (repeatable) measures the otelephant checkout in DIR (its own migrations, encoder,
server and ceiling; this checkout's load generator), each signal on every build in turn, so an
earlier commit and this one are compared in one run: `git worktree add ../base REV`, then
`--build ../base --build .`. Every request sends trace ids of its own (see the load generator's
--fresh-trace-ids), as a day of real traffic does; --repeat-trace-ids sends the 64 distinct
requests' ids over and over instead.

With --citus on, --pg-port is a Citus coordinator whose workers are registered in its database
`postgres`: each database the run uses is made on every node with the extension and the
workers registered, and PostgreSQL's CPU is also reported per node (coordinator, workers).
With --citus off on a server that runs Citus, the tables stay on that one server.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATABASE = "otelephant_ingest_bench"
PG_PORT = 5432
# postgres.url's sslmode for otelephant and the ceiling alike; prefer (otelephant's default)
# encrypts whenever the server offers TLS.
SSLMODE = "prefer"
# "auto" (a plain server), "on" (a Citus coordinator) or "off" (a Citus server used as one).
CITUS = "auto"
PORTS = {"grpc": 34317, "http": 34318, "admin": 39464}
FACTS = {
    "traces": "SELECT count(*) FROM spans",
    "logs": "SELECT count(*) FROM logs",
    "metrics": "SELECT (SELECT count(*) FROM metric_points_number) + (SELECT count(*) FROM metric_points_histogram)"
    " + (SELECT count(*) FROM metric_points_exp_histogram) + (SELECT count(*) FROM metric_points_summary)",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def url(database):
    return f"postgres://postgres@127.0.0.1:{PG_PORT}/{database}?sslmode={SSLMODE}"


def psql(sql, database="postgres", port=None):
    out = subprocess.run(
        ["psql", "-qXtA", "-h", "127.0.0.1", "-p", str(port or PG_PORT), "-U", "postgres", "-d", database,
         "-c", "SET client_min_messages = warning", "-c", sql],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def nodes():
    """The ports of the database nodes: the server, or the coordinator then the workers."""
    if CITUS != "on":
        return [PG_PORT]
    workers = psql("SELECT string_agg(nodeport::text, ',' ORDER BY nodeport) FROM pg_dist_node WHERE groupid <> 0")
    return [PG_PORT] + [int(port) for port in workers.split(",")]


def fresh_database(database):
    """Drops `database` everywhere; on Citus makes it again on every node, laid out for Citus."""
    for port in reversed(nodes()):
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", port=port)
    if CITUS != "on":
        return
    for port in nodes():
        psql(f"CREATE DATABASE {database}", port=port)
        psql("CREATE EXTENSION citus", database, port=port)
    psql(f"SELECT citus_set_coordinator_host('127.0.0.1', {PG_PORT})", database)
    for port in nodes()[1:]:
        psql(f"SELECT citus_add_node('127.0.0.1', {port})", database)


def cpu_seconds(pid, children=False):
    """utime + stime of a process; with `children`, also of its children that have exited."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def postgres_cpu_seconds():
    """CPU seconds of each node's server processes, by port: the postmaster, its running
    children, and those that have exited (connections Citus opens for one transaction)."""
    postmasters = {}
    for port in nodes():
        directory = psql("SHOW data_directory", port=port)
        with open(f"{directory}/postmaster.pid") as f:
            postmasters[int(f.readline())] = port
    total = {port: 0.0 for port in postmasters.values()}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if int(pid) in postmasters:
                total[postmasters[int(pid)]] += cpu_seconds(pid, children=True)
            elif parent in postmasters:
                total[postmasters[parent]] += cpu_seconds(pid)
        except OSError:
            pass
    return total


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def last_json(output):
    return json.loads(output.strip().splitlines()[-1])


# Whether every request sends trace ids of its own (see --repeat-trace-ids).
FRESH_IDS = True
LLM_PERCENT = 0


def wal_lsn():
    """WAL written so far, in bytes, summed over the nodes."""
    return sum(int(psql("SELECT pg_current_wal_lsn() - '0/0'", port=port)) for port in nodes())


def loadgen(sig, protocol, seconds, rate=0):
    endpoint = f"http://127.0.0.1:{PORTS[protocol]}"
    out = subprocess.run(
        [f"{ROOT}/target/release/examples/loadgen", "--signal", sig, "--protocol", protocol,
         "--endpoint", endpoint, "--connections", "16", "--inflight", "4",
         "--duration", str(seconds), "--rate", str(rate), "--llm-percent", str(LLM_PERCENT)]
        + (["--fresh-trace-ids"] if FRESH_IDS else []),
        check=True, capture_output=True, text=True,
    )
    return last_json(out.stdout)


def start_otelephant(build=ROOT):
    fresh_database(DATABASE)
    process = subprocess.Popen(
        [f"{build}/target/release/otelephant", "--postgres-url", url(DATABASE),
         "--grpc-addr", f"127.0.0.1:{PORTS['grpc']}", "--http-addr", f"127.0.0.1:{PORTS['http']}",
         "--admin-addr", f"127.0.0.1:{PORTS['admin']}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OTELEPHANT_POSTGRES__CITUS": CITUS},
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORTS['admin']}/readyz", timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit("otelephant did not become ready")


def settle():
    """What the previous run wrote is flushed before this one is measured: otherwise the build
    measured second pays for the first one's checkpoint."""
    psql("CHECKPOINT")
    time.sleep(2)


def run(sig, protocol, seconds, build):
    settle()
    pg_before, wal_before = postgres_cpu_seconds(), wal_lsn()
    ceiling = subprocess.run(
        [f"{build}/target/release/examples/copy_ceiling", "--signal", sig, "--seconds", str(seconds),
         "--url", url("otelephant_bench"), "--citus", CITUS] + (["--fresh-trace-ids"] if FRESH_IDS else []),
        check=True, capture_output=True, text=True,
    )
    pg_after, wal_after = postgres_cpu_seconds(), wal_lsn()
    ceiling = last_json(ceiling.stdout)
    # Includes the ceiling's set-up (migrations, resources and scopes) and clean-up, which are
    # small against the rows streamed.
    ceiling_pg = sum(pg_after[p] - pg_before.get(p, 0.0) for p in nodes()) / ceiling["rows"]
    ceiling_wal = (wal_after - wal_before) / ceiling["rows"]
    ceiling = ceiling["rows_per_second"]

    process = start_otelephant(build)
    settle()
    try:
        cpu, pg_before, wal_before = cpu_seconds(process.pid), postgres_cpu_seconds(), wal_lsn()
        full = loadgen(sig, protocol, seconds)
        cpu, pg_after, wal = cpu_seconds(process.pid) - cpu, postgres_cpu_seconds(), wal_lsn() - wal_before
        pg_nodes = [pg_after[port] - pg_before.get(port, 0.0) for port in nodes()]
        pg_cpu = sum(pg_nodes)
        stored = int(psql(FACTS[sig], DATABASE))
        rate = stored / full["seconds"]
        rss = peak_rss_mib(process.pid)
        # The full-rate run leaves PostgreSQL flushing and vacuuming what it wrote; the half-rate
        # run should see the database in its steady state, not in that aftermath.
        psql("CHECKPOINT", DATABASE)
        psql("VACUUM ANALYZE", DATABASE)
        half = loadgen(sig, protocol, seconds, rate=int(rate / 2))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return {
        "signal": sig, "build": build_name(build), "ceiling": ceiling, "ceiling_pg": ceiling_pg,
        "ceiling_wal": ceiling_wal, "wal": wal / stored, "rate": rate, "stored": stored, "acked": full["accepted_items"],
        "failed": full["failed_requests"], "cpu": cpu, "pg_cpu": pg_cpu, "per_cpu": stored / cpu,
        "p99_full": full["p99_ms"], "half_rate": int(rate / 2), "p99_half": half["p99_ms"],
        "half_failed": half["failed_requests"], "rss": rss, "pg_nodes": pg_nodes,
    }


def build_name(build):
    """A checkout's commit, marked when it has changes not committed."""
    rev = subprocess.run(["git", "-C", build, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", build, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return rev + ("+" if dirty else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--signals", default="traces,metrics,logs")
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    parser.add_argument("--pg-port", type=int, default=5432,
                        help="PostgreSQL on 127.0.0.1 at this port (e.g. a private cluster with other settings)")
    parser.add_argument("--sslmode", default="prefer", choices=["prefer", "disable", "require"],
                        help="sslmode in postgres.url, for otelephant and the ceiling alike")
    parser.add_argument("--citus", default="auto", choices=["auto", "on", "off"],
                        help="on: --pg-port is a Citus coordinator (see above); off: a Citus server used alone")
    parser.add_argument("--build", action="append", default=[],
                        help="an otelephant checkout to measure (repeatable; default: this one)")
    parser.add_argument("--llm-percent", type=int, default=0,
                        help="percent of the spans sent as LLM calls (OpenTelemetry GenAI chat spans)")
    parser.add_argument("--repeat-trace-ids", action="store_true",
                        help="send the distinct requests' trace ids over and over (the figures before 2026-12-01)")
    args = parser.parse_args()
    global PG_PORT, SSLMODE, CITUS, FRESH_IDS, LLM_PERCENT
    PG_PORT = args.pg_port
    SSLMODE = args.sslmode
    CITUS = args.citus
    FRESH_IDS = not args.repeat_trace_ids
    LLM_PERCENT = args.llm_percent
    builds = [os.path.abspath(b) for b in args.build] or [ROOT]

    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "loadgen"], check=True, cwd=ROOT)
    for build in builds:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "otelephant",
                        "--example", "copy_ceiling"], check=True, cwd=build)
    if CITUS == "on":
        fresh_database("otelephant_bench")
    else:
        psql("SELECT 1 FROM pg_database WHERE datname = 'otelephant_bench'") or psql("CREATE DATABASE otelephant_bench")
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores ({cpu_model}), {platform.system()} {platform.release()}; "
          f"{psql('SHOW server_version')} PostgreSQL on the same host (ssl {psql('SHOW ssl')}, sslmode {SSLMODE}); "
          f"{args.protocol}, {args.seconds} s per run, "
          f"{'repeated' if args.repeat_trace_ids else 'fresh'} trace ids"
          + (f"; Citus {psql('SELECT extversion FROM pg_extension WHERE extname = $$citus$$', 'otelephant_bench')}, "
             f"coordinator {PG_PORT} and workers {nodes()[1:]}" if CITUS == "on" else ""))

    results = [run(sig, args.protocol, args.seconds, build) for sig in args.signals.split(",") for build in builds]
    header = ("signal", "build", "ceiling/s", "stored/s", "x ceiling", "per CPU-s", "otel CPU-s", "pg CPU-s",
              "p99 full", "p99 half", "peak RSS")
    print(" | ".join(f"{h:>11}" for h in header))
    for r in results:
        row = (r["signal"], r["build"], f"{r['ceiling']:,.0f}", f"{r['rate']:,.0f}", f"{r['rate'] / r['ceiling']:.2f}",
               f"{r['per_cpu']:,.0f}", f"{r['cpu']:.1f}", f"{r['pg_cpu']:.1f}", f"{r['p99_full']:.1f} ms",
               f"{r['p99_half']:.1f} ms", f"{r['rss']:.0f} MiB")
        print(" | ".join(f"{c:>11}" for c in row))
    for r in results:
        per_item = [f"{seconds / r['stored'] * 1e6:.1f}" for seconds in r["pg_nodes"]]
        where = (f"coordinator {per_item[0]}, workers {', '.join(per_item[1:])}" if CITUS == "on"
                 else f"the server {per_item[0]}")
        print(f"{r['signal']} {r['build']}: CPU-µs per item: PostgreSQL {where}; otelephant {r['cpu'] / r['stored'] * 1e6:.1f};"
              f" at the ceiling PostgreSQL {r['ceiling_pg'] * 1e6:.1f}; WAL bytes per item {r['wal']:,.0f},"
              f" at the ceiling {r['ceiling_wal']:,.0f}")
    for r in results:
        print(f"{r['signal']} {r['build']}: {r['stored']:,} stored, {r['acked']:,} acknowledged, {r['failed']} requests failed at full"
              f" rate; {r['half_failed']} failed at half rate ({r['half_rate']:,}/s)")


if __name__ == "__main__":
    main()
