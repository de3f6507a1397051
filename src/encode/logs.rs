//! Log records -> rows of `logs`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::{collector::logs::v1::ExportLogsServiceRequest, logs::v1::LogRecord};

use super::{
    attributes::{write_any_value, write_attributes, Order},
    copy::{Rows, Table},
    dims::{KnownIds, RequestEncoder},
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
};

/// Encodes every log record of an export request.
pub fn encode(request: &ExportLogsServiceRequest, known: &KnownIds) -> Encoded {
    let received = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut enc = RequestEncoder::new(known);
    for resource_logs in &request.resource_logs {
        let resource_id = enc.resource(resource_logs.resource.as_ref(), &resource_logs.schema_url);
        for scope_logs in &resource_logs.scope_logs {
            let scope_id = enc.scope(scope_logs.scope.as_ref(), &scope_logs.schema_url);
            let rows = enc.out.rows_mut(TableId::Logs);
            for record in &scope_logs.log_records {
                encode_record(rows, record, resource_id, scope_id, received);
            }
        }
    }
    enc.out
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
