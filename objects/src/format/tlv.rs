//! `application/vnd.oma.lwm2m+tlv` (11542): the binary format of LwM2M 1.0,
//! which every 1.0 client speaks and every server must accept.
//!
//! A payload is a sequence of TLVs. The type byte says what a TLV is (bits
//! 7-6: object instance, resource instance, multiple resource, resource with
//! value), how wide its id is (bit 5: 8 or 16 bits) and how its length is
//! given (bits 4-3: in bits 2-0, or in an 8-, 16- or 24-bit field after the
//! id). Object instances and multiple resources hold TLVs; the other two hold
//! a value.
//!
//! The nesting is fixed by the data model (object instance > resource or
//! multiple resource > resource instance), so the decoder is one function per
//! level, never a recursive descent: a TLV of the wrong kind for its level is
//! [`DecodeError::Malformed`], and no input can take the decoder deeper than
//! three levels (which is why this codec never answers `TooDeep`).
//!
//! TLV carries no data types: the bytes of `100` are the same whether the
//! resource is an integer, a string or opaque. Values are therefore typed by
//! the [`Model`]; a resource the model does not know decodes to
//! [`Value::Opaque`] of its raw bytes, and encodes back to the same bytes.

use std::collections::BTreeMap;

use super::{resource_type, Codec, ContentFormat, DecodeError, EncodeError};
use crate::model::{Model, ResourceType};
use crate::node::{Instance, Node, Object, Resource, TreeError};
use crate::path::{Path, PathError, MAX_ID};
use crate::value::{ObjLnk, Value};

const CF: ContentFormat = ContentFormat::Tlv;

/// The longest value a TLV can hold: what a 24-bit length field can say.
pub const MAX_VALUE_LEN: usize = 0xFF_FFFF;

/// The TLV codec.
///
/// What a payload looks like depends on the request path:
///
/// | Path | Payload | Node |
/// |---|---|---|
/// | `/o` | object-instance TLVs, each holding resources (Read `/o`, Create) | [`Node::Object`] |
/// | `/o/i` | resource and multiple-resource TLVs, bare; one object-instance TLV with id `i` around them is accepted on input | [`Node::Instance`] |
/// | `/o/i/r` | one resource TLV (single resource) or one multiple-resource TLV; a bare sequence of resource-instance TLVs is accepted on input | [`Node::Resource`] |
/// | `/o/i/r/ri` | one resource-instance TLV | [`Node::ResourceInstance`] |
///
/// Decoding checks the payload against the path and the model: ids must
/// agree with the path and be unique, a resource the model declares multiple
/// must come as a multiple-resource TLV (and a single one as a resource TLV),
/// and each value must have a length its type allows. Without a definition
/// the TLV's own kind decides single or multiple and the value stays opaque.
///
/// Encoding emits the shortest form: integers in the fewest of 1, 2, 4 or 8
/// bytes, floats in 4 bytes when single precision is exact, 8-bit ids and
/// length fields whenever they suffice. When the model gives a resource a
/// type, a value of another type is first converted where that is lossless
/// (an `Integer` written to a float resource goes out as a float), because
/// the peer reads the bytes by its own definition; other values are encoded
/// by their own type.
pub struct TlvCodec;

impl Codec for TlvCodec {
    fn format(&self) -> ContentFormat {
        CF
    }

    fn encode(&self, path: &Path, node: &Node, model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
        if path.is_root() {
            return Err(EncodeError::Unsupported {
                format: CF,
                operation: "root-path",
            });
        }
        if path.depth() != node.depth() || path.ids().last() != Some(&node.id()) {
            return Err(EncodeError::PathMismatch {
                path: *path,
                node_depth: node.depth(),
            });
        }
        let enc = Encoder {
            model,
            object: path.object_id().unwrap_or_default(),
        };
        let mut out = Vec::new();
        match node {
            Node::Object(o) => enc.object(&mut out, o)?,
            Node::Instance(i) => enc.resources(&mut out, i)?,
            Node::Resource(r) => enc.resource(&mut out, r)?,
            Node::ResourceInstance { id, value } => {
                let r = path.resource_id().unwrap_or_default();
                write_tlv(&mut out, Kind::ResourceInstance, *id, &enc.value(r, value))?;
            }
        }
        Ok(out)
    }

    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError> {
        let dec = Decoder { model };
        match path.depth() {
            0 => Err(DecodeError::Unsupported {
                format: CF,
                operation: "root-path",
            }),
            1 => dec.object(path, bytes).map(Node::Object),
            2 => dec.instance_at(path, bytes).map(Node::Instance),
            3 => dec.resource_at(path, bytes).map(Node::Resource),
            _ => dec.resource_instance_at(path, bytes),
        }
    }
}

/// What a TLV is: bits 7-6 of its type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ObjectInstance,
    ResourceInstance,
    MultipleResource,
    Resource,
}

impl Kind {
    fn from_type_byte(t: u8) -> Kind {
        match t >> 6 {
            0 => Kind::ObjectInstance,
            1 => Kind::ResourceInstance,
            2 => Kind::MultipleResource,
            _ => Kind::Resource,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Kind::ObjectInstance => 0b00,
            Kind::ResourceInstance => 0b01,
            Kind::MultipleResource => 0b10,
            Kind::Resource => 0b11,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::ObjectInstance => "object instance",
            Kind::ResourceInstance => "resource instance",
            Kind::MultipleResource => "multiple resource",
            Kind::Resource => "resource",
        }
    }
}

// ---------------------------------------------------------------- reading

/// One TLV, its value borrowed from the payload.
struct Tlv<'a> {
    kind: Kind,
    id: u16,
    value: &'a [u8],
}

/// The TLVs of a sequence, in order. Stops after the first error.
struct Tlvs<'a> {
    rest: &'a [u8],
}

fn tlvs(bytes: &[u8]) -> Tlvs<'_> {
    Tlvs { rest: bytes }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match read_tlv(self.rest) {
            Ok((tlv, rest)) => {
                self.rest = rest;
                Some(Ok(tlv))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Reads the TLV at the start of `input` and returns it with the bytes after
/// it. Bits 2-0 are ignored when a length field follows, as other
/// implementations do; a length beyond the input is truncation, never an
/// allocation.
fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DecodeError> {
    let header_cut = || DecodeError::Truncated {
        format: CF,
        context: "TLV header ends early",
    };
    let (&t, rest) = input.split_first().ok_or_else(header_cut)?;
    let id_width = if t & 0x20 != 0 { 2 } else { 1 };
    let (id_bytes, rest) = rest.split_at_checked(id_width).ok_or_else(header_cut)?;
    let id = be_uint(id_bytes) as u16;
    if id > MAX_ID {
        return Err(PathError::OutOfRange(id.into()).into());
    }
    let (len, rest) = match (t >> 3) & 0b11 {
        0 => (usize::from(t & 0b111), rest),
        width => {
            let (len_bytes, rest) = rest
                .split_at_checked(usize::from(width))
                .ok_or_else(header_cut)?;
            (be_uint(len_bytes) as usize, rest)
        }
    };
    let (value, rest) = rest.split_at_checked(len).ok_or(DecodeError::Truncated {
        format: CF,
        context: "TLV value is longer than the rest of the payload",
    })?;
    let kind = Kind::from_type_byte(t);
    Ok((Tlv { kind, id, value }, rest))
}

/// A big-endian unsigned number of at most 8 bytes.
fn be_uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

fn misplaced(tlv: &Tlv<'_>, place: &str) -> DecodeError {
    DecodeError::malformed(
        CF,
        format!(
            "a {} TLV (id {}) cannot appear {place}",
            tlv.kind.name(),
            tlv.id
        ),
    )
}

fn contradicts(record: Path, base: &Path) -> DecodeError {
    TreeError::OutsideBase {
        record,
        base: *base,
    }
    .into()
}

fn duplicate(path: Path) -> DecodeError {
    TreeError::Duplicate(path).into()
}

/// Rejects bytes after the one TLV a path allows.
fn no_more(rest: &[u8]) -> Result<(), DecodeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes {
            format: CF,
            extra: rest.len(),
        })
    }
}

/// The decoder's levels, one function each; paths passed down are always
/// the full path of the entity being built.
struct Decoder<'m> {
    model: &'m dyn Model,
}

impl Decoder<'_> {
    /// `/o`: object-instance TLVs only.
    fn object(&self, path: &Path, bytes: &[u8]) -> Result<Object, DecodeError> {
        let mut object = Object::new(path.object_id().unwrap_or_default());
        for tlv in tlvs(bytes) {
            let tlv = tlv?;
            if tlv.kind != Kind::ObjectInstance {
                return Err(misplaced(&tlv, "at object level"));
            }
            let inst_path = path.child(tlv.id)?;
            let inst = self.resources(&inst_path, tlv.value)?;
            if object.instances.insert(tlv.id, inst).is_some() {
                return Err(duplicate(inst_path));
            }
        }
        Ok(object)
    }

    /// `/o/i`: resources, or one object-instance TLV `i` around them.
    fn instance_at(&self, path: &Path, bytes: &[u8]) -> Result<Instance, DecodeError> {
        let (first, rest) = match read_tlv(bytes) {
            Ok((first, rest)) if first.kind == Kind::ObjectInstance => (first, rest),
            _ => return self.resources(path, bytes),
        };
        let wrapped = path.parent().unwrap_or_default().child(first.id)?;
        if wrapped != *path {
            return Err(contradicts(wrapped, path));
        }
        no_more(rest)?;
        self.resources(path, first.value)
    }

    /// The resources of the object instance at `path` (`/o/i`).
    fn resources(&self, path: &Path, bytes: &[u8]) -> Result<Instance, DecodeError> {
        let mut inst = Instance::new(path.instance_id().unwrap_or_default());
        for tlv in tlvs(bytes) {
            let tlv = tlv?;
            if !matches!(tlv.kind, Kind::Resource | Kind::MultipleResource) {
                return Err(misplaced(&tlv, "inside an object instance"));
            }
            let res_path = path.child(tlv.id)?;
            let res = self.resource(&res_path, &tlv)?;
            if inst.resources.insert(tlv.id, res).is_some() {
                return Err(duplicate(res_path));
            }
        }
        Ok(inst)
    }

    /// `/o/i/r`: one resource or multiple-resource TLV, or bare resource
    /// instances (which some clients send for a multiple resource).
    fn resource_at(&self, path: &Path, bytes: &[u8]) -> Result<Resource, DecodeError> {
        if bytes.is_empty() {
            return Err(TreeError::Empty(*path).into());
        }
        let (first, rest) = read_tlv(bytes)?;
        match first.kind {
            Kind::Resource | Kind::MultipleResource => {
                let got = path.parent().unwrap_or_default().child(first.id)?;
                if got != *path {
                    return Err(contradicts(got, path));
                }
                no_more(rest)?;
                self.resource(path, &first)
            }
            Kind::ResourceInstance => {
                if self.declared_multiple(path) == Some(false) {
                    return Err(self.single_as_multiple(path, first.kind));
                }
                Ok(Resource::Multiple {
                    id: path.resource_id().unwrap_or_default(),
                    instances: self.resource_instances(path, bytes)?,
                })
            }
            Kind::ObjectInstance => Err(misplaced(&first, &format!("at resource path {path}"))),
        }
    }

    /// The resource at `path` from its resource or multiple-resource TLV,
    /// checked against what the model declares.
    fn resource(&self, path: &Path, tlv: &Tlv<'_>) -> Result<Resource, DecodeError> {
        let declared = self.declared_multiple(path);
        match (tlv.kind, declared) {
            (Kind::Resource, Some(true)) => Err(DecodeError::malformed(
                CF,
                format!(
                    "resource {path} is multiple: it needs a multiple-resource TLV, not a resource TLV"
                ),
            )),
            (Kind::MultipleResource, Some(false)) => {
                Err(self.single_as_multiple(path, tlv.kind))
            }
            (Kind::MultipleResource, _) => Ok(Resource::Multiple {
                id: tlv.id,
                instances: self.resource_instances(path, tlv.value)?,
            }),
            _ => Ok(Resource::Single {
                id: tlv.id,
                value: self.value(path, tlv.value)?,
            }),
        }
    }

    /// The resource instances of the multiple resource at `path` (`/o/i/r`).
    fn resource_instances(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<BTreeMap<u16, Value>, DecodeError> {
        let mut out = BTreeMap::new();
        for tlv in tlvs(bytes) {
            let tlv = tlv?;
            if tlv.kind != Kind::ResourceInstance {
                return Err(misplaced(&tlv, "inside a multiple resource"));
            }
            let ri_path = path.child(tlv.id)?;
            let value = self.value(&ri_path, tlv.value)?;
            if out.insert(tlv.id, value).is_some() {
                return Err(duplicate(ri_path));
            }
        }
        Ok(out)
    }

    /// `/o/i/r/ri`: exactly one resource-instance TLV with id `ri`.
    fn resource_instance_at(&self, path: &Path, bytes: &[u8]) -> Result<Node, DecodeError> {
        if bytes.is_empty() {
            return Err(TreeError::Empty(*path).into());
        }
        let (tlv, rest) = read_tlv(bytes)?;
        if tlv.kind != Kind::ResourceInstance {
            return Err(misplaced(
                &tlv,
                &format!("at resource instance path {path}"),
            ));
        }
        let got = path.parent().unwrap_or_default().child(tlv.id)?;
        if got != *path {
            return Err(contradicts(got, path));
        }
        no_more(rest)?;
        Ok(Node::ResourceInstance {
            id: tlv.id,
            value: self.value(path, tlv.value)?,
        })
    }

    /// Whether the model declares the resource of `path` multiple; `None`
    /// when it does not know the resource.
    fn declared_multiple(&self, path: &Path) -> Option<bool> {
        let (o, r) = (path.object_id()?, path.resource_id()?);
        self.model.resource(o, r).map(|d| d.multiple)
    }

    fn single_as_multiple(&self, path: &Path, kind: Kind) -> DecodeError {
        DecodeError::malformed(
            CF,
            format!(
                "resource {path} is single: it needs a resource TLV, not a {} TLV",
                kind.name()
            ),
        )
    }

    /// The value at `path` (`/o/i/r` or `/o/i/r/ri`), typed by the model.
    fn value(&self, path: &Path, bytes: &[u8]) -> Result<Value, DecodeError> {
        match resource_type(self.model, path) {
            None | Some(ResourceType::None) => Ok(Value::Opaque(bytes.to_vec())),
            Some(t) => decode_value(bytes, t).map_err(|why| {
                DecodeError::malformed(CF, format!("value of {path} is not a valid {t}: {why}"))
            }),
        }
    }
}

/// Reads a value of type `t` from its TLV bytes; the error says why not.
fn decode_value(bytes: &[u8], t: ResourceType) -> Result<Value, String> {
    let len = bytes.len();
    let width = |allowed: &str| format!("{len} bytes, expected {allowed}");
    Ok(match t {
        ResourceType::Integer => {
            Value::Integer(signed(bytes).ok_or_else(|| width("1, 2, 4 or 8"))?)
        }
        ResourceType::Time => Value::Time(signed(bytes).ok_or_else(|| width("1, 2, 4 or 8"))?),
        ResourceType::UnsignedInteger => {
            Value::UnsignedInteger(unsigned(bytes).ok_or_else(|| width("1, 2, 4 or 8"))?)
        }
        ResourceType::Float => Value::Float(match bytes.try_into() {
            Ok(b4) => f64::from(f32::from_be_bytes(b4)),
            Err(_) => f64::from_be_bytes(bytes.try_into().map_err(|_| width("4 or 8"))?),
        }),
        ResourceType::Boolean => match bytes {
            [0] => Value::Boolean(false),
            [1] => Value::Boolean(true),
            [b] => return Err(format!("byte {b:#04x}, expected 0 or 1")),
            _ => return Err(width("1")),
        },
        ResourceType::ObjLnk => match bytes {
            &[o1, o0, i1, i0] => Value::ObjLnk(ObjLnk {
                object: u16::from_be_bytes([o1, o0]),
                instance: u16::from_be_bytes([i1, i0]),
            }),
            _ => return Err(width("4")),
        },
        ResourceType::String => Value::String(utf8(bytes)?),
        ResourceType::CoreLnk => Value::CoreLnk(utf8(bytes)?),
        ResourceType::Opaque | ResourceType::None => Value::Opaque(bytes.to_vec()),
    })
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("not UTF-8 ({e})"))
}

/// Big-endian two's complement in 1, 2, 4 or 8 bytes.
fn signed(bytes: &[u8]) -> Option<i64> {
    Some(match bytes.len() {
        1 => i8::from_be_bytes(bytes.try_into().ok()?).into(),
        2 => i16::from_be_bytes(bytes.try_into().ok()?).into(),
        4 => i32::from_be_bytes(bytes.try_into().ok()?).into(),
        8 => i64::from_be_bytes(bytes.try_into().ok()?),
        _ => return None,
    })
}

/// Big-endian unsigned in 1, 2, 4 or 8 bytes.
fn unsigned(bytes: &[u8]) -> Option<u64> {
    matches!(bytes.len(), 1 | 2 | 4 | 8).then(|| be_uint(bytes))
}

// ---------------------------------------------------------------- writing

/// Appends one TLV with the narrowest id and length fields.
fn write_tlv(out: &mut Vec<u8>, kind: Kind, id: u16, value: &[u8]) -> Result<(), EncodeError> {
    if id > MAX_ID {
        return Err(PathError::OutOfRange(id.into()).into());
    }
    let len = value.len();
    if len > MAX_VALUE_LEN {
        return Err(EncodeError::TooLarge {
            format: CF,
            what: "a value longer than 16777215 bytes",
        });
    }
    let wide_id = id > 0xFF;
    let len_width: usize = match len {
        0..=7 => 0,
        8..=0xFF => 1,
        0x100..=0xFFFF => 2,
        _ => 3,
    };
    let mut t = kind.bits() << 6 | (len_width as u8) << 3;
    if wide_id {
        t |= 0x20;
    }
    if len_width == 0 {
        t |= len as u8;
    }
    out.push(t);
    if wide_id {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    out.extend_from_slice(&(len as u32).to_be_bytes()[4 - len_width..]);
    out.extend_from_slice(value);
    Ok(())
}

/// Builds container TLVs bottom up: children are encoded into a buffer
/// first because the container's header holds their total length.
struct Encoder<'m> {
    model: &'m dyn Model,
    object: u16,
}

impl Encoder<'_> {
    fn object(&self, out: &mut Vec<u8>, object: &Object) -> Result<(), EncodeError> {
        for inst in object.instances.values() {
            let mut body = Vec::new();
            self.resources(&mut body, inst)?;
            write_tlv(out, Kind::ObjectInstance, inst.id, &body)?;
        }
        Ok(())
    }

    fn resources(&self, out: &mut Vec<u8>, inst: &Instance) -> Result<(), EncodeError> {
        inst.resources
            .values()
            .try_for_each(|r| self.resource(out, r))
    }

    fn resource(&self, out: &mut Vec<u8>, res: &Resource) -> Result<(), EncodeError> {
        match res {
            Resource::Single { id, value } => {
                write_tlv(out, Kind::Resource, *id, &self.value(*id, value))
            }
            Resource::Multiple { id, instances } => {
                let mut body = Vec::new();
                for (ri, value) in instances {
                    write_tlv(
                        &mut body,
                        Kind::ResourceInstance,
                        *ri,
                        &self.value(*id, value),
                    )?;
                }
                write_tlv(out, Kind::MultipleResource, *id, &body)
            }
        }
    }

    /// The bytes of a value of resource `r`, converted to the model's type
    /// when that is lossless.
    fn value(&self, r: u16, value: &Value) -> Vec<u8> {
        let declared = self.model.resource(self.object, r).map(|d| d.kind);
        match declared {
            Some(t) if t != value.resource_type() => match value.clone().coerce(t) {
                Ok(v) => value_bytes(&v),
                Err(_) => value_bytes(value),
            },
            _ => value_bytes(value),
        }
    }
}

/// The shortest TLV form of a value.
fn value_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) | Value::CoreLnk(s) => s.as_bytes().to_vec(),
        Value::Opaque(b) => b.clone(),
        Value::Integer(i) | Value::Time(i) => signed_bytes(*i),
        Value::UnsignedInteger(u) => unsigned_bytes(*u),
        Value::Float(f) => {
            let single = *f as f32;
            // Bit-exact, so that NaN payloads and -0.0 survive too.
            if f64::from(single).to_bits() == f.to_bits() {
                single.to_be_bytes().to_vec()
            } else {
                f.to_be_bytes().to_vec()
            }
        }
        Value::Boolean(b) => vec![u8::from(*b)],
        Value::ObjLnk(l) => [l.object.to_be_bytes(), l.instance.to_be_bytes()].concat(),
    }
}

fn signed_bytes(i: i64) -> Vec<u8> {
    if let Ok(v) = i8::try_from(i) {
        v.to_be_bytes().to_vec()
    } else if let Ok(v) = i16::try_from(i) {
        v.to_be_bytes().to_vec()
    } else if let Ok(v) = i32::try_from(i) {
        v.to_be_bytes().to_vec()
    } else {
        i.to_be_bytes().to_vec()
    }
}

fn unsigned_bytes(u: u64) -> Vec<u8> {
    let width = match u {
        0..=0xFF => 1,
        0x100..=0xFFFF => 2,
        0x1_0000..=0xFFFF_FFFF => 4,
        _ => 8,
    };
    u.to_be_bytes()[8 - width..].to_vec()
}
