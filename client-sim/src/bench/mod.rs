//! Benchmarks run by hand (`lwm2m-client-sim bench ...`), never inside the test suite
//! (the tests run each once at a tiny size). Every figure comes with a baseline measured
//! in the same run, because absolute figures drift on a shared machine:
//!
//! - `scale`: resident memory of the `lwm2m-server` binary per registered device, beyond
//!   the same server empty, and the time to register them all ([`scale`]).
//! - `rate`: Registers and Updates a second against the binary, and Reads of `/3/0/9` a
//!   second through the server's library API, against a UDP echo server and a bare
//!   requester answering the same load generator ([`rate`]).
//! - `latency`: p50/p99 of a Read at half the maximum read rate, against the bare
//!   requester at the same rate ([`latency`]).
//! - `herd`: devices re-registering within a few seconds after an outage: none lost, and
//!   the admin API's p99 meanwhile against its p99 idle ([`herd`]).
//! - `campaign`: one firmware package rolled out to the same simulated fleet naively and
//!   by the server's scheduled campaign, against each other ([`campaign`]).
//!
//! The devices are [`loadgen`]'s light devices, each on a loopback address of its own.

pub mod campaign;
pub mod cli;
pub mod cores;
pub mod loadgen;
mod reads;
mod server;

pub use reads::{latency, rate_reads, LatencyReport, ReadRate};
pub use server::{ServerChild, ServerOptions};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use loadgen::{exchange, location, register_request, update_request, Outcome, Pace, Timing};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot run {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("{0} printed no address line")]
    Banner(&'static str),
    #[error("cannot read the server's memory: {0}")]
    Memory(String),
    #[error("inventory: {0}")]
    Inventory(String),
    #[error("server: {0}")]
    Server(String),
    #[error("devices: {0}")]
    Devices(String),
    #[error("cannot split the cores: {0}")]
    Cores(std::io::Error),
}

/// Progress callback: jobs done so far and the time since the phase started.
pub type ProgressFn<'a> = &'a mut (dyn FnMut(&str, usize, Duration) + Send);

/// Device `i`'s name: `prefix` and a 64-bit mix of `i`. Devices that register in index
/// order thus come in no order of name, as a fleet's IMEIs do after an outage; names in
/// sorted order would let the server's endpoint index grow at its edge, which no fleet does.
fn endpoint(prefix: &str, i: usize) -> String {
    format!("{prefix}{:016x}", mix(i as u64))
}

/// splitmix64's finaliser: a bijection of `u64` (each step is invertible), so distinct
/// devices keep distinct names.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A permutation of `0..n` that spreads neighbours far apart: `j` goes to `j * step mod n`
/// for a step near `n / φ` with no factor in common with `n`. Devices then send their
/// Updates in an order unrelated to the one they registered in, as in the field (each on
/// its own lifetime), instead of replaying the registrations' order.
fn scattered(n: usize) -> impl Fn(usize) -> usize {
    fn gcd(mut a: usize, mut b: usize) -> usize {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    let mut step = (n as f64 * 0.618_033_988_7) as usize | 1;
    // Bounded: 1 is coprime with every n, and the step stays below n + 2.
    while n > 1 && gcd(step, n) != 1 {
        step += 1;
    }
    move |j| {
        if n == 0 {
            0
        } else {
            ((j as u128 * step as u128) % n as u128) as usize
        }
    }
}

/// Registers devices `0..count` as `prefix{i}` at `coap`, paced by `pace`; answers the
/// outcome and each device's location (`/rd/...`), empty where it got none.
async fn register_all(
    coap: SocketAddr,
    prefix: &str,
    count: usize,
    window: usize,
    pace: Pace,
    queue: bool,
    progress: ProgressFn<'_>,
) -> (Outcome, Arc<Vec<OnceLock<String>>>) {
    let locations: Arc<Vec<OnceLock<String>>> =
        Arc::new((0..count).map(|_| OnceLock::new()).collect());
    let prefix = prefix.to_string();
    let locs = locations.clone();
    let outcome = loadgen::run(
        count,
        window,
        pace,
        move |i| {
            let (ep, locs) = (endpoint(&prefix, i), locs.clone());
            async move {
                let timing = Timing::default();
                let a = exchange(i, coap, register_request(&ep, 86_400, queue), &timing).await?;
                let loc = location(&a.response).ok_or_else(|| {
                    loadgen::Lost::Io(format!("refused: {:?}", a.response.header.code))
                })?;
                if let Some(slot) = locs.get(i) {
                    let _ = slot.set(loc);
                }
                Ok(a)
            }
        },
        |done, t| progress("register", done, t),
    )
    .await;
    (outcome, locations)
}

/// What `scale` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleReport {
    pub devices: usize,
    pub registered: usize,
    /// Devices the server's inventory lists at the end (`registered` unless some were lost).
    pub listed: usize,
    pub retransmissions: u64,
    pub empty_rss_kib: u64,
    pub full_rss_kib: u64,
    /// After `settle`: the duplicate-detection entries of the registrations have expired.
    pub settled_rss_kib: Option<u64>,
    pub register_time: Duration,
}

impl ScaleReport {
    /// Resident memory per listed device beyond the empty server, in bytes.
    pub fn bytes_per_device(&self, rss_kib: u64) -> f64 {
        let grown = rss_kib.saturating_sub(self.empty_rss_kib) as f64 * 1024.0;
        grown / self.listed.max(1) as f64
    }
}

/// Registers `count` queue-mode devices with the binary at `rate` a second, reads the
/// server's memory before, after, and after `settle` more (0: not again).
pub async fn scale(
    server: &Path,
    count: usize,
    rate: f64,
    settle: Duration,
    progress: ProgressFn<'_>,
) -> Result<ScaleReport, BenchError> {
    let child = ServerChild::start(server, &ServerOptions::for_fleet(count))?;
    // Idle first: the allocator and the runtime have settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let empty = child.rss_kib()?;
    let started = Instant::now();
    let (outcome, _) = register_all(
        child.coap,
        "bench-",
        count,
        4000,
        Pace::Open { rate },
        true,
        progress,
    )
    .await;
    let register_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = child.rss_kib()?;
    let listed = child.listed().await?;
    let settled = if settle.is_zero() {
        None
    } else {
        tokio::time::sleep(settle).await;
        Some(child.rss_kib()?)
    };
    Ok(ScaleReport {
        devices: count,
        registered: outcome.done,
        listed,
        retransmissions: outcome.retransmissions,
        empty_rss_kib: empty,
        full_rss_kib: full,
        settled_rss_kib: settled,
        register_time,
    })
}

/// What `rate` measured for Registers and Updates.
#[derive(Debug, Clone)]
pub struct RegisterRate {
    /// The echo baseline, before the server runs and after it has stopped: on a
    /// shared machine it drifts, and the server's phases lie between the two.
    pub echo: Outcome,
    pub echo_after: Outcome,
    pub register: Outcome,
    pub update: Outcome,
}

impl RegisterRate {
    /// The baseline the ratios divide by: the mean of the two echo rates.
    pub fn echo_rate(&self) -> f64 {
        (self.echo.rate() + self.echo_after.rate()) / 2.0
    }
}

/// Registers then Updates of `count` devices against the binary, `window` in flight,
/// and the same Register datagrams against a UDP echo server (a child process too),
/// before and after.
pub async fn rate_registrations(
    server: &Path,
    echo_command: &Path,
    count: usize,
    window: usize,
    cores: Option<&cores::Split>,
    progress: ProgressFn<'_>,
) -> Result<RegisterRate, BenchError> {
    if let Some(split) = cores {
        split.pin_devices().map_err(BenchError::Cores)?;
    }
    let measured = registrations(server, echo_command, count, window, cores, progress).await;
    if let Some(split) = cores {
        split.unpin().map_err(BenchError::Cores)?;
    }
    measured
}

async fn registrations(
    server: &Path,
    echo_command: &Path,
    count: usize,
    window: usize,
    cores: Option<&cores::Split>,
    progress: ProgressFn<'_>,
) -> Result<RegisterRate, BenchError> {
    let echo_outcome = echo_registers(echo_command, count, window, cores, "echo", progress).await?;
    let child = on_peer_cores(cores, || {
        ServerChild::start(server, &ServerOptions::for_fleet(count))
    })??;
    let (register, locations) = register_all(
        child.coap,
        "bench-",
        count,
        window,
        Pace::Closed,
        false,
        progress,
    )
    .await;
    let coap = child.coap;
    let order = scattered(count);
    let update = loadgen::run(
        count,
        window,
        Pace::Closed,
        move |j| {
            let i = order(j);
            let loc = locations.get(i).and_then(|l| l.get().cloned());
            async move {
                let loc = loc.ok_or(loadgen::Lost::Timeout)?;
                let a = exchange(i, coap, update_request(&loc), &Timing::default()).await?;
                if a.response.header.code
                    != coap_lite::MessageClass::Response(coap_lite::ResponseType::Changed)
                {
                    return Err(loadgen::Lost::Io(format!(
                        "update refused: {:?}",
                        a.response.header.code
                    )));
                }
                Ok(a)
            }
        },
        |done, t| progress("update", done, t),
    )
    .await;
    drop(child);
    let echo_after =
        echo_registers(echo_command, count, window, cores, "echo after", progress).await?;
    Ok(RegisterRate {
        echo: echo_outcome,
        echo_after,
        register,
        update,
    })
}

/// Starts a peer (server or echo server) on its cores, when the cores are split.
fn on_peer_cores<T>(
    cores: Option<&cores::Split>,
    start: impl FnOnce() -> T,
) -> Result<T, BenchError> {
    match cores {
        Some(split) => split.on_peer_cores(start).map_err(BenchError::Cores),
        None => Ok(start()),
    }
}

/// The Register datagrams of the fleet against a UDP echo server: the baseline of
/// [`rate_registrations`].
async fn echo_registers(
    echo_command: &Path,
    count: usize,
    window: usize,
    cores: Option<&cores::Split>,
    phase: &str,
    progress: ProgressFn<'_>,
) -> Result<Outcome, BenchError> {
    let echo = on_peer_cores(cores, || server::EchoChild::start(echo_command))??;
    let to = echo.addr;
    Ok(loadgen::run(
        count,
        window,
        Pace::Closed,
        move |i| async move {
            let ep = endpoint("bench-", i);
            exchange(
                i,
                to,
                register_request(&ep, 86_400, false),
                &Timing::default(),
            )
            .await
        },
        |done, t| progress(phase, done, t),
    )
    .await)
}

/// What `herd` measured.
#[derive(Debug, Clone)]
pub struct HerdReport {
    pub devices: usize,
    pub herd: Outcome,
    pub listed: usize,
    pub idle_api: Outcome,
    pub herd_api: Outcome,
}

/// Registers `count` queue-mode devices, then has every one register again (from a new
/// port) within `within`, as a fleet does when its server comes back from an outage;
/// meanwhile the admin API's inventory (`GET /api/clients?limit=1`) is asked every 10 ms,
/// and before the herd as often while idle.
pub async fn herd(
    server: &Path,
    count: usize,
    within: Duration,
    progress: ProgressFn<'_>,
) -> Result<HerdReport, BenchError> {
    let child = ServerChild::start(server, &ServerOptions::for_fleet(count))?;
    let (first, _) = register_all(
        child.coap,
        "herd-",
        count,
        4000,
        Pace::Open { rate: 5000.0 },
        true,
        progress,
    )
    .await;
    if first.done != count {
        return Err(BenchError::Devices(format!(
            "only {} of {count} registered before the herd",
            first.done
        )));
    }
    let probes = 200;
    let idle_api = child.probe_api(probes, Duration::from_millis(10)).await;
    let rate = count as f64 / within.as_secs_f64().max(0.001);
    let api = {
        let http = child.http;
        let token = child.token.clone();
        // As many probes as fit in the herd's time, and a few more.
        let n = (within.as_millis() / 10) as usize + 100;
        tokio::spawn(async move { server::probe(http, &token, n, Duration::from_millis(10)).await })
    };
    let (herd, _) = register_all(
        child.coap,
        "herd-",
        count,
        15_000,
        Pace::Open { rate },
        true,
        progress,
    )
    .await;
    let herd_api = api
        .await
        .map_err(|e| BenchError::Server(format!("probe task: {e}")))?;
    let listed = child.listed().await?;
    Ok(HerdReport {
        devices: count,
        herd,
        listed,
        idle_api,
        herd_api,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scattered_orders_are_permutations_that_part_neighbours() {
        for n in [0usize, 1, 2, 3, 10, 64, 1000, 20_000] {
            let order = scattered(n);
            let mut seen = vec![false; n];
            for j in 0..n {
                let i = order(j);
                assert!(!seen[i], "n={n}: {i} twice");
                seen[i] = true;
            }
            if n >= 1000 {
                let far = (0..n - 1).filter(|&j| order(j).abs_diff(order(j + 1)) > n / 10);
                assert!(far.count() > n * 9 / 10, "n={n}: neighbours stay close");
            }
        }
    }

    #[test]
    fn device_names_are_distinct_and_not_in_index_order() {
        let names: Vec<String> = (0..1000).map(|i| endpoint("d-", i)).collect();
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        let ascending = names.windows(2).filter(|w| w[0] < w[1]).count();
        assert!((300..700).contains(&ascending), "{ascending} of 999 ascend");
    }
}
