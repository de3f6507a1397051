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
    copy::Table,
    dims::{KnownIds, RequestEncoder},
    validate, Encoded, TableId,
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
};

/// Encodes every span of an export request.
/// Encodes every span of an export request, leaving out (and counting) the ones [`validate`]
/// refuses.
pub fn encode(request: &ExportTraceServiceRequest, known: &KnownIds) -> Encoded {
    let mut enc = RequestEncoder::new(known);
    for resource_spans in &request.resource_spans {
        if let Err(reason) = validate::resource(resource_spans.resource.as_ref(), &resource_spans.schema_url)
        {
            enc.out.reject(resource_spans.scope_spans.iter().map(|s| s.spans.len()).sum(), reason);
            continue;
        }
        let resource_id = enc.resource(resource_spans.resource.as_ref(), &resource_spans.schema_url);
        for scope_spans in &resource_spans.scope_spans {
            if let Err(reason) = validate::scope(scope_spans.scope.as_ref(), &scope_spans.schema_url) {
                enc.out.reject(scope_spans.spans.len(), reason);
                continue;
            }
            let scope_id = enc.scope(scope_spans.scope.as_ref(), &scope_spans.schema_url);
            for span in &scope_spans.spans {
                match validate_span(span) {
                    Ok(()) => encode_span(enc.out.rows_mut(TableId::Spans), span, resource_id, scope_id),
                    Err(reason) => enc.out.reject(1, reason),
                }
            }
        }
    }
    enc.out
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
