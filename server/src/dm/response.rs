//! The device's answer to an [`Operation`], typed.
//!
//! Success codes per operation (Transport "Response Codes"): 2.05 Content
//! for Read, Discover, Observe and the composite reads; 2.04 Changed for
//! Write, Write-Attributes, Execute and Write-Composite; 2.01 Created for
//! Create; 2.02 Deleted for Delete. 4.xx and 5.xx become
//! [`DmError::Device`] with the device's diagnostic text; any other code
//! is [`DmError::UnexpectedCode`].

use coap_lite::{CoapOption, MessageClass, Packet, ResponseType};
use lwm2m_objects::format::Nodes;
use lwm2m_objects::link::{parse_discover, DiscoverEntry};
use lwm2m_objects::{Codecs, ContentFormat, DecodeError, Model, Node, Path};

use super::context::DeviceContext;
use super::error::{DeviceError, DmError};
use super::operation::Operation;

/// The most Location-Path segments a Create answer may carry.
const MAX_LOCATION_SEGMENTS: usize = 16;

/// A successful answer.
#[derive(Clone, Debug, PartialEq)]
pub enum DmResponse {
    /// Read, Cancel-Observe: the node at the requested path.
    Node(Node),
    /// Read-Composite, Cancel-Observe-Composite: one node per requested
    /// path that the device returned.
    Nodes(Nodes),
    /// Discover.
    Discovered(Vec<DiscoverEntry>),
    /// Write, Write-Attributes, Execute, Write-Composite.
    Changed,
    /// Create: the new instance's path, from the Location-Path (or the
    /// requested id when the device sent none; `None` if neither).
    Created { path: Option<Path> },
    /// Delete.
    Deleted,
    /// Observe and each of its notifications. `sequence` is the Observe
    /// option; `None` means the device answered without one, so no
    /// observation was established (RFC 7641 §3.1).
    Observed { node: Node, sequence: Option<u32> },
    /// Observe-Composite and its notifications.
    ObservedComposite { nodes: Nodes, sequence: Option<u32> },
}

impl Operation {
    /// Reads the device's response (or a notification) to this operation.
    /// `device`, `codecs` and `model` must be those the request was built
    /// with: the format asked for is recomputed from them and used when the
    /// response lacks a Content-Format.
    pub fn parse_response(
        &self,
        packet: &Packet,
        device: &DeviceContext,
        codecs: &Codecs,
        model: &dyn Model,
    ) -> Result<DmResponse, DmError> {
        if let Some(e) = DeviceError::from_response(packet) {
            return Err(DmError::Device(e));
        }
        let expected = self.success_code();
        if packet.header.code != MessageClass::Response(expected) {
            return Err(DmError::UnexpectedCode {
                got: packet.header.code.to_string(),
                expected: code_text(expected),
            });
        }
        let accept = self.accept_format(device, model);
        let format = || response_format(packet, accept);
        Ok(match self {
            Operation::Read { path, .. } | Operation::CancelObserve { path, .. } => {
                DmResponse::Node(codecs.decode(format()?, &packet.payload, path, model)?)
            }
            Operation::Observe { path, .. } => DmResponse::Observed {
                node: codecs.decode(format()?, &packet.payload, path, model)?,
                sequence: observe_sequence(packet)?,
            },
            Operation::Discover { .. } => {
                let f = format()?;
                if f != ContentFormat::LinkFormat {
                    return Err(DmError::Decode(DecodeError::UnknownFormat(f.code())));
                }
                let text = std::str::from_utf8(&packet.payload).map_err(|_| {
                    DmError::MalformedResponse("Discover payload is not UTF-8".into())
                })?;
                let entries = parse_discover(text, &device.root_path)
                    .map_err(|e| DmError::MalformedResponse(format!("Discover payload: {e}")))?;
                DmResponse::Discovered(entries)
            }
            Operation::ReadComposite { paths, .. }
            | Operation::CancelObserveComposite { paths, .. } => {
                DmResponse::Nodes(decode_composite(codecs, format()?, packet, paths, model)?)
            }
            Operation::ObserveComposite { paths, .. } => DmResponse::ObservedComposite {
                nodes: decode_composite(codecs, format()?, packet, paths, model)?,
                sequence: observe_sequence(packet)?,
            },
            Operation::Write { .. }
            | Operation::WriteAttributes { .. }
            | Operation::Execute { .. }
            | Operation::WriteComposite { .. } => DmResponse::Changed,
            Operation::Delete { .. } => DmResponse::Deleted,
            Operation::Create {
                object, instance, ..
            } => DmResponse::Created {
                path: created_path(packet, device, *object)?
                    .or_else(|| instance.map(|i| Path::instance(*object, i))),
            },
        })
    }

    /// The code a successful answer carries.
    pub fn success_code(&self) -> ResponseType {
        match self {
            Operation::Read { .. }
            | Operation::Discover { .. }
            | Operation::Observe { .. }
            | Operation::CancelObserve { .. }
            | Operation::ReadComposite { .. }
            | Operation::ObserveComposite { .. }
            | Operation::CancelObserveComposite { .. } => ResponseType::Content,
            Operation::Write { .. }
            | Operation::WriteAttributes { .. }
            | Operation::Execute { .. }
            | Operation::WriteComposite { .. } => ResponseType::Changed,
            Operation::Create { .. } => ResponseType::Created,
            Operation::Delete { .. } => ResponseType::Deleted,
        }
    }
}

fn code_text(code: ResponseType) -> &'static str {
    match code {
        ResponseType::Content => "2.05",
        ResponseType::Changed => "2.04",
        ResponseType::Created => "2.01",
        ResponseType::Deleted => "2.02",
        _ => "2.xx",
    }
}

/// The Content-Format of a payload: the option when present, else the
/// format that was asked for.
pub(crate) fn content_format(packet: &Packet) -> Result<Option<u16>, DmError> {
    match packet.get_first_option(CoapOption::ContentFormat) {
        None => Ok(None),
        Some(v) if v.len() <= 2 => Ok(Some(v.iter().fold(0u16, |a, b| (a << 8) | u16::from(*b)))),
        Some(v) => Err(DmError::MalformedResponse(format!(
            "Content-Format option of {} bytes",
            v.len()
        ))),
    }
}

fn response_format(
    packet: &Packet,
    asked: Option<ContentFormat>,
) -> Result<ContentFormat, DmError> {
    match content_format(packet)? {
        Some(code) => {
            ContentFormat::from_code(code).ok_or(DmError::Decode(DecodeError::UnknownFormat(code)))
        }
        None => asked.ok_or_else(|| DmError::MalformedResponse("no Content-Format".into())),
    }
}

/// The Observe option: a uint of at most 3 bytes (RFC 7641 §2).
fn observe_sequence(packet: &Packet) -> Result<Option<u32>, DmError> {
    match packet.get_first_option(CoapOption::Observe) {
        None => Ok(None),
        Some(v) if v.len() <= 3 => Ok(Some(v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))),
        Some(v) => Err(DmError::MalformedResponse(format!(
            "Observe option of {} bytes",
            v.len()
        ))),
    }
}

fn decode_composite(
    codecs: &Codecs,
    format: ContentFormat,
    packet: &Packet,
    paths: &[Path],
    model: &dyn Model,
) -> Result<Nodes, DmError> {
    Ok(codecs
        .get(format.code())?
        .decode_nodes(&packet.payload, Some(paths), model)?)
}

/// The instance path in a Create answer's Location-Path, with the
/// device's root path stripped; `None` when there is no Location-Path.
fn created_path(
    packet: &Packet,
    device: &DeviceContext,
    object: u16,
) -> Result<Option<Path>, DmError> {
    let Some(segments) = packet.get_option(CoapOption::LocationPath) else {
        return Ok(None);
    };
    if segments.len() > MAX_LOCATION_SEGMENTS {
        return Err(DmError::MalformedResponse(
            "too many Location-Path options".into(),
        ));
    }
    let mut segs: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
    let root: Vec<&[u8]> = device.root_segments().map(str::as_bytes).collect();
    if segs.starts_with(&root) {
        segs.drain(..root.len());
    }
    let mut text = String::new();
    for s in &segs {
        let s = std::str::from_utf8(s)
            .map_err(|_| DmError::MalformedResponse("Location-Path is not UTF-8".into()))?;
        text.push('/');
        text.push_str(s);
    }
    let path: Path = text.parse().map_err(|e| {
        let shown: String = text.chars().take(64).collect();
        DmError::MalformedResponse(format!("Location-Path {shown:?}: {e}"))
    })?;
    if !path.is_instance() || path.object_id() != Some(object) {
        return Err(DmError::MalformedResponse(format!(
            "Location-Path {path} is not an instance of /{object}"
        )));
    }
    Ok(Some(path))
}
