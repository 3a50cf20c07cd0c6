//! Content formats and the one registry that picks a codec for a CoAP
//! content-format number.
//!
//! Three shapes of payload exist in LwM2M, and a codec implements those its
//! format can carry:
//! - one [`Node`] at a request path (Read, Write, Create, Observe): every format;
//! - several nodes at several paths (Read-/Write-/Observe-Composite, Send):
//!   SenML JSON/CBOR and LwM2M CBOR;
//! - timestamped series of nodes (notifications with history, Send):
//!   SenML JSON/CBOR and LwM2M JSON;
//! - a bare list of paths (the body of a Read-Composite request): SenML.
//!
//! Decoding is model-aware: a [`Model`] gives each resource its type and tells
//! single from multiple resources. With [`crate::model::NoModel`] decoders fall
//! back to the types the format carries (TLV then yields opaque bytes).
//!
//! Link format (40) is not a node format; see [`crate::link`].

pub mod cbor;
pub mod error;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod lwm2m_cbor;
pub mod lwm2m_json;
pub mod opaque;
pub mod senml;
pub mod text;
pub mod tlv;

use std::collections::BTreeMap;
use std::fmt;

pub use error::{DecodeError, EncodeError};

use crate::model::{Model, ResourceType};
use crate::node::{Node, TimestampedNode};
use crate::path::Path;
use crate::value::Value;

/// The CoAP content formats LwM2M uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentFormat {
    /// `text/plain` (0): one value.
    Text,
    /// `application/link-format` (40): Discover and Register payloads.
    LinkFormat,
    /// `application/octet-stream` (42): one opaque value.
    Opaque,
    /// `application/cbor` (60): one value as a CBOR item.
    Cbor,
    /// `application/senml+json` (110).
    SenmlJson,
    /// `application/senml+cbor` (112).
    SenmlCbor,
    /// `application/vnd.oma.lwm2m+tlv` (11542).
    Tlv,
    /// `application/vnd.oma.lwm2m+json` (11543), the 1.0 JSON format.
    Lwm2mJson,
    /// `application/vnd.oma.lwm2m+cbor` (11544), LwM2M 1.2.
    Lwm2mCbor,
}

impl ContentFormat {
    /// Every format, in content-format number order.
    pub const ALL: [ContentFormat; 9] = [
        ContentFormat::Text,
        ContentFormat::LinkFormat,
        ContentFormat::Opaque,
        ContentFormat::Cbor,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::Tlv,
        ContentFormat::Lwm2mJson,
        ContentFormat::Lwm2mCbor,
    ];

    /// The CoAP Content-Format number.
    pub const fn code(self) -> u16 {
        match self {
            ContentFormat::Text => 0,
            ContentFormat::LinkFormat => 40,
            ContentFormat::Opaque => 42,
            ContentFormat::Cbor => 60,
            ContentFormat::SenmlJson => 110,
            ContentFormat::SenmlCbor => 112,
            ContentFormat::Tlv => 11542,
            ContentFormat::Lwm2mJson => 11543,
            ContentFormat::Lwm2mCbor => 11544,
        }
    }

    /// The format with this number, if LwM2M uses it.
    pub fn from_code(code: u16) -> Option<ContentFormat> {
        ContentFormat::ALL.into_iter().find(|f| f.code() == code)
    }

    /// The media type, as in the IANA CoAP Content-Formats registry.
    pub const fn media_type(self) -> &'static str {
        match self {
            ContentFormat::Text => "text/plain;charset=utf-8",
            ContentFormat::LinkFormat => "application/link-format",
            ContentFormat::Opaque => "application/octet-stream",
            ContentFormat::Cbor => "application/cbor",
            ContentFormat::SenmlJson => "application/senml+json",
            ContentFormat::SenmlCbor => "application/senml+cbor",
            ContentFormat::Tlv => "application/vnd.oma.lwm2m+tlv",
            ContentFormat::Lwm2mJson => "application/vnd.oma.lwm2m+json",
            ContentFormat::Lwm2mCbor => "application/vnd.oma.lwm2m+cbor",
        }
    }
}

impl fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.media_type(), self.code())
    }
}

/// Composite payloads: one node per path.
pub type Nodes = BTreeMap<Path, Node>;

/// A content format's encoder and decoder. Operations a format cannot carry
/// answer [`EncodeError::Unsupported`] / [`DecodeError::Unsupported`].
pub trait Codec: Send + Sync {
    fn format(&self) -> ContentFormat;

    /// Encodes the node found at `path`.
    fn encode(&self, path: &Path, node: &Node, model: &dyn Model) -> Result<Vec<u8>, EncodeError>;

    /// Decodes the payload of a request or response that targets `path`.
    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError>;

    /// Encodes a composite payload.
    fn encode_nodes(&self, _nodes: &Nodes, _model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
        Err(EncodeError::Unsupported {
            format: self.format(),
            operation: "composite",
        })
    }

    /// Decodes a composite payload. `requested` are the paths of the
    /// Read-/Observe-Composite request the payload answers; `None` for
    /// Write-Composite and Send, where each record is its own node.
    fn decode_nodes(
        &self,
        _bytes: &[u8],
        _requested: Option<&[Path]>,
        _model: &dyn Model,
    ) -> Result<Nodes, DecodeError> {
        Err(DecodeError::Unsupported {
            format: self.format(),
            operation: "composite",
        })
    }

    /// Encodes a series of timestamped nodes, all at `path`.
    fn encode_timestamped(
        &self,
        _path: &Path,
        _nodes: &[TimestampedNode],
        _model: &dyn Model,
    ) -> Result<Vec<u8>, EncodeError> {
        Err(EncodeError::Unsupported {
            format: self.format(),
            operation: "timestamped",
        })
    }

    /// Decodes a series of timestamped nodes at `path`, in payload order,
    /// one per distinct time.
    fn decode_timestamped(
        &self,
        _bytes: &[u8],
        _path: &Path,
        _model: &dyn Model,
    ) -> Result<Vec<TimestampedNode>, DecodeError> {
        Err(DecodeError::Unsupported {
            format: self.format(),
            operation: "timestamped",
        })
    }

    /// Encodes a list of paths (the body of a Read-Composite request).
    fn encode_paths(&self, _paths: &[Path]) -> Result<Vec<u8>, EncodeError> {
        Err(EncodeError::Unsupported {
            format: self.format(),
            operation: "paths",
        })
    }

    /// Decodes a list of paths.
    fn decode_paths(&self, _bytes: &[u8]) -> Result<Vec<Path>, DecodeError> {
        Err(DecodeError::Unsupported {
            format: self.format(),
            operation: "paths",
        })
    }
}

/// The registry of codecs, keyed by content-format number.
pub struct Codecs {
    codecs: BTreeMap<u16, Box<dyn Codec>>,
}

impl Default for Codecs {
    fn default() -> Codecs {
        Codecs::new()
    }
}

impl Codecs {
    /// A registry with every node format this crate implements.
    pub fn new() -> Codecs {
        let all: Vec<Box<dyn Codec>> = vec![
            Box::new(text::TextCodec),
            Box::new(opaque::OpaqueCodec),
            Box::new(cbor::CborCodec),
            Box::new(tlv::TlvCodec),
            Box::new(senml::json::SenmlJsonCodec),
            Box::new(senml::cbor::SenmlCborCodec),
            Box::new(lwm2m_json::Lwm2mJsonCodec),
            Box::new(lwm2m_cbor::Lwm2mCborCodec),
        ];
        Codecs {
            codecs: all.into_iter().map(|c| (c.format().code(), c)).collect(),
        }
    }

    /// The codec for a content-format number.
    pub fn get(&self, code: u16) -> Result<&dyn Codec, DecodeError> {
        self.codecs
            .get(&code)
            .map(|c| c.as_ref())
            .ok_or(DecodeError::UnknownFormat(code))
    }

    /// Every content format that can carry nodes, in number order.
    pub fn formats(&self) -> impl Iterator<Item = ContentFormat> + '_ {
        self.codecs.values().map(|c| c.format())
    }

    pub fn encode(
        &self,
        format: ContentFormat,
        path: &Path,
        node: &Node,
        model: &dyn Model,
    ) -> Result<Vec<u8>, EncodeError> {
        self.codec(format)?.encode(path, node, model)
    }

    pub fn decode(
        &self,
        format: ContentFormat,
        bytes: &[u8],
        path: &Path,
        model: &dyn Model,
    ) -> Result<Node, DecodeError> {
        self.get(format.code())?.decode(bytes, path, model)
    }

    fn codec(&self, format: ContentFormat) -> Result<&dyn Codec, EncodeError> {
        self.codecs
            .get(&format.code())
            .map(|c| c.as_ref())
            .ok_or(EncodeError::Unsupported {
                format,
                operation: "nodes",
            })
    }
}

/// The type the model gives `/o/i/r`, if it knows the resource.
pub(crate) fn resource_type(model: &dyn Model, path: &Path) -> Option<ResourceType> {
    let (o, r) = (path.object_id()?, path.resource_id()?);
    model.resource(o, r).map(|d| d.kind)
}

/// Whether the model declares `/o/*/r` multiple (false when unknown).
pub(crate) fn is_multiple(model: &dyn Model) -> impl Fn(u16, u16) -> bool + '_ {
    move |o, r| model.resource(o, r).is_some_and(|d| d.multiple)
}

/// Gives a decoded value the model's type for its path, if the model has one.
pub(crate) fn typed(model: &dyn Model, path: &Path, value: Value) -> Result<Value, DecodeError> {
    match resource_type(model, path) {
        Some(t) => value.coerce(t).map_err(|source| DecodeError::WrongType {
            path: *path,
            source,
        }),
        None => Ok(value),
    }
}

/// The single value of a node that must hold exactly one (for the
/// single-value formats text, opaque and CBOR).
pub(crate) fn single_value(format: ContentFormat, node: &Node) -> Result<&Value, EncodeError> {
    match node {
        Node::Resource(crate::node::Resource::Single { value, .. })
        | Node::ResourceInstance { value, .. } => Ok(value),
        _ => Err(EncodeError::NotSingleValue(format)),
    }
}

/// Wraps one decoded value as the node a single-value format targets.
pub(crate) fn single_node(
    format: ContentFormat,
    path: &Path,
    model: &dyn Model,
    value: Value,
) -> Result<Node, DecodeError> {
    match *path.ids() {
        [o, _, r] => {
            if is_multiple(model)(o, r) {
                return Err(DecodeError::NotSingleValue(format));
            }
            Ok(Node::Resource(crate::node::Resource::Single {
                id: r,
                value,
            }))
        }
        [_, _, _, ri] => Ok(Node::ResourceInstance { id: ri, value }),
        _ => Err(DecodeError::NotSingleValue(format)),
    }
}
