//! `application/vnd.oma.lwm2m+tlv` (11542), the LwM2M 1.0 binary format.
//!
//! A TLV is a type byte, an 8- or 16-bit identifier, an optional 8/16/24-bit
//! length and the value. Four kinds nest at most three deep (an object
//! instance holds multiple resources, which hold resource instances), so the
//! decoder walks a fixed
//! structure and never recurses on input. TLV carries no value types: with a
//! model each value is read as its resource's type, without one it stays
//! opaque bytes.

use std::collections::BTreeMap;

use super::{Codec, ContentFormat, DecodeError, EncodeError};
use crate::model::{Model, ResourceType};
use crate::node::{Instance, Node, Object, Resource};
use crate::path::{Path, MAX_ID};
use crate::value::{ObjLnk, TypeMismatch, Value};

const CF: ContentFormat = ContentFormat::Tlv;

/// The largest value a 24-bit length field can describe.
const MAX_LEN: usize = 0xFF_FFFF;

pub struct TlvCodec;

/// The four kinds of TLV (bits 7-6 of the type byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ObjectInstance = 0b00,
    ResourceInstance = 0b01,
    MultipleResource = 0b10,
    Resource = 0b11,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ObjectInstance => "object instance",
            Kind::ResourceInstance => "resource instance",
            Kind::MultipleResource => "multiple resource",
            Kind::Resource => "resource",
        }
    }
}

/// One TLV, its value borrowed from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub kind: Kind,
    pub id: u16,
    pub value: &'a [u8],
}

/// Splits a byte string into the TLVs it holds at one level.
pub fn parse(mut bytes: &[u8]) -> Result<Vec<Tlv<'_>>, DecodeError> {
    let truncated = |context| DecodeError::Truncated {
        format: CF,
        context,
    };
    let mut out = Vec::new();
    while let Some((&ty, rest)) = bytes.split_first() {
        let kind = match ty >> 6 {
            0b00 => Kind::ObjectInstance,
            0b01 => Kind::ResourceInstance,
            0b10 => Kind::MultipleResource,
            _ => Kind::Resource,
        };
        let id_len = if ty & 0b0010_0000 != 0 { 2 } else { 1 };
        let len_len = usize::from((ty >> 3) & 0b11);
        if rest.len() < id_len + len_len {
            return Err(truncated("TLV header"));
        }
        let (id_bytes, rest) = rest.split_at(id_len);
        let (len_bytes, rest) = rest.split_at(len_len);
        let id = id_bytes.iter().fold(0u16, |a, b| a << 8 | u16::from(*b));
        if id > MAX_ID {
            return Err(crate::path::PathError::OutOfRange(id.into()).into());
        }
        let len = if len_len == 0 {
            usize::from(ty & 0b111)
        } else {
            len_bytes
                .iter()
                .fold(0usize, |a, b| a << 8 | usize::from(*b))
        };
        if rest.len() < len {
            return Err(truncated("TLV value shorter than its length field"));
        }
        let (value, rest) = rest.split_at(len);
        out.push(Tlv { kind, id, value });
        bytes = rest;
    }
    Ok(out)
}

impl Codec for TlvCodec {
    fn format(&self) -> ContentFormat {
        CF
    }

    fn encode(&self, path: &Path, node: &Node, _model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
        if path.depth() != node.depth() || path.ids().last() != Some(&node.id()) {
            return Err(EncodeError::PathMismatch {
                path: *path,
                node_depth: node.depth(),
            });
        }
        let mut out = Vec::new();
        match node {
            Node::Object(o) => {
                for inst in o.instances.values() {
                    let mut body = Vec::new();
                    write_resources(&mut body, inst)?;
                    write_tlv(&mut out, Kind::ObjectInstance, inst.id, &body)?;
                }
            }
            Node::Instance(i) => write_resources(&mut out, i)?,
            Node::Resource(r) => write_resource(&mut out, r)?,
            Node::ResourceInstance { id, value } => {
                write_tlv(&mut out, Kind::ResourceInstance, *id, &value_bytes(value))?
            }
        }
        Ok(out)
    }

    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError> {
        let top = parse(bytes)?;
        let cx = Cx { model, path };
        match *path.ids() {
            [o] => {
                let mut obj = Object::new(o);
                for t in top {
                    expect_kind(&t, Kind::ObjectInstance, "object")?;
                    let inst = cx.instance(o, t.id, &parse(t.value)?)?;
                    if obj.instances.insert(t.id, inst).is_some() {
                        return Err(duplicate(Path::instance(o, t.id)));
                    }
                }
                Ok(Node::Object(obj))
            }
            [o, i] => {
                // Some clients wrap the resources of /o/i in its object-instance TLV.
                let unwrapped;
                let items = match top.as_slice() {
                    [t] if t.kind == Kind::ObjectInstance => {
                        if t.id != i {
                            return Err(cx.mismatch(t));
                        }
                        unwrapped = parse(t.value)?;
                        &unwrapped
                    }
                    _ => &top,
                };
                Ok(Node::Instance(cx.instance(o, i, items)?))
            }
            [o, i, r] => {
                if top.iter().all(|t| t.kind == Kind::ResourceInstance) && !top.is_empty() {
                    // Tolerated: the instances of a multiple resource without their wrapper.
                    if !cx.multiple(o, r).unwrap_or(true) {
                        return Err(DecodeError::malformed(
                            CF,
                            format!("resource instances given for single resource {path}"),
                        ));
                    }
                    let instances = cx.resource_instances(o, i, r, &top)?;
                    return Ok(Node::Resource(Resource::Multiple { id: r, instances }));
                }
                match top.as_slice() {
                    [t] if t.id == r => Ok(Node::Resource(cx.resource(o, i, t)?)),
                    [t] => Err(cx.mismatch(t)),
                    _ => Err(DecodeError::malformed(
                        CF,
                        format!("expected one TLV for {path}, found {}", top.len()),
                    )),
                }
            }
            [o, i, r, ri] => match top.as_slice() {
                [t] if t.kind == Kind::ResourceInstance && t.id == ri => {
                    Ok(Node::ResourceInstance {
                        id: ri,
                        value: cx.value(&Path::resource_instance(o, i, r, ri), t.value)?,
                    })
                }
                [t] => Err(cx.mismatch(t)),
                _ => Err(DecodeError::malformed(
                    CF,
                    format!(
                        "expected one resource instance TLV for {path}, found {}",
                        top.len()
                    ),
                )),
            },
            _ => Err(DecodeError::Unsupported {
                format: CF,
                operation: "root-path",
            }),
        }
    }
}

/// Decoding context: the model and the request path, for error messages.
struct Cx<'a> {
    model: &'a dyn Model,
    path: &'a Path,
}

impl Cx<'_> {
    fn multiple(&self, o: u16, r: u16) -> Option<bool> {
        self.model.resource(o, r).map(|d| d.multiple)
    }

    fn instance(&self, o: u16, i: u16, items: &[Tlv<'_>]) -> Result<Instance, DecodeError> {
        let mut inst = Instance::new(i);
        for t in items {
            let r = self.resource(o, i, t)?;
            if inst.resources.insert(t.id, r).is_some() {
                return Err(duplicate(Path::resource(o, i, t.id)));
            }
        }
        Ok(inst)
    }

    fn resource(&self, o: u16, i: u16, t: &Tlv<'_>) -> Result<Resource, DecodeError> {
        let path = Path::resource(o, i, t.id);
        match (t.kind, self.multiple(o, t.id)) {
            (Kind::Resource, Some(true)) => Err(DecodeError::malformed(
                CF,
                format!("{path} is a multiple resource but was sent as a single value"),
            )),
            (Kind::Resource, _) => Ok(Resource::Single {
                id: t.id,
                value: self.value(&path, t.value)?,
            }),
            (Kind::MultipleResource, Some(false)) => Err(DecodeError::malformed(
                CF,
                format!("{path} is a single resource but was sent with instances"),
            )),
            (Kind::MultipleResource, _) => Ok(Resource::Multiple {
                id: t.id,
                instances: self.resource_instances(o, i, t.id, &parse(t.value)?)?,
            }),
            (kind, _) => Err(DecodeError::malformed(
                CF,
                format!(
                    "a {} TLV cannot stand where resource {path} is expected",
                    kind.name()
                ),
            )),
        }
    }

    fn resource_instances(
        &self,
        o: u16,
        i: u16,
        r: u16,
        items: &[Tlv<'_>],
    ) -> Result<BTreeMap<u16, Value>, DecodeError> {
        let mut out = BTreeMap::new();
        for t in items {
            let path = Path::resource_instance(o, i, r, t.id);
            if t.kind != Kind::ResourceInstance {
                return Err(DecodeError::malformed(
                    CF,
                    format!(
                        "a {} TLV cannot stand inside multiple resource {}",
                        t.kind.name(),
                        Path::resource(o, i, r)
                    ),
                ));
            }
            if out.insert(t.id, self.value(&path, t.value)?).is_some() {
                return Err(duplicate(path));
            }
        }
        Ok(out)
    }

    fn value(&self, path: &Path, bytes: &[u8]) -> Result<Value, DecodeError> {
        let Some(kind) = super::resource_type(self.model, path) else {
            return Ok(Value::Opaque(bytes.to_vec()));
        };
        read_value(bytes, kind).ok_or_else(|| DecodeError::WrongType {
            path: *path,
            source: TypeMismatch {
                found: length_name(bytes.len()),
                wanted: kind,
            },
        })
    }

    fn mismatch(&self, t: &Tlv<'_>) -> DecodeError {
        DecodeError::malformed(
            CF,
            format!(
                "{} TLV with id {} does not match the request path {}",
                t.kind.name(),
                t.id,
                self.path
            ),
        )
    }
}

fn expect_kind(t: &Tlv<'_>, kind: Kind, level: &str) -> Result<(), DecodeError> {
    if t.kind == kind {
        Ok(())
    } else {
        Err(DecodeError::malformed(
            CF,
            format!("a {} TLV cannot stand at {level} level", t.kind.name()),
        ))
    }
}

fn duplicate(path: Path) -> DecodeError {
    DecodeError::Tree(crate::node::TreeError::Duplicate(path))
}

/// Describes a value that had the wrong size for its type.
fn length_name(len: usize) -> &'static str {
    match len {
        0 => "an empty value",
        1 => "a 1-byte value",
        2 => "a 2-byte value",
        3 => "a 3-byte value",
        4 => "a 4-byte value",
        8 => "an 8-byte value",
        _ => "a value of that length",
    }
}

/// Reads a value of a known type; `None` when the bytes cannot be one.
pub fn read_value(b: &[u8], kind: ResourceType) -> Option<Value> {
    Some(match kind {
        ResourceType::String => Value::String(String::from_utf8(b.to_vec()).ok()?),
        ResourceType::CoreLnk => Value::CoreLnk(String::from_utf8(b.to_vec()).ok()?),
        ResourceType::Integer => Value::Integer(read_int(b)?),
        ResourceType::Time => Value::Time(read_int(b)?),
        ResourceType::UnsignedInteger => {
            if !matches!(b.len(), 1 | 2 | 4 | 8) {
                return None;
            }
            Value::UnsignedInteger(b.iter().fold(0u64, |a, x| a << 8 | u64::from(*x)))
        }
        ResourceType::Float => match b.len() {
            4 => Value::Float(f64::from(f32::from_be_bytes(b.try_into().ok()?))),
            8 => Value::Float(f64::from_be_bytes(b.try_into().ok()?)),
            _ => return None,
        },
        ResourceType::Boolean => match b {
            [0] => Value::Boolean(false),
            [1] => Value::Boolean(true),
            _ => return None,
        },
        ResourceType::ObjLnk => match *b {
            [o1, o0, i1, i0] => Value::ObjLnk(ObjLnk {
                object: u16::from_be_bytes([o1, o0]),
                instance: u16::from_be_bytes([i1, i0]),
            }),
            _ => return None,
        },
        ResourceType::Opaque | ResourceType::None => Value::Opaque(b.to_vec()),
    })
}

/// Big-endian two's complement in 1, 2, 4 or 8 bytes.
fn read_int(b: &[u8]) -> Option<i64> {
    if !matches!(b.len(), 1 | 2 | 4 | 8) {
        return None;
    }
    let first = *b.first()?;
    let init: i64 = if first & 0x80 != 0 { -1 } else { 0 };
    Some(b.iter().fold(init, |a, x| a << 8 | i64::from(*x)))
}

/// The value bytes of a typed value, in the shortest allowed width.
pub fn value_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) | Value::CoreLnk(s) => s.as_bytes().to_vec(),
        Value::Integer(i) | Value::Time(i) => {
            let i = *i;
            if let Ok(x) = i8::try_from(i) {
                x.to_be_bytes().to_vec()
            } else if let Ok(x) = i16::try_from(i) {
                x.to_be_bytes().to_vec()
            } else if let Ok(x) = i32::try_from(i) {
                x.to_be_bytes().to_vec()
            } else {
                i.to_be_bytes().to_vec()
            }
        }
        Value::UnsignedInteger(u) => {
            let u = *u;
            if let Ok(x) = u8::try_from(u) {
                vec![x]
            } else if let Ok(x) = u16::try_from(u) {
                x.to_be_bytes().to_vec()
            } else if let Ok(x) = u32::try_from(u) {
                x.to_be_bytes().to_vec()
            } else {
                u.to_be_bytes().to_vec()
            }
        }
        Value::Float(f) => {
            let s = *f as f32;
            if f64::from(s).to_bits() == f.to_bits() {
                s.to_be_bytes().to_vec()
            } else {
                f.to_be_bytes().to_vec()
            }
        }
        Value::Boolean(b) => vec![u8::from(*b)],
        Value::Opaque(b) => b.clone(),
        Value::ObjLnk(l) => [l.object.to_be_bytes(), l.instance.to_be_bytes()].concat(),
    }
}

fn write_resources(out: &mut Vec<u8>, inst: &Instance) -> Result<(), EncodeError> {
    inst.resources
        .values()
        .try_for_each(|r| write_resource(out, r))
}

fn write_resource(out: &mut Vec<u8>, r: &Resource) -> Result<(), EncodeError> {
    match r {
        Resource::Single { id, value } => write_tlv(out, Kind::Resource, *id, &value_bytes(value)),
        Resource::Multiple { id, instances } => {
            let mut body = Vec::new();
            for (ri, v) in instances {
                write_tlv(&mut body, Kind::ResourceInstance, *ri, &value_bytes(v))?;
            }
            write_tlv(out, Kind::MultipleResource, *id, &body)
        }
    }
}

/// Appends one TLV with the narrowest identifier and length fields.
fn write_tlv(out: &mut Vec<u8>, kind: Kind, id: u16, value: &[u8]) -> Result<(), EncodeError> {
    if id > MAX_ID {
        return Err(crate::path::PathError::OutOfRange(id.into()).into());
    }
    let len = value.len();
    if len > MAX_LEN {
        return Err(EncodeError::TooLarge {
            format: CF,
            what: "a value over 16 MiB",
        });
    }
    let mut ty = (kind as u8) << 6;
    if id > 0xFF {
        ty |= 0b0010_0000;
    }
    let len_len: usize = match len {
        0..=7 => {
            ty |= len as u8;
            0
        }
        8..=0xFF => 1,
        0x100..=0xFFFF => 2,
        _ => 3,
    };
    ty |= (len_len as u8) << 3;
    out.push(ty);
    if id > 0xFF {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    out.extend_from_slice(&(len as u32).to_be_bytes()[4 - len_len..]);
    out.extend_from_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests;
