//! Rollups written with the records they count: per request, the spans it stores tallied by
//! (minute, resource, span name, kind, status code) with a duration sketch, and its log
//! records by (minute, resource, severity). Their rows go into the same transaction as the
//! records, so a rollup counts exactly the records that committed: a refused record is never
//! tallied, a failed batch takes its rollup rows with it, and a retried one writes them once.
//! Rows are only ever added (several requests, writers and replicas tally the same key apart);
//! reads sum them, and maintenance folds a closed minute's rows of one key into one
//! (`store::rollups`).
//!
//! The calls between services ([`SERVICE_EDGES`]) are paired there too, from candidates written
//! here: a span that may end a call ([`CALLED_KINDS`]) is a candidate unless its parent is in
//! the same request under the same resource (then both are one service's, and there is no call
//! to count). An SDK exports a service's spans together, so most in-service children never
//! become candidates; a server span called by another service always does.

use std::collections::BTreeMap;

use super::{
    copy::{Rows, Signal, Table, TableKind},
    sketch::Durations,
};

/// A minute in nanoseconds.
pub const MINUTE_NANOS: u64 = 60_000_000_000;

pub const SPAN_ROLLUP: Table = Table {
    name: "span_rollup",
    columns: &["minute_unix_nano", "resource_id", "name", "kind", "status_code", "spans", "durations"],
    kind: TableKind::Rollup { partition_key: "minute_unix_nano", signal: Signal::Traces },
};

pub const LOG_ROLLUP: Table = Table {
    name: "log_rollup",
    columns: &["minute_unix_nano", "resource_id", "severity_number", "records"],
    kind: TableKind::Rollup { partition_key: "minute_unix_nano", signal: Signal::Logs },
};

/// Calls from one service to another, paired by maintenance from stored spans (never written by
/// a request).
pub const SERVICE_EDGES: Table = Table {
    name: "service_edges",
    columns: &["minute_unix_nano", "parent_service", "child_service", "calls", "errors", "durations"],
    kind: TableKind::Rollup { partition_key: "minute_unix_nano", signal: Signal::Traces },
};

/// Child spans to pair with their parents, with what their call counts by; maintenance takes
/// them (`store::rollups`).
pub const PAIRING_CANDIDATES: Table = Table {
    name: "pairing_candidates",
    columns: &[
        "minute_unix_nano",
        "trace_id",
        "parent_span_id",
        "resource_id",
        "status_code",
        "duration_nanos",
    ],
    kind: TableKind::Queue,
};

/// The start of the minute holding `nanos`, as stored (the u64 reinterpreted, like every time).
#[must_use]
pub fn minute_of(nanos: u64) -> i64 {
    (nanos - nanos % MINUTE_NANOS) as i64
}

/// The part of a span's key that is not its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SpanKey {
    minute: i64,
    resource_id: i64,
    kind: i32,
    status_code: i32,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct SpanTally {
    spans: u64,
    durations: Durations,
}

/// A stored span of [`CALLED_KINDS`] with a parent: what pairing needs of it.
#[derive(Debug, PartialEq, Eq)]
struct Child {
    minute: i64,
    trace_id: u128,
    parent_span_id: u64,
    resource_id: i64,
    status_code: i32,
    duration_nanos: i64,
}

/// One request's spans, tallied as they are stored (in key order, so that the same spans give
/// the same rows).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SpanTallies {
    keys: BTreeMap<SpanKey, BTreeMap<String, SpanTally>>,
    /// Every stored span's span id, trace id and resource, to find children's parents in the
    /// request.
    stored: Vec<(u64, u128, i64)>,
    children: Vec<Child>,
}

/// What a stored span counts by.
pub struct TalliedSpan<'a> {
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub resource_id: i64,
    pub name: &'a str,
    pub kind: i32,
    /// 0 when the span has no Status message.
    pub status_code: i32,
    /// As validated for storing: 16 and 8 bytes, the parent's empty when the span has none.
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
}

/// The kinds of span a call between services ends in: a server or consumer span (or one whose
/// kind is unspecified, as hand-made spans often are) whose parent is another service's. Only
/// these are paired: internal, client and producer spans are children within their service.
pub const CALLED_KINDS: [i32; 3] = [0, 2, 5];

impl SpanTallies {
    pub fn add(&mut self, span: &TalliedSpan<'_>) {
        let key = SpanKey {
            minute: minute_of(span.start_time_unix_nano),
            resource_id: span.resource_id,
            kind: span.kind,
            status_code: span.status_code,
        };
        // As stored: the difference of the two u64 times, read as signed (an end before the
        // start is a negative duration).
        let nanos = span.end_time_unix_nano.wrapping_sub(span.start_time_unix_nano) as i64;
        if let (Ok(trace_id), Ok(span_id)) = (span.trace_id.try_into(), span.span_id.try_into()) {
            let trace_id = u128::from_be_bytes(trace_id);
            self.stored.push((u64::from_be_bytes(span_id), trace_id, span.resource_id));
            if let (Ok(parent_span_id), true) =
                (span.parent_span_id.try_into(), CALLED_KINDS.contains(&span.kind))
            {
                self.children.push(Child {
                    minute: key.minute,
                    trace_id,
                    parent_span_id: u64::from_be_bytes(parent_span_id),
                    resource_id: span.resource_id,
                    status_code: span.status_code,
                    duration_nanos: nanos,
                });
            }
        }
        let names = self.keys.entry(key).or_default();
        let tally = match names.get_mut(span.name) {
            Some(tally) => tally,
            None => names.entry(span.name.to_owned()).or_default(),
        };
        tally.spans += 1;
        tally.durations.add(nanos);
    }

    /// Adds `spans` spans of one key whose durations are `durations`: a row being folded.
    pub fn add_counted(
        &mut self,
        (minute, resource_id, name, kind, status_code): (i64, i64, &str, i32, i32),
        spans: u64,
        durations: &Durations,
    ) {
        let key = SpanKey { minute, resource_id, kind, status_code };
        let names = self.keys.entry(key).or_default();
        let tally = match names.get_mut(name) {
            Some(tally) => tally,
            None => names.entry(name.to_owned()).or_default(),
        };
        tally.spans += spans;
        tally.durations.merge(durations);
    }

    /// Adds every tally of `other` (another request's, written in the same transaction).
    pub fn merge(&mut self, other: &SpanTallies) {
        for (key, names) in &other.keys {
            for (name, tally) in names {
                self.add_counted(
                    (key.minute, key.resource_id, name, key.kind, key.status_code),
                    tally.spans,
                    &tally.durations,
                );
            }
        }
    }

    /// Memory the tallies hold, about.
    pub fn held_bytes(&self) -> usize {
        let tallies: usize = self
            .keys
            .values()
            .flat_map(BTreeMap::iter)
            .map(|(name, tally)| 96 + name.capacity() + tally.durations.held_bytes())
            .sum();
        tallies
            + self.keys.len() * 64
            + self.stored.capacity() * std::mem::size_of::<(u64, u128, i64)>()
            + self.children.capacity() * std::mem::size_of::<Child>()
    }

    /// Rows [`SpanTallies::write`] writes.
    pub fn len(&self) -> usize {
        self.keys.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Writes a `pairing_candidates` row per child span whose parent is not in the request
    /// under the same resource, and lets go of what finding them took.
    pub fn write_candidates(&mut self, rows: &mut Rows) {
        let (mut stored, children) = (std::mem::take(&mut self.stored), std::mem::take(&mut self.children));
        if children.is_empty() {
            return;
        }
        // Sorted and searched rather than hashed: ids are the client's to choose.
        stored.sort_unstable();
        for child in children {
            if stored.binary_search(&(child.parent_span_id, child.trace_id, child.resource_id)).is_ok() {
                continue;
            }
            let mut row = rows.row(&PAIRING_CANDIDATES);
            row.int8(child.minute);
            row.bytea(&child.trace_id.to_be_bytes());
            row.bytea(&child.parent_span_id.to_be_bytes());
            row.int8(child.resource_id);
            row.int4(child.status_code);
            row.int8(child.duration_nanos);
        }
    }

    /// Writes one `span_rollup` row per key.
    pub fn write(&self, rows: &mut Rows) {
        for (key, names) in &self.keys {
            for (name, tally) in names {
                let mut row = rows.row(&SPAN_ROLLUP);
                row.int8(key.minute);
                row.int8(key.resource_id);
                row.text(name);
                row.int4(key.kind);
                row.int4(key.status_code);
                row.int8(tally.spans as i64);
                row.bytea(&tally.durations.encode());
            }
        }
    }
}

/// One request's log records, tallied as they are stored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogTallies {
    keys: BTreeMap<(i64, i64, i32), u64>,
}

impl LogTallies {
    /// Counts a record of partition time `timestamp_unix_nano`.
    pub fn add(&mut self, timestamp_unix_nano: u64, resource_id: i64, severity_number: i32) {
        self.add_counted((minute_of(timestamp_unix_nano), resource_id, severity_number), 1);
    }

    /// Adds `records` records of one (minute, resource, severity) key: a row being folded.
    pub fn add_counted(&mut self, key: (i64, i64, i32), records: u64) {
        *self.keys.entry(key).or_default() += records;
    }

    /// Adds every count of `other` (another request's, written in the same transaction).
    pub fn merge(&mut self, other: &LogTallies) {
        for (&key, &records) in &other.keys {
            self.add_counted(key, records);
        }
    }

    /// Memory the tallies hold, about.
    pub fn held_bytes(&self) -> usize {
        self.keys.len() * 64
    }

    /// Rows [`LogTallies::write`] writes.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Writes one `log_rollup` row per key.
    pub fn write(&self, rows: &mut Rows) {
        for (&(minute, resource_id, severity_number), &records) in &self.keys {
            let mut row = rows.row(&LOG_ROLLUP);
            row.int8(minute);
            row.int8(resource_id);
            row.int4(severity_number);
            row.int8(records as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::sketch;

    fn span(start: u64, name: &str, nanos: u64) -> TalliedSpan<'_> {
        TalliedSpan {
            start_time_unix_nano: start,
            end_time_unix_nano: start + nanos,
            resource_id: 7,
            name,
            kind: 2,
            status_code: 0,
            trace_id: &[1; 16],
            span_id: &[2; 8],
            parent_span_id: &[],
        }
    }

    #[test]
    fn tallies_of_requests_written_together_merge_into_a_row_per_key() {
        let (mut a, mut b) = (SpanTallies::default(), SpanTallies::default());
        a.add(&span(5, "GET", 10));
        a.add(&span(6, "PUT", 10));
        b.add(&span(7, "GET", 1_000));
        b.add(&span(MINUTE_NANOS + 1, "GET", 10));
        let mut merged = SpanTallies::default();
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.len(), 3);
        let key = SpanKey { minute: 0, resource_id: 7, kind: 2, status_code: 0 };
        let get = &merged.keys[&key]["GET"];
        assert_eq!(get.spans, 2);
        let value = |nanos| Some(sketch::value(sketch::bucket(nanos)));
        assert_eq!((get.durations.quantile(0.0), get.durations.quantile(1.0)), (value(10), value(1_000)));
        let mut rows = Rows::default();
        merged.write(&mut rows);
        assert_eq!(rows.count, 3);

        let (mut a, mut b) = (LogTallies::default(), LogTallies::default());
        a.add(5, 7, 9);
        b.add(6, 7, 9);
        b.add(7, 7, 13);
        a.merge(&b);
        assert_eq!(a.keys, BTreeMap::from([((0, 7, 9), 2), ((0, 7, 13), 1)]));
    }
}
