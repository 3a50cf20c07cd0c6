//! What the server reports about one device's update, and which failures deserve
//! another attempt.
//!
//! The classification is an operator's, not the specification's: a retry costs a
//! whole download over a cellular link, so only failures that a second try can cure
//! are retried.
//!
//! | failure | LwM2M Update Result | retried |
//! |---|---|---|
//! | connection lost during download | 4 | yes |
//! | timeout, device asleep, unreachable, interrupted, server error, other | – | yes |
//! | deferred by the device | 11 | yes |
//! | integrity check failure | 5 | once: a corrupted transfer is cured by one more, a second CRC failure means a bad package |
//! | not enough flash | 2 | no: the next download will not fit either |
//! | out of RAM | 3 | no: same image, same device, same RAM |
//! | unsupported package type, invalid URI, unsupported protocol | 6, 7, 9 | never: the campaign itself is wrong for this device |
//! | firmware update failed | 8 | no: reinstalling an image the device rejected risks a brick |
//! | cancelled on the device | 10 | no: someone on the device said no |
//! | version mismatch after "success" | – | no: the device runs something else than the package |

use serde::{Deserialize, Serialize};

/// Longest failure detail kept; the server keeps the full text in its update record.
pub const MAX_DETAIL: usize = 200;

/// Why one attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    NotEnoughFlash,
    OutOfRam,
    ConnectionLost,
    IntegrityFailure,
    UnsupportedPackageType,
    InvalidUri,
    UpdateFailed,
    UnsupportedProtocol,
    CancelledOnDevice,
    DeferredByDevice,
    /// The server's download or update timeout expired.
    Timeout,
    /// A queue-mode device went back to sleep before the step completed.
    DeviceAsleep,
    /// The device is not registered or does not answer.
    Unreachable,
    /// The device reported success but runs another version (/3/0/3).
    VersionMismatch,
    /// Found after a restart: the update on the device had vanished half way.
    Interrupted,
    /// The server failed (its store, a token), not the device.
    ServerError,
    Other,
}

/// Whether a failure kind may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Yes,
    /// Only while this kind has failed no more than once on the device.
    Once,
    Never,
}

impl FailureKind {
    /// The failure an Update Result (/5/0/5) stands for; `None` for 0 (initial) and 1
    /// (success), and for values the specification does not define.
    pub fn from_update_result(code: i64) -> Option<FailureKind> {
        Some(match code {
            2 => FailureKind::NotEnoughFlash,
            3 => FailureKind::OutOfRam,
            4 => FailureKind::ConnectionLost,
            5 => FailureKind::IntegrityFailure,
            6 => FailureKind::UnsupportedPackageType,
            7 => FailureKind::InvalidUri,
            8 => FailureKind::UpdateFailed,
            9 => FailureKind::UnsupportedProtocol,
            10 => FailureKind::CancelledOnDevice,
            11 => FailureKind::DeferredByDevice,
            _ => return None,
        })
    }

    pub fn retry(self) -> Retry {
        use FailureKind::*;
        match self {
            ConnectionLost | DeferredByDevice | Timeout | DeviceAsleep | Unreachable
            | Interrupted | ServerError | Other => Retry::Yes,
            IntegrityFailure => Retry::Once,
            NotEnoughFlash
            | OutOfRam
            | UnsupportedPackageType
            | InvalidUri
            | UpdateFailed
            | UnsupportedProtocol
            | CancelledOnDevice
            | VersionMismatch => Retry::Never,
        }
    }

    /// The snake_case name, as in JSON.
    pub fn name(self) -> &'static str {
        use FailureKind::*;
        match self {
            NotEnoughFlash => "not_enough_flash",
            OutOfRam => "out_of_ram",
            ConnectionLost => "connection_lost",
            IntegrityFailure => "integrity_failure",
            UnsupportedPackageType => "unsupported_package_type",
            InvalidUri => "invalid_uri",
            UpdateFailed => "update_failed",
            UnsupportedProtocol => "unsupported_protocol",
            CancelledOnDevice => "cancelled_on_device",
            DeferredByDevice => "deferred_by_device",
            Timeout => "timeout",
            DeviceAsleep => "device_asleep",
            Unreachable => "unreachable",
            VersionMismatch => "version_mismatch",
            Interrupted => "interrupted",
            ServerError => "server_error",
            Other => "other",
        }
    }
}

/// How one attempt ended, as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Verified: the device runs the package's version.
    Succeeded,
    Failed {
        kind: FailureKind,
        detail: String,
    },
}

impl Outcome {
    pub fn failed(kind: FailureKind, detail: impl Into<String>) -> Outcome {
        Outcome::Failed {
            kind,
            detail: detail.into(),
        }
    }
}

/// Cuts a detail to [`MAX_DETAIL`] bytes on a character boundary.
pub(crate) fn truncate_detail(detail: &str) -> String {
    if detail.len() <= MAX_DETAIL {
        return detail.to_string();
    }
    let mut end = MAX_DETAIL;
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    detail[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_results_map_to_kinds() {
        assert_eq!(FailureKind::from_update_result(0), None);
        assert_eq!(FailureKind::from_update_result(1), None);
        assert_eq!(FailureKind::from_update_result(12), None);
        assert_eq!(FailureKind::from_update_result(-1), None);
        let kinds: Vec<_> = (2..=11)
            .map(|c| FailureKind::from_update_result(c).unwrap())
            .collect();
        assert_eq!(kinds.len(), 10);
        assert_eq!(kinds[2], FailureKind::ConnectionLost);
        assert_eq!(kinds[3], FailureKind::IntegrityFailure);
    }

    #[test]
    fn classification_matches_the_table() {
        let r = |c| FailureKind::from_update_result(c).unwrap().retry();
        assert_eq!(r(2), Retry::Never);
        assert_eq!(r(3), Retry::Never);
        assert_eq!(r(4), Retry::Yes);
        assert_eq!(r(5), Retry::Once);
        assert_eq!(r(6), Retry::Never);
        assert_eq!(r(7), Retry::Never);
        assert_eq!(r(8), Retry::Never);
        assert_eq!(r(9), Retry::Never);
        assert_eq!(r(10), Retry::Never);
        assert_eq!(r(11), Retry::Yes);
        assert_eq!(FailureKind::Timeout.retry(), Retry::Yes);
        assert_eq!(FailureKind::DeviceAsleep.retry(), Retry::Yes);
        assert_eq!(FailureKind::VersionMismatch.retry(), Retry::Never);
    }

    #[test]
    fn names_are_the_json_names() {
        for k in [
            FailureKind::NotEnoughFlash,
            FailureKind::IntegrityFailure,
            FailureKind::UnsupportedPackageType,
            FailureKind::VersionMismatch,
            FailureKind::Other,
        ] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.name())
            );
        }
    }

    #[test]
    fn outcome_json_shape() {
        let o: Outcome = serde_json::from_str(
            r#"{"outcome":"failed","kind":"connection_lost","detail":"Update Result 4"}"#,
        )
        .unwrap();
        assert_eq!(
            o,
            Outcome::failed(FailureKind::ConnectionLost, "Update Result 4")
        );
        let s: Outcome = serde_json::from_str(r#"{"outcome":"succeeded"}"#).unwrap();
        assert_eq!(s, Outcome::Succeeded);
    }

    #[test]
    fn details_are_cut_on_a_char_boundary() {
        let long = "é".repeat(150);
        let cut = truncate_detail(&long);
        assert!(cut.len() <= MAX_DETAIL);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate_detail("short"), "short");
    }
}
