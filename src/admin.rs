//! The admin listener: `/healthz` (the process is alive), `/readyz` (it can take data: the
//! database answers, migrations are applied, and it is not shutting down; `grpc.health.v1.Health`
//! follows the same check) and `/metrics` (otelephant's own metrics, Prometheus text format).

use std::time::Duration;

use axum::{
    extract::State,
    http::{header, StatusCode},
    routing::get,
    Router,
};
use deadpool_postgres::Pool;

use crate::{
    pipeline::{intake::Intake, QueueDepth},
    shutdown::Shutdown,
    store::migrate::MIGRATIONS,
    telemetry::{self, Telemetry},
};

/// How long `/readyz` waits for the database before calling it unreachable.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness depends on: the database, and whether shutdown has begun.
#[derive(Clone)]
pub struct Health {
    pool: Pool,
    shutdown: Shutdown,
}

impl Health {
    pub fn new(pool: Pool, shutdown: Shutdown) -> Self {
        Self { pool, shutdown }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.has_begun()
    }

    /// Ok when ready, else why not.
    pub async fn check(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        let latest = MIGRATIONS.last().map_or(0, |m| m.version);
        let probe = async {
            let client = self.pool.get().await.map_err(|e| format!("database unreachable: {e}"))?;
            let row = client
                .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
                .await
                .map_err(|e| format!("database unreachable: {e}"))?;
            let applied: i32 = row.get(0);
            if applied < latest {
                return Err(format!("database schema is at version {applied}, this server needs {latest}"));
            }
            Ok(())
        };
        tokio::time::timeout(READY_CHECK_TIMEOUT, probe)
            .await
            .unwrap_or_else(|_| Err("database did not answer in time".into()))
    }
}

/// What `/metrics` reads besides the recorded metrics: gauges of state owned elsewhere.
#[derive(Clone)]
pub struct Scrape {
    pub telemetry: Telemetry,
    pub queue: QueueDepth,
    pub intake: Intake,
    pub pool: Pool,
}

impl Scrape {
    fn render(&self) -> String {
        let t = &self.telemetry;
        t.gauge(telemetry::QUEUE_BYTES, &[], self.queue.used() as f64);
        t.gauge(telemetry::QUEUE_CAPACITY_BYTES, &[], self.queue.capacity() as f64);
        t.gauge(telemetry::INTAKE_BYTES, &[], self.intake.in_use() as f64);
        t.gauge(telemetry::INTAKE_CAPACITY_BYTES, &[], self.intake.capacity() as f64);
        let pool = self.pool.status();
        let idle = pool.available;
        t.gauge(telemetry::POOL_CONNECTIONS, &[("state", "in_use")], pool.size.saturating_sub(idle) as f64);
        t.gauge(telemetry::POOL_CONNECTIONS, &[("state", "idle")], idle as f64);
        t.gauge(telemetry::POOL_MAX_CONNECTIONS, &[], pool.max_size as f64);
        t.render()
    }
}

pub fn router(health: Health, scrape: Scrape) -> Router {
    let metrics = get(move || {
        let scrape = scrape.clone();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], scrape.render()) }
    });
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
        .route("/metrics", metrics)
}

async fn readyz(State(health): State<Health>) -> (StatusCode, String) {
    match health.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
