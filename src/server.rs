//! Start-up and shutdown: connect and migrate, prepare partitions, start the writers and the
//! listeners; on shutdown stop accepting, let the queue drain through the writers, and return.

use std::{future::Future, net::SocketAddr, sync::Arc, time::SystemTime};

use deadpool_postgres::Pool;
use tokio::{net::TcpListener, task::JoinHandle};
use tower_http::validate_request::ValidateRequestHeaderLayer;

use crate::{
    admin::{self, Health},
    auth::{Access, Sessions, Tokens},
    config::{AuthConfig, Config},
    pipeline::{intake::Intake, Pipeline},
    query::{self, Query},
    receive,
    receive::{conn, grpc::OtlpGrpc},
    shutdown::Shutdown,
    store::{self, citus, maintenance, migrate, partitions, StoreError},
    telemetry::{self, Telemetry},
    tls::{Identity, TlsListener},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid otlp.cors_allowed_origins: {0}")]
    Cors(String),
    #[error("building gRPC reflection failed")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("gRPC TLS settings")]
    GrpcTls(#[source] tonic::transport::Error),
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot read llm.price_file {path}")]
    PriceFile { path: std::path::PathBuf, source: PriceFileError },
}

/// A price file that could not be read, or not as one.
#[derive(Debug, thiserror::Error)]
pub enum PriceFileError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Format(#[from] crate::encode::genai::prices::PriceFileError),
}

/// Prices LLM calls with the shipped table and, when `llm.price_file` names one, the user's
/// entries over it; for the whole process, from now on (see `encode::genai::prices`).
///
/// # Errors
/// [`StartError::PriceFile`] when the file cannot be read or is not a price file.
pub fn install_prices(config: &crate::config::LlmConfig) -> Result<(), StartError> {
    use crate::encode::genai::prices::{self, Prices};
    let Some(path) = &config.price_file else { return Ok(()) };
    let read = || -> Result<Prices, PriceFileError> {
        let user = Prices::parse(&std::fs::read_to_string(path)?)?;
        Ok(Prices::shipped().overridden_by(user))
    };
    let prices = read().map_err(|source| StartError::PriceFile { path: path.clone(), source })?;
    tracing::info!(models = prices.len(), file = %path.display(), "LLM prices read");
    prices::install(prices);
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed")]
    Http(#[from] std::io::Error),
    #[error(
        "shutdown did not finish within the grace period of {0:?}; unanswered requests were not acknowledged"
    )]
    GraceExceeded(std::time::Duration),
    #[error("a server task panicked")]
    Task(#[from] tokio::task::JoinError),
}

/// A started server.
pub struct Server {
    /// Where OTLP/gRPC listens (useful when configured with port 0).
    pub grpc_addr: SocketAddr,
    /// Where OTLP/HTTP listens.
    pub http_addr: SocketAddr,
    /// Where `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    http: JoinHandle<std::io::Result<()>>,
    admin: JoinHandle<()>,
    health_watch: JoinHandle<()>,
    pub pool: Pool,
    /// The room requests on their way in hold (see `pipeline.intake_bytes`).
    pub intake: Intake,
    shutdown: Shutdown,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    writers: Vec<JoinHandle<()>>,
    maintenance: JoinHandle<()>,
    /// Storage maintenance passes finished (or skipped) since start; the first runs at once.
    pub maintenance_passes: tokio::sync::watch::Receiver<u64>,
    rollups: JoinHandle<()>,
    /// Rollup passes (folding, pairing) finished or skipped since start; the first runs at once.
    pub rollup_passes: tokio::sync::watch::Receiver<u64>,
    grace: std::time::Duration,
}

/// Connects, migrates and prepares the database. Returns the pool and how many partitions it
/// created.
///
/// # Errors
/// When the database cannot be reached, created or migrated.
pub async fn prepare_database(config: &Config) -> Result<(Pool, usize), StartError> {
    let pool = store::connect(&config.postgres).await?;
    let (created, _) = migrate_and_partition(&pool, config).await?;
    Ok((pool, created))
}

/// Applies the migrations, lays the tables out over Citus when the database is a Citus
/// cluster, and creates the partitions the time window needs; returns how many partitions it
/// created, and the layout.
async fn migrate_and_partition(pool: &Pool, config: &Config) -> Result<(usize, citus::Layout), StartError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    migrate::run(&mut client).await?;
    let mut layout = citus::Layout::SingleNode;
    if let Some(cluster) = citus::detect(&client, config.postgres.citus).await? {
        layout = citus::Layout::Citus;
        let laid_out = citus::lay_out(&mut client).await?;
        tracing::info!(
            "Citus {} with {} workers: {}",
            cluster.version,
            cluster.workers,
            if laid_out > 0 { format!("distributed {laid_out} tables") } else { "tables distributed".into() }
        );
    }
    let created =
        partitions::ensure(&mut client, partitions::epoch_day(SystemTime::now()), &config.partitions).await?;
    Ok((created, layout))
}

/// How often the gRPC health status is brought up to date with [`Health::check`].
pub const HEALTH_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `grpc.health.v1.Health` (for the whole server, "") in step with readiness, checking
/// every [`HEALTH_CHECK_INTERVAL`], and sets it NOT_SERVING for good once shutdown starts.
async fn watch_health(
    health: Health,
    shutdown_begun: impl Future<Output = ()>,
    reporter: tonic_health::server::HealthReporter,
) {
    let mut shutdown_begun = std::pin::pin!(shutdown_begun);
    loop {
        tokio::select! {
            () = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {}
            () = &mut shutdown_begun => {}
        }
        report_health(&health, &reporter).await;
        if health.is_shutting_down() {
            return;
        }
    }
}

async fn report_health(health: &Health, reporter: &tonic_health::server::HealthReporter) {
    let status = match health.check().await {
        Ok(()) => tonic_health::ServingStatus::Serving,
        Err(_) => tonic_health::ServingStatus::NotServing,
    };
    reporter.set_service_status("", status).await;
}

/// The tokens each group of endpoints accepts.
fn access(config: &AuthConfig) -> Result<Access, crate::auth::AuthError> {
    let ingest =
        Tokens::load("auth.ingest_token", config.ingest_token.as_ref(), config.ingest_token_file.as_deref())?;
    let query =
        Tokens::load("auth.query_token", config.query_token.as_ref(), config.query_token_file.as_deref())?;
    let access = Access { ingest: ingest.map(Arc::new), query: query.map(Arc::new), sessions: None };
    if !access.is_open() {
        tracing::info!(
            ingest = access.ingest.is_some(),
            query = access.query.is_some(),
            "bearer tokens required"
        );
    }
    Ok(access)
}

/// Checks gRPC requests' bearer tokens, counting the export requests it turns away.
#[allow(clippy::result_large_err)] // The shape tower-http's request validation asks for.
fn authenticate_grpc(
    access: Access,
    telemetry: Telemetry,
) -> impl FnMut(&mut http::Request<tonic::body::Body>) -> Result<(), http::Response<tonic::body::Body>> + Clone
{
    move |request| {
        access.check_grpc(request).inspect_err(|_| {
            let path = request.uri().path();
            let signal = [("trace.v1", "traces"), ("metrics.v1", "metrics"), ("logs.v1", "logs")]
                .into_iter()
                .find(|(service, _)| path.contains(service));
            if let Some((_, signal)) = signal {
                let outcome = receive::outcome::Outcome::Unauthenticated.label();
                let labels = [("signal", signal), ("transport", "grpc"), ("outcome", outcome)];
                telemetry.counter(telemetry::REQUESTS, &labels).increment(1);
            }
        })
    }
}

/// An address a person on this machine can use: a wildcard bind is reached at localhost.
fn reachable(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
    let local = listener.local_addr().map_err(|source| StartError::Listen { addr, source })?;
    Ok((listener, local))
}

/// Storage maintenance, a pass now and then every `partitions.check_interval_secs`; the
/// receiver counts the passes done.
fn start_maintenance(
    pool: &Pool,
    config: &Config,
    telemetry: &Telemetry,
) -> (JoinHandle<()>, tokio::sync::watch::Receiver<u64>) {
    let (passes, done) = tokio::sync::watch::channel(0);
    let task = tokio::spawn(maintenance::maintain(
        pool.clone(),
        config.partitions.clone(),
        config.retention.clone(),
        config.storage.clone(),
        telemetry.clone(),
        passes,
    ));
    (task, done)
}

/// The rollups' upkeep, a pass now and then every `rollups.pass_interval_secs`; the receiver
/// counts the passes done.
fn start_rollups(
    pool: &Pool,
    config: &Config,
    telemetry: &Telemetry,
) -> (JoinHandle<()>, tokio::sync::watch::Receiver<u64>) {
    let (passes, done) = tokio::sync::watch::channel(0);
    let task = tokio::spawn(store::rollups::maintain(
        pool.clone(),
        config.rollups.clone(),
        telemetry.clone(),
        passes,
    ));
    (task, done)
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics`.
async fn serve_admin(
    config: &Config,
    health: Health,
    scrape: admin::Scrape,
) -> Result<(JoinHandle<()>, SocketAddr), StartError> {
    let (listener, addr) = bind(config.admin.addr).await?;
    let router = admin::router(health, scrape);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(%err, "admin server failed");
        }
    });
    Ok((task, addr))
}

/// The OTLP/HTTP listener: OTLP export, the JSON and Jaeger read APIs, and the web UI. It stops
/// accepting once shutdown begins.
async fn serve_http(
    config: &Config,
    pipeline: &Pipeline,
    query: &Query,
    access: &Access,
    identity: Option<&Identity>,
    shutdown: &Shutdown,
) -> Result<(JoinHandle<std::io::Result<()>>, SocketAddr), StartError> {
    let (listener, addr) = bind(config.otlp.http_addr).await?;
    let mut router = receive::http::router(pipeline.clone(), &config.otlp, access.clone())
        .map_err(|e| StartError::Cors(e.to_string()))?
        .merge(query::http::router(query.clone(), access.clone()));
    if config.ui.enabled {
        router = router.merge(crate::ui::router(query.clone(), access.clone(), identity.is_some()));
    }
    let hosts = crate::ui::security::HostList::new(&config.ui.allowed_hosts);
    let router = crate::ui::security::layer(router, hosts, identity.is_some());
    let stopping = shutdown.begun();
    let otlp = config.otlp.clone();
    let task = match identity {
        None => tokio::spawn(async move { conn::serve(listener, router, &otlp, stopping).await }),
        Some(identity) => {
            let listener = TlsListener::new(listener, identity.rustls()?)
                .map_err(|source| StartError::Listen { addr, source })?;
            tokio::spawn(async move { conn::serve(listener, router, &otlp, stopping).await })
        }
    };
    Ok((task, addr))
}

/// What the gRPC listener serves: OTLP export, the query service, health and reflection.
struct Grpc {
    pipeline: Pipeline,
    query: Query,
    access: Access,
    telemetry: Telemetry,
    health: Health,
}

impl Grpc {
    /// Binds and serves; returns the server's task, its address, and the task that keeps
    /// `grpc.health.v1.Health` in step with readiness. It stops when shutdown says so.
    async fn serve(
        self,
        config: &Config,
        identity: Option<&Identity>,
        shutdown: &Shutdown,
    ) -> Result<(JoinHandle<Result<(), tonic::transport::Error>>, SocketAddr, JoinHandle<()>), StartError>
    {
        let (listener, addr) = bind(config.otlp.grpc_addr).await?;
        let (grpc_health, grpc_health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(query::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection().build_v1().map_err(StartError::Reflection)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(StartError::Reflection)?;
        let routes = OtlpGrpc::new(self.pipeline)
            .routes(&config.otlp)
            .add_service(self.query.server())
            .add_service(shutdown.ending_streams(grpc_health_service))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        report_health(&self.health, &grpc_health).await;
        let health_watch = tokio::spawn(watch_health(self.health, shutdown.begun(), grpc_health));
        let incoming = conn::incoming(listener, conn::Limits::new(&config.otlp));
        let mut server =
            tonic::transport::Server::builder().max_concurrent_streams(config.otlp.max_concurrent_streams);
        if let Some(identity) = identity {
            server = server.tls_config(identity.grpc()).map_err(StartError::GrpcTls)?;
        }
        let closing = shutdown.clone();
        let task = tokio::spawn(
            server
                .layer(ValidateRequestHeaderLayer::custom(authenticate_grpc(self.access, self.telemetry)))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async move {
                    closing.grpc_stopping().await;
                    // Open health Watch streams would otherwise hold their connections, and
                    // so the graceful shutdown, until the grace period ran out.
                    closing.close_streams();
                }),
        );
        Ok((task, addr, health_watch))
    }
}

/// The line a person reads when the server is ready: where to send, and where to look.
fn log_ready(
    config: &Config,
    tls: bool,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    admin_addr: SocketAddr,
) {
    let mtls = config.tls.client_ca_file.is_some();
    let scheme = if tls { "https" } else { "http" };
    let http_url = format!("{scheme}://{}", reachable(http_addr));
    let next =
        if config.ui.enabled { format!("; open {http_url}/ to look at what arrives") } else { String::new() };
    let security = match (tls, mtls) {
        (true, true) => " with mutual TLS",
        (true, false) => " with TLS",
        _ => "",
    };
    tracing::info!(
        "ready, listening for OTLP/gRPC on {grpc_addr}, OTLP/HTTP on {http_addr}{security}, admin on \
         {admin_addr}; point an exporter at {scheme}://{} (gRPC) or {http_url} (HTTP){next}",
        reachable(grpc_addr)
    );
}

impl Server {
    /// Starts everything and returns once the listeners accept connections.
    ///
    /// # Errors
    /// Invalid configuration, database set-up failures, addresses that cannot be bound.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        install_prices(&config.llm)?;
        crate::encode::genai::content::install(config.llm.max_content_bytes);
        let access = access(&config.auth)?;
        let identity = Identity::load(&config.tls)?;
        let telemetry = Telemetry::new();
        let pools = store::connect_pools(&config.postgres, &config.query).await?;
        let mut access = access;
        access.sessions = access.query.clone().map(|tokens| Sessions::new(pools.query.clone(), tokens));
        let pool = pools.write.clone();
        let (created, layout) = migrate_and_partition(&pool, &config).await?;
        telemetry.counter(telemetry::PARTITIONS_CREATED, &[]).increment(created as u64);
        let (maintenance, maintenance_passes) = start_maintenance(&pool, &config, &telemetry);
        let (rollups, rollup_passes) = start_rollups(&pool, &config, &telemetry);
        let (pipeline, writers) = Pipeline::start(&config.pipeline, pool.clone(), telemetry.clone());
        let intake = pipeline.intake.clone();
        let shutdown = Shutdown::new();
        let health = Health::new(pools.health.clone(), shutdown.clone());
        let scrape = admin::Scrape {
            telemetry: telemetry.clone(),
            queue: pipeline.depth(),
            intake: intake.clone(),
            pool: pool.clone(),
        };
        let (admin, admin_addr) = serve_admin(&config, health.clone(), scrape).await?;
        let query = Query::new(pools.query.clone(), pools.tls.clone(), config.query.clone(), layout);
        let (http, http_addr) =
            serve_http(&config, &pipeline, &query, &access, identity.as_ref(), &shutdown).await?;
        let grpc_side = Grpc { pipeline, query, access, telemetry, health };
        let (grpc, grpc_addr, health_watch) = grpc_side.serve(&config, identity.as_ref(), &shutdown).await?;
        log_ready(&config, identity.is_some(), grpc_addr, http_addr, admin_addr);
        Ok(Self {
            grpc_addr,
            http_addr,
            http,
            admin_addr,
            admin,
            health_watch,
            pool,
            shutdown,
            grpc,
            writers,
            maintenance,
            maintenance_passes,
            rollups,
            rollup_passes,
            grace: std::time::Duration::from_secs(config.shutdown.grace_secs),
            intake,
        })
    }

    /// Runs until `signal` resolves, then shuts down.
    ///
    /// # Errors
    /// When the gRPC server fails or a task panics.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        signal.await;
        self.shutdown().await
    }

    /// Stops accepting requests (both receivers turn away new connections once shutdown
    /// starts), waits for in-flight ones to be written and answered, and stops the writers.
    ///
    /// # Errors
    /// When the gRPC server fails or a task panics.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let grace = self.grace;
        let mut abort = vec![self.grpc.abort_handle(), self.http.abort_handle(), self.admin.abort_handle()];
        abort.extend(self.writers.iter().map(JoinHandle::abort_handle));
        let pool = self.pool.clone();
        let drained = tokio::time::timeout(grace, async move {
            self.shutdown.begin();
            // The watcher turns the gRPC health status NOT_SERVING on seeing the shutdown.
            self.health_watch.await?;
            self.shutdown.stop_grpc();
            // The servers own the services and so the pipeline's senders; once they have
            // finished the in-flight requests, the queue closes and the writers drain it and exit.
            self.grpc.await??;
            self.http.await??;
            for writer in self.writers {
                writer.await?;
            }
            self.maintenance.abort();
            self.rollups.abort();
            self.admin.abort();
            Ok::<(), ServeError>(())
        })
        .await;
        pool.close();
        match drained {
            Ok(result) => result,
            Err(_) => {
                for task in abort {
                    task.abort();
                }
                Err(ServeError::GraceExceeded(grace))
            }
        }
    }
}
