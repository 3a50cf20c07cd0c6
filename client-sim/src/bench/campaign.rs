//! `bench campaign`: one firmware package rolled out to the same simulated fleet twice,
//! once naively and once by the server's scheduled campaign, each on a fresh server (an
//! empty data directory) and a fresh fleet drawn from the same profile and seed, so that
//! both runs see the same devices.
//!
//! - The fleet is `profiles/campaign-bench.toml` (or `--profile`): 20 cells (`--cells`)
//!   whose bandwidth is far below what their devices want at once, 30 % in queue mode on
//!   three wake schedules, 10 % roaming, 5 % below 20 % battery. The cells' bandwidths
//!   are given for the profile's own density (its `count` over its cells) and scaled
//!   with the run's devices per cell, so that a smaller run keeps the ratio of demand to
//!   capacity (`--cell-scale` sets the factor instead). A cell drops a datagram that
//!   would wait in it longer than the devices' ACK timeout, or `--cell-queue-ms`: a
//!   cellular network's deeper buffers (several seconds are measured under load).
//! - Before each run the operator marks every 50th device suspended (billing, 2 %) and
//!   gives every device its home network through the API, tells the server each cell's
//!   bandwidth, uploads the package (`--package-kib` of body in the simulated devices'
//!   package format), and waits until the inventory lists every device and knows its
//!   attributes (or, after a bound, 99 % of them: the eligible devices are the server's
//!   group members either way).
//! - Eligible: not suspended, not roaming, battery at least 20 % or mains-powered (the
//!   always-on schedule; see the profile), written as the filter [`ELIGIBLE`]. The
//!   eligible devices are the server's members of a group with that filter (the sim's
//!   own draw when the server has no groups API); both counts are printed.
//! - Naive: an update of every eligible device at once (`POST
//!   /api/clients/{ep}/firmware`), and one started again at once whenever one fails (a
//!   retry), until every eligible device succeeded or `--limit-s` passed.
//! - Scheduled: `POST /api/campaigns` with the same filter and a policy metering each
//!   cell (its bandwidth over `device_rate_bps` downloads at once) with retries, watched
//!   until it is complete or the limit passed.
//!
//! Figures, per run: the time to 95 % and 100 % of the eligible devices running the new
//! version, by the devices' own /3/0/3 (the simulator's count of installations) and by
//! the server (updates `succeeded`); download attempts that ended without the whole
//! package (`failed_downloads`); updates started again after a failure (`retries`: the
//! operator's re-triggers, or for the campaign the devices' extra downloads); the bytes
//! the devices' download sockets received through their cells, and those of failed
//! downloads (`bytes_wasted`); for the campaign also the server's own byte counts, and
//! the most downloads each cell ever carried at once, against its cap. A last line
//! compares the two: `speedup_100` is the naive run's time to 100 % (the limit when it
//! never got there) over the scheduled run's, and `target_met` says whether the
//! scheduled run updated every eligible device, wasted under 2 % of its bytes and was at
//! least 3 times faster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::BenchError;
use crate::firmware::package;
use crate::firmware::stats::{DownloadCounts, FirmwareStats, Install};
use crate::fleet::{Fleet, FleetConfig};
use crate::network::Direction;
use crate::profile::Profile;
use crate::Config;

const USAGE: &str =
    "usage: lwm2m-client-sim bench campaign --count N [--cells 20] [--package-kib 256]
       [--limit-s S] [--server-binary PATH] [--profile FILE] [--cell-scale F]
       [--cell-queue-ms MS] [--only naive|scheduled]";

/// The fleet, unless `--profile` names another.
const PROFILE: &str = include_str!("../../profiles/campaign-bench.toml");
/// The version the package installs (the profile's devices run 1.x).
pub const NEW_VERSION: &str = "2.0.0";
/// Every device's home network, given by the operator (the profile's home network).
const HOME_NETWORK: &str = "262-01";
/// Who gets the update: the same for both runs.
pub const ELIGIBLE: &str =
    r#"billing != "suspended" && !roaming && (battery >= 20 || !queue_mode)"#;
/// What the inventory must know of a device before a run starts.
const KNOWN: &str = r#"model != null && battery != null && billing != null && queue_mode != null && (bearer == "wifi" || cell_id != null)"#;
/// The share of the fleet whose attributes must be known when waiting for all of them
/// has taken too long: the eligible devices are the server's group members either way.
const KNOWN_ENOUGH: f64 = 0.99;
/// Every `SUSPENDED_EVERY`-th device is suspended: 2 %.
const SUSPENDED_EVERY: usize = 50;
/// The bit rate one download takes from its cell, in the campaign's policy: a quarter of
/// what a simulated device pulls alone (1 KiB a round trip of about 80 ms). A cell at its
/// cap then has about three times the downloads it can carry at full speed, so that it
/// stays busy while some of them are between their download and their verified end, and
/// its queue (a block of each) stays far below the bound where datagrams are dropped.
const DEVICE_RATE_BPS: u64 = 24_000;
/// Concurrent downloads of the devices in no cell (Wi-Fi), which share nothing.
const NO_CELL_CAP: u64 = 200;
/// API calls in flight at once when the operator starts or checks many devices.
const PARALLEL_CALLS: usize = 32;
/// How long a call to the API may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The server's awake window: shorter than every simulated device's (3.2 s at least).
const SERVER_AWAKE_WINDOW_MS: u64 = 2500;

// ---------------------------------------------------------------------------
// The HTTP API, in one place: what the benchmark asks of the server.
// ---------------------------------------------------------------------------

mod api {
    use std::net::SocketAddr;
    use std::time::Duration;

    use reqwest::Method;
    use serde_json::{json, Value};
    use tokio::sync::mpsc;

    /// One answer: the status and the body as JSON (`Null` when it was none).
    #[derive(Debug, Clone)]
    pub struct Answer {
        pub status: u16,
        pub body: Value,
    }

    impl Answer {
        pub fn ok(&self) -> bool {
            (200..300).contains(&self.status)
        }
        /// The route is not there (yet): 404 without an error code of its own (or
        /// `not_found`: no such route), 405, or a path taken for a device's object path
        /// (`bad_path`).
        pub fn missing(&self) -> bool {
            self.status == 405
                || (self.status == 404
                    && (self.body["error"].is_null() || self.body["error"] == "not_found"))
                || (self.status == 400 && self.body["error"] == "bad_path")
        }
    }

    /// What the event stream delivers.
    #[derive(Debug, Clone)]
    pub enum Event {
        /// An update of `endpoint` entered `phase`; `started` tells its record apart.
        Firmware {
            endpoint: String,
            phase: String,
            started: u64,
        },
        /// Events were missed.
        Lagged,
        /// The stream ended.
        Closed,
    }

    #[derive(Clone)]
    pub struct Api {
        http: reqwest::Client,
        base: String,
        token: String,
    }

    fn seg(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    impl Api {
        pub fn new(http: SocketAddr, token: &str, timeout: Duration) -> Api {
            Api {
                http: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(timeout)
                    .build()
                    .unwrap_or_default(),
                base: format!("http://{http}"),
                token: token.to_string(),
            }
        }

        async fn call(
            &self,
            method: Method,
            path: &str,
            body: Option<Value>,
        ) -> Result<Answer, String> {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&self.token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| format!("{method} {path}: {e}"))?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Answer { status, body })
        }

        /// Devices the inventory lists.
        pub async fn total(&self) -> Result<u64, String> {
            let a = self.call(Method::GET, "/api/clients?limit=1", None).await?;
            a.body["total"]
                .as_u64()
                .ok_or_else(|| format!("no total in {} {}", a.status, a.body))
        }

        /// Uploads a package; its id.
        pub async fn upload(
            &self,
            name: &str,
            version: &str,
            bytes: Vec<u8>,
        ) -> Result<String, String> {
            let path = format!("/api/packages?name={}&version={}", seg(name), seg(version));
            let resp = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .await
                .map_err(|e| format!("POST {path}: {e}"))?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            body["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("package upload answered {status} {body}"))
        }

        /// `PATCH /api/clients/attributes` with `{"devices": {...}}`.
        pub async fn patch_attributes(
            &self,
            devices: serde_json::Map<String, Value>,
        ) -> Result<Answer, String> {
            self.call(
                Method::PATCH,
                "/api/clients/attributes",
                Some(json!({ "devices": devices })),
            )
            .await
        }

        /// `PATCH /api/clients/{ep}/attributes`.
        pub async fn patch_device(&self, endpoint: &str, patch: Value) -> Result<Answer, String> {
            let path = format!("/api/clients/{}/attributes", seg(endpoint));
            self.call(Method::PATCH, &path, Some(patch)).await
        }

        /// `PUT /api/network/cells/{cell}`.
        pub async fn put_cell(&self, cell: u32, bits_per_s: u64) -> Result<Answer, String> {
            self.call(
                Method::PUT,
                &format!("/api/network/cells/{cell}"),
                Some(json!({ "available_bps": bits_per_s, "congested": false })),
            )
            .await
        }

        /// `POST /api/groups/preview`: how many devices match `filter`.
        pub async fn preview(&self, filter: &str) -> Result<Answer, String> {
            self.call(
                Method::POST,
                "/api/groups/preview",
                Some(json!({ "filter": filter })),
            )
            .await
        }

        pub async fn create_group(&self, id: &str, filter: &str) -> Result<Answer, String> {
            self.call(
                Method::POST,
                "/api/groups",
                Some(json!({ "id": id, "name": id, "filter": filter })),
            )
            .await
        }

        /// Every member of group `id`, page by page; `None` when the route is missing.
        pub async fn members(&self, id: &str) -> Result<Option<Vec<String>>, String> {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            // Bounded: a page holds 1,000 and a fleet at most 16.7 million devices.
            for _ in 0..20_000 {
                let mut path = format!("/api/groups/{}/members?limit=1000", seg(id));
                if let Some(a) = &after {
                    path.push_str(&format!("&after={}", seg(a)));
                }
                let a = self.call(Method::GET, &path, None).await?;
                if a.missing() {
                    return Ok(None);
                }
                if !a.ok() {
                    return Err(format!("GET {path}: {} {}", a.status, a.body));
                }
                let page = a.body["members"].as_array().cloned().unwrap_or_default();
                for m in &page {
                    let ep = m
                        .as_str()
                        .or_else(|| m["endpoint"].as_str())
                        .map(str::to_string);
                    all.extend(ep);
                }
                after = a.body["next_after"].as_str().map(str::to_string);
                if after.is_none() || page.is_empty() {
                    return Ok(Some(all));
                }
            }
            Ok(Some(all))
        }

        /// `POST /api/clients/{ep}/firmware`; the package is named by `field`.
        pub async fn start_update(
            &self,
            endpoint: &str,
            field: &str,
            package: &str,
        ) -> Result<Answer, String> {
            let path = format!("/api/clients/{}/firmware", seg(endpoint));
            let mut body = json!({ "protocol": "coap" });
            body[field] = json!(package);
            self.call(Method::POST, &path, Some(body)).await
        }

        /// `GET /api/clients/{ep}/firmware`.
        pub async fn update(&self, endpoint: &str) -> Result<Answer, String> {
            let path = format!("/api/clients/{}/firmware", seg(endpoint));
            self.call(Method::GET, &path, None).await
        }

        pub async fn create_campaign(&self, body: Value) -> Result<Answer, String> {
            self.call(Method::POST, "/api/campaigns", Some(body)).await
        }

        pub async fn campaign(&self, id: &str) -> Result<Answer, String> {
            self.call(Method::GET, &format!("/api/campaigns/{}", seg(id)), None)
                .await
        }

        /// `GET /api/events`: firmware events, on a channel, until the stream ends.
        pub async fn events(&self) -> Result<mpsc::UnboundedReceiver<Event>, String> {
            // No timeout: the stream lasts the whole run.
            let http = reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            let mut resp = http
                .get(format!("{}/api/events", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| format!("GET /api/events: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("GET /api/events answered {}", resp.status()));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                let mut buf: Vec<u8> = Vec::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    buf.extend_from_slice(&chunk);
                    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                        let block: Vec<u8> = buf.drain(..end + 2).collect();
                        let text = String::from_utf8_lossy(&block);
                        if text.starts_with(':') {
                            // The "subscribed" comment: the subscription is in place.
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                            continue;
                        }
                        let (mut kind, mut data) = ("", String::new());
                        for line in text.lines() {
                            if let Some(v) = line.strip_prefix("event:") {
                                kind = v.trim();
                            } else if let Some(v) = line.strip_prefix("data:") {
                                data.push_str(v.trim_start());
                            }
                        }
                        let event = match kind {
                            "LAGGED" => Some(Event::Lagged),
                            "FIRMWARE_STATE" => {
                                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                                let u = &v["update"];
                                match (u["endpoint"].as_str(), u["phase"].as_str()) {
                                    (Some(ep), Some(phase)) => Some(Event::Firmware {
                                        endpoint: ep.to_string(),
                                        phase: phase.to_string(),
                                        started: u["started_at_unix_ms"].as_u64().unwrap_or(0),
                                    }),
                                    _ => None,
                                }
                            }
                            _ => None,
                        };
                        if let Some(e) = event {
                            if tx.send(e).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tx.send(Event::Closed);
            });
            // The first comment says the subscription is in place; events before it are
            // not delivered.
            let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
            Ok(rx)
        }
    }
}

use api::{Api, Event};

// ---------------------------------------------------------------------------
// The server: the binary with an empty data directory and the benchmark's settings.
// ---------------------------------------------------------------------------

/// The server child, killed on drop with its data directory.
struct Server {
    child: Child,
    dir: PathBuf,
    coap: SocketAddr,
    http: SocketAddr,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// Starts `binary` on loopback with room for `devices`: the registry's awake window
    /// below every simulated device's, and updates reading a device every few seconds
    /// when nothing was heard from it.
    fn start(binary: &Path, devices: usize) -> Result<Server, BenchError> {
        use std::io::{BufRead, BufReader};
        let dir = super::server::scratch_dir("campaign");
        std::fs::create_dir_all(&dir).map_err(|e| BenchError::Spawn(dir.clone(), e))?;
        let config = dir.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[registry]\nmax_registrations = {}\nawake_window_ms = {SERVER_AWAKE_WINDOW_MS}\n\
                 [firmware]\npoll_interval_ms = 5000\n",
                devices.saturating_add(1000)
            ),
        )
        .map_err(|e| BenchError::Spawn(config.clone(), e))?;
        let log = std::fs::File::create(dir.join("server.log"))
            .map_err(|e| BenchError::Spawn(dir.clone(), e))?;
        let token = "bench-campaign-token-0000000001".to_string();
        let spawned = Command::new(binary)
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
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(BenchError::Spawn(binary.to_path_buf(), e));
            }
        };
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let addr = |key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|p| p.strip_prefix(key))
                .and_then(|a| a.parse().ok())
        };
        let (coap, http) = (addr("coap="), addr("http="));
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let server = Server {
            child,
            dir,
            coap: coap.unwrap_or(unspecified),
            http: http.unwrap_or(unspecified),
            token,
        };
        match (coap, http) {
            (Some(_), Some(_)) => Ok(server),
            _ => Err(BenchError::Banner("the server")),
        }
    }
}

// ---------------------------------------------------------------------------
// The scenario: the fleet both runs use.
// ---------------------------------------------------------------------------

/// What the benchmark knows of one device from the profile's draw.
#[derive(Debug, Clone)]
struct Drawn {
    endpoint: String,
    roaming: bool,
    battery: i64,
    queue_mode: bool,
    suspended: bool,
}

impl Drawn {
    /// [`ELIGIBLE`], on the simulator's side.
    fn eligible(&self) -> bool {
        !self.suspended && !self.roaming && (self.battery >= 20 || !self.queue_mode)
    }
}

struct Scenario {
    profile: Arc<Profile>,
    count: usize,
    prefix: String,
    start_rate: u32,
    /// Each cell's id and downlink bytes a second (`None`: unlimited).
    cells: Vec<(u32, Option<u64>)>,
    cell_scale: f64,
    /// The cells' queue bound, when not the devices' ACK timeout.
    cell_queue_ms: Option<u64>,
    devices: Arc<Vec<Drawn>>,
    package: Vec<u8>,
    limit: Duration,
}

impl Scenario {
    fn endpoint_index(&self, endpoint: &str) -> Option<usize> {
        endpoint
            .strip_prefix(self.prefix.as_str())
            .and_then(|n| n.parse().ok())
            .filter(|i| *i < self.count)
    }

    /// A cell's cap under the policy: its bandwidth over the per-download rate.
    fn cap(bytes_per_s: Option<u64>) -> u64 {
        match bytes_per_s {
            Some(b) => (b.saturating_mul(8) / DEVICE_RATE_BPS).max(1),
            None => NO_CELL_CAP,
        }
    }

    fn policy(&self) -> Value {
        let caps: u64 = self.cells.iter().map(|(_, b)| Self::cap(*b)).sum();
        json!({
            "waves": [{ "percent": 100 }],
            "success_threshold": 0.0,
            "error_threshold": null,
            "max_concurrent": (caps + NO_CELL_CAP).min(100_000),
            "device_rate_bps": DEVICE_RATE_BPS,
            "default_cell_bps": DEVICE_RATE_BPS * NO_CELL_CAP,
            "wake": { "overhead_ms": 5000, "force_after_unfit_wakes": 1 },
            "rules": {
                "critical": false,
                "roaming": "skip",
                "prefer_wifi": false,
                "min_battery": 20,
                "skip_suspended": true
            },
            "retry": {
                "initial_ms": 2000,
                "factor": 2.0,
                "max_ms": 30000,
                "max_attempts": 5,
                "jitter": 0.2
            },
            "join_new_members": false
        })
    }
}

/// Multiplies a bandwidth (a number or `[min, max]`) of the profile's TOML by `k`.
fn scale_span(v: &mut toml::Value, k: f64) {
    let scaled = |x: f64| ((x * k).round() as i64).max(1);
    match v {
        toml::Value::Integer(n) => *n = scaled(*n as f64),
        toml::Value::Float(f) => *v = toml::Value::Integer(scaled(*f)),
        toml::Value::Array(a) => a.iter_mut().for_each(|x| scale_span(x, k)),
        _ => {}
    }
}

/// The profile with the run's size, cells and scaled bandwidths; the scale used.
fn fit_profile(
    text: &str,
    count: usize,
    cells: u32,
    scale: Option<f64>,
    queue_ms: Option<u64>,
) -> Result<(Profile, f64), String> {
    let mut t: toml::Table = text.parse().map_err(|e| format!("profile: {e}"))?;
    let regions = t
        .get("region")
        .and_then(toml::Value::as_array)
        .map_or(1, |r| r.len().max(1));
    let own_count = t
        .get("count")
        .and_then(toml::Value::as_integer)
        .unwrap_or(count as i64)
        .max(1) as f64;
    let own_cells = t
        .get("cells")
        .and_then(|c| c.get("per_region"))
        .and_then(toml::Value::as_integer)
        .unwrap_or(1)
        .max(1) as f64
        * regions as f64;
    let per_region = (cells as usize / regions).max(1);
    let total_cells = (per_region * regions) as f64;
    let k = scale.unwrap_or((count as f64 / total_cells) / (own_count / own_cells));
    t.insert("count".into(), toml::Value::Integer(count as i64));
    let c = t
        .entry("cells")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let c = c.as_table_mut().ok_or("profile: [cells] is not a table")?;
    c.insert("per_region".into(), toml::Value::Integer(per_region as i64));
    if let Some(q) = queue_ms {
        c.insert("max_queue_ms".into(), toml::Value::Integer(q as i64));
    }
    for key in ["downlink_bytes_per_s", "uplink_bytes_per_s"] {
        if let Some(v) = c.get_mut(key) {
            scale_span(v, k);
        }
    }
    let text = toml::to_string(&t).map_err(|e| format!("profile: {e}"))?;
    let p = Profile::from_toml(&text).map_err(|e| format!("profile: {e}"))?;
    Ok((p, k))
}

/// A package of `kib` KiB of body in the simulated devices' format.
fn build_package(kib: usize) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    let body: Vec<u8> = (0..kib * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    package::build(NEW_VERSION, &body)
}

fn scenario(a: &Args) -> Result<Scenario, String> {
    let text = match &a.profile {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => PROFILE.to_string(),
    };
    let own = Profile::from_toml(&text).map_err(|e| format!("profile: {e}"))?;
    let count = a
        .count
        .or(own.count())
        .ok_or("--count is required (the profile gives none)")?;
    if !(1..=crate::fleet::MAX_DEVICES / 2).contains(&count) {
        return Err("--count is at least 1".into());
    }
    let (profile, cell_scale) = fit_profile(&text, count, a.cells, a.cell_scale, a.cell_queue_ms)?;
    let prefix = profile.prefix().unwrap_or("cb-").to_string();
    // Bandwidths, measured off cells made for it: a 1,000-byte datagram's airtime.
    let t0 = Instant::now();
    let cells: Vec<(u32, Option<u64>)> = profile
        .cells(Duration::from_secs(3600))
        .iter()
        .map(|c| {
            let done = c.pass(Direction::Down, t0, 1000).unwrap_or(t0);
            let secs = done.saturating_duration_since(t0).as_secs_f64();
            (c.id(), (secs > 0.0).then(|| (1000.0 / secs).round() as u64))
        })
        .collect();
    let devices = (0..count)
        .map(|i| {
            let d = profile.device(i);
            Drawn {
                endpoint: format!("{prefix}{i:07}"),
                roaming: d.roaming,
                battery: d.device.battery.level,
                queue_mode: d.queue_mode,
                suspended: i % SUSPENDED_EVERY == SUSPENDED_EVERY / 3,
            }
        })
        .collect();
    Ok(Scenario {
        start_rate: profile.start_rate().unwrap_or(1000),
        profile: Arc::new(profile),
        count,
        prefix,
        cells,
        cell_scale,
        cell_queue_ms: a.cell_queue_ms,
        devices: Arc::new(devices),
        package: build_package(a.package_kib),
        limit: a.limit,
    })
}

// ---------------------------------------------------------------------------
// One run's setting up: server, fleet, operator's data, inventory.
// ---------------------------------------------------------------------------

/// What the server offered of the newer API.
#[derive(Debug, Clone, Default)]
struct Support {
    operator_attributes: bool,
    cells: bool,
    preview: bool,
    groups: bool,
}

struct Prepared {
    server: Server,
    api: Api,
    fleet: Fleet,
    stats: Arc<FirmwareStats>,
    package_id: String,
    /// Indexes of the eligible devices.
    eligible: Vec<usize>,
    eligible_sim: usize,
    eligible_source: &'static str,
    support: Support,
}

fn note(run: &str, what: &str) {
    eprintln!("bench campaign {run}: {what}");
}

async fn prepare(sc: &Scenario, binary: &Path, run: &str) -> Result<Prepared, BenchError> {
    let server = Server::start(binary, sc.count)?;
    let api = Api::new(server.http, &server.token, CALL_TIMEOUT);
    let stats = FirmwareStats::new();
    let mut template = Config::new(server.coap, "campaign");
    template.firmware.stats = Some(stats.handle());
    let mut cfg = FleetConfig::new(template, sc.count);
    cfg.prefix = sc.prefix.clone();
    cfg.start_rate = sc.start_rate;
    cfg.profile = Some(sc.profile.clone());
    let started = Instant::now();
    let fleet = Fleet::start(cfg, |p, t| {
        if t.as_secs().is_multiple_of(5) {
            note(
                run,
                &format!(
                    "fleet: {} started, {} registered, {} failed after {} s",
                    p.started,
                    p.registered,
                    p.failed,
                    t.as_secs()
                ),
            );
        }
    })
    .await
    .map_err(|e| BenchError::Devices(e.to_string()))?;
    let p = fleet.progress();
    note(
        run,
        &format!(
            "fleet registered {} of {} in {:.1} s",
            p.registered,
            sc.count,
            started.elapsed().as_secs_f64()
        ),
    );
    if p.registered < sc.count {
        return Err(BenchError::Devices(format!(
            "only {} of {} devices registered",
            p.registered, sc.count
        )));
    }
    // The inventory lists every device.
    let listed_by = Instant::now() + Duration::from_secs(60);
    loop {
        let total = api.total().await.map_err(BenchError::Inventory)?;
        if total as usize >= sc.count {
            break;
        }
        if Instant::now() >= listed_by {
            return Err(BenchError::Inventory(format!(
                "{total} of {} devices listed",
                sc.count
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let operator_attributes = operator_data(sc, &api).await?;
    if !operator_attributes {
        note(
            run,
            "no PATCH /api/clients/attributes: billing and home network not set on the server",
        );
    }
    let cells = cell_status(sc, &api).await?;
    if !cells {
        note(
            run,
            "no PUT /api/network/cells: the server does not know the cells' bandwidth",
        );
    }
    let package_id = api
        .upload("campaign-bench", NEW_VERSION, sc.package.clone())
        .await
        .map_err(BenchError::Server)?;
    let mut support = Support {
        operator_attributes,
        cells,
        preview: known(sc, &api, run).await?,
        groups: false,
    };
    let eligible_sim: Vec<usize> = (0..sc.count)
        .filter(|i| sc.devices[*i].eligible())
        .collect();
    let (eligible, source) = match server_eligible(sc, &api, &mut support).await? {
        Some(list) => (list, "server"),
        None => (eligible_sim.clone(), "sim"),
    };
    if eligible.len() != eligible_sim.len() {
        note(
            run,
            &format!(
                "the server finds {} eligible devices, the profile's draw {}",
                eligible.len(),
                eligible_sim.len()
            ),
        );
    }
    Ok(Prepared {
        server,
        api,
        fleet,
        stats,
        package_id,
        eligible,
        eligible_sim: eligible_sim.len(),
        eligible_source: source,
        support,
    })
}

/// Billing (2 % suspended, the rest active) and the home network of every device, in
/// bulk; false when the server has no such route.
async fn operator_data(sc: &Scenario, api: &Api) -> Result<bool, BenchError> {
    for chunk in sc.devices.chunks(1000) {
        let mut devices = serde_json::Map::new();
        for d in chunk {
            let billing = if d.suspended { "suspended" } else { "active" };
            devices.insert(
                d.endpoint.clone(),
                json!({ "billing_state": billing, "home_network": HOME_NETWORK }),
            );
        }
        let a = api
            .patch_attributes(devices)
            .await
            .map_err(BenchError::Server)?;
        if a.missing() {
            // Perhaps one device at a time is there.
            let d = &chunk[0];
            let one = api
                .patch_device(&d.endpoint, json!({ "billing_state": "active" }))
                .await
                .map_err(BenchError::Server)?;
            if one.missing() {
                return Ok(false);
            }
            return per_device_operator_data(sc, api).await;
        }
        if !a.ok() {
            return Err(BenchError::Server(format!(
                "PATCH /api/clients/attributes answered {} {}",
                a.status, a.body
            )));
        }
    }
    Ok(true)
}

async fn per_device_operator_data(sc: &Scenario, api: &Api) -> Result<bool, BenchError> {
    let mut tasks = JoinSet::new();
    for d in sc.devices.iter() {
        while tasks.len() >= PARALLEL_CALLS {
            if let Some(Ok(Err(e))) = tasks.join_next().await {
                return Err(BenchError::Server(e));
            }
        }
        let (api, ep) = (api.clone(), d.endpoint.clone());
        let billing = if d.suspended { "suspended" } else { "active" };
        let patch = json!({ "billing_state": billing, "home_network": HOME_NETWORK });
        tasks.spawn(async move {
            let a = api.patch_device(&ep, patch).await?;
            if a.ok() {
                Ok(())
            } else {
                Err(format!("PATCH attributes of {ep}: {} {}", a.status, a.body))
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            return Err(BenchError::Server(e));
        }
    }
    Ok(true)
}

/// Each cell's bandwidth, in bits a second; false when the server has no such route.
async fn cell_status(sc: &Scenario, api: &Api) -> Result<bool, BenchError> {
    for (id, bytes) in &sc.cells {
        let Some(b) = bytes else { continue };
        let a = api
            .put_cell(*id, b.saturating_mul(8))
            .await
            .map_err(BenchError::Server)?;
        if a.missing() {
            return Ok(false);
        }
        if !a.ok() {
            return Err(BenchError::Server(format!(
                "PUT /api/network/cells/{id} answered {} {}",
                a.status, a.body
            )));
        }
    }
    Ok(true)
}

/// Waits until the inventory knows what eligibility needs of every device, or at the
/// bound of [`KNOWN_ENOUGH`] of them; false when the server cannot be asked. Queue-mode
/// devices are read only while awake, so the last of them take a few of their wake cycles,
/// and in slow cells a read may go unanswered until the server's last try, after 330 s.
async fn known(sc: &Scenario, api: &Api, run: &str) -> Result<bool, BenchError> {
    let bound = (Duration::from_secs(60) + Duration::from_millis(sc.count as u64 * 30))
        .max(Duration::from_secs(360));
    let until = Instant::now() + bound;
    let mut last = 0;
    loop {
        let a = api.preview(KNOWN).await.map_err(BenchError::Server)?;
        if a.missing() {
            note(
                run,
                "no POST /api/groups/preview: not waiting for the inventory's attributes",
            );
            return Ok(false);
        }
        if !a.ok() {
            return Err(BenchError::Server(format!(
                "POST /api/groups/preview answered {} {}",
                a.status, a.body
            )));
        }
        let n = a.body["count"].as_u64().unwrap_or(0) as usize;
        if n >= sc.count {
            return Ok(true);
        }
        if n != last {
            note(
                run,
                &format!("inventory: attributes of {n} of {} devices known", sc.count),
            );
            last = n;
        }
        if Instant::now() >= until {
            if n as f64 >= sc.count as f64 * KNOWN_ENOUGH {
                note(
                    run,
                    &format!(
                        "inventory: going on with the attributes of {n} of {} devices known",
                        sc.count
                    ),
                );
                return Ok(true);
            }
            return Err(BenchError::Inventory(format!(
                "after {} s the attributes of only {n} of {} devices are known",
                bound.as_secs(),
                sc.count
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The eligible devices by the server: a group with the filter and its members.
async fn server_eligible(
    sc: &Scenario,
    api: &Api,
    support: &mut Support,
) -> Result<Option<Vec<usize>>, BenchError> {
    let a = api
        .create_group("bench-eligible", ELIGIBLE)
        .await
        .map_err(BenchError::Server)?;
    if a.missing() {
        return Ok(None);
    }
    if !a.ok() {
        return Err(BenchError::Server(format!(
            "POST /api/groups answered {} {}",
            a.status, a.body
        )));
    }
    let Some(members) = api
        .members("bench-eligible")
        .await
        .map_err(BenchError::Server)?
    else {
        return Ok(None);
    };
    support.groups = true;
    let mut list: Vec<usize> = members
        .iter()
        .filter_map(|ep| sc.endpoint_index(ep))
        .collect();
    list.sort_unstable();
    list.dedup();
    Ok(Some(list))
}

// ---------------------------------------------------------------------------
// Figures.
// ---------------------------------------------------------------------------

/// One run's figures.
#[derive(Debug, Clone, Default)]
struct Report {
    eligible: usize,
    eligible_sim: usize,
    eligible_source: &'static str,
    /// Eligible devices running the new version (sim) and succeeded (server) at the end.
    updated: usize,
    succeeded: usize,
    t95: Option<f64>,
    t100: Option<f64>,
    t95_server: Option<f64>,
    t100_server: Option<f64>,
    elapsed: f64,
    counts: DownloadCounts,
    /// Updates started again after a failure (the operator's or the server's).
    retries: u64,
    retries_source: &'static str,
    /// Downloads started beyond each device's first.
    download_restarts: u64,
    server_bytes: Option<(u64, u64)>,
    /// The campaign's own counts at the end: devices in it, skipped by its rules, failed.
    campaign_counts: Option<(u64, u64, u64)>,
    status: String,
    /// Per cell: the most downloads at once and the cap.
    cell_peaks: Vec<(u32, u32, u64)>,
    /// Where the updates of the eligible devices not updated stand on the server:
    /// `phase:count,...` (`none`: no update record).
    unfinished: String,
    no_cell_peak: u32,
}

/// The time by which `share` of `n` devices were done, from sorted done times.
fn time_to(done: &[f64], n: usize, share: f64) -> Option<f64> {
    if n == 0 {
        return Some(0.0);
    }
    let k = ((n as f64) * share).ceil().max(1.0) as usize;
    done.get(k - 1).copied()
}

/// The sim's side: first time each eligible device ran the new version, from `t0`.
fn installed_times(installs: &[Install], eligible: &[usize], t0: Instant) -> Vec<f64> {
    let wanted: std::collections::HashSet<u32> = eligible.iter().map(|i| *i as u32).collect();
    let mut first: HashMap<u32, f64> = HashMap::new();
    for i in installs {
        if i.version == NEW_VERSION && wanted.contains(&i.device) {
            let t = i.at.saturating_duration_since(t0).as_secs_f64();
            first.entry(i.device).or_insert(t);
        }
    }
    let mut v: Vec<f64> = first.into_values().collect();
    v.sort_by(f64::total_cmp);
    v
}

fn finish_report(p: &Prepared, sc: &Scenario, t0: Instant, server_done: &[f64], r: &mut Report) {
    r.eligible = p.eligible.len();
    r.eligible_sim = p.eligible_sim;
    r.eligible_source = p.eligible_source;
    r.elapsed = t0.elapsed().as_secs_f64();
    let installed = installed_times(&p.stats.installs(), &p.eligible, t0);
    r.updated = installed.len();
    r.t95 = time_to(&installed, r.eligible, 0.95);
    r.t100 = time_to(&installed, r.eligible, 1.0);
    let mut done = server_done.to_vec();
    done.sort_by(f64::total_cmp);
    r.succeeded = done.len();
    r.t95_server = time_to(&done, r.eligible, 0.95);
    r.t100_server = time_to(&done, r.eligible, 1.0);
    r.counts = p.stats.counts();
    r.download_restarts = p
        .stats
        .starts()
        .iter()
        .map(|(_, n)| u64::from(n.saturating_sub(1)))
        .sum();
    let by_id: HashMap<u32, Option<u64>> = sc.cells.iter().copied().collect();
    for (cell, load) in p.stats.cells() {
        match cell {
            Some(id) => {
                let cap = Scenario::cap(by_id.get(&id).copied().flatten());
                r.cell_peaks.push((id, load.peak, cap));
            }
            None => r.no_cell_peak = load.peak,
        }
    }
}

/// Most devices whose update is looked up when a run ends unfinished.
const MAX_UNFINISHED_LOOKUPS: usize = 2000;

/// Where the updates of the eligible devices the simulator did not see updated stand.
async fn unfinished(sc: &Scenario, p: &Prepared, t0: Instant) -> String {
    let installed: std::collections::HashSet<u32> = p
        .stats
        .installs()
        .iter()
        .filter(|i| i.version == NEW_VERSION && i.at >= t0)
        .map(|i| i.device)
        .collect();
    let left: Vec<usize> = p
        .eligible
        .iter()
        .copied()
        .filter(|i| !installed.contains(&(*i as u32)))
        .take(MAX_UNFINISHED_LOOKUPS)
        .collect();
    if left.is_empty() {
        return "-".into();
    }
    let mut phases: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, phase, _) in poll_updates(&sc.devices, &p.api, &left).await {
        *phases
            .entry(phase.unwrap_or_else(|| "none".into()))
            .or_default() += 1;
    }
    phases
        .iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn secs(t: Option<f64>) -> String {
    t.map_or_else(|| "none".into(), |t| format!("{t:.1}"))
}

fn print_report(run: &str, sc: &Scenario, r: &Report) {
    let c = &r.counts;
    let share = c.bytes_failed as f64 / (c.bytes.max(1)) as f64;
    let server = r.server_bytes.map_or(String::new(), |(sent, wasted)| {
        format!(
            " server_bytes_sent={sent} server_bytes_wasted={wasted} server_wasted_share={:.4}",
            wasted as f64 / sent.max(1) as f64
        )
    });
    let campaign = r
        .campaign_counts
        .map_or(String::new(), |(n, skipped, failed)| {
            format!(" campaign_devices={n} campaign_skipped={skipped} campaign_failed={failed}")
        });
    let cells = if run == "scheduled" {
        let over = r
            .cell_peaks
            .iter()
            .filter(|(_, p, cap)| u64::from(*p) > *cap)
            .count();
        let peak = r.cell_peaks.iter().map(|(_, p, _)| *p).max().unwrap_or(0);
        let cap_min = r.cell_peaks.iter().map(|(_, _, c)| *c).min().unwrap_or(0);
        let cap_max = r.cell_peaks.iter().map(|(_, _, c)| *c).max().unwrap_or(0);
        let each: Vec<String> = r
            .cell_peaks
            .iter()
            .map(|(id, p, cap)| format!("{id}:{p}/{cap}"))
            .collect();
        format!(
            " cell_peak_max={peak} cell_cap_min={cap_min} cell_cap_max={cap_max} cells_over_cap={over} \
             no_cell_peak={} cell_peaks={}",
            r.no_cell_peak,
            each.join(",")
        )
    } else {
        let peak = r.cell_peaks.iter().map(|(_, p, _)| *p).max().unwrap_or(0);
        format!(" cell_peak_max={peak} no_cell_peak={}", r.no_cell_peak)
    };
    println!(
        "bench campaign run={run} devices={} cells={} package_bytes={} cell_scale={:.3} \
         cell_queue_ms={} eligible={} eligible_source={} eligible_sim={} updated={} succeeded={} status={} \
         t95_s={} t100_s={} t95_server_s={} t100_server_s={} elapsed_s={:.1} \
         downloads={} failed_downloads={} active_downloads={} retries={} retries_source={} \
         download_restarts={} download_s_mean={:.1} bytes_sent={} bytes_wasted={} \
         wasted_share={share:.4} unfinished={}{server}{campaign}{cells}",
        sc.count,
        sc.cells.len(),
        sc.package.len(),
        sc.cell_scale,
        sc.cell_queue_ms
            .map_or_else(|| "ack_timeout".to_string(), |q| q.to_string()),
        r.eligible,
        r.eligible_source,
        r.eligible_sim,
        r.updated,
        r.succeeded,
        r.status,
        secs(r.t95),
        secs(r.t100),
        secs(r.t95_server),
        secs(r.t100_server),
        r.elapsed,
        c.started,
        c.failed,
        c.active,
        r.retries,
        r.retries_source,
        r.download_restarts,
        c.download_ms as f64 / 1000.0 / (c.completed + c.failed).max(1) as f64,
        c.bytes,
        c.bytes_failed,
        r.unfinished,
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

fn progress_line(run: &str, p: &Prepared, t0: Instant, succeeded: usize) {
    let c = p.stats.counts();
    let installed = installed_times(&p.stats.installs(), &p.eligible, t0).len();
    note(
        run,
        &format!(
            "{:.0} s: {installed} of {} updated, {succeeded} succeeded on the server, \
             {} downloads running, {} failed, {} MB received",
            t0.elapsed().as_secs_f64(),
            p.eligible.len(),
            c.active,
            c.failed,
            c.bytes / 1_000_000
        ),
    );
}

// ---------------------------------------------------------------------------
// The naive operator.
// ---------------------------------------------------------------------------

/// The naive operator's view of one device.
#[derive(Debug, Clone)]
struct Naive {
    /// The record of the update now running (its start, Unix ms; 0: none started).
    record: u64,
    /// A start is under way.
    starting: bool,
    succeeded: bool,
    /// When anything was last heard of the device's update.
    heard: Instant,
    /// A final phase heard while a start was under way: of which record, and whether it
    /// was a success.
    early: Option<(u64, bool)>,
}

/// What the operator does next about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Nothing,
    Succeeded,
    /// Start it again; `retry`: after a failure (a start that never happened is none).
    Restart {
        retry: bool,
    },
}

impl Naive {
    fn new(now: Instant) -> Naive {
        Naive {
            record: 0,
            starting: false,
            succeeded: false,
            heard: now,
            early: None,
        }
    }

    /// The device's update was seen in `phase` (`None`: it has none), of the record
    /// started at `started` (0: not said).
    fn seen(&mut self, phase: Option<&str>, started: u64, now: Instant) -> Step {
        self.heard = now;
        if self.succeeded {
            return Step::Nothing;
        }
        let success = phase == Some("succeeded");
        let failure = matches!(phase, Some("failed" | "cancelled"));
        if self.starting {
            if (success || failure) && started != 0 {
                self.early = Some((started, success));
            }
            return Step::Nothing;
        }
        if self.record == 0 {
            return self.restart(false);
        }
        if started != 0 && started < self.record {
            return Step::Nothing;
        }
        if success {
            self.succeeded = true;
            Step::Succeeded
        } else if failure {
            self.restart(true)
        } else {
            Step::Nothing
        }
    }

    fn restart(&mut self, retry: bool) -> Step {
        self.starting = true;
        self.early = None;
        Step::Restart { retry }
    }

    /// A start came back.
    fn started(&mut self, r: &Started, now: Instant) -> Step {
        self.starting = false;
        self.heard = now;
        let early = self.early.take();
        match r {
            Started::Record(at) => {
                self.record = *at;
                match early {
                    Some((rec, true)) if rec == *at => {
                        self.succeeded = true;
                        Step::Succeeded
                    }
                    Some((rec, false)) if rec == *at => self.restart(true),
                    _ => Step::Nothing,
                }
            }
            // Started again by the next sweep.
            Started::Failed(_) => {
                self.record = 0;
                Step::Nothing
            }
        }
    }
}

/// What a start of an update came back with.
enum Started {
    Record(u64),
    Failed(String),
}

/// The names the start body has given the package: the committed API's, the contract's.
const PACKAGE_FIELDS: [&str; 2] = ["package", "package_id"];

/// Starts an update of `endpoint`, trying again while the server still ends the last one
/// (409) or the device is between registrations (404), a bounded number of times.
async fn start_one(api: &Api, endpoint: &str, package: &str) -> Started {
    let mut last = String::new();
    let mut field = 0;
    for _ in 0..150 {
        match api
            .start_update(endpoint, PACKAGE_FIELDS[field], package)
            .await
        {
            Ok(a) if a.ok() => {
                return Started::Record(a.body["started_at_unix_ms"].as_u64().unwrap_or(0));
            }
            Ok(a)
                if a.status == 400
                    && field + 1 < PACKAGE_FIELDS.len()
                    && a.body.to_string().contains("unknown field") =>
            {
                field += 1;
                continue;
            }
            Ok(a) if a.status == 409 || a.status == 404 || a.status >= 500 => {
                last = format!("{} {}", a.status, a.body);
            }
            Ok(a) => return Started::Failed(format!("{} {}", a.status, a.body)),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Started::Failed(format!("gave up starting: {last}"))
}

/// How often the naive operator looks up updates it heard nothing of (the event stream
/// says every change; this is a safety net), and after how long a silence.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_secs(120);

async fn naive(sc: &Scenario, p: &Prepared) -> Result<Report, BenchError> {
    let run = "naive";
    let mut events = p.api.events().await.map_err(BenchError::Server)?;
    let t0 = Instant::now();
    let mut state: HashMap<usize, Naive> =
        p.eligible.iter().map(|i| (*i, Naive::new(t0))).collect();
    let mut done: Vec<f64> = Vec::new();
    let mut retries = 0u64;
    let (tx, mut started_rx) = mpsc::unbounded_channel::<(usize, Started)>();
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL_CALLS));
    let start = |i: usize| {
        let (api, ep, pkg, tx, sem) = (
            p.api.clone(),
            sc.devices[i].endpoint.clone(),
            p.package_id.clone(),
            tx.clone(),
            sem.clone(),
        );
        tokio::spawn(async move {
            let Ok(_permit) = sem.acquire_owned().await else {
                return;
            };
            let r = start_one(&api, &ep, &pkg).await;
            let _ = tx.send((i, r));
        });
    };
    for i in &p.eligible {
        if let Some(s) = state.get_mut(i) {
            s.starting = true;
        }
        start(*i);
    }
    note(run, &format!("{} updates started", p.eligible.len()));
    // Lookups run in a task of their own; their answers come back one by one, then
    // `None` when the sweep is over.
    let (polled_tx, mut polled_rx) =
        mpsc::unbounded_channel::<Option<(usize, Option<String>, u64)>>();
    let mut sweeping = false;
    let mut sweep_all = false;
    let mut sweep_due = Instant::now() + SWEEP_EVERY;
    let deadline = t0 + sc.limit;
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.tick().await;
    let mut start_errors = 0u64;
    let mut stream_open = true;
    let total = p.eligible.len();
    // Each pass handles one event, one answer or one tick; bounded by the limit.
    while done.len() < total && Instant::now() < deadline {
        let now = Instant::now();
        let step = tokio::select! {
            e = events.recv(), if stream_open => match e {
                Some(Event::Firmware { endpoint, phase, started }) => sc
                    .endpoint_index(&endpoint)
                    .and_then(|i| Some((i, state.get_mut(&i)?.seen(Some(&phase), started, now)))),
                Some(Event::Lagged) => {
                    sweep_all = true;
                    None
                }
                Some(Event::Closed) | None => {
                    stream_open = false;
                    note(run, "the event stream ended; polling instead");
                    None
                }
            },
            r = started_rx.recv() => r.and_then(|(i, r)| {
                if let Started::Failed(e) = &r {
                    start_errors += 1;
                    if start_errors <= 5 {
                        note(run, &format!("update of device {i} not started: {e}"));
                    }
                }
                Some((i, state.get_mut(&i)?.started(&r, now)))
            }),
            r = polled_rx.recv(), if sweeping => match r {
                Some(Some((i, phase, record))) => {
                    state.get_mut(&i).map(|s| (i, s.seen(phase.as_deref(), record, now)))
                }
                _ => {
                    sweeping = false;
                    None
                }
            },
            _ = every.tick() => {
                progress_line(run, p, t0, done.len());
                None
            }
            _ = tokio::time::sleep_until(deadline.into()) => None,
        };
        match step {
            Some((_, Step::Succeeded)) => done.push(t0.elapsed().as_secs_f64()),
            Some((i, Step::Restart { retry })) => {
                retries += u64::from(retry);
                start(i);
            }
            _ => {}
        }
        let due = Instant::now() >= sweep_due;
        if !sweeping && (sweep_all || due || !stream_open) {
            let now = Instant::now();
            let wanted: Vec<usize> = state
                .iter()
                .filter(|(_, s)| !s.succeeded && !s.starting)
                .filter(|(_, s)| {
                    sweep_all
                        || !stream_open
                        || s.record == 0
                        || now.saturating_duration_since(s.heard) >= QUIET
                })
                .map(|(i, _)| *i)
                .collect();
            let every = if stream_open {
                SWEEP_EVERY
            } else {
                Duration::from_secs(5)
            };
            sweep_due = now + every;
            sweep_all = false;
            if !wanted.is_empty() {
                sweeping = true;
                let (api, devices, tx) = (p.api.clone(), sc.devices.clone(), polled_tx.clone());
                tokio::spawn(async move {
                    for x in poll_updates(&devices, &api, &wanted).await {
                        let _ = tx.send(Some(x));
                    }
                    let _ = tx.send(None);
                });
            }
        }
    }
    let mut r = Report {
        retries,
        retries_source: "operator",
        status: if done.len() >= total {
            "complete".into()
        } else {
            "limit".into()
        },
        ..Report::default()
    };
    finish_report(p, sc, t0, &done, &mut r);
    r.unfinished = unfinished(sc, p, t0).await;
    progress_line(run, p, t0, done.len());
    Ok(r)
}

/// The phase and record of each device's update, asked `PARALLEL_CALLS` at a time.
async fn poll_updates(
    drawn: &[Drawn],
    api: &Api,
    devices: &[usize],
) -> Vec<(usize, Option<String>, u64)> {
    let mut out = Vec::with_capacity(devices.len());
    let mut tasks = JoinSet::new();
    for &i in devices {
        while tasks.len() >= PARALLEL_CALLS {
            if let Some(Ok(Some(x))) = tasks.join_next().await {
                out.push(x);
            }
        }
        let Some(d) = drawn.get(i) else { continue };
        let (api, ep) = (api.clone(), d.endpoint.clone());
        tasks.spawn(async move {
            let a = api.update(&ep).await.ok()?;
            if a.status == 404 {
                return Some((i, None, u64::MAX));
            }
            let phase = a.body["phase"].as_str().map(str::to_string);
            let record = a.body["started_at_unix_ms"].as_u64().unwrap_or(0);
            Some((i, phase, record))
        });
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(x)) = r {
            out.push(x);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The scheduled campaign.
// ---------------------------------------------------------------------------

async fn scheduled(sc: &Scenario, p: &Prepared) -> Result<Report, BenchError> {
    let run = "scheduled";
    let body = json!({
        "name": "bench-campaign",
        "package_id": p.package_id,
        "filter": ELIGIBLE,
        "policy": sc.policy(),
    });
    let t0 = Instant::now();
    let a = p
        .api
        .create_campaign(body)
        .await
        .map_err(BenchError::Server)?;
    if !a.ok() {
        return Err(BenchError::Server(format!(
            "POST /api/campaigns answered {} {}",
            a.status, a.body
        )));
    }
    let id = a.body["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| BenchError::Server(format!("no campaign id in {}", a.body)))?;
    note(run, &format!("campaign {id} created"));
    let deadline = t0 + sc.limit;
    let mut done: Vec<f64> = Vec::new();
    let mut last = Value::Null;
    let mut status = String::from("running");
    let mut ticks = 0u64;
    // One look a second, bounded by the limit.
    while Instant::now() < deadline {
        let a = p.api.campaign(&id).await.map_err(BenchError::Server)?;
        if a.ok() {
            last = a.body;
            status = last["status"].as_str().unwrap_or("unknown").to_string();
            let succeeded = last["progress"]["counts"]["succeeded"]
                .as_u64()
                .unwrap_or(0) as usize;
            let now = t0.elapsed().as_secs_f64();
            while done.len() < succeeded {
                done.push(now);
            }
            if matches!(status.as_str(), "complete" | "completed" | "cancelled") {
                break;
            }
        }
        ticks += 1;
        if ticks.is_multiple_of(10) {
            progress_line(run, p, t0, done.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let progress = &last["progress"];
    let retries = ["retries", "attempts_retried", "retried"]
        .iter()
        .find_map(|k| progress[*k].as_u64());
    let mut r = Report {
        status,
        server_bytes: progress["bytes_sent"]
            .as_u64()
            .map(|s| (s, progress["bytes_wasted"].as_u64().unwrap_or(0))),
        ..Report::default()
    };
    finish_report(p, sc, t0, &done, &mut r);
    r.unfinished = unfinished(sc, p, t0).await;
    match retries {
        Some(n) => {
            r.retries = n;
            r.retries_source = "server";
        }
        None => {
            r.retries = r.download_restarts;
            r.retries_source = "sim";
        }
    }
    let counts = &progress["counts"];
    if counts.is_object() {
        let n = |k: &str| counts[k].as_u64().unwrap_or(0);
        let all: u64 = counts
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        r.campaign_counts = Some((all, n("skipped"), n("failed")));
    }
    note(
        run,
        &format!(
            "campaign counts: {}",
            if counts.is_null() {
                "none".into()
            } else {
                counts.to_string()
            }
        ),
    );
    progress_line(run, p, t0, done.len());
    Ok(r)
}

// ---------------------------------------------------------------------------
// The command.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Naive,
    Scheduled,
}

impl Run {
    fn name(self) -> &'static str {
        match self {
            Run::Naive => "naive",
            Run::Scheduled => "scheduled",
        }
    }
}

struct Args {
    count: Option<usize>,
    cells: u32,
    package_kib: usize,
    limit: Duration,
    server: Option<PathBuf>,
    profile: Option<PathBuf>,
    cell_scale: Option<f64>,
    cell_queue_ms: Option<u64>,
    runs: Vec<Run>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        count: None,
        cells: 20,
        package_kib: 256,
        limit: Duration::from_secs(1800),
        server: None,
        profile: None,
        cell_scale: None,
        cell_queue_ms: None,
        runs: vec![Run::Naive, Run::Scheduled],
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n = |name: &str| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match flag.as_str() {
            "--count" => a.count = Some(n("--count")? as usize),
            "--cells" => a.cells = n("--cells")?.clamp(1, 10_000) as u32,
            "--package-kib" => a.package_kib = n("--package-kib")?.clamp(1, 65_536) as usize,
            "--limit-s" => a.limit = Duration::from_secs(n("--limit-s")?.max(1)),
            "--server-binary" => a.server = Some(PathBuf::from(v)),
            "--profile" => a.profile = Some(PathBuf::from(v)),
            "--cell-scale" => {
                let f: f64 = v.parse().map_err(|e| format!("--cell-scale: {e}"))?;
                if !(f.is_finite() && f > 0.0) {
                    return Err("--cell-scale is a positive number".into());
                }
                a.cell_scale = Some(f);
            }
            "--cell-queue-ms" => {
                a.cell_queue_ms = Some(n("--cell-queue-ms")?.clamp(1, 600_000));
            }
            "--only" => {
                a.runs = match v.as_str() {
                    "naive" => vec![Run::Naive],
                    "scheduled" => vec![Run::Scheduled],
                    other => return Err(format!("--only naive or scheduled, not {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn usage(e: &str) -> ExitCode {
    if !e.is_empty() {
        eprintln!("error: {e}");
    }
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

async fn one_run(sc: &Scenario, binary: &Path, run: Run) -> Result<Report, BenchError> {
    let name = run.name();
    let p = prepare(sc, binary, name).await?;
    note(
        name,
        &format!(
            "{} eligible ({} by the server's groups: {}), operator attributes {}, cells {}, preview {}",
            p.eligible.len(),
            p.eligible_source,
            p.support.groups,
            p.support.operator_attributes,
            p.support.cells,
            p.support.preview
        ),
    );
    let r = match run {
        Run::Naive => naive(sc, &p).await,
        Run::Scheduled => scheduled(sc, &p).await,
    };
    // De-registered while the server still answers, so that no client outlives its run.
    let Prepared { fleet, server, .. } = p;
    if tokio::time::timeout(Duration::from_secs(300), fleet.shutdown(512))
        .await
        .is_err()
    {
        note(name, "the fleet did not shut down within 300 s");
    }
    drop(server);
    r
}

pub async fn main(args: &[String]) -> ExitCode {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let binary = match a.server.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .map(|p| p.with_file_name("lwm2m-server"))
    }) {
        Some(b) => b,
        None => return usage("--server-binary is required"),
    };
    let sc = match scenario(&a) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let eligible = sc.devices.iter().filter(|d| d.eligible()).count();
    note(
        "setup",
        &format!(
            "{} devices, {} cells of {} bytes/s down, package {} bytes, {} eligible by the draw, \
             {} in queue mode, {} roaming, {} below 20 % battery, {} suspended; filter {ELIGIBLE}",
            sc.count,
            sc.cells.len(),
            sc.cells
                .iter()
                .map(|(_, b)| b.map_or("unlimited".into(), |b| b.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            sc.package.len(),
            eligible,
            sc.devices.iter().filter(|d| d.queue_mode).count(),
            sc.devices.iter().filter(|d| d.roaming).count(),
            sc.devices.iter().filter(|d| d.battery < 20).count(),
            sc.devices.iter().filter(|d| d.suspended).count(),
        ),
    );
    let mut t100: HashMap<&'static str, (Option<f64>, Report)> = HashMap::new();
    let mut failed = false;
    for run in &a.runs {
        match one_run(&sc, &binary, *run).await {
            Ok(r) => {
                print_report(run.name(), &sc, &r);
                t100.insert(run.name(), (r.t100, r));
            }
            Err(e) => {
                failed = true;
                println!(
                    "bench campaign run={} error={:?}",
                    run.name(),
                    e.to_string()
                );
            }
        }
    }
    if let (Some((naive_t, _)), Some((sched_t, s))) = (t100.get("naive"), t100.get("scheduled")) {
        let limit = sc.limit.as_secs_f64();
        let naive_t100 = naive_t.unwrap_or(limit);
        let speedup = match sched_t {
            Some(t) => naive_t100 / t.max(0.001),
            None => 0.0,
        };
        let complete = s.updated >= s.eligible && s.eligible > 0;
        let wasted = s.counts.bytes_failed as f64 / s.counts.bytes.max(1) as f64;
        let met = complete && wasted < 0.02 && speedup >= 3.0;
        println!(
            "bench campaign speedup_100={speedup:.2} naive_t100_s={} naive_reached_100={} \
             scheduled_t100_s={} scheduled_complete={complete} scheduled_wasted_share={wasted:.4} \
             target_met={met}",
            if naive_t.is_some() {
                format!("{naive_t100:.1}")
            } else {
                format!("{limit:.1}")
            },
            naive_t.is_some(),
            secs(*sched_t),
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_fitted_to_the_run_and_keeps_the_density() {
        let (p, k) = fit_profile(PROFILE, 1000, 4, None, None).expect("profile");
        // 250 devices a cell against the profile's 500.
        assert!((k - 0.5).abs() < 1e-9, "{k}");
        assert_eq!(p.count(), Some(1000));
        assert_eq!(p.cells(Duration::from_secs(2)).len(), 4);
        let (_, k) = fit_profile(PROFILE, 60, 3, Some(1.0), None).expect("profile");
        assert_eq!(k, 1.0);
    }

    #[test]
    fn a_deeper_cell_queue_holds_more_before_it_drops() {
        // Datagrams one cell takes at one instant before the next would wait too long.
        let taken = |queue_ms: Option<u64>| {
            let (p, _) = fit_profile(PROFILE, 1000, 4, None, queue_ms).expect("profile");
            let cell = &p.cells(Duration::from_secs(2))[0];
            let t0 = Instant::now();
            (0..100_000)
                .take_while(|_| cell.pass(Direction::Down, t0, 1000).is_some())
                .count()
        };
        let (short, deep) = (taken(None), taken(Some(10_000)));
        assert!(short > 0);
        assert!(
            (4 * short..=6 * short).contains(&deep),
            "2 s: {short} datagrams, 10 s: {deep}"
        );
    }

    #[test]
    fn the_mix_is_what_the_benchmark_says() {
        let a = parse(&["--count".into(), "10000".into()]).expect("args");
        let sc = scenario(&a).expect("scenario");
        let n = sc.count as f64;
        let share =
            |f: &dyn Fn(&Drawn) -> bool| sc.devices.iter().filter(|d| f(d)).count() as f64 / n;
        assert!((share(&|d| d.queue_mode) - 0.30).abs() < 0.02);
        assert!((share(&|d| d.roaming) - 0.10).abs() < 0.02);
        assert!((share(&|d| d.battery < 20) - 0.05).abs() < 0.01);
        assert!((share(&|d| d.suspended) - 0.02).abs() < 1e-9);
        assert_eq!(sc.cells.len(), 20);
        assert!(sc
            .cells
            .iter()
            .all(|(_, b)| b.is_some_and(|b| (160_000..=240_000).contains(&b))));
        assert!(build_package(1).len() > 1024);
        assert_eq!(
            package::parse(&build_package(2))
                .expect("a package")
                .version,
            NEW_VERSION
        );
    }

    #[test]
    fn times_to_a_share_count_from_the_sorted_times() {
        let t = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(time_to(&t, 4, 1.0), Some(4.0));
        assert_eq!(time_to(&t, 4, 0.95), Some(4.0));
        assert_eq!(time_to(&t, 20, 0.95), None);
        assert_eq!(time_to(&t, 4, 0.5), Some(2.0));
        assert_eq!(time_to(&[], 0, 1.0), Some(0.0));
    }
}
