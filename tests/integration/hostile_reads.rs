//! The read side under hostile data and requests: values that once made a page loop, answers
//! that grew with what was stored, work that held up the async threads, and the browser-facing
//! defaults. Each test stores what an attacker could send, reads it as a person or a client
//! would, and checks that the server answers, within bounds, and keeps serving.

use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, number_data_point, ExponentialHistogram,
        ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    },
    trace::v1::{span::Event, ResourceSpans, ScopeSpans, Span},
};
use reqwest::StatusCode;

use crate::common::{clients::url, *};

fn metrics_request(metric: Metric) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> ExportMetricsServiceRequest {
    metrics_request(Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge { data_points: points })),
        ..Default::default()
    })
}

/// GETs a page; its status and text.
async fn page(t: &TestServer, path: &str) -> (StatusCode, String) {
    let response = reqwest::get(url(t, path)).await.expect("answered");
    (response.status(), response.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gauge_at_the_edge_of_float_spacing_draws_a_chart_and_the_server_stays_up() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let point = |i: u64, v: f64| NumberDataPoint {
        time_unix_nano: now - 60_000_000_000 + i * 1_000_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    // Float spacing at 1e17 is 16: a tick step of 5 once left the axis loop where it was.
    let values = [-1.000_000_000_000_000_2e17, -1e17, f64::MAX, f64::MIN, 5e-324, f64::NAN, f64::INFINITY];
    let points = values.iter().enumerate().map(|(i, v)| point(i as u64, *v)).collect();
    t.metrics().await.export(gauge("edge.gauge", points)).await.expect("export");
    let adjacent = vec![point(0, -1.000_000_000_000_000_2e17), point(1, -1e17)];
    t.metrics().await.export(gauge("adjacent.gauge", adjacent)).await.expect("export");

    for name in ["adjacent.gauge", "edge.gauge"] {
        for agg in ["avg", "max", "min", "sum"] {
            let (status, html) = page(&t, &format!("/metric?name={name}&agg={agg}&step=1s")).await;
            assert_eq!(status, StatusCode::OK, "{name} {agg}");
            assert!(html.contains("<svg class=\"chart lines\""), "{name} {agg}: a chart is drawn");
            assert!(html.len() < 1_000_000, "{name} {agg}: {} bytes", html.len());
            assert!(!html.contains("NaN\""), "{name} {agg}: every coordinate is a number");
        }
    }
    // Still serving, ingest included.
    t.metrics()
        .await
        .export(gauge("after.gauge", vec![point(0, 1.0)]))
        .await
        .expect("export after the views");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_histogram_of_half_a_million_buckets_draws_a_bounded_number_of_bars() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let point = ExponentialHistogramDataPoint {
        start_time_unix_nano: now - 30_000_000_000,
        time_unix_nano: now - 10_000_000_000,
        count: 500_000,
        scale: 20,
        positive: Some(Buckets { offset: -250_000, bucket_counts: vec![1; 500_000] }),
        ..Default::default()
    };
    let metric = Metric {
        name: "wide.histogram".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![point],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    t.metrics().await.export(metrics_request(metric)).await.expect("export");
    let (status, html) = page(&t, "/metric?name=wide.histogram").await;
    assert_eq!(status, StatusCode::OK);
    let bars = html.matches("<rect class=\"bar\"").count();
    assert!(bars > 0 && bars <= 200, "{bars} bars");
    assert!(html.contains("500000 buckets, drawn as 200 bars"), "the page says the buckets were merged");
    assert!(html.len() < 2_000_000, "{} bytes", html.len());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_span_with_many_events_gives_a_bounded_page() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let events: Vec<Event> = (0..20_000)
        .map(|i| Event { time_unix_nano: now + i, name: format!("event {i}"), ..Default::default() })
        .collect();
    let long = "x".repeat(200_000);
    let span = Span {
        trace_id: vec![0x77; 16],
        span_id: vec![0x77; 8],
        name: "busy".into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        events,
        attributes: vec![kv("long", s(&long))],
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    };
    t.traces().await.export(request).await.expect("export");
    let trace = "77".repeat(16);
    let span = "77".repeat(8);
    for path in [format!("/trace/{trace}?span={span}"), format!("/trace/{trace}/span/{span}")] {
        let (status, html) = page(&t, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.len() < 300_000, "{path}: {} bytes", html.len());
        assert!(html.contains("19900 more events"), "{path}: the events left out are counted");
        assert!(html.contains("more bytes)"), "{path}: the long value is cut with a mark");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chart_of_many_series_with_many_attributes_has_short_legends() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let points = (0..50)
        .map(|series| NumberDataPoint {
            time_unix_nano: now - 10_000_000_000,
            value: Some(number_data_point::Value::AsInt(series)),
            attributes: (0..2_000)
                .map(|i| {
                    kv(&format!("attribute.{i}"), s(&format!("{}", if i % 500 == 0 { series } else { i })))
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    t.metrics().await.export(gauge("wide.gauge", points)).await.expect("export");
    let (status, html) = page(&t, "/metric?name=wide.gauge").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("<g class=\"series\"").count(), 50, "one line per series");
    // Each legend names the four attributes that differ, not the 1,996 that do not.
    let legends: Vec<&str> =
        html.split("<li data-series=\"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
    assert_eq!(legends.len(), 50);
    for legend in legends {
        let mut keys: Vec<&str> = legend.split(", ").filter_map(|kv| kv.split('=').next()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["attribute.0", "attribute.1000", "attribute.1500", "attribute.500"], "{legend}");
    }
    t.stop().await;
}

/// A client that follows no redirects, for reading them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

#[tokio::test]
async fn every_answer_carries_the_browser_safety_headers() {
    let mut t = TestServer::start().await;
    let client = reqwest::Client::new();
    let page = client.get(url(&t, "/")).send().await.expect("answered");
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().expect("text");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src 'self' 'unsafe-inline'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h["cache-control"], "no-store");
    assert!(!h.contains_key("strict-transport-security"), "no HSTS over plain HTTP");
    for path in ["/jaeger/api/services", "/jaeger/api/traces?service=a&lookback=%3Cimg%3E"] {
        let answer = client.get(url(&t, path)).send().await.expect("answered");
        let h = answer.headers();
        assert_eq!(h["content-type"], "application/json", "{path}");
        assert_eq!(
            h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'; sandbox",
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
    t.stop().await;
}

#[tokio::test]
async fn the_read_side_answers_only_the_host_names_it_knows() {
    let mut t = TestServer::start_with(|c| c.ui.allowed_hosts = vec!["otelephant.internal".into()]).await;
    let addr = t.server.as_ref().expect("running").http_addr;
    let client = reqwest::Client::new();
    let with_host = |path: &str, host: &str| {
        client.get(format!("http://{addr}{path}")).header(reqwest::header::HOST, host.to_owned()).send()
    };
    for path in ["/", "/jaeger/api/services", "/logs"] {
        let refused = with_host(path, "rebound.evil.example").await.expect("answered");
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
        assert!(refused.text().await.expect("text").contains("ui.allowed_hosts"));
        for host in ["localhost:4318", "127.0.0.1", "otelephant.internal:4318", "[::1]:4318"] {
            let answered = with_host(path, host).await.expect("answered");
            assert_eq!(answered.status(), StatusCode::OK, "{path} for {host}");
        }
    }
    // Exporters name the server however they reach it.
    let export = client
        .post(format!("http://{addr}/v1/logs"))
        .header(reqwest::header::HOST, "collector-facing-name.example")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(export.status(), StatusCode::OK);
    t.stop().await;
}

#[tokio::test]
async fn the_json_api_takes_only_json_so_no_page_can_post_to_it_unasked() {
    let mut t = TestServer::start().await;
    let client = reqwest::Client::new();
    let method = url(&t, "/otelephant.query.v1.QueryService/ListServices");
    for content_type in
        [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data")]
    {
        let mut request = client.post(&method).body("{}");
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        let answer = request.send().await.expect("answered");
        assert_eq!(answer.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
    }
    let answer = client
        .post(&method)
        .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), StatusCode::OK);
    t.stop().await;
}

#[tokio::test]
async fn sign_in_sends_people_only_to_this_server_and_refuses_cross_site_posts() {
    let mut t =
        TestServer::start_with(|c| c.auth.query_token = Some(otelephant::auth::Secret("tok-91".into())))
            .await;
    let client = no_redirects();
    let login = url(&t, "/login");
    let sign_in = |next: &'static str, origin: Option<&'static str>| {
        let mut request = client.post(&login).form(&[("token", "tok-91"), ("next", next)]);
        if let Some(origin) = origin {
            request = request.header(reqwest::header::ORIGIN, origin);
        }
        request.send()
    };
    for next in ["/%09/evil.example", "/\t/evil.example", "/\\evil.example", "//evil.example", "/\r\nX: y"] {
        let answer = sign_in(next, None).await.expect("answered");
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(answer.headers()["location"], "/", "{next:?}");
    }
    let answer = sign_in("/traces?service=a", None).await.expect("answered");
    assert_eq!(answer.headers()["location"], "/traces?service=a");

    let cross = sign_in("/", Some("https://evil.example")).await.expect("answered");
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert!(!cross.headers().contains_key("set-cookie"), "no session for a cross-site post");
    let logout = client
        .post(url(&t, "/logout"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("answered");
    assert_eq!(logout.status(), StatusCode::FORBIDDEN);
    t.stop().await;
}

/// Calls a query service method over HTTP/JSON; the status and the answer.
async fn call(
    t: &TestServer,
    method: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value, usize) {
    let response = reqwest::Client::new()
        .post(url(t, &format!("/otelephant.query.v1.QueryService/{method}")))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("answered");
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON"), bytes.len())
}

/// `count` log records of `bytes` each, sent in requests of eight.
async fn large_records(t: &TestServer, count: u64, bytes: usize) {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::AnyValue,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };
    let now = nanos_now() - 60_000_000_000;
    for batch in 0..count.div_ceil(8) {
        let records = (batch * 8..((batch + 1) * 8).min(count))
            .map(|i| LogRecord {
                time_unix_nano: now + i,
                body: Some(AnyValue { value: Some(s(&format!("{i:08} {}", "y".repeat(bytes)))) }),
                ..Default::default()
            })
            .collect();
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                ..Default::default()
            }],
        };
        t.logs().await.export(request).await.expect("export");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_large_records_ends_at_the_answer_budget_and_goes_on_by_token() {
    const ANSWER: usize = 4 << 20;
    let mut t = TestServer::start_with(|c| c.query.answer_bytes = ANSWER).await;
    large_records(&t, 40, 256 << 10).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (status, page, bytes) =
            call(&t, "SearchLogs", serde_json::json!({ "pageSize": 1000, "pageToken": token })).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(bytes <= ANSWER, "a page of {bytes} bytes, past the budget");
        pages += 1;
        let records = page["logs"]["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        seen.extend(records.iter().map(|r| r["body"]["stringValue"].as_str().expect("body")[..8].to_owned()));
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => break,
        }
    }
    assert!(pages >= 5, "40 records of 256 KiB take several 4 MiB pages, not {pages}");
    let expected: Vec<String> = (0..40).rev().map(|i| format!("{i:08}")).collect();
    assert_eq!(seen, expected, "every record once, newest first");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_larger_than_the_answer_budget_is_refused_and_a_repeated_id_read_once() {
    let mut t = TestServer::start_with(|c| c.query.answer_bytes = 2 << 20).await;
    let now = nanos_now();
    let spans = |trace: u8, n: u8, bytes: usize| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![trace; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("s{i}"),
                        start_time_unix_nano: now - 5_000_000_000,
                        end_time_unix_nano: now - 4_000_000_000,
                        attributes: vec![kv("big", s(&"z".repeat(bytes)))],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.traces().await.export(spans(0x11, 8, 512 << 10)).await.expect("export");
    t.traces().await.export(spans(0x22, 2, 16)).await.expect("export");
    let (status, err, _) = call(&t, "GetTrace", serde_json::json!({ "traceId": "11".repeat(16) })).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err["code"], "resource_exhausted");
    assert!(err["message"].as_str().expect("message").contains("query.answer_bytes"), "{err}");
    let (status, _, _) = call(&t, "GetTrace", serde_json::json!({ "traceId": "22".repeat(16) })).await;
    assert_eq!(status, StatusCode::OK, "a small trace is still read");

    let small = "22".repeat(16);
    let repeated: String = (0..60)
        .map(|i| format!("traceID={}&", if i % 2 == 0 { small.clone() } else { small.to_uppercase() }))
        .collect();
    let answer: serde_json::Value = reqwest::get(url(&t, &format!("/jaeger/api/traces?{repeated}")))
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["data"].as_array().expect("data").len(), 1, "one trace however often named");
    let too_many: String = (0..101).map(|i| format!("traceID={i:032x}&")).collect();
    let refused = reqwest::get(url(&t, &format!("/jaeger/api/traces?{too_many}"))).await.expect("answered");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    // Several traces share one answer's budget: what fits comes back, with the reason the rest did not.
    let (big, small) = ("11".repeat(16), "22".repeat(16));
    let mixed: serde_json::Value =
        reqwest::get(url(&t, &format!("/jaeger/api/traces?traceID={small}&traceID={big}")))
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON");
    assert_eq!(mixed["data"].as_array().expect("data").len(), 1, "{mixed}");
    assert!(mixed["errors"][0]["msg"].as_str().expect("a reason").contains("query.answer_bytes"), "{mixed}");
    t.stop().await;
}

#[tokio::test]
async fn filters_take_nan_and_the_infinities_as_the_json_mapping_writes_them() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let mut t = TestServer::start().await;
    let now = nanos_now() - 5_000_000_000;
    let span = |id: u8, ratio: f64| Span {
        trace_id: vec![id; 16],
        span_id: vec![id; 8],
        name: "ratio".into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000,
        attributes: vec![kv("ratio", Value::DoubleValue(ratio))],
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", s("svc"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(0x31, f64::NAN), span(0x32, f64::INFINITY), span(0x33, 1.5)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.traces().await.export(request).await.expect("export");
    for (written, trace) in [("\"NaN\"", "31"), ("\"Infinity\"", "32"), ("1.5", "33"), ("\"1.5\"", "33")] {
        let body: serde_json::Value = serde_json::from_str(&format!(
            r#"{{"service": "svc", "attributes": [{{"key": "ratio", "value": {{"doubleValue": {written}}}}}]}}"#
        ))
        .expect("JSON");
        let (status, found, _) = call(&t, "SearchTraces", body).await;
        assert_eq!(status, StatusCode::OK, "{written}: {found}");
        let ids: Vec<&str> = found["traces"]
            .as_array()
            .expect("traces")
            .iter()
            .filter_map(|t| t["traceId"].as_str())
            .collect();
        assert_eq!(ids, [trace.repeat(16)], "{written}");
    }
    t.stop().await;
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_address_and_sessions_end_with_their_token() {
    let mut t =
        TestServer::start_with(|c| c.auth.query_token = Some(otelephant::auth::Secret("tok-77".into())))
            .await;
    let client = no_redirects();
    let sign_in = |token: &'static str| client.post(url(&t, "/login")).form(&[("token", token)]).send();
    for _ in 0..otelephant::auth::MAX_FAILURES {
        assert_eq!(sign_in("guess").await.expect("answered").status(), StatusCode::UNAUTHORIZED);
    }
    let limited = sign_in("guess").await.expect("answered");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.text().await.expect("text").contains("too many failed sign-ins"));
    assert_eq!(
        sign_in("tok-77").await.expect("answered").status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right token waits out the window"
    );

    // A session lives while its token is accepted: one given for a token since rotated out ends.
    use sha2::Digest;
    let digest = |bytes: &[u8]| sha2::Sha256::digest(bytes).to_vec();
    let expires = nanos_now() as i64 + 3_600_000_000_000;
    for (id, token) in [([7u8; 32], "tok-old"), ([8u8; 32], "tok-77")] {
        t.sql
            .execute(
                "INSERT INTO ui_sessions VALUES ($1, $2, $3)",
                &[&digest(&id), &digest(token.as_bytes()), &expires],
            )
            .await
            .expect("insert");
    }
    let page = |id: [u8; 32]| {
        client
            .get(url(&t, "/traces"))
            .header(reqwest::header::COOKIE, format!("otelephant_session={}", hex::encode(id)))
            .send()
    };
    assert_eq!(
        page([8u8; 32]).await.expect("answered").status(),
        StatusCode::OK,
        "a session of the token reads"
    );
    let page = page([7u8; 32]).await.expect("answered");
    assert!(page.status().is_redirection(), "a session of a token no longer accepted: {}", page.status());
    t.stop().await;
}

/// A process's resident memory now and at its peak since the peak was last reset, in bytes.
fn resident(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .expect("a kB figure")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn amplified_reads_stay_within_the_read_memory_while_an_export_is_answered() {
    use crate::common::binary;
    const MIB: u64 = 1 << 20;
    let schema = TestSchema::new();
    let mut server = binary::start_with(&schema, |command| {
        command
            .env("RUST_LOG", "warn")
            .env("OTELEPHANT_QUERY__ANSWER_BYTES", (8 * MIB).to_string())
            .env("OTELEPHANT_QUERY__MEMORY_BYTES", (32 * MIB).to_string())
    })
    .await;
    let pid = server.child.id().expect("running");
    let http = format!("http://127.0.0.1:{}", server.http);
    let grpc = format!("http://127.0.0.1:{}", server.grpc);
    // 96 log records and a trace of 48 spans, 1 MiB each.
    let mut logs =
        opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient::connect(
            grpc.clone(),
        )
        .await
        .expect("connect")
        .max_encoding_message_size(usize::MAX);
    let mut traces =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            grpc,
        )
        .await
        .expect("connect");
    let mib = "m".repeat(MIB as usize);
    let now = nanos_now() - 30_000_000_000;
    for batch in 0..12u64 {
        use opentelemetry_proto::tonic::{
            collector::logs::v1::ExportLogsServiceRequest,
            common::v1::AnyValue,
            logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        };
        let records = (0..8)
            .map(|i| LogRecord {
                time_unix_nano: now + batch * 8 + i,
                body: Some(AnyValue { value: Some(s(&mib)) }),
                ..Default::default()
            })
            .collect();
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                ..Default::default()
            }],
        };
        logs.export(request).await.expect("export logs");
    }
    for batch in 0..6u8 {
        let spans = (0..8u8)
            .map(|i| Span {
                trace_id: vec![0xbb; 16],
                span_id: vec![batch * 8 + i + 1; 8],
                name: "big".into(),
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1,
                attributes: vec![kv("big", s(&mib))],
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        traces.export(request).await.expect("export spans");
    }
    // The peak from here on is the reads'.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak");
    let (before, _) = resident(pid);

    let client = reqwest::Client::new();
    let repeated: String = (0..60).map(|_| format!("traceID={}&", "bb".repeat(16))).collect();
    let mut reads = Vec::new();
    for round in 0..3 {
        for (path, body) in [
            ("/otelephant.query.v1.QueryService/SearchLogs", Some(r#"{"pageSize": 1000}"#)),
            ("/otelephant.query.v1.QueryService/SearchLogs", Some(r#"{"pageSize": 1000}"#)),
            (
                "/otelephant.query.v1.QueryService/GetTrace",
                Some(r#"{"traceId": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}"#),
            ),
            ("/logs", None),
            (&*format!("/jaeger/api/traces?{repeated}"), None),
        ] {
            let request = match body {
                Some(body) => {
                    client.post(format!("{http}{path}")).header("content-type", "application/json").body(body)
                }
                None => client.get(format!("{http}{path}")),
            };
            reads.push(tokio::spawn(async move {
                let answer = request.send().await.expect("answered");
                let status = answer.status();
                (round, status, answer.bytes().await.map_or(0, |b| b.len()))
            }));
        }
    }
    // An innocent export while they run.
    let innocent = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client
            .post(format!("{http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(prost::Message::encode_to_vec(&crate::common::fixtures::traces::request(nanos_now())))
            .send(),
    )
    .await
    .expect("the innocent export is answered within 30 s")
    .expect("answered");
    assert!(innocent.status().is_success(), "{}", innocent.status());
    let mut largest = 0;
    for read in reads {
        let (_, status, bytes) = read.await.expect("a read");
        assert!(
            status.is_success() || status == StatusCode::TOO_MANY_REQUESTS,
            "each read is answered, or refused for the memory it would take: {status}"
        );
        largest = largest.max(bytes);
    }
    let (_, peak) = resident(pid);
    let grown = peak.saturating_sub(before);
    println!(
        "15 concurrent reads of 1 MiB records: peak +{} MiB, largest answer {} MiB",
        grown / MIB,
        largest as u64 / MIB
    );
    assert!(largest as u64 <= 8 * MIB, "an answer of {largest} bytes, past query.answer_bytes");
    // The read memory (32 MiB), with the copies an answer passes through on its way out: 87-96
    // MiB measured here in a debug build; before answers were bounded, one of these pages took
    // hundreds.
    assert!(grown < 5 * 32 * MIB, "resident memory grew by {} MiB", grown / MIB);
    binary::signal(&server.child, "-TERM");
    let _ = server.child.wait().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn span_details_probe_linked_traces_without_reading_them() {
    use opentelemetry_proto::tonic::trace::v1::span::Link;
    // An answer of 1 MiB could not hold the linked trace: only a probe can say it is stored.
    let mut t = TestServer::start_with(|c| c.query.answer_bytes = 1 << 20).await;
    let now = nanos_now() - 5_000_000_000;
    let wide = |batch: u16| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..500u16)
                    .map(|i| Span {
                        trace_id: vec![0x5a; 16],
                        span_id: [[0x5a, 0x5a], batch.to_be_bytes(), [0, 0], i.to_be_bytes()].concat(),
                        name: "wide".into(),
                        start_time_unix_nano: now,
                        end_time_unix_nano: now + 1,
                        attributes: vec![kv("pad", s(&"p".repeat(1_000)))],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    for batch in 0..4 {
        t.traces().await.export(wide(batch)).await.expect("export");
    }
    let linker = Span {
        trace_id: vec![0x6b; 16],
        span_id: vec![0x6b; 8],
        name: "linker".into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1,
        links: (0..25u8)
            .map(|i| Link {
                trace_id: if i == 24 { vec![0x7c; 16] } else { vec![0x5a; 16] },
                span_id: vec![i; 8],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![linker], ..Default::default() }],
            ..Default::default()
        }],
    };
    t.traces().await.export(request).await.expect("export");
    let (status, trace) = page(&t, &format!("/trace/{}", "5a".repeat(16))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the linked trace is larger than an answer");
    assert!(trace.contains("query.answer_bytes"));
    let (status, html) = page(&t, &format!("/trace/{}/span/{}", "6b".repeat(16), "6b".repeat(8))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let stored_links = html.matches(&format!("href=\"/trace/{}?span=", "5a".repeat(16))).count();
    assert_eq!(stored_links, 20, "the first 20 links, each to a stored trace");
    assert!(html.contains("5 more links"), "the links past 20 are counted");
    t.stop().await;
}

#[tokio::test]
async fn facets_of_records_with_thousands_of_keys_stay_a_dozen_keys_and_fit_a_small_answer() {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };
    const ANSWER: usize = 64 << 10;
    let mut t = TestServer::start_with(|c| c.query.answer_bytes = ANSWER).await;
    // Two records sharing 3,000 keys, each value 180 characters: every pair counts as a facet.
    let attributes: Vec<_> =
        (0..3_000).map(|i| kv(&format!("key.{i:05}"), s(&format!("{i:05}{}", "v".repeat(175))))).collect();
    let record = |n: u64| LogRecord {
        time_unix_nano: nanos_now() - 60_000_000_000 + n,
        attributes: attributes.clone(),
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs { log_records: vec![record(0), record(1)], ..Default::default() }],
            ..Default::default()
        }],
    };
    t.logs().await.export(request).await.expect("export");
    let (status, facets, bytes) = call(&t, "LogFacets", serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{facets}");
    assert!(bytes <= ANSWER);
    let keys = facets["attributes"].as_array().expect("attributes");
    assert_eq!(keys.len(), 12, "the dozen keys that cover the most records, not 3,000");
    let (status, _) = page(&t, "/logs").await;
    assert_eq!(status, StatusCode::OK);
    t.stop().await;
}

#[tokio::test]
async fn a_service_naming_a_new_host_per_call_gives_a_bounded_dependencies_answer_and_page() {
    let mut t = TestServer::start().await;
    // 3,000 client spans, each to a host of its own, and five to one busy host.
    let now = nanos_now() - 60_000_000_000;
    let client = |i: u32, host: String| Span {
        trace_id: [i.to_be_bytes(); 4].concat(),
        span_id: [i.to_be_bytes(), 1u32.to_be_bytes()].concat(),
        name: "GET".into(),
        kind: 3,
        start_time_unix_nano: now + u64::from(i),
        end_time_unix_nano: now + u64::from(i) + 1_000_000,
        attributes: vec![kv("server.address", s(&host))],
        ..Default::default()
    };
    let spans: Vec<Span> = (0..3_000)
        .map(|i| client(i, format!("host-{i:05}.example")))
        .chain((3_000..3_005).map(|i| client(i, "busy.example".into())))
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", s("crawler"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    t.traces().await.export(request).await.expect("export");
    let (status, answer, _) = call(&t, "ListServiceDependencies", serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let peers = answer["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), otelephant::query::traces::MAX_PEERS, "the most called, not 3,001");
    assert_eq!(answer["peersTruncated"], serde_json::json!(true));
    let busy = peers.iter().find(|p| p["peer"] == "busy.example").expect("the busiest host is kept");
    assert_eq!(busy["callCount"], serde_json::json!("5"));
    let (status, page) = page(&t, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("the 1000 most called are shown"), "the page says so");
    assert!(page.matches("class=\"node peer").count() <= 60, "the map draws at most its 60 nodes");
    t.stop().await;
}
