//! SearchLogs: log records back out of `logs`, rebuilt into OTLP and grouped by resource and
//! scope.

use opentelemetry_proto::tonic::{
    common::v1::AnyValue,
    logs::v1::{LogRecord, LogsData, ResourceLogs, ScopeLogs},
};
use tokio_postgres::Row;
use tonic::Status;

use super::{
    attribute_condition, bad_token, corrupt, decode_off_thread, decode_token, dimensions, encode_token,
    group_by_dimensions, newest_first, newest_minute, page_size,
    proto::{
        CountLogsRequest, CountLogsResponse, Facet, FacetValue, LogCountStep, LogFacetsRequest,
        LogFacetsResponse, SearchLogsRequest, SearchLogsResponse,
    },
    resolve_range, steps_in,
    traces::parse_trace_id,
    u32_column, Query, Resources, Rollup, Scopes, Sql,
};
use crate::encode::{
    attributes::{any_value_from_json, attributes_from_json, MappingError},
    rollups::MINUTE_NANOS,
};

/// Rebuilds a log record from its row (the inverse of `encode::logs::encode_record`).
fn record_from_row(row: &Row) -> Result<LogRecord, MappingError> {
    let body: Option<serde_json::Value> = row.get("body");
    Ok(LogRecord {
        time_unix_nano: row.get::<_, i64>("time_unix_nano") as u64,
        observed_time_unix_nano: row.get::<_, i64>("observed_time_unix_nano") as u64,
        severity_number: row.get("severity_number"),
        severity_text: row.get("severity_text"),
        body: body.as_ref().map(any_value_from_json).transpose()?,
        attributes: attributes_from_json(&row.get("attributes"))?,
        dropped_attributes_count: u32_column(row, "dropped_attributes_count")?,
        flags: u32_column(row, "flags")?,
        trace_id: row.get::<_, Option<Vec<u8>>>("trace_id").unwrap_or_default(),
        span_id: row.get::<_, Option<Vec<u8>>>("span_id").unwrap_or_default(),
        event_name: row.get("event_name"),
    })
}

/// One page of log records matching every filter, newest first. Records with the same time are
/// ordered by where they are stored, which keeps pages from overlapping or skipping.
pub(super) async fn search_logs(
    q: &Query,
    request: &SearchLogsRequest,
) -> Result<SearchLogsResponse, Status> {
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let page_size = page_size(request.page_size);
    let mut sql = Sql::default();
    let mut query = format!(
        "SELECT l.*, l.tableoid::bigint AS part, l.ctid::text AS row_ref FROM logs l
         WHERE l.timestamp_unix_nano < {}",
        sql.param(end)
    );
    query += &filters(q, request, &mut sql)?;
    // The newest end of the records still to read: the range's end, or the last page's last.
    let mut top = end;
    if !request.page_token.is_empty() {
        let (time, part, row_ref) = decode_log_token(&request.page_token)?;
        query += &format!(
            " AND (l.timestamp_unix_nano, l.tableoid::bigint, l.ctid) < ({}, {}, {}::text::tid)",
            sql.param(time),
            sql.param(part),
            sql.param(row_ref)
        );
        top = top.min(time.saturating_add(1));
    }
    let limit = sql.param(page_size as i64 + 1);
    query += &format!(
        " AND l.timestamp_unix_nano >= {} ORDER BY l.timestamp_unix_nano DESC, l.tableoid::bigint DESC, l.ctid DESC LIMIT {limit}",
        sql.next_placeholder()
    );

    let mut client = q.client().await?;
    // From the newest minute the log rollup counts records in, as trace search starts (the
    // rollup is written with the records, so it is never behind them).
    if let Some(newest) = newest_minute(&client, Rollup::Logs, &request.service, start, top).await? {
        top = top.min(newest.saturating_add(MINUTE_NANOS as i64));
    }
    let (mut rows, full, mut budget) =
        newest_first(&mut client, q, (&query, &sql), (start, top), &|rows| rows.len() > page_size).await?;
    // A page ends at page_size records, or earlier where the answer's memory is full.
    let next_page_token = if full || rows.len() > page_size {
        rows.truncate(page_size);
        let last = &rows[rows.len() - 1];
        encode_token(&format!(
            "{}:{}:{}",
            last.get::<_, i64>("timestamp_unix_nano"),
            last.get::<_, i64>("part"),
            last.get::<_, String>("row_ref")
        ))
    } else {
        String::new()
    };

    let (resources, scopes) = dimensions(&mut client, &rows, &mut budget).await?;
    let logs = decode_off_thread(budget.used(), move || logs_from_rows(&rows, &resources, &scopes)).await?;
    Ok(SearchLogsResponse { logs: Some(logs), next_page_token })
}

/// The conditions of a SearchLogs request's filters on the record `l`, each starting " AND ".
///
/// # Errors
/// INVALID_ARGUMENT for a filter that is malformed or past its limit.
fn filters(q: &Query, request: &SearchLogsRequest, sql: &mut Sql) -> Result<String, Status> {
    q.check_text(&request.service, "service")?;
    q.check_text(&request.body_contains, "body_contains")?;
    q.check_filters(&request.attributes)?;
    let mut query = String::new();
    if !request.service.is_empty() {
        let service = sql.param(request.service.clone());
        query += &format!(
            " AND l.resource_id = ANY (SELECT resource_id FROM resources WHERE service_name = {service})"
        );
    }
    if request.min_severity > 0 {
        query += &format!(" AND l.severity_number >= {}", sql.param(request.min_severity));
    }
    if !request.body_contains.is_empty() {
        let needle = sql.param(request.body_contains.clone());
        let text = "CASE jsonb_typeof(l.body) WHEN 'string' THEN l.body #>> '{}' ELSE l.body::text END";
        query += &if request.body_ignore_case {
            format!(" AND strpos(lower({text}), lower({needle})) > 0")
        } else {
            format!(" AND strpos({text}, {needle}) > 0")
        };
    }
    if !request.trace_id.is_empty() {
        query += &format!(" AND l.trace_id = {}", sql.param(parse_trace_id(&request.trace_id, "trace_id")?));
    }
    for (i, filter) in request.attributes.iter().enumerate() {
        query += &format!(" AND {}", attribute_condition(q, sql, "l", filter, &format!("attributes[{i}]"))?);
    }
    Ok(query)
}

/// Most steps one CountLogs request may ask for.
const MAX_COUNT_STEPS: i64 = 1440;
/// Steps in a range when the request names no step.
const DEFAULT_COUNT_STEPS: i64 = 60;
/// Severity ranges CountLogs counts apart: unset, TRACE, DEBUG, INFO, WARN, ERROR, FATAL.
const SEVERITY_RANGES: usize = 7;
/// The range of ERROR; it and FATAL's are counted as errors.
const ERROR_RANGE: usize = 5;

/// A severity number's range, 0 (unset) to 6 (FATAL, and numbers past 24), as SQL.
fn severity_range_sql(number: &str) -> String {
    format!("CASE WHEN {number} < 1 THEN 0 WHEN {number} > 24 THEN 6 ELSE ({number} + 3) / 4 END")
}

/// Log records matching SearchLogs' filters per step: from `log_rollup` (by minute, resource
/// and severity) when the filters are service and severity alone, so the count costs the
/// minutes it shows; else from the records, bounded by the statement timeout.
pub(super) async fn count_logs(q: &Query, request: &CountLogsRequest) -> Result<CountLogsResponse, Status> {
    let filters_of = request.filters.clone().unwrap_or_default();
    let (start, end) = resolve_range(filters_of.time_range.as_ref(), "filters.time_range")?;
    let minute = MINUTE_NANOS as i64;
    let start = start - start.rem_euclid(minute);
    let step = match request.step_nanos {
        0 => (((end - start) / DEFAULT_COUNT_STEPS + minute / 2) / minute).max(1) * minute,
        nanos if nanos % MINUTE_NANOS != 0 => {
            return Err(Status::invalid_argument("step_nanos: a whole number of minutes"))
        }
        nanos => i64::try_from(nanos).unwrap_or(i64::MAX),
    };
    let steps = steps_in(end - start, step);
    if steps > MAX_COUNT_STEPS {
        return Err(Status::invalid_argument(format!(
            "step_nanos: {steps} steps in the range, more than the {MAX_COUNT_STEPS} one request may ask for"
        )));
    }
    let from_records = !filters_of.body_contains.is_empty()
        || !filters_of.trace_id.is_empty()
        || !filters_of.attributes.is_empty();
    let mut sql = Sql::default();
    let (start_param, end_param, step_param) = (sql.param(start), sql.param(end), sql.param(step));
    let query = if from_records {
        format!(
            "SELECT (l.timestamp_unix_nano - {start_param}) / {step_param}, {}, count(*)
             FROM logs l WHERE l.timestamp_unix_nano >= {start_param} AND l.timestamp_unix_nano < {end_param}{}
             GROUP BY 1, 2",
            severity_range_sql("l.severity_number"),
            filters(q, &filters_of, &mut sql)?
        )
    } else {
        q.check_text(&filters_of.service, "service")?;
        let mut conditions = String::new();
        if !filters_of.service.is_empty() {
            let service = sql.param(filters_of.service.clone());
            conditions += &format!(
                " AND u.resource_id = ANY (SELECT resource_id FROM resources WHERE service_name = {service})"
            );
        }
        if filters_of.min_severity > 0 {
            conditions += &format!(" AND u.severity_number >= {}", sql.param(filters_of.min_severity));
        }
        format!(
            "SELECT (u.minute_unix_nano - {start_param}) / {step_param}, {}, sum(u.records)::bigint
             FROM log_rollup u WHERE u.minute_unix_nano >= {start_param} AND u.minute_unix_nano < {end_param}{conditions}
             GROUP BY 1, 2",
            severity_range_sql("u.severity_number")
        )
    };
    let (rows, full) = q.client().await?.query_within(&query, &sql.params(), &mut q.budget()).await?;
    if full {
        return Err(Status::resource_exhausted(
            "the counts take more memory than an answer may (query.answer_bytes)",
        ));
    }
    let mut counts: Vec<LogCountStep> = (0..steps)
        .map(|i| LogCountStep {
            start_unix_nano: (start + i * step) as u64,
            records: 0,
            errors: 0,
            by_severity: vec![0; SEVERITY_RANGES],
        })
        .collect();
    for row in &rows {
        let Some(slot) = usize::try_from(row.get::<_, i64>(0)).ok().and_then(|i| counts.get_mut(i)) else {
            continue;
        };
        let range = row.get::<_, i32>(1) as usize;
        let records = row.get::<_, i64>(2) as u64;
        slot.records += records;
        slot.by_severity[range] += records;
        if range >= ERROR_RANGE {
            slot.errors += records;
        }
    }
    Ok(CountLogsResponse { steps: counts, step_nanos: step as u64, from_records })
}

/// Records LogFacets reads when the request names no sample, and at most.
const DEFAULT_FACET_SAMPLE: u32 = 1_000;
const MAX_FACET_SAMPLE: u32 = 10_000;
/// Attribute keys and services LogFacets answers with at most, and values per key.
const MAX_FACET_KEYS: usize = 12;
const MAX_FACET_VALUES: usize = 8;
/// Longest string value counted, in characters: longer ones are rarely shared, and a facet is
/// something to click.
const MAX_FACET_VALUE_CHARS: i32 = 200;

/// The commonest services and attribute values of the newest matching records: one query
/// reads the sample (newest first, as SearchLogs pages) and counts in the database, so only
/// the counts come back.
pub(super) async fn log_facets(q: &Query, request: &LogFacetsRequest) -> Result<LogFacetsResponse, Status> {
    let filters_of = request.filters.clone().unwrap_or_default();
    let (start, end) = resolve_range(filters_of.time_range.as_ref(), "filters.time_range")?;
    let sample = match request.sample {
        0 => DEFAULT_FACET_SAMPLE,
        n => n.min(MAX_FACET_SAMPLE),
    };
    let mut sql = Sql::default();
    let end_param = sql.param(end);
    let conditions = filters(q, &filters_of, &mut sql)?;
    let limit = sql.param(i64::from(sample));
    let values = sql.param(MAX_FACET_VALUES as i64);
    let chars = sql.param(MAX_FACET_VALUE_CHARS);
    let keys = sql.param(MAX_FACET_KEYS as i64);
    let window = sql.next_placeholder();
    // Per key, its values held by two records or more, commonest first; the service of each
    // resource; and how many records were read.
    let query = format!(
        "WITH sample AS MATERIALIZED (
             SELECT l.resource_id, l.attributes FROM logs l
             WHERE l.timestamp_unix_nano >= {window} AND l.timestamp_unix_nano < {end_param}{conditions}
             ORDER BY l.timestamp_unix_nano DESC LIMIT {limit}),
         pairs AS (
             SELECT a.key, a.value::text AS value, count(*) AS records FROM sample s, jsonb_each(s.attributes) a
             WHERE jsonb_typeof(a.value) IN ('string', 'number', 'boolean')
               AND (jsonb_typeof(a.value) <> 'string' OR length(a.value #>> '{{}}') <= {chars})
             GROUP BY a.key, a.value::text HAVING count(*) > 1),
         ranked AS (
             SELECT key, value, records, row_number() OVER (PARTITION BY key ORDER BY records DESC, value) AS n
             FROM pairs),
         -- The keys whose commonest values hold the most records: however many keys the
         -- records carry, the answer holds at most this many.
         kept AS (
             SELECT key FROM ranked WHERE n <= {values}
             GROUP BY key ORDER BY sum(records) DESC, key LIMIT {keys})
         SELECT 'attribute', key, value, records FROM ranked WHERE n <= {values} AND key IN (SELECT key FROM kept)
         UNION ALL
         (SELECT 'service', NULL, to_jsonb(r.service_name)::text, count(*) FROM sample s JOIN resources r USING (resource_id)
          WHERE r.service_name IS NOT NULL GROUP BY r.service_name ORDER BY count(*) DESC, r.service_name LIMIT {keys})
         UNION ALL
         SELECT 'sampled', NULL, NULL, count(*) FROM sample"
    );
    // Windows newest first until one holds the whole sample, as SearchLogs reads its pages.
    let sampled_in = |rows: &[Row]| {
        rows.iter().find(|r| r.get::<_, &str>(0) == "sampled").map_or(0, |r| r.get::<_, i64>(3))
    };
    let mut client = q.client().await?;
    let (rows, full, _) = newest_first(&mut client, q, (&query, &sql), (start, end), &|rows| {
        sampled_in(rows) >= i64::from(sample)
    })
    .await?;
    if full {
        return Err(Status::resource_exhausted(
            "the facets take more memory than an answer may (query.answer_bytes)",
        ));
    }
    let mut sampled = 0;
    let mut services = Vec::new();
    let mut keys: Vec<Facet> = Vec::new();
    for row in &rows {
        let records = row.get::<_, i64>(3) as u64;
        // As text: jsonb holds 200 and 200.0 equal, the int and the double they map from not.
        let value = || -> Result<Option<AnyValue>, Status> {
            let Some(text) = row.get::<_, Option<&str>>(2) else { return Ok(None) };
            let json: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| Status::internal(format!("a facet value is not JSON: {e}")))?;
            any_value_from_json(&json).map(Some).map_err(corrupt)
        };
        match row.get::<_, &str>(0) {
            "sampled" => sampled = records,
            "service" => services.push(FacetValue { value: value()?, records }),
            _ => {
                let key: String = row.get(1);
                let entry = FacetValue { value: value()?, records };
                match keys.iter_mut().find(|facet| facet.key == key) {
                    Some(facet) => facet.values.push(entry),
                    None => keys.push(Facet { key, values: vec![entry] }),
                }
            }
        }
    }
    let commonest = |values: &mut Vec<FacetValue>| values.sort_by_key(|v| std::cmp::Reverse(v.records));
    commonest(&mut services);
    services.truncate(MAX_FACET_KEYS);
    for facet in &mut keys {
        commonest(&mut facet.values);
    }
    // A key whose commonest values hold the most records first: what most records share.
    let covered = |facet: &Facet| facet.values.iter().map(|v| v.records).sum::<u64>();
    keys.sort_by(|a, b| covered(b).cmp(&covered(a)).then_with(|| a.key.cmp(&b.key)));
    keys.truncate(MAX_FACET_KEYS);
    Ok(LogFacetsResponse { sampled, complete: sampled < u64::from(sample), services, attributes: keys })
}

impl Query {
    /// Whether any log record is stored, and the newest minute the log rollup counts one in:
    /// a probe of the first record and of the rollup's time index, for the logs page to say
    /// "nothing stored yet" apart from "nothing matches".
    ///
    /// # Errors
    /// The database's, as a status.
    pub async fn logs_stored(&self) -> Result<(bool, Option<i64>), Status> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT EXISTS (SELECT 1 FROM logs), (SELECT max(minute_unix_nano) FROM log_rollup)", &[])
            .await?;
        Ok(rows.first().map_or((false, None), |row| (row.get(0), row.get(1))))
    }
}

/// Log records' OTLP from their rows and their resources and scopes; records keep their
/// newest-first order within each resource and scope.
fn logs_from_rows(rows: &[Row], resources: &Resources, scopes: &Scopes) -> Result<LogsData, Status> {
    let mut logs = LogsData::default();
    for (resource_id, scope_groups) in group_by_dimensions(rows) {
        let (resource, schema_url) = resources.get(&resource_id).cloned().unwrap_or_default();
        let mut resource_logs = ResourceLogs { resource: Some(resource), scope_logs: vec![], schema_url };
        for (scope_id, records) in scope_groups {
            let (scope, schema_url) = scopes.get(&scope_id).cloned().unwrap_or_default();
            let log_records = records
                .into_iter()
                .map(record_from_row)
                .collect::<Result<_, MappingError>>()
                .map_err(corrupt)?;
            resource_logs.scope_logs.push(ScopeLogs { scope: Some(scope), log_records, schema_url });
        }
        logs.resource_logs.push(resource_logs);
    }
    Ok(logs)
}

fn decode_log_token(token: &str) -> Result<(i64, i64, String), Status> {
    let text = decode_token(token)?;
    let mut parts = text.splitn(3, ':');
    let parsed =
        (|| Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.to_owned())))();
    let (time, part, row_ref): (i64, i64, String) = parsed.ok_or_else(bad_token)?;
    // A tid is "(block,offset)"; anything else would be a cast error in the database.
    let is_tid = row_ref
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|inner| inner.split_once(','))
        .is_some_and(|(block, offset)| block.parse::<u32>().is_ok() && offset.parse::<u16>().is_ok());
    if !is_tid {
        return Err(bad_token());
    }
    Ok((time, part, row_ref))
}
