//! Log records, sent by a real OTLP/gRPC client, come back from SQL with every field.

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};

use crate::common::*;

fn record(i: usize, now: u64, body: Option<AnyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: if i == 1 { 0 } else { now + i as u64 },
        observed_time_unix_nano: now + 1_000 + i as u64,
        severity_number: 17,
        severity_text: "ERROR ✗".into(),
        body,
        attributes: every_value_attributes(),
        dropped_attributes_count: 7,
        flags: u32::MAX,
        trace_id: if i == 0 { vec![] } else { vec![7; 16] },
        span_id: if i == 0 { vec![] } else { vec![6; 8] },
        event_name: if i == 2 { "browser.click".into() } else { String::new() },
    }
}

fn bodies() -> Vec<Option<AnyValue>> {
    let any = |v| Some(AnyValue { value: Some(v) });
    vec![
        any(s("plain text body ✓\nsecond line")),
        any(Value::KvlistValue(KeyValueList { values: every_value_attributes() })),
        any(Value::IntValue(5)),
        any(Value::DoubleValue(5.0)),
        any(Value::BytesValue(vec![0xde, 0xad])),
        Some(AnyValue { value: None }),
        None,
    ]
}

#[tokio::test]
async fn every_log_field_round_trips() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let records: Vec<LogRecord> = bodies().into_iter().enumerate().map(|(i, b)| record(i, now, b)).collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("frontend"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "logger".into(),
                    version: "9".into(),
                    ..Default::default()
                }),
                log_records: records.clone(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    t.logs().await.export(request).await.expect("export succeeds");

    let rows = t.sql.query("SELECT * FROM logs ORDER BY observed_time_unix_nano", &[]).await.expect("logs");
    assert_eq!(rows.len(), records.len());
    for (row, sent) in rows.iter().zip(&records) {
        let body: Option<serde_json::Value> = row.get("body");
        let stored = LogRecord {
            time_unix_nano: row.get::<_, i64>("time_unix_nano") as u64,
            observed_time_unix_nano: row.get::<_, i64>("observed_time_unix_nano") as u64,
            severity_number: row.get("severity_number"),
            severity_text: row.get("severity_text"),
            body: body.map(|b| {
                otelephant::encode::attributes::any_value_from_json(&b).expect("body follows the mapping")
            }),
            attributes: sent.attributes.clone(),
            dropped_attributes_count: row.get::<_, i64>("dropped_attributes_count") as u32,
            flags: u32::try_from(row.get::<_, i64>("flags")).expect("u32"),
            trace_id: row.get::<_, Option<Vec<u8>>>("trace_id").unwrap_or_default(),
            span_id: row.get::<_, Option<Vec<u8>>>("span_id").unwrap_or_default(),
            event_name: row.get("event_name"),
        };
        let without_values = |r: &LogRecord| LogRecord { body: None, attributes: vec![], ..r.clone() };
        assert_eq!(without_values(&stored), without_values(sent));
        assert_eq!(stored.body.as_ref().map(normalize_any), sent.body.as_ref().map(normalize_any));
        assert_eq!(normalize(&attributes(&row.get("attributes"))), normalize(&sent.attributes));
        // Filed under its own time, or its observed time when that is unset.
        let expected =
            if sent.time_unix_nano == 0 { sent.observed_time_unix_nano } else { sent.time_unix_nano };
        assert_eq!(row.get::<_, i64>("timestamp_unix_nano") as u64, expected);
    }

    // Absent body is SQL NULL; an empty AnyValue is JSON null.
    let nulls = t
        .sql
        .query_one(
            "SELECT count(*) FILTER (WHERE body IS NULL), count(*) FILTER (WHERE body = 'null'::jsonb) FROM logs",
            &[],
        )
        .await
        .expect("nulls");
    assert_eq!((nulls.get::<_, i64>(0), nulls.get::<_, i64>(1)), (1, 1));

    let view = t
        .sql
        .query_one("SELECT service_name, body, scope_name FROM logs_view ORDER BY time LIMIT 1", &[])
        .await
        .expect("view");
    assert_eq!(view.get::<_, String>(0), "frontend");
    assert_eq!(view.get::<_, String>(1), "plain text body ✓\nsecond line");
    assert_eq!(view.get::<_, String>(2), "logger");
    t.stop().await;
}
