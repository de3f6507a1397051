//! Writes one batch in one transaction: dimension rows first (COPY into a session-temporary
//! staging table, then `INSERT ... ON CONFLICT` in key order, so concurrent writers neither fail
//! nor deadlock on the same new resource; an existing row only has its `last_seen` moved on),
//! then each record table with one binary
//! COPY streaming every request's tuples back to back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::{Pool, Transaction};
use futures_util::SinkExt;

use super::StoreError;
use crate::encode::{
    copy::{Table, HEADER, TRAILER},
    DIMENSION_TABLES, TABLES,
};

/// One request's tuples for each table, in [`TABLES`] order, with their row counts: what the
/// writer stores. The pipeline hands these over; the store needs nothing else of it.
pub type Tuples = [(Bytes, usize); TABLES.len()];

/// How long a committed batch took to stream and to commit.
pub struct Timings {
    /// From taking a connection to the last COPY's end.
    pub copy: Duration,
    pub commit: Duration,
}

/// Stores every request's tuples of a batch, or none of them.
///
/// # Errors
/// No connection, or any statement of the transaction failing.
pub async fn write_batch(pool: &Pool, batch: &[&Tuples]) -> Result<Timings, StoreError> {
    let started = Instant::now();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    for (index, table) in TABLES.iter().enumerate() {
        let chunks: Vec<&Bytes> =
            batch.iter().map(|tuples| &tuples[index]).filter(|(_, n)| *n > 0).map(|(b, _)| b).collect();
        if chunks.is_empty() {
            continue;
        }
        if index < DIMENSION_TABLES {
            upsert_dimension(&tx, table, &chunks).await?;
        } else {
            copy(&tx, &table.copy_statement(table.name), &chunks).await?;
        }
    }
    let copied = Instant::now();
    tx.commit().await?;
    Ok(Timings { copy: copied - started, commit: copied.elapsed() })
}

async fn upsert_dimension(tx: &Transaction<'_>, table: &Table, chunks: &[&Bytes]) -> Result<(), StoreError> {
    let stage = format!("stage_{}", table.name);
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        table.name
    ))
    .await?;
    copy(tx, &table.copy_statement(&stage), chunks).await?;
    // The staging table's default stamps last_seen with today (UTC); an existing row takes the
    // newer day, which is what keeps it from garbage collection (see encode::dims).
    let columns = table.columns.join(", ");
    let key = table.columns[0];
    let insert = format!(
        "INSERT INTO {name} AS t ({columns}, last_seen) \
         SELECT DISTINCT ON ({key}) {columns}, last_seen FROM {stage} ORDER BY {key} \
         ON CONFLICT ({key}) DO UPDATE SET last_seen = EXCLUDED.last_seen WHERE t.last_seen < EXCLUDED.last_seen",
        name = table.name
    );
    tx.execute(&tx.prepare_cached(&insert).await?, &[]).await?;
    Ok(())
}

/// Streams the tuples of `chunks` through one `COPY ... FROM STDIN (FORMAT binary)`.
pub async fn copy(tx: &Transaction<'_>, statement: &str, chunks: &[&Bytes]) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(statement).await?;
    let sink = tx.copy_in::<_, Bytes>(&statement).await?;
    futures_util::pin_mut!(sink);
    sink.feed(Bytes::from_static(HEADER)).await?;
    for chunk in chunks {
        sink.feed((*chunk).clone()).await?;
    }
    sink.feed(Bytes::from_static(TRAILER)).await?;
    Ok(sink.finish().await?)
}
