//! The device's Send (`POST /dp`, LwM2M 1.1+ Information Reporting):
//! parsing the incoming request into values, and the code the server
//! answers a bad one with (Transport "Response Codes": 4.00 malformed,
//! 4.15 a format Send cannot use; 4.04 for an unregistered object is the
//! caller's, since it needs the registration).
//!
//! Send carries SenML JSON (110), SenML CBOR (112) or, from 1.2, LwM2M
//! CBOR (11544).

use coap_lite::{MessageClass, Packet, RequestType, ResponseType};
use lwm2m_objects::format::Nodes;
use lwm2m_objects::link::SECURITY_OBJECTS;
use lwm2m_objects::{Codecs, ContentFormat, DecodeError, Model, Path, TimestampedNode};

use super::response::content_format;

/// What a Send carried.
#[derive(Clone, Debug, PartialEq)]
pub enum SendData {
    /// Current values, one node per path.
    Nodes(Nodes),
    /// Values with their measurement times (SenML `bt`/`t`), all under one
    /// path: historical readings of one resource or instance.
    Series {
        path: Path,
        series: Vec<TimestampedNode>,
    },
}

/// Why a Send is refused; [`code`](Self::code) is the answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    #[error("Send is a POST")]
    NotPost,
    #[error("Send payload needs a Content-Format")]
    MissingFormat,
    #[error("content format {0} cannot carry a Send (SenML JSON, SenML CBOR or LwM2M CBOR)")]
    UnsupportedFormat(u16),
    #[error("Send payload: {0}")]
    Malformed(#[from] DecodeError),
    #[error("Send payload is empty")]
    Empty,
    #[error("Send may not report object {0}")]
    ProtectedObject(u16),
}

impl SendError {
    /// The CoAP code to answer with: 4.15 for a format problem, 4.05 for
    /// a wrong method, 4.00 otherwise.
    pub fn code(&self) -> ResponseType {
        match self {
            SendError::NotPost => ResponseType::MethodNotAllowed,
            SendError::MissingFormat | SendError::UnsupportedFormat(_) => {
                ResponseType::UnsupportedContentFormat
            }
            _ => ResponseType::BadRequest,
        }
    }
}

/// Parses a Send request (the caller has matched `POST /dp`).
///
/// SenML whose records all lie under one resource or instance is read as
/// a timestamped series ([`SendData::Series`]); anything else as one node
/// per path ([`SendData::Nodes`]), where a measurement time is dropped
/// and the same path twice is refused.
pub fn parse_send(
    packet: &Packet,
    codecs: &Codecs,
    model: &dyn Model,
) -> Result<SendData, SendError> {
    if packet.header.code != MessageClass::Request(RequestType::Post) {
        return Err(SendError::NotPost);
    }
    let code = content_format(packet)
        .map_err(|_| SendError::MissingFormat)?
        .ok_or(SendError::MissingFormat)?;
    let format = ContentFormat::from_code(code)
        .filter(|f| {
            matches!(
                f,
                ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::Lwm2mCbor
            )
        })
        .ok_or(SendError::UnsupportedFormat(code))?;
    let codec = codecs.get(code)?;
    if format != ContentFormat::Lwm2mCbor {
        let paths = codec.decode_paths(&packet.payload)?;
        let Some(first) = paths.first() else {
            return Err(SendError::Empty);
        };
        let prefix = paths.iter().fold(*first, |p, q| common_prefix(&p, q));
        check_protected(paths.iter())?;
        if prefix.depth() >= 2 {
            let series = codec.decode_timestamped(&packet.payload, &prefix, model)?;
            return Ok(SendData::Series {
                path: prefix,
                series,
            });
        }
    }
    let nodes = codec.decode_nodes(&packet.payload, None, model)?;
    if nodes.is_empty() {
        return Err(SendError::Empty);
    }
    check_protected(nodes.keys())?;
    Ok(SendData::Nodes(nodes))
}

fn check_protected<'a>(paths: impl Iterator<Item = &'a Path>) -> Result<(), SendError> {
    for p in paths {
        if let Some(o) = p.object_id().filter(|o| SECURITY_OBJECTS.contains(o)) {
            return Err(SendError::ProtectedObject(o));
        }
    }
    Ok(())
}

fn common_prefix(a: &Path, b: &Path) -> Path {
    let n = a
        .ids()
        .iter()
        .zip(b.ids())
        .take_while(|(x, y)| x == y)
        .count();
    Path::from_ids(a.ids().get(..n).unwrap_or(&[])).unwrap_or(Path::ROOT)
}
