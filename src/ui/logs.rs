//! Log search: the matching records per step as a histogram (CountLogs), then the records
//! newest first, paged, severity shown by colour and name, bodies of every type readable, each
//! record linked to its trace and span.

use axum::{extract::State, response::Response};
use maud::{html, Markup};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use tonic::Request;

use super::{
    attribute_filters, attribute_inputs, attribute_table, chart, cut, empty, error_box, filter_text, href,
    page, range_inputs, range_label, raw, string_attribute, time_el, time_range, time_range_message,
    value_text, Colors, PageParams, QueryString, Screen, Ui, MAX_VALUE_CHARS,
};
use crate::{
    query::proto::{
        query_service_server::QueryService, CountLogsRequest, CountLogsResponse, LogFacetsRequest,
        LogFacetsResponse, SearchLogsRequest, SearchLogsResponse,
    },
    time::utc_text,
};

/// Severity ranges by their first number (OTLP's SeverityNumber).
const SEVERITIES: [(i32, &str); 6] =
    [(1, "TRACE"), (5, "DEBUG"), (9, "INFO"), (13, "WARN"), (17, "ERROR"), (21, "FATAL")];

/// The name of a severity number's range, and its class for colour.
fn severity(number: i32, text: &str) -> (String, &'static str) {
    let range = SEVERITIES.iter().rev().find(|(first, _)| number >= *first);
    let class = match range.map(|(first, _)| *first) {
        Some(21) | Some(17) => "sev-error",
        Some(13) => "sev-warn",
        Some(9) => "sev-info",
        Some(_) => "sev-debug",
        None => "sev-unset",
    };
    let name = match (text.is_empty(), range) {
        (false, _) => text.to_owned(),
        (true, Some((first, name))) if number == *first => (*name).to_owned(),
        (true, Some((first, name))) => format!("{name}{}", number - first + 1),
        (true, None) => "UNSET".to_owned(),
    };
    (name, class)
}

pub async fn search(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    let results = results(&ui, &params).await.unwrap_or_else(|message| error_box(&message));
    let min = params.get("min_severity").and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    page(
        "Logs",
        Screen::Logs,
        &params,
        html! {
            h1 { "Logs" }
            form.search method="get" action="/logs" {
                label { "Service " input type="text" name="service" value=(params.text("service")) placeholder="any"; }
                label { "Minimum severity "
                    select name="min_severity" {
                        option value="" selected[min == 0] { "any" }
                        @for (number, name) in SEVERITIES { option value=(number) selected[min == number] { (name) } }
                    }
                }
                label { "Body contains " input type="text" name="body" value=(params.text("body")); }
                label { input type="checkbox" name="case" value="1" checked[params.get("case").is_some()]; " match case" }
                label { "Trace id " input type="text" name="trace_id" size="34" value=(params.text("trace_id")); }
                (range_inputs(&params))
                (attribute_inputs(&params))
                button type="submit" { "Search" }
            }
            (results)
        },
    )
}

async fn results(ui: &Ui, params: &QueryString) -> Result<Markup, String> {
    let request = SearchLogsRequest {
        time_range: Some(time_range_message(time_range(params)?)),
        service: params.text("service").to_owned(),
        min_severity: params
            .get("min_severity")
            .map_or(Ok(0), |v| v.parse().map_err(|_| format!("min_severity: not a number: {v:?}")))?,
        body_contains: params.text("body").to_owned(),
        body_ignore_case: params.get("case").is_none(),
        attributes: attribute_filters(&params.all("attr"))?,
        trace_id: params.text("trace_id").trim().to_owned(),
        page_size: 50,
        page_token: params.text("page_token").to_owned(),
    };
    let counted = ui
        .query
        .count_logs(Request::new(CountLogsRequest { filters: Some(request.clone()), step_nanos: 0 }))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let found = ui
        .query
        .search_logs(Request::new(request.clone()))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let none = found.logs.as_ref().is_none_or(|l| {
        l.resource_logs.iter().all(|r| r.scope_logs.iter().all(|s| s.log_records.is_empty()))
    });
    if none && params.get("page_token").is_none() {
        let stored = ui.query.logs_stored().await.map_err(|s| s.message().to_owned())?;
        return Ok(nothing_found(params, stored));
    }
    let facets = ui
        .query
        .log_facets(Request::new(LogFacetsRequest { filters: Some(request), sample: 0 }))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let params = params.clone();
    let colors = ui.colors().await;
    super::blocking(move || {
        html! {
            (histogram(&counted, &params))
            div.logs-body {
                (facet_panel(&facets, &params, &colors))
                div.logs-list { (render(&found, &params, &colors)) }
            }
        }
    })
    .await
}

/// The filters a search names besides its time range.
const FILTERS: [&str; 5] = ["service", "min_severity", "body", "attr", "trace_id"];

/// What to say when no record is found: that none is stored yet, or none in the range at all
/// (with when the newest is from), or none that passes the filters (with a link without them).
fn nothing_found(params: &QueryString, (stored, newest): (bool, Option<i64>)) -> Markup {
    let filtered = FILTERS.iter().any(|name| params.get(name).is_some());
    let range = range_label(params);
    html! {
        div.empty data-empty=(if !stored { "nothing-stored" } else if filtered { "nothing-matches" } else { "nothing-in-range" }) {
            @if !stored {
                p.empty { "No log records are stored yet. Logs arrive through an OpenTelemetry exporter (OTLP on port 4317 or 4318) or a Collector's filelog receiver." }
            } @else if filtered {
                p.empty { "No log records in " (range) " match these filters. " a href=(format!("/logs?{}", params.range_only())) { "Show every record in " (range) } "." }
            } @else {
                p.empty {
                    "No log records in " (range) "."
                    @if let Some(minute) = newest { " The newest stored is from the minute of " (time_el(minute.max(0) as u64)) "; pick a longer time range." }
                }
            }
        }
    }
}

/// The commonest services and attribute values of the newest matching records, each a link
/// that adds it to the search's filters.
fn facet_panel(facets: &LogFacetsResponse, params: &QueryString, colors: &Colors) -> Markup {
    html! {
        aside.facets {
            p.hint {
                @if facets.complete { "In all " (facets.sampled) " matching records" }
                @else { "In the newest " (facets.sampled) " matching records" }
            }
            @if !facets.services.is_empty() && params.get("service").is_none() {
                section.facet data-key="service.name" {
                    h3 { "Service" }
                    @for v in &facets.services {
                        @let (_, name) = value_text(v.value.as_ref());
                        a.facet href=(format!("/logs?{}", params.changed(&[("service", Some(&name)), ("page_token", None)]))) data-value=(name) {
                            span.dot style=(format!("background:{}", colors.of(&name))) {} span.value { (cut(&name, 80)) } span.count { (v.records) }
                        }
                    }
                }
            }
            @for facet in &facets.attributes {
                section.facet data-key=(facet.key) {
                    h3 title=(facet.key) { (cut(&facet.key, 80)) }
                    @for v in &facet.values {
                        @if let Some(filter) = v.value.as_ref().and_then(|value| filter_text(&facet.key, value)) {
                            @let (_, text) = value_text(v.value.as_ref());
                            a.facet href=(format!("/logs?{}", params.added("attr", &filter))) data-value=(text) data-filter=(filter) title=(filter) {
                                span.value { (cut(&text, 80)) } span.count { (v.records) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// CountLogs' severity ranges in its order: their names, classes for colour, and the lowest
/// severity number of each (a search from it shows that range and worse).
const SEVERITY_LAYERS: [(&str, &str, i32); 7] = [
    ("UNSET", "sev-unset", 0),
    ("TRACE", "sev-trace", 1),
    ("DEBUG", "sev-debug", 5),
    ("INFO", "sev-info", 9),
    ("WARN", "sev-warn", 13),
    ("ERROR", "sev-error", 17),
    ("FATAL", "sev-fatal", 21),
];

/// The matching records per step, as bars stacked by severity, with each severity's total
/// beside, each a link to search from that severity up.
fn histogram(counted: &CountLogsResponse, params: &QueryString) -> Markup {
    let total: u64 = counted.steps.iter().map(|s| s.records).sum();
    if total == 0 {
        return html! {};
    }
    let errors: u64 = counted.steps.iter().map(|s| s.errors).sum();
    // Each step's start, "HH:MM" (UTC) within a day, "MM-DD HH:MM" over more.
    let span = counted.steps.last().map_or(0, |s| s.start_unix_nano) - counted.steps[0].start_unix_nano;
    let from = if span < 86_400_000_000_000 { 11 } else { 5 };
    let bars: Vec<(String, Vec<f64>)> = counted
        .steps
        .iter()
        .map(|s| {
            let label = utc_text(s.start_unix_nano).chars().skip(from).take(16 - from).collect();
            (label, s.by_severity.iter().map(|&n| n as f64).collect())
        })
        .collect();
    let layers: Vec<(&str, &str)> = SEVERITY_LAYERS.iter().map(|(name, class, _)| (*class, *name)).collect();
    let totals: Vec<u64> = (0..SEVERITY_LAYERS.len())
        .map(|i| counted.steps.iter().filter_map(|s| s.by_severity.get(i)).sum())
        .collect();
    html! {
        figure.log-volume data-records=(total) {
            (raw(chart::stacked_bars(&bars, &layers, "matching records per step by severity")))
            figcaption {
                (total) " matching records, " (errors) " of them ERROR or worse, per "
                (super::step_text(counted.step_nanos)) " (times on the axis in UTC)"
                @if counted.from_records { " (counted from the records)" }
            }
            p.severities {
                @for ((name, class, first), n) in SEVERITY_LAYERS.iter().zip(&totals) {
                    @if *n > 0 {
                        @let link = params.changed(&[("min_severity", (*first > 0).then(|| first.to_string()).as_deref()), ("page_token", None)]);
                        a.severity href=(format!("/logs?{link}")) data-severity=(name) title=(format!("{name} and worse")) {
                            span class=(format!("swatch {class}")) {} (name) " " span.count { (n) }
                        }
                        " "
                    }
                }
            }
        }
    }
}

/// The time a record is filed under, as the server orders them: its own time, else when it was
/// observed (else when it was received, which the answer does not carry: 0 here).
fn filed_time(record: &LogRecord) -> u64 {
    if record.time_unix_nano != 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    }
}

/// `text` with each occurrence of `needle` in a `mark`, ignoring case unless `ignore_case` is
/// false (each character compared in lower case, as the search compares them).
fn marked(text: &str, needle: &str, ignore_case: bool) -> Markup {
    let mut parts: Vec<(bool, &str)> = Vec::new();
    let mut at = 0;
    for (start, end) in occurrences(text, needle, ignore_case) {
        if start < at {
            continue;
        }
        parts.push((false, &text[at..start]));
        parts.push((true, &text[start..end]));
        at = end;
    }
    parts.push((false, &text[at..]));
    html! { @for (hit, part) in parts { @if hit { mark { (part) } } @else { (part) } } }
}

/// Where `needle` occurs in `text`, as byte ranges of `text`, in order.
fn occurrences(text: &str, needle: &str, ignore_case: bool) -> Vec<(usize, usize)> {
    if needle.is_empty() {
        return Vec::new();
    }
    if !ignore_case {
        return text.match_indices(needle).map(|(i, m)| (i, i + m.len())).collect();
    }
    // The lower-case text, and for each of its bytes the character of `text` it came from (a
    // character's lower case may be longer than it).
    let mut lower = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        for l in c.to_lowercase() {
            lower.push(l);
            origin.resize(lower.len(), i);
        }
    }
    let needle = needle.to_lowercase();
    lower
        .match_indices(&needle)
        .map(|(start, m)| {
            let last = origin[start + m.len() - 1];
            (origin[start], last + text[last..].chars().next().map_or(0, char::len_utf8))
        })
        .collect()
}

/// The records of one answer, newest first, values cut at [`super::MAX_VALUE_CHARS`].
fn render(found: &SearchLogsResponse, params: &QueryString, colors: &Colors) -> Markup {
    let mut records = Vec::new();
    for rl in found.logs.as_ref().map_or(&[][..], |l| &l.resource_logs[..]) {
        let service = rl
            .resource
            .as_ref()
            .and_then(|r| string_attribute(&r.attributes, "service.name"))
            .unwrap_or("unknown service")
            .to_owned();
        for sl in &rl.scope_logs {
            for record in &sl.log_records {
                records.push((service.clone(), record, rl.resource.as_ref(), sl.scope.as_ref()));
            }
        }
    }
    // The answer groups by resource; people read newest first, in the order the server found
    // them: by the time each record is filed under (a stable sort keeps the server's order of
    // records filed at the same time).
    records.sort_by_key(|record| std::cmp::Reverse(filed_time(record.1)));
    if records.is_empty() {
        return empty("No more log records.");
    }
    let carry = params.range_only();
    html! {
        ol.logs {
            @for (service, record, resource, scope) in &records {
                @let (name, class) = severity(record.severity_number, &record.severity_text);
                @let (kind, body) = value_text(record.body.as_ref());
                @let body = cut(&body, MAX_VALUE_CHARS);
                @let trace = hex::encode(&record.trace_id);
                @let time = filed_time(record);
                li.log data-time=(time) {
                    div.line {
                        span.severity.(class) title=(format!("severity number {}", record.severity_number)) { (name) }
                        " " (time_el(time)) " "
                        span.svc style=(format!("color:{}", colors.of(service))) { (cut(service, 500)) }
                        @if !record.event_name.is_empty() { " " span.tag { (cut(&record.event_name, 500)) } }
                        @if !record.trace_id.is_empty() {
                            " "
                            @let span = hex::encode(&record.span_id);
                            @let pairs: Vec<(&str, &str)> = if span.is_empty() { vec![] } else { vec![("span", span.as_str())] };
                            a.trace-link href=(href(&format!("/trace/{trace}"), &pairs, &carry)) {
                                @if record.span_id.is_empty() { "trace" } @else { "span" }
                            }
                        }
                    }
                    @let body = marked(&body, params.text("body"), params.get("case").is_none());
                    @if kind == "array" || kind == "map" { pre.body { (body) } } @else { div.body { (body) } }
                    details {
                        summary { "attributes, resource, scope" }
                        (attribute_table(&record.attributes))
                        h4 { "Resource" } (attribute_table(resource.map_or(&[][..], |r| &r.attributes)))
                        h4 { "Scope" } p { (cut(scope.map_or("", |s| s.name.as_str()), 500)) " " (cut(scope.map_or("", |s| s.version.as_str()), 500)) }
                        p.hint { "body: " (kind) " · flags " (format!("0x{:08x}", record.flags)) @if !trace.is_empty() { " · trace " (trace) } }
                    }
                }
            }
        }
        nav.pages {
            @if params.get("page_token").is_some() { a href=(format!("/logs?{}", params.with("page_token", None))) { "First page" } }
            @if !found.next_page_token.is_empty() { a.next href=(format!("/logs?{}", params.with("page_token", Some(&found.next_page_token)))) { "Next page" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_are_marked_whatever_their_case() {
        let html = |text, needle, ignore| marked(text, needle, ignore).into_string();
        assert_eq!(
            html("Health check OK, health", "health", true),
            "<mark>Health</mark> check OK, <mark>health</mark>"
        );
        assert_eq!(html("Health check OK, health", "health", false), "Health check OK, <mark>health</mark>");
        // Characters whose lower case is longer, or of another length in bytes, keep their place.
        assert_eq!(html("İstanbul ÖL öl", "öl", true), "İstanbul <mark>ÖL</mark> <mark>öl</mark>");
        assert_eq!(html("xİx", "i", true), "x<mark>İ</mark>x");
        assert_eq!(html("<b>&", "<B>", true), "<mark>&lt;b&gt;</mark>&amp;");
        assert_eq!(html("nothing", "", true), "nothing");
    }

    #[test]
    fn records_keep_the_order_of_the_time_they_are_filed_under() {
        use opentelemetry_proto::tonic::{
            common::v1::{any_value::Value, AnyValue},
            logs::v1::{LogsData, ResourceLogs, ScopeLogs},
        };
        let record = |body: &str, time: u64, observed: u64| LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            body: Some(AnyValue { value: Some(Value::StringValue(body.into())) }),
            ..LogRecord::default()
        };
        let group = |records| ResourceLogs {
            scope_logs: vec![ScopeLogs { log_records: records, ..ScopeLogs::default() }],
            ..ResourceLogs::default()
        };
        // As the server answers: grouped by resource, each group newest first. Record 2 was
        // observed late, which must not move it ahead of record 1.
        let found = SearchLogsResponse {
            logs: Some(LogsData {
                resource_logs: vec![
                    group(vec![record("record-1", 40, 41), record("record-3", 20, 0)]),
                    group(vec![record("record-2", 30, 99), record("record-4", 0, 10)]),
                ],
            }),
            ..SearchLogsResponse::default()
        };
        let html = render(&found, &QueryString::default(), &Colors::default()).into_string();
        let at = |body: &str| html.find(body).unwrap_or_else(|| panic!("{body} shown"));
        let order = [at("record-1"), at("record-2"), at("record-3"), at("record-4")];
        assert!(order.is_sorted(), "{html}");
    }

    #[test]
    fn severities_are_named_by_their_range() {
        assert_eq!(severity(17, ""), ("ERROR".to_owned(), "sev-error"));
        assert_eq!(severity(18, ""), ("ERROR2".to_owned(), "sev-error"));
        assert_eq!(severity(9, "Information"), ("Information".to_owned(), "sev-info"));
        assert_eq!(severity(0, ""), ("UNSET".to_owned(), "sev-unset"));
    }
}
