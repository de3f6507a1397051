//! Message content: the prompts, completions, tool arguments and results that GenAI telemetry
//! carries, which are large and personal. Two limits apply to it, both off unless configured
//! (README.md "Message content"):
//!
//! - `llm.max_content_bytes`: at ingest, every string of a content value longer than this is
//!   cut at a character boundary and ends with a mark saying how much was cut ([`cut`]); a JSON
//!   text of messages has each string inside it cut, so it stays JSON;
//! - `llm.content_retention`: the maintenance pass replaces the content values of days older
//!   than this with a mark ([`removed_mark`]), keeping the rest of each span and log record.
//!
//! Content is found by its key, whichever convention sent it ([`is_key`]), and in the bodies of
//! the GenAI log events ([`is_event`]). Everything else is stored exactly as sent.

use std::{borrow::Cow, sync::OnceLock};

use serde_json::Value as Json;

/// Attributes whose whole value is content.
pub const KEYS: [&str; 12] = [
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "input.value",
    "output.value",
    "llm.prompts",
    "traceloop.entity.input",
    "traceloop.entity.output",
];

/// Flattened messages and documents (OpenInference, OpenLLMetry): a key under one of these
/// prefixes is content when it ends in one of [`FLATTENED_LEAVES`]; roles, names and ids are
/// not.
pub const FLATTENED_PREFIXES: [&str; 6] = [
    "llm.input_messages.",
    "llm.output_messages.",
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "retrieval.documents.",
    "embedding.embeddings.",
];

pub const FLATTENED_LEAVES: [&str; 4] = [".content", ".arguments", ".text", ".url"];

/// Events whose body is a message (log records, by `event_name`) or whose attributes carry one.
pub const EVENTS: [&str; 8] = [
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.client.inference.operation.details",
    "gen_ai.content.prompt",
    "gen_ai.content.completion",
];

/// Whether an attribute key names content.
#[inline]
pub fn is_key(key: &[u8]) -> bool {
    // Every content key starts with one of these; most keys are turned away by their first byte.
    if !matches!(key.first(), Some(b'g' | b'l' | b'i' | b'o' | b't' | b'r' | b'e')) {
        return false;
    }
    KEYS.iter().any(|k| k.as_bytes() == key)
        || FLATTENED_PREFIXES.iter().any(|prefix| {
            key.len() > prefix.len()
                && key.starts_with(prefix.as_bytes())
                && FLATTENED_LEAVES.iter().any(|leaf| key.ends_with(leaf.as_bytes()))
        })
}

/// Whether a log record's `event_name` (or a span event's name) is a GenAI message event.
pub fn is_event(name: &[u8]) -> bool {
    EVENTS.iter().any(|e| e.as_bytes() == name)
}

/// The keys [`is_key`] accepts, as a regular expression PostgreSQL's `~` and jsonpath's
/// `like_regex` both read alike (for the maintenance pass).
pub fn key_pattern() -> String {
    let escape = |s: &str| s.replace('.', "\\.");
    let keys = KEYS.iter().map(|k| escape(k)).collect::<Vec<_>>().join("|");
    let prefixes = FLATTENED_PREFIXES.iter().map(|p| escape(p)).collect::<Vec<_>>().join("|");
    let leaves = FLATTENED_LEAVES.iter().map(|l| escape(l)).collect::<Vec<_>>().join("|");
    format!("^({keys}|({prefixes}).+({leaves}))$")
}

/// The longest a content string is stored, when `llm.max_content_bytes` is set: installed once
/// at start, read by every encoder.
static LIMIT: OnceLock<Option<usize>> = OnceLock::new();

/// The fewest bytes `llm.max_content_bytes` can keep.
pub const MIN_LIMIT: usize = 64;

/// Makes `limit` the longest content string stored from now on; the first call wins (the
/// server installs it once, at start).
pub fn install(limit: Option<usize>) {
    let _ = LIMIT.set(limit);
}

/// The limit in force: none unless [`install`]ed.
#[inline]
pub fn limit() -> Option<usize> {
    LIMIT.get().copied().flatten()
}

/// `text`, of more than `limit` bytes, cut to at most `limit` at a character boundary and
/// marked: `…[cut 57000 of 60000 bytes]`.
pub fn cut(text: &str, limit: usize) -> String {
    let mut end = limit.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\u{2026}[cut {} of {} bytes]", &text[..end], text.len() - end, text.len())
}

/// A whole content value of more than `limit` bytes, as stored: a JSON array or object of
/// messages has each string in it cut (so it stays JSON and keeps its structure) and is kept
/// as sent when none is that long; any other text is [`cut`].
pub fn cut_value(text: &str, limit: usize) -> Cow<'_, str> {
    let looks_like_json = matches!(text.trim_start().as_bytes().first(), Some(b'[' | b'{'));
    if looks_like_json {
        if let Ok(mut json) = serde_json::from_str::<Json>(text) {
            return if cut_strings(&mut json, limit) {
                Cow::Owned(json.to_string())
            } else {
                Cow::Borrowed(text)
            };
        }
    }
    Cow::Owned(cut(text, limit))
}

/// Cuts every string in `json` longer than `limit`; returns whether any was.
fn cut_strings(json: &mut Json, limit: usize) -> bool {
    match json {
        Json::String(s) if s.len() > limit => {
            *s = cut(s, limit);
            true
        }
        Json::Array(items) => items.iter_mut().fold(false, |any, item| cut_strings(item, limit) | any),
        Json::Object(members) => {
            members.values_mut().fold(false, |any, value| cut_strings(value, limit) | any)
        }
        _ => false,
    }
}

/// What replaces a content value once `llm.content_retention` has passed.
pub fn removed_mark(retention: &str) -> String {
    format!("[content removed after {retention}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keys_of_every_convention_are_found_and_their_neighbours_are_not() {
        for key in [
            "gen_ai.input.messages",
            "gen_ai.system_instructions",
            "input.value",
            "llm.input_messages.0.message.content",
            "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments",
            "llm.output_messages.0.message.contents.1.message_content.text",
            "gen_ai.prompt.0.content",
            "gen_ai.completion.0.tool_calls.0.arguments",
            "retrieval.documents.3.document.content",
        ] {
            assert!(is_key(key.as_bytes()), "{key}");
        }
        for key in [
            "gen_ai.request.model",
            "gen_ai.prompt.0.role",
            "llm.input_messages.0.message.role",
            "llm.input_messages.2.message.tool_calls.0.tool_call.id",
            "gen_ai.usage.input_tokens",
            "input.mime_type",
            "gen_ai.prompt.",
            "http.request.body",
        ] {
            assert!(!is_key(key.as_bytes()), "{key}");
        }
    }

    #[test]
    fn the_content_benchmark_matches_the_keys_content_is_found_by() {
        let bench = include_str!("../../../bench/llm_content.sql");
        assert!(
            bench.contains(&format!("'{}'::text AS p", key_pattern())),
            "bench/llm_content.sql: {}",
            key_pattern()
        );
    }

    #[test]
    fn a_cut_keeps_whole_characters_and_says_how_much_went() {
        let text = "é".repeat(100); // 200 bytes
        let cut = cut(&text, 101);
        assert_eq!(cut, format!("{}\u{2026}[cut 100 of 200 bytes]", "é".repeat(50)));
    }

    #[test]
    fn json_messages_stay_json_with_each_long_string_cut() {
        let long = "x".repeat(500);
        let messages = format!(
            r#"[{{"role":"user","parts":[{{"type":"text","content":"{long}"}}]}},{{"role":"assistant","parts":[{{"type":"text","content":"short"}}]}}]"#
        );
        let stored: Json = serde_json::from_str(&cut_value(&messages, 100)).unwrap();
        assert_eq!(
            stored[0]["parts"][0]["content"],
            Json::String(format!("{}\u{2026}[cut 400 of 500 bytes]", "x".repeat(100)))
        );
        assert_eq!(stored[1]["parts"][0]["content"], "short");
        assert_eq!(stored[0]["role"], "user");

        let many_short = format!("[{}]", vec![r#""short""#; 100].join(","));
        assert!(matches!(cut_value(&many_short, 100), Cow::Borrowed(_)), "no string is over the limit");
        assert_eq!(cut_value(&"[not json".repeat(20), 100), cut(&"[not json".repeat(20), 100));
    }
}
