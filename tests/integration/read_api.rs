//! The read side over HTTP on the OTLP/HTTP port: the query service as JSON, and Jaeger's query
//! API as Grafana's Jaeger data source calls it, each answer checked field by field.

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    resource::v1::Resource,
    trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span, Status as SpanStatus},
};
use otelephant::auth::Secret;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

use crate::common::{
    fixtures::query::{flatten, one_trace, TRACE},
    *,
};

const QUERY_SERVICE: &str = "/otelephant.query.v1.QueryService";

fn url(t: &TestServer, path: &str) -> String {
    format!("http://{}{path}", t.server.as_ref().expect("running").http_addr)
}

/// Calls a query service method with a JSON body; the status and the parsed answer.
async fn call(t: &TestServer, method: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url(t, &format!("{QUERY_SERVICE}/{method}")))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("answered");
    let status = response.status();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    (status, response.json().await.expect("a JSON answer"))
}

async fn get(t: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url(t, path)).await.expect("answered");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn the_json_api_hands_back_what_was_sent() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let sent = one_trace(now - 10_000_000_000);
    t.traces().await.export(sent.clone()).await.expect("export");

    let response = reqwest::Client::new()
        .post(url(&t, &format!("{QUERY_SERVICE}/GetTrace")))
        .header(header::CONTENT_TYPE, "application/json")
        .body(json!({ "traceId": hex::encode(TRACE) }).to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.expect("body");
    let text = String::from_utf8_lossy(&body);
    // Every double of every_value_attributes is there, the three JSON numbers cannot hold
    // included, as the protobuf JSON mapping writes them.
    for special in ["\"NaN\"", "\"Infinity\"", "\"-Infinity\""] {
        assert!(text.contains(special), "{special} in the answer");
    }
    // OTLP/JSON, as an exporter would send it: read it back with the receiver's own decoder.
    let got: ExportTraceServiceRequest =
        otelephant::receive::json::decode(&body, &mut || Ok::<(), String>(())).expect("OTLP/JSON");
    assert_eq!(flatten(&got.resource_spans), flatten(&sent.resource_spans));

    let (status, found) = call(&t, "SearchTraces", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let summary = &found["traces"][0];
    assert_eq!(summary["traceId"], hex::encode(TRACE));
    assert_eq!(summary["rootService"], "checkout");
    assert_eq!(summary["spanCount"], 4);
    assert_eq!(summary["errorCount"], 2);
    // 64-bit integers are strings in the protobuf JSON mapping.
    assert_eq!(summary["startUnixNano"], (now - 10_000_000_000 + 123_456_789).to_string());
    assert_eq!(found.get("nextPageToken"), None, "an empty field is left out");

    let (status, services) = call(&t, "ListServices", json!({})).await;
    assert_eq!((status, services), (StatusCode::OK, json!({ "services": ["checkout"] })));
    let (_, operations) = call(&t, "ListOperations", json!({ "service": "checkout" })).await;
    assert_eq!(operations["operations"].as_array().map(Vec::len), Some(4));
    assert_eq!(operations["operations"][0]["name"], "GET /users/{id} ✓ 0");
    // A kind is a number, as in OTLP/JSON (and in the spans themselves).
    assert_eq!(operations["operations"][2]["kind"], 2);

    // The same validation and messages as on gRPC, as Connect errors.
    let (status, err) = call(&t, "GetTrace", json!({ "traceId": "xyz" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "invalid_argument");
    assert!(err["message"].as_str().unwrap().contains("trace_id"), "{err}");
    let (status, err) = call(&t, "GetTrace", json!({ "traceId": "00".repeat(16) })).await;
    assert_eq!((status, &err["code"]), (StatusCode::NOT_FOUND, &json!("not_found")));
    let (status, err) =
        call(&t, "ListServices", json!({ "timeRange": { "startUnixNano": "5", "endUnixNano": "1" } })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["message"].as_str().unwrap().contains("time_range"), "{err}");
    let (status, err) = call(&t, "ListServices", json!({ "pageSize": "many" })).await;
    assert_eq!((status, &err["code"]), (StatusCode::BAD_REQUEST, &json!("invalid_argument")));
    let (status, err) = call(&t, "DropEverything", json!({})).await;
    assert_eq!((status, &err["code"]), (StatusCode::NOT_FOUND, &json!("unimplemented")));
    t.stop().await;
}

/// A server span of `service` lasting `millis`.
fn served(service: u8, i: u8, millis: u64, kind: SpanKind, error: bool, now: u64) -> Span {
    Span {
        trace_id: vec![service, i, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        span_id: vec![service, i, 0, 0, 0, 0, 0, 1],
        name: "handle".into(),
        kind: kind as i32,
        start_time_unix_nano: now,
        end_time_unix_nano: now + millis * 1_000_000,
        status: error.then(|| SpanStatus { code: 2, message: "failed".into() }),
        ..Default::default()
    }
}

#[tokio::test]
async fn service_stats_give_rate_errors_and_duration_percentiles_of_served_spans() {
    let mut t = TestServer::start().await;
    let now = nanos_now() - 60_000_000_000;
    let api = vec![
        served(1, 1, 10, SpanKind::Server, false, now),
        served(1, 2, 20, SpanKind::Server, true, now),
        served(1, 3, 30, SpanKind::Consumer, false, now),
        served(1, 4, 40, SpanKind::Server, false, now),
        // Not a request the service served: counted as a span only.
        served(1, 5, 1000, SpanKind::Client, true, now),
    ];
    let worker = vec![served(2, 1, 5, SpanKind::Internal, false, now)];
    let group = |name: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource { attributes: vec![kv("service.name", s(name))], ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        schema_url: String::new(),
    };
    let request =
        ExportTraceServiceRequest { resource_spans: vec![group("api", api), group("worker", worker)] };
    t.traces().await.export(request).await.expect("export");

    let (status, stats) = call(&t, "ListServiceStats", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let api = &stats["services"][0];
    assert_eq!(api["service"], "api");
    assert_eq!(
        (&api["spanCount"], &api["requestCount"], &api["errorCount"]),
        (&json!("5"), &json!("4"), &json!("1"))
    );
    // From the rollups' duration sketches: within their 1% of the exact percentiles.
    let nanos = |key: &str| api[key].as_str().and_then(|n| n.parse::<f64>().ok()).expect("nanoseconds");
    for (key, exact) in [("p50Nanos", 20e6), ("p95Nanos", 40e6), ("p99Nanos", 40e6)] {
        assert!((nanos(key) - exact).abs() <= exact * 0.01, "{key}: {} vs {exact}", nanos(key));
    }
    // Four requests in the default range, an hour.
    let rate = api["requestRate"].as_f64().expect("a rate");
    assert!((rate - 4.0 / 3600.0).abs() < 1e-9, "{rate}");
    let worker = &stats["services"][1];
    assert_eq!(worker["service"], "worker");
    assert_eq!(worker["spanCount"], "1");
    assert_eq!(worker.get("requestCount"), None, "no requests: zero, left out");
    t.stop().await;
}

#[tokio::test]
async fn read_apis_need_the_query_token_as_a_bearer_token_or_a_ui_session() {
    let mut t = TestServer::start_with(|c| {
        c.auth.ingest_token = Some(Secret("ingest-5e1f".into()));
        c.auth.query_token = Some(Secret("query-9b2c".into()));
    })
    .await;
    let client = reqwest::Client::new();
    let list = |token: Option<&str>, cookie: Option<&str>| {
        let mut request = client
            .post(url(&t, &format!("{QUERY_SERVICE}/ListServices")))
            .header(header::CONTENT_TYPE, "application/json")
            .body("{}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request.send()
    };
    let refused = list(None, None).await.expect("answered");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(list(Some("ingest-5e1f"), None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(list(Some("query-9b2c"), None).await.unwrap().status(), StatusCode::OK);
    // A cookie holds a session from the web UI's sign-in, never a token.
    let token_cookie = Some("otelephant_query_token=query-9b2c");
    assert_eq!(list(None, token_cookie).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let signed_in = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(url(&t, "/login"))
        .form(&[("token", "query-9b2c"), ("next", "/")])
        .send()
        .await
        .expect("answered");
    let set_cookie = signed_in.headers()[header::SET_COOKIE].to_str().expect("text").to_owned();
    let session = set_cookie.split(';').next().expect("name=value").to_owned();
    assert!(session.starts_with("otelephant_session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert_eq!(list(None, Some(&session)).await.unwrap().status(), StatusCode::OK);
    let stored: i64 = t.sql.query_one("SELECT count(*) FROM ui_sessions", &[]).await.expect("count").get(0);
    assert_eq!(stored, 1);
    let out =
        client.post(url(&t, "/logout")).header(header::COOKIE, &session).send().await.expect("answered");
    assert!(out.status().is_success() || out.status().is_redirection(), "{}", out.status());
    assert_eq!(
        list(None, Some(&session)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "revoked on sign-out"
    );

    let jaeger = client.get(url(&t, "/jaeger/api/services"));
    assert_eq!(jaeger.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let jaeger = client.get(url(&t, "/jaeger/api/services")).bearer_auth("query-9b2c");
    assert_eq!(jaeger.send().await.unwrap().status(), StatusCode::OK);
    let loki = client.get(url(&t, "/loki/api/v1/labels"));
    assert_eq!(loki.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let loki = client.get(url(&t, "/loki/api/v1/labels")).bearer_auth("query-9b2c");
    assert_eq!(loki.send().await.unwrap().status(), StatusCode::OK);
    t.stop().await;
}

/// Jaeger's JSON model (jaeger `model/json/model.go`), as typed structs that refuse any field
/// the model does not have and require every field Grafana reads.
#[allow(dead_code)] // Every field the model has, so that serde checks them; not all are asserted.
mod model {
    use std::collections::HashMap;

    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Envelope<T> {
        pub data: T,
        pub total: i64,
        pub limit: i64,
        pub offset: i64,
        pub errors: Option<Vec<Error>>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Error {
        pub code: Option<i64>,
        pub msg: String,
        #[serde(rename = "traceID")]
        pub trace_id: Option<String>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Trace {
        #[serde(rename = "traceID")]
        pub trace_id: String,
        pub spans: Vec<Span>,
        pub processes: HashMap<String, Process>,
        pub warnings: Option<Vec<String>>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Span {
        #[serde(rename = "traceID")]
        pub trace_id: String,
        #[serde(rename = "spanID")]
        pub span_id: String,
        #[serde(rename = "parentSpanID")]
        pub parent_span_id: Option<String>,
        pub flags: u32,
        pub operation_name: String,
        pub references: Vec<Reference>,
        pub start_time: u64,
        pub duration: u64,
        pub tags: Vec<KeyValue>,
        pub logs: Vec<Log>,
        #[serde(rename = "processID")]
        pub process_id: String,
        pub process: Option<Process>,
        pub warnings: Option<Vec<String>>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Reference {
        pub ref_type: RefType,
        #[serde(rename = "traceID")]
        pub trace_id: String,
        #[serde(rename = "spanID")]
        pub span_id: String,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    pub enum RefType {
        #[serde(rename = "CHILD_OF")]
        ChildOf,
        #[serde(rename = "FOLLOWS_FROM")]
        FollowsFrom,
    }

    #[derive(Deserialize, Debug, PartialEq, Clone)]
    #[serde(deny_unknown_fields)]
    pub struct KeyValue {
        pub key: String,
        #[serde(rename = "type")]
        pub kind: ValueType,
        pub value: serde_json::Value,
    }

    #[derive(Deserialize, Debug, PartialEq, Clone, Copy)]
    #[serde(rename_all = "lowercase")]
    pub enum ValueType {
        String,
        Bool,
        Int64,
        Float64,
        Binary,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Log {
        pub timestamp: u64,
        pub fields: Vec<KeyValue>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Process {
        pub service_name: String,
        pub tags: Vec<KeyValue>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct DependencyLink {
        pub parent: String,
        pub child: String,
        pub call_count: u64,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Operation {
        pub name: String,
        pub span_kind: String,
    }
}

async fn jaeger<T: serde::de::DeserializeOwned>(
    t: &TestServer,
    path: &str,
) -> (StatusCode, model::Envelope<T>) {
    let response = reqwest::get(url(t, path)).await.expect("answered");
    let status = response.status();
    let text = response.text().await.expect("body");
    let envelope =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not Jaeger's model: {e}: {text}"));
    (status, envelope)
}

fn tag<'a>(tags: &'a [model::KeyValue], key: &str) -> Option<(model::ValueType, &'a Value)> {
    tags.iter().find(|kv| kv.key == key).map(|kv| (kv.kind, &kv.value))
}

#[tokio::test]
async fn the_jaeger_api_answers_grafanas_requests_in_jaegers_model() {
    use model::{RefType, ValueType};

    let mut t = TestServer::start().await;
    let now = nanos_now() - 10_000_000_000;
    t.traces().await.export(one_trace(now)).await.expect("export");

    // The requests Grafana's Jaeger data source makes (grafana pkg/tsdb/jaeger/client.go),
    // with the data source's URL http://host:4318/jaeger.
    let (status, services) = jaeger::<Vec<String>>(&t, "/jaeger/api/services").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (services.data, services.total, services.errors.is_none()),
        (vec!["checkout".to_owned()], 1, true)
    );

    let (_, operations) = jaeger::<Vec<String>>(&t, "/jaeger/api/services/checkout/operations").await;
    assert_eq!(operations.data, (0..4).map(|i| format!("GET /users/{{id}} ✓ {i}")).collect::<Vec<_>>());
    let (_, kinds) = jaeger::<Vec<model::Operation>>(&t, "/jaeger/api/operations?service=checkout").await;
    let kinds: Vec<&str> = kinds.data.iter().map(|o| o.span_kind.as_str()).collect();
    assert_eq!(kinds, ["", "internal", "server", "client"]);
    let (_, servers) =
        jaeger::<Vec<model::Operation>>(&t, "/jaeger/api/operations?service=checkout&spanKind=server").await;
    assert_eq!(
        servers.data,
        [model::Operation { name: "GET /users/{id} ✓ 2".into(), span_kind: "server".into() }]
    );

    // Grafana sends its search to /api/traces at the host's root.
    let tags = urlencode(r#"{"int":"-42","bool.true":"true"}"#);
    let (status, found) = jaeger::<Vec<model::Trace>>(
        &t,
        &format!("/api/traces?limit=20&service=checkout&tags={tags}&minDuration=1ms"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found.data.len(), 1);
    assert_eq!(found.data[0].spans.len(), 4);
    let (_, none) =
        jaeger::<Vec<model::Trace>>(&t, "/jaeger/api/traces?service=checkout&minDuration=2s").await;
    assert!(none.data.is_empty(), "every span is shorter than 2 s");
    let (_, none) = jaeger::<Vec<model::Trace>>(&t, "/jaeger/api/traces?service=checkout&tag=int:-43").await;
    assert!(none.data.is_empty(), "no span has int = -43");
    let (_, errors) = jaeger::<Vec<model::Trace>>(
        &t,
        "/jaeger/api/traces?service=checkout&tags=%7B%22error%22%3A%22true%22%7D",
    )
    .await;
    assert_eq!(errors.data.len(), 1, "error=true matches spans whose status is ERROR");

    let (status, by_id) =
        jaeger::<Vec<model::Trace>>(&t, &format!("/jaeger/api/traces/{}", hex::encode(TRACE))).await;
    assert_eq!(status, StatusCode::OK);
    let trace = &by_id.data[0];
    assert_eq!(trace.trace_id, hex::encode(TRACE));
    assert_eq!(trace.processes.len(), 1, "one resource, one process");
    let process = &trace.processes["p1"];
    assert_eq!(process.service_name, "checkout");
    assert_eq!(tag(&process.tags, "host.name"), Some((ValueType::String, &json!("web-1"))));
    assert_eq!(tag(&process.tags, "service.name"), None, "the name is the process's, not a tag");

    let span = |i: u8| {
        let id = hex::encode([1, 2, 3, 4, 5, 6, 7, i]);
        trace.spans.iter().find(|s| s.span_id == id).unwrap_or_else(|| panic!("span {id}"))
    };
    let root = span(0);
    assert_eq!(root.operation_name, "GET /users/{id} ✓ 0");
    assert_eq!(root.process_id, "p1");
    assert_eq!(root.start_time, (now + 123_456_789) / 1000, "microseconds");
    assert_eq!(root.duration, (987_654_321 - 123_456_789) / 1000);
    assert_eq!(root.flags, 0xff, "the W3C trace flags, the low byte of the span's flags");
    assert_eq!(root.references.len(), 1, "no parent: the link only");
    assert_eq!(tag(&root.tags, "span.kind"), None, "unspecified kind: no tag");
    assert_eq!(tag(&root.tags, "otel.status_code"), None, "no status: no tag");
    assert_eq!(tag(&root.tags, "otel.scope.name"), Some((ValueType::String, &json!("lib-a"))));
    assert_eq!(tag(&root.tags, "otel.scope.version"), Some((ValueType::String, &json!("1.2.3"))));
    assert_eq!(tag(&root.tags, "w3c.tracestate"), Some((ValueType::String, &json!("vendor=value,other=ü"))));
    // Attributes, each with Jaeger's type.
    assert_eq!(tag(&root.tags, "int"), Some((ValueType::Int64, &json!(-42))));
    assert_eq!(tag(&root.tags, "double"), Some((ValueType::Float64, &json!(3.25))));
    assert_eq!(tag(&root.tags, "double.nan"), Some((ValueType::Float64, &json!("NaN"))));
    assert_eq!(tag(&root.tags, "bool.false"), Some((ValueType::Bool, &json!(false))));
    assert_eq!(tag(&root.tags, "bytes"), Some((ValueType::Binary, &json!("AAEC/v8="))));
    let (kind, array) = tag(&root.tags, "array").expect("array tag");
    assert_eq!(kind, ValueType::String);
    let array: Value = serde_json::from_str(array.as_str().unwrap()).expect("the array's JSON");
    assert_eq!(array.as_array().map(Vec::len), Some(5));

    let child = span(2);
    assert_eq!(
        child.references[0],
        model::Reference {
            ref_type: RefType::ChildOf,
            trace_id: hex::encode(TRACE),
            span_id: hex::encode([1, 2, 3, 4, 5, 6, 7, 0]),
        }
    );
    assert_eq!(
        child.references[1],
        model::Reference {
            ref_type: RefType::FollowsFrom,
            trace_id: "09".repeat(16),
            span_id: "08".repeat(8),
        }
    );
    assert_eq!(tag(&child.tags, "span.kind"), Some((ValueType::String, &json!("server"))));
    assert_eq!(tag(&child.tags, "otel.status_code"), Some((ValueType::String, &json!("ERROR"))));
    assert_eq!(tag(&child.tags, "error"), Some((ValueType::Bool, &json!(true))));
    assert_eq!(tag(&child.tags, "otel.status_description"), Some((ValueType::String, &json!("it broke: ✗"))));
    assert_eq!(child.logs.len(), 2);
    assert_eq!(child.logs[0].timestamp, (now + 5) / 1000);
    assert_eq!(tag(&child.logs[0].fields, "event"), Some((ValueType::String, &json!("exception"))));
    assert_eq!(tag(&child.logs[0].fields, "exception.message"), Some((ValueType::String, &json!("boom ☃"))));
    assert!(child.logs[1].fields.is_empty(), "an unnamed event without attributes");
    assert_eq!(tag(&span(1).tags, "otel.status_code"), None, "status UNSET: no tag");
    assert_eq!(tag(&span(3).tags, "span.kind"), Some((ValueType::String, &json!("client"))));

    // Bad arguments, as Jaeger answers them.
    let (status, err) = jaeger::<Option<Value>>(&t, "/jaeger/api/traces").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err.errors.expect("errors")[0].msg, "parameter 'service' is required");
    let (status, err) =
        jaeger::<Option<Value>>(&t, "/jaeger/api/traces?service=checkout&minDuration=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err.errors.expect("errors")[0].msg.contains("minDuration"));
    let (status, _) = jaeger::<Option<Value>>(&t, "/jaeger/api/traces/not-hex").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, err) = jaeger::<Option<Value>>(&t, &format!("/jaeger/api/traces/{}", "0f".repeat(16))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err.errors.expect("errors")[0].code, Some(404));
    // A short id is the same trace with its leading zeros left off, as Jaeger writes them.
    let (status, _) = jaeger::<Option<Value>>(&t, "/jaeger/api/traces/1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, plain) = get(&t, "/jaeger/api/services").await;
    assert_eq!(plain["limit"], 0);
    t.stop().await;
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn logs_and_metrics_over_json_are_what_grpc_answers() {
    use opentelemetry_proto::tonic::{
        collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
        common::v1::{any_value::Value as V, AnyValue},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };
    use otelephant::query::proto::{
        query_service_client::QueryServiceClient, QueryMetricsRequest, SearchLogsRequest,
    };
    use prost::Message;

    let mut t = TestServer::start().await;
    let now = nanos_now() - 10_000_000_000;
    t.metrics().await.export(crate::common::fixtures::metrics::request(now)).await.expect("metrics");
    let record = LogRecord {
        time_unix_nano: now,
        severity_number: 17,
        body: Some(AnyValue { value: Some(V::DoubleValue(f64::NAN)) }),
        attributes: every_value_attributes(),
        trace_id: TRACE.to_vec(),
        ..Default::default()
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("checkout"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs { log_records: vec![record], ..Default::default() }],
            schema_url: String::new(),
        }],
    };
    t.logs().await.export(logs).await.expect("logs");
    let mut grpc = QueryServiceClient::connect(t.endpoint()).await.expect("connect");

    let (status, json_logs) =
        call(&t, "SearchLogs", json!({ "traceId": hex::encode(TRACE), "minSeverity": 17 })).await;
    assert_eq!(status, StatusCode::OK);
    let request = SearchLogsRequest { trace_id: hex::encode(TRACE), min_severity: 17, ..Default::default() };
    let grpc_logs = grpc.search_logs(request).await.expect("grpc").into_inner().logs.expect("logs");
    let decoded: ExportLogsServiceRequest =
        otelephant::receive::json::decode(json_logs["logs"].to_string().as_bytes(), &mut || {
            Ok::<(), String>(())
        })
        .expect("OTLP/JSON");
    assert_eq!(decoded.resource_logs.len(), 1);
    assert_eq!(
        decoded.resource_logs[0].encode_to_vec(),
        grpc_logs.resource_logs[0].encode_to_vec(),
        "the JSON answer is the gRPC answer, NaN body included"
    );

    let (_, listed) = call(&t, "ListMetrics", json!({ "namePrefix": "sum." })).await;
    let names: Vec<&str> =
        listed["metrics"].as_array().expect("metrics").iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"sum.double") && names.iter().all(|n| n.starts_with("sum.")), "{names:?}");

    let (status, raw) = call(&t, "QueryMetrics", json!({ "name": "gauge.int" })).await;
    assert_eq!(status, StatusCode::OK);
    let grpc_raw = grpc
        .query_metrics(QueryMetricsRequest { name: "gauge.int".into(), ..Default::default() })
        .await
        .expect("grpc")
        .into_inner()
        .raw
        .expect("raw");
    let decoded: ExportMetricsServiceRequest =
        otelephant::receive::json::decode(raw["raw"].to_string().as_bytes(), &mut || Ok::<(), String>(()))
            .expect("OTLP/JSON");
    assert_eq!(
        decoded.resource_metrics.iter().map(Message::encode_to_vec).collect::<Vec<_>>(),
        grpc_raw.resource_metrics.iter().map(Message::encode_to_vec).collect::<Vec<_>>()
    );

    for (method, body, field) in [
        ("QueryMetrics", json!({}), "name"),
        ("QueryMetrics", json!({ "name": "gauge.int", "stepNanos": "1000000000" }), "aggregation"),
        ("SearchLogs", json!({ "traceId": "zz" }), "trace_id"),
        ("ListMetrics", json!({ "pageToken": "not-a-token" }), "page_token"),
    ] {
        let (status, err) = call(&t, method, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {err}");
        assert_eq!(err["code"], "invalid_argument");
        assert!(err["message"].as_str().unwrap().contains(field), "{method} names {field}: {err}");
    }
    t.stop().await;
}

#[tokio::test]
async fn service_dependencies_over_json_and_jaeger() {
    let mut t = TestServer::start().await;
    // checkout's GET /cart calls billing's charge (trace 1); the other traces stay in one service.
    t.traces().await.export(crate::common::fixtures::query::traces(nanos_now())).await.expect("export");
    // Calls between services are paired once their minute has closed.
    let (_, none) = call(&t, "ListServiceDependencies", json!({})).await;
    assert_eq!(none, json!({}), "not before the minute is paired");
    t.rollup_pass().await;

    let (status, found) = call(&t, "ListServiceDependencies", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // The call's child span, as SQL reads it: whether it failed and how long it took.
    let child = t
        .sql
        .query_one(
            "SELECT c.status_code IS NOT DISTINCT FROM 2, c.end_time_unix_nano - c.start_time_unix_nano
             FROM spans c JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
             JOIN resources rc ON rc.resource_id = c.resource_id JOIN resources rp ON rp.resource_id = p.resource_id
             WHERE rp.service_name = 'checkout' AND rc.service_name = 'billing'",
            &[],
        )
        .await
        .expect("the call's child span");
    let (failed, nanos): (bool, i64) = (child.get(0), child.get(1));
    let edges = found["dependencies"].as_array().expect("dependencies");
    assert_eq!(edges.len(), 1, "{found}");
    let edge = &edges[0];
    assert_eq!(
        (&edge["parent"], &edge["child"], &edge["callCount"]),
        (&json!("checkout"), &json!("billing"), &json!("1"))
    );
    // proto3's JSON leaves a zero out.
    let errors = if failed { json!("1") } else { Value::Null };
    assert_eq!(edge["errorCount"], errors, "{found}");
    for percentile in ["p50Nanos", "p95Nanos", "p99Nanos"] {
        let got: f64 = edge[percentile].as_str().expect(percentile).parse().expect("a number");
        assert!((got - nanos as f64).abs() <= nanos as f64 * 0.01, "{percentile} {got} vs {nanos}");
    }

    let (status, links) = jaeger::<Vec<model::DependencyLink>>(&t, "/jaeger/api/dependencies").await;
    assert_eq!(status, StatusCode::OK);
    let expected =
        model::DependencyLink { parent: "checkout".into(), child: "billing".into(), call_count: 1 };
    assert_eq!(links.data, [expected]);
    let ended = nanos_now() / 1_000_000 - 3_600_000;
    let (_, none) =
        jaeger::<Vec<Value>>(&t, &format!("/jaeger/api/dependencies?endTs={ended}&lookback=60000")).await;
    assert!(none.data.is_empty(), "nothing in a minute an hour ago");
    let (status, _) = jaeger::<Option<Value>>(&t, "/jaeger/api/dependencies?lookback=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    t.stop().await;
}

#[tokio::test]
async fn the_web_ui_copes_with_times_at_the_edges_and_absurd_parameters() {
    let mut t = TestServer::start().await;
    let edge = |id: u8, start: u64, end: u64| Span {
        trace_id: vec![0x55; 16],
        span_id: vec![id; 8],
        name: format!("edge {id}"),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![edge(1, 1, u64::MAX), edge(2, u64::MAX, u64::MAX), edge(3, 0, 0)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.traces().await.export(request).await.expect("export");
    let page = reqwest::get(url(&t, &format!("/trace/{}", "55".repeat(16)))).await.expect("answered");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    for name in ["edge 1", "edge 2", "edge 3"] {
        assert!(html.contains(name), "{name} is on the timeline");
    }
    assert!(!html.contains("NaN"), "every bar is placed");
    for path in [
        "/traces?start=99999999999999999999",
        "/traces?start=18446744073709551615&end=18446744073709551615",
        "/logs?min_severity=banana",
        "/metric?name=x&step=999999999h",
        &format!("/trace/{}?span=nothere", "55".repeat(16)),
    ] {
        let page = reqwest::get(url(&t, path)).await.expect("answered");
        assert!(page.status().is_success(), "{path}: {}", page.status());
    }
    t.stop().await;
}

#[tokio::test]
async fn log_facets_count_the_newest_records_values_as_sql_does_and_the_logs_page_says_why_it_is_empty() {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::{any_value::Value as V, AnyValue},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };
    use otelephant::query::proto::{
        query_service_client::QueryServiceClient, LogFacetsRequest, SearchLogsRequest,
    };

    let mut t = TestServer::start().await;
    let page = |path: &'static str| {
        let address = url(&t, path);
        async move { reqwest::get(address).await.expect("answered").text().await.expect("html") }
    };
    assert!(page("/logs").await.contains(r#"data-empty="nothing-stored""#), "nothing stored yet");

    let now = nanos_now() - 60_000_000_000;
    let value = |v: V| Some(AnyValue { value: Some(v) });
    let record = |i: u64| LogRecord {
        time_unix_nano: now + i * 1_000_000,
        severity_number: 9,
        body: value(V::StringValue(format!("record {i}"))),
        attributes: vec![
            kv("http.route", V::StringValue(["/a", "/b", "/c"][(i % 3) as usize].into())),
            kv("status", V::IntValue(if i.is_multiple_of(4) { 500 } else { 200 })),
            kv("ratio", V::DoubleValue(200.0)),
            kv("ratio.int", V::IntValue(200)),
            kv("flag", V::BoolValue(i.is_multiple_of(2))),
            kv("unique", V::StringValue(format!("u{i}"))),
            kv("long", V::StringValue("x".repeat(300))),
            kv("nested", V::ArrayValue(Default::default())),
        ],
        ..Default::default()
    };
    let resource_logs = |service: &str, range: std::ops::Range<u64>| ResourceLogs {
        resource: Some(Resource { attributes: vec![kv("service.name", s(service))], ..Default::default() }),
        scope_logs: vec![ScopeLogs { log_records: range.map(record).collect(), ..Default::default() }],
        schema_url: String::new(),
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![resource_logs("checkout", 0..20), resource_logs("api", 20..30)],
    };
    t.logs().await.export(logs).await.expect("logs");
    let mut grpc = QueryServiceClient::connect(t.endpoint()).await.expect("connect");

    for sample in [0, 12] {
        let request = LogFacetsRequest { filters: Some(SearchLogsRequest::default()), sample };
        let facets = grpc.log_facets(request).await.expect("facets").into_inner();
        let newest = if sample == 0 { 1000 } else { i64::from(sample) };
        assert_eq!(facets.sampled, newest.min(30) as u64);
        assert_eq!(facets.complete, sample == 0);
        // What SQL counts over the same newest records.
        let sql = "WITH sample AS (SELECT * FROM logs ORDER BY timestamp_unix_nano DESC LIMIT $1)";
        let services: Vec<(String, i64)> = t
            .sql
            .query(
                &format!("{sql} SELECT r.service_name, count(*) FROM sample JOIN resources r USING (resource_id) GROUP BY 1 ORDER BY 2 DESC"),
                &[&newest],
            )
            .await
            .expect("services")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let got: Vec<(String, i64)> = facets
            .services
            .iter()
            .map(|v| match v.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(V::StringValue(name)) => (name.clone(), v.records as i64),
                other => panic!("a service name: {other:?}"),
            })
            .collect();
        assert_eq!(got, services, "sample {sample}");
        let mut expected: Vec<(String, String, i64)> = t
            .sql
            .query(
                &format!(
                    "{sql} SELECT a.key, a.value::text, count(*) FROM sample, jsonb_each(attributes) a
                     WHERE a.key NOT IN ('long', 'nested') GROUP BY 1, 2 HAVING count(*) > 1"
                ),
                &[&newest],
            )
            .await
            .expect("values")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let mut answered: Vec<(String, String, i64)> = Vec::new();
        for facet in &facets.attributes {
            for v in &facet.values {
                let json = match v.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(V::StringValue(text)) => serde_json::to_string(text).expect("json"),
                    Some(V::IntValue(i)) => i.to_string(),
                    Some(V::DoubleValue(d)) => format!("{d:?}"),
                    Some(V::BoolValue(b)) => b.to_string(),
                    other => panic!("a scalar: {other:?}"),
                };
                answered.push((facet.key.clone(), json, v.records as i64));
            }
            let counts: Vec<u64> = facet.values.iter().map(|v| v.records).collect();
            assert!(counts.windows(2).all(|w| w[0] >= w[1]), "commonest first: {counts:?}");
        }
        expected.sort();
        answered.sort();
        assert_eq!(answered, expected, "sample {sample}: every value held twice or more, typed");
        assert!(answered.iter().any(|(k, v, _)| k == "ratio" && v == "200.0"), "the double stays a double");
        assert!(answered.iter().any(|(k, v, _)| k == "ratio.int" && v == "200"), "the int an int");

        let (status, json) = call(&t, "LogFacets", json!({ "sample": sample })).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["sampled"].as_str().map(str::to_owned), Some(facets.sampled.to_string()), "{json}");
        let over_json = json["attributes"].as_array().expect("attributes").len();
        assert_eq!(over_json, facets.attributes.len());
        let first = &facets.attributes[0];
        assert_eq!(json["attributes"][0]["key"], first.key.as_str());
    }

    assert!(page("/logs?body=no-such-text").await.contains(r#"data-empty="nothing-matches""#));
    let old = page("/logs?start=1000&end=2000").await;
    assert!(old.contains(r#"data-empty="nothing-in-range""#) && old.contains("The newest stored"), "{old}");
    let listed = page("/logs").await;
    assert!(listed.contains(r#"data-key="http.route""#) && listed.contains("In all 30 matching records"));
    t.stop().await;
}
