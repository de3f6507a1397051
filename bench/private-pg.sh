#!/usr/bin/env bash
# A private PostgreSQL 15 cluster for benchmarks, with settings for a write-heavy telemetry store,
# so that the shared server at 5432 is never reconfigured.
#
#   bench/private-pg.sh start [PORT] [SETTINGS]   # initdb (first time) and start, default port 5440
#   bench/private-pg.sh stop [PORT]
#
# SETTINGS (when the cluster is first made):
#   tuned       the settings README.md recommends (the default);
#   no-lz4      the same without wal_compression;
#   defaults    PostgreSQL's own defaults (shared_buffers 128MB, max_wal_size 1GB, 5 min checkpoints),
#               as a packaged server starts with.
#
# Then: bench/ingest.py --pg-port 5440
# The cluster lives in /tmp/otelephant-pg-PORT, owned by the postgres user, trust auth on 127.0.0.1.
set -euo pipefail
action=${1:?start or stop}
port=${2:-5440}
settings=${3:-tuned}
dir=/tmp/otelephant-pg-$port
bin=/usr/lib/postgresql/15/bin
as_postgres() { if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi; }

case $action in
start)
    if [ ! -f "$dir/PG_VERSION" ]; then
        mkdir -p "$dir" && chown postgres: "$dir"
        as_postgres "$bin/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
        cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
CONF
        [ "$settings" = defaults ] || cat >>"$dir/postgresql.conf" <<CONF
shared_buffers = 2GB
wal_buffers = 64MB
max_wal_size = 16GB
min_wal_size = 2GB
checkpoint_timeout = 30min
checkpoint_completion_target = 0.9
wal_compression = lz4
maintenance_work_mem = 256MB
synchronous_commit = on
CONF
        [ "$settings" != no-lz4 ] || echo "wal_compression = off" >>"$dir/postgresql.conf"
    fi
    as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/log" -w status >/dev/null 2>&1 ||
        as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/log" -w start >/dev/null
    echo "PostgreSQL at 127.0.0.1:$port ($dir)"
    ;;
stop)
    as_postgres "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
    ;;
*)
    echo "usage: $0 start|stop [PORT] [tuned|no-lz4|defaults]" >&2
    exit 2
    ;;
esac
