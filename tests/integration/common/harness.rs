//! The harness: each test gets its own PostgreSQL schema in the test database (so tests run in
//! parallel), an in-process server on port 0, a SQL client, and cleanup when it ends.

use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry_proto::tonic::collector::{
    logs::v1::logs_service_client::LogsServiceClient,
    metrics::v1::metrics_service_client::MetricsServiceClient,
    trace::v1::trace_service_client::TraceServiceClient,
};
use otelephant::{config::Config, server::Server};
use tokio_postgres::{Client, NoTls};
use tonic::transport::Channel;

/// The database the tests use; created if missing. Override with OTELEPHANT_TEST_DATABASE_URL.
pub fn database_url() -> String {
    std::env::var("OTELEPHANT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/otelephant_test".into())
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A schema of its own in the test database (or another), dropped when this is dropped.
pub struct TestSchema {
    pub name: String,
    url: String,
}

impl TestSchema {
    pub fn new() -> Self {
        Self::in_database(database_url())
    }

    /// A schema in the database at `url`, which must exist.
    pub fn in_database(url: String) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self { name: format!("test_{}_{n}", std::process::id()), url }
    }

    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.postgres.url = self.url.clone();
        config.postgres.schema = self.name.clone();
        config.postgres.pool_size = 4;
        config.otlp.grpc_addr = ([127, 0, 0, 1], 0).into();
        config.admin.addr = ([127, 0, 0, 1], 0).into();
        config.otlp.http_addr = ([127, 0, 0, 1], 0).into();
        config.pipeline.linger_ms = 5;
        config
    }

    /// A SQL client whose search_path is this schema.
    pub async fn sql(&self) -> Client {
        let mut pg: tokio_postgres::Config = self.url.parse().expect("test database url");
        pg.options(format!("-c search_path={}", self.name));
        let (client, connection) = pg.connect(NoTls).await.expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.url.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(async {
                    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
                    tokio::spawn(connection);
                    // A server the test dropped without stopping leaves its tasks on the test's
                    // runtime, which is blocked here: a transaction of theirs would hold its
                    // locks, and the DROP wait, for ever. End the sessions that hold locks on
                    // the schema's tables first.
                    client
                        .execute(
                            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
                             JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                            &[&name],
                        )
                        .await?;
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await
                })
                .map_err(std::io::Error::other)
        })
        .join();
    }
}

/// A running server on its own schema.
pub struct TestServer {
    pub server: Option<Server>,
    pub sql: Client,
    /// What the server was started with, to start it again on the same schema.
    pub config: Config,
    /// Held so the schema is dropped when the test ends.
    _schema: TestSchema,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(TestSchema::new(), adjust).await
    }

    /// A server on `schema`, which may be in a database of its own.
    pub async fn start_in(schema: TestSchema, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = schema.config();
        adjust(&mut config);
        let server = Server::start(config.clone()).await.expect("server starts");
        let sql = schema.sql().await;
        Self { server: Some(server), sql, config, _schema: schema }
    }

    /// Waits until the server's first storage maintenance pass (run at start-up) is over, so
    /// that a test's own passes do not race it.
    pub async fn first_maintenance_pass(&self) {
        let mut passes = self.server.as_ref().expect("running").maintenance_passes.clone();
        passes.wait_for(|n| *n >= 1).await.expect("maintenance runs");
    }

    /// Runs a rollup pass (folding, pairing) as it would run two minutes from now, when the
    /// minutes written so far have closed and settled; waits while the server's own pass runs.
    pub async fn rollup_pass(&self) -> otelephant::store::rollups::Report {
        let pool = &self.server.as_ref().expect("running").pool;
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(120);
        loop {
            match otelephant::store::rollups::run_pass(pool, &self.config.rollups, later, true).await {
                Ok(Some(report)) => return report,
                Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(err) => panic!("rollup pass failed: {err}"),
            }
        }
    }

    /// Stops the server and starts a new one on the same schema (on new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.server = Some(Server::start(self.config.clone()).await.expect("server starts again"));
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.as_ref().expect("running").grpc_addr)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint()).expect("endpoint").connect().await.expect("connects")
    }

    pub async fn traces(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::new(self.channel().await)
    }

    pub async fn metrics(&self) -> MetricsServiceClient<Channel> {
        MetricsServiceClient::new(self.channel().await)
    }

    pub async fn logs(&self) -> LogsServiceClient<Channel> {
        LogsServiceClient::new(self.channel().await)
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.sql.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0)
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

pub fn nanos_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
}
