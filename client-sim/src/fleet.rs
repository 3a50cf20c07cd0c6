//! Many simulated devices in one process: each a [`Client`] of its own, with its own
//! socket on its own loopback address, so the server sees every device at a distinct
//! source address and port, as it would see devices behind different NATs.
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, and a socket may bind any
//! address in it without configuration: device `i` binds `127.a.b.c`, counted from
//! [`FIRST_ADDRESS`] (16.7 million addresses, far more than a fleet needs).
//!
//! Devices start at a bounded rate, the way a fleet comes back after an outage but
//! without a thundering herd unless one is asked for; progress is reported every second.
//! Each device holds an open socket while it runs, so a fleet is bounded by the process's
//! file-descriptor limit (sleeping devices without a socket are the next step for a
//! million-device fleet).
//!
//! With a behaviour [`Profile`], device `i` is the template with the values it drew from
//! the profile ([`Profile::device`]), then the [`Overrides`] (the command line's flags)
//! on top. The profile's cells are made once here and shared by the devices in them.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::network::Cell;
use crate::profile::Profile;
use crate::{Client, ClientHandle, Config};

/// The first device's address: above 127.0.0.0/16, where servers usually listen.
pub const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 0);
/// Devices a fleet may hold: the loopback addresses above [`FIRST_ADDRESS`].
pub const MAX_DEVICES: usize = (1 << 24) - (1 << 16);

/// How a fleet is run.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub count: usize,
    /// Endpoint names are the prefix and the device's number, zero-padded to 7 digits.
    pub prefix: String,
    /// Devices started per second.
    pub start_rate: u32,
    /// How long one device may take to register before it counts as failed.
    pub register_timeout: Duration,
    /// Every device's configuration but its endpoint name and address.
    pub template: Config,
    /// The mix the devices draw their values from.
    pub profile: Option<Arc<Profile>>,
    /// Settings every device gets whatever the profile drew.
    pub overrides: Overrides,
}

/// Settings given for the whole fleet, which win over a profile's (the command line's
/// `--lifetime`, `--queue-mode`, `--awake`, `--sleep`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub lifetime: Option<u32>,
    pub queue_mode: Option<bool>,
    pub awake_window: Option<Duration>,
    pub sleep_duration: Option<Duration>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if let Some(lt) = self.lifetime {
            c.lifetime = lt;
        }
        if let Some(q) = self.queue_mode {
            c.queue_mode = q;
        }
        if let Some(a) = self.awake_window {
            c.awake_window = a;
        }
        if let Some(s) = self.sleep_duration {
            c.sleep_duration = s;
        }
    }
}

impl FleetConfig {
    pub fn new(template: Config, count: usize) -> FleetConfig {
        FleetConfig {
            count,
            prefix: "fleet-".into(),
            start_rate: 500,
            register_timeout: Duration::from_secs(30),
            template,
            profile: None,
            overrides: Overrides::default(),
        }
    }

    /// Device `i`'s configuration: the template, what it drew from the profile, the
    /// overrides; its endpoint name and address.
    pub fn device_config(&self, i: usize, cells: &[Arc<Cell>]) -> Config {
        let mut c = self.template.clone();
        if let Some(p) = &self.profile {
            p.device(i).apply(&mut c, cells);
        }
        self.overrides.apply(&mut c);
        c.endpoint = self.endpoint(i);
        c.bind = SocketAddr::from((device_address(i), 0));
        c.event_capacity = c.event_capacity.min(16);
        c
    }

    /// The profile's cells, with the template's ACK timeout as the bound of their queues
    /// unless the profile sets one: a datagram later than that is retransmitted anyway.
    pub fn cells(&self) -> Vec<Arc<Cell>> {
        self.profile
            .as_ref()
            .map(|p| p.cells(self.template.coap.ack_timeout))
            .unwrap_or_default()
    }

    /// Device `i`'s endpoint name.
    pub fn endpoint(&self, i: usize) -> String {
        format!("{}{i:07}", self.prefix)
    }
}

/// Device `i`'s loopback address.
pub fn device_address(i: usize) -> Ipv4Addr {
    let n = u32::from(FIRST_ADDRESS).wrapping_add(u32::try_from(i).unwrap_or(u32::MAX));
    Ipv4Addr::from(n)
}

/// Counts of a fleet so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub started: usize,
    pub registered: usize,
    pub failed: usize,
}

/// A running fleet.
pub struct Fleet {
    devices: Vec<ClientHandle>,
    cells: Vec<Arc<Cell>>,
    counts: Arc<Counts>,
    pub started_at: Instant,
}

#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    registered: AtomicUsize,
    failed: AtomicUsize,
}

impl Counts {
    fn get(&self) -> Progress {
        Progress {
            started: self.started.load(Ordering::Relaxed),
            registered: self.registered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    #[error("a fleet holds 1 to {MAX_DEVICES} devices")]
    Size,
    #[error("the start rate is at least one device a second")]
    Rate,
}

impl Fleet {
    /// Starts the devices at the configured rate, calling `report` about once a second
    /// and when all have registered or failed; returns once they all have.
    pub async fn start(
        cfg: FleetConfig,
        mut report: impl FnMut(Progress, Duration),
    ) -> Result<Fleet, FleetError> {
        if cfg.count == 0 || cfg.count > MAX_DEVICES {
            return Err(FleetError::Size);
        }
        if cfg.start_rate == 0 {
            return Err(FleetError::Rate);
        }
        let counts = Arc::new(Counts::default());
        let cells = cfg.cells();
        let started_at = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ClientHandle>(1024);
        let spawner = {
            let counts = counts.clone();
            let cfg = cfg.clone();
            let cells = cells.clone();
            tokio::spawn(async move {
                let gap = Duration::from_secs(1) / cfg.start_rate;
                let mut tick = tokio::time::interval(gap.max(Duration::from_micros(1)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for i in 0..cfg.count {
                    tick.tick().await;
                    let c = cfg.device_config(i, &cells);
                    counts.started.fetch_add(1, Ordering::Relaxed);
                    let counts = counts.clone();
                    let tx = tx.clone();
                    let timeout = cfg.register_timeout;
                    tokio::spawn(async move {
                        match Client::start(c).await {
                            Ok(h) => {
                                match h.wait_registered(timeout).await {
                                    Ok(_) => counts.registered.fetch_add(1, Ordering::Relaxed),
                                    Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
                                };
                                let _ = tx.send(h).await;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "device did not start");
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
            })
        };
        let mut devices = Vec::with_capacity(cfg.count);
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        loop {
            let p = counts.get();
            if p.registered + p.failed >= cfg.count {
                break;
            }
            tokio::select! {
                Some(h) = rx.recv() => devices.push(h),
                _ = every.tick() => report(p, started_at.elapsed()),
            }
        }
        let _ = spawner.await;
        // The handles of the last devices may still be on their way.
        while devices.len() < cfg.count {
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(h)) => devices.push(h),
                _ => break,
            }
        }
        report(counts.get(), started_at.elapsed());
        Ok(Fleet {
            devices,
            cells,
            counts,
            started_at,
        })
    }

    pub fn progress(&self) -> Progress {
        self.counts.get()
    }

    /// The devices, in no particular order.
    pub fn devices(&self) -> &[ClientHandle] {
        &self.devices
    }

    /// The profile's cells (none without a profile).
    pub fn cells(&self) -> &[Arc<Cell>] {
        &self.cells
    }

    /// Datagrams the cells carried and dropped (queued past their bound), in all.
    pub fn cell_counts(&self) -> (u64, u64) {
        self.cells.iter().fold((0, 0), |(p, d), c| {
            let (cp, cd) = c.counts();
            (p + cp, d + cd)
        })
    }

    /// De-registers every device, at most `parallel` at once.
    pub async fn shutdown(self, parallel: usize) {
        let slots = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let mut tasks = Vec::with_capacity(self.devices.len());
        for h in self.devices {
            let slots = slots.clone();
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire().await;
                let _ = h.shutdown().await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_get_distinct_loopback_addresses_and_names() {
        assert_eq!(device_address(0), Ipv4Addr::new(127, 1, 0, 0));
        assert_eq!(device_address(257), Ipv4Addr::new(127, 1, 1, 1));
        assert_eq!(
            device_address(MAX_DEVICES - 1),
            Ipv4Addr::new(127, 255, 255, 255)
        );
        let cfg = FleetConfig::new(Config::new("127.0.0.1:5683".parse().unwrap(), "x"), 3);
        assert_eq!(cfg.endpoint(42), "fleet-0000042");
    }

    #[test]
    fn a_device_is_the_template_then_its_draw_then_the_overrides() {
        let profile = Profile::from_toml(
            "[[model]]\nmanufacturer = \"Acme\"\nmodel = \"M\"\n\
             [[schedule]]\nqueue_mode = true\nlifetime_s = 900\nawake_s = 5\nsleep_s = 50\n\
             [cells]\ndownlink_bytes_per_s = 1000",
        )
        .expect("profile");
        let mut template = Config::new("127.0.0.1:5683".parse().unwrap(), "x");
        template.coap.ack_timeout = Duration::from_millis(700);
        let mut cfg = FleetConfig::new(template, 3);
        cfg.profile = Some(Arc::new(profile));
        let cells = cfg.cells();
        let c = cfg.device_config(2, &cells);
        assert_eq!(
            (c.endpoint.as_str(), c.profile.manufacturer.as_str()),
            ("fleet-0000002", "Acme")
        );
        assert_eq!((c.lifetime, c.queue_mode), (900, true));
        assert_eq!(c.sleep_duration, Duration::from_secs(50));
        assert_eq!(c.bind, SocketAddr::from((device_address(2), 0)));
        let cell = c.link.and_then(|l| l.cell).expect("in the cell");
        // The bound of the cell's queue is the template's ACK timeout.
        let t0 = Instant::now();
        assert!(cell
            .pass(crate::network::Direction::Down, t0, 700)
            .is_some());
        assert!(cell.pass(crate::network::Direction::Down, t0, 1).is_none());

        cfg.overrides = Overrides {
            lifetime: Some(60),
            queue_mode: Some(false),
            awake_window: None,
            sleep_duration: Some(Duration::from_secs(7)),
        };
        let c = cfg.device_config(2, &cells);
        assert_eq!((c.lifetime, c.queue_mode), (60, false));
        assert_eq!(c.sleep_duration, Duration::from_secs(7));
        assert_eq!(c.awake_window, Duration::from_secs(5), "not overridden");
    }
}
