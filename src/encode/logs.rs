//! Log records -> rows of `logs`. One writer ([`write_record`]) fills the row from a
//! [`RecordRow`], which is read either from a decoded record or from a LogRecord message's bytes.

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{AnyValue, KeyValue},
    logs::v1::LogRecord,
};

use super::{
    attributes::{write_any_value, write_attributes_cut, write_content_value, Cut},
    copy::{Signal, Table, TableKind},
    dims::{walk_decoded, KnownIds},
    genai,
    source::ValueSource,
    validate,
    wire::{self, Fields, Stretch, Unusual, WireMap, WireValue},
    Encoded, TableId,
};

pub const LOGS: Table = Table {
    name: "logs",
    columns: &[
        "timestamp_unix_nano",
        "time_unix_nano",
        "observed_time_unix_nano",
        "severity_number",
        "severity_text",
        "body",
        "attributes",
        "dropped_attributes_count",
        "flags",
        "trace_id",
        "span_id",
        "event_name",
        "resource_id",
        "scope_id",
    ],
    kind: TableKind::Records { partition_key: "timestamp_unix_nano", signal: Signal::Logs },
};

/// Encodes every log record of an export request, leaving out (and counting) the ones refused
/// (see [`validate`]).
pub fn encode(request: &ExportLogsServiceRequest, known: &KnownIds) -> Encoded {
    encode_received(request, known, now())
}

fn now() -> u64 {
    crate::time::now_nanos()
}

/// [`encode`], for records that arrived at `received` (ns since the epoch).
pub fn encode_received(request: &ExportLogsServiceRequest, known: &KnownIds, received: u64) -> Encoded {
    walk_decoded(
        known,
        &request.resource_logs,
        |rl| (rl.resource.as_ref(), rl.schema_url.as_str(), &rl.scope_logs[..]),
        |sl| (sl.scope.as_ref(), sl.schema_url.as_str(), &sl.log_records[..]),
        |_| 1,
        |enc, record, resource_id, scope_id| {
            // A decoded record is never Unusual.
            if let Ok(Err(reason)) =
                write_record(&mut enc.out, &RecordRow::from(record), (resource_id, scope_id), received)
            {
                enc.out.reject(1, reason);
            }
        },
    )
}

/// A log record as its row is written.
pub struct RecordRow<'a, V: ValueSource<'a>> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: &'a str,
    pub body: Option<V>,
    pub attributes: V::Map,
    pub dropped_attributes_count: u32,
    pub flags: u32,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub event_name: &'a str,
}

/// The time a record is filed under: its own time, else when it was observed, else when it was
/// received.
fn timestamp(time_unix_nano: u64, observed_time_unix_nano: u64, received: u64) -> u64 {
    [time_unix_nano, observed_time_unix_nano].into_iter().find(|&t| t != 0).unwrap_or(received)
}

/// Writes a log record's row, or, when a rule refuses the record, leaves it out and says why:
/// the ids (see [`validate`]), U+0000 in the severity text, the event name or any key.
///
/// # Errors
/// [`Unusual`] when the record's bytes are left to prost (then what was written is discarded).
pub fn write_record<'a, V: ValueSource<'a>>(
    out: &mut Encoded,
    record: &RecordRow<'a, V>,
    (resource_id, scope_id): (i64, i64),
    received: u64,
) -> Result<Result<(), validate::Rejection>, Unusual> {
    let rows = out.rows_mut(TableId::Logs);
    let mark = rows.mark();
    let (mut body, mut attributes) = (Ok(false), Ok(false));
    let partition_time = timestamp(record.time_unix_nano, record.observed_time_unix_nano, received);
    {
        let mut row = rows.row(&LOGS);
        row.uint64(partition_time);
        row.uint64(record.time_unix_nano);
        row.uint64(record.observed_time_unix_nano);
        row.int4(record.severity_number);
        row.text(record.severity_text);
        let cut = Cut::content();
        match record.body {
            Some(value) => match cut {
                Cut::ContentKeys(limit) if genai::content::is_event(record.event_name.as_bytes()) => {
                    row.jsonb(|buf| body = write_content_value(buf, value, limit));
                }
                _ => row.jsonb(|buf| body = write_any_value(buf, value)),
            },
            None => row.null(),
        }
        row.jsonb(|buf| attributes = write_attributes_cut(buf, record.attributes, cut));
        row.int8(i64::from(record.dropped_attributes_count));
        row.int8(i64::from(record.flags));
        row.bytea_or_null(record.trace_id);
        row.bytea_or_null(record.span_id);
        row.text(record.event_name);
        row.int8(resource_id);
        row.int8(scope_id);
    }
    let (body, attributes) = (body?, attributes?);
    let verdict = validate::optional_trace_id("trace_id", record.trace_id)
        .and_then(|()| validate::optional_span_id("span_id", record.span_id))
        .and_then(|()| validate::text("severity_text", record.severity_text))
        .and_then(|()| validate::text("event_name", record.event_name))
        .and_then(|()| validate::keys("body", body))
        .and_then(|()| validate::keys("attributes", attributes));
    match verdict {
        Ok(()) => out.logs.add(partition_time, resource_id, record.severity_number),
        Err(_) => rows.undo(mark),
    }
    Ok(verdict)
}

impl<'a> From<&'a LogRecord> for RecordRow<'a, &'a AnyValue> {
    fn from(record: &'a LogRecord) -> Self {
        RecordRow {
            time_unix_nano: record.time_unix_nano,
            observed_time_unix_nano: record.observed_time_unix_nano,
            severity_number: record.severity_number,
            severity_text: &record.severity_text,
            body: record.body.as_ref(),
            attributes: &record.attributes[..] as &[KeyValue],
            dropped_attributes_count: record.dropped_attributes_count,
            flags: record.flags,
            trace_id: &record.trace_id,
            span_id: &record.span_id,
            event_name: &record.event_name,
        }
    }
}

/// [`encode`] straight from the request's protobuf bytes (see [`wire`]): the same rows, without
/// building the request's structs.
///
/// # Errors
/// [`Unusual`] when the bytes are not in the form protobuf encoders write; decode those with
/// prost and use [`encode`].
pub fn encode_wire(message: &[u8], known: &KnownIds) -> Result<Encoded, Unusual> {
    encode_wire_received(message, known, now())
}

/// [`encode_wire`], for records that arrived at `received`.
pub fn encode_wire_received(message: &[u8], known: &KnownIds, received: u64) -> Result<Encoded, Unusual> {
    wire::encode_request(message, known, TableId::Logs, |out, message, ids| {
        write_record(out, &wire_record(message)?, ids, received)
    })
}

/// Reads a LogRecord message. Its attributes are read again as they are written, from the
/// stretch of the message that holds them.
#[inline(always)]
fn wire_record(message: &[u8]) -> Result<RecordRow<'_, WireValue<'_>>, Unusual> {
    let mut record = RecordRow {
        time_unix_nano: 0,
        observed_time_unix_nano: 0,
        severity_number: 0,
        severity_text: "",
        body: None,
        attributes: WireMap::new(&[], 6),
        dropped_attributes_count: 0,
        flags: 0,
        trace_id: &[][..],
        span_id: &[][..],
        event_name: "",
    };
    let mut attributes = Stretch::default();
    let mut fields = Fields::new(message);
    loop {
        let before = fields.remaining();
        let Some(field) = fields.next() else { break };
        let (number, value) = field?;
        if number != 6 && number < 64 {
            fields.once(number)?;
        }
        match number {
            1 => record.time_unix_nano = value.fixed64()?,
            2 => record.severity_number = value.varint()? as i32,
            3 => record.severity_text = value.str()?,
            5 => record.body = Some(WireValue(value.bytes()?)),
            6 => {
                value.bytes()?;
                attributes.cover(message.len(), before, &fields);
            }
            7 => record.dropped_attributes_count = value.varint()? as u32,
            8 => record.flags = value.fixed32()?,
            9 => record.trace_id = value.bytes()?,
            10 => record.span_id = value.bytes()?,
            11 => record.observed_time_unix_nano = value.fixed64()?,
            12 => record.event_name = value.str()?,
            _ => {}
        }
    }
    record.attributes.message = attributes.of(message);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use proptest::{collection::vec, prelude::*};
    use prost::Message;

    use super::*;
    use crate::encode::testing::{
        any_value, assert_same, attributes_of, mostly_valid, resource, scope, text,
    };

    fn optional_id(len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![Just(vec![]), mostly_valid(len)]
    }

    fn record() -> impl Strategy<Value = LogRecord> {
        (
            (any::<u64>(), any::<u64>(), any::<i32>(), text(), proptest::option::of(any_value())),
            (attributes_of(any_value()), any::<u32>(), any::<u32>(), optional_id(16), optional_id(8), text()),
        )
            .prop_map(|((time, observed, severity, severity_text, body), rest)| {
                let (attributes, dropped_attributes_count, flags, trace_id, span_id, event_name) = rest;
                LogRecord {
                    // Often absent, to exercise the fallbacks of the filing time.
                    time_unix_nano: if time % 3 == 0 { 0 } else { time },
                    observed_time_unix_nano: if observed % 2 == 0 { 0 } else { observed },
                    severity_number: severity,
                    severity_text,
                    body,
                    attributes,
                    dropped_attributes_count,
                    flags,
                    trace_id,
                    span_id,
                    event_name,
                }
            })
    }

    fn request() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let scope_logs = (scope(), vec(record(), 0..4), text())
            .prop_map(|(scope, log_records, schema_url)| ScopeLogs { scope, log_records, schema_url });
        let resource_logs = (resource(), vec(scope_logs, 0..3), text())
            .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs { resource, scope_logs, schema_url });
        vec(resource_logs, 0..3).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn wire_encoding_gives_the_rows_of_the_decoded_request(request in request(), received in any::<u64>()) {
            let bytes = request.encode_to_vec();
            // What protobuf encoders write (nested less deeply than MAX_DEPTH) is never Unusual.
            let wire = encode_wire_received(&bytes, &KnownIds::default(), received).expect("read from the wire");
            assert_same(&wire, &encode_received(&request, &KnownIds::default(), received));
        }
    }

    #[test]
    fn unusual_encodings_are_left_to_prost() {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord { severity_text: "INFO".into(), ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut bytes = request.encode_to_vec();
        assert!(encode_wire(&bytes, &KnownIds::default()).is_ok());
        // Text that is not UTF-8: prost refuses the request.
        let at = bytes.windows(4).position(|w| w == b"INFO").expect("the text is there");
        bytes[at] = 0xff;
        assert_eq!(encode_wire(&bytes, &KnownIds::default()).err(), Some(Unusual));
        assert!(ExportLogsServiceRequest::decode(&bytes[..]).is_err());
        // A singular field given twice: prost keeps the last; the wire reader leaves it to prost.
        let twice = [&request.encode_to_vec()[..], &request.encode_to_vec()[..]].concat();
        assert!(encode_wire(&twice, &KnownIds::default()).is_ok(), "repeated fields concatenate");
        let record = LogRecord { severity_number: 9, ..Default::default() }.encode_to_vec();
        let doubled = [&record[..], &record[..]].concat();
        assert_eq!(wire_record(&doubled).err(), Some(Unusual));
    }
}
