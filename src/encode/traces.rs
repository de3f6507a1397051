//! Spans -> rows of `spans`. Events and links go into jsonb arrays on the span's row: they are
//! read with their span, never on their own. One writer ([`write_span`]) fills the row from a
//! [`SpanRow`], which is read either from a decoded span or from a Span message's bytes.

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::KeyValue,
    trace::v1::{span, Span},
};

use super::{
    attributes::{
        attributes_from_json, write_attributes_cut, write_attributes_seen, write_hex, write_int, write_str,
        Cut, MappingError,
    },
    copy::{Signal, Table, TableKind},
    dims::{walk_decoded, KnownIds},
    genai::{self, CallSpan},
    rollups::{Peer, TalliedSpan, CALLING_KINDS, PEER_KEYS},
    source::{ListSource, MapSource, Read, ValueSource},
    validate,
    wire::{self, values::Item, Fields, Stretch, Unusual, WireList, WireMap},
    Encoded, TableId,
};

pub const SPANS: Table = Table {
    name: "spans",
    columns: &[
        "start_time_unix_nano",
        "end_time_unix_nano",
        "trace_id",
        "span_id",
        "parent_span_id",
        "trace_state",
        "flags",
        "name",
        "kind",
        "resource_id",
        "scope_id",
        "attributes",
        "dropped_attributes_count",
        "events",
        "dropped_events_count",
        "links",
        "dropped_links_count",
        "status_code",
        "status_message",
    ],
    kind: TableKind::Records { partition_key: "start_time_unix_nano", signal: Signal::Traces },
};

/// Encodes every span of an export request, leaving out (and counting) the ones refused (see
/// [`validate`]).
pub fn encode(request: &ExportTraceServiceRequest, known: &KnownIds) -> Encoded {
    walk_decoded(
        known,
        &request.resource_spans,
        |rs| (rs.resource.as_ref(), rs.schema_url.as_str(), &rs.scope_spans[..]),
        |ss| (ss.scope.as_ref(), ss.schema_url.as_str(), &ss.spans[..]),
        |_| 1,
        |enc, span, resource_id, scope_id| {
            // A decoded span is never Unusual.
            if let Ok(Err(reason)) = write_span(&mut enc.out, &SpanRow::from(span), (resource_id, scope_id)) {
                enc.out.reject(1, reason);
            }
        },
    )
    .with_candidates()
}

/// A span as its row is written.
pub struct SpanRow<'a, M, E, L> {
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub trace_state: &'a str,
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub attributes: M,
    pub dropped_attributes_count: u32,
    pub events: E,
    pub dropped_events_count: u32,
    pub links: L,
    pub dropped_links_count: u32,
    /// The status message's code and message, when the span has one.
    pub status: Option<(i32, &'a str)>,
}

/// An event as the `events` column holds it.
pub struct EventRow<'a, M> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    /// `None` when it has none: the member is left out.
    pub attributes: Option<M>,
    pub dropped_attributes_count: u32,
}

/// A link as the `links` column holds it.
pub struct LinkRow<'a, M> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    /// `None` when it has none: the member is left out.
    pub attributes: Option<M>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

/// Writes a span's row and tallies it for `span_rollup`, or, when a rule refuses the span, leaves
/// it out and says why: the ids (see [`validate`]), U+0000 in a name, trace state, status
/// message or any key.
///
/// # Errors
/// [`Unusual`] when the span's bytes are left to prost (then what was written is discarded).
pub fn write_span<'a, M, E, L>(
    out: &mut Encoded,
    span: &SpanRow<'a, M, E, L>,
    (resource_id, scope_id): (i64, i64),
) -> Result<Result<(), validate::Rejection>, Unusual>
where
    M: MapSource<'a>,
    E: ListSource<'a, EventRow<'a, M>>,
    L: ListSource<'a, LinkRow<'a, M>>,
{
    let rows = out.rows_mut(TableId::Spans);
    let mark = rows.mark();
    // What the span's peer and LLM call are read from, seen as its attributes are written.
    let calling = CALLING_KINDS.contains(&span.kind);
    let mut peer = [None; PEER_KEYS.len()];
    let mut llm = genai::Found::default();
    let mut seen = |key: &'a [u8], value: Option<M::Value>| {
        llm.note(key, value);
        if calling {
            note_peer(&mut peer, key, value);
        }
    };
    let cut = Cut::content();
    let mut attributes = Ok(false);
    let mut events = Ok(None);
    let mut links = Ok(None);
    {
        let mut row = rows.row(&SPANS);
        row.uint64(span.start_time_unix_nano);
        row.uint64(span.end_time_unix_nano);
        row.bytea(span.trace_id);
        row.bytea(span.span_id);
        row.bytea_or_null(span.parent_span_id);
        row.text(span.trace_state);
        row.int8(i64::from(span.flags));
        row.text(span.name);
        row.int4(span.kind);
        row.int8(resource_id);
        row.int8(scope_id);
        row.jsonb(|buf| attributes = write_attributes_seen(buf, span.attributes, cut, &mut seen));
        row.int8(i64::from(span.dropped_attributes_count));
        if span.events.is_empty() {
            row.null();
        } else {
            row.jsonb(|buf| events = write_events(buf, span.events, cut));
        }
        row.int8(i64::from(span.dropped_events_count));
        if span.links.is_empty() {
            row.null();
        } else {
            row.jsonb(|buf| links = write_links(buf, span.links));
        }
        row.int8(i64::from(span.dropped_links_count));
        match span.status {
            Some((code, message)) => {
                row.int4(code);
                row.text(message);
            }
            None => {
                row.null();
                row.text("");
            }
        }
    }
    let (attributes, events, links) = (attributes?, events?, links?);
    let verdict = validate::trace_id("trace_id", span.trace_id)
        .and_then(|()| validate::span_id("span_id", span.span_id))
        .and_then(|()| validate::optional_span_id("parent_span_id", span.parent_span_id))
        .and_then(|()| validate::text("name", span.name))
        .and_then(|()| validate::text("trace_state", span.trace_state))
        .and_then(|()| validate::keys("attributes", attributes))
        .and_then(|()| events.map_or(Ok(()), Err))
        .and_then(|()| links.map_or(Ok(()), Err))
        .and_then(|()| validate::text("status message", span.status.map_or("", |(_, message)| message)));
    match verdict {
        Ok(()) => {
            let tallied = TalliedSpan {
                start_time_unix_nano: span.start_time_unix_nano,
                end_time_unix_nano: span.end_time_unix_nano,
                resource_id,
                name: span.name,
                kind: span.kind,
                status_code: span.status.map_or(0, |(code, _)| code),
                trace_id: span.trace_id,
                span_id: span.span_id,
                parent_span_id: span.parent_span_id,
            };
            out.spans.add(&tallied);
            let call = CallSpan {
                start_time_unix_nano: span.start_time_unix_nano,
                end_time_unix_nano: span.end_time_unix_nano,
                trace_id: span.trace_id,
                span_id: span.span_id,
                resource_id,
                status: span.status,
            };
            genai::write_call(out.rows_mut(TableId::LlmCalls), &call, &llm, span.events);
            if let Some(peer) = calling.then(|| Peer::of(&peer)).flatten() {
                out.spans.add_peer_call(&tallied, &peer);
            }
        }
        Err(_) => rows.undo(mark),
    }
    Ok(verdict)
}

/// Keeps an attribute of a calling span that names its peer (see [`Peer::of`]): string values
/// only, and none holding U+0000, which a text column cannot.
fn note_peer<'a, V: ValueSource<'a>>(
    values: &mut [Option<&'a str>; PEER_KEYS.len()],
    key: &[u8],
    value: Option<V>,
) {
    let Some(i) = PEER_KEYS.iter().position(|k| k.as_bytes() == key) else { return };
    if let Some(Ok(Read::Text(text))) = value.map(ValueSource::read) {
        values[i] = std::str::from_utf8(text).ok().filter(|t| !t.contains('\0'));
    }
}

/// Writes a JSON object's members: `{"key":` for the first, `,"key":` for the others. The
/// objects of events, links and exemplars write their members in jsonb's order (shorter keys
/// first, equal lengths bytewise; see `attributes::write_attributes`).
#[derive(Default)]
pub(crate) struct Members(bool);

impl Members {
    pub(crate) fn key(&mut self, buf: &mut BytesMut, key: &str) {
        buf.put_u8(if self.0 { b',' } else { b'{' });
        self.0 = true;
        write_str(buf, key);
        buf.put_u8(b':');
    }
}

/// Writes a list as a JSON array, each item with `write`, which says why the item is refused,
/// if it is; returns the first such reason.
pub(crate) fn write_array<'a, T>(
    buf: &mut BytesMut,
    items: impl ListSource<'a, T>,
    mut write: impl FnMut(&mut BytesMut, T) -> Result<Option<validate::Rejection>, Unusual>,
) -> Result<Option<validate::Rejection>, Unusual> {
    let mut refused = None;
    buf.put_u8(b'[');
    for (i, item) in items.items().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        let verdict = write(buf, item?)?;
        if refused.is_none() {
            refused = verdict;
        }
    }
    buf.put_u8(b']');
    Ok(refused)
}

/// `[{"name", "attributes"?, "time_unix_nano", "dropped_attributes_count"?}]`; members
/// holding their default value are left out. Returns why the first refused event is refused,
/// if one is.
fn write_events<'a, M: MapSource<'a>>(
    buf: &mut BytesMut,
    events: impl ListSource<'a, EventRow<'a, M>>,
    cut: Cut,
) -> Result<Option<validate::Rejection>, Unusual> {
    write_array(buf, events, |buf, event| {
        let mut members = Members::default();
        members.key(buf, "name");
        write_str(buf, event.name);
        let nul = write_attributes_member(buf, &mut members, event.attributes, cut)?;
        members.key(buf, "time_unix_nano");
        write_int(buf, event.time_unix_nano);
        write_dropped_member(buf, &mut members, event.dropped_attributes_count);
        buf.put_u8(b'}');
        Ok(validate::text("event name", event.name)
            .and_then(|()| validate::keys("event attributes", nul))
            .err())
    })
}

/// `[{"flags"?, "span_id", "trace_id", "attributes"?, "trace_state"?,
/// "dropped_attributes_count"?}]`, ids in hex. Returns why the first refused link is refused,
/// if one is.
fn write_links<'a, M: MapSource<'a>>(
    buf: &mut BytesMut,
    links: impl ListSource<'a, LinkRow<'a, M>>,
) -> Result<Option<validate::Rejection>, Unusual> {
    write_array(buf, links, |buf, link| {
        let mut members = Members::default();
        if link.flags != 0 {
            members.key(buf, "flags");
            write_int(buf, link.flags);
        }
        members.key(buf, "span_id");
        write_hex(buf, link.span_id);
        members.key(buf, "trace_id");
        write_hex(buf, link.trace_id);
        let nul = write_attributes_member(buf, &mut members, link.attributes, Cut::Never)?;
        if !link.trace_state.is_empty() {
            members.key(buf, "trace_state");
            write_str(buf, link.trace_state);
        }
        write_dropped_member(buf, &mut members, link.dropped_attributes_count);
        buf.put_u8(b'}');
        Ok(validate::optional_trace_id("link trace_id", link.trace_id)
            .and_then(|()| validate::optional_span_id("link span_id", link.span_id))
            .and_then(|()| validate::text("link trace_state", link.trace_state))
            .and_then(|()| validate::keys("link attributes", nul))
            .err())
    })
}

/// The optional `"attributes"` member of a nested object; returns whether a key holds U+0000.
fn write_attributes_member<'a, M: MapSource<'a>>(
    buf: &mut BytesMut,
    members: &mut Members,
    attributes: Option<M>,
    cut: Cut,
) -> Result<bool, Unusual> {
    let Some(attributes) = attributes else { return Ok(false) };
    members.key(buf, "attributes");
    write_attributes_cut(buf, attributes, cut)
}

/// The optional `"dropped_attributes_count"` member of a nested object.
fn write_dropped_member(buf: &mut BytesMut, members: &mut Members, dropped: u32) {
    if dropped != 0 {
        members.key(buf, "dropped_attributes_count");
        write_int(buf, dropped);
    }
}

/// A map's attributes, or `None` when it has none.
fn nonempty(attributes: &[KeyValue]) -> Option<&[KeyValue]> {
    (!attributes.is_empty()).then_some(attributes)
}

impl<'a> From<&'a Span> for SpanRow<'a, &'a [KeyValue], &'a [span::Event], &'a [span::Link]> {
    fn from(span: &'a Span) -> Self {
        SpanRow {
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            trace_id: &span.trace_id,
            span_id: &span.span_id,
            parent_span_id: &span.parent_span_id,
            trace_state: &span.trace_state,
            flags: span.flags,
            name: &span.name,
            kind: span.kind,
            attributes: &span.attributes,
            dropped_attributes_count: span.dropped_attributes_count,
            events: &span.events,
            dropped_events_count: span.dropped_events_count,
            links: &span.links,
            dropped_links_count: span.dropped_links_count,
            status: span.status.as_ref().map(|status| (status.code, status.message.as_str())),
        }
    }
}

impl<'a> From<&'a span::Event> for EventRow<'a, &'a [KeyValue]> {
    fn from(event: &'a span::Event) -> Self {
        EventRow {
            time_unix_nano: event.time_unix_nano,
            name: &event.name,
            attributes: nonempty(&event.attributes),
            dropped_attributes_count: event.dropped_attributes_count,
        }
    }
}

impl<'a> From<&'a span::Link> for LinkRow<'a, &'a [KeyValue]> {
    fn from(link: &'a span::Link) -> Self {
        LinkRow {
            trace_id: &link.trace_id,
            span_id: &link.span_id,
            trace_state: &link.trace_state,
            attributes: nonempty(&link.attributes),
            dropped_attributes_count: link.dropped_attributes_count,
            flags: link.flags,
        }
    }
}

/// Reads the `events` column back (the inverse of `write_events`).
///
/// # Errors
/// When the JSON does not have the shape `write_events` gives it.
pub fn events_from_json(json: &serde_json::Value) -> Result<Vec<span::Event>, MappingError> {
    array(json)?
        .iter()
        .map(|e| {
            Ok(span::Event {
                time_unix_nano: e.get("time_unix_nano").and_then(|t| t.as_u64()).ok_or_else(|| shape(e))?,
                name: e.get("name").and_then(|n| n.as_str()).ok_or_else(|| shape(e))?.to_owned(),
                attributes: nested_attributes(e)?,
                dropped_attributes_count: nested_u32(e, "dropped_attributes_count")?,
            })
        })
        .collect()
}

/// Reads the `links` column back (the inverse of `write_links`).
///
/// # Errors
/// When the JSON does not have the shape `write_links` gives it.
pub fn links_from_json(json: &serde_json::Value) -> Result<Vec<span::Link>, MappingError> {
    array(json)?
        .iter()
        .map(|l| {
            Ok(span::Link {
                trace_id: hex_member(l, "trace_id")?,
                span_id: hex_member(l, "span_id")?,
                trace_state: l.get("trace_state").and_then(|t| t.as_str()).unwrap_or_default().to_owned(),
                attributes: nested_attributes(l)?,
                dropped_attributes_count: nested_u32(l, "dropped_attributes_count")?,
                flags: nested_u32(l, "flags")?,
            })
        })
        .collect()
}

fn shape(json: &serde_json::Value) -> MappingError {
    MappingError::NotAMap(json.to_string())
}

fn array(json: &serde_json::Value) -> Result<&Vec<serde_json::Value>, MappingError> {
    json.as_array().ok_or_else(|| shape(json))
}

fn nested_attributes(
    json: &serde_json::Value,
) -> Result<Vec<opentelemetry_proto::tonic::common::v1::KeyValue>, MappingError> {
    json.get("attributes").map_or(Ok(Vec::new()), attributes_from_json)
}

fn nested_u32(json: &serde_json::Value, key: &str) -> Result<u32, MappingError> {
    match json.get(key) {
        None => Ok(0),
        Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| shape(json)),
    }
}

/// A hex id member; absent means empty.
pub(crate) fn hex_member(json: &serde_json::Value, key: &str) -> Result<Vec<u8>, MappingError> {
    match json.get(key) {
        None => Ok(Vec::new()),
        Some(v) => v.as_str().and_then(|h| hex::decode(h).ok()).ok_or_else(|| shape(json)),
    }
}

/// [`encode`] straight from the request's protobuf bytes (see [`wire`]): the same rows, without
/// building the request's structs.
///
/// # Errors
/// [`Unusual`] when the bytes are not in the form protobuf encoders write; decode those with
/// prost and use [`encode`].
pub fn encode_wire(message: &[u8], known: &KnownIds) -> Result<Encoded, Unusual> {
    wire::encode_request(message, known, TableId::Spans, |out, message, ids| {
        write_span(out, &wire_span(message)?, ids)
    })
}

type WireSpan<'a> = SpanRow<'a, WireMap<'a>, WireList<'a>, WireList<'a>>;

/// Reads a Span message. Its attributes, events and links are read again as they are written,
/// from the stretch of the message that holds them.
#[inline(always)]
fn wire_span(message: &[u8]) -> Result<WireSpan<'_>, Unusual> {
    let (mut attributes, mut events, mut links) =
        (Stretch::default(), Stretch::default(), Stretch::default());
    let mut span = SpanRow {
        start_time_unix_nano: 0,
        end_time_unix_nano: 0,
        trace_id: &[][..],
        span_id: &[][..],
        parent_span_id: &[][..],
        trace_state: "",
        flags: 0,
        name: "",
        kind: 0,
        attributes: WireMap::new(&[], 9),
        dropped_attributes_count: 0,
        events: WireList { message: &[], number: 11, empty: true },
        dropped_events_count: 0,
        links: WireList { message: &[], number: 13, empty: true },
        dropped_links_count: 0,
        status: None,
    };
    let mut fields = Fields::new(message);
    loop {
        let before = fields.remaining();
        let Some(field) = fields.next() else { break };
        let (number, value) = field?;
        if !matches!(number, 9 | 11 | 13) {
            fields.once(number)?;
        }
        match number {
            1 => span.trace_id = value.bytes()?,
            2 => span.span_id = value.bytes()?,
            3 => span.trace_state = value.str()?,
            4 => span.parent_span_id = value.bytes()?,
            5 => span.name = value.str()?,
            6 => span.kind = value.varint()? as i32,
            7 => span.start_time_unix_nano = value.fixed64()?,
            8 => span.end_time_unix_nano = value.fixed64()?,
            9 => {
                value.bytes()?;
                attributes.cover(message.len(), before, &fields);
            }
            10 => span.dropped_attributes_count = value.varint()? as u32,
            11 => {
                value.bytes()?;
                events.cover(message.len(), before, &fields);
            }
            12 => span.dropped_events_count = value.varint()? as u32,
            13 => {
                value.bytes()?;
                links.cover(message.len(), before, &fields);
            }
            14 => span.dropped_links_count = value.varint()? as u32,
            15 => span.status = Some(wire_status(value.bytes()?)?),
            16 => span.flags = value.fixed32()?,
            _ => {}
        }
    }
    span.attributes.message = attributes.of(message);
    span.events = WireList { message: events.of(message), number: 11, empty: events.is_empty() };
    span.links = WireList { message: links.of(message), number: 13, empty: links.is_empty() };
    Ok(span)
}

/// A Status message's code and message.
#[inline]
fn wire_status(status: &[u8]) -> Result<(i32, &str), Unusual> {
    let (mut code, mut message) = (0, "");
    let mut fields = Fields::new(status);
    while let Some(field) = fields.next() {
        let (number, value) = field?;
        match number {
            2 => {
                fields.once(2)?;
                message = value.str()?;
            }
            3 => {
                fields.once(3)?;
                code = value.varint()? as i32;
            }
            _ => {}
        }
    }
    Ok((code, message))
}

/// The attributes (field `number`) of a message that has `count` of them.
fn wire_attributes(message: &[u8], number: u32, count: usize) -> Option<WireMap<'_>> {
    (count > 0).then_some(WireMap::new(message, number))
}

impl<'a> Item<'a> for EventRow<'a, WireMap<'a>> {
    fn read(message: &'a [u8]) -> Result<Self, Unusual> {
        let (mut time, mut name, mut attributes, mut dropped) = (0, "", 0, 0);
        let mut fields = Fields::new(message);
        while let Some(field) = fields.next() {
            let (number, value) = field?;
            if number != 3 {
                fields.once(number)?;
            }
            match number {
                1 => time = value.fixed64()?,
                2 => name = value.str()?,
                3 => {
                    value.bytes()?;
                    attributes += 1;
                }
                4 => dropped = value.varint()? as u32,
                _ => {}
            }
        }
        Ok(EventRow {
            time_unix_nano: time,
            name,
            attributes: wire_attributes(message, 3, attributes),
            dropped_attributes_count: dropped,
        })
    }
}

impl<'a> Item<'a> for LinkRow<'a, WireMap<'a>> {
    fn read(message: &'a [u8]) -> Result<Self, Unusual> {
        let mut link = LinkRow {
            trace_id: &[][..],
            span_id: &[][..],
            trace_state: "",
            attributes: None,
            dropped_attributes_count: 0,
            flags: 0,
        };
        let mut attributes = 0;
        let mut fields = Fields::new(message);
        while let Some(field) = fields.next() {
            let (number, value) = field?;
            if number != 4 {
                fields.once(number)?;
            }
            match number {
                1 => link.trace_id = value.bytes()?,
                2 => link.span_id = value.bytes()?,
                3 => link.trace_state = value.str()?,
                4 => {
                    value.bytes()?;
                    attributes += 1;
                }
                5 => link.dropped_attributes_count = value.varint()? as u32,
                6 => link.flags = value.fixed32()?,
                _ => {}
            }
        }
        link.attributes = wire_attributes(message, 4, attributes);
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
    use proptest::{collection::vec, prelude::*};
    use prost::Message;

    use super::*;
    use crate::encode::testing::{
        any_value, assert_same, attributes_of, mostly_valid, resource, scope, text,
    };

    fn event() -> impl Strategy<Value = span::Event> {
        (any::<u64>(), text(), attributes_of(any_value()), prop_oneof![Just(0u32), any::<u32>()]).prop_map(
            |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
                time_unix_nano,
                name,
                attributes,
                dropped_attributes_count,
            },
        )
    }

    fn link() -> impl Strategy<Value = span::Link> {
        (
            mostly_valid(16),
            mostly_valid(8),
            text(),
            attributes_of(any_value()),
            prop_oneof![Just(0u32), any::<u32>()],
            any::<u32>(),
        )
            .prop_map(
                |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| span::Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count,
                    flags,
                },
            )
    }

    fn span() -> impl Strategy<Value = Span> {
        (
            (
                mostly_valid(16),
                mostly_valid(8),
                prop_oneof![Just(vec![]), mostly_valid(8)],
                text(),
                any::<u32>(),
                text(),
                any::<i32>(),
                any::<u64>(),
                any::<u64>(),
            ),
            (attributes_of(any_value()), any::<u32>(), vec(event(), 0..3), any::<u32>()),
            (vec(link(), 0..3), any::<u32>(), proptest::option::of((text(), any::<i32>()))),
        )
            .prop_map(|(ids, middle, end)| {
                let (trace_id, span_id, parent_span_id, trace_state, flags, name, kind, start, finish) = ids;
                let (attributes, dropped_attributes_count, events, dropped_events_count) = middle;
                let (links, dropped_links_count, status) = end;
                Span {
                    trace_id,
                    span_id,
                    trace_state,
                    parent_span_id,
                    flags,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: finish,
                    attributes,
                    dropped_attributes_count,
                    events,
                    dropped_events_count,
                    links,
                    dropped_links_count,
                    status: status.map(|(message, code)| Status { message, code }),
                }
            })
    }

    fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
        let scope_spans = (scope(), vec(span(), 0..4), text())
            .prop_map(|(scope, spans, schema_url)| ScopeSpans { scope, spans, schema_url });
        let resource_spans =
            (resource(), vec(scope_spans, 0..3), text()).prop_map(|(resource, scope_spans, schema_url)| {
                ResourceSpans { resource, scope_spans, schema_url }
            });
        vec(resource_spans, 0..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
    }

    #[test]
    fn children_are_candidates_for_pairing_unless_their_parent_is_in_the_request_under_their_resource() {
        use opentelemetry_proto::tonic::{
            common::v1::{any_value::Value, AnyValue},
            resource::v1::Resource,
        };
        use span::SpanKind::{Client, Consumer, Internal, Server};
        let span = |id: u8, parent: Option<u8>, kind: span::SpanKind| Span {
            trace_id: vec![7; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map_or(vec![], |p| vec![p; 8]),
            kind: kind as i32,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Span::default()
        };
        let group = |service: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue(service.into())) }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                // Within web: a server span before its parent, an internal one after it.
                group(
                    "web",
                    vec![span(2, Some(1), Server), span(1, None, Client), span(3, Some(1), Internal)],
                ),
                // api's server span called from web's client span, a consumer span whose parent
                // is not in the request, and a client span (never a candidate).
                group(
                    "api",
                    vec![span(4, Some(1), Server), span(5, Some(9), Consumer), span(6, Some(4), Client)],
                ),
            ],
        };
        let bytes = request.encode_to_vec();
        for encoded in
            [encode(&request, &KnownIds::default()), encode_wire(&bytes, &KnownIds::default()).expect("wire")]
        {
            let candidates = &encoded.rows[TableId::PairingCandidates as usize];
            assert_eq!(candidates.count, 2);
            let parents: Vec<bool> = [[1u8; 8], [9; 8], [4; 8]]
                .iter()
                .map(|id| candidates.buf.windows(8).any(|w| w == id))
                .collect();
            assert_eq!(parents, [true, true, false], "span 4's and span 5's parents");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn wire_encoding_gives_the_rows_of_the_decoded_request(request in request()) {
            let bytes = request.encode_to_vec();
            // What protobuf encoders write (nested less deeply than MAX_DEPTH) is never Unusual.
            let wire = encode_wire(&bytes, &KnownIds::default()).expect("read from the wire");
            assert_same(&wire, &encode(&request, &KnownIds::default()));
        }
    }
}
