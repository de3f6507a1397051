//! The OTLP/HTTP receiver over real HTTP: protobuf and JSON (every specification example),
//! compressed bodies, every error status, and CORS.

use std::io::Write;

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest,
    metrics::v1::ExportMetricsServiceRequest,
    trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
};
use otelephant::query::proto::{query_service_client::QueryServiceClient, GetTraceRequest};
use prost::Message;
use reqwest::{header, StatusCode};

use crate::common::{
    clients::{post, url, PROTOBUF},
    *,
};

const JSON: &str = "application/json";

fn example(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/otlp-examples").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A google.rpc.Status body, in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test]
async fn protobuf_exports_of_every_signal_are_stored() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let traces = crate::common::fixtures::traces::request(now).encode_to_vec();
    let response = post(&t, "/v1/traces", PROTOBUF, None, traces).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], PROTOBUF);
    let body = response.bytes().await.expect("body");
    assert_eq!(ExportTraceServiceResponse::decode(body).expect("a response message").partial_success, None);

    let metrics = crate::common::fixtures::metrics::request(now).encode_to_vec();
    assert_eq!(post(&t, "/v1/metrics", PROTOBUF, None, metrics).await.status(), StatusCode::OK);
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
            scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                log_records: vec![Default::default(); 3],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let response =
        post(&t, "/v1/logs", "application/x-protobuf; charset=binary", None, logs.encode_to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(t.count("spans").await, 4);
    assert_eq!(t.count("metric_points_number").await, 3);
    assert_eq!(t.count("logs").await, 3);
    t.stop().await;
}

#[tokio::test]
async fn the_specification_json_examples_are_stored_correctly() {
    let mut t = TestServer::start().await;
    for (path, file) in [
        ("/v1/traces", "trace.json"),
        ("/v1/metrics", "metrics.json"),
        ("/v1/logs", "logs.json"),
        ("/v1/logs", "events.json"),
    ] {
        let response = post(&t, path, JSON, None, example(file)).await;
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], JSON, "answers in the request's format");
        let body: serde_json::Value = response.json().await.expect("JSON answer");
        assert!(body.is_object(), "{body}");
    }

    // The trace comes back, through the query API, as the example describes it.
    let sent: ExportTraceServiceRequest =
        serde_json::from_slice(&example("trace.json")).expect("example parses");
    let got = QueryServiceClient::connect(t.endpoint())
        .await
        .expect("connect")
        .get_trace(GetTraceRequest { trace_id: "5b8efff798038103d269b633813fc60c".into() })
        .await
        .expect("the example trace")
        .into_inner();
    assert_eq!(
        crate::common::fixtures::query::flatten(&got.resource_spans),
        crate::common::fixtures::query::flatten(&sent.resource_spans)
    );
    let span = t
        .sql
        .query_one(
            "SELECT encode(span_id, 'hex'), encode(parent_span_id, 'hex'), name, kind, start_time_unix_nano,
                    end_time_unix_nano, attributes->>'my.span.attr' FROM spans",
            &[],
        )
        .await
        .expect("span");
    assert_eq!(span.get::<_, String>(0), "eee19b7ec3c1b174", "hex ids are case-insensitive");
    assert_eq!(span.get::<_, String>(1), "eee19b7ec3c1b173");
    assert_eq!(span.get::<_, String>(2), "I'm a server span");
    assert_eq!(span.get::<_, i32>(3), 2);
    assert_eq!(span.get::<_, i64>(4), 1_544_712_660_000_000_000, "64-bit integers given as strings");
    assert_eq!(span.get::<_, i64>(5), 1_544_712_661_000_000_000);
    assert_eq!(span.get::<_, String>(6), "some value");

    let metric_types: Vec<(String, String)> = t
        .sql
        .query("SELECT metric_name, metric_type FROM metric_series ORDER BY 1", &[])
        .await
        .expect("series")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("my.counter", "sum"),
        ("my.exponential.histogram", "exponential_histogram"),
        ("my.gauge", "gauge"),
        ("my.histogram", "histogram"),
    ];
    assert_eq!(metric_types, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
    for table in ["metric_points_number", "metric_points_histogram", "metric_points_exp_histogram"] {
        assert!(t.count(table).await > 0, "{table} has the example's points");
    }

    let log = t
        .sql
        .query_one(
            "SELECT body #>> '{}', severity_number, severity_text, encode(trace_id, 'hex'),
                    attributes->'int.attribute', attributes->'double.attribute', attributes->'array.attribute',
                    attributes->'map.attribute'->>'some.map.key', attributes->'boolean.attribute'
             FROM logs WHERE event_name = ''",
            &[],
        )
        .await
        .expect("log");
    assert_eq!(log.get::<_, String>(0), "Example log record");
    assert_eq!(log.get::<_, i32>(1), 10);
    assert_eq!(log.get::<_, String>(2), "Information");
    assert_eq!(log.get::<_, String>(3), "5b8efff798038103d269b633813fc60c");
    assert_eq!(log.get::<_, serde_json::Value>(4).to_string(), "10", "an int, from a string");
    assert_eq!(log.get::<_, serde_json::Value>(5).to_string(), "637.704");
    assert_eq!(log.get::<_, serde_json::Value>(6), serde_json::json!(["many", "values"]));
    assert_eq!(log.get::<_, String>(7), "some value");
    assert_eq!(log.get::<_, serde_json::Value>(8), serde_json::json!(true));
    let event: String = t
        .sql
        .query_one("SELECT event_name FROM logs WHERE event_name <> ''", &[])
        .await
        .expect("event")
        .get(0);
    assert_eq!(event, "browser.page_view");
    t.stop().await;
}

#[tokio::test]
async fn json_follows_the_otlp_rules_not_plain_proto3() {
    let mut t = TestServer::start().await;
    // Uppercase hex, a 64-bit integer as a number, an integer enum, and a field no version of
    // OTLP has: all accepted.
    let body = br#"{"resourceSpans":[{"futureField":{"x":1},"scopeSpans":[{"spans":[{
        "traceId":"0AF7651916CD43DD8448EB211C80319C","spanId":"B7AD6B7169203331","name":"n","kind":3,
        "startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1700000000500000000"}]}]}]}"#;
    assert_eq!(post(&t, "/v1/traces", JSON, None, body.to_vec()).await.status(), StatusCode::OK);
    let row = t
        .sql
        .query_one("SELECT encode(trace_id, 'hex'), kind, start_time_unix_nano FROM spans", &[])
        .await
        .expect("span");
    assert_eq!(row.get::<_, String>(0), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(row.get::<_, i64>(2), 1_700_000_000_000_000_000);
    t.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("compress")
}

#[tokio::test]
async fn compressed_bodies_are_accepted() {
    let mut t = TestServer::start().await;
    let body = crate::common::fixtures::traces::request(nanos_now()).encode_to_vec();
    let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(&body).expect("compress");
    let deflated = deflate.finish().expect("compress");
    let zstd = zstd::encode_all(&body[..], 3).expect("compress");
    for (encoding, compressed) in [("gzip", gzip(&body)), ("deflate", deflated), ("zstd", zstd)] {
        let response = post(&t, "/v1/traces", PROTOBUF, Some(encoding), compressed).await;
        assert_eq!(response.status(), StatusCode::OK, "{encoding}");
    }
    let json_gzip = gzip(&example("logs.json"));
    assert_eq!(post(&t, "/v1/logs", JSON, Some("gzip"), json_gzip).await.status(), StatusCode::OK);
    assert_eq!(t.count("spans").await, 12);
    assert_eq!(t.count("logs").await, 1);
    t.stop().await;
}

#[tokio::test]
async fn every_error_gets_its_status() {
    let mut t = TestServer::start_with(|c| c.otlp.max_request_bytes = 64 * 1024).await;

    // 400 with a google.rpc.Status body, in the request's format.
    let response = post(&t, "/v1/traces", PROTOBUF, None, vec![0x0a, 100, 1, 2]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::CONTENT_TYPE], PROTOBUF);
    let status = RpcStatus::decode(response.bytes().await.expect("body")).expect("a google.rpc.Status");
    assert_eq!(status.code, 3);
    assert!(status.message.contains("protobuf"), "{}", status.message);
    let response = post(&t, "/v1/logs", JSON, None, b"{\"resourceLogs\": 7}".to_vec()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status: serde_json::Value = response.json().await.expect("JSON status");
    assert_eq!(status["code"], 3);
    assert!(status["message"].as_str().unwrap_or_default().contains("JSON"), "{status}");
    let response = post(&t, "/v1/logs", PROTOBUF, Some("gzip"), b"not gzip at all".to_vec()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Absurd nesting, 1,000 levels of arrays, in protobuf and in JSON.
    let deep = crate::grpc::hostile_request("deep", 1000).encode_to_vec();
    let response = post(&t, "/v1/traces", PROTOBUF, None, deep).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status = RpcStatus::decode(response.bytes().await.expect("body")).expect("a google.rpc.Status");
    assert!(status.message.contains("recursion"), "{}", status.message);
    let mut value = r#"{"intValue":"1"}"#.to_string();
    for _ in 0..1000 {
        value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
    }
    let deep = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"deep","attributes":[{{"key":"deep","value":{value}}}]}}]}}]}}]}}"#
    );
    let response = post(&t, "/v1/traces", JSON, None, deep.into_bytes()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status: serde_json::Value = response.json().await.expect("JSON status");
    assert!(status["message"].as_str().unwrap_or_default().contains("recursion"), "{status}");

    // 415 for other content types and encodings.
    assert_eq!(
        post(&t, "/v1/traces", "text/plain", None, b"hi".to_vec()).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let response = post(&t, "/v1/traces", PROTOBUF, Some("br"), vec![1, 2, 3]).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // 405 for other methods, 404 for other paths.
    let get = reqwest::Client::new().get(url(&t, "/v1/traces")).send().await.expect("answered");
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post(&t, "/v1/spans", PROTOBUF, None, vec![]).await.status(), StatusCode::NOT_FOUND);

    // 413 past the limit, measured after decompression: a small gzip body that inflates past it.
    let bomb = gzip(&vec![0u8; 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let response = post(&t, "/v1/logs", PROTOBUF, Some("gzip"), bomb).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let big = vec![0u8; 100 * 1024];
    assert_eq!(post(&t, "/v1/logs", PROTOBUF, None, big).await.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Empty requests succeed.
    assert_eq!(post(&t, "/v1/metrics", PROTOBUF, None, vec![]).await.status(), StatusCode::OK);
    assert_eq!(post(&t, "/v1/metrics", JSON, None, b"{}".to_vec()).await.status(), StatusCode::OK);
    assert_eq!(t.count("logs").await, 0);
    t.stop().await;
}

#[tokio::test]
async fn database_failure_is_a_retryable_503() {
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| {
        c.postgres.url = proxy.url();
        c.pipeline.retry_deadline_ms = 300;
    })
    .await;
    let body = ExportMetricsServiceRequest::default();
    assert_eq!(post(&t, "/v1/metrics", PROTOBUF, None, body.encode_to_vec()).await.status(), StatusCode::OK);
    proxy.cut();
    let response = post(
        &t,
        "/v1/traces",
        PROTOBUF,
        None,
        crate::common::fixtures::traces::request(nanos_now()).encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    let status = RpcStatus::decode(response.bytes().await.expect("body")).expect("status");
    assert_eq!(status.code, 14);
    t.stop().await;
}

#[tokio::test]
async fn cors_is_off_by_default_and_follows_the_allowed_origins() {
    let preflight = |t: &TestServer, origin: &str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, url(t, "/v1/traces"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .send()
    };
    let mut off = TestServer::start().await;
    let response = preflight(&off, "https://app.example.com").await.expect("answered");
    assert!(!response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    off.stop().await;

    let mut on =
        TestServer::start_with(|c| c.otlp.cors_allowed_origins = vec!["https://app.example.com".into()])
            .await;
    let response = preflight(&on, "https://app.example.com").await.expect("answered");
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    let response = preflight(&on, "https://evil.example.com").await.expect("answered");
    assert!(!response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    let response = reqwest::Client::new()
        .post(url(&on, "/v1/logs"))
        .header(header::ORIGIN, "https://app.example.com")
        .header(header::CONTENT_TYPE, JSON)
        .body(example("logs.json"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
    on.stop().await;
}

#[tokio::test]
async fn http2_cleartext_is_served_too() {
    let mut t = TestServer::start().await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    let response = client
        .post(url(&t, "/v1/traces"))
        .header(header::CONTENT_TYPE, PROTOBUF)
        .body(crate::common::fixtures::traces::request(nanos_now()).encode_to_vec())
        .send()
        .await
        .expect("answered over HTTP/2");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(t.count("spans").await, 4);
    t.stop().await;
}

#[tokio::test]
async fn a_full_queue_turns_requests_away_with_429_and_grpc_unavailable_with_retry_info() {
    use futures_util::FutureExt;
    use tonic_types::StatusExt;
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| {
        c.postgres.url = proxy.url();
        c.pipeline.queue_bytes = 1;
        c.pipeline.writers = 1;
        c.pipeline.queue_wait_ms = 200;
    })
    .await;

    // The database hangs. Of two requests, one takes the whole queue and waits on the database;
    // the other finds no room and is turned away first.
    proxy.pause();
    {
        let send = || {
            post(
                &t,
                "/v1/traces",
                PROTOBUF,
                None,
                crate::common::fixtures::traces::request(nanos_now()).encode_to_vec(),
            )
        };
        let (a, b) = (send(), send());
        tokio::pin!(a, b);
        let (rejected, held) = tokio::select! {
            r = &mut a => (r, b.as_mut().left_future()),
            r = &mut b => (r, a.as_mut().right_future()),
        };
        assert_eq!(rejected.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rejected.headers()[header::RETRY_AFTER], "1");
        // The database comes back: the held request is stored and answered with success.
        proxy.resume();
        assert_eq!(held.await.status(), StatusCode::OK);
    }
    assert_eq!(t.count("spans").await, 4);

    // The same over gRPC: UNAVAILABLE with a RetryInfo delay.
    proxy.pause();
    {
        let (mut c1, mut c2) = (t.traces().await, t.traces().await);
        let (a, b) = (
            c1.export(crate::common::fixtures::traces::request(nanos_now())),
            c2.export(crate::common::fixtures::traces::request(nanos_now())),
        );
        tokio::pin!(a, b);
        let (rejected, held) = tokio::select! {
            r = &mut a => (r, b.as_mut().left_future()),
            r = &mut b => (r, a.as_mut().right_future()),
        };
        let err = rejected.expect_err("no room");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        let retry = err.get_details_retry_info().expect("a RetryInfo detail");
        assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(1)));
        proxy.resume();
        held.await.expect("the held request is stored");
    }
    assert_eq!(t.count("spans").await, 8);
    t.stop().await;
}

#[tokio::test]
async fn special_doubles_in_otlp_json_are_stored_and_unreadable_values_refused() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let body = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json"}}}},
            {{"key":"ratio","value":{{"doubleValue":"-Infinity"}}}}]}},
          "scopeMetrics":[{{"metrics":[
            {{"name":"g","gauge":{{"dataPoints":[
              {{"timeUnixNano":"{now}","asDouble":"NaN"}},
              {{"timeUnixNano":"{t2}","asDouble":"Infinity","exemplars":[{{"timeUnixNano":"{now}","asDouble":"-Infinity"}}]}},
              {{"timeUnixNano":"{t3}","asDouble":"2.5"}}]}}}},
            {{"name":"h","histogram":{{"aggregationTemporality":2,"dataPoints":[
              {{"timeUnixNano":"{now}","count":"2","sum":"NaN","min":"-Infinity","max":"Infinity",
                "bucketCounts":["1","1"],"explicitBounds":["Infinity"]}}]}}}}]}}]}}]}}"#,
        t2 = now + 1,
        t3 = now + 2
    );
    let response = post(&t, "/v1/metrics", JSON, None, body.into_bytes()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert!(answer["partialSuccess"].is_null(), "{answer}");

    let rows = t
        .sql
        .query("SELECT value_double, exemplars FROM metric_points_number ORDER BY time_unix_nano", &[])
        .await
        .expect("points");
    let values: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
    assert!(values[0].is_nan());
    assert_eq!(&values[1..], &[f64::INFINITY, 2.5]);
    let histogram = t
        .sql
        .query_one("SELECT sum, min, max, explicit_bounds FROM metric_points_histogram", &[])
        .await
        .expect("histogram");
    assert!(histogram.get::<_, f64>(0).is_nan());
    assert_eq!(histogram.get::<_, f64>(1), f64::NEG_INFINITY);
    assert_eq!(histogram.get::<_, f64>(2), f64::INFINITY);
    assert_eq!(histogram.get::<_, Vec<f64>>(3), vec![f64::INFINITY]);

    // Read back through the query API, the exemplar and the resource attribute are exact too.
    let mut query = QueryServiceClient::connect(t.endpoint()).await.expect("connect");
    let range =
        Some(otelephant::query::proto::TimeRange { start_unix_nano: now - 1, end_unix_nano: now + 10 });
    let gauge = query
        .query_metrics(otelephant::query::proto::QueryMetricsRequest {
            name: "g".into(),
            time_range: range,
            ..Default::default()
        })
        .await
        .expect("queried")
        .into_inner();
    let resource_metrics = &gauge.raw.expect("raw").resource_metrics[0];
    let ratio =
        resource_metrics.resource.as_ref().expect("resource").attributes.iter().find(|kv| kv.key == "ratio");
    assert_eq!(
        ratio.and_then(|kv| kv.value.clone()).and_then(|v| v.value),
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::DoubleValue(f64::NEG_INFINITY))
    );
    use opentelemetry_proto::tonic::metrics::v1::{exemplar, metric::Data};
    let Some(Data::Gauge(points)) = &resource_metrics.scope_metrics[0].metrics[0].data else {
        panic!("a gauge")
    };
    assert_eq!(points.data_points[1].exemplars[0].value, Some(exemplar::Value::AsDouble(f64::NEG_INFINITY)));

    // A value that is no number is refused whole, naming its place; nothing of it is stored.
    for (value, place) in
        [(r#""asDouble":"abc""#, "dataPoints[0].asDouble"), (r#""asInt":"12x""#, "dataPoints[0].asInt")]
    {
        let body = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"bad","gauge":{{"dataPoints":[{{"timeUnixNano":"{now}",{value}}}]}}}}]}}]}}]}}"#
        );
        let response = post(&t, "/v1/metrics", JSON, None, body.into_bytes()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let status: serde_json::Value = response.json().await.expect("json");
        assert!(status["message"].as_str().is_some_and(|m| m.contains(place)), "{status}");
    }
    assert_eq!(t.count("metric_points_number").await, 3);
    t.stop().await;
}
