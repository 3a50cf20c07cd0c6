//! The JSON form of attributes, for the API and for storage.
//!
//! Keys are the attribute names filters use (`firmware`, `battery`, ...);
//! times are Unix milliseconds, the signal dBm, the voltages mV. Unknown
//! attributes are left out. Derived attributes are written for readers
//! (`bearer`, `has_wifi`, `on_mains`) and recomputed, not read, when parsing;
//! `region` and `roaming` depend on the fleet and are read as stored, to be
//! refreshed with [`Attributes::rederive`]. What is read is held to the same
//! bounds as what devices and operators send; keys this version does not
//! know are ignored.
//!
//! Multi-instance lists (`protocols`, `available_bearers`) are written as
//! lists of codes, so their resource instance ids are not kept: read back,
//! they are numbered from 0. Power sources keep theirs, as their voltages
//! pair with them.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::external::{check_external_string, check_label, MAX_LABELS};
use super::{
    truncate, Attributes, BearerKind, HomeNetwork, PowerSource, MAX_DEVICE_STRING, MAX_INSTANCES,
    MAX_OBJECTS,
};
use crate::intern::Interner;
use crate::regions::valid_point;

#[derive(Serialize)]
struct Out<'a> {
    endpoint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    manufacturer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    firmware: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hardware: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    software: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lwm2m_version: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty", serialize_with = "as_map")]
    objects: Vec<(u16, &'a str)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    protocols: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    online: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    awake: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_mode: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_wake: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bearer: Option<BearerKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bearer_code: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    available_bearers: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    has_wifi: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_quality: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cell_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcc: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mnc: Option<u16>,
    roaming: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    home_network: Option<HomeNetwork>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lat: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    battery: Option<u8>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    power_sources: &'a [PowerSource],
    #[serde(skip_serializing_if = "Option::is_none")]
    on_mains: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    billing: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_plan: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty", serialize_with = "as_map")]
    labels: Vec<(&'a str, &'a str)>,
}

/// Pairs written as a JSON object.
#[allow(clippy::ptr_arg)] // `serialize_with` hands over the field as it is declared
fn as_map<S: Serializer, K: Serialize, V: Serialize>(
    pairs: &Vec<(K, V)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let detail = self.detail();
        let out = Out {
            endpoint: self.endpoint(),
            manufacturer: self.manufacturer(),
            model: self.model(),
            serial: self.serial(),
            firmware: self.firmware(),
            hardware: self.hardware(),
            software: self.software(),
            device_type: self.device_type(),
            lwm2m_version: self.lwm2m_version(),
            objects: self.objects().collect(),
            protocols: self.protocols(),
            delivery: detail.delivery,
            online: self.online,
            awake: self.awake,
            queue_mode: self.queue_mode,
            next_wake: self.next_wake_unix_ms,
            last_seen: self.last_seen_unix_ms,
            bearer: self.bearer(),
            bearer_code: detail.bearer_code,
            available_bearers: self.available_bearers(),
            has_wifi: self.has_wifi(),
            signal: detail.signal_dbm,
            link_quality: detail.link_quality,
            cell_id: detail.cell_id,
            mcc: detail.mcc,
            mnc: detail.mnc,
            roaming: detail.roaming,
            home_network: detail.home_network,
            lat: detail.lat,
            lon: detail.lon,
            region: self.region(),
            battery: detail.battery,
            power_sources: &detail.power_sources,
            on_mains: self.on_mains(),
            billing: self.billing(),
            rate_plan: self.rate_plan(),
            labels: self.labels().collect(),
        };
        out.serialize(s)
    }
}

impl Serialize for PowerSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PowerSourceJson {
            instance: self.instance,
            source: self.source,
            voltage_mv: self.voltage_mv,
        }
        .serialize(s)
    }
}

#[derive(Serialize, Deserialize)]
struct PowerSourceJson {
    instance: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    voltage_mv: Option<i64>,
}

#[derive(Deserialize)]
struct In {
    endpoint: String,
    #[serde(default)]
    manufacturer: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    firmware: Option<String>,
    #[serde(default)]
    hardware: Option<String>,
    #[serde(default)]
    software: Option<String>,
    #[serde(default)]
    device_type: Option<String>,
    #[serde(default)]
    lwm2m_version: Option<String>,
    #[serde(default)]
    objects: BTreeMap<u16, String>,
    #[serde(default)]
    protocols: Vec<u8>,
    #[serde(default)]
    delivery: Option<u8>,
    #[serde(default)]
    online: Option<bool>,
    #[serde(default)]
    awake: Option<bool>,
    #[serde(default)]
    queue_mode: Option<bool>,
    #[serde(default)]
    next_wake: Option<i64>,
    #[serde(default)]
    last_seen: Option<i64>,
    #[serde(default)]
    bearer_code: Option<u8>,
    #[serde(default)]
    available_bearers: Vec<u8>,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(default)]
    link_quality: Option<i32>,
    #[serde(default)]
    cell_id: Option<i64>,
    #[serde(default)]
    mcc: Option<u16>,
    #[serde(default)]
    mnc: Option<u16>,
    #[serde(default)]
    roaming: bool,
    #[serde(default)]
    home_network: Option<HomeNetwork>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    battery: Option<u8>,
    #[serde(default)]
    power_sources: Vec<PowerSourceJson>,
    #[serde(default)]
    billing: Option<String>,
    #[serde(default)]
    rate_plan: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn device_string(s: Option<String>) -> Option<std::sync::Arc<str>> {
    s.map(|s| truncate(&s, MAX_DEVICE_STRING).into())
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attributes, D::Error> {
        let i = In::deserialize(d)?;
        let mut a = Attributes::new(&i.endpoint).map_err(D::Error::custom)?;
        a.lwm2m_version = device_string(i.lwm2m_version);
        a.online = i.online;
        a.awake = i.awake;
        a.queue_mode = i.queue_mode;
        a.next_wake_unix_ms = i.next_wake;
        a.last_seen_unix_ms = i.last_seen;
        a.objects = i
            .objects
            .into_iter()
            .take(MAX_OBJECTS)
            .map(|(id, v)| (id, truncate(&v, MAX_DEVICE_STRING).into()))
            .collect();
        let detail = a.detail_mut();
        detail.manufacturer = device_string(i.manufacturer);
        detail.model = device_string(i.model);
        detail.serial = i.serial.map(|s| truncate(&s, MAX_DEVICE_STRING).into());
        detail.firmware = device_string(i.firmware);
        detail.hardware = device_string(i.hardware);
        detail.software = device_string(i.software);
        detail.device_type = device_string(i.device_type);
        let numbered = |codes: Vec<u8>| -> Box<[(u16, u8)]> {
            codes
                .into_iter()
                .take(MAX_INSTANCES)
                .zip(0u16..)
                .map(|(c, i)| (i, c))
                .collect()
        };
        detail.protocols = numbered(i.protocols);
        detail.delivery = i.delivery.filter(|d| *d <= 2);
        detail.bearer_code = i.bearer_code;
        detail.available_bearers = numbered(i.available_bearers);
        detail.signal_dbm = i.signal;
        detail.link_quality = i.link_quality;
        detail.cell_id = i.cell_id;
        detail.mcc = i.mcc.filter(|m| *m < 1000);
        detail.mnc = i.mnc.filter(|m| *m < 1000);
        detail.roaming = i.roaming;
        detail.home_network = i.home_network;
        match (i.lat, i.lon) {
            (Some(lat), Some(lon)) if valid_point(lat, lon) => {
                detail.lat = Some(lat);
                detail.lon = Some(lon);
            }
            (Some(lat), None) if valid_point(lat, 0.0) => detail.lat = Some(lat),
            (None, Some(lon)) if valid_point(0.0, lon) => detail.lon = Some(lon),
            _ => {}
        }
        detail.region = i
            .region
            .map(|r| truncate(&r, crate::regions::MAX_NAME_LEN).into());
        detail.battery = i.battery.filter(|b| *b <= 100);
        let mut power: Vec<PowerSource> = i
            .power_sources
            .into_iter()
            .take(MAX_INSTANCES)
            .map(|p| PowerSource {
                instance: p.instance,
                source: p.source,
                voltage_mv: p.voltage_mv,
            })
            .filter(|p| p.source.is_some() || p.voltage_mv.is_some())
            .collect();
        power.sort_by_key(|p| p.instance);
        power.dedup_by_key(|p| p.instance);
        detail.power_sources = power.into_boxed_slice();
        check_external_string("billing", i.billing.as_deref()).map_err(D::Error::custom)?;
        check_external_string("rate_plan", i.rate_plan.as_deref()).map_err(D::Error::custom)?;
        detail.billing = i.billing.map(Into::into);
        detail.rate_plan = i.rate_plan.map(Into::into);
        if i.labels.len() > MAX_LABELS {
            return Err(D::Error::custom(super::ExternalError::TooManyLabels));
        }
        for (k, v) in &i.labels {
            check_label(k, v).map_err(D::Error::custom)?;
        }
        detail.labels = i
            .labels
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
            .collect();
        a.trim_detail();
        Ok(a)
    }
}

impl Attributes {
    /// Moves the strings that repeat across the fleet into `interner`, for
    /// attributes read back from storage.
    pub fn share_strings(&mut self, interner: &mut Interner) {
        if let Some(v) = &mut self.lwm2m_version {
            *v = interner.intern(v);
        }
        if let Some(d) = self.detail.as_deref_mut() {
            for slot in [
                &mut d.manufacturer,
                &mut d.model,
                &mut d.firmware,
                &mut d.hardware,
                &mut d.software,
                &mut d.device_type,
                &mut d.billing,
                &mut d.rate_plan,
            ]
            .into_iter()
            .flatten()
            {
                *slot = interner.intern(slot);
            }
        }
        let list: Vec<(u16, std::sync::Arc<str>)> = self
            .objects
            .iter()
            .map(|(id, v)| (*id, interner.intern(v)))
            .collect();
        self.objects = interner.share_objects(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::FleetContext;
    use lwm2m_objects::Value;
    use std::sync::Arc;

    fn full() -> Attributes {
        let mut a = Attributes::new("urn:imei:490154203237518").unwrap();
        let p = |s: &str| s.parse().unwrap();
        for (path, v) in [
            ("/3/0/0", Value::String("Quectel".into())),
            ("/3/0/1", Value::String("BG95".into())),
            ("/3/0/2", Value::String("SN-7".into())),
            (
                "/3/0/3",
                Value::String("BG95M3LAR02A03_01.012.01.012".into()),
            ),
            ("/3/0/9", Value::Integer(77)),
            ("/4/0/0", Value::Integer(7)),
            ("/4/0/2", Value::Integer(-101)),
            ("/4/0/9", Value::Integer(1)),
            ("/4/0/10", Value::Integer(262)),
            ("/5/0/9", Value::Integer(0)),
            ("/6/0/0", Value::Float(52.52)),
            ("/6/0/1", Value::Float(13.405)),
        ] {
            a.apply(&p(path), &v);
        }
        a.apply_multi(
            &p("/3/0/6"),
            &[(0, Value::Integer(1)), (2, Value::Integer(5))],
        );
        a.apply(&p("/3/0/7/2"), &Value::Integer(5000));
        a.apply_multi(
            &p("/4/0/1"),
            &[(0, Value::Integer(7)), (1, Value::Integer(21))],
        );
        a.apply_multi(
            &p("/5/0/8"),
            &[(0, Value::Integer(0)), (1, Value::Integer(1))],
        );
        a.set_objects([(3, "1.1"), (5, "1.0"), (19, "1.0")]);
        a.set_lwm2m_version("1.1");
        a.set_online(true);
        a.set_queue_mode(true);
        a.set_last_seen(1_700_000_000_000);
        a.apply_external(
            &serde_json::from_str(
                r#"{"billing_state": "active", "home_network": "262-01", "labels": {"site": "hq"}}"#,
            )
            .unwrap(),
            &mut FleetContext::default(),
        )
        .unwrap();
        a
    }

    #[test]
    fn round_trip() {
        let a = full();
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["firmware"], "BG95M3LAR02A03_01.012.01.012");
        assert_eq!(json["bearer"], "cellular");
        assert_eq!(json["has_wifi"], true);
        assert_eq!(json["on_mains"], true);
        assert_eq!(json["objects"]["3"], "1.1");
        assert_eq!(json["labels"]["site"], "hq");
        assert_eq!(json["home_network"], "262-01");
        assert!(json.get("awake").is_none());
        let back: Attributes = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn minimal_and_invalid_input() {
        let a: Attributes = serde_json::from_str(r#"{"endpoint": "e", "future_key": 1}"#).unwrap();
        assert_eq!(a, Attributes::new("e").unwrap());
        for bad in [
            r#"{}"#,
            r#"{"endpoint": ""}"#,
            r#"{"endpoint": "e", "labels": {"": "v"}}"#,
            r#"{"endpoint": "e", "home_network": "x"}"#,
            r#"{"endpoint": "e", "battery": 300}"#,
        ] {
            assert!(serde_json::from_str::<Attributes>(bad).is_err(), "{bad}");
        }
        // Out-of-range values that fit their types are dropped, not kept.
        let a: Attributes = serde_json::from_str(
            r#"{"endpoint": "e", "battery": 200, "lat": 95.0, "delivery": 9}"#,
        )
        .unwrap();
        assert_eq!((a.battery(), a.lat(), a.delivery()), (None, None, None));
    }

    #[test]
    fn shared_strings_after_reading_back() {
        let json = serde_json::to_string(&full()).unwrap();
        let mut a: Attributes = serde_json::from_str(&json).unwrap();
        let mut b: Attributes = serde_json::from_str(&json).unwrap();
        let mut i = Interner::default();
        a.share_strings(&mut i);
        b.share_strings(&mut i);
        assert!(Arc::ptr_eq(
            a.detail().model.as_ref().unwrap(),
            b.detail().model.as_ref().unwrap()
        ));
        assert_eq!(a, b);
    }
}
