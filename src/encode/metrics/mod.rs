//! Metric data points -> rows of the `metric_points_*` tables, one per point type, each point
//! referencing its series in `metric_series` (metric identity + point attributes + resource +
//! scope), which is stored once like resources and scopes.
//!
//! This file holds the table layouts, the series, and the one writer of each point table's rows
//! (`write_point` with the column writers), with the walk of a decoded request;
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
        attributes_from_json, double_from_json, write_attributes, write_decoded_sorted, write_double,
        write_hex, write_int, write_sorted_attributes, MappingError,
    },
    copy::{Row, Signal, Table, TableKind},
    dims::{walk_decoded, KnownIds, RequestEncoder, SERIES_SEED},
    meter,
    source::{ListSource, MapSource},
    traces::{hex_member, write_array, Members},
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
        write_decoded_sorted(&mut prefix, &metric.metadata);
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

    /// A buffer holding the series' canonical text up to the point attributes, which the caller
    /// writes next (sorted by key, as JSON) before [`Self::finish_series`].
    fn canon_start(&self, enc: &mut RequestEncoder<'_>) -> BytesMut {
        let mut canon = enc.take_scratch();
        canon.put_slice(&self.prefix);
        canon
    }

    /// The id of the series whose canonical text is `canon`.
    fn series_id(canon: &[u8]) -> i64 {
        xxh3_64_with_seed(canon, SERIES_SEED) as i64
    }

    /// Adds the row of series `id`, whose canonical text is `canon`, if the database may lack it.
    fn add_series(&self, enc: &mut RequestEncoder<'_>, id: i64, canon: BytesMut) {
        let attributes_at = self.prefix.len();
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
    // A decoded point is never Unusual.
    let _always_readable = match &metric.data {
        None => Ok(()),
        Some(Data::Gauge(gauge)) => {
            let shape = shape(Kind::Gauge, 0, false);
            gauge.data_points.iter().try_for_each(|point| decoded_number(enc, &shape, point))
        }
        Some(Data::Sum(sum)) => {
            let shape = shape(Kind::Sum, sum.aggregation_temporality, sum.is_monotonic);
            sum.data_points.iter().try_for_each(|point| decoded_number(enc, &shape, point))
        }
        Some(Data::Histogram(histogram)) => {
            let shape = shape(Kind::Histogram, histogram.aggregation_temporality, false);
            histogram.data_points.iter().try_for_each(|point| {
                let exemplars = Some(&point.exemplars[..]);
                write_point(
                    enc,
                    &shape,
                    TableId::HistogramPoints,
                    &point.attributes[..],
                    exemplars,
                    |row, series| histogram_point(row, point, series),
                )
            })
        }
        Some(Data::ExponentialHistogram(histogram)) => {
            let shape = shape(Kind::ExponentialHistogram, histogram.aggregation_temporality, false);
            histogram.data_points.iter().try_for_each(|point| {
                let exemplars = Some(&point.exemplars[..]);
                write_point(
                    enc,
                    &shape,
                    TableId::ExpHistogramPoints,
                    &point.attributes[..],
                    exemplars,
                    |row, series| exp_histogram_point(row, point, series),
                )
            })
        }
        Some(Data::Summary(summary)) => {
            let shape = shape(Kind::Summary, 0, false);
            summary.data_points.iter().try_for_each(|point| {
                write_point(
                    enc,
                    &shape,
                    TableId::SummaryPoints,
                    &point.attributes[..],
                    None::<&[Exemplar]>,
                    |row, series| summary_point(row, point, series),
                )
            })
        }
    };
}

fn decoded_number(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    point: &NumberDataPoint,
) -> Result<(), Unusual> {
    let exemplars = Some(&point.exemplars[..]);
    write_point(enc, shape, TableId::NumberPoints, &point.attributes[..], exemplars, |row, series| {
        number_point(row, point, series)
    })
}

/// Writes a data point's row into `table`, under the series its attributes make (added if
/// needed): `columns` writes every column but the exemplars, which are written from
/// `exemplars` (`None` for a table without them). Or, when a rule refuses the point (U+0000 in
/// a key, an exemplar's ids: see [`validate`]), leaves it and its series out and counts it.
///
/// # Errors
/// [`Unusual`] when the point's bytes are left to prost.
fn write_point<'a, M, X>(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    table: TableId,
    attributes: M,
    exemplars: Option<X>,
    columns: impl FnOnce(&mut Row<'_>, i64),
) -> Result<(), Unusual>
where
    M: MapSource<'a>,
    X: ListSource<'a, ExemplarRow<'a, M>>,
{
    let mut canon = shape.canon_start(enc);
    let written = write_sorted_attributes(&mut canon, attributes);
    let nul = match written {
        Ok(nul) => nul,
        Err(unusual) => {
            enc.return_scratch(canon);
            return Err(unusual);
        }
    };
    if nul {
        enc.return_scratch(canon);
        enc.out.reject(1, validate::nul_in_keys("data point attributes"));
        return Ok(());
    }
    let series = SeriesShape::series_id(&canon);
    let rows = enc.out.rows_mut(table);
    let mark = rows.mark();
    let mut refused = Ok(None);
    {
        let mut row = rows.row(table.table());
        columns(&mut row, series);
        if let Some(exemplars) = exemplars {
            refused = write_exemplars(&mut row, exemplars);
        }
    }
    match refused {
        Ok(None) => {
            shape.add_series(enc, series, canon);
            Ok(())
        }
        Ok(Some(reason)) => {
            rows.undo(mark);
            enc.return_scratch(canon);
            enc.out.reject(1, reason);
            Ok(())
        }
        Err(unusual) => {
            enc.return_scratch(canon);
            Err(unusual)
        }
    }
}

/// The three columns every point table starts with.
fn point_key(row: &mut Row<'_>, time: u64, start: u64, series: i64) {
    row.uint64(time);
    row.uint64(start);
    row.int8(series);
}

fn number_point(row: &mut Row<'_>, point: &NumberDataPoint, series: i64) {
    point_key(row, point.time_unix_nano, point.start_time_unix_nano, series);
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
}

fn histogram_point(row: &mut Row<'_>, point: &HistogramDataPoint, series: i64) {
    point_key(row, point.time_unix_nano, point.start_time_unix_nano, series);
    totals(row, point.count, point.sum, point.min, point.max);
    row.int8_array(point.bucket_counts.iter().map(|&c| c as i64));
    row.float8_array(point.explicit_bounds.iter().copied());
    row.int8(i64::from(point.flags));
}

fn exp_histogram_point(row: &mut Row<'_>, point: &ExponentialHistogramDataPoint, series: i64) {
    point_key(row, point.time_unix_nano, point.start_time_unix_nano, series);
    totals(row, point.count, point.sum, point.min, point.max);
    row.int4(point.scale);
    row.uint64(point.zero_count);
    row.float8(point.zero_threshold);
    buckets(row, point.positive.as_ref());
    buckets(row, point.negative.as_ref());
    row.int8(i64::from(point.flags));
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

fn summary_point(row: &mut Row<'_>, point: &SummaryDataPoint, series: i64) {
    point_key(row, point.time_unix_nano, point.start_time_unix_nano, series);
    row.uint64(point.count);
    row.float8(point.sum);
    row.float8_array(point.quantile_values.iter().map(|q| q.quantile));
    row.float8_array(point.quantile_values.iter().map(|q| q.value));
    row.int8(i64::from(point.flags));
}

/// An exemplar as the `exemplars` column holds it.
pub struct ExemplarRow<'a, M> {
    pub time_unix_nano: u64,
    pub value: Option<exemplar::Value>,
    pub span_id: &'a [u8],
    pub trace_id: &'a [u8],
    /// `None` when it has none: the member is left out.
    pub filtered_attributes: Option<M>,
}

impl<'a> From<&'a Exemplar> for ExemplarRow<'a, &'a [KeyValue]> {
    fn from(e: &'a Exemplar) -> Self {
        ExemplarRow {
            time_unix_nano: e.time_unix_nano,
            value: e.value,
            span_id: &e.span_id,
            trace_id: &e.trace_id,
            filtered_attributes: (!e.filtered_attributes.is_empty()).then_some(&e.filtered_attributes[..]),
        }
    }
}

/// `[{"time_unix_nano", "as_int"|"as_double"?, "span_id"?, "trace_id"?,
/// "filtered_attributes"?}]`, or NULL when there are none. Returns why the first refused
/// exemplar is refused, if one is.
fn write_exemplars<'a, M: MapSource<'a>>(
    row: &mut Row<'_>,
    exemplars: impl ListSource<'a, ExemplarRow<'a, M>>,
) -> Result<Option<validate::Rejection>, Unusual> {
    if exemplars.is_empty() {
        row.null();
        return Ok(None);
    }
    let mut written = Ok(None);
    row.jsonb(|buf| written = write_exemplar_array(buf, exemplars));
    written
}

fn write_exemplar_array<'a, M: MapSource<'a>>(
    buf: &mut BytesMut,
    exemplars: impl ListSource<'a, ExemplarRow<'a, M>>,
) -> Result<Option<validate::Rejection>, Unusual> {
    // Members in jsonb's order (see `traces::Members`).
    write_array(buf, exemplars, |buf, e| {
        let mut members = Members::default();
        if let Some(exemplar::Value::AsInt(v)) = e.value {
            members.key(buf, "as_int");
            write_int(buf, v);
        }
        if !e.span_id.is_empty() {
            members.key(buf, "span_id");
            write_hex(buf, e.span_id);
        }
        if !e.trace_id.is_empty() {
            members.key(buf, "trace_id");
            write_hex(buf, e.trace_id);
        }
        if let Some(exemplar::Value::AsDouble(v)) = e.value {
            members.key(buf, "as_double");
            write_double(buf, v);
        }
        members.key(buf, "time_unix_nano");
        write_int(buf, e.time_unix_nano);
        let nul = match e.filtered_attributes {
            Some(attributes) => {
                members.key(buf, "filtered_attributes");
                write_attributes(buf, attributes)?
            }
            None => false,
        };
        buf.put_u8(b'}');
        Ok(validate::keys("exemplar filtered_attributes", nul)
            .and_then(|()| validate::optional_trace_id("exemplar trace_id", e.trace_id))
            .and_then(|()| validate::optional_span_id("exemplar span_id", e.span_id))
            .err())
    })
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
