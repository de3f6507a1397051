//! Log records -> rows of `logs`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::{collector::logs::v1::ExportLogsServiceRequest, logs::v1::LogRecord};

use super::{
    attributes::{write_any_value, write_attributes, Order},
    copy::{Rows, Table},
    dims::{KnownIds, RequestEncoder},
    validate, Encoded, TableId,
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

/// Encodes every log record of an export request, leaving out (and counting) the ones
/// [`validate`] refuses.
pub fn encode(request: &ExportLogsServiceRequest, known: &KnownIds) -> Encoded {
    let received = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut enc = RequestEncoder::new(known);
    for resource_logs in &request.resource_logs {
        if let Err(reason) = validate::resource(resource_logs.resource.as_ref(), &resource_logs.schema_url) {
            enc.out.reject(resource_logs.scope_logs.iter().map(|s| s.log_records.len()).sum(), reason);
            continue;
        }
        let resource_id = enc.resource(resource_logs.resource.as_ref(), &resource_logs.schema_url);
        for scope_logs in &resource_logs.scope_logs {
            if let Err(reason) = validate::scope(scope_logs.scope.as_ref(), &scope_logs.schema_url) {
                enc.out.reject(scope_logs.log_records.len(), reason);
                continue;
            }
            let scope_id = enc.scope(scope_logs.scope.as_ref(), &scope_logs.schema_url);
            for record in &scope_logs.log_records {
                match validate_record(record) {
                    Ok(()) => encode_record(
                        enc.out.rows_mut(TableId::Logs),
                        record,
                        resource_id,
                        scope_id,
                        received,
                    ),
                    Err(reason) => enc.out.reject(1, reason),
                }
            }
        }
    }
    enc.out
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
