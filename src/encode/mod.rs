//! OTLP -> rows: turns one export request into binary COPY tuples for each table it touches,
//! plus the resources, scopes and metric series that the database may not have yet. Runs in the
//! request handler, so the writer only streams bytes.

pub mod attributes;
pub mod copy;
mod decoded;
pub mod dims;
pub mod genai;
pub mod logs;
pub mod meter;
pub mod metrics;
pub mod rollups;
pub mod sketch;
pub mod source;
#[cfg(test)]
mod testing;
pub mod traces;
pub mod validate;
pub mod wire;

use copy::{Rows, Table, TableKind};

/// Every table the pipeline writes, in the order a batch writes them: [`TableId`] order. The
/// first [`DIMENSION_TABLES`] are dimensions (see [`TableKind`]), upserted before the records
/// that reference them.
pub const TABLES: [&Table; TableId::ALL.len()] = {
    let mut tables = [TableId::ALL[0].table(); TableId::ALL.len()];
    let mut i = 0;
    while i < tables.len() {
        tables[i] = TableId::ALL[i].table();
        i += 1;
    }
    tables
};

/// How many of [`TABLES`] are dimensions: they come first.
pub const DIMENSION_TABLES: usize = {
    let mut n = 0;
    while n < TABLES.len() && matches!(TABLES[n].kind, TableKind::Dimension) {
        n += 1;
    }
    n
};

/// The record tables: partitioned by day, kept by retention.
pub fn record_tables() -> impl Iterator<Item = &'static Table> {
    TABLES[DIMENSION_TABLES..].iter().copied()
}

/// A table, by what it holds; also its index into [`TABLES`] and [`Encoded::rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    SpanRollup,
    LogRollup,
    ServiceEdges,
    PairingCandidates,
    PeerCalls,
    LlmCalls,
}

impl TableId {
    /// Every table, in the order a batch writes them (dimensions first).
    pub const ALL: [TableId; 15] = [
        TableId::Resources,
        TableId::Scopes,
        TableId::MetricSeries,
        TableId::Spans,
        TableId::Logs,
        TableId::NumberPoints,
        TableId::HistogramPoints,
        TableId::ExpHistogramPoints,
        TableId::SummaryPoints,
        TableId::SpanRollup,
        TableId::LogRollup,
        TableId::ServiceEdges,
        TableId::PairingCandidates,
        TableId::PeerCalls,
        TableId::LlmCalls,
    ];

    /// The table's name, columns and kind.
    pub const fn table(self) -> &'static Table {
        match self {
            TableId::Resources => &dims::RESOURCES,
            TableId::Scopes => &dims::SCOPES,
            TableId::MetricSeries => &metrics::SERIES,
            TableId::Spans => &traces::SPANS,
            TableId::Logs => &logs::LOGS,
            TableId::NumberPoints => &metrics::NUMBER_POINTS,
            TableId::HistogramPoints => &metrics::HISTOGRAM_POINTS,
            TableId::ExpHistogramPoints => &metrics::EXP_HISTOGRAM_POINTS,
            TableId::SummaryPoints => &metrics::SUMMARY_POINTS,
            TableId::SpanRollup => &rollups::SPAN_ROLLUP,
            TableId::LogRollup => &rollups::LOG_ROLLUP,
            TableId::ServiceEdges => &rollups::SERVICE_EDGES,
            TableId::PairingCandidates => &rollups::PAIRING_CANDIDATES,
            TableId::PeerCalls => &rollups::PEER_CALLS,
            TableId::LlmCalls => &genai::LLM_CALLS,
        }
    }
}

const _: () = {
    // An id is its table's index, and no dimension comes after a record table.
    let mut i = 0;
    while i < TableId::ALL.len() {
        assert!(TableId::ALL[i] as usize == i);
        assert!(matches!(TABLES[i].kind, TableKind::Dimension) == (i < DIMENSION_TABLES));
        i += 1;
    }
};

/// One request's rows, ready to stream.
#[derive(Debug, Default)]
pub struct Encoded {
    pub rows: [Rows; TABLES.len()],
    /// Ids of the dimension rows included above, remembered as stored once they commit.
    pub new_dimension_ids: Vec<i64>,
    /// Records left out (see [`validate`]), and why the first of them was.
    pub rejected: u64,
    pub first_rejection: Option<validate::Rejection>,
    /// The spans and log records above, tallied for their rollups: the writer merges the
    /// tallies of the requests it writes together and writes their rows in the same
    /// transaction (`pipeline::Payload::rollup_tuples`).
    pub spans: rollups::SpanTallies,
    pub logs: rollups::LogTallies,
}

impl Encoded {
    pub fn rows_mut(&mut self, table: TableId) -> &mut Rows {
        &mut self.rows[table as usize]
    }

    /// Memory the encoded rows and tallies hold, what the queue's capacity counts.
    pub fn held_bytes(&self) -> usize {
        self.rows.iter().map(|r| r.buf.capacity()).sum::<usize>()
            + self.spans.held_bytes()
            + self.logs.held_bytes()
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
        TABLES
            .iter()
            .zip(&self.rows)
            .filter(|(table, _)| matches!(table.kind, TableKind::Records { .. }))
            .map(|(_, rows)| rows.count)
            .sum()
    }

    /// Writes the pairing candidates among the spans, once every span is written.
    #[must_use]
    pub fn with_candidates(mut self) -> Self {
        let mut spans = std::mem::take(&mut self.spans);
        spans.write_candidates(self.rows_mut(TableId::PairingCandidates));
        self.spans = spans;
        self
    }

    /// The rollup rows of what was tallied, as they would be written for this request alone.
    pub fn write_tallies(&mut self) {
        let (spans, logs) = (std::mem::take(&mut self.spans), std::mem::take(&mut self.logs));
        spans.write(self.rows_mut(TableId::SpanRollup));
        spans.write_peers(self.rows_mut(TableId::PeerCalls));
        logs.write(self.rows_mut(TableId::LogRollup));
    }
}
