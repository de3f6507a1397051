//! Log records -> rows of `logs`.

use opentelemetry_proto::tonic::{collector::logs::v1::ExportLogsServiceRequest, logs::v1::LogRecord};

use super::{
    attributes::{write_any_value, write_attributes, Order},
    copy::{Rows, Signal, Table, TableKind},
    dims::{walk_decoded, KnownIds},
    validate,
    wire::{self, Fields, Stretch, Unusual},
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

/// Encodes every log record of an export request, leaving out (and counting) the ones
/// [`validate`] refuses.
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
        |enc, record, resource_id, scope_id| match validate_record(record) {
            Ok(()) => encode_record(enc.out.rows_mut(TableId::Logs), record, resource_id, scope_id, received),
            Err(reason) => enc.out.reject(1, reason),
        },
    )
}

fn validate_record(record: &LogRecord) -> Result<(), validate::Rejection> {
    validate::optional_trace_id("trace_id", &record.trace_id)?;
    validate::optional_span_id("span_id", &record.span_id)?;
    validate::text("severity_text", &record.severity_text)?;
    validate::text("event_name", &record.event_name)?;
    if let Some(body) = &record.body {
        validate::any_value("body", body)?;
    }
    validate::attributes("attributes", &record.attributes)
}

/// The time a record is filed under: its own time, else when it was observed, else when it was
/// received.
pub fn timestamp(record: &LogRecord, received: u64) -> u64 {
    [record.time_unix_nano, record.observed_time_unix_nano].into_iter().find(|&t| t != 0).unwrap_or(received)
}

fn encode_record(rows: &mut Rows, record: &LogRecord, resource_id: i64, scope_id: i64, received: u64) {
    let mut row = rows.row(&LOGS);
    row.uint64(timestamp(record, received));
    row.uint64(record.time_unix_nano);
    row.uint64(record.observed_time_unix_nano);
    row.int4(record.severity_number);
    row.text(&record.severity_text);
    match &record.body {
        Some(body) => row.jsonb(|buf| write_any_value(buf, body, Order::AsSent)),
        None => row.null(),
    }
    row.jsonb(|buf| write_attributes(buf, &record.attributes, Order::AsSent));
    row.int8(i64::from(record.dropped_attributes_count));
    row.int8(i64::from(record.flags));
    row.bytea_or_null(&record.trace_id);
    row.bytea_or_null(&record.span_id);
    row.text(&record.event_name);
    row.int8(resource_id);
    row.int8(scope_id);
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
    wire::encode_request(message, known, TableId::Logs, |rows, record, ids| {
        wire_record(rows, record, ids, received)
    })
}

/// Encodes one LogRecord message as [`encode_record`] does the decoded record, or leaves it out
/// for the reason [`validate_record`] would give.
fn wire_record(
    rows: &mut Rows,
    message: &[u8],
    (resource_id, scope_id): (i64, i64),
    received: u64,
) -> Result<Result<(), validate::Rejection>, Unusual> {
    let mut record = LogRecord::default();
    let mut body = None;
    let (mut severity_text, mut event_name, mut trace_id, mut span_id) = ("", "", &[][..], &[][..]);
    let mut attributes_at = Stretch::default();
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
            3 => severity_text = value.str()?,
            5 => body = Some(value.bytes()?),
            6 => {
                value.bytes()?;
                attributes_at.cover(message.len(), before, &fields);
            }
            7 => record.dropped_attributes_count = value.varint()? as u32,
            8 => record.flags = value.fixed32()?,
            9 => trace_id = value.bytes()?,
            10 => span_id = value.bytes()?,
            11 => record.observed_time_unix_nano = value.fixed64()?,
            12 => event_name = value.str()?,
            _ => {}
        }
    }
    let valid = validate::optional_trace_id("trace_id", trace_id)
        .and_then(|()| validate::optional_span_id("span_id", span_id))
        .and_then(|()| validate::text("severity_text", severity_text))
        .and_then(|()| validate::text("event_name", event_name));
    let start = (rows.buf.len(), rows.count);
    let (mut body_nul, mut attributes_nul) = (Ok(false), Ok(false));
    {
        let mut row = rows.row(&LOGS);
        row.uint64(timestamp(&record, received));
        row.uint64(record.time_unix_nano);
        row.uint64(record.observed_time_unix_nano);
        row.int4(record.severity_number);
        row.text(severity_text);
        match body {
            Some(body) => row.jsonb(|buf| body_nul = wire::write_any_value(buf, body, 0)),
            None => row.null(),
        }
        row.jsonb(|buf| attributes_nul = wire::write_attributes(buf, attributes_at.of(message), 6, 0));
        row.int8(i64::from(record.dropped_attributes_count));
        row.int8(i64::from(record.flags));
        row.bytea_or_null(trace_id);
        row.bytea_or_null(span_id);
        row.text(event_name);
        row.int8(resource_id);
        row.int8(scope_id);
    }
    let (body_nul, attributes_nul) = (body_nul?, attributes_nul?);
    let verdict = valid
        .and_then(|()| if body_nul { Err(validate::nul_in_keys("body")) } else { Ok(()) })
        .and_then(|()| if attributes_nul { Err(validate::nul_in_keys("attributes")) } else { Ok(()) });
    if verdict.is_err() {
        rows.buf.truncate(start.0);
        rows.count = start.1;
    }
    Ok(verdict)
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
        assert_eq!(wire_record(&mut Rows::default(), &doubled, (0, 0), 0), Err(Unusual));
    }
}
