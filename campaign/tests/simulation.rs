//! A seeded simulation of a fleet campaign through the public API: thousands of
//! devices, random wakes, facts, joins, removals, outcomes, congestion, operator
//! pauses and a restart half way, with the scheduler's invariants checked at every
//! step. The campaign is saved at every step as the server saves it (its header and
//! the rows that changed) and the restart reads it back from there.

use std::collections::{BTreeMap, HashMap, HashSet};

use lwm2m_campaign::policy::{ErrorThreshold, RetryPolicy, Rules, ThresholdScope, WakePolicy};
use lwm2m_campaign::{
    Campaign, CellStatus, CellTable, Decision, DeviceFacts, FailureKind, Header, Outcome, Policy,
    Recovered, Resolution, Row, StateKind, Status, WaveSize,
};

/// 2025-06-15T00:00:00Z.
const T0: u64 = 1_749_945_600_000;
const S: u64 = 1_000;
const MIN: u64 = 60 * S;
const H: u64 = 60 * MIN;

/// SplitMix64: small, seeded, good enough to shake a scheduler.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

const CELLS: u64 = 40;

/// What a store holds of a campaign: its header and a row per slot, written as the
/// server writes them.
#[derive(Default)]
struct Saved {
    header: String,
    rows: BTreeMap<u32, String>,
}

impl Saved {
    /// The header, and the rows that changed since the last write.
    fn write(&mut self, c: &mut Campaign) {
        self.header = serde_json::to_string(&*c).unwrap();
        for slot in c.take_changed() {
            match c.row(slot) {
                Some(r) => {
                    self.rows.insert(slot, serde_json::to_string(&r).unwrap());
                }
                None => {
                    self.rows.remove(&slot);
                }
            }
        }
    }

    /// The campaign read back; its rows are replaced when its slots were numbered anew.
    fn restore(&mut self) -> Campaign {
        let header: Header = serde_json::from_str(&self.header).unwrap();
        let rows: Vec<(u32, Row)> = self
            .rows
            .iter()
            .map(|(s, r)| (*s, serde_json::from_str(r).unwrap()))
            .collect();
        let (mut c, renumbered) = Campaign::restore(header, rows).unwrap();
        if renumbered {
            self.rows.clear();
        }
        self.write(&mut c);
        c
    }
}

fn facts(rng: &mut Rng, i: usize) -> DeviceFacts {
    let has_wifi = rng.chance(0.2);
    DeviceFacts {
        endpoint: format!("urn:imei:{:015}", 350_000_000_000_000u64 + i as u64),
        cell: (!rng.chance(0.05)).then(|| format!("262-01-{}", rng.below(CELLS))),
        roaming: rng.chance(0.03),
        bearer_is_wifi: has_wifi && rng.chance(0.5),
        has_wifi,
        battery: rng.chance(0.7).then(|| rng.range(5, 101) as u8),
        on_mains: rng.chance(0.3),
        billing_suspended: rng.chance(0.01),
        queue_mode: rng.chance(0.3),
        awake_until: None,
        online: !rng.chance(0.02),
    }
}

fn outcome(rng: &mut Rng, bad_package: bool) -> Outcome {
    if bad_package && rng.chance(0.5) {
        return Outcome::failed(FailureKind::UpdateFailed, "simulated bad image");
    }
    let r = rng.below(100);
    let kind = match r {
        0..=79 => return Outcome::Succeeded,
        80..=87 => FailureKind::ConnectionLost,
        88..=90 => FailureKind::Timeout,
        91..=92 => FailureKind::DeviceAsleep,
        93..=94 => FailureKind::IntegrityFailure,
        95..=96 => FailureKind::UpdateFailed,
        97 => FailureKind::InvalidUri,
        98 => FailureKind::NotEnoughFlash,
        _ => FailureKind::VersionMismatch,
    };
    Outcome::failed(kind, format!("simulated {}", kind.name()))
}

fn policy(deadline_ms: u64) -> Policy {
    Policy {
        waves: vec![
            WaveSize::Percent(2.0),
            WaveSize::Count(200),
            WaveSize::Percent(100.0),
        ],
        success_threshold: 0.6,
        error_threshold: Some(ErrorThreshold {
            fraction: 0.5,
            min_sample: 30,
            scope: ThresholdScope::Wave,
        }),
        max_concurrent: 150,
        device_rate_bps: 100_000,
        default_cell_bps: 500_000,
        wake: WakePolicy {
            overhead_ms: 60 * S,
            force_after_unfit_wakes: Some(3),
        },
        rules: Rules {
            prefer_wifi: true,
            max_wifi_deferral_ms: 2 * H,
            min_battery: Some(20),
            ..Rules::default()
        },
        deadline_unix_ms: Some(T0 + deadline_ms),
        retry: RetryPolicy {
            initial_ms: 5 * MIN,
            factor: 2.0,
            max_ms: H,
            max_attempts: 4,
            jitter: 0.3,
        },
        join_new_members: true,
        ..Policy::default()
    }
}

/// What the simulated server knows of one update under way.
struct Running {
    finish_at: u64,
    install_at: u64,
}

struct Scenario {
    seed: u64,
    devices: usize,
    /// Cells may lose bandwidth or congest; otherwise they only gain.
    shrinking_cells: bool,
    deadline_ms: u64,
    /// Half the updates fail to install, which must trip the error threshold.
    bad_package: bool,
}

struct Summary {
    counts: lwm2m_campaign::StateCounts,
    threshold_pauses: usize,
    elapsed_ms: u64,
}

fn simulate(sc: Scenario) -> Summary {
    let Scenario {
        seed,
        devices,
        shrinking_cells,
        deadline_ms,
        ..
    } = sc;
    let mut rng = Rng(seed);
    let policy = policy(deadline_ms);
    let max_attempts = policy.retry.max_attempts;
    let max_concurrent = policy.max_concurrent as usize;
    let mut c = Campaign::new("sim", "fw-2.0", 2_000_000, policy, T0).unwrap();

    let mut table = CellTable::new();
    for i in 0..CELLS {
        table.insert(
            format!("262-01-{i}"),
            CellStatus {
                available_bps: 100_000 * rng.range(1, 8),
                congested: i < 2,
            },
        );
    }

    let mut all: Vec<DeviceFacts> = (0..devices).map(|i| facts(&mut rng, i)).collect();
    let initial = devices * 9 / 10;
    c.add_devices(all[..initial].iter().cloned(), T0).unwrap();
    let mut joined = initial;
    let mut removed: HashSet<String> = HashSet::new();

    let mut running: HashMap<String, Running> = HashMap::new();
    let mut succeeded: HashSet<String> = HashSet::new();
    let mut starts_total = 0usize;
    let mut restarted = false;
    let mut paused_since: Option<u64> = None;
    let mut now = T0;
    let mut completed = false;
    let mut threshold_pauses = 0;
    let mut saved = Saved::default();

    for step in 0..200_000u64 {
        saved.write(&mut c);
        now += rng.range(S, 2 * MIN);

        // The network changes.
        if rng.chance(0.01) {
            let cell = rng.below(CELLS);
            let name = format!("262-01-{cell}");
            let old = table.get(&name).copied().unwrap();
            let status = if shrinking_cells {
                CellStatus {
                    available_bps: 100_000 * rng.range(0, 8),
                    congested: rng.chance(0.2),
                }
            } else {
                // Only ever more room: then every cell is within its cap at all times.
                CellStatus {
                    available_bps: old.available_bps + 100_000,
                    congested: false,
                }
            };
            table.insert(name, status);
        }

        // Queue-mode devices wake.
        for _ in 0..20 {
            let f = &all[rng.below(joined as u64) as usize];
            if f.queue_mode && !removed.contains(&f.endpoint) {
                let until = now + rng.range(30 * S, 30 * MIN);
                c.device_woke(&f.endpoint, until, now).unwrap();
            }
        }

        // Facts change: batteries charge, devices roam, switch bearers, move cells.
        for _ in 0..5 {
            let i = rng.below(joined as u64) as usize;
            if removed.contains(&all[i].endpoint) {
                continue;
            }
            let f = &mut all[i];
            f.battery = f.battery.map(|_| rng.range(5, 101) as u8);
            f.roaming = rng.chance(0.02);
            f.bearer_is_wifi = f.has_wifi && rng.chance(0.6);
            f.online = !rng.chance(0.02);
            if rng.chance(0.1) {
                f.cell = Some(format!("262-01-{}", rng.below(CELLS)));
            }
            c.update_facts(f.clone(), now).unwrap();
        }

        // New members join, some leave.
        if step % 40 == 0 && joined < devices {
            let n = (devices - joined).min(rng.range(1, 20) as usize);
            c.add_devices(all[joined..joined + n].iter().cloned(), now)
                .unwrap();
            joined += n;
        }
        if rng.chance(0.003) {
            let ep = all[rng.below(joined as u64) as usize].endpoint.clone();
            if !removed.contains(&ep) {
                c.remove_device(&ep, now).unwrap();
                running.remove(&ep);
                succeeded.remove(&ep);
                removed.insert(ep);
            }
        }

        // Updates under way pass Execute, then end.
        let mut done: Vec<String> = running
            .iter()
            .filter(|(_, r)| r.finish_at <= now)
            .map(|(e, _)| e.clone())
            .collect();
        done.sort();
        for (ep, r) in running.iter_mut() {
            if r.install_at <= now {
                r.install_at = u64::MAX;
                c.mark_installing(ep).unwrap();
            }
        }
        for ep in done {
            running.remove(&ep);
            let o = outcome(&mut rng, sc.bad_package);
            if o == Outcome::Succeeded {
                assert!(succeeded.insert(ep.clone()), "{ep} succeeded twice");
            } else {
                c.add_bytes_wasted(1_000_000);
            }
            c.add_bytes_sent(2_000_000);
            c.report(&ep, o, now).unwrap();
        }

        // The server restarts once, mid-campaign.
        if !restarted && starts_total > devices / 3 {
            restarted = true;
            saved.write(&mut c);
            let (header, rows) = (saved.header.clone(), saved.rows.clone());
            c = saved.restore();
            c.audit().unwrap();
            assert_eq!(saved.header, header, "the header read back as written");
            assert_eq!(
                saved.rows.values().collect::<Vec<_>>(),
                rows.values().collect::<Vec<_>>(),
                "every device read back as written, in order"
            );
            let mut recovering = c.recover(now);
            recovering.sort();
            let mut expected: Vec<String> = running.keys().cloned().collect();
            expected.sort();
            assert_eq!(recovering, expected, "exactly the updates under way");
            for ep in recovering {
                let found = match rng.below(4) {
                    0 => Recovered::Finished(outcome(&mut rng, sc.bad_package)),
                    1 => Recovered::Downloading,
                    2 => Recovered::Installing,
                    _ => Recovered::NotStarted,
                };
                let finished = matches!(found, Recovered::Finished(_));
                let not_started = found == Recovered::NotStarted;
                if let Recovered::Finished(Outcome::Succeeded) = found {
                    assert!(succeeded.insert(ep.clone()));
                }
                let r = c.resolve_recovered(&ep, found, now).unwrap();
                if finished || not_started {
                    running.remove(&ep);
                    assert!(matches!(r, Resolution::Settled(_)));
                } else {
                    assert_eq!(r, Resolution::Continue);
                    if let Some(x) = running.get_mut(&ep) {
                        x.install_at = u64::MAX;
                    }
                }
            }
        }

        // The operator pauses now and then, and resumes whatever paused.
        match (c.status(), paused_since) {
            (Status::Running, _) if rng.chance(0.002) => {
                c.pause("operator check").unwrap();
                paused_since = Some(now);
            }
            (Status::Paused { .. }, None) => paused_since = Some(now),
            (Status::Paused { .. }, Some(t)) if now >= t + 30 * MIN => {
                c.resume(now).unwrap();
                paused_since = None;
            }
            _ => {}
        }

        let before = c.in_flight_per_cell();
        let decisions = c.poll(now, &table);
        let mut started_in: HashMap<Option<String>, usize> = HashMap::new();
        for d in &decisions {
            match d {
                Decision::Start { endpoint, attempt } => {
                    assert!(
                        !succeeded.contains(endpoint),
                        "{endpoint} started after success"
                    );
                    assert!(
                        !running.contains_key(endpoint),
                        "{endpoint} dispatched twice"
                    );
                    assert!(
                        *attempt >= 1 && *attempt <= max_attempts,
                        "attempt {attempt}"
                    );
                    let view = c.device(endpoint).unwrap();
                    assert_eq!(view.kind, StateKind::InProgress);
                    *started_in.entry(view.slot_cell.clone()).or_default() += 1;
                    let duration = rng.range(3 * MIN, 40 * MIN);
                    running.insert(
                        endpoint.clone(),
                        Running {
                            finish_at: now + duration,
                            install_at: now + duration / 2,
                        },
                    );
                    starts_total += 1;
                }
                Decision::Pause { reason } => {
                    assert!(reason.contains("threshold"), "{reason}");
                    threshold_pauses += 1;
                }
                Decision::Complete => completed = true,
            }
        }

        // Metering: a cell that took a device is within its cap, and with cells that
        // never shrink every cell is within its cap at every step.
        for (cell, n) in c.in_flight_per_cell() {
            let cap = c.cell_cap(cell.as_deref(), &table) as usize;
            if started_in.contains_key(&cell) || !shrinking_cells {
                assert!(n <= cap, "cell {cell:?}: {n} in flight, cap {cap}");
            }
            if !started_in.contains_key(&cell) {
                assert!(
                    n <= before.get(&cell).copied().unwrap_or(0),
                    "grew without a start"
                );
            }
        }
        assert!(c.in_flight() as usize <= max_concurrent);
        assert_eq!(
            c.in_flight() as usize,
            running.len(),
            "server and campaign agree"
        );
        if step % 25 == 0 {
            c.audit().unwrap();
        }
        if completed {
            break;
        }
    }

    assert!(completed, "the campaign did not complete");
    assert!(restarted, "the restart was not exercised");
    assert_eq!(c.status(), &Status::Completed);
    c.audit().unwrap();
    let p = c.progress(now, &table);
    assert_eq!(
        p.counts.non_final(),
        0,
        "every device final: {:?}",
        p.counts
    );
    assert_eq!(p.counts.total() as usize, c.len());
    assert_eq!(c.len(), joined - removed.len());
    assert_eq!(p.counts.succeeded as usize, succeeded.len());
    let waves_total: u32 = p.waves.iter().map(|w| w.counts.total()).sum();
    let unassigned = p.counts.missed_deadline + p.counts.cancelled;
    assert!(waves_total <= p.counts.total() && p.counts.total() <= waves_total + unassigned);
    let cells_total: u32 = p.cells.iter().map(|c| c.counts.total()).sum();
    assert_eq!(cells_total, p.counts.total());
    for (ep, kind) in c.devices() {
        assert!(kind.is_final(), "{ep}: {kind}");
        let v = c.device(ep).unwrap();
        assert!(v.attempts <= max_attempts);
    }
    assert_eq!(c.poll(now + H, &table), []);
    Summary {
        counts: p.counts,
        threshold_pauses,
        elapsed_ms: now - T0,
    }
}

#[test]
fn three_thousand_devices_with_growing_cells() {
    let s = simulate(Scenario {
        seed: 0x5eed_0001,
        devices: 3_000,
        shrinking_cells: false,
        deadline_ms: 20 * 24 * H,
        bad_package: false,
    });
    assert!(s.counts.succeeded > 2_500, "{:?}", s.counts);
    assert_eq!(s.counts.missed_deadline, 0);
    assert!(s.elapsed_ms < 20 * 24 * H, "finished before the deadline");
}

#[test]
fn three_thousand_devices_with_congestion() {
    let s = simulate(Scenario {
        seed: 0x5eed_0002,
        devices: 3_000,
        shrinking_cells: true,
        deadline_ms: 20 * 24 * H,
        bad_package: false,
    });
    assert!(s.counts.succeeded > 2_500, "{:?}", s.counts);
}

#[test]
fn a_short_deadline_ends_the_rest_as_missed() {
    let s = simulate(Scenario {
        seed: 0x5eed_0003,
        devices: 3_000,
        shrinking_cells: true,
        deadline_ms: 12 * H,
        bad_package: false,
    });
    assert!(s.counts.missed_deadline > 100, "{:?}", s.counts);
    assert!(s.counts.succeeded > 100, "{:?}", s.counts);
}

#[test]
fn a_bad_package_trips_the_error_threshold() {
    let s = simulate(Scenario {
        seed: 0x5eed_0004,
        devices: 2_000,
        shrinking_cells: false,
        deadline_ms: 20 * 24 * H,
        bad_package: true,
    });
    assert!(s.threshold_pauses >= 1);
    assert!(s.counts.failed > 500, "{:?}", s.counts);
}
