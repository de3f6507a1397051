//! One conversation, trace or call as a chat: the calls from `llm_calls`, and for each model
//! call the messages it was sent and answered, read from its span's attributes and its log
//! records in whichever form the instrumentation wrote them (see [`messages_of`]).

use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use tonic::Status;

use super::{
    decode_off_thread,
    llm::{call_of, CALL_COLUMNS},
    proto::{
        GetLlmConversationRequest, GetLlmConversationResponse, LlmConversationCall, LlmMessage, LlmPart,
    },
    resolve_range,
    traces::parse_trace_id,
    Query, Sql,
};

/// Most calls a conversation answers; the oldest are kept.
pub const MAX_CALLS: usize = 200;

/// Log events of the older GenAI form: one message each, tied to its call by span id.
const MESSAGE_EVENTS: [&str; 5] = [
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
];

/// The log event that carries a call's messages as structured attributes.
const INFERENCE_EVENT: &str = "gen_ai.client.inference.operation.details";

pub(super) async fn get_llm_conversation(
    q: &Query,
    request: &GetLlmConversationRequest,
) -> Result<GetLlmConversationResponse, Status> {
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let mut sql = Sql::default();
    let (start, end) = (sql.param(start), sql.param(end));
    let chosen = match (request.conversation_id.as_str(), request.trace_id.as_str(), request.span_id.as_str())
    {
        (id, "", "") if !id.is_empty() => {
            if id.len() > q.limits.max_filter_bytes {
                return Err(Status::invalid_argument("conversation_id: longer than query.max_filter_bytes"));
            }
            let id = sql.param(id.to_owned());
            format!(
                "c.trace_id IN (SELECT o.trace_id FROM llm_calls o WHERE o.conversation_id = {id} \
                 AND o.start_time_unix_nano >= {start} AND o.start_time_unix_nano < {end})"
            )
        }
        ("", trace, span) if !trace.is_empty() => {
            let trace = sql.param(parse_trace_id(trace, "trace_id")?);
            match span {
                "" => format!("c.trace_id = {trace}"),
                span => {
                    let span = hex::decode(span).ok().filter(|s| s.len() == 8).ok_or_else(|| {
                        Status::invalid_argument("span_id: expected 16 hexadecimal characters")
                    })?;
                    format!("c.trace_id = {trace} AND c.span_id = {}", sql.param(span))
                }
            }
        }
        _ => {
            return Err(Status::invalid_argument(
                "give a conversation_id, or a trace_id (with a span_id for one call)",
            ))
        }
    };
    // The calls, each with its span's attributes (on Citus, on the node of its trace).
    let statement = format!(
        "SELECT {CALL_COLUMNS}, s.attributes
         FROM llm_calls c LEFT JOIN resources r ON r.resource_id = c.resource_id
         LEFT JOIN spans s ON s.trace_id = c.trace_id AND s.span_id = c.span_id
              AND s.start_time_unix_nano = c.start_time_unix_nano
         WHERE {chosen} AND c.start_time_unix_nano >= {start} AND c.start_time_unix_nano < {end}
         ORDER BY c.start_time_unix_nano, c.span_id
         LIMIT {}",
        MAX_CALLS + 1
    );
    let mut budget = q.budget();
    let mut client = q.client().await?;
    let (rows, full) = client.query_within(&statement, &sql.params(), &mut budget).await?;
    // Their GenAI log events, by trace id (its index) and span id.
    let mut trace_ids: Vec<Vec<u8>> = Vec::new();
    let mut span_ids: Vec<Vec<u8>> = Vec::new();
    for row in rows.iter().take(MAX_CALLS) {
        let (trace, span): (&str, &str) = (row.get(0), row.get(1));
        if let (Ok(trace), Ok(span)) = (hex::decode(trace), hex::decode(span)) {
            if !trace_ids.contains(&trace) {
                trace_ids.push(trace);
            }
            span_ids.push(span);
        }
    }
    let (events, _) = client
        .query_within(
            "SELECT encode(span_id, 'hex'),
                    jsonb_build_object('event', coalesce(event_name, attributes->>'event.name'),
                                       'body', body, 'attributes', attributes)
             FROM logs WHERE trace_id = ANY($1) AND span_id = ANY($2)
               AND coalesce(event_name, attributes->>'event.name') LIKE 'gen\\_ai.%'
             ORDER BY timestamp_unix_nano",
            &[&trace_ids, &span_ids],
            &mut budget,
        )
        .await?;
    drop(client);
    decode_off_thread(budget.used(), move || {
        let mut by_span: HashMap<String, Vec<Json>> = HashMap::new();
        for event in &events {
            by_span.entry(event.get(0)).or_default().push(event.get(1));
        }
        let mut answer =
            GetLlmConversationResponse { truncated: full || rows.len() > MAX_CALLS, ..Default::default() };
        // A call stored twice (an exporter retried) is shown once.
        let mut seen = std::collections::HashSet::new();
        for row in rows.iter().take(MAX_CALLS) {
            let call = call_of(row);
            if !seen.insert(call.span_id.clone()) {
                continue;
            }
            if matches!(call.kind.as_str(), "llm" | "embedding") {
                answer.input_tokens += call.input_tokens.unwrap_or(0);
                answer.output_tokens += call.output_tokens.unwrap_or(0);
                answer.cost += call.cost.unwrap_or(0.0);
            }
            let attributes: Option<Json> = row.get(26);
            let events = by_span.get(&call.span_id).map_or(&[][..], Vec::as_slice);
            let (input, output, source) = messages_of(attributes.as_ref().and_then(Json::as_object), events);
            answer.calls.push(LlmConversationCall { call: Some(call), input, output, source: source.into() });
        }
        Ok(answer)
    })
    .await
}

/// A call's input and output messages.
type Messages = (Vec<LlmMessage>, Vec<LlmMessage>);

/// A call's input and output messages and where they were read: the first form that holds
/// any, newest first.
pub fn messages_of(
    attributes: Option<&Map<String, Json>>,
    events: &[Json],
) -> (Vec<LlmMessage>, Vec<LlmMessage>, &'static str) {
    let empty = Map::new();
    let attributes = attributes.unwrap_or(&empty);
    let readers: [(&'static str, &dyn Fn() -> Messages); 5] = [
        ("span messages", &|| genai_messages(attributes)),
        ("inference event", &|| {
            events
                .iter()
                .filter(|e| e["event"] == INFERENCE_EVENT)
                .filter_map(|e| e["attributes"].as_object())
                .map(genai_messages)
                .next()
                .unwrap_or_default()
        }),
        ("openinference attributes", &|| {
            flattened(attributes, "llm.input_messages.", "llm.output_messages.", true)
        }),
        ("openllmetry attributes", &|| flattened(attributes, "gen_ai.prompt.", "gen_ai.completion.", false)),
        ("message events", &|| message_events(events)),
    ];
    for (source, read) in readers {
        let (input, output) = read();
        if !input.is_empty() || !output.is_empty() {
            return (input, output, source);
        }
    }
    (Vec::new(), Vec::new(), "")
}

/// A JSON value that may have arrived as JSON text in a string.
fn parsed(value: &Json) -> Option<Json> {
    match value {
        Json::String(text) => serde_json::from_str(text).ok(),
        Json::Null => None,
        other => Some(other.clone()),
    }
}

/// Text as it is, anything else as its JSON.
fn text_of(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// The newest GenAI form: `gen_ai.system_instructions`, `gen_ai.input.messages` and
/// `gen_ai.output.messages`, each JSON text on a span or structured on the inference event.
fn genai_messages(attributes: &Map<String, Json>) -> (Vec<LlmMessage>, Vec<LlmMessage>) {
    let messages = |key: &str| -> Vec<LlmMessage> {
        let Some(Json::Array(items)) = attributes.get(key).and_then(parsed) else { return Vec::new() };
        items
            .iter()
            .filter_map(Json::as_object)
            .map(|m| LlmMessage {
                role: text_of(m.get("role").unwrap_or(&Json::Null)),
                parts: m
                    .get("parts")
                    .and_then(Json::as_array)
                    .map_or_else(Vec::new, |p| p.iter().map(part).collect()),
                finish_reason: text_of(m.get("finish_reason").unwrap_or(&Json::Null)),
            })
            .collect()
    };
    let mut input = Vec::new();
    if let Some(instructions) = attributes.get("gen_ai.system_instructions").and_then(parsed) {
        let parts = match instructions {
            Json::Array(parts) => parts.iter().map(part).collect(),
            other => vec![LlmPart { r#type: "text".into(), content: text_of(&other), ..LlmPart::default() }],
        };
        input.push(LlmMessage { role: "system".into(), parts, finish_reason: String::new() });
    }
    input.extend(messages("gen_ai.input.messages"));
    (input, messages("gen_ai.output.messages"))
}

/// One part of the newest form: text, tool_call, tool_call_response, reasoning, or another.
fn part(value: &Json) -> LlmPart {
    let field = |key: &str| value.get(key).map(text_of).unwrap_or_default();
    let kind = field("type");
    match kind.as_str() {
        "text" | "reasoning" => LlmPart { content: field("content"), r#type: kind, ..LlmPart::default() },
        "tool_call" => LlmPart {
            tool_call_id: field("id"),
            tool_name: field("name"),
            arguments: field("arguments"),
            r#type: kind,
            ..LlmPart::default()
        },
        "tool_call_response" => LlmPart {
            tool_call_id: field("id"),
            content: field("response"),
            r#type: kind,
            ..LlmPart::default()
        },
        _ => LlmPart { content: text_of(value), r#type: kind, ..LlmPart::default() },
    }
}

/// Flattened messages: OpenInference's `llm.input_messages.N.message.role`, `.content`,
/// `.tool_call_id`, `.tool_calls.M.tool_call.{id,function.name,function.arguments}`, or
/// OpenLLMetry's `gen_ai.prompt.N.role`, `.content`, `.tool_call_id`,
/// `.tool_calls.M.{id,name,arguments}`, `gen_ai.completion.N.finish_reason`.
fn flattened(
    attributes: &Map<String, Json>,
    input_prefix: &str,
    output_prefix: &str,
    openinference: bool,
) -> (Vec<LlmMessage>, Vec<LlmMessage>) {
    let read = |prefix: &str| -> Vec<LlmMessage> {
        // Message number -> its fields (after "message." for OpenInference).
        let mut messages: HashMap<usize, HashMap<&str, &Json>> = HashMap::new();
        for (key, value) in attributes {
            let Some(rest) = key.strip_prefix(prefix) else { continue };
            let Some((n, field)) = rest.split_once('.') else { continue };
            let Ok(n) = n.parse::<usize>() else { continue };
            let field = if openinference { field.strip_prefix("message.").unwrap_or(field) } else { field };
            messages.entry(n).or_default().insert(field, value);
        }
        let mut numbers: Vec<usize> = messages.keys().copied().collect();
        numbers.sort_unstable();
        numbers
            .into_iter()
            .map(|n| {
                let fields = &messages[&n];
                let get = |key: &str| fields.get(key).map(|v| text_of(v)).unwrap_or_default();
                let mut parts = Vec::new();
                let content = get("content");
                let tool_call_id = get("tool_call_id");
                if !tool_call_id.is_empty() {
                    parts.push(LlmPart {
                        r#type: "tool_call_response".into(),
                        content,
                        tool_call_id,
                        ..LlmPart::default()
                    });
                } else if !content.is_empty() {
                    parts.push(LlmPart { r#type: "text".into(), content, ..LlmPart::default() });
                }
                let mut calls: Vec<usize> = fields
                    .keys()
                    .filter_map(|f| f.strip_prefix("tool_calls.")?.split_once('.')?.0.parse().ok())
                    .collect();
                calls.sort_unstable();
                calls.dedup();
                for m in calls {
                    let call = |suffix: &str| get(&format!("tool_calls.{m}.{suffix}"));
                    let (id, name, arguments) = if openinference {
                        (
                            call("tool_call.id"),
                            call("tool_call.function.name"),
                            call("tool_call.function.arguments"),
                        )
                    } else {
                        (call("id"), call("name"), call("arguments"))
                    };
                    parts.push(LlmPart {
                        r#type: "tool_call".into(),
                        tool_call_id: id,
                        tool_name: name,
                        arguments,
                        ..LlmPart::default()
                    });
                }
                LlmMessage { role: get("role"), parts, finish_reason: get("finish_reason") }
            })
            .collect()
    };
    (read(input_prefix), read(output_prefix))
}

/// The older GenAI form: one log event per message, its body a map.
fn message_events(events: &[Json]) -> (Vec<LlmMessage>, Vec<LlmMessage>) {
    let (mut input, mut output) = (Vec::new(), Vec::new());
    for event in events {
        let Some(name) = event["event"].as_str().filter(|n| MESSAGE_EVENTS.contains(n)) else { continue };
        let body = &event["body"];
        if name == "gen_ai.choice" {
            let message = &body["message"];
            output.push(LlmMessage {
                role: message.get("role").map_or_else(|| "assistant".into(), text_of),
                parts: body_parts(message),
                finish_reason: body.get("finish_reason").map(text_of).unwrap_or_default(),
            });
            continue;
        }
        let role = body
            .get("role")
            .map(text_of)
            .unwrap_or_else(|| name.trim_start_matches("gen_ai.").trim_end_matches(".message").to_owned());
        input.push(LlmMessage { role, parts: body_parts(body), finish_reason: String::new() });
    }
    (input, output)
}

/// The parts of an older-form message body: `content`, `tool_calls` (with `function.name`
/// and `function.arguments`), and for a tool's message the call's `id`.
fn body_parts(body: &Json) -> Vec<LlmPart> {
    let mut parts = Vec::new();
    let content = body.get("content").map(text_of).unwrap_or_default();
    match body.get("id").map(text_of) {
        Some(id) if !id.is_empty() => {
            parts.push(LlmPart {
                r#type: "tool_call_response".into(),
                content,
                tool_call_id: id,
                ..LlmPart::default()
            });
        }
        _ if !content.is_empty() => {
            parts.push(LlmPart { r#type: "text".into(), content, ..LlmPart::default() })
        }
        _ => {}
    }
    for call in body.get("tool_calls").and_then(Json::as_array).into_iter().flatten() {
        parts.push(LlmPart {
            r#type: "tool_call".into(),
            tool_call_id: call.get("id").map(text_of).unwrap_or_default(),
            tool_name: call["function"].get("name").map(text_of).unwrap_or_default(),
            arguments: call["function"].get("arguments").map(text_of).unwrap_or_default(),
            ..LlmPart::default()
        });
    }
    parts
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn roles_and_texts(messages: &[LlmMessage]) -> Vec<(String, Vec<String>)> {
        messages
            .iter()
            .map(|m| {
                let parts = m
                    .parts
                    .iter()
                    .map(|p| match p.r#type.as_str() {
                        "tool_call" => format!("call {} {} {}", p.tool_call_id, p.tool_name, p.arguments),
                        "tool_call_response" => format!("result {} {}", p.tool_call_id, p.content),
                        _ => p.content.clone(),
                    })
                    .collect();
                (m.role.clone(), parts)
            })
            .collect()
    }

    fn expect(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        pairs.iter().map(|(r, p)| ((*r).to_owned(), p.iter().map(|s| (*s).to_owned()).collect())).collect()
    }

    #[test]
    fn the_newest_form_as_json_text_on_the_span() {
        let attributes = json!({
            "gen_ai.input.messages": r#"[{"role":"system","parts":[{"content":"Be terse.","type":"text"}]},{"role":"user","parts":[{"content":"Weather?","type":"text"}]},{"role":"assistant","parts":[{"arguments":{"city":"Paris"},"name":"get_weather","id":"c1","type":"tool_call"}]},{"role":"tool","parts":[{"id":"c1","response":"sunny","type":"tool_call_response"}]}]"#,
            "gen_ai.output.messages": r#"[{"role":"assistant","parts":[{"content":"Sunny.","type":"text"}],"finish_reason":"stop"}]"#
        });
        let (input, output, source) = messages_of(attributes.as_object(), &[]);
        assert_eq!(source, "span messages");
        assert_eq!(
            roles_and_texts(&input),
            expect(&[
                ("system", &["Be terse."]),
                ("user", &["Weather?"]),
                ("assistant", &[r#"call c1 get_weather {"city":"Paris"}"#]),
                ("tool", &["result c1 sunny"]),
            ])
        );
        assert_eq!(roles_and_texts(&output), expect(&[("assistant", &["Sunny."])]));
        assert_eq!(output[0].finish_reason, "stop");
    }

    #[test]
    fn the_newest_form_structured_on_the_inference_event_and_system_instructions() {
        let events = [json!({"event": INFERENCE_EVENT, "body": null, "attributes": {
            "gen_ai.system_instructions": [{"type": "text", "content": "Be kind."}],
            "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}],
            "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "reasoning", "content": "hm"}, {"type": "text", "content": "Hello"}]}]
        }})];
        let (input, output, source) = messages_of(None, &events);
        assert_eq!(source, "inference event");
        assert_eq!(roles_and_texts(&input), expect(&[("system", &["Be kind."]), ("user", &["Hi"])]));
        assert_eq!(roles_and_texts(&output), expect(&[("assistant", &["hm", "Hello"])]));
        assert_eq!(output[0].parts[0].r#type, "reasoning");
    }

    #[test]
    fn openinference_flattened_attributes_in_message_order() {
        let attributes = json!({
            "llm.input_messages.10.message.role": "user",
            "llm.input_messages.10.message.content": "tenth",
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "Be terse.",
            "llm.input_messages.2.message.role": "assistant",
            "llm.input_messages.2.message.tool_calls.0.tool_call.id": "c1",
            "llm.input_messages.2.message.tool_calls.0.tool_call.function.name": "get_weather",
            "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments": "{\"city\": \"Paris\"}",
            "llm.input_messages.3.message.role": "tool",
            "llm.input_messages.3.message.tool_call_id": "c1",
            "llm.input_messages.3.message.content": "sunny",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "Sunny.",
            "llm.model_name": "m"
        });
        let (input, output, source) = messages_of(attributes.as_object(), &[]);
        assert_eq!(source, "openinference attributes");
        assert_eq!(
            roles_and_texts(&input),
            expect(&[
                ("system", &["Be terse."]),
                ("assistant", &[r#"call c1 get_weather {"city": "Paris"}"#]),
                ("tool", &["result c1 sunny"]),
                ("user", &["tenth"]),
            ])
        );
        assert_eq!(roles_and_texts(&output), expect(&[("assistant", &["Sunny."])]));
    }

    #[test]
    fn openllmetry_flattened_attributes() {
        let attributes = json!({
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "Weather?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "c1",
            "gen_ai.completion.0.tool_calls.0.name": "get_weather",
            "gen_ai.completion.0.tool_calls.0.arguments": "{}"
        });
        let (input, output, source) = messages_of(attributes.as_object(), &[]);
        assert_eq!(source, "openllmetry attributes");
        assert_eq!(roles_and_texts(&input), expect(&[("user", &["Weather?"])]));
        assert_eq!(roles_and_texts(&output), expect(&[("assistant", &["call c1 get_weather {}"])]));
        assert_eq!(output[0].finish_reason, "tool_calls");
    }

    #[test]
    fn the_older_per_message_log_events_as_openai_v2_sends_them() {
        let events = [
            json!({"event": "gen_ai.system.message", "body": {"content": "Be terse."}}),
            json!({"event": "gen_ai.user.message", "body": {"content": "Weather?"}}),
            json!({"event": "gen_ai.assistant.message", "body": {"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}}),
            json!({"event": "gen_ai.tool.message", "body": {"content": "{\"weather\": \"sunny\"}", "id": "c1"}}),
            json!({"event": "gen_ai.choice", "body": {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Sunny."}}}),
            json!({"event": "gen_ai.evaluation.result", "body": {"score": 1}}),
        ];
        let (input, output, source) = messages_of(Some(&Map::new()), &events);
        assert_eq!(source, "message events");
        assert_eq!(
            roles_and_texts(&input),
            expect(&[
                ("system", &["Be terse."]),
                ("user", &["Weather?"]),
                ("assistant", &[r#"call c1 get_weather {"city": "Paris"}"#]),
                ("tool", &[r#"result c1 {"weather": "sunny"}"#]),
            ])
        );
        assert_eq!(roles_and_texts(&output), expect(&[("assistant", &["Sunny."])]));
        assert_eq!(output[0].finish_reason, "stop");
    }

    #[test]
    fn nothing_captured_is_said_so() {
        let attributes = json!({"gen_ai.input.messages": "not json", "gen_ai.request.model": "m"});
        assert_eq!(messages_of(attributes.as_object(), &[]), (Vec::new(), Vec::new(), ""));
    }
}
