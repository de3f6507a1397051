//! Spans -> rows of `spans`. Events and links go into jsonb arrays on the span's row: they are
//! read with their span, never on their own.

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{span, Span},
};

use super::{
    attributes::{
        attributes_from_json, write_attributes, write_hex, write_int, write_str, MappingError, Order,
    },
    copy::{Rows, Signal, Table, TableKind},
    dims::{walk_decoded, KnownIds},
    validate,
    wire::{self, Fields, Stretch, Unusual},
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

/// Encodes every span of an export request, leaving out (and counting) the ones [`validate`]
/// refuses.
pub fn encode(request: &ExportTraceServiceRequest, known: &KnownIds) -> Encoded {
    walk_decoded(
        known,
        &request.resource_spans,
        |rs| (rs.resource.as_ref(), rs.schema_url.as_str(), &rs.scope_spans[..]),
        |ss| (ss.scope.as_ref(), ss.schema_url.as_str(), &ss.spans[..]),
        |_| 1,
        |enc, span, resource_id, scope_id| match validate_span(span) {
            Ok(()) => encode_span(enc.out.rows_mut(TableId::Spans), span, resource_id, scope_id),
            Err(reason) => enc.out.reject(1, reason),
        },
    )
}

fn validate_span(span: &Span) -> Result<(), validate::Rejection> {
    validate::trace_id("trace_id", &span.trace_id)?;
    validate::span_id("span_id", &span.span_id)?;
    validate::optional_span_id("parent_span_id", &span.parent_span_id)?;
    validate::text("name", &span.name)?;
    validate::text("trace_state", &span.trace_state)?;
    validate::attributes("attributes", &span.attributes)?;
    for event in &span.events {
        validate::text("event name", &event.name)?;
        validate::attributes("event attributes", &event.attributes)?;
    }
    for link in &span.links {
        validate::optional_trace_id("link trace_id", &link.trace_id)?;
        validate::optional_span_id("link span_id", &link.span_id)?;
        validate::text("link trace_state", &link.trace_state)?;
        validate::attributes("link attributes", &link.attributes)?;
    }
    if let Some(status) = &span.status {
        validate::text("status message", &status.message)?;
    }
    Ok(())
}

fn encode_span(rows: &mut super::copy::Rows, span: &Span, resource_id: i64, scope_id: i64) {
    let mut row = rows.row(&SPANS);
    row.uint64(span.start_time_unix_nano);
    row.uint64(span.end_time_unix_nano);
    row.bytea(&span.trace_id);
    row.bytea(&span.span_id);
    row.bytea_or_null(&span.parent_span_id);
    row.text(&span.trace_state);
    row.int8(i64::from(span.flags));
    row.text(&span.name);
    row.int4(span.kind);
    row.int8(resource_id);
    row.int8(scope_id);
    row.jsonb(|buf| write_attributes(buf, &span.attributes, Order::AsSent));
    row.int8(i64::from(span.dropped_attributes_count));
    if span.events.is_empty() {
        row.null();
    } else {
        row.jsonb(|buf| write_events(buf, &span.events));
    }
    row.int8(i64::from(span.dropped_events_count));
    if span.links.is_empty() {
        row.null();
    } else {
        row.jsonb(|buf| write_links(buf, &span.links));
    }
    row.int8(i64::from(span.dropped_links_count));
    match &span.status {
        Some(status) => {
            row.int4(status.code);
            row.text(&status.message);
        }
        None => {
            row.null();
            row.text("");
        }
    }
}

/// Writes `,"key":` (or `{"key":` for the first member).
pub(crate) fn member(buf: &mut BytesMut, first: bool, key: &str) {
    buf.put_u8(if first { b'{' } else { b',' });
    write_str(buf, key);
    buf.put_u8(b':');
}

/// `[{"time_unix_nano", "name", "attributes"?, "dropped_attributes_count"?}]`; members
/// holding their default value are left out.
fn write_events(buf: &mut BytesMut, events: &[span::Event]) {
    buf.put_u8(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        member(buf, true, "time_unix_nano");
        write_int(buf, event.time_unix_nano);
        member(buf, false, "name");
        write_str(buf, &event.name);
        write_attributes_member(buf, &event.attributes, event.dropped_attributes_count);
        buf.put_u8(b'}');
    }
    buf.put_u8(b']');
}

/// `[{"trace_id", "span_id", "trace_state"?, "flags"?, "attributes"?,
/// "dropped_attributes_count"?}]`, ids in hex.
fn write_links(buf: &mut BytesMut, links: &[span::Link]) {
    buf.put_u8(b'[');
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        member(buf, true, "trace_id");
        write_hex(buf, &link.trace_id);
        member(buf, false, "span_id");
        write_hex(buf, &link.span_id);
        if !link.trace_state.is_empty() {
            member(buf, false, "trace_state");
            write_str(buf, &link.trace_state);
        }
        if link.flags != 0 {
            member(buf, false, "flags");
            write_int(buf, link.flags);
        }
        write_attributes_member(buf, &link.attributes, link.dropped_attributes_count);
        buf.put_u8(b'}');
    }
    buf.put_u8(b']');
}

/// The optional `"attributes"` and `"dropped_attributes_count"` members of a nested object.
pub(crate) fn write_attributes_member(
    buf: &mut BytesMut,
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    dropped: u32,
) {
    if !attributes.is_empty() {
        member(buf, false, "attributes");
        write_attributes(buf, attributes, Order::AsSent);
    }
    if dropped != 0 {
        member(buf, false, "dropped_attributes_count");
        write_int(buf, dropped);
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
    wire::encode_request(message, known, TableId::Spans, wire_span)
}

/// A span's fields as read from its message; attributes, events and links are read again from
/// the message as they are written.
#[derive(Default)]
struct WireSpan<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent_span_id: &'a [u8],
    trace_state: &'a str,
    name: &'a str,
    /// Where the attributes, events and links lie in the message.
    attributes_at: Stretch,
    events_at: Stretch,
    links_at: Stretch,
    status: Option<&'a [u8]>,
}

/// Encodes one Span message as [`encode_span`] does the decoded span, or leaves it out for the
/// reason [`validate_span`] would give.
fn wire_span(
    rows: &mut Rows,
    message: &[u8],
    (resource_id, scope_id): (i64, i64),
) -> Result<Result<(), validate::Rejection>, Unusual> {
    let mut scalars = Span::default();
    let mut span = WireSpan::default();
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
            6 => scalars.kind = value.varint()? as i32,
            7 => scalars.start_time_unix_nano = value.fixed64()?,
            8 => scalars.end_time_unix_nano = value.fixed64()?,
            9 => {
                value.bytes()?;
                span.attributes_at.cover(message.len(), before, &fields);
            }
            10 => scalars.dropped_attributes_count = value.varint()? as u32,
            11 => {
                value.bytes()?;
                span.events_at.cover(message.len(), before, &fields);
            }
            12 => scalars.dropped_events_count = value.varint()? as u32,
            13 => {
                value.bytes()?;
                span.links_at.cover(message.len(), before, &fields);
            }
            14 => scalars.dropped_links_count = value.varint()? as u32,
            15 => span.status = Some(value.bytes()?),
            16 => scalars.flags = value.fixed32()?,
            _ => {}
        }
    }
    let (status_code, status_message) = match span.status {
        Some(status) => {
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
            (Some(code), message)
        }
        None => (None, ""),
    };
    let before = validate::trace_id("trace_id", span.trace_id)
        .and_then(|()| validate::span_id("span_id", span.span_id))
        .and_then(|()| validate::optional_span_id("parent_span_id", span.parent_span_id))
        .and_then(|()| validate::text("name", span.name))
        .and_then(|()| validate::text("trace_state", span.trace_state));

    let start = (rows.buf.len(), rows.count);
    let mut attributes = Ok(false);
    let mut events = Ok(None);
    let mut links = Ok(None);
    {
        let mut row = rows.row(&SPANS);
        row.uint64(scalars.start_time_unix_nano);
        row.uint64(scalars.end_time_unix_nano);
        row.bytea(span.trace_id);
        row.bytea(span.span_id);
        row.bytea_or_null(span.parent_span_id);
        row.text(span.trace_state);
        row.int8(i64::from(scalars.flags));
        row.text(span.name);
        row.int4(scalars.kind);
        row.int8(resource_id);
        row.int8(scope_id);
        row.jsonb(|buf| attributes = wire::write_attributes(buf, span.attributes_at.of(message), 9, 0));
        row.int8(i64::from(scalars.dropped_attributes_count));
        if span.events_at.is_empty() {
            row.null();
        } else {
            row.jsonb(|buf| events = wire_events(buf, span.events_at.of(message)));
        }
        row.int8(i64::from(scalars.dropped_events_count));
        if span.links_at.is_empty() {
            row.null();
        } else {
            row.jsonb(|buf| links = wire_links(buf, span.links_at.of(message)));
        }
        row.int8(i64::from(scalars.dropped_links_count));
        match status_code {
            Some(code) => {
                row.int4(code);
                row.text(status_message);
            }
            None => {
                row.null();
                row.text("");
            }
        }
    }
    let (attributes, events, links) = (attributes?, events?, links?);
    let verdict = before
        .and_then(|()| if attributes { Err(validate::nul_in_keys("attributes")) } else { Ok(()) })
        .and_then(|()| events.map_or(Ok(()), Err))
        .and_then(|()| links.map_or(Ok(()), Err))
        .and_then(|()| validate::text("status message", status_message));
    if verdict.is_err() {
        rows.buf.truncate(start.0);
        rows.count = start.1;
    }
    Ok(verdict)
}

/// Writes a span message's events (field 11) as [`write_events`] does; returns why the first
/// refused one is refused, if one is.
fn wire_events(buf: &mut BytesMut, span: &[u8]) -> Result<Option<validate::Rejection>, Unusual> {
    let mut refused = None;
    buf.put_u8(b'[');
    let mut first = true;
    for field in Fields::new(span) {
        let (number, value) = field?;
        if number != 11 {
            continue;
        }
        let event = value.bytes()?;
        let (mut time, mut name, mut attributes, mut dropped) = (0, "", 0, 0);
        let mut fields = Fields::new(event);
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
        if !first {
            buf.put_u8(b',');
        }
        first = false;
        member(buf, true, "time_unix_nano");
        write_int(buf, time);
        member(buf, false, "name");
        write_str(buf, name);
        let mut nul = false;
        if attributes > 0 {
            member(buf, false, "attributes");
            nul = wire::write_attributes(buf, event, 3, 0)?;
        }
        if dropped != 0 {
            member(buf, false, "dropped_attributes_count");
            write_int(buf, dropped);
        }
        buf.put_u8(b'}');
        if refused.is_none() {
            refused = validate::text("event name", name)
                .and_then(|()| if nul { Err(validate::nul_in_keys("event attributes")) } else { Ok(()) })
                .err();
        }
    }
    buf.put_u8(b']');
    Ok(refused)
}

/// Writes a span message's links (field 13) as [`write_links`] does; returns why the first
/// refused one is refused, if one is.
fn wire_links(buf: &mut BytesMut, span: &[u8]) -> Result<Option<validate::Rejection>, Unusual> {
    let mut refused = None;
    buf.put_u8(b'[');
    let mut first = true;
    for field in Fields::new(span) {
        let (number, value) = field?;
        if number != 13 {
            continue;
        }
        let link = value.bytes()?;
        let (mut trace_id, mut span_id, mut trace_state) = (&[][..], &[][..], "");
        let (mut attributes, mut dropped, mut flags) = (0, 0, 0);
        let mut fields = Fields::new(link);
        while let Some(field) = fields.next() {
            let (number, value) = field?;
            if number != 4 {
                fields.once(number)?;
            }
            match number {
                1 => trace_id = value.bytes()?,
                2 => span_id = value.bytes()?,
                3 => trace_state = value.str()?,
                4 => {
                    value.bytes()?;
                    attributes += 1;
                }
                5 => dropped = value.varint()? as u32,
                6 => flags = value.fixed32()?,
                _ => {}
            }
        }
        if !first {
            buf.put_u8(b',');
        }
        first = false;
        member(buf, true, "trace_id");
        write_hex(buf, trace_id);
        member(buf, false, "span_id");
        write_hex(buf, span_id);
        if !trace_state.is_empty() {
            member(buf, false, "trace_state");
            write_str(buf, trace_state);
        }
        if flags != 0 {
            member(buf, false, "flags");
            write_int(buf, flags);
        }
        let mut nul = false;
        if attributes > 0 {
            member(buf, false, "attributes");
            nul = wire::write_attributes(buf, link, 4, 0)?;
        }
        if dropped != 0 {
            member(buf, false, "dropped_attributes_count");
            write_int(buf, dropped);
        }
        buf.put_u8(b'}');
        if refused.is_none() {
            refused = validate::optional_trace_id("link trace_id", trace_id)
                .and_then(|()| validate::optional_span_id("link span_id", span_id))
                .and_then(|()| validate::text("link trace_state", trace_state))
                .and_then(|()| if nul { Err(validate::nul_in_keys("link attributes")) } else { Ok(()) })
                .err();
        }
    }
    buf.put_u8(b']');
    Ok(refused)
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
