//! Maintenance windows: a cron start on a time zone's wall clock, open for a fixed
//! real duration.
//!
//! The start follows the wall clock (an operator means "01:00 in Berlin", summer or
//! winter) and croner resolves it across DST changes: a start that falls in the hour
//! skipped in spring happens at the first instant after the gap, a start in the hour
//! repeated in autumn happens once, at its first occurrence. The duration is real
//! time, so a window spanning a change lasts as long as any other.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::policy::{WindowSpec, MAX_WINDOW_MS};

/// Longest cron expression or time zone name accepted.
const MAX_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("invalid cron expression {expr:?}: {message}")]
    InvalidCron { expr: String, message: String },
    #[error("unknown time zone {0:?} (an IANA name such as \"Europe/Berlin\" is expected)")]
    InvalidTimeZone(String),
    #[error("window duration {0} ms is outside 1..={MAX_WINDOW_MS}")]
    InvalidDuration(u64),
    #[error("cron expression {0:?} never starts a window")]
    NeverOpens(String),
}

/// A compiled maintenance window.
#[derive(Debug, Clone)]
pub struct MaintenanceWindow {
    cron: Cron,
    tz: Tz,
    duration_ms: u64,
}

fn to_tz(now_unix_ms: u64, tz: Tz) -> Option<DateTime<Tz>> {
    let ms = i64::try_from(now_unix_ms).ok()?;
    Some(DateTime::<Utc>::from_timestamp_millis(ms)?.with_timezone(&tz))
}

fn to_ms(t: &DateTime<Tz>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}

impl MaintenanceWindow {
    pub fn new(spec: &WindowSpec) -> Result<MaintenanceWindow, WindowError> {
        if spec.cron.len() > MAX_TEXT {
            return Err(WindowError::InvalidCron {
                expr: spec.cron.chars().take(64).collect(),
                message: format!("longer than {MAX_TEXT} bytes"),
            });
        }
        // Minute granularity and no year field: a window's start needs neither, and a
        // year in the past would send every search to croner's far limit.
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&spec.cron)
            .map_err(|e| WindowError::InvalidCron {
                expr: spec.cron.clone(),
                message: e.to_string(),
            })?;
        if spec.tz.len() > MAX_TEXT {
            return Err(WindowError::InvalidTimeZone(
                spec.tz.chars().take(64).collect(),
            ));
        }
        let tz: Tz = spec
            .tz
            .parse()
            .map_err(|_| WindowError::InvalidTimeZone(spec.tz.clone()))?;
        if spec.duration_ms == 0 || spec.duration_ms > MAX_WINDOW_MS {
            return Err(WindowError::InvalidDuration(spec.duration_ms));
        }
        Ok(MaintenanceWindow {
            cron,
            tz,
            duration_ms: spec.duration_ms,
        })
    }

    /// The end of the window that contains `now`, if one does.
    pub fn open_until(&self, now_unix_ms: u64) -> Option<u64> {
        let now = to_tz(now_unix_ms, self.tz)?;
        // The latest start at or before now has the latest end: all windows of one
        // spec are equally long.
        let start = self.cron.find_previous_occurrence(&now, true).ok()?;
        let end = to_ms(&start)?.saturating_add(self.duration_ms);
        (end > now_unix_ms).then_some(end)
    }

    pub fn is_open(&self, now_unix_ms: u64) -> bool {
        self.open_until(now_unix_ms).is_some()
    }

    /// `now` if open, else the next start; `None` if the pattern never matches again.
    pub fn next_open(&self, now_unix_ms: u64) -> Option<u64> {
        if self.is_open(now_unix_ms) {
            return Some(now_unix_ms);
        }
        let now = to_tz(now_unix_ms, self.tz)?;
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        to_ms(&next)
    }
}

/// Whether starts are allowed now, and until when that stays true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// No windows configured: always open.
    Always,
    Open {
        until: u64,
    },
    Closed {
        next_open: Option<u64>,
    },
}

impl WindowState {
    pub fn is_open(&self) -> bool {
        !matches!(self, WindowState::Closed { .. })
    }
}

/// The policy's windows together: open when any one is.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    windows: Vec<MaintenanceWindow>,
}

impl Windows {
    pub fn compile(specs: &[WindowSpec]) -> Result<Windows, (usize, WindowError)> {
        let windows = specs
            .iter()
            .enumerate()
            .map(|(i, s)| MaintenanceWindow::new(s).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Windows { windows })
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    pub fn state(&self, now_unix_ms: u64) -> WindowState {
        if self.windows.is_empty() {
            return WindowState::Always;
        }
        let until = self
            .windows
            .iter()
            .filter_map(|w| w.open_until(now_unix_ms))
            .max();
        match until {
            Some(until) => WindowState::Open { until },
            None => WindowState::Closed {
                next_open: self.next_open(now_unix_ms),
            },
        }
    }

    pub fn is_open(&self, now_unix_ms: u64) -> bool {
        self.state(now_unix_ms).is_open()
    }

    pub fn next_open(&self, now_unix_ms: u64) -> Option<u64> {
        if self.windows.is_empty() {
            return Some(now_unix_ms);
        }
        self.windows
            .iter()
            .filter_map(|w| w.next_open(now_unix_ms))
            .min()
    }

    /// Index of a window that never opens after `now`, which a new campaign refuses.
    pub fn never_opening(&self, now_unix_ms: u64) -> Option<usize> {
        self.windows
            .iter()
            .position(|w| w.next_open(now_unix_ms).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const H: u64 = 3_600_000;

    fn spec(cron: &str, duration_ms: u64, tz: &str) -> WindowSpec {
        WindowSpec {
            cron: cron.into(),
            duration_ms,
            tz: tz.into(),
        }
    }

    fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp_millis() as u64
    }

    #[test]
    fn invalid_cron_names_the_text() {
        let e = MaintenanceWindow::new(&spec("0 25 * * *", H, "UTC")).unwrap_err();
        assert!(matches!(&e, WindowError::InvalidCron { expr, .. } if expr == "0 25 * * *"));
        assert!(e.to_string().contains("0 25 * * *"));
        assert!(MaintenanceWindow::new(&spec("", H, "UTC")).is_err());
        // Six fields (seconds) are refused: windows have minute granularity.
        assert!(MaintenanceWindow::new(&spec("0 0 1 * * *", H, "UTC")).is_err());
        let long = "1 ".repeat(300);
        assert!(MaintenanceWindow::new(&spec(&long, H, "UTC")).is_err());
    }

    #[test]
    fn invalid_time_zone_names_the_text() {
        let e = MaintenanceWindow::new(&spec("0 1 * * *", H, "Mars/Olympus")).unwrap_err();
        assert_eq!(e, WindowError::InvalidTimeZone("Mars/Olympus".into()));
        assert!(e.to_string().contains("Mars/Olympus"));
    }

    #[test]
    fn duration_is_bounded() {
        assert_eq!(
            MaintenanceWindow::new(&spec("0 1 * * *", 0, "UTC")).unwrap_err(),
            WindowError::InvalidDuration(0)
        );
        assert!(MaintenanceWindow::new(&spec("0 1 * * *", MAX_WINDOW_MS + 1, "UTC")).is_err());
    }

    #[test]
    fn open_and_next_open_in_utc() {
        let w = MaintenanceWindow::new(&spec("0 22 * * *", 2 * H, "UTC")).unwrap();
        let day = utc_ms(2025, 6, 10, 0, 0);
        assert!(!w.is_open(day + 21 * H));
        assert_eq!(w.next_open(day + 21 * H), Some(day + 22 * H));
        assert!(w.is_open(day + 22 * H), "the start itself is inside");
        assert_eq!(w.open_until(day + 23 * H), Some(day + 24 * H));
        assert!(!w.is_open(day + 24 * H), "the end is outside");
        assert_eq!(w.next_open(day + 23 * H), Some(day + 23 * H));
    }

    #[test]
    fn berlin_window_follows_the_wall_clock_across_spring_forward() {
        // 01:00 Berlin for 3 h. On 2025-03-30 clocks go from 02:00 CET to 03:00 CEST.
        let w = MaintenanceWindow::new(&spec("0 1 * * *", 3 * H, "Europe/Berlin")).unwrap();
        // 29 March: 01:00 CET = 00:00 UTC.
        let sat = utc_ms(2025, 3, 29, 0, 0);
        assert_eq!(w.next_open(sat - H), Some(sat));
        // 30 March: still CET at 01:00, so 00:00 UTC; the window lasts 3 real hours,
        // to 03:00 UTC = 05:00 CEST on the wall clock.
        let sun = utc_ms(2025, 3, 30, 0, 0);
        assert_eq!(w.next_open(sat + 4 * H), Some(sun));
        assert_eq!(w.open_until(sun + H), Some(sun + 3 * H));
        assert!(!w.is_open(sun + 3 * H));
        // 31 March: 01:00 CEST = 23:00 UTC the day before.
        let mon = utc_ms(2025, 3, 30, 23, 0);
        assert_eq!(w.next_open(sun + 4 * H), Some(mon));
        assert!(!w.is_open(mon - 1), "not at midnight UTC any more");
        assert!(w.is_open(mon));
    }

    #[test]
    fn a_start_inside_the_skipped_hour_happens_right_after_it() {
        // 02:30 does not exist in Berlin on 2025-03-30: the window starts at 03:00
        // CEST (01:00 UTC), the first instant after the gap.
        let w = MaintenanceWindow::new(&spec("30 2 * * *", H, "Europe/Berlin")).unwrap();
        let before = utc_ms(2025, 3, 29, 12, 0);
        assert_eq!(w.next_open(before), Some(utc_ms(2025, 3, 30, 1, 0)));
        assert!(w.is_open(utc_ms(2025, 3, 30, 1, 30)));
        assert!(!w.is_open(utc_ms(2025, 3, 30, 2, 0)));
    }

    #[test]
    fn a_start_inside_the_repeated_hour_happens_once() {
        // 02:30 happens twice in Berlin on 2025-10-26 (CEST, then CET): one window,
        // at the first (00:30 UTC), then the next day's 02:30 CET (01:30 UTC).
        let w = MaintenanceWindow::new(&spec("30 2 * * *", 30 * 60_000, "Europe/Berlin")).unwrap();
        let first = utc_ms(2025, 10, 26, 0, 30);
        assert_eq!(w.next_open(utc_ms(2025, 10, 25, 12, 0)), Some(first));
        assert!(w.is_open(first));
        assert!(!w.is_open(utc_ms(2025, 10, 26, 1, 30)), "not again at CET");
        assert_eq!(
            w.next_open(utc_ms(2025, 10, 26, 1, 0)),
            Some(utc_ms(2025, 10, 27, 1, 30))
        );
    }

    #[test]
    fn windows_together_open_when_any_is_and_report_the_latest_end() {
        let ws = Windows::compile(&[
            spec("0 1 * * *", 2 * H, "UTC"),
            spec("0 2 * * *", 2 * H, "UTC"),
        ])
        .unwrap();
        let day = utc_ms(2025, 6, 10, 0, 0);
        assert_eq!(
            ws.state(day),
            WindowState::Closed {
                next_open: Some(day + H)
            }
        );
        assert_eq!(
            ws.state(day + 2 * H),
            WindowState::Open { until: day + 4 * H }
        );
        assert_eq!(
            ws.state(day + 3 * H),
            WindowState::Open { until: day + 4 * H }
        );
        assert!(!ws.is_open(day + 4 * H));
        assert_eq!(Windows::default().state(5), WindowState::Always);
        assert_eq!(Windows::default().next_open(5), Some(5));
    }

    #[test]
    fn compile_reports_the_failing_index() {
        let e = Windows::compile(&[spec("0 1 * * *", H, "UTC"), spec("0 1 * * *", H, "X/Y")])
            .unwrap_err();
        assert_eq!(e.0, 1);
    }

    #[test]
    fn impossible_dates_never_open_and_are_detected() {
        let ws =
            Windows::compile(&[spec("0 1 * * *", H, "UTC"), spec("0 0 31 4 *", H, "UTC")]).unwrap();
        let now = utc_ms(2025, 1, 1, 0, 0);
        assert_eq!(ws.never_opening(now), Some(1));
        assert_eq!(
            ws.next_open(now),
            Some(now + H),
            "the other window still counts"
        );
    }

    #[test]
    fn instants_out_of_range_are_closed_not_a_panic() {
        let w = MaintenanceWindow::new(&spec("* * * * *", H, "UTC")).unwrap();
        assert!(!w.is_open(u64::MAX));
        assert_eq!(w.next_open(u64::MAX), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_cron_text_never_panics(text in "[0-9*/,LW#?A-Z@ -]{0,40}", now in 0u64..4_000_000_000_000) {
            if let Ok(w) = MaintenanceWindow::new(&spec(&text, H, "UTC")) {
                let _ = w.is_open(now);
            }
        }
    }
}
