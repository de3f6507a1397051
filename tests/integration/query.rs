//! The query service over a real gRPC client: what GetTrace hands back is what was sent.

use opentelemetry_proto::tonic::trace::v1::TracesData;
use otelephant::query::proto::{
    query_service_client::QueryServiceClient, GetTraceRequest, ListOperationsRequest, ListServicesRequest,
    Operation, TimeRange,
};
use tonic::{transport::Channel, Code};

use crate::common::{
    fixtures::query::{flatten, one_trace, TRACE},
    *,
};

async fn query(t: &TestServer) -> QueryServiceClient<Channel> {
    QueryServiceClient::connect(t.endpoint()).await.expect("connect")
}

#[tokio::test]
async fn get_trace_hands_back_what_was_sent_once() {
    let mut t = TestServer::start().await;
    let sent = one_trace(nanos_now());
    // The exporter retried: every span is stored twice.
    t.traces().await.export(sent.clone()).await.expect("export");
    t.traces().await.export(sent.clone()).await.expect("retried export");
    assert_eq!(t.count("spans").await, 8);

    let got: TracesData = query(&t)
        .await
        .get_trace(GetTraceRequest { trace_id: hex::encode(TRACE) })
        .await
        .expect("trace found")
        .into_inner();
    assert_eq!(flatten(&got.resource_spans), flatten(&sent.resource_spans));
    // The two ResourceSpans carried the same resource: stored once, handed back as one group,
    // with the scopes as stored.
    assert_eq!(got.resource_spans.len(), 1);
    assert_eq!(got.resource_spans[0].scope_spans.len(), 2);

    let missing = query(&t).await.get_trace(GetTraceRequest { trace_id: "00".repeat(16) }).await;
    assert_eq!(missing.expect_err("no such trace").code(), Code::NotFound);
    let bad =
        query(&t).await.get_trace(GetTraceRequest { trace_id: "xyz".into() }).await.expect_err("bad hex");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("trace_id"), "names the field: {}", bad.message());
    t.stop().await;
}

#[tokio::test]
async fn spans_that_differ_come_back_even_with_the_same_id_and_start() {
    let mut t = TestServer::start().await;
    let mut sent = one_trace(nanos_now());
    let spans = &mut sent.resource_spans[0].scope_spans[0].spans;
    let mut twin = spans[0].clone();
    twin.name = format!("{} (another span, same id and start)", twin.name);
    spans.push(twin);
    t.traces().await.export(sent.clone()).await.expect("export");
    let got = query(&t)
        .await
        .get_trace(GetTraceRequest { trace_id: hex::encode(TRACE) })
        .await
        .expect("trace found")
        .into_inner();
    assert_eq!(flatten(&got.resource_spans), flatten(&sent.resource_spans));
    t.stop().await;
}

#[tokio::test]
async fn services_and_operations_over_a_time_range() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    // Ten seconds ago, so the spans lie inside the default range (the last hour).
    t.traces().await.export(one_trace(now - 10_000_000_000)).await.expect("export");

    let services = query(&t).await.list_services(ListServicesRequest::default()).await.expect("services");
    assert_eq!(services.into_inner().services, ["checkout"]);

    let long_ago = TimeRange { start_unix_nano: 1_000, end_unix_nano: 2_000 };
    let none = query(&t)
        .await
        .list_services(ListServicesRequest { time_range: Some(long_ago), ..Default::default() })
        .await
        .expect("services then");
    assert!(none.into_inner().services.is_empty());

    let inverted = TimeRange { start_unix_nano: 2_000, end_unix_nano: 1_000 };
    let err = query(&t)
        .await
        .list_services(ListServicesRequest { time_range: Some(inverted), ..Default::default() })
        .await
        .expect_err("inverted range");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("time_range"), "{}", err.message());

    let operations = query(&t)
        .await
        .list_operations(ListOperationsRequest { service: "checkout".into(), ..Default::default() })
        .await
        .expect("operations")
        .into_inner()
        .operations;
    let expected: Vec<Operation> =
        (0..4).map(|i| Operation { name: format!("GET /users/{{id}} ✓ {i}"), kind: i % 6 }).collect();
    assert_eq!(operations, expected);
    let err =
        query(&t).await.list_operations(ListOperationsRequest::default()).await.expect_err("no service");
    assert_eq!(err.code(), Code::InvalidArgument);
    t.stop().await;
}

#[tokio::test]
async fn grpc_health_is_serving_while_the_database_is_up() {
    let mut t = TestServer::start().await;
    let channel = Channel::from_shared(t.endpoint()).expect("endpoint").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    t.stop().await;
}

mod search {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::{any_value::Value, AnyValue},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };
    use otelephant::query::proto::{
        AttributeFilter, SearchLogsRequest, SearchTracesRequest, TimeRange, TraceSummary,
    };
    use tonic::Code;

    use super::query;
    use crate::common::{
        fixtures::query::{resource, traces, SECOND},
        *,
    };

    async fn search(t: &TestServer, request: SearchTracesRequest) -> (Vec<TraceSummary>, String) {
        let response = query(t).await.search_traces(request).await.expect("search").into_inner();
        (response.traces, response.next_page_token)
    }

    fn ids(traces: &[TraceSummary]) -> Vec<String> {
        traces.iter().map(|t| t.trace_id[..2].to_owned()).collect()
    }

    #[tokio::test]
    async fn search_traces_filters_summarizes_and_pages() {
        let mut t = TestServer::start().await;
        let now = nanos_now();
        t.traces().await.export(traces(now)).await.expect("export");
        t.traces().await.export(traces(now)).await.expect("retried export");

        let (all, token) = search(&t, SearchTracesRequest::default()).await;
        assert_eq!(ids(&all), ["03", "02", "01"], "newest first");
        assert!(token.is_empty());
        let first = &all[2];
        assert_eq!(first.trace_id, "01".repeat(16));
        assert_eq!((first.root_service.as_str(), first.root_span_name.as_str()), ("checkout", "GET /cart"));
        assert_eq!(first.start_unix_nano, now - 30 * SECOND);
        assert_eq!(first.duration_nanos, 900_000_000);
        assert_eq!((first.span_count, first.error_count), (2, 1), "retried spans count once");
        assert_eq!(first.services, ["billing", "checkout"]);

        let (page1, token) = search(&t, SearchTracesRequest { page_size: 2, ..Default::default() }).await;
        assert_eq!(ids(&page1), ["03", "02"]);
        let (page2, last) =
            search(&t, SearchTracesRequest { page_size: 2, page_token: token, ..Default::default() }).await;
        assert_eq!(ids(&page2), ["01"]);
        assert!(last.is_empty());

        let by = |request: SearchTracesRequest| {
            let t = &t;
            async move { ids(&search(t, request).await.0) }
        };
        assert_eq!(
            by(SearchTracesRequest { service: "billing".into(), ..Default::default() }).await,
            ["02", "01"]
        );
        assert_eq!(
            by(SearchTracesRequest { span_name: "GET /cart".into(), ..Default::default() }).await,
            ["03", "01"]
        );
        assert_eq!(by(SearchTracesRequest { errors_only: true, ..Default::default() }).await, ["01"]);
        assert_eq!(
            by(SearchTracesRequest { min_duration_nanos: 100_000_000, ..Default::default() }).await,
            ["01"]
        );
        assert_eq!(
            by(SearchTracesRequest { max_duration_nanos: 10_000_000, ..Default::default() }).await,
            ["03"]
        );
        let filter = |key: &str, value: Value| AttributeFilter {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        };
        let int_200 = vec![filter("http.response.status_code", Value::IntValue(200))];
        assert_eq!(by(SearchTracesRequest { attributes: int_200, ..Default::default() }).await, ["02", "01"]);
        let double_200 = vec![filter("http.response.status_code", Value::DoubleValue(200.0))];
        assert_eq!(by(SearchTracesRequest { attributes: double_200, ..Default::default() }).await, ["03"]);
        let on_resource = vec![filter("host.name", Value::StringValue("billing-host".into()))];
        assert_eq!(
            by(SearchTracesRequest { attributes: on_resource, ..Default::default() }).await,
            ["02", "01"]
        );
        let range = otelephant::query::proto::TimeRange {
            start_unix_nano: now - 25 * SECOND,
            end_unix_nano: now - 5 * SECOND,
        };
        assert_eq!(
            by(SearchTracesRequest { time_range: Some(range), ..Default::default() }).await,
            ["03", "02"]
        );

        // Services, one a page.
        use otelephant::query::proto::ListServicesRequest;
        let first = query(&t)
            .await
            .list_services(ListServicesRequest { page_size: 1, ..Default::default() })
            .await
            .expect("services")
            .into_inner();
        assert_eq!(first.services, ["billing"]);
        let second = query(&t)
            .await
            .list_services(ListServicesRequest {
                page_size: 1,
                page_token: first.next_page_token,
                ..Default::default()
            })
            .await
            .expect("services")
            .into_inner();
        assert_eq!(second.services, ["checkout"]);
        assert!(second.next_page_token.is_empty());

        let bad = query(&t)
            .await
            .search_traces(SearchTracesRequest { page_token: "not-a-token!".into(), ..Default::default() })
            .await
            .expect_err("bad token");
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("page_token"));
        let no_value = query(&t)
            .await
            .search_traces(SearchTracesRequest {
                attributes: vec![AttributeFilter { key: "k".into(), value: None }],
                ..Default::default()
            })
            .await
            .expect_err("filter without value");
        assert!(no_value.message().contains("attributes[0].value"), "{}", no_value.message());
        t.stop().await;
    }

    fn log(time: u64, severity: i32, body: &str, trace: Option<u8>) -> LogRecord {
        LogRecord {
            time_unix_nano: time,
            severity_number: severity,
            body: Some(AnyValue { value: Some(Value::StringValue(body.into())) }),
            attributes: vec![kv("n", Value::IntValue(severity as i64))],
            trace_id: trace.map(|t| vec![t; 16]).unwrap_or_default(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn search_logs_filters_and_pages_through_equal_times() {
        let mut t = TestServer::start().await;
        let now = nanos_now() - 60 * SECOND;
        let group = |service: &str, records: Vec<LogRecord>| ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            schema_url: String::new(),
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![
                group(
                    "checkout",
                    vec![
                        log(now, 9, "cart loaded", Some(7)),
                        log(now, 17, "payment failed: card declined", Some(7)),
                        log(now, 13, "retrying payment", None),
                    ],
                ),
                group("billing", vec![log(now + SECOND, 21, "ledger unavailable", None)]),
            ],
        };
        t.logs().await.export(request).await.expect("export");

        let search = |request: SearchLogsRequest| {
            let t = &t;
            async move {
                let response = query(t).await.search_logs(request).await.expect("search").into_inner();
                let bodies: Vec<String> = response
                    .logs
                    .unwrap_or_default()
                    .resource_logs
                    .iter()
                    .flat_map(|r| r.scope_logs.iter().flat_map(|s| s.log_records.iter()))
                    .map(|l| match &l.body.as_ref().and_then(|b| b.value.clone()) {
                        Some(Value::StringValue(s)) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                (bodies, response.next_page_token)
            }
        };
        let (all, _) = search(SearchLogsRequest::default()).await;
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], "ledger unavailable", "newest first");

        // Three records share one time: paging one at a time visits each exactly once.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) =
                search(SearchLogsRequest { page_size: 1, page_token: token, ..Default::default() }).await;
            seen.extend(page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        let (mut sorted_seen, mut sorted_all) = (seen.clone(), all.clone());
        sorted_seen.sort();
        sorted_all.sort();
        assert_eq!(sorted_seen, sorted_all);

        let bodies = |r| async move { search(r).await.0 };
        assert_eq!(
            bodies(SearchLogsRequest { service: "billing".into(), ..Default::default() }).await,
            ["ledger unavailable"]
        );
        let severe = bodies(SearchLogsRequest { min_severity: 17, ..Default::default() }).await;
        assert_eq!(severe.len(), 2);
        assert_eq!(
            bodies(SearchLogsRequest {
                body_contains: "payment".into(),
                trace_id: "07".repeat(16),
                ..Default::default()
            })
            .await,
            ["payment failed: card declined"]
        );
        // Case matters unless the request says otherwise.
        let payment = |body_ignore_case| SearchLogsRequest {
            body_contains: "PAYMENT".into(),
            body_ignore_case,
            ..Default::default()
        };
        assert!(bodies(payment(false)).await.is_empty());
        let mut any_case = bodies(payment(true)).await;
        any_case.sort();
        assert_eq!(any_case, ["payment failed: card declined", "retrying payment"]);
        let filter =
            AttributeFilter { key: "n".into(), value: Some(AnyValue { value: Some(Value::IntValue(13)) }) };
        assert_eq!(
            bodies(SearchLogsRequest { attributes: vec![filter], ..Default::default() }).await,
            ["retrying payment"]
        );

        let full = query(&t)
            .await
            .search_logs(SearchLogsRequest {
                service: "checkout".into(),
                min_severity: 17,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .logs
            .expect("logs");
        let resource = full.resource_logs[0].resource.clone().expect("resource");
        assert_eq!(normalize(&resource.attributes), normalize(&resource_attrs("checkout")));
        let record = &full.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.trace_id, vec![7; 16]);
        assert_eq!(record.time_unix_nano, now);
        assert_eq!(normalize(&record.attributes), normalize(&[kv("n", Value::IntValue(17))]));

        let bad = query(&t)
            .await
            .search_logs(SearchLogsRequest { trace_id: "abc".into(), ..Default::default() })
            .await;
        assert_eq!(bad.expect_err("bad trace id").code(), Code::InvalidArgument);
        t.stop().await;
    }

    #[tokio::test]
    async fn log_pages_read_newest_windows_first_and_find_every_record_in_order() {
        let mut t = TestServer::start().await;
        let now = nanos_now() - 60 * SECOND;
        // 240 records, one every 45 s over three hours, with runs of equal times; and one a
        // day back, alone in its window.
        let mut records: Vec<LogRecord> =
            (0..240u64).map(|i| log(now - (i / 3) * 3 * 45 * SECOND, 9, &format!("r{i}"), None)).collect();
        records.push(log(now - 20 * 3_600 * SECOND, 9, "far back", None));
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("api"),
                scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
                schema_url: String::new(),
            }],
        };
        t.logs().await.export(request).await.expect("export");
        let range = TimeRange { start_unix_nano: now - 24 * 3_600 * SECOND, end_unix_nano: now + SECOND };
        let expected: Vec<i64> = t
            .sql
            .query("SELECT timestamp_unix_nano FROM logs ORDER BY 1 DESC", &[])
            .await
            .expect("times")
            .iter()
            .map(|r| r.get(0))
            .collect();
        for page_size in [1, 7, 50, 1000] {
            let (mut times, mut token, mut pages) = (Vec::new(), String::new(), 0);
            loop {
                let request = SearchLogsRequest {
                    time_range: Some(range),
                    page_size,
                    page_token: token,
                    ..Default::default()
                };
                let page = query(&t).await.search_logs(request).await.expect("search").into_inner();
                pages += 1;
                for r in page.logs.unwrap_or_default().resource_logs {
                    times.extend(
                        r.scope_logs
                            .iter()
                            .flat_map(|s| s.log_records.iter())
                            .map(|l| l.time_unix_nano as i64),
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            assert_eq!(times, expected, "page size {page_size}: every record once, newest first");
            assert!(pages >= expected.len().div_ceil(page_size as usize), "{pages} pages");
        }
        t.stop().await;
    }

    fn resource_attrs(service: &str) -> Vec<opentelemetry_proto::tonic::common::v1::KeyValue> {
        resource(service).expect("resource").attributes
    }
}

mod metric_queries {
    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest,
        common::v1::{AnyValue, KeyValue},
        metrics::v1::{
            metric::Data, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
            ResourceMetrics, ScopeMetrics, Sum,
        },
        resource::v1::Resource,
    };
    use otelephant::query::proto::{AttributeFilter, ListMetricsRequest, QueryMetricsRequest, TimeRange};
    use tonic::Code;

    use super::query;
    use crate::common::{fixtures::metrics, *};

    const SECOND: u64 = 1_000_000_000;

    fn sorted(mut attributes: Vec<KeyValue>) -> Vec<KeyValue> {
        attributes.sort_by(|a, b| a.key.cmp(&b.key));
        attributes
    }

    /// Every data point of `data` as comparable text: attributes sorted, everything else as sent.
    fn points(metric: &Metric) -> Vec<String> {
        let id = (&metric.name, &metric.description, &metric.unit, &metric.metadata);
        let mut out: Vec<String> = match metric.data.clone() {
            Some(Data::Gauge(g)) => g
                .data_points
                .into_iter()
                .map(|mut p| {
                    p.attributes = sorted(p.attributes);
                    p.exemplars.iter_mut().for_each(|e| {
                        e.filtered_attributes = sorted(std::mem::take(&mut e.filtered_attributes))
                    });
                    format!("{id:?} gauge {p:?}")
                })
                .collect(),
            Some(Data::Sum(s)) => s
                .data_points
                .iter()
                .cloned()
                .map(|mut p| {
                    p.attributes = sorted(p.attributes);
                    p.exemplars.iter_mut().for_each(|e| {
                        e.filtered_attributes = sorted(std::mem::take(&mut e.filtered_attributes))
                    });
                    format!("{id:?} sum {} {} {p:?}", s.aggregation_temporality, s.is_monotonic)
                })
                .collect(),
            Some(Data::Histogram(h)) => h
                .data_points
                .iter()
                .cloned()
                .map(|mut p| {
                    p.attributes = sorted(p.attributes);
                    p.exemplars.iter_mut().for_each(|e| {
                        e.filtered_attributes = sorted(std::mem::take(&mut e.filtered_attributes))
                    });
                    format!("{id:?} histogram {} {p:?}", h.aggregation_temporality)
                })
                .collect(),
            Some(Data::ExponentialHistogram(h)) => h
                .data_points
                .iter()
                .cloned()
                .map(|mut p| {
                    p.attributes = sorted(p.attributes);
                    p.exemplars.iter_mut().for_each(|e| {
                        e.filtered_attributes = sorted(std::mem::take(&mut e.filtered_attributes))
                    });
                    format!("{id:?} exp {} {p:?}", h.aggregation_temporality)
                })
                .collect(),
            Some(Data::Summary(s)) => s
                .data_points
                .into_iter()
                .map(|mut p| {
                    p.attributes = sorted(p.attributes);
                    format!("{id:?} summary {p:?}")
                })
                .collect(),
            None => vec![],
        };
        out.sort();
        out
    }

    #[tokio::test]
    async fn raw_points_of_every_type_come_back_as_sent() {
        let mut t = TestServer::start().await;
        let now = nanos_now() - 10 * SECOND;
        let sent = metrics::request(now);
        t.metrics().await.export(sent.clone()).await.expect("export");
        let sent_metrics = &sent.resource_metrics[0].scope_metrics[0].metrics;
        for metric in sent_metrics.iter().filter(|m| m.data.is_some()) {
            let response = query(&t)
                .await
                .query_metrics(QueryMetricsRequest { name: metric.name.clone(), ..Default::default() })
                .await
                .expect("query")
                .into_inner();
            let raw = response.raw.expect("raw points");
            let resource = raw.resource_metrics[0].resource.clone().expect("resource");
            assert_eq!(normalize(&resource.attributes), normalize(&[kv("service.name", s("billing"))]));
            assert_eq!(
                raw.resource_metrics[0].scope_metrics[0].scope.as_ref().map(|s| s.name.as_str()),
                Some("meter")
            );
            let mut got: Vec<String> = raw
                .resource_metrics
                .iter()
                .flat_map(|r| r.scope_metrics.iter().flat_map(|s| s.metrics.iter()))
                .flat_map(points)
                .collect();
            got.sort();
            assert_eq!(got, points(metric), "{}", metric.name);
        }

        let filtered = query(&t)
            .await
            .query_metrics(QueryMetricsRequest {
                name: "gauge.int".into(),
                attributes: vec![AttributeFilter {
                    key: "route".into(),
                    value: Some(AnyValue { value: Some(s("/b")) }),
                }],
                ..Default::default()
            })
            .await
            .expect("filtered")
            .into_inner()
            .raw
            .expect("raw");
        assert_eq!(filtered.resource_metrics[0].scope_metrics[0].metrics.len(), 1, "one series matches");

        let listed =
            query(&t).await.list_metrics(ListMetricsRequest::default()).await.expect("list").into_inner();
        let names: Vec<(String, String)> =
            listed.metrics.iter().map(|m| (m.name.clone(), m.r#type.clone())).collect();
        assert_eq!(
            names,
            [
                ("exp_histogram".into(), "exponential_histogram".into()),
                ("gauge.int".into(), "gauge".into()),
                ("histogram".into(), "histogram".into()),
                ("sum.double".into(), "sum".into()),
                ("summary".into(), "summary".into()),
            ]
        );
        let page = query(&t)
            .await
            .list_metrics(ListMetricsRequest { page_size: 3, ..Default::default() })
            .await
            .expect("page")
            .into_inner();
        assert_eq!(page.metrics.len(), 3);
        let rest = query(&t)
            .await
            .list_metrics(ListMetricsRequest {
                page_size: 3,
                page_token: page.next_page_token,
                ..Default::default()
            })
            .await
            .expect("rest")
            .into_inner();
        assert_eq!(
            rest.metrics.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["sum.double", "summary"]
        );
        assert!(rest.next_page_token.is_empty());
        let prefixed = query(&t)
            .await
            .list_metrics(ListMetricsRequest { name_prefix: "su".into(), ..Default::default() })
            .await
            .expect("prefix");
        assert_eq!(prefixed.into_inner().metrics.len(), 2);
        t.stop().await;
    }

    fn series(name: &str, data: Data) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("agg"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric { name: name.into(), data: Some(data), ..Default::default() }],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn point(time: u64, value: number_data_point::Value) -> NumberDataPoint {
        NumberDataPoint { time_unix_nano: time, value: Some(value), ..Default::default() }
    }

    #[tokio::test]
    async fn steps_aggregate_gauges_and_rate_cumulative_counters() {
        let mut t = TestServer::start().await;
        let base = (nanos_now() - 600 * SECOND) / SECOND * SECOND;
        use number_data_point::Value::{AsDouble, AsInt};
        // A gauge: 1, 3 in the first minute, 10 in the second.
        let gauge = Data::Gauge(Gauge {
            data_points: vec![
                point(base + SECOND, AsDouble(1.0)),
                point(base + 30 * SECOND, AsInt(3)),
                point(base + 70 * SECOND, AsDouble(10.0)),
            ],
        });
        // A cumulative counter that resets: 0, 60, 120 | 30 (reset), 90.
        let counter = Data::Sum(Sum {
            data_points: [0, 60, 120, 30, 90]
                .iter()
                .enumerate()
                .map(|(i, v)| point(base + (i as u64) * 30 * SECOND, AsInt(*v)))
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        });
        t.metrics().await.export(series("temperature", gauge)).await.expect("gauge");
        t.metrics().await.export(series("requests", counter)).await.expect("counter");
        let range = Some(TimeRange { start_unix_nano: base, end_unix_nano: base + 150 * SECOND });
        let steps = |name: &'static str, aggregation: &'static str| {
            let t = &t;
            let request = QueryMetricsRequest {
                name: name.into(),
                time_range: range,
                step_nanos: 60 * SECOND,
                aggregation: aggregation.into(),
                ..Default::default()
            };
            async move {
                let response = query(t).await.query_metrics(request).await.expect("query").into_inner();
                assert!(response.raw.is_none());
                assert_eq!(response.aggregated.len(), 1);
                let series = &response.aggregated[0];
                assert_eq!(series.metric.as_ref().map(|m| m.name.as_str()), Some(name));
                series
                    .values
                    .iter()
                    .map(|v| ((v.start_unix_nano - base) / SECOND, v.value))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(steps("temperature", "avg").await, [(0, 2.0), (60, 10.0)]);
        assert_eq!(steps("temperature", "min").await, [(0, 1.0), (60, 10.0)]);
        assert_eq!(steps("temperature", "max").await, [(0, 3.0), (60, 10.0)]);
        assert_eq!(steps("temperature", "sum").await, [(0, 4.0), (60, 10.0)]);
        // Increases: step 0 holds 0->60 (60); step 60 holds 60->120 and the reset to 30 (60 + 30);
        // step 120 holds 30->90 (60). Per second over 60 s steps.
        assert_eq!(steps("requests", "rate").await, [(0, 1.0), (60, 1.5), (120, 1.0)]);

        let bad = |request: QueryMetricsRequest| {
            let t = &t;
            async move { query(t).await.query_metrics(request).await.expect_err("rejected") }
        };
        let err = bad(QueryMetricsRequest {
            name: "temperature".into(),
            step_nanos: SECOND,
            aggregation: "median".into(),
            ..Default::default()
        })
        .await;
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("aggregation"), "{}", err.message());
        let err = bad(QueryMetricsRequest {
            name: "temperature".into(),
            time_range: range,
            step_nanos: SECOND,
            aggregation: "rate".into(),
            ..Default::default()
        })
        .await;
        assert!(err.message().contains("monotonic"), "{}", err.message());
        let err = bad(QueryMetricsRequest {
            name: "temperature".into(),
            aggregation: "avg".into(),
            ..Default::default()
        })
        .await;
        assert!(err.message().contains("step_nanos"), "{}", err.message());
        let err = bad(QueryMetricsRequest::default()).await;
        assert!(err.message().contains("name"), "{}", err.message());
        t.stop().await;
    }
}

#[tokio::test]
async fn grpc_health_turns_not_serving_when_the_database_goes_away() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let proxy = Proxy::start().await;
    let mut t = TestServer::start_with(|c| c.postgres.url = proxy.url()).await;
    let channel = Channel::from_shared(t.endpoint()).expect("endpoint").connect().await.expect("connect");
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    proxy.cut();
    // The status is re-checked every HEALTH_CHECK_INTERVAL; wait for the change it announces.
    let limit = otelephant::server::HEALTH_CHECK_INTERVAL * 4;
    let next = tokio::time::timeout(limit, watch.message())
        .await
        .expect("a status change within a few check intervals")
        .expect("stream")
        .expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    t.stop().await;
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let mut t = TestServer::start().await;
    let channel = Channel::from_shared(t.endpoint()).expect("endpoint").connect().await.expect("connect");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream_once(request))
        .await
        .expect("reflection v1")
        .into_inner();
    let response = responses.message().await.expect("stream").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "otelephant.query.v1.QueryService",
        "opentelemetry.proto.collector.trace.v1.TraceService",
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }
    drop(responses);
    t.stop().await;
}

/// A request stream of one message.
fn tokio_stream_once<T: Send + 'static>(item: T) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::iter(std::iter::once(item))
}

#[tokio::test]
async fn shutdown_ends_open_health_watches_instead_of_waiting_out_the_grace_period() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let mut t = TestServer::start_with(|c| c.shutdown.grace_secs = 60).await;
    let channel = Channel::from_shared(t.endpoint()).expect("endpoint").connect().await.expect("connect");
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // The shutdown finishes (stop() fails the test on GraceExceeded) with the watch still open.
    let started = std::time::Instant::now();
    t.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());

    // The watcher heard NOT_SERVING, then its stream ended with UNAVAILABLE.
    let mut statuses = Vec::new();
    let end = loop {
        match watch.message().await {
            Ok(Some(message)) => statuses.push(message.status),
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(statuses.last(), Some(&(ServingStatus::NotServing as i32)), "{statuses:?}");
    assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
}
