//! `lwm2m-bootstrap`: the bootstrap server alone, for operators who run it apart from the
//! LwM2M server (`lwm2m-server --bootstrap` runs the same one inside).
//!
//! Prints `listening bootstrap=ADDR bootstrap-coaps=ADDR http=ADDR` on the first line of
//! stdout, and `api-token-file=PATH` when it generated its API token. With
//! `--server-api URL` and `--server-api-token`, the PSK of each configuration's
//! provisioned account is written into that LwM2M server's credential store
//! (`PUT URL/api/security/clients/{endpoint}`) before the configuration is stored;
//! without them, nowhere.
//!
//! The TOML file is the one `lwm2m-server` reads: `[bootstrap]`, `[dtls]`,
//! `[coap_params]`, `[api]`, `http` and `data_dir` apply; the LwM2M server's keys are
//! ignored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lwm2m_server::api::bootstrap::{BootstrapApi, Provisioner};
use lwm2m_server::api::{bootstrap_only_router, serve_router};
use lwm2m_server::binary::{self, addr_or_off};
use lwm2m_server::bootstrap::BootstrapServer;
use lwm2m_server::config::{FileConfig, Overrides};
use lwm2m_server::metrics::Metrics;

const DEFAULT_COAP: &str = "0.0.0.0:5683";
const DEFAULT_COAPS: &str = "0.0.0.0:5684";
const DEFAULT_HTTP: &str = "127.0.0.1:8081";
const DEFAULT_DATA_DIR: &str = "./bootstrap-data";

/// LwM2M bootstrap server.
#[derive(Debug, Parser)]
#[command(name = "lwm2m-bootstrap", version, about)]
struct Cli {
    /// UDP address for CoAP, or `off` [default: 0.0.0.0:5683].
    #[arg(long, value_name = "ADDR|off", env = "LWM2M_BOOTSTRAP")]
    coap: Option<String>,
    /// UDP address for CoAP over DTLS, or `off` [default: 0.0.0.0:5684].
    #[arg(long, value_name = "ADDR|off", env = "LWM2M_BOOTSTRAP_COAPS")]
    coaps: Option<String>,
    /// TCP address for the HTTP API [default: 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR", env = "LWM2M_BOOTSTRAP_HTTP")]
    http: Option<SocketAddr>,
    /// Directory of the bootstrap store [default: ./bootstrap-data].
    #[arg(long, value_name = "DIR", env = "LWM2M_BOOTSTRAP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file (the format of `lwm2m-server`'s).
    #[arg(long, value_name = "FILE", env = "LWM2M_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    tokens: binary::TokenArgs,
    /// Base URL of the LwM2M server's API (`http://host:8080`), to provision credentials into.
    #[arg(
        long,
        value_name = "URL",
        env = "LWM2M_SERVER_API",
        requires = "server_api_token"
    )]
    server_api: Option<String>,
    /// Admin token of the LwM2M server's API.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LWM2M_SERVER_API_TOKEN",
        hide_env_values = true
    )]
    server_api_token: Option<String>,
}

fn main() -> ExitCode {
    binary::init_logging();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lwm2m-bootstrap: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let file = match &cli.config {
        Some(path) => FileConfig::load(path).map_err(|e| e.to_string())?,
        None => FileConfig::default(),
    };
    // This binary's own defaults, under the file's values and the flags.
    let coap = cli
        .coap
        .or(file.bootstrap.coap.clone())
        .unwrap_or_else(|| DEFAULT_COAP.into());
    let coaps = cli
        .coaps
        .or(file.bootstrap.coaps.clone())
        .unwrap_or_else(|| DEFAULT_COAPS.into());
    let http = match cli.http.or(file.http) {
        Some(a) => a,
        None => DEFAULT_HTTP
            .parse()
            .map_err(|e| format!("{DEFAULT_HTTP}: {e}"))?,
    };
    let data_dir = cli
        .data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let mut config = file
        .resolve(Overrides {
            coaps: Some("off".into()),
            http: Some(http),
            data_dir: Some(data_dir.clone()),
            admin_tokens: cli.tokens.api_token,
            read_tokens: cli.tokens.api_read_token,
            bootstrap: Some(coap),
            bootstrap_coaps: Some(coaps),
            ..Overrides::default()
        })
        .map_err(|e| e.to_string())?;
    let settings = config
        .bootstrap
        .take()
        .ok_or("both --coap and --coaps are off: nothing to serve")?;
    let token_file = binary::ensure_admin_token(&mut config.api, &data_dir)?;
    let provisioner = match (cli.server_api, cli.server_api_token) {
        (Some(base), Some(token)) => {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(format!(
                    "--server-api is an http:// or https:// URL, not {base:?}"
                ));
            }
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            Provisioner::Remote {
                base,
                token,
                client,
            }
        }
        _ => Provisioner::Off,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|e| format!("cannot bind HTTP {}: {e}", config.http_addr))?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the HTTP address: {e}"))?;
        let metrics = std::sync::Arc::new(Metrics::new());
        let handle =
            BootstrapServer::start(settings, metrics.clone()).map_err(|e| e.to_string())?;
        let router = bootstrap_only_router(
            BootstrapApi {
                handle: handle.clone(),
                provisioner,
            },
            &config.api,
            metrics,
        );
        let signals = binary::watch_signals()?;
        binary::print_banner(
            &format!(
                "bootstrap={} bootstrap-coaps={} http={http_addr}",
                addr_or_off(handle.coap_addr()),
                addr_or_off(handle.coaps_addr())
            ),
            token_file.as_deref(),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_router(router, listener, async move {
            let _ = stop_rx.await;
        }));
        signals.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
        handle.shutdown().await;
        Ok(())
    })
}
