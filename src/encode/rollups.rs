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
//!
//! What a client or producer span calls is tallied here too ([`PEER_CALLS`]): the database,
//! queue or remote host its attributes name ([`Peer`]), whether or not what answered it is
//! instrumented. Pairing learns which of those peers are services that send their own spans, so
//! that the service map draws only the others as leaf nodes.

use std::{borrow::Cow, collections::BTreeMap};

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

/// Calls from a service's client and producer spans to what their attributes name, by minute,
/// caller resource and [`Peer`].
pub const PEER_CALLS: Table = Table {
    name: "peer_calls",
    columns: &["minute_unix_nano", "resource_id", "peer_kind", "peer", "calls", "errors", "durations"],
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

/// Calls of one key: how many, how many failed, and their durations.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallTally {
    pub calls: u64,
    pub errors: u64,
    pub durations: Durations,
}

impl CallTally {
    pub fn add(&mut self, status_code: i32, nanos: i64) {
        self.calls += 1;
        self.errors += u64::from(status_code == STATUS_ERROR);
        self.durations.add(nanos);
    }

    pub fn merge(&mut self, other: &CallTally) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.durations.merge(&other.durations);
    }
}

/// The status code of a failed span.
pub const STATUS_ERROR: i32 = 2;

/// The kinds of span that call out of their service: client and producer.
pub const CALLING_KINDS: [i32; 2] = [3, 4];

/// The attributes a calling span names what it calls by, in the order [`Peer::of`] reads them.
pub const PEER_KEYS: [&str; 10] = [
    "peer.service",
    "db.system.name",
    "db.system",
    "db.namespace",
    "db.name",
    "messaging.system",
    "messaging.destination.name",
    "messaging.destination",
    "server.address",
    "net.peer.name",
];

/// A peer's name is cut to this many bytes (at a character boundary): it is a label, and each
/// distinct one is a row per minute.
pub const MAX_PEER_BYTES: usize = 200;

/// What a client or producer span calls, from the attributes of the semantic conventions (old
/// names too): a database (`db.system.name` or `db.system`, named by `peer.service` or by the
/// system and `db.namespace`/`db.name`), else a queue (`messaging.system` and its destination),
/// else a remote service or host (`peer.service`, `server.address` or `net.peer.name`), as
/// Tempo's service graphs name the virtual nodes of uninstrumented peers.
///
/// The name borrows the span's attribute where it is one: most calling spans name a peer the
/// request's tally already holds, and then storing them allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer<'a> {
    pub kind: PeerKind,
    pub name: Cow<'a, str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerKind {
    Database = 1,
    Messaging = 2,
    Remote = 3,
}

impl PeerKind {
    #[must_use]
    pub fn from_i32(kind: i32) -> Option<PeerKind> {
        match kind {
            1 => Some(PeerKind::Database),
            2 => Some(PeerKind::Messaging),
            3 => Some(PeerKind::Remote),
            _ => None,
        }
    }

    /// As the query service names it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PeerKind::Database => "database",
            PeerKind::Messaging => "messaging",
            PeerKind::Remote => "remote",
        }
    }
}

impl<'a> Peer<'a> {
    /// The peer named by `values`, the string values of [`PEER_KEYS`] in their order (`None`
    /// for a key the span lacks or holds another type under); `None` when they name none.
    #[must_use]
    pub fn of(values: &[Option<&'a str>; PEER_KEYS.len()]) -> Option<Peer<'a>> {
        let [peer_service, db_system_name, db_system, db_namespace, db_name, messaging_system, destination_name, destination, server_address, net_peer_name] =
            values.map(|v| v.filter(|v| !v.is_empty()));
        let (kind, name) = if let Some(system) = db_system_name.or(db_system) {
            let name = match (peer_service, db_namespace.or(db_name)) {
                (Some(service), _) => Cow::Borrowed(service),
                (None, Some(namespace)) => Cow::Owned(format!("{system} {namespace}")),
                (None, None) => Cow::Borrowed(system),
            };
            (PeerKind::Database, name)
        } else if let Some(system) = messaging_system {
            let name = match destination_name.or(destination) {
                Some(destination) => Cow::Owned(format!("{system} {destination}")),
                None => Cow::Borrowed(system),
            };
            (PeerKind::Messaging, name)
        } else {
            (PeerKind::Remote, Cow::Borrowed(peer_service.or(server_address).or(net_peer_name)?))
        };
        Some(Peer { kind, name: cut(name) })
    }
}

fn cut(name: Cow<'_, str>) -> Cow<'_, str> {
    if name.len() <= MAX_PEER_BYTES {
        return name;
    }
    let mut end = MAX_PEER_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    match name {
        Cow::Borrowed(name) => Cow::Borrowed(&name[..end]),
        Cow::Owned(mut name) => {
            name.truncate(end);
            Cow::Owned(name)
        }
    }
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
    /// Calls to peers by (minute, resource, peer kind), then peer name.
    peers: BTreeMap<(i64, i64, i32), BTreeMap<String, CallTally>>,
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

    /// Counts a call of a client or producer span (`span`, tallied by [`SpanTallies::add`]) to
    /// `peer`.
    pub fn add_peer_call(&mut self, span: &TalliedSpan<'_>, peer: &Peer<'_>) {
        let nanos = span.end_time_unix_nano.wrapping_sub(span.start_time_unix_nano) as i64;
        let key = (minute_of(span.start_time_unix_nano), span.resource_id, peer.kind as i32);
        let peers = self.peers.entry(key).or_default();
        let tally = match peers.get_mut(peer.name.as_ref()) {
            Some(tally) => tally,
            None => peers.entry(peer.name.clone().into_owned()).or_default(),
        };
        tally.add(span.status_code, nanos);
    }

    /// Adds calls of one (minute, resource, peer kind, peer) key: a row being folded or rebuilt.
    pub fn add_peer_calls(
        &mut self,
        (minute, resource_id, kind, peer): (i64, i64, i32, &str),
        calls: &CallTally,
    ) {
        let peers = self.peers.entry((minute, resource_id, kind)).or_default();
        let tally = match peers.get_mut(peer) {
            Some(tally) => tally,
            None => peers.entry(peer.to_owned()).or_default(),
        };
        tally.merge(calls);
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
        for (&key, peers) in &other.peers {
            for (peer, calls) in peers {
                self.add_peer_calls((key.0, key.1, key.2, peer), calls);
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
        let peers: usize = self
            .peers
            .values()
            .flat_map(BTreeMap::iter)
            .map(|(peer, tally)| 96 + peer.capacity() + tally.durations.held_bytes())
            .sum();
        tallies
            + peers
            + (self.keys.len() + self.peers.len()) * 64
            + self.stored.capacity() * std::mem::size_of::<(u64, u128, i64)>()
            + self.children.capacity() * std::mem::size_of::<Child>()
    }

    /// Rows [`SpanTallies::write`] writes.
    pub fn len(&self) -> usize {
        self.keys.values().map(BTreeMap::len).sum()
    }

    /// Rows [`SpanTallies::write_peers`] writes.
    pub fn peer_rows(&self) -> usize {
        self.peers.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.peers.is_empty()
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

    /// Writes one `peer_calls` row per key.
    pub fn write_peers(&self, rows: &mut Rows) {
        for (&(minute, resource_id, kind), peers) in &self.peers {
            for (peer, calls) in peers {
                let mut row = rows.row(&PEER_CALLS);
                row.int8(minute);
                row.int8(resource_id);
                row.int4(kind);
                row.text(peer);
                row.int8(calls.calls as i64);
                row.int8(calls.errors as i64);
                row.bytea(&calls.durations.encode());
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

    fn peer(pairs: &[(&str, &str)]) -> Option<(PeerKind, String)> {
        let mut values = [None; PEER_KEYS.len()];
        for (key, value) in pairs {
            values[PEER_KEYS.iter().position(|k| k == key).expect("a peer key")] = Some(*value);
        }
        Peer::of(&values).map(|p| (p.kind, p.name.into_owned()))
    }

    #[test]
    fn a_calling_span_names_its_peer_by_the_semantic_conventions_old_and_new() {
        use PeerKind::{Database, Messaging, Remote};
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<(PeerKind, &'a str)>);
        let cases: &[Case<'_>] = &[
            (
                &[("db.system.name", "postgresql"), ("db.namespace", "orders"), ("server.address", "db1")],
                Some((Database, "postgresql orders")),
            ),
            (&[("db.system", "redis"), ("server.address", "cache")], Some((Database, "redis"))),
            (&[("db.system", "mysql"), ("db.name", "shop")], Some((Database, "mysql shop"))),
            (&[("db.system", "mysql"), ("peer.service", "shop-db")], Some((Database, "shop-db"))),
            (
                &[("messaging.system", "kafka"), ("messaging.destination.name", "orders")],
                Some((Messaging, "kafka orders")),
            ),
            (
                &[("messaging.system", "rabbitmq"), ("messaging.destination", "jobs")],
                Some((Messaging, "rabbitmq jobs")),
            ),
            (&[("peer.service", "stripe"), ("server.address", "api.stripe.com")], Some((Remote, "stripe"))),
            (&[("server.address", "api.stripe.com")], Some((Remote, "api.stripe.com"))),
            (&[("net.peer.name", "legacy.internal")], Some((Remote, "legacy.internal"))),
            (&[("server.address", "")], None),
            (&[], None),
        ];
        for (pairs, expected) in cases {
            assert_eq!(peer(pairs), expected.map(|(k, n)| (k, n.to_owned())), "{pairs:?}");
        }
        let long = "é".repeat(MAX_PEER_BYTES);
        let (_, name) = peer(&[("server.address", &long)]).expect("a peer");
        assert_eq!(name.len(), MAX_PEER_BYTES);
    }

    #[test]
    fn peer_calls_merge_into_a_row_per_key() {
        let mut a = SpanTallies::default();
        let db = Peer { kind: PeerKind::Database, name: "postgresql".into() };
        let mut failed = span(5, "SELECT", 10);
        failed.status_code = STATUS_ERROR;
        a.add_peer_call(&failed, &db);
        let mut b = SpanTallies::default();
        b.add_peer_call(&span(6, "SELECT", 30), &db);
        b.add_peer_call(&span(MINUTE_NANOS, "SELECT", 30), &db);
        a.merge(&b);
        assert_eq!(a.peer_rows(), 2);
        let calls = &a.peers[&(0, 7, PeerKind::Database as i32)]["postgresql"];
        assert_eq!((calls.calls, calls.errors), (2, 1));
        let mut rows = Rows::default();
        a.write_peers(&mut rows);
        assert_eq!(rows.count, 2);
    }
}
