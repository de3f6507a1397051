//! PostgreSQL: the connection pool (creating the database and schema when missing), schema
//! migrations, daily partitions and their lifecycle (retention, garbage collection), the
//! rollups' upkeep (folding, pairing calls between services, rebuilding), and the COPY writer
//! that the pipeline's batches go through.

pub mod citus;
pub mod content;
pub mod maintenance;
pub mod migrate;
pub mod partitions;
pub mod rollups;
pub mod tls;
pub mod writer;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PostgresConfig, QueryConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid postgres.url: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("postgres.url: {0}")]
    Tls(#[from] tls::PgTlsError),
    #[error("postgres.url names no database")]
    NoDatabase,
    #[error("invalid postgres.schema {0:?}: use lowercase letters, digits and _, not starting with a digit")]
    Schema(String),
    #[error("database error: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("could not build the connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("{0}")]
    Citus(String),
    #[error("rollups: {0}")]
    Rollup(String),
    #[error("migration {version} ({name}) was changed after it was applied; applied migrations must never be edited")]
    MigrationChanged { version: i32, name: String },
}

/// A database error with what the server said (tokio-postgres' own text is only "db error").
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => match (db.constraint(), db.detail()) {
            (Some(constraint), _) => format!("{} (constraint {constraint})", db.message()),
            (None, Some(detail)) => format!("{}: {detail}", db.message()),
            (None, None) => db.message().to_owned(),
        },
        None => match std::error::Error::source(err) {
            Some(cause) => format!("{err}: {cause}"),
            None => err.to_string(),
        },
    }
}

/// What a database failure means for the one who asked, the same for ingest and queries: the
/// one place SQLSTATEs are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection, or it broke before an answer: worth trying again.
    Connection,
    /// The database refused the data or a value in the request (a data exception, a constraint,
    /// a program limit): sending the same again cannot succeed.
    Data,
    /// The statement ran past `statement_timeout`, or was cancelled.
    Cancelled,
    /// Anything else the server answered with.
    Other,
}

impl Failure {
    /// The failure a database error is.
    pub fn of(err: &tokio_postgres::Error) -> Self {
        let Some(code) = err.code() else {
            return Failure::Connection;
        };
        if err.is_closed() {
            return Failure::Connection;
        }
        match &code.code()[..2] {
            "22" | "23" | "54" => Failure::Data,
            _ if code == &SqlState::QUERY_CANCELED => Failure::Cancelled,
            _ => Failure::Other,
        }
    }

    /// The `kind` label of `otelephant_database_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Connection => "connection",
            Failure::Data => "refused",
            Failure::Cancelled | Failure::Other => "other",
        }
    }
}

impl StoreError {
    /// What this failure means (see [`Failure`]); errors before the database answered are
    /// connection failures, configuration mistakes other ones.
    pub fn failure(&self) -> Failure {
        match self {
            StoreError::Db(err) => Failure::of(err),
            StoreError::Pool(_) => Failure::Connection,
            _ => Failure::Other,
        }
    }

    /// Whether the database refused the data itself, so that writing the same rows again cannot
    /// succeed.
    pub fn is_data_error(&self) -> bool {
        self.failure() == Failure::Data
    }
}

/// A schema name that can go into `search_path` and SQL unquoted.
fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && schema.len() <= 63
}

/// Connects to the configured database, creating it and the schema if they do not exist, and
/// returns a pool whose connections use the schema: the writers' and maintenance's pool.
///
/// # Errors
/// A malformed URL or schema name, an unreachable server, or missing rights to create them.
pub async fn connect(config: &PostgresConfig) -> Result<Pool, StoreError> {
    let (pg, tls) = prepare(config).await?;
    pool(pg, tls, config.pool_size, &[])
}

/// The connections a server holds, one pool per role, so that no role ever waits for a
/// connection another holds: queries cannot starve the writers, nor either the readiness check.
pub struct Pools {
    /// Writers and storage maintenance (`postgres.pool_size`).
    pub write: Pool,
    /// The query service (`query.pool_size`), with `query.statement_timeout_ms` on each session.
    pub query: Pool,
    /// The readiness check: one connection of its own.
    pub health: Pool,
    /// What opens connections, for cancel requests.
    pub tls: MakeRustlsConnect,
}

/// Like [`connect`], with a pool for each role.
///
/// # Errors
/// As [`connect`].
pub async fn connect_pools(config: &PostgresConfig, query: &QueryConfig) -> Result<Pools, StoreError> {
    let (pg, tls) = prepare(config).await?;
    let timeout = format!("statement_timeout={}", query.statement_timeout_ms);
    let query_settings: &[&str] = if query.statement_timeout_ms == 0 { &[] } else { &[&timeout] };
    Ok(Pools {
        write: pool(pg.clone(), tls.clone(), config.pool_size, &[])?,
        query: pool(pg.clone(), tls.clone(), query.pool_size, query_settings)?,
        health: pool(pg, tls.clone(), 1, &[])?,
        tls,
    })
}

/// Checks the schema name, creates the database and schema when missing, and returns what
/// connects to them.
async fn prepare(config: &PostgresConfig) -> Result<(tokio_postgres::Config, MakeRustlsConnect), StoreError> {
    if !valid_schema(&config.schema) {
        return Err(StoreError::Schema(config.schema.clone()));
    }
    let (url, tls) = tls::split(&config.url);
    let mut pg: tokio_postgres::Config = url.parse().map_err(StoreError::Url)?;
    let (ssl_mode, tls) = tls.connector()?;
    pg.ssl_mode(ssl_mode);
    let database = pg.get_dbname().ok_or(StoreError::NoDatabase)?.to_owned();
    create_database_if_missing(&pg, &tls, &database).await?;

    // The database's NOTICEs ("... already exists, skipping") are not worth a log line; its
    // warnings and errors are, and still come through.
    pg.options("-c client_min_messages=warning");
    let (client, connection) = pg.connect(tls.clone()).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", config.schema))
        .await
        .or_else(ignore_duplicate)?;
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    tracing::info!(
        "database {} on {}, schema {}, PostgreSQL {}",
        pg.get_dbname().unwrap_or("postgres"),
        where_(&pg),
        config.schema,
        version.split_whitespace().next().unwrap_or(&version)
    );
    drop(client);
    // JIT compilation pays off for long analytical queries; otelephant's are short, and a
    // backend busy compiling cannot be cancelled until it is done.
    pg.options(format!("-c search_path={} -c jit=off -c client_min_messages=warning", config.schema));
    Ok((pg, tls))
}

/// A pool of at most `size` connections, each session with `settings` (`name=value`) on top of
/// the common ones.
fn pool(
    mut pg: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    size: usize,
    settings: &[&str],
) -> Result<Pool, StoreError> {
    if !settings.is_empty() {
        let mut options = pg.get_options().unwrap_or_default().to_owned();
        for setting in settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        pg.options(options);
    }
    let manager = Manager::from_config(pg, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(manager).max_size(size).build()?)
}

/// Where a configuration connects: `host:port`, or a socket directory.
fn where_(pg: &tokio_postgres::Config) -> String {
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => format!("{host}:{port}"),
        Some(tokio_postgres::config::Host::Unix(path)) => format!("{} (port {port})", path.display()),
        None => format!("localhost:{port}"),
    }
}

/// Concurrent `IF NOT EXISTS` creations can still collide; the loser sees the winner's object.
fn ignore_duplicate(err: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    match err.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::DUPLICATE_SCHEMA => Ok(()),
        Some(code) if *code == SqlState::DUPLICATE_DATABASE => Ok(()),
        _ => Err(err),
    }
}

async fn create_database_if_missing(
    pg: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    database: &str,
) -> Result<(), StoreError> {
    match pg.connect(tls.clone()).await {
        Ok(_) => return Ok(()),
        Err(err) if err.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(err) => return Err(err.into()),
    }
    let mut maintenance = pg.clone();
    maintenance.dbname("postgres");
    let (client, connection) = maintenance.connect(tls.clone()).await?;
    tokio::spawn(connection);
    let quoted = format!("\"{}\"", database.replace('"', "\"\""));
    tracing::info!("creating database {database}: it does not exist yet");
    client.batch_execute(&format!("CREATE DATABASE {quoted}")).await.or_else(ignore_duplicate)?;
    Ok(())
}

/// A pooled connection holding a session advisory lock (which outlives transactions), for the
/// passes one replica at a time runs. Dropped before [`SessionLock::release`], as when a pass is
/// cancelled at shutdown, it closes the connection, and so frees the lock, instead of going back
/// to the pool with it.
pub(crate) struct SessionLock {
    client: Option<Object>,
    /// The lock's key, an SQL expression.
    key: &'static str,
}

impl SessionLock {
    /// The lock `key` on a connection of `pool`, unless another session holds it.
    ///
    /// # Errors
    /// No connection, or the database's error.
    pub(crate) async fn try_take(pool: &Pool, key: &'static str) -> Result<Option<Self>, StoreError> {
        let client = pool.get().await?;
        let locked: bool =
            client.query_one(&format!("SELECT pg_try_advisory_lock({key})"), &[]).await?.get(0);
        Ok(locked.then_some(Self { client: Some(client), key }))
    }

    /// The lock `key`, waited for.
    ///
    /// # Errors
    /// No connection, or the database's error.
    pub(crate) async fn take(pool: &Pool, key: &'static str) -> Result<Self, StoreError> {
        let client = pool.get().await?;
        client.batch_execute(&format!("SELECT pg_advisory_lock({key})")).await?;
        Ok(Self { client: Some(client), key })
    }

    pub(crate) fn client(&mut self) -> &mut Object {
        self.client.as_mut().expect("held until released")
    }

    pub(crate) async fn release(mut self) {
        let Some(client) = self.client.take() else { return };
        if client.batch_execute(&format!("SELECT pg_advisory_unlock({})", self.key)).await.is_err() {
            drop(Object::take(client));
        }
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_names() {
        for ok in ["public", "otel_1", "_x"] {
            assert!(super::valid_schema(ok), "{ok}");
        }
        for bad in ["", "1abc", "Upper", "a;drop", "a b", "a\"b"] {
            assert!(!super::valid_schema(bad), "{bad}");
        }
    }
}
