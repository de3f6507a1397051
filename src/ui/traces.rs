//! Services (RED per service), their operations, trace search with its scatter plot, and one
//! trace as a timeline with each span's details.

use std::collections::{BTreeSet, HashMap, HashSet};

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{Html, IntoResponse, Response},
};
use maud::{html, Markup};
use opentelemetry_proto::tonic::{
    common::v1::InstrumentationScope,
    resource::v1::Resource,
    trace::v1::{status::StatusCode as SpanStatus, Span, TracesData},
};
use tonic::{Code, Request};

use super::critical_path;
use super::{
    attribute_filters, attribute_inputs, attribute_table, chart, cut, duration_text, empty, encode_query,
    error_box, href, page, range_inputs, range_label, rate_text, raw, service_map, step_text,
    string_attribute, time_el, time_range, time_range_message, Colors, PageParams, QueryString, Screen, Ui,
};
use crate::query::{
    jaeger::{parse_go_duration, span_kind_name},
    proto::{
        query_service_server::QueryService, GetTraceRequest, ListLlmCallsRequest, ListOperationsRequest,
        ListServiceDependenciesRequest, ListServiceDependenciesResponse, ListServiceStatsRequest,
        ListServicesRequest, LlmCall, LlmCallFilters, ScatterTracesRequest, SearchTracesRequest,
        ServiceStats, StatsStep,
    },
    traces::LinkTarget,
};

/// What to say when there is nothing in the range.
fn nothing_yet(params: &QueryString) -> String {
    format!(
        "No spans in {}: point an OpenTelemetry exporter at this server, port 4317 (OTLP/gRPC) or 4318 (OTLP/HTTP), or pick a longer time range.",
        range_label(params)
    )
}

pub async fn services(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    let body = match services_body(&ui, &params).await {
        Ok(body) => body,
        Err(message) => error_box(&message),
    };
    page(
        "Services",
        Screen::Services,
        &params,
        html! {
            h1 { "Services" }
            form.search method="get" action="/" { (range_inputs(&params)) button type="submit" { "Show" } }
            (body)
        },
    )
}

/// Services drawn in the RED-over-time charts: the busiest.
const CHARTED_SERVICES: usize = 8;
/// Points per RED-over-time line, about: the step is the range over this, in whole minutes.
const RED_STEPS: u64 = 60;

async fn services_body(ui: &Ui, params: &QueryString) -> Result<Markup, String> {
    let range = time_range(params)?;
    let minute = crate::encode::rollups::MINUTE_NANOS;
    let step = (range.1.saturating_sub(range.0) / RED_STEPS).div_ceil(minute).max(1) * minute;
    let request = ListServiceStatsRequest { time_range: Some(time_range_message(range)), step_nanos: step };
    let stats =
        ui.query.list_service_stats(Request::new(request)).await.map_err(|s| s.message().to_owned())?;
    let stats = stats.into_inner().services;
    let request = ListServiceDependenciesRequest { time_range: Some(time_range_message(range)) };
    let ListServiceDependenciesResponse { dependencies, peers, peers_truncated } = ui
        .query
        .list_service_dependencies(Request::new(request))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    if stats.is_empty() {
        return Ok(empty(&nothing_yet(params)));
    }
    let colors = ui.colors().await;
    let carry = params.range_only();
    let every = step_text(step);
    let seconds = step as f64 / 1e9;
    Ok(html! {
        (red_over_time(&stats, range, step, &colors))
        table.results.services {
            thead { tr {
                th { "Service" } th.num { "Spans" }
                th.num title="Requests in the range divided by its length" { "Requests/s, mean" }
                th.num title=(format!("The highest rate of one {every} in the range")) { "Requests/s, busiest " (every) }
                th { "Requests per " (every) }
                th.num { "Error rate" } th { "per " (every) }
                th.num { "p50" } th.num { "p95" } th.num { "p99" } th { "p95 per " (every) } th {}
            } }
            tbody {
                @for s in &stats {
                    @let traces = href("/traces", &[("service", &s.service)], &carry);
                    @let operations = href("/operations", &[("service", &s.service)], &carry);
                    tr data-service=(s.service) {
                        td { span.dot style=(format!("background:{}", colors.of(&s.service))) {} a href=(traces) { (s.service) } }
                        td.num { (s.span_count) }
                        td.num.rate-mean { (rate_text(s.request_rate)) }
                        td.num.rate-peak {
                            (rate_text(s.steps.iter().map(|p| p.request_count).max().unwrap_or(0) as f64 / seconds))
                        }
                        td.rate-line {
                            @let counts: Vec<(u64, f64)> = s.steps.iter().map(|p| (p.start_unix_nano, p.request_count as f64)).collect();
                            (raw(chart::sparkline(&counts, range, &format!("{}: requests per {every}", s.service))))
                        }
                        td.num.error-rate {
                            @if s.request_count == 0 { "–" } @else {
                                (format!("{:.1}%", s.error_count as f64 * 100.0 / s.request_count as f64))
                            }
                        }
                        td.error-line {
                            @let rates: Vec<(u64, f64)> = s.steps.iter().map(|p| (p.start_unix_nano, error_percent(p))).collect();
                            (raw(chart::sparkline(&rates, range, &format!("{}: error rate per {every}{}", s.service, extent(&rates, &|v| format!("{v:.1}%"))))))
                        }
                        @for (class, p) in [("num p50", s.p50_nanos), ("num p95", s.p95_nanos), ("num p99", s.p99_nanos)] {
                            td class=(class) { @if s.request_count == 0 { "–" } @else { (duration_text(p)) } }
                        }
                        td.p95-line {
                            @let p95: Vec<(u64, f64)> = s.steps.iter().map(|p| (p.start_unix_nano, step_p95(p))).collect();
                            (raw(chart::sparkline(&p95, range, &format!("{}: p95 per {every}{}", s.service, extent(&p95, &|v| duration_text(v as u64))))))
                        }
                        td { a href=(traces) { "traces" } " · " a href=(operations) { "operations" } }
                    }
                }
            }
        }
        p.hint {
            "Requests are a service's server and consumer spans; the error rate and percentiles are theirs. "
            "The mean rate spreads the range's requests over all of it, including minutes the service was idle; "
            "the busiest " (every) " is the rate while it was busiest."
        }
        h2 { "Calls between services" }
        @if dependencies.is_empty() && peers.is_empty() {
            p.none { "No span in " (range_label(params)) " has a parent in another service or calls a database, queue or remote host." }
        } @else {
            @let (map, nodes_left_out, edges_left_out) = service_map::draw(&dependencies, &peers, &colors, &carry);
            figure.service-map {
                div.scroll { (raw(map)) }
                figcaption {
                    "Each arrow is the calls from one service's spans to another's, by the minute the called span started: how many, how many failed, and their p95 as the called service served them. "
                    "Grey leaves are the databases, queues and remote hosts that services' client and producer spans name and that send no spans of their own; their arrows count those spans and their p95 is as the caller waited. Click a service for its traces."
                    @if peers_truncated {
                        " Services called more databases, queues and hosts than a page holds: the " (crate::query::traces::MAX_PEERS) " most called are shown."
                    }
                    @if nodes_left_out > 0 || edges_left_out > 0 {
                        " Only the busiest " (service_map::MAX_NODES) " nodes and " (service_map::MAX_EDGES) " calls are drawn: " (nodes_left_out) " nodes and " (edges_left_out) " calls are only in the table below."
                    }
                }
            }
            table.results.dependencies {
                thead { tr { th { "Caller" } th { "Called" } th.num { "Calls" } th.num { "Failed" } th.num { "p50" } th.num { "p95" } th.num { "p99" } } }
                tbody {
                    @for d in &dependencies {
                        tr data-edge=(format!("{} -> {}", d.parent, d.child)) {
                            td { span.dot style=(format!("background:{}", colors.of(&d.parent))) {} (d.parent) }
                            td { span.dot style=(format!("background:{}", colors.of(&d.child))) {} a href=(href("/traces", &[("service", &d.child)], &carry)) { (d.child) } }
                            td.num.calls { (d.call_count) }
                            td.num.failed.errors[d.error_count > 0] { (d.error_count) }
                            @for p in [d.p50_nanos, d.p95_nanos, d.p99_nanos] { td.num { (duration_text(p)) } }
                        }
                    }
                    @for p in &peers {
                        tr.peer data-edge=(format!("{} -> {}", p.parent, p.peer)) data-kind=(p.kind) {
                            td { span.dot style=(format!("background:{}", colors.of(&p.parent))) {} (p.parent) }
                            td { (p.peer) " " span.kind { (service_map::peer_kind_text(&p.kind)) } }
                            td.num.calls { (p.call_count) }
                            td.num.failed.errors[p.error_count > 0] { (p.error_count) }
                            @for n in [p.p50_nanos, p.p95_nanos, p.p99_nanos] { td.num { (duration_text(n)) } }
                        }
                    }
                }
            }
        }
    })
}

/// A step's error rate in percent; none for a step without requests.
fn error_percent(step: &StatsStep) -> f64 {
    if step.request_count == 0 {
        f64::NAN
    } else {
        step.error_count as f64 * 100.0 / step.request_count as f64
    }
}

/// A step's p95 in nanoseconds; none for a step without requests.
fn step_p95(step: &StatsStep) -> f64 {
    if step.request_count == 0 {
        f64::NAN
    } else {
        step.p95_nanos as f64
    }
}

/// ", from X to Y" over a line's values, for its title; nothing when it has none.
fn extent(points: &[(u64, f64)], text: &dyn Fn(f64) -> String) -> String {
    let values = points.iter().map(|p| p.1).filter(|v| v.is_finite());
    let low = values.clone().fold(f64::INFINITY, f64::min);
    let high = values.fold(f64::NEG_INFINITY, f64::max);
    if low > high {
        return String::new();
    }
    format!(", from {} to {}", text(low), text(high))
}

/// Request rate, error rate and p95 per step of the busiest services, as three small charts.
fn red_over_time(stats: &[ServiceStats], range: (u64, u64), step: u64, colors: &Colors) -> Markup {
    let mut busiest: Vec<&ServiceStats> = stats.iter().filter(|s| s.request_count > 0).collect();
    busiest.sort_by(|a, b| b.request_count.cmp(&a.request_count).then_with(|| a.service.cmp(&b.service)));
    busiest.truncate(CHARTED_SERVICES);
    if busiest.is_empty() {
        return html! {};
    }
    let seconds = step as f64 / 1e9;
    let line = |s: &ServiceStats, value: &dyn Fn(&StatsStep) -> f64| chart::Line {
        label: s.service.clone(),
        color: colors.of(&s.service).to_owned(),
        points: s.steps.iter().map(|p| (p.start_unix_nano, value(p))).collect(),
        readings: Vec::new(),
    };
    let rates: Vec<chart::Line> =
        busiest.iter().map(|s| line(s, &|p| p.request_count as f64 / seconds)).collect();
    let errors: Vec<chart::Line> = busiest.iter().map(|s| line(s, &error_percent)).collect();
    let p95: Vec<chart::Line> = busiest.iter().map(|s| line(s, &step_p95)).collect();
    let every = step_text(step);
    html! {
        div.red {
            figure.red-chart data-chart="rate" { (raw(chart::lines(&rates, range, &|v| rate_text(v)))) figcaption { "Requests per second, per " (every) } }
            figure.red-chart data-chart="errors" { (raw(chart::lines(&errors, range, &|v| format!("{v:.1}%")))) figcaption { "Error rate, per " (every) } }
            figure.red-chart data-chart="p95" { (raw(chart::lines(&p95, range, &|v| duration_text(v.max(0.0) as u64)))) figcaption { "p95 duration, per " (every) } }
        }
        p.legend {
            @for s in &busiest { span.tag style=(format!("border-color:{}", colors.of(&s.service))) { (s.service) } " " }
        }
    }
}

pub async fn operations(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    let service = params.text("service").to_owned();
    let body = async {
        let range = time_range(&params)?;
        let (operations, more) = ui
            .query
            .operation_stats(&service, &time_range_message(range))
            .await
            .map_err(|s| s.message().to_owned())?;
        if operations.is_empty() {
            return Ok::<_, String>(empty(&nothing_yet(&params)));
        }
        let seconds = (range.1.saturating_sub(range.0) as f64 / 1e9).max(1e-9);
        let carry = params.range_only();
        Ok(html! {
            table.results.operations {
                thead { tr {
                    th { "Operation" } th { "Kind" } th.num { "Spans" }
                    th.num title="Spans in the range divided by its length" { "Spans/s, mean" }
                    th.num { "Error rate" } th.num { "p50" } th.num { "p95" } th.num { "p99" }
                } }
                tbody {
                    @for op in &operations {
                        tr data-operation=(op.name) data-kind=(op.kind) {
                            td { a href=(href("/traces", &[("service", &service), ("operation", &op.name)], &carry)) { (cut(&op.name, MAX_NAME_CHARS)) } }
                            td { (match span_kind_name(op.kind) { "" => "unspecified", kind => kind }) }
                            td.num.spans { (op.spans) }
                            td.num { (rate_text(op.spans as f64 / seconds)) }
                            td.num.error-rate.errors[op.errors > 0] { (format!("{:.1}%", op.errors as f64 * 100.0 / op.spans.max(1) as f64)) }
                            @for p in [op.p50_nanos, op.p95_nanos, op.p99_nanos] { td.num { (duration_text(p)) } }
                        }
                    }
                }
            }
            p.hint { "From the span rollup, busiest first: every span of each name and kind, whatever its kind (the services page counts only server and consumer spans as requests). Percentiles within 1%." }
            @if more { p.hint { "Only the busiest " (crate::query::traces::MAX_OPERATION_STATS) " operations are listed." } }
        })
    }
    .await
    .unwrap_or_else(|message| error_box(&message));
    let colors = ui.colors().await;
    page(
        &format!("Operations of {service}"),
        Screen::Services,
        &params,
        html! {
            h1 { "Operations of " span style=(format!("color:{}", colors.of(&service))) { (service) } }
            form.search method="get" action="/operations" {
                input type="hidden" name="service" value=(service);
                (range_inputs(&params)) button type="submit" { "Show" }
            }
            (body)
        },
    )
}

/// The orders a search can be sorted in, as SearchTraces names them, and as the page says them.
const ORDERS: [(&str, &str); 5] = [
    ("", "newest first"),
    ("oldest", "oldest first"),
    ("longest", "longest first"),
    ("most_spans", "most spans first"),
    ("most_errors", "most errors first"),
];

/// The search request a page's parameters describe.
fn search_request(params: &QueryString) -> Result<SearchTracesRequest, String> {
    let duration = |name: &str| -> Result<u64, String> {
        params
            .get(name)
            .map_or(Ok(0), |text| parse_go_duration(text, name).map_err(|s| s.message().to_owned()))
    };
    let limit = params
        .get("limit")
        .map_or(Ok(20), |v| v.parse::<u32>().map_err(|_| format!("limit: not a number: {v:?}")))?;
    Ok(SearchTracesRequest {
        time_range: Some(time_range_message(time_range(params)?)),
        service: params.text("service").to_owned(),
        span_name: params.text("operation").to_owned(),
        attributes: attribute_filters(&params.all("attr"))?,
        min_duration_nanos: duration("min_duration")?,
        max_duration_nanos: duration("max_duration")?,
        errors_only: params.get("errors").is_some(),
        page_size: limit,
        page_token: params.text("page_token").to_owned(),
        order: params.text("order").to_owned(),
    })
}

pub async fn search(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    let services = ui
        .query
        .list_services(Request::new(ListServicesRequest {
            time_range: time_range(&params).ok().map(time_range_message),
            page_size: 1000,
            page_token: String::new(),
        }))
        .await
        .map(|r| r.into_inner().services)
        .unwrap_or_default();
    // The picker lists the chosen service's operations, since a name must match exactly.
    let operations = match params.get("service").filter(|s| !s.is_empty()) {
        Some(service) => ui
            .query
            .list_operations(Request::new(ListOperationsRequest {
                service: service.to_owned(),
                time_range: time_range(&params).ok().map(time_range_message),
                page_size: 1000,
                page_token: String::new(),
            }))
            .await
            .map(|r| r.into_inner().operations.into_iter().map(|o| o.name).collect::<BTreeSet<String>>())
            .unwrap_or_default(),
        None => BTreeSet::new(),
    };
    let results = search_results(&ui, &params).await.unwrap_or_else(|message| error_box(&message));
    page(
        "Traces",
        Screen::Traces,
        &params,
        html! {
            h1 { "Traces" }
            form.search method="get" action="/traces" {
                label { "Service " input type="text" name="service" list="services" value=(params.text("service")) placeholder="any"; }
                datalist id="services" { @for s in &services { option value=(s) {} } }
                label { "Operation " input type="text" name="operation" list="operations" value=(params.text("operation")) placeholder=(if operations.is_empty() { "any" } else { "any: pick one of the service's" }); }
                datalist id="operations" { @for name in &operations { option value=(name) {} } }
                label { "Min duration " input type="text" name="min_duration" size="7" value=(params.text("min_duration")) placeholder="250ms"; }
                label { "Max duration " input type="text" name="max_duration" size="7" value=(params.text("max_duration")) placeholder="2s"; }
                label { input type="checkbox" name="errors" value="1" checked[params.get("errors").is_some()]; " errors only" }
                label { "Limit " input type="number" name="limit" min="1" max="1000" value=(params.get("limit").unwrap_or("20")); }
                label { "Sort "
                    select name="order" {
                        @for (value, label) in ORDERS { option value=(value) selected[params.text("order") == value] { (label) } }
                    }
                }
                (range_inputs(&params))
                (attribute_inputs(&params))
                button type="submit" { "Search" }
            }
            (results)
        },
    )
}

/// Points the traces page's scatter plot draws at most (ScatterTraces samples past it).
const SCATTER_POINTS: u32 = 1_000;

async fn search_results(ui: &Ui, params: &QueryString) -> Result<Markup, String> {
    let request = search_request(params)?;
    let range = request.time_range.map_or((0, 0), |r| (r.start_unix_nano, r.end_unix_nano));
    let found = ui
        .query
        .search_traces(Request::new(request.clone()))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let scatter = ui
        .query
        .scatter_traces(Request::new(ScatterTracesRequest {
            filters: Some(request),
            max_points: SCATTER_POINTS,
        }))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let colors = ui.colors().await;
    // A search that stopped early says why and how far back it read, with a link to go on.
    let partial = html! {
        @if !found.message.is_empty() {
            p.partial {
                "This page may hold fewer traces than match: " (found.message) ". "
                @if !found.next_page_token.is_empty() {
                    a href=(format!("/traces?{}", params.with("page_token", Some(&found.next_page_token)))) { "Search further back" }
                }
            }
        }
    };
    if found.traces.is_empty() && !found.message.is_empty() {
        return Ok(partial);
    }
    if found.traces.is_empty() {
        let message = if params.get("page_token").is_some() {
            "No more traces.".to_owned()
        } else if params.get("service").is_some()
            || !params.all("attr").is_empty()
            || params.get("operation").is_some()
        {
            format!("No trace in {} matches.", range_label(params))
        } else {
            nothing_yet(params)
        };
        return Ok(empty(&message));
    }
    let carry = params.range_only();
    let trace_href = |id: &str| href(&format!("/trace/{id}"), &[], &carry);
    let points: Vec<chart::TracePoint> = scatter
        .points
        .iter()
        .map(|p| chart::TracePoint {
            start: p.start_unix_nano,
            duration: p.duration_nanos,
            href: trace_href(&p.trace_id),
            title: format!("{}: {} · {}", p.service, p.name, duration_text(p.duration_nanos)),
            error: p.error,
        })
        .collect();
    Ok(html! {
        (partial)
        figure.scatter data-points=(points.len()) {
            (raw(chart::scatter(&points, range)))
            figcaption {
                "Each point is a request matching the filters (a root, server or consumer span) by when it started and how long it took: "
                @if scatter.sampled {
                    "a sample of " (points.len()) " spread over the range: up to " (scatter.per_stratum) " from each of " (scatter.strata) " equal stretches of it, then more from the busier ones"
                    @if scatter.covered_from_unix_nano > range.0 { " from " (time_el(scatter.covered_from_unix_nano)) " on (the rest took too long to read)" }
                    " (more match: narrow the range or the filters to see them all)"
                } @else if scatter.truncated {
                    "the newest " (points.len()) ", those since " (time_el(scatter.covered_from_unix_nano)) " (more match in the range: narrow it or the filters to see them all)"
                } @else {
                    "all " (points.len())
                }
                ". Click a point to open its trace; drag across the plot to search that stretch of time and durations."
            }
        }
        table.results.traces {
            thead { tr {
                @let sort = |order: &str, label: &str| {
                    let order_link = params.changed(&[("page_token", None), ("order", Some(order).filter(|o| !o.is_empty()))]);
                    let current = params.text("order") == order;
                    html! { a.sort.current[current] href=(format!("/traces?{order_link}")) title=(format!("sort: {label}")) { (label) @if current { " ▾" } } }
                };
                th { "Root" }
                th { (sort("", "Start")) " · " (sort("oldest", "oldest")) }
                th.num { (sort("longest", "Duration")) }
                th.num { (sort("most_spans", "Spans")) }
                th.num { (sort("most_errors", "Errors")) }
                th { "Services" }
            } }
            tbody {
                @for t in &found.traces {
                    tr data-trace=(t.trace_id) {
                        td {
                            a href=(trace_href(&t.trace_id)) {
                                @if t.root_service.is_empty() { em { "root span not stored" } } @else {
                                    span.svc style=(format!("color:{}", colors.of(&t.root_service))) { (t.root_service) } ": " (t.root_span_name)
                                }
                            }
                            br; small.id { (t.trace_id) }
                        }
                        td { (time_el(t.start_unix_nano)) }
                        td.num { (duration_text(t.duration_nanos)) }
                        td.num { (t.span_count) }
                        td.num.errors[t.error_count > 0] { (t.error_count) }
                        td { @for s in &t.services { span.tag style=(format!("border-color:{}", colors.of(s))) { (s) } " " } }
                    }
                }
            }
        }
        nav.pages {
            @if params.get("page_token").is_some() { a href=(format!("/traces?{}", params.with("page_token", None))) { "First page" } }
            @if !found.next_page_token.is_empty() { a.next href=(format!("/traces?{}", params.with("page_token", Some(&found.next_page_token)))) { "Next page" } }
        }
    })
}

/// A span in the timeline: where it stands and what it belongs to.
struct Placed<'a> {
    span: &'a Span,
    resource: Option<&'a Resource>,
    scope: Option<&'a InstrumentationScope>,
    service: &'a str,
    depth: usize,
    /// The index of its parent among the placed spans (always an earlier one).
    parent: Option<usize>,
    has_children: bool,
    /// It names a parent that is not stored.
    orphan: bool,
}

/// Every span of a trace in timeline order: depth first from the roots (spans without a
/// parent, or whose parent is not stored), children by start time.
fn place(data: &TracesData) -> Vec<Placed<'_>> {
    let mut spans = Vec::new();
    for rs in &data.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| string_attribute(&r.attributes, "service.name"))
            .unwrap_or("unknown service");
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                spans.push((span, rs.resource.as_ref(), ss.scope.as_ref(), service));
            }
        }
    }
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    for (i, (span, ..)) in spans.iter().enumerate() {
        index.entry(span.span_id.as_slice()).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, (span, ..)) in spans.iter().enumerate() {
        match index.get(span.parent_span_id.as_slice()) {
            Some(&parent) if !span.parent_span_id.is_empty() && parent != i => children[parent].push(i),
            _ => roots.push(i),
        }
    }
    let start = |i: &usize| (spans[*i].0.start_time_unix_nano, *i);
    roots.sort_by_key(start);
    for list in &mut children {
        list.sort_by_key(start);
    }
    let mut placed = Vec::with_capacity(spans.len());
    let mut seen = HashSet::new();
    let mut stack: Vec<(usize, usize, Option<usize>)> = roots.iter().rev().map(|&i| (i, 0, None)).collect();
    // Spans whose parents form a cycle are reached from no root: each such group is shown from
    // the first of them in the trace's order, at the top level.
    let mut unreached = 0..spans.len();
    while let Some((i, depth, parent)) =
        stack.pop().or_else(|| unreached.find(|i| !seen.contains(i)).map(|i| (i, 0, None)))
    {
        if !seen.insert(i) {
            continue;
        }
        let (span, resource, scope, service) = spans[i];
        placed.push(Placed {
            span,
            resource,
            scope,
            service,
            depth,
            parent,
            has_children: !children[i].is_empty(),
            orphan: !span.parent_span_id.is_empty() && !index.contains_key(span.parent_span_id.as_slice()),
        });
        let at = placed.len() - 1;
        stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1, Some(at))));
    }
    placed
}

fn is_error(span: &Span) -> bool {
    span.status.as_ref().is_some_and(|s| s.code == SpanStatus::Error as i32)
}

pub async fn trace(
    State(ui): State<Ui>,
    Path(trace_id): Path<String>,
    PageParams(params): PageParams<QueryString>,
) -> Response {
    let found = ui.query.get_trace(Request::new(GetTraceRequest { trace_id: trace_id.clone() })).await;
    let data = match found {
        Ok(data) => data.into_inner(),
        Err(status) => {
            let (code, message) = if status.code() == Code::NotFound {
                (
                    StatusCode::NOT_FOUND,
                    format!(
                        "No trace {trace_id} is stored. It may be older than the retention, or not yet sent."
                    ),
                )
            } else {
                (StatusCode::OK, status.message().to_owned())
            };
            let mut response =
                page("Trace", Screen::Traces, &params, html! { h1 { "Trace" } (error_box(&message)) });
            *response.status_mut() = if code == StatusCode::NOT_FOUND {
                code
            } else {
                crate::query::http::http_status(status.code())
            };
            return response;
        }
    };
    let selected_id = params.get("span").map(str::to_owned);
    let linked = match selected_id.as_deref().and_then(|id| find_span(&data, id)) {
        Some(span) => links_stored(&ui, span).await,
        None => Vec::new(),
    };
    let colors = ui.colors().await;
    let llm = llm_calls_of(&ui, &trace_id, &data).await;
    super::blocking(move || {
        timeline_page(&data, &trace_id, selected_id.as_deref(), &linked, &params, &colors, &llm)
    })
    .await
    .unwrap_or_else(|message| page("Trace", Screen::Traces, &QueryString::default(), error_box(&message)))
}

/// Most LLM calls of one trace marked on its timeline.
const MAX_MARKED_CALLS: u32 = 1000;

/// The trace's LLM calls by hex span id, to mark on its timeline; none when they cannot be
/// read (the timeline shows without them).
async fn llm_calls_of(ui: &Ui, trace_id: &str, data: &TracesData) -> HashMap<String, LlmCall> {
    let spans = data.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans);
    let start = spans.clone().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
    let end = spans.map(|s| s.start_time_unix_nano).max().unwrap_or(0);
    let request = ListLlmCallsRequest {
        time_range: Some(time_range_message((start.max(1), end.saturating_add(1)))),
        filters: Some(LlmCallFilters { trace_id: trace_id.to_owned(), ..LlmCallFilters::default() }),
        page_size: MAX_MARKED_CALLS,
        page_token: String::new(),
    };
    match ui.query.list_llm_calls(Request::new(request)).await {
        Ok(found) => found.into_inner().calls.into_iter().map(|c| (c.span_id.clone(), c)).collect(),
        Err(_) => HashMap::new(),
    }
}

/// An LLM call's mark beside its span's name: model, tokens and cost.
fn llm_mark(call: &LlmCall) -> Markup {
    let model = if call.response_model.is_empty() { &call.request_model } else { &call.response_model };
    // A tool or agent without a model is named by what it is.
    let name = if model.is_empty() {
        format!("{} {}{}", call.kind, call.agent_name, call.tool_name).trim().to_owned()
    } else {
        model.clone()
    };
    let tokens = match (call.input_tokens, call.output_tokens) {
        (None, None) => String::new(),
        (input, output) => format!(" · {} → {} tokens", input.unwrap_or(0), output.unwrap_or(0)),
    };
    let cost = match call.cost {
        Some(cost) => format!(" · {}", super::cost_text(cost)),
        None if !tokens.is_empty() => " · unpriced".to_owned(),
        None => String::new(),
    };
    html! { span.badge.llm title=(format!("LLM call ({})", call.kind)) { (cut(&name, MAX_NAME_CHARS)) (tokens) (cost) } }
}

/// The trace as OTLP/JSON, the body of an OTLP/HTTP export request that would send it again,
/// to download.
pub async fn download(State(ui): State<Ui>, Path(trace_id): Path<String>) -> Response {
    let found = ui.query.get_trace(Request::new(GetTraceRequest { trace_id: trace_id.clone() })).await;
    match found {
        Ok(data) => {
            let mut response = crate::query::http::json_off_thread(StatusCode::OK, data.into_inner()).await;
            if is_hex_id(&trace_id, 16) {
                let disposition = format!("attachment; filename=\"trace-{trace_id}.json\"");
                if let Ok(value) = HeaderValue::from_str(&disposition) {
                    response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
                }
            }
            response
        }
        Err(status) => {
            (crate::query::http::http_status(status.code()), status.message().to_owned()).into_response()
        }
    }
}

/// The longest text "find span" looks for, in characters.
const MAX_FIND_CHARS: usize = 200;

/// Whether `find` occurs, ignoring case, in the span's name, service or id, or in one of its
/// attributes' keys or values (scalars as they are shown, structured values as their JSON).
fn span_matches(p: &Placed<'_>, find: &str) -> bool {
    let needle = find.to_lowercase();
    let has = |text: &str| text.to_lowercase().contains(&needle);
    has(&p.span.name)
        || has(p.service)
        || hex::encode(&p.span.span_id) == needle
        || p.span.attributes.iter().any(|kv| has(&kv.key) || has(&super::value_text(kv.value.as_ref()).1))
}

/// The span with hex id `span_id`, if the trace has it.
fn find_span<'a>(data: &'a TracesData, span_id: &str) -> Option<&'a Span> {
    data.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .find(|span| hex::encode(&span.span_id) == span_id)
}

/// Event marks drawn on one span's bar at most: past it, every k-th event is marked.
const MAX_EVENT_MARKS: usize = 100;

/// Bars the minimap draws at most; a larger trace is drawn one span in k.
const MAX_MINIMAP_BARS: usize = 2_000;
/// Rows of the minimap at most: spans share a row, in timeline order.
const MINIMAP_ROWS: usize = 48;

/// The whole trace in a strip: every span (or one in k, past [`MAX_MINIMAP_BARS`]) as a thin
/// bar, in timeline order top to bottom, `x` placing times as the timeline does (0 to 1000).
fn minimap(placed: &[Placed<'_>], x: &dyn Fn(u64) -> f64) -> Markup {
    let rows = placed.len().clamp(1, MINIMAP_ROWS);
    let every = placed.len().div_ceil(MAX_MINIMAP_BARS).max(1);
    html! {
        svg viewBox=(format!("0 0 1000 {rows}")) preserveAspectRatio="none" data-every=(every) {
            @if every > 1 { title { "one span in " (every) " drawn" } }
            @for (i, p) in placed.iter().enumerate().step_by(every) {
                @let start = x(p.span.start_time_unix_nano);
                rect.failed[is_error(p.span)] x=(format!("{start:.1}")) y=(i * rows / placed.len().max(1))
                    width=(format!("{:.1}", (x(p.span.end_time_unix_nano) - start).max(1.0))) height="1" {}
            }
        }
    }
}

/// The trace page: the timeline of every span, and the selected span's details.
fn timeline_page(
    data: &TracesData,
    trace_id: &str,
    selected_id: Option<&str>,
    linked: &[LinkTarget],
    params: &QueryString,
    colors: &Colors,
    llm: &HashMap<String, LlmCall>,
) -> Response {
    let placed = place(data);
    let t0 = placed.iter().map(|p| p.span.start_time_unix_nano).min().unwrap_or(0);
    let t1 = placed.iter().map(|p| p.span.end_time_unix_nano).max().unwrap_or(t0).max(t0.saturating_add(1));
    let total = (t1 - t0).max(1) as f64;
    let services: HashSet<&str> = placed.iter().map(|p| p.service).collect();
    let errors = placed.iter().filter(|p| is_error(p.span)).count();
    let root = placed.iter().find(|p| p.span.parent_span_id.is_empty()).or(placed.first());
    let selected = selected_id.and_then(|id| placed.iter().position(|p| hex::encode(&p.span.span_id) == id));
    let details = match selected {
        Some(i) => details(trace_id, &placed[i], linked, colors),
        None => html! { p.hint { "Click a span to see its attributes, events and links." } },
    };
    // Logs around the trace: ten minutes either side.
    let margin = 600_000_000_000;
    let logs_link = format!(
        "/logs?{}",
        encode_query(&[
            ("trace_id", trace_id),
            ("start", &(t0.saturating_sub(margin) / 1_000_000).to_string()),
            ("end", &(t1.saturating_add(margin) / 1_000_000).to_string()),
        ])
    );
    let x = |t: u64| (t.saturating_sub(t0)) as f64 / total * 1000.0;
    let nodes: Vec<critical_path::Node> = placed
        .iter()
        .map(|p| critical_path::Node {
            start: p.span.start_time_unix_nano,
            end: p.span.end_time_unix_nano,
            parent: p.parent,
        })
        .collect();
    let self_times = critical_path::self_times(&nodes);
    let find: String = params.text("find").trim().chars().take(MAX_FIND_CHARS).collect();
    let matches: Vec<bool> = placed.iter().map(|p| !find.is_empty() && span_matches(p, &find)).collect();
    let matched = matches.iter().filter(|m| **m).count();
    let mut critical: Vec<Vec<(u64, u64)>> = vec![Vec::new(); placed.len()];
    for (i, start, end) in critical_path::critical_path(&nodes) {
        critical[i].push((start, end));
    }
    let body = html! {
        header.trace-header {
            h1 {
                @if let Some(root) = root {
                    span.svc style=(format!("color:{}", colors.of(root.service))) { (root.service) } ": " (root.span.name)
                }
            }
            dl.facts {
                dt { "Trace" } dd.id { (trace_id) }
                dt { "Start" } dd { (time_el(t0)) }
                dt { "Duration" } dd { (duration_text(t1 - t0)) }
                dt { "Spans" } dd #span-count { (placed.len()) }
                dt { "Services" } dd { (services.len()) }
                dt { "Errors" } dd.errors[errors > 0] { (errors) }
            }
            a.button #trace-logs href=(logs_link) { "Logs of this trace" }
            " "
            @if !llm.is_empty() {
                @let models = llm.values().filter(|c| matches!(c.kind.as_str(), "llm" | "embedding"));
                @let cost: f64 = models.clone().filter_map(|c| c.cost).sum();
                @let tokens: u64 = models.clone().map(|c| c.input_tokens.unwrap_or(0) + c.output_tokens.unwrap_or(0)).sum();
                a.button #trace-llm href=(format!("/llm/conversation?trace_id={trace_id}")) title=(format!("{} model call(s), {tokens} tokens", models.count())) {
                    "LLM calls as a chat · " (super::cost_text(cost))
                }
                " "
            }
            a.button #trace-download href=(format!("/trace/{trace_id}/otlp.json")) download=(format!("trace-{trace_id}.json")) { "Download as OTLP JSON" }
            p.hint { span.critical-key {} " The dark line on the bars is the critical path: the work the trace's end waited for. Self time is a span's time outside its children." }
            form.find method="get" {
                label { "Find span " input type="search" name="find" value=(find) placeholder="name, service, attribute or id"; }
                @if let Some(span) = params.get("span") { input type="hidden" name="span" value=(span); }
                button type="submit" { "Find" }
                @if !find.is_empty() {
                    span #find-count data-matches=(matched) { (matched) " of " (placed.len()) " spans match" }
                }
            }
        }
        div.trace-view data-trace=(trace_id) data-start=(t0) data-duration=(t1 - t0) {
            div.timeline {
                div.minimap-row {
                    div.label { "Overview " small { "drag to zoom, click to reset" } }
                    div.bar { div.track.minimap title="Drag across a stretch of the trace to zoom the timeline into it; click to see all of it again" {
                        (minimap(&placed, &x))
                        div.brush hidden {}
                    } }
                }
                div.ruler {
                    div.label { "Span" span.divider role="separator" aria-orientation="vertical" title="drag to widen the names" {} }
                    div.bar { div.track {
                        @for i in 0..=4u64 {
                            span style=(format!("left:{}%", i * 25)) { (duration_text((t1 - t0) / 4 * i)) }
                        }
                    } }
                }
                @for (i, p) in placed.iter().enumerate() {
                    @let id = hex::encode(&p.span.span_id);
                    @let duration = p.span.end_time_unix_nano.saturating_sub(p.span.start_time_unix_nano);
                    @let start = x(p.span.start_time_unix_nano);
                    @let width = (x(p.span.end_time_unix_nano) - start).max(1.5);
                    @let color = colors.of(p.service);
                    div.span-row.failed[is_error(p.span)].selected[selected == Some(i)].critical[!critical[i].is_empty()].match[matches[i]]
                        data-span=(id) data-depth=(p.depth) data-self=(self_times[i]) {
                        div.label style=(format!("padding-left:{}px", 4 + p.depth.min(200) * 14)) {
                            @if p.has_children { button.toggle type="button" aria-label="collapse" aria-expanded="true" { "▾" } } @else { span.leaf {} }
                            span.svc style=(format!("color:{color}")) { (cut(p.service, MAX_NAME_CHARS)) }
                            " "
                            a.span-link href=(format!("?{}", params.with("span", Some(&id)))) title=(format!("{}: {}", cut(p.service, MAX_NAME_CHARS), cut(&p.span.name, MAX_NAME_CHARS))) { (cut(&p.span.name, MAX_NAME_CHARS)) }
                            @if p.orphan { " " span.badge title="this span's parent is not stored" { "parent missing" } }
                        }
                        div.bar { div.track {
                            svg viewBox="0 0 1000 10" preserveAspectRatio="none" {
                                @let every = p.span.events.len().div_ceil(MAX_EVENT_MARKS).max(1);
                                rect x=(format!("{start:.2}")) y="1" width=(format!("{width:.2}")) height="8" fill=(color) {
                                    @if every > 1 { title { (p.span.events.len()) " events, 1 in " (every) " marked" } }
                                }
                                @for (start, end) in &critical[i] {
                                    rect.critical x=(format!("{:.2}", x(*start))) y="3.5" width=(format!("{:.2}", (x(*end) - x(*start)).max(0.6))) height="3" {}
                                }
                                // Spread over the whole bar: every k-th event, never only the first.
                                @for e in p.span.events.iter().step_by(every) {
                                    rect.event x=(format!("{:.2}", x(e.time_unix_nano).min(999.0))) y="0" width="1.2" height="10" {
                                        title { (cut(&e.name, MAX_NAME_CHARS)) }
                                    }
                                }
                            }
                            span.dur style=(format!("left:{:.2}%", (start + width) / 10.0)) data-at=(format!("{:.5}", (start + width) / 1000.0)) {
                                (duration_text(duration))
                                @if self_times[i] < duration { " · self " (duration_text(self_times[i])) }
                                @if let Some(call) = llm.get(&id) { " " (llm_mark(call)) }
                            }
                        } }
                    }
                }
            }
            aside #details { (details) }
        }
    };
    page(&format!("Trace {trace_id}"), Screen::Traces, params, body)
}

/// A span's details, as its own answer: the timeline's script puts it in place. Every answer
/// here, errors included, is such a fragment and says so (`x-otelephant-fragment`), which the
/// script checks before it shows one.
pub async fn span_details(
    State(ui): State<Ui>,
    Path((trace_id, span_id)): Path<(String, String)>,
) -> Response {
    let (status, html) = span_fragment(&ui, trace_id, span_id).await;
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert("x-otelephant-fragment", HeaderValue::from_static("span-details"));
    response
}

/// Whether `id` is `bytes` bytes of lowercase hex, as the timeline writes ids.
fn is_hex_id(id: &str, bytes: usize) -> bool {
    id.len() == bytes * 2 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn span_fragment(ui: &Ui, trace_id: String, span_id: String) -> (StatusCode, String) {
    if !is_hex_id(&trace_id, 16) || !is_hex_id(&span_id, 8) {
        let message = "a trace id is 32 and a span id 16 lowercase hexadecimal characters";
        return (StatusCode::BAD_REQUEST, error_box(message).into_string());
    }
    let (Ok(trace), Ok(span)) = (hex::decode(&trace_id), hex::decode(&span_id)) else {
        return (StatusCode::BAD_REQUEST, error_box("not hexadecimal ids").into_string());
    };
    // This span alone, not its whole trace: a trace may have thousands.
    let (data, parent_stored) = match ui.query.span(&trace, &span).await {
        Ok(found) => found,
        Err(status) => {
            return (
                crate::query::http::http_status(status.code()),
                error_box(status.message()).into_string(),
            )
        }
    };
    let Some(span) = find_span(&data, &span_id) else {
        return (
            StatusCode::NOT_FOUND,
            error_box(&format!("trace {trace_id} has no span {span_id}")).into_string(),
        );
    };
    let linked = links_stored(ui, span).await;
    let colors = ui.colors().await;
    let rendered = super::blocking(move || {
        let rs = data.resource_spans.first()?;
        let ss = rs.scope_spans.first()?;
        let span = ss.spans.first()?;
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| string_attribute(&r.attributes, "service.name"))
            .unwrap_or("unknown service");
        let placed = Placed {
            span,
            resource: rs.resource.as_ref(),
            scope: ss.scope.as_ref(),
            service,
            depth: 0,
            parent: None,
            has_children: false,
            orphan: !parent_stored,
        };
        Some(details(&trace_id, &placed, &linked, &colors).into_string())
    })
    .await;
    match rendered {
        Ok(Some(html)) => (StatusCode::OK, html),
        Ok(None) => (StatusCode::NOT_FOUND, error_box("no such span").into_string()),
        Err(message) => (StatusCode::INTERNAL_SERVER_ERROR, error_box(&message).into_string()),
    }
}

/// Links shown in a span's details at most; each is looked up to say whether its trace is stored.
const MAX_LINKS: usize = 20;
/// Events shown in a span's details at most.
const MAX_EVENTS: usize = 100;
/// Longest span, service or event name shown whole, in characters.
const MAX_NAME_CHARS: usize = 500;

/// What each of the span's first [`MAX_LINKS`] links points at: an index probe or two each,
/// never the linked trace itself.
async fn links_stored(ui: &Ui, span: &Span) -> Vec<LinkTarget> {
    let mut stored = Vec::new();
    for link in span.links.iter().take(MAX_LINKS) {
        stored
            .push(ui.query.link_target(&link.trace_id, &link.span_id).await.unwrap_or(LinkTarget::NotStored));
    }
    stored
}

fn details(trace_id: &str, p: &Placed<'_>, linked: &[LinkTarget], colors: &Colors) -> Markup {
    let span = p.span;
    let status = span.status.clone().unwrap_or_default();
    let status_name = match SpanStatus::try_from(status.code) {
        Ok(SpanStatus::Ok) => "OK",
        Ok(SpanStatus::Error) => "ERROR",
        _ => "UNSET",
    };
    let logs = format!(
        "/logs?{}",
        encode_query(&[
            ("trace_id", trace_id),
            ("start", &(span.start_time_unix_nano.saturating_sub(600_000_000_000) / 1_000_000).to_string()),
            ("end", &(span.end_time_unix_nano.saturating_add(600_000_000_000) / 1_000_000).to_string()),
        ])
    );
    html! {
        section.span-details data-span=(hex::encode(&span.span_id)) {
            h2 { (cut(&span.name, MAX_NAME_CHARS)) }
            dl.facts {
                dt { "Service" } dd { (cut(p.service, MAX_NAME_CHARS)) }
                dt { "Span id" } dd.id { (hex::encode(&span.span_id)) }
                dt { "Parent" } dd.id { @if span.parent_span_id.is_empty() { "none (root)" } @else { (hex::encode(&span.parent_span_id)) @if p.orphan { " (not stored)" } } }
                dt { "Kind" } dd { (match span_kind_name(span.kind) { "" => "unspecified", kind => kind }) }
                dt { "Status" } dd.status { (status_name) @if !status.message.is_empty() { ": " (cut(&status.message, super::MAX_VALUE_CHARS)) } }
                dt { "Start" } dd { (time_el(span.start_time_unix_nano)) }
                dt { "Duration" } dd { (duration_text(span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano))) }
                dt { "Flags" } dd { (format!("0x{:08x}", span.flags)) }
                @if !span.trace_state.is_empty() { dt { "Trace state" } dd { (cut(&span.trace_state, MAX_NAME_CHARS)) } }
                dt { "Dropped" } dd { (span.dropped_attributes_count) " attributes, " (span.dropped_events_count) " events, " (span.dropped_links_count) " links" }
            }
            a.button href=(logs) { "Logs of this trace" }
            h3 { "Attributes" }
            (attribute_table(&span.attributes))
            h3 { "Events (" (span.events.len()) ")" }
            @if span.events.is_empty() { p.none { "none" } }
            @for e in span.events.iter().take(MAX_EVENTS) {
                div.event {
                    strong { @if e.name.is_empty() { em { "unnamed" } } @else { (cut(&e.name, MAX_NAME_CHARS)) } }
                    " at " (time_el(e.time_unix_nano)) " (+" (duration_text(e.time_unix_nano.saturating_sub(span.start_time_unix_nano))) ")"
                    @if e.dropped_attributes_count > 0 { " · " (e.dropped_attributes_count) " attributes dropped" }
                    (attribute_table(&e.attributes))
                }
            }
            @if span.events.len() > MAX_EVENTS { p.more { (span.events.len() - MAX_EVENTS) " more events, not shown here: read them through the query API (GetTrace)" } }
            h3 { "Links (" (span.links.len()) ")" }
            @if span.links.is_empty() { p.none { "none" } }
            @for (link, target) in span.links.iter().zip(linked) {
                @let id = hex::encode(&link.trace_id);
                @let href = format!("/trace/{id}?{}", encode_query(&[("span", &hex::encode(&link.span_id))]));
                div.link {
                    @match target {
                        LinkTarget::Span { service, name } => {
                            a href=(href) {
                                span.svc style=(format!("color:{}", colors.of(service.as_deref().unwrap_or("unknown service")))) { (cut(service.as_deref().unwrap_or("unknown service"), MAX_NAME_CHARS)) }
                                ": " (cut(name, MAX_NAME_CHARS))
                            }
                            br; small.id { "trace " (id) ", span " (hex::encode(&link.span_id)) }
                        }
                        LinkTarget::Trace => {
                            a href=(href) { "trace " (id) } ", span " (hex::encode(&link.span_id)) " (this span is not stored)"
                        }
                        LinkTarget::NotStored => {
                            span title="this trace is not stored" { "trace " (id) ", span " (hex::encode(&link.span_id)) " (not stored)" }
                        }
                    }
                    @if !link.trace_state.is_empty() { " · trace state " (cut(&link.trace_state, MAX_NAME_CHARS)) }
                    " · flags " (format!("0x{:08x}", link.flags))
                    (attribute_table(&link.attributes))
                }
            }
            @if span.links.len() > linked.len() { p.more { (span.links.len() - linked.len()) " more links, not shown here: read them through the query API (GetTrace)" } }
            h3 { "Resource" }
            (attribute_table(p.resource.map_or(&[][..], |r| &r.attributes)))
            @if let Some(dropped) = p.resource.map(|r| r.dropped_attributes_count).filter(|d| *d > 0) { p.hint { (dropped) " attributes dropped" } }
            h3 { "Scope" }
            @match p.scope {
                Some(scope) => {
                    p { (cut(&scope.name, MAX_NAME_CHARS)) @if !scope.version.is_empty() { " " (cut(&scope.version, MAX_NAME_CHARS)) } }
                    (attribute_table(&scope.attributes))
                }
                None => p.none { "none" },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    use super::*;

    fn span(id: u8, parent: Option<u8>, start: u64) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("s{id}"),
            start_time_unix_nano: start,
            ..Default::default()
        }
    }

    fn placed(spans: Vec<Span>) -> Vec<(String, usize, bool)> {
        let data = TracesData {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        place(&data).iter().map(|p| (p.span.name.clone(), p.depth, p.orphan)).collect()
    }

    #[test]
    fn every_span_is_placed_nested_by_parent_and_by_start() {
        let got =
            placed(vec![span(3, Some(1), 30), span(1, None, 10), span(2, Some(1), 20), span(4, Some(2), 25)]);
        let expected = [("s1", 0, false), ("s2", 1, false), ("s4", 2, false), ("s3", 1, false)];
        assert_eq!(got, expected.map(|(n, d, o)| (n.to_owned(), d, o)));
    }

    #[test]
    fn orphans_and_cycles_are_shown_not_hidden() {
        // 5's parent is not stored; 6 and 7 are each other's parent.
        let got =
            placed(vec![span(1, None, 10), span(5, Some(9), 5), span(6, Some(7), 1), span(7, Some(6), 2)]);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.contains(&("s5".to_owned(), 0, true)));
        assert!(got.iter().any(|(n, d, _)| n == "s6" && *d == 0));
        assert!(got.iter().any(|(n, d, _)| n == "s7" && *d == 1));
    }
}
