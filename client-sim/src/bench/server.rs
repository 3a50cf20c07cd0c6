//! The processes a benchmark measures: the `lwm2m-server` binary and the UDP echo server
//! of the baseline, each a child with an empty data directory, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::loadgen::Outcome;
use super::BenchError;

/// What the benchmarks change in the server's configuration.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `[registry] max_registrations`: above the fleet, which the default (100,000) is not.
    pub max_registrations: usize,
    /// `[fleet] inventory_reads`: whether the server reads and observes every device
    /// that registers.
    pub inventory_reads: bool,
}

impl ServerOptions {
    /// Room for `devices` and a margin. The registration benchmarks' devices answer no
    /// requests, so the server does not read them (it still keeps their attributes).
    pub fn for_fleet(devices: usize) -> ServerOptions {
        ServerOptions {
            max_registrations: devices.saturating_add(1000),
            inventory_reads: false,
        }
    }

    /// Room for `devices`, each read and observed: for fleets of real clients.
    pub fn for_real_fleet(devices: usize) -> ServerOptions {
        ServerOptions {
            inventory_reads: true,
            ..ServerOptions::for_fleet(devices)
        }
    }
}

/// The server child; killed on drop, with its data directory.
pub struct ServerChild {
    child: Child,
    dir: PathBuf,
    pub coap: SocketAddr,
    pub http: SocketAddr,
    pub token: String,
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn scratch_dir(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("lwm2m-bench-{what}-{}-{nanos}", std::process::id()))
}

/// Reads the child's first stdout line and the addresses it names (`key=ADDR`).
fn banner(
    child: &mut Child,
    what: &'static str,
    keys: &[&str],
) -> Result<Vec<SocketAddr>, BenchError> {
    let stdout = child.stdout.take().ok_or(BenchError::Banner(what))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|_| BenchError::Banner(what))?;
    keys.iter()
        .map(|key| {
            line.split_whitespace()
                .find_map(|p| p.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .ok_or(BenchError::Banner(what))
        })
        .collect()
}

impl ServerChild {
    /// Starts `server` on loopback with an empty store and `options`.
    pub fn start(server: &Path, options: &ServerOptions) -> Result<ServerChild, BenchError> {
        let dir = scratch_dir("server");
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::Spawn(dir.clone(), e))?;
        let config = dir.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[registry]\nmax_registrations = {}\n[fleet]\ninventory_reads = {}\n",
                options.max_registrations, options.inventory_reads
            ),
        )
        .map_err(|e| BenchError::Spawn(config.clone(), e))?;
        let token = "bench-admin-token-0000000001".to_string();
        let mut child = Command::new(server)
            .args([
                "--coap",
                "127.0.0.1:0",
                "--coaps",
                "off",
                "--http",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--api-token", &token])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Spawn(server.to_path_buf(), e))?;
        let addrs = banner(&mut child, "the server", &["coap=", "http="]);
        let guard = |coap, http| ServerChild {
            child,
            dir,
            coap,
            http,
            token,
        };
        match addrs.as_deref() {
            Ok([coap, http]) => Ok(guard(*coap, *http)),
            _ => {
                drop(guard(
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                ));
                Err(BenchError::Banner("the server"))
            }
        }
    }

    /// Resident memory, KiB (`/proc/PID/status`, VmRSS).
    pub fn rss_kib(&self) -> Result<u64, BenchError> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| BenchError::Memory(e.to_string()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| BenchError::Memory("no VmRSS line".into()))
    }

    /// How many devices the server's inventory holds.
    pub async fn listed(&self) -> Result<usize, BenchError> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(format!("http://{}/api/clients?limit=1", self.http))
            .bearer_auth(&self.token)
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

    /// `n` inventory calls, one every `every`; their latencies.
    pub async fn probe_api(&self, n: usize, every: Duration) -> Outcome {
        probe(self.http, &self.token, n, every).await
    }
}

/// `n` calls of `GET /api/clients?limit=1`, one every `every` (or as soon as the last
/// answered, when it took longer); a call without a 200 in 5 s counts as lost.
pub async fn probe(http: SocketAddr, token: &str, n: usize, every: Duration) -> Outcome {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let url = format!("http://{http}/api/clients?limit=1");
    let start = Instant::now();
    let mut out = Outcome::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..n {
        tick.tick().await;
        let t = Instant::now();
        let answered = match client.get(&url).bearer_auth(token).send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            _ => false,
        };
        if answered {
            out.done += 1;
            out.latencies_us
                .push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        } else {
            out.lost += 1;
        }
    }
    out.elapsed = start.elapsed();
    out.latencies_us.sort_unstable();
    out
}

/// The echo server child (`lwm2m-client-sim bench echo-server`); killed on drop.
pub struct EchoChild {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for EchoChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EchoChild {
    pub fn start(command: &Path) -> Result<EchoChild, BenchError> {
        let mut child = Command::new(command)
            .args(["bench", "echo-server"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::Spawn(command.to_path_buf(), e))?;
        match banner(&mut child, "the echo server", &["echo="]).as_deref() {
            Ok([addr]) => Ok(EchoChild { addr: *addr, child }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(BenchError::Banner("the echo server"))
            }
        }
    }
}
