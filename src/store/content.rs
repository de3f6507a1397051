//! `retention.llm_content`: LLM message content kept for less time than the rest of its records.
//! Once a day is older than it, the maintenance pass replaces every content value of that day's
//! spans and log records (the keys `genai::content::is_key` names, at the top of a span's, a span
//! event's or a log record's attributes, and the bodies of GenAI message events) with a mark
//! saying so, in one UPDATE per partition, and notes the partition in `llm_content_removed` so
//! that it is done once. Everything else about each record stays as it was.
//!
//! A columnar partition cannot be updated: while content has a retention of its own, a day is
//! converted to columnar storage only once its content is removed (see `maintenance`), and
//! content on days converted before cannot be removed (the report names them).

use std::time::SystemTime;

use deadpool_postgres::{GenericClient, Object};

use super::{
    maintenance::{first_kept_day, partitions_of, Partition},
    StoreError,
};
use crate::{
    config::{Retention, RetentionConfig},
    encode::genai::content,
};

/// The record tables content is kept in.
pub const TABLES: [&str; 2] = ["spans", "logs"];

/// The partitions whose content is due for removal at `now`: row storage ones to remove it
/// from, and columnar ones it cannot be removed from.
///
/// # Errors
/// Database errors.
pub async fn due(
    client: &impl GenericClient,
    retention: &RetentionConfig,
    now: SystemTime,
) -> Result<(Vec<Partition>, Vec<Partition>), StoreError> {
    let Some(first_kept) = first_kept_day(retention.llm_content, now) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let removed = removed(client).await?;
    let (mut rows, mut columnar) = (Vec::new(), Vec::new());
    for table in TABLES {
        for partition in partitions_of(client, table).await? {
            if partition.day >= first_kept || removed.contains(&partition.name) {
                continue;
            }
            if partition.columnar {
                columnar.push(partition)
            } else {
                rows.push(partition)
            }
        }
    }
    Ok((rows, columnar))
}

/// The partitions whose content was removed.
///
/// # Errors
/// Database errors.
pub async fn removed(client: &impl GenericClient) -> Result<Vec<String>, StoreError> {
    Ok(client
        .query("SELECT partition FROM llm_content_removed", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Whether `partition` may be converted to columnar storage: its table holds no content, or
/// content is kept as long as its records, or its content was removed.
pub fn may_convert(partition: &Partition, retention: &RetentionConfig, removed: &[String]) -> bool {
    !TABLES.contains(&partition.table)
        || retention.llm_content == Retention::Forever
        || removed.contains(&partition.name)
}

/// The statement that removes the content of one partition of `table`, with the functions of
/// `migrations/0010_llm_content_removed.sql`. Its parameters: the key pattern, the mark (jsonb),
/// the jsonpath finding a content key in a map (`$3`), then for spans the one finding it in a
/// list of events, for log records the message event names (`$4`).
pub fn statement(table: &str, partition: &str) -> String {
    if table == "spans" {
        format!(
            "UPDATE {partition} SET attributes = llm_content_stripped(attributes, $1, $2::jsonb), \
                 events = llm_content_stripped_events(events, $1, $2::jsonb) \
             WHERE attributes @? $3::text::jsonpath OR events @? $4::text::jsonpath"
        )
    } else {
        format!(
            "UPDATE {partition} SET attributes = llm_content_stripped(attributes, $1, $2::jsonb), \
                 body = CASE WHEN event_name = ANY($4) AND body IS NOT NULL THEN $2::jsonb ELSE body END \
             WHERE attributes @? $3::text::jsonpath OR (event_name = ANY($4) AND body IS NOT NULL)"
        )
    }
}

/// Removes the content of `partition`, in one transaction that also notes it done; returns the
/// records changed.
///
/// # Errors
/// Database errors; the partition is then left as it was, to be tried at the next pass.
pub async fn remove(
    client: &mut Object,
    partition: &Partition,
    retention: Retention,
) -> Result<u64, StoreError> {
    let started = std::time::Instant::now();
    let pattern = content::key_pattern();
    // jsonpath's like_regex takes the pattern as a string literal: its backslashes doubled.
    let literal = pattern.replace('\\', "\\\\");
    let in_map = format!("$.keyvalue() ? (@.key like_regex \"{literal}\")");
    let in_events = format!("$[*].attributes.keyvalue() ? (@.key like_regex \"{literal}\")");
    // As jsonb already: Citus allows no STABLE function (`to_jsonb`) inside a CASE of an UPDATE.
    let mark = serde_json::Value::String(content::removed_mark(&retention.to_string()));
    let events: Vec<&str> = content::EVENTS.to_vec();
    let statement = statement(partition.table, &partition.name);
    let tx = client.transaction().await?;
    let changed = if partition.table == "spans" {
        tx.execute(&statement, &[&pattern, &mark, &in_map, &in_events]).await?
    } else {
        tx.execute(&statement, &[&pattern, &mark, &in_map, &events]).await?
    };
    tx.execute(
        "INSERT INTO llm_content_removed (partition, records) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&partition.name, &(changed as i64)],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        partition = partition.name,
        records = changed,
        seconds = started.elapsed().as_secs_f64(),
        "removed LLM message content older than retention.llm_content"
    );
    Ok(changed)
}
