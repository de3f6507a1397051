//! The read API: `otelephant.query.v1.QueryService` on the gRPC port, handing stored data back
//! as OTLP, with every field decoded by the same mappings that encoded it.

pub mod budget;
pub mod conversation;
pub mod http;
pub mod jaeger;
pub mod llm;
pub mod logql;
pub mod logql_eval;
pub mod logs;
pub mod loki;
pub mod loki_read;
pub mod metrics;
pub mod special_floats;
pub mod traces;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use std::collections::HashMap;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use budget::{Budget, Fit, ReadMemory};
use bytes::BytesMut;
use deadpool_postgres::{Object, Pool};
use futures_util::{pin_mut, TryStreamExt};
use opentelemetry_proto::tonic::{
    common::v1::InstrumentationScope, resource::v1::Resource, trace::v1::TracesData,
};
use tokio_postgres::{types::ToSql, Row};
use tokio_postgres_rustls::MakeRustlsConnect;
use tonic::{Request, Response, Status};

use crate::encode::{
    attributes::{attributes_from_json, write_decoded_value, MappingError},
    dims::entity_refs_from_json,
};
use crate::{
    config::QueryConfig,
    store::{citus::Layout, Failure},
};
use proto::{
    query_service_server::QueryService, GetTraceRequest, ListMetricsRequest, ListMetricsResponse,
    ListOperationsRequest, ListOperationsResponse, ListServiceDependenciesRequest,
    ListServiceDependenciesResponse, ListServiceStatsRequest, ListServiceStatsResponse, ListServicesRequest,
    ListServicesResponse, QueryMetricsRequest, QueryMetricsResponse, SearchLogsRequest, SearchLogsResponse,
    SearchTracesRequest, SearchTracesResponse,
};

/// The generated service and messages of `proto/otelephant/query/v1/query.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("otelephant.query.v1");
    include!(concat!(env!("OUT_DIR"), "/otelephant.query.v1.serde.rs"));
}

/// Descriptors of the query service and the OTLP export services, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// A time range's length when the request leaves its start unset.
pub const DEFAULT_RANGE_NANOS: u64 = 3_600 * 1_000_000_000;

/// The query service: its own pool (see `query.pool_size`) and its limits.
#[derive(Clone)]
pub struct Query {
    pool: Pool,
    tls: MakeRustlsConnect,
    limits: QueryConfig,
    /// Where the tables are, for the queries Citus needs written another way.
    layout: Layout,
    /// The memory answers are built in, shared by every read.
    memory: ReadMemory,
}

impl Query {
    pub fn new(pool: Pool, tls: MakeRustlsConnect, limits: QueryConfig, layout: Layout) -> Self {
        let memory = ReadMemory::new(&limits);
        Self { pool, tls, limits, layout, memory }
    }

    /// A budget for one answer (see [`budget`]).
    pub fn budget(&self) -> Budget {
        self.memory.budget()
    }

    pub fn server(self) -> proto::query_service_server::QueryServiceServer<Self> {
        proto::query_service_server::QueryServiceServer::new(self)
    }

    /// Up to `limit` service names in the order their first resource was stored (ties by
    /// name), so that a service keeps its place, and its colour in the UI, as others arrive.
    ///
    /// # Errors
    /// The database's, as a status.
    pub async fn services_by_first_seen(&self, limit: i64) -> Result<Vec<String>, Status> {
        // Names as many as fit in an answer's memory: the ones past it get a colour by hash.
        let (rows, _full) = self
            .client()
            .await?
            .query_within(
                "SELECT service_name FROM resources WHERE service_name IS NOT NULL
                 GROUP BY service_name ORDER BY min(first_seen), service_name LIMIT $1",
                &[&limit],
                &mut self.budget(),
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// The rows of one statement, within one answer's memory (`RESOURCE_EXHAUSTED` past it).
    async fn rows(&self, statement: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Status> {
        let (rows, full) = self.client().await?.query_within(statement, params, &mut self.budget()).await?;
        if full {
            return Err(Status::resource_exhausted("the answer is larger than query.answer_bytes"));
        }
        Ok(rows)
    }

    /// A connection of the query pool, waited for at most as long as a statement may run.
    async fn client(&self) -> Result<Conn, Status> {
        let wait = match self.limits.statement_timeout() {
            wait if wait.is_zero() => Duration::from_secs(30),
            wait => wait,
        };
        let client = tokio::time::timeout(wait, self.pool.get())
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "every query connection (query.pool_size = {}) stayed busy for {wait:?}",
                    self.limits.pool_size
                ))
            })?
            .map_err(|e| Status::unavailable(format!("no database connection: {e}")))?;
        Ok(Conn {
            client: Some(client),
            running: AtomicBool::new(false),
            tls: self.tls.clone(),
            statement_timeout_ms: self.limits.statement_timeout_ms,
            pool: self.pool.clone(),
        })
    }

    /// Checks the attribute filters of a request against `query.max_filters`.
    fn check_filters(&self, filters: &[proto::AttributeFilter]) -> Result<(), Status> {
        if filters.len() > self.limits.max_filters {
            return Err(Status::invalid_argument(format!(
                "attributes: {} filters, more than the {} allowed (query.max_filters)",
                filters.len(),
                self.limits.max_filters
            )));
        }
        Ok(())
    }

    /// Checks a text filter against `query.max_filter_bytes`, and that PostgreSQL can hold it.
    fn check_text(&self, text: &str, field: &str) -> Result<(), Status> {
        if text.len() > self.limits.max_filter_bytes {
            return Err(Status::invalid_argument(format!(
                "{field}: {} bytes, more than the {} allowed (query.max_filter_bytes)",
                text.len(),
                self.limits.max_filter_bytes
            )));
        }
        if text.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "{field}: U+0000 is never stored, so it matches nothing"
            )));
        }
        Ok(())
    }
}

/// A query service connection. When it is dropped while a statement runs (the client went
/// away, or its deadline passed and tonic dropped the handler), the statement is cancelled in
/// PostgreSQL and the connection closed, rather than left running unseen and handed to the next
/// query.
pub(crate) struct Conn {
    client: Option<Object>,
    running: AtomicBool,
    tls: MakeRustlsConnect,
    statement_timeout_ms: u64,
    /// Where a connection given up mid-statement is replaced from.
    pool: Pool,
}

impl Conn {
    /// Runs a statement.
    ///
    /// # Errors
    /// The database's error as a status (see [`Conn::status`]).
    pub(crate) async fn query(
        &self,
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Status> {
        let Some(client) = &self.client else { return Err(Status::internal("connection already closed")) };
        self.running.store(true, Ordering::Relaxed);
        let rows = client.query(statement, params).await;
        self.running.store(false, Ordering::Relaxed);
        rows.map_err(|e| self.status(e))
    }

    /// Runs a statement, keeping its rows while `budget` takes them. `Ok((rows, true))` when
    /// the answer filled up before the rows ran out: the statement is then cancelled and this
    /// connection replaced by a fresh one, so that the rows left are never read.
    ///
    /// # Errors
    /// The database's error as a status (see [`Conn::status`]); RESOURCE_EXHAUSTED from the
    /// budget (see [`Budget::charge`]).
    pub(crate) async fn query_within(
        &mut self,
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
        budget: &mut Budget,
    ) -> Result<(Vec<Row>, bool), Status> {
        let Some(client) = &self.client else { return Err(Status::internal("connection already closed")) };
        self.running.store(true, Ordering::Relaxed);
        let stream = client.query_raw(statement, params.iter().copied()).await.map_err(|e| self.status(e))?;
        pin_mut!(stream);
        let mut rows = Vec::new();
        let mut full = false;
        // Rows are decoded one at a time: what the largest needs while it is is charged once.
        let mut transient = 0;
        loop {
            let row = match stream.try_next().await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(err) => return Err(self.status(err)),
            };
            let cost = budget::row_cost(&row);
            let more = cost.held + cost.transient.saturating_sub(transient);
            match budget.charge(more).await? {
                Fit::Fits => {
                    transient = transient.max(cost.transient);
                    rows.push(row);
                }
                Fit::Full => {
                    full = true;
                    break;
                }
            }
        }
        if full {
            // The statement still runs: cancel it with this connection, and go on with another.
            self.replace().await?;
        }
        self.running.store(false, Ordering::Relaxed);
        Ok((rows, full))
    }

    /// Runs a statement and hands its rows to `consumer` on the blocking pool, a chunk of
    /// about [`CHUNK_BYTES`] at a time, for as long as it wants more and `budget` takes what it
    /// holds: rows are never all in memory at once, and what a consumer keeps is charged as it
    /// grows. Returns the consumer and whether the answer filled up. A consumer that has
    /// enough, or an answer that filled, ends the statement: it is cancelled and this
    /// connection replaced, so that the rows left are never read.
    ///
    /// # Errors
    /// The database's error as a status; the consumer's; RESOURCE_EXHAUSTED from the budget.
    pub(crate) async fn consume<C: Consumer>(
        &mut self,
        statement: &str,
        params: &[&(dyn ToSql + Sync)],
        mut consumer: C,
        budget: &mut Budget,
    ) -> Result<(C, bool), Status> {
        let Some(client) = &self.client else { return Err(Status::internal("connection already closed")) };
        self.running.store(true, Ordering::Relaxed);
        let stream = client.query_raw(statement, params.iter().copied()).await.map_err(|e| self.status(e))?;
        pin_mut!(stream);
        let (mut chunk, mut chunk_bytes, mut held) = (Vec::new(), 0, 0);
        let mut ended = false;
        let mut full = false;
        loop {
            let row = match stream.try_next().await {
                Ok(row) => row,
                Err(err) => return Err(self.status(err)),
            };
            let last = row.is_none();
            if let Some(row) = row {
                chunk_bytes += budget::row_cost(&row).held;
                chunk.push(row);
            }
            if chunk.is_empty() || (!last && chunk_bytes < CHUNK_BYTES) {
                if last {
                    break;
                }
                continue;
            }
            let rows = std::mem::take(&mut chunk);
            chunk_bytes = 0;
            let (back, more) = tokio::task::spawn_blocking(move || {
                let more = consumer.take(rows);
                (consumer, more)
            })
            .await
            .map_err(|e| Status::internal(format!("reading rows failed: {e}")))?;
            consumer = back;
            let wants_more = more?;
            let now_held = consumer.held_bytes();
            if now_held > held {
                match budget.charge(now_held - held).await? {
                    Fit::Fits => held = now_held,
                    Fit::Full => full = true,
                }
            }
            if last {
                break;
            }
            if full || !wants_more {
                ended = true;
                break;
            }
        }
        if ended {
            self.replace().await?;
        }
        self.running.store(false, Ordering::Relaxed);
        Ok((consumer, full))
    }

    /// Gives up this connection while its statement runs (see [`Conn::abandon`]) and goes on
    /// with a fresh one from the pool.
    ///
    /// # Errors
    /// UNAVAILABLE when the pool has none.
    async fn replace(&mut self) -> Result<(), Status> {
        self.abandon();
        let client =
            self.pool.get().await.map_err(|e| Status::unavailable(format!("no database connection: {e}")))?;
        self.client = Some(client);
        Ok(())
    }

    /// Gives up this connection while its statement runs: the statement is cancelled in
    /// PostgreSQL and the connection closed, never handed to the next query (a cancel that
    /// arrived late would hit that one).
    fn abandon(&mut self) {
        let Some(client) = self.client.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let client = Object::take(client);
        let token = client.cancel_token();
        let tls = self.tls.clone();
        runtime.spawn(async move {
            if let Err(err) = token.cancel_query(tls).await {
                tracing::debug!(%err, "cancelling an abandoned query failed; its connection is closed");
            }
            drop(client);
        });
    }

    /// The status for a database error (classified by [`Failure`], as ingest's are): a
    /// statement that ran past `query.statement_timeout_ms` is DEADLINE_EXCEEDED, a value from
    /// the request the database could not use INVALID_ARGUMENT, anything else UNAVAILABLE
    /// (worth trying again).
    fn status(&self, err: tokio_postgres::Error) -> Status {
        match Failure::of(&err) {
            Failure::Cancelled => Status::deadline_exceeded(format!(
                "the query ran longer than query.statement_timeout_ms ({} ms) and was cancelled; narrow it down",
                self.statement_timeout_ms
            )),
            Failure::Data => Status::invalid_argument(format!(
                "a value in the request could not be used: {}",
                err.as_db_error().map_or_else(|| err.to_string(), |db| db.message().to_owned())
            )),
            Failure::Connection | Failure::Other => database_error(err),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.running.load(Ordering::Relaxed) {
            self.abandon();
        }
    }
}

/// Rows a [`Conn::consume`] hands over at once, in bytes as [`budget::row_cost`] counts them.
const CHUNK_BYTES: usize = 1 << 20;

/// What reads a statement's rows a chunk at a time (see [`Conn::consume`]), on the blocking pool.
pub(crate) trait Consumer: Send + 'static {
    /// Takes a chunk of rows, in the statement's order; returns whether it wants more.
    ///
    /// # Errors
    /// A status that ends the read.
    fn take(&mut self, rows: Vec<Row>) -> Result<bool, Status>;

    /// Bytes it holds for its answer so far.
    fn held_bytes(&self) -> usize;
}

/// Answers larger than this are decoded from their rows on the blocking pool.
const DECODE_INLINE_BYTES: usize = 256 * 1024;

/// Runs `decode`, which turns an answer's `bytes` of rows into OTLP, where it holds up no one:
/// inline when the answer is small, on the blocking pool otherwise, so that a large answer
/// never stalls the async worker threads that ingest shares.
///
/// # Errors
/// What `decode` returns; INTERNAL when it panicked.
async fn decode_off_thread<T: Send + 'static>(
    bytes: usize,
    decode: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    if bytes <= DECODE_INLINE_BYTES {
        return decode();
    }
    tokio::task::spawn_blocking(decode)
        .await
        .map_err(|e| Status::internal(format!("decoding failed: {e}")))?
}

/// How many steps of `step` nanoseconds cover `span` nanoseconds (both positive): `span / step`
/// rounded up.
fn steps_in(span: i64, step: i64) -> i64 {
    if span <= 0 {
        return 0;
    }
    (span - 1) / step.max(1) + 1
}

/// `[start, end)` in nanoseconds as the bigint the tables hold.
///
/// # Errors
/// INVALID_ARGUMENT naming the field when the range is inverted or empty.
pub fn resolve_range(range: Option<&proto::TimeRange>, field: &str) -> Result<(i64, i64), Status> {
    let now = crate::time::now_nanos();
    let range = range.copied().unwrap_or_default();
    let end = if range.end_unix_nano == 0 { now } else { range.end_unix_nano };
    let start = if range.start_unix_nano == 0 {
        end.saturating_sub(DEFAULT_RANGE_NANOS)
    } else {
        range.start_unix_nano
    };
    if start >= end {
        return Err(Status::invalid_argument(format!(
            "{field}: start_unix_nano ({start}) must be before end_unix_nano ({end})"
        )));
    }
    let clamp = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
    Ok((clamp(start), clamp(end)))
}

fn database_error(err: tokio_postgres::Error) -> Status {
    match std::error::Error::source(&err) {
        Some(cause) => Status::unavailable(format!("database error: {err}: {cause}")),
        None => Status::unavailable(format!("database error: {err}")),
    }
}

/// Stored data that does not follow the mapping: a bug or a hand-edited row, not the caller's fault.
fn corrupt(err: MappingError) -> Status {
    Status::internal(format!("stored data does not decode: {err}"))
}

#[tonic::async_trait]
impl QueryService for Query {
    async fn get_trace(&self, request: Request<GetTraceRequest>) -> Result<Response<TracesData>, Status> {
        let trace_id = traces::parse_trace_id(&request.get_ref().trace_id, "trace_id")?;
        Ok(Response::new(self.trace(&trace_id).await?))
    }

    async fn search_traces(
        &self,
        request: Request<SearchTracesRequest>,
    ) -> Result<Response<SearchTracesResponse>, Status> {
        Ok(Response::new(traces::search_traces(self, request.get_ref()).await?))
    }

    async fn search_logs(
        &self,
        request: Request<SearchLogsRequest>,
    ) -> Result<Response<SearchLogsResponse>, Status> {
        Ok(Response::new(logs::search_logs(self, request.get_ref()).await?))
    }

    async fn count_logs(
        &self,
        request: Request<proto::CountLogsRequest>,
    ) -> Result<Response<proto::CountLogsResponse>, Status> {
        Ok(Response::new(logs::count_logs(self, request.get_ref()).await?))
    }

    async fn scatter_traces(
        &self,
        request: Request<proto::ScatterTracesRequest>,
    ) -> Result<Response<proto::ScatterTracesResponse>, Status> {
        Ok(Response::new(traces::scatter_traces(self, request.get_ref()).await?))
    }

    async fn log_facets(
        &self,
        request: Request<proto::LogFacetsRequest>,
    ) -> Result<Response<proto::LogFacetsResponse>, Status> {
        Ok(Response::new(logs::log_facets(self, request.get_ref()).await?))
    }

    async fn list_metrics(
        &self,
        request: Request<ListMetricsRequest>,
    ) -> Result<Response<ListMetricsResponse>, Status> {
        Ok(Response::new(metrics::list_metrics(self, request.get_ref()).await?))
    }

    async fn query_metrics(
        &self,
        request: Request<QueryMetricsRequest>,
    ) -> Result<Response<QueryMetricsResponse>, Status> {
        Ok(Response::new(metrics::query_metrics(self, request.get_ref()).await?))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        Ok(Response::new(traces::list_services(self, request.get_ref()).await?))
    }

    async fn list_service_stats(
        &self,
        request: Request<ListServiceStatsRequest>,
    ) -> Result<Response<ListServiceStatsResponse>, Status> {
        Ok(Response::new(traces::list_service_stats(self, request.get_ref()).await?))
    }

    async fn list_service_dependencies(
        &self,
        request: Request<ListServiceDependenciesRequest>,
    ) -> Result<Response<ListServiceDependenciesResponse>, Status> {
        Ok(Response::new(traces::list_service_dependencies(self, request.get_ref(), true).await?))
    }

    async fn list_operations(
        &self,
        request: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        Ok(Response::new(traces::list_operations(self, request.get_ref()).await?))
    }

    async fn get_llm_overview(
        &self,
        request: Request<proto::GetLlmOverviewRequest>,
    ) -> Result<Response<proto::GetLlmOverviewResponse>, Status> {
        Ok(Response::new(llm::get_llm_overview(self, request.get_ref()).await?))
    }

    async fn list_llm_calls(
        &self,
        request: Request<proto::ListLlmCallsRequest>,
    ) -> Result<Response<proto::ListLlmCallsResponse>, Status> {
        Ok(Response::new(llm::list_llm_calls(self, request.get_ref()).await?))
    }

    async fn get_llm_conversation(
        &self,
        request: Request<proto::GetLlmConversationRequest>,
    ) -> Result<Response<proto::GetLlmConversationResponse>, Status> {
        Ok(Response::new(conversation::get_llm_conversation(self, request.get_ref()).await?))
    }
}

/// Page size when the request leaves it unset, and the most a page may hold.
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 1000;

fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Page tokens are opaque to clients: base64 of a position the next page starts after.
fn encode_token(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

fn decode_token(token: &str) -> Result<String, Status> {
    URL_SAFE_NO_PAD.decode(token).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(bad_token)
}

fn bad_token() -> Status {
    Status::invalid_argument("page_token: not a token this server gave out")
}

/// A SQL statement's parameters, collected while its text is built: user input only ever
/// travels as a parameter, never inside the text.
#[derive(Default)]
struct Sql {
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    /// Adds a parameter; returns its placeholder.
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }

    /// The placeholder of a parameter given after all of these, each time the statement runs
    /// (see [`Sql::params`]).
    fn next_placeholder(&self) -> String {
        format!("${}", self.params.len() + 1)
    }
}

/// The first window a newest-first read tries; each next one is ten times as long.
const FIRST_WINDOW_NANOS: i64 = 60_000_000_000;

/// The starts of the time windows a newest-first read tries, each from `top` back: a minute,
/// ten, a hundred..., the last at `start`. A read that finds what it needs in a window stops
/// there, so that the newest records cost what they are, not what the range holds; the
/// windows' lengths grow tenfold, so a read that goes back to `start` reads at most about 1.1
/// times what one read of the whole range would.
fn newest_windows(start: i64, top: i64) -> impl Iterator<Item = i64> {
    let mut length = Some(FIRST_WINDOW_NANOS);
    std::iter::from_fn(move || {
        let current = length?;
        // A length that stopped growing (saturated) reaches back to the start at once.
        let window = if current == i64::MAX { start } else { top.saturating_sub(current).max(start) };
        length = (window > start).then(|| current.saturating_mul(10));
        Some(window)
    })
}

/// The condition that `alias` (a spans or logs row) or its resource has attribute `key` equal
/// to `value`, type included: jsonb's text form of a value differs between an int and a double.
///
/// # Errors
/// INVALID_ARGUMENT naming `field` when the filter has no key or no value.
fn attribute_condition(
    q: &Query,
    sql: &mut Sql,
    alias: &str,
    filter: &proto::AttributeFilter,
    field: &str,
) -> Result<String, Status> {
    if filter.key.is_empty() {
        return Err(Status::invalid_argument(format!("{field}.key: required")));
    }
    let Some(value) = &filter.value else {
        return Err(Status::invalid_argument(format!("{field}.value: required")));
    };
    let mut json = BytesMut::new();
    write_decoded_value(&mut json, value);
    let json =
        String::from_utf8(json.to_vec()).map_err(|_| Status::internal("attribute JSON is not UTF-8"))?;
    q.check_text(&format!("{}{json}", filter.key), field)?;
    let key = sql.param(filter.key.clone());
    let value = sql.param(json);
    Ok(format!(
        "(({alias}.attributes -> {key})::text = ({value}::text::jsonb)::text
          OR EXISTS (SELECT 1 FROM resources fr WHERE fr.resource_id = {alias}.resource_id
                     AND (fr.attributes -> {key})::text = ({value}::text::jsonb)::text))"
    ))
}

pub(super) fn u32_column(row: &Row, column: &str) -> Result<u32, MappingError> {
    let v: i64 = row.get(column);
    u32::try_from(v).map_err(|_| MappingError::BadNumber(format!("{column} = {v}")))
}

/// A resource id with its scope ids, each with its rows.
type ResourceGroup<'a> = (i64, Vec<(i64, Vec<&'a Row>)>);

/// Rows grouped by resource, then scope, each level in order of first appearance; rows keep
/// their order within a group.
fn group_by_dimensions<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Vec<ResourceGroup<'a>> {
    let mut groups: Vec<ResourceGroup<'a>> = Vec::new();
    let mut resource_at: HashMap<i64, usize> = HashMap::new();
    let mut scope_at: HashMap<(i64, i64), usize> = HashMap::new();
    for row in rows {
        let (resource_id, scope_id): (i64, i64) = (row.get("resource_id"), row.get("scope_id"));
        let r = *resource_at.entry(resource_id).or_insert_with(|| {
            groups.push((resource_id, Vec::new()));
            groups.len() - 1
        });
        let scopes = &mut groups[r].1;
        let s = *scope_at.entry((resource_id, scope_id)).or_insert_with(|| {
            scopes.push((scope_id, Vec::new()));
            scopes.len() - 1
        });
        scopes[s].1.push(row);
    }
    groups
}

type Resources = HashMap<i64, (Resource, String)>;
type Scopes = HashMap<i64, (InstrumentationScope, String)>;

/// The resources and scopes (each with its schema_url) that `rows` reference, charged to
/// `budget`.
///
/// # Errors
/// RESOURCE_EXHAUSTED when they do not fit in what is left of the answer's budget: an
/// answer's records can each name a large resource of their own.
async fn dimensions(
    client: &mut Conn,
    rows: &[Row],
    budget: &mut Budget,
) -> Result<(Resources, Scopes), Status> {
    let mut resource_ids: Vec<i64> = rows.iter().map(|r| r.get("resource_id")).collect();
    let mut scope_ids: Vec<i64> = rows.iter().map(|r| r.get("scope_id")).collect();
    for ids in [&mut resource_ids, &mut scope_ids] {
        ids.sort_unstable();
        ids.dedup();
    }
    let too_large = || {
        Status::resource_exhausted(
            "the resources and scopes of this answer's records do not fit in query.answer_bytes; \
             ask for fewer records (page_size) or a narrower search",
        )
    };
    let (rows, full) = client.query_within(RESOURCES_BY_ID, &[&resource_ids], budget).await?;
    if full {
        return Err(too_large());
    }
    let resources = rows
        .iter()
        .map(|r| Ok((r.get("resource_id"), resource_from_row(r)?)))
        .collect::<Result<_, MappingError>>()
        .map_err(corrupt)?;
    let (rows, full) = client.query_within(SCOPES_BY_ID, &[&scope_ids], budget).await?;
    if full {
        return Err(too_large());
    }
    let scopes = rows
        .iter()
        .map(|r| Ok((r.get("scope_id"), scope_from_row(r)?)))
        .collect::<Result<_, MappingError>>()
        .map_err(corrupt)?;
    Ok((resources, scopes))
}

fn resource_from_row(row: &Row) -> Result<(Resource, String), MappingError> {
    let entity_refs: Option<serde_json::Value> = row.get("entity_refs");
    let resource = Resource {
        attributes: attributes_from_json(&row.get("attributes"))?,
        dropped_attributes_count: u32_column(row, "dropped_attributes_count")?,
        entity_refs: entity_refs.as_ref().map_or(Ok(Vec::new()), entity_refs_from_json)?,
    };
    Ok((resource, row.get("schema_url")))
}

fn scope_from_row(row: &Row) -> Result<(InstrumentationScope, String), MappingError> {
    let scope = InstrumentationScope {
        name: row.get("name"),
        version: row.get("version"),
        attributes: attributes_from_json(&row.get("attributes"))?,
        dropped_attributes_count: u32_column(row, "dropped_attributes_count")?,
    };
    Ok((scope, row.get("schema_url")))
}

pub(super) const RESOURCES_BY_ID: &str = "SELECT * FROM resources WHERE resource_id = ANY($1)";
pub(super) const SCOPES_BY_ID: &str = "SELECT * FROM scopes WHERE scope_id = ANY($1)";

/// A rollup written with its records, to find where the newest of them are.
#[derive(Clone, Copy)]
enum Rollup {
    Spans,
    Logs,
}

/// The start of the newest minute before `before` (and from `start`'s minute on) that holds a
/// span or log record (as `rollup` says) of `service` (of any, when empty), as its rollup
/// counts them; None when it holds none there. Reads the rollup rows of the range, a few per
/// minute and service. A newest-first read starts there: a range that ends after its data
/// does would otherwise widen its windows through the empty minutes.
async fn newest_minute(
    client: &Conn,
    rollup: Rollup,
    service: &str,
    start: i64,
    before: i64,
) -> Result<Option<i64>, Status> {
    let table = match rollup {
        Rollup::Spans => "span_rollup",
        Rollup::Logs => "log_rollup",
    };
    let from = start - start.rem_euclid(crate::encode::rollups::MINUTE_NANOS as i64);
    let rows = if service.is_empty() {
        client
            .query(
                &format!(
                    "SELECT max(minute_unix_nano) FROM {table} WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2"
                ),
                &[&from, &before],
            )
            .await?
    } else {
        client
            .query(
                &format!(
                    "SELECT max(minute_unix_nano) FROM {table} WHERE minute_unix_nano >= $1 AND minute_unix_nano < $2
                     AND resource_id = ANY (SELECT resource_id FROM resources WHERE service_name = $3)"
                ),
                &[&from, &before, &service],
            )
            .await?
    };
    Ok(rows.first().and_then(|row| row.get(0)))
}

/// Runs `query`, whose last parameter (after `sql`'s) is the start of its time window, over the
/// [`newest_windows`] from `top` back to `start` until a window's rows are `enough` or it
/// reaches `start`: the rows of that window, whether the answer filled up, and its budget.
async fn newest_first(
    client: &mut Conn,
    q: &Query,
    (query, sql): (&str, &Sql),
    (start, top): (i64, i64),
    enough: &(dyn Fn(&[Row]) -> bool + Sync),
) -> Result<(Vec<Row>, bool, Budget), Status> {
    let mut found = None;
    for window in newest_windows(start, top) {
        let mut budget = q.budget();
        let mut params = sql.params();
        params.push(&window);
        let (rows, full) = client.query_within(query, &params, &mut budget).await?;
        let enough = full || enough(&rows);
        found = Some((rows, full, budget));
        if enough {
            break;
        }
    }
    found.ok_or_else(|| Status::internal("no time window was read"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_windows_grow_tenfold_back_to_the_start() {
        let minute = FIRST_WINDOW_NANOS;
        let top = 1_000 * minute;
        let windows: Vec<i64> = newest_windows(0, top).collect();
        assert_eq!(windows, [top - minute, top - 10 * minute, top - 100 * minute, 0]);
        assert_eq!(newest_windows(top, top).collect::<Vec<_>>(), [top], "an empty range: one read");
        assert_eq!(newest_windows(top - 5, top).collect::<Vec<_>>(), [top - 5], "shorter than a minute");
        let extreme: Vec<i64> = newest_windows(i64::MIN, i64::MAX).collect();
        assert_eq!(extreme.last(), Some(&i64::MIN), "ends at the start, without overflow");
        assert!(extreme.len() < 25, "{extreme:?}");
    }
}
