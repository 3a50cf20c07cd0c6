//! The campaign state machine: which device starts when.
//!
//! The server drives it with events (devices added, facts changed, a device woke,
//! an outcome) and asks it, by [`Campaign::poll`], what to start now. Nothing here
//! reads a clock or does I/O: every call takes the time, so tests run a campaign of
//! days in microseconds.
//!
//! A poll costs what it decides plus the timers due, not the number of devices:
//! devices that may start wait in their cell's ready queue; back-offs and deferrals
//! wait in a timer heap; full cells are looked at again only when a slot frees in
//! them or the cell table changes. Three things scan every device, each once per
//! campaign or per restart: the deadline, `cancel` and `recover`.

mod persist;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::backoff;
use crate::cells::{CellBook, CellTable, Sched};
use crate::device::{AfterFailure, DeviceRecord, DeviceState, Event, StateKind, TransitionError};
use crate::facts::{DeviceFacts, FactsError, Packed};
use crate::outcome::{truncate_detail, FailureKind, Outcome, Retry};
use crate::policy::{Policy, PolicyError};
use crate::progress::{
    estimate_completion, CellProgress, FailureNote, Progress, StateCounts, WaveProgress,
    WindowProgress,
};
use crate::rules::{self, Verdict};
use crate::windows::{WindowState, Windows};

pub use persist::{Header, Row, RowRef};

/// Most devices in one campaign.
pub const MAX_DEVICES: usize = 1_000_000;
/// Longest campaign or package id.
pub const MAX_ID: usize = 256;
/// Recent failures kept for the progress report.
pub const RECENT_FAILURES: usize = 32;

/// What the server must do now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    /// Start this device's update; `attempt` counts from 1.
    Start { endpoint: String, attempt: u16 },
    /// The campaign paused itself; nothing starts until [`Campaign::resume`].
    Pause { reason: String },
    /// Every device is final. Said once.
    Complete,
}

/// Why a campaign is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseCause {
    Operator,
    ErrorThreshold,
    /// A wave ended below the success threshold; resuming opens the next wave anyway.
    WaveGate {
        wave: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Status {
    Running,
    Paused { reason: String, cause: PauseCause },
    Cancelled,
    Completed,
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused { .. } => "paused",
            Status::Cancelled => "cancelled",
            Status::Completed => "completed",
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self, Status::Cancelled | Status::Completed)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CampaignError {
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Facts(#[from] FactsError),
    #[error("{what} {value:?} is empty or longer than {MAX_ID} bytes")]
    Id { what: &'static str, value: String },
    #[error("no device {0:?} in this campaign")]
    UnknownDevice(String),
    #[error("{endpoint}: {source}")]
    Transition {
        endpoint: String,
        #[source]
        source: TransitionError,
    },
    #[error("the campaign is {0}")]
    Closed(&'static str),
    #[error("the campaign has started and does not take new members (join_new_members is off)")]
    JoinsDisabled,
    #[error("a campaign holds at most {MAX_DEVICES} devices")]
    TooManyDevices,
    #[error("the campaign is not paused")]
    NotPaused,
    #[error("the saved campaign is inconsistent: {0}")]
    Snapshot(String),
}

/// What [`Campaign::add_devices`] did with a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddSummary {
    pub added: usize,
    /// Already members: their facts were updated.
    pub updated: usize,
    pub rejected: usize,
    pub first_error: Option<FactsError>,
}

/// What the server found on a device that was in progress when it stopped, from
/// Firmware Update State and Update Result (/5/0/3, /5/0/5) and the firmware
/// version (/3/0/3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// The update ended meanwhile, with this outcome.
    Finished(Outcome),
    /// Still downloading (State 1 or 2, Execute not sent).
    Downloading,
    /// Execute Update was sent; the device is installing.
    Installing,
    /// Nothing of the update reached the device (State 0, no result, old version):
    /// the start is taken back and the attempt not counted.
    NotStarted,
}

/// What the server must do about a resolved recovering device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Its state is now this kind; nothing to do on the device.
    Settled(StateKind),
    /// Keep following its update as before.
    Continue,
    /// The campaign was cancelled meanwhile: abort its download.
    Abort,
}

/// A device as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    pub endpoint: String,
    pub wave: Option<u16>,
    pub kind: StateKind,
    pub state: DeviceState,
    pub attempts: u16,
    pub cell: Option<String>,
    /// The cell its download's slot is charged to, while it holds one.
    pub slot_cell: Option<String>,
    pub unfit_wakes: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WaveRecord {
    #[serde(rename = "t")]
    opened_at: u64,
    #[serde(rename = "n")]
    size: u32,
}

/// Finished and failed devices when the campaign last resumed: the error
/// threshold counts from there, so a resumed campaign gets a fresh sample instead of
/// pausing again at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Baselines {
    campaign: (u32, u32),
    waves: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Durations {
    sum_ms: u64,
    count: u64,
}

/// The window state computed at `from`, valid until `until`.
#[derive(Debug, Clone, Copy)]
struct WindowCache {
    from: u64,
    until: u64,
    state: WindowState,
}

/// One firmware campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    id: String,
    package_id: String,
    package_size_bytes: u64,
    policy: Policy,
    created_at: u64,
    status: Status,
    /// By index; removed devices leave `None` so indexes stay valid.
    devices: Vec<Option<DeviceRecord>>,
    by_endpoint: HashMap<String, u32>,
    /// Devices without a wave, in order of joining (removed ones dropped lazily).
    unassigned: VecDeque<u32>,
    waves: Vec<WaveRecord>,
    baselines: Baselines,
    gate_override: Option<u16>,
    deadline_passed: bool,
    durations: Durations,
    bytes_sent: u64,
    bytes_wasted: u64,
    recent_failures: VecDeque<FailureNote>,
    // Rebuilt on load, never persisted:
    windows: Windows,
    window_cache: Option<WindowCache>,
    cells: CellBook,
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    counts: StateCounts,
    wave_counts: Vec<StateCounts>,
    cell_counts: Vec<StateCounts>,
    in_flight: u32,
    estimate_ms: u64,
    /// Something changed at this time that a poll should look at.
    poll_hint: Option<u64>,
    /// Slots whose device row changed since it was last written (see
    /// [`Campaign::take_changed`]).
    changed: BTreeSet<u32>,
}

fn check_id(what: &'static str, value: &str) -> Result<(), CampaignError> {
    if value.is_empty() || value.len() > MAX_ID {
        return Err(CampaignError::Id {
            what,
            value: value.chars().take(64).collect(),
        });
    }
    Ok(())
}

/// `a >= fraction * b`, tolerant of the rounding in `0.9 * 10`.
fn reaches(a: u32, fraction: f64, b: u32) -> bool {
    f64::from(a) + 1e-9 >= fraction * f64::from(b)
}

fn percent(a: u32, b: u32) -> f64 {
    if b == 0 {
        0.0
    } else {
        (f64::from(a) * 1000.0 / f64::from(b)).round() / 10.0
    }
}

impl Campaign {
    pub fn new(
        id: impl Into<String>,
        package_id: impl Into<String>,
        package_size_bytes: u64,
        policy: Policy,
        now_unix_ms: u64,
    ) -> Result<Campaign, CampaignError> {
        let id = id.into();
        let package_id = package_id.into();
        check_id("campaign id", &id)?;
        check_id("package id", &package_id)?;
        policy.validate()?;
        if let Some(deadline) = policy.deadline_unix_ms {
            if deadline <= now_unix_ms {
                return Err(PolicyError::DeadlinePassed {
                    deadline,
                    now: now_unix_ms,
                }
                .into());
            }
        }
        let windows = Windows::compile(&policy.windows).map_err(|(index, source)| {
            CampaignError::Policy(PolicyError::Window { index, source })
        })?;
        if let Some(index) = windows.never_opening(now_unix_ms) {
            return Err(PolicyError::Window {
                index,
                source: crate::windows::WindowError::NeverOpens(policy.windows[index].cron.clone()),
            }
            .into());
        }
        let mut c = Campaign::empty(id, package_id, package_size_bytes, policy, now_unix_ms);
        c.windows = windows;
        Ok(c)
    }

    fn empty(
        id: String,
        package_id: String,
        package_size_bytes: u64,
        policy: Policy,
        created_at: u64,
    ) -> Campaign {
        let estimate_ms = policy.estimated_update_ms(package_size_bytes);
        Campaign {
            id,
            package_id,
            package_size_bytes,
            policy,
            created_at,
            status: Status::Running,
            devices: Vec::new(),
            by_endpoint: HashMap::new(),
            unassigned: VecDeque::new(),
            waves: Vec::new(),
            baselines: Baselines::default(),
            gate_override: None,
            deadline_passed: false,
            durations: Durations::default(),
            bytes_sent: 0,
            bytes_wasted: 0,
            recent_failures: VecDeque::new(),
            windows: Windows::default(),
            window_cache: None,
            cells: CellBook::default(),
            timers: BinaryHeap::new(),
            counts: StateCounts::default(),
            wave_counts: Vec::new(),
            cell_counts: vec![StateCounts::default()],
            in_flight: 0,
            estimate_ms,
            poll_hint: None,
            changed: BTreeSet::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn package_id(&self) -> &str {
        &self.package_id
    }

    pub fn package_size_bytes(&self) -> u64 {
        self.package_size_bytes
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Devices in the campaign, final ones included.
    pub fn len(&self) -> usize {
        self.by_endpoint.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_endpoint.is_empty()
    }

    /// The estimate a queue-mode device's wake must fit.
    pub fn estimated_update_ms(&self) -> u64 {
        self.estimate_ms
    }

    pub fn device(&self, endpoint: &str) -> Option<DeviceView> {
        let rec = self.record(*self.by_endpoint.get(endpoint)?)?;
        Some(DeviceView {
            endpoint: rec.endpoint.clone(),
            wave: rec.wave,
            kind: rec.kind(),
            state: rec.state,
            attempts: rec.attempts,
            cell: self.cells.name(rec.facts.cell()).map(str::to_string),
            slot_cell: rec
                .state
                .slot()
                .and_then(|c| self.cells.name(c))
                .map(str::to_string),
            unfit_wakes: rec.unfit_wakes,
        })
    }

    /// Endpoints with their state kind, in the order they joined.
    pub fn devices(&self) -> impl Iterator<Item = (&str, StateKind)> {
        self.devices
            .iter()
            .flatten()
            .map(|r| (r.endpoint.as_str(), r.kind()))
    }

    fn record(&self, id: u32) -> Option<&DeviceRecord> {
        self.devices.get(id as usize).and_then(Option::as_ref)
    }

    /// The one way to change a device: it marks the device's row for the next save.
    fn record_mut(&mut self, id: u32) -> Option<&mut DeviceRecord> {
        let rec = self.devices.get_mut(id as usize).and_then(Option::as_mut)?;
        self.changed.insert(id);
        Some(rec)
    }

    fn lookup(&self, endpoint: &str) -> Result<u32, CampaignError> {
        self.by_endpoint
            .get(endpoint)
            .copied()
            .ok_or_else(|| CampaignError::UnknownDevice(endpoint.to_string()))
    }

    fn touch(&mut self, now: u64) {
        self.poll_hint = Some(self.poll_hint.map_or(now, |h| h.min(now)));
    }

    // ---- accounting ----

    /// Adds (`true`) or removes a device's contribution to every counter.
    fn account(&mut self, id: u32, add: bool) {
        let Some(rec) = self.record(id) else {
            return;
        };
        let (kind, wave, cell) = (rec.kind(), rec.wave, rec.facts.cell() as usize);
        let f = |c: &mut StateCounts| {
            if add {
                c.add(kind)
            } else {
                c.remove(kind)
            }
        };
        f(&mut self.counts);
        if let Some(c) = wave.and_then(|w| self.wave_counts.get_mut(w as usize)) {
            f(c);
        }
        if let Some(c) = self.cell_counts.get_mut(cell) {
            f(c);
        }
    }

    /// The one place a state changes: counters, slots and timers follow.
    fn set_state(&mut self, id: u32, new: DeviceState) {
        let Some(old) = self.record(id).map(|r| r.state) else {
            return;
        };
        self.account(id, false);
        if let Some(rec) = self.record_mut(id) {
            rec.state = new;
            rec.ticket = rec.ticket.wrapping_add(1);
            rec.queued = false;
        }
        self.account(id, true);
        match (old.slot(), new.slot()) {
            (Some(a), Some(b)) if a == b => {}
            (old_slot, new_slot) => {
                if let Some(c) = old_slot {
                    self.cells.release(c);
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                if let Some(c) = new_slot {
                    self.cells.charge(c);
                    self.in_flight = self.in_flight.saturating_add(1);
                }
            }
        }
        if let Some(t) = new.timer() {
            if old.timer() != Some(t) {
                self.timers.push(Reverse((t, id)));
            }
        }
    }

    fn transition(&mut self, id: u32, event: Event) -> Result<(), CampaignError> {
        let Some(rec) = self.record(id) else {
            return Ok(());
        };
        let new = rec
            .state
            .apply(event)
            .map_err(|source| CampaignError::Transition {
                endpoint: rec.endpoint.clone(),
                source,
            })?;
        if new != rec.state {
            self.set_state(id, new);
        }
        Ok(())
    }

    fn grow_cell_counts(&mut self) {
        if self.cell_counts.len() < self.cells.len() {
            self.cell_counts
                .resize(self.cells.len(), StateCounts::default());
        }
    }

    // ---- readiness ----

    /// Re-judges a device by the rules and puts it in or out of its ready queue.
    fn refresh(&mut self, id: u32, now: u64) {
        if self.status.is_closed() || self.deadline_passed {
            return;
        }
        let rules = &self.policy.rules;
        let Some(rec) = self.record(id) else {
            return;
        };
        if rec.wave.is_none()
            || !matches!(
                rec.state,
                DeviceState::Pending | DeviceState::Deferred { .. } | DeviceState::Skipped { .. }
            )
        {
            return;
        }
        let verdict = rules::evaluate(rules, &rec.facts, rec.wifi_since, now);
        if let Verdict::Defer {
            reason: rules::DeferReason::Wifi,
            ..
        } = verdict
        {
            if let Some(rec) = self.record_mut(id) {
                rec.wifi_since.get_or_insert(now);
            }
        }
        // Judged is allowed from all three states checked above.
        let _ = self.transition(id, Event::Judged(verdict));
        self.requeue(id, now);
    }

    /// Whether a device could be reached now, the fit of a wake aside.
    fn reachable(rec: &DeviceRecord, now: Option<u64>) -> bool {
        if !rec.facts.online() {
            return false;
        }
        if !rec.facts.queue_mode() {
            return true;
        }
        match (rec.awake_until, now) {
            (Some(until), Some(now)) => until > now,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Queues a pending device that can be reached, dequeues one that cannot.
    /// `now` is `None` when rebuilding after a load: wakes are checked at dispatch.
    fn requeue_at(&mut self, id: u32, now: Option<u64>) {
        let Some(rec) = self.record(id) else {
            return;
        };
        let ready =
            rec.state == DeviceState::Pending && rec.wave.is_some() && Self::reachable(rec, now);
        let cell = rec.facts.cell();
        let first = rec.facts.queue_mode() && now.is_some();
        let Some(rec) = self.record_mut(id) else {
            return;
        };
        match (ready, rec.queued) {
            (true, false) => {
                rec.ticket = rec.ticket.wrapping_add(1);
                rec.queued = true;
                let ticket = rec.ticket;
                self.cells.push_ready(cell, id, ticket, first);
            }
            (false, true) => {
                rec.ticket = rec.ticket.wrapping_add(1);
                rec.queued = false;
            }
            _ => {}
        }
    }

    fn requeue(&mut self, id: u32, now: u64) {
        self.requeue_at(id, Some(now));
    }

    fn unqueue(&mut self, id: u32) {
        if let Some(rec) = self.record_mut(id) {
            if rec.queued {
                rec.ticket = rec.ticket.wrapping_add(1);
                rec.queued = false;
            }
        }
    }

    /// Whether the ready-queue entry `(id, ticket)` may start now.
    fn dispatchable(&self, id: u32, ticket: u32, now: u64) -> bool {
        let Some(rec) = self.record(id) else {
            return false;
        };
        if !(rec.queued
            && rec.ticket == ticket
            && rec.state == DeviceState::Pending
            && rec.wave.is_some()
            && Self::reachable(rec, Some(now)))
        {
            return false;
        }
        if !rec.facts.queue_mode() {
            return true;
        }
        let Some(until) = rec.awake_until else {
            return false;
        };
        let fits = now.saturating_add(self.estimate_ms) <= until;
        let forced = self
            .policy
            .wake
            .force_after_unfit_wakes
            .is_some_and(|n| rec.unfit_wakes >= n);
        fits || forced
    }

    fn on_wake(&mut self, id: u32, awake_until: u64, now: u64) {
        if awake_until <= now {
            if let Some(rec) = self.record_mut(id) {
                rec.awake_until = None;
            }
            self.requeue(id, now);
            return;
        }
        if let Some(rec) = self.record_mut(id) {
            rec.awake_until = Some(awake_until);
            rec.facts.set_online();
        }
        self.refresh(id, now);
        let estimate = self.estimate_ms;
        if let Some(rec) = self.record_mut(id) {
            let waiting = rec.state == DeviceState::Pending && rec.wave.is_some();
            if waiting && rec.facts.queue_mode() && now.saturating_add(estimate) > awake_until {
                rec.unfit_wakes = rec.unfit_wakes.saturating_add(1);
            }
        }
    }

    // ---- membership ----

    /// Adds the target's devices (before the first poll) or new members (after it,
    /// when the policy takes joins). A member already present has its facts updated.
    /// Stops with [`CampaignError::TooManyDevices`] at [`MAX_DEVICES`], keeping those
    /// added before.
    pub fn add_devices(
        &mut self,
        facts: impl IntoIterator<Item = DeviceFacts>,
        now_unix_ms: u64,
    ) -> Result<AddSummary, CampaignError> {
        if self.status.is_closed() {
            return Err(CampaignError::Closed(self.status.name()));
        }
        if !self.waves.is_empty() && !self.policy.join_new_members {
            return Err(CampaignError::JoinsDisabled);
        }
        let now = now_unix_ms;
        let mut summary = AddSummary::default();
        self.touch(now);
        for f in facts {
            if let Err(e) = f.validate() {
                summary.rejected += 1;
                summary.first_error.get_or_insert(e);
                continue;
            }
            if let Some(&id) = self.by_endpoint.get(&f.endpoint) {
                self.apply_facts(id, &f, now);
                summary.updated += 1;
                continue;
            }
            if self.by_endpoint.len() >= MAX_DEVICES || self.devices.len() >= u32::MAX as usize {
                return Err(CampaignError::TooManyDevices);
            }
            let cell = self.cells.intern(f.cell.as_deref());
            self.grow_cell_counts();
            let id = self.devices.len() as u32;
            let awake = f.awake_until.filter(|&t| t > now);
            self.devices.push(Some(DeviceRecord::new(
                f.endpoint.clone(),
                Packed::new(&f, cell),
                None,
            )));
            self.by_endpoint.insert(f.endpoint, id);
            self.changed.insert(id);
            self.account(id, true);
            summary.added += 1;
            if self.deadline_passed {
                let _ = self.transition(id, Event::Deadline);
                continue;
            }
            if self.last_wave_open() {
                self.assign(id, self.waves.len() as u16 - 1);
                self.refresh(id, now);
            } else {
                self.unassigned.push_back(id);
            }
            if let Some(t) = awake {
                self.on_wake(id, t, now);
            }
        }
        Ok(summary)
    }

    fn last_wave_open(&self) -> bool {
        !self.waves.is_empty() && self.waves.len() == self.policy.waves.len()
    }

    fn assign(&mut self, id: u32, wave: u16) {
        self.account(id, false);
        if let Some(rec) = self.record_mut(id) {
            rec.wave = Some(wave);
        }
        self.account(id, true);
    }

    /// Removes a device (it left the target). Returns whether its download is under
    /// way and not yet installing, which the server should abort.
    pub fn remove_device(
        &mut self,
        endpoint: &str,
        now_unix_ms: u64,
    ) -> Result<bool, CampaignError> {
        let id = self.lookup(endpoint)?;
        let Some(state) = self.record(id).map(|r| r.state) else {
            return Err(CampaignError::UnknownDevice(endpoint.to_string()));
        };
        let abort = matches!(
            state,
            DeviceState::InProgress {
                installing: false,
                ..
            } | DeviceState::Recovering {
                installing: false,
                ..
            }
        );
        self.account(id, false);
        if let Some(c) = state.slot() {
            self.cells.release(c);
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if let Some(slot) = self.devices.get_mut(id as usize) {
            *slot = None;
            self.changed.insert(id);
        }
        self.by_endpoint.remove(endpoint);
        self.touch(now_unix_ms);
        Ok(abort)
    }

    /// New facts for a member (cell, bearer, battery, roaming, billing, wake).
    pub fn update_facts(
        &mut self,
        facts: DeviceFacts,
        now_unix_ms: u64,
    ) -> Result<(), CampaignError> {
        facts.validate()?;
        let id = self.lookup(&facts.endpoint)?;
        self.apply_facts(id, &facts, now_unix_ms);
        self.touch(now_unix_ms);
        Ok(())
    }

    fn apply_facts(&mut self, id: u32, f: &DeviceFacts, now: u64) {
        let cell = self.cells.intern(f.cell.as_deref());
        self.grow_cell_counts();
        let Some(rec) = self.record(id) else {
            return;
        };
        let moved = rec.facts.cell() != cell;
        let old_awake = rec.awake_until;
        self.account(id, false);
        if let Some(rec) = self.record_mut(id) {
            rec.facts = Packed::new(f, cell);
        }
        self.account(id, true);
        if moved {
            self.unqueue(id);
        }
        match f.awake_until.filter(|&t| t > now) {
            Some(t) if old_awake != Some(t) => self.on_wake(id, t, now),
            Some(_) => {}
            None => {
                if let Some(rec) = self.record_mut(id) {
                    rec.awake_until = None;
                }
            }
        }
        self.refresh(id, now);
        self.requeue(id, now);
    }

    /// A queue-mode device woke and stays awake until `awake_until`.
    pub fn device_woke(
        &mut self,
        endpoint: &str,
        awake_until: u64,
        now_unix_ms: u64,
    ) -> Result<(), CampaignError> {
        let id = self.lookup(endpoint)?;
        self.on_wake(id, awake_until, now_unix_ms);
        self.touch(now_unix_ms);
        Ok(())
    }

    // ---- the poll ----

    /// What to do now, given the cells' network status. Poll again by
    /// [`Campaign::next_wakeup`], after any call that changed the campaign, and when
    /// the cell table changes.
    pub fn poll(&mut self, now_unix_ms: u64, cells: &CellTable) -> Vec<Decision> {
        let now = now_unix_ms;
        let mut out = Vec::new();
        self.poll_hint = None;
        if self.status.is_closed() {
            return out;
        }
        self.run_timers(now);
        self.apply_deadline(now);
        if self.status == Status::Running {
            if let Some(reason) = self.error_threshold_reached() {
                self.pause_for(PauseCause::ErrorThreshold, reason, &mut out);
            }
        }
        if self.status == Status::Running {
            self.open_waves(now, &mut out);
        }
        if self.status == Status::Running && !self.deadline_passed && self.window_open(now) {
            self.dispatch(now, cells, &mut out);
        }
        // An empty campaign that never started waits for its devices.
        let started = !self.waves.is_empty() || !self.is_empty();
        if self.status == Status::Running && started && self.counts.non_final() == 0 {
            self.status = Status::Completed;
            out.push(Decision::Complete);
        }
        out
    }

    /// The latest time to poll again; `None` when nothing will happen without an
    /// event (a report, a wake, new facts, a cell table change) or the campaign is over.
    pub fn next_wakeup(&self) -> Option<u64> {
        if self.status.is_closed() {
            return None;
        }
        let mut next = self.poll_hint;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        if let Some(Reverse((t, _))) = self.timers.peek() {
            consider(*t);
        }
        if let (Some(d), false) = (self.policy.deadline_unix_ms, self.deadline_passed) {
            consider(d);
        }
        if let Some(WindowCache {
            state: WindowState::Closed { next_open: Some(t) },
            ..
        }) = self.window_cache
        {
            if self.counts.non_final() > 0 {
                consider(t);
            }
        }
        next
    }

    fn run_timers(&mut self, now: u64) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(state) = self.record(id).map(|r| r.state) else {
                continue;
            };
            match state {
                DeviceState::WaitingRetry { not_before, .. } if not_before <= now => {
                    let _ = self.transition(id, Event::RetryDue { now });
                    self.refresh(id, now);
                    self.requeue(id, now);
                }
                DeviceState::Deferred {
                    until: Some(until), ..
                } if until <= now => self.refresh(id, now),
                // Stale: the device moved on since this timer was set.
                _ => {}
            }
        }
    }

    fn apply_deadline(&mut self, now: u64) {
        let Some(deadline) = self.policy.deadline_unix_ms else {
            return;
        };
        if self.deadline_passed || now < deadline {
            return;
        }
        self.deadline_passed = true;
        for id in 0..self.devices.len() as u32 {
            if let Some(rec) = self.record(id) {
                if matches!(
                    rec.state,
                    DeviceState::Pending
                        | DeviceState::Deferred { .. }
                        | DeviceState::WaitingRetry { .. }
                ) {
                    let _ = self.transition(id, Event::Deadline);
                }
            }
        }
        self.unassigned.clear();
    }

    fn pause_for(&mut self, cause: PauseCause, reason: String, out: &mut Vec<Decision>) {
        out.push(Decision::Pause {
            reason: reason.clone(),
        });
        self.status = Status::Paused { reason, cause };
    }

    fn error_threshold_reached(&self) -> Option<String> {
        let t = self.policy.error_threshold?;
        let trips = |(fin, fail): (u32, u32)| fin >= t.min_sample && reaches(fail, t.fraction, fin);
        let since = |c: &StateCounts, base: (u32, u32)| {
            (
                c.finished().saturating_sub(base.0),
                c.failed.saturating_sub(base.1),
            )
        };
        let describe = |scope: String, (fin, fail): (u32, u32)| {
            format!(
                "error threshold reached {scope}: {fail} of {fin} finished devices failed ({}%, threshold {}%)",
                percent(fail, fin),
                (t.fraction * 1000.0).round() / 10.0
            )
        };
        match t.scope {
            crate::policy::ThresholdScope::Campaign => {
                let s = since(&self.counts, self.baselines.campaign);
                trips(s).then(|| describe("in the campaign".into(), s))
            }
            crate::policy::ThresholdScope::Wave => {
                self.wave_counts.iter().enumerate().find_map(|(w, c)| {
                    let base = self.baselines.waves.get(w).copied().unwrap_or_default();
                    let s = since(c, base);
                    trips(s).then(|| describe(format!("in wave {}", w + 1), s))
                })
            }
        }
    }

    /// Opens waves while the latest one has reached the success threshold.
    fn open_waves(&mut self, now: u64, out: &mut Vec<Decision>) {
        loop {
            let next = self.waves.len();
            if next >= self.policy.waves.len() || self.counts.waiting_for_wave == 0 {
                return;
            }
            if let Some(current) = next.checked_sub(1) {
                let c = self.wave_counts.get(current).copied().unwrap_or_default();
                let eligible = c.total().saturating_sub(c.skipped);
                let passed = eligible == 0
                    || self.gate_override == Some(current as u16)
                    || reaches(c.succeeded, self.policy.success_threshold, eligible);
                if !passed {
                    if c.non_final() == 0 {
                        let reason = format!(
                            "wave {} ended with {} of {} devices succeeded ({}%), below the success threshold of {}%",
                            current + 1,
                            c.succeeded,
                            eligible,
                            percent(c.succeeded, eligible),
                            (self.policy.success_threshold * 1000.0).round() / 10.0
                        );
                        self.pause_for(
                            PauseCause::WaveGate {
                                wave: current as u16,
                            },
                            reason,
                            out,
                        );
                    }
                    return;
                }
            }
            let waiting = self.counts.waiting_for_wave as usize;
            let last = next + 1 == self.policy.waves.len();
            let size = if last {
                waiting
            } else {
                self.policy.waves[next].devices_of(self.len()).min(waiting)
            };
            self.waves.push(WaveRecord {
                opened_at: now,
                size: size as u32,
            });
            self.wave_counts.push(StateCounts::default());
            self.baselines.waves.push((0, 0));
            let wave = next as u16;
            let mut taken = 0;
            while taken < size {
                let Some(id) = self.unassigned.pop_front() else {
                    break;
                };
                let waiting = self
                    .record(id)
                    .is_some_and(|r| r.wave.is_none() && r.state == DeviceState::Pending);
                if !waiting {
                    continue;
                }
                self.assign(id, wave);
                self.refresh(id, now);
                taken += 1;
            }
        }
    }

    fn window_open(&mut self, now: u64) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        if let Some(state) = self.cached_window(now) {
            return state.is_open();
        }
        let state = self.windows.state(now);
        let until = match state {
            WindowState::Always => u64::MAX,
            WindowState::Open { until } => until,
            WindowState::Closed { next_open } => next_open.unwrap_or(u64::MAX),
        };
        self.window_cache = Some(WindowCache {
            from: now,
            until,
            state,
        });
        state.is_open()
    }

    fn dispatch(&mut self, now: u64, table: &CellTable, out: &mut Vec<Decision>) {
        if self.cells.seen_revision != Some(table.revision()) {
            self.cells.wake_saturated();
            self.cells.seen_revision = Some(table.revision());
        }
        while self.in_flight < self.policy.max_concurrent {
            let Some(cell) = self.cells.runnable.pop_front() else {
                break;
            };
            let Some(slot) = self.cells.slots.get(cell as usize) else {
                continue;
            };
            if slot.sched != Sched::Runnable {
                continue;
            }
            let cap = self.policy.cell_cap(self.cells.status(cell, table));
            if slot.in_flight >= cap {
                self.cells.mark_saturated(cell);
                continue;
            }
            let mut start = None;
            while let Some((id, ticket)) = self.cells.slots[cell as usize].queue.pop_front() {
                if self.dispatchable(id, ticket, now) {
                    start = Some(id);
                    break;
                }
                // A live entry that cannot start (its wake ran out or is too short)
                // leaves the queue; the next wake queues it again.
                if let Some(rec) = self.record_mut(id) {
                    if rec.ticket == ticket {
                        rec.queued = false;
                    }
                }
            }
            if let Some(id) = start {
                self.start(id, cell, now, out);
            }
            if self.cells.slots[cell as usize].queue.is_empty() {
                self.cells.mark_idle(cell);
            } else {
                self.cells.runnable.push_back(cell);
            }
        }
    }

    fn start(&mut self, id: u32, cell: u32, now: u64, out: &mut Vec<Decision>) {
        if self.transition(id, Event::Start { now, cell }).is_err() {
            return;
        }
        if let Some(rec) = self.record_mut(id) {
            rec.attempts = rec.attempts.saturating_add(1);
            out.push(Decision::Start {
                endpoint: rec.endpoint.clone(),
                attempt: rec.attempts,
            });
        }
    }

    // ---- outcomes ----

    /// The outcome of a device's attempt. A report for a device not in progress
    /// (a duplicate, a late one) is refused with a typed error and changes nothing.
    /// Returns the device's new state.
    pub fn report(
        &mut self,
        endpoint: &str,
        outcome: Outcome,
        now_unix_ms: u64,
    ) -> Result<StateKind, CampaignError> {
        let id = self.lookup(endpoint)?;
        self.apply_outcome(id, outcome, now_unix_ms)?;
        self.touch(now_unix_ms);
        Ok(self
            .record(id)
            .map_or(StateKind::Cancelled, DeviceRecord::kind))
    }

    fn apply_outcome(&mut self, id: u32, outcome: Outcome, now: u64) -> Result<(), CampaignError> {
        let Some(rec) = self.record(id) else {
            return Ok(());
        };
        let started_at = match rec.state {
            DeviceState::InProgress { started_at, .. }
            | DeviceState::Recovering { started_at, .. } => started_at,
            other => {
                return Err(CampaignError::Transition {
                    endpoint: rec.endpoint.clone(),
                    source: TransitionError {
                        from: other.kind(rec.wave.is_some()),
                        event: if outcome == Outcome::Succeeded {
                            Event::Succeeded.name()
                        } else {
                            "failure report"
                        },
                    },
                })
            }
        };
        match outcome {
            Outcome::Succeeded => {
                self.transition(id, Event::Succeeded)?;
                let d = now.saturating_sub(started_at);
                self.durations.sum_ms = self.durations.sum_ms.saturating_add(d);
                self.durations.count += 1;
            }
            Outcome::Failed { kind, detail } => {
                let then = self.after_failure(id, kind, now);
                let attempt = self.record(id).map_or(0, |r| r.attempts);
                let endpoint = self
                    .record(id)
                    .map(|r| r.endpoint.clone())
                    .unwrap_or_default();
                self.transition(id, Event::Failed { kind, then })?;
                if self.recent_failures.len() >= RECENT_FAILURES {
                    self.recent_failures.pop_front();
                }
                self.recent_failures.push_back(FailureNote {
                    endpoint,
                    at_unix_ms: now,
                    attempt,
                    kind,
                    detail: truncate_detail(&detail),
                });
            }
        }
        Ok(())
    }

    fn after_failure(&mut self, id: u32, kind: FailureKind, now: u64) -> AfterFailure {
        let retry = self.policy.retry;
        let deadline = self.policy.deadline_unix_ms;
        let closed = self.status.is_closed();
        let Some(rec) = self.record_mut(id) else {
            return AfterFailure::GiveUp;
        };
        if kind == FailureKind::IntegrityFailure {
            rec.integrity_failures = rec.integrity_failures.saturating_add(1);
        }
        let allowed = match kind.retry() {
            Retry::Yes => true,
            Retry::Once => rec.integrity_failures <= 1,
            Retry::Never => false,
        };
        if !allowed || rec.attempts >= retry.max_attempts || closed {
            return AfterFailure::GiveUp;
        }
        let not_before = now.saturating_add(backoff::delay_ms(&retry, &rec.endpoint, rec.attempts));
        if deadline.is_some_and(|d| not_before >= d) {
            return AfterFailure::MissedDeadline;
        }
        AfterFailure::Retry { not_before }
    }

    /// The device passed Execute Update: it can no longer be cancelled.
    pub fn mark_installing(&mut self, endpoint: &str) -> Result<(), CampaignError> {
        let id = self.lookup(endpoint)?;
        self.transition(id, Event::Installing)
    }

    /// Bytes the server sent for this campaign's downloads.
    pub fn add_bytes_sent(&mut self, bytes: u64) {
        self.bytes_sent = self.bytes_sent.saturating_add(bytes);
    }

    /// Bytes of transfers that failed and must be sent again.
    pub fn add_bytes_wasted(&mut self, bytes: u64) {
        self.bytes_wasted = self.bytes_wasted.saturating_add(bytes);
    }

    // ---- operator controls ----

    /// Stops new starts; updates under way go on and their reports are taken.
    pub fn pause(&mut self, reason: impl Into<String>) -> Result<(), CampaignError> {
        match self.status {
            Status::Running => {
                self.status = Status::Paused {
                    reason: truncate_detail(&reason.into()),
                    cause: PauseCause::Operator,
                };
                Ok(())
            }
            Status::Paused { .. } => Ok(()),
            Status::Cancelled | Status::Completed => Err(CampaignError::Closed(self.status.name())),
        }
    }

    /// Starts again. The error threshold counts afresh from here; a pause at a wave
    /// gate is the operator's go-ahead for the next wave.
    pub fn resume(&mut self, now_unix_ms: u64) -> Result<(), CampaignError> {
        let Status::Paused { cause, .. } = self.status else {
            return Err(CampaignError::NotPaused);
        };
        if let PauseCause::WaveGate { wave } = cause {
            self.gate_override = Some(wave);
        }
        self.baselines.campaign = (self.counts.finished(), self.counts.failed);
        self.baselines.waves = self
            .wave_counts
            .iter()
            .map(|c| (c.finished(), c.failed))
            .collect();
        self.status = Status::Running;
        self.touch(now_unix_ms);
        Ok(())
    }

    /// Ends the campaign. Devices not started end as cancelled; so do downloads
    /// under way that have not reached Execute Update, whose endpoints are returned
    /// for the server to abort and reset. Installing and recovering devices go on and
    /// their reports are still taken.
    pub fn cancel(&mut self, now_unix_ms: u64) -> Vec<String> {
        let mut abort = Vec::new();
        if self.status.is_closed() {
            return abort;
        }
        self.status = Status::Cancelled;
        for id in 0..self.devices.len() as u32 {
            let Some(rec) = self.record(id) else {
                continue;
            };
            let in_flight = matches!(
                rec.state,
                DeviceState::InProgress {
                    installing: false,
                    ..
                }
            );
            let endpoint = in_flight.then(|| rec.endpoint.clone());
            if self.transition(id, Event::Cancel).is_ok() {
                abort.extend(endpoint);
            }
        }
        self.unassigned.clear();
        self.touch(now_unix_ms);
        abort
    }

    // ---- restart ----

    /// After loading a saved campaign: every device that was in progress becomes
    /// recovering, and the list of all recovering devices is returned. For each the
    /// server reads the device's update state and calls
    /// [`Campaign::resolve_recovered`]; none is started again before that, so none is
    /// updated twice. Calling it again returns the same list.
    pub fn recover(&mut self, now_unix_ms: u64) -> Vec<String> {
        let mut list = Vec::new();
        for id in 0..self.devices.len() as u32 {
            let Some(rec) = self.record(id) else {
                continue;
            };
            if matches!(
                rec.state,
                DeviceState::InProgress { .. } | DeviceState::Recovering { .. }
            ) {
                list.push(rec.endpoint.clone());
                let _ = self.transition(id, Event::Recover);
            }
        }
        if !list.is_empty() {
            self.touch(now_unix_ms);
        }
        list
    }

    pub fn resolve_recovered(
        &mut self,
        endpoint: &str,
        found: Recovered,
        now_unix_ms: u64,
    ) -> Result<Resolution, CampaignError> {
        let now = now_unix_ms;
        let id = self.lookup(endpoint)?;
        let state = self.record(id).map(|r| r.state);
        if !matches!(state, Some(DeviceState::Recovering { .. })) {
            let from = self
                .record(id)
                .map_or(StateKind::Cancelled, DeviceRecord::kind);
            return Err(CampaignError::Transition {
                endpoint: endpoint.to_string(),
                source: TransitionError {
                    from,
                    event: "recovery resolution",
                },
            });
        }
        self.touch(now);
        let resolution = match found {
            Recovered::Finished(outcome) => {
                self.apply_outcome(id, outcome, now)?;
                Resolution::Settled(
                    self.record(id)
                        .map_or(StateKind::Cancelled, DeviceRecord::kind),
                )
            }
            Recovered::Installing => {
                self.transition(id, Event::Resumed { installing: true })?;
                Resolution::Continue
            }
            Recovered::Downloading => {
                self.transition(id, Event::Resumed { installing: false })?;
                if self.status == Status::Cancelled {
                    self.transition(id, Event::Cancel)?;
                    Resolution::Abort
                } else {
                    Resolution::Continue
                }
            }
            Recovered::NotStarted => {
                self.transition(id, Event::NotStarted)?;
                if let Some(rec) = self.record_mut(id) {
                    rec.attempts = rec.attempts.saturating_sub(1);
                }
                if self.status == Status::Cancelled {
                    self.transition(id, Event::Cancel)?;
                } else if self.deadline_passed {
                    self.transition(id, Event::Deadline)?;
                } else {
                    self.refresh(id, now);
                    self.requeue(id, now);
                }
                Resolution::Settled(
                    self.record(id)
                        .map_or(StateKind::Cancelled, DeviceRecord::kind),
                )
            }
        };
        Ok(resolution)
    }

    // ---- reports ----

    /// Downloads charged to each cell (`None`: the unknown bucket).
    pub fn in_flight_per_cell(&self) -> BTreeMap<Option<String>, usize> {
        self.cells
            .slots
            .iter()
            .filter(|s| s.in_flight > 0)
            .map(|s| (s.name.clone(), s.in_flight as usize))
            .collect()
    }

    /// Downloads under way (in progress or recovering).
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The cap a cell has under `table` (`None`: the unknown bucket).
    pub fn cell_cap(&self, cell: Option<&str>, table: &CellTable) -> u32 {
        self.policy.cell_cap(cell.and_then(|c| table.get(c)))
    }

    pub fn progress(&self, now_unix_ms: u64, table: &CellTable) -> Progress {
        let mean = (self.durations.count > 0).then(|| self.durations.sum_ms / self.durations.count);
        let cells: Vec<CellProgress> = self
            .cells
            .slots
            .iter()
            .zip(&self.cell_counts)
            .filter(|(s, c)| c.total() > 0 || s.in_flight > 0)
            .map(|(s, c)| CellProgress {
                cell: s.name.clone(),
                in_flight: s.in_flight,
                cap: self.cell_cap(s.name.as_deref(), table),
                counts: *c,
            })
            .collect();
        let eta = estimate_completion(
            now_unix_ms,
            mean,
            self.counts.non_final(),
            self.policy.max_concurrent,
            cells.iter().map(|c| (c.counts.non_final(), c.cap)),
        );
        Progress {
            status: self.status.clone(),
            counts: self.counts,
            waves: self
                .waves
                .iter()
                .zip(&self.wave_counts)
                .enumerate()
                .map(|(i, (w, c))| WaveProgress {
                    wave: i as u16,
                    opened_at_unix_ms: w.opened_at,
                    size: w.size,
                    counts: *c,
                })
                .collect(),
            waves_planned: self.policy.waves.len() as u16,
            cells,
            in_flight: self.in_flight,
            mean_success_ms: mean,
            estimated_completion_unix_ms: eta,
            bytes_sent: self.bytes_sent,
            bytes_wasted: self.bytes_wasted,
            recent_failures: self.recent_failures.iter().cloned().collect(),
            window: self.window_progress(now_unix_ms),
        }
    }

    /// The cached window state, if it holds at `now`.
    fn cached_window(&self, now: u64) -> Option<WindowState> {
        self.window_cache
            .filter(|c| c.from <= now && now < c.until)
            .map(|c| c.state)
    }

    /// The windows' state at `now`: the cached one while it holds, else computed.
    fn window_progress(&self, now: u64) -> Option<WindowProgress> {
        let state = self
            .cached_window(now)
            .unwrap_or_else(|| self.windows.state(now));
        match state {
            WindowState::Always => None,
            WindowState::Open { until } => Some(WindowProgress {
                open: true,
                until_unix_ms: Some(until),
                next_open_unix_ms: None,
            }),
            WindowState::Closed { next_open } => Some(WindowProgress {
                open: false,
                until_unix_ms: None,
                next_open_unix_ms: next_open,
            }),
        }
    }

    /// Recounts everything from the devices and compares with the kept counters and
    /// slots. Cheap enough for a test after every step or a server after a load;
    /// `Err` names the first mismatch.
    pub fn audit(&self) -> Result<(), String> {
        let mut counts = StateCounts::default();
        let mut waves = vec![StateCounts::default(); self.wave_counts.len()];
        let mut cells = vec![StateCounts::default(); self.cell_counts.len()];
        let mut slots = vec![0u32; self.cells.len()];
        for rec in self.devices.iter().flatten() {
            let k = rec.kind();
            counts.add(k);
            if let Some(w) = rec.wave {
                waves
                    .get_mut(w as usize)
                    .ok_or_else(|| format!("{}: wave {w} not opened", rec.endpoint))?
                    .add(k);
            }
            cells
                .get_mut(rec.facts.cell() as usize)
                .ok_or_else(|| format!("{}: unknown cell index", rec.endpoint))?
                .add(k);
            if let Some(c) = rec.state.slot() {
                *slots
                    .get_mut(c as usize)
                    .ok_or_else(|| format!("{}: unknown slot cell", rec.endpoint))? += 1;
            }
        }
        if counts != self.counts {
            return Err(format!("counts {:?} != kept {:?}", counts, self.counts));
        }
        if counts.total() as usize != self.by_endpoint.len() {
            return Err("device total differs from the endpoint index".into());
        }
        if waves != self.wave_counts {
            return Err("per-wave counts differ".into());
        }
        if cells != self.cell_counts {
            return Err("per-cell counts differ".into());
        }
        for (i, (n, s)) in slots.iter().zip(&self.cells.slots).enumerate() {
            if *n != s.in_flight {
                return Err(format!(
                    "cell {i}: {n} devices hold a slot, {} charged",
                    s.in_flight
                ));
            }
        }
        let total: u32 = slots.iter().sum();
        if total != self.in_flight {
            return Err(format!("{total} in flight, {} kept", self.in_flight));
        }
        Ok(())
    }
}
