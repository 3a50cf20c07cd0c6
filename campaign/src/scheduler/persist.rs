//! The campaign's saved form: what cannot be recomputed, and nothing that can.
//!
//! Two parts: a header (the campaign as a whole: policy, status, waves, counters of
//! bytes, the cell names) and one row per device, so that a save writes the header
//! and the devices that changed since the last one, not every device of a campaign
//! of a million. A slot is a device's index; rows are keyed by it.
//!
//! Counters, ready queues, timers and compiled windows are rebuilt on load from the
//! devices, so a saved campaign cannot disagree with itself; what is loaded is
//! checked (indexes in range, endpoints unique) because a damaged file must be an
//! error, not a panic on the next poll.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize, Serializer};

use super::{
    check_id, Baselines, Campaign, CampaignError, Durations, Status, WaveRecord, MAX_DEVICES,
};
use crate::cells::CellBook;
use crate::device::{DeviceRecord, DeviceState};
use crate::facts::MAX_ENDPOINT;
use crate::policy::Policy;
use crate::progress::{FailureNote, StateCounts};
use crate::windows::Windows;

/// Version of the saved header; a loader refuses others rather than misread them.
/// Format 1 held the devices in the header itself; it is still read.
const FORMAT: u32 = 2;

#[derive(Serialize)]
struct HeaderRef<'a> {
    v: u32,
    id: &'a str,
    package_id: &'a str,
    package_size_bytes: u64,
    policy: &'a Policy,
    created_at: u64,
    status: &'a Status,
    waves: &'a [WaveRecord],
    baselines: &'a Baselines,
    #[serde(skip_serializing_if = "Option::is_none")]
    gate_override: Option<u16>,
    deadline_passed: bool,
    durations: Durations,
    bytes_sent: u64,
    bytes_wasted: u64,
    recent_failures: &'a VecDeque<FailureNote>,
    /// Cell names by index from 1 (0 is the unknown bucket).
    cells: Vec<&'a str>,
}

#[derive(Deserialize)]
struct Snapshot {
    v: u32,
    id: String,
    package_id: String,
    package_size_bytes: u64,
    policy: Policy,
    created_at: u64,
    status: Status,
    waves: Vec<WaveRecord>,
    baselines: Baselines,
    #[serde(default)]
    gate_override: Option<u16>,
    deadline_passed: bool,
    durations: Durations,
    bytes_sent: u64,
    bytes_wasted: u64,
    recent_failures: VecDeque<FailureNote>,
    cells: Vec<String>,
    /// Format 1 only.
    #[serde(default)]
    devices: Vec<DeviceRecord>,
}

/// A saved header as read back, waiting for its rows ([`Campaign::restore`]).
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Header(Snapshot);

/// A saved device row as read back.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Row(DeviceRecord);

/// A device row to write ([`Campaign::row`]).
pub struct RowRef<'a>(&'a DeviceRecord);

impl Serialize for RowRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// The header: a campaign serializes without its devices, which are rows of their own.
impl Serialize for Campaign {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HeaderRef {
            v: FORMAT,
            id: &self.id,
            package_id: &self.package_id,
            package_size_bytes: self.package_size_bytes,
            policy: &self.policy,
            created_at: self.created_at,
            status: &self.status,
            waves: &self.waves,
            baselines: &self.baselines,
            gate_override: self.gate_override,
            deadline_passed: self.deadline_passed,
            durations: self.durations,
            bytes_sent: self.bytes_sent,
            bytes_wasted: self.bytes_wasted,
            recent_failures: &self.recent_failures,
            cells: self.cells.names().collect(),
        }
        .serialize(s)
    }
}

impl Campaign {
    /// The campaign a header and its rows (slot and row, in slot order) describe, and
    /// whether the stored rows are to be replaced. Slots are numbered from 0 without
    /// the holes that removals left: rows stored with holes (or inside a format-1
    /// header) are therefore all marked changed, and the caller replaces the stored
    /// rows with the ones [`Campaign::take_changed`] lists. Rows stored without holes
    /// keep their slots, and nothing needs writing.
    pub fn restore(
        header: Header,
        rows: Vec<(u32, Row)>,
    ) -> Result<(Campaign, bool), CampaignError> {
        let mut snapshot = header.0;
        if snapshot.devices.len().saturating_add(rows.len()) > MAX_DEVICES {
            return Err(bad("too many devices"));
        }
        let renumbered = !snapshot.devices.is_empty()
            || rows
                .iter()
                .enumerate()
                .any(|(i, (slot, _))| *slot as usize != i);
        snapshot.devices.extend(rows.into_iter().map(|(_, r)| r.0));
        let mut c = Campaign::from_snapshot(snapshot)?;
        if renumbered {
            c.changed = (0..c.devices.len() as u32).collect();
        }
        Ok((c, renumbered))
    }

    /// The slots whose rows changed since the last call, in order; for each,
    /// [`Campaign::row`] is what to write (`None`: delete the row). A save that fails
    /// hands them back with [`Campaign::mark_unsaved`].
    pub fn take_changed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// Marks slots changed again, after their save failed.
    pub fn mark_unsaved(&mut self, slots: impl IntoIterator<Item = u32>) {
        self.changed.extend(slots);
    }

    /// The row of a slot, `None` when it is empty (its device was removed).
    pub fn row(&self, slot: u32) -> Option<RowRef<'_>> {
        self.record(slot).map(RowRef)
    }
}

fn bad(msg: impl Into<String>) -> CampaignError {
    CampaignError::Snapshot(msg.into())
}

impl Campaign {
    fn from_snapshot(s: Snapshot) -> Result<Campaign, CampaignError> {
        if s.v != FORMAT && s.v != 1 {
            return Err(bad(format!(
                "format {} (this build reads 1 and {FORMAT})",
                s.v
            )));
        }
        check_id("campaign id", &s.id)?;
        check_id("package id", &s.package_id)?;
        s.policy.validate()?;
        let windows = Windows::compile(&s.policy.windows)
            .map_err(|(i, e)| bad(format!("windows[{i}]: {e}")))?;
        if s.devices.len() > MAX_DEVICES {
            return Err(bad("too many devices"));
        }
        if s.waves.len() > s.policy.waves.len() {
            return Err(bad("more waves opened than the policy has"));
        }
        if s.recent_failures.len() > super::RECENT_FAILURES {
            return Err(bad("too many recent failures"));
        }
        if s.cells.len() > MAX_DEVICES {
            return Err(bad("too many cells"));
        }
        let cells = CellBook::from_names(s.cells).map_err(bad)?;
        let mut c = Campaign::empty(
            s.id,
            s.package_id,
            s.package_size_bytes,
            s.policy,
            s.created_at,
        );
        c.windows = windows;
        c.status = s.status;
        c.baselines = s.baselines;
        c.baselines.waves.resize(s.waves.len(), (0, 0));
        c.wave_counts = vec![StateCounts::default(); s.waves.len()];
        c.waves = s.waves;
        c.gate_override = s.gate_override;
        c.deadline_passed = s.deadline_passed;
        c.durations = s.durations;
        c.bytes_sent = s.bytes_sent;
        c.bytes_wasted = s.bytes_wasted;
        c.recent_failures = s.recent_failures;
        c.cell_counts = vec![StateCounts::default(); cells.len()];
        c.cells = cells;
        let n_cells = c.cells.len();
        let n_waves = c.waves.len();
        for rec in s.devices {
            let ep = &rec.endpoint;
            if ep.is_empty() || ep.len() > MAX_ENDPOINT {
                return Err(bad("an endpoint is empty or too long"));
            }
            if c.by_endpoint.contains_key(ep) {
                return Err(bad(format!("{ep}: listed twice")));
            }
            if rec.facts.cell() as usize >= n_cells
                || rec.state.slot().is_some_and(|x| x as usize >= n_cells)
            {
                return Err(bad(format!("{ep}: cell index out of range")));
            }
            match rec.wave {
                Some(w) if w as usize >= n_waves => {
                    return Err(bad(format!("{ep}: wave {w} was never opened")))
                }
                None if !matches!(
                    rec.state,
                    DeviceState::Pending | DeviceState::Cancelled | DeviceState::MissedDeadline
                ) =>
                {
                    return Err(bad(format!("{ep}: started without a wave")))
                }
                _ => {}
            }
            let id = c.devices.len() as u32;
            let (state, wave) = (rec.state, rec.wave);
            c.by_endpoint.insert(rec.endpoint.clone(), id);
            c.devices.push(Some(rec));
            c.account(id, true);
            if let Some(cell) = state.slot() {
                c.cells.charge(cell);
                c.in_flight += 1;
            }
            if let Some(t) = state.timer() {
                c.timers.push(std::cmp::Reverse((t, id)));
            }
            if state == DeviceState::Pending && !c.status.is_closed() && !c.deadline_passed {
                match wave {
                    None => c.unassigned.push_back(id),
                    Some(_) => c.requeue_at(id, None),
                }
            }
        }
        // Whatever a poll would have looked at before the stop, it looks at now.
        c.poll_hint = Some(0);
        Ok(c)
    }
}
