//! The metric encoders' property tests: random requests through both paths, the same rows.

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary,
};
use proptest::{collection::vec, prelude::*};

use super::{wire_path::wire_number, *};
use crate::encode::testing::{any_value, assert_same, attributes_of, mostly_valid, resource, scope, text};

/// Point attributes: mostly flat, sometimes with maps (whose keys are sorted at every level),
/// sometimes many, with keys repeated (their order must stay as sent).
fn point_attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    let flat = prop_oneof![
        text().prop_map(Value::StringValue),
        any::<i64>().prop_map(Value::IntValue),
        any::<f64>().prop_map(Value::DoubleValue),
        any::<bool>().prop_map(Value::BoolValue),
    ]
    .prop_map(|value| AnyValue { value: Some(value) });
    let key = prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(String::from);
    let many = vec((key, flat.clone()), 6..14).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(key, value)| KeyValue { key, value: Some(value), ..Default::default() })
            .collect()
    });
    prop_oneof![4 => attributes_of(flat), 1 => many, 1 => attributes_of(any_value())]
}

fn exemplars() -> impl Strategy<Value = Vec<Exemplar>> {
    let exemplar =
        (any::<u64>(), any::<i64>(), mostly_valid(8), mostly_valid(16), attributes_of(any_value())).prop_map(
            |(time_unix_nano, v, span_id, trace_id, filtered_attributes)| Exemplar {
                filtered_attributes,
                time_unix_nano,
                span_id,
                trace_id,
                value: Some(exemplar::Value::AsInt(v)),
            },
        );
    prop_oneof![3 => Just(vec![]), 1 => vec(exemplar, 1..3)]
}

fn number() -> impl Strategy<Value = NumberDataPoint> {
    let value = proptest::option::of(prop_oneof![
        any::<i64>().prop_map(number_data_point::Value::AsInt),
        any::<f64>().prop_map(number_data_point::Value::AsDouble),
    ]);
    (point_attributes(), any::<u64>(), any::<u64>(), value, exemplars(), any::<u32>()).prop_map(
        |(attributes, start_time_unix_nano, time_unix_nano, value, exemplars, flags)| NumberDataPoint {
            attributes,
            start_time_unix_nano,
            time_unix_nano,
            exemplars,
            flags,
            value,
        },
    )
}

fn histogram() -> impl Strategy<Value = HistogramDataPoint> {
    let optional = || proptest::option::of(any::<f64>());
    (
        (point_attributes(), any::<u64>(), any::<u64>(), any::<u64>(), optional()),
        (vec(any::<u64>(), 0..4), vec(any::<f64>(), 0..3), exemplars(), any::<u32>(), optional(), optional()),
    )
        .prop_map(
            |(
                (attributes, start, time, count, sum),
                (bucket_counts, explicit_bounds, exemplars, flags, min, max),
            )| {
                HistogramDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count,
                    sum,
                    bucket_counts,
                    explicit_bounds,
                    exemplars,
                    flags,
                    min,
                    max,
                }
            },
        )
}

fn exp_histogram() -> impl Strategy<Value = ExponentialHistogramDataPoint> {
    let optional = || proptest::option::of(any::<f64>());
    let buckets = || {
        proptest::option::of(
            (any::<i32>(), vec(any::<u64>(), 0..4))
                .prop_map(|(offset, bucket_counts)| Buckets { offset, bucket_counts }),
        )
    };
    (
        (point_attributes(), any::<u64>(), any::<u64>(), any::<u64>(), optional(), any::<i32>()),
        (any::<u64>(), buckets(), buckets(), any::<u32>(), exemplars()),
        (optional(), optional(), any::<f64>()),
    )
        .prop_map(
            |(
                (attributes, start_time_unix_nano, time_unix_nano, count, sum, scale),
                (zero_count, positive, negative, flags, exemplars),
                (min, max, zero_threshold),
            )| ExponentialHistogramDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count,
                sum,
                scale,
                zero_count,
                positive,
                negative,
                flags,
                exemplars,
                min,
                max,
                zero_threshold,
            },
        )
}

fn summary() -> impl Strategy<Value = SummaryDataPoint> {
    let quantile =
        (any::<f64>(), any::<f64>()).prop_map(|(quantile, value)| ValueAtQuantile { quantile, value });
    (
        point_attributes(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<f64>(),
        vec(quantile, 0..4),
        any::<u32>(),
    )
        .prop_map(
            |(attributes, start_time_unix_nano, time_unix_nano, count, sum, quantile_values, flags)| {
                SummaryDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count,
                    sum,
                    quantile_values,
                    flags,
                }
            },
        )
}

fn data() -> impl Strategy<Value = Option<Data>> {
    prop_oneof![
        1 => Just(None),
        3 => vec(number(), 0..4).prop_map(|data_points| Some(Data::Gauge(Gauge { data_points }))),
        3 => (vec(number(), 0..4), any::<i32>(), any::<bool>()).prop_map(|(data_points, t, m)| {
            Some(Data::Sum(Sum { data_points, aggregation_temporality: t, is_monotonic: m }))
        }),
        3 => (vec(histogram(), 0..4), 0..3i32).prop_map(|(data_points, t)| {
            Some(Data::Histogram(Histogram { data_points, aggregation_temporality: t }))
        }),
        2 => (vec(exp_histogram(), 0..3), 0..3i32).prop_map(|(data_points, t)| {
            Some(Data::ExponentialHistogram(ExponentialHistogram { data_points, aggregation_temporality: t }))
        }),
        2 => vec(summary(), 0..3).prop_map(|data_points| Some(Data::Summary(Summary { data_points }))),
    ]
}

fn metric() -> impl Strategy<Value = Metric> {
    (text(), text(), text(), prop_oneof![3 => Just(vec![]), 1 => attributes_of(any_value())], data())
        .prop_map(|(name, description, unit, metadata, data)| Metric {
            name,
            description,
            unit,
            metadata,
            data,
        })
}

fn request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope_metrics = (scope(), vec(metric(), 0..4), text())
        .prop_map(|(scope, metrics, schema_url)| ScopeMetrics { scope, metrics, schema_url });
    let resource_metrics =
        (resource(), vec(scope_metrics, 0..3), text()).prop_map(|(resource, scope_metrics, schema_url)| {
            ResourceMetrics { resource, scope_metrics, schema_url }
        });
    vec(resource_metrics, 0..3).prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn wire_encoding_gives_the_rows_of_the_decoded_request(request in request()) {
        let bytes = request.encode_to_vec();
        // What protobuf encoders write (nested less deeply than MAX_DEPTH) is never Unusual.
        let wire = encode_wire(&bytes, &KnownIds::default()).expect("read from the wire");
        // Against the request as decoded: a -0.0 in a plain double field is not sent.
        let decoded = ExportMetricsServiceRequest::decode(&bytes[..]).expect("decodes");
        assert_same(&wire, &encode(&decoded, &KnownIds::default()));
    }
}

#[test]
fn unusual_encodings_are_left_to_prost() {
    let point = NumberDataPoint { value: Some(number_data_point::Value::AsInt(5)), ..Default::default() };
    let request = |point: &NumberDataPoint| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(Data::Gauge(Gauge { data_points: vec![point.clone()] })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert!(encode_wire(&request(&point).encode_to_vec(), &KnownIds::default()).is_ok());
    // Both members of the value oneof: prost keeps the last; the wire reader leaves it.
    let both = [&point.encode_to_vec()[..], &[0x21], &1.5f64.to_le_bytes()].concat();
    let decoded = NumberDataPoint::decode(&both[..]).expect("prost merges");
    assert_eq!(decoded.value, Some(number_data_point::Value::AsDouble(1.5)));
    let shape_metric = Metric::default();
    let shape = SeriesShape::new(&shape_metric, "gauge", None, None, 0, 0);
    let known = KnownIds::default();
    let mut enc = RequestEncoder::new(&known);
    assert_eq!(wire_number(&mut enc, &shape, &both), Err(Unusual));
    // Unpacked bucket counts are read as packed ones are.
    let mut out = Vec::new();
    wire::push_fixed64s(&mut out, wire::Value::Fixed64(7)).expect("unpacked");
    wire::push_fixed64s(&mut out, wire::Value::Bytes(&9u64.to_le_bytes())).expect("packed");
    assert_eq!(out, [7, 9]);
    assert_eq!(wire::push_fixed64s(&mut out, wire::Value::Bytes(&[1, 2, 3])), Err(Unusual));
}
