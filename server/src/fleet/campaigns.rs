//! Firmware campaigns: a target (a group or a filter), a package and a policy, driven by
//! [`lwm2m_campaign::Campaign`]'s scheduler. This module feeds the scheduler what the
//! fleet learns (facts, wake-ups, new members, each update's outcome) and carries out its
//! decisions through the firmware [`Updater`].
//!
//! Each campaign's state is written before the updates it decided are started
//! (write-ahead), so a crash can at worst leave a device marked as started that never
//! was; at the next start [`Campaign::recover`] puts those in doubt and each one is
//! settled from the firmware store's record of its update: never updated twice, never
//! forgotten. A write is the campaign's header and the rows of the devices that changed
//! since the last one, in one transaction: its cost follows what happened, not the size
//! of the campaign.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lwm2m_campaign::{
    Campaign, CampaignError, Decision, FailureKind, Header, Outcome, Policy, Recovered, Resolution,
    Row, StateKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};

use super::store::{encode, FleetStore, FleetStoreError, RowChange, Table};
use super::{Fleet, FleetEvent};
use crate::firmware::update::{Phase, StartError, UpdateRecord, Updater};
use crate::runtime::persist::unix_now_ms;
use crate::runtime::ServerEvent;

/// How often devices in progress are checked against their update records.
const RECONCILE: Duration = Duration::from_secs(5);
/// The longest the runner sleeps between two looks at its campaigns.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Most campaigns kept (finished ones count until deleted).
pub const MAX_CAMPAIGNS: usize = 256;

/// Which devices a campaign is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Group(String),
    Filter(String),
}

/// A campaign: what the operator asked for and the scheduler's state. It serializes as
/// the stored header; the devices are rows of their own.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignRecord {
    pub id: String,
    pub name: String,
    pub package_id: String,
    pub target: Target,
    pub created_at_unix_ms: u64,
    pub campaign: Campaign,
}

/// A stored header as read back, before its rows join it.
#[derive(Deserialize)]
struct StoredHeader {
    id: String,
    name: String,
    package_id: String,
    target: Target,
    created_at_unix_ms: u64,
    campaign: Header,
}

/// The campaign stored under `id`, its header and rows put together, and whether its
/// stored rows are to be replaced (see [`Campaign::restore`]).
fn load(
    store: &FleetStore,
    id: &str,
    header: StoredHeader,
) -> Result<(CampaignRecord, bool), String> {
    let rows = store
        .campaign_rows(id, lwm2m_campaign::scheduler::MAX_DEVICES + 1)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(slot, bytes)| {
            serde_json::from_slice::<Row>(&bytes)
                .map(|row| (slot, row))
                .map_err(|e| format!("row {slot}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (campaign, renumbered) =
        Campaign::restore(header.campaign, rows).map_err(|e| e.to_string())?;
    let record = CampaignRecord {
        id: header.id,
        name: header.name,
        package_id: header.package_id,
        target: header.target,
        created_at_unix_ms: header.created_at_unix_ms,
        campaign,
    };
    Ok((record, renumbered))
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignsError {
    #[error("no package {0:?}")]
    UnknownPackage(String),
    #[error("no group {0:?}")]
    UnknownGroup(String),
    #[error("no campaign {0:?}")]
    UnknownCampaign(String),
    #[error("campaign {0:?} exists")]
    Exists(String),
    #[error("campaign {0:?} is neither completed nor cancelled")]
    NotFinished(String),
    #[error("at most {MAX_CAMPAIGNS} campaigns are kept; delete finished ones")]
    TooMany,
    #[error("filter: {0}")]
    Filter(String),
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    #[error(transparent)]
    Store(#[from] FleetStoreError),
    #[error("firmware store: {0}")]
    Firmware(String),
}

/// The campaigns of this server; cheap to clone.
#[derive(Clone)]
pub struct Campaigns {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Campaigns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaigns").finish_non_exhaustive()
    }
}

struct Entry {
    record: CampaignRecord,
    /// A compiled filter target, for devices that start matching it.
    filter: Option<lwm2m_fleet::Filter>,
    /// Changed since it was last written.
    dirty: bool,
    /// The stored rows are to be replaced, not updated: the campaign was loaded and
    /// its slots numbered anew, or it is new (rows a lost campaign of its id left go).
    replace_rows: bool,
}

struct Inner {
    fleet: Fleet,
    updater: Updater,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Wakes the runner early: a decision may be due.
    poke: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Campaigns {
    /// Loads the stored campaigns, settles the devices a crash left in doubt and starts
    /// the runner.
    pub fn start(fleet: Fleet, updater: Updater) -> Result<Campaigns, CampaignsError> {
        // Subscribed before the recovery reads the update records: an update that ends
        // in between is heard of.
        let server_events = fleet.handle().subscribe();
        let fleet_events = fleet.subscribe();
        let now = unix_now_ms();
        let mut entries = BTreeMap::new();
        for (id, header) in fleet.store().all::<StoredHeader>(Table::Campaigns)? {
            let (mut record, renumbered) = match load(fleet.store(), &id, header) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(campaign = %id, error = %e, "campaign not loaded; its records are kept");
                    continue;
                }
            };
            let doubtful = record.campaign.recover(now);
            for endpoint in doubtful {
                let found = recovered(&updater, &record, &endpoint);
                match record.campaign.resolve_recovered(&endpoint, found, now) {
                    Ok(Resolution::Abort) => {
                        updater.cancel(&endpoint);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(campaign = %id, endpoint, error = %e, "device not recovered")
                    }
                }
            }
            let filter = match &record.target {
                Target::Filter(f) => lwm2m_fleet::Filter::compile(f).ok(),
                Target::Group(_) => None,
            };
            entries.insert(
                id,
                Entry {
                    record,
                    filter,
                    dirty: true,
                    replace_rows: renumbered,
                },
            );
        }
        let campaigns = Campaigns {
            inner: Arc::new(Inner {
                fleet: fleet.clone(),
                updater,
                entries: Mutex::new(entries),
                poke: Notify::new(),
            }),
        };
        campaigns.save_dirty();
        tokio::spawn(campaigns.clone().follow_server(server_events));
        tokio::spawn(campaigns.clone().follow_fleet(fleet_events));
        tokio::spawn(campaigns.clone().run());
        Ok(campaigns)
    }

    /// Creates a campaign over the devices its target holds now.
    pub fn create(
        &self,
        id: String,
        name: String,
        package_id: String,
        target: Target,
        policy: Policy,
    ) -> Result<CampaignRecord, CampaignsError> {
        let now = unix_now_ms();
        let package = self
            .inner
            .updater
            .firmware()
            .store
            .package(&package_id)
            .map_err(|e| CampaignsError::Firmware(e.to_string()))?
            .ok_or_else(|| CampaignsError::UnknownPackage(package_id.clone()))?;
        let (members, filter) = match &target {
            Target::Group(g) => {
                if self.inner.fleet.group(g).is_none() {
                    return Err(CampaignsError::UnknownGroup(g.clone()));
                }
                (self.group_members(g), None)
            }
            Target::Filter(f) => {
                let filter = lwm2m_fleet::Filter::compile(f)
                    .map_err(|e| CampaignsError::Filter(e.message.clone()))?;
                (self.inner.fleet.matching(&filter), Some(filter))
            }
        };
        let mut campaign =
            Campaign::new(id.clone(), package_id.clone(), package.size, policy, now)?;
        let facts: Vec<_> = members
            .iter()
            .filter_map(|ep| self.inner.fleet.facts(ep))
            .collect();
        campaign.add_devices(facts, now)?;
        let record = CampaignRecord {
            id: id.clone(),
            name,
            package_id,
            target,
            created_at_unix_ms: now,
            campaign,
        };
        {
            let mut entries = lock(&self.inner.entries);
            if entries.contains_key(&id) {
                return Err(CampaignsError::Exists(id));
            }
            if entries.len() >= MAX_CAMPAIGNS {
                return Err(CampaignsError::TooMany);
            }
            let mut entry = Entry {
                record: record.clone(),
                filter,
                dirty: true,
                replace_rows: true,
            };
            self.save(&mut entry)?;
            entries.insert(id.clone(), entry);
        }
        self.publish(&id, "created");
        self.inner.poke.notify_one();
        Ok(record)
    }

    fn group_members(&self, group: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        // Bounded: each page moves `after` forward, and a group holds at most the fleet.
        for _ in 0..=(self.inner.fleet.device_count() / 10_000 + 1) {
            let Ok(page) = self.inner.fleet.members(group, after.as_deref(), 10_000) else {
                break;
            };
            out.extend(page.members.iter().map(|m| m.to_string()));
            match page.next_after {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        out
    }

    pub fn list(&self) -> Vec<CampaignRecord> {
        lock(&self.inner.entries)
            .values()
            .map(|e| e.record.clone())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<CampaignRecord> {
        lock(&self.inner.entries).get(id).map(|e| e.record.clone())
    }

    /// Runs `f` on a campaign and writes it.
    fn control<T>(
        &self,
        id: &str,
        what: &str,
        f: impl FnOnce(&mut Campaign, u64) -> Result<T, CampaignError>,
    ) -> Result<T, CampaignsError> {
        let now = unix_now_ms();
        let out = {
            let mut entries = lock(&self.inner.entries);
            let entry = entries
                .get_mut(id)
                .ok_or_else(|| CampaignsError::UnknownCampaign(id.to_string()))?;
            let out = f(&mut entry.record.campaign, now)?;
            self.save(entry)?;
            out
        };
        self.publish(id, what);
        self.inner.poke.notify_one();
        Ok(out)
    }

    pub fn pause(&self, id: &str, reason: &str) -> Result<(), CampaignsError> {
        self.control(id, "paused", |c, _| c.pause(reason))
    }

    pub fn resume(&self, id: &str) -> Result<(), CampaignsError> {
        self.control(id, "resumed", |c, now| c.resume(now))
    }

    /// Cancels: devices not yet installing are reset (their download aborted).
    pub fn cancel(&self, id: &str) -> Result<Vec<String>, CampaignsError> {
        let aborted = self.control(id, "cancelled", |c, now| Ok(c.cancel(now)))?;
        for ep in &aborted {
            self.inner.updater.cancel(ep);
        }
        Ok(aborted)
    }

    pub fn delete(&self, id: &str) -> Result<bool, CampaignsError> {
        let mut entries = lock(&self.inner.entries);
        let Some(entry) = entries.get(id) else {
            return Ok(false);
        };
        if !matches!(
            entry.record.campaign.status(),
            lwm2m_campaign::Status::Completed | lwm2m_campaign::Status::Cancelled
        ) {
            return Err(CampaignsError::NotFinished(id.to_string()));
        }
        self.inner.fleet.store().delete_campaign(id)?;
        entries.remove(id);
        Ok(true)
    }

    fn publish(&self, id: &str, what: &str) {
        let cells = self.inner.fleet.cells();
        let Some(progress) = lock(&self.inner.entries)
            .get(id)
            .map(|e| e.record.campaign.progress(unix_now_ms(), &cells))
        else {
            return;
        };
        self.inner.fleet.handle().publish(ServerEvent::Campaign {
            id: id.to_string(),
            what: what.to_string(),
            progress: serde_json::to_value(&progress).unwrap_or_default(),
        });
    }

    /// Writes a campaign's header and the rows that changed since its last write; after
    /// a failure they are marked again, for the next try.
    fn save(&self, entry: &mut Entry) -> Result<(), FleetStoreError> {
        let id = entry.record.id.clone();
        let header = encode(&id, &entry.record)?;
        let c = &mut entry.record.campaign;
        let slots = c.take_changed();
        let rows: Result<Vec<RowChange>, FleetStoreError> = slots
            .iter()
            .map(|&slot| Ok((slot, c.row(slot).map(|r| encode(&id, &r)).transpose()?)))
            .collect();
        let written = rows.and_then(|rows| {
            self.inner
                .fleet
                .store()
                .save_campaign(&id, &header, &rows, entry.replace_rows)
        });
        match written {
            Ok(()) => {
                entry.dirty = false;
                entry.replace_rows = false;
                Ok(())
            }
            Err(e) => {
                c.mark_unsaved(slots);
                entry.dirty = true;
                Err(e)
            }
        }
    }

    /// Writes the campaigns that changed.
    fn save_dirty(&self) {
        let mut entries = lock(&self.inner.entries);
        for (id, entry) in entries.iter_mut().filter(|(_, e)| e.dirty) {
            if let Err(e) = self.save(entry) {
                tracing::error!(campaign = %id, error = %e, "campaign not written");
            }
        }
    }

    /// Polls every campaign when one may have something to do, writes what changed, then
    /// starts the updates decided.
    async fn run(self) {
        let stopped = self.inner.fleet.handle().stopped();
        tokio::pin!(stopped);
        let mut reconciled = 0u64;
        loop {
            let now = unix_now_ms();
            if now.saturating_sub(reconciled) >= RECONCILE.as_millis() as u64 {
                reconciled = now;
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.reconcile()).await;
            }
            let cells = self.inner.fleet.cells();
            let mut starts: Vec<(String, String, String)> = Vec::new();
            let mut notes: Vec<(String, &'static str)> = Vec::new();
            let mut next = now + MAX_IDLE.as_millis() as u64;
            {
                let mut entries = lock(&self.inner.entries);
                for (id, entry) in entries.iter_mut() {
                    let c = &mut entry.record.campaign;
                    for d in c.poll(now, &cells) {
                        entry.dirty = true;
                        match d {
                            Decision::Start { endpoint, .. } => {
                                starts.push((id.clone(), endpoint, c.package_id().to_string()))
                            }
                            Decision::Pause { reason } => {
                                tracing::warn!(campaign = %id, %reason, "campaign paused itself");
                                notes.push((id.clone(), "paused"));
                            }
                            Decision::Complete => notes.push((id.clone(), "completed")),
                        }
                    }
                    if let Some(at) = c.next_wakeup() {
                        next = next.min(at.max(now + 10));
                    }
                }
            }
            if !starts.is_empty() || !notes.is_empty() {
                // Write-ahead: the starts are on disk before any reaches a device.
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.save_dirty()).await;
            }
            for (id, endpoint, package) in starts {
                tokio::spawn(self.clone().start_one(id, endpoint, package));
            }
            for (id, what) in notes {
                self.publish(&id, what);
            }
            let wait = Duration::from_millis(next.saturating_sub(now));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.poke.notified() => {}
                _ = &mut stopped => break,
            }
            // Writes what events changed since, at most once a round.
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.save_dirty()).await;
        }
    }

    /// Settles the devices in progress whose update has ended without the campaign
    /// hearing of it (an event missed while the runner lagged behind).
    fn reconcile(&self) {
        // (campaign, endpoint, when the campaign started it)
        let in_progress: Vec<(String, String, u64)> = lock(&self.inner.entries)
            .iter()
            .flat_map(|(id, e)| {
                let c = &e.record.campaign;
                c.devices()
                    .filter(|(_, k)| *k == StateKind::InProgress)
                    .filter_map(|(ep, _)| match c.device(ep)?.state {
                        lwm2m_campaign::DeviceState::InProgress { started_at, .. } => {
                            Some((id.clone(), ep.to_string(), started_at))
                        }
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for (_, endpoint, started_at) in in_progress {
            let Ok(Some(u)) = self.inner.updater.firmware().store.update(&endpoint) else {
                continue;
            };
            // Only this attempt's record: an older one may still be there while the
            // start is on its way.
            if u.phase.is_final() && u.started_at_unix_ms >= started_at {
                self.on_update(&u);
            }
        }
    }

    async fn start_one(self, id: String, endpoint: String, package: String) {
        self.inner.updater.firmware().take_served(&endpoint);
        let outcome = match self
            .inner
            .updater
            .begin(&endpoint, &package, None, None)
            .await
        {
            Ok(_) => return,
            Err(StartError::InProgress(phase)) => {
                // An update not of this campaign holds the device: try again later.
                Outcome::Failed {
                    kind: FailureKind::ServerError,
                    detail: format!("another update of the device is in progress ({phase})"),
                }
            }
            Err(StartError::NotRegistered(_)) => Outcome::Failed {
                kind: FailureKind::Unreachable,
                detail: "not registered".into(),
            },
            Err(StartError::UnknownPackage(p)) => Outcome::Failed {
                kind: FailureKind::UnsupportedPackageType,
                detail: format!("package {p} is gone"),
            },
            Err(StartError::Store(e)) => Outcome::Failed {
                kind: FailureKind::ServerError,
                detail: e,
            },
        };
        self.report(&id, &endpoint, outcome, 0);
    }

    fn report(&self, id: &str, endpoint: &str, outcome: Outcome, served: u64) {
        let now = unix_now_ms();
        let mut entries = lock(&self.inner.entries);
        let Some(entry) = entries.get_mut(id) else {
            return;
        };
        let c = &mut entry.record.campaign;
        let size = c.package_size_bytes();
        match &outcome {
            Outcome::Succeeded => {
                c.add_bytes_sent(served);
                // Blocks sent twice (lost answers) are waste too.
                c.add_bytes_wasted(served.saturating_sub(size));
            }
            Outcome::Failed { .. } => {
                c.add_bytes_sent(served);
                c.add_bytes_wasted(served);
            }
        }
        match c.report(endpoint, outcome, now) {
            Ok(_) => entry.dirty = true,
            Err(e) => tracing::debug!(campaign = %id, endpoint, error = %e, "report not taken"),
        }
        drop(entries);
        self.inner.poke.notify_one();
    }

    /// The campaigns whose device `endpoint` is downloading or installing `package`.
    fn running_for(&self, endpoint: &str, package: &str) -> Vec<String> {
        lock(&self.inner.entries)
            .iter()
            .filter(|(_, e)| {
                e.record.package_id == package
                    && e.record
                        .campaign
                        .device(endpoint)
                        .is_some_and(|d| d.kind == StateKind::InProgress)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Outcomes of updates, from the firmware updater's events.
    async fn follow_server(self, mut rx: broadcast::Receiver<ServerEvent>) {
        loop {
            match rx.recv().await {
                Ok(ServerEvent::FirmwareState(record)) => self.on_update(&record),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "campaigns fell behind the server's events");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }

    fn on_update(&self, record: &UpdateRecord) {
        let ids = self.running_for(&record.endpoint, &record.package_id);
        if record.phase.is_final() {
            let served = self.inner.updater.firmware().take_served(&record.endpoint);
            let outcome = outcome_of(record);
            for id in &ids {
                self.report(id, &record.endpoint, outcome.clone(), served);
            }
        } else if record.phase == Phase::Updating {
            let mut entries = lock(&self.inner.entries);
            for id in &ids {
                if let Some(e) = entries.get_mut(id) {
                    if e.record.campaign.mark_installing(&record.endpoint).is_ok() {
                        e.dirty = true;
                    }
                }
            }
        }
    }

    /// Facts, wake-ups and new members, from the fleet.
    async fn follow_fleet(self, mut rx: broadcast::Receiver<FleetEvent>) {
        loop {
            let event = match rx.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "campaigns fell behind the fleet's events");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if lock(&self.inner.entries).is_empty() {
                continue;
            }
            let now = unix_now_ms();
            match event {
                FleetEvent::Changed { endpoint } => self.on_facts(&endpoint, now),
                FleetEvent::Woke {
                    endpoint,
                    awake_until_unix_ms,
                } => {
                    self.on_facts(&endpoint, now);
                    let mut entries = lock(&self.inner.entries);
                    for e in entries.values_mut() {
                        if e.record.campaign.device(&endpoint).is_some()
                            && e.record
                                .campaign
                                .device_woke(&endpoint, awake_until_unix_ms, now)
                                .is_ok()
                        {
                            e.dirty = true;
                        }
                    }
                }
                FleetEvent::Membership(m) => {
                    if m.joined {
                        self.join(
                            now,
                            &m.endpoint,
                            |t| matches!(t, Target::Group(g) if **g == *m.group),
                        );
                    }
                }
            }
            self.inner.poke.notify_one();
        }
    }

    fn on_facts(&self, endpoint: &str, now: u64) {
        let Some(facts) = self.inner.fleet.facts(endpoint) else {
            return;
        };
        let attrs = self.inner.fleet.attributes(endpoint);
        let mut join = false;
        {
            let mut entries = lock(&self.inner.entries);
            for e in entries.values_mut() {
                if e.record.campaign.device(endpoint).is_some() {
                    if e.record.campaign.update_facts(facts.clone(), now).is_ok() {
                        e.dirty = true;
                    }
                } else if let (Some(f), Some(a)) = (&e.filter, &attrs) {
                    if e.record.campaign.policy().join_new_members && f.matches(a) {
                        join = true;
                    }
                }
            }
        }
        if join {
            // Group targets join through membership events.
            self.join(now, endpoint, |_| false);
        }
    }

    /// Adds a device to the running campaigns whose target `matches` and that take new
    /// members.
    fn join(&self, now: u64, endpoint: &str, matches: impl Fn(&Target) -> bool) {
        let Some(facts) = self.inner.fleet.facts(endpoint) else {
            return;
        };
        let attrs = self.inner.fleet.attributes(endpoint);
        let mut entries = lock(&self.inner.entries);
        for e in entries.values_mut() {
            let c = &e.record.campaign;
            if !c.policy().join_new_members || c.device(endpoint).is_some() {
                continue;
            }
            let target_ok = match (&e.record.target, &e.filter, &attrs) {
                (Target::Filter(_), Some(f), Some(a)) => f.matches(a),
                (t, _, _) => matches(t),
            };
            if target_ok && e.record.campaign.add_devices([facts.clone()], now).is_ok() {
                e.dirty = true;
            }
        }
    }
}

/// What an ended update means to a campaign.
fn outcome_of(r: &UpdateRecord) -> Outcome {
    match r.phase {
        Phase::Succeeded => Outcome::Succeeded,
        Phase::Cancelled => Outcome::Failed {
            kind: FailureKind::Interrupted,
            detail: r.reason.clone().unwrap_or_else(|| "cancelled".into()),
        },
        _ => {
            let detail = r.reason.clone().unwrap_or_else(|| "failed".into());
            let kind = r
                .result
                .and_then(FailureKind::from_update_result)
                .unwrap_or_else(|| {
                    let d = detail.to_ascii_lowercase();
                    if d.contains("timed out") || d.contains("timeout") {
                        FailureKind::Timeout
                    } else if d.contains("version") {
                        FailureKind::VersionMismatch
                    } else {
                        FailureKind::Other
                    }
                });
            Outcome::Failed { kind, detail }
        }
    }
}

/// What became of a device a crash left in doubt, from the firmware store.
fn recovered(updater: &Updater, record: &CampaignRecord, endpoint: &str) -> Recovered {
    let update = updater.firmware().store.update(endpoint).ok().flatten();
    match update {
        Some(u)
            if u.package_id == record.package_id
                && u.started_at_unix_ms >= record.created_at_unix_ms =>
        {
            if u.phase.is_final() {
                Recovered::Finished(outcome_of(&u))
            } else if matches!(u.phase, Phase::Updating | Phase::Verifying) {
                Recovered::Installing
            } else {
                Recovered::Downloading
            }
        }
        _ => Recovered::NotStarted,
    }
}
