//! Spans -> rows of `spans`. Events and links go into jsonb arrays on the span's row: they are
//! read with their span, never on their own.

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{span, Span},
};

use super::{
    attributes::{write_attributes, write_hex, write_int, write_str, Order},
    copy::Table,
    dims::{KnownIds, RequestEncoder},
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
};

/// Encodes every span of an export request.
pub fn encode(request: &ExportTraceServiceRequest, known: &KnownIds) -> Encoded {
    let mut enc = RequestEncoder::new(known);
    for resource_spans in &request.resource_spans {
        let resource_id =
            enc.resource(resource_spans.resource.as_ref(), &resource_spans.schema_url);
        for scope_spans in &resource_spans.scope_spans {
            let scope_id = enc.scope(scope_spans.scope.as_ref(), &scope_spans.schema_url);
            let rows = enc.out.rows_mut(TableId::Spans);
            for span in &scope_spans.spans {
                encode_span(rows, span, resource_id, scope_id);
            }
        }
    }
    enc.out
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
