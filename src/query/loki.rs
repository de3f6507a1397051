//! Loki's query API over the stored log records, under `/loki` on the HTTP port, for Grafana's
//! Loki data source (README.md "Logs in Grafana"). Log records are seen as Loki 3 sees OTLP
//! logs (grafana/loki `docs/sources/send-data/otel`): their stream labels are the well-known
//! resource attributes Loki promotes ([`PROMOTED`]), named with `_` for every character a label
//! name cannot hold (`service.name` is `service_name`).
//!
//! Served so far: the label names and values (`/loki/api/v1/labels`,
//! `/loki/api/v1/label/<name>/values`) and the streams a selector matches (`/loki/api/v1/series`),
//! from the resources `log_rollup` counts records of in the range, never from the records
//! themselves. Other paths under `/loki` are answered 404, so that
//! Grafana falls back where it can.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{Path, Query as Params, State},
    http::StatusCode,
    response::Response,
    routing::get,
    Router,
};
use serde::Deserialize;
use serde_json::json;
use tonic::Status;

use super::{
    http::{json, json_off_thread},
    logql::{self, MatchOp, Matcher},
    Query,
};

/// The resource attributes Loki 3 makes stream labels by default
/// (`distributor.otlp_config.default_resource_attributes_as_index_labels`).
pub const PROMOTED: [&str; 18] = [
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// How long before `end` a request without `start` looks, as Loki's `since` defaults.
const DEFAULT_SINCE: Duration = Duration::from_secs(6 * 3600);

/// A label name for an attribute key, as Loki writes it: every character other than an ASCII
/// letter, digit or `_` becomes `_`, and a leading digit gets a `_` before it.
pub fn label_name(key: &str) -> String {
    let mut name: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// The promoted attribute keys whose label is `name`.
fn keys_of(name: &str) -> Vec<&'static str> {
    PROMOTED.iter().copied().filter(|key| label_name(key) == name).collect()
}

pub fn router(query: Query) -> Router {
    let api = Router::new()
        .route("/labels", get(labels))
        .route("/label/{name}/values", get(label_values))
        .route("/series", get(series))
        .with_state(query);
    Router::new().nest("/loki/api/v1", api).route("/loki/{*rest}", get(not_served))
}

#[derive(Debug, Default, Deserialize)]
struct RangeParams {
    start: Option<String>,
    end: Option<String>,
    since: Option<String>,
}

/// A time as Loki's API takes one: nanoseconds (or seconds, with a fraction) since the epoch,
/// or RFC 3339.
///
/// # Errors
/// A message naming the parameter.
pub fn parse_time(name: &str, text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(nanos) = text.parse::<i64>() {
        // Loki: a plain integer is nanoseconds, unless it is short enough to be seconds.
        return Ok(if text.trim_start_matches('-').len() <= 10 {
            nanos.saturating_mul(1_000_000_000)
        } else {
            nanos
        });
    }
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() {
            return Ok((seconds * 1e9) as i64);
        }
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|_| format!("invalid {name}: {text:?} is neither a Unix time nor RFC 3339"))
        .map(|at| at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64))
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// The range a labels request asks about, `[start, end)` in nanoseconds.
fn range(params: &RangeParams) -> Result<(i64, i64), String> {
    let end = params.end.as_deref().map(|t| parse_time("end", t)).transpose()?.unwrap_or_else(now_nanos);
    let since = match &params.since {
        Some(since) => super::logql::parse_duration(since).map_err(|m| format!("invalid since: {m}"))?,
        None => DEFAULT_SINCE.as_nanos() as i64,
    };
    let start = params.start.as_deref().map(|t| parse_time("start", t)).transpose()?.unwrap_or(end - since);
    if end < start {
        return Err("the end timestamp must not be before the start time".into());
    }
    Ok((start, end))
}

/// An answer as Loki gives its errors: the status and the message as plain text.
fn text(status: StatusCode, message: String) -> Response {
    use axum::response::IntoResponse;
    (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

fn bad_request(message: &str) -> Response {
    text(StatusCode::BAD_REQUEST, message.to_owned())
}

fn failure(status: &Status) -> Response {
    let code = match status.code() {
        tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(code, status.message().to_owned())
}

/// The resources with log records in the range, by the minutes `log_rollup` counts them in.
const RESOURCES_IN_RANGE: &str = "SELECT DISTINCT resource_id FROM log_rollup
     WHERE minute_unix_nano >= $1 - (($1 % 60000000000) + 60000000000) % 60000000000 AND minute_unix_nano < $2";

async fn labels(State(q): State<Query>, Params(params): Params<RangeParams>) -> Response {
    let (start, end) = match range(&params) {
        Ok(range) => range,
        Err(message) => return bad_request(&message),
    };
    let keys: Vec<&str> = PROMOTED.to_vec();
    let statement = format!(
        "SELECT DISTINCT k FROM resources r, jsonb_object_keys(r.attributes) AS k
         WHERE r.resource_id IN ({RESOURCES_IN_RANGE}) AND k = ANY($3)"
    );
    match q.rows(&statement, &[&start, &end, &keys]).await {
        Ok(rows) => {
            let mut names: Vec<String> = rows.iter().map(|row| label_name(row.get::<_, &str>(0))).collect();
            names.sort_unstable();
            names.dedup();
            json_off_thread(StatusCode::OK, json!({"status": "success", "data": names})).await
        }
        Err(status) => failure(&status),
    }
}

async fn label_values(
    State(q): State<Query>,
    Path(name): Path<String>,
    Params(params): Params<RangeParams>,
) -> Response {
    let (start, end) = match range(&params) {
        Ok(range) => range,
        Err(message) => return bad_request(&message),
    };
    let keys = keys_of(&name);
    if keys.is_empty() {
        return json(StatusCode::OK, &json!({"status": "success", "data": []}));
    }
    let statement = format!(
        "SELECT DISTINCT CASE jsonb_typeof(r.attributes -> k) WHEN 'string' THEN r.attributes ->> k
                              ELSE (r.attributes -> k)::text END
         FROM resources r, unnest($3::text[]) AS k
         WHERE r.resource_id IN ({RESOURCES_IN_RANGE}) AND r.attributes ? k"
    );
    match q.rows(&statement, &[&start, &end, &keys]).await {
        Ok(rows) => {
            let mut values: Vec<String> =
                rows.iter().filter_map(|row| row.get::<_, Option<String>>(0)).collect();
            values.sort_unstable();
            json_off_thread(StatusCode::OK, json!({"status": "success", "data": values})).await
        }
        Err(status) => failure(&status),
    }
}

/// A stream's labels: the promoted attributes of a resource, by label name, values as text.
pub fn stream_labels(attributes: &serde_json::Value) -> BTreeMap<String, String> {
    PROMOTED
        .iter()
        .filter_map(|key| {
            let value = attributes.get(*key)?;
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            Some((label_name(key), text))
        })
        .collect()
}

/// Most bytes a label matcher's regex may compile to.
const REGEX_BYTES: usize = 1 << 20;

/// A label matcher, its regex compiled (fully anchored, RE2 semantics).
pub struct Compiled {
    name: String,
    test: Test,
}

enum Test {
    Equal(String, bool),
    Regex(regex::Regex, bool),
}

impl Compiled {
    /// # Errors
    /// A message when the regex is not one or is too large.
    pub fn new(matcher: &Matcher) -> Result<Self, String> {
        let regex = |negated| {
            regex::RegexBuilder::new(&format!("^(?:{})$", matcher.value))
                .size_limit(REGEX_BYTES)
                .build()
                .map(|re| Test::Regex(re, negated))
                .map_err(|e| format!("invalid regex {:?}: {e}", matcher.value))
        };
        let test = match matcher.op {
            MatchOp::Eq => Test::Equal(matcher.value.clone(), false),
            MatchOp::Ne => Test::Equal(matcher.value.clone(), true),
            MatchOp::Re => regex(false)?,
            MatchOp::NotRe => regex(true)?,
        };
        Ok(Self { name: matcher.name.clone(), test })
    }

    /// Whether a stream's labels match; a missing label is the empty string.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.name).map_or("", String::as_str);
        match &self.test {
            Test::Equal(expected, negated) => (value == expected) != *negated,
            Test::Regex(re, negated) => re.is_match(value) != *negated,
        }
    }
}

/// A query string, in order, repeated names kept (`match[]=a&match[]=b`).
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
struct Pairs(Vec<(String, String)>);

impl Pairs {
    fn last(&self, name: &str) -> Option<String> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

/// The streams with records in the range that one of the `match[]` selectors matches, each
/// once, as its labels.
async fn series(State(q): State<Query>, Params(pairs): Params<Pairs>) -> Response {
    let params =
        RangeParams { start: pairs.last("start"), end: pairs.last("end"), since: pairs.last("since") };
    let (start, end) = match range(&params) {
        Ok(range) => range,
        Err(message) => return bad_request(&message),
    };
    let mut selectors = Vec::new();
    for (_, text) in pairs.0.iter().filter(|(k, _)| k == "match[]" || k == "match") {
        let selector = match logql::parse(text) {
            Ok(logql::Query::Log(log)) if log.stages.is_empty() => log.selector,
            Ok(_) => return bad_request(&format!("match[] takes a stream selector alone: {text}")),
            Err(err) => return bad_request(&err.to_string()),
        };
        match selector.iter().map(Compiled::new).collect::<Result<Vec<_>, _>>() {
            Ok(compiled) => selectors.push(compiled),
            Err(message) => return bad_request(&message),
        }
    }
    if selectors.is_empty() {
        return bad_request("match[] is required: a stream selector such as {service_name=\"checkout\"}");
    }
    let statement =
        format!("SELECT r.attributes FROM resources r WHERE r.resource_id IN ({RESOURCES_IN_RANGE})");
    let rows = match q.rows(&statement, &[&start, &end]).await {
        Ok(rows) => rows,
        Err(status) => return failure(&status),
    };
    let answer = tokio::task::spawn_blocking(move || {
        let mut streams: Vec<BTreeMap<String, String>> = rows
            .iter()
            .map(|row| stream_labels(&row.get::<_, serde_json::Value>(0)))
            .filter(|labels| selectors.iter().any(|matchers| matchers.iter().all(|m| m.matches(labels))))
            .collect();
        streams.sort_unstable();
        streams.dedup();
        json(StatusCode::OK, &json!({"status": "success", "data": streams}))
    })
    .await;
    answer.unwrap_or_else(|e| failure(&Status::internal(format!("the answer could not be built: {e}"))))
}

/// What is not served: 404, so Grafana falls back (detected labels, patterns...).
async fn not_served(Path(rest): Path<String>) -> Response {
    text(StatusCode::NOT_FOUND, format!("/loki/{rest} is not served by otelephant (README: Logs in Grafana)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_written_as_loki_writes_them() {
        assert_eq!(label_name("service.name"), "service_name");
        assert_eq!(label_name("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(label_name("deployment.environment.name"), "deployment_environment_name");
        assert_eq!(label_name("3d-model"), "_3d_model");
        assert_eq!(keys_of("service_name"), ["service.name"]);
        assert!(keys_of("nope").is_empty());
    }

    #[test]
    fn matchers_compare_whole_values_and_missing_labels_are_empty() {
        let labels =
            stream_labels(&json!({"service.name": "checkout", "k8s.pod.name": "web-1", "other": "x"}));
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["k8s_pod_name", "service_name"]);
        let test = |op, name: &str, value: &str| {
            Compiled::new(&Matcher { name: name.into(), op, value: value.into() }).unwrap().matches(&labels)
        };
        assert!(test(MatchOp::Eq, "service_name", "checkout"));
        assert!(!test(MatchOp::Eq, "service_name", "check"));
        assert!(test(MatchOp::Re, "k8s_pod_name", "web-.+"));
        assert!(!test(MatchOp::Re, "k8s_pod_name", "web"), "anchored");
        assert!(test(MatchOp::NotRe, "service_name", "pay.*"));
        assert!(test(MatchOp::Eq, "namespace", ""), "a missing label is empty");
        assert!(test(MatchOp::Ne, "namespace", "x"));
        assert!(Compiled::new(&Matcher { name: "a".into(), op: MatchOp::Re, value: "(".into() }).is_err());
        assert!(
            Compiled::new(&Matcher { name: "a".into(), op: MatchOp::Re, value: "a{1000}{1000}".into() })
                .is_err(),
            "too large a regex is refused"
        );
    }

    #[test]
    fn times_are_read_in_every_form_loki_takes() {
        assert_eq!(parse_time("start", "1700000000000000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("start", "1700000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("start", "1700000000.5"), Ok(1_700_000_000_500_000_000));
        assert_eq!(parse_time("start", "2023-11-14T22:13:20Z"), Ok(1_700_000_000_000_000_000));
        assert!(parse_time("start", "yesterday").unwrap_err().contains("invalid start"));
    }
}
