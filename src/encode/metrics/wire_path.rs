//! Metric requests read straight from their protobuf bytes: the walk over metrics, and each
//! point type's reader, whose point goes to the one writer of its table ([`write_point`]).

use super::*;
use crate::encode::wire::{values::Item, Stretch, WireList, WireMap};

/// Encodes a request straight from its protobuf bytes, giving exactly the rows [`encode`] gives
/// the decoded request.
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
        let shape = kind.shape(&self.header, self.temporality, self.monotonic, resource_id, scope_id);
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

/// Where a point message's attributes and exemplars lie, found as its fields are read.
struct Parts<'a> {
    message: &'a [u8],
    /// The field numbers of the attributes and of the exemplars in this point type.
    numbers: (u32, u32),
    attributes: Stretch,
    exemplars: Stretch,
}

impl<'a> Parts<'a> {
    /// Reads a point message: gathers its attributes and exemplars (fields `numbers`) and hands
    /// every other field to `field`, with the message's fields for `once`.
    #[inline(always)]
    fn read(
        message: &'a [u8],
        numbers: (u32, u32),
        mut field: impl FnMut(&mut Fields<'a>, u32, wire::Value<'a>) -> Result<(), Unusual>,
    ) -> Result<Self, Unusual> {
        let mut parts =
            Parts { message, numbers, attributes: Stretch::default(), exemplars: Stretch::default() };
        let mut fields = Fields::new(message);
        loop {
            let before = fields.remaining();
            let Some(next) = fields.next() else { break };
            let (number, value) = next?;
            let stretch = match number {
                n if n == numbers.0 => &mut parts.attributes,
                n if n == numbers.1 => &mut parts.exemplars,
                _ => {
                    field(&mut fields, number, value)?;
                    continue;
                }
            };
            value.bytes()?;
            stretch.cover(message.len(), before, &fields);
        }
        Ok(parts)
    }

    /// Writes the point into `table` (see [`write_point`]), with its exemplars when the table
    /// has them.
    fn write(
        &self,
        enc: &mut RequestEncoder<'_>,
        shape: &SeriesShape<'_>,
        table: TableId,
        with_exemplars: bool,
        columns: impl FnOnce(&mut Row<'_>, i64),
    ) -> Result<(), Unusual> {
        let attributes = WireMap::new(self.attributes.of(self.message), self.numbers.0);
        let exemplars = with_exemplars.then_some(WireList {
            message: self.exemplars.of(self.message),
            number: self.numbers.1,
            empty: self.exemplars.is_empty(),
        });
        write_point(enc, shape, table, attributes, exemplars, columns)
    }
}

/// A gauge or sum point from the wire.
pub(super) fn wire_number(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
) -> Result<(), Unusual> {
    let mut point = NumberDataPoint::default();
    let parts = Parts::read(message, (7, 5), |fields, number, value| {
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
            8 => {
                fields.once(8)?;
                point.flags = uint32(value)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    parts.write(enc, shape, TableId::NumberPoints, true, |row, series| number_point(row, &point, series))
}

/// A histogram point from the wire.
fn wire_histogram(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
) -> Result<(), Unusual> {
    let mut point = HistogramDataPoint::default();
    let mut bounds = Vec::new();
    let parts = Parts::read(message, (9, 8), |fields, number, value| {
        match number {
            6 => wire::push_fixed64s(&mut point.bucket_counts, value)?,
            7 => wire::push_fixed64s(&mut bounds, value)?,
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
        Ok(())
    })?;
    point.explicit_bounds = bounds.into_iter().map(f64::from_bits).collect();
    parts
        .write(enc, shape, TableId::HistogramPoints, true, |row, series| histogram_point(row, &point, series))
}

/// An exponential histogram point from the wire.
fn wire_exp_histogram(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
) -> Result<(), Unusual> {
    let mut point = ExponentialHistogramDataPoint::default();
    let parts = Parts::read(message, (1, 11), |fields, number, value| {
        match number {
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
        Ok(())
    })?;
    parts.write(enc, shape, TableId::ExpHistogramPoints, true, |row, series| {
        exp_histogram_point(row, &point, series)
    })
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
    // A summary has no exemplars: field 0 never occurs.
    let parts = Parts::read(message, (7, 0), |fields, number, value| {
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
        Ok(())
    })?;
    parts.write(enc, shape, TableId::SummaryPoints, false, |row, series| summary_point(row, &point, series))
}

impl<'a> Item<'a> for ExemplarRow<'a, WireMap<'a>> {
    fn read(message: &'a [u8]) -> Result<Self, Unusual> {
        let mut exemplar = ExemplarRow {
            time_unix_nano: 0,
            value: None,
            span_id: &[],
            trace_id: &[],
            filtered_attributes: None,
        };
        let mut attributes = 0;
        let mut fields = Fields::new(message);
        while let Some(field) = fields.next() {
            let (number, value) = field?;
            match number {
                7 => {
                    value.bytes()?;
                    attributes += 1;
                }
                2 => {
                    fields.once(2)?;
                    exemplar.time_unix_nano = value.fixed64()?;
                }
                // The value oneof: a second member is left to prost.
                3 | 6 => {
                    fields.once(3)?;
                    let bits = value.fixed64()?;
                    exemplar.value = Some(if number == 3 {
                        exemplar::Value::AsDouble(f64::from_bits(bits))
                    } else {
                        exemplar::Value::AsInt(bits as i64)
                    });
                }
                4 | 5 => {
                    fields.once(number)?;
                    if number == 4 {
                        exemplar.span_id = value.bytes()?;
                    } else {
                        exemplar.trace_id = value.bytes()?;
                    }
                }
                _ => {}
            }
        }
        exemplar.filtered_attributes = (attributes > 0).then_some(WireMap::new(message, 7));
        Ok(exemplar)
    }
}
