//! Spans sent by a real OTLP/gRPC client come back from SQL with every field intact.

use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use tokio_postgres::Row;

use crate::common::{
    fixtures::traces::{full_span, request},
    *,
};

fn hex_bytes(v: &serde_json::Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn u32_of(v: Option<&serde_json::Value>) -> u32 {
    v.and_then(|v| v.as_u64()).map_or(0, |n| u32::try_from(n).expect("fits u32"))
}

/// Rebuilds a span from its row.
fn span_from_row(row: &Row) -> Span {
    let events: Option<serde_json::Value> = row.get("events");
    let links: Option<serde_json::Value> = row.get("links");
    let status_code: Option<i32> = row.get("status_code");
    let nested_attributes = |v: &serde_json::Value| v.get("attributes").map(attributes).unwrap_or_default();
    Span {
        trace_id: row.get("trace_id"),
        span_id: row.get("span_id"),
        trace_state: row.get("trace_state"),
        parent_span_id: row.get::<_, Option<Vec<u8>>>("parent_span_id").unwrap_or_default(),
        flags: u32::try_from(row.get::<_, i64>("flags")).expect("flags fit u32"),
        name: row.get("name"),
        kind: row.get("kind"),
        start_time_unix_nano: row.get::<_, i64>("start_time_unix_nano") as u64,
        end_time_unix_nano: row.get::<_, i64>("end_time_unix_nano") as u64,
        attributes: attributes(&row.get("attributes")),
        dropped_attributes_count: u32::try_from(row.get::<_, i64>("dropped_attributes_count")).expect("u32"),
        events: events
            .iter()
            .flat_map(|e| e.as_array().expect("events array").iter())
            .map(|e| span::Event {
                time_unix_nano: e["time_unix_nano"].as_u64().expect("event time"),
                name: e["name"].as_str().expect("event name").into(),
                attributes: nested_attributes(e),
                dropped_attributes_count: u32_of(e.get("dropped_attributes_count")),
            })
            .collect(),
        dropped_events_count: u32::try_from(row.get::<_, i64>("dropped_events_count")).expect("u32"),
        links: links
            .iter()
            .flat_map(|l| l.as_array().expect("links array").iter())
            .map(|l| span::Link {
                trace_id: hex_bytes(&l["trace_id"]),
                span_id: hex_bytes(&l["span_id"]),
                trace_state: l.get("trace_state").and_then(|t| t.as_str()).unwrap_or_default().into(),
                attributes: nested_attributes(l),
                dropped_attributes_count: u32_of(l.get("dropped_attributes_count")),
                flags: u32_of(l.get("flags")),
            })
            .collect(),
        dropped_links_count: u32::try_from(row.get::<_, i64>("dropped_links_count")).expect("u32"),
        status: status_code.map(|code| Status { code, message: row.get("status_message") }),
    }
}

/// Spans compared field by field, attribute maps in their normalized form.
fn assert_same_span(sent: &Span, stored: &Span) {
    let plain = |s: &Span| Span {
        attributes: vec![],
        events: s.events.iter().map(|e| span::Event { attributes: vec![], ..e.clone() }).collect(),
        links: s.links.iter().map(|l| span::Link { attributes: vec![], ..l.clone() }).collect(),
        ..s.clone()
    };
    assert_eq!(plain(sent), plain(stored));
    assert_eq!(normalize(&sent.attributes), normalize(&stored.attributes));
    for (a, b) in sent.events.iter().zip(&stored.events) {
        assert_eq!(normalize(&a.attributes), normalize(&b.attributes));
    }
    for (a, b) in sent.links.iter().zip(&stored.links) {
        assert_eq!(normalize(&a.attributes), normalize(&b.attributes));
    }
}

#[tokio::test]
async fn every_span_field_round_trips() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let sent = request(now);
    let response = t.traces().await.export(sent.clone()).await.expect("export succeeds").into_inner();
    assert_eq!(response.partial_success, None);

    let rows = t
        .sql
        .query(
            "SELECT s.*, r.attributes AS r_attributes, r.dropped_attributes_count AS r_dropped,
                    r.entity_refs, r.schema_url AS r_schema_url, r.service_name,
                    sc.name AS sc_name, sc.version AS sc_version, sc.attributes AS sc_attributes,
                    sc.dropped_attributes_count AS sc_dropped, sc.schema_url AS sc_schema_url
             FROM spans s JOIN resources r USING (resource_id) JOIN scopes sc USING (scope_id)
             ORDER BY s.span_id",
            &[],
        )
        .await
        .expect("query spans");
    assert_eq!(rows.len(), 4);
    let sent_spans: Vec<(&Span, &ResourceSpans, &ScopeSpans)> = sent
        .resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().flat_map(move |ss| ss.spans.iter().map(move |sp| (sp, rs, ss))))
        .collect();
    for (row, (span, rs, ss)) in rows.iter().zip(sent_spans) {
        assert_same_span(span, &span_from_row(row));
        let resource = rs.resource.as_ref().expect("sent a resource");
        assert_eq!(normalize(&attributes(&row.get("r_attributes"))), normalize(&resource.attributes));
        assert_eq!(row.get::<_, i64>("r_dropped"), 2);
        assert_eq!(row.get::<_, String>("r_schema_url"), rs.schema_url);
        assert_eq!(row.get::<_, Option<String>>("service_name").as_deref(), Some("checkout"));
        assert_eq!(
            row.get::<_, serde_json::Value>("entity_refs"),
            serde_json::json!([{"type": "service", "schema_url": "https://opentelemetry.io/schemas/1.30.0",
                                "id_keys": ["service.name"], "description_keys": ["host.name"]}])
        );
        let scope = ss.scope.clone().unwrap_or_default();
        assert_eq!(row.get::<_, String>("sc_name"), scope.name);
        assert_eq!(row.get::<_, String>("sc_version"), scope.version);
        assert_eq!(normalize(&attributes(&row.get("sc_attributes"))), normalize(&scope.attributes));
        assert_eq!(row.get::<_, i64>("sc_dropped"), i64::from(scope.dropped_attributes_count));
        assert_eq!(row.get::<_, String>("sc_schema_url"), ss.schema_url);
    }

    // The resource is stored once; the two scopes are distinct (one is empty).
    assert_eq!(t.count("resources").await, 1);
    assert_eq!(t.count("scopes").await, 2);

    // Sending the same again adds spans (exporters may retry) but no new resource or scope.
    t.traces().await.export(sent).await.expect("second export succeeds");
    assert_eq!(t.count("spans").await, 8);
    assert_eq!(t.count("resources").await, 1);
    assert_eq!(t.count("scopes").await, 2);
    t.stop().await;
}

#[tokio::test]
async fn attributes_are_queryable_naturally() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    t.traces().await.export(request(now)).await.expect("export");
    let row = t
        .sql
        .query_one(
            "SELECT attributes->>'string', (attributes->>'int.max')::bigint, attributes->>'double.whole',
                    attributes->'map'->'nested'->>'deep', jsonb_typeof(attributes->'array'),
                    attributes->'bytes'->>'$bytes', attributes->'empty.value' = 'null'::jsonb
             FROM spans LIMIT 1",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "héllo ✓ 日本語 🐘 \"quoted\" back\\slash\nnewline\ttab\u{1}");
    assert_eq!(row.get::<_, i64>(1), i64::MAX);
    assert_eq!(row.get::<_, String>(2), "42.0");
    assert_eq!(row.get::<_, String>(3), "7");
    assert_eq!(row.get::<_, String>(4), "array");
    assert_eq!(row.get::<_, String>(5), "AAEC/v8=");
    assert!(row.get::<_, bool>(6));

    let view = t
        .sql
        .query_one(
            "SELECT service_name, trace_id, kind, status, duration_ms::float8, start_time
             FROM spans_view WHERE parent_span_id IS NULL",
            &[],
        )
        .await
        .expect("view");
    assert_eq!(view.get::<_, String>(0), "checkout");
    assert_eq!(view.get::<_, String>(1), hex::encode(full_span(0, 0).trace_id));
    assert_eq!(view.get::<_, String>(2), "unspecified");
    assert_eq!(view.get::<_, String>(3), "unset");
    assert!((view.get::<_, f64>(4) - 864.197532).abs() < 1e-6);
    let start =
        view.get::<_, std::time::SystemTime>(5).duration_since(std::time::UNIX_EPOCH).expect("after epoch");
    assert_eq!(start.as_micros() as u64, (now + 123_456_789) / 1000);
    t.stop().await;
}
