//! The rollups' upkeep, run every `rollups.pass_interval_secs` by one replica at a time (a
//! session advisory lock; the others skip the pass):
//! - **folding**: the writers add a `span_rollup`, `peer_calls` and `log_rollup` row per key per
//!   transaction, and pairing a `service_edges` row per edge per chunk; once a minute has
//!   closed, its rows of one key are folded into one (counts added, duration sketches merged),
//!   in one transaction, so a read sums the same figures before and after, over a number of rows
//!   that depends on the keys and minutes it shows, not on how many requests brought them. Each
//!   pass folds the last [`RECENT`]; every [`SWEEP_EVERY`]th pass (and the first) folds back to
//!   [`SWEEP`], for late records.
//! - **pairing**: the writers add a `pairing_candidates` row for each child span that may end a
//!   call from another service (`encode::rollups`). Once a candidate is due (10 s after it was
//!   stored), a pass takes it with a few thousand others, looks their parents up by trace id,
//!   and adds the calls whose parent is another service's to `service_edges`, in the same
//!   transaction, so each child is counted once. A child whose parent is not stored yet is put
//!   back, due again after twice as long as it has waited (at about 30 s, 1.5, 4.5 and 13.5
//!   minutes), until `rollups.parent_wait_secs` after it was stored; then it is dropped.
//!   When the parent is a client or producer span that names a peer (`encode::rollups::Peer`),
//!   the pass records in `peer_services` that the caller's peer is the child's service, so that
//!   reads draw those calls as the edge between the two services, not also as a leaf.
//! - **rebuilding** ([`rebuild`], `otelephant rollups rebuild`): the rollups of a time range
//!   computed afresh from the stored spans and log records, for data stored before the rollups
//!   existed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, SystemTime},
};

use deadpool_postgres::{Object, Pool, Transaction};

use super::{writer, SessionLock, StoreError};
use crate::{
    config::RollupConfig,
    encode::{
        copy::{Rows, Table, TableKind},
        rollups::{
            CallTally, LogTallies, Peer, SpanTallies, CALLED_KINDS, CALLING_KINDS, LOG_ROLLUP, MINUTE_NANOS,
            PEER_CALLS, PEER_KEYS, SERVICE_EDGES, SPAN_ROLLUP, STATUS_ERROR,
        },
        sketch::{self, Durations},
    },
    telemetry::Telemetry,
};

const LOCK: &str = "hashtext('otelephant rollups ' || current_schema())";

/// How far back every pass folds.
const RECENT: Duration = Duration::from_secs(2 * 3600);
/// How far back a sweep folds: two days, when closed days turn columnar by default (a columnar
/// partition takes no DELETE).
const SWEEP: Duration = Duration::from_secs(2 * 86_400);
const SWEEP_EVERY: u64 = 60;
/// Folding goes through its window in slices of this many minutes (those that have rows to
/// fold), one transaction each, so that a backlog is never held in memory whole.
const FOLD_SLICE_MINUTES: i64 = 10;
/// A candidate is looked for at least this long after it was stored (migration 7 sets its first
/// time): exporters send a span within seconds of its end, so most parents are stored by then.
const SETTLE: Duration = Duration::from_secs(10);
/// Where a child's parent is looked for: spans that started within a day of the child's
/// minute, so that the lookup reads a few daily partitions, not all of them.
const PARENT_WINDOW_NANOS: i64 = 86_400_000_000_000;
/// Candidates taken in one transaction: one lookup of their parents.
const PAIR_CHUNK: usize = 2_000;
/// Candidates taken in one pass at most; the rest wait for the next.
const MAX_PAIRED_PER_PASS: usize = 500_000;

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rollup rows folded away (rows before minus rows after).
    pub folded: u64,
    /// Child spans whose parent was found.
    pub paired: u64,
    /// Child spans left to pair: not yet due, or waiting for their parent.
    pub waiting: u64,
}

fn nanos(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

fn minute_floor(nanos: i64) -> i64 {
    nanos - nanos.rem_euclid(MINUTE_NANOS as i64)
}

/// Runs one pass unless another replica is running one; `sweep` folds back two days instead of
/// two hours. Returns `None` when it skipped.
///
/// # Errors
/// No connection or a failed step; steps before it stay done.
pub async fn run_pass(
    pool: &Pool,
    config: &RollupConfig,
    now: SystemTime,
    sweep: bool,
) -> Result<Option<Report>, StoreError> {
    let Some(mut locked) = SessionLock::try_take(pool, LOCK).await? else { return Ok(None) };
    let result = pass(locked.client(), config, now, sweep).await;
    locked.release().await;
    result.map(Some)
}

async fn pass(
    client: &mut Object,
    config: &RollupConfig,
    now: SystemTime,
    sweep: bool,
) -> Result<Report, StoreError> {
    let now = nanos(now);
    let closed = minute_floor(now);
    let since = minute_floor(now - if sweep { SWEEP } else { RECENT }.as_nanos() as i64);
    let mut report = Report::default();
    let slice = FOLD_SLICE_MINUTES * MINUTE_NANOS as i64;
    // The slices holding a key of more than one row, found in one read of the window.
    let slices: Vec<i64> = client
        .query(
            "SELECT DISTINCT minute_unix_nano - minute_unix_nano % $3 FROM (
                 SELECT minute_unix_nano FROM span_rollup WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                 GROUP BY minute_unix_nano, resource_id, name, kind, status_code HAVING count(*) > 1
                 UNION ALL
                 SELECT minute_unix_nano FROM log_rollup WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                 GROUP BY minute_unix_nano, resource_id, severity_number HAVING count(*) > 1
                 UNION ALL
                 SELECT minute_unix_nano FROM service_edges WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                 GROUP BY minute_unix_nano, parent_service, child_service HAVING count(*) > 1
                 UNION ALL
                 SELECT minute_unix_nano FROM peer_calls WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                 GROUP BY minute_unix_nano, resource_id, peer_kind, peer HAVING count(*) > 1) due
             ORDER BY 1",
            &[&since, &closed, &slice],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for lo in slices {
        report.folded += fold(client, lo.max(since), (lo + slice).min(closed)).await?;
    }
    let wait = config.parent_wait_secs.saturating_mul(1_000_000_000).min(i64::MAX as u64) as i64;
    let mut services = HashMap::new();
    let mut taken = 0;
    while taken < MAX_PAIRED_PER_PASS {
        let (chunk, found) = pair_chunk(client, &mut services, now, wait).await?;
        if chunk == 0 {
            break;
        }
        taken += chunk;
        report.paired += found;
    }
    report.waiting =
        client.query_one("SELECT count(*) FROM pairing_candidates", &[]).await?.get::<_, i64>(0) as u64;
    Ok(report)
}

/// Folds the rows of each key of the closed minutes in `[lo, hi)` that has more than one, in
/// one transaction. Returns how many rows fewer there are.
async fn fold(client: &mut Object, lo: i64, hi: i64) -> Result<u64, StoreError> {
    let tx = client.transaction().await?;
    let spans = tx
        .query(
            "DELETE FROM span_rollup u USING (
                 SELECT minute_unix_nano, resource_id, name, kind, status_code FROM span_rollup
                 WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                 GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1) d
             WHERE u.minute_unix_nano >= $1 AND u.minute_unix_nano < $2
               AND u.minute_unix_nano = d.minute_unix_nano AND u.resource_id = d.resource_id
               AND u.name = d.name AND u.kind = d.kind AND u.status_code = d.status_code
             RETURNING u.minute_unix_nano, u.resource_id, u.name, u.kind, u.status_code, u.spans, u.durations",
            &[&lo, &hi],
        )
        .await?;
    let logs = tx
        .query(
            "DELETE FROM log_rollup u USING (
                 SELECT minute_unix_nano, resource_id, severity_number FROM log_rollup
                 WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                 GROUP BY 1, 2, 3 HAVING count(*) > 1) d
             WHERE u.minute_unix_nano >= $1 AND u.minute_unix_nano < $2
               AND u.minute_unix_nano = d.minute_unix_nano AND u.resource_id = d.resource_id
               AND u.severity_number = d.severity_number
             RETURNING u.minute_unix_nano, u.resource_id, u.severity_number, u.records",
            &[&lo, &hi],
        )
        .await?;
    let edges = tx
        .query(
            "DELETE FROM service_edges u USING (
                 SELECT minute_unix_nano, parent_service, child_service FROM service_edges
                 WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                 GROUP BY 1, 2, 3 HAVING count(*) > 1) d
             WHERE u.minute_unix_nano >= $1 AND u.minute_unix_nano < $2
               AND u.minute_unix_nano = d.minute_unix_nano AND u.parent_service = d.parent_service
               AND u.child_service = d.child_service
             RETURNING u.minute_unix_nano, u.parent_service, u.child_service, u.calls, u.errors, u.durations",
            &[&lo, &hi],
        )
        .await?;
    let peers = tx
        .query(
            "DELETE FROM peer_calls u USING (
                 SELECT minute_unix_nano, resource_id, peer_kind, peer FROM peer_calls
                 WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                 GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d
             WHERE u.minute_unix_nano >= $1 AND u.minute_unix_nano < $2
               AND u.minute_unix_nano = d.minute_unix_nano AND u.resource_id = d.resource_id
               AND u.peer_kind = d.peer_kind AND u.peer = d.peer
             RETURNING u.minute_unix_nano, u.resource_id, u.peer_kind, u.peer, u.calls, u.errors, u.durations",
            &[&lo, &hi],
        )
        .await?;
    if spans.is_empty() && logs.is_empty() && edges.is_empty() && peers.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut span_tallies = SpanTallies::default();
    for row in &spans {
        let durations = Durations::decode(row.get::<_, &[u8]>(6)).map_err(|err| {
            StoreError::Rollup(format!("span_rollup row of minute {}: {err}", row.get::<_, i64>(0)))
        })?;
        span_tallies.add_counted(
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)),
            row.get::<_, i64>(5) as u64,
            &durations,
        );
    }
    let mut log_tallies = LogTallies::default();
    for row in &logs {
        log_tallies.add_counted((row.get(0), row.get(1), row.get(2)), row.get::<_, i64>(3) as u64);
    }
    let mut edge_tallies = EdgeTallies::new();
    for row in &edges {
        let durations = Durations::decode(row.get::<_, &[u8]>(5)).map_err(|err| {
            StoreError::Rollup(format!("service_edges row of minute {}: {err}", row.get::<_, i64>(0)))
        })?;
        edge_tallies.entry((row.get(0), row.get(1), row.get(2))).or_default().merge(&CallTally {
            calls: row.get::<_, i64>(3) as u64,
            errors: row.get::<_, i64>(4) as u64,
            durations,
        });
    }
    for row in &peers {
        let durations = Durations::decode(row.get::<_, &[u8]>(6)).map_err(|err| {
            StoreError::Rollup(format!("peer_calls row of minute {}: {err}", row.get::<_, i64>(0)))
        })?;
        span_tallies.add_peer_calls(
            (row.get(0), row.get(1), row.get(2), row.get(3)),
            &CallTally { calls: row.get::<_, i64>(4) as u64, errors: row.get::<_, i64>(5) as u64, durations },
        );
    }
    write_span_tallies(&tx, &span_tallies).await?;
    write_log_tallies(&tx, &log_tallies).await?;
    write_edges(&tx, &edge_tallies).await?;
    tx.commit().await?;
    Ok((spans.len() - span_tallies.len() + logs.len() - log_tallies.len() + edges.len() - edge_tallies.len()
        + peers.len()
        - span_tallies.peer_rows()) as u64)
}

/// Writes the `span_rollup` and `peer_calls` rows of `tallies`.
async fn write_span_tallies(tx: &Transaction<'_>, tallies: &SpanTallies) -> Result<(), StoreError> {
    let (mut spans, mut peers) = (Rows::default(), Rows::default());
    tallies.write(&mut spans);
    tallies.write_peers(&mut peers);
    for (table, rows) in [(&SPAN_ROLLUP, spans), (&PEER_CALLS, peers)] {
        if rows.count > 0 {
            writer::copy(tx, &table.copy_statement(table.name), &[&rows.buf.freeze()]).await?;
        }
    }
    Ok(())
}

async fn write_log_tallies(tx: &Transaction<'_>, tallies: &LogTallies) -> Result<(), StoreError> {
    if tallies.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::default();
    tallies.write(&mut rows);
    writer::copy(tx, &LOG_ROLLUP.copy_statement(LOG_ROLLUP.name), &[&rows.buf.freeze()]).await?;
    Ok(())
}

/// Calls from one service to another by (minute, parent service, child service).
type EdgeTallies<'a> = BTreeMap<(i64, &'a str, &'a str), CallTally>;

async fn write_edges(tx: &Transaction<'_>, edges: &EdgeTallies<'_>) -> Result<(), StoreError> {
    if edges.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::default();
    for (&(minute, parent_service, child_service), edge) in edges {
        let mut row = rows.row(&SERVICE_EDGES);
        row.int8(minute);
        row.text(parent_service);
        row.text(child_service);
        row.int8(edge.calls as i64);
        row.int8(edge.errors as i64);
        row.bytea(&edge.durations.encode());
    }
    writer::copy(tx, &SERVICE_EDGES.copy_statement(SERVICE_EDGES.name), &[&rows.buf.freeze()]).await?;
    Ok(())
}

/// A span's duration as the writers compute it (end minus start of the u64 times, wrapping), in
/// SQL over the stored i64s: plain subtraction unless the two differ in sign, where it would
/// overflow.
fn duration_sql(span: &str) -> String {
    format!(
        "CASE WHEN ({span}.start_time_unix_nano < 0) = ({span}.end_time_unix_nano < 0) \
         THEN {span}.end_time_unix_nano - {span}.start_time_unix_nano \
         ELSE (((({span}.end_time_unix_nano::numeric - {span}.start_time_unix_nano::numeric) \
         + 9223372036854775808) % 18446744073709551616 + 18446744073709551616) \
         % 18446744073709551616 - 9223372036854775808)::bigint END"
    )
}

/// The bucket of a duration, as `sketch::bucket` computes it, in SQL: `$n` is `ln(gamma)`,
/// passed from Rust so that both divide by the same number.
fn bucket_sql(duration: &str, ln_gamma: &str) -> String {
    format!(
        "CASE WHEN {duration} <= 0 THEN {zero} ELSE ceil(ln(({duration})::float8) / {ln_gamma})::integer END",
        zero = sketch::ZERO
    )
}

/// A child span waiting to be paired, as a chunk takes it.
struct Candidate {
    minute: i64,
    trace_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    resource_id: i64,
    status_code: i32,
    duration_nanos: i64,
    stored: i64,
}

/// Pairs up to [`PAIR_CHUNK`] candidates due by `now` with their parents in one transaction:
/// takes them, counts the calls of those whose parent is stored and belongs to another service
/// into `service_edges` rows, and puts those whose parent is not stored back, due again after
/// twice as long as they have waited, until `wait` after they were stored. Returns how many
/// were taken and how many of those found their parent.
async fn pair_chunk(
    client: &mut Object,
    services: &mut HashMap<i64, Option<String>>,
    now: i64,
    wait: i64,
) -> Result<(usize, u64), StoreError> {
    let tx = client.transaction().await?;
    // The table is the coordinator's own on Citus, so its rows have a ctid to take them by.
    let taken: Vec<Candidate> = tx
        .query(
            "DELETE FROM pairing_candidates WHERE ctid = ANY (ARRAY (
                 SELECT ctid FROM pairing_candidates WHERE due_unix_nano <= $1 ORDER BY due_unix_nano LIMIT $2))
             RETURNING minute_unix_nano, trace_id, parent_span_id, resource_id, status_code, duration_nanos,
                       stored_unix_nano",
            &[&now, &(PAIR_CHUNK as i64)],
        )
        .await?
        .iter()
        .map(|row| Candidate {
            minute: row.get(0),
            trace_id: row.get(1),
            parent_span_id: row.get(2),
            resource_id: row.get(3),
            status_code: row.get(4),
            duration_nanos: row.get(5),
            stored: row.get(6),
        })
        .collect();
    if taken.is_empty() {
        tx.rollback().await?;
        return Ok((0, 0));
    }
    // The parents, among the spans of the candidates' traces that started within a day of them:
    // found by the trace-id index (on Citus, on the traces' shards), read only when their span
    // id is one of the parents'.
    let mut trace_ids: Vec<&[u8]> = taken.iter().map(|c| c.trace_id.as_slice()).collect();
    trace_ids.sort_unstable();
    trace_ids.dedup();
    let mut parent_ids: Vec<&[u8]> = taken.iter().map(|c| c.parent_span_id.as_slice()).collect();
    parent_ids.sort_unstable();
    parent_ids.dedup();
    let first = taken.iter().map(|c| c.minute).min().unwrap_or(0);
    let last = taken.iter().map(|c| c.minute).max().unwrap_or(0);
    let spans = tx
        .query(
            &format!(
                "SELECT trace_id, span_id, resource_id, {peer} FROM spans
                 WHERE trace_id = ANY ($1::bytea[]) AND span_id = ANY ($2::bytea[])
                   AND start_time_unix_nano >= $3 AND start_time_unix_nano < $4",
                peer = peer_columns_sql("spans")
            ),
            &[
                &trace_ids,
                &parent_ids,
                &first.saturating_sub(PARENT_WINDOW_NANOS),
                &last.saturating_add(PARENT_WINDOW_NANOS),
            ],
        )
        .await?;
    let parents: Parents<'_> =
        spans.iter().map(|row| ((row.get(0), row.get(1)), (row.get(2), peer_of_row(row, 3)))).collect();
    let unknown: Vec<i64> = taken
        .iter()
        .map(|c| c.resource_id)
        .chain(parents.values().map(|(id, _)| *id))
        .filter(|id| !services.contains_key(id))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !unknown.is_empty() {
        for row in tx
            .query(
                "SELECT resource_id, service_name FROM resources WHERE resource_id = ANY ($1)",
                &[&unknown],
            )
            .await?
        {
            services.insert(row.get(0), row.get(1));
        }
    }
    let service = |id: i64| services.get(&id).and_then(Option::as_deref);
    let mut edges = EdgeTallies::new();
    let mut answered: BTreeSet<(&str, &Peer<'_>, &str)> = BTreeSet::new();
    let mut found = 0;
    let mut waiting = Vec::new();
    for candidate in &taken {
        let Some((parent, peer)) =
            parents.get(&(candidate.trace_id.as_slice(), candidate.parent_span_id.as_slice()))
        else {
            if candidate.stored >= now - wait {
                waiting.push(candidate);
            }
            continue;
        };
        found += 1;
        let (Some(parent), Some(child)) = (service(*parent), service(candidate.resource_id)) else {
            continue;
        };
        if parent == child {
            continue;
        }
        edges
            .entry((candidate.minute, parent, child))
            .or_default()
            .add(candidate.status_code, candidate.duration_nanos);
        if let Some(peer) = peer {
            answered.insert((parent, peer, child));
        }
    }
    write_edges(&tx, &edges).await?;
    write_peer_services(&tx, &answered, now).await?;
    if !waiting.is_empty() {
        let mut rows = Rows::default();
        for candidate in waiting {
            let mut row = rows.row(&WAITING);
            row.int8(candidate.minute);
            row.bytea(&candidate.trace_id);
            row.bytea(&candidate.parent_span_id);
            row.int8(candidate.resource_id);
            row.int4(candidate.status_code);
            row.int8(candidate.duration_nanos);
            row.int8(candidate.stored);
            row.int8(now.saturating_add(2 * (now - candidate.stored).max(SETTLE.as_nanos() as i64)));
        }
        writer::copy(&tx, &WAITING.copy_statement(WAITING.name), &[&rows.buf.freeze()]).await?;
    }
    tx.commit().await?;
    Ok((taken.len(), found))
}

/// The string values of [`PEER_KEYS`] of a calling span (NULL for other spans), as SQL columns
/// of the spans table aliased `span`, in their order.
fn peer_columns_sql(span: &str) -> String {
    let kinds = CALLING_KINDS.map(|kind| kind.to_string()).join(", ");
    PEER_KEYS
        .iter()
        .map(|key| {
            format!(
                "CASE WHEN {span}.kind IN ({kinds}) AND jsonb_typeof({span}.attributes -> '{key}') = 'string' \
                 THEN {span}.attributes ->> '{key}' END"
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The peer named by the columns of [`peer_columns_sql`], from column `first` on.
fn peer_of_row(row: &tokio_postgres::Row, first: usize) -> Option<Peer<'_>> {
    let mut values = [None; PEER_KEYS.len()];
    for (i, value) in values.iter_mut().enumerate() {
        *value = row.get::<_, Option<&str>>(first + i);
    }
    Peer::of(&values)
}

/// Records that calls of `caller` to `peer` were answered by `service`, a span of which was
/// paired with the calling span.
async fn write_peer_services(
    tx: &Transaction<'_>,
    answered: &BTreeSet<(&str, &Peer<'_>, &str)>,
    now: i64,
) -> Result<(), StoreError> {
    if answered.is_empty() {
        return Ok(());
    }
    let callers: Vec<&str> = answered.iter().map(|(caller, _, _)| *caller).collect();
    let kinds: Vec<i32> = answered.iter().map(|(_, peer, _)| peer.kind as i32).collect();
    let peers: Vec<&str> = answered.iter().map(|(_, peer, _)| peer.name.as_ref()).collect();
    let services: Vec<&str> = answered.iter().map(|(_, _, service)| *service).collect();
    tx.execute(
        "INSERT INTO peer_services (caller_service, peer_kind, peer, service, last_seen_unix_nano)
         SELECT c, k, p, s, $5 FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[]) AS u (c, k, p, s)
         ON CONFLICT (caller_service, peer_kind, peer, service) DO UPDATE
         SET last_seen_unix_nano = greatest(peer_services.last_seen_unix_nano, EXCLUDED.last_seen_unix_nano)",
        &[&callers, &kinds, &peers, &services, &now],
    )
    .await?;
    Ok(())
}

/// The parents found, by (trace id, span id): their resource, and the peer they call when they
/// are client or producer spans.
type Parents<'a> = HashMap<(&'a [u8], &'a [u8]), (i64, Option<Peer<'a>>)>;

/// `pairing_candidates` with every column: a candidate put back to wait.
const WAITING: Table = Table {
    name: "pairing_candidates",
    columns: &[
        "minute_unix_nano",
        "trace_id",
        "parent_span_id",
        "resource_id",
        "status_code",
        "duration_nanos",
        "stored_unix_nano",
        "due_unix_nano",
    ],
    kind: TableKind::Queue,
};

/// Runs a pass at once and then every `pass_interval_secs` until the pool closes; every
/// [`SWEEP_EVERY`]th pass, and the first, is a sweep. Counts passes in `passes`.
pub async fn maintain(
    pool: Pool,
    config: RollupConfig,
    telemetry: Telemetry,
    passes: tokio::sync::watch::Sender<u64>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.pass_interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        match run_pass(&pool, &config, SystemTime::now(), n.is_multiple_of(SWEEP_EVERY)).await {
            Ok(Some(report)) => {
                tracing::debug!(?report, "rollup pass");
                telemetry.counter(crate::telemetry::ROLLUP_ROWS_FOLDED, &[]).increment(report.folded);
                telemetry.counter(crate::telemetry::ROLLUP_SPANS_PAIRED, &[]).increment(report.paired);
            }
            Ok(None) => tracing::debug!("another replica is keeping the rollups; skipped"),
            Err(err) => tracing::warn!(%err, "rollup pass failed; retrying at the next pass"),
        }
        n += 1;
        passes.send_modify(|n| *n += 1);
    }
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub hours: usize,
    pub span_rows: usize,
    pub log_rows: usize,
}

/// Computes the rollups of `[from, to)` (nanoseconds, whole hours) afresh from the stored spans
/// and log records, an hour per transaction: the hour's rollup rows are replaced by ones that
/// count its records as that transaction sees them (REPEATABLE READ, so writers adding records
/// meanwhile are counted by their own rows, never twice), and its calls between services are
/// replaced by candidates for all its child spans, which the next passes pair. Holds the
/// rollups lock, so no pass folds or pairs meanwhile.
///
/// # Errors
/// Database errors; hours before the error stay rebuilt.
pub async fn rebuild(pool: &Pool, from: i64, to: i64) -> Result<Rebuilt, StoreError> {
    const HOUR: i64 = 3_600_000_000_000;
    let mut locked = SessionLock::take(pool, LOCK).await?;
    let mut rebuilt = Rebuilt::default();
    let mut hour = from - from.rem_euclid(HOUR);
    let result = async {
        while hour < to {
            let (span_rows, log_rows) = rebuild_hour(locked.client(), hour, hour + HOUR).await?;
            rebuilt.hours += 1;
            rebuilt.span_rows += span_rows;
            rebuilt.log_rows += log_rows;
            hour += HOUR;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    locked.release().await;
    result.map(|()| rebuilt)
}

async fn rebuild_hour(client: &mut Object, lo: i64, hi: i64) -> Result<(usize, usize), StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    tx.execute("DELETE FROM span_rollup WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2", &[&lo, &hi])
        .await?;
    tx.execute("DELETE FROM log_rollup WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2", &[&lo, &hi])
        .await?;
    let minute = format!("(s.start_time_unix_nano - s.start_time_unix_nano % {MINUTE_NANOS})");
    let spans = tx
        .query(
            &format!(
                "SELECT {minute}, s.resource_id, s.name, s.kind, coalesce(s.status_code, 0), {bucket}, count(*)
                 FROM spans s WHERE s.start_time_unix_nano >= $1 AND s.start_time_unix_nano < $2
                 GROUP BY 1, 2, 3, 4, 5, 6",
                bucket = bucket_sql(&duration_sql("s"), "$3")
            ),
            &[&lo, &hi, &sketch::ln_gamma()],
        )
        .await?;
    let mut span_tallies = SpanTallies::default();
    for row in &spans {
        let count = row.get::<_, i64>(6) as u64;
        let mut durations = Durations::default();
        durations.add_to_bucket(row.get(5), count);
        span_tallies.add_counted(
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)),
            count,
            &durations,
        );
    }
    let logs = tx
        .query(
            &format!(
                "SELECT l.timestamp_unix_nano - l.timestamp_unix_nano % {MINUTE_NANOS}, l.resource_id, l.severity_number, count(*)
                 FROM logs l WHERE l.timestamp_unix_nano >= $1 AND l.timestamp_unix_nano < $2
                 GROUP BY 1, 2, 3"
            ),
            &[&lo, &hi],
        )
        .await?;
    let mut log_tallies = LogTallies::default();
    for row in &logs {
        log_tallies.add_counted((row.get(0), row.get(1), row.get(2)), row.get::<_, i64>(3) as u64);
    }
    tx.execute("DELETE FROM peer_calls WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2", &[&lo, &hi])
        .await?;
    let first_peer_column = 5;
    let calls = tx
        .query(
            &format!(
                "SELECT {minute}, s.resource_id, coalesce(s.status_code, 0), {bucket}, count(*), {peer}
                 FROM spans s WHERE s.start_time_unix_nano >= $1 AND s.start_time_unix_nano < $2
                   AND s.kind IN ({kinds}) AND s.attributes ?| $4::text[]
                 GROUP BY 1, 2, 3, 4, {peer_positions}",
                bucket = bucket_sql(&duration_sql("s"), "$3"),
                peer = peer_columns_sql("s"),
                kinds = CALLING_KINDS.map(|kind| kind.to_string()).join(", "),
                peer_positions = (0..PEER_KEYS.len())
                    .map(|i| (first_peer_column + 1 + i).to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            &[&lo, &hi, &sketch::ln_gamma(), &PEER_KEYS.as_slice()],
        )
        .await?;
    for row in &calls {
        let Some(peer) = peer_of_row(row, first_peer_column) else { continue };
        let count = row.get::<_, i64>(4) as u64;
        let mut durations = Durations::default();
        durations.add_to_bucket(row.get(3), count);
        let errors = if row.get::<_, i32>(2) == STATUS_ERROR { count } else { 0 };
        span_tallies.add_peer_calls(
            (row.get(0), row.get(1), peer.kind as i32, &peer.name),
            &CallTally { calls: count, errors, durations },
        );
    }
    write_span_tallies(&tx, &span_tallies).await?;
    write_log_tallies(&tx, &log_tallies).await?;
    // The hour's calls are counted afresh from candidates for all its child spans.
    tx.execute(
        "DELETE FROM service_edges WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2",
        &[&lo, &hi],
    )
    .await?;
    tx.execute(
        "DELETE FROM pairing_candidates WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2",
        &[&lo, &hi],
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO pairing_candidates
                 (minute_unix_nano, trace_id, parent_span_id, resource_id, status_code, duration_nanos)
             SELECT {minute}, s.trace_id, s.parent_span_id, s.resource_id, coalesce(s.status_code, 0), {duration}
             FROM spans s
             WHERE s.start_time_unix_nano >= $1 AND s.start_time_unix_nano < $2 AND s.parent_span_id IS NOT NULL
               AND s.kind IN ({kinds})",
            duration = duration_sql("s"),
            kinds = CALLED_KINDS.map(|kind| kind.to_string()).join(", ")
        ),
        &[&lo, &hi],
    )
    .await?;
    tx.commit().await?;
    Ok((span_tallies.len(), log_tallies.len()))
}
