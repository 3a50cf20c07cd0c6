//! The one error type of the registration interface: a CoAP response code
//! and a diagnostic text, because that is all a device can be told.

/// A refused Register, Update or De-register. Upstream answers with
/// `code` and `message` as the diagnostic payload (RFC 7252 §5.5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}.{:02} {message}", code.0, code.1)]
pub struct RegistrationError {
    /// CoAP response code as (class, detail): (4, 0) is 4.00.
    pub code: (u8, u8),
    pub message: String,
}

impl RegistrationError {
    pub const BAD_REQUEST: (u8, u8) = (4, 0);
    pub const FORBIDDEN: (u8, u8) = (4, 3);
    pub const NOT_FOUND: (u8, u8) = (4, 4);
    pub const METHOD_NOT_ALLOWED: (u8, u8) = (4, 5);
    pub const PRECONDITION_FAILED: (u8, u8) = (4, 12);
    pub const ENTITY_TOO_LARGE: (u8, u8) = (4, 13);
    pub const UNSUPPORTED_CONTENT_FORMAT: (u8, u8) = (4, 15);
    pub const INTERNAL: (u8, u8) = (5, 0);
    pub const SERVICE_UNAVAILABLE: (u8, u8) = (5, 3);

    pub fn new(code: (u8, u8), message: impl Into<String>) -> RegistrationError {
        RegistrationError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> RegistrationError {
        RegistrationError::new(Self::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> RegistrationError {
        RegistrationError::new(Self::NOT_FOUND, message)
    }
}

/// At most this many characters of peer input are echoed in a diagnostic,
/// so an error message stays small whatever the device sent.
pub(crate) const ECHO_LIMIT: usize = 32;

/// Peer text cut to [`ECHO_LIMIT`] characters and debug-quoted, so control
/// characters cannot reach a log line raw.
pub fn echo(s: &str) -> String {
    let cut: String = s.chars().take(ECHO_LIMIT).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}
