//! OTLP builders and comparisons: attributes, a value of every AnyValue type, and forms of
//! attribute maps that compare exactly.

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

pub fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// One attribute of every AnyValue variant, nested ones included, plus hostile text.
pub fn every_value_attributes() -> Vec<KeyValue> {
    vec![
        kv("string", s("héllo ✓ 日本語 🐘 \"quoted\" back\\slash\nnewline\ttab\u{1}")),
        kv("empty.string", s("")),
        kv("bool.true", Value::BoolValue(true)),
        kv("bool.false", Value::BoolValue(false)),
        kv("int", Value::IntValue(-42)),
        kv("int.max", Value::IntValue(i64::MAX)),
        kv("int.min", Value::IntValue(i64::MIN)),
        kv("double", Value::DoubleValue(3.25)),
        kv("double.whole", Value::DoubleValue(42.0)),
        kv("double.tiny", Value::DoubleValue(5e-324)),
        kv("double.huge", Value::DoubleValue(1.7976931348623157e308)),
        kv("double.nan", Value::DoubleValue(f64::NAN)),
        kv("double.inf", Value::DoubleValue(f64::INFINITY)),
        kv("double.neg_inf", Value::DoubleValue(f64::NEG_INFINITY)),
        kv("double.neg_zero", Value::DoubleValue(-0.0)),
        kv("bytes", Value::BytesValue(vec![0, 1, 2, 254, 255])),
        kv("bytes.empty", Value::BytesValue(vec![])),
        kv(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue { value: Some(Value::IntValue(1)) },
                    AnyValue { value: Some(Value::DoubleValue(1.0)) },
                    AnyValue { value: Some(s("one")) },
                    AnyValue { value: None },
                    AnyValue { value: Some(Value::ArrayValue(ArrayValue::default())) },
                ],
            }),
        ),
        kv("array.empty", Value::ArrayValue(ArrayValue::default())),
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![
                    kv(
                        "nested",
                        Value::KvlistValue(KeyValueList { values: vec![kv("deep", Value::IntValue(7))] }),
                    ),
                    kv("$bytes", s("a map key that looks like a tag")),
                ],
            }),
        ),
        kv("map.tag_lookalike", Value::KvlistValue(KeyValueList { values: vec![kv("$double", s("NaN"))] })),
        kv("map.empty", Value::KvlistValue(KeyValueList::default())),
        KeyValue { key: "empty.value".into(), value: Some(AnyValue { value: None }), ..Default::default() },
    ]
}

/// A comparable form of an attribute map: sorted by key at every level, doubles by their bits
/// (so NaN equals NaN and -0 differs from 0), an absent value the same as an empty one.
pub fn normalize(attributes: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        attributes.iter().map(|kv| (kv.key.clone(), normalize_value(kv.value.as_ref()))).collect();
    out.sort();
    out
}

fn normalize_value(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => "empty".into(),
        Some(Value::DoubleValue(d)) => format!("double:{:x}", d.to_bits()),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| normalize_value(Some(v))).collect();
            format!("array:[{}]", items.join(","))
        }
        Some(Value::KvlistValue(l)) => format!("map:{:?}", normalize(&l.values)),
        Some(other) => format!("{other:?}"),
    }
}

pub fn normalize_any(value: &AnyValue) -> String {
    normalize_value(Some(value))
}

/// Reads a stored attribute map back into OTLP.
pub fn attributes(json: &serde_json::Value) -> Vec<KeyValue> {
    otelephant::encode::attributes::attributes_from_json(json).expect("stored attributes follow the mapping")
}
