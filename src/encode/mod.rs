//! OTLP -> rows: turns one export request into binary COPY tuples for each table it touches,
//! plus the resources, scopes and metric series that the database may not have yet. Runs in the
//! request handler, so the writer only streams bytes.

pub mod attributes;
pub mod copy;
pub mod dims;
pub mod logs;
pub mod meter;
pub mod metrics;
#[cfg(test)]
mod testing;
pub mod traces;
pub mod validate;
pub mod wire;

use copy::{Rows, Table};

/// Every table the pipeline writes, in the order a batch writes them. The first
/// [`DIMENSION_TABLES`] are keyed by a content hash in their first column and are upserted
/// (through a staging table, `ON CONFLICT DO NOTHING`) before the records that reference them.
pub const TABLES: [&Table; 9] = [
    &dims::RESOURCES,
    &dims::SCOPES,
    &metrics::SERIES,
    &traces::SPANS,
    &logs::LOGS,
    &metrics::NUMBER_POINTS,
    &metrics::HISTOGRAM_POINTS,
    &metrics::EXP_HISTOGRAM_POINTS,
    &metrics::SUMMARY_POINTS,
];
pub const DIMENSION_TABLES: usize = 3;

/// Index into [`TABLES`].
#[derive(Debug, Clone, Copy)]
pub enum TableId {
    Resources,
    Scopes,
    MetricSeries,
    Spans,
    Logs,
    NumberPoints,
    HistogramPoints,
    ExpHistogramPoints,
    SummaryPoints,
}

impl TableId {}

/// One request's rows, ready to stream.
#[derive(Debug, Default)]
pub struct Encoded {
    pub rows: [Rows; TABLES.len()],
    /// Ids of the dimension rows included above, remembered as stored once they commit.
    pub new_dimension_ids: Vec<i64>,
    /// Records left out (see [`validate`]), and why the first of them was.
    pub rejected: u64,
    pub first_rejection: Option<validate::Rejection>,
}

impl Encoded {
    pub fn rows_mut(&mut self, table: TableId) -> &mut Rows {
        &mut self.rows[table as usize]
    }

    /// Memory the encoded rows hold, what the queue's capacity counts.
    pub fn held_bytes(&self) -> usize {
        self.rows.iter().map(|r| r.buf.capacity()).sum()
    }

    /// Leaves `count` records out for `reason`.
    pub fn reject(&mut self, count: usize, reason: validate::Rejection) {
        if count == 0 {
            return;
        }
        self.rejected += count as u64;
        self.first_rejection.get_or_insert(reason);
    }

    /// The OTLP partial_success error message, when records were left out.
    pub fn rejection_message(&self) -> Option<String> {
        let reason = self.first_rejection.as_ref()?;
        Some(format!("{} record(s) rejected; the first because its {reason}", self.rejected))
    }

    pub fn total_rows(&self) -> usize {
        self.rows.iter().map(|r| r.count).sum()
    }

    /// Spans, data points or log records: the rows of the record tables.
    pub fn items(&self) -> usize {
        self.rows[DIMENSION_TABLES..].iter().map(|r| r.count).sum()
    }
}
