//! The scheduler's decisions on a clock of the tests' own.

use super::*;
use crate::cells::CellStatus;
use crate::policy::{ErrorThreshold, RoamingRule, Rules, ThresholdScope, WaveSize, WindowSpec};
use crate::rules::{DeferReason, SkipReason};

/// 2025-06-15T00:00:00Z.
const T0: u64 = 1_749_945_600_000;
const S: u64 = 1_000;
const MIN: u64 = 60 * S;
const H: u64 = 60 * MIN;

/// Everything permissive: one wave, no thresholds, no rules, rate 100 kbit/s.
fn open_policy() -> Policy {
    Policy {
        waves: vec![WaveSize::Percent(100.0)],
        success_threshold: 0.0,
        error_threshold: None,
        max_concurrent: 10_000,
        device_rate_bps: 100_000,
        default_cell_bps: 1_000_000,
        rules: Rules {
            min_battery: None,
            ..Rules::default()
        },
        ..Policy::default()
    }
}

fn campaign(policy: Policy) -> Campaign {
    Campaign::new("c1", "pkg", 1_000_000, policy, T0).unwrap()
}

fn dev(name: &str, cell: Option<&str>) -> DeviceFacts {
    DeviceFacts {
        cell: cell.map(str::to_string),
        ..DeviceFacts::new(name)
    }
}

fn devs(prefix: &str, n: usize, cell: Option<&str>) -> Vec<DeviceFacts> {
    (0..n).map(|i| dev(&format!("{prefix}{i}"), cell)).collect()
}

fn table(cells: &[(&str, u64)]) -> CellTable {
    cells
        .iter()
        .map(|&(c, bps)| {
            (
                c,
                CellStatus {
                    available_bps: bps,
                    congested: false,
                },
            )
        })
        .collect()
}

fn starts(d: &[Decision]) -> Vec<String> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Start { endpoint, .. } => Some(endpoint.clone()),
            _ => None,
        })
        .collect()
}

fn pauses(d: &[Decision]) -> Vec<String> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Pause { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn ok(c: &mut Campaign, ep: &str, now: u64) {
    c.report(ep, Outcome::Succeeded, now).unwrap();
}

fn fail(c: &mut Campaign, ep: &str, kind: FailureKind, now: u64) -> StateKind {
    c.report(ep, Outcome::failed(kind, "test"), now).unwrap()
}

/// A device's slot and saved row.
type SavedRow = (u32, serde_json::Value);

/// The campaign as the server saves it: its header and the rows of every device.
fn saved(c: &Campaign) -> (serde_json::Value, Vec<SavedRow>) {
    let rows = (0..c.devices.len() as u32)
        .filter_map(|s| Some((s, serde_json::to_value(c.row(s)?).unwrap())))
        .collect();
    (serde_json::to_value(c).unwrap(), rows)
}

fn restored(header: serde_json::Value, rows: Vec<SavedRow>) -> Result<Campaign, String> {
    let header: Header = serde_json::from_value(header).map_err(|e| e.to_string())?;
    let rows = rows
        .into_iter()
        .map(|(s, r)| Ok((s, serde_json::from_value::<Row>(r)?)))
        .collect::<Result<Vec<_>, serde_json::Error>>()
        .map_err(|e| e.to_string())?;
    Campaign::restore(header, rows)
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

fn reload(c: &Campaign) -> Campaign {
    let (header, rows) = saved(c);
    restored(header, rows).unwrap()
}

fn kind(c: &Campaign, ep: &str) -> StateKind {
    c.device(ep).unwrap().kind
}

fn in_cell(c: &Campaign, cell: &str) -> usize {
    c.in_flight_per_cell()
        .get(&Some(cell.to_string()))
        .copied()
        .unwrap_or(0)
}

// ---- metering ----

#[test]
fn a_cells_cap_holds_when_many_devices_wake_at_once() {
    let mut c = campaign(open_policy());
    let mut batch = devs("q", 50, Some("a"));
    for f in &mut batch {
        f.queue_mode = true;
    }
    c.add_devices(batch, T0).unwrap();
    // 300 kbit/s over 100 kbit/s per device: three at a time.
    let t = table(&[("a", 300_000)]);
    assert!(starts(&c.poll(T0, &t)).is_empty(), "all asleep");
    for i in 0..50 {
        c.device_woke(&format!("q{i}"), T0 + 2 * H, T0 + S).unwrap();
    }
    let first = starts(&c.poll(T0 + S, &t));
    assert_eq!(first.len(), 3);
    assert_eq!(in_cell(&c, "a"), 3);
    assert!(starts(&c.poll(T0 + 2 * S, &t)).is_empty(), "still full");
    ok(&mut c, &first[0], T0 + 3 * S);
    let next = starts(&c.poll(T0 + 3 * S, &t));
    assert_eq!(next.len(), 1, "one slot freed, one start");
    assert_eq!(in_cell(&c, "a"), 3);
    assert!(c.in_flight_per_cell().values().all(|&n| n <= 3));
    c.audit().unwrap();
}

#[test]
fn unknown_cells_share_one_bucket_at_the_default_cap() {
    let mut c = campaign(Policy {
        default_cell_bps: 200_000,
        ..open_policy()
    });
    c.add_devices(devs("u", 5, None), T0).unwrap();
    // A cell the table does not know also gets the default, in its own bucket.
    c.add_devices(devs("x", 5, Some("unlisted")), T0).unwrap();
    let d = c.poll(T0, &CellTable::new());
    assert_eq!(starts(&d).len(), 4);
    assert_eq!(c.in_flight_per_cell().get(&None), Some(&2));
    assert_eq!(in_cell(&c, "unlisted"), 2);
}

#[test]
fn the_global_cap_holds_and_cells_take_turns() {
    let mut c = campaign(Policy {
        max_concurrent: 6,
        ..open_policy()
    });
    for cell in ["a", "b", "c"] {
        c.add_devices(devs(cell, 10, Some(cell)), T0).unwrap();
    }
    let t = table(&[("a", 1_000_000), ("b", 1_000_000), ("c", 1_000_000)]);
    let s = starts(&c.poll(T0, &t));
    assert_eq!(s.len(), 6);
    assert_eq!(c.in_flight(), 6);
    for cell in ["a", "b", "c"] {
        assert_eq!(in_cell(&c, cell), 2, "round robin over cells");
    }
    assert!(starts(&c.poll(T0 + S, &t)).is_empty());
    ok(&mut c, &s[0], T0 + 2 * S);
    assert_eq!(starts(&c.poll(T0 + 2 * S, &t)).len(), 1);
}

#[test]
fn a_congested_cell_starts_nothing_until_the_table_says_otherwise() {
    let mut c = campaign(open_policy());
    c.add_devices(devs("d", 4, Some("a")), T0).unwrap();
    let mut t = CellTable::new();
    t.insert(
        "a",
        CellStatus {
            available_bps: 1_000_000,
            congested: true,
        },
    );
    assert!(starts(&c.poll(T0, &t)).is_empty());
    assert!(starts(&c.poll(T0 + S, &t)).is_empty());
    t.insert(
        "a",
        CellStatus {
            available_bps: 200_000,
            congested: false,
        },
    );
    assert_eq!(starts(&c.poll(T0 + 2 * S, &t)).len(), 2);
    // A shrinking cell aborts nothing but takes no new device.
    t.insert(
        "a",
        CellStatus {
            available_bps: 100_000,
            congested: false,
        },
    );
    let first = c
        .devices()
        .find(|(_, k)| *k == StateKind::InProgress)
        .unwrap()
        .0
        .to_string();
    ok(&mut c, &first, T0 + 3 * S);
    assert!(
        starts(&c.poll(T0 + 3 * S, &t)).is_empty(),
        "1 in flight, cap 1"
    );
    assert_eq!(in_cell(&c, "a"), 1);
}

#[test]
fn full_cells_give_nothing_to_do_at_twenty_thousand_devices() {
    let mut c = campaign(Policy {
        max_concurrent: 100_000,
        ..open_policy()
    });
    let mut batch = Vec::new();
    for i in 0..20_000 {
        batch.push(dev(&format!("d{i}"), Some(&format!("cell{}", i % 2_000))));
    }
    c.add_devices(batch, T0).unwrap();
    // Cap 1 in every cell.
    let t: CellTable = (0..2_000)
        .map(|i| {
            (
                format!("cell{i}"),
                CellStatus {
                    available_bps: 100_000,
                    congested: false,
                },
            )
        })
        .collect();
    assert_eq!(starts(&c.poll(T0, &t)).len(), 2_000);
    // Polls with every cell full start nothing (and look at no cell nor device: speed
    // is measured by benchmarks, not asserted here).
    for i in 0..2_000 {
        assert!(c.poll(T0 + i, &t).is_empty());
    }
}

// ---- waves ----

#[test]
fn waves_open_on_the_success_threshold() {
    let mut c = campaign(Policy {
        waves: vec![
            WaveSize::Count(10),
            WaveSize::Percent(50.0),
            WaveSize::Percent(100.0),
        ],
        success_threshold: 0.9,
        default_cell_bps: 100_000_000,
        ..open_policy()
    });
    c.add_devices(devs("d", 100, None), T0).unwrap();
    let t = CellTable::new();
    let w1 = starts(&c.poll(T0, &t));
    assert_eq!(w1.len(), 10, "wave 1 is ten devices");
    assert!(w1.iter().all(|e| c.device(e).unwrap().wave == Some(0)));
    for e in &w1[..8] {
        ok(&mut c, e, T0 + MIN);
    }
    assert!(starts(&c.poll(T0 + MIN, &t)).is_empty(), "8 of 10 < 90 %");
    ok(&mut c, &w1[8], T0 + 2 * MIN);
    let w2 = starts(&c.poll(T0 + 2 * MIN, &t));
    assert_eq!(w2.len(), 50, "50 % of the 100 devices");
    assert!(w2.iter().all(|e| c.device(e).unwrap().wave == Some(1)));
    for e in &w2[..45] {
        ok(&mut c, e, T0 + 3 * MIN);
    }
    let w3 = starts(&c.poll(T0 + 3 * MIN, &t));
    assert_eq!(w3.len(), 40, "the last wave takes the rest");
    let p = c.progress(T0 + 3 * MIN, &t);
    assert_eq!(p.waves.len(), 3);
    assert_eq!(p.waves[0].size, 10);
    assert_eq!(p.waves[1].counts.succeeded, 45);
    assert_eq!(p.waves[2].counts.in_progress, 40);
    c.audit().unwrap();
}

#[test]
fn skipped_devices_do_not_count_against_the_success_threshold() {
    let mut c = campaign(Policy {
        waves: vec![WaveSize::Count(10), WaveSize::Percent(100.0)],
        success_threshold: 0.9,
        ..open_policy()
    });
    let mut batch = devs("d", 20, None);
    for f in &mut batch[..5] {
        f.roaming = true;
    }
    c.add_devices(batch, T0).unwrap();
    let t = CellTable::new();
    let w1 = starts(&c.poll(T0, &t));
    assert_eq!(w1.len(), 5, "five of the ten are roaming and skipped");
    for i in 0..5 {
        assert_eq!(
            c.device(&format!("d{i}")).unwrap().state,
            DeviceState::Skipped {
                reason: SkipReason::Roaming
            }
        );
    }
    for e in &w1[..4] {
        ok(&mut c, e, T0 + MIN);
    }
    assert!(starts(&c.poll(T0 + MIN, &t)).is_empty(), "4 of 5 < 90 %");
    ok(&mut c, &w1[4], T0 + MIN);
    assert_eq!(starts(&c.poll(T0 + MIN, &t)).len(), 10);
}

#[test]
fn a_wave_that_ends_below_the_threshold_pauses_and_resume_goes_on() {
    let mut c = campaign(Policy {
        waves: vec![WaveSize::Count(4), WaveSize::Percent(100.0)],
        success_threshold: 0.75,
        ..open_policy()
    });
    c.add_devices(devs("d", 10, None), T0).unwrap();
    let t = CellTable::new();
    let w1 = starts(&c.poll(T0, &t));
    ok(&mut c, &w1[0], T0 + MIN);
    ok(&mut c, &w1[1], T0 + MIN);
    fail(&mut c, &w1[2], FailureKind::UpdateFailed, T0 + MIN);
    assert!(c.poll(T0 + MIN, &t).is_empty(), "one still running");
    fail(&mut c, &w1[3], FailureKind::InvalidUri, T0 + 2 * MIN);
    let d = c.poll(T0 + 2 * MIN, &t);
    let p = pauses(&d);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].contains("wave 1") && p[0].contains("2 of 4"),
        "{}",
        p[0]
    );
    assert!(matches!(
        c.status(),
        Status::Paused {
            cause: PauseCause::WaveGate { wave: 0 },
            ..
        }
    ));
    assert!(c.poll(T0 + 3 * MIN, &t).is_empty(), "said once");
    c.resume(T0 + 4 * MIN).unwrap();
    assert_eq!(starts(&c.poll(T0 + 4 * MIN, &t)).len(), 6);
}

// ---- error threshold ----

#[test]
fn the_error_threshold_pauses_with_a_reason_after_the_minimum_sample() {
    let mut c = campaign(Policy {
        error_threshold: Some(ErrorThreshold {
            fraction: 0.2,
            min_sample: 10,
            scope: ThresholdScope::Wave,
        }),
        max_concurrent: 20,
        default_cell_bps: 100_000_000,
        ..open_policy()
    });
    c.add_devices(devs("d", 40, None), T0).unwrap();
    let t = CellTable::new();
    let s = starts(&c.poll(T0, &t));
    assert_eq!(s.len(), 20);
    // Three failures in the first five: alarming, but below the minimum sample.
    for e in &s[..3] {
        fail(&mut c, e, FailureKind::UpdateFailed, T0 + MIN);
    }
    for e in &s[3..5] {
        ok(&mut c, e, T0 + MIN);
    }
    let d = c.poll(T0 + MIN, &t);
    assert!(pauses(&d).is_empty());
    assert_eq!(starts(&d).len(), 5);
    for e in &s[5..10] {
        ok(&mut c, e, T0 + 2 * MIN);
    }
    let d = c.poll(T0 + 2 * MIN, &t);
    let p = pauses(&d);
    assert_eq!(p.len(), 1, "{d:?}");
    assert!(p[0].contains("3 of 10") && p[0].contains("30%"), "{}", p[0]);
    assert!(starts(&d).is_empty());
    assert!(matches!(
        c.status(),
        Status::Paused {
            cause: PauseCause::ErrorThreshold,
            ..
        }
    ));
    // Reports still count while paused.
    ok(&mut c, &s[10], T0 + 3 * MIN);
    assert!(c.poll(T0 + 3 * MIN, &t).is_empty());
    // After resuming, the sample starts afresh: no immediate pause.
    c.resume(T0 + 4 * MIN).unwrap();
    let d = c.poll(T0 + 4 * MIN, &t);
    assert!(pauses(&d).is_empty());
    assert!(!starts(&d).is_empty());
    assert_eq!(c.resume(T0), Err(CampaignError::NotPaused));
}

#[test]
fn the_error_threshold_over_the_whole_campaign() {
    let mut c = campaign(Policy {
        waves: vec![WaveSize::Count(5), WaveSize::Percent(100.0)],
        success_threshold: 1.0,
        error_threshold: Some(ErrorThreshold {
            fraction: 0.5,
            min_sample: 6,
            scope: ThresholdScope::Campaign,
        }),
        ..open_policy()
    });
    c.add_devices(devs("d", 12, None), T0).unwrap();
    let t = CellTable::new();
    let w1 = starts(&c.poll(T0, &t));
    for e in &w1 {
        ok(&mut c, e, T0 + MIN);
    }
    let w2 = starts(&c.poll(T0 + MIN, &t));
    assert_eq!(w2.len(), 7);
    for e in &w2[..5] {
        fail(&mut c, e, FailureKind::NotEnoughFlash, T0 + 2 * MIN);
    }
    // 5 of 10 finished failed: 50 %.
    let p = pauses(&c.poll(T0 + 2 * MIN, &t));
    assert_eq!(p.len(), 1);
    assert!(
        p[0].contains("in the campaign") && p[0].contains("5 of 10"),
        "{}",
        p[0]
    );
}

// ---- windows ----

#[test]
fn devices_start_only_inside_a_maintenance_window() {
    let mut c = campaign(Policy {
        windows: vec![WindowSpec {
            cron: "0 1 * * *".into(),
            duration_ms: 2 * H,
            tz: "UTC".into(),
        }],
        max_concurrent: 2,
        ..open_policy()
    });
    c.add_devices(devs("d", 4, None), T0).unwrap();
    let t = CellTable::new();
    assert!(starts(&c.poll(T0, &t)).is_empty(), "00:00 UTC is outside");
    assert_eq!(c.next_wakeup(), Some(T0 + H));
    let closed = c.progress(T0, &t).window.expect("a window state");
    assert!(!closed.open);
    assert_eq!(
        closed.next_open_unix_ms,
        Some(T0 + H),
        "the operator sees when"
    );
    let s = starts(&c.poll(T0 + H, &t));
    assert_eq!(s.len(), 2);
    let open = c.progress(T0 + H, &t).window.expect("a window state");
    assert!(open.open);
    assert_eq!(open.until_unix_ms, Some(T0 + 3 * H));
    ok(&mut c, &s[0], T0 + 3 * H + 1);
    assert_eq!(
        c.next_wakeup(),
        Some(T0 + 3 * H + 1),
        "the report asks for a poll"
    );
    assert!(
        starts(&c.poll(T0 + 3 * H + 1, &t)).is_empty(),
        "closed again at 03:00"
    );
    assert_eq!(c.next_wakeup(), Some(T0 + 25 * H));
    assert_eq!(starts(&c.poll(T0 + 25 * H, &t)).len(), 1);
}

#[test]
fn a_window_that_can_never_open_is_refused() {
    let e = Campaign::new(
        "c",
        "p",
        1,
        Policy {
            windows: vec![WindowSpec {
                cron: "0 0 31 2 *".into(),
                duration_ms: H,
                tz: "UTC".into(),
            }],
            ..open_policy()
        },
        T0,
    )
    .unwrap_err();
    assert!(e.to_string().contains("never"), "{e}");
}

// ---- wakes ----

fn queue_dev(name: &str) -> DeviceFacts {
    DeviceFacts {
        queue_mode: true,
        ..DeviceFacts::new(name)
    }
}

#[test]
fn a_queue_mode_device_starts_when_it_wakes_only_if_the_update_fits() {
    // 1 MB at 100 kbit/s = 80 s, plus 120 s overhead: 200 s.
    let mut c = campaign(Policy {
        wake: crate::policy::WakePolicy {
            overhead_ms: 120 * S,
            force_after_unfit_wakes: None,
        },
        ..open_policy()
    });
    assert_eq!(c.estimated_update_ms(), 200 * S);
    c.add_devices([queue_dev("q")], T0).unwrap();
    let t = CellTable::new();
    assert!(starts(&c.poll(T0, &t)).is_empty(), "asleep");
    c.device_woke("q", T0 + 60 * S, T0).unwrap();
    assert!(starts(&c.poll(T0, &t)).is_empty(), "60 s awake < 200 s");
    assert_eq!(c.device("q").unwrap().unfit_wakes, 1);
    for i in 0..5 {
        let now = T0 + (i + 1) * H;
        c.device_woke("q", now + 10 * S, now).unwrap();
        assert!(starts(&c.poll(now, &t)).is_empty(), "never forced");
    }
    let now = T0 + 10 * H;
    c.device_woke("q", now + 200 * S, now).unwrap();
    assert_eq!(starts(&c.poll(now, &t)), ["q"], "exactly fits");
}

#[test]
fn a_device_that_never_fits_is_dispatched_after_n_unfit_wakes() {
    let mut c = campaign(Policy {
        wake: crate::policy::WakePolicy {
            overhead_ms: 120 * S,
            force_after_unfit_wakes: Some(2),
        },
        ..open_policy()
    });
    c.add_devices([queue_dev("q")], T0).unwrap();
    let t = CellTable::new();
    c.poll(T0, &t);
    c.device_woke("q", T0 + 30 * S, T0).unwrap();
    assert!(starts(&c.poll(T0, &t)).is_empty());
    c.device_woke("q", T0 + H + 30 * S, T0 + H).unwrap();
    assert_eq!(starts(&c.poll(T0 + H, &t)), ["q"], "second unfit wake");
}

#[test]
fn a_wake_that_ends_while_the_cell_is_full_is_not_used_afterwards() {
    let mut c = campaign(Policy {
        default_cell_bps: 100_000,
        ..open_policy()
    });
    c.add_devices([dev("busy", None), queue_dev("q")], T0)
        .unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["busy"]);
    c.device_woke("q", T0 + 300 * S, T0).unwrap();
    assert!(starts(&c.poll(T0, &t)).is_empty(), "cell full");
    ok(&mut c, "busy", T0 + 400 * S);
    assert!(
        starts(&c.poll(T0 + 400 * S, &t)).is_empty(),
        "q is asleep again"
    );
    assert_eq!(kind(&c, "q"), StateKind::Pending);
}

#[test]
fn an_awake_queue_mode_device_takes_the_next_free_slot_before_always_on_ones() {
    // One download at a time in the default cell; an always-on device can be reached
    // on any later turn, a queue-mode device only until its wake ends.
    let mut c = campaign(Policy {
        default_cell_bps: 100_000,
        ..open_policy()
    });
    c.add_devices(devs("on", 5, None), T0).unwrap();
    c.add_devices([queue_dev("q")], T0).unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["on0"]);
    c.device_woke("q", T0 + 300 * S, T0 + S).unwrap();
    assert!(starts(&c.poll(T0 + S, &t)).is_empty(), "cell full");
    ok(&mut c, "on0", T0 + 2 * S);
    assert_eq!(starts(&c.poll(T0 + 2 * S, &t)), ["q"], "ahead of on1..on4");
    ok(&mut c, "q", T0 + 3 * S);
    assert_eq!(
        starts(&c.poll(T0 + 3 * S, &t)),
        ["on1"],
        "then the queue's order"
    );
}

#[test]
fn a_wake_reported_through_facts_counts_like_device_woke() {
    let mut c = campaign(open_policy());
    c.add_devices([queue_dev("q")], T0).unwrap();
    let t = CellTable::new();
    c.poll(T0, &t);
    c.update_facts(
        DeviceFacts {
            awake_until: Some(T0 + H),
            ..queue_dev("q")
        },
        T0,
    )
    .unwrap();
    assert_eq!(starts(&c.poll(T0, &t)), ["q"]);
}

// ---- rules ----

#[test]
fn roaming_devices_are_skipped_unless_the_campaign_is_critical() {
    let roaming = DeviceFacts {
        roaming: true,
        ..DeviceFacts::new("r")
    };
    let mut c = campaign(open_policy());
    c.add_devices([roaming.clone(), dev("home", None)], T0)
        .unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["home"]);
    assert_eq!(kind(&c, "r"), StateKind::Skipped);
    // Coming home while the campaign runs brings it back.
    c.update_facts(DeviceFacts::new("r"), T0 + MIN).unwrap();
    assert_eq!(starts(&c.poll(T0 + MIN, &t)), ["r"]);

    let mut critical = campaign(Policy {
        rules: Rules {
            critical: true,
            min_battery: None,
            ..Rules::default()
        },
        ..open_policy()
    });
    critical.add_devices([roaming.clone()], T0).unwrap();
    assert_eq!(starts(&critical.poll(T0, &t)), ["r"]);

    let mut defer = campaign(Policy {
        rules: Rules {
            roaming: RoamingRule::Defer,
            min_battery: None,
            ..Rules::default()
        },
        ..open_policy()
    });
    defer.add_devices([roaming], T0).unwrap();
    assert!(defer.poll(T0, &t).is_empty(), "deferred, not complete");
    assert_eq!(
        defer.device("r").unwrap().state,
        DeviceState::Deferred {
            reason: DeferReason::Roaming,
            until: None
        }
    );
}

#[test]
fn a_wifi_capable_device_on_cellular_waits_for_wifi_up_to_the_limit() {
    let mut c = campaign(Policy {
        rules: Rules {
            prefer_wifi: true,
            max_wifi_deferral_ms: H,
            min_battery: None,
            ..Rules::default()
        },
        ..open_policy()
    });
    let cellular = |name: &str| DeviceFacts {
        has_wifi: true,
        bearer_is_wifi: false,
        ..DeviceFacts::new(name)
    };
    c.add_devices([cellular("a"), cellular("b")], T0).unwrap();
    let t = CellTable::new();
    assert!(starts(&c.poll(T0, &t)).is_empty());
    assert_eq!(c.next_wakeup(), Some(T0 + H));
    // "a" switches to Wi-Fi: it starts at once.
    c.update_facts(
        DeviceFacts {
            bearer_is_wifi: true,
            ..cellular("a")
        },
        T0 + MIN,
    )
    .unwrap();
    assert_eq!(starts(&c.poll(T0 + MIN, &t)), ["a"]);
    // New facts for "b" do not restart its deferral.
    c.update_facts(
        DeviceFacts {
            battery: Some(90),
            ..cellular("b")
        },
        T0 + 30 * MIN,
    )
    .unwrap();
    assert!(starts(&c.poll(T0 + 30 * MIN, &t)).is_empty());
    assert!(starts(&c.poll(T0 + H - 1, &t)).is_empty());
    assert_eq!(
        starts(&c.poll(T0 + H, &t)),
        ["b"],
        "cellular after the limit"
    );
}

#[test]
fn low_battery_waits_unless_on_mains() {
    let mut c = campaign(Policy {
        rules: Rules {
            min_battery: Some(30),
            ..Rules::default()
        },
        ..open_policy()
    });
    let low = |name: &str, mains| DeviceFacts {
        battery: Some(10),
        on_mains: mains,
        ..DeviceFacts::new(name)
    };
    c.add_devices([low("low", false), low("plugged", true)], T0)
        .unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["plugged"]);
    assert_eq!(
        c.device("low").unwrap().state,
        DeviceState::Deferred {
            reason: DeferReason::LowBattery,
            until: None
        }
    );
    c.update_facts(
        DeviceFacts {
            battery: Some(80),
            ..DeviceFacts::new("low")
        },
        T0 + H,
    )
    .unwrap();
    assert_eq!(starts(&c.poll(T0 + H, &t)), ["low"]);
}

#[test]
fn suspended_devices_are_skipped_and_the_campaign_completes_without_them() {
    let mut c = campaign(open_policy());
    c.add_devices(
        [
            DeviceFacts {
                billing_suspended: true,
                ..DeviceFacts::new("s")
            },
            dev("d", None),
        ],
        T0,
    )
    .unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["d"]);
    assert_eq!(
        c.device("s").unwrap().state,
        DeviceState::Skipped {
            reason: SkipReason::Suspended
        }
    );
    ok(&mut c, "d", T0 + MIN);
    assert_eq!(c.poll(T0 + MIN, &t), [Decision::Complete]);
    assert_eq!(c.status(), &Status::Completed);
    assert!(c.poll(T0 + 2 * MIN, &t).is_empty(), "complete is said once");
    assert_eq!(c.next_wakeup(), None);
}

#[test]
fn nothing_starts_at_or_after_the_deadline() {
    let mut c = campaign(Policy {
        deadline_unix_ms: Some(T0 + H),
        max_concurrent: 1,
        retry: crate::policy::RetryPolicy {
            initial_ms: 10 * MIN,
            jitter: 0.0,
            ..Default::default()
        },
        ..open_policy()
    });
    c.add_devices(devs("d", 3, None), T0).unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["d0"]);
    ok(&mut c, "d0", T0 + 10 * MIN);
    assert_eq!(starts(&c.poll(T0 + 10 * MIN, &t)), ["d1"]);
    assert_eq!(c.next_wakeup(), Some(T0 + H));
    // d1 is still running at the deadline; d2 never started.
    assert!(c.poll(T0 + H, &t).is_empty());
    assert_eq!(kind(&c, "d2"), StateKind::MissedDeadline);
    assert_eq!(kind(&c, "d1"), StateKind::InProgress);
    // Its failure cannot be retried before the deadline: missed as well.
    assert_eq!(
        fail(&mut c, "d1", FailureKind::ConnectionLost, T0 + H + MIN),
        StateKind::MissedDeadline
    );
    assert_eq!(c.poll(T0 + H + MIN, &t), [Decision::Complete]);
    let p = c.progress(T0 + H + MIN, &t);
    assert_eq!(p.counts.missed_deadline, 2);
    assert_eq!(p.counts.succeeded, 1);
}

#[test]
fn a_retry_that_would_land_after_the_deadline_is_missed_at_once() {
    let mut c = campaign(Policy {
        deadline_unix_ms: Some(T0 + 5 * MIN),
        retry: crate::policy::RetryPolicy {
            initial_ms: 10 * MIN,
            max_ms: 10 * MIN,
            jitter: 0.0,
            ..Default::default()
        },
        ..open_policy()
    });
    c.add_devices(devs("d", 1, None), T0).unwrap();
    c.poll(T0, &CellTable::new());
    assert_eq!(
        fail(&mut c, "d0", FailureKind::Timeout, T0 + MIN),
        StateKind::MissedDeadline
    );
}

#[test]
fn a_deadline_in_the_past_is_refused() {
    let e = Campaign::new(
        "c",
        "p",
        1,
        Policy {
            deadline_unix_ms: Some(T0),
            ..open_policy()
        },
        T0,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        CampaignError::Policy(PolicyError::DeadlinePassed { .. })
    ));
}

// ---- retries ----

fn retry_policy() -> Policy {
    Policy {
        retry: crate::policy::RetryPolicy {
            initial_ms: MIN,
            factor: 2.0,
            max_ms: H,
            max_attempts: 3,
            jitter: 0.0,
        },
        ..open_policy()
    }
}

#[test]
fn retryable_failures_back_off_exponentially_up_to_max_attempts() {
    let mut c = campaign(retry_policy());
    c.add_devices(devs("d", 1, None), T0).unwrap();
    let t = CellTable::new();
    assert_eq!(
        c.poll(T0, &t),
        [Decision::Start {
            endpoint: "d0".into(),
            attempt: 1
        }]
    );
    assert_eq!(
        fail(&mut c, "d0", FailureKind::ConnectionLost, T0 + S),
        StateKind::WaitingRetry
    );
    c.poll(T0 + S, &t);
    assert_eq!(c.next_wakeup(), Some(T0 + S + MIN));
    assert!(c.poll(T0 + S + MIN - 1, &t).is_empty());
    assert_eq!(
        c.poll(T0 + S + MIN, &t),
        [Decision::Start {
            endpoint: "d0".into(),
            attempt: 2
        }]
    );
    let now = T0 + 2 * MIN;
    fail(&mut c, "d0", FailureKind::Timeout, now);
    c.poll(now, &t);
    assert_eq!(c.next_wakeup(), Some(now + 2 * MIN), "doubled");
    assert_eq!(
        c.poll(now + 2 * MIN, &t),
        [Decision::Start {
            endpoint: "d0".into(),
            attempt: 3
        }]
    );
    assert_eq!(
        fail(&mut c, "d0", FailureKind::ConnectionLost, now + 3 * MIN),
        StateKind::Failed
    );
    assert_eq!(
        c.device("d0").unwrap().state,
        DeviceState::Failed {
            reason: FailureKind::ConnectionLost
        }
    );
    assert_eq!(c.device("d0").unwrap().attempts, 3);
    assert_eq!(c.poll(now + 3 * MIN, &t), [Decision::Complete]);
}

#[test]
fn non_retryable_failures_end_at_once_and_integrity_is_retried_once() {
    let mut c = campaign(Policy {
        retry: crate::policy::RetryPolicy {
            max_attempts: 5,
            ..retry_policy().retry
        },
        ..retry_policy()
    });
    c.add_devices(devs("d", 4, None), T0).unwrap();
    let t = CellTable::new();
    c.poll(T0, &t);
    for (ep, k) in [
        ("d0", FailureKind::InvalidUri),
        ("d1", FailureKind::NotEnoughFlash),
        ("d2", FailureKind::UnsupportedPackageType),
    ] {
        assert_eq!(fail(&mut c, ep, k, T0 + S), StateKind::Failed, "{k:?}");
        assert_eq!(c.device(ep).unwrap().attempts, 1);
    }
    assert_eq!(
        fail(&mut c, "d3", FailureKind::IntegrityFailure, T0 + S),
        StateKind::WaitingRetry
    );
    assert_eq!(starts(&c.poll(T0 + H, &t)), ["d3"]);
    assert_eq!(
        fail(&mut c, "d3", FailureKind::ConnectionLost, T0 + H),
        StateKind::WaitingRetry,
        "other failures in between do not use up the integrity retry"
    );
    assert_eq!(starts(&c.poll(T0 + 2 * H, &t)), ["d3"]);
    assert_eq!(
        fail(&mut c, "d3", FailureKind::IntegrityFailure, T0 + 2 * H),
        StateKind::Failed,
        "a second integrity failure means a bad package"
    );
    let p = c.progress(T0 + 2 * H, &t);
    assert_eq!(p.recent_failures.len(), 6);
    assert_eq!(p.recent_failures[0].kind, FailureKind::InvalidUri);
}

#[test]
fn duplicate_and_stray_reports_change_nothing() {
    let mut c = campaign(open_policy());
    c.add_devices(devs("d", 2, None), T0).unwrap();
    let t = CellTable::new();
    c.poll(T0, &t);
    ok(&mut c, "d0", T0 + S);
    let before = c.progress(T0 + S, &t).counts;
    let e = c.report("d0", Outcome::Succeeded, T0 + 2 * S).unwrap_err();
    assert!(matches!(
        e,
        CampaignError::Transition {
            source: TransitionError {
                from: StateKind::Succeeded,
                ..
            },
            ..
        }
    ));
    assert!(c
        .report(
            "d0",
            Outcome::failed(FailureKind::Timeout, "late"),
            T0 + 3 * S
        )
        .is_err());
    assert_eq!(c.progress(T0 + 3 * S, &t).counts, before);
    assert_eq!(before.succeeded, 1);
    assert!(matches!(
        c.report("nobody", Outcome::Succeeded, T0),
        Err(CampaignError::UnknownDevice(_))
    ));
    c.audit().unwrap();
}

// ---- operator controls ----

#[test]
fn pause_stops_starts_but_takes_reports_and_resume_goes_on() {
    let mut c = campaign(Policy {
        max_concurrent: 1,
        ..open_policy()
    });
    c.add_devices(devs("d", 3, None), T0).unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["d0"]);
    c.pause("operator says wait").unwrap();
    ok(&mut c, "d0", T0 + MIN);
    assert!(c.poll(T0 + MIN, &t).is_empty());
    assert!(
        matches!(c.status(), Status::Paused { reason, cause: PauseCause::Operator } if reason == "operator says wait")
    );
    c.resume(T0 + 2 * MIN).unwrap();
    assert_eq!(starts(&c.poll(T0 + 2 * MIN, &t)), ["d1"]);
}

#[test]
fn cancel_resets_downloads_not_yet_installing() {
    let mut c = campaign(Policy {
        max_concurrent: 3,
        ..open_policy()
    });
    c.add_devices(devs("d", 5, None), T0).unwrap();
    let t = CellTable::new();
    let s = starts(&c.poll(T0, &t));
    assert_eq!(s, ["d0", "d1", "d2"]);
    c.mark_installing("d1").unwrap();
    let abort = c.cancel(T0 + MIN);
    assert_eq!(abort, ["d0", "d2"]);
    assert_eq!(kind(&c, "d0"), StateKind::Cancelled);
    assert_eq!(kind(&c, "d3"), StateKind::Cancelled);
    assert_eq!(kind(&c, "d1"), StateKind::InProgress, "installing goes on");
    assert_eq!(c.in_flight(), 1);
    ok(&mut c, "d1", T0 + 2 * MIN);
    assert_eq!(kind(&c, "d1"), StateKind::Succeeded);
    assert!(c.poll(T0 + 2 * MIN, &t).is_empty());
    assert_eq!(c.status(), &Status::Cancelled);
    assert!(c.cancel(T0 + 3 * MIN).is_empty(), "idempotent");
    assert_eq!(
        c.add_devices(devs("late", 1, None), T0),
        Err(CampaignError::Closed("cancelled"))
    );
    assert!(c.pause("x").is_err());
    c.audit().unwrap();
}

#[test]
fn mark_installing_needs_an_update_under_way() {
    let mut c = campaign(open_policy());
    c.add_devices(devs("d", 1, None), T0).unwrap();
    assert!(matches!(
        c.mark_installing("d0"),
        Err(CampaignError::Transition { .. })
    ));
    c.poll(T0, &CellTable::new());
    c.mark_installing("d0").unwrap();
    c.mark_installing("d0").unwrap();
}

// ---- membership ----

#[test]
fn new_members_join_only_when_the_policy_says_so() {
    let t = CellTable::new();
    let mut closed = campaign(open_policy());
    closed.add_devices(devs("d", 1, None), T0).unwrap();
    closed.poll(T0, &t);
    assert_eq!(
        closed.add_devices(devs("new", 1, None), T0 + S),
        Err(CampaignError::JoinsDisabled)
    );

    let mut open = campaign(Policy {
        join_new_members: true,
        ..open_policy()
    });
    open.add_devices(devs("d", 1, None), T0).unwrap();
    open.poll(T0, &t);
    let s = open.add_devices(devs("new", 2, None), T0 + S).unwrap();
    assert_eq!(s.added, 2);
    assert_eq!(open.next_wakeup(), Some(T0 + S));
    assert_eq!(starts(&open.poll(T0 + S, &t)), ["new0", "new1"]);
    assert_eq!(open.device("new0").unwrap().wave, Some(0));
}

#[test]
fn joiners_wait_for_a_later_wave_when_an_early_one_is_open() {
    let mut c = campaign(Policy {
        waves: vec![WaveSize::Count(1), WaveSize::Percent(100.0)],
        success_threshold: 1.0,
        join_new_members: true,
        ..open_policy()
    });
    c.add_devices(devs("d", 2, None), T0).unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["d0"]);
    c.add_devices(devs("j", 1, None), T0 + S).unwrap();
    assert!(starts(&c.poll(T0 + S, &t)).is_empty());
    assert_eq!(kind(&c, "j0"), StateKind::WaitingForWave);
    ok(&mut c, "d0", T0 + MIN);
    assert_eq!(starts(&c.poll(T0 + MIN, &t)), ["d1", "j0"]);
}

#[test]
fn adding_validates_and_updates_existing_members() {
    let mut c = campaign(open_policy());
    let s = c
        .add_devices(
            [
                dev("a", None),
                DeviceFacts {
                    battery: Some(200),
                    ..DeviceFacts::new("bad")
                },
                dev("a", Some("cell9")),
            ],
            T0,
        )
        .unwrap();
    assert_eq!((s.added, s.rejected, s.updated), (1, 1, 1));
    assert!(matches!(s.first_error, Some(FactsError::Battery { .. })));
    assert_eq!(c.device("a").unwrap().cell.as_deref(), Some("cell9"));
    assert_eq!(c.len(), 1);
    assert!(c.update_facts(dev("zz", None), T0).is_err());
}

#[test]
fn removing_a_device_frees_its_slot_and_says_whether_to_abort() {
    let mut c = campaign(Policy {
        default_cell_bps: 100_000,
        ..open_policy()
    });
    c.add_devices(devs("d", 3, None), T0).unwrap();
    let t = CellTable::new();
    assert_eq!(starts(&c.poll(T0, &t)), ["d0"]);
    assert_eq!(c.remove_device("d0", T0 + S), Ok(true));
    assert_eq!(c.remove_device("d2", T0 + S), Ok(false));
    assert_eq!(c.len(), 1);
    assert_eq!(starts(&c.poll(T0 + S, &t)), ["d1"]);
    ok(&mut c, "d1", T0 + 2 * S);
    assert_eq!(c.poll(T0 + 2 * S, &t), [Decision::Complete]);
    c.audit().unwrap();
}

#[test]
fn an_empty_campaign_waits_for_devices() {
    let mut c = campaign(open_policy());
    let t = CellTable::new();
    assert!(c.poll(T0, &t).is_empty());
    assert_eq!(c.status(), &Status::Running);
    c.add_devices(devs("d", 1, None), T0 + S).unwrap();
    assert_eq!(starts(&c.poll(T0 + S, &t)), ["d0"]);
}

// ---- persistence ----

#[test]
fn save_restore_recover_never_dispatches_twice() {
    let mut c = campaign(Policy {
        max_concurrent: 5,
        ..open_policy()
    });
    c.add_devices(devs("d", 8, Some("a")), T0).unwrap();
    let t = table(&[("a", 10_000_000)]);
    let first = starts(&c.poll(T0, &t));
    assert_eq!(first.len(), 5);
    ok(&mut c, "d0", T0 + MIN);
    c.mark_installing("d1").unwrap();
    c.add_bytes_sent(1234);

    let mut back = reload(&c);
    assert_eq!(saved(&back), saved(&c), "stable");
    back.audit().unwrap();
    assert_eq!(back.in_flight(), 4);

    let mut rec = back.recover(T0 + 2 * MIN);
    rec.sort();
    assert_eq!(rec, ["d1", "d2", "d3", "d4"]);
    assert_eq!(
        back.recover(T0 + 2 * MIN).len(),
        4,
        "asking again is harmless"
    );
    // Recovering devices keep their slots: only d0's freed slot is used.
    let d = starts(&back.poll(T0 + 2 * MIN, &t));
    assert_eq!(d, ["d5"]);
    assert!(d.iter().all(|e| !rec.contains(e)));

    assert_eq!(
        back.resolve_recovered("d1", Recovered::Finished(Outcome::Succeeded), T0 + 3 * MIN),
        Ok(Resolution::Settled(StateKind::Succeeded))
    );
    assert_eq!(
        back.resolve_recovered("d2", Recovered::Downloading, T0 + 3 * MIN),
        Ok(Resolution::Continue)
    );
    assert_eq!(
        back.resolve_recovered("d3", Recovered::Installing, T0 + 3 * MIN),
        Ok(Resolution::Continue)
    );
    assert_eq!(
        back.resolve_recovered("d4", Recovered::NotStarted, T0 + 3 * MIN),
        Ok(Resolution::Settled(StateKind::Pending))
    );
    assert!(back
        .resolve_recovered("d4", Recovered::Installing, T0)
        .is_err());
    // Two slots are free (d1 succeeded, d0 before): d6 and d7 queued first.
    assert_eq!(starts(&back.poll(T0 + 3 * MIN, &t)), ["d6", "d7"]);
    ok(&mut back, "d6", T0 + 4 * MIN);
    // d4's start was taken back: it starts again as attempt 1.
    assert_eq!(
        back.poll(T0 + 4 * MIN, &t),
        [Decision::Start {
            endpoint: "d4".into(),
            attempt: 1
        }]
    );
    assert!(matches!(
        back.device("d3").unwrap().state,
        DeviceState::InProgress {
            installing: true,
            ..
        }
    ));
    assert_eq!(back.progress(T0, &t).bytes_sent, 1234);
    back.audit().unwrap();
}

#[test]
fn a_restored_campaign_keeps_its_timers_waves_and_pause() {
    let mut c = campaign(Policy {
        waves: vec![WaveSize::Count(2), WaveSize::Percent(100.0)],
        success_threshold: 1.0,
        ..retry_policy()
    });
    c.add_devices(devs("d", 4, None), T0).unwrap();
    let t = CellTable::new();
    c.poll(T0, &t);
    fail(&mut c, "d0", FailureKind::ConnectionLost, T0 + S);
    ok(&mut c, "d1", T0 + S);
    c.pause("maintenance").unwrap();
    let mut back = reload(&c);
    assert_eq!(back.status(), c.status());
    assert_eq!(kind(&back, "d2"), StateKind::WaitingForWave);
    assert!(back.poll(T0 + H, &t).is_empty(), "still paused");
    back.resume(T0 + H).unwrap();
    assert_eq!(starts(&back.poll(T0 + H, &t)), ["d0"], "the retry came due");
    ok(&mut back, "d0", T0 + H);
    assert_eq!(starts(&back.poll(T0 + H, &t)), ["d2", "d3"]);
}

#[test]
fn a_damaged_snapshot_is_an_error_not_a_panic() {
    let mut c = campaign(open_policy());
    c.add_devices(devs("d", 2, Some("a")), T0).unwrap();
    c.poll(T0, &CellTable::new());
    let good = saved(&c);
    type Damage<'a> = &'a dyn Fn(&mut serde_json::Value, &mut Vec<SavedRow>);
    let damage = |f: Damage| {
        let (mut header, mut rows) = good.clone();
        f(&mut header, &mut rows);
        restored(header, rows)
    };
    assert!(damage(&|_, _| {}).is_ok());
    assert!(damage(&|h, _| h["v"] = 99.into()).is_err());
    assert!(damage(&|_, r| r[1].1["e"] = "d0".into()).is_err());
    assert!(damage(&|_, r| r[0].1["w"] = 7.into()).is_err());
    assert!(damage(&|_, r| r[0].1["f"][2] = 50.into()).is_err());
    assert!(damage(&|_, r| r[0].1["s"] = serde_json::json!({"I":{"t":1,"c":9}})).is_err());
    assert!(damage(&|h, _| h["policy"]["max_concurrent"] = 0.into()).is_err());
    assert!(damage(&|h, _| h["cells"] = serde_json::json!(["a", "a"])).is_err());
    assert!(damage(&|_, r| {
        r[0].1.as_object_mut().unwrap().remove("w");
        r[0].1["s"] = serde_json::json!({"F":{"r":"timeout"}});
    })
    .is_err());
    assert!(damage(&|_, r| r[0].1 = serde_json::json!("not a row")).is_err());
}

#[test]
fn a_save_writes_only_the_devices_that_changed() {
    let mut c = campaign(Policy {
        max_concurrent: 3,
        ..open_policy()
    });
    c.add_devices(devs("d", 10, Some("a")), T0).unwrap();
    assert_eq!(c.take_changed(), (0..10).collect::<Vec<u32>>(), "all new");
    assert!(c.take_changed().is_empty(), "taken");
    let t = table(&[("a", 10_000_000)]);
    assert_eq!(starts(&c.poll(T0, &t)).len(), 3);
    assert_eq!(
        c.take_changed(),
        (0..10).collect::<Vec<u32>>(),
        "the wave opened for all"
    );
    ok(&mut c, "d1", T0 + MIN);
    c.add_bytes_sent(10);
    assert_eq!(c.take_changed(), [1], "bytes are the header's");
    assert_eq!(starts(&c.poll(T0 + MIN, &t)), ["d3"]);
    assert_eq!(c.take_changed(), [3], "the one started");
    c.remove_device("d5", T0 + MIN).unwrap();
    assert_eq!(c.take_changed(), [5]);
    assert!(c.row(5).is_none(), "a removed device's row is deleted");
    c.mark_unsaved([5, 1]);
    assert_eq!(c.take_changed(), [1, 5], "handed back after a failed save");
    // Restored, the slots close up without the hole: every row is written anew.
    let mut back = reload(&c);
    assert_eq!(back.take_changed(), (0..9).collect::<Vec<u32>>());
    assert_eq!(back.len(), 9);
}

#[test]
fn a_format_1_record_with_its_devices_inside_is_still_read() {
    let mut c = campaign(open_policy());
    c.add_devices(devs("d", 3, Some("a")), T0).unwrap();
    c.poll(T0, &CellTable::new());
    let (mut header, rows) = saved(&c);
    header["v"] = 1.into();
    header["devices"] = rows.into_iter().map(|(_, r)| r).collect();
    let back = restored(header, Vec::new()).unwrap();
    back.audit().unwrap();
    assert_eq!(saved(&back), saved(&c));
}

#[test]
fn a_saved_device_is_tens_of_bytes() {
    let mut c = campaign(open_policy());
    c.add_devices(devs("urn:imei:35693803564", 1000, Some("262-01-4711")), T0)
        .unwrap();
    c.poll(T0, &CellTable::new());
    let (header, rows) = saved(&c);
    assert_eq!(rows.len(), 1000);
    let bytes: usize = rows.iter().map(|(_, r)| r.to_string().len()).sum();
    let per_device = bytes / 1000;
    assert!(per_device < 90, "{per_device} bytes per device");
    assert!(
        header.to_string().len() < 2000,
        "the header does not grow with the devices"
    );
}

// ---- progress ----

#[test]
fn progress_counts_per_state_wave_and_cell_and_estimates_completion() {
    let mut c = campaign(Policy {
        device_rate_bps: 100_000,
        ..open_policy()
    });
    c.add_devices(devs("a", 4, Some("A")), T0).unwrap();
    c.add_devices(devs("b", 2, Some("B")), T0).unwrap();
    // A: cap 2; B: cap 1.
    let t = table(&[("A", 200_000), ("B", 100_000)]);
    c.poll(T0, &t);
    ok(&mut c, "a0", T0 + 10 * MIN);
    ok(&mut c, "b0", T0 + 10 * MIN);
    c.add_bytes_wasted(99);
    let p = c.progress(T0 + 10 * MIN, &t);
    assert_eq!(p.counts.succeeded, 2);
    assert_eq!(p.counts.in_progress, 1);
    assert_eq!(p.counts.pending, 3);
    assert_eq!(p.counts.total(), 6);
    assert_eq!(p.mean_success_ms, Some(10 * MIN));
    let a = p
        .cells
        .iter()
        .find(|x| x.cell.as_deref() == Some("A"))
        .unwrap();
    assert_eq!((a.in_flight, a.cap, a.counts.pending), (1, 2, 2));
    // A has 3 left at 2 at a time: 2 rounds of 10 min; B has 1 left: 1 round.
    assert_eq!(p.estimated_completion_unix_ms, Some(T0 + 30 * MIN));
    assert_eq!(p.bytes_wasted, 99);
    assert_eq!(p.window, None, "no windows: always open, nothing to show");
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("\"estimated_completion_unix_ms\""));
}

#[test]
fn next_wakeup_is_none_when_only_events_can_change_anything() {
    let mut c = campaign(open_policy());
    c.add_devices([queue_dev("q")], T0).unwrap();
    assert_eq!(c.next_wakeup(), Some(T0), "added: poll now");
    c.poll(T0, &CellTable::new());
    assert_eq!(c.next_wakeup(), None, "waits for the wake");
}

#[test]
fn a_restore_without_holes_keeps_its_slots_and_writes_nothing() {
    let mut c = campaign(open_policy());
    c.add_devices(devs("d", 4, Some("a")), T0).unwrap();
    c.poll(T0, &CellTable::new());
    let (header, rows) = saved(&c);
    let header: Header = serde_json::from_value(header).unwrap();
    let rows = rows
        .into_iter()
        .map(|(s, r)| (s, serde_json::from_value::<Row>(r).unwrap()))
        .collect();
    let (mut back, renumbered) = Campaign::restore(header, rows).unwrap();
    assert!(!renumbered);
    assert!(back.take_changed().is_empty());
    assert_eq!(saved(&back), saved(&c));
}
