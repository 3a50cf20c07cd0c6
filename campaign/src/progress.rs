//! Counts and estimates for the operator: kept up to date on every transition so a
//! progress report costs the number of waves and cells, never of devices.

use serde::{Deserialize, Serialize};

use crate::device::StateKind;
use crate::outcome::FailureKind;
use crate::scheduler::Status;

/// Devices per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub waiting_for_wave: u32,
    pub pending: u32,
    pub deferred: u32,
    pub skipped: u32,
    pub in_progress: u32,
    pub recovering: u32,
    pub waiting_retry: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub missed_deadline: u32,
}

impl StateCounts {
    fn slot(&mut self, kind: StateKind) -> &mut u32 {
        match kind {
            StateKind::WaitingForWave => &mut self.waiting_for_wave,
            StateKind::Pending => &mut self.pending,
            StateKind::Deferred => &mut self.deferred,
            StateKind::Skipped => &mut self.skipped,
            StateKind::InProgress => &mut self.in_progress,
            StateKind::Recovering => &mut self.recovering,
            StateKind::WaitingRetry => &mut self.waiting_retry,
            StateKind::Succeeded => &mut self.succeeded,
            StateKind::Failed => &mut self.failed,
            StateKind::Cancelled => &mut self.cancelled,
            StateKind::MissedDeadline => &mut self.missed_deadline,
        }
    }

    pub(crate) fn add(&mut self, kind: StateKind) {
        let n = self.slot(kind);
        *n = n.saturating_add(1);
    }

    pub(crate) fn remove(&mut self, kind: StateKind) {
        let n = self.slot(kind);
        *n = n.saturating_sub(1);
    }

    pub fn get(&self, kind: StateKind) -> u32 {
        let mut copy = *self;
        *copy.slot(kind)
    }

    pub fn total(&self) -> u32 {
        self.non_final() + self.final_count()
    }

    pub fn final_count(&self) -> u32 {
        self.skipped + self.succeeded + self.failed + self.cancelled + self.missed_deadline
    }

    pub fn non_final(&self) -> u32 {
        self.waiting_for_wave
            + self.pending
            + self.deferred
            + self.in_progress
            + self.recovering
            + self.waiting_retry
    }

    /// Devices that ended with an outcome of their own: the error threshold's sample.
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed
    }
}

/// One opened wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveProgress {
    pub wave: u16,
    pub opened_at_unix_ms: u64,
    /// Devices assigned when it opened (joins to the last wave come on top).
    pub size: u32,
    pub counts: StateCounts,
}

/// One cell with devices in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellProgress {
    /// `None` for devices whose cell is unknown.
    pub cell: Option<String>,
    pub in_flight: u32,
    /// Its cap under the table given to `progress`.
    pub cap: u32,
    /// Devices currently in this cell, by state.
    pub counts: StateCounts,
}

/// A recent failure, for the operator's eye; the server keeps the full history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureNote {
    pub endpoint: String,
    pub at_unix_ms: u64,
    pub attempt: u16,
    pub kind: FailureKind,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub status: Status,
    pub counts: StateCounts,
    pub waves: Vec<WaveProgress>,
    /// Waves the policy lists; `waves.len()` of them have opened.
    pub waves_planned: u16,
    pub cells: Vec<CellProgress>,
    pub in_flight: u32,
    pub mean_success_ms: Option<u64>,
    /// A rough figure: remaining devices per cell, in rounds of the cell's capacity,
    /// at the mean duration of successful updates; windows, waves and wakes ignored.
    pub estimated_completion_unix_ms: Option<u64>,
    pub bytes_sent: u64,
    pub bytes_wasted: u64,
    pub recent_failures: Vec<FailureNote>,
    /// Where the maintenance windows stand; `None` when the policy has none (always
    /// open), so that an operator sees why nothing starts while every device waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowProgress>,
}

/// The maintenance windows at the time of a progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowProgress {
    pub open: bool,
    /// When the open window closes.
    pub until_unix_ms: Option<u64>,
    /// When the next window opens, while they are closed (`None`: none ever will).
    pub next_open_unix_ms: Option<u64>,
}

/// Completion estimate: the slowest of the cells, each working through its
/// remaining devices `cap` at a time, and of the global cap doing the same.
pub(crate) fn estimate_completion(
    now: u64,
    mean_ms: Option<u64>,
    remaining_total: u32,
    max_concurrent: u32,
    cells: impl Iterator<Item = (u32, u32)>,
) -> Option<u64> {
    if remaining_total == 0 {
        return Some(now);
    }
    let mean = mean_ms?;
    let rounds = |remaining: u32, cap: u32| u64::from(remaining.div_ceil(cap.max(1)));
    let slowest = cells
        .map(|(remaining, cap)| rounds(remaining, cap))
        .chain(std::iter::once(rounds(remaining_total, max_concurrent)))
        .max()
        .unwrap_or(0);
    Some(now.saturating_add(slowest.saturating_mul(mean)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_by_kind() {
        let mut c = StateCounts::default();
        c.add(StateKind::Pending);
        c.add(StateKind::Pending);
        c.add(StateKind::Succeeded);
        c.add(StateKind::Skipped);
        c.add(StateKind::Failed);
        assert_eq!(c.get(StateKind::Pending), 2);
        assert_eq!(c.total(), 5);
        assert_eq!(c.final_count(), 3);
        assert_eq!(c.non_final(), 2);
        assert_eq!(c.finished(), 2);
        c.remove(StateKind::Pending);
        c.remove(StateKind::Cancelled);
        assert_eq!(c.pending, 1);
        assert_eq!(c.cancelled, 0, "never below zero");
    }

    #[test]
    fn the_slowest_cell_sets_the_estimate() {
        // 10 left in a cell of cap 2 (5 rounds), 3 left in a cell of cap 10 (1 round).
        let eta = estimate_completion(1_000, Some(60), 13, 100, [(10, 2), (3, 10)].into_iter());
        assert_eq!(eta, Some(1_000 + 5 * 60));
        // The global cap can be the bottleneck instead.
        let eta = estimate_completion(0, Some(60), 13, 1, [(10, 20)].into_iter());
        assert_eq!(eta, Some(13 * 60));
        // A congested cell (cap 0) counts as one at a time.
        let eta = estimate_completion(0, Some(1), 4, 100, [(4, 0)].into_iter());
        assert_eq!(eta, Some(4));
    }

    #[test]
    fn no_estimate_without_a_success_unless_nothing_is_left() {
        assert_eq!(estimate_completion(5, None, 3, 1, std::iter::empty()), None);
        assert_eq!(
            estimate_completion(5, None, 0, 1, std::iter::empty()),
            Some(5)
        );
        assert_eq!(
            estimate_completion(u64::MAX, Some(u64::MAX), 9, 1, std::iter::empty()),
            Some(u64::MAX)
        );
    }
}
