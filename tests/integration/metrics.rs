//! Every metric type, sent by a real OTLP/gRPC client, comes back from SQL with every field.

use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point, Exemplar,
    ExponentialHistogramDataPoint,
};

use crate::common::{fixtures::metrics::request, *};

/// Exemplars as stored, rebuilt into OTLP and compared in a normalized form.
fn assert_exemplars(stored: Option<serde_json::Value>, sent: &[Exemplar]) {
    let Some(stored) = stored else {
        return assert!(sent.is_empty(), "exemplars were lost");
    };
    let stored = stored.as_array().expect("exemplar array");
    assert_eq!(stored.len(), sent.len());
    for (json, exemplar) in stored.iter().zip(sent) {
        assert_eq!(json["time_unix_nano"].as_u64(), Some(exemplar.time_unix_nano));
        match exemplar.value {
            Some(exemplar::Value::AsInt(i)) => assert_eq!(json["as_int"].as_i64(), Some(i)),
            Some(exemplar::Value::AsDouble(d)) => {
                let back =
                    otelephant::encode::attributes::double_from_json(&json["as_double"]).expect("double");
                assert_eq!(back.to_bits(), d.to_bits());
            }
            None => assert!(json.get("as_int").is_none() && json.get("as_double").is_none()),
        }
        let hex_or_empty =
            |key: &str| json.get(key).map(|v| hex::decode(v.as_str().expect("hex")).expect("hex"));
        assert_eq!(hex_or_empty("span_id").unwrap_or_default(), exemplar.span_id);
        assert_eq!(hex_or_empty("trace_id").unwrap_or_default(), exemplar.trace_id);
        let filtered = json.get("filtered_attributes").map(attributes).unwrap_or_default();
        assert_eq!(normalize(&filtered), normalize(&exemplar.filtered_attributes));
    }
}

#[tokio::test]
async fn every_metric_type_round_trips() {
    let mut t = TestServer::start().await;
    let now = nanos_now();
    let sent = request(now);
    t.metrics().await.export(sent.clone()).await.expect("export succeeds");
    let metrics = &sent.resource_metrics[0].scope_metrics[0].metrics;

    // Series: identity, temporality, monotonicity, metadata, attributes.
    let series = t
        .sql
        .query(
            "SELECT m.*, r.service_name, sc.name AS scope_name FROM metric_series m
             JOIN resources r USING (resource_id) JOIN scopes sc USING (scope_id)
             ORDER BY metric_name, m.attributes::text",
            &[],
        )
        .await
        .expect("series");
    let described: Vec<(String, String, Option<i32>, Option<bool>)> = series
        .iter()
        .map(|r| {
            (
                r.get("metric_name"),
                r.get("metric_type"),
                r.get("aggregation_temporality"),
                r.get("is_monotonic"),
            )
        })
        .collect();
    assert_eq!(
        described,
        vec![
            ("exp_histogram".into(), "exponential_histogram".into(), Some(2), None),
            ("exp_histogram".into(), "exponential_histogram".into(), Some(2), None),
            ("gauge.int".into(), "gauge".into(), None, None),
            ("gauge.int".into(), "gauge".into(), None, None),
            ("histogram".into(), "histogram".into(), Some(1), None),
            ("histogram".into(), "histogram".into(), Some(1), None),
            ("sum.double".into(), "sum".into(), Some(2), Some(true)),
            ("summary".into(), "summary".into(), None, None),
        ]
    );
    for row in &series {
        assert_eq!(
            row.get::<_, String>("description"),
            format!("{} – described", row.get::<_, String>("metric_name"))
        );
        assert_eq!(row.get::<_, String>("unit"), "ms");
        assert_eq!(row.get::<_, serde_json::Value>("metadata"), serde_json::json!({"meta": "data"}));
        assert_eq!(row.get::<_, Option<String>>("service_name").as_deref(), Some("billing"));
        assert_eq!(row.get::<_, String>("scope_name"), "meter");
    }

    // Gauge and sum points.
    let numbers = t
        .sql
        .query(
            "SELECT p.*, m.metric_name, m.attributes FROM metric_points_number p JOIN metric_series m USING (series_id)
             ORDER BY metric_name, m.attributes->>'route'",
            &[],
        )
        .await
        .expect("number points");
    assert_eq!(numbers.len(), 3);
    let gauge_points = match &metrics[0].data {
        Some(Data::Gauge(g)) => &g.data_points,
        _ => unreachable!(),
    };
    let sum_points = match &metrics[1].data {
        Some(Data::Sum(s)) => &s.data_points,
        _ => unreachable!(),
    };
    for (row, sent) in numbers.iter().zip(gauge_points.iter().chain(sum_points)) {
        assert_eq!(row.get::<_, i64>("time_unix_nano") as u64, sent.time_unix_nano);
        assert_eq!(row.get::<_, i64>("start_time_unix_nano") as u64, sent.start_time_unix_nano);
        assert_eq!(row.get::<_, i64>("flags") as u32, sent.flags);
        assert_eq!(normalize(&attributes(&row.get("attributes"))), normalize(&sent.attributes));
        let value_int: Option<i64> = row.get("value_int");
        let value_double: Option<f64> = row.get("value_double");
        match sent.value {
            Some(number_data_point::Value::AsInt(i)) => {
                assert_eq!((value_int, value_double), (Some(i), None))
            }
            Some(number_data_point::Value::AsDouble(d)) => {
                assert_eq!(value_int, None);
                assert_eq!(value_double.map(f64::to_bits), Some(d.to_bits()));
            }
            None => assert_eq!((value_int, value_double), (None, None)),
        }
        assert_exemplars(row.get("exemplars"), &sent.exemplars);
    }

    // Histograms.
    let Some(Data::Histogram(histogram)) = &metrics[2].data else { unreachable!() };
    let rows =
        t.sql.query("SELECT * FROM metric_points_histogram ORDER BY flags", &[]).await.expect("histograms");
    assert_eq!(rows.len(), 2);
    for (row, sent) in rows.iter().zip(&histogram.data_points) {
        assert_eq!(row.get::<_, i64>("count") as u64, sent.count);
        assert_eq!(row.get::<_, Option<f64>>("sum"), sent.sum);
        assert_eq!(row.get::<_, Option<f64>>("min"), sent.min);
        assert_eq!(row.get::<_, Option<f64>>("max"), sent.max);
        let buckets: Vec<i64> = row.get("bucket_counts");
        assert_eq!(buckets.iter().map(|&c| c as u64).collect::<Vec<_>>(), sent.bucket_counts);
        assert_eq!(row.get::<_, Vec<f64>>("explicit_bounds"), sent.explicit_bounds);
        assert_eq!(row.get::<_, i64>("flags") as u32, sent.flags);
        assert_eq!(row.get::<_, i64>("start_time_unix_nano") as u64, sent.start_time_unix_nano);
        assert_exemplars(row.get("exemplars"), &sent.exemplars);
    }

    // Exponential histograms, negative buckets and an absent positive side included.
    let Some(Data::ExponentialHistogram(exp)) = &metrics[3].data else { unreachable!() };
    let rows = t
        .sql
        .query("SELECT * FROM metric_points_exp_histogram ORDER BY count DESC", &[])
        .await
        .expect("exponential histograms");
    assert_eq!(rows.len(), 2);
    for (row, sent) in rows.iter().zip(&exp.data_points) {
        let side = |offset: &str, counts: &str| {
            row.get::<_, Option<i32>>(offset).map(|offset| Buckets {
                offset,
                bucket_counts: row.get::<_, Vec<i64>>(counts).into_iter().map(|c| c as u64).collect(),
            })
        };
        let stored = ExponentialHistogramDataPoint {
            attributes: sent.attributes.clone(),
            start_time_unix_nano: row.get::<_, i64>("start_time_unix_nano") as u64,
            time_unix_nano: row.get::<_, i64>("time_unix_nano") as u64,
            count: row.get::<_, i64>("count") as u64,
            sum: row.get("sum"),
            scale: row.get("scale"),
            zero_count: row.get::<_, i64>("zero_count") as u64,
            positive: side("positive_offset", "positive_bucket_counts"),
            negative: side("negative_offset", "negative_bucket_counts"),
            flags: row.get::<_, i64>("flags") as u32,
            exemplars: sent.exemplars.clone(),
            min: row.get("min"),
            max: row.get("max"),
            zero_threshold: row.get("zero_threshold"),
        };
        let comparable = |p: &ExponentialHistogramDataPoint| ExponentialHistogramDataPoint {
            exemplars: vec![],
            ..p.clone()
        };
        assert_eq!(comparable(&stored), comparable(sent));
        assert_exemplars(row.get("exemplars"), &sent.exemplars);
    }

    // Summaries.
    let Some(Data::Summary(summary)) = &metrics[4].data else { unreachable!() };
    let row = t.sql.query_one("SELECT * FROM metric_points_summary", &[]).await.expect("summary");
    let sent = &summary.data_points[0];
    assert_eq!(row.get::<_, i64>("count") as u64, sent.count);
    assert_eq!(row.get::<_, f64>("sum"), sent.sum);
    let quantiles: Vec<f64> = row.get("quantiles");
    let values: Vec<f64> = row.get("quantile_values");
    let stored: Vec<(u64, u64)> =
        quantiles.iter().zip(&values).map(|(q, v)| (q.to_bits(), v.to_bits())).collect();
    let expected: Vec<(u64, u64)> =
        sent.quantile_values.iter().map(|q| (q.quantile.to_bits(), q.value.to_bits())).collect();
    assert_eq!(stored, expected);

    // The same points again reuse every series.
    t.metrics().await.export(request(now + 1)).await.expect("second export");
    assert_eq!(t.count("metric_series").await, 8);
    assert_eq!(t.count("metric_points_number").await, 6);
    t.stop().await;
}
