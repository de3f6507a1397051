//! Daily partitions of the record tables, made ahead of the data. Each table also has a DEFAULT
//! partition, so rows outside the prepared days (late, future, time 0) are always accepted;
//! `otel_create_daily_partition` moves such rows into a day's partition when it is created.

use crate::telemetry::{self, Telemetry};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Object, Pool};

use super::StoreError;
use crate::config::PartitionConfig;

/// Each partitioned table with its partition key.
pub const PARTITIONED: [(&str, &str); 6] = [
    ("spans", "start_time_unix_nano"),
    ("logs", "timestamp_unix_nano"),
    ("metric_points_number", "time_unix_nano"),
    ("metric_points_histogram", "time_unix_nano"),
    ("metric_points_exp_histogram", "time_unix_nano"),
    ("metric_points_summary", "time_unix_nano"),
];

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('otelephant partitions ' || current_schema()))";

/// Days since the Unix epoch (UTC) at `now`.
pub fn epoch_day(now: SystemTime) -> i32 {
    (now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400) as i32
}

/// Makes sure every partitioned table has its partitions from `days_behind` days before `today`
/// to `days_ahead` days after. Returns how many partitions it created.
///
/// # Errors
/// Database errors; partitions created before the error stay.
pub async fn ensure(client: &mut Object, today: i32, config: &PartitionConfig) -> Result<usize, StoreError> {
    let mut created = 0;
    let first = today - config.days_behind as i32;
    let last = today + config.days_ahead as i32;
    for day in first..=last {
        for (table, key) in PARTITIONED {
            let tx = client.transaction().await?;
            tx.batch_execute(LOCK).await?;
            let row = tx
                .query_one(
                    "SELECT otel_create_daily_partition($1, $2, date '1970-01-01' + $3::integer)",
                    &[&table, &key, &day],
                )
                .await?;
            tx.commit().await?;
            if row.get::<_, bool>(0) {
                tracing::info!(table, day, "created partition");
                created += 1;
            }
        }
    }
    Ok(created)
}

/// Runs [`ensure`] every `check_interval_secs` (the first time one interval from now) until the
/// pool closes.
pub async fn maintain(pool: Pool, config: PartitionConfig, telemetry: Telemetry) {
    // Start-up already ran the first check.
    let period = Duration::from_secs(config.check_interval_secs);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let result = match pool.get().await {
            Ok(mut client) => ensure(&mut client, epoch_day(SystemTime::now()), &config).await,
            Err(err) => Err(err.into()),
        };
        match result {
            Ok(created) => telemetry.counter(telemetry::PARTITIONS_CREATED, &[]).increment(created as u64),
            Err(err) => tracing::warn!(%err, "partition maintenance failed; retrying at the next check"),
        }
    }
}
