//! LLM message content limits against a real database: `llm.max_content_bytes` cuts the long
//! strings of content (and only of content) at ingest, marked, over OTLP/gRPC and OTLP/HTTP JSON
//! alike; `retention.llm_content` replaces a day's content with a mark once, keeping the rest
//! of every span and log record, and a columnar day waits for it.

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span},
};
use otelephant::{
    config::Retention,
    encode::genai::content::{cut, removed_mark},
    store::maintenance,
};
use serde_json::{json, Value as Json};

use crate::{
    common::{binary, fixtures::query::resource, otlp::kv, *},
    retention::{at, clock, pass_at, today},
};

const LIMIT: usize = 100;

fn text(v: &str) -> Value {
    Value::StringValue(v.to_owned())
}

fn map(entries: Vec<KeyValue>) -> Value {
    Value::KvlistValue(KeyValueList { values: entries })
}

fn any(value: Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

/// 300 bytes of `c`.
fn long(c: char) -> String {
    c.to_string().repeat(300 / c.len_utf8())
}

/// A model call carrying its messages in every form: a JSON text, a structured value, flattened
/// attributes and a span event, beside attributes that are not content.
pub(crate) fn call_with_content(span_id: u8, time: u64) -> ExportTraceServiceRequest {
    let messages = json!([{"role": "user", "parts": [{"type": "text", "content": long('a')}]}]).to_string();
    let output = Value::ArrayValue(ArrayValue {
        values: vec![any(map(vec![
            kv("role", text("assistant")),
            kv(
                "parts",
                Value::ArrayValue(ArrayValue {
                    values: vec![any(map(vec![kv("type", text("text")), kv("content", text(&long('b')))]))],
                }),
            ),
        ]))],
    });
    let span = Span {
        trace_id: vec![3; 16],
        span_id: vec![span_id; 8],
        name: "chat gpt-4o-mini".into(),
        kind: 3,
        start_time_unix_nano: time,
        end_time_unix_nano: time + 1_000_000_000,
        attributes: vec![
            kv("gen_ai.operation.name", text("chat")),
            kv("gen_ai.request.model", text("gpt-4o-mini")),
            kv("gen_ai.usage.input_tokens", Value::IntValue(10)),
            kv("gen_ai.input.messages", text(&messages)),
            kv("gen_ai.output.messages", output),
            kv("llm.input_messages.0.message.role", text("user")),
            kv("llm.input_messages.0.message.content", text(&long('é'))),
            kv("db.statement", text(&long('q'))),
        ],
        events: vec![
            Event {
                time_unix_nano: time,
                name: "gen_ai.content.prompt".into(),
                attributes: vec![kv("gen_ai.prompt", text(&long('p')))],
                ..Event::default()
            },
            Event {
                time_unix_nano: time,
                name: "exception".into(),
                attributes: vec![kv("exception.message", text(&long('x')))],
                ..Event::default()
            },
        ],
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("chatbot"),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

/// A GenAI message event and a plain log record, both with long bodies.
pub(crate) fn records_with_content(time: u64) -> ExportLogsServiceRequest {
    let message = LogRecord {
        time_unix_nano: time,
        event_name: "gen_ai.user.message".into(),
        body: Some(any(map(vec![kv("content", text(&long('u')))]))),
        attributes: vec![kv("gen_ai.system", text("openai"))],
        trace_id: vec![3; 16],
        span_id: vec![1; 8],
        ..LogRecord::default()
    };
    let plain = LogRecord { time_unix_nano: time, body: Some(any(text(&long('l')))), ..LogRecord::default() };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("chatbot"),
            scope_logs: vec![ScopeLogs { log_records: vec![message, plain], ..ScopeLogs::default() }],
            ..ResourceLogs::default()
        }],
    }
}

/// The span's attributes and its events' attributes, by span id's first byte.
pub(crate) async fn stored_span(sql: &tokio_postgres::Client, span_id: u8) -> (Json, Json) {
    let row = sql
        .query_one(
            "SELECT attributes, jsonb_path_query_array(events, '$[*].attributes') FROM spans WHERE span_id = $1",
            &[&vec![span_id; 8]],
        )
        .await
        .expect("the span");
    (row.get(0), row.get(1))
}

/// The bodies of the message event and of the plain record.
async fn stored_bodies(sql: &tokio_postgres::Client) -> Vec<(String, Json)> {
    let rows =
        sql.query("SELECT event_name, body FROM logs ORDER BY event_name DESC", &[]).await.expect("records");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn long_content_is_cut_and_marked_at_ingest_and_nothing_else_is() {
    let schema = TestSchema::new();
    let mut server = binary::start_with(&schema, |command| {
        command.env("RUST_LOG", "warn").env("OTELEPHANT_LLM__MAX_CONTENT_BYTES", LIMIT.to_string())
    })
    .await;
    let now = nanos_now();
    // Over gRPC, read field by field from the protobuf bytes; over HTTP JSON, decoded first.
    let mut traces =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            format!("http://127.0.0.1:{}", server.grpc),
        )
        .await
        .expect("connect");
    traces.export(call_with_content(1, now)).await.expect("stored");
    let mut logs =
        opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient::connect(
            format!("http://127.0.0.1:{}", server.grpc),
        )
        .await
        .expect("connect");
    logs.export(records_with_content(now)).await.expect("stored");
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("http://127.0.0.1:{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&call_with_content(2, now)).expect("OTLP JSON"))
        .send()
        .await
        .expect("sent");
    assert!(answer.status().is_success(), "{answer:?}");

    let sql = schema.sql().await;
    for span_id in [1, 2] {
        let (attributes, events) = stored_span(&sql, span_id).await;
        let messages: Json =
            serde_json::from_str(attributes["gen_ai.input.messages"].as_str().expect("a JSON text"))
                .expect("JSON");
        assert_eq!(
            messages,
            json!([{"role": "user", "parts": [{"type": "text", "content": cut(&long('a'), LIMIT)}]}]),
            "a JSON text of messages stays JSON, its long string cut (span {span_id})"
        );
        assert_eq!(
            attributes["gen_ai.output.messages"][0]["parts"][0]["content"],
            json!(cut(&long('b'), LIMIT))
        );
        assert_eq!(attributes["gen_ai.output.messages"][0]["role"], "assistant");
        let flattened = cut(&long('é'), LIMIT);
        assert_eq!(attributes["llm.input_messages.0.message.content"], json!(flattened));
        assert!(
            flattened.starts_with(&"é".repeat(50)) && flattened.ends_with("…[cut 200 of 300 bytes]"),
            "{flattened}"
        );
        assert_eq!(attributes["llm.input_messages.0.message.role"], "user");
        assert_eq!(attributes["db.statement"], json!(long('q')), "what is not content is stored whole");
        assert_eq!(attributes["gen_ai.request.model"], "gpt-4o-mini");
        assert_eq!(
            events,
            json!([{"gen_ai.prompt": cut(&long('p'), LIMIT)}, {"exception.message": long('x')}])
        );
    }
    assert_eq!(
        stored_bodies(&sql).await,
        vec![
            ("gen_ai.user.message".to_owned(), json!({"content": cut(&long('u'), LIMIT)})),
            (String::new(), json!(long('l'))),
        ],
        "a message event's body is cut, a plain record's is not"
    );
    let calls: i64 = sql.query_one("SELECT count(*) FROM llm_calls", &[]).await.expect("calls").get(0);
    assert_eq!(calls, 2, "the calls are derived as ever");

    // The conversation view shows the cut message with its mark.
    let answer: Json = http
        .post(format!("http://127.0.0.1:{}/otelephant.query.v1.QueryService/GetLlmConversation", server.http))
        .json(&json!({"traceId": hex::encode([3u8; 16])}))
        .send()
        .await
        .expect("asked")
        .json()
        .await
        .expect("JSON");
    assert!(answer.to_string().contains(&cut(&long('a'), LIMIT)), "{answer}");
    binary::signal(&server.child, "-TERM");
    server.child.wait().await.expect("exits");

    // Too small a limit stops start-up, naming the key.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_otelephant"))
        .arg("migrate")
        .env("OTELEPHANT_POSTGRES__URL", database_url())
        .env("OTELEPHANT_POSTGRES__SCHEMA", &schema.name)
        .env("OTELEPHANT_LLM__MAX_CONTENT_BYTES", "10")
        .output()
        .await
        .expect("ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("llm.max_content_bytes"), "{stderr}");
}

#[tokio::test]
async fn content_past_its_retention_is_replaced_with_a_mark_once_and_the_records_stay() {
    let mut t = TestServer::start_with(|c| c.retention.llm_content = Retention::days(1)).await;
    t.first_maintenance_pass().await;
    let d = today();
    t.traces().await.export(call_with_content(1, at(d, 1))).await.expect("stored");
    t.logs().await.export(records_with_content(at(d, 1))).await.expect("stored");
    let (attributes_before, _) = stored_span(&t.sql, 1).await;

    // Two days on, today's content is past its day of retention; the records are within theirs.
    let now = clock(at(d + 2, 13));
    let plan = {
        let pool = t.server.as_ref().expect("running").pool.clone();
        let mut client = pool.get().await.expect("client");
        maintenance::plan(&mut client, &t.config.partitions, &t.config.retention, &t.config.storage, now)
            .await
            .expect("plan")
    };
    // Start-up made yesterday's partitions too (partitions.days_behind); its content is past too.
    let day = d as i32;
    let planned: Vec<(&str, i32)> = plan.content_removed.iter().map(|(p, _)| (p.table, p.day)).collect();
    assert_eq!(planned, [("spans", day - 1), ("spans", day), ("logs", day - 1), ("logs", day)], "{plan:?}");
    assert!(plan.render(true).contains("Would remove LLM message content from 4 partition(s)"));
    assert_eq!(stored_span(&t.sql, 1).await.0, attributes_before, "a plan changes nothing");

    let report = pass_at(&t, now).await;
    let removed: Vec<(&str, i32, Option<u64>)> =
        report.content_removed.iter().map(|(p, n)| (p.table, p.day, *n)).collect();
    assert_eq!(
        removed,
        [
            ("spans", day - 1, Some(0)),
            ("spans", day, Some(1)),
            ("logs", day - 1, Some(0)),
            ("logs", day, Some(1))
        ],
        "{report:?}"
    );
    let mark = json!(removed_mark(&Retention::days(1).to_string()));
    let (attributes, events) = stored_span(&t.sql, 1).await;
    let mut expected = attributes_before.clone();
    for key in ["gen_ai.input.messages", "gen_ai.output.messages", "llm.input_messages.0.message.content"] {
        expected[key] = mark.clone();
    }
    assert_eq!(attributes, expected, "content is replaced, everything else kept");
    assert_eq!(events, json!([{"gen_ai.prompt": mark}, {"exception.message": long('x')}]));
    assert_eq!(
        stored_bodies(&t.sql).await,
        vec![("gen_ai.user.message".to_owned(), mark.clone()), (String::new(), json!(long('l')))]
    );
    assert_eq!(t.count("llm_calls").await, 1, "the call's row stays");

    let again = pass_at(&t, now).await;
    assert!(again.content_removed.is_empty(), "each day is done once: {again:?}");
    t.stop().await;
}
