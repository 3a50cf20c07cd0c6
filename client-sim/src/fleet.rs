//! Many simulated devices in one process: each a real [`Client`] of the client library
//! while it is awake, on its own loopback address, so the server sees every device at a
//! distinct source address and port, as it would see devices behind different NATs.
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, and a socket may bind any
//! address in it without configuration: device `i` binds `127.a.b.c`, counted from
//! [`FIRST_ADDRESS`] (16.7 million addresses, far more than a fleet needs).
//!
//! Devices start at a bounded rate, the way a fleet comes back after an outage but
//! without a thundering herd unless one is asked for; progress is reported every second.
//!
//! A running client costs about 32 KB and a socket; a million of them fit neither in
//! memory nor under a process's file limit. A sleeping queue-mode device needs neither,
//! so a fleet device that falls asleep with nothing under way is *parked*: its driver
//! ends and hands the fleet a [`Parked`] record (a few hundred bytes, see
//! [`crate::park`]), which the fleet keeps in a table by device index with one timer
//! heap for all sleepers. One task takes each sleeper up again at its wake time as a new
//! client ([`Client::resume`](crate::client)), which sends an Update (not a Register)
//! from a new socket, runs its awake window and parks again. Devices not in queue mode,
//! and devices downloading or installing firmware or in the middle of an exchange, stay
//! running clients. At most [`FleetConfig::max_awake`] devices run at once: a start or
//! a wake beyond that waits for one to park, since each running device holds a socket.
//!
//! With a behaviour [`Profile`], device `i` is the template with the values it drew from
//! the profile ([`Profile::device`]), then the [`Overrides`] (the command line's flags)
//! on top. The profile's cells are made once here and shared by the devices in them. A
//! parked device keeps none of this: its configuration is drawn again when it wakes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{ParkHook, ParkingLot};
use crate::network::Cell;
use crate::park::Parked;
use crate::profile::Profile;
use crate::{Client, ClientHandle, Config};

/// The first device's address: above 127.0.0.0/16, where servers usually listen.
pub const FIRST_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 0);
/// Devices a fleet may hold: the loopback addresses above [`FIRST_ADDRESS`].
pub const MAX_DEVICES: usize = (1 << 24) - (1 << 16);
/// Devices running at once unless configured otherwise: each holds a socket, and a
/// process commonly may open 20,000 files; the rest is room for firmware downloads'
/// sockets and the process's own.
pub const DEFAULT_MAX_AWAKE: usize = 16_000;

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
    /// Devices running (holding a socket) at once, at least 1.
    pub max_awake: usize,
    /// Park sleeping queue-mode devices (false: every device stays a running client,
    /// as before parking existed; for comparisons).
    pub park: bool,
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
            max_awake: DEFAULT_MAX_AWAKE,
            park: true,
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
        if let Some(stats) = &c.firmware.stats {
            c.firmware.stats = Some(stats.for_device(i));
        }
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
    /// Parked now.
    pub asleep: usize,
    /// Running clients now (awake, or asleep with work under way, or starting).
    pub awake: usize,
    /// Parked devices taken up again so far.
    pub wakes: usize,
    /// Parked devices that could not be taken up again (a bug if ever above 0).
    pub lost: usize,
    /// What the parked records hold ([`Parked::footprint`]), in all.
    pub parked_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    #[error("a fleet holds 1 to {MAX_DEVICES} devices")]
    Size,
    #[error("the start rate is at least one device a second")]
    Rate,
    #[error("at least one device must be allowed to run")]
    MaxAwake,
    #[error("the fleet has no device {0} (out of range, never started, or stopped)")]
    NoDevice(usize),
    #[error("device {0} is still starting")]
    Busy(usize),
    #[error("parked device {0} could not be started again")]
    Lost(usize),
}

/// A timer of the heap: the due time in milliseconds of [`Parked::due_ms`] above the
/// device's index, so that a sleeper costs the heap 8 bytes.
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const _: () = assert!(MAX_DEVICES as u64 <= INDEX_MASK + 1);

fn timer_key(due_ms: u64, index: u32) -> u64 {
    (due_ms.min(u64::MAX >> INDEX_BITS) << INDEX_BITS) | u64::from(index)
}

/// Where each device is, by index.
struct Table {
    parked: Vec<Option<Box<Parked>>>,
    /// Running clients; `None` while one is being started.
    running: HashMap<u32, Option<ClientHandle>>,
    timers: BinaryHeap<Reverse<u64>>,
    asleep: usize,
    parked_bytes: usize,
    /// Shutting down: nothing parks or wakes any more.
    closing: bool,
}

impl Table {
    /// Takes device `index`'s record to run it; with `due_ms`, only if it is the one
    /// that timer was filed for (a device woken early and parked again has another).
    fn unpark(&mut self, index: u32, due_ms: Option<u64>) -> Option<Box<Parked>> {
        if self.closing {
            return None;
        }
        let slot = self.parked.get_mut(index as usize)?;
        let filed = |p: &Parked| p.due_ms().min(u64::MAX >> INDEX_BITS);
        if due_ms.is_some_and(|d| slot.as_deref().is_some_and(|p| filed(p) != d)) {
            return None;
        }
        let p = slot.take()?;
        self.asleep -= 1;
        self.parked_bytes -= p.footprint();
        self.running.insert(index, None);
        Some(p)
    }
}

struct Shared {
    cfg: FleetConfig,
    cells: Vec<Arc<Cell>>,
    table: Mutex<Table>,
    started: AtomicUsize,
    registered: AtomicUsize,
    failed: AtomicUsize,
    wakes: AtomicUsize,
    lost: AtomicUsize,
    /// An earlier timer was filed.
    timer: Notify,
    /// Every device registered or failed.
    settled: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while the lock was held leaves a table that is still one.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn progress(&self) -> Progress {
        let t = self.lock();
        Progress {
            started: self.started.load(Ordering::Relaxed),
            registered: self.registered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            asleep: t.asleep,
            awake: t.running.len(),
            wakes: self.wakes.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            parked_bytes: t.parked_bytes,
        }
    }

    fn hook(self: &Arc<Self>, index: u32) -> Option<ParkHook> {
        self.cfg.park.then(|| ParkHook {
            index,
            lot: self.clone(),
        })
    }

    /// Keeps the handle of a client just started, unless the device parked already.
    fn running(&self, index: u32, handle: &ClientHandle) {
        if let Some(slot @ None) = self.lock().running.get_mut(&index) {
            *slot = Some(handle.clone());
        }
    }

    fn settle_one(&self, registered: bool) {
        let counter = if registered {
            &self.registered
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let done = self.registered.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
        if done >= self.cfg.count {
            self.settled.notify_one();
        }
    }

    /// Waits, up to `limit`, until fewer than `max_awake` devices run.
    async fn room(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        // Bounded by `limit`: a poll every 10 ms, only while the fleet is full.
        while self.lock().running.len() >= self.cfg.max_awake {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Device `index`'s first start: it registers, and parks when it first sleeps.
    async fn first_start(self: Arc<Self>, index: u32, config: Config) {
        let timeout = self.cfg.register_timeout;
        match Client::start_parking(config, self.hook(index)).await {
            Ok(h) => {
                self.running(index, &h);
                let registered = h.wait_registered(timeout).await.is_ok();
                self.settle_one(registered);
            }
            Err(e) => {
                tracing::debug!(error = %e, "device did not start");
                self.lock().running.remove(&index);
                self.settle_one(false);
            }
        }
    }

    /// Runs a parked device (taken with [`Table::unpark`]) again.
    fn resume(self: &Arc<Self>, index: u32, parked: Parked) -> Option<ClientHandle> {
        let config = self.cfg.device_config(index as usize, &self.cells);
        match Client::resume(config, parked, self.hook(index)) {
            Ok(h) => {
                self.wakes.fetch_add(1, Ordering::Relaxed);
                self.running(index, &h);
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, index, "parked device not started again");
                self.lost.fetch_add(1, Ordering::Relaxed);
                self.lock().running.remove(&index);
                None
            }
        }
    }
}

impl ParkingLot for Shared {
    fn park(&self, index: u32, parked: Box<Parked>) -> Result<(), Box<Parked>> {
        let mut t = self.lock();
        if t.closing || !self.cfg.park {
            return Err(parked);
        }
        let due = parked.due_ms();
        let bytes = parked.footprint();
        match t.parked.get_mut(index as usize) {
            Some(slot @ None) => *slot = Some(parked),
            _ => return Err(parked),
        }
        t.running.remove(&index);
        t.asleep += 1;
        t.parked_bytes += bytes;
        // A device that never has to wake (no lifetime, no wake time) waits for the
        // shutdown without a timer.
        if due != u64::MAX {
            let key = timer_key(due, index);
            let earliest = t.timers.peek().is_none_or(|top| key < top.0);
            t.timers.push(Reverse(key));
            drop(t);
            if earliest {
                self.timer.notify_one();
            }
        }
        Ok(())
    }
}

/// Starts the devices at the configured rate, each once room is free.
async fn start_devices(shared: Arc<Shared>) {
    let cfg = &shared.cfg;
    let gap = Duration::from_secs(1) / cfg.start_rate;
    let mut tick = tokio::time::interval(gap.max(Duration::from_micros(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..cfg.count {
        tick.tick().await;
        shared.started.fetch_add(1, Ordering::Relaxed);
        if !shared.room(cfg.register_timeout).await {
            tracing::debug!(i, "no room to start the device");
            shared.settle_one(false);
            continue;
        }
        let index = i as u32;
        shared.lock().running.insert(index, None);
        let config = cfg.device_config(i, &shared.cells);
        tokio::spawn(shared.clone().first_start(index, config));
    }
}

/// The one task that wakes every sleeper: the earliest timer first, each device once
/// room is free.
async fn wake_sleepers(shared: Arc<Shared>) {
    // Each pass wakes a device, waits for a timer or for room, or skips a stale timer.
    loop {
        let top = shared.lock().timers.peek().map(|k| k.0);
        let Some(key) = top else {
            shared.timer.notified().await;
            continue;
        };
        let (due_ms, index) = (key >> INDEX_BITS, (key & INDEX_MASK) as u32);
        let due = crate::park::instant_of(due_ms);
        if let Some(due) = due.filter(|d| *d > Instant::now()) {
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = shared.timer.notified() => {}
            }
            continue;
        }
        if shared.lock().running.len() >= shared.cfg.max_awake {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let parked = {
            let mut t = shared.lock();
            t.timers.pop();
            t.unpark(index, Some(due_ms))
        };
        if let Some(p) = parked {
            shared.resume(index, *p);
        }
    }
}

/// A running fleet.
pub struct Fleet {
    shared: Arc<Shared>,
    scheduler: Option<JoinHandle<()>>,
    pub started_at: Instant,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(s) = &self.scheduler {
            s.abort();
        }
    }
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
        if cfg.max_awake == 0 {
            return Err(FleetError::MaxAwake);
        }
        let cells = cfg.cells();
        let mut parked = Vec::new();
        parked.resize_with(cfg.count, || None);
        let shared = Arc::new(Shared {
            table: Mutex::new(Table {
                parked,
                running: HashMap::new(),
                timers: BinaryHeap::new(),
                asleep: 0,
                parked_bytes: 0,
                closing: false,
            }),
            cfg,
            cells,
            started: AtomicUsize::new(0),
            registered: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            wakes: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
            timer: Notify::new(),
            settled: Notify::new(),
        });
        let started_at = Instant::now();
        let scheduler = tokio::spawn(wake_sleepers(shared.clone()));
        let spawner = tokio::spawn(start_devices(shared.clone()));
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        loop {
            let p = shared.progress();
            if p.registered + p.failed >= shared.cfg.count {
                break;
            }
            tokio::select! {
                () = shared.settled.notified() => {}
                _ = every.tick() => report(p, started_at.elapsed()),
            }
        }
        let _ = spawner.await;
        report(shared.progress(), started_at.elapsed());
        Ok(Fleet {
            shared,
            scheduler: Some(scheduler),
            started_at,
        })
    }

    pub fn progress(&self) -> Progress {
        self.shared.progress()
    }

    /// Devices in the fleet, started or not.
    pub fn len(&self) -> usize {
        self.shared.cfg.count
    }

    pub fn is_empty(&self) -> bool {
        self.shared.cfg.count == 0
    }

    /// Whether device `i` is parked now.
    pub fn is_parked(&self, i: usize) -> bool {
        self.shared
            .lock()
            .parked
            .get(i)
            .is_some_and(Option::is_some)
    }

    /// The record of device `i` while it is parked, measured by `f`.
    pub fn inspect_parked<T>(&self, i: usize, f: impl FnOnce(&Parked) -> T) -> Option<T> {
        self.shared.lock().parked.get(i)?.as_deref().map(f)
    }

    /// A handle to device `i`; a parked device is woken for it (it sends its Update
    /// now rather than at its wake time). The handle reaches the device until it parks
    /// again ([`ClientEvent::Parked`](crate::ClientEvent::Parked)); ask again after
    /// that.
    pub async fn device(&self, i: usize) -> Result<ClientHandle, FleetError> {
        let index = u32::try_from(i)
            .ok()
            .filter(|_| i < self.shared.cfg.count)
            .ok_or(FleetError::NoDevice(i))?;
        enum Found {
            Running(ClientHandle),
            Parked(Box<Parked>),
            Starting,
            Gone,
        }
        // Bounded: a device being started is one within a few milliseconds.
        for _ in 0..500 {
            let found = {
                let mut t = self.shared.lock();
                match t.running.get(&index) {
                    Some(Some(h)) => Found::Running(h.clone()),
                    Some(None) => Found::Starting,
                    None => match t.unpark(index, None) {
                        Some(p) => Found::Parked(p),
                        None => Found::Gone,
                    },
                }
            };
            match found {
                Found::Running(h) => return Ok(h),
                Found::Parked(mut p) => {
                    p.wake_now();
                    return self.shared.resume(index, *p).ok_or(FleetError::Lost(i));
                }
                Found::Starting => tokio::time::sleep(Duration::from_millis(10)).await,
                Found::Gone => return Err(FleetError::NoDevice(i)),
            }
        }
        Err(FleetError::Busy(i))
    }

    /// The profile's cells (none without a profile).
    pub fn cells(&self) -> &[Arc<Cell>] {
        &self.shared.cells
    }

    /// Datagrams the cells carried and dropped (queued past their bound), in all.
    pub fn cell_counts(&self) -> (u64, u64) {
        self.shared.cells.iter().fold((0, 0), |(p, d), c| {
            let (cp, cd) = c.counts();
            (p + cp, d + cd)
        })
    }

    /// De-registers every device, at most `parallel` at once: the running ones through
    /// their handles, the parked ones each started again for its De-register (from a
    /// new socket, without an Update first).
    pub async fn shutdown(mut self, parallel: usize) {
        self.shared.lock().closing = true;
        // Nothing parks or wakes from now on; a wake under way finishes first.
        if let Some(s) = self.scheduler.take() {
            s.abort();
            let _ = s.await;
        }
        let parallel = parallel.clamp(1, self.shared.cfg.max_awake);
        let handles: Vec<ClientHandle> = self
            .shared
            .lock()
            .running
            .drain()
            .filter_map(|(_, h)| h)
            .collect();
        let mut tasks = JoinSet::new();
        for h in handles {
            while tasks.len() >= parallel {
                tasks.join_next().await;
            }
            tasks.spawn(async move {
                let _ = h.shutdown().await;
            });
        }
        for i in 0..self.shared.cfg.count {
            let parked = {
                let mut t = self.shared.lock();
                let p = t.parked.get_mut(i).and_then(Option::take);
                if let Some(p) = &p {
                    t.asleep -= 1;
                    t.parked_bytes -= p.footprint();
                }
                p
            };
            let Some(p) = parked else {
                continue;
            };
            while tasks.len() >= parallel {
                tasks.join_next().await;
            }
            let config = self.shared.cfg.device_config(i, &self.shared.cells);
            match Client::resume(config, *p, None) {
                Ok(h) => {
                    tasks.spawn(async move {
                        let _ = h.shutdown().await;
                    });
                }
                Err(e) => tracing::warn!(error = %e, i, "parked device not de-registered"),
            }
        }
        while tasks.join_next().await.is_some() {}
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
