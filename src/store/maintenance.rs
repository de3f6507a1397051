//! The storage lifecycle, run every `partitions.check_interval_secs` by one replica at a time
//! (a session advisory lock; the others skip the pass):
//!
//! 1. daily partitions are made ready around today, and for late days whose records sit in the
//!    catch-all partition but are still within the retention (moving them out of it);
//! 2. partitions whose every possible record is older than the signal's retention are dropped,
//!    each in its own short transaction with a lock timeout, so a drop waiting behind a long
//!    query gives up instead of stalling the writers queued behind it;
//! 3. partitions of days that have ended are analyzed once, and so are their parent tables;
//! 4. after a drop, resources, scopes and series that no record references any more and that
//!    no writer has sent for [`DIMENSION_GRACE_DAYS`] days are deleted;
//! 5. when `retention.llm_content` is set, the LLM message content of days older than it is
//!    replaced with a mark, each partition in its own transaction (see `store::content`);
//! 6. where the database has the `columnar` access method, partitions whose day ended at least
//!    `storage.columnar_after` ago are rewritten as columnar tables, each in its own
//!    transaction, then analyzed (see [`convert`]); while content has a retention of its own,
//!    a day of spans or log records waits until its content is removed.
//!
//! Every step takes `now` from its caller, so tests move the clock instead of waiting, and
//! [`plan`] reports what a pass would do without doing it (`otelephant retention --dry-run`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{GenericClient, Object, Pool};
use tokio_postgres::error::SqlState;

use super::{content, partitions, SessionLock, StoreError};
use crate::{
    config::{ColumnarAfter, PartitionConfig, Retention, RetentionConfig, StorageConfig},
    encode::{
        copy::{Signal, Table, TableKind},
        TABLES,
    },
    telemetry::{self, Telemetry},
};

/// Dimension rows written in the last this many days are never collected: a replica trusts an
/// id it wrote today without sending its row again (see `encode::dims`), and this margin covers
/// a batch that straddles midnight and clocks that disagree by up to a day.
pub const DIMENSION_GRACE_DAYS: i32 = 2;

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

const LOCK: &str = "hashtext('otelephant maintenance ' || current_schema())";

/// A daily partition of a record table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub table: &'static str,
    pub name: String,
    /// Days since the Unix epoch (UTC).
    pub day: i32,
    pub oid: u32,
    /// PostgreSQL's estimate (`reltuples`); -1 when the table was never analyzed or vacuumed.
    pub estimated_rows: i64,
    /// Heap, indexes and TOAST.
    pub bytes: i64,
    /// Stored by the `columnar` access method (see [`convert`]).
    pub columnar: bool,
}

/// What sits in a catch-all partition, which retention does not touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchAll {
    pub table: &'static str,
    pub rows: i64,
    /// Smallest and largest partition key, in nanoseconds since the epoch.
    pub oldest: Option<i64>,
    pub newest: Option<i64>,
}

/// Dimension rows that a pass collects (or, in a plan, would).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    pub series: u64,
    pub resources: u64,
    pub scopes: u64,
}

/// What a pass did, or in [`plan`], would do.
#[derive(Debug, Default)]
pub struct Report {
    /// Partitions created: `(table, day)`.
    pub created: Vec<(&'static str, i32)>,
    pub dropped: Vec<Partition>,
    /// Expired partitions a drop could not take its lock for; tried again at the next pass.
    pub drop_failed: Vec<Partition>,
    pub analyzed: Vec<String>,
    /// Partitions rewritten in columnar storage.
    pub converted: Vec<Partition>,
    /// Partitions due for columnar storage whose lock was not granted in time; tried again at
    /// the next pass.
    pub convert_failed: Vec<Partition>,
    /// Partitions whose LLM message content was removed, with the records changed (in a plan,
    /// `None`: not counted).
    pub content_removed: Vec<(Partition, Option<u64>)>,
    /// Columnar partitions whose content is past `retention.llm_content` but cannot be
    /// removed: columnar tables cannot be updated.
    pub content_kept: Vec<Partition>,
    pub collected: Collected,
    pub catch_all: Vec<CatchAll>,
}

impl Report {
    /// The report for people: `planned` words it as what a pass would do.
    pub fn render(&self, planned: bool) -> String {
        use std::fmt::Write;
        let (drop, create, collect, convert, remove) = if planned {
            ("Would drop", "Would create", "Would collect", "Would convert", "Would remove")
        } else {
            ("Dropped", "Created", "Collected", "Converted", "Removed")
        };
        let mut out = String::new();
        let bytes: i64 = self.dropped.iter().map(|p| p.bytes).sum();
        let _ = writeln!(out, "{drop} {} expired partition(s), {}:", self.dropped.len(), size(bytes));
        for p in &self.dropped {
            let rows = if p.estimated_rows < 0 {
                "rows not yet counted".into()
            } else {
                format!("~{} rows", p.estimated_rows)
            };
            let _ = writeln!(out, "  {:<40} {}  {rows}, {}", p.name, date(p.day), size(p.bytes));
        }
        for p in &self.drop_failed {
            let _ = writeln!(out, "  {:<40} {}  lock not granted in time; next pass", p.name, date(p.day));
        }
        let _ = writeln!(out, "{create} {} partition(s):", self.created.len());
        for (table, day) in &self.created {
            let _ = writeln!(out, "  {table} {}", date(*day));
        }
        if !self.content_removed.is_empty() || !self.content_kept.is_empty() {
            let n = self.content_removed.len();
            let _ = writeln!(
                out,
                "{remove} LLM message content from {n} partition(s) past retention.llm_content:"
            );
            for (p, records) in &self.content_removed {
                let records = records.map_or_else(String::new, |r| format!("  {r} record(s) changed"));
                let _ = writeln!(out, "  {:<40} {}{records}", p.name, date(p.day));
            }
            for p in &self.content_kept {
                let _ = writeln!(
                    out,
                    "  {:<40} {}  columnar storage cannot be updated; content kept until the day is dropped",
                    p.name,
                    date(p.day)
                );
            }
        }
        if !self.converted.is_empty() || !self.convert_failed.is_empty() {
            let _ = writeln!(out, "{convert} {} partition(s) to columnar storage:", self.converted.len());
            for p in &self.converted {
                let _ = writeln!(out, "  {:<40} {}  {}", p.name, date(p.day), size(p.bytes));
            }
            for p in &self.convert_failed {
                let _ =
                    writeln!(out, "  {:<40} {}  lock not granted in time; next pass", p.name, date(p.day));
            }
        }
        let c = self.collected;
        let _ = writeln!(
            out,
            "{collect} {} series, {} resource(s), {} scope(s) no record references any more.",
            c.series, c.resources, c.scopes
        );
        if !self.analyzed.is_empty() {
            let _ = writeln!(out, "Analyzed: {}", self.analyzed.join(", "));
        }
        if !self.catch_all.is_empty() {
            let _ = writeln!(out, "Catch-all partitions (retention does not apply to them):");
            for c in &self.catch_all {
                let span = match (c.oldest, c.newest) {
                    (Some(oldest), Some(newest)) => {
                        format!(", times {} .. {}", instant(oldest), instant(newest))
                    }
                    _ => String::new(),
                };
                let _ = writeln!(out, "  {}_default: {} row(s){span}", c.table, c.rows);
            }
        }
        out
    }
}

fn size(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

/// A day since the epoch as `YYYY-MM-DD`.
fn date(day: i32) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(day).unwrap_or(0) * 86_400);
    humantime::format_rfc3339(at).to_string()[..10].to_owned()
}

/// Nanoseconds since the epoch as RFC 3339 (a time before 1970 shows as its raw number).
fn instant(nanos: i64) -> String {
    match u64::try_from(nanos) {
        Ok(nanos) => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string(),
        Err(_) => nanos.to_string(),
    }
}

/// The retention that applies to a record table.
pub fn retention_of(table: &str, retention: &RetentionConfig) -> Retention {
    let signal = TABLES.iter().find(|t| t.name == table).and_then(|t| match t.kind {
        TableKind::Records { signal, .. }
        | TableKind::Rollup { signal, .. }
        | TableKind::Derived { signal, .. } => Some(signal),
        TableKind::Dimension | TableKind::Queue => None,
    });
    match signal {
        Some(Signal::Traces) => retention.traces,
        Some(Signal::Logs) => retention.logs,
        Some(Signal::Metrics) | None => retention.metrics,
    }
}

fn unix_nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos().min(i64::MAX as u128) as i64
}

/// The first day whose partition still holds records younger than the retention, or `None`
/// when records are kept forever.
pub fn first_kept_day(retention: Retention, now: SystemTime) -> Option<i32> {
    let Retention::For(period) = retention else { return None };
    let cutoff = unix_nanos(now) - period.as_nanos().min(i64::MAX as u128) as i64;
    // Day d holds [d, d + 1) days; it expires once d + 1 days <= cutoff.
    Some(cutoff.div_euclid(NANOS_PER_DAY) as i32)
}

/// Lists the daily partitions of `table`, oldest first.
///
/// # Errors
/// Database errors.
pub async fn partitions_of(
    client: &impl GenericClient,
    table: &'static str,
) -> Result<Vec<Partition>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname::text, \
                    to_date(substring(c.relname from '_p([0-9]{8})$'), 'YYYYMMDD') - date '1970-01-01', \
                    c.oid, c.reltuples::bigint, pg_total_relation_size(c.oid), a.amname = 'columnar' \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_am a ON a.oid = c.relam \
             WHERE i.inhparent = $1::text::regclass AND c.relname ~ ('^' || $1 || '_p[0-9]{8}$') \
             ORDER BY 2",
            &[&table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Partition {
            table,
            name: row.get(0),
            day: row.get(1),
            oid: row.get(2),
            estimated_rows: row.get(3),
            bytes: row.get(4),
            columnar: row.get(5),
        })
        .collect())
}

/// Runs one pass unless another replica is running one. Returns `None` when it skipped.
///
/// # Errors
/// No connection or a failed step; steps before it stay done.
pub async fn run_pass(
    pool: &Pool,
    partitions: &PartitionConfig,
    retention: &RetentionConfig,
    storage: &StorageConfig,
    now: SystemTime,
) -> Result<Option<Report>, StoreError> {
    let Some(mut locked) = SessionLock::try_take(pool, LOCK).await? else { return Ok(None) };
    let result = pass(locked.client(), partitions, retention, storage, now).await;
    locked.release().await;
    result.map(Some)
}

async fn pass(
    client: &mut Object,
    config: &PartitionConfig,
    retention: &RetentionConfig,
    storage: &StorageConfig,
    now: SystemTime,
) -> Result<Report, StoreError> {
    let today = partitions::epoch_day(now);
    let mut report =
        Report { created: partitions::ensure_days(client, today, config).await?, ..Report::default() };
    for (table, key) in partitions::PARTITIONED {
        let Some(first_kept) = first_kept_day(retention_of(table, retention), now) else { continue };
        for day in late_days(&*client, table, key, first_kept, today - config.days_behind as i32).await? {
            if partitions::create(client, table, key, day).await? {
                report.created.push((table, day));
            }
        }
    }
    for partition in expired(client, retention, now).await? {
        match drop_partition(client, &partition, config.drop_lock_timeout_ms).await {
            Ok(()) => report.dropped.push(partition),
            Err(err) if is_lock_timeout(&err) => report.drop_failed.push(partition),
            Err(err) => return Err(err),
        }
    }
    report.analyzed = analyze_closed_days(client, today).await?;
    if !report.dropped.is_empty() {
        report.collected = collect_dimensions(&*client, today, &[]).await?;
    }
    let (removable, kept) = content::due(&*client, retention, now).await?;
    for partition in removable {
        let records = content::remove(client, &partition, retention.llm_content).await?;
        report.content_removed.push((partition, Some(records)));
    }
    report.content_kept = kept;
    for partition in due_for_columnar(&*client, retention, storage, now).await? {
        match convert(client, &partition, config.drop_lock_timeout_ms).await {
            Ok(()) => report.converted.push(partition),
            Err(err) if is_lock_timeout(&err) => report.convert_failed.push(partition),
            Err(err) => return Err(err),
        }
    }
    Ok(report)
}

/// What a pass at `now` would do: the partitions it would create and drop and the dimension
/// rows it would collect, without changing anything.
///
/// # Errors
/// Database errors.
pub async fn plan(
    client: &mut Object,
    config: &PartitionConfig,
    retention: &RetentionConfig,
    storage: &StorageConfig,
    now: SystemTime,
) -> Result<Report, StoreError> {
    let today = partitions::epoch_day(now);
    let mut report = Report::default();
    for (table, key) in partitions::PARTITIONED {
        let existing: Vec<i32> = partitions_of(&*client, table).await?.iter().map(|p| p.day).collect();
        let ready = today - config.days_behind as i32..=today + config.days_ahead as i32;
        report.created.extend(ready.filter(|day| !existing.contains(day)).map(|day| (table, day)));
        if let Some(first_kept) = first_kept_day(retention_of(table, retention), now) {
            let late = late_days(&*client, table, key, first_kept, today - config.days_behind as i32).await?;
            report.created.extend(late.into_iter().map(|day| (table, day)));
        }
        report.catch_all.push(catch_all(&*client, table, key).await?);
    }
    report.dropped = expired(&*client, retention, now).await?;
    if !report.dropped.is_empty() {
        let oids: Vec<u32> = report.dropped.iter().map(|p| p.oid).collect();
        let tx = client.transaction().await?;
        report.collected = collect_dimensions(&tx, today, &oids).await?;
        tx.rollback().await?;
    }
    let dropped: Vec<u32> = report.dropped.iter().map(|p| p.oid).collect();
    let (removable, kept) = content::due(&*client, retention, now).await?;
    let removable: Vec<Partition> = removable.into_iter().filter(|p| !dropped.contains(&p.oid)).collect();
    report.converted = due_for_columnar(&*client, retention, storage, now).await?;
    // Content removed in this pass lets its day be converted in it too.
    if let Some(due_before) = columnar_due_before(storage, now) {
        if columnar_available(&*client).await? {
            report.converted.extend(removable.iter().filter(|p| i64::from(p.day) < due_before).cloned());
        }
    }
    report.converted.retain(|p| !dropped.contains(&p.oid));
    report.content_removed = removable.into_iter().map(|p| (p, None)).collect();
    report.content_kept = kept;
    Ok(report)
}

/// Partitions whose retention has passed, over every record table.
async fn expired(
    client: &impl GenericClient,
    retention: &RetentionConfig,
    now: SystemTime,
) -> Result<Vec<Partition>, StoreError> {
    let mut expired = Vec::new();
    for (table, _) in partitions::PARTITIONED {
        let Some(first_kept) = first_kept_day(retention_of(table, retention), now) else { continue };
        expired.extend(partitions_of(client, table).await?.into_iter().filter(|p| p.day < first_kept));
    }
    Ok(expired)
}

/// Days from `first` up to (not including) `before` that have records in `table`'s catch-all.
async fn late_days(
    client: &impl GenericClient,
    table: &str,
    key: &str,
    first: i32,
    before: i32,
) -> Result<Vec<i32>, StoreError> {
    if first >= before {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT DISTINCT ({key} / {NANOS_PER_DAY})::integer FROM {table}_default \
                 WHERE {key} >= $1 AND {key} < $2 ORDER BY 1"
            ),
            &[&(i64::from(first) * NANOS_PER_DAY), &(i64::from(before) * NANOS_PER_DAY)],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

async fn catch_all(
    client: &impl GenericClient,
    table: &'static str,
    key: &str,
) -> Result<CatchAll, StoreError> {
    let row = client
        .query_one(&format!("SELECT count(*), min({key}), max({key}) FROM {table}_default"), &[])
        .await?;
    Ok(CatchAll { table, rows: row.get(0), oldest: row.get(1), newest: row.get(2) })
}

async fn drop_partition(
    client: &mut Object,
    partition: &Partition,
    lock_timeout_ms: u64,
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {lock_timeout_ms}")).await?;
    tx.batch_execute(&format!("DROP TABLE {}", partition.name)).await?;
    tx.commit().await?;
    tracing::info!(
        table = partition.table,
        partition = partition.name,
        bytes = partition.bytes,
        "dropped expired partition"
    );
    Ok(())
}

fn is_lock_timeout(err: &StoreError) -> bool {
    matches!(err, StoreError::Db(db) if db.code() == Some(&SqlState::LOCK_NOT_AVAILABLE))
}

/// Daily partitions in row storage whose day ended at least `storage.columnar_after` before
/// `now`, over every record table, except days of spans and log records whose LLM message
/// content is still to be removed (see `store::content`); none where the database has no
/// `columnar` access method.
async fn due_for_columnar(
    client: &impl GenericClient,
    retention: &RetentionConfig,
    storage: &StorageConfig,
    now: SystemTime,
) -> Result<Vec<Partition>, StoreError> {
    let Some(due_before) = columnar_due_before(storage, now) else { return Ok(Vec::new()) };
    if !columnar_available(client).await? {
        return Ok(Vec::new());
    }
    let removed = content::removed(client).await?;
    let mut due = Vec::new();
    for (table, _) in partitions::PARTITIONED {
        due.extend(partitions_of(client, table).await?.into_iter().filter(|p| {
            !p.columnar && i64::from(p.day) < due_before && content::may_convert(p, retention, &removed)
        }));
    }
    Ok(due)
}

/// The first day not yet due for columnar storage at `now`; `None` when it is off.
fn columnar_due_before(storage: &StorageConfig, now: SystemTime) -> Option<i64> {
    let ColumnarAfter::After(delay) = storage.columnar_after else { return None };
    // Day d ends at d + 1 days; it is due once that is at least `delay` before now, that is
    // once d + 1 <= the day holding now - delay.
    Some((unix_nanos(now) - delay.as_nanos().min(i64::MAX as u128) as i64).div_euclid(NANOS_PER_DAY))
}

/// Whether the database has the `columnar` access method.
async fn columnar_available(client: &impl GenericClient) -> Result<bool, StoreError> {
    Ok(client.query_one("SELECT EXISTS (SELECT 1 FROM pg_am WHERE amname = 'columnar')", &[]).await?.get(0))
}

/// Rows per stripe of a columnar day. citus_columnar's planner prices an index lookup at one
/// stripe read for every row it fetches and a scan at one read per stripe: at its default of
/// 150,000 rows per stripe, fetching the 210 spans of a SearchTraces page through the trace-id
/// index was priced above scanning a whole day of 3 million spans (20 stripes), and the search
/// took 0.9 s; with 10,000-row stripes (300) it takes the index and 66 ms (BENCHMARKS.md).
const COLUMNAR_STRIPE_ROWS: u32 = 10_000;

/// How one table's closed days are laid out in columnar storage.
struct ColumnarLayout {
    /// Rows per chunk group, the unit a lookup decompresses to fetch one row.
    chunk_group_rows: u32,
    /// zstd's level.
    compression_level: u32,
}

/// Spans are read by trace id (GetTrace, the traces of a search page), so their chunk groups
/// are small: 1,000 rows made a trace's lookup on a columnar day about 2x faster than
/// citus_columnar's default 10,000, for 2-22% more bytes in the table. Log records and data
/// points are read by time range, where larger chunk groups compress better and scan faster.
/// Log records, the most bytes per item on a columnar day, are compressed at zstd level 9:
/// 11% fewer bytes than citus_columnar's default level 3, for 2.4 times the rewrite's time
/// (BENCHMARKS.md has both).
fn columnar_layout(table: &str) -> ColumnarLayout {
    match table {
        "spans" => ColumnarLayout { chunk_group_rows: 1_000, compression_level: 3 },
        "logs" => ColumnarLayout { chunk_group_rows: 10_000, compression_level: 9 },
        _ => ColumnarLayout { chunk_group_rows: 10_000, compression_level: 3 },
    }
}

/// The statements, to run one by one in one transaction, that rewrite `partition` of `table` as
/// a columnar table laid out for the way `table` is read, and record that layout as its options.
/// (One by one: Citus passes a DDL statement's whole query string on to the workers.)
#[must_use]
pub fn columnar_rewrite(table: &str, partition: &str) -> [String; 5] {
    let ColumnarLayout { chunk_group_rows, compression_level } = columnar_layout(table);
    [
        format!("SET LOCAL columnar.stripe_row_limit = {COLUMNAR_STRIPE_ROWS}"),
        format!("SET LOCAL columnar.chunk_group_row_limit = {chunk_group_rows}"),
        format!("SET LOCAL columnar.compression_level = {compression_level}"),
        format!("ALTER TABLE {partition} SET ACCESS METHOD columnar"),
        format!(
            "ALTER TABLE {partition} SET (columnar.stripe_row_limit = {COLUMNAR_STRIPE_ROWS}, \
             columnar.chunk_group_row_limit = {chunk_group_rows}, \
             columnar.compression_level = {compression_level})"
        ),
    ]
}

/// Rewrites one partition as a columnar table, in one transaction, then analyzes it.
///
/// `ALTER TABLE ... SET ACCESS METHOD` locks that partition alone (not its parent table): writes
/// into other days go on; queries that read the day, and a late record for it, wait until the
/// rewrite commits, then read and write the columnar table. Interrupted, the transaction rolls
/// back and the partition stays as it was, to be converted at a later pass. The lock wait is
/// bounded by `lock_timeout_ms`, since queries that would read the day queue behind the waiting
/// rewrite.
///
/// The rewrite is [`columnar_rewrite`]; late records written to the day later follow the
/// layout it records.
async fn convert(client: &mut Object, partition: &Partition, lock_timeout_ms: u64) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let name = &partition.name;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {lock_timeout_ms}")).await?;
    tx.batch_execute(&format!("LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")).await?;
    tx.batch_execute("SET LOCAL lock_timeout = 0").await?;
    // On Citus the shards are rewritten by the workers, which see this transaction's SET
    // LOCALs only when told to pass them on.
    tx.batch_execute(
        "SELECT set_config('citus.propagate_set_commands', 'local', true)
         WHERE current_setting('citus.propagate_set_commands', true) IS NOT NULL",
    )
    .await?;
    for statement in columnar_rewrite(partition.table, name) {
        tx.batch_execute(&statement).await?;
    }
    tx.commit().await?;
    // The planner needs the columnar table's own statistics to keep preferring its indexes
    // for lookups by trace id or series.
    client.batch_execute(&format!("ANALYZE {}", partition.name)).await?;
    let bytes: i64 =
        client.query_one("SELECT pg_total_relation_size($1::oid)", &[&partition.oid]).await?.get(0);
    tracing::info!(
        table = partition.table,
        partition = partition.name,
        bytes_before = partition.bytes,
        bytes_after = bytes,
        seconds = started.elapsed().as_secs_f64(),
        "converted a closed day to columnar storage"
    );
    Ok(())
}

/// Analyzes the partitions of days that have ended and were not analyzed since, then their
/// parent tables (autovacuum never analyzes a partitioned table itself). Returns the tables it
/// analyzed.
async fn analyze_closed_days(client: &Object, today: i32) -> Result<Vec<String>, StoreError> {
    let mut analyzed = Vec::new();
    for (table, _) in partitions::PARTITIONED {
        let mut any = false;
        for partition in partitions_of(client, table).await? {
            if partition.day >= today {
                continue;
            }
            let ended = i64::from(partition.day + 1) * 86_400;
            let fresh: bool = client
                .query_one(
                    "SELECT coalesce(greatest(last_analyze, last_autoanalyze) >= to_timestamp($2), false) \
                     FROM pg_stat_user_tables WHERE relid = $1",
                    &[&partition.oid, &(ended as f64)],
                )
                .await?
                .get(0);
            if !fresh {
                client.batch_execute(&format!("ANALYZE {}", partition.name)).await?;
                analyzed.push(partition.name);
                any = true;
            }
        }
        if any {
            client.batch_execute(&format!("ANALYZE {table}")).await?;
            analyzed.push(table.to_owned());
        }
    }
    Ok(analyzed)
}

/// Deletes resources, scopes and series that no record references, leaving out those written
/// in the last [`DIMENSION_GRACE_DAYS`] days. References from the partitions in `excluding`
/// are ignored (a plan counts as if they were dropped).
///
/// In three steps per dimension, each of which Citus runs as well as PostgreSQL does (a
/// DELETE that reads distributed tables is one Citus refuses for a reference table): the
/// stale rows, then which of them the record tables still reference, then the rest, deleted.
async fn collect_dimensions(
    client: &impl GenericClient,
    today: i32,
    excluding: &[u32],
) -> Result<Collected, StoreError> {
    let seen_before = today - DIMENSION_GRACE_DAYS;
    // Series first: a resource or scope may be referenced only by series collected here.
    let collected = Collected {
        series: collect(client, "metric_series", "series_id", seen_before, excluding).await?,
        resources: collect(client, "resources", "resource_id", seen_before, excluding).await?,
        scopes: collect(client, "scopes", "scope_id", seen_before, excluding).await?,
    };
    if collected != Collected::default() {
        tracing::info!(
            series = collected.series,
            resources = collected.resources,
            scopes = collected.scopes,
            "collected unreferenced dimension rows"
        );
    }
    Ok(collected)
}

/// Deletes the rows of `dimension` (keyed by `column`) last seen before `seen_before` that no
/// other table with that column references, outside the partitions in `excluding`.
async fn collect(
    client: &impl GenericClient,
    dimension: &str,
    column: &str,
    seen_before: i32,
    excluding: &[u32],
) -> Result<u64, StoreError> {
    let stale = format!("{column} = ANY($1) AND last_seen < date '1970-01-01' + $2::integer");
    let candidates: Vec<i64> = client
        .query(
            &format!("SELECT {column} FROM {dimension} WHERE last_seen < date '1970-01-01' + $1::integer"),
            &[&seen_before],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    // Every table that references the dimension, as its partitions (a table that is not
    // partitioned stands for itself), less those left out. Not the queues: a row waits there
    // for minutes, and its resource was seen when it was written, long after `seen_before`.
    let mut sources = Vec::new();
    let references = |t: &&&Table| {
        t.name != dimension && t.columns.contains(&column) && !matches!(t.kind, TableKind::Queue)
    };
    for table in TABLES.iter().filter(references) {
        let parts = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = $1::text::regclass AND c.oid <> ALL($2) ORDER BY 1",
                &[&table.name, &excluding],
            )
            .await?;
        if parts.is_empty() && table.partition_key().is_none() {
            sources.push(table.name.to_owned());
        }
        sources.extend(parts.iter().map(|row| row.get::<_, String>(0)));
    }
    let referenced: std::collections::HashSet<i64> = if sources.is_empty() {
        std::collections::HashSet::new()
    } else {
        let union = sources
            .iter()
            .map(|source| format!("SELECT {column} FROM {source} WHERE {column} = ANY($1)"))
            .collect::<Vec<_>>()
            .join(" UNION ");
        client.query(&union, &[&candidates]).await?.iter().map(|row| row.get(0)).collect()
    };
    let unreferenced: Vec<i64> = candidates.into_iter().filter(|id| !referenced.contains(id)).collect();
    if unreferenced.is_empty() {
        return Ok(0);
    }
    // Seen again since it was found stale, it is kept.
    Ok(client
        .execute(&format!("DELETE FROM {dimension} WHERE {stale}"), &[&unreferenced, &seen_before])
        .await?)
}

/// Runs a pass at once and then every `check_interval_secs` until the pool closes, reporting
/// what it did in logs and metrics, and counting passes in `passes`.
pub async fn maintain(
    pool: Pool,
    partitions: PartitionConfig,
    retention: RetentionConfig,
    storage: StorageConfig,
    telemetry: Telemetry,
    passes: tokio::sync::watch::Sender<u64>,
) {
    let period = Duration::from_secs(partitions.check_interval_secs);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        match run_pass(&pool, &partitions, &retention, &storage, SystemTime::now()).await {
            Ok(Some(report)) => record(&telemetry, &report),
            Ok(None) => tracing::debug!("another replica is running maintenance; skipped"),
            Err(err) => tracing::warn!(%err, "maintenance failed; retrying at the next pass"),
        }
        passes.send_modify(|n| *n += 1);
    }
}

fn record(telemetry: &Telemetry, report: &Report) {
    telemetry.counter(telemetry::PARTITIONS_CREATED, &[]).increment(report.created.len() as u64);
    telemetry.counter(telemetry::PARTITIONS_DROPPED, &[]).increment(report.dropped.len() as u64);
    for partition in &report.drop_failed {
        tracing::warn!(
            partition = partition.name,
            "could not take the lock to drop an expired partition in time; trying again at the next pass"
        );
    }
    telemetry.counter(telemetry::PARTITION_DROPS_FAILED, &[]).increment(report.drop_failed.len() as u64);
    for partition in &report.convert_failed {
        tracing::warn!(
            partition = partition.name,
            "could not take the lock to convert a closed day to columnar storage in time; trying again at the next pass"
        );
    }
    telemetry.counter(telemetry::PARTITIONS_CONVERTED, &[]).increment(report.converted.len() as u64);
    let records = report.content_removed.iter().filter_map(|(_, records)| *records).sum::<u64>();
    telemetry.counter(telemetry::LLM_CONTENT_REMOVED, &[]).increment(records);
    for partition in &report.content_kept {
        tracing::warn!(
            partition = partition.name,
            "LLM message content is past retention.llm_content on a columnar day, which cannot be updated; kept until the day is dropped"
        );
    }
    telemetry
        .counter(telemetry::PARTITION_CONVERSIONS_FAILED, &[])
        .increment(report.convert_failed.len() as u64);
    let collected = report.collected;
    for (kind, count) in
        [("series", collected.series), ("resource", collected.resources), ("scope", collected.scopes)]
    {
        telemetry.counter(telemetry::DIMENSIONS_COLLECTED, &[("kind", kind)]).increment(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_kept_while_any_of_its_day_is_within_the_retention() {
        let day = |d: u64, hours: u64| UNIX_EPOCH + Duration::from_secs(d * 86_400 + hours * 3600);
        // 7 days at day 10, 00:00: day 2 ends exactly at the cutoff and goes, day 3 stays.
        assert_eq!(first_kept_day(Retention::days(7), day(10, 0)), Some(3));
        // At 01:00 the cutoff is day 3, 01:00: day 3 still holds younger records.
        assert_eq!(first_kept_day(Retention::days(7), day(10, 1)), Some(3));
        assert_eq!(first_kept_day(Retention::For(Duration::from_secs(3600)), day(10, 0)), Some(9));
        assert_eq!(first_kept_day(Retention::Forever, day(10, 0)), None);
    }
}
