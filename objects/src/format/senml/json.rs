//! SenML JSON (110): an array of record objects.

use base64::Engine;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Number as JsonNumber;

use super::{Field, Number, Raw};
use crate::format::{ContentFormat, DecodeError, EncodeError};

const CF: ContentFormat = ContentFormat::SenmlJson;

pub struct SenmlJsonCodec;

impl super::Serialization for SenmlJsonCodec {
    const FORMAT: ContentFormat = CF;

    fn parse(bytes: &[u8]) -> Result<Vec<Raw>, DecodeError> {
        parse(bytes)
    }

    fn write(raws: &[Raw]) -> Result<Vec<u8>, EncodeError> {
        write(raws)
    }
}

/// Parses the JSON array of records.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Raw>, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let raws = de.deserialize_seq(RecordsVisitor).map_err(json_error)?;
    de.end().map_err(json_error)?;
    Ok(raws)
}

/// Maps serde_json's errors onto ours: its recursion limit is our depth
/// limit, running out of input is truncation.
pub(crate) fn json_error(e: serde_json::Error) -> DecodeError {
    json_error_in(CF, e)
}

pub(crate) fn json_error_in(format: ContentFormat, e: serde_json::Error) -> DecodeError {
    let msg = e.to_string();
    if msg.starts_with("recursion limit exceeded") {
        DecodeError::TooDeep { format, limit: 128 }
    } else if e.is_eof() {
        DecodeError::Truncated {
            format,
            context: "JSON ends early",
        }
    } else {
        DecodeError::malformed(format, msg)
    }
}

struct RecordsVisitor;

impl<'de> Visitor<'de> for RecordsVisitor {
    type Value = Vec<Raw>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of SenML records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Raw>, A::Error> {
        let mut out = Vec::new();
        while let Some(r) = seq.next_element_seed(RecordSeed)? {
            out.push(r);
        }
        Ok(out)
    }
}

struct RecordSeed;

impl<'de> de::DeserializeSeed<'de> for RecordSeed {
    type Value = Raw;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a SenML record object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut r = Raw::default();
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if seen.iter().any(|k| *k == key) {
                return Err(de::Error::custom(format!("field {key:?} appears twice")));
            }
            seen.push(key.to_string());
            let value = |f: Field, r: &mut Raw| -> Result<(), A::Error> {
                if r.value.is_some() {
                    return Err(de::Error::custom("record has more than one value field"));
                }
                r.value = Some(f);
                Ok(())
            };
            match key.as_ref() {
                "bn" => r.bn = Some(map.next_value()?),
                "bt" => r.bt = Some(finite(map.next_value()?)?),
                "n" => r.n = Some(map.next_value()?),
                "t" => r.t = Some(finite(map.next_value()?)?),
                "v" => value(Field::Number(number(map.next_value()?)?), &mut r)?,
                "vs" => value(Field::String(map.next_value()?), &mut r)?,
                "vb" => value(Field::Bool(map.next_value()?), &mut r)?,
                "vd" => {
                    let s: String = map.next_value()?;
                    value(
                        Field::Data(base64_any(&s).map_err(de::Error::custom)?),
                        &mut r,
                    )?
                }
                "vlo" => value(Field::ObjLnk(map.next_value()?), &mut r)?,
                "bv" | "bs" => {
                    return Err(de::Error::custom(format!(
                        "base value field {key:?} is not used by LwM2M and not supported"
                    )))
                }
                k if k.ends_with('_') => {
                    return Err(de::Error::custom(format!(
                        "field {k:?} must be understood (RFC 8428 §4.4) and is not"
                    )))
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(r)
    }
}

fn finite<E: de::Error>(f: f64) -> Result<f64, E> {
    if f.is_finite() {
        Ok(f)
    } else {
        Err(E::custom("time is not finite"))
    }
}

fn number<E: de::Error>(n: JsonNumber) -> Result<Number, E> {
    if let Some(i) = n.as_i64() {
        Ok(Number::Int(i))
    } else if let Some(u) = n.as_u64() {
        Ok(Number::Uint(u))
    } else {
        n.as_f64()
            .filter(|f| f.is_finite())
            .map(Number::Float)
            .ok_or_else(|| E::custom("number out of range"))
    }
}

/// RFC 8428 says base64url without padding; standard base64 and padding are
/// accepted as well, as devices send both.
pub(crate) fn base64_any(s: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let trimmed = s.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD.decode(s))
        .map_err(|_| "vd is not base64".to_string())
}

fn write(raws: &[Raw]) -> Result<Vec<u8>, EncodeError> {
    // Serializes straight from the records; the only failure serde_json can
    // report here is a non-finite float, which `field_of` already refused.
    serde_json::to_vec(&Records(raws)).map_err(|_| EncodeError::ValueType {
        format: CF,
        kind: "non-finite float",
    })
}

struct Records<'a>(&'a [Raw]);

impl serde::Serialize for Records<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for r in self.0 {
            seq.serialize_element(&Record(r))?;
        }
        seq.end()
    }
}

struct Record<'a>(&'a Raw);

impl serde::Serialize for Record<'_> {
    /// Fields in the order of the specification's examples: bn, bt, n, t, value.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let r = self.0;
        let finite = |f: f64| {
            if f.is_finite() {
                Ok(f)
            } else {
                Err(S::Error::custom("non-finite float"))
            }
        };
        let mut m = s.serialize_map(None)?;
        if let Some(bn) = &r.bn {
            m.serialize_entry("bn", bn)?;
        }
        if let Some(bt) = r.bt {
            m.serialize_entry("bt", &finite(bt)?)?;
        }
        if let Some(n) = &r.n {
            m.serialize_entry("n", n)?;
        }
        if let Some(t) = r.t {
            m.serialize_entry("t", &finite(t)?)?;
        }
        match &r.value {
            Some(Field::Number(Number::Int(i))) => m.serialize_entry("v", i)?,
            Some(Field::Number(Number::Uint(u))) => m.serialize_entry("v", u)?,
            Some(Field::Number(Number::Float(f))) => m.serialize_entry("v", &finite(*f)?)?,
            Some(Field::String(v)) => m.serialize_entry("vs", v)?,
            Some(Field::Bool(b)) => m.serialize_entry("vb", b)?,
            Some(Field::Data(d)) => m.serialize_entry(
                "vd",
                &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d),
            )?,
            Some(Field::ObjLnk(v)) => m.serialize_entry("vlo", v)?,
            None => {}
        }
        m.end()
    }
}
