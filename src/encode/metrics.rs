//! Metric data points -> rows of the `metric_points_*` tables, one per point type, each point
//! referencing its series in `metric_series` (metric identity + point attributes + resource +
//! scope), which is stored once like resources and scopes.

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
    dims::{KnownIds, RequestEncoder, SERIES_SEED},
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
    let mut enc = RequestEncoder::new(known);
    for resource_metrics in &request.resource_metrics {
        if let Err(reason) =
            validate::resource(resource_metrics.resource.as_ref(), &resource_metrics.schema_url)
        {
            let points =
                resource_metrics.scope_metrics.iter().flat_map(|s| &s.metrics).map(point_count).sum();
            enc.out.reject(points, reason);
            continue;
        }
        let resource_id = enc.resource(resource_metrics.resource.as_ref(), &resource_metrics.schema_url);
        for scope_metrics in &resource_metrics.scope_metrics {
            if let Err(reason) = validate::scope(scope_metrics.scope.as_ref(), &scope_metrics.schema_url) {
                enc.out.reject(scope_metrics.metrics.iter().map(point_count).sum(), reason);
                continue;
            }
            let scope_id = enc.scope(scope_metrics.scope.as_ref(), &scope_metrics.schema_url);
            for metric in &scope_metrics.metrics {
                match validate_metric(metric) {
                    Ok(()) => encode_metric(&mut enc, metric, resource_id, scope_id),
                    Err(reason) => enc.out.reject(point_count(metric), reason),
                }
            }
        }
    }
    enc.out
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

fn encode_metric(enc: &mut RequestEncoder<'_>, metric: &Metric, resource_id: i64, scope_id: i64) {
    let shape = |kind, temporality, monotonic| {
        SeriesShape::new(metric, kind, temporality, monotonic, resource_id, scope_id)
    };
    match &metric.data {
        None => {}
        Some(Data::Gauge(gauge)) => {
            let shape = shape("gauge", None, None);
            gauge.data_points.iter().for_each(|point| decoded_number(enc, &shape, point));
        }
        Some(Data::Sum(sum)) => {
            let shape = shape("sum", Some(sum.aggregation_temporality), Some(sum.is_monotonic));
            sum.data_points.iter().for_each(|point| decoded_number(enc, &shape, point));
        }
        Some(Data::Histogram(histogram)) => {
            let shape = shape("histogram", Some(histogram.aggregation_temporality), None);
            histogram.data_points.iter().for_each(|point| decoded_histogram(enc, &shape, point));
        }
        Some(Data::ExponentialHistogram(histogram)) => {
            let shape = shape("exponential_histogram", Some(histogram.aggregation_temporality), None);
            histogram.data_points.iter().for_each(|point| decoded_exp_histogram(enc, &shape, point));
        }
        Some(Data::Summary(summary)) => {
            let shape = shape("summary", None, None);
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

/// Encodes a request straight from its protobuf bytes, giving exactly the rows [`encode`] gives
/// the decoded request. Points are read from the wire; points with exemplars or with a map
/// among their attributes are decoded with prost one by one.
///
/// # Errors
/// [`Unusual`] for an encoding left to prost (the caller then decodes the whole request).
pub fn encode_wire(message: &[u8], known: &KnownIds) -> Result<Encoded, Unusual> {
    let mut enc = RequestEncoder::new(known);
    wire::walk_request(
        &mut enc,
        message,
        |metric| Ok(WireMetric::read(metric)?.points.len()),
        |enc, metric, ids| WireMetric::read(metric)?.encode(enc, ids),
    )?;
    Ok(enc.out)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

/// A Metric message read from the wire: its identity decoded, its points still bytes.
struct WireMetric<'a> {
    /// Name, description, unit and metadata; `data` stays `None`.
    header: Metric,
    kind: Option<Kind>,
    temporality: i32,
    monotonic: bool,
    points: Vec<&'a [u8]>,
}

impl<'a> WireMetric<'a> {
    fn read(message: &'a [u8]) -> Result<Self, Unusual> {
        let mut metric = WireMetric {
            header: Metric::default(),
            kind: None,
            temporality: 0,
            monotonic: false,
            points: Vec::new(),
        };
        let mut fields = Fields::new(message);
        while let Some(field) = fields.next() {
            let (number, value) = field?;
            let kind = match number {
                1..=3 => {
                    fields.once(number)?;
                    let text = value.str()?.to_owned();
                    match number {
                        1 => metric.header.name = text,
                        2 => metric.header.description = text,
                        _ => metric.header.unit = text,
                    }
                    continue;
                }
                12 => {
                    metric.header.metadata.push(KeyValue::decode(value.bytes()?).map_err(|_| Unusual)?);
                    continue;
                }
                5 => Kind::Gauge,
                7 => Kind::Sum,
                9 => Kind::Histogram,
                10 => Kind::ExponentialHistogram,
                11 => Kind::Summary,
                _ => continue,
            };
            // One member of the data oneof, given once; prost's merging of more is left to it.
            if metric.kind.replace(kind).is_some() {
                return Err(Unusual);
            }
            metric.read_data(value.bytes()?, kind)?;
        }
        Ok(metric)
    }

    fn read_data(&mut self, message: &'a [u8], kind: Kind) -> Result<(), Unusual> {
        let mut fields = Fields::new(message);
        while let Some(field) = fields.next() {
            match field? {
                // Millions of tiny points need a long list: its growth is paid for.
                (1, point) => meter::push(&mut self.points, point.bytes()?).map_err(|_| Unusual)?,
                (2, temporality) if kind != Kind::Gauge && kind != Kind::Summary => {
                    fields.once(2)?;
                    self.temporality = enum_value(temporality)?;
                }
                (3, monotonic) if kind == Kind::Sum => {
                    fields.once(3)?;
                    self.monotonic = monotonic.varint()? != 0;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Encodes the points under their (resource, scope) ids; with `None` (the group was
    /// refused) only reads them.
    fn encode(&self, enc: &mut RequestEncoder<'_>, ids: Option<(i64, i64)>) -> Result<(), Unusual> {
        let (resource_id, scope_id, valid) = match ids {
            Some((resource_id, scope_id)) => match validate_metric(&self.header) {
                Ok(()) => (resource_id, scope_id, true),
                Err(reason) => {
                    enc.out.reject(self.points.len(), reason);
                    (resource_id, scope_id, false)
                }
            },
            None => (0, 0, false),
        };
        let Some(kind) = self.kind else { return Ok(()) };
        let (name, temporality, monotonic) = match kind {
            Kind::Gauge => ("gauge", None, None),
            Kind::Sum => ("sum", Some(self.temporality), Some(self.monotonic)),
            Kind::Histogram => ("histogram", Some(self.temporality), None),
            Kind::ExponentialHistogram => ("exponential_histogram", Some(self.temporality), None),
            Kind::Summary => ("summary", None, None),
        };
        let shape = SeriesShape::new(&self.header, name, temporality, monotonic, resource_id, scope_id);
        if valid {
            return self.encode_points(enc, &shape, kind);
        }
        // Refused points are still read, so that bytes prost would reject are Unusual here too;
        // what they would give goes nowhere.
        self.encode_points(&mut RequestEncoder::new(enc.known()), &shape, kind)
    }

    fn encode_points(
        &self,
        enc: &mut RequestEncoder<'_>,
        shape: &SeriesShape<'_>,
        kind: Kind,
    ) -> Result<(), Unusual> {
        for point in &self.points {
            match kind {
                Kind::Gauge | Kind::Sum => wire_number(enc, shape, point)?,
                Kind::Histogram => wire_histogram(enc, shape, point)?,
                Kind::ExponentialHistogram => wire_exp_histogram(enc, shape, point)?,
                Kind::Summary => wire_summary(enc, shape, point)?,
            }
        }
        Ok(())
    }
}

/// An int32 enum from its varint, as prost reads it; values past int32 are left to prost.
fn enum_value(value: wire::Value<'_>) -> Result<i32, Unusual> {
    i32::try_from(value.varint()? as i64).map_err(|_| Unusual)
}

fn uint32(value: wire::Value<'_>) -> Result<u32, Unusual> {
    u32::try_from(value.varint()?).map_err(|_| Unusual)
}

/// A double, from its fixed64 bits.
fn double(value: wire::Value<'_>) -> Result<f64, Unusual> {
    value.fixed64().map(f64::from_bits)
}

/// A zigzag-encoded sint32; varints past 32 bits are left to prost.
fn sint32(value: wire::Value<'_>) -> Result<i32, Unusual> {
    let n = uint32(value)?;
    Ok((n >> 1) as i32 ^ -((n & 1) as i32))
}

/// The series id of a point whose attributes are field `number` of its `message`, or, when they
/// take the decoded path, `None`. Refuses the point (and returns `Some(None)`) when they hold
/// U+0000.
fn wire_series(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
    number: u32,
) -> Result<Option<Option<i64>>, Unusual> {
    let mut canon = shape.canon_start(enc);
    match wire::write_sorted_flat_attributes(&mut canon, message, number)? {
        None => {
            enc.return_scratch(canon);
            Ok(None)
        }
        Some(true) => {
            enc.return_scratch(canon);
            enc.out.reject(1, validate::nul_in_keys("data point attributes"));
            Ok(Some(None))
        }
        Some(false) => Ok(Some(Some(shape.finish_series(enc, canon)))),
    }
}

/// A gauge or sum point from the wire; one with exemplars is decoded instead.
fn wire_number(enc: &mut RequestEncoder<'_>, shape: &SeriesShape<'_>, message: &[u8]) -> Result<(), Unusual> {
    let mut point = NumberDataPoint::default();
    let mut fields = Fields::new(message);
    while let Some(field) = fields.next() {
        let (number, value) = field?;
        match number {
            2 => {
                fields.once(2)?;
                point.start_time_unix_nano = value.fixed64()?;
            }
            3 => {
                fields.once(3)?;
                point.time_unix_nano = value.fixed64()?;
            }
            // The value oneof: a second member is left to prost.
            4 | 6 => {
                fields.once(4)?;
                let bits = value.fixed64()?;
                point.value = Some(if number == 4 {
                    number_data_point::Value::AsDouble(f64::from_bits(bits))
                } else {
                    number_data_point::Value::AsInt(bits as i64)
                });
            }
            5 => return decode_instead(enc, shape, message, decoded_number),
            8 => {
                fields.once(8)?;
                point.flags = uint32(value)?;
            }
            _ => {}
        }
    }
    finish_point(enc, shape, message, 7, &point, number_point, decoded_number)
}

/// Decodes a point with prost and encodes it as [`encode`] does, for what the wire path leaves.
fn decode_instead<P: Message + Default>(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
    decoded: fn(&mut RequestEncoder<'_>, &SeriesShape<'_>, &P),
) -> Result<(), Unusual> {
    let point = P::decode(message).map_err(|_| Unusual)?;
    decoded(enc, shape, &point);
    Ok(())
}

/// Writes a point read from the wire (all but its attributes, field `attributes` of its
/// `message`) under its series; decodes it instead when its attributes take the decoded path.
fn finish_point<P: Message + Default>(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
    attributes: u32,
    point: &P,
    write: fn(&mut RequestEncoder<'_>, &P, i64),
    decoded: fn(&mut RequestEncoder<'_>, &SeriesShape<'_>, &P),
) -> Result<(), Unusual> {
    match wire_series(enc, shape, message, attributes)? {
        None => decode_instead(enc, shape, message, decoded),
        Some(None) => Ok(()),
        Some(Some(series)) => {
            write(enc, point, series);
            Ok(())
        }
    }
}

/// A histogram point from the wire; one with exemplars is decoded instead.
fn wire_histogram(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
) -> Result<(), Unusual> {
    let mut point = HistogramDataPoint::default();
    let mut bounds = Vec::new();
    let mut fields = Fields::new(message);
    while let Some(field) = fields.next() {
        let (number, value) = field?;
        match number {
            6 => wire::push_fixed64s(&mut point.bucket_counts, value)?,
            7 => wire::push_fixed64s(&mut bounds, value)?,
            8 => return decode_instead(enc, shape, message, decoded_histogram),
            2 | 3 | 4 | 5 | 10 | 11 | 12 => {
                fields.once(number)?;
                match number {
                    2 => point.start_time_unix_nano = value.fixed64()?,
                    3 => point.time_unix_nano = value.fixed64()?,
                    4 => point.count = value.fixed64()?,
                    5 => point.sum = Some(double(value)?),
                    10 => point.flags = uint32(value)?,
                    11 => point.min = Some(double(value)?),
                    _ => point.max = Some(double(value)?),
                }
            }
            _ => {}
        }
    }
    point.explicit_bounds = bounds.into_iter().map(f64::from_bits).collect();
    finish_point(enc, shape, message, 9, &point, histogram_point, decoded_histogram)
}

/// An exponential histogram point from the wire; one with exemplars is decoded instead.
fn wire_exp_histogram(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
) -> Result<(), Unusual> {
    let mut point = ExponentialHistogramDataPoint::default();
    let mut fields = Fields::new(message);
    while let Some(field) = fields.next() {
        let (number, value) = field?;
        match number {
            11 => return decode_instead(enc, shape, message, decoded_exp_histogram),
            2..=10 | 12..=14 => {
                fields.once(number)?;
                match number {
                    2 => point.start_time_unix_nano = value.fixed64()?,
                    3 => point.time_unix_nano = value.fixed64()?,
                    4 => point.count = value.fixed64()?,
                    5 => point.sum = Some(double(value)?),
                    6 => point.scale = sint32(value)?,
                    7 => point.zero_count = value.fixed64()?,
                    8 => point.positive = Some(wire_buckets(value.bytes()?)?),
                    9 => point.negative = Some(wire_buckets(value.bytes()?)?),
                    10 => point.flags = uint32(value)?,
                    12 => point.min = Some(double(value)?),
                    13 => point.max = Some(double(value)?),
                    _ => point.zero_threshold = double(value)?,
                }
            }
            _ => {}
        }
    }
    finish_point(enc, shape, message, 1, &point, exp_histogram_point, decoded_exp_histogram)
}

/// One side's buckets of an exponential histogram point.
fn wire_buckets(message: &[u8]) -> Result<Buckets, Unusual> {
    let mut buckets = Buckets::default();
    let mut fields = Fields::new(message);
    while let Some(field) = fields.next() {
        match field? {
            (1, offset) => {
                fields.once(1)?;
                buckets.offset = sint32(offset)?;
            }
            (2, counts) => wire::push_varints(&mut buckets.bucket_counts, counts)?,
            _ => {}
        }
    }
    Ok(buckets)
}

/// A summary point from the wire.
fn wire_summary(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
) -> Result<(), Unusual> {
    let mut point = SummaryDataPoint::default();
    let mut fields = Fields::new(message);
    while let Some(field) = fields.next() {
        let (number, value) = field?;
        match number {
            6 => {
                let mut quantile = ValueAtQuantile::default();
                let mut fields = Fields::new(value.bytes()?);
                while let Some(field) = fields.next() {
                    let (number, value) = field?;
                    if matches!(number, 1 | 2) {
                        fields.once(number)?;
                        let v = double(value)?;
                        if number == 1 {
                            quantile.quantile = v;
                        } else {
                            quantile.value = v;
                        }
                    }
                }
                point.quantile_values.push(quantile);
            }
            2..=5 | 8 => {
                fields.once(number)?;
                match number {
                    2 => point.start_time_unix_nano = value.fixed64()?,
                    3 => point.time_unix_nano = value.fixed64()?,
                    4 => point.count = value.fixed64()?,
                    5 => point.sum = double(value)?,
                    _ => point.flags = uint32(value)?,
                }
            }
            _ => {}
        }
    }
    finish_point(enc, shape, message, 7, &point, summary_point, decoded_summary)
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
mod tests {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary,
    };
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::encode::testing::{
        any_value, assert_same, attributes_of, mostly_valid, resource, scope, text,
    };

    /// Point attributes: mostly flat (the wire path), sometimes with maps (decoded instead),
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
            (any::<u64>(), any::<i64>(), mostly_valid(8), mostly_valid(16), attributes_of(any_value()))
                .prop_map(|(time_unix_nano, v, span_id, trace_id, filtered_attributes)| Exemplar {
                    filtered_attributes,
                    time_unix_nano,
                    span_id,
                    trace_id,
                    value: Some(exemplar::Value::AsInt(v)),
                });
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
            (
                vec(any::<u64>(), 0..4),
                vec(any::<f64>(), 0..3),
                exemplars(),
                any::<u32>(),
                optional(),
                optional(),
            ),
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
        let resource_metrics = (resource(), vec(scope_metrics, 0..3), text()).prop_map(
            |(resource, scope_metrics, schema_url)| ResourceMetrics { resource, scope_metrics, schema_url },
        );
        vec(resource_metrics, 0..3)
            .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
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
}
