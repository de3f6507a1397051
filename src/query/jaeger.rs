//! Jaeger's query HTTP API (the one Jaeger's UI and Grafana's Jaeger data source read), served
//! from the query service: `GET /api/services`, `/api/services/{service}/operations`,
//! `/api/operations?service=&spanKind=`, `/api/traces?service=&operation=&tags=&start=&end=
//! &minDuration=&maxDuration=&limit=`, `/api/traces/{traceID}` and
//! `/api/dependencies?endTs=&lookback=`, under `/jaeger` on the
//! OTLP/HTTP port (and at `/api` too, see [`router`]).
//!
//! Answers follow Jaeger's JSON model (jaeger `model/json`): `{"data", "total", "limit",
//! "offset", "errors"}`, traces with spans, references, tags, logs and processes. Spans become
//! Jaeger spans the way Jaeger's own OTLP translator does it (opentelemetry-collector-contrib
//! `pkg/translator/jaeger`, `traces_to_jaegerproto.go`): the parent is the first `CHILD_OF`
//! reference and links follow as `FOLLOWS_FROM` (or `CHILD_OF` when the link says
//! `opentracing.ref_type = child_of`); the scope is the tags `otel.scope.name` and
//! `otel.scope.version`; the kind is `span.kind` (`server`, `client`, ...); the status is
//! `otel.status_code` (`OK`, `ERROR`), `error = true` and `otel.status_description`; the trace
//! state is `w3c.tracestate`; an event is a log whose field `event` holds its name; arrays and
//! maps are string tags holding their JSON; times are microseconds.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::{Path, Query as Params, State},
    http::StatusCode,
    response::Response,
    routing::get,
    Router,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value, AnyValue, KeyValue},
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode as SpanStatusCode, Span, TracesData},
};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use super::{
    http::{json, json_off_thread},
    proto::{AttributeFilter, ListOperationsRequest, ListServicesRequest, SearchTracesRequest, TimeRange},
    Query, MAX_PAGE_SIZE,
};
use crate::encode::attributes::write_decoded_value;

/// How far back a search looks when it gives no start, as in Jaeger.
const DEFAULT_LOOKBACK: Duration = Duration::from_secs(2 * 24 * 3600);
/// How far back the dependency graph looks when it gives no lookback, as in Jaeger.
const DEFAULT_DEPENDENCY_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
/// Traces a search returns when it gives no limit, as in Jaeger.
const DEFAULT_LIMIT: usize = 100;

/// Jaeger's API routes, at `/jaeger/api/...` and at `/api/...`. The second is there because
/// Grafana's Jaeger data source sends its trace search to `/api/traces` at the root of the
/// data source's host, dropping a path such as `/jaeger` from its URL (grafana
/// `pkg/tsdb/jaeger/client.go` sets the search URL's path outright).
pub fn router(query: Query) -> Router {
    let api = Router::new()
        .route("/services", get(services))
        .route("/services/{service}/operations", get(service_operations))
        .route("/operations", get(operations))
        .route("/traces", get(search))
        .route("/traces/{trace_id}", get(trace))
        .route("/dependencies", get(dependencies))
        .with_state(query);
    Router::new().nest("/jaeger/api", api.clone()).nest("/api", api)
}

/// Jaeger's answer envelope (`structuredResponse`).
#[derive(Serialize, Deserialize, Debug)]
pub struct Envelope<T> {
    pub data: T,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
    pub errors: Option<Vec<JaegerError>>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct JaegerError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub msg: String,
    #[serde(rename = "traceID", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// One trace (`model/json.Trace`).
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<JaegerSpan>,
    pub processes: HashMap<String, Process>,
    pub warnings: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct JaegerSpan {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    pub flags: u32,
    pub operation_name: String,
    pub references: Vec<Reference>,
    /// Microseconds since the Unix epoch.
    pub start_time: u64,
    /// Microseconds.
    pub duration: u64,
    pub tags: Vec<Tag>,
    pub logs: Vec<Log>,
    #[serde(rename = "processID")]
    pub process_id: String,
    pub warnings: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// `CHILD_OF` or `FOLLOWS_FROM`.
    pub ref_type: String,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

/// A tag or log field: `type` is `string`, `bool`, `int64`, `float64` or `binary`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Tag {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: serde_json::Value,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Log {
    /// Microseconds since the Unix epoch.
    pub timestamp: u64,
    pub fields: Vec<Tag>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub service_name: String,
    pub tags: Vec<Tag>,
}

/// An operation as `/api/operations` lists it.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct JaegerOperation {
    pub name: String,
    pub span_kind: String,
}

fn envelope<T: Serialize>(data: Vec<T>) -> Response {
    let total = data.len();
    json(StatusCode::OK, &Envelope { data, total, limit: 0, offset: 0, errors: None })
}

/// A Jaeger error answer: the status Jaeger gives it, and the message in `errors`.
fn failure(status: &Status) -> Response {
    let body: Envelope<Option<()>> =
        Envelope { data: None, total: 0, limit: 0, offset: 0, errors: Some(vec![jaeger_error(status)]) };
    json(super::http::http_status(status.code()), &body)
}

/// Every service that sent spans in the last `DEFAULT_LOOKBACK`.
async fn services(State(q): State<Query>) -> Response {
    match all_services(&q).await {
        Ok(services) => envelope(services),
        Err(status) => failure(&status),
    }
}

async fn all_services(q: &Query) -> Result<Vec<String>, Status> {
    let time_range = Some(lookback(None, None)?);
    let mut services = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListServicesRequest { time_range, page_size: MAX_PAGE_SIZE as u32, page_token };
        let page = super::traces::list_services(q, &request).await?;
        services.extend(page.services);
        if page.next_page_token.is_empty() {
            return Ok(services);
        }
        page_token = page.next_page_token;
    }
}

async fn all_operations(q: &Query, service: String) -> Result<Vec<(String, i32)>, Status> {
    let time_range = Some(lookback(None, None)?);
    let mut operations = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListOperationsRequest {
            service: service.clone(),
            time_range,
            page_size: MAX_PAGE_SIZE as u32,
            page_token,
        };
        let page = super::traces::list_operations(q, &request).await?;
        operations.extend(page.operations.into_iter().map(|o| (o.name, o.kind)));
        if page.next_page_token.is_empty() {
            return Ok(operations);
        }
        page_token = page.next_page_token;
    }
}

/// Operation names of a service, each once whatever its kinds.
async fn service_operations(State(q): State<Query>, Path(service): Path<String>) -> Response {
    match all_operations(&q, service).await {
        Ok(operations) => {
            let mut names: Vec<String> = operations.into_iter().map(|(name, _)| name).collect();
            names.dedup();
            envelope(names)
        }
        Err(status) => failure(&status),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationsParams {
    #[serde(default)]
    service: String,
    #[serde(default)]
    span_kind: String,
}

async fn operations(State(q): State<Query>, Params(params): Params<OperationsParams>) -> Response {
    if params.service.is_empty() {
        return failure(&Status::invalid_argument("parameter 'service' is required"));
    }
    match all_operations(&q, params.service).await {
        Ok(operations) => envelope(
            operations
                .into_iter()
                .map(|(name, kind)| JaegerOperation { name, span_kind: span_kind_name(kind).to_owned() })
                .filter(|o| params.span_kind.is_empty() || o.span_kind == params.span_kind)
                .collect(),
        ),
        Err(status) => failure(&status),
    }
}

/// The range from `start` and `end` (microseconds), each defaulting as Jaeger's do.
fn lookback(start: Option<&str>, end: Option<&str>) -> Result<TimeRange, Status> {
    let end = nanos_param(end, "end", 1_000)?.unwrap_or_else(crate::time::now_nanos);
    let start =
        nanos_param(start, "start", 1_000)?.unwrap_or(end.saturating_sub(DEFAULT_LOOKBACK.as_nanos() as u64));
    Ok(TimeRange { start_unix_nano: start, end_unix_nano: end })
}

/// A whole number of some unit (`unit_nanos` nanoseconds each: Jaeger's times and durations are
/// microseconds or milliseconds) as nanoseconds; `None` when absent or empty.
fn nanos_param(value: Option<&str>, name: &str, unit_nanos: u64) -> Result<Option<u64>, Status> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u64>()
                .map(|n| n.saturating_mul(unit_nanos))
                .map_err(|e| Status::invalid_argument(format!("unable to parse param '{name}': {e}")))
        })
        .transpose()
}

/// A Go duration (`time.ParseDuration`): a sequence of numbers with units, such as `1.5ms`
/// or `1h30m`; units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
pub fn parse_go_duration(text: &str, name: &str) -> Result<u64, Status> {
    let bad =
        || Status::invalid_argument(format!("unable to parse param '{name}': invalid duration {text:?}"));
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * nanos;
        rest = &rest[unit_len..];
    }
    Ok(total as u64)
}

/// A tag value from a search, typed as the UI and SearchTraces filters type `key=value`:
/// `true`/`false` a bool, an integer an int, a number a double, anything else a string.
pub fn typed_value(text: &str) -> AnyValue {
    let value = if text == "true" || text == "false" {
        Value::BoolValue(text == "true")
    } else if let Ok(int) = text.parse::<i64>() {
        Value::IntValue(int)
    } else if let Some(double) = text.parse::<f64>().ok().filter(|d| d.is_finite() && !text.is_empty()) {
        Value::DoubleValue(double)
    } else {
        Value::StringValue(text.to_owned())
    };
    AnyValue { value: Some(value) }
}

async fn search(State(q): State<Query>, Params(params): Params<Vec<(String, String)>>) -> Response {
    match search_traces(&q, &params).await {
        Ok((traces, cut)) => traces_answer(traces, cut.as_ref()).await,
        Err(status) => failure(&status),
    }
}

/// Traces in Jaeger's envelope, encoded on the blocking pool. `cut`, when the traces that fit
/// are not all that were asked for, says why in `errors`.
async fn traces_answer(traces: Vec<Trace>, cut: Option<&Status>) -> Response {
    let total = traces.len();
    let errors = cut.map(|status| vec![jaeger_error(status)]);
    json_off_thread(StatusCode::OK, Envelope { data: traces, total, limit: 0, offset: 0, errors }).await
}

/// A status as an entry of Jaeger's `errors`.
fn jaeger_error(status: &Status) -> JaegerError {
    let code = super::http::http_status(status.code()).as_u16();
    JaegerError { code: Some(code), msg: status.message().to_owned(), trace_id: None }
}

/// Most trace ids one `/api/traces` request may name.
const MAX_TRACE_IDS: usize = 100;

/// The traces a search finds (or names), read into one answer's budget; with the status that
/// ended it early when they did not all fit.
async fn search_traces(
    q: &Query,
    params: &[(String, String)],
) -> Result<(Vec<Trace>, Option<Status>), Status> {
    let one = |name: &str| params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut request = SearchTracesRequest {
        service: one("service").unwrap_or_default().to_owned(),
        span_name: one("operation").unwrap_or_default().to_owned(),
        time_range: Some(lookback(one("start"), one("end"))?),
        ..Default::default()
    };
    let trace_ids: Vec<&str> =
        params.iter().filter(|(k, _)| k == "traceID").map(|(_, v)| v.as_str()).collect();
    if trace_ids.len() > MAX_TRACE_IDS {
        return Err(Status::invalid_argument(format!(
            "{} traceID parameters, more than the {MAX_TRACE_IDS} one request may name",
            trace_ids.len()
        )));
    }
    if request.service.is_empty() && trace_ids.is_empty() {
        return Err(Status::invalid_argument("parameter 'service' is required"));
    }
    let mut tags: Vec<(String, String)> = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "tag" => {
                let (k, v) = value.split_once(':').ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "malformed 'tag' parameter, expecting key:value, received: {value}"
                    ))
                })?;
                tags.push((k.to_owned(), v.to_owned()));
            }
            "tags" => {
                let map: HashMap<String, String> = serde_json::from_str(value).map_err(|e| {
                    Status::invalid_argument(format!(
                        "malformed 'tags' parameter, cannot unmarshal JSON: {e}"
                    ))
                })?;
                tags.extend(map);
            }
            _ => {}
        }
    }
    tags.sort();
    for (key, value) in tags {
        // The tags Jaeger makes of a span's status; the rest are attributes.
        match (key.as_str(), value.as_str()) {
            ("error", "true") | ("otel.status_code", "ERROR") => request.errors_only = true,
            _ => request.attributes.push(AttributeFilter { key, value: Some(typed_value(&value)) }),
        }
    }
    if let Some(min) = one("minDuration").filter(|v| !v.is_empty()) {
        request.min_duration_nanos = parse_go_duration(min, "minDuration")?;
    }
    if let Some(max) = one("maxDuration").filter(|v| !v.is_empty()) {
        request.max_duration_nanos = parse_go_duration(max, "maxDuration")?;
    }
    if request.min_duration_nanos != 0
        && request.max_duration_nanos != 0
        && request.max_duration_nanos < request.min_duration_nanos
    {
        return Err(Status::invalid_argument("'maxDuration' should be greater than 'minDuration'"));
    }
    let limit = match one("limit").filter(|v| !v.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .map_err(|e| Status::invalid_argument(format!("unable to parse param 'limit': {e}")))?,
    };
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit.min(MAX_PAGE_SIZE) };
    // A search that stopped early (see `SearchTracesResponse.message`) says so in `errors`.
    let mut stopped = None;
    let ids: Vec<String> = if trace_ids.is_empty() {
        request.page_size = limit as u32;
        let page = super::traces::search_traces(q, &request).await?;
        if !page.message.is_empty() {
            stopped = Some(Status::deadline_exceeded(page.message));
        }
        page.traces.into_iter().map(|t| t.trace_id).collect()
    } else {
        trace_ids.iter().map(|id| padded_trace_id(id)).collect::<Result<_, _>>()?
    };
    // Each trace once, however often it is named.
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = ids.into_iter().filter(|id| seen.insert(id.to_ascii_lowercase())).collect();
    let mut budget = q.budget();
    let mut traces = Vec::with_capacity(ids.len());
    for id in ids {
        let trace_id = super::traces::parse_trace_id(&id, "traceID")?;
        match q.trace_within(&trace_id, &mut budget).await {
            Ok(data) => {
                traces.push(super::decode_off_thread(budget.used(), move || Ok(to_jaeger(&data))).await?)
            }
            // Gone between the search and the read (retention), or asked for by id and absent.
            Err(status) if status.code() == Code::NotFound => {}
            // The answer is full: hand back the traces that fit, and say so.
            Err(status) if status.code() == Code::ResourceExhausted && !traces.is_empty() => {
                return Ok((traces, Some(status)))
            }
            Err(status) => return Err(status),
        }
    }
    Ok((traces, stopped))
}

/// A link of the dependency graph (`model/json.DependencyLink`).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DependencyParams {
    /// Milliseconds since the epoch; now when absent.
    end_ts: Option<String>,
    /// Milliseconds.
    lookback: Option<String>,
}

async fn dependencies(State(q): State<Query>, Params(params): Params<DependencyParams>) -> Response {
    let found = async {
        let end =
            nanos_param(params.end_ts.as_deref(), "endTs", 1_000_000)?.unwrap_or_else(crate::time::now_nanos);
        let lookback = nanos_param(params.lookback.as_deref(), "lookback", 1_000_000)?
            .unwrap_or(DEFAULT_DEPENDENCY_LOOKBACK.as_nanos() as u64);
        let time_range =
            Some(TimeRange { start_unix_nano: end.saturating_sub(lookback), end_unix_nano: end });
        let request = super::proto::ListServiceDependenciesRequest { time_range };
        super::traces::list_service_dependencies(&q, &request, false).await
    };
    match found.await {
        // Databases, queues and remote hosts as leaf services, as Jaeger's own dependency jobs
        // name an uninstrumented callee by its peer.service.
        Ok(found) => envelope(
            found
                .dependencies
                .into_iter()
                .map(|d| DependencyLink { parent: d.parent, child: d.child, call_count: d.call_count })
                .chain(found.peers.into_iter().map(|p| DependencyLink {
                    parent: p.parent,
                    child: p.peer,
                    call_count: p.call_count,
                }))
                .collect(),
        ),
        Err(status) => failure(&status),
    }
}

#[derive(Deserialize)]
struct TraceParams {}

async fn trace(
    State(q): State<Query>,
    Path(trace_id): Path<String>,
    Params(_): Params<TraceParams>,
) -> Response {
    let found = async {
        let id = super::traces::parse_trace_id(&padded_trace_id(&trace_id)?, "traceID")?;
        let mut budget = q.budget();
        let data = q.trace_within(&id, &mut budget).await?;
        super::decode_off_thread(budget.used(), move || Ok(to_jaeger(&data))).await
    };
    match found.await {
        Ok(trace) => traces_answer(vec![trace], None).await,
        Err(status) => failure(&status),
    }
}

/// A Jaeger trace id (hex, leading zeros may be left off) as 32 hex characters.
fn padded_trace_id(id: &str) -> Result<String, Status> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let shown: String = id.chars().take(40).collect();
        return Err(Status::invalid_argument(format!(
            "traceID: expected up to 32 hexadecimal characters, got {shown:?}"
        )));
    }
    Ok(format!("{id:0>32}").to_ascii_lowercase())
}

/// A trace id as Jaeger writes it: 16 hex characters when its high half is zero, else 32.
fn jaeger_trace_id(id: &[u8]) -> String {
    match id.split_at_checked(8) {
        Some((high, low)) if high.iter().all(|b| *b == 0) => hex::encode(low),
        _ => hex::encode(id),
    }
}

/// `span.kind`'s value for a kind (Jaeger's OpenTracing names); empty for unspecified.
pub fn span_kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        _ => "",
    }
}

/// An attribute as a Jaeger tag.
fn tag(key: &str, value: Option<&AnyValue>) -> Tag {
    let (kind, value) = match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => ("string", serde_json::Value::from(s.as_str())),
        Some(Value::BoolValue(b)) => ("bool", serde_json::Value::from(*b)),
        Some(Value::IntValue(i)) => ("int64", serde_json::Value::from(*i)),
        // JSON has no NaN or infinities: those travel as their names, as Go's encoder would
        // refuse them outright.
        Some(Value::DoubleValue(d)) => match serde_json::Number::from_f64(*d) {
            Some(n) => ("float64", serde_json::Value::Number(n)),
            None => ("float64", serde_json::Value::from(d.to_string())),
        },
        Some(Value::BytesValue(b)) => ("binary", serde_json::Value::from(STANDARD.encode(b))),
        // A profiles-only string table index, and structured values: their JSON, as a string.
        Some(other @ (Value::ArrayValue(_) | Value::KvlistValue(_) | Value::StringValueStrindex(_))) => {
            let mut out = bytes::BytesMut::new();
            write_decoded_value(&mut out, &AnyValue { value: Some(other.clone()) });
            ("string", serde_json::Value::from(String::from_utf8_lossy(&out).into_owned()))
        }
        None => ("string", serde_json::Value::from("")),
    };
    Tag { key: key.to_owned(), kind: kind.to_owned(), value }
}

fn string_tag(key: &str, value: &str) -> Tag {
    Tag { key: key.to_owned(), kind: "string".to_owned(), value: serde_json::Value::from(value) }
}

fn attribute_tags(attributes: &[KeyValue]) -> impl Iterator<Item = Tag> + '_ {
    attributes.iter().map(|kv| tag(&kv.key, kv.value.as_ref()))
}

/// A resource as a Jaeger process: `service.name` is its name, every other attribute a tag.
fn process(resource: Option<&Resource>) -> Process {
    let attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
    let service_name = attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "OTLPResourceNoServiceName".to_owned());
    let tags = attribute_tags(attributes).filter(|t| t.key != "service.name").collect();
    Process { service_name, tags }
}

/// A trace in Jaeger's model.
pub fn to_jaeger(data: &TracesData) -> Trace {
    let mut trace = Trace::default();
    let mut process_ids: Vec<(Process, String)> = Vec::new();
    for resource_spans in &data.resource_spans {
        let process = process(resource_spans.resource.as_ref());
        let process_id = match process_ids.iter().find(|(p, _)| *p == process) {
            Some((_, id)) => id.clone(),
            None => {
                let id = format!("p{}", process_ids.len() + 1);
                trace.processes.insert(id.clone(), process.clone());
                process_ids.push((process, id.clone()));
                id
            }
        };
        for scope_spans in &resource_spans.scope_spans {
            let mut scope_tags = Vec::new();
            if let Some(scope) = &scope_spans.scope {
                if !scope.name.is_empty() {
                    scope_tags.push(string_tag("otel.scope.name", &scope.name));
                }
                if !scope.version.is_empty() {
                    scope_tags.push(string_tag("otel.scope.version", &scope.version));
                }
            }
            for span in &scope_spans.spans {
                if trace.trace_id.is_empty() {
                    trace.trace_id = jaeger_trace_id(&span.trace_id);
                }
                trace.spans.push(jaeger_span(span, &scope_tags, &process_id));
            }
        }
    }
    trace
}

fn jaeger_span(span: &Span, scope_tags: &[Tag], process_id: &str) -> JaegerSpan {
    let mut references = Vec::new();
    if !span.parent_span_id.is_empty() {
        references.push(Reference {
            ref_type: "CHILD_OF".to_owned(),
            trace_id: jaeger_trace_id(&span.trace_id),
            span_id: hex::encode(&span.parent_span_id),
        });
    }
    for link in &span.links {
        let child_of = link.attributes.iter().any(|kv| {
            kv.key == "opentracing.ref_type"
                && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(s)) if s == "child_of")
        });
        references.push(Reference {
            ref_type: if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" }.to_owned(),
            trace_id: jaeger_trace_id(&link.trace_id),
            span_id: hex::encode(&link.span_id),
        });
    }
    let mut tags: Vec<Tag> = scope_tags.to_vec();
    tags.extend(attribute_tags(&span.attributes));
    let kind = span_kind_name(span.kind);
    if !kind.is_empty() {
        tags.push(string_tag("span.kind", kind));
    }
    if let Some(status) = &span.status {
        match SpanStatusCode::try_from(status.code) {
            Ok(SpanStatusCode::Ok) => tags.push(string_tag("otel.status_code", "OK")),
            Ok(SpanStatusCode::Error) => {
                tags.push(string_tag("otel.status_code", "ERROR"));
                tags.push(Tag { key: "error".to_owned(), kind: "bool".to_owned(), value: true.into() });
            }
            _ => {}
        }
        if !status.message.is_empty() {
            tags.push(string_tag("otel.status_description", &status.message));
        }
    }
    if !span.trace_state.is_empty() {
        tags.push(string_tag("w3c.tracestate", &span.trace_state));
    }
    let logs = span
        .events
        .iter()
        .map(|event| {
            let mut fields = Vec::new();
            if !event.name.is_empty() {
                fields.push(string_tag("event", &event.name));
            }
            fields.extend(attribute_tags(&event.attributes));
            Log { timestamp: event.time_unix_nano / 1000, fields }
        })
        .collect();
    JaegerSpan {
        trace_id: jaeger_trace_id(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        flags: span.flags & 0xff,
        operation_name: span.name.clone(),
        references,
        start_time: span.start_time_unix_nano / 1000,
        duration: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1000,
        tags,
        logs,
        process_id: process_id.to_owned(),
        warnings: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        assert_eq!(parse_go_duration("1.5ms", "d").unwrap(), 1_500_000);
        assert_eq!(parse_go_duration("100us", "d").unwrap(), 100_000);
        assert_eq!(parse_go_duration("100µs", "d").unwrap(), 100_000);
        assert_eq!(parse_go_duration("1h30m", "d").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_go_duration("0", "d").unwrap(), 0);
        assert!(parse_go_duration("10", "d").is_err(), "a number needs a unit");
        assert!(parse_go_duration("ms", "d").is_err());
        assert!(parse_go_duration("1d", "d").is_err());
    }

    #[test]
    fn trace_ids_are_padded_and_shortened_as_jaeger_does() {
        assert_eq!(padded_trace_id("abc").unwrap(), format!("{}abc", "0".repeat(29)));
        assert!(padded_trace_id("xyz").is_err());
        assert!(padded_trace_id(&"a".repeat(33)).is_err());
        let mut id = [0u8; 16];
        id[15] = 1;
        assert_eq!(jaeger_trace_id(&id), "0000000000000001");
        id[0] = 0xab;
        assert_eq!(jaeger_trace_id(&id), "ab000000000000000000000000000001");
    }

    #[test]
    fn tag_values_are_typed_like_search_filters() {
        assert_eq!(typed_value("200").value, Some(Value::IntValue(200)));
        assert_eq!(typed_value("2.5").value, Some(Value::DoubleValue(2.5)));
        assert_eq!(typed_value("true").value, Some(Value::BoolValue(true)));
        assert_eq!(typed_value("GET").value, Some(Value::StringValue("GET".into())));
        assert_eq!(typed_value("NaN").value, Some(Value::StringValue("NaN".into())));
    }
}
