//! One device's firmware update, driven through object 5 to a verified end:
//!
//! 1. **Starting**: read the device's firmware version (/3/0/3) and its object 5
//!    instance: State, Update Result, protocols (/5/0/8) and delivery method (/5/0/9);
//!    pick pull or push and the protocol unless the operator did; for pull, issue a token
//!    and write its URL into Package URI (/5/0/1); for push, write the package into
//!    Package (/5/0/0), which the CoAP layer sends with Block1. Observe State and Update
//!    Result.
//! 2. **Downloading**: wait until State is Downloaded (2), then execute Update (/5/0/2).
//! 3. **Updating**: wait until State is back to Idle with Update Result 1; the device
//!    usually reboots and registers again on the way.
//! 4. **Verifying**: read /3/0/3: only the package's version there is success. A device
//!    that reports success but runs something else has failed.
//!
//! Any Update Result from 2 to 9 (or 10, cancelled on the device) ends the update with
//! its meaning; so do the download and update timeouts. Every step is persisted before
//! the next request goes out, so after a restart the update resumes where it stood; a
//! queue-mode device's requests wait in its queue until it wakes. The device is read
//! again on each of its notifications, registrations and wake-ups, and at the poll
//! interval. Every transition is an event and counted.

use std::sync::Arc;
use std::time::Duration;

use lwm2m_objects::{Node, Path, Resource, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::store::{Package, TokenRecord};
use super::Firmware;
use crate::dm::{DmResponse, ExecuteArgs, Operation, WriteMode};
use crate::metrics::FirmwarePhaseLabels;
use crate::runtime::persist::unix_now_ms;
use crate::runtime::{ManageError, ServerEvent, ServerHandle};

/// How long the answer to Execute Update is waited for before the state is watched.
const EXECUTE_WAIT: Duration = Duration::from_secs(10);
/// Transitions kept in a record's history.
const MAX_HISTORY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Pull,
    Push,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Coap,
    Coaps,
    Http,
    Https,
}

impl Protocol {
    /// Its number in Firmware Update Protocol Support (/5/0/8).
    pub fn code(self) -> i64 {
        match self {
            Protocol::Coap => 0,
            Protocol::Coaps => 1,
            Protocol::Http => 2,
            Protocol::Https => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Downloading,
    Updating,
    Verifying,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Downloading => "downloading",
            Phase::Updating => "updating",
            Phase::Verifying => "verifying",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }
}

/// The meaning of an Update Result (/5/0/5).
pub fn result_meaning(result: i64) -> &'static str {
    match result {
        0 => "initial value",
        1 => "firmware updated successfully",
        2 => "not enough flash memory for the new firmware package",
        3 => "out of RAM during the download",
        4 => "connection lost during the download",
        5 => "integrity check failure of the new firmware package",
        6 => "unsupported package type",
        7 => "invalid URI",
        8 => "firmware update failed",
        9 => "unsupported protocol",
        10 => "firmware update cancelled on the device",
        11 => "firmware update deferred",
        _ => "unknown update result",
    }
}

/// One transition, for the record's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at_unix_ms: u64,
    pub phase: Phase,
    #[serde(default)]
    pub state: Option<i64>,
    #[serde(default)]
    pub result: Option<i64>,
}

/// An update as persisted and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRecord {
    pub endpoint: String,
    pub package_id: String,
    pub package_version: String,
    /// As asked by the operator; `None`: chosen from the device's /5/0/9.
    #[serde(default)]
    pub method: Option<Method>,
    #[serde(default)]
    pub protocol: Option<Protocol>,
    pub phase: Phase,
    /// The device's last State and Update Result.
    #[serde(default)]
    pub state: Option<i64>,
    #[serde(default)]
    pub result: Option<i64>,
    /// Why it failed or was cancelled.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub previous_version: Option<String>,
    #[serde(default)]
    pub final_version: Option<String>,
    /// The Package URI written (pull).
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    pub started_at_unix_ms: u64,
    pub updated_at_unix_ms: u64,
    /// When the current phase times out.
    #[serde(default)]
    pub deadline_unix_ms: Option<u64>,
    #[serde(default)]
    pub history: Vec<Transition>,
}

impl UpdateRecord {
    pub fn new(
        endpoint: &str,
        package: &Package,
        method: Option<Method>,
        protocol: Option<Protocol>,
    ) -> UpdateRecord {
        let now = unix_now_ms();
        UpdateRecord {
            endpoint: endpoint.to_string(),
            package_id: package.id.clone(),
            package_version: package.version.clone(),
            method,
            protocol,
            phase: Phase::Starting,
            state: None,
            result: None,
            reason: None,
            previous_version: None,
            final_version: None,
            uri: None,
            token: None,
            started_at_unix_ms: now,
            updated_at_unix_ms: now,
            deadline_unix_ms: None,
            history: vec![Transition {
                at_unix_ms: now,
                phase: Phase::Starting,
                state: None,
                result: None,
            }],
        }
    }
}

/// The base URLs of the download endpoints, as devices reach them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseUrls {
    pub coap: Option<String>,
    pub coaps: Option<String>,
    pub http: Option<String>,
    pub https: Option<String>,
}

impl BaseUrls {
    fn of(&self, p: Protocol) -> Option<&str> {
        match p {
            Protocol::Coap => self.coap.as_deref(),
            Protocol::Coaps => self.coaps.as_deref(),
            Protocol::Http => self.http.as_deref(),
            Protocol::Https => self.https.as_deref(),
        }
    }
}

/// Why an update could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no package {0:?}")]
    UnknownPackage(String),
    #[error("an update of this device is in progress (phase {0})")]
    InProgress(&'static str),
    #[error("endpoint {0:?} is not registered")]
    NotRegistered(String),
    #[error("the firmware store failed: {0}")]
    Store(String),
}

/// Starts and resumes updates; one task per device while its update runs.
#[derive(Clone)]
pub struct Updater {
    handle: ServerHandle,
    firmware: Arc<Firmware>,
    urls: Arc<BaseUrls>,
    /// Cancel switches of the running updates, by endpoint.
    running: Arc<std::sync::Mutex<std::collections::HashMap<String, watch::Sender<bool>>>>,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater").finish_non_exhaustive()
    }
}

impl Updater {
    /// An updater; resumes the updates a previous process left unfinished.
    pub fn start(handle: ServerHandle, urls: BaseUrls) -> Updater {
        let firmware = handle.firmware();
        let u = Updater {
            handle,
            firmware,
            urls: Arc::new(urls),
            running: Arc::default(),
        };
        match u.firmware.store.updates() {
            Ok(all) => {
                for record in all.into_iter().filter(|r| !r.phase.is_final()) {
                    tracing::info!(endpoint = %record.endpoint, phase = record.phase.name(), "resuming firmware update");
                    let rx = {
                        let mut running = u.running.lock().unwrap_or_else(|e| e.into_inner());
                        u.claim(&mut running, &record.endpoint)
                    };
                    u.spawn(record, rx);
                }
            }
            Err(e) => tracing::error!(error = %e, "firmware updates not resumed"),
        }
        u
    }

    pub fn firmware(&self) -> &Arc<Firmware> {
        &self.firmware
    }

    /// Starts an update of `endpoint` to `package_id`; a finished update's record is
    /// replaced.
    pub async fn begin(
        &self,
        endpoint: &str,
        package_id: &str,
        method: Option<Method>,
        protocol: Option<Protocol>,
    ) -> Result<UpdateRecord, StartError> {
        let store_err = |e: super::store::FirmwareStoreError| StartError::Store(e.to_string());
        let package = self
            .firmware
            .store
            .package(package_id)
            .map_err(store_err)?
            .ok_or_else(|| StartError::UnknownPackage(package_id.to_string()))?;
        if self.handle.registration(endpoint).await.is_none() {
            return Err(StartError::NotRegistered(endpoint.to_string()));
        }
        let record = UpdateRecord::new(endpoint, &package, method, protocol);
        {
            // Checked and claimed under one lock: two concurrent starts cannot both run.
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = self.firmware.store.update(endpoint).map_err(store_err)? {
                if !old.phase.is_final() || running.contains_key(endpoint) {
                    return Err(StartError::InProgress(old.phase.name()));
                }
            }
            self.firmware.store.put_update(&record).map_err(store_err)?;
            let cancel = self.claim(&mut running, endpoint);
            count(&self.firmware, record.phase);
            self.handle
                .publish(ServerEvent::FirmwareState(Box::new(record.clone())));
            self.spawn(record.clone(), cancel);
        }
        Ok(record)
    }

    /// Asks a running update to cancel: the device's Package URI is emptied, which
    /// resets its state machine. Answers false when no update runs.
    pub fn cancel(&self, endpoint: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(endpoint) {
            Some(tx) => tx.send(true).is_ok(),
            None => false,
        }
    }

    /// Registers a running update's cancel switch.
    fn claim(
        &self,
        running: &mut std::collections::HashMap<String, watch::Sender<bool>>,
        endpoint: &str,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        running.insert(endpoint.to_string(), tx);
        rx
    }

    fn spawn(&self, record: UpdateRecord, rx: watch::Receiver<bool>) {
        let task = Task {
            handle: self.handle.clone(),
            firmware: self.firmware.clone(),
            urls: self.urls.clone(),
            events: self.handle.subscribe(),
            cancel: rx,
            record,
            executed_at: None,
        };
        let running = self.running.clone();
        tokio::spawn(async move {
            let endpoint = task.record.endpoint.clone();
            task.run().await;
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&endpoint);
        });
    }
}

/// Counts an update entering `phase`.
fn count(firmware: &Firmware, phase: Phase) {
    firmware
        .metrics()
        .firmware_updates
        .get_or_create(&FirmwarePhaseLabels {
            phase: phase.name(),
        })
        .inc();
}

/// What a wait ended with.
enum Woken {
    /// Something happened on the device (or the poll interval passed): read it again.
    Look,
    Cancel,
    Deadline,
}

struct Task {
    handle: ServerHandle,
    firmware: Arc<Firmware>,
    urls: Arc<BaseUrls>,
    events: broadcast::Receiver<ServerEvent>,
    cancel: watch::Receiver<bool>,
    record: UpdateRecord,
    /// When Execute Update was last sent (`None` before, and after a restart of the
    /// server, when a device found still in State 2 gets it again at once).
    executed_at: Option<tokio::time::Instant>,
}

/// The device's object 5 instance, as far as the update needs it.
#[derive(Debug, Default)]
struct Fw {
    state: Option<i64>,
    result: Option<i64>,
    protocols: Vec<i64>,
    delivery: Option<i64>,
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::UnsignedInteger(u) => i64::try_from(*u).ok(),
        _ => None,
    }
}

fn read_fw(node: &Node) -> Fw {
    let mut fw = Fw::default();
    let Node::Instance(i) = node else { return fw };
    for r in i.resources.values() {
        match r {
            Resource::Single { id: 3, value } => fw.state = int(value),
            Resource::Single { id: 5, value } => fw.result = int(value),
            Resource::Single { id: 9, value } => fw.delivery = int(value),
            Resource::Single { id: 8, value } => fw.protocols = int(value).into_iter().collect(),
            Resource::Multiple { id: 8, instances } => {
                fw.protocols = instances.values().filter_map(int).collect()
            }
            _ => {}
        }
    }
    fw
}

impl Task {
    async fn run(mut self) {
        while !self.record.phase.is_final() {
            let step = match self.record.phase {
                Phase::Starting => self.start().await,
                Phase::Downloading | Phase::Updating => self.watch().await,
                Phase::Verifying => self.verify().await,
                _ => Ok(()),
            };
            if let Err(why) = step {
                self.finish(Phase::Failed, Some(why)).await;
            }
        }
        tracing::info!(endpoint = %self.record.endpoint, phase = self.record.phase.name(), "firmware update ended");
    }

    fn settings(&self) -> &super::FirmwareSettings {
        &self.firmware.settings
    }

    /// Moves to `phase`, persisting the record before anything else happens.
    fn enter(&mut self, phase: Phase, deadline: Option<Duration>) {
        let now = unix_now_ms();
        self.record.phase = phase;
        self.record.updated_at_unix_ms = now;
        self.record.deadline_unix_ms = deadline.map(|d| now + d.as_millis() as u64);
        if self.record.history.len() < MAX_HISTORY {
            self.record.history.push(Transition {
                at_unix_ms: now,
                phase,
                state: self.record.state,
                result: self.record.result,
            });
        }
        count(&self.firmware, phase);
        self.save_and_publish();
    }

    fn save_and_publish(&self) {
        self.save();
        self.handle
            .publish(ServerEvent::FirmwareState(Box::new(self.record.clone())));
    }

    fn save(&self) {
        if let Err(e) = self.firmware.store.put_update(&self.record) {
            tracing::error!(endpoint = %self.record.endpoint, error = %e, "firmware update not persisted");
        }
    }

    async fn finish(&mut self, phase: Phase, reason: Option<String>) {
        if let Some(r) = &reason {
            tracing::warn!(endpoint = %self.record.endpoint, reason = %r, "firmware update {}", phase.name());
        }
        self.record.reason = reason;
        if let Err(e) = self.firmware.revoke(&self.record.endpoint) {
            tracing::error!(error = %e, "download tokens not revoked");
        }
        self.enter(phase, None);
    }

    /// Performs one operation, giving up when the update is cancelled meanwhile.
    async fn perform(&mut self, op: Operation) -> Result<DmResponse, String> {
        let expiry = self.settings().request_expiry;
        let endpoint = self.record.endpoint.clone();
        let handle = self.handle.clone();
        tokio::select! {
            r = handle.perform(&endpoint, &op, expiry) => r.map_err(|e| describe(&op, &e)),
            _ = self.cancel.wait_for(|c| *c) => Err("cancelled while a request waited".into()),
        }
    }

    async fn read_fw(&mut self) -> Result<Fw, String> {
        match self
            .perform(Operation::Read {
                path: Path::instance(5, 0),
                format: None,
            })
            .await?
        {
            DmResponse::Node(n) => Ok(read_fw(&n)),
            other => Err(format!("unexpected answer to Read /5/0: {other:?}")),
        }
    }

    async fn read_version(&mut self) -> Result<Option<String>, String> {
        match self
            .perform(Operation::Read {
                path: Path::resource(3, 0, 3),
                format: None,
            })
            .await?
        {
            DmResponse::Node(Node::Resource(Resource::Single {
                value: Value::String(v),
                ..
            })) => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    /// Model (/3/0/1), firmware version (/3/0/3) and hardware version (/3/0/18).
    async fn read_device(&mut self) -> Result<[Option<String>; 3], String> {
        let node = match self
            .perform(Operation::Read {
                path: Path::instance(3, 0),
                format: None,
            })
            .await?
        {
            DmResponse::Node(n) => n,
            other => return Err(format!("unexpected answer to Read /3/0: {other:?}")),
        };
        let text = |id: u16| match &node {
            Node::Instance(i) => match i.resources.get(&id) {
                Some(Resource::Single {
                    value: Value::String(v),
                    ..
                }) => Some(v.clone()),
                _ => None,
            },
            _ => None,
        };
        Ok([text(1), text(3), text(18)])
    }

    async fn start(&mut self) -> Result<(), String> {
        let [model, version, hardware] = self.read_device().await?;
        self.record.previous_version = version;
        let package = self
            .firmware
            .store
            .package(&self.record.package_id)
            .map_err(|e| e.to_string())?
            .ok_or("the package was deleted")?;
        // A package made for other hardware must not reach this device.
        for (what, listed, actual) in [
            ("models", &package.models, &model),
            ("hardware revisions", &package.hardware, &hardware),
        ] {
            if !listed.is_empty() && !actual.as_ref().is_some_and(|a| listed.contains(a)) {
                return Err(format!(
                    "the package is for {what} {listed:?}; the device reports {:?}",
                    actual.as_deref().unwrap_or("nothing")
                ));
            }
        }
        let fw = self.read_fw().await?;
        self.record.state = fw.state;
        self.record.result = fw.result;
        if fw.state.is_some_and(|s| s != 0) {
            return Err(format!(
                "the device's firmware update is busy (State {}); cancel it first",
                fw.state.unwrap_or_default()
            ));
        }
        let method = match (self.record.method, fw.delivery) {
            (Some(m), _) => m,
            (None, Some(1)) => Method::Push,
            (None, _) => Method::Pull,
        };
        self.record.method = Some(method);
        match method {
            Method::Pull => {
                // CoAPS needs credentials: a device that registered over plain CoAP has
                // none this server knows, so it is not offered CoAPS unasked.
                let secure = self
                    .handle
                    .registration(&self.record.endpoint)
                    .await
                    .is_some_and(|r| r.transport == crate::registry::Transport::Dtls);
                let protocol = self.pick_protocol(&fw, secure)?;
                self.record.protocol = Some(protocol);
                let base = self
                    .urls
                    .of(protocol)
                    .ok_or_else(|| format!("this server serves no {protocol:?} downloads"))?
                    .trim_end_matches('/')
                    .to_string();
                let token = super::download::new_token().map_err(|e| e.to_string())?;
                let ttl = self.settings().token_lifetime;
                self.firmware
                    .store
                    .put_token(
                        &token,
                        &TokenRecord {
                            endpoint: self.record.endpoint.clone(),
                            package_id: package.id.clone(),
                            sha256: package.sha256.clone(),
                            size: package.size,
                            expires_at_unix_ms: unix_now_ms() + ttl.as_millis() as u64,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                let uri = format!("{base}/fw/{token}");
                self.record.uri = Some(uri.clone());
                self.record.token = Some(token);
                // Persisted with its token before the device can use it.
                let timeout = self.settings().download_timeout;
                self.enter(Phase::Downloading, Some(timeout));
                self.write(1, Value::String(uri)).await?;
            }
            Method::Push => {
                let bytes = std::fs::read(self.firmware.files.path(&package.sha256))
                    .map_err(|e| format!("package file unreadable: {e}"))?;
                let timeout = self.settings().download_timeout;
                self.enter(Phase::Downloading, Some(timeout));
                self.write(0, Value::Opaque(bytes)).await?;
            }
        }
        self.observe().await;
        Ok(())
    }

    fn pick_protocol(&self, fw: &Fw, secure_session: bool) -> Result<Protocol, String> {
        // Encrypted first; CoAP before HTTP, which constrained devices handle better.
        let offered: Vec<Protocol> = [
            Protocol::Coaps,
            Protocol::Https,
            Protocol::Coap,
            Protocol::Http,
        ]
        .into_iter()
        .filter(|p| self.urls.of(*p).is_some())
        .filter(|p| *p != Protocol::Coaps || secure_session)
        .collect();
        // A device that lists none supports CoAP (the resource's default).
        let supports = |p: Protocol| {
            if fw.protocols.is_empty() {
                p == Protocol::Coap
            } else {
                fw.protocols.contains(&p.code())
            }
        };
        match self.record.protocol {
            Some(p) if !supports(p) => Err(format!(
                "the device does not list {p:?} in /5/0/8 ({:?})",
                fw.protocols
            )),
            Some(p) => Ok(p),
            None => offered.into_iter().find(|p| supports(*p)).ok_or_else(|| {
                format!(
                    "no download protocol both sides support (device /5/0/8: {:?})",
                    fw.protocols
                )
            }),
        }
    }

    async fn write(&mut self, resource: u16, value: Value) -> Result<(), String> {
        self.perform(write_op(resource, value)).await.map(|_| ())
    }

    /// Observes State and Update Result; a device that refuses is read at the poll
    /// interval instead.
    async fn observe(&mut self) {
        for r in [3, 5] {
            let op = Operation::Observe {
                path: Path::resource(5, 0, r),
                attributes: Default::default(),
                format: None,
            };
            let endpoint = self.record.endpoint.clone();
            let expiry = self.settings().request_expiry;
            if let Err(e) = self.handle.perform(&endpoint, &op, expiry).await {
                tracing::debug!(%endpoint, error = %e, "observe of /5/0/{r} refused");
            }
        }
    }

    /// Waits for something to happen on the device, the poll interval, the deadline or
    /// a cancel.
    async fn wait(&mut self) -> Woken {
        let now = unix_now_ms();
        let deadline = self
            .record
            .deadline_unix_ms
            .map(|d| Duration::from_millis(d.saturating_sub(now)));
        let poll = self.settings().poll_interval;
        let (nap, is_deadline) = match deadline {
            Some(d) if d <= poll => (d, true),
            _ => (poll, false),
        };
        let endpoint = self.record.endpoint.clone();
        let sleep = tokio::time::sleep(nap);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = self.cancel.wait_for(|c| *c) => return Woken::Cancel,
                () = &mut sleep => return if is_deadline { Woken::Deadline } else { Woken::Look },
                e = self.events.recv() => match e {
                    Ok(e) if concerns(&e, &endpoint) => return Woken::Look,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Woken::Look,
                    Err(broadcast::error::RecvError::Closed) => return Woken::Cancel,
                },
            }
        }
    }

    async fn watch(&mut self) -> Result<(), String> {
        match self.wait().await {
            Woken::Cancel => return self.cancel_on_device().await,
            Woken::Deadline => {
                let what = match self.record.phase {
                    Phase::Downloading => {
                        // Best effort: an empty Package URI stops the download on the
                        // device (its token is revoked anyway).
                        let op = write_op(1, Value::String(String::new()));
                        let reset = self
                            .handle
                            .perform(&self.record.endpoint, &op, EXECUTE_WAIT);
                        let _ = tokio::time::timeout(EXECUTE_WAIT, reset).await;
                        "download"
                    }
                    _ => "update",
                };
                return Err(format!("the {what} did not finish in time"));
            }
            Woken::Look => {}
        }
        let fw = match self.read_fw().await {
            Ok(fw) => fw,
            // Not reachable now (rebooting, asleep past the expiry): look again later.
            Err(e) => {
                tracing::debug!(endpoint = %self.record.endpoint, error = %e, "firmware state not read");
                return Ok(());
            }
        };
        let changed = fw.state != self.record.state || fw.result != self.record.result;
        self.record.state = fw.state;
        self.record.result = fw.result;
        if let Some(r) = fw.result.filter(|r| (2..=10).contains(r)) {
            return Err(format!("Update Result {r}: {}", result_meaning(r)));
        }
        match (self.record.phase, fw.state, fw.result) {
            (Phase::Downloading, Some(2), _) => {
                let timeout = self.settings().update_timeout;
                self.enter(Phase::Updating, Some(timeout));
                self.execute().await;
            }
            // An Execute lost on the way (a congested cell drops it and every
            // retransmission, a device loses it in a reboot race) leaves the image
            // downloaded and the device waiting; without another the update would sit
            // there until its deadline. A device still in State 2 a poll interval (at
            // least EXECUTE_WAIT) after the last one gets it again: that is safe, since
            // one that had begun installing would report State 3.
            (Phase::Updating, Some(2), _)
                if self.executed_at.is_none_or(|t| {
                    t.elapsed() >= self.settings().poll_interval.max(EXECUTE_WAIT)
                }) =>
            {
                tracing::info!(endpoint = %self.record.endpoint, "still downloaded, not updating: Execute Update again");
                self.execute().await;
            }
            (Phase::Updating, Some(0), Some(1)) => self.enter(Phase::Verifying, None),
            // The device went back to Idle without a result: its image is gone.
            (Phase::Updating, Some(0), Some(0)) => {
                return Err("the device returned to Idle without an Update Result".into())
            }
            _ => {
                // A change of the device's state inside a phase is an event, not a
                // transition.
                if changed {
                    self.save_and_publish();
                }
            }
        }
        // A re-registered device has lost its observations.
        if matches!(self.record.phase, Phase::Downloading | Phase::Updating) && changed {
            self.observe().await;
        }
        Ok(())
    }

    /// Sends Execute Update. A device may reboot into the new firmware before it
    /// answers: what counts is the state it reports next. The answer is waited for
    /// briefly; a request still queued for a sleeping device stays queued and goes out
    /// when it wakes.
    async fn execute(&mut self) {
        self.executed_at = Some(tokio::time::Instant::now());
        let execute = Operation::Execute {
            path: Path::resource(5, 0, 2),
            args: ExecuteArgs::default(),
        };
        match tokio::time::timeout(EXECUTE_WAIT, self.perform(execute)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::info!(endpoint = %self.record.endpoint, error = %e, "Execute Update failed; watching the state")
            }
            Err(_) => {
                tracing::info!(endpoint = %self.record.endpoint, "no answer to Execute Update yet; watching the state")
            }
        }
    }

    async fn verify(&mut self) -> Result<(), String> {
        let version = self.read_version().await?;
        self.record.final_version = version.clone();
        if version.as_deref() == Some(self.record.package_version.as_str()) {
            self.finish(Phase::Succeeded, None).await;
            Ok(())
        } else {
            Err(format!(
                "the device reports success but runs firmware {:?}, not {:?}",
                version.unwrap_or_default(),
                self.record.package_version
            ))
        }
    }

    async fn cancel_on_device(&mut self) -> Result<(), String> {
        // An empty Package URI resets the device's state machine to Idle. Not through
        // `perform`, which gives up on a cancelled update.
        let op = write_op(1, Value::String(String::new()));
        let expiry = self.settings().request_expiry;
        let outcome = self
            .handle
            .perform(&self.record.endpoint, &op, expiry)
            .await
            .map(|_| ())
            .map_err(|e| describe(&op, &e));
        let reason = match outcome {
            Ok(()) => "cancelled by the operator".to_string(),
            Err(e) => format!("cancelled by the operator; the device did not reset: {e}"),
        };
        self.finish(Phase::Cancelled, Some(reason)).await;
        Ok(())
    }
}

/// A Write of one resource of /5/0.
fn write_op(resource: u16, value: Value) -> Operation {
    Operation::Write {
        path: Path::resource(5, 0, resource),
        node: Node::Resource(Resource::Single {
            id: resource,
            value,
        }),
        mode: WriteMode::Replace,
        format: None,
    }
}

/// Whether a server event is worth a look at this device's state.
fn concerns(e: &ServerEvent, endpoint: &str) -> bool {
    match e {
        ServerEvent::Notification { endpoint: ep, .. }
        | ServerEvent::Awake { endpoint: ep, .. } => ep == endpoint,
        ServerEvent::Registered { registration, .. }
        | ServerEvent::Updated { registration, .. } => *registration.endpoint == *endpoint,
        _ => false,
    }
}

fn describe(op: &Operation, e: &ManageError) -> String {
    format!("{} {}: {e}", op.name(), op.path())
}
