//! The registrations themselves: who is registered, until when, whether a
//! queue-mode device is awake, and what waits for it. Pure state: every
//! method takes `now`, nothing reads a clock or touches a socket.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_objects::link::RegistrationPayload;
use lwm2m_objects::Version;

use super::binding::Binding;
use super::error::RegistrationError;
use super::queue::{DeviceQueue, Ready};
use super::request::{RdRequest, RegisterRequest, UpdateRequest};

/// Length of a location id. 12 characters stay far below Zephyr's 32-character limit
/// on the second Location-Path segment, and a device sends them in every Update.
pub const ID_LEN: usize = 12;
/// Bytes behind one id (`ID_LEN * 6 / 8`).
pub const ID_BYTES: usize = 9;
/// Leading bytes of an id that count up (a millisecond stamp); the rest are random.
const STAMP_BYTES: usize = 5;
/// Tries at drawing an id that is not taken before giving up with 5.00.
const ID_TRIES: usize = 8;

/// Where location ids come from: the operating system by default, a deterministic
/// source in tests and fuzzing.
pub trait IdSource: Send {
    /// Fresh bytes, or `None` when randomness is unavailable.
    fn next_bytes(&mut self) -> Option<[u8; ID_BYTES]>;
}

/// [`IdSource`] of ids that sort in the order they were issued: a millisecond stamp that
/// only counts up, then 32 random bits. The store keys registrations by id, and a B-tree
/// takes keys that arrive in order into the few pages at its right edge, where random
/// ones dirty a page each (about 5 KB more written to disk a Register, measured).
///
/// An id is not a secret that guards its registration: over DTLS a request speaks only
/// for the endpoint of its session's identity, and over plain CoAP any peer may register
/// any endpoint name anyway. The random tail keeps ids of different servers apart and
/// leaves 2^32 candidates for the id of a known millisecond.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsIds {
    last_stamp: u64,
}

impl IdSource for OsIds {
    fn next_bytes(&mut self) -> Option<[u8; ID_BYTES]> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Strictly after the last one, so ids drawn in one millisecond keep their order
        // too, and a clock set back (or the 40 bits of milliseconds wrapping, every 35
        // years) lets the stamp count on from the last one, still in order.
        const MASK: u64 = (1 << (8 * STAMP_BYTES)) - 1;
        let stamp = (now_ms & MASK).max(self.last_stamp.saturating_add(1) & MASK);
        self.last_stamp = stamp;
        let mut b = [0u8; ID_BYTES];
        let (head, tail) = b.split_at_mut(STAMP_BYTES);
        head.copy_from_slice(stamp.to_be_bytes().get(8 - STAMP_BYTES..)?);
        getrandom::fill(tail).ok()?;
        Some(b)
    }
}

/// Limits and timings of the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Most registrations held. A Register beyond it (of an endpoint not
    /// already registered) gets 5.03: the server is full for now, which a
    /// device retries later, where 4.03 would read as "never".
    pub max_registrations: usize,
    /// Time past the lifetime before a registration is dropped, to absorb
    /// an Update still being retransmitted (default MAX_TRANSMIT_SPAN, 45 s).
    pub expiry_grace: Duration,
    /// How long a queue-mode device stays reachable after a Register or
    /// Update (default MAX_TRANSMIT_WAIT, 93 s; nRF91 samples use 30 s).
    pub awake_window: Duration,
    /// Most requests queued for one device.
    pub max_queued_per_device: usize,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            max_registrations: 100_000,
            expiry_grace: Duration::from_secs(45),
            awake_window: Duration::from_secs(93),
            max_queued_per_device: 64,
        }
    }
}

/// Which socket a registration came over, and so which one requests go out on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// Plain CoAP (NoSec).
    #[default]
    Udp,
    /// CoAP over DTLS: only the peer's DTLS session may speak for it.
    Dtls,
}

/// One registered client, as the registry knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    /// Location id: the server's name for this registration, `/rd/{id}`. Shared with
    /// the registry's indexes.
    pub id: Arc<str>,
    /// Shared with the registry's index by name and the fleet inventory: one copy of
    /// each name however many maps hold it.
    pub endpoint: Arc<str>,
    pub version: Version,
    /// Seconds; 0 means no expiry.
    pub lifetime_s: u32,
    pub binding: Binding,
    pub queue_mode: bool,
    /// Shared: the devices of a fleet announce the same objects, and the registry keeps
    /// one copy of each list it has seen recently (about 150 bytes a device otherwise).
    pub objects: Arc<RegistrationPayload>,
    /// The SMS number, profile id and unknown parameters, which few devices send.
    pub extras: Option<Box<RegistrationExtras>>,
    /// Where the last Register or Update came from: devices change port
    /// after sleep, so requests go to the newest address.
    pub peer: SocketAddr,
    /// The transport of the last Register or Update.
    pub transport: Transport,
    pub registered_at: Instant,
    /// Last Register or Update: the lifetime counts from here.
    pub refreshed_at: Instant,
}

impl Registration {
    /// `["rd", id]`, the Location-Path of the 2.01 answer.
    pub fn location_path(&self) -> Vec<String> {
        vec!["rd".to_string(), self.id.to_string()]
    }

    /// The MSISDN for SMS binding (`sms=`).
    pub fn sms(&self) -> Option<&str> {
        self.extras.as_ref()?.sms.as_deref()
    }

    /// The LwM2M 1.2 profile id (`pid=`).
    pub fn profile_id(&self) -> Option<&str> {
        self.extras.as_ref()?.profile_id.as_deref()
    }

    /// Query parameters this server does not interpret, in order.
    pub fn extra_params(&self) -> &[(String, Option<String>)] {
        self.extras.as_ref().map_or(&[], |e| &e.extra_params)
    }
}

/// The parts of a registration that few devices send. Boxed in [`Registration`]: 72 bytes
/// inline in each of a million registrations, where one pointer does for most.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RegistrationExtras {
    pub sms: Option<String>,
    pub profile_id: Option<String>,
    pub extra_params: Vec<(String, Option<String>)>,
}

impl RegistrationExtras {
    /// The extras as a registration holds them: none when all are absent.
    pub fn boxed(
        sms: Option<String>,
        profile_id: Option<String>,
        extra_params: Vec<(String, Option<String>)>,
    ) -> Option<Box<RegistrationExtras>> {
        let e = RegistrationExtras {
            sms,
            profile_id,
            extra_params,
        };
        (e != RegistrationExtras::default()).then(|| Box::new(e))
    }
}

/// A Register that succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct Registered {
    pub id: String,
    pub location_path: Vec<String>,
    /// The earlier registration of the same endpoint, now gone: its
    /// observations must be dropped. Its queued requests moved to the new
    /// registration (they are for the device, not for a session).
    pub replaced: Option<Registration>,
}

/// What an Update changed. The lifetime is always refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Changes {
    pub lifetime: bool,
    pub binding: bool,
    pub queue_mode: bool,
    pub sms: bool,
    pub profile_id: bool,
    pub objects: bool,
    pub peer: bool,
}

impl Changes {
    /// Nothing changed but the time and perhaps the address: what the store keeps as a
    /// refresh rather than a whole record.
    pub fn is_refresh_only(&self) -> bool {
        !(self.lifetime
            || self.binding
            || self.queue_mode
            || self.sms
            || self.profile_id
            || self.objects)
    }
}

/// An Update that succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct Updated {
    pub id: String,
    pub changes: Changes,
}

/// A registration that ended (De-register or expiry), with the requests
/// that were still queued for it, so their callers can be failed.
#[derive(Debug, PartialEq)]
pub struct Removed<R> {
    pub registration: Registration,
    pub dropped: Vec<R>,
}

/// The outcome of [`Registry::handle`].
#[derive(Debug, PartialEq)]
pub enum RdOutcome<R> {
    Registered(Registered),
    Updated(Updated),
    Deregistered(Removed<R>),
}

/// Why a request could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("no registration {0:?}")]
    UnknownRegistration(String),
    #[error("the device's queue already holds {0} requests")]
    QueueFull(usize),
}

#[derive(Debug)]
struct Entry<R> {
    reg: Registration,
    expires_at: Option<Instant>,
    awake_until: Option<Instant>,
    /// A queue-mode device reported awake and not yet reported asleep: it is in
    /// `awake_index` under `awake_until`.
    marked_awake: bool,
    /// The last message of any kind from the device.
    last_seen: Instant,
    queue: DeviceQueue<R>,
    /// The earliest expiry in `queue`: this entry's key in `queue_expiries`.
    queue_deadline: Option<Instant>,
}

/// Registrations by location id and by endpoint, their expiry times, and
/// each device's queue of outbound requests (of the caller's type `R`).
pub struct Registry<R> {
    config: RegistryConfig,
    /// Entries are boxed: a hash table keeps up to twice its length in slots, and a slot
    /// of a pointer costs 32 bytes where one of the entry itself would cost 400 (about
    /// 800 MB of empty slots at a million devices).
    by_id: HashMap<Id, Box<Entry<R>>>,
    /// Sorted, so that the inventory pages by name and filters by prefix
    /// without sorting the whole table per call.
    by_endpoint: BTreeMap<Arc<str>, Id>,
    expiries: BTreeSet<(Instant, Id)>,
    /// Queue-mode devices marked awake, by the end of their awake window:
    /// [`fall_asleep`](Registry::fall_asleep) reports each once when it passes.
    awake_index: BTreeSet<(Instant, Id)>,
    queue_mode_count: usize,
    queued_total: usize,
    /// Devices with queued requests, by their earliest expiry: the driver's timer and
    /// the expiry sweep read only the front, however large the fleet.
    queue_expiries: BTreeSet<(Instant, Id)>,
    ids: Box<dyn IdSource>,
    /// The object lists of recent registrations, to share (bounded by [`RECENT_OBJECTS`]).
    recent_objects: VecDeque<Arc<RegistrationPayload>>,
}

/// Distinct object lists the registry remembers for sharing: a fleet has a few models,
/// each announcing one list; a device with a list of its own simply keeps it.
const RECENT_OBJECTS: usize = 32;

/// A registration id as the indexes hold it: one allocation shared by all of them (four
/// copies of a `String` cost about 150 bytes more a device).
type Id = Arc<str>;

impl<R> std::fmt::Debug for Registry<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .field("registrations", &self.by_id.len())
            .finish_non_exhaustive()
    }
}

impl<R> Registry<R> {
    /// A registry drawing location ids from the operating system.
    pub fn new(config: RegistryConfig) -> Registry<R> {
        Registry::with_id_source(config, Box::new(OsIds::default()))
    }

    pub fn with_id_source(config: RegistryConfig, ids: Box<dyn IdSource>) -> Registry<R> {
        Registry {
            config,
            by_id: HashMap::new(),
            by_endpoint: BTreeMap::new(),
            expiries: BTreeSet::new(),
            awake_index: BTreeSet::new(),
            queue_mode_count: 0,
            queued_total: 0,
            queue_expiries: BTreeSet::new(),
            ids,
            recent_objects: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Registration> {
        self.by_id.get(id).map(|e| &e.reg)
    }

    pub fn by_endpoint(&self, endpoint: &str) -> Option<&Registration> {
        self.by_endpoint.get(endpoint).and_then(|id| self.get(id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.by_id.values().map(|e| &e.reg)
    }

    /// Registrations whose endpoint name starts with `prefix`, sorted by
    /// name; `O(log n)` to the first one.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Registration> {
        self.with_prefix_after(prefix, None)
    }

    /// [`with_prefix`](Self::with_prefix), from the first name after `after`: the
    /// cursor of a listing, `O(log n)` to its page however deep it is.
    pub fn with_prefix_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Registration> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        self.by_endpoint
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .filter_map(|(_, id)| self.get(id))
    }

    /// When the device last sent anything (Register, Update, a response, a
    /// notification, a Send).
    pub fn last_seen(&self, id: &str) -> Option<Instant> {
        self.by_id.get(id).map(|e| e.last_seen)
    }

    /// Devices that requests reach now by the last report: every device not
    /// in queue mode, and the queue-mode ones marked awake.
    pub fn awake_count(&self) -> usize {
        self.by_id.len() - self.queue_mode_count + self.awake_index.len()
    }

    /// Requests waiting in every device's queue.
    pub fn queued_total(&self) -> usize {
        self.queued_total
    }

    /// Whether the device was last reported awake (always, without queue
    /// mode): the state that Awake and Sleeping events follow.
    pub fn marked_awake(&self, id: &str) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|e| !e.reg.queue_mode || e.marked_awake)
    }

    /// Queue-mode devices whose awake window ended at or before `now`, each
    /// reported once, as `(location id, endpoint)`: they sleep now.
    pub fn fall_asleep(&mut self, now: Instant) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some((at, id)) = self.awake_index.first().cloned() {
            if at > now {
                break;
            }
            self.awake_index.remove(&(at, id.clone()));
            if let Some(e) = self.by_id.get_mut(&id) {
                e.marked_awake = false;
                out.push((id.to_string(), e.reg.endpoint.to_string()));
            }
        }
        out
    }

    /// The earliest end of an awake window still to report.
    pub fn next_sleep(&self) -> Option<Instant> {
        self.awake_index.first().map(|(t, _)| *t)
    }

    /// The requests waiting for a device, in order.
    pub fn queued_items(&self, id: &str) -> impl Iterator<Item = &R> {
        self.by_id.get(id).into_iter().flat_map(|e| e.queue.iter())
    }

    /// [`handle`](Self::handle) for a request that came over `transport`: a registration
    /// takes the transport of its last Register or Update (a change counts as an
    /// address change).
    pub fn handle_over(
        &mut self,
        request: RdRequest,
        peer: SocketAddr,
        transport: Transport,
        now: Instant,
    ) -> Result<RdOutcome<R>, RegistrationError> {
        let mut outcome = self.handle(request, peer, now)?;
        let id = match &outcome {
            RdOutcome::Registered(r) => Some(r.id.clone()),
            RdOutcome::Updated(u) => Some(u.id.clone()),
            RdOutcome::Deregistered(_) => None,
        };
        if let Some(e) = id.and_then(|id| self.by_id.get_mut(id.as_str())) {
            if e.reg.transport != transport {
                e.reg.transport = transport;
                if let RdOutcome::Updated(u) = &mut outcome {
                    u.changes.peer = true;
                }
            }
        }
        Ok(outcome)
    }

    /// Applies a parsed request from `peer`.
    pub fn handle(
        &mut self,
        request: RdRequest,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<RdOutcome<R>, RegistrationError> {
        match request {
            RdRequest::Register(r) => self.register(r, peer, now).map(RdOutcome::Registered),
            RdRequest::Update(u) => self.update(u, peer, now).map(RdOutcome::Updated),
            RdRequest::Deregister { id } => self.deregister(&id, now).map(RdOutcome::Deregistered),
        }
    }

    /// Registers an endpoint, replacing any registration it already has
    /// (a device that lost its session registers afresh, quirk 4).
    pub fn register(
        &mut self,
        req: RegisterRequest,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Registered, RegistrationError> {
        let old_id = self.by_endpoint.get(req.endpoint.as_str()).cloned();
        if old_id.is_none() && self.by_id.len() >= self.config.max_registrations {
            return Err(RegistrationError::new(
                RegistrationError::SERVICE_UNAVAILABLE,
                "registration table is full, try again later",
            ));
        }
        let id = self.fresh_id()?;
        let (replaced, queue) = match old_id.and_then(|old| self.remove_entry(&old)) {
            Some(e) => (Some(e.reg), e.queue),
            None => (None, DeviceQueue::default()),
        };
        // The name as the earlier registration held it: the inventory shares that copy.
        let endpoint = match &replaced {
            Some(r) => Arc::clone(&r.endpoint),
            None => Arc::from(req.endpoint),
        };
        let reg = Registration {
            id: Id::from(id.as_str()),
            endpoint,
            version: req.version,
            lifetime_s: req.lifetime_s,
            binding: req.binding,
            queue_mode: req.queue_mode,
            extras: RegistrationExtras::boxed(req.sms, req.profile_id, req.extra_params),
            objects: Arc::new(req.objects),
            peer,
            transport: Transport::Udp,
            registered_at: now,
            refreshed_at: now,
        };
        let location_path = reg.location_path();
        self.insert_entry(reg, queue, now);
        Ok(Registered {
            id,
            location_path,
            replaced,
        })
    }

    /// Applies an Update: refreshes the lifetime and changes only what the
    /// client sent. A registration past its expiry is gone for the client
    /// even before [`expire`](Self::expire) has swept it: 4.04, so the
    /// client registers again as the specification requires.
    pub fn update(
        &mut self,
        mut req: UpdateRequest,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Updated, RegistrationError> {
        let Some(current) = self
            .by_id
            .get(req.id.as_str())
            .filter(|e| e.expires_at.is_none_or(|t| now < t))
        else {
            return Err(unknown(&req.id));
        };
        // A new object list, shared with other devices' if one is the same; shared before
        // the entry is borrowed mutably, since sharing needs the registry.
        let same_objects = req
            .objects
            .as_ref()
            .is_some_and(|o| *o == *current.reg.objects);
        let objects = match req.objects.take() {
            Some(objects) if !same_objects => Some(self.share_objects(Arc::new(objects))),
            _ => None,
        };
        // In place: an Update moves the expiry and the awake window only, so the entry
        // keeps its slot and its place by endpoint (removing and inserting it again was
        // most of the registry's cost of an Update).
        let Some(entry) = self.by_id.get_mut(req.id.as_str()) else {
            return Err(unknown(&req.id));
        };
        // The indexes' key: the registration's own id.
        let key = entry.reg.id.clone();
        let reg = &mut entry.reg;
        let mut c = Changes::default();
        if let Some(lt) = req.lifetime_s {
            c.lifetime = lt != reg.lifetime_s;
            reg.lifetime_s = lt;
        }
        if let Some(b) = req.binding {
            c.binding = b != reg.binding;
            reg.binding = b;
        }
        let queue_mode = req.queue_mode(reg.queue_mode);
        c.queue_mode = queue_mode != reg.queue_mode;
        reg.queue_mode = queue_mode;
        if let Some(sms) = req.sms {
            c.sms = reg.sms() != Some(sms.as_str());
            reg.extras.get_or_insert_default().sms = Some(sms);
        }
        if let Some(pid) = req.profile_id {
            c.profile_id = reg.profile_id() != Some(pid.as_str());
            reg.extras.get_or_insert_default().profile_id = Some(pid);
        }
        if let Some(objects) = objects {
            c.objects = true;
            reg.objects = objects;
        }
        c.peer = peer != reg.peer;
        reg.peer = peer;
        reg.refreshed_at = now;
        if c.queue_mode {
            if queue_mode {
                self.queue_mode_count += 1;
            } else {
                self.queue_mode_count -= 1;
            }
        }
        if let Some(t) = entry.expires_at {
            self.expiries.remove(&(t, key.clone()));
        }
        entry.expires_at = match reg.lifetime_s {
            0 => None,
            lt => now
                .checked_add(Duration::from_secs(u64::from(lt)))
                .and_then(|t| t.checked_add(self.config.expiry_grace)),
        };
        if let Some(t) = entry.expires_at {
            self.expiries.insert((t, key.clone()));
        }
        if let (true, Some(t)) = (entry.marked_awake, entry.awake_until) {
            self.awake_index.remove(&(t, key.clone()));
        }
        entry.awake_until = match queue_mode {
            true => now.checked_add(self.config.awake_window),
            false => None,
        };
        entry.marked_awake = entry.awake_until.is_some();
        if let Some(t) = entry.awake_until {
            self.awake_index.insert((t, key.clone()));
        }
        entry.last_seen = now;
        Ok(Updated {
            id: req.id,
            changes: c,
        })
    }

    /// Ends a registration at the client's request. Past its expiry it is
    /// already gone for the client (4.04); [`expire`](Self::expire) reports it.
    pub fn deregister(&mut self, id: &str, now: Instant) -> Result<Removed<R>, RegistrationError> {
        let live = self
            .by_id
            .get(id)
            .is_some_and(|e| e.expires_at.is_none_or(|t| now < t));
        if !live {
            return Err(unknown(id));
        }
        let mut e = self.remove_entry(id).ok_or_else(|| unknown(id))?;
        Ok(Removed {
            dropped: e.queue.drain(),
            registration: e.reg,
        })
    }

    /// Removes every registration whose expiry (last Register/Update +
    /// lifetime + grace) is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Removed<R>> {
        let mut out = Vec::new();
        while let Some((at, id)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            match self.remove_entry(&id) {
                Some(mut e) => out.push(Removed {
                    dropped: e.queue.drain(),
                    registration: e.reg,
                }),
                // An index entry without a registration cannot be made by
                // this type; drop it rather than loop on it.
                None => {
                    self.expiries.remove(&(at, id));
                }
            }
        }
        out
    }

    /// The earliest registration expiry, for the driver's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// When this registration expires; `None` when unknown or never.
    pub fn expires_at(&self, id: &str) -> Option<Instant> {
        self.by_id.get(id).and_then(|e| e.expires_at)
    }

    /// Whether requests may be sent to the device now. A device not in
    /// queue mode is always reachable; an unknown one never.
    pub fn is_awake(&self, id: &str, now: Instant) -> bool {
        match self.by_id.get(id) {
            None => false,
            Some(e) if !e.reg.queue_mode => true,
            Some(e) => e.awake_until.is_some_and(|t| now < t),
        }
    }

    /// End of a queue-mode device's current awake window; `None` for a
    /// device not in queue mode (always awake) or an unknown id.
    pub fn awake_until(&self, id: &str) -> Option<Instant> {
        self.by_id
            .get(id)
            .filter(|e| e.reg.queue_mode)
            .and_then(|e| e.awake_until)
    }

    /// Any other message from the device (a response, a notification, a
    /// Send) shows it is still listening: T12 asks it to stay awake
    /// MAX_TRANSMIT_WAIT after its last message, so the window restarts.
    /// Returns true when this woke a queue-mode device that was reported
    /// asleep.
    pub fn touch(&mut self, id: &str, now: Instant) -> bool {
        let window = self.config.awake_window;
        let Some(e) = self.by_id.get_mut(id) else {
            return false;
        };
        e.last_seen = e.last_seen.max(now);
        if !e.reg.queue_mode {
            return false;
        }
        let until = now.checked_add(window);
        if until > e.awake_until {
            if let (true, Some(old)) = (e.marked_awake, e.awake_until) {
                self.awake_index.remove(&(old, Id::from(id)));
            }
            e.awake_until = until;
        }
        let woke = !e.marked_awake;
        match e.awake_until {
            Some(t) => {
                e.marked_awake = true;
                self.awake_index.insert((t, Id::from(id)));
            }
            None => e.marked_awake = false,
        }
        woke
    }

    /// Queues a request for the device; it comes out of
    /// [`take_ready`](Self::take_ready) once the device is awake, unless
    /// `expires_at` passes first. On refusal the request is handed back.
    pub fn enqueue(
        &mut self,
        id: &str,
        request: R,
        expires_at: Instant,
    ) -> Result<(), (EnqueueError, R)> {
        let max = self.config.max_queued_per_device;
        let Some(e) = self.by_id.get_mut(id) else {
            return Err((EnqueueError::UnknownRegistration(id.to_string()), request));
        };
        if e.queue.len() >= max {
            return Err((EnqueueError::QueueFull(max), request));
        }
        e.queue.push(request, expires_at);
        self.queued_total += 1;
        self.refile_queue(id);
        Ok(())
    }

    /// Number of requests waiting for the device.
    pub fn queued(&self, id: &str) -> usize {
        self.by_id.get(id).map_or(0, |e| e.queue.len())
    }

    /// The queued requests to send now, in order, if the device is awake;
    /// expired ones are dropped and reported whether it is awake or not.
    pub fn take_ready(&mut self, id: &str, now: Instant) -> Ready<R> {
        let awake = self.is_awake(id, now);
        let Some(e) = self.by_id.get_mut(id) else {
            return Ready::default();
        };
        let expired = e.queue.drop_expired(now);
        let ready = if awake { e.queue.drain() } else { Vec::new() };
        self.queued_total = self
            .queued_total
            .saturating_sub(expired.len() + ready.len());
        self.refile_queue(id);
        Ready { ready, expired }
    }

    /// Files a device's queue under its earliest expiry (or nowhere when empty).
    fn refile_queue(&mut self, id: &str) {
        let Some(e) = self.by_id.get_mut(id) else {
            return;
        };
        let next = e.queue.next_expiry();
        if next == e.queue_deadline {
            return;
        }
        if let Some(old) = e.queue_deadline.take() {
            self.queue_expiries.remove(&(old, Id::from(id)));
        }
        if let Some(t) = next {
            self.queue_expiries.insert((t, Id::from(id)));
        }
        e.queue_deadline = next;
    }

    /// Drops expired queued requests of every device, for callers that
    /// must learn of them while the device sleeps.
    pub fn expire_queued(&mut self, now: Instant) -> Vec<(String, R)> {
        let mut out = Vec::new();
        // Bounded: each turn refiles one device under a later expiry or none.
        while let Some((at, id)) = self.queue_expiries.first().cloned() {
            if at > now {
                break;
            }
            match self.by_id.get_mut(&id) {
                Some(e) => {
                    for r in e.queue.drop_expired(now) {
                        out.push((id.to_string(), r));
                    }
                    self.refile_queue(&id);
                }
                // An index entry without its registration cannot be made by this type;
                // drop it rather than loop on it.
                None => {
                    self.queue_expiries.remove(&(at, id));
                }
            }
        }
        self.queued_total = self.queued_total.saturating_sub(out.len());
        out
    }

    /// The earliest expiry among queued requests.
    pub fn next_queue_expiry(&self) -> Option<Instant> {
        self.queue_expiries.first().map(|(t, _)| *t)
    }

    /// Puts back a registration loaded from storage after a restart, with
    /// its times as stored: it expires, and is awake, as if the server had
    /// never stopped. A registration of the same endpoint or id is replaced
    /// and returned. Refused with 5.03 when the table is full.
    pub fn restore(
        &mut self,
        reg: Registration,
    ) -> Result<Option<Registration>, RegistrationError> {
        let known =
            self.by_endpoint.contains_key(&reg.endpoint) || self.by_id.contains_key(&*reg.id);
        if !known && self.by_id.len() >= self.config.max_registrations {
            return Err(RegistrationError::new(
                RegistrationError::SERVICE_UNAVAILABLE,
                "registration table is full",
            ));
        }
        let mut replaced = None;
        if let Some(old) = self.by_endpoint.get(&reg.endpoint).cloned() {
            replaced = self.remove_entry(&old).map(|e| e.reg);
        }
        if let Some(e) = self.remove_entry(&reg.id) {
            replaced.get_or_insert(e.reg);
        }
        let refreshed = reg.refreshed_at;
        self.insert_entry(reg, DeviceQueue::default(), refreshed);
        Ok(replaced)
    }

    fn fresh_id(&mut self) -> Result<String, RegistrationError> {
        for _ in 0..ID_TRIES {
            let Some(bytes) = self.ids.next_bytes() else {
                break;
            };
            let id = encode_id(&bytes);
            if !self.by_id.contains_key(id.as_str()) {
                return Ok(id);
            }
        }
        Err(RegistrationError::new(
            RegistrationError::INTERNAL,
            "could not allocate a registration id",
        ))
    }

    /// The remembered copy of `objects` if there is one, else `objects`, now remembered.
    fn share_objects(&mut self, objects: Arc<RegistrationPayload>) -> Arc<RegistrationPayload> {
        if let Some(known) = self.recent_objects.iter().find(|k| **k == objects) {
            return known.clone();
        }
        if self.recent_objects.len() == RECENT_OBJECTS {
            self.recent_objects.pop_front();
        }
        self.recent_objects.push_back(objects.clone());
        objects
    }

    fn insert_entry(&mut self, mut reg: Registration, queue: DeviceQueue<R>, refreshed: Instant) {
        reg.objects = self.share_objects(reg.objects);
        let key = reg.id.clone();
        let expires_at = match reg.lifetime_s {
            0 => None,
            lt => refreshed
                .checked_add(Duration::from_secs(u64::from(lt)))
                .and_then(|t| t.checked_add(self.config.expiry_grace)),
        };
        let awake_until = if reg.queue_mode {
            refreshed.checked_add(self.config.awake_window)
        } else {
            None
        };
        if let Some(t) = expires_at {
            self.expiries.insert((t, key.clone()));
        }
        if let Some(t) = awake_until {
            self.awake_index.insert((t, key.clone()));
        }
        if reg.queue_mode {
            self.queue_mode_count += 1;
        }
        self.queued_total += queue.len();
        let queue_deadline = queue.next_expiry();
        if let Some(t) = queue_deadline {
            self.queue_expiries.insert((t, key.clone()));
        }
        self.by_endpoint.insert(reg.endpoint.clone(), key.clone());
        self.by_id.insert(
            key,
            Box::new(Entry {
                reg,
                expires_at,
                awake_until,
                marked_awake: awake_until.is_some(),
                last_seen: refreshed,
                queue,
                queue_deadline,
            }),
        );
    }

    fn remove_entry(&mut self, id: &str) -> Option<Entry<R>> {
        // The stored key, to look the indexes up without a copy of the id.
        let (key, e) = self.by_id.remove_entry(id)?;
        let e = *e;
        if let Some(t) = e.expires_at {
            self.expiries.remove(&(t, key.clone()));
        }
        if let (true, Some(t)) = (e.marked_awake, e.awake_until) {
            self.awake_index.remove(&(t, key.clone()));
        }
        if e.reg.queue_mode {
            self.queue_mode_count -= 1;
        }
        self.queued_total = self.queued_total.saturating_sub(e.queue.len());
        if let Some(t) = e.queue_deadline {
            self.queue_expiries.remove(&(t, key));
        }
        if self
            .by_endpoint
            .get(&e.reg.endpoint)
            .is_some_and(|x| &**x == id)
        {
            self.by_endpoint.remove(&e.reg.endpoint);
        }
        Some(e)
    }
}

fn unknown(id: &str) -> RegistrationError {
    RegistrationError::not_found(format!(
        "no registration {}; register again",
        super::error::echo(id)
    ))
}

/// The base64url characters in ASCII order, so that ids sort as their bytes do.
const ID_ALPHABET: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// Six bits a character, most significant first, without padding: 9 bytes give
/// exactly 12 characters.
pub(super) fn encode_id(bytes: &[u8; ID_BYTES]) -> String {
    let mut out = String::with_capacity(ID_LEN);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        for shift in [18u32, 12, 6, 0] {
            let i = ((n >> shift) & 63) as usize;
            out.push(char::from(ID_ALPHABET.get(i).copied().unwrap_or(b'A')));
        }
    }
    out
}
