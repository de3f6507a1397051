//! ListMetrics and QueryMetrics: series from `metric_series` with their points from the
//! `metric_points_*` tables, raw as OTLP or aggregated per step.

use std::collections::HashMap;

use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, MetricsData, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use tokio_postgres::Row;
use tonic::Status;

use super::{
    attribute_condition, bad_token, corrupt, decode_off_thread, decode_token, dimensions, encode_token,
    group_by_dimensions, page_size,
    proto::{
        AggregatedSeries, ListMetricsRequest, ListMetricsResponse, MetricDescriptor, QueryMetricsRequest,
        QueryMetricsResponse, StepValue,
    },
    resolve_range, u32_column, Budget, Conn, Query, Sql,
};
use crate::encode::{
    attributes::{attributes_from_json, MappingError},
    metrics::exemplars_from_json,
    TableId,
};

pub(super) async fn list_metrics(
    q: &Query,
    request: &ListMetricsRequest,
) -> Result<ListMetricsResponse, Status> {
    q.check_text(&request.name_prefix, "name_prefix")?;
    q.check_text(&request.service, "service")?;
    let page_size = page_size(request.page_size);
    let mut sql = Sql::default();
    let mut query = String::from(
        "SELECT DISTINCT metric_name, metric_type, unit, description FROM metric_series m WHERE true",
    );
    if !request.name_prefix.is_empty() {
        query += &format!(" AND starts_with(m.metric_name, {})", sql.param(request.name_prefix.clone()));
    }
    if !request.service.is_empty() {
        let service = sql.param(request.service.clone());
        query += &format!(
            " AND m.resource_id = ANY (SELECT resource_id FROM resources WHERE service_name = {service})"
        );
    }
    if !request.page_token.is_empty() {
        let after: Vec<String> =
            serde_json::from_str(&decode_token(&request.page_token)?).map_err(|_| bad_token())?;
        let [name, kind, unit, description] = <[String; 4]>::try_from(after).map_err(|_| bad_token())?;
        query += &format!(
            " AND (m.metric_name, m.metric_type, m.unit, m.description) > ({}, {}, {}, {})",
            sql.param(name),
            sql.param(kind),
            sql.param(unit),
            sql.param(description)
        );
    }
    query += &format!(" ORDER BY 1, 2, 3, 4 LIMIT {}", sql.param(page_size as i64 + 1));
    let mut budget = q.budget();
    let (rows, full) = q.client().await?.query_within(&query, &sql.params(), &mut budget).await?;
    let mut metrics: Vec<MetricDescriptor> = rows
        .iter()
        .map(|r| MetricDescriptor { name: r.get(0), r#type: r.get(1), unit: r.get(2), description: r.get(3) })
        .collect();
    let next_page_token = if full || metrics.len() > page_size {
        metrics.truncate(page_size);
        let last = &metrics[metrics.len() - 1];
        let position = [&last.name, &last.r#type, &last.unit, &last.description];
        encode_token(&serde_json::to_string(&position).map_err(|e| Status::internal(e.to_string()))?)
    } else {
        String::new()
    };
    Ok(ListMetricsResponse { metrics, next_page_token })
}

/// How a step's points become one value.
#[derive(Clone, Copy, PartialEq)]
enum Aggregation {
    Avg,
    Min,
    Max,
    Sum,
    Rate,
}

impl Aggregation {
    fn parse(name: &str) -> Result<Self, Status> {
        Ok(match name {
            "avg" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "sum" => Self::Sum,
            "rate" => Self::Rate,
            other => {
                return Err(Status::invalid_argument(format!(
                    "aggregation: unknown {other:?}; use avg, min, max, sum or rate"
                )))
            }
        })
    }
}

pub(super) async fn query_metrics(
    q: &Query,
    request: &QueryMetricsRequest,
) -> Result<QueryMetricsResponse, Status> {
    if request.name.is_empty() {
        return Err(Status::invalid_argument("name: required"));
    }
    q.check_text(&request.name, "name")?;
    q.check_filters(&request.attributes)?;
    let (start, end) = resolve_range(request.time_range.as_ref(), "time_range")?;
    let aggregation = match (request.step_nanos, request.aggregation.as_str()) {
        (0, "") => None,
        (0, _) => return Err(Status::invalid_argument("step_nanos: required with an aggregation")),
        (_, "") => return Err(Status::invalid_argument("aggregation: required with a step")),
        (step, name) => Some((i64::try_from(step).unwrap_or(i64::MAX), Aggregation::parse(name)?)),
    };
    let page_size = page_size(request.page_size);
    let mut sql = Sql::default();
    let mut query =
        format!("SELECT m.* FROM metric_series m WHERE m.metric_name = {}", sql.param(request.name.clone()));
    for (i, filter) in request.attributes.iter().enumerate() {
        query +=
            &format!(" AND {}", attribute_condition(q, &mut sql, "m", filter, &format!("attributes[{i}]"))?);
    }
    if !request.page_token.is_empty() {
        let after: i64 = decode_token(&request.page_token)?.parse().map_err(|_| bad_token())?;
        query += &format!(" AND m.series_id > {}", sql.param(after));
    }
    query += &format!(" ORDER BY m.series_id LIMIT {}", sql.param(page_size as i64 + 1));
    let mut client = q.client().await?;
    let mut budget = q.budget();
    let (mut series, full) = client.query_within(&query, &sql.params(), &mut budget).await?;
    let next_page_token = if full || series.len() > page_size {
        series.truncate(page_size);
        encode_token(&series[series.len() - 1].get::<_, i64>("series_id").to_string())
    } else {
        String::new()
    };
    let mut response = QueryMetricsResponse { next_page_token, ..Default::default() };
    let max_points = q.limits.max_points;
    match aggregation {
        None => response.raw = Some(raw(&mut client, series, start, end, max_points, &mut budget).await?),
        Some((step, aggregation)) => {
            let steps = (end - start).saturating_add(step - 1) / step;
            let cells = steps.saturating_mul(series.len() as i64);
            if cells > max_points as i64 {
                return Err(too_many_points(
                    format!("{} series of {steps} steps each", series.len()),
                    max_points,
                ));
            }
            response.aggregated =
                aggregated(&mut client, &series, start, end, step, aggregation, &mut budget).await?
        }
    }
    Ok(response)
}

fn descriptor(series: &Row) -> MetricDescriptor {
    MetricDescriptor {
        name: series.get("metric_name"),
        r#type: series.get("metric_type"),
        unit: series.get("unit"),
        description: series.get("description"),
    }
}

/// The points table of a metric type.
fn points_table(metric_type: &str) -> Option<&'static str> {
    Some(match metric_type {
        "gauge" | "sum" => TableId::NumberPoints.table().name,
        "histogram" => TableId::HistogramPoints.table().name,
        "exponential_histogram" => TableId::ExpHistogramPoints.table().name,
        "summary" => TableId::SummaryPoints.table().name,
        _ => return None,
    })
}

/// The answer to a page that would hold more than `query.max_points` points or steps.
fn too_many_points(what: String, max_points: usize) -> Status {
    Status::resource_exhausted(format!(
        "{what} would be more than the {max_points} points a page may hold (query.max_points); \
         ask for a shorter time_range, a larger step_nanos or a smaller page_size"
    ))
}

/// Each series as an OTLP Metric holding its points in `[start, end)`: at most `max_points`.
///
/// # Errors
/// RESOURCE_EXHAUSTED when the series hold more points than that in the range.
async fn raw(
    client: &mut Conn,
    series: Vec<Row>,
    start: i64,
    end: i64,
    max_points: usize,
    budget: &mut Budget,
) -> Result<MetricsData, Status> {
    let mut left = max_points as i64;
    let mut points: HashMap<i64, Vec<Row>> = HashMap::new();
    let mut by_table: HashMap<&'static str, Vec<i64>> = HashMap::new();
    for s in &series {
        if let Some(table) = points_table(s.get("metric_type")) {
            by_table.entry(table).or_default().push(s.get("series_id"));
        }
    }
    for (table, ids) in by_table {
        let (rows, full) = client
            .query_within(
                &format!(
                    "SELECT * FROM {table} WHERE series_id = ANY($1) AND time_unix_nano >= $2 AND time_unix_nano < $3
                     ORDER BY series_id, time_unix_nano LIMIT $4"
                ),
                &[&ids, &start, &end, &(left + 1)],
                budget,
            )
            .await?;
        if full {
            return Err(Status::resource_exhausted(format!(
                "the {} series' points take more memory than an answer may (query.answer_bytes); \
                 ask for a shorter time_range or a smaller page_size",
                series.len()
            )));
        }
        left -= rows.len() as i64;
        if left < 0 {
            return Err(too_many_points(format!("the {} series' points", series.len()), max_points));
        }
        for row in rows {
            points.entry(row.get("series_id")).or_default().push(row);
        }
    }
    let (resources, scopes) = dimensions(client, &series, budget).await?;
    decode_off_thread(budget.used(), move || {
        let mut data = MetricsData::default();
        for (resource_id, scope_groups) in group_by_dimensions(&series) {
            let (resource, schema_url) = resources.get(&resource_id).cloned().unwrap_or_default();
            let mut resource_metrics =
                ResourceMetrics { resource: Some(resource), scope_metrics: vec![], schema_url };
            for (scope_id, scope_series) in scope_groups {
                let (scope, schema_url) = scopes.get(&scope_id).cloned().unwrap_or_default();
                let metrics = scope_series
                    .into_iter()
                    .map(|s| {
                        let rows = points.remove(&s.get::<_, i64>("series_id")).unwrap_or_default();
                        metric_from_rows(s, &rows)
                    })
                    .collect::<Result<_, MappingError>>()
                    .map_err(corrupt)?;
                resource_metrics.scope_metrics.push(ScopeMetrics { scope: Some(scope), metrics, schema_url });
            }
            data.resource_metrics.push(resource_metrics);
        }
        Ok(data)
    })
    .await
}

/// Rebuilds a series and its point rows into one OTLP Metric.
fn metric_from_rows(series: &Row, points: &[Row]) -> Result<Metric, MappingError> {
    let attributes = attributes_from_json(&series.get("attributes"))?;
    let temporality: Option<i32> = series.get("aggregation_temporality");
    let temporality = temporality.unwrap_or_default();
    let exemplars = |row: &Row| -> Result<_, MappingError> {
        let json: Option<serde_json::Value> = row.get("exemplars");
        json.as_ref().map_or(Ok(Vec::new()), exemplars_from_json)
    };
    let time = |row: &Row| {
        (row.get::<_, i64>("time_unix_nano") as u64, row.get::<_, i64>("start_time_unix_nano") as u64)
    };
    let counts =
        |row: &Row, column: &str| row.get::<_, Vec<i64>>(column).into_iter().map(|c| c as u64).collect();
    let number_points = || -> Result<Vec<NumberDataPoint>, MappingError> {
        points
            .iter()
            .map(|row| {
                let (time_unix_nano, start_time_unix_nano) = time(row);
                let value =
                    match (row.get::<_, Option<i64>>("value_int"), row.get::<_, Option<f64>>("value_double"))
                    {
                        (Some(i), _) => Some(number_data_point::Value::AsInt(i)),
                        (None, Some(d)) => Some(number_data_point::Value::AsDouble(d)),
                        (None, None) => None,
                    };
                Ok(NumberDataPoint {
                    attributes: attributes.clone(),
                    start_time_unix_nano,
                    time_unix_nano,
                    exemplars: exemplars(row)?,
                    flags: u32_column(row, "flags")?,
                    value,
                })
            })
            .collect()
    };
    let data = match series.get::<_, &str>("metric_type") {
        "gauge" => Data::Gauge(Gauge { data_points: number_points()? }),
        "sum" => Data::Sum(Sum {
            data_points: number_points()?,
            aggregation_temporality: temporality,
            is_monotonic: series.get::<_, Option<bool>>("is_monotonic").unwrap_or_default(),
        }),
        "histogram" => Data::Histogram(Histogram {
            data_points: points
                .iter()
                .map(|row| {
                    let (time_unix_nano, start_time_unix_nano) = time(row);
                    Ok(HistogramDataPoint {
                        attributes: attributes.clone(),
                        start_time_unix_nano,
                        time_unix_nano,
                        count: row.get::<_, i64>("count") as u64,
                        sum: row.get("sum"),
                        bucket_counts: counts(row, "bucket_counts"),
                        explicit_bounds: row.get("explicit_bounds"),
                        exemplars: exemplars(row)?,
                        flags: u32_column(row, "flags")?,
                        min: row.get("min"),
                        max: row.get("max"),
                    })
                })
                .collect::<Result<_, MappingError>>()?,
            aggregation_temporality: temporality,
        }),
        "exponential_histogram" => Data::ExponentialHistogram(ExponentialHistogram {
            data_points: points
                .iter()
                .map(|row| {
                    let (time_unix_nano, start_time_unix_nano) = time(row);
                    let side = |offset: &str, column: &str| {
                        row.get::<_, Option<i32>>(offset)
                            .map(|offset| Buckets { offset, bucket_counts: counts(row, column) })
                    };
                    Ok(ExponentialHistogramDataPoint {
                        attributes: attributes.clone(),
                        start_time_unix_nano,
                        time_unix_nano,
                        count: row.get::<_, i64>("count") as u64,
                        sum: row.get("sum"),
                        scale: row.get("scale"),
                        zero_count: row.get::<_, i64>("zero_count") as u64,
                        positive: side("positive_offset", "positive_bucket_counts"),
                        negative: side("negative_offset", "negative_bucket_counts"),
                        flags: u32_column(row, "flags")?,
                        exemplars: exemplars(row)?,
                        min: row.get("min"),
                        max: row.get("max"),
                        zero_threshold: row.get("zero_threshold"),
                    })
                })
                .collect::<Result<_, MappingError>>()?,
            aggregation_temporality: temporality,
        }),
        _ => Data::Summary(Summary {
            data_points: points
                .iter()
                .map(|row| {
                    let (time_unix_nano, start_time_unix_nano) = time(row);
                    let quantiles: Vec<f64> = row.get("quantiles");
                    let values: Vec<f64> = row.get("quantile_values");
                    Ok(SummaryDataPoint {
                        attributes: attributes.clone(),
                        start_time_unix_nano,
                        time_unix_nano,
                        count: row.get::<_, i64>("count") as u64,
                        sum: row.get("sum"),
                        quantile_values: quantiles
                            .into_iter()
                            .zip(values)
                            .map(|(quantile, value)| ValueAtQuantile { quantile, value })
                            .collect(),
                        flags: u32_column(row, "flags")?,
                    })
                })
                .collect::<Result<_, MappingError>>()?,
        }),
    };
    Ok(Metric {
        name: series.get("metric_name"),
        description: series.get("description"),
        unit: series.get("unit"),
        metadata: attributes_from_json(&series.get("metadata"))?,
        data: Some(data),
    })
}

/// The value of a point as a double, for aggregation.
const POINT_VALUE: &str = "coalesce(p.value_double, p.value_int::double precision)";
/// OTLP AggregationTemporality DELTA.
const DELTA: i32 = 1;

/// Each series' points in `[start, end)` aggregated per `step` nanoseconds from `start`.
async fn aggregated(
    client: &mut Conn,
    series: &[Row],
    start: i64,
    end: i64,
    step: i64,
    aggregation: Aggregation,
    budget: &mut Budget,
) -> Result<Vec<AggregatedSeries>, Status> {
    for s in series {
        let kind: &str = s.get("metric_type");
        if kind != "gauge" && kind != "sum" {
            return Err(Status::invalid_argument(format!(
                "aggregation: {kind} metrics have no step aggregation; ask for raw points (no step)"
            )));
        }
        if aggregation == Aggregation::Rate && s.get::<_, Option<bool>>("is_monotonic") != Some(true) {
            return Err(Status::invalid_argument("aggregation: rate needs a monotonic sum"));
        }
    }
    let ids: Vec<i64> = series.iter().map(|s| s.get("series_id")).collect();
    let step_seconds = step as f64 / 1e9;
    let bucket = "(p.time_unix_nano - $2) / $4";
    let range = "p.series_id = ANY($1) AND p.time_unix_nano >= $2 AND p.time_unix_nano < $3";
    let value = match aggregation {
        Aggregation::Avg => format!("avg({POINT_VALUE})"),
        Aggregation::Min => format!("min({POINT_VALUE})"),
        Aggregation::Max => format!("max({POINT_VALUE})"),
        Aggregation::Sum => format!("sum({POINT_VALUE})"),
        // Delta sums: what the step's points add up to. Cumulative sums: the increase between
        // consecutive points (a drop is a counter reset, after which the new value is the increase).
        Aggregation::Rate => format!(
            "sum(CASE WHEN m.aggregation_temporality = {DELTA} THEN v
                      WHEN prev IS NULL THEN 0 WHEN v >= prev THEN v - prev ELSE v END) / $5"
        ),
    };
    let query = if aggregation == Aggregation::Rate {
        format!(
            "WITH p AS (
                 SELECT p.series_id, p.time_unix_nano, {POINT_VALUE} AS v,
                        lag({POINT_VALUE}) OVER (PARTITION BY p.series_id ORDER BY p.time_unix_nano) AS prev
                 FROM metric_points_number p WHERE {range})
             SELECT p.series_id, {bucket} AS step, {value}
             FROM p JOIN metric_series m USING (series_id) GROUP BY 1, 2 ORDER BY 1, 2"
        )
    } else {
        format!(
            "SELECT p.series_id, {bucket} AS step, {value} FROM metric_points_number p
             WHERE {range} GROUP BY 1, 2 ORDER BY 1, 2"
        )
    };
    let rows = if aggregation == Aggregation::Rate {
        client.query(&query, &[&ids, &start, &end, &step, &step_seconds]).await
    } else {
        client.query(&query, &[&ids, &start, &end, &step]).await
    }?;
    let mut values: HashMap<i64, Vec<StepValue>> = HashMap::new();
    for row in rows {
        let step_index: i64 = row.get(1);
        values.entry(row.get(0)).or_default().push(StepValue {
            start_unix_nano: (start + step_index * step) as u64,
            value: row.get::<_, Option<f64>>(2).unwrap_or(f64::NAN),
        });
    }
    let (resources, _) = dimensions(client, series, budget).await?;
    series
        .iter()
        .map(|s| {
            Ok(AggregatedSeries {
                metric: Some(descriptor(s)),
                attributes: attributes_from_json(&s.get("attributes")).map_err(corrupt)?,
                resource: resources.get(&s.get::<_, i64>("resource_id")).map(|(r, _)| r.clone()),
                values: values.remove(&s.get::<_, i64>("series_id")).unwrap_or_default(),
            })
        })
        .collect()
}
