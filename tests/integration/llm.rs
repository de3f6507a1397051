//! LLM calls: spans of model calls sent by real instrumentations (the `openai` client with
//! OpenTelemetry's GenAI instrumentation, in its default and newest forms, and with
//! OpenInference's), against a local stub of the chat completions API
//! (`tests/e2e/genai_client.py`), land as `llm_calls` rows with their tokens and cost, checked
//! against SQL's own reading of the spans' attributes; and a user's price file prices them.

use std::time::Duration;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::any_value::Value,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use tokio::process::Command;

use crate::common::{
    binary::{self, free_port},
    clients::{e2e_python, repo, url},
    fixtures::query::resource,
    otlp::{kv, s},
    *,
};

/// gpt-4o-mini's prices in the shipped table (prices/litellm.json), per token.
const MINI_INPUT: f64 = 1.5e-7;
const MINI_CACHED: f64 = 7.5e-8;
const MINI_OUTPUT: f64 = 6e-7;

/// What the stub's every answer reports (tests/e2e/genai_client.py `USAGE`).
const INPUT: i64 = 1200;
const OUTPUT: i64 = 300;
const CACHED: i64 = 1000;
const REASONING: i64 = 100;

/// One `llm_calls` row, as the test reads it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: String,
    kind: String,
    provider: Option<String>,
    request_model: Option<String>,
    response_model: Option<String>,
    tokens: [Option<i64>; 6],
    cost: Option<f64>,
    cost_source: Option<i32>,
    price_model: Option<String>,
    ttft: Option<i64>,
    duration: i64,
    finish_reason: Option<String>,
    conversation: Option<String>,
    user: Option<String>,
    agent: Option<String>,
}

/// Runs the instrumented application in `mode` against a fresh server; its trace's calls in
/// the order they started, and the trace id.
async fn run(mode: &str) -> (TestServer, Vec<Row>, String) {
    let python = e2e_python().await;
    let t = TestServer::start().await;
    let service = format!("llm-{mode}-{}", std::process::id());
    let endpoint = format!("http://{}", t.server.as_ref().expect("running").http_addr);
    let output = Command::new(python)
        .arg(repo().join("tests/e2e/genai_client.py"))
        .args([mode, &endpoint, &service])
        .output()
        .await
        .expect("run the instrumented client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed or an export failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trace_id = stdout.split_whitespace().find_map(|w| w.strip_prefix("trace_id=")).expect("a trace id");
    let rows = t
        .sql
        .query(
            "SELECT s.name, c.kind, c.provider, c.request_model, c.response_model, c.input_tokens,
                    c.output_tokens, c.total_tokens, c.cache_read_tokens, c.cache_write_tokens,
                    c.reasoning_tokens, c.cost, c.cost_source, c.price_model, c.time_to_first_token_nano,
                    c.end_time_unix_nano - c.start_time_unix_nano, c.finish_reason, c.conversation_id,
                    c.user_id, c.agent_name
             FROM llm_calls c JOIN spans s USING (trace_id, span_id) JOIN resources r ON r.resource_id = c.resource_id
             WHERE c.trace_id = decode($1, 'hex') AND r.service_name = $2
             ORDER BY c.start_time_unix_nano, c.kind",
            &[&trace_id, &service],
        )
        .await
        .expect("llm calls");
    let rows = rows
        .iter()
        .map(|r| Row {
            name: r.get(0),
            kind: r.get(1),
            provider: r.get(2),
            request_model: r.get(3),
            response_model: r.get(4),
            tokens: [r.get(5), r.get(6), r.get(7), r.get(8), r.get(9), r.get(10)],
            cost: r.get(11),
            cost_source: r.get(12),
            price_model: r.get(13),
            ttft: r.get(14),
            duration: r.get(15),
            finish_reason: r.get(16),
            conversation: r.get(17),
            user: r.get(18),
            agent: r.get(19),
        })
        .collect();
    (t, rows, trace_id.to_owned())
}

/// Every span of the trace has its row, and the rows' tokens are what SQL reads from the
/// spans' own attributes under `keys` (input, output, cache read, reasoning).
async fn assert_every_span_has_its_row(t: &TestServer, trace_id: &str, keys: [&str; 4]) {
    let mismatched: i64 = t
        .sql
        .query_one(
            "SELECT count(*) FROM spans s FULL JOIN llm_calls c USING (trace_id, span_id)
             WHERE (s.trace_id = decode($1, 'hex') OR c.trace_id = decode($1, 'hex'))
               AND (s.span_id IS NULL OR c.span_id IS NULL
                    OR c.input_tokens IS DISTINCT FROM (s.attributes->>$2)::bigint
                    OR c.output_tokens IS DISTINCT FROM (s.attributes->>$3)::bigint
                    OR c.cache_read_tokens IS DISTINCT FROM (s.attributes->>$4)::bigint
                    OR c.reasoning_tokens IS DISTINCT FROM (s.attributes->>$5)::bigint)",
            &[&trace_id, &keys[0], &keys[1], &keys[2], &keys[3]],
        )
        .await
        .expect("compare")
        .get(0);
    assert_eq!(mismatched, 0, "spans without their row, or rows whose tokens differ from the span's");
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() <= b * 1e-9)
}

/// The model calls of every mode: the chat, the tool call, the answer to the tool's result,
/// the streamed answer.
fn assert_model_calls(
    rows: &[Row],
    conversation: Option<&str>,
    finish: [Option<&str>; 4],
    cost: f64,
    cached: bool,
) {
    let calls: Vec<&Row> = rows.iter().filter(|r| r.kind == "llm").collect();
    assert_eq!(calls.len(), 4, "{rows:#?}");
    for (call, finish) in calls.iter().zip(finish) {
        assert_eq!(call.provider.as_deref(), Some("openai"), "{call:?}");
        assert_eq!(call.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"), "{call:?}");
        let (cache_read, reasoning) = if cached { (Some(CACHED), Some(REASONING)) } else { (None, None) };
        assert_eq!(
            call.tokens,
            [Some(INPUT), Some(OUTPUT), Some(INPUT + OUTPUT), cache_read, None, reasoning],
            "{call:?}"
        );
        assert_eq!(call.cost_source, Some(2), "priced by otelephant: {call:?}");
        assert_eq!(call.price_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert!(close(call.cost, cost), "{call:?} costs {cost}");
        assert_eq!(call.finish_reason.as_deref(), finish, "{call:?}");
        assert_eq!(call.conversation.as_deref(), conversation, "{call:?}");
    }
}

/// The calls openai-v2 sends in `mode`: no cached or reasoning tokens (so all input is priced
/// as uncached) and no finish reason for the streamed answer.
async fn openai_v2_calls(mode: &str) -> (TestServer, Vec<Row>, String) {
    let (t, rows, trace_id) = run(mode).await;
    assert_every_span_has_its_row(
        &t,
        &trace_id,
        ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "none", "none"],
    )
    .await;
    let cost = INPUT as f64 * MINI_INPUT + OUTPUT as f64 * MINI_OUTPUT;
    assert_model_calls(&rows, None, [Some("stop"), Some("tool_calls"), Some("stop"), None], cost, false);
    (t, rows, trace_id)
}

#[tokio::test]
async fn openai_v2_default_output_lands_as_llm_calls_with_tokens_and_cost() {
    let (_t, rows, _) = openai_v2_calls("genai").await;
    for call in rows.iter().filter(|r| r.kind == "llm") {
        assert_eq!(call.name, "chat gpt-4o-mini");
        assert_eq!(call.request_model.as_deref(), Some("gpt-4o-mini"));
    }
    let agent = rows.iter().find(|r| r.kind == "agent").expect("the application's agent span");
    assert_eq!(agent.agent.as_deref(), Some("weather-agent"));
    assert_eq!(
        agent.conversation.as_deref(),
        Some(format!("conv-llm-genai-{}", std::process::id()).as_str())
    );
    assert_eq!(agent.user.as_deref(), Some("user-ada"));
    assert_eq!((agent.cost, agent.tokens), (None, [None; 6]), "the agent's span reports no usage");
    assert_eq!(rows.len(), 5);
}

#[tokio::test]
async fn openai_v2_newest_conventions_land_as_llm_calls() {
    let (t, _, trace_id) = openai_v2_calls("genai-latest").await;
    // Named by gen_ai.provider.name in this form.
    let named: i64 = t
        .sql
        .query_one(
            "SELECT count(*) FROM spans WHERE trace_id = decode($1, 'hex') AND attributes ? 'gen_ai.provider.name'",
            &[&trace_id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(named, 4);
}

#[tokio::test]
async fn openinference_lands_as_llm_calls_with_cached_and_reasoning_tokens() {
    let (t, rows, trace_id) = run("openinference").await;
    assert_every_span_has_its_row(
        &t,
        &trace_id,
        [
            "llm.token_count.prompt",
            "llm.token_count.completion",
            "llm.token_count.prompt_details.cache_read",
            "llm.token_count.completion_details.reasoning",
        ],
    )
    .await;
    // 200 uncached and 1,000 cached input tokens; gpt-4o-mini has no reasoning rate of its own.
    let cost =
        (INPUT - CACHED) as f64 * MINI_INPUT + CACHED as f64 * MINI_CACHED + OUTPUT as f64 * MINI_OUTPUT;
    let conversation = format!("conv-llm-openinference-{}", std::process::id());
    assert_model_calls(
        &rows,
        Some(&conversation),
        [Some("stop"), Some("tool_calls"), Some("stop"), Some("stop")],
        cost,
        true,
    );
    let calls: Vec<&Row> = rows.iter().filter(|r| r.kind == "llm").collect();
    for call in &calls {
        assert_eq!(call.name, "ChatCompletion");
        assert_eq!(call.user.as_deref(), Some("user-ada"));
    }
    // The streamed answer's first token came with OpenInference's event, inside the call.
    let streamed = calls[3];
    let ttft = streamed.ttft.expect("a time to first token");
    assert!(ttft > 0 && ttft < streamed.duration, "{streamed:?}");
    assert!(calls[..3].iter().all(|c| c.ttft.is_none()), "only the streamed call has one");

    // The view people and Grafana read: per model, the trace's model calls summed.
    let view = t
        .sql
        .query_one(
            "SELECT model, count(*), sum(total_tokens)::bigint, sum(cost), min(cost_source), max(time_to_first_token_ms)::float8
             FROM llm_calls_view WHERE trace_id = $1 AND kind = 'llm' AND service_name LIKE 'llm-openinference-%'
             GROUP BY model",
            &[&trace_id],
        )
        .await
        .expect("the view");
    assert_eq!(view.get::<_, String>(0), "gpt-4o-mini-2024-07-18");
    assert_eq!(view.get::<_, i64>(1), 4);
    assert_eq!(view.get::<_, i64>(2), 4 * (INPUT + OUTPUT));
    assert!(close(view.get(3), 4.0 * cost));
    assert_eq!(view.get::<_, String>(4), "priced");
    assert_eq!(view.get::<_, f64>(5), ttft as f64 / 1e6);
}

/// A span of a model call, as an application would send it.
pub fn model_call(model: &str, input: i64, output: i64) -> ExportTraceServiceRequest {
    let now = nanos_now();
    let int = |v| Value::IntValue(v);
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        name: format!("chat {model}"),
        kind: 3,
        start_time_unix_nano: now - 2_000_000_000,
        end_time_unix_nano: now,
        attributes: vec![
            kv("gen_ai.operation.name", s("chat")),
            kv("gen_ai.provider.name", s("openai")),
            kv("gen_ai.request.model", s(model)),
            kv("gen_ai.usage.input_tokens", int(input)),
            kv("gen_ai.usage.output_tokens", int(output)),
        ],
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("priced"),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

#[tokio::test]
async fn a_users_price_file_replaces_and_adds_prices_and_a_bad_one_stops_start_up() {
    let dir = std::env::temp_dir().join(format!("otelephant-prices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = dir.join("prices.json");
    std::fs::write(
        &file,
        r#"{"gpt-4o-mini": {"litellm_provider": "openai", "input_cost_per_token": 0.001, "output_cost_per_token": 0.002},
            "house-llm": {"litellm_provider": "openai", "input_cost_per_token": 0.01, "output_cost_per_token": 0.1}}"#,
    )
    .expect("write the price file");

    let schema = TestSchema::new();
    let mut server = binary::start_with(&schema, |command| {
        command.env("RUST_LOG", "warn").env("OTELEPHANT_LLM__PRICE_FILE", &file)
    })
    .await;
    let mut client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
            format!("http://127.0.0.1:{}", server.grpc),
        )
        .await
        .expect("connect");
    for (model, input, output) in [("gpt-4o-mini", 100, 10), ("house-llm", 100, 10), ("unknown-llm", 100, 10)]
    {
        let mut request = model_call(model, input, output);
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.span_id = model.bytes().take(8).collect();
        client.export(request).await.expect("stored");
    }
    let sql = schema.sql().await;
    let rows = sql
        .query(
            "SELECT request_model, cost, cost_source, price_model FROM llm_calls ORDER BY request_model",
            &[],
        )
        .await
        .expect("calls");
    /// A call's model, cost, cost source and price entry.
    type Priced = (String, Option<f64>, Option<i32>, Option<String>);
    let got: Vec<Priced> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, "gpt-4o-mini");
    assert!(
        close(got[0].1, 100.0 * 0.001 + 10.0 * 0.002),
        "the user's price replaces the shipped one: {got:?}"
    );
    assert_eq!(got[0].3.as_deref(), Some("gpt-4o-mini"));
    assert!(close(got[1].1, 100.0 * 0.01 + 10.0 * 0.1), "the user's model is priced: {got:?}");
    assert_eq!(got[2], ("unknown-llm".into(), None, None, None), "tokens without a price have no cost");
    binary::signal(&server.child, "-TERM");
    server.child.wait().await.expect("exits");

    // A file that is not a price file stops start-up, naming it.
    std::fs::write(&file, "[1, 2, 3]").expect("write");
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_otelephant"))
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .env("OTELEPHANT_POSTGRES__URL", database_url())
            .env("OTELEPHANT_POSTGRES__SCHEMA", &schema.name)
            .env("OTELEPHANT_LLM__PRICE_FILE", &file)
            .output(),
    )
    .await
    .expect("exits at once")
    .expect("ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("llm.price_file") && stderr.contains("prices.json"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_query_service_lists_llm_calls_and_sums_them_per_model_over_grpc_and_json() {
    use otelephant::query::proto::{
        query_service_client::QueryServiceClient, GetLlmOverviewRequest, ListLlmCallsRequest, LlmCallFilters,
    };
    let (t, rows, trace_id) = run("genai").await;
    let service = format!("llm-genai-{}", std::process::id());
    let mut query = QueryServiceClient::connect(t.endpoint()).await.expect("connect");
    let filters = |f: LlmCallFilters| Some(LlmCallFilters { service: service.clone(), ..f });

    // Newest first, two a page, every call of the trace once.
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = query
            .list_llm_calls(ListLlmCallsRequest {
                filters: filters(LlmCallFilters::default()),
                page_size: 2,
                page_token: token.clone(),
                ..ListLlmCallsRequest::default()
            })
            .await
            .expect("a page")
            .into_inner();
        assert!(page.calls.len() <= 2);
        listed.extend(page.calls);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let expected: Vec<String> = t
        .sql
        .query(
            "SELECT encode(span_id, 'hex') FROM llm_calls WHERE trace_id = decode($1, 'hex')
             ORDER BY start_time_unix_nano DESC, span_id DESC",
            &[&trace_id],
        )
        .await
        .expect("calls")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(listed.iter().map(|c| c.span_id.clone()).collect::<Vec<_>>(), expected);
    let chat = listed.iter().find(|c| c.kind == "llm").expect("a model call");
    assert_eq!(
        (chat.input_tokens, chat.output_tokens, chat.total_tokens),
        (Some(1200), Some(300), Some(1500))
    );
    assert_eq!(chat.cost_source, "priced");
    assert_eq!(chat.service, service);
    assert_eq!(chat.trace_id, trace_id);

    // A conversation is the traces where a span carries its id: here the agent's span does, and
    // its four model calls are in the conversation with it.
    let conversation = format!("conv-{service}");
    let in_conversation = query
        .list_llm_calls(ListLlmCallsRequest {
            filters: filters(LlmCallFilters {
                conversation_id: conversation.clone(),
                ..LlmCallFilters::default()
            }),
            page_size: 100,
            ..ListLlmCallsRequest::default()
        })
        .await
        .expect("the conversation's calls")
        .into_inner();
    assert_eq!(in_conversation.calls.len(), 5);
    let errors = query
        .list_llm_calls(ListLlmCallsRequest {
            filters: filters(LlmCallFilters { errors_only: true, ..LlmCallFilters::default() }),
            ..ListLlmCallsRequest::default()
        })
        .await
        .expect("no errors")
        .into_inner();
    assert!(errors.calls.is_empty());
    let costly = query
        .list_llm_calls(ListLlmCallsRequest {
            filters: filters(LlmCallFilters {
                min_cost: 0.0001,
                kind: "llm".into(),
                ..LlmCallFilters::default()
            }),
            ..ListLlmCallsRequest::default()
        })
        .await
        .expect("costly calls")
        .into_inner();
    assert_eq!(costly.calls.len(), 4, "each call cost 0.00036");

    // The overview over HTTP/JSON: one group, the model calls only (not the agent's span), per
    // second in steps; figures as SQL computes them from the rows.
    let end = nanos_now();
    let response = reqwest::Client::new()
        .post(url(&t, "/otelephant.query.v1.QueryService/GetLlmOverview"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"filters": {"service": service}, "stepNanos": "1000000000",
                               "timeRange": {"startUnixNano": (end - 600_000_000_000).to_string(),
                                             "endUnixNano": end.to_string()}})
            .to_string(),
        )
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    let overview: serde_json::Value = response.json().await.expect("JSON");
    let sums = t
        .sql
        .query_one(
            "SELECT count(*), sum(cost),
                    percentile_disc(0.5) WITHIN GROUP (ORDER BY end_time_unix_nano - start_time_unix_nano),
                    percentile_disc(0.95) WITHIN GROUP (ORDER BY end_time_unix_nano - start_time_unix_nano)
             FROM llm_calls WHERE trace_id = decode($1, 'hex') AND kind = 'llm'",
            &[&trace_id],
        )
        .await
        .expect("sums");
    let groups = overview["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{overview}");
    let group = &groups[0];
    assert_eq!(group["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(group["provider"], "openai");
    assert_eq!(group["service"], service.as_str());
    assert_eq!(group["calls"], "4");
    assert_eq!(group["inputTokens"], "4800");
    assert_eq!(group["outputTokens"], "1200");
    assert!((group["cost"].as_f64().expect("cost") - sums.get::<_, f64>(1)).abs() < 1e-12);
    assert_eq!(group["p50Nanos"], sums.get::<_, i64>(2).to_string());
    assert_eq!(group["p95Nanos"], sums.get::<_, i64>(3).to_string());
    assert_eq!(overview["total"]["calls"], "4");
    assert!(overview.get("groupsTruncated").is_none());
    let steps = overview["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 600, "one per second of the ten minutes asked for");
    let stepped: u64 =
        steps.iter().filter_map(|s| s["calls"].as_str()).map(|c| c.parse::<u64>().expect("a count")).sum();
    assert_eq!(stepped, 4);
    assert_eq!(rows.iter().filter(|r| r.kind == "llm").count(), 4);

    // Summed per user and per conversation: the agent's span carries both ids, and the four
    // model calls of its trace count for them.
    let user = "user-ada";
    for (group_by, owner) in [("user", user.to_owned()), ("conversation", conversation.clone())] {
        let overview = query
            .get_llm_overview(GetLlmOverviewRequest {
                filters: filters(LlmCallFilters::default()),
                group_by: group_by.into(),
                ..GetLlmOverviewRequest::default()
            })
            .await
            .expect("per owner")
            .into_inner();
        assert_eq!(overview.groups.len(), 1, "{overview:?}");
        let group = &overview.groups[0];
        let key = if group_by == "user" { &group.user } else { &group.conversation };
        assert_eq!(key, &owner);
        assert_eq!((group.calls, group.input_tokens, group.output_tokens), (4, 4800, 1200), "{group:?}");
        assert!((group.cost - sums.get::<_, f64>(1)).abs() < 1e-12);
        assert!(group.model.is_empty() && group.service.is_empty());
        assert_eq!(overview.total.expect("a total").calls, 4);
    }
    let of_user = query
        .list_llm_calls(ListLlmCallsRequest {
            filters: filters(LlmCallFilters { user_id: user.into(), ..LlmCallFilters::default() }),
            page_size: 100,
            ..ListLlmCallsRequest::default()
        })
        .await
        .expect("the user's calls")
        .into_inner();
    assert_eq!(of_user.calls.len(), 5, "the agent's span and the model calls of its trace");

    // Bad requests are refused with what is wrong.
    let refused = query
        .get_llm_overview(GetLlmOverviewRequest {
            group_by: "tenant".into(),
            ..GetLlmOverviewRequest::default()
        })
        .await
        .expect_err("no such grouping");
    assert!(refused.message().contains("group_by"), "{}", refused.message());
    let refused = query
        .get_llm_overview(GetLlmOverviewRequest { step_nanos: 1000, ..GetLlmOverviewRequest::default() })
        .await
        .expect_err("too small a step");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let refused = query
        .list_llm_calls(ListLlmCallsRequest {
            filters: Some(LlmCallFilters { model: "m".repeat(5000), ..LlmCallFilters::default() }),
            ..ListLlmCallsRequest::default()
        })
        .await
        .expect_err("too long a filter");
    assert!(refused.message().contains("query.max_filter_bytes"), "{}", refused.message());
    let refused = query
        .list_llm_calls(ListLlmCallsRequest {
            page_token: "nonsense".into(),
            ..ListLlmCallsRequest::default()
        })
        .await
        .expect_err("a bad token");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

/// The conversation of the application's trace, as GetLlmConversation reads it from `source`:
/// each model call's messages in order, the tool call and its result included.
async fn assert_conversation(t: &TestServer, trace_id: &str, by_conversation: Option<&str>, source: &str) {
    use otelephant::query::proto::{query_service_client::QueryServiceClient, GetLlmConversationRequest};
    let mut query = QueryServiceClient::connect(t.endpoint()).await.expect("connect");
    let request = match by_conversation {
        Some(id) => GetLlmConversationRequest { conversation_id: id.into(), ..Default::default() },
        None => GetLlmConversationRequest { trace_id: trace_id.into(), ..Default::default() },
    };
    let conversation = query.get_llm_conversation(request).await.expect("the conversation").into_inner();
    assert!(!conversation.truncated);
    let calls: Vec<_> =
        conversation.calls.iter().filter(|c| c.call.as_ref().is_some_and(|c| c.kind == "llm")).collect();
    assert_eq!(calls.len(), 4, "{conversation:#?}");
    assert_eq!(conversation.input_tokens, 4 * INPUT as u64);
    assert_eq!(conversation.output_tokens, 4 * OUTPUT as u64);
    // Each part as one line: text, a tool call with its arguments as JSON, a tool's result.
    let lines = |messages: &[otelephant::query::proto::LlmMessage]| -> Vec<String> {
        messages
            .iter()
            .flat_map(|m| {
                m.parts.iter().map(move |p| match p.r#type.as_str() {
                    "tool_call" => {
                        let arguments: serde_json::Value =
                            serde_json::from_str(&p.arguments).expect("JSON arguments");
                        format!("{}: call {} {} {arguments}", m.role, p.tool_call_id, p.tool_name)
                    }
                    "tool_call_response" => format!("{}: result {} {}", m.role, p.tool_call_id, p.content),
                    _ => format!("{}: {}", m.role, p.content),
                })
            })
            .collect()
    };
    let system = "system: You are a terse assistant.";
    let question = "user: What is the weather in Paris?";
    let call = r#"assistant: call call_weather_1 get_weather {"city":"Paris"}"#;
    let expected: [(&[&str], &[&str]); 4] = [
        (&[system, "user: Say hello."], &["assistant: Bonjour! How can I help?"]),
        (&[system, question], &[call]),
        (
            &[system, question, call, r#"tool: result call_weather_1 {"weather": "sunny, 21 C"}"#],
            &["assistant: In Paris it is sunny, 21 C."],
        ),
        (&["user: Tell me a story."], &["assistant: Once upon a time."]),
    ];
    for (call, (input, output)) in calls.iter().zip(expected) {
        assert_eq!(call.source, source, "{call:#?}");
        assert_eq!(lines(&call.input), input, "{call:#?}");
        assert_eq!(lines(&call.output), output, "{call:#?}");
    }
}

#[tokio::test]
async fn conversations_read_back_from_every_form_the_instrumentations_send() {
    let pid = std::process::id();
    let (t, _, trace_id) = run("genai").await;
    assert_conversation(&t, &trace_id, Some(&format!("conv-llm-genai-{pid}")), "message events").await;
    let (t, _, trace_id) = run("genai-latest").await;
    assert_conversation(&t, &trace_id, None, "span messages").await;
    let (t, _, trace_id) = run("openinference").await;
    assert_conversation(
        &t,
        &trace_id,
        Some(&format!("conv-llm-openinference-{pid}")),
        "openinference attributes",
    )
    .await;
}
