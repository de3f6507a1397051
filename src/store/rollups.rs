//! The rollups' upkeep, run every `rollups.pass_interval_secs` by one replica at a time (a
//! session advisory lock; the others skip the pass):
//! - **folding**: the writers add a `span_rollup` and `log_rollup` row per key per request;
//!   once a minute has closed, its rows of one key are folded into one (counts added, duration
//!   sketches merged), in one transaction, so a read sums the same figures before and after,
//!   over a number of rows that depends on the keys and minutes it shows, not on how many
//!   requests brought them. Each pass folds the last [`RECENT`]; every [`SWEEP_EVERY`]th pass
//!   (and the first) folds back to [`SWEEP`], for late records.
//! - **pairing**: each closed minute with new child spans (`pairing_due`, written with them) is
//!   paired once: its child spans are joined to their parents, and the calls between services
//!   replace that minute's `service_edges`. A child whose parent is not stored yet is kept in
//!   `pairing_orphans` and looked for again, at growing intervals, for `rollups.parent_wait_secs`;
//!   when its parent turns up, its minute is paired again. A child stored late marks its minute
//!   due again.
//! - **rebuilding** ([`rebuild`], `otelephant rollups rebuild`): the rollups of a time range
//!   computed afresh from the stored spans and log records, for data stored before the rollups
//!   existed.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use deadpool_postgres::{Object, Pool, Transaction};

use super::{writer, SessionLock, StoreError};
use crate::{
    config::RollupConfig,
    encode::{
        copy::Rows,
        rollups::{LogTallies, SpanTallies, LOG_ROLLUP, MINUTE_NANOS, SERVICE_EDGES, SPAN_ROLLUP},
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
/// A minute is paired once it ended this long ago: exporters send a span within seconds of its
/// end, so most of a minute's children are stored by then.
const SETTLE: Duration = Duration::from_secs(10);
/// Where a child's parent is looked for: spans that started within a day of the child's
/// minute, so that the lookup reads a few daily partitions, not all of them.
const PARENT_WINDOW_NANOS: i64 = 86_400_000_000_000;
/// Minutes paired in one pass at most; the rest wait for the next.
const MAX_MINUTES_PER_PASS: usize = 720;

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Rollup rows folded away (rows before minus rows after).
    pub folded: u64,
    /// Minutes whose calls between services were paired.
    pub paired: usize,
    /// Child spans still waiting for their parent.
    pub orphans: u64,
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
                 GROUP BY minute_unix_nano, resource_id, severity_number HAVING count(*) > 1) due
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
    let paired_before = minute_floor(now - SETTLE.as_nanos() as i64);
    let mut due: BTreeSet<i64> = client
        .query(
            "SELECT DISTINCT minute_unix_nano FROM pairing_due WHERE minute_unix_nano < $1 ORDER BY 1 LIMIT $2",
            &[&paired_before, &(MAX_MINUTES_PER_PASS as i64)],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    due.extend(parents_found(client, now).await?);
    let wait = config.parent_wait_secs.saturating_mul(1_000_000_000).min(i64::MAX as u64) as i64;
    client.execute("DELETE FROM pairing_orphans WHERE first_seen_unix_nano < $1", &[&(now - wait)]).await?;
    for &minute in due.iter().take(MAX_MINUTES_PER_PASS) {
        pair(client, minute, now).await?;
        report.paired += 1;
    }
    report.orphans =
        client.query_one("SELECT count(*) FROM pairing_orphans", &[]).await?.get::<_, i64>(0) as u64;
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
    if spans.is_empty() && logs.is_empty() {
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
    write_span_tallies(&tx, &span_tallies).await?;
    write_log_tallies(&tx, &log_tallies).await?;
    tx.commit().await?;
    Ok((spans.len() - span_tallies.len() + logs.len() - log_tallies.len()) as u64)
}

async fn write_span_tallies(tx: &Transaction<'_>, tallies: &SpanTallies) -> Result<(), StoreError> {
    if tallies.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::default();
    tallies.write(&mut rows);
    writer::copy(tx, &SPAN_ROLLUP.copy_statement(SPAN_ROLLUP.name), &[&rows.buf.freeze()]).await?;
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

/// The status code of a failed span.
const STATUS_ERROR: i32 = 2;

/// The bucket of a span's duration, as `sketch::bucket` computes it, in SQL: `$n` is
/// `ln(gamma)`, passed from Rust so that both divide by the same number.
fn bucket_sql(span: &str, ln_gamma: &str) -> String {
    format!(
        "CASE WHEN {span}.end_time_unix_nano <= {span}.start_time_unix_nano THEN {zero} \
         ELSE ceil(ln({span}.end_time_unix_nano::float8 - {span}.start_time_unix_nano::float8) / {ln_gamma})::integer END",
        zero = sketch::ZERO
    )
}

/// Pairs the spans with a parent that started in `minute` and may end a call (server, consumer
/// and unspecified, `encode::rollups::CALLED_KINDS`) with their parents, replacing the minute's
/// `service_edges` and orphans.
async fn pair(client: &mut Object, minute: i64, now: i64) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("DELETE FROM pairing_due WHERE minute_unix_nano = $1", &[&minute]).await?;
    tx.execute("DELETE FROM service_edges WHERE minute_unix_nano = $1", &[&minute]).await?;
    tx.execute("DELETE FROM pairing_orphans WHERE minute_unix_nano = $1", &[&minute]).await?;
    let end = minute + MINUTE_NANOS as i64;
    let (parents_from, parents_to) =
        (minute.saturating_sub(PARENT_WINDOW_NANOS), end.saturating_add(PARENT_WINDOW_NANOS));
    // Each child of the minute with its parent's service, looked up one probe of the trace-id
    // index at a time (LATERAL ... LIMIT 1: never a join that reads every span in the window),
    // which Citus runs on the child's shard.
    let children = tx
        .query(
            "SELECT c.trace_id, c.parent_span_id, cr.service_name, p.service_name, c.status_code,
                    c.start_time_unix_nano, c.end_time_unix_nano, p.found
             FROM spans c
             LEFT JOIN resources cr ON cr.resource_id = c.resource_id
             LEFT JOIN LATERAL (
                 SELECT true AS found, pr.service_name FROM spans p
                 LEFT JOIN resources pr ON pr.resource_id = p.resource_id
                 WHERE p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
                   AND p.start_time_unix_nano >= $3 AND p.start_time_unix_nano < $4
                 LIMIT 1) p ON true
             WHERE c.start_time_unix_nano >= $1 AND c.start_time_unix_nano < $2 AND c.parent_span_id IS NOT NULL
               AND c.kind IN (0, 2, 5)",
            &[&minute, &end, &parents_from, &parents_to],
        )
        .await?;
    let mut edges: BTreeMap<(&str, &str), (u64, u64, Durations)> = BTreeMap::new();
    let (mut orphan_traces, mut orphan_parents): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
    for row in &children {
        if row.get::<_, Option<bool>>(7).is_none() {
            orphan_traces.push(row.get(0));
            orphan_parents.push(row.get(1));
            continue;
        }
        let (Some(child), Some(parent)) = (row.get::<_, Option<&str>>(2), row.get::<_, Option<&str>>(3))
        else {
            continue;
        };
        if child == parent {
            continue;
        }
        let edge = edges.entry((parent, child)).or_default();
        edge.0 += 1;
        if row.get::<_, Option<i32>>(4) == Some(STATUS_ERROR) {
            edge.1 += 1;
        }
        // As ingest measures a span's duration (see encode::rollups).
        let (start, end): (i64, i64) = (row.get(5), row.get(6));
        edge.2.add(end.wrapping_sub(start));
    }
    if !edges.is_empty() {
        let mut rows = Rows::default();
        for ((parent_service, child_service), (calls, errors, durations)) in &edges {
            let mut row = rows.row(&SERVICE_EDGES);
            row.int8(minute);
            row.text(parent_service);
            row.text(child_service);
            row.int8(*calls as i64);
            row.int8(*errors as i64);
            row.bytea(&durations.encode());
        }
        writer::copy(&tx, &SERVICE_EDGES.copy_statement(SERVICE_EDGES.name), &[&rows.buf.freeze()]).await?;
    }
    // Children without a stored parent: kept to be looked for again.
    if !orphan_traces.is_empty() {
        tx.execute(
            &format!(
                "INSERT INTO pairing_orphans (minute_unix_nano, trace_id, parent_span_id, first_seen_unix_nano, recheck_unix_nano)
                 SELECT DISTINCT $1::bigint, o.trace_id, o.parent_span_id, $4::bigint, $4::bigint + {first_recheck}
                 FROM unnest($2::bytea[], $3::bytea[]) AS o (trace_id, parent_span_id)",
                first_recheck = MINUTE_NANOS
            ),
            &[&minute, &orphan_traces, &orphan_parents, &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The minutes of orphans whose parent is stored now, among those due to be looked for again;
/// the others are looked for again after twice as long as they have waited.
async fn parents_found(client: &mut Object, now: i64) -> Result<BTreeSet<i64>, StoreError> {
    let due = client
        .query(
            "UPDATE pairing_orphans o
             SET recheck_unix_nano = $1 + 2 * ($1 - o.first_seen_unix_nano)
             WHERE o.recheck_unix_nano <= $1
             RETURNING o.minute_unix_nano, o.trace_id, o.parent_span_id",
            &[&now],
        )
        .await?;
    let mut found = BTreeSet::new();
    // A few thousand at a time: one lookup of their traces' spans each.
    for chunk in due.chunks(2_000) {
        let trace_ids: Vec<&[u8]> = chunk.iter().map(|row| row.get(1)).collect();
        let minutes = chunk.iter().map(|row| row.get::<_, i64>(0));
        let (first, last) = (minutes.clone().min().unwrap_or(0), minutes.max().unwrap_or(0));
        let stored: BTreeSet<(Vec<u8>, Vec<u8>)> = client
            .query(
                "SELECT p.trace_id, p.span_id FROM spans p WHERE p.trace_id = ANY ($1::bytea[])
                 AND p.start_time_unix_nano >= $2 AND p.start_time_unix_nano < $3",
                &[
                    &trace_ids,
                    &first.saturating_sub(PARENT_WINDOW_NANOS),
                    &last.saturating_add(PARENT_WINDOW_NANOS),
                ],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        for row in chunk {
            if stored.contains(&(row.get::<_, Vec<u8>>(1), row.get::<_, Vec<u8>>(2))) {
                found.insert(row.get(0));
            }
        }
    }
    Ok(found)
}

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
                telemetry
                    .counter(crate::telemetry::ROLLUP_MINUTES_PAIRED, &[])
                    .increment(report.paired as u64);
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
/// meanwhile are counted by their own rows, never twice), and its minutes are marked for
/// pairing. Holds the rollups lock, so no pass folds meanwhile.
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
                bucket = bucket_sql("s", "$3")
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
    write_span_tallies(&tx, &span_tallies).await?;
    write_log_tallies(&tx, &log_tallies).await?;
    tx.execute(
        &format!(
            "INSERT INTO pairing_due (minute_unix_nano)
             SELECT DISTINCT s.start_time_unix_nano - s.start_time_unix_nano % {MINUTE_NANOS} FROM spans s
             WHERE s.start_time_unix_nano >= $1 AND s.start_time_unix_nano < $2 AND s.parent_span_id IS NOT NULL
               AND s.kind IN (0, 2, 5)"
        ),
        &[&lo, &hi],
    )
    .await?;
    tx.commit().await?;
    Ok((span_tallies.len(), log_tallies.len()))
}
