//! The `otelephant` command: `otelephant [serve]` runs the server, `otelephant migrate` only
//! brings the database schema up to date, `otelephant retention [--dry-run]` runs (or shows)
//! one storage maintenance pass.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use figment::{providers::Serialized, Figment};
use otelephant::{
    config::{Config, LogConfig, LogFormat},
    server::Server,
    store::maintenance,
};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(version, about = "OpenTelemetry (OTLP) backend storing traces, metrics and logs in PostgreSQL")]
struct Cli {
    /// Configuration file (default: ./otelephant.toml, if present).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Overrides postgres.url.
    #[arg(long, global = true)]
    postgres_url: Option<String>,
    /// Overrides postgres.schema.
    #[arg(long, global = true)]
    postgres_schema: Option<String>,
    /// Overrides otlp.grpc_addr.
    #[arg(long, global = true)]
    grpc_addr: Option<SocketAddr>,
    /// Overrides otlp.http_addr.
    #[arg(long, global = true)]
    http_addr: Option<SocketAddr>,
    /// Overrides admin.addr.
    #[arg(long, global = true)]
    admin_addr: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Create the database if needed, apply pending migrations and prepare partitions, then exit.
    Migrate,
    /// Run one storage maintenance pass now (create partitions, drop expired ones, collect
    /// unreferenced resources, scopes and series) and print what it did.
    Retention {
        /// Only print what the pass would do; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The rollups (README.md "Rollups").
    #[command(subcommand)]
    Rollups(RollupsCommand),
}

#[derive(Subcommand)]
enum RollupsCommand {
    /// Compute the rollups of a time range afresh from the stored spans and log records, an
    /// hour at a time: for data stored before the rollups existed. Safe to run while serving.
    Rebuild {
        /// The start of the range (RFC 3339, e.g. 2026-11-30T00:00:00Z), rounded down to the
        /// hour; by default the first day of the oldest daily partition of spans or log records.
        #[arg(long)]
        from: Option<humantime::Timestamp>,
        /// The end of the range (RFC 3339); by default now.
        #[arg(long)]
        to: Option<humantime::Timestamp>,
    },
}

impl Cli {
    /// The flags that were given, as a figment layer over the other sources.
    fn overrides(&self) -> Figment {
        let mut figment = Figment::new();
        let mut set = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                figment = std::mem::take(&mut figment).merge(Serialized::default(key, value));
            }
        };
        set("postgres.url", self.postgres_url.clone());
        set("postgres.schema", self.postgres_schema.clone());
        set("otlp.grpc_addr", self.grpc_addr.map(|a| a.to_string()));
        set("otlp.http_addr", self.http_addr.map(|a| a.to_string()));
        set("admin.addr", self.admin_addr.map(|a| a.to_string()));
        figment
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {}", report(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: a cause whose text its error already
/// includes is left out.
fn report(err: &anyhow::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !said.last().is_some_and(|previous| previous.contains(&text)) {
            said.push(text);
        }
    }
    said.join(": ")
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), cli.overrides())?;
    init_logging(&config.log)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            config.validate()?;
            otelephant::server::prepare_database(&config).await?;
            tracing::info!("database is up to date");
        }
        Command::Retention { dry_run } => {
            config.validate()?;
            // A dry run only reads: it neither migrates nor prepares partitions.
            let pool = if dry_run {
                otelephant::store::connect(&config.postgres).await?
            } else {
                otelephant::server::prepare_database(&config).await?.0
            };
            let now = std::time::SystemTime::now();
            println!(
                "Retention: traces {}, logs {}, metrics {}; as of {}",
                config.retention.traces,
                config.retention.logs,
                config.retention.metrics,
                humantime::format_rfc3339_seconds(now)
            );
            let report = if dry_run {
                let mut client = pool.get().await?;
                maintenance::plan(&mut client, &config.partitions, &config.retention, &config.storage, now)
                    .await?
            } else {
                maintenance::run_pass(&pool, &config.partitions, &config.retention, &config.storage, now)
                    .await?
                    .context("another otelephant is running maintenance right now; try again shortly")?
            };
            print!("{}", report.render(dry_run));
        }
        Command::Rollups(RollupsCommand::Rebuild { from, to }) => {
            config.validate()?;
            let pool = otelephant::server::prepare_database(&config).await?.0;
            let nanos = |at: std::time::SystemTime| {
                at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
            };
            let to = to.map_or_else(|| nanos(std::time::SystemTime::now()), |t| nanos(t.into()));
            let from = match from {
                Some(from) => nanos(from.into()),
                None => {
                    let client = pool.get().await?;
                    let mut first = to;
                    for table in ["spans", "logs"] {
                        if let Some(oldest) = maintenance::partitions_of(&client, table).await?.first() {
                            first = first.min(i64::from(oldest.day) * 86_400_000_000_000);
                        }
                    }
                    first
                }
            };
            let rebuilt = otelephant::store::rollups::rebuild(&pool, from, to).await?;
            println!(
                "Rebuilt the rollups of {} hours: {} span rollup rows, {} log rollup rows; their minutes' calls between \
                 services are paired by the server's next rollup pass",
                rebuilt.hours, rebuilt.span_rows, rebuilt.log_rows
            );
        }
        Command::Serve => {
            let stop = shutdown_signal()?;
            let server = Server::start(config).await.context("starting otelephant")?;
            server.run_until(stop).await?;
            tracing::info!("stopped");
        }
    }
    Ok(())
}

/// Logs to standard error, filtered by `RUST_LOG` if set, else by `log.level`, as text or JSON lines.
fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => {
            EnvFilter::try_new(&log.level).with_context(|| format!("invalid log.level {:?}", log.level))?
        }
    };
    // Colour only for a person at a terminal: never escape codes in a file or a log collector.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match log.format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed before this returns, so a signal
/// that arrives while the server starts is not lost (nor does it kill the process outright).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    })
}
