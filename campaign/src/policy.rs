//! The operator's policy for one campaign, as it arrives over HTTP as JSON.
//!
//! Every field has a default so that `{}` is a usable policy, unknown fields are
//! refused (a misspelt `max_concurent` must not silently mean "use the default"),
//! and [`Policy::validate`] bounds every number: a policy is untrusted input and the
//! scheduler sizes its work from it.

use serde::{Deserialize, Serialize};

use crate::windows::{MaintenanceWindow, WindowError};

/// Most waves a policy may list; more would not be a rollout plan but a typo.
pub const MAX_WAVES: usize = 100;
/// Most maintenance windows a policy may list.
pub const MAX_WINDOWS: usize = 16;
/// Most attempts per device: each one costs a download over a cellular link.
pub const MAX_ATTEMPTS: u16 = 20;
/// Largest global concurrency.
pub const MAX_CONCURRENT: u32 = 100_000;
/// Largest absolute wave size.
pub const MAX_WAVE_COUNT: u64 = 10_000_000;
/// Longest delay of any kind (back-off, deferral, overhead): thirty days.
pub const MAX_DELAY_MS: u64 = 30 * 86_400_000;
/// Longest maintenance window: seven days.
pub const MAX_WINDOW_MS: u64 = 7 * 86_400_000;
/// Most unfit wakes before a queue-mode device is dispatched anyway.
pub const MAX_UNFIT_WAKES: u8 = 100;
/// Largest bandwidth figure accepted (1 Tbit/s); keeps the arithmetic far from overflow.
pub const MAX_BPS: u64 = 1_000_000_000_000;

/// One wave's size: an absolute count, or a percentage of the campaign's devices at
/// the moment the wave opens (so joins before then are counted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WaveSize {
    Count(u64),
    Percent(f64),
}

impl WaveSize {
    /// How many devices this wave takes out of `total`, at least one.
    pub fn devices_of(&self, total: usize) -> usize {
        let n = match *self {
            WaveSize::Count(c) => usize::try_from(c).unwrap_or(usize::MAX),
            // Percent is validated to (0, 100]; ceil so 1 % of 50 devices is one, not none.
            WaveSize::Percent(p) => (p / 100.0 * total as f64).ceil() as usize,
        };
        n.max(1)
    }
}

/// Whether failures are counted over the wave they happen in or the whole campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdScope {
    #[default]
    Wave,
    Campaign,
}

/// The failure fraction that pauses the campaign: a bad package is noticed on the
/// first few devices of a wave and stops there instead of bricking the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorThreshold {
    /// Failed / (succeeded + failed), in (0, 1]; reaching it pauses.
    pub fraction: f64,
    /// Finished devices needed before the fraction means anything.
    pub min_sample: u32,
    pub scope: ThresholdScope,
}

impl Default for ErrorThreshold {
    fn default() -> Self {
        ErrorThreshold {
            fraction: 0.2,
            min_sample: 10,
            scope: ThresholdScope::Wave,
        }
    }
}

/// A maintenance window as the operator writes it; compiled by
/// [`MaintenanceWindow::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Five-field cron expression (minute hour day-of-month month day-of-week) for
    /// the window's start, on the wall clock of `tz`.
    pub cron: String,
    /// Real (not wall-clock) length of the window, so a window across a DST change
    /// lasts as long as any other.
    pub duration_ms: u64,
    /// IANA time zone name.
    #[serde(default = "utc")]
    pub tz: String,
}

fn utc() -> String {
    "UTC".to_string()
}

/// What to do with a roaming device (unless the campaign is critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoamingRule {
    /// Leave it out while it roams; it rejoins if it comes home before the end.
    #[default]
    Skip,
    /// Keep it waiting until it comes home (the campaign stays open for it).
    Defer,
}

/// Per-device rules: where an update would cost money, battery or a brick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// A security fix: roaming devices and cellular-only moments are not waited out.
    pub critical: bool,
    pub roaming: RoamingRule,
    /// Defer a device that has Wi-Fi but is on cellular now, hoping it switches.
    pub prefer_wifi: bool,
    /// How long such a device is waited for before cellular is used anyway.
    pub max_wifi_deferral_ms: u64,
    /// Battery percentage below which a device not on mains waits. A device that
    /// reports no battery level is not held back: it has no battery object, which on
    /// the devices we see means mains power.
    pub min_battery: Option<u8>,
    /// Skip devices whose billing is suspended.
    pub skip_suspended: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            critical: false,
            roaming: RoamingRule::Skip,
            prefer_wifi: false,
            max_wifi_deferral_ms: 86_400_000,
            min_battery: Some(20),
            skip_suspended: true,
        }
    }
}

/// Back-off between attempts of one device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    pub initial_ms: u64,
    pub factor: f64,
    pub max_ms: u64,
    /// Attempts per device, the first included.
    pub max_attempts: u16,
    /// Fraction in [0, 1] by which a delay may be shortened, so devices that failed
    /// together (a cell outage) do not all come back in the same second.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_ms: 60_000,
            factor: 2.0,
            max_ms: 3_600_000,
            max_attempts: 3,
            jitter: 0.2,
        }
    }
}

/// How queue-mode devices are fitted into their wake windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WakePolicy {
    /// Fixed part of an update's duration on top of the transfer (writing the URI,
    /// Execute, reboot, registration, verification).
    pub overhead_ms: u64,
    /// After this many wakes too short for the estimate, the next wake dispatches
    /// anyway: a device downloading stays awake longer than its idle wake, and a
    /// device that never fits must not hold the campaign open for ever. `None`
    /// waits for a wake that fits (or the deadline).
    pub force_after_unfit_wakes: Option<u8>,
}

impl Default for WakePolicy {
    fn default() -> Self {
        WakePolicy {
            overhead_ms: 120_000,
            force_after_unfit_wakes: Some(3),
        }
    }
}

/// A campaign's whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Wave sizes in order; the last wave takes every device the earlier ones left,
    /// and later joiners once it is open.
    pub waves: Vec<WaveSize>,
    /// Fraction of a wave's devices (those skipped by rules left out) that must
    /// succeed before the next wave opens.
    pub success_threshold: f64,
    /// `null` disables automatic pausing.
    pub error_threshold: Option<ErrorThreshold>,
    pub max_concurrent: u32,
    /// Bit rate one download takes from its cell.
    pub device_rate_bps: u64,
    /// Bandwidth of a cell the network-status API does not know, and of the bucket of
    /// devices with no known cell.
    pub default_cell_bps: u64,
    /// Starts happen only inside one of these, when any is given.
    pub windows: Vec<WindowSpec>,
    pub wake: WakePolicy,
    pub rules: Rules,
    /// No device starts at or after this instant; the rest end as missed.
    pub deadline_unix_ms: Option<u64>,
    pub retry: RetryPolicy,
    /// Devices that start matching the target while the campaign runs join it.
    pub join_new_members: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            waves: vec![WaveSize::Percent(100.0)],
            success_threshold: 0.9,
            error_threshold: Some(ErrorThreshold::default()),
            max_concurrent: 100,
            device_rate_bps: 64_000,
            default_cell_bps: 1_000_000,
            windows: Vec::new(),
            wake: WakePolicy::default(),
            rules: Rules::default(),
            deadline_unix_ms: None,
            retry: RetryPolicy::default(),
            join_new_members: false,
        }
    }
}

/// Why a policy was refused; each names the field so the operator can fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid JSON for this schema: {0}")]
    Json(String),
    #[error("waves: between 1 and {MAX_WAVES} waves are needed, got {0}")]
    WaveCount(usize),
    #[error("waves[{index}]: {reason}")]
    Wave { index: usize, reason: String },
    #[error("{field}: {value} is not a fraction in {range}")]
    Fraction {
        field: &'static str,
        value: f64,
        range: &'static str,
    },
    #[error("{field}: {value} is outside {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("retry.max_ms ({max_ms}) is below retry.initial_ms ({initial_ms})")]
    BackoffOrder { initial_ms: u64, max_ms: u64 },
    #[error("windows: at most {MAX_WINDOWS} windows, got {0}")]
    WindowCount(usize),
    #[error("windows[{index}]: {source}")]
    Window {
        index: usize,
        #[source]
        source: WindowError,
    },
    #[error("deadline_unix_ms {deadline} is not after the campaign's creation at {now}")]
    DeadlinePassed { deadline: u64, now: u64 },
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), PolicyError> {
    if value < min || value > max {
        return Err(PolicyError::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

fn fraction(
    field: &'static str,
    value: f64,
    zero_allowed: bool,
    range: &'static str,
) -> Result<(), PolicyError> {
    let low_ok = if zero_allowed {
        value >= 0.0
    } else {
        value > 0.0
    };
    if !(value.is_finite() && low_ok && value <= 1.0) {
        return Err(PolicyError::Fraction {
            field,
            value,
            range,
        });
    }
    Ok(())
}

impl Policy {
    /// Parses and validates an operator's JSON.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy =
            serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks every bound; the scheduler relies on these and does not re-check.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.waves.is_empty() || self.waves.len() > MAX_WAVES {
            return Err(PolicyError::WaveCount(self.waves.len()));
        }
        for (index, w) in self.waves.iter().enumerate() {
            let reason = match *w {
                WaveSize::Count(c) if c == 0 || c > MAX_WAVE_COUNT => {
                    Some(format!("count {c} is outside 1..={MAX_WAVE_COUNT}"))
                }
                WaveSize::Percent(p) if !(p.is_finite() && p > 0.0 && p <= 100.0) => {
                    Some(format!("percent {p} is outside (0, 100]"))
                }
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(PolicyError::Wave { index, reason });
            }
        }
        fraction("success_threshold", self.success_threshold, true, "[0, 1]")?;
        if let Some(t) = &self.error_threshold {
            fraction("error_threshold.fraction", t.fraction, false, "(0, 1]")?;
            range(
                "error_threshold.min_sample",
                t.min_sample.into(),
                1,
                1_000_000,
            )?;
        }
        range(
            "max_concurrent",
            self.max_concurrent.into(),
            1,
            MAX_CONCURRENT.into(),
        )?;
        range("device_rate_bps", self.device_rate_bps, 1, MAX_BPS)?;
        range("default_cell_bps", self.default_cell_bps, 1, MAX_BPS)?;
        if self.windows.len() > MAX_WINDOWS {
            return Err(PolicyError::WindowCount(self.windows.len()));
        }
        for (index, spec) in self.windows.iter().enumerate() {
            MaintenanceWindow::new(spec).map_err(|source| PolicyError::Window { index, source })?;
        }
        range("wake.overhead_ms", self.wake.overhead_ms, 0, MAX_DELAY_MS)?;
        if let Some(n) = self.wake.force_after_unfit_wakes {
            range(
                "wake.force_after_unfit_wakes",
                n.into(),
                1,
                MAX_UNFIT_WAKES.into(),
            )?;
        }
        range(
            "rules.max_wifi_deferral_ms",
            self.rules.max_wifi_deferral_ms,
            0,
            MAX_DELAY_MS,
        )?;
        if let Some(b) = self.rules.min_battery {
            range("rules.min_battery", b.into(), 0, 100)?;
        }
        let r = &self.retry;
        range("retry.initial_ms", r.initial_ms, 1, MAX_DELAY_MS)?;
        range("retry.max_ms", r.max_ms, 1, MAX_DELAY_MS)?;
        if r.max_ms < r.initial_ms {
            return Err(PolicyError::BackoffOrder {
                initial_ms: r.initial_ms,
                max_ms: r.max_ms,
            });
        }
        if !(r.factor.is_finite() && (1.0..=10.0).contains(&r.factor)) {
            return Err(PolicyError::Fraction {
                field: "retry.factor",
                value: r.factor,
                range: "[1, 10]",
            });
        }
        range(
            "retry.max_attempts",
            r.max_attempts.into(),
            1,
            MAX_ATTEMPTS.into(),
        )?;
        fraction("retry.jitter", r.jitter, true, "[0, 1]")?;
        Ok(())
    }

    /// Estimated length of one device's whole update: the transfer at
    /// `device_rate_bps` plus the fixed overhead. Saturates rather than overflows.
    pub fn estimated_update_ms(&self, package_size_bytes: u64) -> u64 {
        let bits = u128::from(package_size_bytes) * 8 * 1000;
        let transfer = bits.div_ceil(u128::from(self.device_rate_bps.max(1)));
        u64::try_from(transfer)
            .unwrap_or(u64::MAX)
            .saturating_add(self.wake.overhead_ms)
    }

    /// Concurrent downloads a cell can carry: its bandwidth over the per-device rate,
    /// at least one when it has any bandwidth, none when congested or down.
    pub fn cell_cap(&self, status: Option<&crate::cells::CellStatus>) -> u32 {
        let bps = match status {
            Some(s) if s.congested => return 0,
            Some(s) => s.available_bps,
            None => self.default_cell_bps,
        };
        if bps == 0 {
            return 0;
        }
        let cap = bps / self.device_rate_bps.max(1);
        u32::try_from(cap).unwrap_or(u32::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::CellStatus;

    #[test]
    fn empty_json_is_the_default_and_valid() {
        let p = Policy::from_json("{}").unwrap();
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn the_example_waves_parse() {
        let p = Policy::from_json(
            r#"{"waves":[{"percent":1},{"count":100},{"percent":100}],"success_threshold":0.9}"#,
        )
        .unwrap();
        assert_eq!(
            p.waves,
            vec![
                WaveSize::Percent(1.0),
                WaveSize::Count(100),
                WaveSize::Percent(100.0)
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = Policy::from_json(r#"{"max_concurent": 5}"#).unwrap_err();
        assert!(matches!(e, PolicyError::Json(m) if m.contains("max_concurent")));
        let e = Policy::from_json(r#"{"rules":{"roamin":"skip"}}"#).unwrap_err();
        assert!(matches!(e, PolicyError::Json(_)));
    }

    #[test]
    fn bounds_are_enforced_with_the_field_named() {
        let cases = [
            (r#"{"waves":[]}"#, "waves"),
            (r#"{"waves":[{"count":0}]}"#, "waves[0]"),
            (r#"{"waves":[{"percent":100},{"percent":150}]}"#, "waves[1]"),
            (r#"{"waves":[{"percent":-1}]}"#, "waves[0]"),
            (r#"{"success_threshold":1.5}"#, "success_threshold"),
            (
                r#"{"error_threshold":{"fraction":0}}"#,
                "error_threshold.fraction",
            ),
            (
                r#"{"error_threshold":{"min_sample":0}}"#,
                "error_threshold.min_sample",
            ),
            (r#"{"max_concurrent":0}"#, "max_concurrent"),
            (r#"{"device_rate_bps":0}"#, "device_rate_bps"),
            (r#"{"retry":{"max_attempts":0}}"#, "retry.max_attempts"),
            (r#"{"retry":{"max_attempts":21}}"#, "retry.max_attempts"),
            (r#"{"retry":{"factor":0.5}}"#, "retry.factor"),
            (r#"{"retry":{"jitter":2}}"#, "retry.jitter"),
            (r#"{"retry":{"initial_ms":10,"max_ms":5}}"#, "retry.max_ms"),
            (r#"{"rules":{"min_battery":101}}"#, "rules.min_battery"),
            (
                r#"{"wake":{"force_after_unfit_wakes":0}}"#,
                "wake.force_after_unfit_wakes",
            ),
            (
                r#"{"windows":[{"cron":"nope","duration_ms":1000}]}"#,
                "windows[0]",
            ),
        ];
        for (json, field) in cases {
            let e = Policy::from_json(json).expect_err(json);
            assert!(e.to_string().contains(field), "{json}: {e}");
        }
    }

    #[test]
    fn too_many_waves_or_windows() {
        let mut p = Policy {
            waves: vec![WaveSize::Count(1); MAX_WAVES + 1],
            ..Policy::default()
        };
        assert_eq!(p.validate(), Err(PolicyError::WaveCount(MAX_WAVES + 1)));
        p.waves = vec![WaveSize::Count(1)];
        p.windows = vec![
            WindowSpec {
                cron: "0 1 * * *".into(),
                duration_ms: 3_600_000,
                tz: "UTC".into()
            };
            MAX_WINDOWS + 1
        ];
        assert_eq!(p.validate(), Err(PolicyError::WindowCount(MAX_WINDOWS + 1)));
    }

    #[test]
    fn error_threshold_can_be_disabled() {
        let p = Policy::from_json(r#"{"error_threshold":null}"#).unwrap();
        assert_eq!(p.error_threshold, None);
    }

    #[test]
    fn wave_sizes_round_up_and_never_vanish() {
        assert_eq!(WaveSize::Percent(1.0).devices_of(50), 1);
        assert_eq!(WaveSize::Percent(1.0).devices_of(250), 3);
        assert_eq!(WaveSize::Percent(100.0).devices_of(7), 7);
        assert_eq!(WaveSize::Percent(50.0).devices_of(0), 1);
        assert_eq!(WaveSize::Count(100).devices_of(7), 100);
    }

    #[test]
    fn cell_cap_floor_of_bandwidth_over_rate() {
        let p = Policy {
            device_rate_bps: 100_000,
            default_cell_bps: 350_000,
            ..Policy::default()
        };
        let s = |bps, congested| CellStatus {
            available_bps: bps,
            congested,
        };
        assert_eq!(p.cell_cap(Some(&s(1_000_000, false))), 10);
        assert_eq!(p.cell_cap(Some(&s(199_999, false))), 1);
        assert_eq!(p.cell_cap(Some(&s(50, false))), 1, "some bandwidth: one");
        assert_eq!(p.cell_cap(Some(&s(0, false))), 0, "down");
        assert_eq!(p.cell_cap(Some(&s(1_000_000, true))), 0, "congested");
        assert_eq!(p.cell_cap(None), 3, "default bandwidth");
        assert_eq!(p.cell_cap(Some(&s(u64::MAX, false))), u32::MAX);
    }

    #[test]
    fn update_estimate_is_transfer_plus_overhead() {
        let p = Policy {
            device_rate_bps: 80_000,
            ..Policy::default()
        };
        // 1 MB at 80 kbit/s = 100 s, plus 120 s overhead.
        assert_eq!(p.estimated_update_ms(1_000_000), 220_000);
        assert_eq!(p.estimated_update_ms(0), 120_000);
        let slow = Policy {
            device_rate_bps: 1,
            ..Policy::default()
        };
        assert_eq!(slow.estimated_update_ms(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn policy_round_trips_through_json() {
        let p = Policy::from_json(
            r#"{"waves":[{"count":5},{"percent":100}],"windows":[{"cron":"0 1 * * *","duration_ms":3600000,"tz":"Europe/Berlin"}],"rules":{"critical":true,"roaming":"defer","prefer_wifi":true},"deadline_unix_ms":5,"join_new_members":true}"#,
        )
        .unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(Policy::from_json(&text).unwrap(), p);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_json_never_panics(text in ".{0,200}") {
            let _ = Policy::from_json(&text);
        }

        #[test]
        fn arbitrary_numbers_never_panic(
            conc in proptest::num::u32::ANY,
            rate in proptest::num::u64::ANY,
            pct in proptest::num::f64::ANY,
            factor in proptest::num::f64::ANY,
            attempts in proptest::num::u16::ANY,
        ) {
            let p = Policy {
                waves: vec![WaveSize::Percent(pct)],
                max_concurrent: conc,
                device_rate_bps: rate,
                retry: RetryPolicy { factor, max_attempts: attempts, ..RetryPolicy::default() },
                ..Policy::default()
            };
            if p.validate().is_ok() {
                let _ = p.estimated_update_ms(u64::MAX);
                let _ = p.waves[0].devices_of(usize::MAX);
            }
        }
    }
}
