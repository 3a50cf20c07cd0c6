//! Firmware campaign scheduling (no I/O).
//!
//! A campaign is a package, a set of devices and a [`Policy`]. The [`Campaign`]
//! state machine decides when each device's update starts (waves and their success
//! gate, global and per-cell concurrency, maintenance windows, queue-mode wakes, the
//! per-device rules, back-off, the deadline) and keeps every device's state; the
//! server performs the update itself and reports the outcome back.
//!
//! The crate reads no clock and does no I/O: every call takes `now_unix_ms`, so a
//! test drives a whole campaign on a clock of its own, and the server persists the
//! campaign (it is `serde`) wherever it keeps its state.
//!
//! - [`policy`]: the operator's policy, parsed from JSON and bounded.
//! - [`windows`]: maintenance windows on a time zone's wall clock.
//! - [`backoff`]: retry delays with deterministic jitter.
//! - [`outcome`]: reported outcomes and which failures are retried.
//! - [`facts`]: what the inventory knows of a device.
//! - [`rules`]: roaming, battery, Wi-Fi and billing rules.
//! - [`cells`]: the network-status table and per-cell slots.
//! - [`device`]: one device's states and transitions.
//! - [`progress`]: counts and the completion estimate.
//! - [`scheduler`]: the campaign itself.

pub mod backoff;
pub mod cells;
pub mod device;
pub mod facts;
pub mod outcome;
pub mod policy;
pub mod progress;
pub mod rules;
pub mod scheduler;
pub mod windows;

pub use cells::{CellStatus, CellTable};
pub use device::{DeviceState, StateKind, TransitionError};
pub use facts::{DeviceFacts, FactsError};
pub use outcome::{FailureKind, Outcome, Retry};
pub use policy::{Policy, PolicyError, WaveSize};
pub use progress::{Progress, StateCounts};
pub use rules::{DeferReason, SkipReason};
pub use scheduler::{
    AddSummary, Campaign, CampaignError, Decision, DeviceView, Header, PauseCause, Recovered,
    Resolution, Row, RowRef, Status,
};
pub use windows::{MaintenanceWindow, WindowError};
