//! LLM calls: the overview (calls, tokens, cost, latency and errors per model, provider and
//! service, and over time), the list of calls with its filters, and a conversation, trace or
//! call rendered as a chat. Read through the query service's GetLlmOverview, ListLlmCalls and
//! GetLlmConversation.

use axum::{extract::State, response::Response};
use maud::{html, Markup};
use tonic::Request;

use super::{
    blocking, chart, cut, duration_text, empty, error_box, href, page, range_inputs, range_label, raw,
    step_text, time_el, time_range, time_range_message, PageParams, QueryString, Screen, Ui, MAX_VALUE_CHARS,
};
use crate::query::proto::{
    query_service_server::QueryService, GetLlmConversationRequest, GetLlmOverviewRequest,
    GetLlmOverviewResponse, ListLlmCallsRequest, LlmCall, LlmCallFilters, LlmConversationCall, LlmGroup,
    LlmMessage,
};

/// Points per chart line, about: the step is the range over this, in whole seconds.
const STEPS: u64 = 60;

/// Calls on a page of the list.
const PAGE_SIZE: u32 = 50;

/// USD for people: a cent and more with two decimals, less with two significant digits.
pub fn cost_text(usd: f64) -> String {
    if !usd.is_finite() {
        return "—".to_owned();
    }
    if usd == 0.0 || usd.abs() >= 0.01 {
        return format!("${usd:.2}");
    }
    let decimals = (1.0 - usd.abs().log10().floor()).clamp(2.0, 12.0) as usize;
    format!("${usd:.decimals$}")
}

/// A token count for people: 1,234,567.
fn count_text(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The filters a page's query string gives.
fn filters(params: &QueryString) -> Result<LlmCallFilters, String> {
    let number = |name: &str| -> Result<Option<f64>, String> {
        params
            .get(name)
            .map(|v| v.trim().parse::<f64>().map_err(|_| format!("{name}: not a number: {v:?}")))
            .transpose()
    };
    Ok(LlmCallFilters {
        model: params.text("model").to_owned(),
        provider: params.text("provider").to_owned(),
        service: params.text("service").to_owned(),
        conversation_id: params.text("conversation").to_owned(),
        user_id: params.text("user").to_owned(),
        errors_only: params.get("errors").is_some(),
        min_cost: number("min_cost")?.unwrap_or(0.0),
        min_tokens: number("min_tokens")?.map_or(0, |t| t.max(0.0) as u64),
        kind: params.text("kind").to_owned(),
        trace_id: String::new(),
    })
}

fn filter_form(action: &str, params: &QueryString, list: bool) -> Markup {
    html! {
        form.search method="get" action=(action) {
            label { "Service " input type="text" name="service" value=(params.text("service")) placeholder="any"; }
            label { "Provider " input type="text" name="provider" value=(params.text("provider")) placeholder="any"; }
            label { "Model " input type="text" name="model" value=(params.text("model")) placeholder="any"; }
            @if list {
                label { "Kind " input type="text" name="kind" value=(params.text("kind")) placeholder="any" size="8"; }
                label { "Conversation " input type="text" name="conversation" value=(params.text("conversation")); }
                label { "User " input type="text" name="user" value=(params.text("user")) size="12"; }
                label { "Cost ≥ $" input type="text" name="min_cost" value=(params.text("min_cost")) size="6"; }
                label { "Tokens ≥ " input type="text" name="min_tokens" value=(params.text("min_tokens")) size="7"; }
                label { input type="checkbox" name="errors" value="1" checked[params.get("errors").is_some()]; " errors only" }
            }
            (range_inputs(params))
            button type="submit" { "Show" }
        }
    }
}

/// A page of LLM calls: the filters of `action`, then `body` or the error that kept it.
fn calls_page(action: &str, params: &QueryString, list: bool, body: Result<Markup, String>) -> Response {
    let body = body.unwrap_or_else(|message| error_box(&message));
    page(
        "LLM calls",
        Screen::Llm,
        params,
        html! {
            h1 { "LLM calls" }
            (filter_form(action, params, list))
            (body)
        },
    )
}

pub async fn overview(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    calls_page("/llm", &params, false, overview_body(&ui, &params).await)
}

async fn overview_body(ui: &Ui, params: &QueryString) -> Result<Markup, String> {
    let range = time_range(params)?;
    let second = 1_000_000_000;
    let step = (range.1.saturating_sub(range.0) / STEPS).div_ceil(second).max(1) * second;
    let request = GetLlmOverviewRequest {
        time_range: Some(time_range_message(range)),
        filters: Some(filters(params)?),
        step_nanos: step,
        group_by: params.text("group").to_owned(),
    };
    let overview = ui
        .query
        .get_llm_overview(Request::new(request))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let total = overview.total.clone().unwrap_or_default();
    if total.calls == 0 {
        return Ok(empty(&format!(
            "No model calls in {}. Spans of LLM calls (OpenTelemetry GenAI, OpenInference or OpenLLMetry \
             instrumentation) show here as they arrive.",
            range_label(params)
        )));
    }
    let carry = params.changed(&[("page_token", None), ("group", None)]);
    let group = params.text("group").to_owned();
    let tabs: Vec<(&str, String)> = GROUPS
        .iter()
        .map(|&(value, _)| {
            (value, format!("/llm?{}", params.changed(&[("group", Some(value)), ("page_token", None)])))
        })
        .collect();
    blocking(move || render_overview(&overview, &total, range, step, &carry, &group, &tabs)).await
}

fn render_overview(
    overview: &GetLlmOverviewResponse,
    total: &LlmGroup,
    range: (u64, u64),
    step: u64,
    carry: &str,
    group: &str,
    tabs: &[(&str, String)],
) -> Markup {
    let line = |label: &str, value: &dyn Fn(&crate::query::proto::LlmStep) -> f64| chart::Line {
        label: label.to_owned(),
        color: "#3b6fd8".to_owned(),
        points: overview.steps.iter().map(|s| (s.start_unix_nano, value(s))).collect(),
        readings: Vec::new(),
    };
    let cost = [line("cost", &|s| s.cost)];
    let calls = [line("calls", &|s| s.calls as f64)];
    let p95 = [line("p95", &|s| if s.calls == 0 { f64::NAN } else { s.p95_nanos as f64 })];
    let every = step_text(step);
    let unpriced = total.unpriced_calls;
    html! {
        dl.llm-totals {
            div { dt { "Calls" } dd data-total="calls" { (count_text(total.calls)) } }
            div { dt { "Errors" } dd data-total="errors" { (count_text(total.errors)) } }
            div { dt { "Input tokens" } dd data-total="input" { (count_text(total.input_tokens)) } }
            div { dt { "Output tokens" } dd data-total="output" { (count_text(total.output_tokens)) } }
            div { dt { "Cost" } dd data-total="cost" { (cost_text(total.cost)) } }
            div { dt { "p50 / p95" } dd { (duration_text(total.p50_nanos)) " / " (duration_text(total.p95_nanos)) } }
        }
        @if unpriced > 0 {
            p.note data-unpriced=(unpriced) {
                (count_text(unpriced)) " call(s) have tokens but no cost: their model is in no price table \
                 (README: LLM calls, llm.price_file)."
            }
        }
        div.red {
            figure.red-chart data-chart="cost" { (raw(chart::lines(&cost, range, &|v| cost_text(v)))) figcaption { "Cost per " (every) } }
            figure.red-chart data-chart="calls" { (raw(chart::lines(&calls, range, &|v| format!("{v:.0}")))) figcaption { "Calls per " (every) } }
            figure.red-chart data-chart="p95" { (raw(chart::lines(&p95, range, &|v| duration_text(v.max(0.0) as u64)))) figcaption { "p95 duration, per " (every) } }
        }
        nav.llm-group-by aria-label="Group by" {
            "Sum by "
            @for (&(value, label), (_, link)) in GROUPS.iter().zip(tabs) {
                @if value == group || (value == "model" && group.is_empty()) {
                    strong aria-current="true" { (label) }
                } @else {
                    a href=(link) data-group=(value) { (label) }
                }
                " "
            }
        }
        @if group == "user" || group == "conversation" {
            (owner_table(overview, group, carry))
        } @else {
            (model_table(overview, carry))
        }
        @if overview.groups_truncated {
            p.note { "The 1,000 costliest groups are shown; narrow the filters to see the others." }
        }
        p { a href=(href("/llm/calls", &[], carry)) { "Every call in this range →" } }
    }
}

/// What the overview's table can sum by: the request's `group_by`, and its label.
const GROUPS: [(&str, &str); 3] = [("model", "model"), ("user", "user"), ("conversation", "conversation")];

/// The figures every row of the overview's tables ends with.
fn figures(g: &LlmGroup) -> Markup {
    html! {
        td.num { (count_text(g.calls)) }
        td.num { (count_text(g.errors)) }
        td.num { (count_text(g.input_tokens)) }
        td.num { (count_text(g.output_tokens)) }
        td.num { (count_text(g.cache_read_tokens)) }
        td.num { (count_text(g.reasoning_tokens)) }
        td.num data-cost=(g.cost) {
            (cost_text(g.cost))
            @if g.unpriced_calls > 0 { " " span.unpriced title="calls with no price" { "+" (g.unpriced_calls) " unpriced" } }
        }
        td.num { (duration_text(g.p50_nanos)) }
        td.num { (duration_text(g.p95_nanos)) }
    }
}

const FIGURE_HEADS: [&str; 9] =
    ["Calls", "Errors", "Input", "Output", "Cached", "Reasoning", "Cost", "p50", "p95"];

/// Per user or conversation: the calls of the traces in which a call carries its id.
fn owner_table(overview: &GetLlmOverviewResponse, group: &str, carry: &str) -> Markup {
    html! {
        table.results.llm-groups data-group=(group) {
            thead { tr {
                th { @if group == "user" { "User" } @else { "Conversation" } }
                @for head in FIGURE_HEADS { th.num { (head) } }
            } }
            tbody {
                @for g in &overview.groups {
                    @if group == "user" {
                        tr data-user=(g.user) {
                            td { a href=(href("/llm/calls", &[("user", &g.user)], carry)) { (g.user) } }
                            (figures(g))
                        }
                    } @else {
                        tr data-conversation=(g.conversation) {
                            td { a href=(href("/llm/conversation", &[("id", &g.conversation)], carry)) { (g.conversation) } }
                            (figures(g))
                        }
                    }
                }
            }
        }
    }
}

fn model_table(overview: &GetLlmOverviewResponse, carry: &str) -> Markup {
    html! {
        table.results.llm-groups {
            thead { tr {
                th { "Model" } th { "Provider" } th { "Service" }
                @for head in FIGURE_HEADS { th.num { (head) } }
            } }
            tbody {
                @for g in &overview.groups {
                    tr data-model=(g.model) data-service=(g.service) {
                        td { a href=(href("/llm/calls", &[("model", &g.model), ("service", &g.service)], carry)) { (g.model) } }
                        td { (g.provider) }
                        td { (g.service) }
                        (figures(g))
                    }
                }
            }
        }
    }
}

pub async fn calls(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    calls_page("/llm/calls", &params, true, calls_body(&ui, &params).await)
}

async fn calls_body(ui: &Ui, params: &QueryString) -> Result<Markup, String> {
    let range = time_range(params)?;
    let request = ListLlmCallsRequest {
        time_range: Some(time_range_message(range)),
        filters: Some(filters(params)?),
        page_size: PAGE_SIZE,
        page_token: params.text("page_token").to_owned(),
    };
    let found = ui
        .query
        .list_llm_calls(Request::new(request))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    if found.calls.is_empty() {
        return Ok(empty(&format!("No LLM calls match in {}.", range_label(params))));
    }
    let carry = params.changed(&[("page_token", None)]);
    let next =
        (!found.next_page_token.is_empty()).then(|| params.with("page_token", Some(&found.next_page_token)));
    blocking(move || {
        html! {
            table.results.llm-calls {
                thead { tr {
                    th { "Time" } th { "Service" } th { "Kind" } th { "Model" } th.num { "Input" } th.num { "Output" }
                    th.num { "Cost" } th.num { "Duration" } th.num { "First token" } th { "Finish" }
                    th { "Conversation" } th { "User" } th { "" }
                } }
                tbody {
                    @for c in &found.calls { (call_row(c, &carry)) }
                }
            }
            @if let Some(next) = next { p { a.next href=(format!("/llm/calls?{next}")) { "Older calls →" } } }
        }
    })
    .await
}

/// The model a call is shown by: its response model, else its request model.
fn model_of(call: &LlmCall) -> &str {
    if call.response_model.is_empty() {
        &call.request_model
    } else {
        &call.response_model
    }
}

fn tokens_text(tokens: Option<u64>) -> String {
    tokens.map_or_else(|| "—".to_owned(), count_text)
}

fn call_cost(call: &LlmCall) -> Markup {
    match call.cost {
        Some(cost) => {
            html! { span title=(format!("{} ({})", call.cost_source, call.price_model)) { (cost_text(cost)) } }
        }
        None if call.input_tokens.is_some() || call.output_tokens.is_some() => {
            html! { span.unpriced title="no price is known for this model" { "unpriced" } }
        }
        None => html! { "—" },
    }
}

fn call_row(c: &LlmCall, carry: &str) -> Markup {
    html! {
        tr.error[!c.error.is_empty()] data-span=(c.span_id) {
            td { (time_el(c.start_unix_nano)) }
            td { (c.service) }
            td { (c.kind) @if !c.tool_name.is_empty() { " " code { (c.tool_name) } } @if !c.agent_name.is_empty() { " " code { (c.agent_name) } } }
            td { (model_of(c)) @if !c.provider.is_empty() { " " small { (c.provider) } } }
            td.num { (tokens_text(c.input_tokens)) }
            td.num { (tokens_text(c.output_tokens)) }
            td.num { (call_cost(c)) }
            td.num { (duration_text(c.duration_nanos)) }
            td.num { @if let Some(t) = c.time_to_first_token_nanos { (duration_text(t)) } }
            td { (c.finish_reason) @if !c.error.is_empty() { " " span.err { (c.error) } } }
            td { @if !c.conversation_id.is_empty() {
                a href=(href("/llm/conversation", &[("id", &c.conversation_id)], carry)) { (c.conversation_id) }
            } }
            td { (c.user_id) }
            td.links {
                a href=(href("/llm/conversation", &[("trace_id", &c.trace_id), ("span_id", &c.span_id)], carry)) { "chat" }
                " · "
                a href=(format!("/trace/{}", c.trace_id)) { "trace" }
            }
        }
    }
}

pub async fn conversation(State(ui): State<Ui>, PageParams(params): PageParams<QueryString>) -> Response {
    let body = conversation_body(&ui, &params).await.unwrap_or_else(|message| error_box(&message));
    let title = match params.get("id") {
        Some(id) => format!("Conversation {id}"),
        None if params.get("span_id").is_some() => "LLM call".to_owned(),
        None => format!("Trace {}", params.text("trace_id")),
    };
    page(
        &title,
        Screen::Llm,
        &params,
        html! {
            h1 { (title) }
            (body)
        },
    )
}

async fn conversation_body(ui: &Ui, params: &QueryString) -> Result<Markup, String> {
    let range = time_range(params)?;
    let request = GetLlmConversationRequest {
        time_range: Some(time_range_message(range)),
        conversation_id: params.text("id").to_owned(),
        trace_id: params.text("trace_id").to_owned(),
        span_id: params.text("span_id").to_owned(),
    };
    let found = ui
        .query
        .get_llm_conversation(Request::new(request))
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    if found.calls.is_empty() {
        return Ok(empty(&format!("No LLM calls of it in {}.", range_label(params))));
    }
    blocking(move || {
        let mut transcript = Transcript::default();
        let calls = html! {
            @for call in &found.calls {
                (chat_call(call, &mut transcript))
            }
        };
        html! {
            p.llm-sums {
                (found.calls.len()) " call(s) · " (count_text(found.input_tokens)) " input and "
                (count_text(found.output_tokens)) " output tokens · " span data-total="cost" { (cost_text(found.cost)) }
            }
            @if found.truncated { p.note { "The first 200 calls are shown." } }
            ol.chat { (calls) }
            @if transcript.hidden > 0 {
                p.note data-hidden=(transcript.hidden) {
                    (transcript.hidden) " more message(s) not shown: a page shows "
                    (MAX_PAGE_MESSAGE_BYTES / (1 << 20)) " MiB of messages at most; GetLlmConversation gives every one."
                }
            }
        }
    })
    .await
}

/// Text of messages one conversation page shows at most; the messages past it are counted.
const MAX_PAGE_MESSAGE_BYTES: usize = 4 << 20;

/// What a conversation page has shown so far.
struct Transcript {
    /// The previous call's messages (see [`message_key`]).
    previous: Vec<String>,
    /// Bytes of message text the page may still show.
    left: usize,
    /// Messages not shown once `left` ran out.
    hidden: usize,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript { previous: Vec::new(), left: MAX_PAGE_MESSAGE_BYTES, hidden: 0 }
    }
}

impl Transcript {
    /// Whether `message` is shown, taking its bytes from what is left.
    fn admits(&mut self, message: &LlmMessage) -> bool {
        if self.left == 0 {
            self.hidden += 1;
            return false;
        }
        let bytes: usize = message
            .parts
            .iter()
            .map(|p| {
                p.content.len().min(MAX_VALUE_CHARS * 4) + p.arguments.len().min(MAX_VALUE_CHARS * 4) + 64
            })
            .sum();
        self.left = self.left.saturating_sub(bytes.max(1));
        true
    }
}

/// A message's identity, to tell a call's input that repeats the transcript so far.
fn message_key(message: &LlmMessage) -> String {
    let parts: Vec<String> = message
        .parts
        .iter()
        .map(|p| {
            format!(
                "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
                p.r#type, p.content, p.tool_call_id, p.tool_name, p.arguments
            )
        })
        .collect();
    format!("{}\u{2}{}", message.role, parts.join("\u{3}"))
}

/// One call: its header, the input messages the transcript does not hold yet (a call's input
/// usually repeats the messages before it), and its answer.
fn chat_call(entry: &LlmConversationCall, transcript: &mut Transcript) -> Markup {
    let Some(call) = entry.call.as_ref() else { return html! {} };
    let keys: Vec<String> = entry.input.iter().map(message_key).collect();
    let repeated = keys.iter().zip(transcript.previous.iter()).take_while(|(a, b)| a == b).count();
    transcript.previous = keys.into_iter().chain(entry.output.iter().map(message_key)).collect();
    let shown: Vec<(&LlmMessage, bool)> = entry
        .input
        .iter()
        .skip(repeated)
        .map(|m| (m, false))
        .chain(entry.output.iter().map(|m| (m, true)))
        .filter(|(m, _)| transcript.admits(m))
        .collect();
    html! {
        li.call data-span=(call.span_id) data-kind=(call.kind) {
            div.call-head {
                strong { (call.kind) } " " (model_of(call))
                @if !call.tool_name.is_empty() { " " code { (call.tool_name) } }
                " · " (time_el(call.start_unix_nano)) " · " (duration_text(call.duration_nanos))
                @if call.input_tokens.is_some() || call.output_tokens.is_some() {
                    " · " (tokens_text(call.input_tokens)) " in / " (tokens_text(call.output_tokens)) " out"
                }
                " · " (call_cost(call))
                @if !call.error.is_empty() { " · " span.err { (call.error) } }
                " · " a href=(format!("/trace/{}", call.trace_id)) { "trace" }
            }
            @if entry.input.is_empty() && entry.output.is_empty() {
                @if matches!(call.kind.as_str(), "llm" | "embedding") {
                    p.note { "No messages were captured for this call (content capture is off in its instrumentation)." }
                }
            } @else {
                @if repeated > 0 { p.repeated { (repeated) " earlier message(s) not repeated" } }
                @for (message, output) in shown { (bubble(message, output)) }
                p.source { "messages from " (entry.source) }
            }
        }
    }
}

fn bubble(message: &LlmMessage, output: bool) -> Markup {
    let role = if message.role.is_empty() { "message" } else { message.role.as_str() };
    html! {
        div.msg data-role=(role) data-output[output] {
            div.role { (role) @if !message.finish_reason.is_empty() { " " small { "(" (message.finish_reason) ")" } } }
            @for part in &message.parts {
                @match part.r#type.as_str() {
                    "tool_call" => div.tool-call {
                        "calls " code { (cut(&part.tool_name, MAX_VALUE_CHARS)) }
                        @if !part.tool_call_id.is_empty() { " " small { (cut(&part.tool_call_id, MAX_VALUE_CHARS)) } }
                        pre { (cut(&part.arguments, MAX_VALUE_CHARS)) }
                    },
                    "tool_call_response" => div.tool-result {
                        "result" @if !part.tool_call_id.is_empty() { " of " small { (cut(&part.tool_call_id, MAX_VALUE_CHARS)) } }
                        pre { (cut(&part.content, MAX_VALUE_CHARS)) }
                    },
                    "reasoning" => div.reasoning { pre { (cut(&part.content, MAX_VALUE_CHARS)) } },
                    _ => div.text { (cut(&part.content, MAX_VALUE_CHARS)) },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_and_counts_read_as_people_write_them() {
        assert_eq!(cost_text(12.345), "$12.35");
        assert_eq!(cost_text(0.00036), "$0.00036");
        assert_eq!(cost_text(0.0014), "$0.0014");
        assert_eq!(cost_text(0.000_000_5), "$0.00000050");
        assert_eq!(cost_text(0.0), "$0.00");
        assert_eq!(cost_text(f64::NAN), "—");
        assert_eq!(count_text(1_234_567), "1,234,567");
        assert_eq!(count_text(12), "12");
    }

    #[test]
    fn a_calls_input_that_repeats_the_transcript_is_not_shown_again() {
        let text = |role: &str, content: &str| LlmMessage {
            role: role.into(),
            parts: vec![crate::query::proto::LlmPart {
                r#type: "text".into(),
                content: content.into(),
                ..Default::default()
            }],
            finish_reason: String::new(),
        };
        let call = |input: Vec<LlmMessage>, output: Vec<LlmMessage>| LlmConversationCall {
            call: Some(LlmCall { kind: "llm".into(), ..Default::default() }),
            input,
            output,
            source: "span messages".into(),
        };
        let mut previous = Transcript::default();
        let first =
            chat_call(&call(vec![text("user", "hi")], vec![text("assistant", "hello")]), &mut previous)
                .into_string();
        assert!(first.contains(">hi<") && first.contains(">hello<"), "{first}");
        let second = chat_call(
            &call(vec![text("user", "hi"), text("assistant", "hello"), text("user", "again <b>")], vec![]),
            &mut previous,
        )
        .into_string();
        assert!(!second.contains(">hi<"), "{second}");
        assert!(second.contains("2 earlier message(s) not repeated"), "{second}");
        assert!(second.contains("again &lt;b&gt;"), "escaped: {second}");
        let long = "x".repeat(MAX_VALUE_CHARS + 10);
        let third = chat_call(&call(vec![], vec![text("assistant", &long)]), &mut previous).into_string();
        assert!(
            third.contains("… (10 more bytes)") && third.len() < MAX_VALUE_CHARS + 2000,
            "cut and marked"
        );
    }

    #[test]
    fn a_page_shows_a_bounded_amount_of_messages_and_counts_the_rest() {
        let message = LlmMessage {
            role: "user".into(),
            parts: vec![crate::query::proto::LlmPart {
                r#type: "text".into(),
                content: "x".repeat(MAX_VALUE_CHARS),
                ..Default::default()
            }],
            finish_reason: String::new(),
        };
        let entry = LlmConversationCall {
            call: Some(LlmCall { kind: "llm".into(), ..Default::default() }),
            input: vec![message; 1000],
            output: Vec::new(),
            source: "span messages".into(),
        };
        let mut transcript = Transcript::default();
        let page = chat_call(&entry, &mut transcript).into_string();
        assert!(page.len() < MAX_PAGE_MESSAGE_BYTES + MAX_VALUE_CHARS * 4, "{} bytes", page.len());
        assert!(transcript.hidden > 0 && transcript.hidden < 1000, "{} hidden", transcript.hidden);
    }
}
