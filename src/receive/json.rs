//! OTLP/JSON requests: decoded by opentelemetry-proto's serde derive, with two things that derive
//! gets wrong put right, so that no value is refused that the protobuf JSON mapping allows and
//! none is lost in silence:
//! - doubles written as strings (`"NaN"`, `"Infinity"`, `"-Infinity"`, or a number in quotes),
//!   which the mapping allows anywhere a double goes and the derive refuses (or, inside a data
//!   point's value, drops);
//! - errors inside a flattened oneof (a metric's data, a data point's or exemplar's value), which
//!   serde turns into an absent value instead of an error: such a request is refused with the
//!   error, naming where it is.
//!
//! Requests that the derive reads as they are take the fast path: one pass of serde. Only a
//! request it refuses, or one in which a metric or value came out absent, is read again.

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{any_value, AnyValue, KeyValue},
    metrics::v1::{exemplar, metric::Data, number_data_point, Exemplar, Metric},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The fields that hold a double in OTLP's messages, by their JSON name.
const DOUBLE_FIELDS: [&str; 9] =
    ["doubleValue", "asDouble", "sum", "min", "max", "zeroThreshold", "quantile", "value", "explicitBounds"];

/// A request's every double, for the markers that stand in for special values while it decodes.
pub trait Doubles {
    fn each_double(&mut self, f: &mut dyn FnMut(&mut f64));

    /// Errors that the derive turned into absent values, found by comparing with the JSON.
    ///
    /// # Errors
    /// The first such error, with its place.
    fn check_absent(&self, _json: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Whether anything came out absent that the JSON may have held (see `check_absent`).
    fn has_absent(&self) -> bool {
        false
    }
}

/// Decodes an OTLP/JSON request. `second_pass` is called before the body is read again (into a
/// `serde_json::Value`, which takes memory of its own), and may refuse.
///
/// # Errors
/// A message naming what could not be read, or what `second_pass` said.
pub fn decode<R: DeserializeOwned + Doubles, E: From<String>>(
    body: &[u8],
    second_pass: &mut dyn FnMut() -> Result<(), E>,
) -> Result<R, E> {
    let first = match serde_json::from_slice::<R>(body) {
        Ok(request) if !request.has_absent() => return Ok(request),
        Ok(_) => None,
        Err(err) => Some(err.to_string()),
    };
    second_pass()?;
    read_again(body, first).map_err(E::from)
}

/// The slow path of [`decode`], `first` being the derive's error if it refused the body.
fn read_again<R: DeserializeOwned + Doubles>(body: &[u8], first: Option<String>) -> Result<R, String> {
    let mut json: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let markers = Markers::avoiding(&json);
    if !markers.replace(&mut json, false) {
        if let Some(err) = first {
            return Err(err);
        }
    }
    let mut request = R::deserialize(&json).map_err(|e| e.to_string())?;
    request.each_double(&mut |d| markers.restore(d));
    if request.has_absent() {
        request.check_absent(&json)?;
    }
    Ok(request)
}

/// Three finite doubles that appear nowhere in a request, standing in for NaN, Infinity and
/// -Infinity while serde reads it.
struct Markers([f64; 3]);

impl Markers {
    fn avoiding(json: &Value) -> Self {
        let mut used = Vec::new();
        numbers(json, &mut used);
        let mut markers = [0.0; 3];
        let mut candidate = f64::MAX.to_bits();
        for marker in &mut markers {
            while used.contains(&f64::from_bits(candidate)) {
                candidate -= 1;
            }
            *marker = f64::from_bits(candidate);
            candidate -= 1;
        }
        Self(markers)
    }

    /// Replaces strings that stand for doubles in double fields: the special values by markers,
    /// numbers in quotes by the numbers. Returns whether it replaced any.
    fn replace(&self, json: &mut Value, in_double_field: bool) -> bool {
        match json {
            Value::String(text) if in_double_field => {
                let number = match text.as_str() {
                    "NaN" => Some(self.0[0]),
                    "Infinity" => Some(self.0[1]),
                    "-Infinity" => Some(self.0[2]),
                    other => other.trim().parse::<f64>().ok().filter(|d| d.is_finite()),
                };
                match number.and_then(serde_json::Number::from_f64) {
                    Some(number) => {
                        *json = Value::Number(number);
                        true
                    }
                    None => false,
                }
            }
            Value::Array(items) => {
                items.iter_mut().fold(false, |replaced, item| self.replace(item, in_double_field) | replaced)
            }
            Value::Object(fields) => fields.iter_mut().fold(false, |replaced, (key, value)| {
                self.replace(value, DOUBLE_FIELDS.contains(&key.as_str())) | replaced
            }),
            _ => false,
        }
    }

    fn restore(&self, d: &mut f64) {
        if *d == self.0[0] {
            *d = f64::NAN;
        } else if *d == self.0[1] {
            *d = f64::INFINITY;
        } else if *d == self.0[2] {
            *d = f64::NEG_INFINITY;
        }
    }
}

fn numbers(json: &Value, out: &mut Vec<f64>) {
    match json {
        Value::Number(n) => out.extend(n.as_f64()),
        Value::Array(items) => items.iter().for_each(|item| numbers(item, out)),
        Value::Object(fields) => fields.values().for_each(|value| numbers(value, out)),
        _ => {}
    }
}

/// Every double in `value`, at any depth.
pub fn any_value_doubles(value: &mut AnyValue, f: &mut dyn FnMut(&mut f64)) {
    match &mut value.value {
        Some(any_value::Value::DoubleValue(d)) => f(d),
        Some(any_value::Value::ArrayValue(array)) => {
            array.values.iter_mut().for_each(|v| any_value_doubles(v, f));
        }
        Some(any_value::Value::KvlistValue(list)) => attribute_doubles(&mut list.values, f),
        _ => {}
    }
}

fn attribute_doubles(attributes: &mut [KeyValue], f: &mut dyn FnMut(&mut f64)) {
    for kv in attributes {
        if let Some(value) = &mut kv.value {
            any_value_doubles(value, f);
        }
    }
}

impl Doubles for ExportTraceServiceRequest {
    fn each_double(&mut self, f: &mut dyn FnMut(&mut f64)) {
        for rs in &mut self.resource_spans {
            if let Some(resource) = &mut rs.resource {
                attribute_doubles(&mut resource.attributes, f);
            }
            for ss in &mut rs.scope_spans {
                if let Some(scope) = &mut ss.scope {
                    attribute_doubles(&mut scope.attributes, f);
                }
                for span in &mut ss.spans {
                    attribute_doubles(&mut span.attributes, f);
                    span.events.iter_mut().for_each(|e| attribute_doubles(&mut e.attributes, f));
                    span.links.iter_mut().for_each(|l| attribute_doubles(&mut l.attributes, f));
                }
            }
        }
    }
}

impl Doubles for ExportLogsServiceRequest {
    fn each_double(&mut self, f: &mut dyn FnMut(&mut f64)) {
        for rl in &mut self.resource_logs {
            if let Some(resource) = &mut rl.resource {
                attribute_doubles(&mut resource.attributes, f);
            }
            for sl in &mut rl.scope_logs {
                if let Some(scope) = &mut sl.scope {
                    attribute_doubles(&mut scope.attributes, f);
                }
                for record in &mut sl.log_records {
                    attribute_doubles(&mut record.attributes, f);
                    if let Some(body) = &mut record.body {
                        any_value_doubles(body, f);
                    }
                }
            }
        }
    }
}

fn exemplar_doubles(exemplars: &mut [Exemplar], f: &mut dyn FnMut(&mut f64)) {
    for exemplar in exemplars {
        attribute_doubles(&mut exemplar.filtered_attributes, f);
        if let Some(exemplar::Value::AsDouble(d)) = &mut exemplar.value {
            f(d);
        }
    }
}

fn metric_doubles(metric: &mut Metric, f: &mut dyn FnMut(&mut f64)) {
    attribute_doubles(&mut metric.metadata, f);
    let number = |p: &mut opentelemetry_proto::tonic::metrics::v1::NumberDataPoint,
                  f: &mut dyn FnMut(&mut f64)| {
        attribute_doubles(&mut p.attributes, f);
        exemplar_doubles(&mut p.exemplars, f);
        if let Some(number_data_point::Value::AsDouble(d)) = &mut p.value {
            f(d);
        }
    };
    match &mut metric.data {
        Some(Data::Gauge(gauge)) => gauge.data_points.iter_mut().for_each(|p| number(p, f)),
        Some(Data::Sum(sum)) => sum.data_points.iter_mut().for_each(|p| number(p, f)),
        Some(Data::Histogram(histogram)) => {
            for p in &mut histogram.data_points {
                attribute_doubles(&mut p.attributes, f);
                exemplar_doubles(&mut p.exemplars, f);
                p.sum
                    .iter_mut()
                    .chain(&mut p.min)
                    .chain(&mut p.max)
                    .chain(&mut p.explicit_bounds)
                    .for_each(&mut *f);
            }
        }
        Some(Data::ExponentialHistogram(histogram)) => {
            for p in &mut histogram.data_points {
                attribute_doubles(&mut p.attributes, f);
                exemplar_doubles(&mut p.exemplars, f);
                p.sum.iter_mut().chain(&mut p.min).chain(&mut p.max).for_each(&mut *f);
                f(&mut p.zero_threshold);
            }
        }
        Some(Data::Summary(summary)) => {
            for p in &mut summary.data_points {
                attribute_doubles(&mut p.attributes, f);
                f(&mut p.sum);
                for q in &mut p.quantile_values {
                    f(&mut q.quantile);
                    f(&mut q.value);
                }
            }
        }
        None => {}
    }
}

/// The JSON names of a metric's data fields.
const DATA_FIELDS: [&str; 5] = ["gauge", "sum", "histogram", "exponentialHistogram", "summary"];

/// Where a number data point or exemplar keeps its value, by JSON name.
const VALUE_FIELDS: [&str; 2] = ["asDouble", "asInt"];

impl Doubles for ExportMetricsServiceRequest {
    fn each_double(&mut self, f: &mut dyn FnMut(&mut f64)) {
        for rm in &mut self.resource_metrics {
            if let Some(resource) = &mut rm.resource {
                attribute_doubles(&mut resource.attributes, f);
            }
            for sm in &mut rm.scope_metrics {
                if let Some(scope) = &mut sm.scope {
                    attribute_doubles(&mut scope.attributes, f);
                }
                sm.metrics.iter_mut().for_each(|m| metric_doubles(m, f));
            }
        }
    }

    fn has_absent(&self) -> bool {
        let exemplar_absent = |e: &[Exemplar]| e.iter().any(|e| e.value.is_none());
        self.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics).any(|m| {
            match &m.data {
                None => true,
                Some(Data::Gauge(g)) => {
                    g.data_points.iter().any(|p| p.value.is_none() || exemplar_absent(&p.exemplars))
                }
                Some(Data::Sum(s)) => {
                    s.data_points.iter().any(|p| p.value.is_none() || exemplar_absent(&p.exemplars))
                }
                Some(Data::Histogram(h)) => h.data_points.iter().any(|p| exemplar_absent(&p.exemplars)),
                Some(Data::ExponentialHistogram(h)) => {
                    h.data_points.iter().any(|p| exemplar_absent(&p.exemplars))
                }
                Some(Data::Summary(_)) => false,
            }
        })
    }

    fn check_absent(&self, json: &Value) -> Result<(), String> {
        let items =
            |value: &Value, key: &str| value.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, rm) in self.resource_metrics.iter().enumerate() {
            let rm_json = items(json, "resourceMetrics").get(i).cloned().unwrap_or_default();
            for (j, sm) in rm.scope_metrics.iter().enumerate() {
                let sm_json = items(&rm_json, "scopeMetrics").get(j).cloned().unwrap_or_default();
                for (k, metric) in sm.metrics.iter().enumerate() {
                    let m_json = items(&sm_json, "metrics").get(k).cloned().unwrap_or_default();
                    let place = format!("resourceMetrics[{i}].scopeMetrics[{j}].metrics[{k}]");
                    check_metric(metric, &m_json, &place)?;
                }
            }
        }
        Ok(())
    }
}

/// Refuses a metric whose data, or a value inside it, the JSON held but the derive dropped.
fn check_metric(metric: &Metric, json: &Value, place: &str) -> Result<(), String> {
    let Some(data) = &metric.data else {
        let Some(field) = DATA_FIELDS.into_iter().find(|f| json.get(f).is_some()) else { return Ok(()) };
        // Read the data on its own to find the error that the flattened oneof swallowed.
        let single = serde_json::json!({ field: json[field].clone() });
        let err = serde_json::from_value::<Data>(single)
            .err()
            .map_or_else(|| "cannot be read".to_owned(), |e| e.to_string());
        return Err(format!("{place}.{field}: {err}"));
    };
    let (field, values, exemplars): (&str, Vec<bool>, Vec<Vec<bool>>) = match data {
        Data::Gauge(g) => (
            "gauge",
            g.data_points.iter().map(|p| p.value.is_none()).collect(),
            g.data_points.iter().map(|p| p.exemplars.iter().map(|e| e.value.is_none()).collect()).collect(),
        ),
        Data::Sum(s) => (
            "sum",
            s.data_points.iter().map(|p| p.value.is_none()).collect(),
            s.data_points.iter().map(|p| p.exemplars.iter().map(|e| e.value.is_none()).collect()).collect(),
        ),
        Data::Histogram(h) => (
            "histogram",
            vec![false; h.data_points.len()],
            h.data_points.iter().map(|p| p.exemplars.iter().map(|e| e.value.is_none()).collect()).collect(),
        ),
        Data::ExponentialHistogram(h) => (
            "exponentialHistogram",
            vec![false; h.data_points.len()],
            h.data_points.iter().map(|p| p.exemplars.iter().map(|e| e.value.is_none()).collect()).collect(),
        ),
        Data::Summary(_) => return Ok(()),
    };
    let points = json.get(field).and_then(|d| d.get("dataPoints")).and_then(Value::as_array);
    for (p, point) in points.into_iter().flatten().enumerate() {
        if values.get(p) == Some(&true) {
            check_value(point, &format!("{place}.{field}.dataPoints[{p}]"))?;
        }
        let absent = exemplars.get(p).cloned().unwrap_or_default();
        let listed = point.get("exemplars").and_then(Value::as_array);
        for (e, exemplar) in listed.into_iter().flatten().enumerate() {
            if absent.get(e) == Some(&true) {
                check_value(exemplar, &format!("{place}.{field}.dataPoints[{p}].exemplars[{e}]"))?;
            }
        }
    }
    Ok(())
}

/// Refuses a point or exemplar whose JSON held a value the derive could not read.
fn check_value(json: &Value, place: &str) -> Result<(), String> {
    match VALUE_FIELDS.into_iter().find(|f| json.get(f).is_some_and(|v| !v.is_null())) {
        Some(field) => Err(format!("{place}.{field}: not a number: {}", json[field])),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<R: DeserializeOwned + Doubles>(body: &[u8]) -> Result<R, String> {
        super::decode(body, &mut || Ok::<_, String>(()))
    }

    fn metrics(points: &str) -> Result<ExportMetricsServiceRequest, String> {
        let body = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","gauge":{{"dataPoints":[{points}]}}}}]}}]}}]}}"#
        );
        decode(body.as_bytes())
    }

    fn values(request: &ExportMetricsServiceRequest) -> Vec<Option<number_data_point::Value>> {
        let Some(Data::Gauge(gauge)) = &request.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("a gauge")
        };
        gauge.data_points.iter().map(|p| p.value).collect()
    }

    #[test]
    fn special_doubles_are_read_as_the_protobuf_json_mapping_writes_them() {
        let request = metrics(r#"{"asDouble":"NaN"},{"asDouble":"Infinity"},{"asDouble":"-Infinity"},{"asDouble":"2.5"},{"asDouble":1.5},{}"#)
            .expect("decodes");
        let values = values(&request);
        let doubles: Vec<f64> = values[..5]
            .iter()
            .map(|v| match v {
                Some(number_data_point::Value::AsDouble(d)) => *d,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(doubles[0].is_nan());
        assert_eq!(&doubles[1..], &[f64::INFINITY, f64::NEG_INFINITY, 2.5, 1.5]);
        assert_eq!(values[5], None, "a point without a value stays without one");
    }

    #[test]
    fn a_value_that_is_not_a_number_is_refused_with_its_place() {
        let err = metrics(r#"{"asDouble":1},{"asDouble":"abc"}"#).expect_err("refused");
        assert!(err.contains("metrics[0].gauge.dataPoints[1].asDouble"), "{err}");
        let err = metrics(r#"{"asInt":"12x"}"#).expect_err("refused");
        assert!(err.contains("dataPoints[0].asInt"), "{err}");
        let err = metrics(r#"{"asInt":"1","exemplars":[{"asDouble":"x"}]}"#).expect_err("refused");
        assert!(err.contains("dataPoints[0].exemplars[0].asDouble"), "{err}");
        let err = metrics(r#"{"asInt":"1","timeUnixNano":"soon"}"#).expect_err("refused");
        assert!(err.contains("metrics[0].gauge"), "{err}");
    }

    #[test]
    fn special_doubles_in_attributes_and_histograms_come_through() {
        let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"a","value":{"doubleValue":"-Infinity"}},
            {"key":"b","value":{"arrayValue":{"values":[{"doubleValue":"NaN"},{"doubleValue":1.7976931348623157e308}]}}}]},
            "scopeSpans":[]}]}"#;
        let request: ExportTraceServiceRequest = decode(body.as_bytes()).expect("decodes");
        let attributes = &request.resource_spans[0].resource.as_ref().expect("resource").attributes;
        let double = |v: &AnyValue| match v.value {
            Some(any_value::Value::DoubleValue(d)) => d,
            _ => panic!("{v:?}"),
        };
        assert_eq!(double(attributes[0].value.as_ref().expect("value")), f64::NEG_INFINITY);
        let Some(any_value::Value::ArrayValue(array)) = &attributes[1].value.as_ref().expect("value").value
        else {
            panic!("an array")
        };
        assert!(double(&array.values[0]).is_nan());
        assert_eq!(double(&array.values[1]), f64::MAX, "a real f64::MAX is not taken for a marker");

        let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{"dataPoints":[
            {"count":"1","sum":"NaN","min":"-Infinity","max":"Infinity","explicitBounds":[1,"Infinity"],"bucketCounts":["0","1","0"]}]}}]}]}]}"#;
        let request: ExportMetricsServiceRequest = decode(body.as_bytes()).expect("decodes");
        let Some(Data::Histogram(h)) = &request.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("a histogram")
        };
        let p = &h.data_points[0];
        assert!(p.sum.is_some_and(f64::is_nan));
        assert_eq!((p.min, p.max), (Some(f64::NEG_INFINITY), Some(f64::INFINITY)));
        assert_eq!(p.explicit_bounds, vec![1.0, f64::INFINITY]);
    }

    #[test]
    fn strings_elsewhere_are_left_alone() {
        let body = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"NaN"},"severityText":"Infinity"}]}]}]}"#;
        let request: ExportLogsServiceRequest = decode(body.as_bytes()).expect("decodes");
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.severity_text, "Infinity");
        assert_eq!(
            record.body.as_ref().and_then(|b| b.value.clone()),
            Some(any_value::Value::StringValue("NaN".into()))
        );
        // A request that is not JSON at all keeps serde's own message.
        assert!(decode::<ExportLogsServiceRequest>(b"{").is_err());
    }
}
