//! GetTrace, SearchTraces, ListServices and ListOperations: spans back out of `spans`, `resources` and
//! `scopes`, rebuilt into OTLP.

use std::collections::{BTreeMap, HashSet};

use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status as SpanStatus, TracesData,
};
use prost::Message;
use tokio_postgres::{types::ToSql, Row};
use tonic::Status;

use super::{
    attribute_condition, bad_token, corrupt, decode_off_thread, decode_token, dimensions, encode_token,
    group_by_dimensions, newest_first, newest_minute, page_size,
    proto::{
        ListOperationsRequest, ListOperationsResponse, ListServiceDependenciesRequest,
        ListServiceDependenciesResponse, ListServiceStatsRequest, ListServiceStatsResponse,
        ListServicesRequest, ListServicesResponse, Operation, PeerDependency, ScatterPoint,
        ScatterTracesRequest, ScatterTracesResponse, SearchTracesRequest, SearchTracesResponse,
        ServiceDependency, ServiceStats, StatsStep, TraceSummary,
    },
    resolve_range, steps_in, u32_column, Budget, Layout, Query, Resources, Rollup, Scopes, Sql,
};
use crate::encode::{
    attributes::{attributes_from_json, MappingError},
    rollups::{PeerKind, MINUTE_NANOS},
    sketch::Durations,
    traces::{events_from_json, links_from_json},
};

/// Parses a trace id of 32 hex characters.
///
/// # Errors
/// INVALID_ARGUMENT naming `field`.
pub fn parse_trace_id(hex_id: &str, field: &str) -> Result<Vec<u8>, Status> {
    match hex::decode(hex_id) {
        Ok(id) if id.len() == 16 => Ok(id),
        // Only the start of what was sent goes back: an error message travels in a header.
        _ if hex_id.len() > 40 => Err(Status::invalid_argument(format!(
            "{field}: expected 32 hexadecimal characters, got {} bytes starting {:?}",
            hex_id.len(),
            hex_id.chars().take(40).collect::<String>()
        ))),
        _ => Err(Status::invalid_argument(format!(
            "{field}: expected 32 hexadecimal characters, got {hex_id:?}"
        ))),
    }
}

/// Rebuilds a span from its row (the inverse of `encode::traces::encode_span`).
fn span_from_row(row: &Row) -> Result<Span, MappingError> {
    let events: Option<serde_json::Value> = row.get("events");
    let links: Option<serde_json::Value> = row.get("links");
    let status_code: Option<i32> = row.get("status_code");
    Ok(Span {
        trace_id: row.get("trace_id"),
        span_id: row.get("span_id"),
        trace_state: row.get("trace_state"),
        parent_span_id: row.get::<_, Option<Vec<u8>>>("parent_span_id").unwrap_or_default(),
        flags: u32_column(row, "flags")?,
        name: row.get("name"),
        kind: row.get("kind"),
        start_time_unix_nano: row.get::<_, i64>("start_time_unix_nano") as u64,
        end_time_unix_nano: row.get::<_, i64>("end_time_unix_nano") as u64,
        attributes: attributes_from_json(&row.get("attributes"))?,
        dropped_attributes_count: u32_column(row, "dropped_attributes_count")?,
        events: events.as_ref().map_or(Ok(Vec::new()), events_from_json)?,
        dropped_events_count: u32_column(row, "dropped_events_count")?,
        links: links.as_ref().map_or(Ok(Vec::new()), links_from_json)?,
        dropped_links_count: u32_column(row, "dropped_links_count")?,
        status: status_code.map(|code| SpanStatus { code, message: row.get("status_message") }),
    })
}

const TRACE_SPANS: &str = "SELECT * FROM spans WHERE trace_id = $1
    ORDER BY resource_id, scope_id, start_time_unix_nano, span_id LIMIT $2";
impl Query {
    /// Whether any span of trace `trace_id` is stored: one probe of the trace-id index, never
    /// the trace itself.
    ///
    /// # Errors
    /// The database's, as a status.
    pub async fn trace_stored(&self, trace_id: &[u8]) -> Result<bool, Status> {
        if trace_id.len() != 16 {
            return Ok(false);
        }
        let client = self.client().await?;
        let rows = client.query("SELECT 1 FROM spans WHERE trace_id = $1 LIMIT 1", &[&trace_id]).await?;
        Ok(!rows.is_empty())
    }

    /// What a span link points at: the linked span's service and name when it is stored,
    /// else whether its trace is; one or two index probes.
    pub async fn link_target(&self, trace_id: &[u8], span_id: &[u8]) -> Result<LinkTarget, Status> {
        if trace_id.len() != 16 {
            return Ok(LinkTarget::NotStored);
        }
        let client = self.client().await?;
        let found = client
            .query(
                "SELECT r.service_name, left(s.name, 500) FROM spans s JOIN resources r USING (resource_id)
                 WHERE s.trace_id = $1 AND s.span_id = $2 LIMIT 1",
                &[&trace_id, &span_id],
            )
            .await?;
        if let Some(row) = found.first() {
            return Ok(LinkTarget::Span { service: row.get::<_, Option<String>>(0), name: row.get(1) });
        }
        drop(client);
        Ok(if self.trace_stored(trace_id).await? { LinkTarget::Trace } else { LinkTarget::NotStored })
    }

    /// One span of a trace (more than one when an exporter's retry stored it twice), as
    /// TracesData with its resource and scope, and whether its parent is stored: two index
    /// probes, never the rest of the trace.
    ///
    /// # Errors
    /// NOT_FOUND when the trace has no such span; RESOURCE_EXHAUSTED past `query.answer_bytes`.
    pub async fn span(&self, trace_id: &[u8], span_id: &[u8]) -> Result<(TracesData, bool), Status> {
        let mut client = self.client().await?;
        let mut budget = self.budget();
        let statement = "SELECT * FROM spans WHERE trace_id = $1 AND span_id = $2
            ORDER BY resource_id, scope_id, start_time_unix_nano LIMIT 16";
        let (rows, full) = client.query_within(statement, &[&trace_id, &span_id], &mut budget).await?;
        if full {
            return Err(Status::resource_exhausted("this span is larger than query.answer_bytes"));
        }
        let Some(first) = rows.first() else {
            return Err(Status::not_found(format!(
                "trace {} has no span {}",
                hex::encode(trace_id),
                hex::encode(span_id)
            )));
        };
        let parent_stored = match first.get::<_, Option<Vec<u8>>>("parent_span_id") {
            None => true,
            Some(parent) => !client
                .query(
                    "SELECT 1 FROM spans WHERE trace_id = $1 AND span_id = $2 LIMIT 1",
                    &[&trace_id, &parent],
                )
                .await?
                .is_empty(),
        };
        let (resources, scopes) = dimensions(&mut client, &rows, &mut budget).await?;
        let data =
            decode_off_thread(budget.used(), move || trace_from_rows(&rows, &resources, &scopes)).await?;
        Ok((data, parent_stored))
    }

    /// A whole trace, of at most `query.max_trace_spans` spans.
    ///
    /// # Errors
    /// NOT_FOUND when no span has the id; RESOURCE_EXHAUSTED when more than the limit do.
    pub(super) async fn trace(&self, trace_id: &[u8]) -> Result<TracesData, Status> {
        self.trace_within(trace_id, &mut self.budget()).await
    }

    /// A whole trace, of at most `query.max_trace_spans` spans, charged to `budget`.
    ///
    /// # Errors
    /// NOT_FOUND when no span has the id; RESOURCE_EXHAUSTED when more than the limit do, or
    /// when the trace does not fit in what is left of the budget.
    pub(super) async fn trace_within(
        &self,
        trace_id: &[u8],
        budget: &mut Budget,
    ) -> Result<TracesData, Status> {
        let mut client = self.client().await?;
        let limit = self.limits.max_trace_spans;
        let (rows, full) =
            client.query_within(TRACE_SPANS, &[&trace_id, &(limit as i64 + 1)], budget).await?;
        if full {
            return Err(Status::resource_exhausted(format!(
                "trace {} is larger than the memory an answer may take (query.answer_bytes, {} bytes); \
                 read its spans with SQL or raise the setting",
                hex::encode(trace_id),
                self.limits.answer_bytes
            )));
        }
        if rows.is_empty() {
            return Err(Status::not_found(format!("no trace with id {}", hex::encode(trace_id))));
        }
        if rows.len() > limit {
            return Err(Status::resource_exhausted(format!(
                "trace {} has more than {limit} spans, the most GetTrace hands back (query.max_trace_spans); \
                 read its spans with SQL or raise the limit",
                hex::encode(trace_id)
            )));
        }
        let (resources, scopes) = dimensions(&mut client, &rows, budget).await?;
        decode_off_thread(budget.used(), move || trace_from_rows(&rows, &resources, &scopes)).await
    }
}

/// A trace's OTLP from its span rows and their resources and scopes.
fn trace_from_rows(rows: &[Row], resources: &Resources, scopes: &Scopes) -> Result<TracesData, Status> {
    let mut data = TracesData::default();
    for (resource_id, scope_groups) in group_by_dimensions(rows) {
        let (resource, schema_url) = resources.get(&resource_id).cloned().unwrap_or_default();
        let mut resource_spans = ResourceSpans { resource: Some(resource), scope_spans: vec![], schema_url };
        for (scope_id, span_rows) in scope_groups {
            let (scope, schema_url) = scopes.get(&scope_id).cloned().unwrap_or_default();
            let mut spans: Vec<Span> = span_rows
                .into_iter()
                .map(span_from_row)
                .collect::<Result<_, MappingError>>()
                .map_err(corrupt)?;
            // An exporter that retried stored the same span twice; hand it back once. Spans
            // that differ in anything, even sharing an id and a start, all come back.
            let mut seen = HashSet::new();
            spans.retain(|span| seen.insert(span.encode_to_vec()));
            resource_spans.scope_spans.push(ScopeSpans { scope: Some(scope), spans, schema_url });
        }
        data.resource_spans.push(resource_spans);
    }
    Ok(data)
}

pub(super) async fn list_services(
    q: &Query,
    request: &ListServicesRequest,
) -> Result<ListServicesResponse, Status> {
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let page_size = page_size(request.page_size);
    let after = match request.page_token.as_str() {
        "" => String::new(),
        token => decode_token(token)?,
    };
    let (start, end) = minutes(start, end);
    let mut budget = q.budget();
    let (rows, full) = q
        .client()
        .await?
        .query_within(
            match q.layout {
                // A probe of the rollup's (resource_id, minute) index per resource.
                Layout::SingleNode => {
                    "SELECT service_name FROM resources r
                     WHERE service_name > $3 AND EXISTS (
                         SELECT 1 FROM span_rollup u WHERE u.resource_id = r.resource_id
                         AND u.minute_unix_nano >= $1 AND u.minute_unix_nano < $2)
                     GROUP BY service_name ORDER BY service_name LIMIT $4"
                }
                // Citus runs no subquery that refers to a reference table's row: the workers
                // find the distinct services of their rollup rows, joined to their copy of the
                // resources.
                Layout::Citus => {
                    "SELECT DISTINCT r.service_name FROM span_rollup u JOIN resources r USING (resource_id)
                     WHERE r.service_name > $3
                       AND u.minute_unix_nano >= $1 AND u.minute_unix_nano < $2
                     ORDER BY r.service_name LIMIT $4"
                }
            },
            &[&start, &end, &after, &(page_size as i64 + 1)],
            &mut budget,
        )
        .await?;
    let mut services: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let next_page_token = if full || services.len() > page_size {
        services.truncate(page_size);
        encode_token(&services[services.len() - 1])
    } else {
        String::new()
    };
    Ok(ListServicesResponse { services, next_page_token })
}

/// Adds a stored rollup's durations sketch to `durations`.
fn merge(durations: &mut Durations, sketch: &[u8]) -> Result<(), Status> {
    durations
        .merge_encoded(sketch)
        .map_err(|err| Status::internal(format!("stored rollups do not decode: {err}")))
}

/// Stored rollups' durations sketches merged into one.
fn merged(sketches: &[&[u8]]) -> Result<Durations, Status> {
    let mut durations = Durations::default();
    for sketch in sketches {
        merge(&mut durations, sketch)?;
    }
    Ok(durations)
}

/// A quantile of merged durations in whole nanoseconds; 0 when there are none.
fn quantile_nanos(durations: &Durations, q: f64) -> u64 {
    durations.quantile(q).map_or(0, |n| n.round() as u64)
}

/// Server and consumer spans: the requests a service served.
const SERVED_KINDS: &str = "(2, 5)";

/// What a span link points at, as far as this database knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTarget {
    /// The linked span is stored: its service (when its resource names one) and name.
    Span {
        service: Option<String>,
        name: String,
    },
    /// Its trace is stored, not the span.
    Trace,
    NotStored,
}

/// Most steps one ListServiceStats request may ask for.
const MAX_STATS_STEPS: i64 = 1440;

pub(super) async fn list_service_stats(
    q: &Query,
    request: &ListServiceStatsRequest,
) -> Result<ListServiceStatsResponse, Status> {
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    // A rate is per second of the range asked for; its requests are those of the minutes it
    // touches.
    let seconds = (end - start) as f64 / 1e9;
    let (start, end) = minutes(start, end);
    let minute = MINUTE_NANOS as i64;
    let step = match request.step_nanos {
        0 => end - start,
        nanos if nanos % MINUTE_NANOS != 0 => {
            return Err(Status::invalid_argument("step_nanos: a whole number of minutes"))
        }
        nanos => i64::try_from(nanos).unwrap_or(i64::MAX),
    };
    let steps = steps_in(end - start, step.max(minute));
    if request.step_nanos != 0 && steps > MAX_STATS_STEPS {
        return Err(Status::invalid_argument(format!(
            "step_nanos: {steps} steps in the range, more than the {MAX_STATS_STEPS} one request may ask for"
        )));
    }
    // Only served spans' durations are read: the percentiles are of requests.
    let mut budget = q.budget();
    let (rows, full) = q
        .client()
        .await?
        .query_within(
            &format!(
                "SELECT r.service_name, (u.minute_unix_nano - $1) / $3, u.kind IN {SERVED_KINDS},
                        u.status_code = {STATUS_ERROR}, sum(u.spans)::bigint,
                        array_agg(u.durations) FILTER (WHERE u.kind IN {SERVED_KINDS})
                 FROM span_rollup u JOIN resources r ON r.resource_id = u.resource_id
                 WHERE u.minute_unix_nano >= $1 AND u.minute_unix_nano < $2 AND r.service_name IS NOT NULL
                 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2"
            ),
            &[&start, &end, &step],
            &mut budget,
        )
        .await?;
    let rows = whole((rows, full), "services")?;
    let stepped = request.step_nanos != 0;
    // Every service gets every step: services x steps cells, held at once, bounded like a
    // metric query's series x steps.
    if stepped {
        let services =
            rows.windows(2).filter(|w| w[0].get::<_, &str>(0) != w[1].get::<_, &str>(0)).count() + 1;
        if services.saturating_mul(steps as usize) > q.limits.max_points {
            return Err(Status::resource_exhausted(format!(
                "{services} services x {steps} steps is more than the {} cells one answer may hold \
                 (query.max_points); ask for a larger step or a shorter range",
                q.limits.max_points
            )));
        }
    }
    decode_off_thread(budget.used(), move || {
        // Per service: its totals, and per step its requests, errors and durations.
        type Steps = Vec<(u64, u64, Durations)>;
        let cells = if stepped { steps as usize } else { 1 };
        let mut by_service: BTreeMap<String, (ServiceStats, Durations, Steps)> = BTreeMap::new();
        for row in &rows {
            let (stats, durations, per_step) = by_service.entry(row.get(0)).or_insert_with(|| {
                (ServiceStats::default(), Durations::default(), vec![Default::default(); cells])
            });
            let index =
                usize::try_from(row.get::<_, i64>(1)).unwrap_or(0).min(per_step.len().saturating_sub(1));
            let (served, failed, spans): (bool, bool, i64) = (row.get(2), row.get(3), row.get(4));
            stats.span_count += spans as u64;
            if served {
                stats.request_count += spans as u64;
                let step = &mut per_step[index];
                step.0 += spans as u64;
                if failed {
                    stats.error_count += spans as u64;
                    step.1 += spans as u64;
                }
                for sketch in row.get::<_, Option<Vec<&[u8]>>>(5).unwrap_or_default() {
                    merge(durations, sketch)?;
                    if stepped {
                        merge(&mut step.2, sketch)?;
                    }
                }
            }
        }
        let nanos = quantile_nanos;
        let services = by_service
            .into_iter()
            .map(|(service, (stats, durations, per_step))| ServiceStats {
                service,
                p50_nanos: nanos(&durations, 0.5),
                p95_nanos: nanos(&durations, 0.95),
                p99_nanos: nanos(&durations, 0.99),
                request_rate: stats.request_count as f64 / seconds,
                steps: if stepped {
                    per_step
                        .iter()
                        .enumerate()
                        .map(|(i, (requests, errors, durations))| StatsStep {
                            start_unix_nano: (start + i as i64 * step) as u64,
                            request_count: *requests,
                            error_count: *errors,
                            p95_nanos: nanos(durations, 0.95),
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                ..stats
            })
            .collect();
        Ok(ListServiceStatsResponse { services })
    })
    .await
}

/// A time range widened to the whole minutes it touches: what rollups answer for.
fn minutes(start: i64, end: i64) -> (i64, i64) {
    let minute = MINUTE_NANOS as i64;
    (start - start.rem_euclid(minute), end.saturating_add((minute - end.rem_euclid(minute)) % minute))
}

/// One operation's figures over a time range: its spans, failed spans and duration percentiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationStats {
    pub name: String,
    pub kind: i32,
    pub spans: u64,
    pub errors: u64,
    pub p50_nanos: u64,
    pub p95_nanos: u64,
    pub p99_nanos: u64,
}

/// Operations [`Query::operation_stats`] returns at most.
pub const MAX_OPERATION_STATS: usize = 1000;

impl Query {
    /// Every operation (span name and kind) of `service` in the range with its figures, the
    /// busiest first, from the span rollup: what the range holds of the service's minutes, never
    /// its spans. At most [`MAX_OPERATION_STATS`]; the flag says whether there were more.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a malformed service or range; RESOURCE_EXHAUSTED past
    /// `query.answer_bytes`.
    pub async fn operation_stats(
        &self,
        service: &str,
        range: &super::proto::TimeRange,
    ) -> Result<(Vec<OperationStats>, bool), Status> {
        self.check_text(service, "service")?;
        let (start, end) = resolve_range(Some(range), "time_range")?;
        let (start, end) = minutes(start, end);
        let mut budget = self.budget();
        let (rows, full) = self
            .client()
            .await?
            .query_within(
                &format!(
                    "SELECT u.name, u.kind, sum(u.spans)::bigint,
                            coalesce(sum(u.spans) FILTER (WHERE u.status_code = {STATUS_ERROR}), 0)::bigint,
                            array_agg(u.durations)
                     FROM span_rollup u
                     WHERE u.resource_id = ANY (SELECT resource_id FROM resources WHERE service_name = $1)
                     AND u.minute_unix_nano >= $2 AND u.minute_unix_nano < $3
                     GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT {}",
                    MAX_OPERATION_STATS + 1
                ),
                &[&service, &start, &end],
                &mut budget,
            )
            .await?;
        let mut rows = whole((rows, full), "operations")?;
        let more = rows.len() > MAX_OPERATION_STATS;
        rows.truncate(MAX_OPERATION_STATS);
        decode_off_thread(budget.used(), move || {
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let durations = merged(&row.get::<_, Vec<&[u8]>>(4))?;
                out.push(OperationStats {
                    name: row.get(0),
                    kind: row.get(1),
                    spans: row.get::<_, i64>(2) as u64,
                    errors: row.get::<_, i64>(3) as u64,
                    p50_nanos: quantile_nanos(&durations, 0.5),
                    p95_nanos: quantile_nanos(&durations, 0.95),
                    p99_nanos: quantile_nanos(&durations, 0.99),
                });
            }
            Ok((out, more))
        })
        .await
    }
}

/// Peers (databases, queues, remote hosts) a dependencies answer holds at most: the most called.
/// Their names are the callers' to choose, and a service that names a new host per call would
/// otherwise make the answer as large as its spans.
pub const MAX_PEERS: usize = 1_000;

/// The calls between services in a range, with their percentiles when `percentiles` says so:
/// merging a sketch per edge per minute is most of the cost of a day's edges, and Jaeger's
/// dependencies answer only counts.
pub(super) async fn list_service_dependencies(
    q: &Query,
    request: &ListServiceDependenciesRequest,
    percentiles: bool,
) -> Result<ListServiceDependenciesResponse, Status> {
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let (start, end) = minutes(start, end);
    let mut budget = q.budget();
    let durations = if percentiles { "array_agg(durations)" } else { "ARRAY[]::bytea[]" };
    let mut client = q.client().await?;
    let rows = whole(
        client
            .query_within(
                &format!(
                    "SELECT parent_service, child_service, sum(calls)::bigint, sum(errors)::bigint, {durations}
                     FROM service_edges
                     WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                     GROUP BY 1, 2 ORDER BY 1, 2"
                ),
                &[&start, &end],
                &mut budget,
            )
            .await?,
        "dependencies",
    )?;
    let mut peer_rows = whole(
        client
            .query_within(
                &format!(
                    "SELECT * FROM (
                         SELECT r.service_name, p.peer_kind, p.peer, sum(p.calls)::bigint, sum(p.errors)::bigint,
                                {durations},
                                row_number() OVER (ORDER BY sum(p.calls) DESC, r.service_name, p.peer_kind, p.peer)
                         FROM peer_calls p JOIN resources r ON r.resource_id = p.resource_id
                         WHERE p.minute_unix_nano >= $1 AND p.minute_unix_nano < $2 AND r.service_name IS NOT NULL
                         GROUP BY 1, 2, 3 ORDER BY 7 LIMIT $3) busiest
                     ORDER BY 1, 2, 3"
                ),
                &[&start, &end, &(MAX_PEERS as i64 + 1)],
                &mut budget,
            )
            .await?,
        "calls to databases, queues and remote hosts",
    )?;
    // One more than the answer holds was read, to know whether there are more: it goes.
    let peers_truncated = peer_rows.len() > MAX_PEERS;
    peer_rows.retain(|row| row.get::<_, i64>(6) <= MAX_PEERS as i64);
    // Which of these peers answered with spans of a service: read apart from the calls, as the
    // table is the coordinator's own on Citus, and only for the peers called in the range.
    let answered = if peer_rows.is_empty() {
        Vec::new()
    } else {
        let callers: Vec<&str> = peer_rows.iter().map(|row| row.get(0)).collect();
        let kinds: Vec<i32> = peer_rows.iter().map(|row| row.get(1)).collect();
        let peers: Vec<&str> = peer_rows.iter().map(|row| row.get(2)).collect();
        whole(
            client
                .query_within(
                    "SELECT DISTINCT p.caller_service, p.peer_kind, p.peer
                     FROM unnest($1::text[], $2::integer[], $3::text[]) AS c (caller, kind, peer)
                     JOIN peer_services p ON p.caller_service = c.caller AND p.peer_kind = c.kind AND p.peer = c.peer",
                    &[&callers, &kinds, &peers],
                    &mut budget,
                )
                .await?,
            "peers that are services",
        )?
    };
    drop(client);
    decode_off_thread(budget.used(), move || {
        let mut dependencies = Vec::with_capacity(rows.len());
        for row in &rows {
            let durations = merged(&row.get::<_, Vec<&[u8]>>(4))?;
            dependencies.push(ServiceDependency {
                parent: row.get(0),
                child: row.get(1),
                call_count: row.get::<_, i64>(2) as u64,
                error_count: row.get::<_, i64>(3) as u64,
                p50_nanos: quantile_nanos(&durations, 0.5),
                p95_nanos: quantile_nanos(&durations, 0.95),
                p99_nanos: quantile_nanos(&durations, 0.99),
            });
        }
        let answered: HashSet<(&str, i32, &str)> =
            answered.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect();
        let mut peers = Vec::new();
        for row in &peer_rows {
            let (parent, kind, peer) = (row.get::<_, &str>(0), row.get::<_, i32>(1), row.get::<_, &str>(2));
            let Some(kind_name) = PeerKind::from_i32(kind).map(PeerKind::name) else { continue };
            if answered.contains(&(parent, kind, peer)) {
                continue;
            }
            let durations = merged(&row.get::<_, Vec<&[u8]>>(5))?;
            peers.push(PeerDependency {
                parent: parent.to_owned(),
                kind: kind_name.to_owned(),
                peer: peer.to_owned(),
                call_count: row.get::<_, i64>(3) as u64,
                error_count: row.get::<_, i64>(4) as u64,
                p50_nanos: quantile_nanos(&durations, 0.5),
                p95_nanos: quantile_nanos(&durations, 0.95),
                p99_nanos: quantile_nanos(&durations, 0.99),
            });
        }
        Ok(ListServiceDependenciesResponse { dependencies, peers, peers_truncated })
    })
    .await
}

pub(super) async fn list_operations(
    q: &Query,
    request: &ListOperationsRequest,
) -> Result<ListOperationsResponse, Status> {
    if request.service.is_empty() {
        return Err(Status::invalid_argument("service: required"));
    }
    q.check_text(&request.service, "service")?;
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let (start, end) = minutes(start, end);
    let page_size = page_size(request.page_size);
    let (after_name, after_kind) = match request.page_token.as_str() {
        "" => (String::new(), i32::MIN),
        token => {
            let position = decode_token(token)?;
            let (kind, name) = position.split_once(':').ok_or_else(bad_token)?;
            (name.to_owned(), kind.parse().map_err(|_| bad_token())?)
        }
    };
    let mut budget = q.budget();
    let (rows, full) = q
        .client()
        .await?
        .query_within(
            "SELECT DISTINCT u.name, u.kind FROM span_rollup u
             WHERE u.resource_id = ANY (SELECT resource_id FROM resources WHERE service_name = $1)
             AND u.minute_unix_nano >= $2 AND u.minute_unix_nano < $3
             AND (u.name, u.kind) > ($4, $5)
             ORDER BY 1, 2 LIMIT $6",
            &[&request.service, &start, &end, &after_name, &after_kind, &(page_size as i64 + 1)],
            &mut budget,
        )
        .await?;
    let mut operations: Vec<Operation> =
        rows.iter().map(|r| Operation { name: r.get(0), kind: r.get(1) }).collect();
    let next_page_token = if full || operations.len() > page_size {
        operations.truncate(page_size);
        let last = &operations[operations.len() - 1];
        encode_token(&format!("{}:{}", last.kind, last.name))
    } else {
        String::new()
    };
    Ok(ListOperationsResponse { operations, next_page_token })
}

/// A trace summary counts the spans that started within this of the trace's latest matching span.
const SUMMARY_SPREAD_NANOS: i64 = 86_400_000_000_000;

/// The first time window a search reads, newest first; each next one is twice as long.
const FIRST_WINDOW_NANOS: i64 = 1_000_000_000;

/// One page of traces with a span matching every filter, newest first by their latest matching
/// span.
///
/// The matching spans are read newest first in time windows (one second, then each twice as
/// long as the one before) until the page is full, so a search reads about what its page
/// shows, not every span in the range. A filter that matches rarely reads further back: the
/// search stops after `query.statement_timeout_ms` with the traces it found, a message saying
/// how far back it read, and a token that goes on from there.
pub(super) async fn search_traces(
    q: &Query,
    request: &SearchTracesRequest,
) -> Result<SearchTracesResponse, Status> {
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let page_size = page_size(request.page_size);
    let mut sql = Sql::default();
    let filters = span_filters(q, request, &mut sql)?;
    if !matches!(request.order.as_str(), "" | "newest") {
        return search_traces_sorted(q, request, (start, end), page_size, sql, &filters).await;
    }
    search_traces_newest(q, request, (start, end), page_size, sql, &filters).await
}

/// Points a scatter plot answer holds when the request names no number, and at most.
const DEFAULT_SCATTER_POINTS: u32 = 2_000;
const MAX_SCATTER_POINTS: u32 = 10_000;

/// The requests matching a search's filters as scatter points, newest first: every one when the
/// range holds at most `max_points`, else a sample spread over the range ([`scatter_sample`]).
/// Whether there are more is found by reading windows from the range's end back (see
/// [`newest_windows`]) until one holds more than `max_points`, so that a busy range costs about
/// what the plot shows.
pub(super) async fn scatter_traces(
    q: &Query,
    request: &ScatterTracesRequest,
) -> Result<ScatterTracesResponse, Status> {
    let filters_of = request.filters.clone().unwrap_or_default();
    let (start, end) = resolve_range(filters_of.time_range.as_ref(), "filters.time_range")?;
    let max_points = match request.max_points {
        0 => DEFAULT_SCATTER_POINTS,
        n => n.min(MAX_SCATTER_POINTS),
    } as usize;
    let mut sql = Sql::default();
    let filters = span_filters(q, &filters_of, &mut sql)?;
    let (hi, limit) = (sql.param(end), sql.param(max_points as i64 + 1));
    let query = format!(
        "{} ORDER BY s.start_time_unix_nano DESC LIMIT {limit}",
        scatter_requests(&filters, (&sql.next_placeholder(), &hi))
    );
    let mut client = q.client().await?;
    // From the newest minute that holds the service's spans, as the search starts (a range that
    // ends after its data does would otherwise widen its windows through the empty minutes).
    let top = match newest_minute(&client, Rollup::Spans, &filters_of.service, start, end).await? {
        Some(newest) => end.min(newest.saturating_add(MINUTE_NANOS as i64)),
        None => end,
    };
    let (rows, full, _) =
        newest_first(&mut client, q, (&query, &sql), (start, top), &|rows| rows.len() > max_points).await?;
    if !full && rows.len() <= max_points {
        let points = rows.iter().map(scatter_point).collect();
        return Ok(ScatterTracesResponse {
            points,
            covered_from_unix_nano: start as u64,
            truncated: false,
            ..Default::default()
        });
    }
    drop(rows);
    scatter_sample(q, &mut client, &filters_of, (start, end), max_points).await
}

/// Stretches a scatter plot's range is cut into when more requests match than it may show.
const SCATTER_STRATA: usize = 100;
/// Rounds of a sample: the first reads an equal share of every stretch; each next one shares
/// out what is left among the stretches that had more.
const SCATTER_ROUNDS: usize = 4;

/// More than `max_points` requests match in `[start, end)`: a sample spread over the range. It
/// is cut into [`SCATTER_STRATA`] equal stretches, and each gives up to `max_points / strata`
/// requests (the first the database finds in it, whatever their duration), newest stretch
/// first; then the points left over (from stretches that held fewer) are shared out among the
/// stretches that had more, for up to [`SCATTER_ROUNDS`] rounds in all, so that a burst in one
/// stretch still fills the plot. Each read stops at its share, so the plot costs about what it
/// shows; the sample stops at `query.statement_timeout_ms` with what it read.
async fn scatter_sample(
    q: &Query,
    client: &mut super::Conn,
    filters_of: &SearchTracesRequest,
    (start, end): (i64, i64),
    max_points: usize,
) -> Result<ScatterTracesResponse, Status> {
    let strata = SCATTER_STRATA.min(max_points).max(1);
    let per_stratum = max_points / strata;
    let mut sql = Sql::default();
    let filters = span_filters(q, filters_of, &mut sql)?;
    let n = sql.params.len();
    let query = format!(
        "{} LIMIT ${} OFFSET ${}",
        scatter_requests(&filters, (&format!("${}", n + 1), &format!("${}", n + 2))),
        n + 3,
        n + 4
    );
    let width = (i128::from(end) - i128::from(start)).max(1);
    let bound = |i: usize| (i128::from(start) + width * i as i128 / strata as i128) as i64;
    let deadline = tokio::time::Instant::now() + q.limits.statement_timeout();
    let mut budget = q.budget();
    let mut rows = Vec::new();
    // Per stretch, newest first: how many it gave, and whether it may hold more.
    let mut taken = vec![(0_i64, true); strata];
    let mut covered_from = end;
    let mut left = max_points;
    'rounds: for round in 0..SCATTER_ROUNDS {
        let open = taken.iter().filter(|(_, more)| *more).count();
        if left == 0 || open == 0 {
            break;
        }
        let (share, extra) = (left / open, left % open);
        let mut given = 0;
        for (k, i) in (0..strata).rev().enumerate() {
            let (offset, more) = taken[k];
            if !more {
                continue;
            }
            let limit = (share + usize::from(given < extra)) as i64;
            given += 1;
            if limit == 0 {
                continue;
            }
            let (lo, hi) = (bound(i), bound(i + 1));
            let mut params = sql.params();
            params.extend([&lo as &(dyn ToSql + Sync), &hi, &limit, &offset]);
            let Ok(read) =
                tokio::time::timeout_at(deadline, client.query_within(&query, &params, &mut budget)).await
            else {
                break 'rounds;
            };
            let (mut found, full) = read?;
            taken[k] = (offset + found.len() as i64, found.len() as i64 == limit);
            left = left.saturating_sub(found.len());
            rows.append(&mut found);
            if full {
                break 'rounds;
            }
            if round == 0 {
                covered_from = lo;
            }
        }
    }
    let mut points: Vec<ScatterPoint> = rows.iter().map(scatter_point).collect();
    points
        .sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then_with(|| a.trace_id.cmp(&b.trace_id)));
    // Reads past an offset of a stretch that took new spans meanwhile may repeat one.
    points.dedup_by(|a, b| a.start_unix_nano == b.start_unix_nano && a.trace_id == b.trace_id);
    Ok(ScatterTracesResponse {
        points,
        covered_from_unix_nano: covered_from as u64,
        truncated: true,
        sampled: true,
        strata: strata as u32,
        per_stratum: per_stratum as u32,
    })
}

/// The requests (root, server and consumer spans) matching `filters` that started in
/// `[lo, hi)` (placeholders), as [`scatter_point`] reads them.
fn scatter_requests(filters: &str, (lo, hi): (&str, &str)) -> String {
    format!(
        "SELECT encode(s.trace_id, 'hex'), s.start_time_unix_nano, s.end_time_unix_nano,
                s.status_code IS NOT DISTINCT FROM {STATUS_ERROR}, r.service_name, left(s.name, 200)
         FROM spans s LEFT JOIN resources r ON r.resource_id = s.resource_id
         WHERE s.start_time_unix_nano >= {lo} AND s.start_time_unix_nano < {hi}
           AND (s.kind IN {SERVED_KINDS} OR s.parent_span_id IS NULL){filters}"
    )
}

fn scatter_point(row: &Row) -> ScatterPoint {
    let (from, to): (i64, i64) = (row.get(1), row.get(2));
    ScatterPoint {
        trace_id: row.get(0),
        start_unix_nano: from as u64,
        duration_nanos: (to as u64).saturating_sub(from as u64),
        error: row.get(3),
        service: row.get::<_, Option<String>>(4).unwrap_or_default(),
        name: row.get(5),
    }
}

/// The conditions on a span `s` of SearchTraces' filters, each starting " AND ".
///
/// # Errors
/// INVALID_ARGUMENT for a filter that is malformed or past its limit.
fn span_filters(q: &Query, request: &SearchTracesRequest, sql: &mut Sql) -> Result<String, Status> {
    q.check_text(&request.service, "service")?;
    q.check_text(&request.span_name, "span_name")?;
    q.check_filters(&request.attributes)?;
    let mut filters = String::new();
    if !request.service.is_empty() {
        let service = sql.param(request.service.clone());
        filters += &format!(
            " AND s.resource_id = ANY (SELECT resource_id FROM resources WHERE service_name = {service})"
        );
    }
    if !request.span_name.is_empty() {
        filters += &format!(" AND s.name = {}", sql.param(request.span_name.clone()));
    }
    for (i, filter) in request.attributes.iter().enumerate() {
        filters +=
            &format!(" AND {}", attribute_condition(q, sql, "s", filter, &format!("attributes[{i}]"))?);
    }
    let duration = "(s.end_time_unix_nano - s.start_time_unix_nano)";
    if request.min_duration_nanos > 0 {
        filters += &format!(" AND {duration} >= {}", sql.param(clamp(request.min_duration_nanos)));
    }
    if request.max_duration_nanos > 0 {
        filters += &format!(" AND {duration} <= {}", sql.param(clamp(request.max_duration_nanos)));
    }
    if request.errors_only {
        filters += &format!(" AND s.status_code = {STATUS_ERROR}");
    }
    Ok(filters)
}

/// The first page of a newest-first search (see [`search_traces`]).
async fn search_traces_newest(
    q: &Query,
    request: &SearchTracesRequest,
    (start, end): (i64, i64),
    page_size: usize,
    sql: Sql,
    filters: &str,
) -> Result<SearchTracesResponse, Status> {
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(decode_trace_token(token)?),
    };
    let n = sql.params.len();
    let (lo, hi) = (format!("${}", n + 1), format!("${}", n + 2));
    let (ids, newer_from, newer_to) = (format!("${}", n + 1), format!("${}", n + 2), format!("${}", n + 3));
    // The traces of a window by their latest matching span in it, newest first.
    let window = format!(
        "SELECT s.trace_id, max(s.start_time_unix_nano) AS latest FROM spans s
         WHERE s.start_time_unix_nano >= {lo} AND s.start_time_unix_nano < {hi}{filters}
         GROUP BY s.trace_id ORDER BY latest DESC, s.trace_id DESC"
    );
    // Of a window's traces, their latest matching span from the token's on: the traces whose
    // place (their latest matching span, then id) is at or before the token's were on an
    // earlier page.
    let newer = format!(
        "SELECT s.trace_id, max(s.start_time_unix_nano) FROM spans s
         WHERE s.trace_id = ANY ({ids}::bytea[])
           AND s.start_time_unix_nano >= {newer_from} AND s.start_time_unix_nano < {newer_to}{filters}
         GROUP BY s.trace_id"
    );
    let deadline = tokio::time::Instant::now() + q.limits.statement_timeout();
    let mut client = q.client().await?;
    let mut found: Vec<(Vec<u8>, i64)> = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    // The search reads spans that started before `hi` (just after the token's trace, on a
    // later page), back to `start`.
    let mut hi_at = match &after {
        Some((latest, _)) => latest.saturating_add(1).min(end),
        None => end,
    };
    // Where the newest spans before that are, by the rollup written with them: a search whose
    // range ends after its data does (the last hour of spans that stopped minutes ago) starts
    // at them, rather than doubling its windows through the empty minutes into one that holds
    // minutes of spans.
    if let Some(newest) = newest_minute(&client, Rollup::Spans, &request.service, start, hi_at).await? {
        hi_at = hi_at.min(newest.saturating_add(MINUTE_NANOS as i64));
    }
    let mut width = FIRST_WINDOW_NANOS;
    let mut stopped = None;
    while found.len() <= page_size && hi_at > start {
        let lo_at = hi_at.saturating_sub(width).max(start);
        let mut params = sql.params();
        params.extend([&lo_at as &(dyn ToSql + Sync), &hi_at]);
        // A window's rows are let go once read: each has a budget of its own.
        let mut budget = q.budget();
        let read =
            tokio::time::timeout_at(deadline, client.query_within(&window, &params, &mut budget)).await;
        let rows = match read {
            Ok(Ok((rows, false))) => rows,
            Ok(Ok((_, true))) => {
                stopped = Some(format!(
                    "the search's memory (query.answer_bytes) filled up, having read spans back to {}; \
                     the page token goes on from there",
                    crate::time::utc_text(hi_at.max(0) as u64)
                ));
                break;
            }
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                stopped = Some(timed_out(q, hi_at));
                break;
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                // The statement still runs: this connection goes with it, cancelled.
                drop(client);
                client = q.client().await?;
                stopped = Some(timed_out(q, hi_at));
                break;
            }
        };
        let mut candidates: Vec<(Vec<u8>, i64)> = rows
            .iter()
            .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, i64>(1)))
            .filter(|(trace_id, latest)| {
                !seen.contains(trace_id)
                    && after.as_ref().is_none_or(|(token_latest, token_id)| {
                        (*latest, trace_id) < (*token_latest, token_id)
                    })
            })
            .collect();
        if let Some((token_latest, token_id)) = after.as_ref().filter(|_| !candidates.is_empty()) {
            let ids: Vec<&[u8]> = candidates.iter().map(|(id, _)| id.as_slice()).collect();
            let mut params = sql.params();
            params.extend([&ids as &(dyn ToSql + Sync), token_latest, &end]);
            let listed: HashSet<Vec<u8>> = client
                .query(&newer, &params)
                .await?
                .iter()
                .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, i64>(1)))
                .filter(|(id, latest)| (*latest, id) >= (*token_latest, token_id))
                .map(|(id, _)| id)
                .collect();
            candidates.retain(|(id, _)| !listed.contains(id));
        }
        for (trace_id, latest) in candidates {
            seen.insert(trace_id.clone());
            found.push((trace_id, latest));
        }
        hi_at = lo_at;
        width = width.saturating_mul(2);
    }
    let mut next_page_token = String::new();
    if found.len() > page_size {
        found.truncate(page_size);
        let (trace_id, latest) = &found[page_size - 1];
        next_page_token = encode_trace_token(*latest, trace_id);
    } else if stopped.is_some() {
        // Go on below where this page stopped reading: every trace whose latest matching span
        // is older than that (an empty id sorts before every other).
        next_page_token = encode_trace_token(hi_at, &[]);
    }
    let (traces, full) = summaries(&mut client, &found, &mut q.budget()).await?;
    if full {
        // The summaries filled the answer: the page ends at the last one that fitted.
        let last = &found[traces.len().max(1) - 1];
        next_page_token = encode_trace_token(last.1, &last.0);
    }
    Ok(SearchTracesResponse { traces, next_page_token, message: stopped.unwrap_or_default() })
}

/// Most traces a sorted search pages through: its pages go on by position, and each reads the
/// traces before it again.
const MAX_SORTED_POSITION: usize = 10_000;

/// A search in an order other than the newest: every matching span in the range is grouped by
/// trace, and one page of them taken in order.
async fn search_traces_sorted(
    q: &Query,
    request: &SearchTracesRequest,
    (start, end): (i64, i64),
    page_size: usize,
    mut sql: Sql,
    filters: &str,
) -> Result<SearchTracesResponse, Status> {
    let key = match request.order.as_str() {
        "oldest" => "min(s.start_time_unix_nano) ASC",
        "longest" => "max(s.end_time_unix_nano - s.start_time_unix_nano) DESC",
        "most_spans" => "count(*) DESC",
        "most_errors" => &format!("count(*) FILTER (WHERE s.status_code = {STATUS_ERROR}) DESC"),
        other => {
            return Err(Status::invalid_argument(format!(
                "order: {other:?} is not one of newest, oldest, longest, most_spans, most_errors"
            )))
        }
    };
    let offset = match request.page_token.as_str() {
        "" => 0,
        token => decode_token(token)?
            .strip_prefix(&format!("{}:", request.order))
            .and_then(|position| position.parse::<usize>().ok())
            .filter(|position| *position <= MAX_SORTED_POSITION)
            .ok_or_else(bad_token)?,
    };
    let (lo, hi) = (sql.param(start), sql.param(end));
    let statement = format!(
        "SELECT s.trace_id, max(s.start_time_unix_nano) FROM spans s
         WHERE s.start_time_unix_nano >= {lo} AND s.start_time_unix_nano < {hi}{filters}
         GROUP BY s.trace_id ORDER BY {key}, s.trace_id LIMIT {} OFFSET {offset}",
        page_size + 1
    );
    let mut client = q.client().await?;
    let (rows, full) = client.query_within(&statement, &sql.params(), &mut q.budget()).await.map_err(|status| {
        if status.code() == tonic::Code::DeadlineExceeded {
            Status::deadline_exceeded(format!(
                "sorting traces by {} reads every matching span in the range, and that took longer than                  query.statement_timeout_ms ({} ms): narrow the time range or the filters, or sort by the newest",
                request.order, q.limits.statement_timeout_ms
            ))
        } else {
            status
        }
    })?;
    let mut found: Vec<(Vec<u8>, i64)> =
        whole((rows, full), "traces")?.iter().map(|row| (row.get(0), row.get(1))).collect();
    let mut next_page_token = String::new();
    if found.len() > page_size {
        found.truncate(page_size);
        if offset + page_size <= MAX_SORTED_POSITION {
            next_page_token = encode_token(&format!("{}:{}", request.order, offset + page_size));
        }
    }
    let (traces, full) = summaries(&mut client, &found, &mut q.budget()).await?;
    if full {
        next_page_token = encode_token(&format!("{}:{}", request.order, offset + traces.len().max(1)));
    }
    Ok(SearchTracesResponse { traces, next_page_token, message: String::new() })
}

/// What a page cut short by the statement timeout says: how far back it read.
fn timed_out(q: &Query, read_back_to: i64) -> String {
    format!(
        "the search stopped after query.statement_timeout_ms ({} ms), having read spans back to {}; \
         the page token goes on from there",
        q.limits.statement_timeout_ms,
        crate::time::utc_text(read_back_to.max(0) as u64)
    )
}

/// The summaries of `found` traces (id, latest matching span), in that order; fewer, and
/// `true`, when they fill `budget` first.
async fn summaries(
    client: &mut super::Conn,
    found: &[(Vec<u8>, i64)],
    budget: &mut Budget,
) -> Result<(Vec<TraceSummary>, bool), Status> {
    if found.is_empty() {
        return Ok((Vec::new(), false));
    }
    let ids: Vec<&[u8]> = found.iter().map(|(id, _)| id.as_slice()).collect();
    let latest: Vec<i64> = found.iter().map(|(_, latest)| *latest).collect();
    // The spans of the traces that started within a day of their latest matching span: a few
    // daily partitions to look each trace up in, not all of them.
    let from = latest.iter().min().map_or(0, |l| l.saturating_sub(SUMMARY_SPREAD_NANOS));
    let to = latest.iter().max().map_or(0, |l| l.saturating_add(SUMMARY_SPREAD_NANOS));
    let query = format!(
        "WITH matched AS (SELECT * FROM unnest($1::bytea[], $2::bigint[]) WITH ORDINALITY AS m (trace_id, latest, n))
         SELECT m.trace_id, m.latest, min(s.start_time_unix_nano), max(s.end_time_unix_nano),
                count(DISTINCT s.span_id), count(DISTINCT s.span_id) FILTER (WHERE s.status_code = {STATUS_ERROR}),
                coalesce(array_agg(DISTINCT r.service_name) FILTER (WHERE r.service_name IS NOT NULL), '{{}}'),
                (array_agg(r.service_name ORDER BY s.start_time_unix_nano) FILTER (WHERE s.parent_span_id IS NULL))[1],
                (array_agg(s.name ORDER BY s.start_time_unix_nano) FILTER (WHERE s.parent_span_id IS NULL))[1]
         FROM matched m JOIN spans s ON s.trace_id = m.trace_id
              AND s.start_time_unix_nano >= $3 AND s.start_time_unix_nano < $4
         LEFT JOIN resources r ON r.resource_id = s.resource_id
         GROUP BY m.trace_id, m.latest, m.n ORDER BY m.n"
    );
    let (mut rows, full) = client.query_within(&query, &[&ids, &latest, &from, &to], budget).await?;
    if full {
        // The last row may be any trace's: keep the ones before the first missing.
        let fitted =
            rows.iter().zip(found).take_while(|(row, (id, _))| row.get::<_, Vec<u8>>(0) == *id).count();
        rows.truncate(fitted.max(1).min(rows.len()));
    }
    let traces = rows
        .iter()
        .map(|row| {
            let first: i64 = row.get(2);
            let last_end: i64 = row.get(3);
            TraceSummary {
                trace_id: hex::encode(row.get::<_, Vec<u8>>(0)),
                root_service: row.get::<_, Option<String>>(7).unwrap_or_default(),
                root_span_name: row.get::<_, Option<String>>(8).unwrap_or_default(),
                start_unix_nano: first as u64,
                duration_nanos: last_end.saturating_sub(first).max(0) as u64,
                span_count: row.get::<_, i64>(4) as u32,
                error_count: row.get::<_, i64>(5) as u32,
                services: row.get(6),
            }
        })
        .collect();
    Ok((traces, full))
}

/// The rows of an answer that has no pages: all of them, or RESOURCE_EXHAUSTED when they do not
/// fit in `query.answer_bytes`.
fn whole((rows, full): (Vec<Row>, bool), what: &str) -> Result<Vec<Row>, Status> {
    if full {
        return Err(Status::resource_exhausted(format!(
            "the {what} in this time range take more memory than an answer may (query.answer_bytes); \
             ask for a shorter time range"
        )));
    }
    Ok(rows)
}

/// The status code of a failed span.
const STATUS_ERROR: i32 = 2;

fn clamp(nanos: u64) -> i64 {
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

fn encode_trace_token(latest: i64, trace_id: &[u8]) -> String {
    encode_token(&format!("{latest}:{}", hex::encode(trace_id)))
}

fn decode_trace_token(token: &str) -> Result<(i64, Vec<u8>), Status> {
    let text = decode_token(token)?;
    let parsed =
        text.split_once(':').and_then(|(latest, id)| Some((latest.parse().ok()?, hex::decode(id).ok()?)));
    parsed.ok_or_else(bad_token)
}
