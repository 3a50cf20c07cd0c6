//! From LwM2M resources to attributes.
//!
//! Only instance 0 of /3, /4, /5 and /6 is read: that is the device, its
//! connectivity, its firmware update and its location. Anything else, and any
//! value of a type the resource cannot have, is ignored: devices send what
//! they like, and an attribute is better unknown than wrong.
//!
//! Integers may arrive as `Integer` or `UnsignedInteger` (decoders differ);
//! a latitude or longitude as `Float`, an integer, or a decimal `String` (as
//! in LwM2M 1.0's location object).

use lwm2m_objects::{Path, Value};

use super::{
    replace, set_shared, truncate, Attributes, Detail, FleetContext, PowerSource,
    MAX_DEVICE_STRING, MAX_INSTANCES,
};
use crate::changed::{Attr, Changed};

/// A resource that feeds an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Res {
    Manufacturer,
    Model,
    Serial,
    Firmware,
    PowerSource,
    PowerVoltage,
    Battery,
    DeviceType,
    Hardware,
    Software,
    Bearer,
    AvailableBearers,
    Signal,
    LinkQuality,
    CellId,
    Smnc,
    Smcc,
    Protocols,
    Delivery,
    Lat,
    Lon,
}

const TRACKED: &[(u16, u16, Res)] = &[
    (3, 0, Res::Manufacturer),
    (3, 1, Res::Model),
    (3, 2, Res::Serial),
    (3, 3, Res::Firmware),
    (3, 6, Res::PowerSource),
    (3, 7, Res::PowerVoltage),
    (3, 9, Res::Battery),
    (3, 17, Res::DeviceType),
    (3, 18, Res::Hardware),
    (3, 19, Res::Software),
    (4, 0, Res::Bearer),
    (4, 1, Res::AvailableBearers),
    (4, 2, Res::Signal),
    (4, 3, Res::LinkQuality),
    (4, 8, Res::CellId),
    (4, 9, Res::Smnc),
    (4, 10, Res::Smcc),
    (5, 8, Res::Protocols),
    (5, 9, Res::Delivery),
    (6, 0, Res::Lat),
    (6, 1, Res::Lon),
];

impl Res {
    fn of(object: u16, resource: u16) -> Option<Res> {
        TRACKED
            .iter()
            .find(|(o, r, _)| *o == object && *r == resource)
            .map(|(_, _, res)| *res)
    }

    fn is_multi(self) -> bool {
        matches!(
            self,
            Res::PowerSource | Res::PowerVoltage | Res::AvailableBearers | Res::Protocols
        )
    }
}

/// What a path points at: a tracked resource of instance 0, and the
/// resource instance if given.
fn target(path: &Path) -> Option<(Res, Option<u16>)> {
    match path.ids() {
        [o, 0, r] => Res::of(*o, *r).map(|res| (res, None)),
        [o, 0, r, ri] => Res::of(*o, *r).map(|res| (res, Some(*ri))),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::UnsignedInteger(u) => i64::try_from(*u).ok(),
        _ => None,
    }
}

fn small<T: TryFrom<i64>>(v: &Value) -> Option<T> {
    int(v).and_then(|i| T::try_from(i).ok())
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(truncate(s, MAX_DEVICE_STRING)),
        _ => None,
    }
}

fn degrees(v: &Value, limit: f64) -> Option<f64> {
    let d = match v {
        Value::Float(f) => *f,
        Value::Integer(i) => *i as f64,
        Value::UnsignedInteger(u) => *u as f64,
        Value::String(s) if s.len() <= 32 => s.trim().parse().ok()?,
        _ => return None,
    };
    (d.is_finite() && d.abs() <= limit).then_some(d)
}

impl Attributes {
    /// Takes one resource (`/o/0/r`) or resource instance (`/o/0/r/ri`)
    /// value into the attributes, returning what changed (derived
    /// attributes included).
    ///
    /// Read, from instance 0 only: /3/0/0, 1, 2, 3, 17, 18, 19 (strings),
    /// /3/0/6 and /3/0/7 (power sources and their voltages, multi-instance),
    /// /3/0/9 (battery, 0..=100), /4/0/0 (bearer), /4/0/1 (available
    /// bearers, multi-instance), /4/0/2, 3, 8, 9, 10 (signal, link quality,
    /// cell id, SMNC, SMCC), /5/0/8 (protocols, multi-instance), /5/0/9
    /// (delivery, 0..=2), /6/0/0 and /6/0/1 (latitude, longitude). Integers
    /// may be `Integer` or `UnsignedInteger`; a coordinate may also be a
    /// decimal `String` (LwM2M 1.0). Other paths, values of the wrong type
    /// and values out of range are ignored.
    ///
    /// A multi-instance resource given at resource level with one value
    /// becomes that single instance 0. Region and roaming are derived
    /// without fleet context (no regions, no fleet home networks): use
    /// [`Attributes::apply_in`] for that.
    pub fn apply(&mut self, path: &Path, value: &Value) -> Changed {
        self.apply_in(path, value, &mut FleetContext::default())
    }

    /// As [`Attributes::apply`], deriving with the fleet's context.
    pub fn apply_in(&mut self, path: &Path, value: &Value, cx: &mut FleetContext<'_>) -> Changed {
        let Some((res, instance)) = target(path) else {
            return Changed::NONE;
        };
        let before = self.derived();
        let d = self.detail_mut();
        let mut changed = match (res.is_multi(), instance) {
            (false, None) => d.set_single(res, value, cx),
            (false, Some(_)) => Changed::NONE,
            (true, None) => d.set_multi(res, &[(0, value)]),
            (true, Some(ri)) => d.set_instance(res, ri, Some(value)),
        };
        self.trim_detail();
        changed |= self.derived_changes(before);
        changed | self.rederive_after(changed, cx)
    }

    /// Takes a multi-instance resource (`/o/0/r`) as a whole, replacing the
    /// instances known before. Entries of the wrong type are skipped; past
    /// [`MAX_INSTANCES`] the rest are ignored. For a single-instance resource,
    /// exactly one entry is taken as its value.
    pub fn apply_multi(&mut self, path: &Path, instances: &[(u16, Value)]) -> Changed {
        self.apply_multi_in(path, instances, &mut FleetContext::default())
    }

    /// As [`Attributes::apply_multi`], deriving with the fleet's context.
    pub fn apply_multi_in(
        &mut self,
        path: &Path,
        instances: &[(u16, Value)],
        cx: &mut FleetContext<'_>,
    ) -> Changed {
        let Some((res, None)) = target(path) else {
            return Changed::NONE;
        };
        let before = self.derived();
        let d = self.detail_mut();
        let mut changed = if res.is_multi() {
            let refs: Vec<(u16, &Value)> = instances
                .iter()
                .take(MAX_INSTANCES)
                .map(|(i, v)| (*i, v))
                .collect();
            d.set_multi(res, &refs)
        } else if let [(_, v)] = instances {
            d.set_single(res, v, cx)
        } else {
            Changed::NONE
        };
        self.trim_detail();
        changed |= self.derived_changes(before);
        changed | self.rederive_after(changed, cx)
    }

    /// Forgets what was read from resources under `path` (an object, an
    /// instance, a resource or a resource instance that was deleted or that
    /// the device no longer reports).
    pub fn forget(&mut self, path: &Path) -> Changed {
        self.forget_in(path, &mut FleetContext::default())
    }

    /// As [`Attributes::forget`], deriving with the fleet's context.
    pub fn forget_in(&mut self, path: &Path, cx: &mut FleetContext<'_>) -> Changed {
        let before = self.derived();
        let Some(d) = self.detail.as_deref_mut() else {
            return Changed::NONE;
        };
        let mut changed = Changed::NONE;
        if let Some((res, Some(ri))) = target(path) {
            if res.is_multi() {
                changed |= d.set_instance(res, ri, None);
            }
        } else {
            let ids = path.ids();
            for &(o, r, res) in TRACKED {
                let under = match ids {
                    [] => true,
                    [po] => *po == o,
                    [po, 0] => *po == o,
                    [po, 0, pr] => *po == o && *pr == r,
                    _ => false,
                };
                if under {
                    changed |= d.clear(res);
                }
            }
        }
        self.trim_detail();
        changed |= self.derived_changes(before);
        changed | self.rederive_after(changed, cx)
    }

    /// Region follows the location, roaming the serving network.
    fn rederive_after(&mut self, changed: Changed, cx: &FleetContext<'_>) -> Changed {
        let mut more = Changed::NONE;
        if changed.contains(Attr::Lat) || changed.contains(Attr::Lon) {
            more |= self.rederive_region(cx);
        }
        if changed.contains(Attr::Mcc) || changed.contains(Attr::Mnc) {
            more |= self.rederive_roaming(cx);
        }
        more
    }
}

/// What a device reports, field by field; the callers derive and trim.
impl Detail {
    fn set_single(&mut self, res: Res, v: &Value, cx: &mut FleetContext<'_>) -> Changed {
        let c = Changed::NONE;
        match res {
            Res::Manufacturer => match text(v) {
                Some(s) => c.with_if(
                    Attr::Manufacturer,
                    set_shared(&mut self.manufacturer, Some(s), cx),
                ),
                None => c,
            },
            Res::Model => match text(v) {
                Some(s) => c.with_if(Attr::Model, set_shared(&mut self.model, Some(s), cx)),
                None => c,
            },
            Res::Serial => match text(v) {
                Some(s) => {
                    let moved = self.serial.as_deref() != Some(s);
                    if moved {
                        self.serial = Some(s.into());
                    }
                    c.with_if(Attr::Serial, moved)
                }
                None => c,
            },
            Res::Firmware => match text(v) {
                Some(s) => c.with_if(Attr::Firmware, set_shared(&mut self.firmware, Some(s), cx)),
                None => c,
            },
            Res::Hardware => match text(v) {
                Some(s) => c.with_if(Attr::Hardware, set_shared(&mut self.hardware, Some(s), cx)),
                None => c,
            },
            Res::Software => match text(v) {
                Some(s) => c.with_if(Attr::Software, set_shared(&mut self.software, Some(s), cx)),
                None => c,
            },
            Res::DeviceType => match text(v) {
                Some(s) => c.with_if(
                    Attr::DeviceType,
                    set_shared(&mut self.device_type, Some(s), cx),
                ),
                None => c,
            },
            Res::Battery => match small::<u8>(v).filter(|b| *b <= 100) {
                Some(b) => c.with_if(Attr::Battery, replace(&mut self.battery, Some(b))),
                None => c,
            },
            Res::Bearer => match small::<u8>(v) {
                Some(b) => c.with_if(Attr::BearerCode, replace(&mut self.bearer_code, Some(b))),
                None => c,
            },
            Res::Signal => match small::<i32>(v) {
                Some(s) => c.with_if(Attr::Signal, replace(&mut self.signal_dbm, Some(s))),
                None => c,
            },
            Res::LinkQuality => match small::<i32>(v) {
                Some(q) => c.with_if(Attr::LinkQuality, replace(&mut self.link_quality, Some(q))),
                None => c,
            },
            Res::CellId => match int(v) {
                Some(id) => c.with_if(Attr::CellId, replace(&mut self.cell_id, Some(id))),
                None => c,
            },
            Res::Smnc => match small::<u16>(v).filter(|m| *m < 1000) {
                Some(m) => c.with_if(Attr::Mnc, replace(&mut self.mnc, Some(m))),
                None => c,
            },
            Res::Smcc => match small::<u16>(v).filter(|m| *m < 1000) {
                Some(m) => c.with_if(Attr::Mcc, replace(&mut self.mcc, Some(m))),
                None => c,
            },
            Res::Delivery => match small::<u8>(v).filter(|d| *d <= 2) {
                Some(d) => c.with_if(Attr::Delivery, replace(&mut self.delivery, Some(d))),
                None => c,
            },
            Res::Lat => match degrees(v, 90.0) {
                Some(d) => c.with_if(Attr::Lat, replace(&mut self.lat, Some(d))),
                None => c,
            },
            Res::Lon => match degrees(v, 180.0) {
                Some(d) => c.with_if(Attr::Lon, replace(&mut self.lon, Some(d))),
                None => c,
            },
            Res::PowerSource | Res::PowerVoltage | Res::AvailableBearers | Res::Protocols => c,
        }
    }

    fn clear(&mut self, res: Res) -> Changed {
        let c = Changed::NONE;
        match res {
            Res::Manufacturer => {
                c.with_if(Attr::Manufacturer, replace(&mut self.manufacturer, None))
            }
            Res::Model => c.with_if(Attr::Model, replace(&mut self.model, None)),
            Res::Serial => c.with_if(Attr::Serial, replace(&mut self.serial, None)),
            Res::Firmware => c.with_if(Attr::Firmware, replace(&mut self.firmware, None)),
            Res::Hardware => c.with_if(Attr::Hardware, replace(&mut self.hardware, None)),
            Res::Software => c.with_if(Attr::Software, replace(&mut self.software, None)),
            Res::DeviceType => c.with_if(Attr::DeviceType, replace(&mut self.device_type, None)),
            Res::Battery => c.with_if(Attr::Battery, replace(&mut self.battery, None)),
            Res::Bearer => c.with_if(Attr::BearerCode, replace(&mut self.bearer_code, None)),
            Res::Signal => c.with_if(Attr::Signal, replace(&mut self.signal_dbm, None)),
            Res::LinkQuality => c.with_if(Attr::LinkQuality, replace(&mut self.link_quality, None)),
            Res::CellId => c.with_if(Attr::CellId, replace(&mut self.cell_id, None)),
            Res::Smnc => c.with_if(Attr::Mnc, replace(&mut self.mnc, None)),
            Res::Smcc => c.with_if(Attr::Mcc, replace(&mut self.mcc, None)),
            Res::Delivery => c.with_if(Attr::Delivery, replace(&mut self.delivery, None)),
            Res::Lat => c.with_if(Attr::Lat, replace(&mut self.lat, None)),
            Res::Lon => c.with_if(Attr::Lon, replace(&mut self.lon, None)),
            Res::PowerSource | Res::PowerVoltage | Res::AvailableBearers | Res::Protocols => {
                self.set_multi(res, &[])
            }
        }
    }

    /// Replaces all instances of a multi-instance resource.
    fn set_multi(&mut self, res: Res, instances: &[(u16, &Value)]) -> Changed {
        let c = Changed::NONE;
        match res {
            Res::Protocols => c.with_if(
                Attr::Protocols,
                replace_codes(&mut self.protocols, instances),
            ),
            Res::AvailableBearers => c.with_if(
                Attr::AvailableBearers,
                replace_codes(&mut self.available_bearers, instances),
            ),
            Res::PowerSource | Res::PowerVoltage => {
                let mut list: Vec<PowerSource> = self.power_sources.to_vec();
                for p in &mut list {
                    if res == Res::PowerSource {
                        p.source = None;
                    } else {
                        p.voltage_mv = None;
                    }
                }
                for (ri, v) in instances {
                    set_power(&mut list, res, *ri, Some(*v));
                }
                list.retain(|p| p.source.is_some() || p.voltage_mv.is_some());
                list.sort_by_key(|p| p.instance);
                list.truncate(MAX_INSTANCES);
                let moved = *list != *self.power_sources;
                if moved {
                    self.power_sources = list.into_boxed_slice();
                }
                c.with_if(Attr::PowerSources, moved)
            }
            _ => c,
        }
    }

    /// Sets (`Some`) or removes (`None`) one instance of a multi-instance
    /// resource.
    fn set_instance(&mut self, res: Res, ri: u16, v: Option<&Value>) -> Changed {
        let c = Changed::NONE;
        match res {
            Res::Protocols => c.with_if(Attr::Protocols, set_code(&mut self.protocols, ri, v)),
            Res::AvailableBearers => c.with_if(
                Attr::AvailableBearers,
                set_code(&mut self.available_bearers, ri, v),
            ),
            Res::PowerSource | Res::PowerVoltage => {
                let mut list = self.power_sources.to_vec();
                let known = list.iter().any(|p| p.instance == ri);
                if !known && list.len() >= MAX_INSTANCES {
                    return c;
                }
                set_power(&mut list, res, ri, v);
                list.retain(|p| p.source.is_some() || p.voltage_mv.is_some());
                list.sort_by_key(|p| p.instance);
                let moved = *list != *self.power_sources;
                if moved {
                    self.power_sources = list.into_boxed_slice();
                }
                c.with_if(Attr::PowerSources, moved)
            }
            _ => c,
        }
    }
}

/// Sets the source type or the voltage of one power source instance;
/// values of the wrong type leave it as it was.
fn set_power(list: &mut Vec<PowerSource>, res: Res, ri: u16, v: Option<&Value>) {
    let slot = match list.iter().position(|p| p.instance == ri) {
        Some(i) => i,
        None => {
            list.push(PowerSource {
                instance: ri,
                source: None,
                voltage_mv: None,
            });
            list.len() - 1
        }
    };
    let p = &mut list[slot];
    match (res, v) {
        (Res::PowerSource, None) => p.source = None,
        (Res::PowerSource, Some(v)) => {
            if let Some(s) = small::<u8>(v) {
                p.source = Some(s);
            }
        }
        (_, None) => p.voltage_mv = None,
        (_, Some(v)) => {
            if let Some(mv) = int(v) {
                p.voltage_mv = Some(mv);
            }
        }
    }
}

fn replace_codes(slot: &mut Box<[(u16, u8)]>, instances: &[(u16, &Value)]) -> bool {
    let mut list: Vec<(u16, u8)> = instances
        .iter()
        .filter_map(|(ri, v)| small::<u8>(v).map(|c| (*ri, c)))
        .collect();
    list.sort_by_key(|(ri, _)| *ri);
    list.dedup_by_key(|(ri, _)| *ri);
    list.truncate(MAX_INSTANCES);
    if *list == **slot {
        return false;
    }
    *slot = list.into_boxed_slice();
    true
}

fn set_code(slot: &mut Box<[(u16, u8)]>, ri: u16, v: Option<&Value>) -> bool {
    let mut list = slot.to_vec();
    let at = list.binary_search_by_key(&ri, |(i, _)| *i);
    match (v, at) {
        (None, Ok(i)) => {
            list.remove(i);
        }
        (None, Err(_)) => return false,
        (Some(v), at) => {
            let Some(code) = small::<u8>(v) else {
                return false;
            };
            match at {
                Ok(i) => list[i].1 = code,
                Err(i) if list.len() < MAX_INSTANCES => list.insert(i, (ri, code)),
                Err(_) => return false,
            }
        }
    }
    if *list == **slot {
        return false;
    }
    *slot = list.into_boxed_slice();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{BearerKind, HomeNetwork};
    use crate::regions::Regions;

    fn p(s: &str) -> Path {
        s.parse().unwrap()
    }
    fn s(v: &str) -> Value {
        Value::String(v.into())
    }
    fn names(c: Changed) -> Vec<&'static str> {
        c.names().collect()
    }

    #[test]
    fn device_object_strings() {
        let mut a = Attributes::new("d").unwrap();
        assert_eq!(
            names(a.apply(&p("/3/0/0"), &s("Quectel"))),
            ["manufacturer"]
        );
        assert_eq!(names(a.apply(&p("/3/0/1"), &s("BG95"))), ["model"]);
        assert_eq!(names(a.apply(&p("/3/0/2"), &s("SN1"))), ["serial"]);
        assert_eq!(names(a.apply(&p("/3/0/3"), &s("1.2.3"))), ["firmware"]);
        assert_eq!(
            names(a.apply(&p("/3/0/17"), &s("tracker"))),
            ["device_type"]
        );
        assert_eq!(names(a.apply(&p("/3/0/18"), &s("rev B"))), ["hardware"]);
        assert_eq!(names(a.apply(&p("/3/0/19"), &s("app 4"))), ["software"]);
        assert_eq!(a.apply(&p("/3/0/1"), &s("BG95")), Changed::NONE);
        assert_eq!(
            (a.manufacturer(), a.model(), a.serial(), a.firmware()),
            (Some("Quectel"), Some("BG95"), Some("SN1"), Some("1.2.3"))
        );
        assert_eq!(
            (a.device_type(), a.hardware(), a.software()),
            (Some("tracker"), Some("rev B"), Some("app 4"))
        );
        let long = "é".repeat(MAX_DEVICE_STRING);
        a.apply(&p("/3/0/1"), &s(&long));
        assert!(a.model().unwrap().len() <= MAX_DEVICE_STRING);
    }

    #[test]
    fn wrong_types_untracked_paths_and_other_instances_are_ignored() {
        let mut a = Attributes::new("d").unwrap();
        let before = a.clone();
        for (path, v) in [
            ("/3/0/1", Value::Integer(5)),
            ("/3/0/9", s("50")),
            ("/3/0/9", Value::Integer(101)),
            ("/3/0/9", Value::Integer(-1)),
            ("/4/0/0", Value::Integer(300)),
            ("/4/0/2", Value::Integer(i64::MAX)),
            ("/4/0/10", Value::Integer(1000)),
            ("/5/0/9", Value::Integer(3)),
            ("/6/0/0", Value::Float(f64::NAN)),
            ("/6/0/0", Value::Float(91.0)),
            ("/6/0/1", s("east")),
            ("/3/1/1", s("other instance")),
            ("/3/0/1/0", s("instance of a single resource")),
            ("/3/0/5", Value::Integer(1)),
            ("/3", s("object")),
            ("/", s("root")),
            ("/3303/0/5700", Value::Float(21.5)),
            ("/3/0/9", Value::UnsignedInteger(u64::MAX)),
            ("/3/0/6/0", s("mains")),
            ("/5/0/8/0", Value::Boolean(true)),
        ] {
            assert_eq!(a.apply(&p(path), &v), Changed::NONE, "{path} {v:?}");
        }
        assert_eq!(a, before);
    }

    #[test]
    fn numbers_and_bearer_kind() {
        let mut a = Attributes::new("d").unwrap();
        assert_eq!(
            names(a.apply(&p("/3/0/9"), &Value::UnsignedInteger(42))),
            ["battery"]
        );
        assert_eq!(a.battery(), Some(42));
        assert_eq!(
            names(a.apply(&p("/4/0/0"), &Value::Integer(6))),
            ["bearer", "bearer_code", "has_wifi"]
        );
        assert_eq!(a.bearer(), Some(BearerKind::Cellular));
        assert_eq!(a.has_wifi(), Some(false));
        // Still cellular: only the code moved.
        assert_eq!(
            names(a.apply(&p("/4/0/0"), &Value::Integer(7))),
            ["bearer_code"]
        );
        assert_eq!(
            names(a.apply(&p("/4/0/0"), &Value::Integer(21))),
            ["bearer", "bearer_code", "has_wifi"]
        );
        assert_eq!(a.has_wifi(), Some(true));
        assert_eq!(
            names(a.apply(&p("/4/0/2"), &Value::Integer(-97))),
            ["signal"]
        );
        assert_eq!(
            names(a.apply(&p("/4/0/3"), &Value::Integer(3))),
            ["link_quality"]
        );
        assert_eq!(
            names(a.apply(&p("/4/0/8"), &Value::Integer(0x1A2B3C))),
            ["cell_id"]
        );
        assert_eq!(
            names(a.apply(&p("/5/0/9"), &Value::Integer(2))),
            ["delivery"]
        );
        assert_eq!(
            (a.signal_dbm(), a.link_quality(), a.cell_id(), a.delivery()),
            (Some(-97), Some(3), Some(0x1A2B3C), Some(2))
        );
    }

    #[test]
    fn multi_instance_resources() {
        let mut a = Attributes::new("d").unwrap();
        let c = a.apply_multi(
            &p("/4/0/1"),
            &[
                (0, Value::Integer(6)),
                (1, s("junk")),
                (2, Value::Integer(21)),
            ],
        );
        assert_eq!(names(c), ["available_bearers", "has_wifi"]);
        assert_eq!(a.available_bearers(), [6, 21]);
        assert_eq!(a.has_wifi(), Some(true));
        // One instance at a time.
        assert_eq!(
            names(a.apply(&p("/4/0/1/2"), &Value::Integer(41))),
            ["available_bearers", "has_wifi"]
        );
        assert_eq!(a.has_wifi(), Some(false));
        assert_eq!(a.apply(&p("/4/0/1/2"), &Value::Integer(41)), Changed::NONE);
        assert_eq!(names(a.forget(&p("/4/0/1/0"))), ["available_bearers"]);
        assert_eq!(a.available_bearers(), [41]);

        a.apply_multi(
            &p("/5/0/8"),
            &[
                (3, Value::Integer(1)),
                (0, Value::Integer(0)),
                (1, Value::Integer(1)),
            ],
        );
        assert_eq!(a.protocols(), [0, 1]);
        // At resource level a single value is the one instance.
        assert_eq!(
            names(a.apply(&p("/5/0/8"), &Value::Integer(3))),
            ["protocols"]
        );
        assert_eq!(a.protocols(), [3]);

        let many: Vec<(u16, Value)> = (0..100)
            .map(|i| (i, Value::Integer(i64::from(i))))
            .collect();
        a.apply_multi(&p("/5/0/8"), &many);
        assert_eq!(a.protocols().len(), MAX_INSTANCES);
        for i in 100..200 {
            a.apply(&p(&format!("/5/0/8/{i}")), &Value::Integer(1));
        }
        assert_eq!(a.detail().protocols.len(), MAX_INSTANCES);

        // Single resources through apply_multi: exactly one entry.
        assert_eq!(
            names(a.apply_multi(&p("/3/0/9"), &[(0, Value::Integer(10))])),
            ["battery"]
        );
        assert_eq!(
            a.apply_multi(
                &p("/3/0/9"),
                &[(0, Value::Integer(11)), (1, Value::Integer(12))]
            ),
            Changed::NONE
        );
    }

    #[test]
    fn power_sources_and_on_mains() {
        let mut a = Attributes::new("d").unwrap();
        // Internal battery and USB; voltages unknown: USB counts as available.
        let c = a.apply_multi(
            &p("/3/0/6"),
            &[(0, Value::Integer(1)), (1, Value::Integer(5))],
        );
        assert_eq!(names(c), ["power_sources", "on_mains"]);
        assert_eq!(a.on_mains(), Some(true));
        // USB reports 0 mV: unplugged.
        assert_eq!(
            names(a.apply(&p("/3/0/7/1"), &Value::Integer(0))),
            ["power_sources", "on_mains"]
        );
        assert_eq!(a.on_mains(), Some(false));
        assert_eq!(
            names(a.apply(&p("/3/0/7/1"), &Value::Integer(5000))),
            ["power_sources", "on_mains"]
        );
        assert_eq!(a.on_mains(), Some(true));
        // A voltage list replaces all voltages, keeping the sources.
        a.apply_multi(&p("/3/0/7"), &[(0, Value::Integer(3700))]);
        assert_eq!(
            a.power_sources(),
            [
                PowerSource {
                    instance: 0,
                    source: Some(1),
                    voltage_mv: Some(3700)
                },
                PowerSource {
                    instance: 1,
                    source: Some(5),
                    voltage_mv: None
                }
            ]
        );
        // Battery only.
        a.apply_multi(&p("/3/0/6"), &[(0, Value::Integer(1))]);
        assert_eq!(a.on_mains(), Some(false));
        assert_eq!(a.power_sources().len(), 1);
        a.forget(&p("/3/0/6"));
        assert_eq!(a.on_mains(), None);
        a.forget(&p("/3/0/7"));
        assert!(a.power_sources().is_empty());
        // DC, PoE and AC mains count too; solar does not.
        for (code, mains) in [(0, true), (4, true), (6, true), (7, false), (3, false)] {
            a.apply(&p("/3/0/6"), &Value::Integer(code));
            assert_eq!(a.on_mains(), Some(mains), "{code}");
        }
    }

    #[test]
    fn location_sets_region_and_network_sets_roaming() {
        let regions = Regions::from_json(
            r#"[{"name": "eu", "bbox": {"min_lat": 35, "max_lat": 70, "min_lon": -10, "max_lon": 30}}]"#,
        )
        .unwrap();
        let homes: [HomeNetwork; 1] = ["262-01".parse().unwrap()];
        let mut cx = FleetContext {
            regions: Some(&regions),
            home_networks: &homes,
            interner: None,
        };
        let mut a = Attributes::new("d").unwrap();
        assert_eq!(
            names(a.apply_in(&p("/6/0/0"), &Value::Float(52.5), &mut cx)),
            ["lat"]
        );
        assert_eq!(
            names(a.apply_in(&p("/6/0/1"), &s("13.4"), &mut cx)),
            ["lon", "region"]
        );
        assert_eq!(a.region(), Some("eu"));
        assert_eq!(
            names(a.apply_in(&p("/6/0/1"), &Value::Integer(-74), &mut cx)),
            ["lon", "region"]
        );
        assert_eq!(a.region(), None);

        assert_eq!(
            names(a.apply_in(&p("/4/0/10"), &Value::Integer(262), &mut cx)),
            ["mcc"]
        );
        assert!(!a.roaming(), "visited network not fully known yet");
        assert_eq!(
            names(a.apply_in(&p("/4/0/9"), &Value::Integer(1), &mut cx)),
            ["mnc"]
        );
        assert!(!a.roaming());
        assert_eq!(
            names(a.apply_in(&p("/4/0/10"), &Value::Integer(208), &mut cx)),
            ["mcc", "roaming"]
        );
        assert!(a.roaming());
        assert_eq!(
            names(a.forget_in(&p("/4"), &mut cx)),
            ["mcc", "mnc", "roaming"]
        );
        assert!(!a.roaming());
    }

    #[test]
    fn forgetting_an_object_clears_its_attributes() {
        let mut a = Attributes::new("d").unwrap();
        a.apply(&p("/6/0/0"), &Value::Float(1.0));
        a.apply(&p("/6/0/1"), &Value::Float(2.0));
        a.apply(&p("/3/0/1"), &s("m"));
        assert_eq!(names(a.forget(&p("/6/0"))), ["lat", "lon"]);
        assert_eq!(a.forget(&p("/6")), Changed::NONE);
        assert_eq!(a.forget(&p("/6/1")), Changed::NONE);
        assert_eq!(names(a.forget(&p("/"))), ["model"]);
    }
}
