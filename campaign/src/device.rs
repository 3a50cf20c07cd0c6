//! One device's state in a campaign and the transitions between states.
//!
//! Every change of state goes through [`DeviceState::apply`], which refuses what
//! cannot happen (a success for a device not in progress, a start for one waiting on
//! a back-off) with a typed error and leaves the state as it was: the server's
//! reports may come twice or late, and none of them may be counted twice.
//!
//! Field and variant names are one letter in the serialized form: a campaign of a
//! million devices is persisted as a whole, and a pending device takes about fifty
//! bytes of JSON.

use serde::{Deserialize, Serialize};

use crate::facts::Packed;
use crate::outcome::FailureKind;
use crate::rules::{DeferReason, SkipReason, Verdict};

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

/// Where a device stands. `cell` fields are indexes in the campaign's cell book:
/// the cell a download's slot is charged to, fixed at its start even if the device
/// moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    /// Eligible, not started: waiting for its wave (when it has none yet), a slot, a
    /// window or a wake.
    #[serde(rename = "P")]
    Pending,
    #[serde(rename = "D")]
    Deferred {
        #[serde(rename = "r")]
        reason: DeferReason,
        /// When to look again without new facts; `None` waits for new facts.
        #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
    },
    #[serde(rename = "K")]
    Skipped {
        #[serde(rename = "r")]
        reason: SkipReason,
    },
    #[serde(rename = "I")]
    InProgress {
        #[serde(rename = "t")]
        started_at: u64,
        #[serde(rename = "c")]
        cell: u32,
        /// Past Execute Update: no longer cancellable.
        #[serde(rename = "i", default, skip_serializing_if = "is_false")]
        installing: bool,
    },
    /// Was in progress when the server stopped; the server asks the device how it
    /// stands. Keeps its slot meanwhile: it may still be downloading.
    #[serde(rename = "R")]
    Recovering {
        #[serde(rename = "t")]
        started_at: u64,
        #[serde(rename = "c")]
        cell: u32,
        #[serde(rename = "i", default, skip_serializing_if = "is_false")]
        installing: bool,
    },
    #[serde(rename = "W")]
    WaitingRetry {
        #[serde(rename = "n")]
        not_before: u64,
        #[serde(rename = "l")]
        last_error: FailureKind,
    },
    #[serde(rename = "S")]
    Succeeded,
    #[serde(rename = "F")]
    Failed {
        #[serde(rename = "r")]
        reason: FailureKind,
    },
    #[serde(rename = "C")]
    Cancelled,
    #[serde(rename = "M")]
    MissedDeadline,
}

/// The states as counted in progress reports; `WaitingForWave` is a pending device
/// whose wave has not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    WaitingForWave,
    Pending,
    Deferred,
    Skipped,
    InProgress,
    Recovering,
    WaitingRetry,
    Succeeded,
    Failed,
    Cancelled,
    MissedDeadline,
}

impl StateKind {
    /// Final for the campaign's completion. A skipped device is final although new
    /// facts may bring it back while the campaign runs.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StateKind::Skipped
                | StateKind::Succeeded
                | StateKind::Failed
                | StateKind::Cancelled
                | StateKind::MissedDeadline
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            StateKind::WaitingForWave => "waiting_for_wave",
            StateKind::Pending => "pending",
            StateKind::Deferred => "deferred",
            StateKind::Skipped => "skipped",
            StateKind::InProgress => "in_progress",
            StateKind::Recovering => "recovering",
            StateKind::WaitingRetry => "waiting_retry",
            StateKind::Succeeded => "succeeded",
            StateKind::Failed => "failed",
            StateKind::Cancelled => "cancelled",
            StateKind::MissedDeadline => "missed_deadline",
        }
    }
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What follows a failed attempt; decided by the scheduler from the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    Retry {
        not_before: u64,
    },
    GiveUp,
    /// A retry would come after the deadline.
    MissedDeadline,
}

/// Everything that can happen to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start {
        now: u64,
        cell: u32,
    },
    Installing,
    Succeeded,
    Failed {
        kind: FailureKind,
        then: AfterFailure,
    },
    RetryDue {
        now: u64,
    },
    Judged(Verdict),
    Cancel,
    Deadline,
    Recover,
    /// The server found a recovering device still at work.
    Resumed {
        installing: bool,
    },
    /// The server found the update never reached the device.
    NotStarted,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start { .. } => "start",
            Event::Installing => "installing",
            Event::Succeeded => "success report",
            Event::Failed { .. } => "failure report",
            Event::RetryDue { .. } => "retry",
            Event::Judged(_) => "rule evaluation",
            Event::Cancel => "cancel",
            Event::Deadline => "deadline",
            Event::Recover => "recovery",
            Event::Resumed { .. } => "resumption",
            Event::NotStarted => "not-started resolution",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{event} is not possible for a device that is {from}")]
pub struct TransitionError {
    pub from: StateKind,
    pub event: &'static str,
}

impl DeviceState {
    /// The kind, given whether the device has a wave yet.
    pub fn kind(&self, has_wave: bool) -> StateKind {
        match self {
            DeviceState::Pending if !has_wave => StateKind::WaitingForWave,
            DeviceState::Pending => StateKind::Pending,
            DeviceState::Deferred { .. } => StateKind::Deferred,
            DeviceState::Skipped { .. } => StateKind::Skipped,
            DeviceState::InProgress { .. } => StateKind::InProgress,
            DeviceState::Recovering { .. } => StateKind::Recovering,
            DeviceState::WaitingRetry { .. } => StateKind::WaitingRetry,
            DeviceState::Succeeded => StateKind::Succeeded,
            DeviceState::Failed { .. } => StateKind::Failed,
            DeviceState::Cancelled => StateKind::Cancelled,
            DeviceState::MissedDeadline => StateKind::MissedDeadline,
        }
    }

    /// The cell whose slot this device holds, if it holds one.
    pub fn slot(&self) -> Option<u32> {
        match *self {
            DeviceState::InProgress { cell, .. } | DeviceState::Recovering { cell, .. } => {
                Some(cell)
            }
            _ => None,
        }
    }

    /// When a timer must look at this device again.
    pub fn timer(&self) -> Option<u64> {
        match *self {
            DeviceState::WaitingRetry { not_before, .. } => Some(not_before),
            DeviceState::Deferred { until, .. } => until,
            _ => None,
        }
    }

    /// The state after `event`, or why it cannot happen.
    pub fn apply(&self, event: Event) -> Result<DeviceState, TransitionError> {
        use DeviceState as S;
        let next = match (*self, event) {
            (S::Pending, Event::Start { now, cell }) => Some(S::InProgress {
                started_at: now,
                cell,
                installing: false,
            }),
            (
                S::InProgress {
                    started_at, cell, ..
                },
                Event::Installing,
            ) => Some(S::InProgress {
                started_at,
                cell,
                installing: true,
            }),
            (
                S::Recovering {
                    started_at, cell, ..
                },
                Event::Installing,
            ) => Some(S::Recovering {
                started_at,
                cell,
                installing: true,
            }),
            (S::InProgress { .. } | S::Recovering { .. }, Event::Succeeded) => Some(S::Succeeded),
            (S::InProgress { .. } | S::Recovering { .. }, Event::Failed { kind, then }) => {
                Some(match then {
                    AfterFailure::Retry { not_before } => S::WaitingRetry {
                        not_before,
                        last_error: kind,
                    },
                    AfterFailure::GiveUp => S::Failed { reason: kind },
                    AfterFailure::MissedDeadline => S::MissedDeadline,
                })
            }
            (S::WaitingRetry { not_before, .. }, Event::RetryDue { now }) if now >= not_before => {
                Some(S::Pending)
            }
            (S::Pending | S::Deferred { .. } | S::Skipped { .. }, Event::Judged(v)) => {
                Some(match v {
                    Verdict::Eligible => S::Pending,
                    Verdict::Skip(reason) => S::Skipped { reason },
                    Verdict::Defer { reason, until } => S::Deferred { reason, until },
                })
            }
            (
                S::Pending
                | S::Deferred { .. }
                | S::WaitingRetry { .. }
                | S::InProgress {
                    installing: false, ..
                },
                Event::Cancel,
            ) => Some(S::Cancelled),
            (S::Pending | S::Deferred { .. } | S::WaitingRetry { .. }, Event::Deadline) => {
                Some(S::MissedDeadline)
            }
            (
                S::InProgress {
                    started_at,
                    cell,
                    installing,
                }
                | S::Recovering {
                    started_at,
                    cell,
                    installing,
                },
                Event::Recover,
            ) => Some(S::Recovering {
                started_at,
                cell,
                installing,
            }),
            (
                S::Recovering {
                    started_at, cell, ..
                },
                Event::Resumed { installing },
            ) => Some(S::InProgress {
                started_at,
                cell,
                installing,
            }),
            (S::Recovering { .. }, Event::NotStarted) => Some(S::Pending),
            _ => None,
        };
        next.ok_or(TransitionError {
            from: self.kind(true),
            event: event.name(),
        })
    }
}

/// One device of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceRecord {
    #[serde(rename = "e")]
    pub endpoint: String,
    /// `None` until the device's wave opens.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<u16>,
    #[serde(rename = "s")]
    pub state: DeviceState,
    #[serde(rename = "f")]
    pub facts: Packed,
    /// Attempts started so far.
    #[serde(rename = "a", default, skip_serializing_if = "is_zero_u16")]
    pub attempts: u16,
    #[serde(rename = "z", default, skip_serializing_if = "Option::is_none")]
    pub awake_until: Option<u64>,
    /// Wakes that were too short for the update.
    #[serde(rename = "u", default, skip_serializing_if = "is_zero_u8")]
    pub unfit_wakes: u8,
    #[serde(rename = "x", default, skip_serializing_if = "is_zero_u8")]
    pub integrity_failures: u8,
    /// First deferral for Wi-Fi, from which its limit counts.
    #[serde(rename = "y", default, skip_serializing_if = "Option::is_none")]
    pub wifi_since: Option<u64>,
    /// Ready-queue ticket: a queue entry with another ticket is stale.
    #[serde(skip)]
    pub ticket: u32,
    /// Has a live entry in its cell's ready queue.
    #[serde(skip)]
    pub queued: bool,
}

impl DeviceRecord {
    pub fn new(endpoint: String, facts: Packed, awake_until: Option<u64>) -> DeviceRecord {
        DeviceRecord {
            endpoint,
            wave: None,
            state: DeviceState::Pending,
            facts,
            attempts: 0,
            awake_until,
            unfit_wakes: 0,
            integrity_failures: 0,
            wifi_since: None,
            ticket: 0,
            queued: false,
        }
    }

    pub fn kind(&self) -> StateKind {
        self.state.kind(self.wave.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: DeviceState = DeviceState::InProgress {
        started_at: 10,
        cell: 2,
        installing: false,
    };

    fn all_states() -> Vec<DeviceState> {
        vec![
            DeviceState::Pending,
            DeviceState::Deferred {
                reason: DeferReason::LowBattery,
                until: None,
            },
            DeviceState::Skipped {
                reason: SkipReason::Roaming,
            },
            IN,
            DeviceState::InProgress {
                started_at: 10,
                cell: 2,
                installing: true,
            },
            DeviceState::Recovering {
                started_at: 10,
                cell: 2,
                installing: false,
            },
            DeviceState::WaitingRetry {
                not_before: 100,
                last_error: FailureKind::Timeout,
            },
            DeviceState::Succeeded,
            DeviceState::Failed {
                reason: FailureKind::InvalidUri,
            },
            DeviceState::Cancelled,
            DeviceState::MissedDeadline,
        ]
    }

    #[test]
    fn start_only_from_pending() {
        for s in all_states() {
            let r = s.apply(Event::Start { now: 5, cell: 1 });
            if s == DeviceState::Pending {
                assert_eq!(
                    r,
                    Ok(DeviceState::InProgress {
                        started_at: 5,
                        cell: 1,
                        installing: false
                    })
                );
            } else {
                assert_eq!(r.unwrap_err().event, "start", "{s:?}");
            }
        }
    }

    #[test]
    fn reports_only_while_in_progress_or_recovering() {
        for s in all_states() {
            let ok = matches!(
                s,
                DeviceState::InProgress { .. } | DeviceState::Recovering { .. }
            );
            assert_eq!(s.apply(Event::Succeeded).is_ok(), ok, "{s:?}");
        }
        // A second success report is refused: the state is final.
        let done = IN.apply(Event::Succeeded).unwrap();
        let e = done.apply(Event::Succeeded).unwrap_err();
        assert_eq!(e.from, StateKind::Succeeded);
        assert!(e.to_string().contains("succeeded"));
    }

    #[test]
    fn a_failure_leads_where_the_scheduler_says() {
        let f = |then| {
            IN.apply(Event::Failed {
                kind: FailureKind::ConnectionLost,
                then,
            })
        };
        assert_eq!(
            f(AfterFailure::Retry { not_before: 99 }),
            Ok(DeviceState::WaitingRetry {
                not_before: 99,
                last_error: FailureKind::ConnectionLost
            })
        );
        assert_eq!(
            f(AfterFailure::GiveUp),
            Ok(DeviceState::Failed {
                reason: FailureKind::ConnectionLost
            })
        );
        assert_eq!(
            f(AfterFailure::MissedDeadline),
            Ok(DeviceState::MissedDeadline)
        );
    }

    #[test]
    fn retry_is_due_only_at_its_time() {
        let w = DeviceState::WaitingRetry {
            not_before: 100,
            last_error: FailureKind::Timeout,
        };
        assert!(w.apply(Event::RetryDue { now: 99 }).is_err());
        assert_eq!(
            w.apply(Event::RetryDue { now: 100 }),
            Ok(DeviceState::Pending)
        );
        assert!(IN.apply(Event::RetryDue { now: 1000 }).is_err());
    }

    #[test]
    fn cancel_spares_installing_and_final_devices() {
        for s in all_states() {
            let cancellable = matches!(
                s,
                DeviceState::Pending
                    | DeviceState::Deferred { .. }
                    | DeviceState::WaitingRetry { .. }
                    | DeviceState::InProgress {
                        installing: false,
                        ..
                    }
            );
            assert_eq!(s.apply(Event::Cancel).is_ok(), cancellable, "{s:?}");
        }
    }

    #[test]
    fn the_deadline_ends_only_devices_not_started() {
        for s in all_states() {
            let ends = matches!(
                s,
                DeviceState::Pending
                    | DeviceState::Deferred { .. }
                    | DeviceState::WaitingRetry { .. }
            );
            assert_eq!(s.apply(Event::Deadline).is_ok(), ends, "{s:?}");
        }
    }

    #[test]
    fn rules_move_between_pending_deferred_and_skipped_only() {
        let skip = Event::Judged(Verdict::Skip(SkipReason::Suspended));
        for s in all_states() {
            let judged = matches!(
                s,
                DeviceState::Pending | DeviceState::Deferred { .. } | DeviceState::Skipped { .. }
            );
            assert_eq!(s.apply(skip).is_ok(), judged, "{s:?}");
        }
        let back = DeviceState::Skipped {
            reason: SkipReason::Roaming,
        }
        .apply(Event::Judged(Verdict::Eligible));
        assert_eq!(back, Ok(DeviceState::Pending));
    }

    #[test]
    fn recovery_keeps_the_slot_and_resolves_three_ways() {
        let r = IN.apply(Event::Recover).unwrap();
        assert_eq!(r.slot(), Some(2));
        assert_eq!(r.kind(true), StateKind::Recovering);
        assert_eq!(r.apply(Event::Recover), Ok(r), "idempotent");
        assert_eq!(
            r.apply(Event::Resumed { installing: true }),
            Ok(DeviceState::InProgress {
                started_at: 10,
                cell: 2,
                installing: true
            })
        );
        assert_eq!(r.apply(Event::NotStarted), Ok(DeviceState::Pending));
        assert_eq!(r.apply(Event::Succeeded), Ok(DeviceState::Succeeded));
        assert!(IN.apply(Event::NotStarted).is_err(), "only when recovering");
        assert!(DeviceState::Pending.apply(Event::Recover).is_err());
    }

    #[test]
    fn installing_is_idempotent_and_needs_an_update_under_way() {
        let i = IN.apply(Event::Installing).unwrap();
        assert_eq!(i.apply(Event::Installing), Ok(i));
        assert!(DeviceState::Pending.apply(Event::Installing).is_err());
    }

    #[test]
    fn kinds_and_finality() {
        assert_eq!(DeviceState::Pending.kind(false), StateKind::WaitingForWave);
        assert_eq!(DeviceState::Pending.kind(true), StateKind::Pending);
        let finals: Vec<_> = all_states()
            .iter()
            .filter(|s| s.kind(true).is_final())
            .copied()
            .collect();
        assert_eq!(finals.len(), 5);
        assert!(!StateKind::WaitingForWave.is_final());
    }

    #[test]
    fn records_are_tens_of_bytes_in_json() {
        let facts = Packed::new(&crate::facts::DeviceFacts::new("x"), 3);
        let mut rec = DeviceRecord::new("urn:imei:356938035643809".into(), facts, None);
        rec.wave = Some(0);
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.len() < 70, "{} bytes: {text}", text.len());
        rec.state = DeviceState::InProgress {
            started_at: 1_750_000_000_000,
            cell: 3,
            installing: false,
        };
        rec.attempts = 1;
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.len() < 100, "{} bytes: {text}", text.len());
        let back: DeviceRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rec);
    }
}
