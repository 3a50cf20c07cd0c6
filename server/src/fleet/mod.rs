//! The fleet as the server sees it: every device's attributes (from its object tree, its
//! session and its operator), the operator's regions and cell status, and the dynamic
//! groups over them ([`lwm2m_fleet`] holds the logic, this module feeds it).
//!
//! One task follows the server's events: a registration sets the session attributes and
//! starts a [`reader`] that reads /3, /5 and sets up observations of /3/0/9, /4/0 and /6/0;
//! every notification, Send and session change goes into the inventory, which updates
//! derived attributes and group membership incrementally. Changed attributes are written
//! in one transaction per flush interval (a notification storm costs one commit a
//! second, and a `kill -9` loses at most that much of what devices report again anyway);
//! what an operator sets is written before the API answers.
//!
//! Campaigns ([`campaigns`]) read facts and membership from here and hear of changes and
//! wake-ups through [`FleetEvent`]s.

pub mod campaigns;
mod reader;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lwm2m_campaign::{CellStatus, CellTable, DeviceFacts};
use lwm2m_fleet::attributes::BearerKind;
use lwm2m_fleet::{
    Attr, Attributes, Changed, Inventory, InventoryConfig, MembershipChange, Regions,
};
use lwm2m_objects::{Node, Path, Resource, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Semaphore};

use crate::runtime::persist::unix_now_ms;
use crate::runtime::{ServerEvent, ServerHandle};
use store::{FleetStore, FleetStoreError, Table};

/// Key of the one record of the regions table.
const REGIONS_KEY: &str = "regions";
/// Fleet events held for a campaign runner that is behind.
const FLEET_EVENT_CAPACITY: usize = 65_536;
/// The server events the inventory takes in one go before it tells its own: a bound on
/// the fleet events held meanwhile (a few per server event), far below the capacity.
const FOLLOW_BATCH: usize = 256;

/// How the fleet is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSettings {
    /// Read each device's objects and observe its dynamic values at registration.
    /// Off only for benchmarks of the registration path whose devices answer nothing.
    pub inventory_reads: bool,
    /// Devices being read at once; more wait (a herd of registrations must not become
    /// a herd of requests).
    pub read_concurrency: usize,
    /// How often changed attributes are written.
    pub flush_interval: Duration,
    /// How often attributes whose only change is the time last seen are written. Every
    /// Update moves that time, so writing it at each flush rewrote the record of every
    /// device heard from (at 30,000 Updates a second, most of the table each second); a
    /// crash loses at most this much of it, and a registered device's registration
    /// (stored at its every Update) says when it was last heard from anyway.
    pub seen_flush_interval: Duration,
    pub max_devices: usize,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            inventory_reads: true,
            read_concurrency: 256,
            flush_interval: Duration::from_secs(1),
            seen_flush_interval: Duration::from_secs(60),
            max_devices: lwm2m_fleet::inventory::DEFAULT_MAX_DEVICES,
        }
    }
}

/// What the fleet tells campaigns.
#[derive(Debug, Clone)]
pub enum FleetEvent {
    /// Attributes of this device changed.
    Changed {
        endpoint: Arc<str>,
    },
    /// A queue-mode device is awake until then.
    Woke {
        endpoint: Arc<str>,
        awake_until_unix_ms: u64,
    },
    Membership(MembershipChange),
}

/// A dynamic group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub id: String,
    pub name: String,
    pub filter: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Store(#[from] FleetStoreError),
    #[error(transparent)]
    Inventory(#[from] lwm2m_fleet::InventoryError),
}

/// The fleet service; cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

struct Inner {
    handle: ServerHandle,
    settings: FleetSettings,
    store: FleetStore,
    inventory: Mutex<Inventory>,
    /// Endpoints whose attributes changed since the last flush.
    dirty: Mutex<HashSet<Arc<str>>>,
    /// Endpoints whose only change since their last write is the time last seen:
    /// written every `seen_flush_interval`, or with their next other change.
    seen: Mutex<HashSet<Arc<str>>>,
    cells: Mutex<CellTable>,
    /// The regions as the operator wrote them.
    regions_json: Mutex<Option<serde_json::Value>>,
    /// Queue-mode devices awake now, until when (when each last woke is in its
    /// attributes, which predict the next wake from it).
    wake: Mutex<Wakes>,
    events: broadcast::Sender<FleetEvent>,
    /// Fleet events of the changes being made, sent together by [`Fleet::publish`].
    held: Mutex<Vec<FleetEvent>>,
    reads: Arc<Semaphore>,
}

#[derive(Default)]
struct Wakes {
    awake_until: HashMap<Arc<str>, u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fleet {
    /// Opens `fleet.redb` in the server's data directory, loads what it holds and starts
    /// following the server's events.
    pub async fn start(handle: ServerHandle, settings: FleetSettings) -> Result<Fleet, FleetError> {
        let store = FleetStore::open(handle.data_dir())?;
        let mut inventory = Inventory::new(InventoryConfig {
            max_devices: settings.max_devices,
            ..InventoryConfig::default()
        });
        let mut regions_json = None;
        if let Some(json) = store.get::<serde_json::Value>(Table::Regions, REGIONS_KEY)? {
            match Regions::from_json(&json.to_string()) {
                Ok(r) => {
                    inventory.set_regions(r);
                    regions_json = Some(json);
                }
                Err(e) => tracing::error!(error = %e, "stored regions not loaded"),
            }
        }
        for (key, mut attrs) in store.all_attributes::<Attributes>()? {
            attrs.set_store_key(key);
            inventory.insert(attrs)?;
        }
        for (_, g) in store.all::<GroupRecord>(Table::Groups)? {
            match lwm2m_fleet::Filter::compile(&g.filter) {
                Ok(f) => {
                    inventory.define_group(&g.id, &g.name, f)?;
                }
                Err(e) => {
                    tracing::error!(group = %g.id, error = %e.message, "stored group not loaded")
                }
            }
        }
        let mut cells = CellTable::new();
        for (id, status) in store.all::<CellStatus>(Table::Cells)? {
            cells.insert(id, status);
        }
        let (events, _) = broadcast::channel(FLEET_EVENT_CAPACITY);
        let fleet = Fleet {
            inner: Arc::new(Inner {
                reads: Arc::new(Semaphore::new(settings.read_concurrency.max(1))),
                handle: handle.clone(),
                settings,
                store,
                inventory: Mutex::new(inventory),
                dirty: Mutex::new(HashSet::new()),
                seen: Mutex::new(HashSet::new()),
                cells: Mutex::new(cells),
                regions_json: Mutex::new(regions_json),
                wake: Mutex::new(Wakes::default()),
                events,
                held: Mutex::new(Vec::new()),
            }),
        };
        // Subscribed before the reconciliation, so no registration falls in between.
        let rx = handle.subscribe();
        fleet.reconcile_online().await;
        tokio::spawn(fleet.clone().follow(rx));
        tokio::spawn(fleet.clone().flush_loop());
        Ok(fleet)
    }

    pub fn handle(&self) -> &ServerHandle {
        &self.inner.handle
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.inner.events.subscribe()
    }

    /// The stored devices that are registered now are online, the others not; a
    /// registered device was last seen when its registration says, if that is later
    /// than its stored attributes say (they write that time only now and then).
    async fn reconcile_online(&self) {
        let mut registered: HashMap<Arc<str>, u64> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .handle
                .clients_after(None, after.as_deref(), 0, 10_000)
                .await;
            let n = page.clients.len();
            for c in page.clients {
                after = Some(c.registration.endpoint.to_string());
                registered.insert(c.registration.endpoint, c.last_seen_unix_ms);
            }
            if n < 10_000 {
                break;
            }
        }
        let known: Vec<String> = {
            let mut inventory = lock(&self.inner.inventory);
            for name in registered.keys() {
                inventory.share_name(name);
            }
            inventory.iter().map(|a| a.endpoint().to_string()).collect()
        };
        for ep in known {
            let seen = registered.get(ep.as_str()).copied();
            let online = seen.is_some();
            self.change(&ep, |a, _| {
                let mut c =
                    a.set_online(online) | a.set_awake(online && a.queue_mode() != Some(true));
                let stored = a.last_seen_unix_ms().unwrap_or(0);
                if let Some(t) = seen
                    .and_then(|t| i64::try_from(t).ok())
                    .filter(|t| *t > stored)
                {
                    c |= a.set_last_seen(t);
                }
                c
            });
        }
        self.publish();
    }

    /// Holds an event until [`Fleet::publish`]. A listener (the campaign runner) is
    /// quicker than a batch of changes; told of each at once, it went back to wait after
    /// every one and was woken again for the next, a context switch per change.
    fn announce(&self, e: FleetEvent) {
        lock(&self.inner.held).push(e);
    }

    /// Sends the held events, in the order they happened.
    fn publish(&self) {
        let held = std::mem::take(&mut *lock(&self.inner.held));
        for e in held {
            let _ = self.inner.events.send(e);
        }
    }

    /// Runs `f` on a device's attributes (creating them if new), then tells whoever
    /// listens what changed.
    fn change(
        &self,
        endpoint: &str,
        f: impl FnOnce(&mut Attributes, &mut lwm2m_fleet::attributes::FleetContext<'_>) -> Changed,
    ) {
        self.change_named(endpoint, None, f)
    }

    /// [`Fleet::change`] of a device named by the registry's shared copy of its name,
    /// which a new device keeps.
    fn change_named(
        &self,
        endpoint: &str,
        shared: Option<&Arc<str>>,
        f: impl FnOnce(&mut Attributes, &mut lwm2m_fleet::attributes::FleetContext<'_>) -> Changed,
    ) {
        let mut changed = Changed::NONE;
        let g = |a: &mut Attributes, cx: &mut lwm2m_fleet::attributes::FleetContext<'_>| {
            changed = f(a, cx);
            changed
        };
        let result = {
            let mut inventory = lock(&self.inner.inventory);
            match shared {
                Some(name) => inventory.update_shared(name, g),
                None => inventory.update(endpoint, g),
            }
        };
        self.after_change(endpoint, changed, result);
    }

    fn after_change(
        &self,
        endpoint: &str,
        changed: Changed,
        result: Result<Vec<MembershipChange>, lwm2m_fleet::InventoryError>,
    ) {
        match result {
            Ok(changes) => {
                if changed.is_empty() && changes.is_empty() {
                    return;
                }
                let ep: Arc<str> = Arc::from(endpoint);
                if changed == Changed::NONE.with(Attr::LastSeen) && changes.is_empty() {
                    lock(&self.inner.seen).insert(ep.clone());
                } else {
                    lock(&self.inner.dirty).insert(ep.clone());
                }
                for c in changes {
                    self.announce(FleetEvent::Membership(c));
                }
                self.announce(FleetEvent::Changed { endpoint: ep });
            }
            Err(e) => tracing::warn!(endpoint, error = %e, "inventory not updated"),
        }
    }

    /// Puts what a device answered at `path` into its attributes, and tells of it.
    pub(crate) fn apply_node(&self, endpoint: &str, path: &Path, node: &Node) {
        self.take_node(endpoint, path, node);
        self.publish();
    }

    /// Puts what a device answered or notified at `path` into its attributes; the fleet
    /// events wait for [`Fleet::publish`].
    fn take_node(&self, endpoint: &str, path: &Path, node: &Node) {
        let mut values: Vec<(Path, Value)> = Vec::new();
        let mut multis: Vec<(Path, Vec<(u16, Value)>)> = Vec::new();
        collect(path, node, &mut values, &mut multis);
        if values.is_empty() && multis.is_empty() {
            return;
        }
        // One update: the attributes report what they changed, so nothing is compared.
        let mut changed = Changed::NONE;
        let result = lock(&self.inner.inventory).update(endpoint, |a, cx| {
            let mut c = Changed::NONE;
            for (p, v) in &values {
                c |= a.apply_in(p, v, cx);
            }
            for (p, list) in &multis {
                c |= a.apply_multi_in(p, list, cx);
            }
            changed = c;
            c
        });
        self.after_change(endpoint, changed, result);
    }

    /// Follows the server's events until it stops: what has arrived, up to
    /// [`FOLLOW_BATCH`] events, and then the fleet events they caused.
    async fn follow(self, mut rx: broadcast::Receiver<ServerEvent>) {
        loop {
            match rx.recv().await {
                Ok(e) => self.on_event(e),
                Err(broadcast::error::RecvError::Lagged(n)) => Self::lagged(n),
                Err(broadcast::error::RecvError::Closed) => break,
            }
            for _ in 1..FOLLOW_BATCH {
                match rx.try_recv() {
                    Ok(e) => self.on_event(e),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => Self::lagged(n),
                    Err(_) => break,
                }
            }
            self.publish();
        }
        self.publish();
    }

    fn lagged(missed: u64) {
        tracing::warn!(missed, "the inventory fell behind the server's events");
    }

    fn on_event(&self, event: ServerEvent) {
        let now = unix_now_ms();
        match event {
            ServerEvent::Registered { registration, .. } => {
                self.on_session(&registration, true, now);
                if self.inner.settings.inventory_reads {
                    reader::spawn(self.clone(), &registration);
                }
            }
            ServerEvent::Updated {
                registration,
                changes,
            } => {
                self.on_session(&registration, changes.objects, now);
                if changes.objects && self.inner.settings.inventory_reads {
                    reader::spawn(self.clone(), &registration);
                }
            }
            ServerEvent::Deregistered { registration } | ServerEvent::Expired { registration } => {
                lock(&self.inner.wake)
                    .awake_until
                    .remove(&*registration.endpoint);
                self.change(&registration.endpoint, |a, _| {
                    a.set_online(false) | a.set_awake(false)
                });
            }
            // The version an update verified is the device's /3/0/3 now: a device that
            // comes back with an Update (not a Register) after installing is not read
            // again, and its groups must not go on counting it on the old version.
            ServerEvent::FirmwareState(record) => {
                if let (crate::firmware::update::Phase::Succeeded, Some(version)) =
                    (record.phase, &record.final_version)
                {
                    let value = Value::String(version.clone());
                    self.change(&record.endpoint, |a, cx| {
                        a.apply_in(&Path::resource(3, 0, 3), &value, cx)
                    });
                }
            }
            ServerEvent::Awake { endpoint, .. } => self.woke(&endpoint, now),
            ServerEvent::Sleeping { endpoint, .. } => {
                lock(&self.inner.wake).awake_until.remove(endpoint.as_str());
                self.change(&endpoint, |a, _| {
                    let next = a.predicted_wake_unix_ms();
                    a.set_awake(false) | a.set_next_wake(next)
                });
            }
            ServerEvent::Notification {
                endpoint,
                packet,
                paths,
                composite,
                device,
                ..
            } => {
                if composite || paths.len() != 1 {
                    let op = crate::dm::Operation::ObserveComposite {
                        paths: paths.clone(),
                        attributes: Default::default(),
                        format: None,
                    };
                    if let Ok(crate::dm::DmResponse::ObservedComposite { nodes, .. }) =
                        self.inner.handle.read_answer(&device, &op, &packet)
                    {
                        for (p, n) in nodes.iter() {
                            self.take_node(&endpoint, p, n);
                        }
                    }
                } else {
                    let path = paths[0];
                    let op = crate::dm::Operation::Observe {
                        path,
                        attributes: Default::default(),
                        format: None,
                    };
                    if let Ok(crate::dm::DmResponse::Observed { node, .. }) =
                        self.inner.handle.read_answer(&device, &op, &packet)
                    {
                        self.take_node(&endpoint, &path, &node);
                    }
                }
                self.change(&endpoint, |a, _| a.set_last_seen(now as i64));
            }
            ServerEvent::SendReceived {
                endpoint,
                content_format,
                payload,
                ..
            } => {
                match self.inner.handle.read_send(content_format, &payload) {
                    Ok(crate::dm::SendData::Nodes(nodes)) => {
                        for (p, n) in nodes.iter() {
                            self.take_node(&endpoint, p, n);
                        }
                    }
                    Ok(crate::dm::SendData::Series { path, series }) => {
                        // The newest reading is the current value.
                        if let Some(last) = series.last() {
                            self.take_node(&endpoint, &path, &last.node);
                        }
                    }
                    Err(_) => {}
                }
            }
            _ => {}
        }
    }

    /// A Register or an Update: the session's attributes.
    fn on_session(&self, reg: &crate::registry::Registration, objects: bool, now: u64) {
        let version = reg.version.to_string();
        let queue = reg.queue_mode;
        self.change_named(&reg.endpoint, Some(&reg.endpoint), |a, cx| {
            let mut c = a.set_online(true)
                | a.set_awake(true)
                | a.set_queue_mode(queue)
                | a.set_last_seen(now as i64)
                | a.set_lwm2m_version_in(&version, cx);
            if objects {
                let list: Vec<(u16, String)> = object_versions(reg);
                c |= a.set_objects_in(list.iter().map(|(id, v)| (*id, v.as_str())), cx);
            }
            c
        });
        if queue {
            self.woke(&reg.endpoint, now);
        }
    }

    fn woke(&self, endpoint: &str, now: u64) {
        let until = now.saturating_add(
            u64::try_from(self.inner.handle.awake_window().as_millis()).unwrap_or(u64::MAX),
        );
        // The inventory's copy of the name: the map holds every queue-mode device awake.
        let ep: Arc<str> = lock(&self.inner.inventory)
            .get(endpoint)
            .map(|a| Arc::clone(a.shared_endpoint()))
            .unwrap_or_else(|| Arc::from(endpoint));
        lock(&self.inner.wake).awake_until.insert(ep.clone(), until);
        self.change(endpoint, |a, _| {
            a.note_woke(i64::try_from(now).unwrap_or(i64::MAX));
            a.set_awake(true)
        });
        self.announce(FleetEvent::Woke {
            endpoint: ep,
            awake_until_unix_ms: until,
        });
    }

    /// Writes the attributes changed since the last flush, once per interval, and those
    /// only seen again once per `seen_flush_interval`.
    async fn flush_loop(self) {
        let mut tick = tokio::time::interval(self.inner.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = self.inner.handle.stopped();
        tokio::pin!(stopped);
        let mut seen_due = tokio::time::Instant::now() + self.inner.settings.seen_flush_interval;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => {
                    self.write_dirty(true);
                    break;
                }
            }
            let this = self.clone();
            let now = tokio::time::Instant::now();
            let with_seen = now >= seen_due;
            if with_seen {
                seen_due = now + self.inner.settings.seen_flush_interval;
            }
            let _ = tokio::task::spawn_blocking(move || this.write_dirty(with_seen)).await;
        }
    }

    /// Writes the changed attributes; the times last seen too if `with_seen`.
    fn write_dirty(&self, with_seen: bool) {
        let mut dirty: HashSet<Arc<str>> = std::mem::take(&mut *lock(&self.inner.dirty));
        {
            // A device in both goes with its other change, which writes its whole record.
            let mut seen = lock(&self.inner.seen);
            if with_seen {
                dirty.extend(seen.drain());
            } else {
                // As much work as the write itself, not a pass over every device seen.
                for ep in &dirty {
                    seen.remove(ep);
                }
            }
        }
        if dirty.is_empty() {
            return;
        }
        let dirty: Vec<Arc<str>> = dirty.into_iter().collect();
        let mut records = Vec::with_capacity(dirty.len());
        {
            let mut inv = lock(&self.inner.inventory);
            for ep in &dirty {
                // The inventory never forgets a device, so there is nothing to remove.
                match record_of(&mut inv, &self.inner.store, ep) {
                    Some(Ok(record)) => records.push(record),
                    Some(Err(e)) => {
                        tracing::error!(endpoint = %ep, error = %e, "attributes not written")
                    }
                    None => {}
                }
            }
        }
        // In key order, new devices last: each leaf of the table is visited once.
        records.sort_unstable_by_key(|(key, _)| *key);
        if let Err(e) = self.inner.store.put_attributes(&records) {
            tracing::error!(error = %e, devices = dirty.len(), "attributes not written");
            lock(&self.inner.dirty).extend(dirty);
        }
    }

    // ---- what the API and campaigns ask ----

    /// A device's attributes as last written to the store (those in memory may be newer).
    pub fn stored_attributes(&self, endpoint: &str) -> Result<Option<Attributes>, FleetError> {
        let key = match lock(&self.inner.inventory).get(endpoint) {
            Some(a) if a.store_key() != 0 => a.store_key(),
            _ => return Ok(None),
        };
        Ok(self.inner.store.get_attributes(key)?)
    }

    pub fn attributes(&self, endpoint: &str) -> Option<Attributes> {
        lock(&self.inner.inventory).get(endpoint).cloned()
    }

    pub fn device_count(&self) -> usize {
        lock(&self.inner.inventory).len()
    }

    /// Applies an operator's patch and writes the device's attributes before answering.
    pub fn patch_external(
        &self,
        endpoint: &str,
        patch: &lwm2m_fleet::ExternalPatch,
    ) -> Result<Attributes, FleetError> {
        self.patch_many(&[(endpoint.to_string(), patch.clone())])?;
        self.attributes(endpoint)
            .ok_or_else(|| lwm2m_fleet::InventoryError::UnknownDevice(endpoint.to_string()).into())
    }

    /// Patches of several devices, checked all before any applies: one refused patch (an
    /// unknown device, a label too long) changes nothing.
    pub fn patch_many(
        &self,
        patches: &[(String, lwm2m_fleet::ExternalPatch)],
    ) -> Result<usize, FleetError> {
        let mut records = Vec::with_capacity(patches.len());
        let mut memberships = Vec::new();
        {
            let mut inv = lock(&self.inner.inventory);
            for (ep, patch) in patches {
                let Some(a) = inv.get(ep) else {
                    return Err(lwm2m_fleet::InventoryError::UnknownDevice(ep.clone()).into());
                };
                let mut trial = a.clone();
                trial
                    .apply_external(patch, &mut Default::default())
                    .map_err(lwm2m_fleet::InventoryError::from)?;
            }
            for (ep, patch) in patches {
                memberships.extend(inv.patch_external(ep, patch)?);
                if let Some(record) = record_of(&mut inv, &self.inner.store, ep) {
                    records.push(record?);
                }
            }
        }
        self.inner.store.put_attributes(&records)?;
        for c in memberships {
            let _ = self.inner.events.send(FleetEvent::Membership(c));
        }
        for (ep, _) in patches {
            let _ = self.inner.events.send(FleetEvent::Changed {
                endpoint: Arc::from(ep.as_str()),
            });
        }
        Ok(patches.len())
    }

    /// A campaign's view of a device.
    pub fn facts(&self, endpoint: &str) -> Option<DeviceFacts> {
        let a = self.attributes(endpoint)?;
        let awake_until = lock(&self.inner.wake).awake_until.get(endpoint).copied();
        Some(facts_of(&a, awake_until))
    }

    pub fn cells(&self) -> CellTable {
        lock(&self.inner.cells).clone()
    }

    pub fn put_cell(&self, cell: &str, status: CellStatus) -> Result<(), FleetError> {
        self.inner.store.put(Table::Cells, cell, &status)?;
        lock(&self.inner.cells).insert(cell.to_string(), status);
        Ok(())
    }

    pub fn delete_cell(&self, cell: &str) -> Result<bool, FleetError> {
        self.inner.store.delete(Table::Cells, cell)?;
        Ok(lock(&self.inner.cells).remove(cell).is_some())
    }

    pub fn regions_json(&self) -> Option<serde_json::Value> {
        lock(&self.inner.regions_json).clone()
    }

    pub fn set_regions(&self, json: serde_json::Value, regions: Regions) -> Result<(), FleetError> {
        self.inner.store.put(Table::Regions, REGIONS_KEY, &json)?;
        *lock(&self.inner.regions_json) = Some(json);
        let changes = lock(&self.inner.inventory).set_regions(regions);
        self.mark_all_dirty();
        for c in changes {
            let _ = self.inner.events.send(FleetEvent::Membership(c));
        }
        Ok(())
    }

    fn mark_all_dirty(&self) {
        let all: Vec<Arc<str>> = lock(&self.inner.inventory)
            .iter()
            .map(|a| Arc::from(a.endpoint()))
            .collect();
        lock(&self.inner.dirty).extend(all);
    }

    pub fn groups(&self) -> Vec<(GroupRecord, usize)> {
        let inv = lock(&self.inner.inventory);
        let all = inv.groups().iter().map(|g| group_record(&g)).collect();
        all
    }

    pub fn group(&self, id: &str) -> Option<(GroupRecord, usize)> {
        let inv = lock(&self.inner.inventory);
        let found = inv
            .groups()
            .iter()
            .find(|g| g.id == id)
            .map(|g| group_record(&g));
        found
    }

    /// Defines or redefines a group; answers its member count.
    pub fn put_group(
        &self,
        record: GroupRecord,
        filter: lwm2m_fleet::Filter,
    ) -> Result<usize, FleetError> {
        let exists = self.group(&record.id).is_some();
        let changes = {
            let mut inv = lock(&self.inner.inventory);
            if exists {
                inv.redefine_group(&record.id, &record.name, filter)?
            } else {
                inv.define_group(&record.id, &record.name, filter)?;
                Vec::new()
            }
        };
        if let Err(e) = self.inner.store.put(Table::Groups, &record.id, &record) {
            // Not stored: not kept either.
            let _ = lock(&self.inner.inventory).remove_group(&record.id);
            return Err(e.into());
        }
        for c in changes {
            let _ = self.inner.events.send(FleetEvent::Membership(c));
        }
        Ok(lock(&self.inner.inventory)
            .groups()
            .count(&record.id)
            .unwrap_or(0))
    }

    pub fn delete_group(&self, id: &str) -> Result<bool, FleetError> {
        if self.group(id).is_none() {
            return Ok(false);
        }
        self.inner.store.delete(Table::Groups, id)?;
        lock(&self.inner.inventory).remove_group(id)?;
        Ok(true)
    }

    pub fn members(
        &self,
        id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<lwm2m_fleet::MembersPage, FleetError> {
        Ok(lock(&self.inner.inventory)
            .groups()
            .members(id, after, limit)
            .map_err(lwm2m_fleet::InventoryError::from)?)
    }

    pub fn is_member(&self, group: &str, endpoint: &str) -> bool {
        lock(&self.inner.inventory)
            .groups()
            .is_member(group, endpoint)
    }

    pub fn preview(&self, filter: &lwm2m_fleet::Filter) -> usize {
        lock(&self.inner.inventory).preview(filter)
    }

    /// Every device matching `filter`, in no particular order.
    pub fn matching(&self, filter: &lwm2m_fleet::Filter) -> Vec<String> {
        lock(&self.inner.inventory)
            .iter()
            .filter(|a| filter.matches(a))
            .map(|a| a.endpoint().to_string())
            .collect()
    }

    pub(crate) fn store(&self) -> &FleetStore {
        &self.inner.store
    }

    pub(crate) fn read_permits(&self) -> Arc<Semaphore> {
        self.inner.reads.clone()
    }
}

/// A device's attributes record with its key in the store, given now if the device has
/// none yet; `None` for a device the inventory does not hold.
fn record_of(
    inv: &mut Inventory,
    store: &FleetStore,
    endpoint: &str,
) -> Option<Result<(u32, Vec<u8>), FleetStoreError>> {
    let a = inv.get(endpoint)?;
    let key = a.store_key();
    if key != 0 {
        return Some(store::encode(endpoint, a).map(|bytes| (key, bytes)));
    }
    let key = match store.new_attributes_key() {
        Ok(k) => k,
        Err(e) => return Some(Err(e)),
    };
    inv.set_store_key(endpoint, key);
    let a = inv.get(endpoint)?;
    Some(store::encode(endpoint, a).map(|bytes| (key, bytes)))
}

/// A group's definition and member count.
fn group_record(g: &lwm2m_fleet::GroupInfo<'_>) -> (GroupRecord, usize) {
    (
        GroupRecord {
            id: g.id.to_string(),
            name: g.name.to_string(),
            filter: g.filter.source().to_string(),
        },
        g.count,
    )
}

/// A campaign's view of a device's attributes.
pub fn facts_of(a: &Attributes, awake_until: Option<u64>) -> DeviceFacts {
    DeviceFacts {
        endpoint: a.endpoint().to_string(),
        cell: a.cell_id().map(|c| c.to_string()),
        roaming: a.roaming(),
        bearer_is_wifi: a.bearer() == Some(BearerKind::Wifi),
        has_wifi: a.has_wifi().unwrap_or(false),
        battery: a.battery(),
        on_mains: a.on_mains().unwrap_or(false),
        billing_suspended: a.billing() == Some("suspended"),
        queue_mode: a.queue_mode().unwrap_or(false),
        awake_until,
        online: a.online().unwrap_or(false),
    }
}

/// The object ids and versions a registration announces.
fn object_versions(reg: &crate::registry::Registration) -> Vec<(u16, String)> {
    let mut out: Vec<(u16, String)> = Vec::new();
    for link in &reg.objects.objects {
        if out.iter().any(|(id, _)| *id == link.object) {
            continue;
        }
        let version = link
            .version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "1.0".to_string());
        out.push((link.object, version));
    }
    out
}

/// The single and multiple resources under `node`, at their paths.
fn collect(
    path: &Path,
    node: &Node,
    values: &mut Vec<(Path, Value)>,
    multis: &mut Vec<(Path, Vec<(u16, Value)>)>,
) {
    let ids = path.ids();
    match node {
        Node::Object(o) => {
            for inst in o.instances.values() {
                if let Ok(p) = path.child(inst.id) {
                    collect(&p, &Node::Instance(inst.clone()), values, multis);
                }
            }
        }
        Node::Instance(i) => {
            let (Some(&o), Some(&iid)) = (ids.first(), ids.get(1)) else {
                return;
            };
            for r in i.resources.values() {
                push_resource(Path::resource(o, iid, resource_id(r)), r, values, multis);
            }
        }
        Node::Resource(r) => {
            if ids.len() >= 3 {
                push_resource(*path, r, values, multis);
            }
        }
        Node::ResourceInstance { value, .. } => {
            if ids.len() == 4 {
                values.push((*path, value.clone()));
            }
        }
    }
}

fn resource_id(r: &Resource) -> u16 {
    match r {
        Resource::Single { id, .. } | Resource::Multiple { id, .. } => *id,
    }
}

fn push_resource(
    path: Path,
    r: &Resource,
    values: &mut Vec<(Path, Value)>,
    multis: &mut Vec<(Path, Vec<(u16, Value)>)>,
) {
    match r {
        Resource::Single { value, .. } => values.push((path, value.clone())),
        Resource::Multiple { instances, .. } => multis.push((
            path,
            instances.iter().map(|(k, v)| (*k, v.clone())).collect(),
        )),
    }
}
