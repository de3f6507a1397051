//! Metric requests encoded straight from their protobuf bytes: the walk over metrics and their
//! points, reading each point type from the wire, and handing a point to the decoded path when
//! it carries what the wire path leaves to prost (exemplars, maps among its attributes).

use super::*;

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
pub(super) fn wire_number(
    enc: &mut RequestEncoder<'_>,
    shape: &SeriesShape<'_>,
    message: &[u8],
) -> Result<(), Unusual> {
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
