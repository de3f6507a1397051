//! What the encoders' tests share: random OTLP values with hostile text, and the comparison
//! of two encodings.

use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList},
    resource::v1::Resource,
};
use proptest::{collection::vec, prelude::*};

use super::Encoded;

/// Any text, now and then with U+0000 or one of the mapping's `$` tags; often ASCII, as most
/// real keys and values are, and as the encoders' fast paths take.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        4 => "[ -~]{0,20}|[a-z.]{8,40}",
        1 => any::<String>().prop_map(|s| format!("{s}\0")),
        1 => prop::sample::select(vec!["$double", "$bytes", "$map", "$strindex", ""]).prop_map(String::from),
    ]
}

pub fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(None),
        text().prop_map(Value::StringValue).prop_map(Some),
        any::<bool>().prop_map(Value::BoolValue).prop_map(Some),
        any::<i64>().prop_map(Value::IntValue).prop_map(Some),
        any::<f64>().prop_map(Value::DoubleValue).prop_map(Some),
        vec(any::<u8>(), 0..12).prop_map(Value::BytesValue).prop_map(Some),
        any::<i32>().prop_map(Value::StringValueStrindex).prop_map(Some),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4)
                .prop_map(|values| AnyValue { value: Some(Value::ArrayValue(ArrayValue { values })) }),
            attributes_of(inner)
                .prop_map(|values| AnyValue { value: Some(Value::KvlistValue(KeyValueList { values })) }),
        ]
    })
}

pub fn attributes_of(values: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = Vec<KeyValue>> {
    vec((text(), proptest::option::of(values)), 0..4).prop_map(|entries| {
        entries.into_iter().map(|(key, value)| KeyValue { key, value, ..Default::default() }).collect()
    })
}

pub fn id() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![0; 16]),
        vec(any::<u8>(), 8),
        vec(any::<u8>(), 16),
        vec(any::<u8>(), 0..20)
    ]
}

/// Mostly a valid id of `len` bytes, so that records get past the id checks to the others.
pub fn mostly_valid(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![8 => vec(1u8..=255, len), 1 => id()]
}

pub fn resource() -> impl Strategy<Value = Option<Resource>> {
    proptest::option::of((attributes_of(any_value()), any::<u32>()).prop_map(|(attributes, dropped)| {
        Resource { attributes, dropped_attributes_count: dropped, entity_refs: vec![] }
    }))
}

pub fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    proptest::option::of((text(), text(), attributes_of(any_value())).prop_map(
        |(name, version, attributes)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count: 0,
        },
    ))
}

pub fn assert_same(wire: &Encoded, decoded: &Encoded) {
    for (table, (a, b)) in super::TABLES.iter().zip(wire.rows.iter().zip(&decoded.rows)) {
        assert_eq!((a.count, &a.buf[..]), (b.count, &b.buf[..]), "rows of {}", table.name);
    }
    assert_eq!(wire.new_dimension_ids, decoded.new_dimension_ids);
    assert_eq!((&wire.spans, &wire.logs), (&decoded.spans, &decoded.logs), "tallies");
    assert_eq!((wire.rejected, &wire.first_rejection), (decoded.rejected, &decoded.first_rejection));
}
