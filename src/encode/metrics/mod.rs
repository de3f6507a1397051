//! Metric data points -> rows of the `metric_points_*` tables, one per point type, each point
//! referencing its series in `metric_series` (metric identity + point attributes + resource +
//! scope), which is stored once like resources and scopes.
//!
//! This file holds the table layouts, the decoded (prost) path and the rows both paths write;
//! `wire_path.rs` reads requests from their bytes; the property tests are in `tests.rs`.

use bytes::{BufMut, BytesMut};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{
        exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
        summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint,
        Metric, NumberDataPoint, SummaryDataPoint,
    },
};
use prost::Message;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{
    attributes::{
        attributes_from_json, double_from_json, write_attributes, write_double, write_hex, write_int,
        MappingError, Order,
    },
    copy::{Row, Signal, Table, TableKind},
    dims::{walk_decoded, KnownIds, RequestEncoder, SERIES_SEED},
    meter,
    traces::{hex_member, member},
    validate,
    wire::{self, Fields, Unusual},
    Encoded, TableId,
};

pub const SERIES: Table = Table {
    name: "metric_series",
    columns: &[
        "series_id",
        "metric_name",
        "metric_type",
        "description",
        "unit",
        "aggregation_temporality",
        "is_monotonic",
        "metadata",
        "attributes",
        "resource_id",
        "scope_id",
    ],
    kind: TableKind::Dimension,
};

pub const NUMBER_POINTS: Table = Table {
    name: "metric_points_number",
    columns: &[
        "time_unix_nano",
        "start_time_unix_nano",
        "series_id",
        "value_int",
        "value_double",
        "flags",
        "exemplars",
    ],
    kind: TableKind::Records { partition_key: "time_unix_nano", signal: Signal::Metrics },
};

pub const HISTOGRAM_POINTS: Table = Table {
    name: "metric_points_histogram",
    columns: &[
        "time_unix_nano",
        "start_time_unix_nano",
        "series_id",
        "count",
        "sum",
        "min",
        "max",
        "bucket_counts",
        "explicit_bounds",
        "flags",
        "exemplars",
    ],
    kind: TableKind::Records { partition_key: "time_unix_nano", signal: Signal::Metrics },
};

pub const EXP_HISTOGRAM_POINTS: Table = Table {
    name: "metric_points_exp_histogram",
    columns: &[
        "time_unix_nano",
        "start_time_unix_nano",
        "series_id",
        "count",
        "sum",
        "min",
        "max",
        "scale",
        "zero_count",
        "zero_threshold",
        "positive_offset",
        "positive_bucket_counts",
        "negative_offset",
        "negative_bucket_counts",
        "flags",
        "exemplars",
    ],
    kind: TableKind::Records { partition_key: "time_unix_nano", signal: Signal::Metrics },
};

pub const SUMMARY_POINTS: Table = Table {
    name: "metric_points_summary",
    columns: &[
        "time_unix_nano",
        "start_time_unix_nano",
        "series_id",
        "count",
        "sum",
        "quantiles",
        "quantile_values",
        "flags",
    ],
    kind: TableKind::Records { partition_key: "time_unix_nano", signal: Signal::Metrics },
};

/// Encodes every data point of an export request, leaving out (and counting) the ones
/// [`validate`] refuses. A metric without data has no points and leaves no rows.
pub fn encode(request: &ExportMetricsServiceRequest, known: &KnownIds) -> Encoded {
    walk_decoded(
        known,
        &request.resource_metrics,
        |rm| (rm.resource.as_ref(), rm.schema_url.as_str(), &rm.scope_metrics[..]),
        |sm| (sm.scope.as_ref(), sm.schema_url.as_str(), &sm.metrics[..]),
        point_count,
        |enc, metric, resource_id, scope_id| match validate_metric(metric) {
            Ok(()) => encode_metric(enc, metric, resource_id, scope_id),
            Err(reason) => enc.out.reject(point_count(metric), reason),
        },
    )
}

fn point_count(metric: &Metric) -> usize {
    match &metric.data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    }
}

fn validate_metric(metric: &Metric) -> Result<(), validate::Rejection> {
    validate::text("metric name", &metric.name)?;
    validate::text("metric description", &metric.description)?;
    validate::text("metric unit", &metric.unit)?;
    validate::attributes("metric metadata", &metric.metadata)
}

fn validate_point(attributes: &[KeyValue], exemplars: &[Exemplar]) -> Result<(), validate::Rejection> {
    validate::attributes("data point attributes", attributes)?;
    for exemplar in exemplars {
        validate::attributes("exemplar filtered_attributes", &exemplar.filtered_attributes)?;
        validate::optional_trace_id("exemplar trace_id", &exemplar.trace_id)?;
        validate::optional_span_id("exemplar span_id", &exemplar.span_id)?;
    }
    Ok(())
}

/// What a metric's series share, whichever point they come from.
struct SeriesShape<'m> {
    metric: &'m Metric,
    metric_type: &'static str,
    temporality: Option<i32>,
    monotonic: Option<bool>,
    /// Canonical text of everything but the point attributes, the start of each series' hash input.
    prefix: BytesMut,
    metadata_len: usize,
    resource_id: i64,
    scope_id: i64,
}

impl<'m> SeriesShape<'m> {
    fn new(
        metric: &'m Metric,
        metric_type: &'static str,
        temporality: Option<i32>,
        monotonic: Option<bool>,
        resource_id: i64,
        scope_id: i64,
    ) -> Self {
        let mut prefix = BytesMut::new();
        write_attributes(&mut prefix, &metric.metadata, Order::Sorted);
        let metadata_len = prefix.len();
        prefix.put_i64(resource_id);
        prefix.put_i64(scope_id);
        for part in [metric.name.as_str(), metric_type, &metric.description, &metric.unit] {
            prefix.put_u64(part.len() as u64);
            prefix.put_slice(part.as_bytes());
        }
        prefix.put_i64(temporality.map_or(-1, i64::from));
        prefix.put_i8(monotonic.map_or(-1, i8::from));
        Self { metric, metric_type, temporality, monotonic, prefix, metadata_len, resource_id, scope_id }
    }

    /// The series id of a point with these attributes, adding the series row if needed.
    fn series_id(&self, enc: &mut RequestEncoder<'_>, attributes: &[KeyValue]) -> i64 {
        let mut canon = self.canon_start(enc);
        write_attributes(&mut canon, attributes, Order::Sorted);
        self.finish_series(enc, canon)
    }

    /// A buffer holding the series' canonical text up to the point attributes, which the caller
    /// writes next (sorted by key, as JSON) before [`Self::finish_series`].
    fn canon_start(&self, enc: &mut RequestEncoder<'_>) -> BytesMut {
        let mut canon = enc.take_scratch();
        canon.put_slice(&self.prefix);
        canon
    }

    /// The id of the series whose canonical text is `canon`, adding its row if needed.
    fn finish_series(&self, enc: &mut RequestEncoder<'_>, canon: BytesMut) -> i64 {
        let attributes_at = self.prefix.len();
        let id = xxh3_64_with_seed(&canon, SERIES_SEED) as i64;
        if enc.needs(id) {
            let mut row = enc.out.rows_mut(TableId::MetricSeries).row(&SERIES);
            row.int8(id);
            row.text(&self.metric.name);
            row.text(self.metric_type);
            row.text(&self.metric.description);
            row.text(&self.metric.unit);
            match self.temporality {
                Some(t) => row.int4(t),
                None => row.null(),
            }
            match self.monotonic {
                Some(m) => row.bool(m),
                None => row.null(),
            }
            row.jsonb_text(&self.prefix[..self.metadata_len]);
            row.jsonb_text(&canon[attributes_at..]);
            row.int8(self.resource_id);
            row.int8(self.scope_id);
        }
        enc.return_scratch(canon);
        id
    }
}

/// A metric's type: what its series record, and which point table its points go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

impl Kind {
    /// The `metric_type` a series stores.
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Sum => "sum",
            Kind::Histogram => "histogram",
            Kind::ExponentialHistogram => "exponential_histogram",
            Kind::Summary => "summary",
        }
    }

    /// The series shape of a metric of this kind, with the temporality and monotonicity its
    /// message carries (kept only where the kind has them).
    fn shape<'m>(
        self,
        metric: &'m Metric,
        temporality: i32,
        monotonic: bool,
        resource_id: i64,
        scope_id: i64,
    ) -> SeriesShape<'m> {
        let (temporality, monotonic) = match self {
            Kind::Gauge | Kind::Summary => (None, None),
            Kind::Sum => (Some(temporality), Some(monotonic)),
            Kind::Histogram | Kind::ExponentialHistogram => (Some(temporality), None),
        };
        SeriesShape::new(metric, self.name(), temporality, monotonic, resource_id, scope_id)
    }
}

fn encode_metric(enc: &mut RequestEncoder<'_>, metric: &Metric, resource_id: i64, scope_id: i64) {
    let shape = |kind: Kind, temporality, monotonic| {
        kind.shape(metric, temporality, monotonic, resource_id, scope_id)
    };
    match &metric.data {
        None => {}
        Some(Data::Gauge(gauge)) => {
            let shape = shape(Kind::Gauge, 0, false);
            gauge.data_points.iter().for_each(|point| decoded_number(enc, &shape, point));
        }
        Some(Data::Sum(sum)) => {
            let shape = shape(Kind::Sum, sum.aggregation_temporality, sum.is_monotonic);
            sum.data_points.iter().for_each(|point| decoded_number(enc, &shape, point));
        }
        Some(Data::Histogram(histogram)) => {
            let shape = shape(Kind::Histogram, histogram.aggregation_temporality, false);
            histogram.data_points.iter().for_each(|point| decoded_histogram(enc, &shape, point));
        }
        Some(Data::ExponentialHistogram(histogram)) => {
            let shape = shape(Kind::ExponentialHistogram, histogram.aggregation_temporality, false);
            histogram.data_points.iter().for_each(|point| decoded_exp_histogram(enc, &shape, point));
        }
        Some(Data::Summary(summary)) => {
            let shape = shape(Kind::Summary, 0, false);
            summary.data_points.iter().for_each(|point| decoded_summary(enc, &shape, point));
        }
    }
}

fn decoded_number(enc: &mut RequestEncoder<'_>, shape: &SeriesShape<'_>, point: &NumberDataPoint) {
    match validate_point(&point.attributes, &point.exemplars) {
        Ok(()) => {
            let series = shape.series_id(enc, &point.attributes);
            number_point(enc, point, series);
        }
        Err(reason) => enc.out.reject(1, reason),
    }
}

fn decoded_histogram(enc: &mut RequestEncoder<'_>, shape: &SeriesShape<'_>, point: &HistogramDataPoint) {
    match validate_point(&point.attributes, &point.exemplars) {
        Ok(()) => {
            let series = shape.series_id(enc, &point.attributes);
            histogram_point(enc, point, series);
        }
        Err(reason) => enc.out.reject(1, reason),
    }
}

fn decoded_exp_histogram(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    point: &ExponentialHistogramDataPoint,
) {
    match validate_point(&point.attributes, &point.exemplars) {
        Ok(()) => {
            let series = shape.series_id(enc, &point.attributes);
            exp_histogram_point(enc, point, series);
        }
        Err(reason) => enc.out.reject(1, reason),
    }
}

fn decoded_summary(enc: &mut RequestEncoder<'_>, shape: &SeriesShape<'_>, point: &SummaryDataPoint) {
    match validate_point(&point.attributes, &[]) {
        Ok(()) => {
            let series = shape.series_id(enc, &point.attributes);
            summary_point(enc, point, series);
        }
        Err(reason) => enc.out.reject(1, reason),
    }
}

/// The three columns every point table starts with.
fn point_key(row: &mut Row<'_>, time: u64, start: u64, series: i64) {
    row.uint64(time);
    row.uint64(start);
    row.int8(series);
}

fn number_point(enc: &mut RequestEncoder<'_>, point: &NumberDataPoint, series: i64) {
    let mut row = enc.out.rows_mut(TableId::NumberPoints).row(&NUMBER_POINTS);
    point_key(&mut row, point.time_unix_nano, point.start_time_unix_nano, series);
    match point.value {
        Some(number_data_point::Value::AsInt(i)) => {
            row.int8(i);
            row.null();
        }
        Some(number_data_point::Value::AsDouble(d)) => {
            row.null();
            row.float8(d);
        }
        None => {
            row.null();
            row.null();
        }
    }
    row.int8(i64::from(point.flags));
    exemplars(&mut row, &point.exemplars);
}

fn histogram_point(enc: &mut RequestEncoder<'_>, point: &HistogramDataPoint, series: i64) {
    let mut row = enc.out.rows_mut(TableId::HistogramPoints).row(&HISTOGRAM_POINTS);
    point_key(&mut row, point.time_unix_nano, point.start_time_unix_nano, series);
    totals(&mut row, point.count, point.sum, point.min, point.max);
    row.int8_array(point.bucket_counts.iter().map(|&c| c as i64));
    row.float8_array(point.explicit_bounds.iter().copied());
    row.int8(i64::from(point.flags));
    exemplars(&mut row, &point.exemplars);
}

fn exp_histogram_point(enc: &mut RequestEncoder<'_>, point: &ExponentialHistogramDataPoint, series: i64) {
    let mut row = enc.out.rows_mut(TableId::ExpHistogramPoints).row(&EXP_HISTOGRAM_POINTS);
    point_key(&mut row, point.time_unix_nano, point.start_time_unix_nano, series);
    totals(&mut row, point.count, point.sum, point.min, point.max);
    row.int4(point.scale);
    row.uint64(point.zero_count);
    row.float8(point.zero_threshold);
    buckets(&mut row, point.positive.as_ref());
    buckets(&mut row, point.negative.as_ref());
    row.int8(i64::from(point.flags));
    exemplars(&mut row, &point.exemplars);
}

/// The count, sum, min and max columns both histogram tables have.
fn totals(row: &mut Row<'_>, count: u64, sum: Option<f64>, min: Option<f64>, max: Option<f64>) {
    row.uint64(count);
    row.opt_float8(sum);
    row.opt_float8(min);
    row.opt_float8(max);
}

/// Offset (NULL when the message is absent) and counts of one side of an exponential histogram.
fn buckets(row: &mut Row<'_>, buckets: Option<&Buckets>) {
    match buckets {
        Some(b) => {
            row.int4(b.offset);
            row.int8_array(b.bucket_counts.iter().map(|&c| c as i64));
        }
        None => {
            row.null();
            row.int8_array(std::iter::empty::<i64>());
        }
    }
}

fn summary_point(enc: &mut RequestEncoder<'_>, point: &SummaryDataPoint, series: i64) {
    let mut row = enc.out.rows_mut(TableId::SummaryPoints).row(&SUMMARY_POINTS);
    point_key(&mut row, point.time_unix_nano, point.start_time_unix_nano, series);
    row.uint64(point.count);
    row.float8(point.sum);
    row.float8_array(point.quantile_values.iter().map(|q| q.quantile));
    row.float8_array(point.quantile_values.iter().map(|q| q.value));
    row.int8(i64::from(point.flags));
}

/// `[{"time_unix_nano", "as_int"|"as_double"?, "span_id"?, "trace_id"?,
/// "filtered_attributes"?}]`, or NULL when there are none.
fn exemplars(row: &mut Row<'_>, exemplars: &[Exemplar]) {
    if exemplars.is_empty() {
        return row.null();
    }
    row.jsonb(|buf| {
        buf.put_u8(b'[');
        for (i, e) in exemplars.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            member(buf, true, "time_unix_nano");
            write_int(buf, e.time_unix_nano);
            match e.value {
                Some(exemplar::Value::AsInt(v)) => {
                    member(buf, false, "as_int");
                    write_int(buf, v);
                }
                Some(exemplar::Value::AsDouble(v)) => {
                    member(buf, false, "as_double");
                    write_double(buf, v);
                }
                None => {}
            }
            if !e.span_id.is_empty() {
                member(buf, false, "span_id");
                write_hex(buf, &e.span_id);
            }
            if !e.trace_id.is_empty() {
                member(buf, false, "trace_id");
                write_hex(buf, &e.trace_id);
            }
            if !e.filtered_attributes.is_empty() {
                member(buf, false, "filtered_attributes");
                write_attributes(buf, &e.filtered_attributes, Order::AsSent);
            }
            buf.put_u8(b'}');
        }
        buf.put_u8(b']');
    });
}

/// Reads the `exemplars` column back (the inverse of `exemplars`).
///
/// # Errors
/// When the JSON does not have the shape `exemplars` gives it.
pub fn exemplars_from_json(json: &serde_json::Value) -> Result<Vec<Exemplar>, MappingError> {
    let bad = || MappingError::NotAMap(json.to_string());
    json.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|e| {
            let value = match (e.get("as_int"), e.get("as_double")) {
                (Some(i), _) => Some(exemplar::Value::AsInt(i.as_i64().ok_or_else(bad)?)),
                (None, Some(d)) => Some(exemplar::Value::AsDouble(double_from_json(d)?)),
                (None, None) => None,
            };
            Ok(Exemplar {
                filtered_attributes: e
                    .get("filtered_attributes")
                    .map_or(Ok(Vec::new()), attributes_from_json)?,
                time_unix_nano: e.get("time_unix_nano").and_then(|t| t.as_u64()).ok_or_else(bad)?,
                span_id: hex_member(e, "span_id")?,
                trace_id: hex_member(e, "trace_id")?,
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
mod wire_path;

pub use wire_path::encode_wire;
