//! The records otelephant refuses, checked before a record is encoded so that one bad record
//! never fails the batch it would share with everyone else's: it is left out and counted in the
//! answer's OTLP `partial_success` instead.
//!
//! - Ids: a span's trace_id must be 16 bytes and span_id 8 bytes, neither all zero (the OTLP
//!   and W3C definitions of a valid id); a parent span id, a link's ids, and a log record's
//!   ids must have those lengths when present.
//! - Text: PostgreSQL's text and jsonb cannot hold U+0000. Values can carry it all the same:
//!   the jsonb mapping stores a string value holding it in a reversible form (see
//!   `attributes`), at any depth, in attributes, bodies, event and link attributes and
//!   exemplars. Keys and identifiers cannot: a record with U+0000 in a name, an attribute key
//!   at any depth, a trace state, a status message, a severity text or an event name is
//!   refused, as is every record under a resource or scope whose name, version, schema URL or
//!   attribute keys carry it.

use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
};

/// Why a record was refused.
pub type Rejection = String;

const TRACE_ID_LEN: usize = 16;
const SPAN_ID_LEN: usize = 8;

fn has_nul(text: &str) -> bool {
    text.as_bytes().contains(&0)
}

/// Why a record with U+0000 in `field` (a name or other identifier) is refused.
#[cold]
pub fn nul_in_value(field: &str) -> Rejection {
    format!("{field} contains U+0000, which PostgreSQL text cannot store")
}

/// Why a record with U+0000 in a map key in `field` (attributes, or a value holding maps) is
/// refused.
#[cold]
pub fn nul_in_keys(field: &str) -> Rejection {
    format!("a key in {field} contains U+0000, which PostgreSQL cannot store in a key (values may hold it)")
}

/// U+0000 in `text`, named by `field`.
#[inline]
pub fn text(field: &str, text: &str) -> Result<(), Rejection> {
    if has_nul(text) {
        return Err(nul_in_value(field));
    }
    Ok(())
}

/// Whether `key` can be a map key in jsonb, which cannot hold U+0000 (values can: see
/// `attributes`).
pub fn is_key(key: &[u8]) -> bool {
    !key.contains(&0)
}

/// Whether no map key in `value` holds U+0000 (string values may).
fn any_value_ok(value: &AnyValue) -> bool {
    match &value.value {
        Some(Value::ArrayValue(a)) => a.values.iter().all(any_value_ok),
        Some(Value::KvlistValue(l)) => attributes_ok(&l.values),
        _ => true,
    }
}

fn attributes_ok(attributes: &[KeyValue]) -> bool {
    attributes.iter().all(|kv| is_key(kv.key.as_bytes()) && kv.value.as_ref().is_none_or(any_value_ok))
}

/// U+0000 in a key of a decoded attribute map (a resource's, a scope's, a metric's metadata),
/// at any depth, named by `field`. The maps of records are checked as they are written (see
/// `attributes::write_attributes`).
pub fn attributes(field: &str, attributes: &[KeyValue]) -> Result<(), Rejection> {
    if !attributes_ok(attributes) {
        return Err(nul_in_keys(field));
    }
    Ok(())
}

/// `Err(nul_in_keys(field))` when writing `field` found U+0000 in a key.
pub fn keys(field: &str, nul_in_key: bool) -> Result<(), Rejection> {
    if nul_in_key {
        return Err(nul_in_keys(field));
    }
    Ok(())
}

pub fn resource(resource: Option<&Resource>, schema_url: &str) -> Result<(), Rejection> {
    text("resource schema_url", schema_url)?;
    let Some(resource) = resource else { return Ok(()) };
    attributes("resource attributes", &resource.attributes)?;
    for entity in &resource.entity_refs {
        text("resource entity_refs", &entity.r#type)?;
        text("resource entity_refs", &entity.schema_url)?;
        for key in entity.id_keys.iter().chain(&entity.description_keys) {
            text("resource entity_refs", key)?;
        }
    }
    Ok(())
}

pub fn scope(scope: Option<&InstrumentationScope>, schema_url: &str) -> Result<(), Rejection> {
    text("scope schema_url", schema_url)?;
    let Some(scope) = scope else { return Ok(()) };
    text("scope name", &scope.name)?;
    text("scope version", &scope.version)?;
    attributes("scope attributes", &scope.attributes)
}

/// A required id: exactly `len` bytes, not all zero.
fn required_id(field: &str, id: &[u8], len: usize) -> Result<(), Rejection> {
    if id.len() != len {
        return Err(format!("{field} must be {len} bytes, got {}", id.len()));
    }
    if id.iter().all(|&b| b == 0) {
        return Err(format!("{field} must not be all zero"));
    }
    Ok(())
}

/// An optional id: empty, or exactly `len` bytes.
fn optional_id(field: &str, id: &[u8], len: usize) -> Result<(), Rejection> {
    if !id.is_empty() && id.len() != len {
        return Err(format!("{field} must be empty or {len} bytes, got {}", id.len()));
    }
    Ok(())
}

pub fn trace_id(field: &str, id: &[u8]) -> Result<(), Rejection> {
    required_id(field, id, TRACE_ID_LEN)
}

pub fn span_id(field: &str, id: &[u8]) -> Result<(), Rejection> {
    required_id(field, id, SPAN_ID_LEN)
}

pub fn optional_trace_id(field: &str, id: &[u8]) -> Result<(), Rejection> {
    optional_id(field, id, TRACE_ID_LEN)
}

pub fn optional_span_id(field: &str, id: &[u8]) -> Result<(), Rejection> {
    optional_id(field, id, SPAN_ID_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    #[test]
    fn nul_in_keys_is_found_at_any_depth_and_values_may_hold_it() {
        let deep = |key: &str, value: &str| {
            kv(
                "a",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList {
                            values: vec![kv(key, Value::StringValue(value.into()))],
                        })),
                    }],
                }),
            )
        };
        assert!(attributes("attributes", &[deep("b\0", "x")]).is_err());
        assert!(attributes("attributes", &[deep("b", "x\0y")]).is_ok());
        assert!(attributes("attributes", &[kv("k\0", Value::IntValue(1))]).is_err());
        assert!(attributes("attributes", &[kv("k", Value::StringValue("\0".into()))]).is_ok());
        assert!(attributes("attributes", &[kv("k", Value::StringValue("fine ✓".into()))]).is_ok());
        assert!(
            attributes("attributes", &[kv("bytes", Value::BytesValue(vec![0, 0]))]).is_ok(),
            "bytes may hold zeros"
        );
    }

    #[test]
    fn ids() {
        assert!(trace_id("trace_id", &[1; 16]).is_ok());
        assert!(trace_id("trace_id", &[0; 16]).unwrap_err().contains("all zero"));
        assert!(trace_id("trace_id", &[1; 15]).unwrap_err().contains("16 bytes"));
        assert!(span_id("span_id", &[]).is_err());
        assert!(optional_span_id("parent_span_id", &[]).is_ok());
        assert!(optional_span_id("parent_span_id", &[1; 7]).is_err());
    }
}
