//! LLM calls, read from `llm_calls` (see `encode::genai`): the overview's totals per model,
//! provider and service, in all and per step, and the list of calls, newest first. Both read
//! the narrow derived table only, by its time index, never the spans' attributes.

use tokio_postgres::Row;
use tonic::Status;

use super::{
    bad_token, decode_off_thread, decode_token, encode_token, page_size,
    proto::{
        GetLlmOverviewRequest, GetLlmOverviewResponse, ListLlmCallsRequest, ListLlmCallsResponse, LlmCall,
        LlmCallFilters, LlmGroup, LlmStep,
    },
    resolve_range, steps_in,
    traces::parse_trace_id,
    Layout, Query, Sql,
};
use crate::encode::genai::{COST_PRICED, COST_REPORTED};

/// Most groups (model, provider, service) an overview answers; the costliest are kept.
pub const MAX_GROUPS: usize = 1000;

/// Most steps an overview may ask for.
const MAX_STEPS: i64 = 1440;

/// Shortest step an overview may ask for.
const MIN_STEP_NANOS: u64 = 1_000_000_000;

/// The model a call is grouped and filtered by: its response model, else its request model.
const MODEL: &str = "coalesce(c.response_model, c.request_model)";

/// The kinds an overview counts unless asked for another: what the models did. An agent's
/// span may report its calls' totals again.
const MODEL_KINDS: &str = "('llm', 'embedding')";

/// The statement's conditions for `filters` over [start, end), its parameters in `sql`, which
/// must be empty: the start and the end are `$1` and `$2`.
fn conditions(
    sql: &mut Sql,
    filters: &LlmCallFilters,
    (start, end): (i64, i64),
    model_calls_by_default: bool,
    max_bytes: usize,
) -> Result<String, Status> {
    let texts = [
        ("model", &filters.model),
        ("provider", &filters.provider),
        ("service", &filters.service),
        ("conversation_id", &filters.conversation_id),
        ("user_id", &filters.user_id),
        ("kind", &filters.kind),
    ];
    for (field, value) in texts {
        if value.len() > max_bytes {
            return Err(Status::invalid_argument(format!(
                "filters.{field}: {} bytes, more than the {max_bytes} a filter may hold (query.max_filter_bytes)",
                value.len()
            )));
        }
    }
    if !filters.min_cost.is_finite() || filters.min_cost < 0.0 {
        return Err(Status::invalid_argument("filters.min_cost: a cost of zero or more"));
    }
    let (start, end) = (sql.param(start), sql.param(end));
    debug_assert_eq!((start.as_str(), end.as_str()), ("$1", "$2"));
    let mut and =
        vec![format!("c.start_time_unix_nano >= {start}"), format!("c.start_time_unix_nano < {end}")];
    if !filters.model.is_empty() {
        and.push(format!("{MODEL} = {}", sql.param(filters.model.clone())));
    }
    if !filters.provider.is_empty() {
        and.push(format!("c.provider = {}", sql.param(filters.provider.to_lowercase())));
    }
    if !filters.service.is_empty() {
        and.push(format!("r.service_name = {}", sql.param(filters.service.clone())));
    }
    if !filters.conversation_id.is_empty() {
        // The calls of the traces where a call carries the id: those calls among them.
        let id = sql.param(filters.conversation_id.clone());
        and.push(format!(
            "c.trace_id IN (SELECT o.trace_id FROM llm_calls o WHERE o.conversation_id = {id} \
             AND o.start_time_unix_nano >= {start} AND o.start_time_unix_nano < {end})"
        ));
    }
    if !filters.user_id.is_empty() {
        // Likewise: the calls of the traces where a call carries the user's id.
        let id = sql.param(filters.user_id.clone());
        and.push(format!(
            "c.trace_id IN (SELECT o.trace_id FROM llm_calls o WHERE o.user_id = {id} \
             AND o.start_time_unix_nano >= {start} AND o.start_time_unix_nano < {end})"
        ));
    }
    if !filters.trace_id.is_empty() {
        let id = parse_trace_id(&filters.trace_id, "filters.trace_id")?;
        and.push(format!("c.trace_id = {}", sql.param(id)));
    }
    if filters.errors_only {
        and.push("c.error IS NOT NULL".into());
    }
    if filters.min_cost > 0.0 {
        and.push(format!("c.cost >= {}", sql.param(filters.min_cost)));
    }
    if filters.min_tokens > 0 {
        let tokens = i64::try_from(filters.min_tokens).unwrap_or(i64::MAX);
        and.push(format!("coalesce(c.total_tokens, 0) >= {}", sql.param(tokens)));
    }
    match filters.kind.as_str() {
        "" if model_calls_by_default => and.push(format!("c.kind IN {MODEL_KINDS}")),
        "" => {}
        kind => and.push(format!("c.kind = {}", sql.param(kind.to_owned()))),
    }
    Ok(and.join(" AND "))
}

/// What GetLlmOverview's groups are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupBy {
    /// A model of a provider, from a service.
    Model,
    /// The calls of the traces in which a call carries the user's id (`user_id`).
    User,
    /// Likewise of a conversation (`conversation_id`).
    Conversation,
}

fn count(row: &Row, i: usize) -> u64 {
    row.get::<_, Option<i64>>(i).map_or(0, |v| u64::try_from(v).unwrap_or(0))
}

pub(super) async fn get_llm_overview(
    q: &Query,
    request: &GetLlmOverviewRequest,
) -> Result<GetLlmOverviewResponse, Status> {
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let filters = request.filters.clone().unwrap_or_default();
    let step = match request.step_nanos {
        0 => None,
        nanos if nanos < MIN_STEP_NANOS => {
            return Err(Status::invalid_argument("step_nanos: at least a second (1000000000)"))
        }
        nanos => Some(i64::try_from(nanos).unwrap_or(i64::MAX)),
    };
    let steps = step.map_or(0, |step| steps_in(end - start, step));
    if steps > MAX_STEPS {
        return Err(Status::invalid_argument(format!(
            "step_nanos: {steps} steps in the range, more than the {MAX_STEPS} one request may ask for"
        )));
    }
    let group_by = match request.group_by.as_str() {
        "" | "model" => GroupBy::Model,
        "user" => GroupBy::User,
        "conversation" => GroupBy::Conversation,
        other => {
            return Err(Status::invalid_argument(format!(
                "group_by: {other:?} is none of \"model\", \"user\" or \"conversation\""
            )))
        }
    };
    let mut sql = Sql::default();
    let and = conditions(&mut sql, &filters, (start, end), true, q.limits.max_filter_bytes)?;
    let durations = "c.end_time_unix_nano - c.start_time_unix_nano";
    let figures = format!(
        "count(*), count(*) FILTER (WHERE c.error IS NOT NULL), sum(c.input_tokens)::bigint,
         sum(c.output_tokens)::bigint, sum(c.cache_read_tokens)::bigint, sum(c.reasoning_tokens)::bigint,
         sum(c.cost), count(*) FILTER (WHERE c.cost IS NULL
             AND (c.input_tokens IS NOT NULL OR c.output_tokens IS NOT NULL)),
         percentile_disc(0.5) WITHIN GROUP (ORDER BY {durations}),
         percentile_disc(0.95) WITHIN GROUP (ORDER BY {durations})"
    );
    let from = format!("FROM llm_calls c LEFT JOIN resources r ON r.resource_id = c.resource_id WHERE {and}");
    let groups = format!(
        "SELECT coalesce({MODEL}, ''), coalesce(c.provider, ''), coalesce(r.service_name, ''), {figures}"
    );
    let order = format!("ORDER BY 10 DESC NULLS LAST, 4 DESC, 1, 2, 3 LIMIT {}", MAX_GROUPS + 1);
    let mut budget = q.budget();
    let mut client = q.client().await?;
    let (rows, full) = match (group_by, q.layout) {
        // Per user or conversation: the calls of the traces in which a call carries the id.
        (GroupBy::User | GroupBy::Conversation, _) => {
            let column = if group_by == GroupBy::User { "user_id" } else { "conversation_id" };
            let total = format!("SELECT '', '', '', {figures}, true {from}");
            let (mut rows, _) = client.query_within(&total, &sql.params(), &mut budget).await?;
            let statement = format!(
                "SELECT o.owner, '', '', {figures}, false
                 FROM (SELECT DISTINCT o.{column} AS owner, o.trace_id FROM llm_calls o
                       WHERE o.{column} IS NOT NULL AND o.start_time_unix_nano >= $1
                         AND o.start_time_unix_nano < $2) o
                 JOIN llm_calls c ON c.trace_id = o.trace_id
                 LEFT JOIN resources r ON r.resource_id = c.resource_id
                 WHERE {and} GROUP BY o.owner
                 ORDER BY 10 DESC NULLS LAST, 4 DESC, 1 LIMIT {}",
                MAX_GROUPS + 1
            );
            let (groups, full) = client.query_within(&statement, &sql.params(), &mut budget).await?;
            rows.extend(groups);
            (rows, full)
        }
        // The groups and, in the same scan, their total (the grouping set ()), which sorts first.
        (GroupBy::Model, Layout::SingleNode) => {
            let statement = format!(
                "{groups}, GROUPING({MODEL}, c.provider, r.service_name) <> 0 {from}
                 GROUP BY GROUPING SETS (({MODEL}, c.provider, r.service_name), ())
                 ORDER BY 14 DESC, {}",
                order.trim_start_matches("ORDER BY ")
            );
            client.query_within(&statement, &sql.params(), &mut budget).await?
        }
        // Citus runs no GROUPING SETS: the total is a statement of its own.
        (GroupBy::Model, Layout::Citus) => {
            let total = format!("SELECT '', '', '', {figures}, true {from}");
            let (mut rows, _) = client.query_within(&total, &sql.params(), &mut budget).await?;
            let statement = format!("{groups}, false {from} GROUP BY 1, 2, 3 {order}");
            let (groups, full) = client.query_within(&statement, &sql.params(), &mut budget).await?;
            rows.extend(groups);
            (rows, full)
        }
    };
    let step_rows = match step {
        Some(step) => {
            let placeholder = sql.next_placeholder();
            let statement = format!(
                "SELECT (c.start_time_unix_nano - $1) / {placeholder}, count(*),
                        count(*) FILTER (WHERE c.error IS NOT NULL),
                        sum(coalesce(c.total_tokens, coalesce(c.input_tokens, 0) + coalesce(c.output_tokens, 0)))::bigint,
                        sum(c.cost), percentile_disc(0.95) WITHIN GROUP (ORDER BY {durations})
                 FROM llm_calls c LEFT JOIN resources r ON r.resource_id = c.resource_id
                 WHERE {and} GROUP BY 1 ORDER BY 1"
            );
            let mut params = sql.params();
            params.push(&step);
            client.query_within(&statement, &params, &mut budget).await?.0
        }
        None => Vec::new(),
    };
    drop(client);
    decode_off_thread(budget.used(), move || {
        let group = |row: &Row| LlmGroup {
            model: row.get(0),
            provider: row.get(1),
            service: row.get(2),
            calls: count(row, 3),
            errors: count(row, 4),
            input_tokens: count(row, 5),
            output_tokens: count(row, 6),
            cache_read_tokens: count(row, 7),
            reasoning_tokens: count(row, 8),
            cost: row.get::<_, Option<f64>>(9).unwrap_or(0.0),
            unpriced_calls: count(row, 10),
            p50_nanos: count(row, 11),
            p95_nanos: count(row, 12),
            user: String::new(),
            conversation: String::new(),
        };
        let mut rows = rows.iter();
        let total = rows.next().filter(|row| row.get::<_, bool>(13)).map(group).map(|mut total| {
            (total.model, total.provider, total.service) = (String::new(), String::new(), String::new());
            total
        });
        let mut groups: Vec<LlmGroup> = rows
            .map(|row| {
                let mut g = group(row);
                match group_by {
                    GroupBy::User => g.user = std::mem::take(&mut g.model),
                    GroupBy::Conversation => g.conversation = std::mem::take(&mut g.model),
                    GroupBy::Model => {}
                }
                g
            })
            .collect();
        let groups_truncated = full || groups.len() > MAX_GROUPS;
        groups.truncate(MAX_GROUPS);
        let mut steps_out: Vec<LlmStep> = (0..steps)
            .map(|i| LlmStep {
                start_unix_nano: u64::try_from(start + i * step.unwrap_or(0)).unwrap_or(0),
                ..LlmStep::default()
            })
            .collect();
        for row in &step_rows {
            let Some(at) = usize::try_from(row.get::<_, i64>(0)).ok().and_then(|i| steps_out.get_mut(i))
            else {
                continue;
            };
            at.calls = count(row, 1);
            at.errors = count(row, 2);
            at.tokens = count(row, 3);
            at.cost = row.get::<_, Option<f64>>(4).unwrap_or(0.0);
            at.p95_nanos = count(row, 5);
        }
        Ok(GetLlmOverviewResponse {
            groups,
            groups_truncated,
            total: total.or_else(|| Some(LlmGroup::default())),
            steps: steps_out,
        })
    })
    .await
}

/// The columns [`call_of`] reads, of `llm_calls c` joined to `resources r`.
pub(super) const CALL_COLUMNS: &str = "encode(c.trace_id, 'hex'), encode(c.span_id, 'hex'), c.start_time_unix_nano,
    c.end_time_unix_nano - c.start_time_unix_nano, coalesce(r.service_name, ''), c.kind, c.operation, c.provider,
    c.request_model, c.response_model, c.input_tokens, c.output_tokens, c.total_tokens, c.cache_read_tokens,
    c.cache_write_tokens, c.reasoning_tokens, c.cost, c.cost_source, c.price_model, c.time_to_first_token_nano,
    c.finish_reason, c.error, c.conversation_id, c.user_id, c.agent_name, c.tool_name";

/// A call from a row of [`CALL_COLUMNS`].
pub(super) fn call_of(row: &Row) -> LlmCall {
    let text = |i: usize| row.get::<_, Option<String>>(i).unwrap_or_default();
    let tokens = |i: usize| row.get::<_, Option<i64>>(i).and_then(|v| u64::try_from(v).ok());
    LlmCall {
        trace_id: row.get(0),
        span_id: row.get(1),
        start_unix_nano: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        duration_nanos: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
        service: row.get(4),
        kind: row.get(5),
        operation: text(6),
        provider: text(7),
        request_model: text(8),
        response_model: text(9),
        input_tokens: tokens(10),
        output_tokens: tokens(11),
        total_tokens: tokens(12),
        cache_read_tokens: tokens(13),
        cache_write_tokens: tokens(14),
        reasoning_tokens: tokens(15),
        cost: row.get(16),
        cost_source: match row.get::<_, Option<i32>>(17) {
            Some(COST_REPORTED) => "reported".into(),
            Some(COST_PRICED) => "priced".into(),
            _ => String::new(),
        },
        price_model: text(18),
        time_to_first_token_nanos: tokens(19),
        finish_reason: text(20),
        error: text(21),
        conversation_id: text(22),
        user_id: text(23),
        agent_name: text(24),
        tool_name: text(25),
    }
}

pub(super) async fn list_llm_calls(
    q: &Query,
    request: &ListLlmCallsRequest,
) -> Result<ListLlmCallsResponse, Status> {
    let (start, mut end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let filters = request.filters.clone().unwrap_or_default();
    let page_size = page_size(request.page_size);
    // A page token is where the last page ended: its last call's start and span id.
    let after = match request.page_token.as_str() {
        "" => None,
        token => {
            let token = decode_token(token)?;
            let (at, span_id) = token.split_once(':').ok_or_else(bad_token)?;
            let at: i64 = at.parse().map_err(|_| bad_token())?;
            let span_id = hex::decode(span_id).map_err(|_| bad_token())?;
            end = end.min(at.saturating_add(1));
            Some((at, span_id))
        }
    };
    let mut sql = Sql::default();
    let mut and = conditions(&mut sql, &filters, (start, end), false, q.limits.max_filter_bytes)?;
    if let Some((at, span_id)) = after {
        let (at, span_id) = (sql.param(at), sql.param(span_id));
        and.push_str(&format!(" AND (c.start_time_unix_nano, c.span_id) < ({at}, {span_id})"));
    }
    let statement = format!(
        "SELECT {CALL_COLUMNS}
         FROM llm_calls c LEFT JOIN resources r ON r.resource_id = c.resource_id
         WHERE {and}
         ORDER BY c.start_time_unix_nano DESC, c.span_id DESC
         LIMIT {}",
        page_size + 1
    );
    let mut budget = q.budget();
    let (rows, full) = q.client().await?.query_within(&statement, &sql.params(), &mut budget).await?;
    decode_off_thread(budget.used(), move || {
        let mut calls: Vec<LlmCall> = rows.iter().map(call_of).collect();
        if full && calls.is_empty() {
            return Err(Status::resource_exhausted(
                "one LLM call takes more memory than an answer may (query.answer_bytes)",
            ));
        }
        let next_page_token = if full || calls.len() > page_size {
            calls.truncate(page_size);
            let last = &calls[calls.len() - 1];
            encode_token(&format!("{}:{}", last.start_unix_nano, last.span_id))
        } else {
            String::new()
        };
        Ok(ListLlmCallsResponse { calls, next_page_token })
    })
    .await
}
