//! The web UI on the OTLP/HTTP port: services with their RED figures, trace search with a
//! duration scatter plot, a trace as a timeline, log search, and metric charts.
//!
//! Pages are HTML rendered here (maud) from what the query service answers (the same calls the
//! gRPC and JSON APIs make, so one set of SQL and one attribute mapping), with SVG drawn here for
//! the timeline and the charts. The browser gets one small script of our own
//! (`assets/app.js`) for what needs interaction: collapsing subtrees, showing a span's details
//! without reloading a large trace, local times, the time range's absolute inputs. Every
//! screen's state is in its URL. Assets are compiled in; nothing is fetched from elsewhere.
//!
//! With `auth.query_token` set, a page asked for without the token redirects to a sign-in form;
//! the token given there is kept in an HttpOnly, SameSite=Strict cookie that the read APIs
//! accept as well.

mod chart;
mod critical_path;
mod llm;
mod logs;
mod metrics;
pub mod security;
mod service_map;
mod traces;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Query as Params, Request},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Form, Router,
};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use serde::Deserialize;

use crate::{
    auth::{Access, SessionError, SESSION_COOKIE, SESSION_LIFETIME},
    query::{jaeger::typed_value, proto::AttributeFilter, proto::TimeRange, Query},
    receive::conn::{ClientAddr, SIGN_IN_PATH},
};

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/icon.svg");

/// What every page handler gets.
#[derive(Clone)]
pub struct Ui {
    query: Query,
    /// The service colours and when they were read, shared by every page.
    colors: Arc<Mutex<Option<(Instant, Colors)>>>,
}

/// How long the service colours are kept before they are read again.
const COLORS_FRESH: Duration = Duration::from_secs(30);
/// Services given a colour by the order they were first stored, at most; the rest get one by
/// a hash of their name.
const COLORED_SERVICES: i64 = 1000;

impl Ui {
    /// The service colours: read again when older than [`COLORS_FRESH`]; when they cannot be
    /// read, the last ones, or colours by hash alone.
    async fn colors(&self) -> Colors {
        if let Some((read, colors)) = &*self.colors.lock().unwrap_or_else(|e| e.into_inner()) {
            if read.elapsed() < COLORS_FRESH {
                return colors.clone();
            }
        }
        let Ok(services) = self.query.services_by_first_seen(COLORED_SERVICES).await else {
            let kept = self.colors.lock().unwrap_or_else(|e| e.into_inner());
            return kept.as_ref().map(|(_, colors)| colors.clone()).unwrap_or_default();
        };
        let colors = Colors::new(services);
        *self.colors.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), colors.clone()));
        colors
    }
}

/// A categorical palette: hues far apart, each dark enough to read as text on white, none the
/// red that marks errors.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#b8860b", "#8c564b", "#0e8a9c",
    "#5d6d7e",
];

/// A colour per service, the same on every page: services take the palette's colours in the
/// order they were first stored, so the first ten all differ and a service keeps its colour
/// as others arrive.
#[derive(Clone, Default)]
pub struct Colors {
    slots: Arc<HashMap<String, usize>>,
}

impl Colors {
    fn new(services: Vec<String>) -> Self {
        Self { slots: Arc::new(services.into_iter().enumerate().map(|(i, s)| (s, i)).collect()) }
    }

    pub fn of(&self, service: &str) -> &'static str {
        let slot = self
            .slots
            .get(service)
            .copied()
            .unwrap_or_else(|| xxhash_rust::xxh3::xxh3_64(service.as_bytes()) as usize);
        PALETTE[slot % PALETTE.len()]
    }
}

/// The UI's routes, behind the query token. `secure_cookie` marks the sign-in cookie Secure
/// (the listener speaks TLS).
pub fn router(query: Query, access: Access, secure_cookie: bool) -> Router {
    let ui = Ui { query, colors: Arc::default() };
    let pages = Router::new()
        .route("/", get(traces::services))
        .route("/operations", get(traces::operations))
        .route("/traces", get(traces::search))
        .route("/trace/{trace_id}", get(traces::trace))
        .route("/trace/{trace_id}/span/{span_id}", get(traces::span_details))
        .route("/trace/{trace_id}/otlp.json", get(traces::download))
        .route("/logs", get(logs::search))
        .route("/llm", get(llm::overview))
        .route("/llm/calls", get(llm::calls))
        .route("/llm/conversation", get(llm::conversation))
        .route("/metrics", get(metrics::list))
        .route("/metric", get(metrics::chart))
        .with_state(ui)
        .layer(axum::middleware::from_fn({
            let access = access.clone();
            move |request: Request, next: Next| {
                let access = access.clone();
                async move {
                    if access.admits_query(request.headers()).await {
                        return next.run(request).await;
                    }
                    let next_page = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                    Redirect::to(&format!("/login?next={}", encode_component(&next_page))).into_response()
                }
            }
        }));
    Router::new()
        .merge(pages)
        .route(
            SIGN_IN_PATH,
            get(login_form).post({
                let access = access.clone();
                move |client, form| login(access.clone(), secure_cookie, client, form)
            }),
        )
        .route("/logout", axum::routing::post(move |headers| logout(access.clone(), headers)))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/assets/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// A page's query string, in order, repeated names kept (`attr=a=1&attr=b=2`).
#[derive(Deserialize, Default, Clone)]
#[serde(transparent)]
pub struct QueryString {
    pairs: Vec<(String, String)>,
}

/// The extractor of a page's query string.
pub use axum::extract::Query as PageParams;

impl QueryString {
    /// The last non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str()).collect()
    }

    /// This query string with `name` set to `value` (or removed when None), for links.
    pub fn with(&self, name: &str, value: Option<&str>) -> String {
        self.changed(&[(name, value)])
    }

    /// This query string with each name set to its value (or removed when None), for links.
    pub fn changed(&self, changes: &[(&str, Option<&str>)]) -> String {
        let mut pairs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .filter(|(k, v)| !changes.iter().any(|(name, _)| k == name) && !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pairs.extend(changes.iter().filter_map(|(name, value)| value.map(|v| (*name, v))));
        encode_query(&pairs)
    }

    /// This query string with `value` added to the values of `name`, and `page_token` dropped:
    /// for a link that narrows a search.
    pub fn added(&self, name: &str, value: &str) -> String {
        let mut pairs: Vec<(&str, &str)> = self
            .pairs
            .iter()
            .filter(|(k, v)| k != "page_token" && !v.is_empty() && !(k == name && v == value))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pairs.push((name, value));
        encode_query(&pairs)
    }

    /// The time range parameters alone, to carry from one screen to another.
    pub fn range_only(&self) -> String {
        let pairs: Vec<(&str, &str)> = ["range", "start", "end"]
            .into_iter()
            .filter_map(|name| self.get(name).map(|v| (name, v)))
            .collect();
        encode_query(&pairs)
    }
}

/// `path?pairs&carry`, leaving out what is empty.
pub fn href(path: &str, pairs: &[(&str, &str)], carry: &str) -> String {
    let query: Vec<String> =
        [encode_query(pairs), carry.to_owned()].into_iter().filter(|q| !q.is_empty()).collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// A rate for people: three significant digits, however small.
pub fn rate_text(per_second: f64) -> String {
    if per_second == 0.0 {
        "0".to_owned()
    } else if per_second >= 100.0 {
        format!("{per_second:.0}")
    } else {
        let digits = (2 - per_second.log10().floor() as i32).clamp(0, 9) as usize;
        format!("{per_second:.digits$}")
    }
}

/// `a=1&b=2`, percent-encoded.
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn encode_component(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The preset time ranges, their labels and lengths in seconds.
const RANGES: [(&str, &str, u64); 7] = [
    ("5m", "last 5 minutes", 300),
    ("15m", "last 15 minutes", 900),
    ("1h", "last hour", 3_600),
    ("6h", "last 6 hours", 21_600),
    ("24h", "last 24 hours", 86_400),
    ("7d", "last 7 days", 604_800),
    ("30d", "last 30 days", 2_592_000),
];

/// The default range of every screen.
const DEFAULT_RANGE: &str = "1h";

pub use crate::time::now_nanos;
pub use llm::cost_text;

/// The page's time range in nanoseconds: `start` and `end` (milliseconds since the epoch, as
/// the range form's absolute inputs send them) or a preset `range`, the last hour by default.
///
/// # Errors
/// A message for the page when a parameter is not a number or a preset.
pub fn time_range(params: &QueryString) -> Result<(u64, u64), String> {
    let millis = |name: &str| -> Result<Option<u64>, String> {
        params
            .get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map(|ms| ms.saturating_mul(1_000_000))
                    .map_err(|_| format!("{name}: not a time: {v:?}"))
            })
            .transpose()
    };
    let (start, end) = (millis("start")?, millis("end")?);
    if start.is_some() || end.is_some() {
        let end = end.unwrap_or_else(now_nanos);
        let start = start.unwrap_or(end.saturating_sub(3_600_000_000_000));
        if start >= end {
            return Err("the time range's start must be before its end".to_owned());
        }
        return Ok((start, end));
    }
    let name = params.get("range").unwrap_or(DEFAULT_RANGE);
    let seconds = RANGES
        .iter()
        .find(|(preset, _, _)| *preset == name)
        .map(|(_, _, seconds)| *seconds)
        .ok_or_else(|| format!("range: unknown {name:?}"))?;
    let end = now_nanos();
    Ok((end.saturating_sub(seconds * 1_000_000_000), end))
}

pub fn time_range_message(range: (u64, u64)) -> TimeRange {
    TimeRange { start_unix_nano: range.0, end_unix_nano: range.1 }
}

/// A human label of the page's range, for empty states.
pub fn range_label(params: &QueryString) -> String {
    if params.get("start").is_some() || params.get("end").is_some() {
        return "the chosen time range".to_owned();
    }
    let name = params.get("range").unwrap_or(DEFAULT_RANGE);
    RANGES
        .iter()
        .find(|(preset, _, _)| *preset == name)
        .map_or("the time range".to_owned(), |(_, label, _)| format!("the {label}"))
}

/// The time range inputs every search form carries: a preset, or absolute times (filled in
/// and read by the script in the browser's time zone, sent as milliseconds).
/// A local time as the absolute range inputs take it: `2026-12-03 14:05` or `2026-12-03 14:05:09`.
const TIME_PATTERN: &str = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?";

pub fn range_inputs(params: &QueryString) -> Markup {
    let absolute = params.get("start").is_some() || params.get("end").is_some();
    let current = params.get("range").unwrap_or(DEFAULT_RANGE);
    html! {
        label.range {
            "Time range "
            select name="range" data-range-preset {
                @for (preset, label, _) in RANGES {
                    option value=(preset) selected[!absolute && current == preset] { (label) }
                }
                option value="" selected[absolute] { "absolute…" }
            }
        }
        span.absolute hidden[!absolute] {
            // Text, not datetime-local: that one shows the browser's locale's clock (AM/PM in
            // en-US); these read and write 24-hour local time.
            label { "from " input type="text" size="19" pattern=(TIME_PATTERN) placeholder="YYYY-MM-DD HH:MM:SS" data-absolute="start"; }
            label { " to " input type="text" size="19" pattern=(TIME_PATTERN) placeholder="YYYY-MM-DD HH:MM:SS" data-absolute="end"; }
            input type="hidden" name="start" value=(params.text("start"));
            input type="hidden" name="end" value=(params.text("end"));
        }
    }
}

/// Attribute filters typed `key=value` (see [`typed_value`]; `key="text"` is always a string).
///
/// # Errors
/// A message naming a filter without `=`.
pub fn attribute_filters(texts: &[&str]) -> Result<Vec<AttributeFilter>, String> {
    texts
        .iter()
        .map(|text| {
            let (key, value) = text
                .split_once('=')
                .ok_or_else(|| format!("attribute filter {text:?}: write it as key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(quoted) => AnyValue { value: Some(Value::StringValue(quoted.to_owned())) },
                None => typed_value(value),
            };
            Ok(AttributeFilter { key: key.to_owned(), value: Some(value) })
        })
        .collect()
}

/// An attribute filter's text for `key` = `value`, as [`attribute_filters`] reads it back to
/// the same value: strings quoted where they would read as another type or lose their spaces
/// or quotes. None for values a filter cannot name (maps, arrays, bytes, NaN, the infinities).
pub fn filter_text(key: &str, value: &AnyValue) -> Option<String> {
    let text = match value.value.as_ref()? {
        Value::StringValue(s) => {
            let plain = matches!(typed_value(s).value, Some(Value::StringValue(_)))
                && s.trim() == s
                && !(s.starts_with('"') && s.ends_with('"') && s.len() > 1);
            if plain {
                s.clone()
            } else {
                format!("\"{s}\"")
            }
        }
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) if d.is_finite() => format!("{d:?}"),
        _ => return None,
    };
    (!key.contains('=') && key.trim() == key).then(|| format!("{key}={text}"))
}

/// The filter inputs of a search form: one per filter given, and an empty one.
pub fn attribute_inputs(params: &QueryString) -> Markup {
    html! {
        fieldset.attrs {
            legend { "Attributes " small { "key=value: 200 is an int, 2.5 a double, true a bool, \"200\" a string" } }
            @for filter in params.all("attr") {
                input type="text" name="attr" value=(filter) placeholder="http.route=/cart";
            }
            input type="text" name="attr" placeholder="http.route=/cart";
            button type="button" data-add-attr { "+" }
        }
    }
}

/// Which screen a page belongs to, for the navigation bar.
#[derive(PartialEq, Clone, Copy)]
pub enum Screen {
    Services,
    Traces,
    Logs,
    Metrics,
    Llm,
    None,
}

/// A whole page.
pub fn page(title: &str, screen: Screen, params: &QueryString, body: Markup) -> Response {
    let range = params.range_only();
    let link = |path: &str| if range.is_empty() { path.to_owned() } else { format!("{path}?{range}") };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · otelephant" }
                link rel="icon" href="/assets/icon.svg";
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "otelephant" }
                    nav {
                        a href=(link("/")) .current[screen == Screen::Services] { "Services" }
                        a href=(link("/traces")) .current[screen == Screen::Traces] { "Traces" }
                        a href=(link("/logs")) .current[screen == Screen::Logs] { "Logs" }
                        a href=(link("/metrics")) .current[screen == Screen::Metrics] { "Metrics" }
                        a href=(link("/llm")) .current[screen == Screen::Llm] { "LLM" }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// An error from the server, shown where the results would be.
pub fn error_box(message: &str) -> Markup {
    html! { div.error role="alert" { strong { "The server answered with an error: " } (message) } }
}

/// An empty state that says what to do.
pub fn empty(message: &str) -> Markup {
    html! { p.empty { (message) } }
}

/// A time element the script shows in the browser's time zone, with UTC on hover.
pub fn time_el(nanos: u64) -> Markup {
    let millis = nanos / 1_000_000;
    let utc = utc_text(nanos);
    html! { time datetime=(utc) data-ms=(millis) title=(format!("{utc} UTC")) { (utc) " UTC" } }
}

pub use crate::time::utc_text;

/// A duration for people: `812 ns`, `4.2 µs`, `12.5 ms`, `3.04 s`, `2m 5s`.
pub fn duration_text(nanos: u64) -> String {
    let n = nanos as f64;
    match nanos {
        0..=999 => format!("{nanos} ns"),
        1_000..=999_999 => format!("{} µs", significant(n / 1e3)),
        1_000_000..=999_999_999 => format!("{} ms", significant(n / 1e6)),
        1_000_000_000..=59_999_999_999 => format!("{} s", significant(n / 1e9)),
        _ => format!("{}m {}s", nanos / 60_000_000_000, nanos / 1_000_000_000 % 60),
    }
}

/// A step of a chart or table as words: "minute", "5 minutes", "hour", "30 s".
pub fn step_text(nanos: u64) -> String {
    const MINUTE: u64 = 60_000_000_000;
    const HOUR: u64 = 60 * MINUTE;
    match nanos {
        HOUR => "hour".to_owned(),
        MINUTE => "minute".to_owned(),
        n if n > HOUR && n % HOUR == 0 => format!("{} hours", n / HOUR),
        n if n > MINUTE && n % MINUTE == 0 => format!("{} minutes", n / MINUTE),
        n => duration_text(n),
    }
}

/// Three significant digits.
fn significant(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// An AnyValue's type name and its text for people: structured values as indented JSON.
pub fn value_text(value: Option<&AnyValue>) -> (&'static str, String) {
    match value.and_then(|v| v.value.as_ref()) {
        None => ("empty", String::new()),
        Some(Value::StringValue(s)) => ("string", s.clone()),
        Some(Value::BoolValue(b)) => ("bool", b.to_string()),
        Some(Value::IntValue(i)) => ("int", i.to_string()),
        Some(Value::DoubleValue(d)) => ("double", double_text(*d)),
        Some(Value::BytesValue(b)) => ("bytes", hex::encode(b)),
        Some(Value::StringValueStrindex(i)) => ("string index", i.to_string()),
        Some(structured @ Value::ArrayValue(_)) => ("array", pretty(structured, 0)),
        Some(structured @ Value::KvlistValue(_)) => ("map", pretty(structured, 0)),
    }
}

/// A structured value as indented JSON-like text, in the order it was sent: strings quoted,
/// bytes as quoted hex, NaN and the infinities by name.
fn pretty(value: &Value, indent: usize) -> String {
    let inner = "  ".repeat(indent + 1);
    let close = "  ".repeat(indent);
    let nested = |v: Option<&AnyValue>| {
        v.and_then(|v| v.value.as_ref()).map_or_else(|| "null".to_owned(), |v| pretty(v, indent + 1))
    };
    match value {
        Value::StringValue(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => double_text(*d),
        Value::BytesValue(b) => format!("\"0x{}\"", hex::encode(b)),
        Value::StringValueStrindex(i) => format!("strindex {i}"),
        Value::ArrayValue(a) if a.values.is_empty() => "[]".to_owned(),
        Value::ArrayValue(a) => {
            let items: Vec<String> = a.values.iter().map(|v| format!("{inner}{}", nested(Some(v)))).collect();
            format!("[\n{}\n{close}]", items.join(",\n"))
        }
        Value::KvlistValue(l) if l.values.is_empty() => "{}".to_owned(),
        Value::KvlistValue(l) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| {
                    format!(
                        "{inner}{}: {}",
                        serde_json::to_string(&kv.key).unwrap_or_default(),
                        nested(kv.value.as_ref())
                    )
                })
                .collect();
            format!("{{\n{}\n{close}}}", items.join(",\n"))
        }
    }
}

pub fn double_text(d: f64) -> String {
    if d.is_nan() {
        "NaN".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        format!("{d}")
    }
}

/// Longest value a page shows whole, in characters; the rest is cut with a mark (the query
/// API hands values back whole).
pub const MAX_VALUE_CHARS: usize = 16_384;
/// Attributes one table shows at most.
pub const MAX_TABLE_ROWS: usize = 500;

/// An attribute table: key, type, value; at most [`MAX_TABLE_ROWS`] rows, values cut at
/// [`MAX_VALUE_CHARS`].
pub fn attribute_table(attributes: &[KeyValue]) -> Markup {
    html! {
        @if attributes.is_empty() {
            p.none { "none" }
        } @else {
            table.attributes {
                @for kv in attributes.iter().take(MAX_TABLE_ROWS) {
                    @let (kind, text) = value_text(kv.value.as_ref());
                    @let text = cut(&text, MAX_VALUE_CHARS);
                    tr {
                        th { (cut(&kv.key, MAX_VALUE_CHARS)) }
                        td.type { (kind) }
                        td { @if text.contains('\n') { pre { (text) } } @else { (text) } }
                    }
                }
            }
            @if attributes.len() > MAX_TABLE_ROWS {
                p.more { (attributes.len() - MAX_TABLE_ROWS) " more attributes, not shown here: read them through the query API" }
            }
        }
    }
}

/// The string value of attribute `key`.
pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Only a path on this server: never a redirect elsewhere. Browsers drop tabs and line breaks
/// from a URL and read `\\` as `/`, so a path holding any of them, or any other control or
/// space character, or one that a browser would read as `//host`, is refused; characters
/// beyond ASCII are percent-encoded.
fn safe_next(next: Option<&str>) -> String {
    let Some(path) = next else { return "/".to_owned() };
    let refused = !path.starts_with('/')
        || path.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        || path[1..].starts_with('/')
        || path.len() > 2048;
    if refused {
        return "/".to_owned();
    }
    // A percent-encoded slash, tab or backslash right after the first slash decodes to the same.
    let decoded = percent_decoded(path);
    if decoded[1..].starts_with(['/', '\\']) || decoded.chars().any(|c| c.is_control()) {
        return "/".to_owned();
    }
    path.chars()
        .map(|c| if c.is_ascii() { c.to_string() } else { encode_component(&c.to_string()) })
        .collect()
}

/// `%XX` sequences decoded, over and over until none is left, as lossy text.
fn percent_decoded(text: &str) -> String {
    let mut text = text.to_owned();
    for _ in 0..4 {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        let decoded = String::from_utf8_lossy(&out).into_owned();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    text
}

fn login_page(next: &str, failed: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · otelephant" }
                link rel="icon" href="/assets/icon.svg";
                link rel="stylesheet" href="/assets/app.css";
            }
            body.login {
                main {
                    h1 { "otelephant" }
                    p { "This server asks for its query token (" code { "auth.query_token" } ") to show its data." }
                    @if let Some(message) = failed { div.error role="alert" { (message) "." } }
                    form method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        label { "Query token " input type="password" name="token" autocomplete="current-password" autofocus; }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

async fn login_form(Params(query): Params<LoginQuery>) -> Response {
    Html(login_page(&safe_next(query.next.as_deref()), None).into_string()).into_response()
}

async fn login(
    access: Access,
    secure: bool,
    client: Option<axum::Extension<ClientAddr>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let Some(sessions) = &access.sessions else {
        // No query token is set: there is nothing to sign in to.
        return Redirect::to(&next).into_response();
    };
    let client = client.map(|axum::Extension(ClientAddr(addr))| addr.ip());
    let id = match sessions.sign_in(form.token.trim().as_bytes(), client).await {
        Ok(id) => id,
        Err(err) => {
            let status = match err {
                SessionError::BadToken => StatusCode::UNAUTHORIZED,
                SessionError::TooManyFailures(_) => StatusCode::TOO_MANY_REQUESTS,
                SessionError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            return (status, Html(login_page(&next, Some(&err.to_string())).into_string())).into_response();
        }
    };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&next).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Ends the session in the database, not only in this browser: a copied cookie stops working too.
async fn logout(access: Access, headers: axum::http::HeaderMap) -> Response {
    if let Some(sessions) = &access.sessions {
        sessions.sign_out(&headers).await;
    }
    let mut response = Redirect::to("/login").into_response();
    let expired = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(cookie) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Runs `render` on the blocking pool: drawing a large answer must never hold up the async
/// worker threads that ingest and the other reads share.
///
/// # Errors
/// A message for the page when the rendering panicked.
pub async fn blocking<T: Send + 'static>(render: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(render).await.map_err(|err| format!("drawing this page failed: {err}"))
}

/// `text` cut to at most `max` characters, with a mark saying how much was left out.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}… ({} more bytes)", &text[..at], text.len() - at),
    }
}

/// Markup of trusted text made elsewhere in this module (SVG we drew).
pub fn raw(markup: String) -> Markup {
    PreEscaped(markup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_facet_value_reads_back_as_the_same_filter() {
        let values = [
            Value::StringValue("GET".into()),
            Value::StringValue("200".into()),
            Value::StringValue("true".into()),
            Value::StringValue("2.5".into()),
            Value::StringValue(" padded ".into()),
            Value::StringValue("\"quoted\"".into()),
            Value::StringValue("a=b".into()),
            Value::StringValue(String::new()),
            Value::IntValue(-7),
            Value::DoubleValue(200.0),
            Value::DoubleValue(1e300),
            Value::BoolValue(false),
        ];
        for value in values {
            let value = AnyValue { value: Some(value) };
            let text = filter_text("http.route", &value).expect("a scalar");
            let filter = attribute_filters(&[text.as_str()]).expect("reads back");
            assert_eq!(filter[0].key, "http.route");
            assert_eq!(filter[0].value.as_ref(), Some(&value), "{text}");
        }
        let nan = AnyValue { value: Some(Value::DoubleValue(f64::NAN)) };
        assert_eq!(filter_text("k", &nan), None);
        assert_eq!(filter_text("a=b", &AnyValue { value: Some(Value::IntValue(1)) }), None);
    }

    #[test]
    fn services_keep_distinct_colours_as_others_arrive() {
        let first: Vec<String> = (0..PALETTE.len()).map(|i| format!("service-{i}")).collect();
        let colors = Colors::new(first.clone());
        let taken: std::collections::HashSet<&str> = first.iter().map(|s| colors.of(s)).collect();
        assert_eq!(taken.len(), PALETTE.len(), "the first ten services each get their own colour");
        let later = Colors::new(first.iter().cloned().chain(["late".to_owned()]).collect());
        for service in &first {
            assert_eq!(colors.of(service), later.of(service), "{service} keeps its colour");
        }
        assert!(PALETTE.contains(&Colors::default().of("never stored")), "a palette colour by hash");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration_text(812), "812 ns");
        assert_eq!(duration_text(4_200), "4.20 µs");
        assert_eq!(duration_text(12_500_000), "12.5 ms");
        assert_eq!(duration_text(3_040_000_000), "3.04 s");
        assert_eq!(duration_text(125_000_000_000), "2m 5s");
    }

    #[test]
    fn filters_are_typed_and_quotes_force_a_string() {
        let filters =
            attribute_filters(&["http.status_code=200", "route=\"200\"", "ok=true", "x = 2.5"]).unwrap();
        let values: Vec<_> =
            filters.iter().map(|f| (f.key.as_str(), f.value.clone().unwrap().value.unwrap())).collect();
        assert_eq!(values[0], ("http.status_code", Value::IntValue(200)));
        assert_eq!(values[1], ("route", Value::StringValue("200".into())));
        assert_eq!(values[2], ("ok", Value::BoolValue(true)));
        assert_eq!(values[3], ("x", Value::DoubleValue(2.5)));
        assert!(attribute_filters(&["novalue"]).is_err());
    }

    #[test]
    fn structured_values_are_indented_in_the_order_sent() {
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
        let kv = |k: &str, v: Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        let map = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("z", Value::StringValue("last \"first\"".into())),
                kv(
                    "a",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue { value: Some(Value::DoubleValue(f64::NAN)) }],
                    }),
                ),
                kv("b", Value::BytesValue(vec![0xca, 0xfe])),
            ],
        });
        let (kind, text) = value_text(Some(&AnyValue { value: Some(map) }));
        assert_eq!(kind, "map");
        assert_eq!(
            text,
            "{\n  \"z\": \"last \\\"first\\\"\",\n  \"a\": [\n    NaN\n  ],\n  \"b\": \"0xcafe\"\n}"
        );
    }

    #[test]
    fn sign_in_only_sends_people_back_to_this_server() {
        assert_eq!(safe_next(Some("/traces?service=a")), "/traces?service=a");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
        for hostile in [
            "/\t/evil.example",
            "/%09/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/\\evil.example",
            "/\r\nSet-Cookie: a=b",
            "/%0d%0aSet-Cookie:%20a=b",
            "/%250d%250a",
            " /traces",
            "/ /evil.example",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(safe_next(Some("/logs?body=caf%C3%A9&x=ü")), "/logs?body=caf%C3%A9&x=%C3%BC");
    }
}
