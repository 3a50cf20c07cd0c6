//! SenML CBOR (112): an array of maps keyed by the integer labels of RFC 8428
//! Table 4 (bn -2, bt -3, n 0, v 2, vs 3, vb 4, vd 8, t 6) and the text
//! label `"vlo"` that LwM2M adds.

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

use super::{Field, Number, Raw};
use crate::format::cbor::{cbor_error, decode_value, encode_float, to_vec, WriteError};
use crate::format::{ContentFormat, DecodeError, EncodeError};
use crate::value::Value;

const CF: ContentFormat = ContentFormat::SenmlCbor;

const BVER: i64 = -1;
const BN: i64 = -2;
const BT: i64 = -3;
const BU: i64 = -4;
const BV: i64 = -5;
const BS: i64 = -6;
const N: i64 = 0;
const U: i64 = 1;
const V: i64 = 2;
const VS: i64 = 3;
const VB: i64 = 4;
const S: i64 = 5;
const T: i64 = 6;
const UT: i64 = 7;
const VD: i64 = 8;

pub struct SenmlCborCodec;

impl super::Serialization for SenmlCborCodec {
    const FORMAT: ContentFormat = CF;

    fn parse(bytes: &[u8]) -> Result<Vec<Raw>, DecodeError> {
        parse(bytes)
    }

    fn write(raws: &[Raw]) -> Result<Vec<u8>, EncodeError> {
        write(raws)
    }
}

fn err(e: minicbor::decode::Error) -> DecodeError {
    cbor_error(CF, e)
}

/// Parses the array of record maps. Definite and indefinite lengths are both
/// read item by item, so a declared count larger than the input only leads
/// to a truncation error.
fn parse(bytes: &[u8]) -> Result<Vec<Raw>, DecodeError> {
    let mut d = Decoder::new(bytes);
    let len = d.array().map_err(err)?;
    let mut out = Vec::new();
    let mut i = 0u64;
    loop {
        match len {
            Some(n) if i == n => break,
            None if d.datatype().map_err(err)? == Type::Break => {
                d.skip().map_err(err)?;
                break;
            }
            _ => {}
        }
        out.push(record(&mut d)?);
        i += 1;
    }
    if d.position() != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            format: CF,
            extra: bytes.len() - d.position(),
        });
    }
    Ok(out)
}

/// A map key: an integer label or a text label.
enum Key<'a> {
    Label(i64),
    Text(&'a str),
}

fn record(d: &mut Decoder<'_>) -> Result<Raw, DecodeError> {
    let len = d.map().map_err(err)?;
    let mut r = Raw::default();
    let mut seen: Vec<i64> = Vec::new();
    let mut i = 0u64;
    loop {
        match len {
            Some(n) if i == n => break,
            None if d.datatype().map_err(err)? == Type::Break => {
                d.skip().map_err(err)?;
                break;
            }
            _ => {}
        }
        i += 1;
        let key = match d.datatype().map_err(err)? {
            Type::String => Key::Text(d.str().map_err(err)?),
            Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64 => Key::Label(d.i64().map_err(err)?),
            other => {
                return Err(DecodeError::malformed(
                    CF,
                    format!("a {other} is not a SenML label"),
                ));
            }
        };
        let label = match key {
            Key::Label(l) => l,
            Key::Text("vlo") => i64::MIN,
            Key::Text(t) if t.ends_with('_') => {
                return Err(DecodeError::malformed(
                    CF,
                    format!("label {t:?} must be understood (RFC 8428 §4.4) and is not"),
                ))
            }
            Key::Text(_) => {
                d.skip().map_err(err)?;
                continue;
            }
        };
        if seen.contains(&label) {
            return Err(DecodeError::malformed(
                CF,
                format!("label {label} appears twice"),
            ));
        }
        seen.push(label);
        match label {
            BN => r.bn = Some(d.str().map_err(err)?.to_string()),
            BT => r.bt = Some(time(d)?),
            N => r.n = Some(d.str().map_err(err)?.to_string()),
            T => r.t = Some(time(d)?),
            V | VS | VB | VD | i64::MIN => {
                if r.value.is_some() {
                    return Err(DecodeError::malformed(
                        CF,
                        "record has more than one value field",
                    ));
                }
                r.value = Some(field(d, label)?);
            }
            BV | BS => {
                return Err(DecodeError::malformed(
                    CF,
                    "base value and base sum are not used by LwM2M and not supported",
                ))
            }
            BVER | BU | U | S | UT => d.skip().map_err(err)?,
            _ => d.skip().map_err(err)?,
        }
    }
    Ok(r)
}

fn time(d: &mut Decoder<'_>) -> Result<f64, DecodeError> {
    match decode_value(d, CF)? {
        Value::Integer(i) => Ok(i as f64),
        Value::UnsignedInteger(u) => Ok(u as f64),
        Value::Float(f) if f.is_finite() => Ok(f),
        other => Err(DecodeError::malformed(
            CF,
            format!("a time must be a finite number, not {}", other.kind()),
        )),
    }
}

fn field(d: &mut Decoder<'_>, label: i64) -> Result<Field, DecodeError> {
    let v = decode_value(d, CF)?;
    let wrong = |want: &str, got: &Value| {
        DecodeError::malformed(
            CF,
            format!("{want} holds {}, not a matching item", got.kind()),
        )
    };
    Ok(match (label, v) {
        (V, Value::Integer(i)) => Field::Number(Number::Int(i)),
        (V, Value::UnsignedInteger(u)) => Field::Number(Number::Uint(u)),
        (V, Value::Float(f)) => Field::Number(Number::Float(f)),
        (V, Value::Time(t)) => Field::Number(Number::Int(t)),
        (VS, Value::String(s)) => Field::String(s),
        (VB, Value::Boolean(b)) => Field::Bool(b),
        (VD, Value::Opaque(b)) => Field::Data(b),
        (i64::MIN, Value::String(s)) => Field::ObjLnk(s),
        (V, v) => return Err(wrong("v", &v)),
        (VS, v) => return Err(wrong("vs", &v)),
        (VB, v) => return Err(wrong("vb", &v)),
        (VD, v) => return Err(wrong("vd", &v)),
        (_, v) => return Err(wrong("vlo", &v)),
    })
}

fn write(raws: &[Raw]) -> Result<Vec<u8>, EncodeError> {
    to_vec(|e| {
        e.array(raws.len() as u64)?;
        for r in raws {
            write_record(e, r)?;
        }
        Ok(())
    })
}

fn write_record(e: &mut Encoder<Vec<u8>>, r: &Raw) -> Result<(), WriteError> {
    let n = [
        r.bn.is_some(),
        r.bt.is_some(),
        r.n.is_some(),
        r.t.is_some(),
        r.value.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    e.map(n as u64)?;
    if let Some(bn) = &r.bn {
        e.i64(BN)?.str(bn)?;
    }
    if let Some(bt) = r.bt {
        e.i64(BT)?;
        write_time(e, bt)?;
    }
    if let Some(name) = &r.n {
        e.i64(N)?.str(name)?;
    }
    if let Some(t) = r.t {
        e.i64(T)?;
        write_time(e, t)?;
    }
    match &r.value {
        Some(Field::Number(Number::Int(i))) => {
            e.i64(V)?.i64(*i)?;
        }
        Some(Field::Number(Number::Uint(u))) => {
            e.i64(V)?.u64(*u)?;
        }
        Some(Field::Number(Number::Float(f))) => {
            e.i64(V)?;
            encode_float(e, *f)?;
        }
        Some(Field::String(s)) => {
            e.i64(VS)?.str(s)?;
        }
        Some(Field::Bool(b)) => {
            e.i64(VB)?.bool(*b)?;
        }
        Some(Field::Data(d)) => {
            e.i64(VD)?.bytes(d)?;
        }
        Some(Field::ObjLnk(s)) => {
            e.str("vlo")?.str(s)?;
        }
        None => {}
    }
    Ok(())
}

/// Whole-second times as integers (the common case, and shorter), others
/// as floats.
fn write_time(e: &mut Encoder<Vec<u8>>, t: f64) -> Result<(), WriteError> {
    if t.fract() == 0.0 && t.abs() < 9.0e15 {
        e.i64(t as i64)?;
    } else {
        encode_float(e, t)?;
    }
    Ok(())
}
