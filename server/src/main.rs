//! `lwm2m-server`: the binary operators run.
//!
//! Prints the addresses it bound on one line of stdout (`listening coap=ADDR`), so that
//! scripts and tests started with port 0 learn the real port, then serves until SIGINT or
//! SIGTERM. Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lwm2m_server::config::FileConfig;
use lwm2m_server::runtime::Server;

/// LwM2M device-management server.
#[derive(Debug, Parser)]
#[command(name = "lwm2m-server", version, about)]
struct Cli {
    /// UDP address for CoAP [default: 0.0.0.0:5683; port 0 picks a free port].
    #[arg(long, value_name = "ADDR")]
    coap: Option<SocketAddr>,
    /// Directory of the persistent store [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file; command-line options override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lwm2m-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let file = match &cli.config {
        Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?,
        None => FileConfig::default(),
    };
    let config = file
        .resolve(cli.coap, cli.data_dir)
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let data_dir = config.data_dir.clone();
        let handle = Server::start(config).map_err(|e| e.to_string())?;
        tracing::info!(data_dir = %data_dir.display(), "serving");
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening coap={}", handle.coap_addr())
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write to stdout: {e}"))?;
        }
        wait_for_signal().await?;
        tracing::info!("shutting down");
        handle.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
