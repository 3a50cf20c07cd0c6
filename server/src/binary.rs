//! What both binaries (`lwm2m-server`, `lwm2m-bootstrap`) do alike before they serve:
//! logging, the admin token, the signals that stop them, the line of addresses.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::ApiSettings;

/// The HTTP API's tokens on the command line (or in the environment), shared by both
/// binaries' flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Admin token of the HTTP API (repeat or separate with commas for several). Without
    /// one in any source, a token is generated into the data directory.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LWM2M_API_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_token: Vec<String>,
    /// Read-only token of the HTTP API (repeat or separate with commas for several).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LWM2M_API_READ_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_read_token: Vec<String>,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Without an admin token from any source, generates one into `data_dir` (or reads the
/// one generated before) and answers where it is.
pub fn ensure_admin_token(
    api: &mut ApiSettings,
    data_dir: &Path,
) -> Result<Option<PathBuf>, String> {
    if !api.admin_tokens.is_empty() {
        return Ok(None);
    }
    let (token, path, created) =
        crate::api::auth::load_or_create_token(data_dir).map_err(|e| e.to_string())?;
    if created {
        tracing::info!(file = %path.display(), "generated an admin API token");
    }
    api.admin_tokens.push(token);
    Ok(Some(path))
}

/// Prints the addresses line, and the token file's when there is one, in one write: a
/// reader that takes the first line and hangs up still got both, and a closed stdout is
/// no reason to stop serving.
pub fn print_banner(addresses: &str, token_file: Option<&Path>) {
    let mut banner = format!("listening {addresses}\n");
    if let Some(p) = token_file {
        banner.push_str(&format!("api-token-file={}\n", p.display()));
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "cannot write the addresses to stdout");
    }
}

/// `ADDR`, or `off`.
pub fn addr_or_off(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_string(), |a| a.to_string())
}

/// SIGTERM and SIGINT, watched from the moment this is called: a script that signals as
/// soon as it read the addresses a binary printed must get a clean shutdown, so the
/// binaries call this before they print them. Needs a tokio runtime.
pub fn watch_signals() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
