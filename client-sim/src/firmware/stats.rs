//! What a fleet's firmware downloads and installations cost and achieved, counted on the
//! devices' side, for benchmarks (`lwm2m-client-sim bench campaign`): downloads started,
//! completed (every byte of the package arrived) and failed (ended any other way: given
//! up, stopped by a new Package URI or a cancel, or the client stopped), the bytes the
//! download sockets received through the network (CoAP messages or HTTP body chunks,
//! duplicates included) split by whether their download completed, the downloads running
//! at once in each cell and the most there ever were, how long the downloads took, and
//! when each device ran each firmware version it installed (/3/0/3 after the update).
//!
//! A fleet shares one [`FirmwareStats`]; each device's [`FirmwareConfig`] carries a
//! [`StatsHandle`] naming the device (the fleet sets the index). Nothing is counted
//! without one.
//!
//! [`FirmwareConfig`]: super::FirmwareConfig

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Installations kept; more are counted but not kept (a benchmark's fleet installs a
/// few times per device at most).
pub const MAX_INSTALLS: usize = 4_000_000;

/// Downloads of one cell (`None`: devices in no cell, on Wi-Fi or without a profile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CellLoad {
    pub active: u32,
    pub peak: u32,
}

/// One installation: device `device` ran `version` from `at` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub device: u32,
    pub at: Instant,
    pub version: String,
}

/// The totals so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownloadCounts {
    pub started: u64,
    pub completed: u64,
    /// Ended without the whole package.
    pub failed: u64,
    /// Running now.
    pub active: u64,
    /// Received by every download, running ones included.
    pub bytes: u64,
    /// Received by downloads that completed.
    pub bytes_completed: u64,
    /// Received by downloads that failed.
    pub bytes_failed: u64,
    /// Devices that started at least one download.
    pub devices: u64,
    /// How long the downloads that ended took, in all (milliseconds): time the devices
    /// spent with a download's socket open.
    pub download_ms: u64,
}

#[derive(Debug, Default)]
struct Tables {
    cells: HashMap<Option<u32>, CellLoad>,
    /// Downloads started, by device.
    starts: HashMap<u32, u32>,
    installs: Vec<Install>,
}

/// The counters a fleet shares.
#[derive(Debug, Default)]
pub struct FirmwareStats {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    bytes_completed: AtomicU64,
    bytes_failed: AtomicU64,
    download_ms: AtomicU64,
    installs_dropped: AtomicU64,
    tables: Mutex<Tables>,
}

impl FirmwareStats {
    pub fn new() -> Arc<FirmwareStats> {
        Arc::new(FirmwareStats::default())
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A handle for the fleet's template; the fleet names each device's.
    pub fn handle(self: &Arc<Self>) -> StatsHandle {
        StatsHandle {
            shared: self.clone(),
            device: 0,
        }
    }

    pub fn counts(&self) -> DownloadCounts {
        let started = self.started.load(Ordering::Relaxed);
        let completed = self.completed.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        DownloadCounts {
            started,
            completed,
            failed,
            active: started.saturating_sub(completed + failed),
            bytes: self.bytes.load(Ordering::Relaxed),
            bytes_completed: self.bytes_completed.load(Ordering::Relaxed),
            bytes_failed: self.bytes_failed.load(Ordering::Relaxed),
            devices: self.lock().starts.len() as u64,
            download_ms: self.download_ms.load(Ordering::Relaxed),
        }
    }

    /// Downloads now and at most, by cell id.
    pub fn cells(&self) -> Vec<(Option<u32>, CellLoad)> {
        let mut v: Vec<_> = self.lock().cells.iter().map(|(k, l)| (*k, *l)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Downloads started by each device that started any.
    pub fn starts(&self) -> Vec<(u32, u32)> {
        let mut v: Vec<_> = self.lock().starts.iter().map(|(d, n)| (*d, *n)).collect();
        v.sort_unstable();
        v
    }

    /// Every installation kept, in the order they happened.
    pub fn installs(&self) -> Vec<Install> {
        self.lock().installs.clone()
    }

    /// Installations not kept because [`MAX_INSTALLS`] were.
    pub fn installs_dropped(&self) -> u64 {
        self.installs_dropped.load(Ordering::Relaxed)
    }
}

/// One device's way to the fleet's counters, in its [`FirmwareConfig`](super::FirmwareConfig).
#[derive(Clone)]
pub struct StatsHandle {
    shared: Arc<FirmwareStats>,
    device: u32,
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsHandle")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl StatsHandle {
    /// The same counters, for device `index`.
    pub fn for_device(&self, index: usize) -> StatsHandle {
        StatsHandle {
            shared: self.shared.clone(),
            device: u32::try_from(index).unwrap_or(u32::MAX),
        }
    }

    pub fn device(&self) -> u32 {
        self.device
    }

    pub fn stats(&self) -> &Arc<FirmwareStats> {
        &self.shared
    }

    /// A download starts in `cell`; it counts as failed unless [`Tally::complete`] is
    /// called before it is dropped.
    pub(crate) fn download(&self, cell: Option<u32>) -> Tally {
        let s = &self.shared;
        s.started.fetch_add(1, Ordering::Relaxed);
        {
            let mut t = s.lock();
            *t.starts.entry(self.device).or_insert(0) += 1;
            let load = t.cells.entry(cell).or_default();
            load.active += 1;
            load.peak = load.peak.max(load.active);
        }
        Tally {
            shared: s.clone(),
            cell,
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            complete: AtomicBool::new(false),
        }
    }

    /// The device runs `version` now (its /3/0/3 after an update).
    pub(crate) fn installed(&self, version: &str) {
        let mut t = self.shared.lock();
        if t.installs.len() >= MAX_INSTALLS {
            self.shared.installs_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        t.installs.push(Install {
            device: self.device,
            at: Instant::now(),
            version: version.to_string(),
        });
    }
}

/// One running download's share of the counters.
#[derive(Debug)]
pub(crate) struct Tally {
    shared: Arc<FirmwareStats>,
    cell: Option<u32>,
    started: Instant,
    bytes: AtomicU64,
    complete: AtomicBool,
}

impl Tally {
    pub(crate) fn received(&self, len: usize) {
        let len = len as u64;
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.shared.bytes.fetch_add(len, Ordering::Relaxed);
    }

    pub(crate) fn complete(&self) {
        self.complete.store(true, Ordering::Relaxed);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let s = &self.shared;
        let bytes = self.bytes.load(Ordering::Relaxed);
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        s.download_ms.fetch_add(ms, Ordering::Relaxed);
        if self.complete.load(Ordering::Relaxed) {
            s.completed.fetch_add(1, Ordering::Relaxed);
            s.bytes_completed.fetch_add(bytes, Ordering::Relaxed);
        } else {
            s.failed.fetch_add(1, Ordering::Relaxed);
            s.bytes_failed.fetch_add(bytes, Ordering::Relaxed);
        }
        if let Some(load) = s.lock().cells.get_mut(&self.cell) {
            load.active = load.active.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_are_counted_by_outcome_and_cell() {
        let stats = FirmwareStats::new();
        let a = stats.handle().for_device(3);
        let b = stats.handle().for_device(4);
        let one = a.download(Some(7));
        let two = b.download(Some(7));
        let three = b.download(None);
        one.received(100);
        two.received(40);
        three.received(5);
        assert_eq!(stats.counts().active, 3);
        one.complete();
        drop(one);
        drop(two);
        let _again = a.download(Some(7));
        let c = stats.counts();
        assert_eq!((c.started, c.completed, c.failed, c.active), (4, 1, 1, 2));
        assert_eq!((c.bytes, c.bytes_completed, c.bytes_failed), (145, 100, 40));
        assert_eq!(c.devices, 2);
        assert_eq!(
            stats.cells(),
            vec![
                (None, CellLoad { active: 1, peak: 1 }),
                (Some(7), CellLoad { active: 1, peak: 2 })
            ]
        );
        assert_eq!(stats.starts(), vec![(3, 2), (4, 2)]);
        b.installed("2.0.0");
        let i = stats.installs();
        assert_eq!(
            (i.len(), i[0].device, i[0].version.as_str()),
            (1, 4, "2.0.0")
        );
    }
}
