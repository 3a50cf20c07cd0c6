//! Parked devices: what a fleet device in queue mode keeps while it sleeps, instead of
//! a whole [`Client`](crate::Client).
//!
//! A running client costs about 32 KB (its tokio task, CoAP endpoint, object tree and
//! channels); a million of them do not fit in a machine that must also run the server,
//! and a million sockets do not fit in a process's file limit. A sleeping queue-mode
//! device needs neither: nobody can reach it, and it reaches nobody until its wake time.
//! So when a fleet device falls asleep, its driver ends and hands back a [`Parked`]
//! record, and at the wake time the fleet starts a client again from it
//! ([`Client::resume`](crate::client)); that client sends an Update from a new socket
//! (not a Register) and goes on where the old one stopped.
//!
//! What the record keeps, and why that is enough:
//!
//! - The object tree as its *difference* from the tree the device starts with
//!   ([`crate::ops::initial_store`]), which the configuration alone rebuilds: the
//!   sensor values that moved, whatever the server wrote or created, object 5's values.
//!   Encoded compactly (a byte string, see [`encode_tree`]), typically 60 to 120 bytes.
//! - The sensors' own state (their generator, the exact battery level, the heading), so
//!   that the walk goes on rather than starting over ([`crate::device`]).
//! - The registration (location, lifetime), the Observe sequence number, and the
//!   observations and attributes the server made, with the values last notified: a
//!   value that changed during the sleep is notified after the wake, with the
//!   observation's token and a higher sequence number (queue mode, LwM2M 1.2 Core
//!   §6.5.1). Kept in a side record that only devices with any have.
//! - Object 5 when it rests (Idle, or Downloaded with what the package is); a device
//!   downloading or installing never parks.
//! - The timers (wake, the lifetime's Update, the next reboot of its own), the driver's
//!   generator (sleep jitter, reboots), the local port (to come back on it unless the
//!   device changes port on every wake) and how many times it woke (which tells its
//!   link-condition draws of one wake from the next).
//! - The last CoAP message id it used: a device must not reuse one within the exchange
//!   lifetime (RFC 7252 §4.4), and one that comes back on the same port with a random
//!   new id may hit an entry of the server's duplicate detection and get an old answer
//!   (seen: about one Update in 10,000 failed so with 5 s sleeps). See [`seed_after`].
//!
//! The device's configuration itself (profile draws, endpoint, address) is not kept:
//! the fleet draws it again from the device's index and the seed.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use lwm2m_objects::{Instance, Node, ObjLnk, Path, Resource, Value};

use crate::config::Config;
use crate::device::DeviceMemory;
use crate::firmware::{FirmwareMemory, PackageInfo, UpdateResult};
use crate::observe::{AttributeStore, Observation};
use crate::ops::Core;
use crate::rng::Rng;
use crate::store::{Actor, ObjectStore, OpError};

/// Why a device could not be parked, or its record not be taken up again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParkError {
    /// The device has work of its own (object 5 downloading or installing).
    #[error("the device is busy: {0}")]
    Busy(&'static str),
    #[error("object tree: {0}")]
    Tree(#[from] OpError),
    /// A record this module did not write (a bug, not an input).
    #[error("parked record damaged: {0}")]
    Damaged(&'static str),
}

/// Instants as milliseconds since the process's first use of them: 8 bytes instead of
/// an `Instant`'s 16, and `NEVER` for a timer that is not set.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
const NEVER: u64 = u64::MAX;

fn to_ms(at: Option<Instant>) -> u64 {
    at.map_or(NEVER, |t| {
        let ms = t.saturating_duration_since(*EPOCH).as_millis();
        u64::try_from(ms).unwrap_or(NEVER - 1).min(NEVER - 1)
    })
}

fn from_ms(ms: u64) -> Option<Instant> {
    (ms != NEVER).then(|| *EPOCH + Duration::from_millis(ms))
}

/// The instant of a [`Parked::due_ms`] value; `None` for never.
pub(crate) fn instant_of(ms: u64) -> Option<Instant> {
    from_ms(ms)
}

/// The driver's timers a sleeping device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Timers {
    pub(crate) wake_at: Option<Instant>,
    pub(crate) update_at: Option<Instant>,
    pub(crate) reboot_at: Option<Instant>,
}

/// A sleeping fleet device: everything it must remember, about 140 bytes in itself plus
/// its location and tree difference on the heap (see the module's documentation).
#[derive(Debug)]
pub struct Parked {
    location: Box<str>,
    tree: Box<[u8]>,
    extra: Option<Box<Extra>>,
    parked_at: u64,
    wake_at: u64,
    update_at: u64,
    reboot_at: u64,
    device: DeviceMemory,
    driver_rng: Rng,
    lifetime: u32,
    seq: u32,
    wakes: u32,
    /// 0: none (bind any port).
    last_port: u16,
    last_mid: Option<u16>,
    fw_downloaded: bool,
    fw_result: UpdateResult,
    objects_changed: bool,
}

/// What only some parked devices have: observations, stored attributes, a Downloaded
/// package's description.
#[derive(Debug, Default)]
struct Extra {
    observations: Vec<Observation>,
    attributes: AttributeStore,
    package: Option<PackageInfo>,
}

impl Extra {
    fn footprint(&self) -> usize {
        let observations: usize = self
            .observations
            .iter()
            .map(|o| {
                let paths = match &o.target {
                    crate::observe::Target::Single(_) => 0,
                    crate::observe::Target::Composite(ps) => ps.len() * size_of::<Path>(),
                };
                size_of::<Observation>()
                    + o.token.len()
                    + paths
                    + o.last.len() * size_of::<Option<Node>>()
            })
            .sum();
        size_of::<Extra>()
            + observations
            + self.attributes.len()
                * (size_of::<Path>() + size_of::<lwm2m_objects::link::Attributes>())
            + self.package.as_ref().map_or(0, |p| p.version.len())
    }
}

/// What a driver gives to park its device.
pub(crate) struct Capture<'a> {
    /// The configuration the device started with (its initial tree).
    pub(crate) config: &'a Config,
    pub(crate) core: &'a Core,
    pub(crate) location: &'a str,
    pub(crate) driver_rng: &'a Rng,
    pub(crate) timers: Timers,
    pub(crate) now: Instant,
    pub(crate) last_port: Option<u16>,
    pub(crate) last_mid: Option<u16>,
    pub(crate) wakes: u32,
    pub(crate) objects_changed: bool,
}

/// A parked device taken up again: the driver's state to start from.
pub(crate) struct Restored {
    pub(crate) core: Core,
    pub(crate) location: String,
    pub(crate) driver_rng: Rng,
    pub(crate) timers: Timers,
    pub(crate) parked_at: Instant,
    pub(crate) last_port: Option<u16>,
    pub(crate) last_mid: Option<u16>,
    pub(crate) wakes: u32,
    pub(crate) objects_changed: bool,
}

impl Parked {
    pub(crate) fn capture(c: Capture<'_>) -> Result<Parked, ParkError> {
        let fw = c
            .core
            .firmware
            .memory()
            .ok_or(ParkError::Busy("object 5 is downloading or installing"))?;
        let initial = crate::ops::initial_store(c.config)?;
        let tree = encode_tree(&c.core.store, &initial)?;
        let mut observations: Vec<Observation> = c.core.observations.clone();
        observations.shrink_to_fit();
        let extra = Extra {
            observations,
            attributes: c.core.attrs.clone(),
            package: fw.package,
        };
        let has_extra = !extra.observations.is_empty()
            || !extra.attributes.is_empty()
            || extra.package.is_some();
        Ok(Parked {
            location: c.location.into(),
            tree: tree.into_boxed_slice(),
            extra: has_extra.then(|| Box::new(extra)),
            parked_at: to_ms(Some(c.now)),
            wake_at: to_ms(c.timers.wake_at),
            update_at: to_ms(c.timers.update_at),
            reboot_at: to_ms(c.timers.reboot_at),
            device: c.core.device.memory(),
            driver_rng: c.driver_rng.clone(),
            lifetime: c.core.config.lifetime,
            seq: c.core.seq(),
            wakes: c.wakes,
            last_port: c.last_port.unwrap_or(0),
            last_mid: c.last_mid,
            fw_downloaded: fw.downloaded,
            fw_result: fw.result,
            objects_changed: c.objects_changed,
        })
    }

    /// The device as it was, on `config` (the one it started with, drawn again).
    pub(crate) fn restore(self, config: Config) -> Result<Restored, ParkError> {
        let mut core = Core::new(config)?;
        decode_tree(&mut core.store, &self.tree)?;
        core.device.restore(&self.device);
        let extra = self.extra.map(|e| *e).unwrap_or_default();
        core.firmware.restore(FirmwareMemory {
            downloaded: self.fw_downloaded,
            result: self.fw_result,
            package: extra.package,
        });
        core.observations = extra.observations;
        core.attrs = extra.attributes;
        core.set_seq(self.seq);
        core.config.lifetime = self.lifetime;
        Ok(Restored {
            core,
            location: self.location.into(),
            driver_rng: self.driver_rng,
            timers: Timers {
                wake_at: from_ms(self.wake_at),
                update_at: from_ms(self.update_at),
                reboot_at: from_ms(self.reboot_at),
            },
            parked_at: from_ms(self.parked_at).unwrap_or_else(Instant::now),
            last_port: (self.last_port != 0).then_some(self.last_port),
            last_mid: self.last_mid,
            wakes: self.wakes,
            objects_changed: self.objects_changed,
        })
    }

    /// When the device must run again: its wake, its lifetime's Update or a reboot of
    /// its own, whichever comes first; `None` when none is set.
    pub fn due(&self) -> Option<Instant> {
        from_ms(self.due_ms())
    }

    /// [`due`](Parked::due) in the record's own clock, milliseconds (`u64::MAX`: never).
    pub fn due_ms(&self) -> u64 {
        self.wake_at.min(self.update_at).min(self.reboot_at)
    }

    /// Moves the wake to now, for a device somebody wants to talk to.
    pub(crate) fn wake_now(&mut self) {
        self.wake_at = to_ms(Some(Instant::now()));
    }

    /// The server's name for the registration (`/rd/...`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Observations the device keeps for the server.
    pub fn observations(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| e.observations.len())
    }

    /// Bytes of the encoded tree difference.
    pub fn tree_bytes(&self) -> usize {
        self.tree.len()
    }

    /// Bytes the record holds: itself and what it points to (without the allocator's
    /// rounding of each block, which the fleet's measured RSS includes).
    pub fn footprint(&self) -> usize {
        size_of::<Parked>()
            + self.location.len()
            + self.tree.len()
            + self.extra.as_ref().map_or(0, |e| e.footprint())
    }
}

// The endpoint's generator (SplitMix64, `lwm2m_server::coap`) gives its first message
// id as the low 16 bits of its first output. Each step of that output is invertible, so
// a seed can be made whose first output ends in any 16 bits wanted; the rest stay random.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX_1: u64 = 0xBF58_476D_1CE4_E5B9;
const MIX_2: u64 = 0x94D0_49BB_1331_11EB;

/// The inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct
/// bits each step: 1, 2, 4, ... 64 after six).
const fn inverse(a: u64) -> u64 {
    let mut x = a;
    let mut k = 0;
    while k < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        k += 1;
    }
    x
}

/// The `x` of `y = x ^ (x >> k)`.
fn unshift(y: u64, k: u32) -> u64 {
    let mut x = y;
    let mut s = k;
    while s < 64 {
        x ^= y >> s;
        s += k;
    }
    x
}

/// A seed for a new CoAP endpoint whose first message id is `last + 1`, the next one a
/// device that used `last` before it parked would use; `random` fills the other bits.
pub(crate) fn seed_after(last: u16, random: u64) -> u64 {
    let output = (random & !0xFFFF) | u64::from(last);
    let z = unshift(output, 31).wrapping_mul(inverse(MIX_2));
    let z = unshift(z, 27).wrapping_mul(inverse(MIX_1));
    unshift(z, 30).wrapping_sub(GOLDEN)
}

// The tree difference, entry by entry: an operation byte, the ids as varints, then for a
// set the resource. A value is a type byte and its payload (integers zigzag varints,
// floats their 8 bytes, texts and opaques a length and the bytes).

const SET_SINGLE: u8 = 0;
const SET_MULTIPLE: u8 = 1;
const DROP_RESOURCE: u8 = 2;
const DROP_INSTANCE: u8 = 3;
const ADD_INSTANCE: u8 = 4;

const V_STRING: u8 = 0;
const V_INTEGER: u8 = 1;
const V_UNSIGNED: u8 = 2;
const V_FLOAT: u8 = 3;
const V_FALSE: u8 = 4;
const V_TRUE: u8 = 5;
const V_OPAQUE: u8 = 6;
const V_TIME: u8 = 7;
const V_OBJLNK: u8 = 8;
const V_CORELNK: u8 = 9;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v & 0x7F) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => {
            out.push(V_STRING);
            put_bytes(out, s.as_bytes());
        }
        Value::Integer(i) => {
            out.push(V_INTEGER);
            put_varint(out, zigzag(*i));
        }
        Value::UnsignedInteger(u) => {
            out.push(V_UNSIGNED);
            put_varint(out, *u);
        }
        Value::Float(f) => {
            out.push(V_FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Boolean(b) => out.push(if *b { V_TRUE } else { V_FALSE }),
        Value::Opaque(b) => {
            out.push(V_OPAQUE);
            put_bytes(out, b);
        }
        Value::Time(t) => {
            out.push(V_TIME);
            put_varint(out, zigzag(*t));
        }
        Value::ObjLnk(l) => {
            out.push(V_OBJLNK);
            put_varint(out, u64::from(l.object));
            put_varint(out, u64::from(l.instance));
        }
        Value::CoreLnk(s) => {
            out.push(V_CORELNK);
            put_bytes(out, s.as_bytes());
        }
    }
}

fn put_ids(out: &mut Vec<u8>, op: u8, ids: &[u16]) {
    out.push(op);
    for id in ids {
        put_varint(out, u64::from(*id));
    }
}

fn put_resource(out: &mut Vec<u8>, o: u16, i: u16, r: &Resource) {
    match r {
        Resource::Single { id, value } => {
            put_ids(out, SET_SINGLE, &[o, i, *id]);
            put_value(out, value);
        }
        Resource::Multiple { id, instances } => {
            put_ids(out, SET_MULTIPLE, &[o, i, *id]);
            put_varint(out, instances.len() as u64);
            for (ri, v) in instances {
                put_varint(out, u64::from(*ri));
                put_value(out, v);
            }
        }
    }
}

fn instance_of(store: &ObjectStore, o: u16, i: u16) -> Result<Instance, OpError> {
    match store.read(&Path::instance(o, i), Actor::Device)? {
        Node::Instance(inst) => Ok(inst),
        _ => Err(OpError::Internal(format!("/{o}/{i} is not an instance"))),
    }
}

/// The difference of `current` from `initial` (two trees of the same objects), as the
/// entries that turn `initial` into `current`.
pub(crate) fn encode_tree(
    current: &ObjectStore,
    initial: &ObjectStore,
) -> Result<Vec<u8>, OpError> {
    let mut out = Vec::new();
    let before: BTreeMap<u16, Vec<u16>> = initial.layout().into_iter().collect();
    for (o, instances) in current.layout() {
        let had = before.get(&o).map(Vec::as_slice).unwrap_or_default();
        for i in had.iter().filter(|i| !instances.contains(i)) {
            put_ids(&mut out, DROP_INSTANCE, &[o, *i]);
        }
        for i in instances {
            let now = instance_of(current, o, i)?;
            let was = if had.contains(&i) {
                Some(instance_of(initial, o, i)?)
            } else {
                put_ids(&mut out, ADD_INSTANCE, &[o, i]);
                None
            };
            for (rid, r) in &now.resources {
                if was.as_ref().and_then(|w| w.resources.get(rid)) != Some(r) {
                    put_resource(&mut out, o, i, r);
                }
            }
            for rid in was.iter().flat_map(|w| w.resources.keys()) {
                if !now.resources.contains_key(rid) {
                    put_ids(&mut out, DROP_RESOURCE, &[o, i, *rid]);
                }
            }
        }
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, ParkError> {
        let (first, rest) = self
            .0
            .split_first()
            .ok_or(ParkError::Damaged("cut short"))?;
        self.0 = rest;
        Ok(*first)
    }

    fn varint(&mut self) -> Result<u64, ParkError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ParkError::Damaged("varint too long"))
    }

    fn id(&mut self) -> Result<u16, ParkError> {
        u16::try_from(self.varint()?).map_err(|_| ParkError::Damaged("id out of range"))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, ParkError> {
        let n = usize::try_from(self.varint()?).map_err(|_| ParkError::Damaged("length"))?;
        if n > self.0.len() {
            return Err(ParkError::Damaged("length past the end"));
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b.to_vec())
    }

    fn text(&mut self) -> Result<String, ParkError> {
        String::from_utf8(self.bytes()?).map_err(|_| ParkError::Damaged("text not UTF-8"))
    }

    fn value(&mut self) -> Result<Value, ParkError> {
        Ok(match self.byte()? {
            V_STRING => Value::String(self.text()?),
            V_INTEGER => Value::Integer(unzigzag(self.varint()?)),
            V_UNSIGNED => Value::UnsignedInteger(self.varint()?),
            V_FLOAT => {
                let mut b = [0u8; 8];
                for x in &mut b {
                    *x = self.byte()?;
                }
                Value::Float(f64::from_le_bytes(b))
            }
            V_FALSE => Value::Boolean(false),
            V_TRUE => Value::Boolean(true),
            V_OPAQUE => Value::Opaque(self.bytes()?),
            V_TIME => Value::Time(unzigzag(self.varint()?)),
            V_OBJLNK => Value::ObjLnk(ObjLnk {
                object: self.id()?,
                instance: self.id()?,
            }),
            V_CORELNK => Value::CoreLnk(self.text()?),
            _ => return Err(ParkError::Damaged("unknown value type")),
        })
    }
}

/// Applies a difference [`encode_tree`] made to the initial tree it was made against.
pub(crate) fn decode_tree(store: &mut ObjectStore, bytes: &[u8]) -> Result<(), ParkError> {
    let mut r = Reader(bytes);
    while !r.0.is_empty() {
        let op = r.byte()?;
        let (o, i) = (r.id()?, r.id()?);
        match op {
            DROP_INSTANCE => store.delete(&Path::instance(o, i), Actor::Device)?,
            ADD_INSTANCE => store.add_instance(o, i)?,
            SET_SINGLE => {
                let id = r.id()?;
                let value = r.value()?;
                let node = Node::Resource(Resource::Single { id, value });
                store.write(&Path::resource(o, i, id), node, true, Actor::Device)?;
            }
            SET_MULTIPLE => {
                let id = r.id()?;
                let n = r.varint()?;
                let mut instances = BTreeMap::new();
                for _ in 0..n.min(u64::from(u16::MAX) + 1) {
                    let ri = r.id()?;
                    instances.insert(ri, r.value()?);
                }
                let node = Node::Resource(Resource::Multiple { id, instances });
                store.write(&Path::resource(o, i, id), node, true, Actor::Device)?;
            }
            DROP_RESOURCE => {
                // The tree has no way to remove one resource: the instance is built
                // again without it.
                let rid = r.id()?;
                let mut inst = instance_of(store, o, i)?;
                inst.resources.remove(&rid);
                store.delete(&Path::instance(o, i), Actor::Device)?;
                store.add_instance(o, i)?;
                store.write(
                    &Path::instance(o, i),
                    Node::Instance(inst),
                    true,
                    Actor::Device,
                )?;
            }
            _ => return Err(ParkError::Damaged("unknown entry")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
