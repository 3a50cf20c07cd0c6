//! The per-device rules: whether a device in an open wave may start now, must wait,
//! or is left out.
//!
//! Rules are checked in order of how final their answer is: billing first (no
//! amount of waiting helps), then roaming, battery, and the Wi-Fi preference last
//! because it is the only one that gives up by itself.
//! A critical campaign (a security fix) ignores roaming and the Wi-Fi preference, the
//! two rules about cost; it never ignores the battery, which is about bricking.

use serde::{Deserialize, Serialize};

use crate::facts::Packed;
use crate::policy::{RoamingRule, Rules};

/// Why a device is left out. A skip is final for the campaign's completion but is
/// looked at again when the device's facts change while the campaign runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    Roaming,
    Suspended,
}

/// Why a device waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferReason {
    /// Until it comes home.
    Roaming,
    /// Until it charges or is plugged in.
    LowBattery,
    /// Until it switches to Wi-Fi or the deferral runs out.
    Wifi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Eligible,
    Skip(SkipReason),
    /// `until`: when to look again without any new facts; `None` waits for them.
    Defer {
        reason: DeferReason,
        until: Option<u64>,
    },
}

/// Judges one device. `wifi_since` is when it was first deferred for Wi-Fi, so the
/// deferral's limit counts from then and not from the latest look.
pub(crate) fn evaluate(
    rules: &Rules,
    facts: &Packed,
    wifi_since: Option<u64>,
    now: u64,
) -> Verdict {
    if rules.skip_suspended && facts.suspended() {
        return Verdict::Skip(SkipReason::Suspended);
    }
    if facts.roaming() && !rules.critical {
        return match rules.roaming {
            RoamingRule::Skip => Verdict::Skip(SkipReason::Roaming),
            RoamingRule::Defer => Verdict::Defer {
                reason: DeferReason::Roaming,
                until: None,
            },
        };
    }
    if let (Some(min), Some(level)) = (rules.min_battery, facts.battery()) {
        if !facts.on_mains() && level < min {
            return Verdict::Defer {
                reason: DeferReason::LowBattery,
                until: None,
            };
        }
    }
    if rules.prefer_wifi && !rules.critical && facts.has_wifi() && !facts.bearer_is_wifi() {
        let until = wifi_since
            .unwrap_or(now)
            .saturating_add(rules.max_wifi_deferral_ms);
        if now < until {
            return Verdict::Defer {
                reason: DeferReason::Wifi,
                until: Some(until),
            };
        }
    }
    Verdict::Eligible
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::DeviceFacts;

    fn packed(f: impl FnOnce(&mut DeviceFacts)) -> Packed {
        let mut facts = DeviceFacts::new("ep");
        f(&mut facts);
        Packed::new(&facts, 0)
    }

    #[test]
    fn a_plain_device_is_eligible() {
        assert_eq!(
            evaluate(&Rules::default(), &packed(|_| {}), None, 0),
            Verdict::Eligible
        );
    }

    #[test]
    fn suspended_is_skipped_even_when_critical() {
        let rules = Rules {
            critical: true,
            ..Rules::default()
        };
        let p = packed(|f| f.billing_suspended = true);
        assert_eq!(
            evaluate(&rules, &p, None, 0),
            Verdict::Skip(SkipReason::Suspended)
        );
        let lenient = Rules {
            skip_suspended: false,
            ..Rules::default()
        };
        assert_eq!(evaluate(&lenient, &p, None, 0), Verdict::Eligible);
    }

    #[test]
    fn roaming_is_skipped_or_deferred_unless_critical() {
        let p = packed(|f| f.roaming = true);
        assert_eq!(
            evaluate(&Rules::default(), &p, None, 0),
            Verdict::Skip(SkipReason::Roaming)
        );
        let defer = Rules {
            roaming: RoamingRule::Defer,
            ..Rules::default()
        };
        assert_eq!(
            evaluate(&defer, &p, None, 0),
            Verdict::Defer {
                reason: DeferReason::Roaming,
                until: None
            }
        );
        let critical = Rules {
            critical: true,
            ..Rules::default()
        };
        assert_eq!(evaluate(&critical, &p, None, 0), Verdict::Eligible);
    }

    #[test]
    fn low_battery_waits_unless_on_mains_or_unknown() {
        let rules = Rules {
            min_battery: Some(30),
            critical: true,
            ..Rules::default()
        };
        let low = packed(|f| f.battery = Some(29));
        assert_eq!(
            evaluate(&rules, &low, None, 0),
            Verdict::Defer {
                reason: DeferReason::LowBattery,
                until: None
            },
            "critical does not override the battery"
        );
        let ok = packed(|f| f.battery = Some(30));
        assert_eq!(evaluate(&rules, &ok, None, 0), Verdict::Eligible);
        let mains = packed(|f| {
            f.battery = Some(5);
            f.on_mains = true;
        });
        assert_eq!(evaluate(&rules, &mains, None, 0), Verdict::Eligible);
        let unknown = packed(|f| f.battery = None);
        assert_eq!(evaluate(&rules, &unknown, None, 0), Verdict::Eligible);
        let off = Rules {
            min_battery: None,
            ..Rules::default()
        };
        assert_eq!(evaluate(&off, &low, None, 0), Verdict::Eligible);
    }

    #[test]
    fn wifi_preference_defers_up_to_the_limit_counted_from_the_first_deferral() {
        let rules = Rules {
            prefer_wifi: true,
            max_wifi_deferral_ms: 1_000,
            ..Rules::default()
        };
        let cellular = packed(|f| f.has_wifi = true);
        assert_eq!(
            evaluate(&rules, &cellular, None, 100),
            Verdict::Defer {
                reason: DeferReason::Wifi,
                until: Some(1_100)
            }
        );
        assert_eq!(
            evaluate(&rules, &cellular, Some(100), 900),
            Verdict::Defer {
                reason: DeferReason::Wifi,
                until: Some(1_100)
            }
        );
        assert_eq!(
            evaluate(&rules, &cellular, Some(100), 1_100),
            Verdict::Eligible
        );
        let on_wifi = packed(|f| {
            f.has_wifi = true;
            f.bearer_is_wifi = true;
        });
        assert_eq!(evaluate(&rules, &on_wifi, None, 0), Verdict::Eligible);
        let no_wifi = packed(|_| {});
        assert_eq!(evaluate(&rules, &no_wifi, None, 0), Verdict::Eligible);
        let critical = Rules {
            critical: true,
            ..rules.clone()
        };
        assert_eq!(evaluate(&critical, &cellular, None, 0), Verdict::Eligible);
        let zero = Rules {
            max_wifi_deferral_ms: 0,
            ..rules
        };
        assert_eq!(evaluate(&zero, &cellular, None, 0), Verdict::Eligible);
    }

    #[test]
    fn order_suspended_before_roaming_before_battery() {
        let p = packed(|f| {
            f.billing_suspended = true;
            f.roaming = true;
            f.battery = Some(1);
        });
        assert_eq!(
            evaluate(&Rules::default(), &p, None, 0),
            Verdict::Skip(SkipReason::Suspended)
        );
        let p = packed(|f| {
            f.roaming = true;
            f.battery = Some(1);
        });
        assert_eq!(
            evaluate(&Rules::default(), &p, None, 0),
            Verdict::Skip(SkipReason::Roaming)
        );
    }
}
