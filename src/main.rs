//! The `otelephant` command: `otelephant [serve]` runs the server, `otelephant migrate` only
//! brings the database schema up to date.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use figment::{providers::Serialized, Figment};
use otelephant::{config::Config, server::Server};
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
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), cli.overrides())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            config.validate()?;
            otelephant::server::prepare_database(&config).await?;
            tracing::info!("database is up to date");
        }
        Command::Serve => {
            let server = Server::start(config).await.context("starting otelephant")?;
            server.run_until(shutdown_signal()).await?;
            tracing::info!("stopped");
        }
    }
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
