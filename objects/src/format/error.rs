//! Errors of encoding and decoding. Decode errors are what a device or an
//! operator sent wrong; the server turns them into 4.00 / 4.15 with the
//! error's text as diagnostic payload.

use crate::format::ContentFormat;
use crate::node::TreeError;
use crate::path::{Path, PathError};
use crate::value::TypeMismatch;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("content format {0} is not supported")]
    UnknownFormat(u16),
    #[error("{format} cannot carry {operation} payloads")]
    Unsupported {
        format: ContentFormat,
        operation: &'static str,
    },
    #[error("{format} payload is truncated: {context}")]
    Truncated {
        format: ContentFormat,
        context: &'static str,
    },
    #[error("{format} payload has {extra} bytes after its end")]
    TrailingBytes { format: ContentFormat, extra: usize },
    #[error("{format} payload: {what} exceeds the limit of {limit}")]
    TooLarge {
        format: ContentFormat,
        what: &'static str,
        limit: usize,
    },
    #[error("{format} payload is nested more than {limit} levels deep")]
    TooDeep { format: ContentFormat, limit: usize },
    #[error("{format} payload is malformed: {reason}")]
    Malformed {
        format: ContentFormat,
        reason: String,
    },
    #[error("value at {path}: {source}")]
    WrongType { path: Path, source: TypeMismatch },
    #[error("{0} carries one value; the target is not a single resource or resource instance")]
    NotSingleValue(ContentFormat),
    #[error("invalid path: {0}")]
    Path(#[from] PathError),
    #[error("{0}")]
    Tree(#[from] TreeError),
}

impl DecodeError {
    pub(crate) fn malformed(format: ContentFormat, reason: impl Into<String>) -> DecodeError {
        DecodeError::Malformed {
            format,
            reason: reason.into(),
        }
    }
}

/// Why a node could not be encoded. These are caller errors (a node that
/// does not fit the format or the path), never data-dependent panics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("{format} cannot carry {operation} payloads")]
    Unsupported {
        format: ContentFormat,
        operation: &'static str,
    },
    #[error("{0} carries one value; the node is not a single resource or resource instance")]
    NotSingleValue(ContentFormat),
    #[error("{format} cannot carry a {kind} value")]
    ValueType {
        format: ContentFormat,
        kind: &'static str,
    },
    #[error("node of depth {node_depth} does not belong at path {path}")]
    PathMismatch { path: Path, node_depth: usize },
    #[error("{format}: {what} is too large for the format")]
    TooLarge {
        format: ContentFormat,
        what: &'static str,
    },
    #[error("invalid path: {0}")]
    Path(#[from] PathError),
    #[error("CBOR writer failed: {0}")]
    Cbor(String),
}
