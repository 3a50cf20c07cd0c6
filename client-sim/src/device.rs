//! The simulated device: the initial values of objects 0, 1, 3, 4 and 6,
//! and sensors that drift (battery, clock, radio, position). Object 5 is
//! [`crate::firmware`]'s.
//!
//! Values are realistic for a battery-powered NB-IoT tracker so that a
//! server's UI and tests see plausible data, not zeros. A behaviour profile
//! ([`crate::profile`]) gives each device of a fleet values of its own
//! through [`DeviceProfile`]. Every value that changes is written to the
//! object store, which is what observations read: a changed battery level,
//! signal or position is notified like any other change.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lwm2m_objects::{Path, Value};

use crate::rng::Rng;
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
    /// /3/0/18: firmware packages may be restricted to hardware versions.
    pub hardware_version: String,
    /// How long installing a downloaded firmware takes (State Updating),
    /// before the device reboots.
    pub update_time: Duration,
    pub radio: Radio,
    pub position: Position,
    pub battery: Battery,
    /// /3/0/14 and /3/0/15.
    pub utc_offset: String,
    pub timezone: String,
    /// Seed of the device's own randomness (serial number, sensor walks);
    /// `None` derives it from the endpoint name, so that a device started
    /// by hand is the same device every time.
    pub seed: Option<u64>,
}

/// Connectivity Monitoring (object 4) as the device reports it.
#[derive(Debug, Clone)]
pub struct Radio {
    /// /4/0/0, a value of the object's bearer list (REG 4.xml): 0..20
    /// cellular (6 LTE-FDD, 7 NB-IoT, ...), 21..40 wireless (21 WLAN),
    /// 41..50 wireline.
    pub bearer: u8,
    /// /4/0/1.
    pub available: Vec<u8>,
    /// /4/0/2 at start, in dBm (RSRP for LTE, NRSRP for NB-IoT, RSSI
    /// otherwise).
    pub rssi_dbm: i64,
    /// The signal wanders by up to `wander_db` each step, within these.
    pub rssi_bounds: (i64, i64),
    pub wander_db: u32,
    /// /4/0/4.
    pub ip_address: String,
    /// The serving cell and network of a cellular bearer; `None` for the
    /// others, which have no cell, SMCC, SMNC or APN (object 4 defines them
    /// for cellular bearers only).
    pub cellular: Option<Cellular>,
}

/// What object 4 says of the serving cellular network. Object 4 has the
/// *serving* network's codes only (SMCC /4/0/10, SMNC /4/0/9), no home
/// network: a roaming device reports the network it visits, and telling it
/// roams means comparing that with the home network its operator knows.
#[derive(Debug, Clone)]
pub struct Cellular {
    /// /4/0/8 (28 bits in LTE).
    pub cell_id: u32,
    pub mcc: u16,
    pub mnc: u16,
    /// /4/0/7.
    pub apn: String,
}

/// Location (object 6) and how the device moves.
#[derive(Debug, Clone)]
pub struct Position {
    /// Where it is at start (/6/0/0, /6/0/1).
    pub latitude: f64,
    pub longitude: f64,
    /// /6/0/2, metres.
    pub altitude: f64,
    /// /6/0/3, the fix's uncertainty in metres.
    pub accuracy: f64,
    /// Each step's speed is drawn from this range (m/s); a device whose
    /// highest speed is 0 stays where it is and does not rewrite object 6.
    pub speed_mps: (f64, f64),
    /// A moving device turns back towards this centre (latitude, longitude)
    /// once it is farther than this many metres from it: its region.
    pub area: Option<(f64, f64, f64)>,
}

/// The battery (/3/0/9) and how fast it drains.
#[derive(Debug, Clone)]
pub struct Battery {
    /// Level at start, percent.
    pub level: i64,
    /// Percent per hour, continuously; at 0 the battery is replaced (back to
    /// 100). `None`: the old demo drain, 1 % every 10 steps, replaced at 5 %,
    /// which makes a device's battery visibly move within seconds.
    pub drain_pct_per_h: Option<f64>,
}

impl Default for DeviceProfile {
    fn default() -> Self {
        DeviceProfile {
            manufacturer: "Lwm2mSim Devices".into(),
            model: "NB-TRACK-1".into(),
            firmware_version: "1.0.0".into(),
            hardware_version: "HW-B2".into(),
            update_time: Duration::from_secs(1),
            radio: Radio::default(),
            position: Position::default(),
            battery: Battery {
                level: 87,
                drain_pct_per_h: None,
            },
            utc_offset: "+01:00".into(),
            timezone: "Europe/Berlin".into(),
            seed: None,
        }
    }
}

impl Default for Radio {
    /// NB-IoT on a German network.
    fn default() -> Self {
        Radio {
            bearer: 7,
            available: vec![7, 6],
            rssi_dbm: -93,
            rssi_bounds: (-120, -60),
            wander_db: 2,
            ip_address: "10.64.12.7".into(),
            cellular: Some(Cellular {
                cell_id: 0x01A2_B3C4,
                mcc: 262,
                mnc: 1,
                apn: "iot.example".into(),
            }),
        }
    }
}

impl Default for Position {
    /// Berlin, walking pace, anywhere.
    fn default() -> Self {
        Position {
            latitude: 52.520_008,
            longitude: 13.404_954,
            altitude: 34.0,
            accuracy: 12.5,
            speed_mps: (1.0, 1.8),
            area: None,
        }
    }
}

/// Link Quality (/4/0/3) for a signal strength, in the unit object 4 gives
/// the bearer: RSRQ in dB (-20..-3) for LTE, NB-IoT and NR, RxQual (0..7,
/// 0 best) for GSM, LQI (0..255) for IEEE 802.15.4, and for the others,
/// which the object leaves open, a percentage.
pub fn link_quality(bearer: u8, rssi_dbm: i64) -> i64 {
    match bearer {
        5..=9 => (-20 + (rssi_dbm + 140) * 17 / 96).clamp(-20, -3),
        0 => (7 - (rssi_dbm + 110) * 7 / 62).clamp(0, 7),
        23 => ((rssi_dbm + 100) * 255 / 70).clamp(0, 255),
        _ => ((rssi_dbm + 120) * 100 / 60).clamp(0, 100),
    }
}

/// Whether object 4 treats the bearer as cellular (cell id, SMCC, SMNC, APN).
pub fn is_cellular(bearer: u8) -> bool {
    bearer <= 20
}

/// Most sensor steps [`Device::catch_up`] simulates for one sleep.
pub const MAX_CATCH_UP_STEPS: u64 = 16;

/// The device's own state next to the object tree, as a parked device keeps it.
#[derive(Debug, Clone)]
pub(crate) struct DeviceMemory {
    rng: Rng,
    ticks: u64,
    heading: f64,
    battery: f64,
    battery_shown: i64,
}

/// The device's own state next to the object tree.
#[derive(Debug, Clone)]
pub struct Device {
    profile: DeviceProfile,
    rng: Rng,
    ticks: u64,
    heading: f64,
    /// The battery's exact level; the store shows it rounded up.
    battery: f64,
    /// What was last written to /3/0/9: anything else there was written by
    /// someone else (a test, a server through the device API) and is taken over.
    battery_shown: i64,
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

/// Metres per degree of latitude.
const METRES_PER_DEGREE: f64 = 111_320.0;

/// A seed from an endpoint name (FNV-1a): a device without a seed of its own
/// is the same device in every run.
pub(crate) fn endpoint_seed(endpoint: &str) -> u64 {
    endpoint.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Device {
    pub fn new(profile: DeviceProfile, endpoint: &str) -> Device {
        let seed = profile.seed.unwrap_or_else(|| endpoint_seed(endpoint));
        let level = profile.battery.level.clamp(0, 100);
        Device {
            profile,
            rng: Rng::raw(seed),
            ticks: 0,
            heading: 0.7,
            battery: level as f64,
            battery_shown: level,
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
        let serial = format!("SN{:010}", self.rng.next_u64() % 10_000_000_000);
        let now = unix_now();
        for (o, i) in [(0, 0), (1, 0), (3, 0), (4, 0), (5, 0), (6, 0)] {
            store.add_instance(o, i)?;
        }
        let d = &self.profile;
        let radio = &d.radio;
        let at = &d.position;
        let mut single: Vec<(&[u16], Value)> = vec![
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
            (&[3, 0, 0], Value::String(d.manufacturer.clone())),
            (&[3, 0, 1], Value::String(d.model.clone())),
            (&[3, 0, 2], Value::String(serial)),
            (&[3, 0, 3], Value::String(d.firmware_version.clone())),
            (&[3, 0, 9], Value::Integer(self.battery_shown)),
            (&[3, 0, 10], Value::Integer(412)),
            (&[3, 0, 13], Value::Time(now)),
            (&[3, 0, 14], Value::String(d.utc_offset.clone())),
            (&[3, 0, 15], Value::String(d.timezone.clone())),
            (&[3, 0, 16], Value::String("UQ".into())),
            (&[3, 0, 17], Value::String(format!("tracker ({endpoint})"))),
            (&[3, 0, 18], Value::String(d.hardware_version.clone())),
            (&[3, 0, 19], Value::String("lwm2m-client-sim 0.1".into())),
            (
                &[3, 0, 20],
                Value::Integer(battery_status(self.battery_shown)),
            ),
            (&[3, 0, 21], Value::Integer(512)),
            // Connectivity Monitoring.
            (&[4, 0, 0], Value::Integer(i64::from(radio.bearer))),
            (&[4, 0, 2], Value::Integer(radio.rssi_dbm)),
            (
                &[4, 0, 3],
                Value::Integer(link_quality(radio.bearer, radio.rssi_dbm)),
            ),
            (&[4, 0, 6], Value::Integer(3)),
            // Location.
            (&[6, 0, 0], Value::Float(at.latitude)),
            (&[6, 0, 1], Value::Float(at.longitude)),
            (&[6, 0, 2], Value::Float(at.altitude)),
            (&[6, 0, 3], Value::Float(at.accuracy)),
            (&[6, 0, 5], Value::Time(now)),
            (
                &[6, 0, 6],
                Value::Float((at.speed_mps.0 + at.speed_mps.1) / 2.0),
            ),
        ];
        if let Some(c) = &radio.cellular {
            single.extend([
                (&[4, 0, 8][..], Value::Integer(i64::from(c.cell_id))),
                (&[4, 0, 9][..], Value::Integer(i64::from(c.mnc))),
                (&[4, 0, 10][..], Value::Integer(i64::from(c.mcc))),
            ]);
        }
        for (ids, v) in single {
            store.set(&p(ids), v)?;
        }
        let mut multi: Vec<(&[u16], Vec<Value>)> = vec![
            (&[3, 0, 6], vec![Value::Integer(1), Value::Integer(5)]),
            (&[3, 0, 7], vec![Value::Integer(3700), Value::Integer(5000)]),
            (&[3, 0, 8], vec![Value::Integer(25), Value::Integer(0)]),
            (&[3, 0, 11], vec![Value::Integer(0)]),
            (
                &[4, 0, 1],
                radio
                    .available
                    .iter()
                    .map(|b| Value::Integer(i64::from(*b)))
                    .collect(),
            ),
            (&[4, 0, 4], vec![Value::String(radio.ip_address.clone())]),
        ];
        if let Some(c) = &radio.cellular {
            multi.push((&[4, 0, 7], vec![Value::String(c.apn.clone())]));
        }
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
        self.advance(store, dt, 1)
    }

    /// Advances the sensors over `elapsed` of steps of `step` that did not run, because
    /// the device was parked ([`crate::park`]) while it slept: a real device's battery
    /// drains and it moves while its radio is off, and an observer must see that after
    /// the wake. At most [`MAX_CATCH_UP_STEPS`] steps are simulated, so that a device
    /// waking after a day costs what one waking after a minute does; the battery drains
    /// by exactly what the skipped steps would have drained.
    pub fn catch_up(
        &mut self,
        store: &mut ObjectStore,
        elapsed: Duration,
        step: Duration,
    ) -> Result<(), OpError> {
        let step_ns = step.as_nanos().max(1);
        let skipped = u64::try_from(elapsed.as_nanos() / step_ns).unwrap_or(u64::MAX);
        if skipped == 0 {
            return Ok(());
        }
        let chunks = skipped.min(MAX_CATCH_UP_STEPS);
        let per_chunk = elapsed / u32::try_from(chunks).unwrap_or(u32::MAX);
        for k in 0..chunks {
            // Spread the skipped steps over the chunks; the first ones take the rest.
            let steps = skipped / chunks + u64::from(k < skipped % chunks);
            self.advance(store, per_chunk, steps)?;
        }
        Ok(())
    }

    /// One simulated move of `dt` that stands for `steps` steps of the sensor clock.
    fn advance(
        &mut self,
        store: &mut ObjectStore,
        dt: Duration,
        steps: u64,
    ) -> Result<(), OpError> {
        let before = self.ticks;
        self.ticks = self.ticks.saturating_add(steps);
        let now = unix_now();
        store.set(&p(&[3, 0, 13]), Value::Time(now))?;
        self.drain(store, dt, before)?;
        let mem = 400 + (self.rng.next_u64() % 40) as i64;
        store.set(&p(&[3, 0, 10]), Value::Integer(mem))?;
        self.wander_signal(store)?;
        self.move_on(store, dt, now)
    }

    /// What of the device's own state a parked device must keep (its sensors' walk
    /// and the exact battery level; the values it shows are in the object tree).
    pub(crate) fn memory(&self) -> DeviceMemory {
        DeviceMemory {
            rng: self.rng.clone(),
            ticks: self.ticks,
            heading: self.heading,
            battery: self.battery,
            battery_shown: self.battery_shown,
        }
    }

    /// Takes the state a parked device kept.
    pub(crate) fn restore(&mut self, m: &DeviceMemory) {
        self.rng = m.rng.clone();
        self.ticks = m.ticks;
        self.heading = m.heading;
        self.battery = m.battery;
        self.battery_shown = m.battery_shown;
    }

    /// `ticks_before`: the step count before this move; the demo drain loses 1 % at
    /// every tenth step, however many steps one move stands for.
    fn drain(
        &mut self,
        store: &mut ObjectStore,
        dt: Duration,
        ticks_before: u64,
    ) -> Result<(), OpError> {
        let shown = match store.value(&p(&[3, 0, 9])) {
            Some(Value::Integer(b)) => *b,
            _ => 100,
        };
        let next = match self.profile.battery.drain_pct_per_h {
            None => {
                let drops = self.ticks / 10 - ticks_before / 10;
                if drops == 0 {
                    return Ok(());
                }
                // 100 down to 5 and replaced: the walk repeats every 96 drops.
                let mut level = shown;
                for _ in 0..drops % 96 {
                    level = if level <= 5 { 100 } else { level - 1 };
                }
                level
            }
            Some(rate) => {
                if shown != self.battery_shown {
                    self.battery = shown as f64;
                }
                self.battery -= rate * dt.as_secs_f64() / 3600.0;
                if self.battery <= 0.0 {
                    self.battery = 100.0;
                }
                self.battery.ceil().clamp(0.0, 100.0) as i64
            }
        };
        self.battery_shown = next;
        if next != shown {
            store.set(&p(&[3, 0, 9]), Value::Integer(next))?;
            store.set(&p(&[3, 0, 20]), Value::Integer(battery_status(next)))?;
        }
        Ok(())
    }

    fn wander_signal(&mut self, store: &mut ObjectStore) -> Result<(), OpError> {
        let radio = &self.profile.radio;
        let rssi = match store.value(&p(&[4, 0, 2])) {
            Some(Value::Integer(v)) => *v,
            _ => radio.rssi_dbm,
        };
        let w = u64::from(radio.wander_db);
        let (lo, hi) = radio.rssi_bounds;
        let rssi = (rssi + (self.rng.next_u64() % (2 * w + 1)) as i64 - w as i64).clamp(lo, hi);
        store.set(&p(&[4, 0, 2]), Value::Integer(rssi))?;
        store.set(
            &p(&[4, 0, 3]),
            Value::Integer(link_quality(radio.bearer, rssi)),
        )
    }

    fn move_on(&mut self, store: &mut ObjectStore, dt: Duration, now: i64) -> Result<(), OpError> {
        let at = &self.profile.position;
        let (slow, fast) = at.speed_mps;
        if fast <= 0.0 {
            return Ok(());
        }
        let speed = slow + (fast - slow) * self.rng.signed().abs();
        self.heading += 0.1 * self.rng.signed();
        let metres = speed * dt.as_secs_f64();
        let lat = match store.value(&p(&[6, 0, 0])) {
            Some(Value::Float(v)) => *v,
            _ => at.latitude,
        };
        let lon = match store.value(&p(&[6, 0, 1])) {
            Some(Value::Float(v)) => *v,
            _ => at.longitude,
        };
        let per_lon = METRES_PER_DEGREE * lat.to_radians().cos().max(0.01);
        if let Some((clat, clon, radius)) = at.area {
            let (north, east) = ((clat - lat) * METRES_PER_DEGREE, (clon - lon) * per_lon);
            if north.hypot(east) > radius {
                self.heading = east.atan2(north);
            }
        }
        let dlat = metres * self.heading.cos() / METRES_PER_DEGREE;
        let dlon = metres * self.heading.sin() / per_lon;
        store.set(&p(&[6, 0, 0]), Value::Float(lat + dlat))?;
        store.set(&p(&[6, 0, 1]), Value::Float(lon + dlon))?;
        store.set(&p(&[6, 0, 5]), Value::Time(now))?;
        store.set(&p(&[6, 0, 6]), Value::Float((speed * 10.0).round() / 10.0))
    }
}

/// /3/0/20: 0 normal, 4 low.
fn battery_status(level: i64) -> i64 {
    if level < 15 {
        4
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(profile: DeviceProfile) -> (Device, ObjectStore) {
        let mut store = ObjectStore::new(crate::store::core_model(), &[0, 1, 3, 4, 5, 6]);
        let mut d = Device::new(profile, "dev-1");
        d.populate(&mut store, "coap://127.0.0.1", "dev-1", 300, 1, "U")
            .expect("populate");
        (d, store)
    }

    fn int(store: &ObjectStore, ids: &[u16]) -> Option<i64> {
        match store.value(&p(ids)) {
            Some(Value::Integer(v)) => Some(*v),
            _ => None,
        }
    }

    #[test]
    fn the_battery_drains_at_the_profiles_rate_and_takes_over_a_written_level() {
        let (mut d, mut store) = device(DeviceProfile {
            battery: Battery {
                level: 50,
                drain_pct_per_h: Some(3600.0),
            },
            ..DeviceProfile::default()
        });
        assert_eq!(int(&store, &[3, 0, 9]), Some(50));
        for _ in 0..10 {
            d.tick(&mut store, Duration::from_millis(500))
                .expect("tick");
        }
        assert_eq!(int(&store, &[3, 0, 9]), Some(45));
        store.set(&p(&[3, 0, 9]), Value::Integer(10)).expect("set");
        d.tick(&mut store, Duration::from_secs(2)).expect("tick");
        assert_eq!(int(&store, &[3, 0, 9]), Some(8));
        assert_eq!(int(&store, &[3, 0, 20]), Some(4));
        d.tick(&mut store, Duration::from_secs(9)).expect("tick");
        assert_eq!(int(&store, &[3, 0, 9]), Some(100), "replaced when empty");
    }

    #[test]
    fn a_wifi_device_has_no_cell_and_a_stationary_one_stays_put() {
        let mut profile = DeviceProfile::default();
        profile.radio.bearer = 21;
        profile.radio.available = vec![21];
        profile.radio.cellular = None;
        profile.position.speed_mps = (0.0, 0.0);
        let (mut d, mut store) = device(profile);
        assert_eq!(int(&store, &[4, 0, 0]), Some(21));
        assert!(store.value(&p(&[4, 0, 8])).is_none());
        assert!(store.value(&p(&[4, 0, 10])).is_none());
        let before = store.value(&p(&[6, 0, 0])).cloned();
        for _ in 0..20 {
            d.tick(&mut store, Duration::from_secs(60)).expect("tick");
        }
        assert_eq!(store.value(&p(&[6, 0, 0])).cloned(), before);
    }

    #[test]
    fn a_moving_device_stays_near_its_region() {
        let mut profile = DeviceProfile::default();
        profile.position.speed_mps = (10.0, 10.0);
        profile.position.area = Some((52.52, 13.405, 1000.0));
        let (mut d, mut store) = device(profile);
        for _ in 0..2000 {
            d.tick(&mut store, Duration::from_secs(10)).expect("tick");
            let (Some(Value::Float(lat)), Some(Value::Float(lon))) =
                (store.value(&p(&[6, 0, 0])), store.value(&p(&[6, 0, 1])))
            else {
                panic!("no position");
            };
            let north = (lat - 52.52) * METRES_PER_DEGREE;
            let east = (lon - 13.405) * METRES_PER_DEGREE * 52.52f64.to_radians().cos();
            assert!(north.hypot(east) < 1300.0, "{north} {east}");
        }
    }

    #[test]
    fn link_quality_follows_the_bearers_unit() {
        assert_eq!(link_quality(7, -44), -3);
        assert_eq!(link_quality(7, -140), -20);
        assert_eq!(link_quality(0, -48), 0);
        assert_eq!(link_quality(0, -110), 7);
        assert_eq!(link_quality(21, -60), 100);
        assert_eq!(link_quality(21, -120), 0);
    }
}
