//! `text/plain` (0): one value as UTF-8 text.
//!
//! Representations (LwM2M Core "Plain Text"): numbers in decimal, booleans as
//! `0`/`1`, time as decimal seconds, object links as `oid:iid`, opaque bytes
//! as base64.

use base64::Engine;

use super::{single_node, single_value, typed, Codec, ContentFormat, DecodeError, EncodeError};
use crate::model::{Model, ResourceType};
use crate::node::Node;
use crate::path::Path;
use crate::value::Value;

const CF: ContentFormat = ContentFormat::Text;

pub struct TextCodec;

impl Codec for TextCodec {
    fn format(&self) -> ContentFormat {
        CF
    }

    fn encode(
        &self,
        _path: &Path,
        node: &Node,
        _model: &dyn Model,
    ) -> Result<Vec<u8>, EncodeError> {
        encode_value(single_value(CF, node)?).map(String::into_bytes)
    }

    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| DecodeError::malformed(CF, "not UTF-8"))?;
        let value = match super::resource_type(model, path) {
            Some(t) => parse_value(text, t).ok_or_else(|| {
                DecodeError::malformed(CF, format!("{:?} is not a valid {t}", truncate(text)))
            })?,
            None => Value::String(text.to_string()),
        };
        single_node(CF, path, model, typed(model, path, value)?)
    }
}

/// The text form of a value.
pub fn encode_value(v: &Value) -> Result<String, EncodeError> {
    Ok(match v {
        Value::String(s) | Value::CoreLnk(s) => s.clone(),
        Value::Integer(i) | Value::Time(i) => i.to_string(),
        Value::UnsignedInteger(u) => u.to_string(),
        Value::Float(f) if f.is_finite() => format_float(*f),
        Value::Float(_) => {
            return Err(EncodeError::ValueType {
                format: CF,
                kind: "non-finite float",
            })
        }
        Value::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
        Value::Opaque(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::ObjLnk(l) => l.to_string(),
    })
}

/// Shortest decimal that reads back to the same float; `{}` never uses an
/// exponent, which for 1e300 would print 301 digits, so large and tiny
/// magnitudes use `{:e}`.
pub fn format_float(f: f64) -> String {
    let a = f.abs();
    if a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

/// Parses the text form of a value of type `t`; `None` when it is not one.
pub fn parse_value(text: &str, t: ResourceType) -> Option<Value> {
    Some(match t {
        ResourceType::String | ResourceType::None => Value::String(text.to_string()),
        ResourceType::CoreLnk => Value::CoreLnk(text.to_string()),
        ResourceType::Integer => Value::Integer(parse_int(text)?),
        ResourceType::Time => Value::Time(parse_int(text)?),
        ResourceType::UnsignedInteger => {
            let t = text.strip_prefix('+').unwrap_or(text);
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Value::UnsignedInteger(t.parse().ok()?)
        }
        ResourceType::Float => Value::Float(parse_float(text)?),
        ResourceType::Boolean => match text {
            "0" => Value::Boolean(false),
            "1" => Value::Boolean(true),
            _ => return None,
        },
        ResourceType::Opaque => Value::Opaque(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()?,
        ),
        ResourceType::ObjLnk => Value::ObjLnk(text.parse().ok()?),
    })
}

fn parse_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decimal floats only: Rust also reads `inf` and `NaN`, which are not
/// LwM2M values.
fn parse_float(text: &str) -> Option<f64> {
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Registry;
    use crate::node::Resource;

    fn dec(bytes: &[u8], path: &str) -> Result<Node, DecodeError> {
        TextCodec.decode(bytes, &path.parse().unwrap(), &Registry::with_core())
    }

    #[test]
    fn values_to_text() {
        let cases: &[(Value, &str)] = &[
            (Value::Integer(-42), "-42"),
            (Value::Float(3.5), "3.5"),
            (Value::Float(1e300), "1e300"),
            (Value::Boolean(true), "1"),
            (Value::Opaque(vec![1, 2, 3]), "AQID"),
            (
                Value::ObjLnk(crate::ObjLnk {
                    object: 3,
                    instance: 0,
                }),
                "3:0",
            ),
            (Value::Time(1_700_000_000), "1700000000"),
        ];
        for (v, t) in cases {
            assert_eq!(encode_value(v).unwrap(), *t);
        }
        assert!(encode_value(&Value::Float(f64::INFINITY)).is_err());
    }

    #[test]
    fn typed_by_the_model() {
        assert_eq!(
            dec(b"100", "/3/0/9").unwrap(),
            Node::Resource(Resource::Single {
                id: 9,
                value: Value::Integer(100)
            })
        );
        assert_eq!(
            dec(b"Open Mobile Alliance", "/3/0/0").unwrap(),
            Node::Resource(Resource::Single {
                id: 0,
                value: "Open Mobile Alliance".into()
            })
        );
        assert!(matches!(
            dec(b"abc", "/3/0/9"),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            dec(b"1.5", "/3/0/9"),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            dec(b"\xff", "/3/0/0"),
            Err(DecodeError::Malformed { .. })
        ));
        // A multiple resource has no single text form.
        assert_eq!(dec(b"1", "/3/0/6"), Err(DecodeError::NotSingleValue(CF)));
        assert_eq!(dec(b"1", "/3/0"), Err(DecodeError::NotSingleValue(CF)));
        assert!(dec(b"1", "/3/0/6/0").is_ok());
        for bad in ["inf", "NaN", "", "1e999"] {
            assert!(parse_value(bad, ResourceType::Float).is_none(), "{bad}");
        }
    }
}
