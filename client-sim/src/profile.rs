//! Behaviour profiles: what a fleet of simulated devices is made of, from a TOML file.
//!
//! A profile describes a mix, not devices: weighted choices (models and their firmware,
//! wake schedules, bearers, regions, visited networks), shares (roaming) and ranges
//! (lifetimes, signal, battery, loss) that each device draws its own values from.
//! Device `i` draws from a generator seeded with the profile's `seed` and `i` alone, so
//! two runs of one profile give the same fleet, device for device, and device `i` is the
//! same whatever the fleet's size. [`Profile::device`] is that draw; the sample profile
//! `client-sim/profiles/mixed-nbiot.toml` documents every key.
//!
//! A range is written as one number (every device gets it) or `[min, max]` (each device
//! draws uniformly from it; integers such as lifetimes draw whole numbers). Weights are
//! relative: `3` and `1` make three quarters and one quarter. An unknown key is an
//! error, so that a typo never leaves a default in force. Fields in errors are named as
//! in the file, list entries counted from 1 (`model[2].weight`).
//!
//! What the devices report, and where (object 4 is REG 4.xml, Connectivity Monitoring
//! v1.3): the bearer in /4/0/0 (the object's list: 6 LTE-FDD, 7 NB-IoT, 21 WLAN, ...),
//! the serving cell in /4/0/8, the serving network in /4/0/10 (SMCC) and /4/0/9 (SMNC),
//! the signal in /4/0/2 and the link quality derived from it in /4/0/3, the position
//! in /6/0/0 and /6/0/1, the battery in /3/0/9, manufacturer, model and firmware in
//! /3/0/0, /3/0/1 and /3/0/3.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::device::{is_cellular, Battery, Cellular, DeviceProfile, Position};
use crate::network::{Cell, LinkConditions};
use crate::rng::Rng;
use crate::Config;

/// The largest profile file read; a profile is a page of settings, not data.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Entries a list of the profile may hold (models, schedules, regions, ...).
pub const MAX_ENTRIES: usize = 256;
/// Cells a profile may define, over all its regions.
pub const MAX_CELLS: usize = 100_000;
/// The longest text a profile gives a device (manufacturer, model, APN, ...).
pub const MAX_TEXT: usize = 255;
/// Most `download_retries` a model may have: more only hides a broken link.
pub const MAX_DOWNLOAD_RETRIES: f64 = 20.0;
/// The seed of a profile that names none: every run without one is the same fleet too.
pub const DEFAULT_SEED: u64 = 0x5EED_F1EE;

/// Why a profile was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the profile {path}: {why}")]
    Read { path: String, why: String },
    #[error("the profile is {size} bytes; a profile has at most {MAX_FILE_BYTES}")]
    TooLarge { size: u64 },
    /// Not TOML, or not the shape of a profile: an unknown key, a wrong type (line and
    /// column counted from 1; 0 when the parser gave no position).
    #[error("line {line}, column {column} `{source_line}`: {message}")]
    Syntax {
        line: usize,
        column: usize,
        /// The line it is on, as written (cut at 80 characters).
        source_line: String,
        message: String,
    },
    #[error("{field}: a weight is a positive number, not {value}")]
    Weight { field: String, value: f64 },
    #[error("{field}: a share is from 0 to 1, not {value}")]
    Fraction { field: String, value: f64 },
    #[error("{field}: the range [{min}, {max}] goes backwards")]
    Unordered { field: String, min: f64, max: f64 },
    #[error("{field}: {value} is outside {lo}..={hi}{unit}")]
    OutOfBounds {
        field: String,
        value: f64,
        lo: f64,
        hi: f64,
        unit: &'static str,
    },
    #[error("{field}: at most {max} entries, not {len}")]
    TooMany {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field}: at least one entry is needed")]
    Empty { field: String },
    #[error("{field}: {name:?} is not a bearer of object 4 (a name such as \"nb-iot\", or 0..50)")]
    Bearer { field: String, name: String },
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

/// A number, or a range `[min, max]` to draw from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub min: f64,
    pub max: f64,
}

impl Span {
    pub const fn fixed(v: f64) -> Span {
        Span { min: v, max: v }
    }

    fn draw(&self, r: &mut Rng) -> f64 {
        r.between(self.min, self.max)
    }

    /// A whole number from `[ceil(min), floor(max)]`, each equally likely.
    fn draw_int(&self, r: &mut Rng) -> i64 {
        let (lo, hi) = (self.min.ceil() as i64, self.max.floor() as i64);
        if hi <= lo {
            return lo;
        }
        let n = u64::try_from(hi - lo).unwrap_or(0).saturating_add(1);
        lo.saturating_add(i64::try_from(r.below(n)).unwrap_or(0))
    }

    fn duration(&self, r: &mut Rng) -> Duration {
        Duration::from_secs_f64(self.draw(r).max(0.0))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Span;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a range [min, max]")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                Ok(Span::fixed(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                Ok(Span::fixed(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Span, E> {
                Ok(Span::fixed(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Span, A::Error> {
                let min: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let max: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<f64>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Span { min, max })
            }
        }
        d.deserialize_any(V)
    }
}

/// A bearer as the file names it: a name of object 4's list or its number.
#[derive(Debug, Clone, PartialEq)]
enum BearerName {
    Code(i64),
    Name(String),
}

impl<'de> Deserialize<'de> for BearerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BearerName, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = BearerName;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a bearer name such as \"nb-iot\" or a number 0..50")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BearerName, E> {
                Ok(BearerName::Code(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BearerName, E> {
                Ok(BearerName::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BearerName, E> {
                Ok(BearerName::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Object 4's Network Bearer list (REG 4.xml, /4/0/0) by name. `lte-m` is not in the
/// list: Cat-M1 runs in LTE bands and a Cat-M1 module reports the duplex mode, FDD in
/// almost every network, so the name stands for 6.
const BEARERS: &[(&str, u8)] = &[
    ("gsm", 0),
    ("td-scdma", 1),
    ("wcdma", 2),
    ("cdma2000", 3),
    ("wimax", 4),
    ("lte-tdd", 5),
    ("lte-fdd", 6),
    ("lte-m", 6),
    ("nb-iot", 7),
    ("5g-nr-tdd", 8),
    ("5g-nr-fdd", 9),
    ("wlan", 21),
    ("wifi", 21),
    ("bluetooth", 22),
    ("ieee-802.15.4", 23),
    ("ethernet", 41),
    ("dsl", 42),
    ("plc", 43),
];

fn bearer_code(field: &str, b: &BearerName) -> Result<u8, ProfileError> {
    let bad = |name: String| ProfileError::Bearer {
        field: field.to_string(),
        name,
    };
    match b {
        BearerName::Code(c) => u8::try_from(*c)
            .ok()
            .filter(|c| *c <= 50)
            .ok_or_else(|| bad(c.to_string())),
        BearerName::Name(n) => BEARERS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(n))
            .map(|(_, c)| *c)
            .ok_or_else(|| bad(n.clone())),
    }
}

fn one() -> f64 {
    1.0
}

/// The file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    seed: Option<u64>,
    count: Option<usize>,
    prefix: Option<String>,
    start_rate: Option<u32>,
    #[serde(default)]
    model: Vec<ModelSpec>,
    #[serde(default)]
    schedule: Vec<ScheduleSpec>,
    #[serde(default)]
    bearer: Vec<BearerSpec>,
    #[serde(default)]
    network: NetworkSpec,
    #[serde(default)]
    region: Vec<RegionSpec>,
    #[serde(default)]
    cells: CellsSpec,
    #[serde(default)]
    battery: BatterySpec,
    #[serde(default)]
    link: LinkSpec,
    reboot: Option<RebootSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    manufacturer: String,
    model: String,
    #[serde(default = "one")]
    weight: f64,
    hardware: Option<String>,
    #[serde(default)]
    firmware: Vec<FirmwareSpec>,
    /// Metres a second, drawn anew at every step; absent: the device does not move.
    speed_mps: Option<Span>,
    /// Further tries of a firmware block after its exchange ran out of CoAP
    /// retransmissions, before the download fails; absent: the simulator's default.
    download_retries: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FirmwareSpec {
    version: String,
    #[serde(default = "one")]
    weight: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSpec {
    name: Option<String>,
    #[serde(default = "one")]
    weight: f64,
    lifetime_s: Option<Span>,
    #[serde(default)]
    queue_mode: bool,
    awake_s: Option<Span>,
    sleep_s: Option<Span>,
    #[serde(default)]
    jitter: f64,
    #[serde(default)]
    rebind_on_wake: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BearerSpec {
    kind: BearerName,
    #[serde(default = "one")]
    weight: f64,
    available: Option<Vec<BearerName>>,
    rssi_dbm: Option<Span>,
    wander_db: Option<u32>,
    latency_ms: Option<Span>,
    loss_up: Option<Span>,
    loss_down: Option<Span>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSpec {
    home_mcc: Option<u16>,
    home_mnc: Option<u16>,
    apn: Option<String>,
    #[serde(default)]
    roaming_share: f64,
    #[serde(default)]
    visited: Vec<VisitedSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct VisitedSpec {
    mcc: u16,
    mnc: u16,
    #[serde(default = "one")]
    weight: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionSpec {
    name: Option<String>,
    #[serde(default = "one")]
    weight: f64,
    latitude: f64,
    longitude: f64,
    #[serde(default)]
    radius_m: f64,
    utc_offset: Option<String>,
    timezone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CellsSpec {
    per_region: Option<u32>,
    first_id: Option<u32>,
    downlink_bytes_per_s: Option<Span>,
    uplink_bytes_per_s: Option<Span>,
    max_queue_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatterySpec {
    level_pct: Option<Span>,
    drain_pct_per_h: Option<Span>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkSpec {
    latency_ms: Option<Span>,
    loss_up: Option<Span>,
    loss_down: Option<Span>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RebootSpec {
    mean_between_s: Span,
}

/// Checks with the field's name at hand.
fn fraction(field: &str, v: f64) -> Result<(), ProfileError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(ProfileError::Fraction {
            field: field.into(),
            value: v,
        })
    }
}

fn weight(field: &str, v: f64) -> Result<(), ProfileError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ProfileError::Weight {
            field: field.into(),
            value: v,
        })
    }
}

fn within(field: &str, v: f64, lo: f64, hi: f64, unit: &'static str) -> Result<(), ProfileError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(ProfileError::OutOfBounds {
            field: field.into(),
            value: v,
            lo,
            hi,
            unit,
        })
    }
}

fn span(field: &str, s: Span, lo: f64, hi: f64, unit: &'static str) -> Result<(), ProfileError> {
    within(field, s.min, lo, hi, unit)?;
    within(field, s.max, lo, hi, unit)?;
    if s.min > s.max {
        return Err(ProfileError::Unordered {
            field: field.into(),
            min: s.min,
            max: s.max,
        });
    }
    Ok(())
}

fn shares(field: &str, s: Span) -> Result<(), ProfileError> {
    fraction(field, s.min)?;
    fraction(field, s.max)?;
    span(field, s, 0.0, 1.0, "")
}

fn entries<T>(field: &str, list: &[T], max: usize) -> Result<(), ProfileError> {
    if list.len() > max {
        return Err(ProfileError::TooMany {
            field: field.into(),
            len: list.len(),
            max,
        });
    }
    Ok(())
}

fn text(field: &str, t: &str) -> Result<(), ProfileError> {
    let why = if t.is_empty() {
        "empty"
    } else if t.len() > MAX_TEXT {
        "longer than 255 bytes"
    } else if t.chars().any(char::is_control) {
        "holds control characters"
    } else {
        return Ok(());
    };
    Err(ProfileError::Invalid {
        field: field.into(),
        why: why.into(),
    })
}

/// The lifetimes a profile may give: up to a year.
const MAX_LIFETIME_S: f64 = 31_536_000.0;
const DEFAULT_LIFETIME_S: f64 = 300.0;
const DEFAULT_AWAKE_S: f64 = 30.0;
const DEFAULT_SLEEP_S: f64 = 60.0;
const DEFAULT_CELL_ID: u32 = 0x01A2_B3C4;
/// 28 bits: an LTE cell identity.
const CELL_ID_MASK: u32 = 0x0FFF_FFFF;

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    file: File,
    seed: u64,
    per_region: u32,
}

/// Everything one device of a profile drew: what [`DeviceSetup::apply`] writes into its
/// [`Config`].
#[derive(Debug, Clone)]
pub struct DeviceSetup {
    pub index: usize,
    pub device: DeviceProfile,
    pub lifetime: u32,
    pub queue_mode: bool,
    /// The schedule's name (or `schedule N`, counted from 1).
    pub schedule: String,
    pub awake_window: Duration,
    pub sleep_duration: Duration,
    pub sleep_jitter: f64,
    pub rebind_on_wake: bool,
    pub reboot_mean: Option<Duration>,
    /// It reports a visited network rather than the home one.
    pub roaming: bool,
    /// Its index in [`Profile::cells`], for a cellular bearer.
    pub cell: Option<usize>,
    pub loss_up: f64,
    pub loss_down: f64,
    /// Each datagram's one-way delay is drawn from this range.
    pub latency: (Duration, Duration),
    /// Seed of the link's loss and delay draws.
    pub link_seed: u64,
    /// Its model's `download_retries`, when the profile gives them.
    pub download_retries: Option<u32>,
}

impl DeviceSetup {
    /// The link conditions of this device, `None` when they change nothing.
    pub fn link(&self, cells: &[Arc<Cell>]) -> Option<LinkConditions> {
        let c = LinkConditions {
            loss_up: self.loss_up,
            loss_down: self.loss_down,
            latency: self.latency,
            cell: self.cell.and_then(|k| cells.get(k)).cloned(),
            seed: self.link_seed,
        };
        (!c.is_neutral()).then_some(c)
    }

    /// Writes the device's values into `c` (the fleet's template for it).
    pub fn apply(&self, c: &mut Config, cells: &[Arc<Cell>]) {
        let update_time = c.profile.update_time;
        c.profile = self.device.clone();
        c.profile.update_time = update_time;
        c.lifetime = self.lifetime;
        c.queue_mode = self.queue_mode;
        c.awake_window = self.awake_window;
        c.sleep_duration = self.sleep_duration;
        c.sleep_jitter = self.sleep_jitter;
        c.rebind_on_wake = self.rebind_on_wake;
        c.reboot_mean = self.reboot_mean;
        c.link = self.link(cells);
        if let Some(n) = self.download_retries {
            c.firmware.retries = n;
        }
    }
}

/// How often each choice came up among a fleet's devices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mix {
    /// `manufacturer model` and how many devices.
    pub models: Vec<(String, usize)>,
    pub schedules: Vec<(String, usize)>,
    /// /4/0/0 values.
    pub bearers: Vec<(u8, usize)>,
    pub queue_mode: usize,
    pub roaming: usize,
}

fn tally<K: PartialEq>(list: &mut Vec<(K, usize)>, k: K) {
    match list.iter_mut().find(|(x, _)| *x == k) {
        Some((_, n)) => *n += 1,
        None => list.push((k, 1)),
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |l: &[(String, usize)]| {
            l.iter()
                .map(|(k, n)| format!("{k:?}={n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let bearers: Vec<String> = self
            .bearers
            .iter()
            .map(|(b, n)| format!("{b}={n}"))
            .collect();
        write!(
            f,
            "models={} schedules={} bearers={} queue_mode={} roaming={}",
            join(&self.models),
            join(&self.schedules),
            bearers.join(","),
            self.queue_mode,
            self.roaming
        )
    }
}

impl Profile {
    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        use std::io::Read;
        let read_error = |e: std::io::Error| ProfileError::Read {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut text = String::new();
        // One byte more than allowed tells a file that is too large from one that fits.
        let n = file
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if n as u64 > MAX_FILE_BYTES {
            return Err(ProfileError::TooLarge { size: n as u64 });
        }
        Profile::from_toml(&text)
    }

    /// Parses and checks a profile.
    pub fn from_toml(text: &str) -> Result<Profile, ProfileError> {
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(ProfileError::TooLarge {
                size: text.len() as u64,
            });
        }
        let file: File = toml::from_str(text).map_err(|e| syntax(text, &e))?;
        let per_region = file.cells.per_region.unwrap_or(1);
        let p = Profile {
            seed: file.seed.unwrap_or(DEFAULT_SEED),
            per_region,
            file,
        };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), ProfileError> {
        let f = &self.file;
        if let Some(n) = &f.name {
            text("name", n)?;
        }
        if let Some(c) = f.count {
            within(
                "count",
                c as f64,
                1.0,
                crate::fleet::MAX_DEVICES as f64,
                " devices",
            )?;
        }
        if let Some(p) = &f.prefix {
            if p.len() > 64 || !p.chars().all(|c| c.is_ascii_graphic() && c != '&') {
                return Err(ProfileError::Invalid {
                    field: "prefix".into(),
                    why: "at most 64 visible ASCII characters, without '&'".into(),
                });
            }
        }
        if let Some(r) = f.start_rate {
            within("start_rate", f64::from(r), 1.0, 1e6, " devices/s")?;
        }
        entries("model", &f.model, MAX_ENTRIES)?;
        for (k, m) in f.model.iter().enumerate() {
            let at = |s: &str| format!("model[{}].{s}", k + 1);
            text(&at("manufacturer"), &m.manufacturer)?;
            text(&at("model"), &m.model)?;
            weight(&at("weight"), m.weight)?;
            if let Some(h) = &m.hardware {
                text(&at("hardware"), h)?;
            }
            if let Some(s) = m.speed_mps {
                span(&at("speed_mps"), s, 0.0, 100.0, " m/s")?;
            }
            if let Some(n) = m.download_retries {
                within(
                    &at("download_retries"),
                    f64::from(n),
                    0.0,
                    MAX_DOWNLOAD_RETRIES,
                    "",
                )?;
            }
            entries(&at("firmware"), &m.firmware, MAX_ENTRIES)?;
            for (j, fw) in m.firmware.iter().enumerate() {
                let at = |s: &str| format!("model[{}].firmware[{}].{s}", k + 1, j + 1);
                text(&at("version"), &fw.version)?;
                weight(&at("weight"), fw.weight)?;
            }
        }
        entries("schedule", &f.schedule, MAX_ENTRIES)?;
        for (k, s) in f.schedule.iter().enumerate() {
            let at = |x: &str| format!("schedule[{}].{x}", k + 1);
            if let Some(n) = &s.name {
                text(&at("name"), n)?;
            }
            weight(&at("weight"), s.weight)?;
            if let Some(l) = s.lifetime_s {
                span(&at("lifetime_s"), l, 1.0, MAX_LIFETIME_S, " s")?;
            }
            within(&at("jitter"), s.jitter, 0.0, 0.9, "")?;
            if !s.queue_mode {
                for (key, given) in [
                    ("awake_s", s.awake_s.is_some()),
                    ("sleep_s", s.sleep_s.is_some()),
                ] {
                    if given {
                        return Err(ProfileError::Invalid {
                            field: at(key),
                            why: "applies to queue mode only (queue_mode = true)".into(),
                        });
                    }
                }
            }
            if let Some(a) = s.awake_s {
                span(&at("awake_s"), a, 0.1, 86_400.0, " s")?;
            }
            if let Some(z) = s.sleep_s {
                span(&at("sleep_s"), z, 0.1, 30.0 * 86_400.0, " s")?;
            }
        }
        entries("bearer", &f.bearer, MAX_ENTRIES)?;
        for (k, b) in f.bearer.iter().enumerate() {
            let at = |x: &str| format!("bearer[{}].{x}", k + 1);
            bearer_code(&at("kind"), &b.kind)?;
            weight(&at("weight"), b.weight)?;
            if let Some(list) = &b.available {
                entries(&at("available"), list, 51)?;
                for a in list {
                    bearer_code(&at("available"), a)?;
                }
            }
            if let Some(r) = b.rssi_dbm {
                span(&at("rssi_dbm"), r, -150.0, 0.0, " dBm")?;
            }
            if let Some(w) = b.wander_db {
                within(&at("wander_db"), f64::from(w), 0.0, 20.0, " dB")?;
            }
            check_link(&at(""), b.latency_ms, b.loss_up, b.loss_down)?;
        }
        let n = &f.network;
        if let Some(c) = n.home_mcc {
            within("network.home_mcc", f64::from(c), 0.0, 999.0, "")?;
        }
        if let Some(c) = n.home_mnc {
            within("network.home_mnc", f64::from(c), 0.0, 999.0, "")?;
        }
        if let Some(a) = &n.apn {
            text("network.apn", a)?;
        }
        fraction("network.roaming_share", n.roaming_share)?;
        entries("network.visited", &n.visited, MAX_ENTRIES)?;
        if n.roaming_share > 0.0 && n.visited.is_empty() {
            return Err(ProfileError::Empty {
                field: "network.visited (where roaming devices are)".into(),
            });
        }
        for (k, v) in n.visited.iter().enumerate() {
            let at = |x: &str| format!("network.visited[{}].{x}", k + 1);
            within(&at("mcc"), f64::from(v.mcc), 0.0, 999.0, "")?;
            within(&at("mnc"), f64::from(v.mnc), 0.0, 999.0, "")?;
            weight(&at("weight"), v.weight)?;
        }
        entries("region", &f.region, MAX_ENTRIES)?;
        for (k, g) in f.region.iter().enumerate() {
            let at = |x: &str| format!("region[{}].{x}", k + 1);
            if let Some(n) = &g.name {
                text(&at("name"), n)?;
            }
            weight(&at("weight"), g.weight)?;
            within(&at("latitude"), g.latitude, -90.0, 90.0, "°")?;
            within(&at("longitude"), g.longitude, -180.0, 180.0, "°")?;
            within(&at("radius_m"), g.radius_m, 0.0, 1_000_000.0, " m")?;
            for (key, t) in [("utc_offset", &g.utc_offset), ("timezone", &g.timezone)] {
                if let Some(t) = t {
                    text(&at(key), t)?;
                }
            }
        }
        let c = &f.cells;
        within(
            "cells.per_region",
            f64::from(self.per_region),
            1.0,
            10_000.0,
            "",
        )?;
        let cells = f.region.len().max(1) * self.per_region as usize;
        if cells > MAX_CELLS {
            return Err(ProfileError::TooMany {
                field: "cells (regions times cells.per_region)".into(),
                len: cells,
                max: MAX_CELLS,
            });
        }
        if let Some(id) = c.first_id {
            within(
                "cells.first_id",
                f64::from(id),
                0.0,
                f64::from(CELL_ID_MASK),
                "",
            )?;
        }
        for (key, b) in [
            ("cells.downlink_bytes_per_s", c.downlink_bytes_per_s),
            ("cells.uplink_bytes_per_s", c.uplink_bytes_per_s),
        ] {
            if let Some(b) = b {
                span(key, b, 1.0, 1e10, " bytes/s")?;
            }
        }
        if let Some(q) = c.max_queue_ms {
            within("cells.max_queue_ms", q as f64, 1.0, 600_000.0, " ms")?;
        }
        if let Some(l) = f.battery.level_pct {
            span("battery.level_pct", l, 0.0, 100.0, " %")?;
        }
        if let Some(d) = f.battery.drain_pct_per_h {
            span("battery.drain_pct_per_h", d, 0.0, 36_000.0, " %/h")?;
        }
        check_link("link.", f.link.latency_ms, f.link.loss_up, f.link.loss_down)?;
        if let Some(r) = &f.reboot {
            span(
                "reboot.mean_between_s",
                r.mean_between_s,
                1.0,
                315_360_000.0,
                " s",
            )?;
        }
        Ok(())
    }

    pub fn name(&self) -> Option<&str> {
        self.file.name.as_deref()
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The fleet's size, when the profile gives one.
    pub fn count(&self) -> Option<usize> {
        self.file.count
    }

    pub fn prefix(&self) -> Option<&str> {
        self.file.prefix.as_deref()
    }

    pub fn start_rate(&self) -> Option<u32> {
        self.file.start_rate
    }

    /// The profile's cells, region by region, each with its bandwidths drawn from the
    /// profile's seed; a datagram that would wait longer than `cells.max_queue_ms`, or
    /// else `default_bound` (the devices' ACK timeout), is dropped.
    pub fn cells(&self, default_bound: Duration) -> Vec<Arc<Cell>> {
        let c = &self.file.cells;
        let bound = c
            .max_queue_ms
            .map(Duration::from_millis)
            .unwrap_or(default_bound);
        let first = c.first_id.unwrap_or(DEFAULT_CELL_ID);
        let total = self.file.region.len().max(1) * self.per_region as usize;
        (0..total)
            .map(|k| {
                let mut r = Rng::derive(self.seed ^ 0xCE11, k as u64);
                let rate = |s: Option<Span>, r: &mut Rng| s.map(|s| s.draw_int(r).max(1) as u64);
                let down = rate(c.downlink_bytes_per_s, &mut r);
                let up = rate(c.uplink_bytes_per_s, &mut r);
                let id = first.wrapping_add(k as u32) & CELL_ID_MASK;
                Arc::new(Cell::new(id, down, up, bound))
            })
            .collect()
    }

    /// Device `i`'s values, the same on every call and in every run.
    pub fn device(&self, i: usize) -> DeviceSetup {
        let f = &self.file;
        let mut r = Rng::derive(self.seed, i as u64);
        let mut device = DeviceProfile::default();
        let mut download_retries = None;
        if !f.model.is_empty() {
            let m = &f.model[r.weighted(f.model.iter().map(|m| m.weight))];
            device.manufacturer = m.manufacturer.clone();
            device.model = m.model.clone();
            if let Some(h) = &m.hardware {
                device.hardware_version = h.clone();
            }
            if !m.firmware.is_empty() {
                let fw = &m.firmware[r.weighted(m.firmware.iter().map(|f| f.weight))];
                device.firmware_version = fw.version.clone();
            }
            let speed = m.speed_mps.unwrap_or(Span::fixed(0.0));
            device.position.speed_mps = (speed.min, speed.max);
            download_retries = m.download_retries;
        }

        let (schedule, s) = match f.schedule.len() {
            0 => (None, None),
            _ => {
                let k = r.weighted(f.schedule.iter().map(|s| s.weight));
                (Some(k), f.schedule.get(k))
            }
        };
        let lifetime = s
            .and_then(|s| s.lifetime_s)
            .unwrap_or(Span::fixed(DEFAULT_LIFETIME_S))
            .draw_int(&mut r);
        let queue_mode = s.is_some_and(|s| s.queue_mode);
        let jitter = s.map_or(0.0, |s| s.jitter);
        let jittered = |v: Option<Span>, default: f64, r: &mut Rng| {
            let base = v.unwrap_or(Span::fixed(default)).draw(r);
            Duration::from_secs_f64((base * (1.0 + jitter * r.signed())).max(0.05))
        };
        let awake_window = jittered(s.and_then(|s| s.awake_s), DEFAULT_AWAKE_S, &mut r);
        let sleep_duration = jittered(s.and_then(|s| s.sleep_s), DEFAULT_SLEEP_S, &mut r);
        let schedule = match (schedule, s.and_then(|s| s.name.clone())) {
            (_, Some(n)) => n,
            (Some(k), None) => format!("schedule {}", k + 1),
            (None, None) => "default".into(),
        };

        let b = match f.bearer.len() {
            0 => None,
            _ => f.bearer.get(r.weighted(f.bearer.iter().map(|b| b.weight))),
        };
        let code = |n: &BearerName| bearer_code("", n).unwrap_or(7);
        if let Some(b) = b {
            device.radio.bearer = code(&b.kind);
            device.radio.available = match &b.available {
                Some(list) => list.iter().map(code).collect(),
                None => vec![device.radio.bearer],
            };
            if let Some(w) = b.wander_db {
                device.radio.wander_db = w;
            }
        }
        let rssi = b
            .and_then(|b| b.rssi_dbm)
            .map_or(device.radio.rssi_dbm, |s| s.draw_int(&mut r));
        device.radio.rssi_dbm = rssi;
        if b.and_then(|b| b.rssi_dbm).is_some() {
            // A device's signal wanders around its own level, not across the fleet's.
            device.radio.rssi_bounds = ((rssi - 10).max(-150), (rssi + 10).min(0));
        }
        // 10.64.0.1 upward: one address of the operator's private range each.
        let host = (i % 0x3F_FFFE) + 1;
        device.radio.ip_address = format!(
            "10.{}.{}.{}",
            64 + (host >> 16),
            (host >> 8) & 0xff,
            host & 0xff
        );

        let n = &f.network;
        let cellular = is_cellular(device.radio.bearer);
        let roaming = cellular && r.chance(n.roaming_share);
        let home = (n.home_mcc.unwrap_or(262), n.home_mnc.unwrap_or(1));
        let (mcc, mnc) = if roaming {
            let k = r.weighted(n.visited.iter().map(|v| v.weight));
            n.visited.get(k).map_or(home, |v| (v.mcc, v.mnc))
        } else {
            home
        };

        let region = match f.region.len() {
            0 => 0,
            _ => r.weighted(f.region.iter().map(|g| g.weight)),
        };
        if let Some(g) = f.region.get(region) {
            let angle = r.unit() * std::f64::consts::TAU;
            let dist = g.radius_m * r.unit().sqrt();
            let lat = g.latitude + dist * angle.cos() / 111_320.0;
            let per_lon = 111_320.0 * g.latitude.to_radians().cos().max(0.01);
            let lon = g.longitude + dist * angle.sin() / per_lon;
            device.position = Position {
                latitude: lat.clamp(-90.0, 90.0),
                longitude: (lon + 180.0).rem_euclid(360.0) - 180.0,
                area: Some((g.latitude, g.longitude, g.radius_m.max(1.0))),
                ..device.position
            };
            if let Some(t) = &g.utc_offset {
                device.utc_offset = t.clone();
            }
            if let Some(t) = &g.timezone {
                device.timezone = t.clone();
            }
        }
        let cell = cellular.then(|| {
            region * self.per_region as usize + r.below(u64::from(self.per_region)) as usize
        });
        device.radio.cellular = cell.map(|k| {
            let first = f.cells.first_id.unwrap_or(DEFAULT_CELL_ID);
            Cellular {
                cell_id: first.wrapping_add(k as u32) & CELL_ID_MASK,
                mcc,
                mnc,
                apn: n.apn.clone().unwrap_or_else(|| "iot.example".into()),
            }
        });

        let level = f
            .battery
            .level_pct
            .map_or(device.battery.level, |s| s.draw_int(&mut r));
        let drain = f.battery.drain_pct_per_h.map(|s| s.draw(&mut r));
        device.battery = Battery {
            level,
            drain_pct_per_h: drain,
        };

        let pick = |own: Option<Span>, all: Option<Span>| own.or(all);
        let latency = pick(b.and_then(|b| b.latency_ms), f.link.latency_ms).map_or(
            (Duration::ZERO, Duration::ZERO),
            |s| {
                (
                    Duration::from_secs_f64(s.min / 1000.0),
                    Duration::from_secs_f64(s.max / 1000.0),
                )
            },
        );
        let loss_up =
            pick(b.and_then(|b| b.loss_up), f.link.loss_up).map_or(0.0, |s| s.draw(&mut r));
        let loss_down =
            pick(b.and_then(|b| b.loss_down), f.link.loss_down).map_or(0.0, |s| s.draw(&mut r));
        let reboot_mean = f.reboot.as_ref().map(|x| x.mean_between_s.duration(&mut r));
        device.seed = Some(r.next_u64());
        let link_seed = r.next_u64();

        DeviceSetup {
            index: i,
            device,
            lifetime: u32::try_from(lifetime).unwrap_or(u32::MAX),
            queue_mode,
            schedule,
            awake_window,
            sleep_duration,
            sleep_jitter: jitter,
            rebind_on_wake: s.is_some_and(|s| s.rebind_on_wake),
            reboot_mean,
            roaming,
            cell,
            loss_up,
            loss_down,
            latency,
            link_seed,
            download_retries,
        }
    }

    /// The mix of the first `count` devices.
    pub fn mix(&self, count: usize) -> Mix {
        let mut mix = Mix::default();
        for i in 0..count {
            let d = self.device(i);
            tally(
                &mut mix.models,
                format!("{} {}", d.device.manufacturer, d.device.model),
            );
            tally(&mut mix.schedules, d.schedule);
            tally(&mut mix.bearers, d.device.radio.bearer);
            mix.queue_mode += usize::from(d.queue_mode);
            mix.roaming += usize::from(d.roaming);
        }
        mix
    }
}

/// A parse error with its place in the file.
fn syntax(text: &str, e: &toml::de::Error) -> ProfileError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        None => (0, 0),
    };
    let source_line = line
        .checked_sub(1)
        .and_then(|k| text.lines().nth(k))
        .unwrap_or("")
        .trim()
        .chars()
        .take(80)
        .collect();
    ProfileError::Syntax {
        line,
        column,
        source_line,
        message: e.message().trim_end().to_string(),
    }
}

fn check_link(
    prefix: &str,
    latency: Option<Span>,
    loss_up: Option<Span>,
    loss_down: Option<Span>,
) -> Result<(), ProfileError> {
    if let Some(l) = latency {
        span(&format!("{prefix}latency_ms"), l, 0.0, 60_000.0, " ms")?;
    }
    for (key, s) in [("loss_up", loss_up), ("loss_down", loss_down)] {
        if let Some(s) = s {
            shares(&format!("{prefix}{key}"), s)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
