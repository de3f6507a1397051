//! Loki's query API over the stored log records, under `/loki` on the HTTP port, for Grafana's
//! Loki data source (README.md "Logs in Grafana"). Log records are seen as Loki 3 sees OTLP
//! logs (grafana/loki `docs/sources/send-data/otel`): their stream labels are the well-known
//! resource attributes Loki promotes ([`PROMOTED`]), named with `_` for every character a label
//! name cannot hold (`service.name` is `service_name`).
//!
//! Served: LogQL queries over a range and at an instant (`query_range`, `query`; read by
//! `loki_read`, run by `logql_eval`), the label names and values (`labels`,
//! `label/<name>/values`), the streams a selector matches (`series`) and what a selector would
//! read (`index/stats`); the last four from the resources `log_rollup` counts records of in the
//! range. Other paths under `/loki` are answered 404, so that Grafana falls back where it can.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{Path, Query as Params, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
    Router,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::Status;

use super::{
    http::{json, json_off_thread},
    logql::{self, MatchOp, Matcher},
    logql_eval::{Origin, Steps, Value},
    loki_read::{self, Line, Read},
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
        .route("/query_range", get(query_range))
        .route("/query", get(query_instant))
        .route("/index/stats", get(index_stats))
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
    let nanos = if let Ok(nanos) = text.parse::<i64>() {
        // Loki: a plain integer is nanoseconds, unless it is short enough to be seconds.
        if text.trim_start_matches('-').len() <= 10 {
            nanos.saturating_mul(1_000_000_000)
        } else {
            nanos
        }
    } else if let Some(seconds) = text.parse::<f64>().ok().filter(|s| s.is_finite()) {
        (seconds * 1e9) as i64
    } else {
        humantime::parse_rfc3339_weak(text)
            .map_err(|_| format!("invalid {name}: {text:?} is neither a Unix time nor RFC 3339"))
            .map(|at| {
                at.duration_since(UNIX_EPOCH).map_or(-1, |d| d.as_nanos().min(i64::MAX as u128) as i64)
            })?
    };
    // Times the sums over windows cannot overflow on, and that hold records.
    if !(0..=MAX_TIME).contains(&nanos) {
        return Err(format!("invalid {name}: {text:?} is before 1970 or after 2116"));
    }
    Ok(nanos)
}

/// The latest time a request may name (2^62 ns, in 2116).
const MAX_TIME: i64 = 1 << 62;

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// The range a labels request asks about, `[start, end)` in nanoseconds.
fn range(params: &RangeParams) -> Result<(i64, i64), String> {
    range_with(params, DEFAULT_SINCE)
}

/// The range a request asks about, `since` before `end` when it names no start.
fn range_with(params: &RangeParams, default_since: Duration) -> Result<(i64, i64), String> {
    let end = params.end.as_deref().map(|t| parse_time("end", t)).transpose()?.unwrap_or_else(now_nanos);
    let since = match &params.since {
        Some(since) => super::logql::parse_duration(since).map_err(|m| format!("invalid since: {m}"))?,
        None => default_since.as_nanos() as i64,
    };
    let start =
        params.start.as_deref().map(|t| parse_time("start", t)).transpose()?.unwrap_or((end - since).max(0));
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
        self.test(labels.get(&self.name).map_or("", String::as_str))
    }

    /// The label this matcher reads.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a label's value matches.
    pub fn test(&self, value: &str) -> bool {
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

/// Lines a log query answers with when it names no limit, and at most (Loki's
/// `max_entries_limit_per_query`).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 5000;
/// A range query's length when it names no start (Loki's default).
const DEFAULT_QUERY_SINCE: Duration = Duration::from_secs(3600);

/// The header Grafana asks for labels sorted by kind with, and the flag it names.
const ENCODING_FLAGS: &str = "X-Loki-Response-Encoding-Flags";
const CATEGORIZE: &str = "categorize-labels";

#[derive(Serialize)]
struct Envelope<R> {
    status: &'static str,
    data: Data<R>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// A query's data, its members in the order Loki writes them: Grafana reads `encodingFlags`
/// before `result`, and `result` after `resultType`.
#[derive(Serialize)]
struct Data<R> {
    #[serde(rename = "encodingFlags", skip_serializing_if = "Option::is_none")]
    encoding_flags: Option<[&'static str; 1]>,
    #[serde(rename = "resultType")]
    result_type: &'static str,
    result: R,
    stats: Stats,
}

#[derive(Serialize)]
struct Stats {
    summary: Summary,
}

/// What the query read, as Loki's `stats.summary` names it (Grafana shows it in the inspector).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    bytes_processed_per_second: u64,
    lines_processed_per_second: u64,
    total_bytes_processed: u64,
    total_lines_processed: u64,
    exec_time: f64,
    queue_time: f64,
    total_entries_returned: u64,
}

impl Stats {
    fn of(read: &Read, returned: usize) -> Self {
        let secs = read.started.map_or(0.0, |at| at.elapsed().as_secs_f64());
        let per_second = |n: u64| if secs > 0.0 { (n as f64 / secs) as u64 } else { 0 };
        Self {
            summary: Summary {
                bytes_processed_per_second: per_second(read.bytes),
                lines_processed_per_second: per_second(read.lines),
                total_bytes_processed: read.bytes,
                total_lines_processed: read.lines,
                exec_time: secs,
                queue_time: 0.0,
                total_entries_returned: returned as u64,
            },
        }
    }
}

#[derive(Serialize)]
struct StreamOut {
    stream: BTreeMap<String, String>,
    values: Vec<Value2>,
}

/// A line: `["<ns>", "<line>"]`, or with its structured metadata and parsed labels apart,
/// `["<ns>", "<line>", {...}]`, when the labels are categorized.
#[derive(Serialize)]
#[serde(untagged)]
enum Value2 {
    Plain(String, String),
    Categorized(String, String, Categories),
}

#[derive(Serialize, Default)]
struct Categories {
    #[serde(rename = "structuredMetadata", skip_serializing_if = "BTreeMap::is_empty")]
    structured_metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    parsed: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct MatrixOut {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

#[derive(Serialize)]
struct VectorOut {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// A sample's value as Prometheus writes one.
fn sample_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn seconds(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}

/// A log query's lines as Loki's streams: by their whole label set, or, categorized, by their
/// stream labels with the rest beside each line.
fn streams_out(lines: Vec<Line>, categorize: bool) -> Vec<StreamOut> {
    let mut order: Vec<BTreeMap<String, String>> = Vec::new();
    let mut by_labels: std::collections::HashMap<BTreeMap<String, String>, Vec<Value2>> =
        std::collections::HashMap::new();
    for line in lines {
        let time = line.time.to_string();
        let (key, value) = if categorize {
            let mut stream = BTreeMap::new();
            let mut categories = Categories::default();
            for (name, label) in line.labels {
                match label.origin {
                    Origin::Stream => stream.insert(name, label.value),
                    Origin::Metadata => categories.structured_metadata.insert(name, label.value),
                    Origin::Parsed => categories.parsed.insert(name, label.value),
                };
            }
            (stream, Value2::Categorized(time, line.line, categories))
        } else {
            let labels = line.labels.into_iter().map(|(k, l)| (k, l.value)).collect();
            (labels, Value2::Plain(time, line.line))
        };
        let values = by_labels.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        values.push(value);
    }
    order
        .into_iter()
        .map(|stream| {
            let values = by_labels.remove(&stream).unwrap_or_default();
            StreamOut { stream, values }
        })
        .collect()
}

fn categorized(headers: &HeaderMap) -> bool {
    headers
        .get_all(ENCODING_FLAGS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|flag| flag.trim() == CATEGORIZE))
}

/// A query's text, parsed, or the message of the 400 Loki gives.
fn parsed(pairs: &Pairs) -> Result<logql::Query, String> {
    let text = pairs.last("query").unwrap_or_default();
    logql::parse(&text).map_err(|e| e.to_string())
}

/// The step of a range query: seconds (with a fraction) or a duration; by default the
/// range over 250, at least a second, as Loki's.
fn step_of(pairs: &Pairs, start: i64, end: i64) -> Result<i64, String> {
    match pairs.last("step").filter(|s| !s.is_empty()) {
        Some(text) => match text.parse::<f64>() {
            Ok(secs) if secs.is_finite() => Ok((secs * 1e9) as i64),
            _ => logql::parse_duration(&text).map_err(|_| format!("invalid step: {text:?}")),
        },
        None => Ok((((end - start) / 1_000_000_000) / 250).max(1) * 1_000_000_000),
    }
}

/// `GET /loki/api/v1/query_range`: a log query's lines (`streams`) or a metric query's series
/// at every step (`matrix`).
async fn query_range(State(q): State<Query>, headers: HeaderMap, Params(pairs): Params<Pairs>) -> Response {
    let query = match parsed(&pairs) {
        Ok(query) => query,
        Err(message) => return bad_request(&message),
    };
    let params =
        RangeParams { start: pairs.last("start"), end: pairs.last("end"), since: pairs.last("since") };
    let (start, end) = match range_with(&params, DEFAULT_QUERY_SINCE) {
        Ok(range) => range,
        Err(message) => return bad_request(&message),
    };
    match query {
        logql::Query::Log(log) => log_answer(&q, &log, (start, end), &pairs, categorized(&headers)).await,
        logql::Query::Metric(metric) => {
            let step = match step_of(&pairs, start, end) {
                Ok(step) => step,
                Err(message) => return bad_request(&message),
            };
            let steps = match Steps::new(start, end, step) {
                Ok(steps) => steps,
                Err(message) => return bad_request(&message),
            };
            let mut read = Read { started: Some(std::time::Instant::now()), ..Read::default() };
            let value = match evaluated(&q, &metric, steps, &mut read).await {
                Ok(value) => value,
                Err(status) => return failure(&status),
            };
            let result: Vec<MatrixOut> = match value {
                Value::Scalar(v) => vec![MatrixOut {
                    metric: BTreeMap::new(),
                    values: (0..steps.count).map(|i| (seconds(steps.at(i)), sample_text(v))).collect(),
                }],
                Value::Series(series) => series
                    .into_iter()
                    .map(|s| MatrixOut {
                        values: s
                            .points
                            .iter()
                            .enumerate()
                            .filter_map(|(i, p)| p.map(|v| (seconds(steps.at(i)), sample_text(v))))
                            .collect(),
                        metric: s.labels,
                    })
                    .filter(|m| !m.values.is_empty())
                    .collect(),
            };
            let stats = Stats::of(&read, result.len());
            json_off_thread(
                StatusCode::OK,
                Envelope {
                    status: "success",
                    data: Data { encoding_flags: None, result_type: "matrix", result, stats },
                    warnings: Vec::new(),
                },
            )
            .await
        }
    }
}

async fn evaluated(
    q: &Query,
    metric: &logql::Metric,
    steps: Steps,
    read: &mut Read,
) -> Result<Value, Status> {
    let value = loki_read::evaluate(q, metric, steps, read).await?;
    loki_read::check_series(&value)?;
    Ok(value)
}

async fn log_answer(
    q: &Query,
    log: &logql::LogQuery,
    range: (i64, i64),
    pairs: &Pairs,
    categorize: bool,
) -> Response {
    let limit = match pairs.last("limit").filter(|l| !l.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if limit > MAX_LIMIT => {
                return bad_request(&format!(
                    "max entries limit per query exceeded, limit > max_entries_limit_per_query ({limit} > {MAX_LIMIT})"
                ))
            }
            Ok(limit) => limit,
            Err(_) => return bad_request(&format!("invalid limit: {text:?}")),
        },
    };
    let backward = match pairs.last("direction").map(|d| d.to_ascii_lowercase()).as_deref() {
        None | Some("" | "backward") => true,
        Some("forward") => false,
        Some(other) => return bad_request(&format!("invalid direction {other:?}: backward or forward")),
    };
    let mut budget = q.budget();
    let (lines, read, full) = match loki_read::lines(q, log, range, limit, backward, &mut budget).await {
        Ok(found) => found,
        Err(status) => return failure(&status),
    };
    let returned = lines.len();
    let warnings = if full {
        vec![format!(
            "the answer holds {returned} lines, fewer than the limit: it reached the memory an answer may take (query.answer_bytes)"
        )]
    } else {
        Vec::new()
    };
    let stats = Stats::of(&read, returned);
    let result =
        tokio::task::spawn_blocking(move || streams_out(lines, categorize)).await.unwrap_or_default();
    json_off_thread(
        StatusCode::OK,
        Envelope {
            status: "success",
            data: Data {
                encoding_flags: categorize.then_some([CATEGORIZE]),
                result_type: "streams",
                result,
                stats,
            },
            warnings,
        },
    )
    .await
}

/// `GET /loki/api/v1/query`: a metric query at one instant (`vector`, or `scalar`). Log
/// queries are refused, as Loki refuses them here.
async fn query_instant(State(q): State<Query>, Params(pairs): Params<Pairs>) -> Response {
    let query = match parsed(&pairs) {
        Ok(query) => query,
        Err(message) => return bad_request(&message),
    };
    let time = match pairs.last("time").filter(|t| !t.is_empty()).map(|t| parse_time("time", &t)).transpose()
    {
        Ok(time) => time.unwrap_or_else(now_nanos),
        Err(message) => return bad_request(&message),
    };
    let logql::Query::Metric(metric) = query else {
        return bad_request(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        );
    };
    let steps = Steps { start: time, step: 1, count: 1 };
    let mut read = Read { started: Some(std::time::Instant::now()), ..Read::default() };
    let value = match evaluated(&q, &metric, steps, &mut read).await {
        Ok(value) => value,
        Err(status) => return failure(&status),
    };
    match value {
        Value::Scalar(v) => {
            let stats = Stats::of(&read, 1);
            json_off_thread(
                StatusCode::OK,
                Envelope {
                    status: "success",
                    data: Data {
                        encoding_flags: None,
                        result_type: "scalar",
                        result: (seconds(time), sample_text(v)),
                        stats,
                    },
                    warnings: Vec::new(),
                },
            )
            .await
        }
        Value::Series(series) => {
            let result: Vec<VectorOut> = series
                .into_iter()
                .filter_map(|s| {
                    Some(VectorOut { value: (seconds(time), sample_text(s.points[0]?)), metric: s.labels })
                })
                .collect();
            let stats = Stats::of(&read, result.len());
            json_off_thread(
                StatusCode::OK,
                Envelope {
                    status: "success",
                    data: Data { encoding_flags: None, result_type: "vector", result, stats },
                    warnings: Vec::new(),
                },
            )
            .await
        }
    }
}

/// `GET /loki/api/v1/index/stats`: the streams a selector matches in the range, and the
/// records, bytes and chunks (a stream's days) it would read; bytes estimated from the
/// newest thousand records' lines (of the range's last hour when it has them). Loki's answer
/// is the bare object.
async fn index_stats(State(q): State<Query>, Params(pairs): Params<Pairs>) -> Response {
    let log = match parsed(&pairs) {
        Ok(logql::Query::Log(log)) => log,
        Ok(logql::Query::Metric(_)) => return bad_request("index/stats takes a stream selector"),
        Err(message) => return bad_request(&message),
    };
    let params =
        RangeParams { start: pairs.last("start"), end: pairs.last("end"), since: pairs.last("since") };
    let (start, end) = match range(&params) {
        Ok(range) => range,
        Err(message) => return bad_request(&message),
    };
    let streams = match loki_read::streams(&q, &log, start, end).await {
        Ok(streams) => streams,
        Err(status) => return failure(&status),
    };
    let resources: Vec<i64> = streams.keys().copied().collect();
    let statement = format!(
        "WITH counted AS (
             SELECT resource_id, minute_unix_nano / 86400000000000 AS day, sum(records)::bigint AS records
             FROM log_rollup
             WHERE resource_id = ANY($3)
               AND minute_unix_nano >= $1 - (($1 % 60000000000) + 60000000000) % 60000000000 AND minute_unix_nano < $2
             GROUP BY 1, 2),
         -- The newest thousand lines of the range's last hour, or of the whole range when
         -- that hour has none (coalesce reads the second only then).
         recent AS (
             SELECT octet_length({LINE}) AS bytes
             FROM logs l WHERE l.resource_id = ANY($3) AND l.timestamp_unix_nano >= greatest($1, $2 - 3600000000000)
               AND l.timestamp_unix_nano < $2
             ORDER BY l.timestamp_unix_nano DESC LIMIT 1000),
         older AS (
             SELECT octet_length({LINE}) AS bytes
             FROM logs l WHERE l.resource_id = ANY($3) AND l.timestamp_unix_nano >= $1 AND l.timestamp_unix_nano < $2
             ORDER BY l.timestamp_unix_nano DESC LIMIT 1000)
         SELECT count(*)::bigint, coalesce(sum(records), 0)::bigint,
                coalesce((SELECT avg(bytes)::float8 FROM recent), (SELECT avg(bytes)::float8 FROM older)) FROM counted",
        LINE = loki_read::LINE
    );
    let rows = match q.rows(&statement, &[&start, &end, &resources]).await {
        Ok(rows) => rows,
        Err(status) => return failure(&status),
    };
    let (chunks, entries, average) = rows.first().map_or((0, 0, None), |row| {
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, Option<f64>>(2))
    });
    let bytes = (entries as f64 * average.unwrap_or(0.0)).round() as u64;
    json(
        StatusCode::OK,
        &json!({"streams": streams.len(), "chunks": chunks, "entries": entries, "bytes": bytes}),
    )
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
        assert!(parse_time("start", "-9223372036854775808").unwrap_err().contains("before 1970"));
        assert!(parse_time("end", "9223372036854775807").unwrap_err().contains("after 2116"));
        assert!(parse_time("end", "1e300").is_err());
    }
}
