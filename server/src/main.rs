//! `lwm2m-server`: the binary operators run.
//!
//! Prints the addresses it bound on the first line of stdout
//! (`listening coap=ADDR coaps=ADDR http=ADDR`, then `bootstrap=ADDR bootstrap-coaps=ADDR`
//! when it runs a bootstrap server), so that scripts and tests started with port 0 learn
//! the real ports; when it generated the API token, a second line says where it is
//! (`api-token-file=PATH`). Then it serves until SIGINT or SIGTERM. Logs go to stderr,
//! filtered by `RUST_LOG` (default `info`).
//!
//! Configuration: the TOML file, then `LWM2M_*` environment variables, then flags; each
//! wins over the one before.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lwm2m_server::api::bootstrap::{BootstrapApi, Provisioner};
use lwm2m_server::api::Api;
use lwm2m_server::binary::{self, addr_or_off};
use lwm2m_server::bootstrap::BootstrapServer;
use lwm2m_server::config::{FileConfig, Overrides};
use lwm2m_server::firmware::update::BaseUrls;
use lwm2m_server::runtime::{Server, ServerHandle};

/// LwM2M device-management server.
#[derive(Debug, Parser)]
#[command(name = "lwm2m-server", version, about)]
struct Cli {
    /// UDP address for CoAP [default: 0.0.0.0:5683; port 0 picks a free port].
    #[arg(long, value_name = "ADDR", env = "LWM2M_COAP")]
    coap: Option<SocketAddr>,
    /// UDP address for CoAP over DTLS, or `off` [default: 0.0.0.0:5684].
    #[arg(long, value_name = "ADDR|off", env = "LWM2M_COAPS")]
    coaps: Option<String>,
    /// UDP address of a bootstrap server over plain CoAP, or `off` [default: off].
    #[arg(long, value_name = "ADDR|off", env = "LWM2M_BOOTSTRAP")]
    bootstrap: Option<String>,
    /// UDP address of a bootstrap server over DTLS, or `off` [default: off].
    #[arg(long, value_name = "ADDR|off", env = "LWM2M_BOOTSTRAP_COAPS")]
    bootstrap_coaps: Option<String>,
    /// TCP address for the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", env = "LWM2M_HTTP")]
    http: Option<SocketAddr>,
    /// Directory of the persistent store [default: ./data].
    #[arg(long, value_name = "DIR", env = "LWM2M_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// DTLS credentials to load at start: a JSON array of
    /// `{"endpoint": "...", "psk": {"identity": "...", "key": "HEX"}}`.
    #[arg(long, value_name = "FILE", env = "LWM2M_SECURITY_FILE")]
    security_file: Option<PathBuf>,
    /// TOML configuration file; environment variables and flags override it.
    #[arg(long, value_name = "FILE", env = "LWM2M_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    tokens: binary::TokenArgs,
}

fn main() -> ExitCode {
    binary::init_logging();
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
    let mut config = file
        .resolve(Overrides {
            coap: cli.coap,
            coaps: cli.coaps,
            security_file: cli.security_file,
            http: cli.http,
            data_dir: cli.data_dir,
            admin_tokens: cli.tokens.api_token,
            read_tokens: cli.tokens.api_read_token,
            bootstrap: cli.bootstrap,
            bootstrap_coaps: cli.bootstrap_coaps,
        })
        .map_err(|e| e.to_string())?;
    let token_file = binary::ensure_admin_token(&mut config.api, &config.server.data_dir)?;
    // Read and checked before anything starts: a bad file stops the server, not half of it.
    let credentials = match &config.security_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            lwm2m_server::api::security::read_file(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let data_dir = config.server.data_dir.clone();
        let http = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(|e| format!("cannot bind HTTP {}: {e}", config.http_addr))?;
        let http_addr = http
            .local_addr()
            .map_err(|e| format!("cannot read the HTTP address: {e}"))?;
        let dtls_certificate = config.server.dtls.certificate.clone();
        let dtls_key = config.server.dtls.private_key.clone();
        let https_addr = config.server.firmware.https_addr;
        let handle = Server::start(config.server).map_err(|e| e.to_string())?;
        let loaded = credentials.len();
        if loaded > 0 {
            handle
                .put_securities(credentials)
                .await
                .map_err(|e| format!("credentials not loaded (none of them): {e}"))?;
            tracing::info!(count = loaded, "DTLS credentials loaded");
        }
        let bootstrap = match config.bootstrap {
            Some(settings) => {
                let b = BootstrapServer::start(settings, handle.metrics())
                    .map_err(|e| e.to_string())?;
                Some(BootstrapApi {
                    handle: b,
                    provisioner: Provisioner::Local(handle.clone()),
                })
            }
            None => None,
        };
        let bootstrap_handle = bootstrap.as_ref().map(|b| b.handle.clone());
        let https = match https_addr {
            Some(addr) => {
                let (Some(cert), Some(key)) = (&dtls_certificate, &dtls_key) else {
                    return Err("[firmware] https needs [dtls] certificate and private_key".into());
                };
                let acceptor = lwm2m_server::api::https::acceptor(cert, key)?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot bind HTTPS {addr}: {e}"))?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| format!("cannot read the HTTPS address: {e}"))?;
                Some((listener, acceptor, bound))
            }
            None => None,
        };
        let urls = firmware_urls(&handle, http_addr, https.as_ref().map(|h| h.2));
        let api = Api::with_parts(handle.clone(), config.api, bootstrap, urls).await;
        tracing::info!(data_dir = %data_dir.display(), %http_addr, "serving");
        let signals = binary::watch_signals()?;
        let mut addresses = format!(
            "coap={} coaps={} http={http_addr}",
            handle.coap_addr(),
            addr_or_off(handle.coaps_addr())
        );
        if let Some(b) = &bootstrap_handle {
            addresses.push_str(&format!(
                " bootstrap={} bootstrap-coaps={}",
                addr_or_off(b.coap_addr()),
                addr_or_off(b.coaps_addr())
            ));
        }
        let (https_stop, https_stopped) = tokio::sync::watch::channel(false);
        if let Some((listener, acceptor, bound)) = https {
            addresses.push_str(&format!(" https={bound}"));
            let mut stopped = https_stopped.clone();
            tokio::spawn(lwm2m_server::api::https::serve(
                listener,
                acceptor,
                api.downloads.clone(),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ));
        }
        binary::print_banner(&addresses, token_file.as_deref());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api.serve(http, async move {
            let _ = stop_rx.await;
        }));
        signals.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(());
        let _ = https_stop.send(true);
        match tokio::time::timeout(std::time::Duration::from_secs(10), server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(_) => tracing::warn!("HTTP requests still open after 10 s; stopping anyway"),
            _ => {}
        }
        if let Some(b) = &bootstrap_handle {
            b.shutdown().await;
        }
        handle.shutdown().await;
        Ok(())
    })
}

/// The download URLs written into devices: as configured, or the bound addresses. An
/// address bound on every interface is no address a device can use: loopback stands in,
/// with a warning.
fn firmware_urls(handle: &ServerHandle, http: SocketAddr, https: Option<SocketAddr>) -> BaseUrls {
    let settings = &handle.firmware().settings;
    let reachable = |scheme: &str, mut a: SocketAddr| {
        if a.ip().is_unspecified() {
            tracing::warn!(%a, "firmware downloads: set [firmware] {scheme}_url to the address devices reach; using loopback");
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("{scheme}://{a}")
    };
    BaseUrls {
        coap: Some(
            settings
                .coap_url
                .clone()
                .unwrap_or_else(|| reachable("coap", handle.coap_addr())),
        ),
        coaps: settings
            .coaps_url
            .clone()
            .or_else(|| handle.coaps_addr().map(|a| reachable("coaps", a))),
        http: Some(
            settings
                .http_url
                .clone()
                .unwrap_or_else(|| reachable("http", http)),
        ),
        https: settings
            .https_url
            .clone()
            .or_else(|| https.map(|a| reachable("https", a))),
    }
}
