//! Upper bounds on the memory a request takes once decoded into prost's structs, computed from
//! its bytes before it is decoded, so that the room is taken first (see `pipeline::intake`).
//! Most requests never build those structs (protobuf is encoded straight from its bytes); these
//! bounds are for those that do: OTLP/JSON, and protobuf in forms only prost reads.
//!
//! Both are generous rather than exact: every message counts as the largest OTLP message, or as
//! its list's element type where the JSON names the list, and every list as twice its elements
//! (a growing `Vec` holds up to twice what it needs).

use crate::encode::wire::{Fields, Value};

/// The largest OTLP message prost builds (a Span, 264 bytes with opentelemetry-proto 0.33).
const LARGEST_MESSAGE: usize = 264;
/// prost's own limit on nested messages; deeper requests do not decode.
const MAX_NESTING: usize = 100;
/// Headroom a `Vec` may have over its elements.
const GROWTH: usize = 2;

/// A bound on what prost makes of a protobuf message: every length-delimited field that reads
/// as a message counts as the largest message (and its fields in turn), every one counts its
/// bytes (a string or bytes field holds at most those).
pub fn protobuf(message: &[u8]) -> usize {
    message.len() + GROWTH * messages(message, 0)
}

fn messages(message: &[u8], depth: usize) -> usize {
    if depth >= MAX_NESTING {
        return 0;
    }
    let mut total = 0;
    for field in Fields::new(message) {
        let Ok((_, Value::Bytes(inner))) = field else { continue };
        total += LARGEST_MESSAGE + inner.len();
        if Fields::new(inner).all(|f| f.is_ok()) {
            total += messages(inner, depth + 1);
        }
    }
    total
}

/// The element size of a JSON list, by the key that holds it (opentelemetry-proto 0.33's sizes).
fn element(key: &[u8]) -> usize {
    match key {
        b"resourceSpans" | b"resourceLogs" | b"resourceMetrics" | b"links" => 104,
        b"scopeSpans" | b"scopeLogs" | b"scopeMetrics" => 128,
        b"spans" => 264,
        b"logRecords" => 184,
        b"metrics" => 136,
        b"dataPoints" => 208,
        b"exemplars" | b"entityRefs" => 96,
        b"attributes" | b"filteredAttributes" | b"metadata" | b"values" | b"events" => 64,
        b"idKeys" | b"descriptionKeys" => 24,
        b"quantileValues" => 16,
        b"bucketCounts" | b"explicitBounds" => 8,
        _ => LARGEST_MESSAGE,
    }
}

/// A bound on what serde makes of an OTLP/JSON body: each element of a list costs its type's
/// size (twice over), and strings at most their own text; objects that are fields of another
/// are held inside it. Not a validator: text that is not JSON gets some bound and then fails
/// to decode.
pub fn json(body: &[u8]) -> usize {
    // For each open container: whether it is a list, and a list's element size.
    let mut open: Vec<(bool, usize)> = Vec::new();
    let mut elements = 0usize;
    let mut key: &[u8] = &[];
    // Whether the next value starts an element of the innermost list; whether the next string
    // in an object is a key.
    let (mut element_next, mut key_next) = (false, false);
    let mut i = 0;
    while i < body.len() {
        let byte = body[i];
        if byte.is_ascii_whitespace() || byte == b':' {
            i += 1;
            continue;
        }
        if element_next && byte != b']' {
            elements += open.last().map_or(0, |(_, size)| *size);
            element_next = false;
        }
        match byte {
            b'"' => {
                let start = i + 1;
                i = start;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                if key_next {
                    key = &body[start..i.min(body.len())];
                    key_next = false;
                }
            }
            b'[' => {
                open.push((true, element(key)));
                element_next = true;
            }
            b'{' => {
                open.push((false, 0));
                key_next = true;
            }
            b']' | b'}' => {
                open.pop();
                element_next = false;
            }
            b',' => match open.last() {
                Some((true, _)) => element_next = true,
                Some((false, _)) => key_next = true,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    body.len() + GROWTH * elements
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };
    use prost::Message;

    fn empty_records(n: usize) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_bounds_cover_what_empty_records_become() {
        let decoded = 1000 * std::mem::size_of::<LogRecord>();
        let wire = empty_records(1000).encode_to_vec();
        assert!(wire.len() < 2100);
        assert!(protobuf(&wire) >= decoded, "{} < {decoded}", protobuf(&wire));
        let body =
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}{{}}]}}]}}]}}"#, "{},".repeat(999));
        assert!(json(body.as_bytes()) >= decoded, "{}", json(body.as_bytes()));
        assert!(json(body.as_bytes()) <= 3 * decoded);
    }

    #[test]
    fn an_ordinary_json_request_is_bounded_near_its_size() {
        let span = r#"{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /users",
            "kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
            "attributes":[{"key":"http.method","value":{"stringValue":"GET"}},{"key":"http.status_code","value":{"intValue":"200"}},
            {"key":"http.url","value":{"stringValue":"https://example.com/users/12345?expand=orders"}}],"status":{"code":1}}"#;
        let body = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            vec![span; 100].join(",")
        );
        let bound = json(body.as_bytes());
        assert!(bound < 4 * body.len(), "{bound} for {} bytes", body.len());
        assert!(bound > 100 * (264 + 3 * 64));
    }
}
