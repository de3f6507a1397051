//! GetTrace, ListServices and ListOperations: spans back out of `spans`, `resources` and
//! `scopes`, rebuilt into OTLP.

use std::collections::{HashMap, HashSet};

use opentelemetry_proto::tonic::{
    common::v1::InstrumentationScope,
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status as SpanStatus, TracesData},
};
use tokio_postgres::Row;
use tonic::{Request, Response, Status};

use super::{
    corrupt, database_error,
    proto::{
        query_service_server::QueryService, GetTraceRequest, ListOperationsRequest, ListOperationsResponse,
        ListServicesRequest, ListServicesResponse, Operation,
    },
    resolve_range, Query,
};
use crate::encode::{
    attributes::{attributes_from_json, MappingError},
    dims::entity_refs_from_json,
    traces::{events_from_json, links_from_json},
};

/// Parses a trace id of 32 hex characters.
///
/// # Errors
/// INVALID_ARGUMENT naming `field`.
pub fn parse_trace_id(hex_id: &str, field: &str) -> Result<Vec<u8>, Status> {
    match hex::decode(hex_id) {
        Ok(id) if id.len() == 16 => Ok(id),
        _ => Err(Status::invalid_argument(format!(
            "{field}: expected 32 hexadecimal characters, got {hex_id:?}"
        ))),
    }
}

fn u32_column(row: &Row, column: &str) -> Result<u32, MappingError> {
    let v: i64 = row.get(column);
    u32::try_from(v).map_err(|_| MappingError::BadNumber(format!("{column} = {v}")))
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

const TRACE_SPANS: &str = "SELECT * FROM spans WHERE trace_id = $1
    ORDER BY resource_id, scope_id, start_time_unix_nano, span_id";
const RESOURCES_BY_ID: &str = "SELECT * FROM resources WHERE resource_id = ANY($1)";
const SCOPES_BY_ID: &str = "SELECT * FROM scopes WHERE scope_id = ANY($1)";

impl Query {
    async fn get_trace(&self, trace_id: &[u8]) -> Result<TracesData, Status> {
        let client = self.client().await?;
        let rows = client.query(TRACE_SPANS, &[&trace_id]).await.map_err(database_error)?;
        if rows.is_empty() {
            return Err(Status::not_found(format!("no trace with id {}", hex::encode(trace_id))));
        }
        let mut resource_ids: Vec<i64> = rows.iter().map(|r| r.get("resource_id")).collect();
        let mut scope_ids: Vec<i64> = rows.iter().map(|r| r.get("scope_id")).collect();
        resource_ids.dedup();
        scope_ids.sort_unstable();
        scope_ids.dedup();
        let resources: HashMap<i64, (Resource, String)> = client
            .query(RESOURCES_BY_ID, &[&resource_ids])
            .await
            .map_err(database_error)?
            .iter()
            .map(|r| Ok((r.get("resource_id"), resource_from_row(r)?)))
            .collect::<Result<_, MappingError>>()
            .map_err(corrupt)?;
        let scopes: HashMap<i64, (InstrumentationScope, String)> = client
            .query(SCOPES_BY_ID, &[&scope_ids])
            .await
            .map_err(database_error)?
            .iter()
            .map(|r| Ok((r.get("scope_id"), scope_from_row(r)?)))
            .collect::<Result<_, MappingError>>()
            .map_err(corrupt)?;

        // Rows come ordered by resource, then scope, so each group is one run of rows.
        let mut data = TracesData::default();
        let mut seen = HashSet::new();
        let mut current: Option<(i64, i64)> = None;
        for row in &rows {
            let span_id: Vec<u8> = row.get("span_id");
            let start: i64 = row.get("start_time_unix_nano");
            // An exporter that retried stored the same span twice; hand it back once.
            if !seen.insert((span_id, start)) {
                continue;
            }
            let (resource_id, scope_id): (i64, i64) = (row.get("resource_id"), row.get("scope_id"));
            if current.map(|(r, _)| r) != Some(resource_id) {
                let (resource, schema_url) = resources.get(&resource_id).cloned().unwrap_or_default();
                data.resource_spans.push(ResourceSpans {
                    resource: Some(resource),
                    scope_spans: vec![],
                    schema_url,
                });
            }
            let resource_spans = data.resource_spans.last_mut().expect("pushed above");
            if current != Some((resource_id, scope_id)) {
                let (scope, schema_url) = scopes.get(&scope_id).cloned().unwrap_or_default();
                resource_spans.scope_spans.push(ScopeSpans { scope: Some(scope), spans: vec![], schema_url });
            }
            current = Some((resource_id, scope_id));
            let scope_spans = resource_spans.scope_spans.last_mut().expect("pushed above");
            scope_spans.spans.push(span_from_row(row).map_err(corrupt)?);
        }
        Ok(data)
    }
}

#[tonic::async_trait]
impl QueryService for Query {
    async fn get_trace(&self, request: Request<GetTraceRequest>) -> Result<Response<TracesData>, Status> {
        let trace_id = parse_trace_id(&request.get_ref().trace_id, "trace_id")?;
        Ok(Response::new(Query::get_trace(self, &trace_id).await?))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        let (start, end) = resolve_range(request.get_ref().time_range.as_ref(), "time_range")?;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT service_name FROM resources r
                 WHERE service_name IS NOT NULL AND EXISTS (
                     SELECT 1 FROM spans s WHERE s.resource_id = r.resource_id
                     AND s.start_time_unix_nano >= $1 AND s.start_time_unix_nano < $2)
                 GROUP BY service_name ORDER BY service_name",
                &[&start, &end],
            )
            .await
            .map_err(database_error)?;
        Ok(Response::new(ListServicesResponse { services: rows.iter().map(|r| r.get(0)).collect() }))
    }

    async fn list_operations(
        &self,
        request: Request<ListOperationsRequest>,
    ) -> Result<Response<ListOperationsResponse>, Status> {
        let request = request.get_ref();
        if request.service.is_empty() {
            return Err(Status::invalid_argument("service: required"));
        }
        let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT DISTINCT s.name, s.kind FROM spans s
                 WHERE s.resource_id = ANY (SELECT resource_id FROM resources WHERE service_name = $1)
                 AND s.start_time_unix_nano >= $2 AND s.start_time_unix_nano < $3
                 ORDER BY 1, 2",
                &[&request.service, &start, &end],
            )
            .await
            .map_err(database_error)?;
        let operations = rows.iter().map(|r| Operation { name: r.get(0), kind: r.get(1) }).collect();
        Ok(Response::new(ListOperationsResponse { operations }))
    }
}
