//! Benchmarks run by hand (`lwm2m-client-sim bench ...`), never inside the test suite.
//!
//! - `scale`: the `lwm2m-server` binary is started as a child with an empty store; its
//!   resident memory is read (`/proc/PID/status`, VmRSS) once it is idle, then a fleet of
//!   N devices registers against it, and its memory is read again once they all have.
//!   The figure is the growth per registered device, against the empty server measured in
//!   the same run; the time to register them all and whether the server holds every one
//!   (its inventory's total) are reported with it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, FleetConfig, Progress};
use crate::Config;

/// What `scale` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleReport {
    pub devices: usize,
    pub registered: usize,
    /// Devices the server's inventory lists at the end (`registered` unless some were lost).
    pub listed: usize,
    pub empty_rss_kib: u64,
    pub full_rss_kib: u64,
    pub register_time: Duration,
}

impl ScaleReport {
    /// Resident memory per registered device beyond the empty server, in bytes.
    pub fn bytes_per_device(&self) -> f64 {
        let grown = self.full_rss_kib.saturating_sub(self.empty_rss_kib) as f64 * 1024.0;
        grown / self.listed.max(1) as f64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot run {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("the server printed no addresses")]
    Banner,
    #[error("cannot read the server's memory: {0}")]
    Memory(String),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("inventory: {0}")]
    Inventory(String),
}

/// The server child; killed on drop, with its data directory.
struct ServerChild {
    child: Child,
    dir: PathBuf,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::Memory(e.to_string()))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Memory("no VmRSS line".into()))
}

/// Starts `server` on loopback with an empty store; answers its CoAP and HTTP addresses.
fn start_server(
    server: &Path,
    token: &str,
) -> Result<(ServerChild, SocketAddr, SocketAddr), BenchError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("lwm2m-bench-{}-{nanos}", std::process::id()));
    let mut child = Command::new(server)
        .args([
            "--coap",
            "127.0.0.1:0",
            "--coaps",
            "off",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--api-token", token])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Spawn(server.to_path_buf(), e))?;
    let stdout = child.stdout.take().ok_or(BenchError::Banner)?;
    let guard = ServerChild { child, dir };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|_| BenchError::Banner)?;
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(key))
            .and_then(|a| a.parse().ok())
    };
    match (addr("coap="), addr("http=")) {
        (Some(c), Some(h)) => Ok((guard, c, h)),
        _ => Err(BenchError::Banner),
    }
}

/// How many devices the server's inventory holds.
async fn listed(http: SocketAddr, token: &str) -> Result<usize, BenchError> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{http}/api/clients?limit=1"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| BenchError::Inventory(e.to_string()))?
        .json()
        .await
        .map_err(|e| BenchError::Inventory(e.to_string()))?;
    v["total"]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| BenchError::Inventory(format!("no total in {v}")))
}

/// Runs the scale benchmark: `count` devices, started `rate` a second.
pub async fn scale(
    server: &Path,
    count: usize,
    rate: u32,
    report: impl FnMut(Progress, Duration),
) -> Result<ScaleReport, BenchError> {
    let token = "bench-admin-token-0000000001";
    let (child, coap, http) = start_server(server, token)?;
    // Idle first: the allocator and the runtime have settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = child.child.id();
    let empty = rss_kib(pid)?;
    let mut cfg = FleetConfig::new(Config::new(coap, "bench"), count);
    cfg.prefix = "bench-".into();
    cfg.start_rate = rate;
    let started = Instant::now();
    let fleet = Fleet::start(cfg, report).await?;
    let register_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = rss_kib(pid)?;
    let listed = listed(http, token).await?;
    let registered = fleet.progress().registered;
    // The server goes with the child guard; the devices need not de-register.
    drop(child);
    drop(fleet);
    Ok(ScaleReport {
        devices: count,
        registered,
        listed,
        empty_rss_kib: empty,
        full_rss_kib: full,
        register_time,
    })
}
