//! Why a DM operation failed: refused locally before anything was sent,
//! or answered by the device with an error code, or answered with
//! something this layer cannot read.

use std::fmt;

use coap_lite::{MessageClass, Packet};
use lwm2m_objects::link::AttributeError;
use lwm2m_objects::{ContentFormat, DecodeError, EncodeError, Path, Version};

use super::execute::ExecuteArgsError;

/// The most bytes of a device's diagnostic payload kept in an error.
pub const MAX_DIAGNOSTIC_BYTES: usize = 256;

/// A failed DM operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DmError {
    /// LwM2M 1.2 Core: any DM operation on /0 (Security) or /21 (OSCORE)
    /// is rejected as unauthorized; this server does not even send it.
    #[error("object {0} (Security/OSCORE) is reserved to bootstrap and is refused")]
    ProtectedObject(u16),
    #[error("{operation} cannot target {path}: {reason}")]
    InvalidTarget {
        operation: &'static str,
        path: Path,
        reason: &'static str,
    },
    #[error("invalid {operation} request: {reason}")]
    InvalidRequest {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation} needs LwM2M {needed} or later; the device registered {device}")]
    VersionTooOld {
        operation: &'static str,
        needed: Version,
        device: Version,
    },
    #[error("execute arguments: {0}")]
    ExecuteArgs(#[from] ExecuteArgsError),
    #[error("attributes: {0}")]
    Attributes(#[from] AttributeError),
    #[error("{format} cannot be used here: {reason}")]
    FormatRefused {
        format: ContentFormat,
        reason: &'static str,
    },
    #[error("encoding the request: {0}")]
    Encode(#[from] EncodeError),
    /// The device answered 4.xx or 5.xx.
    #[error("device answered {0}")]
    Device(DeviceError),
    #[error("device answered {got} where {expected} was expected")]
    UnexpectedCode { got: String, expected: &'static str },
    #[error("response payload: {0}")]
    Decode(#[from] DecodeError),
    #[error("malformed response: {0}")]
    MalformedResponse(String),
}

/// The error codes LwM2M gives a meaning (Transport "Response Codes"),
/// and the rest by class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 4.00: malformed request, bad arguments or attributes.
    BadRequest,
    /// 4.01: access control refused the operation.
    Unauthorized,
    /// 4.04: no such object, instance or resource.
    NotFound,
    /// 4.05: the operation is not allowed on the target.
    MethodNotAllowed,
    /// 4.06: none of the Accept formats is supported.
    NotAcceptable,
    /// 4.08: a Block1 transfer is missing blocks.
    RequestEntityIncomplete,
    /// 4.13: the request body is too large.
    RequestEntityTooLarge,
    /// 4.15: the body's Content-Format is not supported.
    UnsupportedContentFormat,
    /// Another 4.xx; the raw code byte (`class << 5 | detail`).
    OtherClient(u8),
    /// 5.xx; the raw code byte.
    Server(u8),
}

impl ErrorCode {
    /// The code of a 4.xx/5.xx response; `None` for anything else.
    pub fn from_class(class: MessageClass) -> Option<ErrorCode> {
        let raw = u8::from(class);
        Some(match raw {
            0x80 => ErrorCode::BadRequest,
            0x81 => ErrorCode::Unauthorized,
            0x84 => ErrorCode::NotFound,
            0x85 => ErrorCode::MethodNotAllowed,
            0x86 => ErrorCode::NotAcceptable,
            0x88 => ErrorCode::RequestEntityIncomplete,
            0x8D => ErrorCode::RequestEntityTooLarge,
            0x8F => ErrorCode::UnsupportedContentFormat,
            r if r >> 5 == 4 => ErrorCode::OtherClient(r),
            r if r >> 5 == 5 => ErrorCode::Server(r),
            _ => return None,
        })
    }

    /// The raw code byte.
    pub fn raw(self) -> u8 {
        match self {
            ErrorCode::BadRequest => 0x80,
            ErrorCode::Unauthorized => 0x81,
            ErrorCode::NotFound => 0x84,
            ErrorCode::MethodNotAllowed => 0x85,
            ErrorCode::NotAcceptable => 0x86,
            ErrorCode::RequestEntityIncomplete => 0x88,
            ErrorCode::RequestEntityTooLarge => 0x8D,
            ErrorCode::UnsupportedContentFormat => 0x8F,
            ErrorCode::OtherClient(r) | ErrorCode::Server(r) => r,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.raw();
        write!(f, "{}.{:02}", r >> 5, r & 0x1F)
    }
}

/// An error response from the device: its code and its diagnostic
/// payload, cut to [`MAX_DIAGNOSTIC_BYTES`] and with control characters
/// replaced, so that it can go into logs and API answers as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceError {
    pub code: ErrorCode,
    pub diagnostic: String,
}

impl DeviceError {
    /// The device error a response carries; `None` unless it is 4.xx/5.xx.
    pub fn from_response(packet: &Packet) -> Option<DeviceError> {
        Some(DeviceError {
            code: ErrorCode::from_class(packet.header.code)?,
            diagnostic: sanitize_diagnostic(&packet.payload),
        })
    }
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.diagnostic.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {:?}", self.code, self.diagnostic)
        }
    }
}

/// A diagnostic payload as text fit for logs: at most
/// [`MAX_DIAGNOSTIC_BYTES`] bytes of input, invalid UTF-8 replaced,
/// control characters (newlines, escapes) replaced by U+FFFD.
pub fn sanitize_diagnostic(payload: &[u8]) -> String {
    let cut = payload.get(..MAX_DIAGNOSTIC_BYTES).unwrap_or(payload);
    String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::ResponseType;

    #[test]
    fn codes_map_to_their_meaning() {
        let rows = [
            (0x80, ErrorCode::BadRequest, "4.00"),
            (0x81, ErrorCode::Unauthorized, "4.01"),
            (0x84, ErrorCode::NotFound, "4.04"),
            (0x85, ErrorCode::MethodNotAllowed, "4.05"),
            (0x86, ErrorCode::NotAcceptable, "4.06"),
            (0x88, ErrorCode::RequestEntityIncomplete, "4.08"),
            (0x8D, ErrorCode::RequestEntityTooLarge, "4.13"),
            (0x8F, ErrorCode::UnsupportedContentFormat, "4.15"),
            (0x83, ErrorCode::OtherClient(0x83), "4.03"),
            (0xA0, ErrorCode::Server(0xA0), "5.00"),
            (0xA3, ErrorCode::Server(0xA3), "5.03"),
            (0xBF, ErrorCode::Server(0xBF), "5.31"),
        ];
        for (raw, code, text) in rows {
            assert_eq!(ErrorCode::from_class(MessageClass::from(raw)), Some(code));
            assert_eq!(code.to_string(), text);
            assert_eq!(code.raw(), raw);
        }
        assert_eq!(
            ErrorCode::from_class(MessageClass::Response(ResponseType::Content)),
            None
        );
        assert_eq!(ErrorCode::from_class(MessageClass::Empty), None);
    }

    #[test]
    fn diagnostics_are_bounded_and_sanitized() {
        assert_eq!(
            sanitize_diagnostic(b"no such\nobject\x1b[31m"),
            "no such\u{FFFD}object\u{FFFD}[31m"
        );
        assert_eq!(sanitize_diagnostic(&[0xFF, b'a']), "\u{FFFD}a");
        let long = vec![b'x'; 10_000];
        assert_eq!(sanitize_diagnostic(&long).len(), MAX_DIAGNOSTIC_BYTES);
    }
}
