//! How the Loki API reads LogQL out of PostgreSQL: the selector becomes the resources whose
//! stream labels it matches (from `log_rollup`'s resources in the range), the line filters,
//! trace and span ids that can be said in SQL become the statement's conditions (the trace id
//! by its hash index), and the rest of the pipeline runs over the rows as they stream in
//! (`logql_eval`), a chunk at a time on the blocking pool. Log queries read time windows from
//! the requested end (or start) until `limit` lines pass; metric queries read their range once,
//! or, for a `sum` by stream labels and level of records counted by line filters alone, have
//! PostgreSQL count them per window.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use tokio_postgres::Row;
use tonic::Status;

use super::{
    budget::Budget,
    logql::{
        AggregateOp, DropItem, Grouping, LabelFilter, LabelFormat, LineOp, LogQuery, MatchOp, Metric,
        RangeFunc, Stage,
    },
    logql_eval::{self as eval, Entry, Label, Labels, Origin, Pipeline, Series, Steps, Value, Windows},
    loki::{label_name, Compiled, PROMOTED},
    Consumer, Query, Sql,
};
use crate::store::citus::Layout;

/// Most series a metric query may answer with, as Loki's `max_query_series`.
pub const MAX_SERIES: usize = 500;

/// The text of a record's log line: a string body as it is, any other body as its JSON.
pub(super) const LINE: &str =
    "CASE jsonb_typeof(l.body) WHEN 'string' THEN l.body #>> '{}' ELSE coalesce(l.body::text, '') END";

/// What a query read, for the answer's `stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Read {
    pub lines: u64,
    pub bytes: u64,
    pub started: Option<Instant>,
}

/// A resource seen as a stream: its labels and the rest of its attributes as metadata.
pub struct Stream {
    pub labels: Vec<(String, String)>,
    metadata: Vec<(String, String)>,
}

/// The streams of the selector in the range, by resource id.
pub type Streams = HashMap<i64, Arc<Stream>>;

/// Attributes as Loki 3 flattens them into labels: nested maps' keys joined with `_`, every
/// name as a label name, values as OTLP's `AsString` writes them.
pub fn flatten_attributes(attributes: &serde_json::Value, prefix: &str, out: &mut Vec<(String, String)>) {
    let serde_json::Value::Object(map) = attributes else { return };
    for (key, value) in map {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}_{key}") };
        match value {
            serde_json::Value::Object(inner) if inner.len() == 1 && inner.contains_key("$map") => {
                flatten_attributes(&inner["$map"], &name, out);
            }
            serde_json::Value::Object(inner) if !is_tagged(inner) => flatten_attributes(value, &name, out),
            other => out.push((label_name(&name), as_string(other))),
        }
    }
}

fn is_tagged(map: &serde_json::Map<String, serde_json::Value>) -> bool {
    map.len() == 1 && map.keys().next().is_some_and(|k| crate::encode::attributes::TAGS.contains(&k.as_str()))
}

/// A stored attribute value as text: strings as they are, other values as OTLP writes them.
fn as_string(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) if is_tagged(map) => match map.iter().next() {
            Some((tag, serde_json::Value::Array(pieces))) if tag == "$nul" => {
                pieces.iter().map(|p| p.as_str().unwrap_or_default()).collect::<Vec<_>>().join("\0")
            }
            Some((_, serde_json::Value::String(text))) => text.clone(),
            Some((_, other)) => other.to_string(),
            None => String::new(),
        },
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The level Loki detects for a record (`detected_level`): from the severity number's range,
/// else from a severity text it knows.
pub fn detected_level(number: i32, text: &str) -> &'static str {
    match number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => match text.to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "info" | "information" => "info",
            "warn" | "warning" => "warn",
            "error" | "err" => "error",
            "fatal" => "fatal",
            "critical" | "crit" => "critical",
            _ => "unknown",
        },
    }
}

/// The streams a selector matches among the resources with records in `[start, end)`.
///
/// # Errors
/// A bad regex (INVALID_ARGUMENT), the database's.
pub async fn streams(q: &Query, log: &LogQuery, start: i64, end: i64) -> Result<Streams, Status> {
    let matchers = log
        .selector
        .iter()
        .map(Compiled::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Status::invalid_argument)?;
    let mut sql = Sql::default();
    let (start, end) = (sql.param(start), sql.param(end));
    let minutes = format!(
        "u.minute_unix_nano >= {start} - (({start} % 60000000000) + 60000000000) % 60000000000
         AND u.minute_unix_nano < {end}"
    );
    let mut statement = match q.layout {
        // Each resource's minutes by the rollup's (resource, minute) index: a probe a
        // resource, or one scan of the range's rows when most resources are asked about.
        Layout::SingleNode => format!(
            "SELECT r.resource_id, r.attributes FROM resources r
             WHERE EXISTS (SELECT 1 FROM log_rollup u WHERE u.resource_id = r.resource_id AND {minutes})"
        ),
        // Citus runs no subquery that refers to a reference table's row: the range's resource
        // ids first.
        Layout::Citus => format!(
            "SELECT r.resource_id, r.attributes FROM resources r
             WHERE r.resource_id IN (SELECT u.resource_id FROM log_rollup u WHERE {minutes})"
        ),
    };
    // A service named outright narrows the resources by their index.
    if let Some(m) = log.selector.iter().find(|m| m.name == "service_name" && m.op == MatchOp::Eq) {
        statement += &format!(" AND r.service_name = {}", sql.param(m.value.clone()));
    }
    let rows = q.rows(&statement, &sql.params()).await?;
    let streams = tokio::task::spawn_blocking(move || {
        let mut streams = Streams::new();
        for row in &rows {
            let attributes: serde_json::Value = row.get(1);
            let labels = super::loki::stream_labels(&attributes);
            if !matchers.iter().all(|m| m.matches(&labels)) {
                continue;
            }
            let rest: serde_json::Map<String, serde_json::Value> = attributes
                .as_object()
                .map(|map| {
                    map.iter()
                        .filter(|(k, _)| !PROMOTED.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let mut metadata = Vec::new();
            flatten_attributes(&serde_json::Value::Object(rest), "", &mut metadata);
            streams.insert(row.get(0), Arc::new(Stream { labels: labels.into_iter().collect(), metadata }));
        }
        streams
    })
    .await
    .map_err(|e| Status::internal(format!("matching streams failed: {e}")))?;
    Ok(streams)
}

/// The columns every read takes, after `l` (logs) and `s` (its scope).
fn columns() -> String {
    format!(
        "l.timestamp_unix_nano, l.resource_id, {LINE} AS line, l.attributes, l.trace_id, l.span_id,
         l.severity_number, l.severity_text, l.flags, l.dropped_attributes_count, l.time_unix_nano,
         l.observed_time_unix_nano, s.name, s.version, s.attributes, s.dropped_attributes_count"
    )
}

/// A row as a pipeline's entry: stream labels, then structured metadata as Loki 3 writes it
/// from OTLP (the record's own fields, its attributes, the resource's other attributes, the
/// scope's), a name taken once, first come first kept.
fn entry_of(row: &Row, streams: &Streams) -> Option<Entry> {
    let stream = streams.get(&row.get::<_, i64>(1))?;
    let mut labels = Labels::new();
    for (k, v) in &stream.labels {
        labels.insert(k.clone(), Label { value: v.clone(), origin: Origin::Stream });
    }
    let meta = |labels: &mut Labels, name: &str, value: String| {
        labels.entry(name.to_owned()).or_insert(Label { value, origin: Origin::Metadata });
    };
    let hex_of = |bytes: Option<Vec<u8>>| bytes.filter(|b| !b.is_empty()).map(hex::encode);
    if let Some(trace) = hex_of(row.get(4)) {
        meta(&mut labels, "trace_id", trace);
    }
    if let Some(span) = hex_of(row.get(5)) {
        meta(&mut labels, "span_id", span);
    }
    let (number, text): (i32, String) = (row.get(6), row.get(7));
    if number != 0 {
        meta(&mut labels, "severity_number", number.to_string());
    }
    meta(&mut labels, "detected_level", detected_level(number, &text).to_owned());
    if !text.is_empty() {
        meta(&mut labels, "severity_text", text);
    }
    let (flags, dropped): (i64, i64) = (row.get(8), row.get(9));
    if flags != 0 {
        meta(&mut labels, "flags", flags.to_string());
    }
    if dropped != 0 {
        meta(&mut labels, "dropped_attributes_count", dropped.to_string());
    }
    let (time, observed): (i64, i64) = (row.get(10), row.get(11));
    if time != 0 && observed != 0 {
        meta(&mut labels, "observed_timestamp", observed.to_string());
    }
    let mut pairs = Vec::new();
    flatten_attributes(&row.get::<_, serde_json::Value>(3), "", &mut pairs);
    for (k, v) in pairs.drain(..).chain(stream.metadata.iter().cloned()) {
        meta(&mut labels, &k, v);
    }
    if let Some(attributes) = row.get::<_, Option<serde_json::Value>>(14) {
        flatten_attributes(&attributes, "", &mut pairs);
    }
    for (k, v) in pairs {
        meta(&mut labels, &k, v);
    }
    if let Some(name) = row.get::<_, Option<String>>(12).filter(|n| !n.is_empty()) {
        meta(&mut labels, "scope_name", name);
    }
    if let Some(version) = row.get::<_, Option<String>>(13).filter(|v| !v.is_empty()) {
        meta(&mut labels, "scope_version", version);
    }
    if let Some(dropped) = row.get::<_, Option<i64>>(15).filter(|d| *d != 0) {
        meta(&mut labels, "scope_dropped_attributes_count", dropped.to_string());
    }
    Some(Entry { time: row.get(0), line: row.get(2), labels })
}

/// The conditions of a log query's stages that SQL can say exactly, each starting " AND ":
/// line filters on the stored line (before any `line_format`), and the trace and span ids
/// (before any stage that could set those labels), including the trace-to-logs form that ORs
/// `contains "<id>" __line__` with the record's id.
fn pushed_down(stages: &[Stage], sql: &mut Sql) -> String {
    let mut conditions = String::new();
    let mut line_original = true;
    // Labels a stage before may have set: `None` once a parser may have set any.
    let mut touched: Option<HashSet<String>> = Some(HashSet::new());
    // Labels set by `label_format x=`{{ contains "id" __line__ }}`` on the stored line.
    let mut contains: HashMap<String, String> = HashMap::new();
    for stage in stages {
        match stage {
            Stage::Line { op: LineOp::Contains, values } if line_original => {
                let any: Vec<String> = values
                    .iter()
                    .map(|v| format!("strpos(({LINE}), {}) > 0", sql.param(v.clone())))
                    .collect();
                conditions += &format!(" AND ({})", any.join(" OR "));
            }
            Stage::Line { op: LineOp::NotContains, values } if line_original => {
                for v in values {
                    conditions += &format!(" AND strpos(({LINE}), {}) = 0", sql.param(v.clone()));
                }
            }
            Stage::Line { .. } => {}
            Stage::LineFormat(_) => line_original = false,
            Stage::Json(fields) | Stage::Logfmt(fields) => {
                if fields.is_empty() {
                    touched = None;
                } else if let Some(t) = &mut touched {
                    for (name, _) in fields {
                        t.insert(name.clone());
                        contains.remove(name);
                    }
                }
            }
            Stage::Drop(_) => touched = None,
            Stage::LabelFormat(formats) => {
                for (name, format) in formats {
                    contains.remove(name);
                    if let Some(t) = &mut touched {
                        t.insert(name.clone());
                        if let LabelFormat::Rename(old) = format {
                            t.insert(old.clone());
                        }
                    }
                    if let (LabelFormat::Template(text), true) = (format, line_original) {
                        if let Some(id) = contains_line(text) {
                            contains.insert(name.clone(), id);
                        }
                    }
                }
            }
            Stage::Filter(filter) => {
                if !has_number(filter) {
                    if let Some(condition) = filter_sql(filter, touched.as_ref(), &contains, sql) {
                        conditions += &format!(" AND {condition}");
                    }
                }
            }
        }
    }
    conditions
}

/// The id in a `{{ contains "id" __line__ }}` template, the form trace-to-logs sends.
fn contains_line(template: &str) -> Option<String> {
    let inner = template.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let rest = inner.strip_prefix("contains")?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let close = rest.find('"')?;
    let (id, tail) = (&rest[..close], rest[close + 1..].trim());
    (tail == "__line__" && !id.contains('\\')).then(|| id.to_owned())
}

fn has_number(filter: &LabelFilter) -> bool {
    match filter {
        LabelFilter::And(a, b) | LabelFilter::Or(a, b) => has_number(a) || has_number(b),
        LabelFilter::Number { .. } => true,
        LabelFilter::Text(_) => false,
    }
}

/// A label filter as SQL where it can be said exactly; `None` where it cannot (the rows then
/// all go to the pipeline, which decides).
fn filter_sql(
    filter: &LabelFilter,
    touched: Option<&HashSet<String>>,
    contains: &HashMap<String, String>,
    sql: &mut Sql,
) -> Option<String> {
    match filter {
        LabelFilter::And(a, b) => {
            match (filter_sql(a, touched, contains, sql), filter_sql(b, touched, contains, sql)) {
                (Some(a), Some(b)) => Some(format!("({a} AND {b})")),
                (a, b) => a.or(b),
            }
        }
        LabelFilter::Or(a, b) => {
            let (a, b) = (filter_sql(a, touched, contains, sql)?, filter_sql(b, touched, contains, sql)?);
            Some(format!("({a} OR {b})"))
        }
        LabelFilter::Number { .. } => None,
        LabelFilter::Text(m) => {
            if m.op != MatchOp::Eq {
                return None;
            }
            if let Some(id) = contains.get(&m.name) {
                return match m.value.as_str() {
                    "true" => Some(format!("strpos(({LINE}), {}) > 0", sql.param(id.clone()))),
                    "false" => Some(format!("strpos(({LINE}), {}) = 0", sql.param(id.clone()))),
                    _ => Some("FALSE".into()),
                };
            }
            let column = match m.name.as_str() {
                "trace_id" => "l.trace_id",
                "span_id" => "l.span_id",
                _ => return None,
            };
            if touched.is_none_or(|t| t.contains(&m.name)) {
                return None;
            }
            let width = if column == "l.trace_id" { 32 } else { 16 };
            if m.value.is_empty() {
                return Some(format!("{column} IS NULL"));
            }
            // The metadata is lowercase hex; any other text matches no record.
            let lower_hex =
                m.value.len() == width && m.value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            match hex::decode(&m.value) {
                Ok(bytes) if lower_hex => Some(format!("{column} = {}", sql.param(bytes))),
                _ => Some("FALSE".into()),
            }
        }
    }
}

/// An entry for a log query's answer.
pub struct Line {
    pub time: i64,
    pub line: String,
    pub labels: Labels,
}

/// Collects the lines that pass, up to the limit.
struct Lines {
    pipeline: Arc<Pipeline>,
    streams: Arc<Streams>,
    limit: usize,
    lines: Vec<Line>,
    held: usize,
    read: Read,
}

impl Consumer for Lines {
    fn take(&mut self, rows: Vec<Row>) -> Result<bool, Status> {
        for row in &rows {
            let Some(entry) = entry_of(row, &self.streams) else { continue };
            self.read.lines += 1;
            self.read.bytes += entry.line.len() as u64;
            if let Some(out) = self.pipeline.run(entry) {
                self.held += out.line.len()
                    + out.labels.iter().map(|(k, l)| k.len() + l.value.len() + 48).sum::<usize>()
                    + 64;
                self.lines.push(Line { time: out.time, line: out.line, labels: out.labels });
                if self.lines.len() >= self.limit {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn held_bytes(&self) -> usize {
        self.held
    }
}

/// The time windows a log query reads, in the order it reads them: from the end back
/// (backward) or from the start on (forward), a minute, then ten times as long each time.
fn windows(start: i64, end: i64, backward: bool) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut length: i64 = 60_000_000_000;
    let mut edge = if backward { end } else { start };
    while (backward && edge > start) || (!backward && edge < end) {
        let (lo, hi) = if backward {
            (edge.saturating_sub(length).max(start), edge)
        } else {
            (edge, edge.saturating_add(length).min(end))
        };
        out.push((lo, hi));
        edge = if backward { lo } else { hi };
        length = length.saturating_mul(10);
    }
    out
}

/// A log query's lines in `[start, end)`: the first `limit` that pass, newest first
/// (backward) or oldest first; what was read; whether the answer's memory filled first.
///
/// # Errors
/// INVALID_ARGUMENT for a pipeline that cannot run; the database's; the budget's.
pub async fn lines(
    q: &Query,
    log: &LogQuery,
    (start, end): (i64, i64),
    limit: usize,
    backward: bool,
    budget: &mut Budget,
) -> Result<(Vec<Line>, Read, bool), Status> {
    let pipeline = Arc::new(Pipeline::new(&log.stages).map_err(Status::invalid_argument)?);
    let streams = Arc::new(streams(q, log, start, end).await?);
    let mut read = Read { started: Some(Instant::now()), ..Read::default() };
    let mut found = Vec::new();
    if streams.is_empty() || limit == 0 {
        return Ok((found, read, false));
    }
    let mut sql = Sql::default();
    let resources: Vec<i64> = streams.keys().copied().collect();
    let resources = sql.param(resources);
    let conditions = pushed_down(&log.stages, &mut sql);
    let (lo, hi) = (sql.next_placeholder(), format!("${}", sql.params().len() + 2));
    let statement = format!(
        "SELECT {} FROM logs l LEFT JOIN scopes s ON s.scope_id = l.scope_id
         WHERE l.resource_id = ANY({resources}) AND l.timestamp_unix_nano >= {lo} AND l.timestamp_unix_nano < {hi}{conditions}
         ORDER BY l.timestamp_unix_nano {}",
        columns(),
        if backward { "DESC" } else { "ASC" }
    );
    let mut client = q.client().await?;
    for (window_start, window_end) in windows(start, end, backward) {
        let mut params = sql.params();
        params.push(&window_start);
        params.push(&window_end);
        let consumer = Lines {
            pipeline: pipeline.clone(),
            streams: streams.clone(),
            limit: limit - found.len(),
            lines: Vec::new(),
            held: 0,
            read: Read::default(),
        };
        let (consumer, full) = client.consume(&statement, &params, consumer, budget).await?;
        read.lines += consumer.read.lines;
        read.bytes += consumer.read.bytes;
        found.extend(consumer.lines);
        if full {
            return Ok((found, read, true));
        }
        if found.len() >= limit {
            break;
        }
    }
    Ok((found, read, false))
}

/// Samples into a range function's windows, per series of every label.
struct Samples {
    pipeline: Arc<Pipeline>,
    streams: Arc<Streams>,
    windows: Windows,
    /// When set, series are these labels of each sample (a `sum by` read straight into its groups).
    grouping: Option<Option<Grouping>>,
    held: usize,
    read: Read,
}

impl Consumer for Samples {
    fn take(&mut self, rows: Vec<Row>) -> Result<bool, Status> {
        for row in &rows {
            let Some(entry) = entry_of(row, &self.streams) else { continue };
            self.read.lines += 1;
            self.read.bytes += entry.line.len() as u64;
            let Some(out) = self.pipeline.run(entry) else { continue };
            if let Some(error) = out.labels.get(eval::ERROR) {
                return Err(Status::invalid_argument(format!(
                    "pipeline error: '{}' for series: '{}'. Use a label filter to intentionally skip this error. (e.g | __error__!=\"{}\"). \
                     To skip all potential errors you can match empty errors.(e.g __error__=\"\")",
                    error.value,
                    series_text(&eval::plain(&out.labels)),
                    error.value
                )));
            }
            let mut labels = eval::plain(&out.labels);
            labels.remove(eval::ERROR_DETAILS);
            if let Some(grouping) = &self.grouping {
                labels = eval::group_labels(&labels, grouping.as_ref());
            }
            let size = labels.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>();
            if self.windows.add(labels, out.time, out.line.len()) {
                self.held += self.windows.series_bytes() + size;
            }
        }
        Ok(true)
    }

    fn held_bytes(&self) -> usize {
        self.held
    }
}

/// Labels as Loki prints a series: `{a="1", b="2"}`.
pub fn series_text(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// Labels a `sum by` can have PostgreSQL count by: the stream labels and the level.
const COUNTABLE: [&str; 3] = ["detected_level", "severity_text", "severity_number"];

/// Metadata names a record's own fields give, before any attribute of the same name.
const FIELDS: [&str; 8] = [
    "trace_id",
    "span_id",
    "severity_number",
    "detected_level",
    "severity_text",
    "flags",
    "dropped_attributes_count",
    "observed_timestamp",
];

/// An attribute's value as the label of its own key: none for a map, which becomes labels of
/// its nested keys.
fn label_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Object(map) if !is_tagged(map) => None,
        other => Some(as_string(other)),
    }
}

/// Evaluates a metric expression at every step.
///
/// # Errors
/// INVALID_ARGUMENT for what cannot run; the database's; RESOURCE_EXHAUSTED for too many series.
pub fn evaluate<'a>(
    q: &'a Query,
    metric: &'a Metric,
    steps: Steps,
    read: &'a mut Read,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, Status>> + Send + 'a>> {
    Box::pin(async move {
        match metric {
            Metric::Vector(v) => Ok(Value::Series(vec![Series {
                labels: BTreeMap::new(),
                points: vec![Some(*v); steps.count],
            }])),
            Metric::Scalar(v) => Ok(Value::Scalar(*v)),
            Metric::Binary { op, lhs, rhs } => {
                let lhs = evaluate(q, lhs, steps, read).await?;
                let rhs = evaluate(q, rhs, steps, read).await?;
                Ok(eval::binary(*op, lhs, rhs))
            }
            Metric::Range { func, log, range_nanos } => {
                Ok(Value::Series(range(q, *func, log, *range_nanos, steps, None, read).await?))
            }
            Metric::Aggregate { op: AggregateOp::Sum, grouping, inner, .. }
                if matches!(grouping, None | Some(Grouping::By(_)))
                    && matches!(**inner, Metric::Range { .. }) =>
            {
                let Metric::Range { func, log, range_nanos } = &**inner else {
                    unreachable!("matched above")
                };
                let series = range(q, *func, log, *range_nanos, steps, Some(grouping.clone()), read).await?;
                Ok(Value::Series(eval::aggregate(
                    AggregateOp::Sum,
                    grouping.as_ref(),
                    None,
                    series,
                    steps.count,
                )))
            }
            Metric::Aggregate { op, grouping, param, inner } => {
                let Value::Series(series) = evaluate(q, inner, steps, read).await? else {
                    return Err(Status::invalid_argument("an aggregation needs a vector, not a number"));
                };
                Ok(Value::Series(eval::aggregate(*op, grouping.as_ref(), *param, series, steps.count)))
            }
        }
    })
}

/// A range function's series. With `grouping` (a `sum` over it), each sample counts into its
/// group's series straight away; when every stage is a line filter (or drops labels the groups
/// do not read) and the groups are of stream labels and level, PostgreSQL counts the records
/// per window itself.
async fn range(
    q: &Query,
    func: RangeFunc,
    log: &LogQuery,
    range_nanos: i64,
    steps: Steps,
    grouping: Option<Option<Grouping>>,
    read: &mut Read,
) -> Result<Vec<Series>, Status> {
    let pipeline = Arc::new(Pipeline::new(&log.stages).map_err(Status::invalid_argument)?);
    let (lo, hi) = (steps.start - range_nanos, steps.at(steps.count - 1));
    let streams = Arc::new(streams(q, log, lo + 1, hi + 1).await?);
    let mut windows = Windows::new(func, range_nanos, steps);
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::default();
    let resources = sql.param(streams.keys().copied().collect::<Vec<i64>>());
    let conditions = pushed_down(&log.stages, &mut sql);
    let (lo_param, hi_param) = (sql.param(lo), sql.param(hi));
    let where_ = format!(
        "l.resource_id = ANY({resources}) AND l.timestamp_unix_nano > {lo_param} AND l.timestamp_unix_nano <= {hi_param}{conditions}"
    );
    let grouped_by: &[String] = match &grouping {
        Some(Some(Grouping::By(names))) => names,
        _ => &[],
    };
    // Stages that choose records by their line alone, or drop labels the groups do not read
    // (Explore's `| drop __error__`), leave what PostgreSQL can count.
    let counts_records = log.stages.iter().all(|s| match s {
        Stage::Line { op: LineOp::Contains | LineOp::NotContains, .. } => true,
        Stage::Drop(items) => items.iter().all(|item| {
            let name = match item {
                DropItem::Name(name) => name,
                DropItem::Matching(m) => &m.name,
            };
            !grouped_by.contains(name)
        }),
        _ => false,
    });
    let stream_label = |n: &str| COUNTABLE.contains(&n) || PROMOTED.iter().any(|k| label_name(k) == n);
    // Other names the groups read that only an attribute of that very key can give (a name
    // without `_` is no nested key's and no other key's label name), such as Explore's `level`.
    let attribute_names: Vec<String> = grouped_by.iter().filter(|n| !stream_label(n)).cloned().collect();
    let countable = matches!(grouping, Some(None | Some(Grouping::By(_))))
        && attribute_names.iter().all(|n| {
            !n.is_empty()
                && !n.contains('_')
                && !n.starts_with(|c: char| c.is_ascii_digit())
                && !FIELDS.contains(&n.as_str())
        });
    let mut client = q.client().await?;
    let mut budget = q.budget();
    if counts_records && countable {
        // Every window's edges, in order: a record falls in the bucket (b[j-1], b[j]], and
        // every record of a bucket is in the same windows.
        let mut bounds: Vec<i64> =
            (0..steps.count).flat_map(|i| [steps.at(i) - range_nanos, steps.at(i)]).collect();
        bounds.sort_unstable();
        bounds.dedup();
        let bounds_param = sql.param(bounds.clone());
        // Each name's value in the record's attributes and in its scope's, grouped by as well.
        let mut attributes = String::new();
        for name in &attribute_names {
            let key = sql.param(name.clone());
            attributes += &format!(", l.attributes -> {key}::text, s.attributes -> {key}::text");
        }
        let join =
            if attribute_names.is_empty() { "" } else { " LEFT JOIN scopes s ON s.scope_id = l.scope_id" };
        let group: String = (7..7 + 2 * attribute_names.len()).map(|c| format!(", {c}")).collect();
        let statement = format!(
            "SELECT l.resource_id, l.severity_number, l.severity_text,
                    width_bucket(l.timestamp_unix_nano - 1, {bounds_param}::bigint[]), count(*)::bigint,
                    sum(octet_length({LINE}))::bigint{attributes}
             FROM logs l{join} WHERE {where_} GROUP BY 1, 2, 3, 4{group}"
        );
        let (rows, full) = client.query_within(&statement, &sql.params(), &mut budget).await?;
        if full {
            return Err(Status::resource_exhausted(
                "the counts take more memory than an answer may (query.answer_bytes)",
            ));
        }
        let grouping = grouping.flatten();
        let series = tokio::task::spawn_blocking(move || {
            let mut read = Read::default();
            for row in &rows {
                let Some(stream) = streams.get(&row.get::<_, i64>(0)) else { continue };
                let bucket = usize::try_from(row.get::<_, i32>(3)).unwrap_or(0);
                let Some(&edge) = bounds.get(bucket) else { continue };
                if bucket == 0 {
                    continue;
                }
                let (records, bytes): (i64, i64) = (row.get(4), row.get(5));
                read.lines += records as u64;
                read.bytes += bytes as u64;
                let (number, text): (i32, String) = (row.get(1), row.get(2));
                let mut labels: BTreeMap<String, String> = stream.labels.iter().cloned().collect();
                labels.insert("detected_level".into(), detected_level(number, &text).into());
                if number != 0 {
                    labels.insert("severity_number".into(), number.to_string());
                }
                if !text.is_empty() {
                    labels.insert("severity_text".into(), text);
                }
                // The record's attribute first, then the resource's, then the scope's.
                for (i, name) in attribute_names.iter().enumerate() {
                    let from = |column: usize| {
                        row.get::<_, Option<serde_json::Value>>(column).and_then(|v| label_of(&v))
                    };
                    let value = from(6 + 2 * i)
                        .or_else(|| stream.metadata.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
                        .or_else(|| from(7 + 2 * i));
                    if let Some(value) = value {
                        labels.insert(name.clone(), value);
                    }
                }
                let labels = eval::group_labels(&labels, grouping.as_ref());
                let Some((first, last)) = windows.covering(edge) else { continue };
                let value = match func {
                    RangeFunc::CountOverTime | RangeFunc::Rate => records as f64,
                    RangeFunc::BytesOverTime | RangeFunc::BytesRate => bytes as f64,
                };
                windows.add_value(labels, first, last, value, records);
            }
            (windows.finish(), read)
        })
        .await
        .map_err(|e| Status::internal(format!("counting failed: {e}")))?;
        read.lines += series.1.lines;
        read.bytes += series.1.bytes;
        return Ok(series.0);
    }
    let statement = format!(
        "SELECT {} FROM logs l LEFT JOIN scopes s ON s.scope_id = l.scope_id WHERE {where_}",
        columns()
    );
    let consumer = Samples { pipeline, streams, windows, grouping, held: 0, read: Read::default() };
    let (consumer, full) = client.consume(&statement, &sql.params(), consumer, &mut budget).await?;
    if full {
        return Err(Status::resource_exhausted(format!(
            "the query's series take more memory than an answer may (query.answer_bytes): {} series so far; \
             aggregate them (sum by (...)) or narrow the selector",
            consumer.windows.series_count()
        )));
    }
    read.lines += consumer.read.lines;
    read.bytes += consumer.read.bytes;
    Ok(consumer.windows.finish())
}

/// Refuses an answer of more series than [`MAX_SERIES`], as Loki does.
///
/// # Errors
/// INVALID_ARGUMENT naming the limit.
pub fn check_series(value: &Value) -> Result<(), Status> {
    if let Value::Series(series) = value {
        if series.len() > MAX_SERIES {
            return Err(Status::invalid_argument(format!(
                "maximum of series ({MAX_SERIES}) reached for a single query; {} series: aggregate them (sum by (...)) or narrow the selector",
                series.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::logql::{self, Query as Parsed};

    fn log(query: &str) -> LogQuery {
        let Ok(Parsed::Log(log)) = logql::parse(query) else { panic!("{query}") };
        log
    }

    #[test]
    fn only_what_sql_can_say_exactly_is_pushed_down() {
        let pushed = |query: &str| {
            let mut sql = Sql::default();
            let text = pushed_down(&log(query).stages, &mut sql);
            (text.replace(LINE, "LINE"), sql.params().len())
        };
        assert_eq!(
            pushed(r#"{a="b"} |= "x" or "y" != "z""#).0,
            " AND (strpos((LINE), $1) > 0 OR strpos((LINE), $2) > 0) AND strpos((LINE), $3) = 0"
        );
        assert_eq!(
            pushed(r#"{a="b"} | line_format "{{.a}}" |= "x""#).0,
            "",
            "a filter after line_format reads another line"
        );
        assert_eq!(pushed(r#"{a="b"} |~ "x""#).0, "", "regexes run in the pipeline");
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(pushed(&format!(r#"{{a="b"}} | trace_id="{trace}""#)), (" AND l.trace_id = $1".into(), 1));
        assert_eq!(pushed(r#"{a="b"} | trace_id="ABC""#).0, " AND FALSE", "metadata is lowercase hex");
        assert_eq!(pushed(r#"{a="b"} | span_id="""#).0, " AND l.span_id IS NULL");
        assert_eq!(
            pushed(&format!(r#"{{a="b"}} | json | trace_id="{trace}""#)).0,
            "",
            "json may set trace_id"
        );
        assert_eq!(
            pushed(&format!(r#"{{a="b"}} | trace_id="{trace}" or level="x""#)).0,
            "",
            "half an or is not enough"
        );
        assert_eq!(
            pushed(&format!(r#"{{a="b"}} | trace_id="{trace}", status > 2"#)).0,
            "",
            "a number filter keeps records it cannot read"
        );
        let to_logs = format!(
            "{{service_name=\"api\"}} | label_format log_line_contains_trace_id=`{{{{ contains \"{trace}\" __line__  }}}}` \
             | log_line_contains_trace_id=\"true\" OR trace_id=\"{trace}\""
        );
        assert_eq!(pushed(&to_logs).0, " AND (strpos((LINE), $1) > 0 OR l.trace_id = $2)");
    }

    #[test]
    fn windows_grow_tenfold_from_the_end_or_the_start() {
        let m = 60_000_000_000;
        assert_eq!(
            windows(0, 1000 * m, true),
            [(999 * m, 1000 * m), (989 * m, 999 * m), (889 * m, 989 * m), (0, 889 * m)]
        );
        assert_eq!(windows(0, 5 * m, false), [(0, m), (m, 5 * m)]);
        assert!(windows(5, 5, true).is_empty());
    }

    #[test]
    fn attributes_flatten_as_loki_writes_them() {
        let mut out = Vec::new();
        flatten_attributes(
            &serde_json::json!({"http.method": "GET", "n": 3, "d": 1.5, "ok": true, "map": {"k.x": "v"},
                               "b": {"$bytes": "AAE="}, "nul": {"$nul": ["a", "b"]}, "list": [1, "x"]}),
            "",
            &mut out,
        );
        out.sort();
        assert_eq!(
            out,
            [
                ("b", "AAE="),
                ("d", "1.5"),
                ("http_method", "GET"),
                ("list", r#"[1,"x"]"#),
                ("map_k_x", "v"),
                ("n", "3"),
                ("nul", "a\0b"),
                ("ok", "true")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(detected_level(17, ""), "error");
        assert_eq!(detected_level(0, "WARNING"), "warn");
        assert_eq!(detected_level(0, ""), "unknown");
    }
}
