//! LLM calls: the spans of model calls, tools and agents, read into one row of `llm_calls` each
//! whichever convention sent them (OpenTelemetry GenAI, old and new names; OpenInference;
//! OpenLLMetry), with their tokens and cost, so that the LLM views read a narrow table instead
//! of every span's attributes. The span itself is stored as it was sent; the row is written
//! with it, in its transaction, and kept as long as it (see `migrations/0009_llm_calls.sql`).

pub mod content;
pub mod prices;

use super::{
    copy::{Rows, Signal, Table, TableKind},
    source::{ListSource, MapSource, Read, ValueSource},
    traces::EventRow,
};
use prices::{Priced, Prices, Tokens};

pub const LLM_CALLS: Table = Table {
    name: "llm_calls",
    columns: &[
        "start_time_unix_nano",
        "end_time_unix_nano",
        "trace_id",
        "span_id",
        "resource_id",
        "kind",
        "operation",
        "provider",
        "request_model",
        "response_model",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost",
        "cost_source",
        "price_model",
        "time_to_first_token_nano",
        "finish_reason",
        "error",
        "conversation_id",
        "user_id",
        "agent_name",
        "tool_name",
    ],
    kind: TableKind::Derived { partition_key: "start_time_unix_nano", signal: Signal::Traces },
};

/// Longest text a derived column keeps (model names, ids, reasons), cut at a character boundary;
/// the span keeps the whole value.
pub const MAX_TEXT_BYTES: usize = 256;

/// The event OpenInference adds to a streamed call when its first token arrives.
pub const FIRST_TOKEN_EVENT: &str = "First Token Stream Event";

/// `cost_source`: the instrumentation sent the call's cost.
pub const COST_REPORTED: i32 = 1;
/// `cost_source`: otelephant priced the call's tokens (see [`prices`]).
pub const COST_PRICED: i32 = 2;

/// An attribute the derivation reads, by the convention that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    // What the span is.
    Operation,
    OpenInferenceKind,
    TraceloopRequestType,
    TraceloopSpanKind,
    // Who served it.
    ProviderName,
    System,
    LlmProvider,
    LlmSystem,
    RequestModel,
    ResponseModel,
    LlmModelName,
    // Tokens.
    InputTokens,
    PromptTokens,
    LlmPromptTokens,
    OutputTokens,
    CompletionTokens,
    LlmCompletionTokens,
    LlmTotalTokens,
    TraceloopTotalTokens,
    TotalTokens,
    CacheReadTokens,
    LlmCacheReadTokens,
    TraceloopCacheReadTokens,
    CacheWriteTokens,
    LlmCacheWriteTokens,
    TraceloopCacheWriteTokens,
    ReasoningTokens,
    LlmReasoningTokens,
    TraceloopReasoningTokens,
    // Cost, in USD, and time to first token, in seconds.
    LlmCostTotal,
    UsageCost,
    TimeToFirstToken,
    // The answer.
    FinishReasons,
    LlmFinishReason,
    CompletionFinishReason,
    ErrorType,
    // Whose call it was.
    ConversationId,
    SessionId,
    TraceloopSessionId,
    UserId,
    EnduserId,
    TraceloopUserId,
    AgentName,
    LlmAgentName,
    ToolName,
    LlmToolName,
}

const FIELDS: usize = Field::LlmToolName as usize + 1;

impl Field {
    /// The field an attribute key names, if the derivation reads it. Most keys of most spans
    /// are told apart by their first byte and a prefix.
    fn of(key: &[u8]) -> Option<Field> {
        use Field::*;
        Some(match key.first()? {
            b'g' => match key.strip_prefix(b"gen_ai.")? {
                b"operation.name" => Operation,
                b"provider.name" => ProviderName,
                b"system" => System,
                b"request.model" => RequestModel,
                b"response.model" => ResponseModel,
                b"usage.input_tokens" => InputTokens,
                b"usage.prompt_tokens" => PromptTokens,
                b"usage.output_tokens" => OutputTokens,
                b"usage.completion_tokens" => CompletionTokens,
                b"usage.total_tokens" => TotalTokens,
                b"usage.cache_read.input_tokens" => CacheReadTokens,
                b"usage.cache_read_input_tokens" => TraceloopCacheReadTokens,
                b"usage.cache_creation.input_tokens" => CacheWriteTokens,
                b"usage.cache_creation_input_tokens" => TraceloopCacheWriteTokens,
                b"usage.reasoning.output_tokens" => ReasoningTokens,
                b"usage.reasoning_tokens" => TraceloopReasoningTokens,
                b"usage.cost" => UsageCost,
                b"server.time_to_first_token" => TimeToFirstToken,
                b"response.finish_reasons" => FinishReasons,
                b"completion.0.finish_reason" => CompletionFinishReason,
                b"conversation.id" => ConversationId,
                b"agent.name" => AgentName,
                b"tool.name" => ToolName,
                _ => return None,
            },
            b'l' => match key.strip_prefix(b"llm.")? {
                b"request.type" => TraceloopRequestType,
                b"provider" => LlmProvider,
                b"system" => LlmSystem,
                b"model_name" => LlmModelName,
                b"token_count.prompt" => LlmPromptTokens,
                b"token_count.completion" => LlmCompletionTokens,
                b"token_count.total" => LlmTotalTokens,
                b"usage.total_tokens" => TraceloopTotalTokens,
                b"token_count.prompt_details.cache_read" => LlmCacheReadTokens,
                b"token_count.prompt_details.cache_write" => LlmCacheWriteTokens,
                b"token_count.completion_details.reasoning" => LlmReasoningTokens,
                b"cost.total" => LlmCostTotal,
                b"finish_reason" => LlmFinishReason,
                _ => return None,
            },
            b'o' if key == b"openinference.span.kind" => OpenInferenceKind,
            b't' => match key {
                b"traceloop.span.kind" => TraceloopSpanKind,
                b"traceloop.association.properties.session_id" => TraceloopSessionId,
                b"traceloop.association.properties.user_id" => TraceloopUserId,
                b"tool.name" => LlmToolName,
                _ => return None,
            },
            b's' if key == b"session.id" => SessionId,
            b'u' if key == b"user.id" => UserId,
            b'e' => match key {
                b"enduser.id" => EnduserId,
                b"error.type" => ErrorType,
                _ => return None,
            },
            b'a' if key == b"agent.name" => LlmAgentName,
            _ => return None,
        })
    }

    /// Fields whose presence alone makes a span an LLM span: what it is, who served it, and
    /// with which model. Ids, users and errors are on other spans too.
    fn marks_llm_span(self) -> bool {
        (self as usize) <= Field::LlmModelName as usize
    }
}

/// An attribute value as the derivation keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Double(f64),
    /// An array's first string: a finish reason list (`["stop"]`), of which the row keeps the
    /// first and counts the others.
    Strings(&'a str, usize),
}

impl Value<'_> {
    fn text(self) -> Option<String> {
        match self {
            Value::Text(t) => Some(cut(t).to_owned()),
            Value::Strings(first, 0) => Some(cut(first).to_owned()),
            Value::Strings(first, more) => Some(format!("{} (+{more})", cut(first))),
            Value::Int(i) => Some(i.to_string()),
            Value::Double(_) => None,
        }
    }

    /// A token count: a whole number, not negative, sent as an int, a double or a string.
    fn count(self) -> Option<i64> {
        match self {
            Value::Int(i) => (i >= 0).then_some(i),
            Value::Double(d) => {
                (d.is_finite() && d >= 0.0 && d.fract() == 0.0 && d < 9.0e18).then_some(d as i64)
            }
            Value::Text(t) => t.trim().parse::<i64>().ok().filter(|i| *i >= 0),
            Value::Strings(..) => None,
        }
    }

    /// An amount (cost, seconds): finite and not negative.
    fn amount(self) -> Option<f64> {
        let value = match self {
            Value::Int(i) => i as f64,
            Value::Double(d) => d,
            Value::Text(t) => t.trim().parse::<f64>().ok()?,
            Value::Strings(..) => return None,
        };
        (value.is_finite() && value >= 0.0).then_some(value)
    }
}

/// What a span's attributes say, field by field: shown each attribute as the span's row is
/// written (see `attributes::write_attributes_seen`), so that looking costs no walk of its own.
#[derive(Debug)]
pub struct Found<'a> {
    values: [Option<Value<'a>>; FIELDS],
    /// Whether a field that marks an LLM span is among them.
    llm: bool,
}

impl Default for Found<'_> {
    fn default() -> Self {
        Found { values: [None; FIELDS], llm: false }
    }
}

impl<'a> Found<'a> {
    /// Keeps the attribute if the derivation reads it.
    #[inline]
    pub fn note<V: ValueSource<'a>>(&mut self, key: &'a [u8], value: Option<V>) {
        let Some(field) = Field::of(key) else { return };
        let Some(value) = value.and_then(keep) else { return };
        self.llm |= field.marks_llm_span() && matches!(value, Value::Text(t) if !t.is_empty());
        self.values[field as usize] = Some(value);
    }

    #[cfg(test)]
    fn read<M: MapSource<'a>>(attributes: M) -> Found<'a> {
        let mut found = Found::default();
        for (key, value) in attributes.entries().flatten() {
            found.note(key, value);
        }
        found
    }

    fn get(&self, field: Field) -> Option<Value<'a>> {
        self.values[field as usize]
    }

    /// The first of `fields` the span has, as text.
    fn text(&self, fields: &[Field]) -> Option<String> {
        fields.iter().find_map(|&f| self.get(f).and_then(Value::text)).filter(|t| !t.is_empty())
    }

    /// The first of `fields` the span has as a token count.
    fn count(&self, fields: &[Field]) -> Option<i64> {
        fields.iter().find_map(|&f| self.get(f).and_then(Value::count))
    }

    fn amount(&self, fields: &[Field]) -> Option<f64> {
        fields.iter().find_map(|&f| self.get(f).and_then(Value::amount))
    }
}

/// A value the derivation can read: strings without U+0000 (a text column cannot hold it),
/// numbers, and an array's first string.
fn keep<'a, V: ValueSource<'a>>(value: V) -> Option<Value<'a>> {
    let text = |bytes: &'a [u8]| std::str::from_utf8(bytes).ok().filter(|t| !t.contains('\0'));
    match value.read().ok()? {
        Read::Text(bytes) => text(bytes).map(Value::Text),
        Read::Int(i) => Some(Value::Int(i)),
        Read::Double(d) => Some(Value::Double(d)),
        Read::Array(items) => {
            let (mut first, mut more) = (None, 0);
            for item in items {
                let Ok(Read::Text(bytes)) = item.ok()?.read() else { continue };
                match first {
                    None => first = text(bytes),
                    Some(_) => more += 1,
                }
            }
            first.map(|first| Value::Strings(first, more))
        }
        _ => None,
    }
}

/// `text` cut to [`MAX_TEXT_BYTES`] at a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One LLM call, as its `llm_calls` row holds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LlmCall {
    /// `llm` (a model call), `embedding`, `tool`, `agent`, `chain`, `workflow`, `retriever`,
    /// `reranker`, `guardrail`, `evaluator`, `prompt` or `other`.
    pub kind: &'static str,
    /// What the instrumentation called it: `gen_ai.operation.name`, the OpenInference span
    /// kind, OpenLLMetry's request type or span kind.
    pub operation: Option<String>,
    /// Lowercase, as the span named it (`openai`, `aws.bedrock`...).
    pub provider: Option<String>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub tokens: Tokens,
    pub total_tokens: Option<i64>,
    pub cost: Option<f64>,
    /// [`COST_REPORTED`] or [`COST_PRICED`]; `None` with no cost.
    pub cost_source: Option<i32>,
    /// The price table's entry the cost was computed with.
    pub price_model: Option<String>,
    pub time_to_first_token_nano: Option<i64>,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
    pub conversation_id: Option<String>,
    pub user_id: Option<String>,
    pub agent_name: Option<String>,
    pub tool_name: Option<String>,
}

/// The span an [`LlmCall`] is read from: what its row needs besides the attributes.
pub struct CallSpan<'a> {
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub resource_id: i64,
    /// The status code and message, when the span has a status.
    pub status: Option<(i32, &'a str)>,
}

/// The span status code of an error.
const STATUS_ERROR: i32 = 2;

impl LlmCall {
    /// The call a span's attributes describe, or `None` when nothing in them marks it as an
    /// LLM span (see [`Field::marks_llm_span`]). `first_token` is when its first token came,
    /// if an event says so.
    fn derive(
        found: &Found<'_>,
        span: &CallSpan<'_>,
        first_token: Option<u64>,
        prices: &Prices,
    ) -> Option<LlmCall> {
        use Field::*;
        if !found.llm {
            return None;
        }
        let operation = found.text(&[Operation, OpenInferenceKind, TraceloopRequestType, TraceloopSpanKind]);
        let kind = [
            (Operation, operation_kind as fn(&str) -> Option<&'static str>),
            (OpenInferenceKind, openinference_kind),
            (TraceloopRequestType, request_type_kind),
            (TraceloopSpanKind, traceloop_kind),
        ]
        .into_iter()
        .find_map(|(field, kind)| match found.get(field)? {
            Value::Text(name) => Some(kind(name).unwrap_or("other")),
            _ => None,
        })
        .unwrap_or("llm");
        let provider = found.text(&[ProviderName, System, LlmProvider, LlmSystem]).map(|p| p.to_lowercase());
        let request_model = found.text(&[RequestModel]);
        let response_model = found.text(&[ResponseModel, LlmModelName]);
        let tokens = Tokens {
            input: found.count(&[InputTokens, PromptTokens, LlmPromptTokens]),
            output: found.count(&[OutputTokens, CompletionTokens, LlmCompletionTokens]),
            cache_read: found.count(&[CacheReadTokens, LlmCacheReadTokens, TraceloopCacheReadTokens]),
            cache_write: found.count(&[CacheWriteTokens, LlmCacheWriteTokens, TraceloopCacheWriteTokens]),
            reasoning: found.count(&[ReasoningTokens, LlmReasoningTokens, TraceloopReasoningTokens]),
        };
        let total_tokens = found.count(&[LlmTotalTokens, TraceloopTotalTokens, TotalTokens]).or(
            match (tokens.input, tokens.output) {
                (None, None) => None,
                (input, output) => Some(input.unwrap_or(0).saturating_add(output.unwrap_or(0))),
            },
        );
        let reported = found.amount(&[LlmCostTotal, UsageCost]);
        let priced = match reported {
            Some(_) => None,
            None => response_model
                .as_deref()
                .into_iter()
                .chain(request_model.as_deref())
                .find_map(|model| prices.find(provider.as_deref(), model))
                .and_then(|(key, price)| Some(Priced { key, cost: price.cost(&tokens)? })),
        };
        let (cost, cost_source, price_model) = match (reported, priced) {
            (Some(cost), _) => (Some(cost), Some(COST_REPORTED), None),
            (None, Some(priced)) => (Some(priced.cost), Some(COST_PRICED), Some(priced.key.to_owned())),
            (None, None) => (None, None, None),
        };
        let time_to_first_token_nano = found
            .amount(&[TimeToFirstToken])
            .map(|seconds| (seconds * 1e9).min(i64::MAX as f64) as i64)
            .or_else(|| {
                let after = first_token?.checked_sub(span.start_time_unix_nano)?;
                i64::try_from(after).ok()
            });
        let error = found.text(&[ErrorType]).or_else(|| match span.status {
            Some((STATUS_ERROR, message)) if !message.is_empty() && !message.contains('\0') => {
                Some(cut(message).to_owned())
            }
            Some((STATUS_ERROR, _)) => Some("error".to_owned()),
            _ => None,
        });
        Some(LlmCall {
            kind,
            operation,
            provider,
            request_model,
            response_model,
            tokens,
            total_tokens,
            cost,
            cost_source,
            price_model,
            time_to_first_token_nano,
            finish_reason: found.text(&[FinishReasons, LlmFinishReason, CompletionFinishReason]),
            error,
            conversation_id: found.text(&[ConversationId, SessionId, TraceloopSessionId]),
            user_id: found.text(&[UserId, EnduserId, TraceloopUserId]),
            agent_name: found.text(&[AgentName, LlmAgentName]),
            tool_name: found.text(&[ToolName, LlmToolName]),
        })
    }

    /// Appends the call's row.
    fn write(&self, rows: &mut Rows, span: &CallSpan<'_>) {
        let mut row = rows.row(&LLM_CALLS);
        row.uint64(span.start_time_unix_nano);
        row.uint64(span.end_time_unix_nano);
        row.bytea(span.trace_id);
        row.bytea(span.span_id);
        row.int8(span.resource_id);
        row.text(self.kind);
        row.opt_text(self.operation.as_deref());
        row.opt_text(self.provider.as_deref());
        row.opt_text(self.request_model.as_deref());
        row.opt_text(self.response_model.as_deref());
        row.opt_int8(self.tokens.input);
        row.opt_int8(self.tokens.output);
        row.opt_int8(self.total_tokens);
        row.opt_int8(self.tokens.cache_read);
        row.opt_int8(self.tokens.cache_write);
        row.opt_int8(self.tokens.reasoning);
        row.opt_float8(self.cost);
        row.opt_int4(self.cost_source);
        row.opt_text(self.price_model.as_deref());
        row.opt_int8(self.time_to_first_token_nano);
        row.opt_text(self.finish_reason.as_deref());
        row.opt_text(self.error.as_deref());
        row.opt_text(self.conversation_id.as_deref());
        row.opt_text(self.user_id.as_deref());
        row.opt_text(self.agent_name.as_deref());
        row.opt_text(self.tool_name.as_deref());
    }
}

/// Writes the `llm_calls` row of a stored span whose attributes (`found`) describe an LLM call;
/// spans that do not are left alone. Reads the span's events only for a model call's first
/// token.
pub fn write_call<'a, M, E>(rows: &mut Rows, span: &CallSpan<'_>, found: &Found<'a>, events: E)
where
    M: MapSource<'a>,
    E: ListSource<'a, EventRow<'a, M>>,
{
    if !found.llm {
        return;
    }
    let first_token = if found.get(Field::TimeToFirstToken).is_none() && !events.is_empty() {
        events
            .items()
            .filter_map(Result::ok)
            .find(|event| event.name == FIRST_TOKEN_EVENT)
            .map(|event| event.time_unix_nano)
    } else {
        None
    };
    if let Some(call) = LlmCall::derive(found, span, first_token, prices::current()) {
        call.write(rows, span);
    }
}

/// The kind of a `gen_ai.operation.name`.
fn operation_kind(name: &str) -> Option<&'static str> {
    Some(match name {
        "chat" | "text_completion" | "generate_content" | "completion" | "responses" => "llm",
        "embeddings" | "embedding" => "embedding",
        "execute_tool" => "tool",
        "invoke_agent" | "create_agent" => "agent",
        "invoke_workflow" => "workflow",
        "retrieval" | "retrieve" => "retriever",
        _ => return None,
    })
}

/// The kind of an `openinference.span.kind`.
fn openinference_kind(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_uppercase().as_str() {
        "LLM" => "llm",
        "EMBEDDING" => "embedding",
        "TOOL" => "tool",
        "AGENT" => "agent",
        "CHAIN" => "chain",
        "RETRIEVER" => "retriever",
        "RERANKER" => "reranker",
        "GUARDRAIL" => "guardrail",
        "EVALUATOR" => "evaluator",
        "PROMPT" => "prompt",
        _ => return None,
    })
}

/// The kind of OpenLLMetry's `llm.request.type`.
fn request_type_kind(name: &str) -> Option<&'static str> {
    Some(match name {
        "chat" | "completion" => "llm",
        "embedding" => "embedding",
        "rerank" => "reranker",
        _ => return None,
    })
}

/// The kind of OpenLLMetry's `traceloop.span.kind`.
fn traceloop_kind(name: &str) -> Option<&'static str> {
    Some(match name {
        "workflow" => "workflow",
        "task" => "chain",
        "agent" => "agent",
        "tool" => "tool",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};

    use super::*;

    fn attribute(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
    }

    fn string(key: &str, value: &str) -> KeyValue {
        attribute(key, any_value::Value::StringValue(value.into()))
    }

    fn int(key: &str, value: i64) -> KeyValue {
        attribute(key, any_value::Value::IntValue(value))
    }

    fn double(key: &str, value: f64) -> KeyValue {
        attribute(key, any_value::Value::DoubleValue(value))
    }

    fn strings(key: &str, values: &[&str]) -> KeyValue {
        let values = values
            .iter()
            .map(|v| AnyValue { value: Some(any_value::Value::StringValue((*v).into())) })
            .collect();
        attribute(key, any_value::Value::ArrayValue(ArrayValue { values }))
    }

    const SPAN: CallSpan<'static> = CallSpan {
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 3_000_000_000,
        trace_id: &[1; 16],
        span_id: &[2; 8],
        resource_id: 7,
        status: None,
    };

    fn call(attributes: &[KeyValue]) -> Option<LlmCall> {
        call_with(attributes, &SPAN, None)
    }

    fn call_with(attributes: &[KeyValue], span: &CallSpan<'_>, first_token: Option<u64>) -> Option<LlmCall> {
        LlmCall::derive(&Found::read(attributes), span, first_token, &Prices::shipped())
    }

    /// gpt-4o-mini's prices in the shipped table, per token.
    const MINI_INPUT: f64 = 1.5e-7;
    const MINI_CACHED: f64 = 7.5e-8;
    const MINI_OUTPUT: f64 = 6e-7;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= b.abs() * 1e-12)
    }

    #[test]
    fn opentelemetry_genai_older_names_as_openai_v2_sends_them() {
        let call = call(&[
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.request.model", "gpt-4o-mini"),
            string("gen_ai.system", "openai"),
            string("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            strings("gen_ai.response.finish_reasons", &["stop"]),
            string("gen_ai.response.id", "chatcmpl-1"),
            int("gen_ai.usage.input_tokens", 1200),
            int("gen_ai.usage.output_tokens", 300),
        ])
        .expect("an LLM call");
        assert_eq!(call.kind, "llm");
        assert_eq!(call.operation.as_deref(), Some("chat"));
        assert_eq!(call.provider.as_deref(), Some("openai"));
        assert_eq!(call.request_model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(call.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!(call.tokens, Tokens { input: Some(1200), output: Some(300), ..Tokens::default() });
        assert_eq!(call.total_tokens, Some(1500));
        assert_eq!(call.finish_reason.as_deref(), Some("stop"));
        assert_eq!(call.cost_source, Some(COST_PRICED));
        assert_eq!(call.price_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert!(close(call.cost, 1200.0 * MINI_INPUT + 300.0 * MINI_OUTPUT), "{:?}", call.cost);
        assert_eq!((call.error, call.conversation_id, call.time_to_first_token_nano), (None, None, None));
    }

    #[test]
    fn opentelemetry_genai_newest_names_with_cache_and_reasoning_tokens() {
        let call = call(&[
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.provider.name", "openai"),
            string("gen_ai.system", "ignored-when-the-new-name-is-there"),
            string("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.input_tokens", 1200),
            int("gen_ai.usage.output_tokens", 300),
            int("gen_ai.usage.cache_read.input_tokens", 1000),
            int("gen_ai.usage.cache_creation.input_tokens", 0),
            int("gen_ai.usage.reasoning.output_tokens", 100),
            string("gen_ai.conversation.id", "conv-1"),
            strings("gen_ai.response.finish_reasons", &["stop", "length"]),
            string("error.type", "timeout"),
        ])
        .expect("an LLM call");
        assert_eq!(call.provider.as_deref(), Some("openai"));
        assert_eq!(
            call.tokens,
            Tokens {
                input: Some(1200),
                output: Some(300),
                cache_read: Some(1000),
                cache_write: Some(0),
                reasoning: Some(100)
            }
        );
        assert_eq!(
            call.price_model.as_deref(),
            Some("gpt-4o-mini"),
            "the request model, with no response model"
        );
        // 200 uncached and 1000 cached input tokens; the table has no reasoning rate for it.
        assert!(
            close(call.cost, 200.0 * MINI_INPUT + 1000.0 * MINI_CACHED + 300.0 * MINI_OUTPUT),
            "{:?}",
            call.cost
        );
        assert_eq!(call.conversation_id.as_deref(), Some("conv-1"));
        assert_eq!(call.finish_reason.as_deref(), Some("stop (+1)"));
        assert_eq!(call.error.as_deref(), Some("timeout"));
    }

    #[test]
    fn openinference_as_its_openai_instrumentation_sends_it() {
        let call = call(&[
            string("llm.system", "openai"),
            string("input.value", "{\"model\": \"gpt-4o-mini\"}"),
            string("session.id", "conv-svc"),
            string("user.id", "user-ada"),
            string("llm.input_messages.0.message.role", "user"),
            string("llm.model_name", "gpt-4o-mini-2024-07-18"),
            int("llm.token_count.total", 1500),
            int("llm.token_count.prompt", 1200),
            int("llm.token_count.completion", 300),
            int("llm.token_count.prompt_details.cache_read", 1000),
            int("llm.token_count.completion_details.reasoning", 100),
            string("llm.finish_reason", "tool_calls"),
            string("openinference.span.kind", "LLM"),
        ])
        .expect("an LLM call");
        assert_eq!(call.kind, "llm");
        assert_eq!(call.operation.as_deref(), Some("LLM"));
        assert_eq!(call.provider.as_deref(), Some("openai"));
        assert_eq!(call.request_model, None);
        assert_eq!(call.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!(call.tokens.cache_read, Some(1000));
        assert_eq!(call.tokens.reasoning, Some(100));
        assert_eq!(call.total_tokens, Some(1500));
        assert_eq!(call.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(call.conversation_id.as_deref(), Some("conv-svc"));
        assert_eq!(call.user_id.as_deref(), Some("user-ada"));
        assert!(close(call.cost, 200.0 * MINI_INPUT + 1000.0 * MINI_CACHED + 300.0 * MINI_OUTPUT));
    }

    #[test]
    fn an_instrumentations_own_cost_wins_over_the_price_table() {
        let call = call(&[
            string("openinference.span.kind", "LLM"),
            string("llm.model_name", "gpt-4o-mini"),
            int("llm.token_count.prompt", 1000),
            double("llm.cost.total", 0.5),
        ])
        .expect("an LLM call");
        assert_eq!((call.cost, call.cost_source, call.price_model), (Some(0.5), Some(COST_REPORTED), None));
        let openlit = super::tests::call(&[
            string("gen_ai.system", "openai"),
            string("gen_ai.request.model", "gpt-4o-mini"),
            string("gen_ai.usage.cost", "0.25"),
        ])
        .expect("an LLM call");
        assert_eq!(openlit.cost, Some(0.25));
    }

    #[test]
    fn openllmetry_older_flattened_form_and_its_association_properties() {
        let call = call(&[
            string("llm.request.type", "chat"),
            string("gen_ai.system", "Anthropic"),
            string("gen_ai.request.model", "claude-sonnet-4-5-20250929"),
            string("gen_ai.prompt.0.role", "user"),
            string("gen_ai.prompt.0.content", "hi"),
            string("gen_ai.completion.0.finish_reason", "end_turn"),
            int("gen_ai.usage.prompt_tokens", 100),
            int("gen_ai.usage.completion_tokens", 50),
            int("llm.usage.total_tokens", 150),
            int("gen_ai.usage.cache_read_input_tokens", 40),
            string("traceloop.association.properties.session_id", "s-9"),
            string("traceloop.association.properties.user_id", "u-9"),
        ])
        .expect("an LLM call");
        assert_eq!((call.kind, call.operation.as_deref()), ("llm", Some("chat")));
        assert_eq!(call.provider.as_deref(), Some("anthropic"), "lowercase");
        assert_eq!(call.tokens.input, Some(100));
        assert_eq!(call.tokens.output, Some(50));
        assert_eq!(call.tokens.cache_read, Some(40));
        assert_eq!(call.total_tokens, Some(150));
        assert_eq!(call.finish_reason.as_deref(), Some("end_turn"));
        assert_eq!(call.conversation_id.as_deref(), Some("s-9"));
        assert_eq!(call.user_id.as_deref(), Some("u-9"));
        assert_eq!(call.price_model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        let workflow = super::tests::call(&[string("traceloop.span.kind", "workflow")]).expect("a call");
        assert_eq!(workflow.kind, "workflow");
    }

    #[test]
    fn kinds_of_tools_agents_embeddings_and_unknown_operations() {
        let kind = |attributes: &[KeyValue]| call(attributes).map(|c| c.kind);
        assert_eq!(
            kind(&[
                string("gen_ai.operation.name", "execute_tool"),
                string("gen_ai.tool.name", "get_weather")
            ]),
            Some("tool")
        );
        assert_eq!(kind(&[string("gen_ai.operation.name", "invoke_agent")]), Some("agent"));
        assert_eq!(kind(&[string("gen_ai.operation.name", "embeddings")]), Some("embedding"));
        assert_eq!(kind(&[string("gen_ai.operation.name", "translate")]), Some("other"));
        assert_eq!(kind(&[string("openinference.span.kind", "retriever")]), Some("retriever"));
        assert_eq!(kind(&[string("openinference.span.kind", "CHAIN")]), Some("chain"));
        assert_eq!(
            kind(&[string("gen_ai.request.model", "m")]),
            Some("llm"),
            "a model alone marks a model call"
        );
        let tool = call(&[string("openinference.span.kind", "TOOL"), string("tool.name", "search")])
            .expect("a call");
        assert_eq!(tool.tool_name.as_deref(), Some("search"));
        let agent =
            call(&[string("gen_ai.operation.name", "invoke_agent"), string("gen_ai.agent.name", "a1")]);
        assert_eq!(agent.and_then(|a| a.agent_name).as_deref(), Some("a1"));
    }

    #[test]
    fn spans_without_genai_attributes_are_not_llm_calls() {
        assert_eq!(call(&[]), None);
        assert_eq!(call(&[string("http.request.method", "GET"), string("url.full", "http://x")]), None);
        assert_eq!(
            call(&[string("user.id", "u"), string("session.id", "s"), string("error.type", "500")]),
            None,
            "ids and errors are on other spans too"
        );
        assert_eq!(call(&[int("gen_ai.operation.name", 3)]), call(&[]), "a number is not an operation name");
    }

    #[test]
    fn an_unknown_model_has_tokens_and_no_cost() {
        let call = call(&[
            string("gen_ai.provider.name", "house"),
            string("gen_ai.request.model", "house-llm-7b"),
            int("gen_ai.usage.input_tokens", 10),
            int("gen_ai.usage.output_tokens", 5),
        ])
        .expect("an LLM call");
        assert_eq!((call.tokens.input, call.tokens.output), (Some(10), Some(5)));
        assert_eq!((call.cost, call.cost_source, call.price_model), (None, None, None));
    }

    #[test]
    fn token_counts_arrive_as_ints_doubles_or_strings_and_nonsense_is_left_out() {
        let tokens = |value: KeyValue| {
            call(&[string("gen_ai.request.model", "m"), value]).and_then(|c| c.tokens.input)
        };
        assert_eq!(tokens(int("gen_ai.usage.input_tokens", 12)), Some(12));
        assert_eq!(tokens(double("gen_ai.usage.input_tokens", 12.0)), Some(12));
        assert_eq!(tokens(string("gen_ai.usage.input_tokens", " 12 ")), Some(12));
        assert_eq!(tokens(double("gen_ai.usage.input_tokens", 12.5)), None);
        assert_eq!(tokens(double("gen_ai.usage.input_tokens", f64::NAN)), None);
        assert_eq!(tokens(int("gen_ai.usage.input_tokens", -1)), None);
        assert_eq!(tokens(string("gen_ai.usage.input_tokens", "many")), None);
    }

    #[test]
    fn time_to_first_token_from_an_attribute_or_openinferences_event() {
        let attributes =
            [string("gen_ai.request.model", "m"), double("gen_ai.server.time_to_first_token", 0.25)];
        assert_eq!(call(&attributes).and_then(|c| c.time_to_first_token_nano), Some(250_000_000));
        let streamed = call_with(&[string("openinference.span.kind", "LLM")], &SPAN, Some(1_012_000_000));
        assert_eq!(streamed.and_then(|c| c.time_to_first_token_nano), Some(12_000_000));
        let before = call_with(&[string("openinference.span.kind", "LLM")], &SPAN, Some(5));
        assert_eq!(before.and_then(|c| c.time_to_first_token_nano), None, "an event before the span began");
    }

    #[test]
    fn an_error_status_is_the_calls_error_when_no_error_type_says_more() {
        let failed = CallSpan { status: Some((2, "rate limited")), ..SPAN };
        let attributes = [string("gen_ai.request.model", "m")];
        assert_eq!(
            call_with(&attributes, &failed, None).and_then(|c| c.error).as_deref(),
            Some("rate limited")
        );
        let bare = CallSpan { status: Some((2, "")), ..SPAN };
        assert_eq!(call_with(&attributes, &bare, None).and_then(|c| c.error).as_deref(), Some("error"));
        let ok = CallSpan { status: Some((1, "fine")), ..SPAN };
        assert_eq!(call_with(&attributes, &ok, None).and_then(|c| c.error), None);
    }

    #[test]
    fn texts_are_cut_at_a_character_boundary_and_nul_is_never_kept() {
        let long = "é".repeat(MAX_TEXT_BYTES);
        let call = call(&[string("gen_ai.request.model", &long), string("gen_ai.conversation.id", "a\0b")])
            .expect("an LLM call");
        let model = call.request_model.expect("a model");
        assert!(
            model.len() <= MAX_TEXT_BYTES && model.len() >= MAX_TEXT_BYTES - 1 && long.starts_with(&model)
        );
        assert_eq!(call.conversation_id, None);
    }

    #[test]
    fn a_row_has_a_field_for_every_column() {
        let mut rows = Rows::default();
        let attributes = [string("gen_ai.request.model", "gpt-4o-mini"), int("gen_ai.usage.input_tokens", 3)];
        let events: &[opentelemetry_proto::tonic::trace::v1::span::Event] = &[];
        write_call(&mut rows, &SPAN, &Found::read(&attributes[..]), events);
        assert_eq!(rows.count, 1);
        write_call(&mut rows, &SPAN, &Found::read(&[string("http.route", "/")][..]), events);
        assert_eq!(rows.count, 1, "not an LLM span: no row");
    }
}
