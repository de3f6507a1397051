//! Metrics: the list of stored metrics, and one metric's chart over the time range. Gauges and
//! sums are aggregated per step by the query service (avg, min, max, sum, rate), one line per
//! series. Histograms (explicit and exponential) are drawn as p50/p95/p99 per step, computed
//! here from the buckets of their raw points, with the latest step's bucket distribution;
//! summaries as the quantiles they carry.

use std::collections::{hash_map::Entry, BTreeMap, BTreeSet, HashMap, HashSet};

use axum::{extract::State, response::Response};
use maud::{html, Markup};
use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{
        exponential_histogram_data_point::Buckets, metric::Data, ExponentialHistogramDataPoint,
        HistogramDataPoint, Metric,
    },
};
use tonic::{Code, Request};

use super::{
    attribute_filters, attribute_inputs, chart, double_text, duration_text, empty, error_box, href, page,
    range_inputs, range_label, raw, step_text, time_range, time_range_message, value_text, PageParams,
    QueryString, Screen, Ui,
};
use crate::query::{
    jaeger::parse_go_duration,
    proto::{query_service_server::QueryService, ListMetricsRequest, MetricDescriptor, QueryMetricsRequest},
};

/// Series drawn at most in one chart.
const MAX_SERIES: u32 = 50;
/// Steps a chart aims for across its range.
const STEPS: u64 = 120;
/// Colours of the lines, in order.
const PALETTE: [&str; 10] = [
    "#2f6fdf", "#e0612b", "#2a9d5c", "#b5379a", "#8a6d1f", "#1c9bb0", "#d23b3b", "#6b55c9", "#5c7a29",
    "#a35e3c",
];
/// The quantiles a histogram chart draws.
const QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")];
/// OTLP's AggregationTemporality.
const DELTA: i32 = 1;

pub async fn list(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    let body = async {
        let request = ListMetricsRequest {
            name_prefix: params.text("prefix").to_owned(),
            service: params.text("service").to_owned(),
            page_size: 200,
            page_token: params.text("page_token").to_owned(),
        };
        let found = ui.query.list_metrics(Request::new(request)).await.map_err(|s| s.message().to_owned())?.into_inner();
        if found.metrics.is_empty() {
            let message = if params.get("prefix").is_some() || params.get("service").is_some() {
                "No stored metric matches.".to_owned()
            } else {
                "No metrics stored yet: point an OpenTelemetry exporter's metrics at port 4317 or 4318.".to_owned()
            };
            return Ok::<_, String>(empty(&message));
        }
        let carry = params.range_only();
        Ok(html! {
            table.results.metrics {
                thead { tr { th { "Name" } th { "Type" } th { "Unit" } th { "Description" } } }
                tbody {
                    @for m in &found.metrics {
                        tr {
                            td { a href=(href("/metric", &[("name", &m.name)], &carry)) { (m.name) } }
                            td { (m.r#type) } td { (m.unit) } td { (m.description) }
                        }
                    }
                }
            }
            nav.pages {
                @if params.get("page_token").is_some() { a href=(format!("/metrics?{}", params.with("page_token", None))) { "First page" } }
                @if !found.next_page_token.is_empty() { a.next href=(format!("/metrics?{}", params.with("page_token", Some(&found.next_page_token)))) { "Next page" } }
            }
        })
    }
    .await
    .unwrap_or_else(|message| error_box(&message));
    page(
        "Metrics",
        Screen::Metrics,
        &params,
        html! {
            h1 { "Metrics" }
            form.search method="get" action="/metrics" {
                label { "Name starts with " input type="text" name="prefix" value=(params.text("prefix")); }
                label { "Service " input type="text" name="service" value=(params.text("service")) placeholder="any"; }
                input type="hidden" name="range" value=(params.text("range"));
                button type="submit" { "Filter" }
            }
            (body)
        },
    )
}

/// A step of about a 120th of the range, rounded to a length people read easily.
fn auto_step(range: (u64, u64)) -> u64 {
    const NICE: [u64; 16] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400];
    let wanted = (range.1 - range.0) / STEPS;
    let seconds = NICE.iter().copied().find(|s| s * 1_000_000_000 >= wanted).unwrap_or(86_400);
    seconds * 1_000_000_000
}

/// A value with its unit, durations as durations.
fn value_with_unit(value: f64, unit: &str) -> String {
    let scale = match unit {
        "s" => Some(1e9),
        "ms" => Some(1e6),
        "us" | "µs" => Some(1e3),
        "ns" => Some(1.0),
        _ => None,
    };
    match scale {
        Some(scale) if value.is_finite() && value >= 0.0 => duration_text((value * scale) as u64),
        _ if !value.is_finite() => double_text(value),
        _ => {
            let text = if value != 0.0 && (value.abs() >= 1e6 || value.abs() < 1e-3) {
                format!("{value:.3e}")
            } else {
                let t = format!("{value:.3}");
                t.trim_end_matches('0').trim_end_matches('.').to_owned()
            };
            match unit {
                "" | "1" => text,
                unit if unit.starts_with('{') => text,
                unit => format!("{text} {unit}"),
            }
        }
    }
}

/// The attributes whose values differ between some of `series` (or that some lack), in one
/// pass over all of them: a chart may carry many series of many attributes each.
fn differing<'a>(series: &[&'a [KeyValue]]) -> HashSet<&'a str> {
    // Per key: the first series' value, how many series have the key, and whether values differ.
    let mut seen: HashMap<&str, (String, usize, bool)> = HashMap::new();
    for attributes in series {
        let mut own = HashSet::new();
        for kv in attributes.iter().filter(|kv| own.insert(kv.key.as_str())) {
            let text = value_text(kv.value.as_ref()).1;
            match seen.entry(kv.key.as_str()) {
                Entry::Vacant(entry) => {
                    entry.insert((text, 1, false));
                }
                Entry::Occupied(mut entry) => {
                    let (first, count, differs) = entry.get_mut();
                    *count += 1;
                    *differs |= *first != text;
                }
            }
        }
    }
    seen.into_iter()
        .filter(|(_, (_, count, differs))| *differs || *count < series.len())
        .map(|(key, _)| key)
        .collect()
}

/// Longest legend label, in characters: what is past it is cut with a mark.
const MAX_LABEL_CHARS: usize = 200;

/// Labels that tell series apart: the point attributes whose values differ between them (a
/// lone series shows all of its own), then their resources' where those are the same, and a
/// number where even those are. Each is at most [`MAX_LABEL_CHARS`] long.
fn legends(points: &[&[KeyValue]], resources: &[&[KeyValue]]) -> Vec<String> {
    let text = |kv: &KeyValue| format!("{}={}", kv.key, value_text(kv.value.as_ref()).1);
    let point_keys = differing(points);
    let resource_keys = differing(resources);
    let mut labels: Vec<String> = points
        .iter()
        .zip(resources)
        .map(|(point, resource)| {
            let mut label = String::new();
            let shown = point
                .iter()
                .filter(|kv| points.len() == 1 || point_keys.contains(kv.key.as_str()))
                .chain(resource.iter().filter(|kv| resource_keys.contains(kv.key.as_str())));
            for kv in shown {
                if label.len() > MAX_LABEL_CHARS * 4 {
                    break;
                }
                if !label.is_empty() {
                    label.push_str(", ");
                }
                label.push_str(&text(kv));
            }
            if label.is_empty() {
                "all points".to_owned()
            } else {
                super::cut(&label, MAX_LABEL_CHARS)
            }
        })
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for label in &mut labels {
        let n = seen.entry(label.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            *label = format!("{label} (#{n})");
        }
    }
    labels
}

pub async fn chart(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    let name = params.text("name").to_owned();
    let (descriptor, body, keys) = match chart_body(&ui, &params, &name).await {
        Ok(found) => found,
        Err(message) => (None, error_box(&message), Vec::new()),
    };
    let kind = descriptor.as_ref().map_or("", |d| d.r#type.as_str()).to_owned();
    let aggregation = params.get("agg").unwrap_or_default();
    page(
        &name,
        Screen::Metrics,
        &params,
        html! {
            h1 { (name) }
            @if let Some(d) = &descriptor {
                p.hint { (d.r#type) @if !d.unit.is_empty() { " · unit " (d.unit) } @if !d.description.is_empty() { " · " (d.description) } }
            }
            form.search method="get" action="/metric" {
                input type="hidden" name="name" value=(name);
                @if kind == "gauge" || kind == "sum" {
                    label { "Aggregation "
                        select name="agg" {
                            option value="" selected[aggregation.is_empty()] { "default" }
                            @for a in ["avg", "min", "max", "sum", "rate"] { option value=(a) selected[aggregation == a] { (a) } }
                        }
                    }
                }
                label { "Step " input type="text" name="step" size="6" value=(params.text("step")) placeholder="auto"; }
                label { "Group by " input type="text" name="by" list="group-keys" value=(params.all("by").join(",")) placeholder="attribute keys, comma-separated"; }
                datalist id="group-keys" { @for key in &keys { option value=(key) {} } }
                @if kind != "gauge" && kind != "sum" && !params.all("by").is_empty() {
                    label { "Line "
                        select name="q" {
                            @for (_, label) in QUANTILES { option value=(label) selected[params.text("q") == label || (params.get("q").is_none() && label == "p95")] { (label) } }
                        }
                    }
                }
                (range_inputs(&params))
                (attribute_inputs(&params))
                button type="submit" { "Show" }
            }
            (body)
        },
    )
}

async fn descriptor(ui: &Ui, name: &str) -> Result<Option<MetricDescriptor>, String> {
    let request = ListMetricsRequest { name_prefix: name.to_owned(), page_size: 1000, ..Default::default() };
    let found = ui.query.list_metrics(Request::new(request)).await.map_err(|s| s.message().to_owned())?;
    Ok(found.into_inner().metrics.into_iter().find(|m| m.name == name))
}

async fn chart_body(
    ui: &Ui,
    params: &QueryString,
    name: &str,
) -> Result<(Option<MetricDescriptor>, Markup, Vec<String>), String> {
    if name.is_empty() {
        return Err("name: pick a metric from the list".to_owned());
    }
    let Some(descriptor) = descriptor(ui, name).await? else {
        return Ok((None, empty(&format!("No metric named {name:?} is stored.")), Vec::new()));
    };
    let range = time_range(params)?;
    let step = match params.get("step") {
        Some(text) => parse_go_duration(text, "step").map_err(|s| s.message().to_owned())?.max(1_000_000),
        None => auto_step(range),
    };
    let attributes = attribute_filters(&params.all("attr"))?;
    let by = group_keys(params);
    let params_quantile = match params.get("q") {
        None => 1,
        Some(label) => QUANTILES
            .iter()
            .position(|(_, l)| *l == label)
            .ok_or_else(|| format!("q: one of p50, p95, p99, not {label:?}"))?,
    };
    let mut request = QueryMetricsRequest {
        name: name.to_owned(),
        time_range: Some(time_range_message(range)),
        attributes,
        page_size: MAX_SERIES,
        ..Default::default()
    };
    let unit = descriptor.unit.clone();
    // The attribute keys of the series found, to group by.
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let body = match descriptor.r#type.as_str() {
        "gauge" | "sum" => {
            let chosen = params.get("agg");
            let default = if descriptor.r#type == "sum" { "rate" } else { "avg" };
            request.step_nanos = step;
            request.aggregation = chosen.unwrap_or(default).to_owned();
            let mut answer = ui.query.query_metrics(Request::new(request.clone())).await;
            let mut note = None;
            if let Err(status) = &answer {
                // An up-down counter has no rate: its default is the average.
                if chosen.is_none()
                    && status.code() == Code::InvalidArgument
                    && status.message().contains("monotonic")
                {
                    request.aggregation = "avg".to_owned();
                    note = Some("This sum is not monotonic, so it is shown as the average per step rather than a rate.");
                    answer = ui.query.query_metrics(Request::new(request.clone())).await;
                }
            }
            let answer = answer.map_err(|s| s.message().to_owned())?.into_inner();
            if answer.aggregated.is_empty() {
                return Ok((
                    Some(descriptor),
                    empty(&format!("No points of {name} in {}.", range_label(params))),
                    Vec::new(),
                ));
            }
            let aggregation = request.aggregation.clone();
            let more = !answer.next_page_token.is_empty();
            for s in &answer.aggregated {
                let resource = s.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
                keys.extend(s.attributes.iter().chain(resource).map(|kv| kv.key.clone()));
            }
            let by = by.clone();
            super::blocking(move || {
                let per_second = aggregation == "rate";
                let points: Vec<&[KeyValue]> = answer.aggregated.iter().map(|s| &s.attributes[..]).collect();
                let resources: Vec<&[KeyValue]> = answer
                    .aggregated
                    .iter()
                    .map(|s| s.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]))
                    .collect();
                let series: Vec<(String, Vec<(u64, f64)>)> = if by.is_empty() {
                    let legends = legends(&points, &resources);
                    answer
                        .aggregated
                        .iter()
                        .zip(legends)
                        .map(|(s, label)| (label, s.values.iter().map(|v| (v.start_unix_nano, v.value)).collect()))
                        .collect()
                } else {
                    let mut groups: BTreeMap<String, Vec<Vec<(u64, f64)>>> = BTreeMap::new();
                    for (i, s) in answer.aggregated.iter().enumerate() {
                        let values = s.values.iter().map(|v| (v.start_unix_nano, v.value)).collect();
                        groups.entry(group_label(&by, points[i], resources[i])).or_default().push(values);
                    }
                    groups.into_iter().map(|(label, members)| (label, combine(&members, &aggregation))).collect()
                };
                let lines: Vec<chart::Line> = series
                    .into_iter()
                    .enumerate()
                    .map(|(i, (label, points))| chart::Line {
                        label,
                        color: PALETTE[i % PALETTE.len()].to_owned(),
                        points,
                        readings: Vec::new(),
                    })
                    .collect();
                let unit_label = if per_second { format!("{}/s", unit_words(&unit)) } else { unit_words(&unit) };
                let format = |v: f64| {
                    if per_second {
                        format!("{}/s", value_with_unit(v, &unit))
                    } else {
                        value_with_unit(v, &unit)
                    }
                };
                html! {
                    @if let Some(note) = note { p.hint { (note) } }
                    figure.metric-chart {
                        (raw(chart::lines(&lines, range, &format)))
                        figcaption {
                            (aggregation) " per " (step_text(step)) @if !unit_label.is_empty() { " · " (unit_label) }
                            @if !by.is_empty() { " · series " (combined_as(&aggregation)) " by " (by.join(", ")) }
                        }
                    }
                    (legend(&lines))
                    @if more { p.hint { "Only the first " (MAX_SERIES) " series are drawn: add attribute filters to see others." } }
                }
            })
            .await?
        }
        "histogram" | "exponential_histogram" | "summary" => {
            let by = by.clone();
            let answer = ui
                .query
                .query_metrics(Request::new(request))
                .await
                .map_err(|s| s.message().to_owned())?
                .into_inner();
            let nothing = empty(&format!("No points of {name} in {}.", range_label(params)));
            for rm in answer.raw.iter().flat_map(|d| &d.resource_metrics) {
                keys.extend(rm.resource.iter().flat_map(|r| &r.attributes).map(|kv| kv.key.clone()));
                for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                    let point = match &metric.data {
                        Some(Data::Histogram(h)) => h.data_points.first().map(|p| &p.attributes[..]),
                        Some(Data::ExponentialHistogram(h)) => {
                            h.data_points.first().map(|p| &p.attributes[..])
                        }
                        Some(Data::Summary(s)) => s.data_points.first().map(|p| &p.attributes[..]),
                        _ => None,
                    };
                    keys.extend(point.unwrap_or_default().iter().map(|kv| kv.key.clone()));
                }
            }
            super::blocking(move || {
                let metrics: Vec<&Metric> = answer
                    .raw
                    .iter()
                    .flat_map(|d| &d.resource_metrics)
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .collect();
                if !by.is_empty() {
                    return grouped_distributions(&answer, &by, params_quantile, range, step, &unit).unwrap_or(nothing);
                }
                let chart = distribution_chart(&metrics, range, step);
                if chart.steps.is_empty() {
                    return nothing;
                }
                let lines: Vec<chart::Line> = QUANTILES
                    .iter()
                    .enumerate()
                    .map(|(i, (_, label))| chart::Line {
                        label: (*label).to_owned(),
                        color: PALETTE[i].to_owned(),
                        points: chart.steps.iter().map(|(t, q)| (*t, q[i].value)).collect(),
                        readings: chart.steps.iter().map(|(_, q)| q[i].reading).collect(),
                    })
                    .collect();
                let format = |v: f64| value_with_unit(v, &unit);
                html! {
                    figure.metric-chart {
                        (raw(chart::lines(&lines, range, &format)))
                        figcaption { "p50, p95 and p99 per " (step_text(step)) ", over every matching series" @if !unit.is_empty() { " · " (unit) } }
                    }
                    (legend(&lines))
                    @if let Some(whole) = &chart.whole {
                        dl.whole-range {
                            @for ((_, label), q) in QUANTILES.iter().zip(whole) {
                                div data-quantile=(label) data-value=(q.value) data-reading=(format!("{:?}", q.reading)) {
                                    dt { (label) " over the range" }
                                    dd { (q.reading.say(&format(q.value))) }
                                }
                            }
                        }
                        @if whole.iter().any(|q| q.reading != chart::Reading::Value) {
                            p.hint { "A figure marked > lies in the top bucket, which has no upper bound: the exporter sent no max to close it." }
                        }
                    }
                    @if let Some((at, buckets, count)) = &chart.latest {
                        figure.metric-chart.buckets {
                            (raw(chart::bars(buckets)))
                            figcaption {
                                "Bucket counts of the latest step (from " (super::time_el(*at)) ")"
                                @if *count > buckets.len() { ": " (count) " buckets, drawn as " (buckets.len()) " bars of neighbours merged" }
                            }
                        }
                    }
                    @if chart.skipped > 0 { p.hint { (chart.skipped) " points had bucket bounds unlike the others and are left out." } }
                    @if !answer.next_page_token.is_empty() { p.hint { "Only the first " (MAX_SERIES) " series are counted: add attribute filters to narrow down." } }
                }
            })
            .await?
        }
        other => empty(&format!("{name} is a {other} metric, which has no chart.")),
    };
    Ok((Some(descriptor), body, keys.into_iter().take(MAX_KEYS_LISTED).collect()))
}

/// The attribute keys a chart groups its series by (`by=http.route,http.request.method`).
fn group_keys(params: &QueryString) -> Vec<String> {
    params
        .all("by")
        .iter()
        .flat_map(|by| by.split(','))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .take(MAX_GROUP_KEYS)
        .map(|key| super::cut(key, MAX_LABEL_CHARS))
        .collect()
}

/// Attribute keys offered to group by at most.
const MAX_KEYS_LISTED: usize = 200;

/// Attribute keys one chart groups by at most.
const MAX_GROUP_KEYS: usize = 8;

/// A series' group: `key=value` of each `by` key, from its point attributes, else its
/// resource's; `key=(none)` where it has neither.
fn group_label(by: &[String], point: &[KeyValue], resource: &[KeyValue]) -> String {
    let label = by
        .iter()
        .map(|key| {
            let kv = point.iter().chain(resource).find(|kv| &kv.key == key);
            let value = kv.map_or_else(|| "(none)".to_owned(), |kv| value_text(kv.value.as_ref()).1);
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    super::cut(&label, MAX_LABEL_CHARS)
}

/// How a group's series make one line for `aggregation`: rates and sums add up, minimums and
/// maximums are the least and greatest, averages are the mean of the series' averages.
fn combined_as(aggregation: &str) -> &'static str {
    match aggregation {
        "rate" | "sum" => "summed",
        "min" => "least of",
        "max" => "greatest of",
        _ => "averaged",
    }
}

/// One line of a group's series, step by step (the steps are the same for every series of one
/// answer), as [`combined_as`] says; a step none of them has a value for stays empty (NaN).
fn combine(members: &[Vec<(u64, f64)>], aggregation: &str) -> Vec<(u64, f64)> {
    let mut steps: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for member in members {
        for &(t, v) in member {
            let values = steps.entry(t).or_default();
            if v.is_finite() {
                values.push(v);
            }
        }
    }
    steps
        .into_iter()
        .map(|(t, values)| {
            let value = if values.is_empty() {
                f64::NAN
            } else {
                match aggregation {
                    "rate" | "sum" => values.iter().sum(),
                    "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
                    "max" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    _ => values.iter().sum::<f64>() / values.len() as f64,
                }
            };
            (t, value)
        })
        .collect()
}

/// A unit as people read it: UCUM's annotations without their braces (`{request}` is
/// "requests"), `1` as nothing.
fn unit_words(unit: &str) -> String {
    match unit.strip_prefix('{').and_then(|u| u.strip_suffix('}')) {
        Some(word) if !word.is_empty() && !word.ends_with('s') => format!("{word}s"),
        Some(word) => word.to_owned(),
        None if unit == "1" => String::new(),
        None => unit.to_owned(),
    }
}

/// Histograms grouped by `by`: a line per group of one quantile (`QUANTILES[shown]`), and each
/// group's p50, p95 and p99 over the whole range, from its series' buckets merged. None when no
/// group has a point in the range.
fn grouped_distributions(
    answer: &crate::query::proto::QueryMetricsResponse,
    by: &[String],
    shown: usize,
    range: (u64, u64),
    step: u64,
    unit: &str,
) -> Option<Markup> {
    let mut groups: BTreeMap<String, Vec<&Metric>> = BTreeMap::new();
    for rm in answer.raw.iter().flat_map(|d| &d.resource_metrics) {
        let resource = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let point = match &metric.data {
                Some(Data::Histogram(h)) => h.data_points.first().map(|p| &p.attributes[..]),
                Some(Data::ExponentialHistogram(h)) => h.data_points.first().map(|p| &p.attributes[..]),
                Some(Data::Summary(s)) => s.data_points.first().map(|p| &p.attributes[..]),
                _ => None,
            };
            groups.entry(group_label(by, point.unwrap_or_default(), resource)).or_default().push(metric);
        }
    }
    let charts: Vec<(String, DistributionChart)> = groups
        .into_iter()
        .map(|(label, metrics)| (label, distribution_chart(&metrics, range, step)))
        .filter(|(_, chart)| !chart.steps.is_empty())
        .collect();
    if charts.is_empty() {
        return None;
    }
    let (_, quantile_label) = QUANTILES[shown];
    let lines: Vec<chart::Line> = charts
        .iter()
        .enumerate()
        .map(|(i, (label, chart))| chart::Line {
            label: label.clone(),
            color: PALETTE[i % PALETTE.len()].to_owned(),
            points: chart.steps.iter().map(|(t, q)| (*t, q[shown].value)).collect(),
            readings: chart.steps.iter().map(|(_, q)| q[shown].reading).collect(),
        })
        .collect();
    let format = |v: f64| value_with_unit(v, unit);
    Some(html! {
        figure.metric-chart {
            (raw(chart::lines(&lines, range, &format)))
            figcaption { (quantile_label) " per " (step_text(step)) " by " (by.join(", ")) @if !unit.is_empty() { " · " (unit) } }
        }
        (legend(&lines))
        table.results.groups {
            thead { tr { th { "Group" } @for (_, label) in QUANTILES { th.num { (label) " over the range" } } } }
            tbody {
                @for (label, chart) in &charts {
                    tr data-group=(label) {
                        td { (label) }
                        @for q in chart.whole.iter().flatten() {
                            td.num data-value=(q.value) { (q.reading.say(&format(q.value))) }
                        }
                    }
                }
            }
        }
    })
}

fn legend(lines: &[chart::Line]) -> Markup {
    html! {
        ul.legend {
            @for line in lines { li data-series=(line.label) { span.swatch style=(format!("background:{}", line.color)) {} (line.label) } }
        }
    }
}

/// A distribution of values: buckets `(lower, upper, count)` in ascending order.
type BucketList = Vec<(f64, f64, f64)>;

/// The smallest and largest value a step's points recorded, when every point gave them (a
/// cumulative point's cover its whole run, so they bound the step's values all the same).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Extremes {
    min: Option<f64>,
    max: Option<f64>,
}

impl Extremes {
    fn of(min: Option<f64>, max: Option<f64>) -> Self {
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
        Extremes { min: finite(min), max: finite(max) }
    }

    /// Both points' values: a bound is known only when both know it.
    fn and(self, other: Extremes) -> Extremes {
        let both = |a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64| Some(pick(a?, b?));
        Extremes { min: both(self.min, other.min, f64::min), max: both(self.max, other.max, f64::max) }
    }
}

/// A quantile as far as buckets tell it: a value, or only a bound when it falls in a bucket that
/// is open on that side and the points gave no min or max to close it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Estimate {
    value: f64,
    reading: chart::Reading,
}

/// The value below which `q` of a distribution's count lies, interpolating linearly inside the
/// bucket that holds it (as Prometheus's histogram_quantile does), narrowed to the recorded min
/// and max: they close the open buckets at either end, which interpolation alone cannot.
/// Without them a quantile in an open bucket is only a bound: above the top bucket's lower
/// bound ("> 10 s"), or below the first's upper. NaN when the distribution is empty.
fn quantile(buckets: &[(f64, f64, f64)], q: f64, extremes: Extremes) -> Estimate {
    let total: f64 = buckets.iter().map(|b| b.2).sum();
    let value = |value| Estimate { value, reading: chart::Reading::Value };
    if total <= 0.0 {
        return value(f64::NAN);
    }
    let rank = q * total;
    let mut below = 0.0;
    for &(lower, upper, count) in buckets {
        if count > 0.0 && below + count >= rank {
            // Every value lies between the recorded min and max, so the bucket's values do.
            let lower = match extremes.min {
                Some(min) if min > lower && min <= upper => min,
                _ => lower,
            };
            let upper = match extremes.max {
                Some(max) if max < upper && max >= lower => max,
                _ => upper,
            };
            if upper.is_infinite() {
                return Estimate { value: lower, reading: chart::Reading::AtLeast };
            }
            if lower.is_infinite() {
                return Estimate { value: upper, reading: chart::Reading::AtMost };
            }
            return value(lower + (upper - lower) * ((rank - below) / count));
        }
        below += count;
    }
    value(buckets.last().map_or(f64::NAN, |b| if b.1.is_finite() { b.1 } else { b.0 }))
}

/// An explicit histogram's buckets: `(-inf, b0], (b0, b1], ..., (bn, +inf)`; the lowest bucket
/// starts at 0 when its bound is positive (values are usually non-negative).
fn explicit_buckets(bounds: &[f64], counts: &[f64]) -> BucketList {
    counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            let upper = bounds.get(i).copied().unwrap_or(f64::INFINITY);
            let lower = match i {
                0 if upper > 0.0 => 0.0,
                0 => f64::NEG_INFINITY,
                _ => bounds[i - 1],
            };
            (lower, upper, *count)
        })
        .collect()
}

/// An exponential histogram's counts at one scale.
#[derive(Clone, Default, PartialEq, Debug)]
struct Exponential {
    scale: i32,
    zero: f64,
    zero_threshold: f64,
    positive: BTreeMap<i64, f64>,
    negative: BTreeMap<i64, f64>,
}

impl Exponential {
    fn of(point: &ExponentialHistogramDataPoint) -> Self {
        let side = |buckets: &Option<Buckets>| {
            buckets.as_ref().map_or_else(BTreeMap::new, |b| {
                b.bucket_counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i64::from(b.offset) + i as i64, *c as f64))
                    .collect()
            })
        };
        Self {
            scale: point.scale,
            zero: point.zero_count as f64,
            zero_threshold: point.zero_threshold,
            positive: side(&point.positive),
            negative: side(&point.negative),
        }
    }

    /// The same counts at a coarser scale: each bucket merges into the one holding it.
    fn at_scale(&self, scale: i32) -> Self {
        if scale >= self.scale {
            return self.clone();
        }
        let shift = (i64::from(self.scale) - i64::from(scale)).min(62);
        let merge = |side: &BTreeMap<i64, f64>| {
            let mut out = BTreeMap::new();
            for (index, count) in side {
                *out.entry(index >> shift).or_insert(0.0) += count;
            }
            out
        };
        Self { scale, positive: merge(&self.positive), negative: merge(&self.negative), ..self.clone() }
    }

    /// `self + sign * other`, at the coarser of the two scales, never below zero.
    fn combine(&self, other: &Self, sign: f64) -> Self {
        let scale = self.scale.min(other.scale);
        let (mut a, b) = (self.at_scale(scale), other.at_scale(scale));
        let add = |into: &mut BTreeMap<i64, f64>, from: &BTreeMap<i64, f64>| {
            for (index, count) in from {
                let slot = into.entry(*index).or_insert(0.0);
                *slot = (*slot + sign * count).max(0.0);
            }
        };
        add(&mut a.positive, &b.positive);
        add(&mut a.negative, &b.negative);
        a.zero = (a.zero + sign * b.zero).max(0.0);
        a.zero_threshold = a.zero_threshold.max(b.zero_threshold);
        a
    }

    fn count(&self) -> f64 {
        self.zero + self.positive.values().sum::<f64>() + self.negative.values().sum::<f64>()
    }

    /// Buckets in ascending order: bucket `i` of the positive side holds `(base^i, base^(i+1)]`
    /// with `base = 2^(2^-scale)`, the negative side mirrored, the zero bucket between.
    fn buckets(&self) -> BucketList {
        // Any i32 scale: negating i32::MIN would overflow, its f64 cannot.
        let base = 2f64.powf(2f64.powf(-f64::from(self.scale)));
        let bound = |i: i64| base.powf(i as f64);
        let mut out: BucketList =
            self.negative.iter().rev().map(|(i, c)| (-bound(i + 1), -bound(*i), *c)).collect();
        // A threshold sent negative or NaN still makes a bucket around zero.
        let threshold = if self.zero_threshold.is_nan() { 0.0 } else { self.zero_threshold.abs() };
        out.push((-threshold, threshold, self.zero));
        out.extend(self.positive.iter().map(|(i, c)| (bound(*i), bound(i + 1), *c)));
        out
    }
}

/// The latest step's time, its labelled bars and its number of buckets.
type LatestBuckets = (u64, Vec<(String, f64)>, usize);

/// A distribution chart: p50/p95/p99 per step, the latest step's buckets, and how many
/// points could not be merged.
struct DistributionChart {
    steps: Vec<(u64, [Estimate; 3])>,
    /// p50/p95/p99 over the whole range, from every step's buckets together (none for
    /// summaries, whose quantiles do not merge).
    whole: Option<[Estimate; 3]>,
    /// The latest step's time, its buckets labelled (at most [`chart::MAX_BARS`], neighbours
    /// merged), and how many buckets it had.
    latest: Option<LatestBuckets>,
    skipped: usize,
}

/// What one point added to its series in its step.
enum Increase {
    Explicit(Vec<f64>, Vec<f64>, Extremes),
    Exponential(Exponential, Extremes),
    Quantiles(Vec<(f64, f64)>),
}

/// The increase each point brings: the point itself for delta temporality; for cumulative, the
/// difference from the series' previous point (the point itself after a reset, or when its
/// start lies inside the range; a first point counting from before the range is skipped).
fn increases(metric: &Metric, range: (u64, u64)) -> Vec<(u64, Increase)> {
    let mut out = Vec::new();
    match &metric.data {
        Some(Data::Histogram(h)) => {
            let mut points: Vec<&HistogramDataPoint> = h.data_points.iter().collect();
            points.sort_by_key(|p| p.time_unix_nano);
            let mut previous: Option<&HistogramDataPoint> = None;
            for p in points {
                let counts: Vec<f64> = p.bucket_counts.iter().map(|c| *c as f64).collect();
                let increase = if h.aggregation_temporality == DELTA {
                    Some(counts)
                } else {
                    match previous {
                        Some(prev) if prev.explicit_bounds == p.explicit_bounds && p.count >= prev.count => {
                            Some(
                                counts
                                    .iter()
                                    .zip(&prev.bucket_counts)
                                    .map(|(c, b)| (c - *b as f64).max(0.0))
                                    .collect(),
                            )
                        }
                        _ if previous.is_some() || p.start_time_unix_nano >= range.0 => Some(counts),
                        _ => None,
                    }
                };
                if let Some(counts) = increase {
                    let extremes = Extremes::of(p.min, p.max);
                    out.push((
                        p.time_unix_nano,
                        Increase::Explicit(p.explicit_bounds.clone(), counts, extremes),
                    ));
                }
                previous = Some(p);
            }
        }
        Some(Data::ExponentialHistogram(h)) => {
            let mut points: Vec<&ExponentialHistogramDataPoint> = h.data_points.iter().collect();
            points.sort_by_key(|p| p.time_unix_nano);
            let mut previous: Option<(Exponential, u64)> = None;
            for p in points {
                let now = Exponential::of(p);
                let increase = if h.aggregation_temporality == DELTA {
                    Some(now.clone())
                } else {
                    match &previous {
                        Some((prev, count)) if p.count >= *count => Some(now.combine(prev, -1.0)),
                        _ if previous.is_some() || p.start_time_unix_nano >= range.0 => Some(now.clone()),
                        _ => None,
                    }
                };
                if let Some(increase) = increase {
                    out.push((p.time_unix_nano, Increase::Exponential(increase, Extremes::of(p.min, p.max))));
                }
                previous = Some((now, p.count));
            }
        }
        Some(Data::Summary(s)) => {
            for p in &s.data_points {
                let quantiles = p.quantile_values.iter().map(|q| (q.quantile, q.value)).collect();
                out.push((p.time_unix_nano, Increase::Quantiles(quantiles)));
            }
        }
        _ => {}
    }
    out
}

/// The value a summary point gives for `q`: its nearest quantile.
fn nearest_quantile(values: &[(f64, f64)], q: f64) -> Option<f64> {
    values.iter().min_by(|a, b| (a.0 - q).abs().total_cmp(&(b.0 - q).abs())).map(|(_, v)| *v)
}

fn distribution_chart(metrics: &[&Metric], range: (u64, u64), step: u64) -> DistributionChart {
    /// Buckets summed over a step (or the whole range), with their extremes.
    #[derive(Default)]
    struct Sum {
        explicit: Option<(Vec<f64>, Vec<f64>)>,
        exponential: Option<Exponential>,
        extremes: Option<Extremes>,
        quantiles: Vec<Vec<(f64, f64)>>,
    }
    impl Sum {
        fn add(&mut self, increase: &Increase) {
            let extremes = match increase {
                Increase::Explicit(b, counts, extremes) => {
                    let (_, sum) = self.explicit.get_or_insert_with(|| (b.clone(), vec![0.0; counts.len()]));
                    for (s, c) in sum.iter_mut().zip(counts) {
                        *s += c;
                    }
                    extremes
                }
                Increase::Exponential(e, extremes) => {
                    self.exponential = Some(match self.exponential.take() {
                        Some(sum) => sum.combine(e, 1.0),
                        None => e.clone(),
                    });
                    extremes
                }
                Increase::Quantiles(q) => {
                    self.quantiles.push(q.clone());
                    return;
                }
            };
            self.extremes = Some(self.extremes.map_or(*extremes, |e| e.and(*extremes)));
        }

        fn buckets(&self) -> Option<BucketList> {
            let buckets = match (&self.explicit, &self.exponential) {
                (Some((b, counts)), _) => explicit_buckets(b, counts),
                (None, Some(e)) if e.count() > 0.0 => e.buckets(),
                _ => return None,
            };
            buckets.iter().any(|b| b.2 > 0.0).then_some(buckets)
        }

        fn quantiles(&self, buckets: &BucketList) -> [Estimate; 3] {
            QUANTILES.map(|(q, _)| quantile(buckets, q, self.extremes.unwrap_or_default()))
        }
    }
    let mut steps: BTreeMap<u64, Sum> = BTreeMap::new();
    let mut whole = Sum::default();
    let mut bounds: Option<Vec<f64>> = None;
    let mut skipped = 0;
    for metric in metrics {
        for (time, increase) in increases(metric, range) {
            if time < range.0 || time >= range.1 {
                continue;
            }
            if let Increase::Explicit(b, ..) = &increase {
                if bounds.get_or_insert_with(|| b.clone()) != b {
                    skipped += 1;
                    continue;
                }
            }
            let at = range.0 + (time - range.0) / step * step;
            steps.entry(at).or_default().add(&increase);
            whole.add(&increase);
        }
    }
    let whole = whole.buckets().map(|buckets| whole.quantiles(&buckets));
    let mut out = DistributionChart { steps: Vec::new(), whole, latest: None, skipped };
    for (at, slot) in &steps {
        if let Some(buckets) = slot.buckets() {
            out.steps.push((*at, slot.quantiles(&buckets)));
            // Only the latest step's buckets are drawn: the others are dropped unlabelled.
            let shown: BucketList =
                buckets.into_iter().filter(|b| b.2 > 0.0 || slot.explicit.is_some()).collect();
            let count = shown.len();
            let labelled = merge_neighbours(&shown, chart::MAX_BARS)
                .into_iter()
                .map(|(lower, upper, count)| {
                    let label = if upper.is_infinite() {
                        format!("> {}", short(lower))
                    } else {
                        format!("≤ {}", short(upper))
                    };
                    (label, count)
                })
                .collect();
            out.latest = Some((*at, labelled, count));
        } else if !slot.quantiles.is_empty() && slot.explicit.is_none() && slot.exponential.is_none() {
            let q = QUANTILES.map(|(q, _)| {
                let values: Vec<f64> = slot.quantiles.iter().filter_map(|v| nearest_quantile(v, q)).collect();
                Estimate {
                    value: values.iter().sum::<f64>() / values.len().max(1) as f64,
                    reading: chart::Reading::Value,
                }
            });
            out.steps.push((*at, q));
        }
    }
    out
}

/// `buckets` merged with their neighbours into at most `most`: each merged bucket spans from
/// its first's lower bound to its last's upper one and holds their counts.
fn merge_neighbours(buckets: &[(f64, f64, f64)], most: usize) -> BucketList {
    if buckets.len() <= most {
        return buckets.to_vec();
    }
    buckets
        .chunks(buckets.len().div_ceil(most.max(1)))
        .map(|group| (group[0].0, group[group.len() - 1].1, group.iter().map(|b| b.2).sum()))
        .collect()
}

/// A bucket bound, as its exporter wrote it when that is short (`0.025`, `7.5`, `2500`, `5e-5`),
/// else to four significant digits (an exponential histogram's bounds, `1.091`).
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let huge_or_tiny = v.abs() >= 1e6 || v.abs() < 1e-4;
    let exact = if huge_or_tiny { format!("{v:e}") } else { format!("{v}") };
    if exact.len() <= 8 {
        return exact;
    }
    if huge_or_tiny {
        let t = format!("{v:.3e}");
        let (mantissa, exponent) = t.split_once('e').unwrap_or((&t, "0"));
        return format!("{}e{exponent}", mantissa.trim_end_matches('0').trim_end_matches('.'));
    }
    let decimals = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    let t = format!("{v:.decimals$}");
    if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_read_as_their_exporter_wrote_them() {
        let cases = [
            (0.025, "0.025"),
            (0.075, "0.075"),
            (0.005, "0.005"),
            (7.5, "7.5"),
            (10.0, "10"),
            (2500.0, "2500"),
            (0.0, "0"),
            (5e-5, "5e-5"),
            (5e6, "5e6"),
            (1.0905077326652577, "1.091"),
            (123_456.789, "123457"),
            (1.234_567_89e-7, "1.235e-7"),
            (-0.25, "-0.25"),
        ];
        for (bound, label) in cases {
            assert_eq!(short(bound), label, "{bound}");
        }
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        // 10 values in (0, 10], 10 in (10, 20]: the median is 10, p95 19.
        let buckets = explicit_buckets(&[10.0, 20.0], &[10.0, 10.0, 0.0]);
        let unknown = Extremes::default();
        assert_eq!(quantile(&buckets, 0.5, unknown).value, 10.0);
        assert!((quantile(&buckets, 0.95, unknown).value - 19.0).abs() < 1e-9);
        assert!(quantile(&explicit_buckets(&[1.0], &[0.0, 0.0]), 0.5, unknown).value.is_nan());
        // The recorded min and max narrow the buckets they fall in.
        let known = Extremes::of(Some(2.0), Some(15.0));
        assert!((quantile(&buckets, 0.95, known).value - 14.5).abs() < 1e-9);
        assert!((quantile(&buckets, 0.01, known).value - 2.16).abs() < 1e-9);
    }

    #[test]
    fn series_grouped_by_an_attribute_combine_as_their_aggregation_says() {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        };
        let by = vec!["route".to_owned(), "service.name".to_owned()];
        // Point attributes first, then the resource's, and a key neither has.
        assert_eq!(
            group_label(&by, &[kv("route", "/a")], &[kv("service.name", "shop"), kv("route", "/r")]),
            "route=/a, service.name=shop"
        );
        assert_eq!(group_label(&by[..1], &[], &[]), "route=(none)");
        let members =
            vec![vec![(1, 1.0), (2, f64::NAN), (3, 2.0)], vec![(1, 3.0), (2, f64::NAN), (3, f64::NAN)]];
        let values =
            |aggregation| combine(&members, aggregation).into_iter().map(|(_, v)| v).collect::<Vec<_>>();
        let rate = values("rate");
        assert_eq!((rate[0], rate[2]), (4.0, 2.0));
        assert!(rate[1].is_nan(), "a step no series has stays empty");
        assert_eq!(values("max")[0], 3.0);
        assert_eq!(values("min")[0], 1.0);
        assert_eq!(values("avg")[0], 2.0);
        assert_eq!(unit_words("{request}"), "requests");
        assert_eq!(unit_words("{requests}"), "requests");
        assert_eq!(unit_words("1"), "");
        assert_eq!(unit_words("By"), "By");
    }

    #[test]
    fn the_open_top_bucket_ends_at_the_recorded_max_or_gives_a_bound() {
        // 59 requests of 8 to 22 s in the HTTP duration buckets, which end at 10 s; 23 took
        // longer. The spans give p95 19.987 s and p99 21.801 s.
        let bounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
        let mut counts = vec![0.0; bounds.len() + 1];
        counts[13] = 36.0;
        counts[14] = 23.0;
        let buckets = explicit_buckets(&bounds, &counts);
        let with_max = Extremes::of(Some(8.0), Some(22.0));
        let p95 = quantile(&buckets, 0.95, with_max);
        assert_eq!(p95.reading, chart::Reading::Value);
        // (56.05 - 36) / 23 of the way from 10 s to 22 s.
        assert!((p95.value - (10.0 + 12.0 * 20.05 / 23.0)).abs() < 1e-9, "{p95:?}");
        assert_eq!(quantile(&buckets, 1.0, with_max).value, 22.0);
        // The first bucket holding values starts at the min: p5 of (7.5, 10] from 8 s, not 7.5.
        let p5 = quantile(&buckets, 0.05, with_max);
        assert!((p5.value - (8.0 + 2.0 * 2.95 / 36.0)).abs() < 1e-9, "{p5:?}");
        // Without a max, a figure in the top bucket is only a bound.
        let without = quantile(&buckets, 0.99, Extremes::default());
        assert_eq!((without.value, without.reading), (10.0, chart::Reading::AtLeast));
        assert_eq!(without.reading.say("10 s"), "> 10 s");
        // One series without a max makes the merged step's max unknown.
        assert_eq!(with_max.and(Extremes::of(Some(1.0), None)), Extremes { min: Some(1.0), max: None });
    }

    #[test]
    fn exponential_buckets_merge_when_the_scale_coarsens() {
        let point = ExponentialHistogramDataPoint {
            scale: 1,
            positive: Some(Buckets { offset: 0, bucket_counts: vec![1, 2, 3, 4] }),
            zero_count: 1,
            ..Default::default()
        };
        let e = Exponential::of(&point);
        let coarse = e.at_scale(0);
        assert_eq!(coarse.positive, BTreeMap::from([(0, 3.0), (1, 7.0)]));
        assert_eq!(coarse.count(), e.count());
        // Scale 0: bucket 1 is (2, 4]; the median of 1 + 3 + 7 lies in it.
        let median = quantile(&coarse.buckets(), 0.5, Extremes::default()).value;
        assert!(median > 2.0 && median <= 4.0, "{median}");
        let difference = e.combine(&e, -1.0);
        assert_eq!(difference.count(), 0.0);
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever scale, offsets and counts a point carries, its buckets, quantiles and the
        /// difference of two points are computed without panicking, and bounds stay ordered.
        #[test]
        fn exponential_histograms_of_any_shape_are_drawn(
            scale in any::<i32>(),
            other_scale in any::<i32>(),
            offset in any::<i32>(),
            counts in proptest::collection::vec(0u64..1000, 0..20),
            zero in any::<u64>(),
            threshold in any::<f64>(),
        ) {
            let point = |scale: i32| ExponentialHistogramDataPoint {
                scale,
                zero_count: zero,
                zero_threshold: threshold,
                positive: Some(Buckets { offset, bucket_counts: counts.clone() }),
                negative: Some(Buckets { offset: offset.wrapping_neg(), bucket_counts: counts.clone() }),
                ..Default::default()
            };
            let (a, b) = (Exponential::of(&point(scale)), Exponential::of(&point(other_scale)));
            let combined = a.combine(&b, -1.0);
            for e in [&a, &b, &combined] {
                let buckets = e.buckets();
                for q in [0.0, 0.5, 0.99, 1.0] {
                    let _ = quantile(&buckets, q, Extremes::default());
                    let _ = quantile(&buckets, q, Extremes::of(Some(threshold), Some(threshold * 2.0)));
                }
                prop_assert!(buckets.iter().all(|(lower, upper, _)| lower.partial_cmp(upper) != Some(std::cmp::Ordering::Greater)));
            }
            let labelled: Vec<(String, f64)> = a.buckets().iter().map(|(_, upper, count)| (short(*upper), *count)).collect();
            let svg = chart::bars(&labelled);
            prop_assert!(svg.matches("<rect").count() <= chart::MAX_BARS);
        }

        #[test]
        fn values_read_with_any_unit(value in any::<f64>(), unit in prop_oneof![Just("s"), Just("ms"), Just("By"), Just("{request}"), Just("")]) {
            let text = value_with_unit(value, unit);
            prop_assert!(!text.is_empty() && text.len() < 64, "{text}");
        }
    }

    #[test]
    fn cumulative_points_become_increases() {
        use opentelemetry_proto::tonic::metrics::v1::Histogram;
        let point = |t: u64, counts: Vec<u64>| HistogramDataPoint {
            start_time_unix_nano: 1,
            time_unix_nano: t,
            count: counts.iter().sum(),
            bucket_counts: counts,
            explicit_bounds: vec![1.0],
            ..Default::default()
        };
        let metric = Metric {
            data: Some(Data::Histogram(Histogram {
                aggregation_temporality: 2,
                data_points: vec![point(10, vec![1, 1]), point(20, vec![3, 2]), point(30, vec![1, 0])],
            })),
            ..Default::default()
        };
        let found: Vec<Vec<f64>> = increases(&metric, (5, 100))
            .into_iter()
            .map(|(_, i)| match i {
                Increase::Explicit(_, c, _) => c,
                _ => unreachable!(),
            })
            .collect();
        // The first point started before the range: no baseline. Then +2/+1, then a reset.
        assert_eq!(found, [vec![2.0, 1.0], vec![1.0, 0.0]]);
    }

    #[test]
    fn legends_name_what_tells_series_apart() {
        use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            ..Default::default()
        };
        let (a, b) = (vec![kv("route", "/a"), kv("host", "h")], vec![kv("route", "/b"), kv("host", "h")]);
        let (r1, r2) = (vec![kv("service.name", "x")], vec![kv("service.name", "y")]);
        assert_eq!(legends(&[&a, &b], &[&r1, &r1]), ["route=/a", "route=/b"]);
        assert_eq!(legends(&[&a], &[&r1]), ["route=/a, host=h"]);
        assert_eq!(legends(&[&a, &a], &[&r1, &r2]), ["service.name=x", "service.name=y"]);
        assert_eq!(legends(&[&a, &a], &[&r1, &r1]), ["all points", "all points (#2)"]);
        let c = vec![kv("route", "/a")];
        assert_eq!(
            legends(&[&a, &c], &[&r1, &r1]),
            ["host=h", "all points"],
            "a key one series lacks tells them apart"
        );
    }

    #[test]
    fn legends_of_many_series_with_many_attributes_are_short() {
        use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
        let series: Vec<Vec<KeyValue>> = (0..50)
            .map(|s| {
                (0..12_000)
                    .map(|i| KeyValue {
                        key: format!("attribute.{i}"),
                        value: Some(AnyValue {
                            value: Some(Value::IntValue(if i % 1000 == 0 { s } else { i })),
                        }),
                        ..Default::default()
                    })
                    .collect()
            })
            .collect();
        let points: Vec<&[KeyValue]> = series.iter().map(Vec::as_slice).collect();
        let resources: Vec<&[KeyValue]> = vec![&[]; 50];
        let labels = legends(&points, &resources);
        assert_eq!(labels.len(), 50);
        assert!(labels.iter().all(|l| l.chars().count() <= MAX_LABEL_CHARS + 30), "{}", labels[0]);
        assert!(labels[1].starts_with("attribute.0=1, attribute.1000=1"), "{}", labels[1]);
    }
}
