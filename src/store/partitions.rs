//! Daily partitions of the record tables, made ahead of the data. Each table also has a DEFAULT
//! partition, so rows outside the prepared days (late, future, time 0) are always accepted;
//! `otel_create_daily_partition` moves such rows into a day's partition when it is created.
//! Dropping them when they expire is [`super::maintenance`]'s.

use deadpool_postgres::Object;

use super::StoreError;
use crate::{config::PartitionConfig, encode::TABLES, time::date_text};

/// How many of `encode::TABLES` are partitioned by day.
const PARTITIONED_TABLES: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < TABLES.len() {
        if TABLES[i].partition_key().is_some() {
            n += 1;
        }
        i += 1;
    }
    n
};

/// Each partitioned table with its partition key, as the table layouts (`encode::TABLES`) say.
pub const PARTITIONED: [(&str, &str); PARTITIONED_TABLES] = {
    let mut out = [("", ""); PARTITIONED_TABLES];
    let (mut i, mut n) = (0, 0);
    while i < TABLES.len() {
        if let Some(key) = TABLES[i].partition_key() {
            out[n] = (TABLES[i].name, key);
            n += 1;
        }
        i += 1;
    }
    out
};

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('otelephant partitions ' || current_schema()))";

pub use crate::time::epoch_day;

/// Makes sure every partitioned table has its partitions from `days_behind` days before `today`
/// to `days_ahead` days after. Returns how many partitions it created.
///
/// # Errors
/// Database errors; partitions created before the error stay.
pub async fn ensure(client: &mut Object, today: i32, config: &PartitionConfig) -> Result<usize, StoreError> {
    Ok(ensure_days(client, today, config).await?.len())
}

/// [`ensure`], returning the partitions it created as `(table, day)`.
///
/// # Errors
/// Database errors; partitions created before the error stay.
pub async fn ensure_days(
    client: &mut Object,
    today: i32,
    config: &PartitionConfig,
) -> Result<Vec<(&'static str, i32)>, StoreError> {
    let mut created = Vec::new();
    let first = today - config.days_behind as i32;
    let last = today + config.days_ahead as i32;
    for day in first..=last {
        for (table, key) in PARTITIONED {
            if create(client, table, key, day).await? {
                created.push((table, day));
            }
        }
    }
    if let (Some(from), Some(to)) = (created.iter().map(|c| c.1).min(), created.iter().map(|c| c.1).max()) {
        tracing::info!(
            "created {} daily partitions ({} tables) for {} to {} (UTC)",
            created.len(),
            PARTITIONED.len(),
            date_text(from.into()),
            date_text(to.into())
        );
    }
    Ok(created)
}

/// Creates `table`'s partition for `day` (days since the epoch) unless it exists, moving the
/// day's records out of the catch-all partition. Returns whether it created it.
///
/// # Errors
/// Database errors.
pub async fn create(client: &mut Object, table: &str, key: &str, day: i32) -> Result<bool, StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(LOCK).await?;
    let row = tx
        .query_one(
            "SELECT otel_create_daily_partition($1, $2, date '1970-01-01' + $3::integer)",
            &[&table, &key, &day],
        )
        .await?;
    tx.commit().await?;
    let created = row.get::<_, bool>(0);
    if created {
        tracing::debug!(table, day = %date_text(day.into()), "created partition");
    }
    Ok(created)
}
