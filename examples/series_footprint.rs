//! Measures what storing metric series once saves: sends gauge points through a real server
//! into a scratch schema, then compares the on-disk size of points + series with the same points
//! stored with their series inlined on every row (what a schema without `metric_series` would
//! hold), each with the index that serves "points of a series over time".
//!
//! `cargo run --release --example series_footprint [DATABASE_URL]`

use opentelemetry_proto::tonic::{
    collector::metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    metrics::v1::{
        metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    },
    resource::v1::Resource,
};
use otelephant::{config::Config, server::Server};

const SERIES: usize = 200;
const POINTS_PER_SERIES: usize = 500;
const SERIES_PER_REQUEST: usize = 50;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn resource() -> Resource {
    let mut attributes = vec![kv("service.name", Value::StringValue("footprint".into()))];
    for (k, v) in [
        ("service.version", "1.42.0"),
        ("service.instance.id", "6f1c9a4e-2b7d-4f8a-9c3e-1d2a3b4c5d6e"),
        ("host.name", "ip-10-1-2-3.eu-west-1.compute.internal"),
        ("host.arch", "amd64"),
        ("os.type", "linux"),
        ("cloud.provider", "aws"),
        ("cloud.region", "eu-west-1"),
        ("k8s.namespace.name", "payments"),
        ("k8s.pod.name", "payments-api-7d9f8b6c5-x2x4z"),
    ] {
        attributes.push(kv(k, Value::StringValue(v.into())));
    }
    Resource { attributes, ..Default::default() }
}

fn request(first_series: usize, round: usize, now: u64) -> ExportMetricsServiceRequest {
    let metrics = (first_series..first_series + SERIES_PER_REQUEST)
        .map(|series| Metric {
            name: format!("http.server.request.duration.{}", series % 10),
            description: "Duration of HTTP server requests.".into(),
            unit: "s".into(),
            metadata: vec![],
            data: Some(Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    attributes: vec![
                        kv("http.request.method", Value::StringValue("GET".into())),
                        kv("http.route", Value::StringValue(format!("/api/v1/items/{series}"))),
                        kv("http.response.status_code", Value::IntValue(200)),
                        kv("network.protocol.version", Value::StringValue("1.1".into())),
                        kv("server.address", Value::StringValue("payments.internal".into())),
                    ],
                    start_time_unix_nano: now - 60_000_000_000,
                    time_unix_nano: now + round as u64 * 1_000_000_000,
                    exemplars: vec![],
                    flags: 0,
                    value: Some(number_data_point::Value::AsDouble(round as f64 * 0.001)),
                }],
            })),
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "2.1.0".into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/otelephant_bench".into());
    let schema = format!("footprint_{}", std::process::id());
    let mut config = Config::default();
    config.postgres.url = url.clone();
    config.postgres.schema = schema.clone();
    config.otlp.grpc_addr = ([127, 0, 0, 1], 0).into();
    config.otlp.http_addr = ([127, 0, 0, 1], 0).into();
    config.admin.addr = ([127, 0, 0, 1], 0).into();
    let server = Server::start(config).await?;
    let mut client = MetricsServiceClient::connect(format!("http://{}", server.grpc_addr)).await?;

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    for round in 0..POINTS_PER_SERIES {
        for first in (0..SERIES).step_by(SERIES_PER_REQUEST) {
            client.export(request(first, round, now)).await?;
        }
    }
    server.shutdown().await?;

    let (sql, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // One statement per call: VACUUM cannot run in the implicit transaction of a multi-statement string.
    for statement in [
        format!("SET search_path = {schema}"),
        "VACUUM ANALYZE metric_points_number, metric_series".into(),
        "CREATE TABLE inline_points AS
             SELECT p.time_unix_nano, p.start_time_unix_nano, p.value_int, p.value_double, p.flags, p.exemplars,
                    m.metric_name, m.metric_type, m.description, m.unit, m.aggregation_temporality,
                    m.is_monotonic, m.metadata, m.attributes, m.resource_id, m.scope_id
             FROM metric_points_number p JOIN metric_series m USING (series_id)"
            .into(),
        "CREATE INDEX ON inline_points (metric_name, time_unix_nano)".into(),
        "VACUUM ANALYZE inline_points".into(),
    ] {
        sql.batch_execute(&statement).await?;
    }
    let size = |query: &'static str| {
        let sql = &sql;
        async move { sql.query_one(query, &[]).await.map(|r| r.get::<_, i64>(0)) }
    };
    let points = size("SELECT count(*) FROM metric_points_number").await?;
    let series = size("SELECT count(*) FROM metric_series").await?;
    let with_series = size(
        "SELECT (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
                 WHERE inhparent = 'metric_points_number'::regclass)::bigint
              + pg_total_relation_size('metric_series')",
    )
    .await?;
    let inline = size("SELECT pg_total_relation_size('inline_points')").await?;
    println!("points: {points}, series: {series}");
    println!(
        "points + metric_series (tables and indexes): {:>10} bytes, {:>6.1} bytes/point",
        with_series,
        with_series as f64 / points as f64
    );
    println!(
        "series inlined on every point:              {:>10} bytes, {:>6.1} bytes/point",
        inline,
        inline as f64 / points as f64
    );
    println!("inlining would take {:.1}x the space", inline as f64 / with_series as f64);
    sql.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await?;
    Ok(())
}
