//! The simulated device: the initial values of objects 0, 1, 3, 4 and 6,
//! and sensors that drift (battery, clock, radio, position). Object 5 is
//! [`crate::firmware`]'s.
//!
//! Values are realistic for a battery-powered NB-IoT tracker so that a
//! server's UI and tests see plausible data, not zeros.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lwm2m_objects::{Path, Value};

use crate::store::{ObjectStore, OpError};

/// Something the device did on its own that the client must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceNote {
    /// The firmware update finished; the new version is in /3/0/3.
    FirmwareUpdated(String),
}

/// Parameters of the simulated hardware.
#[derive(Debug, Clone)]
pub struct DeviceProfile {
    pub manufacturer: String,
    pub model: String,
    pub firmware_version: String,
    /// How long installing a downloaded firmware takes (State Updating),
    /// before the device reboots.
    pub update_time: Duration,
}

impl Default for DeviceProfile {
    fn default() -> Self {
        DeviceProfile {
            manufacturer: "Lwm2mSim Devices".into(),
            model: "NB-TRACK-1".into(),
            firmware_version: "1.0.0".into(),
            update_time: Duration::from_secs(1),
        }
    }
}

/// A small deterministic random generator (xorshift64*): the simulation must
/// not need an OS source, and a seed from the endpoint name makes two runs of
/// one device alike.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1].
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// The device's own state next to the object tree.
#[derive(Debug, Clone)]
pub struct Device {
    profile: DeviceProfile,
    rng: Rng,
    ticks: u64,
    heading: f64,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn p(ids: &[u16]) -> Path {
    Path::from_ids(ids).unwrap_or(Path::ROOT)
}

impl Device {
    pub fn new(profile: DeviceProfile, endpoint: &str) -> Device {
        let seed = endpoint.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) | 1;
        Device {
            profile,
            rng: Rng(seed),
            ticks: 0,
            heading: 0.7,
        }
    }

    /// Fills objects 0, 1, 3, 4, 6 of `store` with their initial instances,
    /// and adds the empty instance /5/0 that [`crate::firmware`] fills.
    pub fn populate(
        &mut self,
        store: &mut ObjectStore,
        server_uri: &str,
        endpoint: &str,
        lifetime: u32,
        short_server_id: u16,
        binding: &str,
    ) -> Result<(), OpError> {
        let serial = format!("SN{:010}", self.rng.next() % 10_000_000_000);
        let now = unix_now();
        for (o, i) in [(0, 0), (1, 0), (3, 0), (4, 0), (5, 0), (6, 0)] {
            store.add_instance(o, i)?;
        }
        let single: Vec<(&[u16], Value)> = vec![
            // Security: one NoSec account for the server (not readable by DM).
            (&[0, 0, 0], Value::String(server_uri.into())),
            (&[0, 0, 1], Value::Boolean(false)),
            (&[0, 0, 2], Value::Integer(3)),
            (&[0, 0, 3], Value::Opaque(Vec::new())),
            (&[0, 0, 4], Value::Opaque(Vec::new())),
            (&[0, 0, 5], Value::Opaque(Vec::new())),
            (&[0, 0, 10], Value::Integer(i64::from(short_server_id))),
            // Server.
            (&[1, 0, 0], Value::Integer(i64::from(short_server_id))),
            (&[1, 0, 1], Value::Integer(i64::from(lifetime))),
            (&[1, 0, 2], Value::Integer(0)),
            (&[1, 0, 3], Value::Integer(0)),
            (&[1, 0, 6], Value::Boolean(true)),
            (&[1, 0, 7], Value::String(binding.into())),
            // Device.
            (&[3, 0, 0], Value::String(self.profile.manufacturer.clone())),
            (&[3, 0, 1], Value::String(self.profile.model.clone())),
            (&[3, 0, 2], Value::String(serial)),
            (
                &[3, 0, 3],
                Value::String(self.profile.firmware_version.clone()),
            ),
            (&[3, 0, 9], Value::Integer(87)),
            (&[3, 0, 10], Value::Integer(412)),
            (&[3, 0, 13], Value::Time(now)),
            (&[3, 0, 14], Value::String("+01:00".into())),
            (&[3, 0, 15], Value::String("Europe/Berlin".into())),
            (&[3, 0, 16], Value::String("UQ".into())),
            (&[3, 0, 17], Value::String(format!("tracker ({endpoint})"))),
            (&[3, 0, 18], Value::String("HW-B2".into())),
            (&[3, 0, 19], Value::String("lwm2m-client-sim 0.1".into())),
            (&[3, 0, 20], Value::Integer(0)),
            (&[3, 0, 21], Value::Integer(512)),
            // Connectivity Monitoring: NB-IoT on a German network.
            (&[4, 0, 0], Value::Integer(7)),
            (&[4, 0, 2], Value::Integer(-93)),
            (&[4, 0, 3], Value::Integer(72)),
            (&[4, 0, 6], Value::Integer(3)),
            (&[4, 0, 8], Value::Integer(0x01A2_B3C4)),
            (&[4, 0, 9], Value::Integer(1)),
            (&[4, 0, 10], Value::Integer(262)),
            // Location: Berlin, walking pace.
            (&[6, 0, 0], Value::Float(52.520_008)),
            (&[6, 0, 1], Value::Float(13.404_954)),
            (&[6, 0, 2], Value::Float(34.0)),
            (&[6, 0, 3], Value::Float(12.5)),
            (&[6, 0, 5], Value::Time(now)),
            (&[6, 0, 6], Value::Float(1.4)),
        ];
        for (ids, v) in single {
            store.set(&p(ids), v)?;
        }
        let multi: Vec<(&[u16], Vec<Value>)> = vec![
            (&[3, 0, 6], vec![Value::Integer(1), Value::Integer(5)]),
            (&[3, 0, 7], vec![Value::Integer(3700), Value::Integer(5000)]),
            (&[3, 0, 8], vec![Value::Integer(25), Value::Integer(0)]),
            (&[3, 0, 11], vec![Value::Integer(0)]),
            (&[4, 0, 1], vec![Value::Integer(7), Value::Integer(6)]),
            (&[4, 0, 4], vec![Value::String("10.64.12.7".into())]),
            (&[4, 0, 7], vec![Value::String("iot.example".into())]),
        ];
        for (ids, vs) in multi {
            let instances: BTreeMap<u16, Value> = (0u16..).zip(vs).collect();
            store.set_multiple(&p(ids), instances)?;
        }
        Ok(())
    }

    /// Advances the sensors by one step of `dt`: battery drains, the clock
    /// runs, radio values wander, the position moves along a slowly turning
    /// heading.
    pub fn tick(&mut self, store: &mut ObjectStore, dt: Duration) -> Result<(), OpError> {
        self.ticks += 1;
        let now = unix_now();
        store.set(&p(&[3, 0, 13]), Value::Time(now))?;
        if self.ticks.is_multiple_of(10) {
            let battery = match store.value(&p(&[3, 0, 9])) {
                Some(Value::Integer(b)) => *b,
                _ => 100,
            };
            let next = if battery <= 5 { 100 } else { battery - 1 };
            store.set(&p(&[3, 0, 9]), Value::Integer(next))?;
            store.set(
                &p(&[3, 0, 20]),
                Value::Integer(if next < 15 { 4 } else { 0 }),
            )?;
        }
        let mem = 400 + (self.rng.next() % 40) as i64;
        store.set(&p(&[3, 0, 10]), Value::Integer(mem))?;
        let rssi = match store.value(&p(&[4, 0, 2])) {
            Some(Value::Integer(v)) => *v,
            _ => -93,
        };
        let rssi = (rssi + (self.rng.next() % 5) as i64 - 2).clamp(-120, -60);
        store.set(&p(&[4, 0, 2]), Value::Integer(rssi))?;
        store.set(
            &p(&[4, 0, 3]),
            Value::Integer(((rssi + 120) * 100 / 60).clamp(0, 100)),
        )?;
        let speed = 1.0 + 0.8 * self.rng.unit().abs();
        self.heading += 0.1 * self.rng.unit();
        let metres = speed * dt.as_secs_f64();
        let lat = match store.value(&p(&[6, 0, 0])) {
            Some(Value::Float(v)) => *v,
            _ => 52.52,
        };
        let lon = match store.value(&p(&[6, 0, 1])) {
            Some(Value::Float(v)) => *v,
            _ => 13.405,
        };
        let dlat = metres * self.heading.cos() / 111_320.0;
        let dlon = metres * self.heading.sin() / (111_320.0 * lat.to_radians().cos().max(0.01));
        store.set(&p(&[6, 0, 0]), Value::Float(lat + dlat))?;
        store.set(&p(&[6, 0, 1]), Value::Float(lon + dlon))?;
        store.set(&p(&[6, 0, 5]), Value::Time(now))?;
        store.set(&p(&[6, 0, 6]), Value::Float((speed * 10.0).round() / 10.0))?;
        Ok(())
    }
}
