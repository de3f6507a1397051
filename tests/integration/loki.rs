//! Loki's query API for Grafana's Loki data source, against log records a real SDK sent
//! (`tests/e2e/sdk_export.py`), with the requests the data source makes
//! (grafana `public/app/plugins/datasource/loki/LanguageProvider.ts`: `fetchLabels` asks
//! `labels?start=&end=` in nanoseconds, `fetchLabelValues` `label/<name>/values?start=&end=`),
//! their answers decoded as strictly as the data source reads them: `status` "success" and
//! `data` a list of strings.

use serde::Deserialize;
use tokio::process::Command;

use crate::common::{
    clients::{e2e_python, repo, url},
    *,
};

/// Loki's answer to a series request: each stream's labels.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Series {
    status: String,
    data: Vec<std::collections::BTreeMap<String, String>>,
}

/// Loki's answer to a labels or values request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Names {
    status: String,
    data: Vec<String>,
}

/// `text` percent-encoded for a query string.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(t: &TestServer, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(url(t, path)).send().await.expect("answered")
}

async fn names(t: &TestServer, path: &str) -> Vec<String> {
    let answer = get(t, path).await;
    assert_eq!(answer.status(), 200, "{path}");
    let names: Names = answer.json().await.expect("Loki's JSON");
    assert_eq!(names.status, "success");
    names.data
}

#[tokio::test]
async fn grafana_lists_the_stream_labels_and_their_values() {
    let python = e2e_python().await;
    let t = TestServer::start().await;
    let service = format!("loki-{}", std::process::id());
    let before = nanos_now();
    let output = Command::new(python)
        .arg(repo().join("tests/e2e/sdk_export.py"))
        .arg("http")
        .arg(format!("http://{}", t.server.as_ref().expect("running").http_addr))
        .arg(&service)
        .output()
        .await
        .expect("run the Python SDK client");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let after = nanos_now() + 1_000_000_000;
    let range = format!("start={before}&end={after}");

    // The SDK's resource carries service.name and deployment.environment, the SDK's own
    // service.instance.id, and telemetry.sdk.*, which Loki does not promote.
    let labels = names(&t, &format!("/loki/api/v1/labels?{range}")).await;
    assert_eq!(labels, ["deployment_environment", "service_instance_id", "service_name"]);
    let instance: String = t
        .sql
        .query_one(
            "SELECT attributes->>'service.instance.id' FROM resources WHERE service_name = $1",
            &[&service],
        )
        .await
        .expect("the resource")
        .get(0);
    assert_eq!(
        names(&t, &format!("/loki/api/v1/label/service_instance_id/values?{range}")).await,
        std::slice::from_ref(&instance)
    );
    assert_eq!(
        names(&t, &format!("/loki/api/v1/label/service_name/values?{range}")).await,
        std::slice::from_ref(&service)
    );

    // The streams a selector matches (fetchSeries: `series?match[]=<selector>&start=&end=`).
    let series = |query: String| {
        let path = format!("/loki/api/v1/series?{range}&{query}");
        let t = &t;
        async move {
            let answer = get(t, &path).await;
            assert_eq!(answer.status(), 200, "{path}");
            let series: Series = answer.json().await.expect("Loki's JSON");
            assert_eq!(series.status, "success");
            series.data
        }
    };
    let stream: std::collections::BTreeMap<String, String> = [
        ("deployment_environment".to_owned(), "e2e".to_owned()),
        ("service_instance_id".to_owned(), instance),
        ("service_name".to_owned(), service.clone()),
    ]
    .into();
    let selector = |s: &str| format!("match[]={}", urlencoding(s));
    assert_eq!(
        series(selector(&format!("{{service_name=\"{service}\"}}"))).await,
        std::slice::from_ref(&stream)
    );
    assert_eq!(
        series(selector("{service_name=~\"loki-.+\", deployment_environment!=\"prod\"}")).await,
        std::slice::from_ref(&stream)
    );
    assert!(series(selector("{service_name=~\"loki\"}")).await.is_empty(), "regexes are anchored");
    assert_eq!(
        series(format!(
            "{}&{}",
            selector("{service_name=\"none\"}"),
            selector("{deployment_environment=\"e2e\"}")
        ))
        .await,
        [stream],
        "any of several selectors"
    );
    for bad in [
        "",
        "match[]=%7Bservice_name%3D%22a%22%7D%20%7C%3D%20%22x%22",
        "match[]=%7Bservice_name%3D~%22(%22%7D",
    ] {
        let answer = get(&t, &format!("/loki/api/v1/series?{range}&{bad}")).await;
        assert_eq!(answer.status(), 400, "{bad}");
    }
    assert_eq!(
        names(&t, &format!("/loki/api/v1/label/deployment_environment/values?{range}")).await,
        ["e2e"]
    );
    assert!(names(&t, &format!("/loki/api/v1/label/k8s_pod_name/values?{range}")).await.is_empty());
    // RFC 3339 times, and the default range (the last six hours).
    let rfc3339 = |nanos: u64| {
        humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
            .to_string()
    };
    assert_eq!(
        names(&t, &format!("/loki/api/v1/labels?start={}&end={}", rfc3339(before), rfc3339(after))).await,
        labels
    );
    assert_eq!(names(&t, "/loki/api/v1/labels").await, labels);
    // A range with no records has no labels.
    assert!(names(
        &t,
        &format!(
            "/loki/api/v1/labels?start={}&end={}",
            before - 7_200_000_000_000,
            before - 3_600_000_000_000
        )
    )
    .await
    .is_empty());

    // A bad time is a 400 naming it; what is not served is a 404, so Grafana falls back.
    let bad = get(&t, "/loki/api/v1/labels?start=yesterday").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("text").contains("invalid start"));
    assert_eq!(get(&t, "/loki/api/v1/detected_labels?query=%7B%7D").await.status(), 404);
}

/// A query answer decoded as Grafana's converter reads it (grafana `pkg/util/converter/prom.go`,
/// `ReadPrometheusStyleResult`): `status` "success"; in `data`, `encodingFlags` (when asked
/// for) before `resultType`, `resultType` before `result`, `stats` after it; a stream's
/// `stream` labels strings, each of its `values` a nanosecond string and a line, and with
/// `categorize-labels` a third member holding only `structuredMetadata` and `parsed`; a
/// matrix's or vector's samples a number of seconds and a string that parses as a float.
#[derive(Debug, PartialEq)]
enum Answer {
    Streams(Vec<Stream>),
    Matrix(Vec<(Labels, Vec<(f64, f64)>)>),
    Vector(Vec<(Labels, (f64, f64))>),
}

type Labels = std::collections::BTreeMap<String, String>;

#[derive(Debug, PartialEq)]
struct Stream {
    labels: Labels,
    values: Vec<Value>,
}

/// Time in nanoseconds, line, and (categorized) structured metadata and parsed labels.
type Value = (i64, String, Option<(Labels, Labels)>);

fn labels_of(value: &serde_json::Value, what: &str) -> Labels {
    let object = value.as_object().unwrap_or_else(|| panic!("{what}: an object"));
    object
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_else(|| panic!("{what}.{k}: a string")).to_owned()))
        .collect()
}

fn sample(value: &serde_json::Value) -> (f64, f64) {
    let pair = value.as_array().expect("a sample is an array");
    assert_eq!(pair.len(), 2, "a sample: [time, value]");
    let time = pair[0].as_f64().expect("a sample's time is a number");
    let value = pair[1].as_str().expect("a sample's value is a string").parse().expect("a float");
    (time, value)
}

fn decode(text: &str, categorized: bool) -> Answer {
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} in {text}"));
    assert!(at("\"resultType\"") < at("\"result\":"), "resultType before result: {text}");
    assert!(at("\"result\":") < at("\"stats\""), "stats after result");
    if categorized {
        assert!(at("\"encodingFlags\":[\"categorize-labels\"]") < at("\"resultType\""), "{text}");
    } else {
        assert!(!text.contains("\"encodingFlags\""));
    }
    let json: serde_json::Value = serde_json::from_str(text).expect("JSON");
    let top = json.as_object().expect("an object");
    assert!(top.keys().all(|k| ["status", "data", "warnings"].contains(&k.as_str())), "{text}");
    assert_eq!(top["status"], "success");
    let data = top["data"].as_object().expect("data");
    assert!(data.keys().all(|k| ["encodingFlags", "resultType", "result", "stats"].contains(&k.as_str())));
    assert!(data["stats"]["summary"]["totalLinesProcessed"].is_u64(), "stats.summary");
    let result = data["result"].as_array().expect("result is an array");
    match data["resultType"].as_str().expect("resultType") {
        "streams" => Answer::Streams(
            result
                .iter()
                .map(|stream| {
                    let object = stream.as_object().expect("a stream");
                    assert_eq!(object.len(), 2, "stream and values only");
                    let values = object["values"]
                        .as_array()
                        .expect("values")
                        .iter()
                        .map(|value| {
                            let value = value.as_array().expect("a value is an array");
                            assert_eq!(value.len(), if categorized { 3 } else { 2 }, "{value:?}");
                            let time = value[0].as_str().expect("a time string");
                            assert!(time.len() == 19 && time.parse::<i64>().is_ok(), "nanoseconds: {time}");
                            let line = value[1].as_str().expect("a line string").to_owned();
                            let categories = categorized.then(|| {
                                let third = value[2].as_object().expect("categories");
                                assert!(third.keys().all(|k| k == "structuredMetadata" || k == "parsed"));
                                let get =
                                    |k: &str| third.get(k).map_or_else(Labels::new, |v| labels_of(v, k));
                                (get("structuredMetadata"), get("parsed"))
                            });
                            (time.parse().expect("time"), line, categories)
                        })
                        .collect();
                    Stream { labels: labels_of(&object["stream"], "stream"), values }
                })
                .collect(),
        ),
        "matrix" => Answer::Matrix(
            result
                .iter()
                .map(|series| {
                    let object = series.as_object().expect("a series");
                    assert_eq!(object.len(), 2, "metric and values only");
                    let values = object["values"].as_array().expect("values").iter().map(sample).collect();
                    (labels_of(&object["metric"], "metric"), values)
                })
                .collect(),
        ),
        "vector" => Answer::Vector(
            result
                .iter()
                .map(|series| {
                    let object = series.as_object().expect("a series");
                    assert_eq!(object.len(), 2, "metric and value only");
                    (labels_of(&object["metric"], "metric"), sample(&object["value"]))
                })
                .collect(),
        ),
        other => panic!("resultType {other}"),
    }
}

/// The lines of a streams answer in the order Grafana shows them (newest first), ties by line.
fn lines_of(answer: &Answer) -> Vec<(i64, String)> {
    let Answer::Streams(streams) = answer else { panic!("streams: {answer:?}") };
    let mut lines: Vec<(i64, String)> =
        streams.iter().flat_map(|s| s.values.iter().map(|(t, l, _)| (*t, l.clone()))).collect();
    lines.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    lines
}

#[tokio::test]
async fn grafana_queries_the_logs_a_real_sdk_sent() {
    let python = e2e_python().await;
    let t = TestServer::start().await;
    let prefix = format!("lq{}", std::process::id());
    const S: i64 = 1_000_000_000;
    // Ten minutes ago, on a minute: the records' times are offsets from it.
    let now = nanos_now() as i64;
    let base = (now - 600 * S) / (60 * S) * (60 * S);
    let output = Command::new(python)
        .arg(repo().join("tests/e2e/loki_logs.py"))
        .arg(format!("http://{}", t.server.as_ref().expect("running").http_addr))
        .arg(&prefix)
        .arg(base.to_string())
        .output()
        .await
        .expect("run the Python SDK client");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ids: std::collections::HashMap<String, String> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let (trace, span2, other) = (&ids["trace"], &ids["span2"], &ids["other"]);
    let (api, worker) = (format!("{prefix}-api"), format!("{prefix}-worker"));

    // grafana pkg/tsdb/loki/api.go makeDataRequest: query, direction, limit (when set), and
    // start, end in nanoseconds and step in milliseconds for ranges, time for instants.
    let request = |path: &str, query: &str, params: &[(&str, String)], categorize: bool| {
        let mut pairs: Vec<(String, String)> = vec![("query".into(), query.into())];
        pairs.extend(params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut builder = reqwest::Client::new().get(url(&t, &format!("/loki/api/v1/{path}"))).query(&pairs);
        if categorize {
            builder = builder.header("X-Loki-Response-Encoding-Flags", "categorize-labels");
        }
        builder
    };
    fn range(from: i64, to: i64, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut params = vec![("start", from.to_string()), ("end", to.to_string())];
        params.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        params
    }
    let logs = |query: String, params: Vec<(&'static str, String)>, categorize: bool| {
        let request = request("query_range", &query, &params, categorize);
        async move {
            let answer = request.send().await.expect("answered");
            let status = answer.status();
            let text = answer.text().await.expect("text");
            assert_eq!(status, 200, "{query}: {text}");
            decode(&text, categorize)
        }
    };
    let whole = |extra: &[(&'static str, &'static str)]| {
        let mut params = range(base, base + 120 * S, &[]);
        params.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        params
    };
    let at = |offset: i64| base + offset * S;
    let api_lines = [
        (at(61), "payment failed for order o-18".to_owned()),
        (at(5), r#"{"event": "cart.updated", "items": 3}"#.to_owned()),
        (at(4), format!("handled callback for trace {other}")),
        (at(3), "payment failed for order o-17".to_owned()),
        (at(2), r#"method=POST status=503 took=1500ms msg="upstream failed""#.to_owned()),
        (
            at(1),
            r#"{"level":"info","status":200,"path":"/cart","took":"12ms","user":{"id":"u1"}}"#.to_owned(),
        ),
    ];
    let selector = format!("{{service_name=\"{api}\"}}");

    // Both directions, with limits: the newest or the oldest lines.
    let all = logs(selector.clone(), whole(&[("direction", "backward"), ("limit", "100")]), false).await;
    assert_eq!(lines_of(&all), api_lines);
    let newest = logs(selector.clone(), whole(&[("direction", "backward"), ("limit", "2")]), false).await;
    assert_eq!(lines_of(&newest), api_lines[..2]);
    let oldest = logs(selector.clone(), whole(&[("direction", "forward"), ("limit", "2")]), false).await;
    assert_eq!(lines_of(&oldest), api_lines[4..]);
    // Uncategorized, a stream is the whole label set: stream labels, then structured metadata.
    let Answer::Streams(streams) = &all else { unreachable!() };
    let o17 = streams.iter().find(|s| s.values[0].1.ends_with("o-17")).expect("the o-17 line");
    for (name, value) in [
        ("service_name", api.as_str()),
        ("deployment_environment", "e2e"),
        ("k8s_pod_name", "api-0"),
        ("host_name", "h1"),
        ("trace_id", trace.as_str()),
        ("span_id", span2.as_str()),
        ("severity_text", "ERROR"),
        ("severity_number", "17"),
        ("detected_level", "error"),
        ("order_id", "o-17"),
        ("retry", "2"),
        ("scope_name", "shop.api"),
        ("scope_version", "2.1"),
    ] {
        assert_eq!(o17.labels.get(name).map(String::as_str), Some(value), "{name} in {:?}", o17.labels);
    }

    // Categorized: stream labels apart from structured metadata and parsed labels.
    let categorized = logs(format!("{selector} |= \"o-17\" | logfmt"), whole(&[("limit", "10")]), true).await;
    let Answer::Streams(streams) = &categorized else { panic!() };
    assert_eq!(streams.len(), 1);
    assert_eq!(
        streams[0].labels.keys().map(String::as_str).collect::<Vec<_>>(),
        ["deployment_environment", "k8s_pod_name", "service_instance_id", "service_name"]
    );
    let (_, line, categories) = &streams[0].values[0];
    assert_eq!(line, "payment failed for order o-17");
    let (metadata, parsed) = categories.as_ref().expect("categories");
    assert_eq!(metadata.get("trace_id"), Some(trace));
    assert_eq!(metadata.get("host_name").map(String::as_str), Some("h1"));
    assert_eq!(parsed.get("payment").map(String::as_str), Some(""), "logfmt's bare keys: {parsed:?}");

    // Every filter and parser.
    let filtered = |pipeline: &str| {
        let query = format!("{selector} {pipeline}");
        let params = whole(&[("limit", "100")]);
        async move { lines_of(&logs(query, params, false).await).into_iter().map(|(_, l)| l).collect::<Vec<_>>() }
    };
    let api_text = |indexes: &[usize]| indexes.iter().map(|i| api_lines[*i].1.clone()).collect::<Vec<_>>();
    assert_eq!(filtered(r#"|= "payment""#).await, api_text(&[0, 3]));
    assert_eq!(filtered(r#"!= "payment" != "{""#).await, api_text(&[2, 4]));
    assert_eq!(filtered(r#"|= "o-18" or "o-17""#).await, api_text(&[0, 3]));
    assert_eq!(filtered(r#"|~ "order o-1[7]$""#).await, api_text(&[3]));
    assert_eq!(filtered(r#"!~ "(?i)PAYMENT|callback""#).await, api_text(&[1, 4, 5]));
    assert_eq!(filtered(r#"| json | status >= 200"#).await, api_text(&[5]));
    assert_eq!(filtered(r#"| json | user_id="u1" and took < 1s"#).await, api_text(&[5]));
    assert_eq!(
        filtered(r#"| json code="status", who="user.id" | code=200 | who=~"u.""#).await,
        api_text(&[5])
    );
    assert_eq!(filtered(r#"| logfmt | status=503 or took > 1s"#).await, api_text(&[4]));
    assert_eq!(filtered(r#"| detected_level="error""#).await, api_text(&[0, 3]));
    assert_eq!(filtered(r#"| severity_number >= 13, order_id!="o-18""#).await, api_text(&[3, 4]));
    assert_eq!(
        filtered(r#"| json | __error__="" | line_format "{{.path}}:{{.status}}""#).await,
        [":", "/cart:200"]
    );
    assert_eq!(
        filtered(
            r#"|= "order" | label_format svc=service_name | line_format "{{.svc}} {{ .order_id | ToUpper }}""#
        )
        .await,
        [format!("{api} O-18"), format!("{api} O-17")]
    );
    let dropped =
        logs(format!("{selector} |= \"o-18\" | drop order_id, host_name=\"h1\""), whole(&[]), false).await;
    let Answer::Streams(streams) = &dropped else { panic!() };
    assert!(!streams[0].labels.contains_key("order_id") && !streams[0].labels.contains_key("host_name"));

    // Grafana's trace-to-logs (public/app/features/explore/TraceView/createSpanLink.tsx,
    // getQueryForLoki), with tags service.name -> service_name: by trace id, and by trace and span.
    let by_trace = |id: &str| {
        format!(
            "{selector} | label_format log_line_contains_trace_id=`{{{{ contains \"{id}\" __line__  }}}}` \
             | log_line_contains_trace_id=\"true\" OR trace_id=\"{id}\""
        )
    };
    assert_eq!(lines_of(&logs(by_trace(trace), whole(&[]), false).await), api_lines[3..]);
    assert_eq!(
        lines_of(&logs(by_trace(other), whole(&[]), false).await),
        api_lines[2..3],
        "the id in the line"
    );
    let by_span = format!(
        "{} | label_format log_line_contains_span_id=`{{{{ contains \"{span2}\" __line__  }}}}` \
         | log_line_contains_span_id=\"true\" OR span_id=\"{span2}\"",
        by_trace(trace)
    );
    assert_eq!(lines_of(&logs(by_span, whole(&[]), false).await), api_lines[3..5]);
    let tags_only = logs(selector.clone(), whole(&[]), false).await;
    assert_eq!(lines_of(&tags_only), api_lines);

    // Metric queries over steps (step in milliseconds, as Grafana sends it).
    let matrix = |query: String, from: i64, to: i64, step: &'static str| {
        let params = range(from, to, &[("step", step)]);
        async move {
            let Answer::Matrix(series) = logs(query, params, false).await else { panic!("a matrix") };
            series
        }
    };
    let points =
        |values: &[(i64, f64)]| values.iter().map(|(t, v)| (at(*t) as f64 / 1e9, *v)).collect::<Vec<_>>();
    let worker_selector = format!("{{service_name=\"{worker}\"}}");
    let by_level = matrix(
        format!("sum by (detected_level) (count_over_time({worker_selector}[1m]))"),
        base,
        at(60),
        "10000ms",
    )
    .await;
    let level = |l: &str| Labels::from([("detected_level".to_owned(), l.to_owned())]);
    let expected = vec![
        (level("debug"), points(&[(40, 1.0), (50, 1.0), (60, 1.0)])),
        (level("info"), points(&[(10, 1.0), (20, 2.0), (30, 3.0), (40, 3.0), (50, 3.0), (60, 3.0)])),
    ];
    assert_eq!(by_level, expected, "counted by PostgreSQL");
    let through_pipeline = matrix(
        format!("sum by (detected_level) (count_over_time({worker_selector} |~ \"job|cache\" [1m]))"),
        base,
        at(60),
        "10000ms",
    )
    .await;
    assert_eq!(through_pipeline, expected, "counted by the pipeline");
    let rate = matrix(format!("sum(rate({worker_selector}[1m]))"), base, at(60), "30000ms").await;
    assert_eq!(rate, [(Labels::new(), points(&[(30, 3.0 / 60.0), (60, 4.0 / 60.0)]))]);
    let bytes = matrix(
        format!("sum by (service_name) (bytes_over_time({worker_selector}[1m]))"),
        base,
        at(60),
        "60000ms",
    )
    .await;
    assert_eq!(bytes[0].1, points(&[(60, (3 * "job done n=1".len() + "cache warm".len()) as f64)]));
    // Explore's logs volume (grafana public/app/plugins/datasource/loki/queryUtils.ts).
    let volume = matrix(
        format!("sum by (level, detected_level) (count_over_time({selector} | drop __error__ [1m]))"),
        base,
        at(120),
        "60000ms",
    )
    .await;
    // The o-17 record's own `level` attribute is a label of its own, as Loki's.
    let mut level_e = level("error");
    level_e.insert("level".into(), "E".into());
    let expected_volume = [
        (level("error"), points(&[(120, 1.0)])),
        (level_e, points(&[(60, 1.0)])),
        (level("info"), points(&[(60, 3.0)])),
        (level("warn"), points(&[(60, 1.0)])),
    ];
    assert_eq!(volume, expected_volume, "counted by PostgreSQL");
    let volume_through_pipeline = matrix(
        format!("sum by (level, detected_level) (count_over_time({selector} | drop __error__ | line_format \"{{{{__line__}}}}\" [1m]))"),
        base,
        at(120),
        "60000ms",
    )
    .await;
    assert_eq!(volume_through_pipeline, expected_volume, "counted by the pipeline");
    let each =
        matrix(format!("count_over_time({worker_selector} |= \"job\" [1m])"), base, at(60), "60000ms").await;
    assert_eq!(each.len(), 3, "a series per label set, metadata included, as Loki's");
    let counted = matrix(
        format!("count(count_over_time({worker_selector} |= \"job\" [1m])) * 2 - 1"),
        base,
        at(60),
        "60000ms",
    )
    .await;
    assert_eq!(counted, [(Labels::new(), points(&[(60, 5.0)]))]);
    let top = matrix(
        format!("topk(1, sum by (service_name) (count_over_time({{service_name=~\"{prefix}-.+\"}}[2m])))"),
        at(120),
        at(120),
        "60000ms",
    )
    .await;
    assert_eq!(top, [(Labels::from([("service_name".to_owned(), api.clone())]), points(&[(120, 6.0)]))]);
    let averaged = matrix(
        format!(
            "avg by (service_name) (count_over_time({{deployment_environment=\"e2e\", service_name=~\"{prefix}-.+\"}} \
             | logfmt | drop __error__, __error_details__ [2m]))"
        ),
        at(120),
        at(120),
        "60000ms",
    )
    .await;
    // Each record is its own series (its observed time is metadata): one line each.
    assert_eq!(
        averaged.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        [points(&[(120, 1.0)]), points(&[(120, 1.0)])]
    );

    // An instant: a vector; the health check (grafana pkg/tsdb/loki/healthcheck.go).
    let instant = |query: String, time: String| {
        let request = request("query", &query, &[("direction", "backward".into()), ("time", time)], false);
        async move {
            let answer = request.send().await.expect("answered");
            let status = answer.status();
            (status, answer.text().await.expect("text"))
        }
    };
    let (status, text) = instant("vector(1)+vector(1)".into(), "4000000000".into()).await;
    assert_eq!(status, 200, "{text}");
    let Answer::Vector(vector) = decode(&text, false) else { panic!("{text}") };
    assert_eq!(vector.len(), 1);
    assert_eq!((vector[0].0.len(), vector[0].1 .1), (0, 2.0), "Grafana's health check wants 2");
    let (_, text) = instant(format!("sum(count_over_time({selector}[5m]))"), at(300).to_string()).await;
    assert_eq!(decode(&text, false), Answer::Vector(vec![(Labels::new(), (at(300) as f64 / 1e9, 6.0))]));

    // Stats of a selector (Grafana's query size estimate).
    let stats: serde_json::Value = request("index/stats", &selector, &range(base, at(120), &[]), false)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!((stats["streams"].as_u64(), stats["entries"].as_u64()), (Some(1), Some(6)), "{stats}");
    // A chunk is a stream's day: one, or two when the minutes crossed midnight.
    assert!(stats["bytes"].as_u64().is_some_and(|b| b > 0), "{stats}");
    assert!(stats["chunks"].as_u64().is_some_and(|c| (1..=2).contains(&c)), "{stats}");

    // Refusals: Loki's messages, as text.
    for (path, query, params, expected) in [
        ("query_range", "{service_name=\"x\"} | unpack", whole(&[]), "not supported"),
        ("query_range", "{service_name=~\".*\"}", whole(&[]), "parse error"),
        ("query_range", selector.as_str(), whole(&[("limit", "5001")]), "max entries limit"),
        ("query_range", selector.as_str(), whole(&[("direction", "sideways")]), "invalid direction"),
        ("query_range", "{a=\"b\"} |~ \"(\"", whole(&[]), "invalid regex"),
        (
            "query_range",
            "count_over_time({a=\"b\"}[1m])",
            range(0, at(0), &[("step", "1")]),
            "maximum resolution",
        ),
        ("query", selector.as_str(), vec![], "not supported as an instant query"),
        (
            "query_range",
            selector.as_str(),
            vec![("start", "-9223372036854775808".to_owned())],
            "invalid start",
        ),
    ] {
        let answer = request(path, query, &params, false).send().await.expect("answered");
        assert_eq!(answer.status(), 400, "{query}");
        let text = answer.text().await.expect("text");
        assert!(text.contains(expected), "{query}: {text}");
    }
    // Times and a range at the edges of what is taken: an answer, not an overflow.
    let far = request(
        "query_range",
        &format!("sum(count_over_time({selector}[200y]))"),
        &range(0, 1 << 62, &[("step", "1000000000")]),
        false,
    )
    .send()
    .await
    .expect("answered");
    assert_eq!(far.status(), 200);
    let Answer::Matrix(series) = decode(&far.text().await.expect("text"), false) else { panic!("a matrix") };
    assert!(
        series[0].1.iter().any(|(_, v)| *v == 6.0),
        "the 200 years' windows hold the service's six: {series:?}"
    );
}
