//! Everything the server knows about one device, in the shape campaigns and
//! dynamic groups target by.
//!
//! Attributes come from four places: the object tree the device reports
//! (`/3` device, `/4` connectivity, `/5` firmware update, `/6` location, see
//! [`Attributes::apply`]), the registration (LwM2M version, objects), the
//! server's view of the session (online, awake, queue mode, last seen) and
//! the operator (billing, rate plan, home network, labels; see
//! [`ExternalPatch`]). Some are derived: the bearer's kind, `has_wifi`,
//! `on_mains`, `roaming` and `region`; they are recomputed whenever what they
//! derive from changes, so they are always as current as their inputs.
//!
//! Every mutation returns the [`Changed`] set of attributes whose value moved,
//! derived ones included, which is what keeps groups current incrementally.
//!
//! A million of these live in memory, so the layout is compact: strings that
//! repeat across the fleet are shared through an [`Interner`], lists are
//! exact-size boxed slices, and what devices send is bounded (strings cut at
//! [`MAX_DEVICE_STRING`] bytes, at most [`MAX_OBJECTS`] objects and
//! [`MAX_INSTANCES`] instances of a multi-instance resource; more are
//! ignored).

mod apply;
mod external;
mod json;
pub mod network;

use std::sync::Arc;

pub use external::{
    ExternalError, ExternalPatch, MAX_EXTERNAL_STRING, MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE,
};
pub use network::{BearerKind, HomeNetwork, HomeNetworkError};

use crate::changed::{Attr, Changed};
use crate::intern::Interner;
use crate::regions::Regions;

/// Longest string kept from a device, in bytes; longer ones are cut at a
/// character boundary.
pub const MAX_DEVICE_STRING: usize = 256;
/// Most supported objects kept from a registration.
pub const MAX_OBJECTS: usize = 256;
/// Most instances kept of one multi-instance resource.
pub const MAX_INSTANCES: usize = 16;
/// Longest endpoint name, in bytes.
pub const MAX_ENDPOINT: usize = 256;

/// Why an endpoint name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint name must not be empty")]
    Empty,
    #[error("endpoint name is longer than {MAX_ENDPOINT} bytes")]
    TooLong,
}

/// What the rest of the fleet contributes to a device's derived attributes:
/// the operator's regions, the fleet-wide home networks, and a table of
/// shared strings. The default has none of them: no region is ever found,
/// only a device's own `home_network` decides roaming, nothing is shared.
#[derive(Default)]
pub struct FleetContext<'a> {
    pub regions: Option<&'a Regions>,
    pub home_networks: &'a [HomeNetwork],
    pub interner: Option<&'a mut Interner>,
}

impl FleetContext<'_> {
    fn intern(&mut self, s: &str) -> Arc<str> {
        match self.interner.as_deref_mut() {
            Some(i) => i.intern(s),
            None => Arc::from(s),
        }
    }

    fn share_objects(&mut self, list: Vec<(u16, Arc<str>)>) -> ObjectList {
        match self.interner.as_deref_mut() {
            Some(i) => i.share_objects(list),
            None => Arc::from(list),
        }
    }
}

/// One power source of /3/0/6, with its voltage from /3/0/7 (same resource
/// instance id) when reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerSource {
    pub instance: u16,
    /// 0 DC, 1 internal battery, 2 external battery, 3 fuel cell, 4 PoE,
    /// 5 USB, 6 AC mains, 7 solar.
    pub source: Option<u8>,
    pub voltage_mv: Option<i64>,
}

impl PowerSource {
    /// Mains-like sources: DC, PoE, USB, AC mains.
    pub fn is_mains(&self) -> bool {
        matches!(self.source, Some(0 | 4 | 5 | 6))
    }

    /// Present and, when its voltage is known, delivering.
    pub fn is_available(&self) -> bool {
        self.source.is_some() && self.voltage_mv.is_none_or(|v| v > 0)
    }
}

/// Everything known about one device; `None` where unknown.
///
/// Split in two: what every device has from its registration and session, inline, and
/// what it reports and its operator sets, in a [`Detail`] allocated on first use. A
/// device between its Register and its first read (a whole fleet after an outage, or
/// devices that answer no reads) costs about a quarter of the full record.
#[derive(Clone, Debug)]
pub struct Attributes {
    endpoint: Arc<str>,
    lwm2m_version: Option<Arc<str>>,
    /// Sorted by object id; shared, as most of a fleet announces one of a few lists.
    objects: ObjectList,
    online: Option<bool>,
    awake: Option<bool>,
    queue_mode: Option<bool>,
    next_wake_unix_ms: Option<i64>,
    last_seen_unix_ms: Option<i64>,
    /// When a queue-mode device last woke, Unix milliseconds, and the interval before
    /// that wake: what predicts the next one. Bookkeeping of the session, not an
    /// attribute: neither stored (a restart learns it again from two wakes) nor compared.
    woke_at_unix_ms: Option<i64>,
    /// Seconds: PSM timers run to 413 days.
    wake_interval_s: Option<u32>,
    /// The record's key where the server stores it, 0 until it has one: records are
    /// keyed in the order devices were first seen, so a fleet's first registrations
    /// append to the table instead of rewriting it (names are scattered, as IMEIs are).
    /// Bookkeeping, not an attribute: neither serialized nor compared. 32 bits fit in
    /// the record's padding, and the inventory holds at most `max_devices` names.
    store_key: u32,
    /// `None` while every field of a [`Detail`] is unknown.
    detail: Option<Box<Detail>>,
}

/// A registration's objects and their versions, as the inventory shares them.
pub(crate) type ObjectList = Arc<[(u16, Arc<str>)]>;

/// What a device reports (/3, /4, /5, /6) and what its operator sets, with what derives
/// from them.
#[derive(Clone, Debug, PartialEq, Default)]
struct Detail {
    manufacturer: Option<Arc<str>>,
    model: Option<Arc<str>>,
    serial: Option<Box<str>>,
    firmware: Option<Arc<str>>,
    hardware: Option<Arc<str>>,
    software: Option<Arc<str>>,
    device_type: Option<Arc<str>>,
    /// (resource instance, protocol), sorted by instance.
    protocols: Box<[(u16, u8)]>,
    delivery: Option<u8>,

    bearer_code: Option<u8>,
    /// (resource instance, bearer), sorted by instance.
    available_bearers: Box<[(u16, u8)]>,
    signal_dbm: Option<i32>,
    link_quality: Option<i32>,
    cell_id: Option<i64>,
    mnc: Option<u16>,
    mcc: Option<u16>,
    lat: Option<f64>,
    lon: Option<f64>,
    region: Option<Arc<str>>,
    battery: Option<u8>,
    /// Sorted by instance.
    power_sources: Box<[PowerSource]>,
    roaming: bool,

    home_network: Option<HomeNetwork>,
    billing: Option<Arc<str>>,
    rate_plan: Option<Arc<str>>,
    /// Sorted by key.
    labels: Labels,
}

/// What [`Attributes::detail`] reads for a device without a [`Detail`] of its own.
static NO_DETAIL: std::sync::LazyLock<Detail> = std::sync::LazyLock::new(Detail::default);

/// Equal when every attribute is: a [`Detail`] whose fields are all unknown is no detail,
/// and the wake bookkeeping is not an attribute.
impl PartialEq for Attributes {
    fn eq(&self, other: &Attributes) -> bool {
        self.endpoint == other.endpoint
            && self.lwm2m_version == other.lwm2m_version
            && self.objects == other.objects
            && self.online == other.online
            && self.awake == other.awake
            && self.queue_mode == other.queue_mode
            && self.next_wake_unix_ms == other.next_wake_unix_ms
            && self.last_seen_unix_ms == other.last_seen_unix_ms
            && self.detail() == other.detail()
    }
}

/// Operator labels as stored: (key, value), sorted by key.
type Labels = Box<[(Box<str>, Box<str>)]>;

/// The attributes computed from others, compared before and after a change.
#[derive(PartialEq, Clone, Copy)]
struct Derived {
    bearer: Option<BearerKind>,
    has_wifi: Option<bool>,
    on_mains: Option<bool>,
}

impl Attributes {
    /// A device known by name only.
    pub fn new(endpoint: &str) -> Result<Attributes, EndpointError> {
        Attributes::with_shared_endpoint(Arc::from(endpoint))
    }

    /// [`Attributes::new`] keeping the caller's copy of the name (the registry's).
    pub fn with_shared_endpoint(endpoint: Arc<str>) -> Result<Attributes, EndpointError> {
        if endpoint.is_empty() {
            return Err(EndpointError::Empty);
        }
        if endpoint.len() > MAX_ENDPOINT {
            return Err(EndpointError::TooLong);
        }
        Ok(Attributes {
            endpoint,
            lwm2m_version: None,
            objects: Arc::new([]),
            online: None,
            awake: None,
            queue_mode: None,
            next_wake_unix_ms: None,
            last_seen_unix_ms: None,
            woke_at_unix_ms: None,
            wake_interval_s: None,
            store_key: 0,
            detail: None,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// The endpoint name, shared with the indexes that list the device.
    pub fn shared_endpoint(&self) -> &Arc<str> {
        &self.endpoint
    }

    /// Takes `name`'s allocation for the endpoint name, if it is the same name.
    pub(crate) fn share_endpoint(&mut self, name: &Arc<str>) {
        if *self.endpoint == **name {
            self.endpoint = Arc::clone(name);
        }
    }

    /// See the field: 0 while the record has no key in the store.
    pub fn store_key(&self) -> u32 {
        self.store_key
    }
    pub fn set_store_key(&mut self, key: u32) {
        self.store_key = key;
    }

    fn detail(&self) -> &Detail {
        self.detail.as_deref().unwrap_or(&NO_DETAIL)
    }

    /// The detail to change, allocated if the device had none; [`Self::trim_detail`]
    /// gives it back once nothing in it is known.
    fn detail_mut(&mut self) -> &mut Detail {
        self.detail.get_or_insert_with(Box::default)
    }

    fn trim_detail(&mut self) {
        if self.detail.as_deref().is_some_and(|d| *d == *NO_DETAIL) {
            self.detail = None;
        }
    }
    /// /3/0/0
    pub fn manufacturer(&self) -> Option<&str> {
        self.detail().manufacturer.as_deref()
    }
    /// /3/0/1
    pub fn model(&self) -> Option<&str> {
        self.detail().model.as_deref()
    }
    /// /3/0/2
    pub fn serial(&self) -> Option<&str> {
        self.detail().serial.as_deref()
    }
    /// /3/0/3
    pub fn firmware(&self) -> Option<&str> {
        self.detail().firmware.as_deref()
    }
    /// /3/0/18
    pub fn hardware(&self) -> Option<&str> {
        self.detail().hardware.as_deref()
    }
    /// /3/0/19
    pub fn software(&self) -> Option<&str> {
        self.detail().software.as_deref()
    }
    /// /3/0/17
    pub fn device_type(&self) -> Option<&str> {
        self.detail().device_type.as_deref()
    }
    /// From the registration, e.g. "1.1".
    pub fn lwm2m_version(&self) -> Option<&str> {
        self.lwm2m_version.as_deref()
    }
    /// Supported objects and their versions, by object id.
    pub fn objects(&self) -> impl ExactSizeIterator<Item = (u16, &str)> {
        self.objects.iter().map(|(id, v)| (*id, &**v))
    }
    pub fn supports_object(&self, id: u16) -> bool {
        self.objects.binary_search_by_key(&id, |(i, _)| *i).is_ok()
    }
    /// /5/0/8 firmware update protocols, distinct and sorted: 0 CoAP,
    /// 1 CoAPS, 2 HTTP 1.1, 3 HTTPS 1.1, 4 CoAP over TCP, 5 CoAP over TLS.
    pub fn protocols(&self) -> Vec<u8> {
        distinct(self.detail().protocols.iter().map(|(_, p)| *p))
    }
    /// /5/0/9: 0 pull, 1 push, 2 both.
    pub fn delivery(&self) -> Option<u8> {
        self.detail().delivery
    }
    pub fn online(&self) -> Option<bool> {
        self.online
    }
    pub fn awake(&self) -> Option<bool> {
        self.awake
    }
    pub fn queue_mode(&self) -> Option<bool> {
        self.queue_mode
    }
    /// When a queue-mode device is expected to wake next, Unix milliseconds.
    pub fn next_wake_unix_ms(&self) -> Option<i64> {
        self.next_wake_unix_ms
    }
    /// When the server last heard from the device, Unix milliseconds.
    pub fn last_seen_unix_ms(&self) -> Option<i64> {
        self.last_seen_unix_ms
    }
    /// /4/0/0, the bearer in use.
    pub fn bearer_code(&self) -> Option<u8> {
        self.detail().bearer_code
    }
    pub fn bearer(&self) -> Option<BearerKind> {
        self.detail().bearer_code.map(BearerKind::of)
    }
    /// /4/0/1, distinct and sorted.
    pub fn available_bearers(&self) -> Vec<u8> {
        distinct(self.detail().available_bearers.iter().map(|(_, b)| *b))
    }
    /// Whether the device can use Wi-Fi: it lists WLAN among its available
    /// bearers or uses it; unknown when it reports neither list nor bearer.
    pub fn has_wifi(&self) -> Option<bool> {
        let listed = self
            .detail()
            .available_bearers
            .iter()
            .any(|(_, b)| *b == network::code::WLAN);
        let current = self.detail().bearer_code.map(|c| c == network::code::WLAN);
        if listed || current == Some(true) {
            Some(true)
        } else if !self.detail().available_bearers.is_empty() || current.is_some() {
            Some(false)
        } else {
            None
        }
    }
    /// /4/0/2, dBm.
    pub fn signal_dbm(&self) -> Option<i32> {
        self.detail().signal_dbm
    }
    /// /4/0/3
    pub fn link_quality(&self) -> Option<i32> {
        self.detail().link_quality
    }
    /// /4/0/8
    pub fn cell_id(&self) -> Option<i64> {
        self.detail().cell_id
    }
    /// /4/0/10 SMCC, the serving network's country code.
    pub fn mcc(&self) -> Option<u16> {
        self.detail().mcc
    }
    /// /4/0/9 SMNC, the serving network's code.
    pub fn mnc(&self) -> Option<u16> {
        self.detail().mnc
    }
    /// /6/0/0, degrees.
    pub fn lat(&self) -> Option<f64> {
        self.detail().lat
    }
    /// /6/0/1, degrees.
    pub fn lon(&self) -> Option<f64> {
        self.detail().lon
    }
    /// The first operator region containing the location.
    pub fn region(&self) -> Option<&str> {
        self.detail().region.as_deref()
    }
    /// /3/0/9, percent.
    pub fn battery(&self) -> Option<u8> {
        self.detail().battery
    }
    /// /3/0/6 with /3/0/7, by resource instance.
    pub fn power_sources(&self) -> &[PowerSource] {
        &self.detail().power_sources
    }
    /// Whether a mains-like source (DC, PoE, USB, AC) is available; unknown
    /// when no power source is reported.
    pub fn on_mains(&self) -> Option<bool> {
        if self
            .detail()
            .power_sources
            .iter()
            .all(|p| p.source.is_none())
        {
            return None;
        }
        Some(
            self.detail()
                .power_sources
                .iter()
                .any(|p| p.is_mains() && p.is_available()),
        )
    }
    /// Whether the serving network is known and is not a home network: the
    /// device's own `home_network` if the operator set one, else the fleet's.
    pub fn roaming(&self) -> bool {
        self.detail().roaming
    }
    pub fn home_network(&self) -> Option<HomeNetwork> {
        self.detail().home_network
    }
    /// "active", "suspended" or whatever the billing system says.
    pub fn billing(&self) -> Option<&str> {
        self.detail().billing.as_deref()
    }
    pub fn rate_plan(&self) -> Option<&str> {
        self.detail().rate_plan.as_deref()
    }
    /// Operator labels, sorted by key.
    pub fn labels(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.detail().labels.iter().map(|(k, v)| (&**k, &**v))
    }
    pub fn label(&self, key: &str) -> Option<&str> {
        self.detail()
            .labels
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.detail().labels[i].1)
    }

    // ---- session state, set by the server ----

    pub fn set_online(&mut self, online: bool) -> Changed {
        Changed::NONE.with_if(Attr::Online, replace(&mut self.online, Some(online)))
    }
    pub fn set_awake(&mut self, awake: bool) -> Changed {
        Changed::NONE.with_if(Attr::Awake, replace(&mut self.awake, Some(awake)))
    }
    pub fn set_queue_mode(&mut self, queue_mode: bool) -> Changed {
        Changed::NONE.with_if(
            Attr::QueueMode,
            replace(&mut self.queue_mode, Some(queue_mode)),
        )
    }
    pub fn set_next_wake(&mut self, unix_ms: Option<i64>) -> Changed {
        Changed::NONE.with_if(
            Attr::NextWake,
            replace(&mut self.next_wake_unix_ms, unix_ms),
        )
    }
    /// A queue-mode device woke at `unix_ms`; see [`Attributes::predicted_wake_unix_ms`].
    /// Changes no attribute.
    pub fn note_woke(&mut self, unix_ms: i64) {
        self.wake_interval_s = self
            .woke_at_unix_ms
            .and_then(|at| u32::try_from(unix_ms.checked_sub(at)? / 1000).ok());
        self.woke_at_unix_ms = Some(unix_ms);
    }
    /// The last wake plus the interval before it, to the second: when the device should
    /// wake next if it keeps its rhythm. Unknown before its second wake.
    pub fn predicted_wake_unix_ms(&self) -> Option<i64> {
        let interval_ms = i64::from(self.wake_interval_s?) * 1000;
        self.woke_at_unix_ms?.checked_add(interval_ms)
    }
    pub fn set_last_seen(&mut self, unix_ms: i64) -> Changed {
        Changed::NONE.with_if(
            Attr::LastSeen,
            replace(&mut self.last_seen_unix_ms, Some(unix_ms)),
        )
    }

    /// The LwM2M version from a registration.
    pub fn set_lwm2m_version(&mut self, version: &str) -> Changed {
        self.set_lwm2m_version_in(version, &mut FleetContext::default())
    }
    pub fn set_lwm2m_version_in(&mut self, version: &str, cx: &mut FleetContext<'_>) -> Changed {
        let moved = set_shared(&mut self.lwm2m_version, Some(version), cx);
        Changed::NONE.with_if(Attr::Lwm2mVersion, moved)
    }

    /// The supported objects from a registration, replacing the previous
    /// list; past [`MAX_OBJECTS`] the rest are ignored, and a repeated id
    /// keeps its first version.
    pub fn set_objects<'s>(
        &mut self,
        objects: impl IntoIterator<Item = (u16, &'s str)>,
    ) -> Changed {
        self.set_objects_in(objects, &mut FleetContext::default())
    }
    pub fn set_objects_in<'s>(
        &mut self,
        objects: impl IntoIterator<Item = (u16, &'s str)>,
        cx: &mut FleetContext<'_>,
    ) -> Changed {
        let mut list: Vec<(u16, &str)> = Vec::new();
        for (id, version) in objects {
            if list.len() == MAX_OBJECTS {
                break;
            }
            list.push((id, truncate(version, MAX_DEVICE_STRING)));
        }
        // Stable: the first of equal ids is kept.
        list.sort_by_key(|(id, _)| *id);
        list.dedup_by_key(|(id, _)| *id);
        let same = list.len() == self.objects.len()
            && list
                .iter()
                .zip(self.objects.iter())
                .all(|((a, va), (b, vb))| a == b && *va == &**vb);
        if same {
            return Changed::NONE;
        }
        let list: Vec<(u16, Arc<str>)> =
            list.into_iter().map(|(id, v)| (id, cx.intern(v))).collect();
        self.objects = cx.share_objects(list);
        Changed::NONE.with(Attr::Objects)
    }

    /// Recomputes what depends on the fleet (region, roaming): after the
    /// regions or home networks change, or for attributes read back from
    /// storage.
    pub fn rederive(&mut self, cx: &FleetContext<'_>) -> Changed {
        self.rederive_region(cx) | self.rederive_roaming(cx)
    }

    fn rederive_region(&mut self, cx: &FleetContext<'_>) -> Changed {
        let d = self.detail();
        let region = match (cx.regions, d.lat, d.lon) {
            (Some(r), Some(lat), Some(lon)) => r.shared_region_of(lat, lon).cloned(),
            _ => None,
        };
        if d.region == region {
            return Changed::NONE;
        }
        self.detail_mut().region = region;
        self.trim_detail();
        Changed::NONE.with(Attr::Region)
    }

    fn rederive_roaming(&mut self, cx: &FleetContext<'_>) -> Changed {
        let d = self.detail();
        let visited = d.mcc.zip(d.mnc);
        let roaming = match &d.home_network {
            Some(h) => network::is_roaming(visited, std::slice::from_ref(h)),
            None => network::is_roaming(visited, cx.home_networks),
        };
        if d.roaming == roaming {
            return Changed::NONE;
        }
        self.detail_mut().roaming = roaming;
        self.trim_detail();
        Changed::NONE.with(Attr::Roaming)
    }

    fn derived(&self) -> Derived {
        Derived {
            bearer: self.bearer(),
            has_wifi: self.has_wifi(),
            on_mains: self.on_mains(),
        }
    }

    fn derived_changes(&self, before: Derived) -> Changed {
        let after = self.derived();
        let mut c = Changed::NONE;
        c.note(Attr::Bearer, before.bearer != after.bearer);
        c.note(Attr::HasWifi, before.has_wifi != after.has_wifi);
        c.note(Attr::OnMains, before.on_mains != after.on_mains);
        c
    }
}

impl Changed {
    fn with_if(self, attr: Attr, moved: bool) -> Changed {
        if moved {
            self.with(attr)
        } else {
            self
        }
    }
}

/// Stores `value`, telling whether it differs from what was there.
fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        false
    } else {
        *slot = value;
        true
    }
}

/// Stores a shared string, allocating only when it changes.
fn set_shared(slot: &mut Option<Arc<str>>, value: Option<&str>, cx: &mut FleetContext<'_>) -> bool {
    if slot.as_deref() == value {
        return false;
    }
    *slot = value.map(|v| cx.intern(v));
    true
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn distinct(values: impl Iterator<Item = u8>) -> Vec<u8> {
    let mut v: Vec<u8> = values.collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_bounded() {
        assert_eq!(Attributes::new(""), Err(EndpointError::Empty));
        assert_eq!(
            Attributes::new(&"x".repeat(MAX_ENDPOINT + 1)),
            Err(EndpointError::TooLong)
        );
        let a = Attributes::new("urn:imei:1").unwrap();
        assert_eq!(a.endpoint(), "urn:imei:1");
        assert_eq!(a.model(), None);
        assert_eq!(a.has_wifi(), None);
        assert_eq!(a.on_mains(), None);
        assert!(!a.roaming());
    }

    #[test]
    fn session_setters_report_only_real_changes() {
        let mut a = Attributes::new("d").unwrap();
        assert_eq!(a.set_online(true), Changed::NONE.with(Attr::Online));
        assert_eq!(a.set_online(true), Changed::NONE);
        assert_eq!(a.set_awake(false), Changed::NONE.with(Attr::Awake));
        assert_eq!(a.set_queue_mode(true), Changed::NONE.with(Attr::QueueMode));
        assert_eq!(a.set_next_wake(Some(5)), Changed::NONE.with(Attr::NextWake));
        assert_eq!(a.set_next_wake(Some(5)), Changed::NONE);
        assert_eq!(a.set_next_wake(None), Changed::NONE.with(Attr::NextWake));
        assert_eq!(a.set_last_seen(7), Changed::NONE.with(Attr::LastSeen));
        assert_eq!(a.last_seen_unix_ms(), Some(7));
        assert_eq!(
            a.set_lwm2m_version("1.1"),
            Changed::NONE.with(Attr::Lwm2mVersion)
        );
        assert_eq!(a.set_lwm2m_version("1.1"), Changed::NONE);
    }

    #[test]
    fn a_device_known_by_its_registration_holds_no_detail() {
        use lwm2m_objects::{Path, Value};
        let mut a = Attributes::new("d").unwrap();
        a.set_online(true);
        a.set_lwm2m_version("1.1");
        a.set_objects([(3, "1.1")]);
        assert!(a.detail.is_none());
        // A value of the wrong type, a forget and a patch that clears leave none behind.
        a.apply(&Path::resource(3, 0, 0), &Value::Integer(1));
        a.forget(&Path::object(3));
        let mut cx = FleetContext::default();
        let clear: ExternalPatch = serde_json::from_str(r#"{"billing_state":null}"#).unwrap();
        a.apply_external(&clear, &mut cx).unwrap();
        assert!(a.detail.is_none());
        // A reported value allocates it; forgetting it gives it back, equal to before.
        let before = a.clone();
        a.apply(&Path::resource(3, 0, 9), &Value::Integer(80));
        assert_eq!(a.battery(), Some(80));
        assert_ne!(a, before);
        a.forget(&Path::resource(3, 0, 9));
        assert!(a.detail.is_none());
        assert_eq!(a, before);
        assert!(
            // 120 bytes and malloc's 8 of its own fill a 128-byte chunk; one byte more
            // takes the next size, 16 bytes a device.
            size_of::<Attributes>() <= 120,
            "{}",
            size_of::<Attributes>()
        );
    }

    #[test]
    fn the_next_wake_is_predicted_from_the_last_interval() {
        let mut a = Attributes::new("d").unwrap();
        a.note_woke(1_000);
        assert_eq!(a.predicted_wake_unix_ms(), None);
        a.note_woke(61_000);
        assert_eq!(a.predicted_wake_unix_ms(), Some(121_000));
        // A PSM timer of 400 days.
        let days_400 = 400 * 86_400_000;
        a.note_woke(61_000 + days_400);
        assert_eq!(a.predicted_wake_unix_ms(), Some(61_000 + 2 * days_400));
        // A clock set back gives no interval rather than a negative one.
        a.note_woke(500);
        assert_eq!(a.predicted_wake_unix_ms(), None);
        // Bookkeeping, not an attribute.
        assert_eq!(a, Attributes::new("d").unwrap());
    }

    #[test]
    fn objects_are_sorted_deduplicated_and_bounded() {
        let mut a = Attributes::new("d").unwrap();
        let c = a.set_objects([(5, "1.0"), (3, "1.1"), (5, "2.0")]);
        assert_eq!(c, Changed::NONE.with(Attr::Objects));
        assert_eq!(a.objects().collect::<Vec<_>>(), [(3, "1.1"), (5, "1.0")]);
        assert!(a.supports_object(5));
        assert!(!a.supports_object(4));
        assert_eq!(a.set_objects([(3, "1.1"), (5, "1.0")]), Changed::NONE);
        let many: Vec<(u16, String)> = (0..1000).map(|i| (i, "1.0".to_string())).collect();
        a.set_objects(many.iter().map(|(i, v)| (*i, v.as_str())));
        assert_eq!(a.objects().len(), MAX_OBJECTS);
    }

    #[test]
    fn strings_share_through_the_interner() {
        let mut interner = Interner::default();
        let mut a = Attributes::new("a").unwrap();
        let mut b = Attributes::new("b").unwrap();
        for x in [&mut a, &mut b] {
            let mut cx = FleetContext {
                interner: Some(&mut interner),
                ..FleetContext::default()
            };
            x.set_lwm2m_version_in("1.1", &mut cx);
        }
        assert!(Arc::ptr_eq(
            a.lwm2m_version.as_ref().unwrap(),
            b.lwm2m_version.as_ref().unwrap()
        ));
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("éé", 3), "é");
        assert_eq!(truncate("é", 1), "");
        assert_eq!(truncate("ok", 10), "ok");
    }
}
