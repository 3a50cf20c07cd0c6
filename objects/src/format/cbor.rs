//! `application/cbor` (60): one value as one CBOR data item, and the CBOR
//! value mapping shared with SenML CBOR and LwM2M CBOR.
//!
//! Mapping (LwM2M Core "CBOR"): integers as major types 0/1; floats as
//! single precision when exact, else double (half precision is accepted on
//! input); booleans as simple values; opaque as a byte string; strings, object
//! links (`"oid:iid"`) and core links as text strings; time as tag 1 over an
//! integer (an untagged integer is accepted when the model says time).

use std::convert::Infallible;

use minicbor::data::{Tag, Type};
use minicbor::{Decoder, Encoder};

use super::{single_node, single_value, typed, Codec, ContentFormat, DecodeError, EncodeError};
use crate::model::Model;
use crate::node::Node;
use crate::path::Path;
use crate::value::Value;

const CF: ContentFormat = ContentFormat::Cbor;

/// CBOR tag 1: epoch-based date/time.
const TAG_EPOCH: u64 = 1;

pub struct CborCodec;

impl Codec for CborCodec {
    fn format(&self) -> ContentFormat {
        CF
    }

    fn encode(
        &self,
        _path: &Path,
        node: &Node,
        _model: &dyn Model,
    ) -> Result<Vec<u8>, EncodeError> {
        let v = single_value(CF, node)?;
        to_vec(|e| encode_value(e, v))
    }

    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError> {
        let mut d = Decoder::new(bytes);
        let v = decode_value(&mut d, CF)?;
        if d.position() != bytes.len() {
            return Err(DecodeError::TrailingBytes {
                format: CF,
                extra: bytes.len() - d.position(),
            });
        }
        single_node(CF, path, model, typed(model, path, v)?)
    }
}

/// The error type of writing CBOR into a `Vec`, which cannot fail on I/O.
pub(crate) type WriteError = minicbor::encode::Error<Infallible>;

/// Runs an encoding closure over a fresh buffer.
pub(crate) fn to_vec(
    f: impl FnOnce(&mut Encoder<Vec<u8>>) -> Result<(), WriteError>,
) -> Result<Vec<u8>, EncodeError> {
    let mut e = Encoder::new(Vec::new());
    f(&mut e).map_err(|err| EncodeError::Cbor(err.to_string()))?;
    Ok(e.into_writer())
}

/// Writes one value as a CBOR item.
pub(crate) fn encode_value(e: &mut Encoder<Vec<u8>>, v: &Value) -> Result<(), WriteError> {
    match v {
        Value::String(s) | Value::CoreLnk(s) => e.str(s)?,
        Value::Integer(i) => e.i64(*i)?,
        Value::UnsignedInteger(u) => e.u64(*u)?,
        Value::Float(f) => return encode_float(e, *f),
        Value::Boolean(b) => e.bool(*b)?,
        Value::Opaque(b) => e.bytes(b)?,
        Value::Time(t) => e.tag(Tag::new(TAG_EPOCH))?.i64(*t)?,
        Value::ObjLnk(l) => e.str(&l.to_string())?,
    };
    Ok(())
}

/// Single precision when it is exact, else double.
pub(crate) fn encode_float(e: &mut Encoder<Vec<u8>>, f: f64) -> Result<(), WriteError> {
    let s = f as f32;
    if f64::from(s).to_bits() == f.to_bits() || (f.is_nan() && s.is_nan()) {
        e.f32(s)?;
    } else {
        e.f64(f)?;
    }
    Ok(())
}

/// Reads one CBOR item as an untyped value: what the item itself says.
/// Containers, null, undefined, simple values and indefinite strings are
/// not LwM2M values.
pub(crate) fn decode_value(d: &mut Decoder<'_>, cf: ContentFormat) -> Result<Value, DecodeError> {
    let err = |e: minicbor::decode::Error| cbor_error(cf, e);
    let t = d.datatype().map_err(err)?;
    Ok(match t {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
            let u = d.u64().map_err(err)?;
            match i64::try_from(u) {
                Ok(i) => Value::Integer(i),
                Err(_) => Value::UnsignedInteger(u),
            }
        }
        Type::I8 | Type::I16 | Type::I32 | Type::I64 => Value::Integer(d.i64().map_err(err)?),
        Type::Int => {
            return Err(DecodeError::malformed(cf, "negative integer below -2^63"));
        }
        Type::F16 | Type::F32 | Type::F64 => Value::Float(d.f64().map_err(err)?),
        Type::Bool => Value::Boolean(d.bool().map_err(err)?),
        Type::Bytes => Value::Opaque(d.bytes().map_err(err)?.to_vec()),
        Type::String => Value::String(d.str().map_err(err)?.to_string()),
        // Chunked strings are legal CBOR and some clients stream values that
        // way; the chunks together are never longer than the input.
        Type::BytesIndef => {
            let mut out = Vec::new();
            for chunk in d.bytes_iter().map_err(err)? {
                out.extend_from_slice(chunk.map_err(err)?);
            }
            Value::Opaque(out)
        }
        Type::StringIndef => {
            let mut out = String::new();
            for chunk in d.str_iter().map_err(err)? {
                out.push_str(chunk.map_err(err)?);
            }
            Value::String(out)
        }
        Type::Tag => {
            let tag = d.tag().map_err(err)?;
            if tag.as_u64() != TAG_EPOCH {
                return Err(DecodeError::malformed(
                    cf,
                    format!("unexpected CBOR tag {}", tag.as_u64()),
                ));
            }
            match d.datatype().map_err(err)? {
                Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                    let u = d.u64().map_err(err)?;
                    Value::Time(
                        i64::try_from(u)
                            .map_err(|_| DecodeError::malformed(cf, "time out of range"))?,
                    )
                }
                Type::I8 | Type::I16 | Type::I32 | Type::I64 => Value::Time(d.i64().map_err(err)?),
                Type::F16 | Type::F32 | Type::F64 => {
                    let f = d.f64().map_err(err)?;
                    if !f.is_finite() || f.fract() != 0.0 || f.abs() >= 9.2e18 {
                        return Err(DecodeError::malformed(cf, "time is not whole seconds"));
                    }
                    Value::Time(f as i64)
                }
                other => {
                    return Err(DecodeError::malformed(
                        cf,
                        format!("tag 1 over {other}, expected a number"),
                    ))
                }
            }
        }
        other => {
            return Err(DecodeError::malformed(
                cf,
                format!("a CBOR {other} is not a resource value"),
            ))
        }
    })
}

/// Maps a minicbor error to ours: running out of input is truncation,
/// anything else malformed.
pub(crate) fn cbor_error(cf: ContentFormat, e: minicbor::decode::Error) -> DecodeError {
    if e.is_end_of_input() {
        DecodeError::Truncated {
            format: cf,
            context: "CBOR item ends early",
        }
    } else {
        DecodeError::malformed(cf, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Registry;
    use crate::node::Resource;

    fn single(id: u16, value: Value) -> Node {
        Node::Resource(Resource::Single { id, value })
    }

    #[test]
    fn fixed_vectors() {
        let reg = Registry::with_core();
        let cases: &[(&str, Value, &[u8])] = &[
            ("/3/0/9", Value::Integer(100), &[0x18, 0x64]),
            ("/3/0/0", "ab".into(), &[0x62, b'a', b'b']),
            (
                "/3/0/13",
                Value::Time(1_367_491_215),
                &[0xC1, 0x1A, 0x51, 0x82, 0x42, 0x8F],
            ),
            ("/6/0/0", Value::Float(1.5), &[0xFA, 0x3F, 0xC0, 0, 0]),
            ("/5/0/0", Value::Opaque(vec![1, 2]), &[0x42, 1, 2]),
        ];
        for (p, v, bytes) in cases {
            let path: Path = p.parse().unwrap();
            let node = single(path.resource_id().unwrap(), v.clone());
            assert_eq!(CborCodec.encode(&path, &node, &reg).unwrap(), *bytes, "{p}");
            assert_eq!(CborCodec.decode(bytes, &path, &reg).unwrap(), node, "{p}");
        }
        // An untagged integer is accepted for a time resource, a half float for a float.
        assert_eq!(
            CborCodec.decode(
                &[0x1A, 0x51, 0x82, 0x42, 0x8F],
                &Path::resource(3, 0, 13),
                &reg
            ),
            Ok(single(13, Value::Time(1_367_491_215)))
        );
        assert_eq!(
            CborCodec.decode(&[0xF9, 0x3E, 0x00], &Path::resource(6, 0, 0), &reg),
            Ok(single(0, Value::Float(1.5)))
        );
    }

    #[test]
    fn rejects_bad_items() {
        let reg = Registry::with_core();
        let p = Path::resource(3, 0, 9);
        assert!(matches!(
            CborCodec.decode(&[0x19, 0x01], &p, &reg),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            CborCodec.decode(&[0x01, 0x02], &p, &reg),
            Err(DecodeError::TrailingBytes { .. })
        ));
        assert!(matches!(
            CborCodec.decode(&[0x80], &p, &reg),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            CborCodec.decode(&[0x61, b'x'], &p, &reg),
            Err(DecodeError::WrongType { .. })
        ));
        assert!(matches!(
            CborCodec.decode(&[0xC2, 0x41, 0], &p, &reg),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            CborCodec.decode(&[], &p, &reg),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
