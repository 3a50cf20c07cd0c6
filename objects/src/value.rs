//! Typed resource values.

use std::fmt;
use std::str::FromStr;

use crate::model::ResourceType;

/// A link to an object instance (the `Objlnk` type): `oid:iid`.
///
/// `65535:65535` is the null link; it is representable here because devices
/// send it, even though neither half is a valid path id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjLnk {
    pub object: u16,
    pub instance: u16,
}

impl ObjLnk {
    pub const NULL: ObjLnk = ObjLnk {
        object: 0xFFFF,
        instance: 0xFFFF,
    };
}

impl fmt::Display for ObjLnk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.object, self.instance)
    }
}

/// Why a string is not an object link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object link must be \"oid:iid\" with ids 0..=65535")]
pub struct ObjLnkError;

impl FromStr for ObjLnk {
    type Err = ObjLnkError;
    fn from_str(s: &str) -> Result<ObjLnk, ObjLnkError> {
        let (o, i) = s.split_once(':').ok_or(ObjLnkError)?;
        let num = |t: &str| -> Result<u16, ObjLnkError> {
            if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ObjLnkError);
            }
            t.parse().map_err(|_| ObjLnkError)
        };
        Ok(ObjLnk {
            object: num(o)?,
            instance: num(i)?,
        })
    }
}

/// One typed value of a resource or resource instance.
///
/// The variant is the LwM2M data type. `Time` is seconds since the Unix epoch,
/// signed as in the specification. `CoreLnk` holds the link-format text as sent.
#[derive(Clone, Debug)]
pub enum Value {
    String(String),
    Integer(i64),
    UnsignedInteger(u64),
    Float(f64),
    Boolean(bool),
    Opaque(Vec<u8>),
    Time(i64),
    ObjLnk(ObjLnk),
    CoreLnk(String),
}

/// Floats compare by bit pattern so that values survive a round trip exactly
/// (and NaN equals itself), which is what codec tests need.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (String(a), String(b)) | (CoreLnk(a), CoreLnk(b)) => a == b,
            (Integer(a), Integer(b)) | (Time(a), Time(b)) => a == b,
            (UnsignedInteger(a), UnsignedInteger(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Boolean(a), Boolean(b)) => a == b,
            (Opaque(a), Opaque(b)) => a == b,
            (ObjLnk(a), ObjLnk(b)) => a == b,
            _ => false,
        }
    }
}

/// Why a value cannot be given the type a resource definition asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {found} as {wanted}")]
pub struct TypeMismatch {
    pub found: &'static str,
    pub wanted: ResourceType,
}

impl Value {
    /// The LwM2M data type of this value.
    pub fn resource_type(&self) -> ResourceType {
        match self {
            Value::String(_) => ResourceType::String,
            Value::Integer(_) => ResourceType::Integer,
            Value::UnsignedInteger(_) => ResourceType::UnsignedInteger,
            Value::Float(_) => ResourceType::Float,
            Value::Boolean(_) => ResourceType::Boolean,
            Value::Opaque(_) => ResourceType::Opaque,
            Value::Time(_) => ResourceType::Time,
            Value::ObjLnk(_) => ResourceType::ObjLnk,
            Value::CoreLnk(_) => ResourceType::CoreLnk,
        }
    }

    /// A short name of the variant for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::UnsignedInteger(_) => "unsigned integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Opaque(_) => "opaque",
            Value::Time(_) => "time",
            Value::ObjLnk(_) => "objlnk",
            Value::CoreLnk(_) => "corelnk",
        }
    }

    /// Converts a value decoded from a format with fewer types than LwM2M (a
    /// JSON number, a SenML string) into the type the object model declares.
    ///
    /// Only lossless conversions are made: an integer becomes a float only if
    /// it is exactly representable, a float becomes an integer only if it has
    /// no fraction, a string becomes an object link only if it parses.
    /// `ResourceType::None` (executable resources) keeps the value as is.
    pub fn coerce(self, wanted: ResourceType) -> Result<Value, TypeMismatch> {
        use ResourceType as T;
        let mismatch = |v: &Value| TypeMismatch {
            found: v.kind(),
            wanted,
        };
        Ok(match (self, wanted) {
            (v, T::None) => v,
            (v @ Value::String(_), T::String)
            | (v @ Value::Integer(_), T::Integer)
            | (v @ Value::UnsignedInteger(_), T::UnsignedInteger)
            | (v @ Value::Float(_), T::Float)
            | (v @ Value::Boolean(_), T::Boolean)
            | (v @ Value::Opaque(_), T::Opaque)
            | (v @ Value::Time(_), T::Time)
            | (v @ Value::ObjLnk(_), T::ObjLnk)
            | (v @ Value::CoreLnk(_), T::CoreLnk) => v,
            (Value::Integer(i), T::Time) => Value::Time(i),
            (Value::Time(i), T::Integer) => Value::Integer(i),
            (Value::UnsignedInteger(u), T::Integer) if u <= i64::MAX as u64 => {
                Value::Integer(u as i64)
            }
            (Value::UnsignedInteger(u), T::Time) if u <= i64::MAX as u64 => Value::Time(u as i64),
            (Value::Integer(i), T::UnsignedInteger) if i >= 0 => Value::UnsignedInteger(i as u64),
            (Value::Integer(i), T::Float)
                if (i as f64) as i64 == i && i.unsigned_abs() <= 1 << 53 =>
            {
                Value::Float(i as f64)
            }
            (Value::UnsignedInteger(u), T::Float) if u <= 1 << 53 => Value::Float(u as f64),
            (Value::Float(f), T::Integer | T::Time)
                if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) =>
            {
                if wanted == T::Time {
                    Value::Time(f as i64)
                } else {
                    Value::Integer(f as i64)
                }
            }
            (Value::Float(f), T::UnsignedInteger)
                if f.fract() == 0.0 && f >= 0.0 && f < 2f64.powi(64) =>
            {
                Value::UnsignedInteger(f as u64)
            }
            (Value::String(s), T::CoreLnk) => Value::CoreLnk(s),
            (Value::CoreLnk(s), T::String) => Value::String(s),
            (Value::String(s), T::ObjLnk) => match s.parse() {
                Ok(l) => Value::ObjLnk(l),
                Err(_) => return Err(mismatch(&Value::String(s))),
            },
            (v, _) => return Err(mismatch(&v)),
        })
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Integer(i)
    }
}
impl From<u64> for Value {
    fn from(u: u64) -> Value {
        Value::UnsignedInteger(u)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Boolean(b)
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Opaque(b)
    }
}
impl From<ObjLnk> for Value {
    fn from(l: ObjLnk) -> Value {
        Value::ObjLnk(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResourceType as T;

    #[test]
    fn objlnk_text() {
        assert_eq!(
            "66:0".parse::<ObjLnk>().unwrap(),
            ObjLnk {
                object: 66,
                instance: 0
            }
        );
        assert_eq!("65535:65535".parse::<ObjLnk>().unwrap(), ObjLnk::NULL);
        for bad in ["66", "66:", ":0", "66:0:1", "-1:0", "65536:0", "a:b"] {
            assert!(bad.parse::<ObjLnk>().is_err(), "{bad}");
        }
    }

    #[test]
    fn coercion_is_lossless_or_refused() {
        assert_eq!(Value::Integer(5).coerce(T::Float), Ok(Value::Float(5.0)));
        assert_eq!(Value::Float(5.0).coerce(T::Integer), Ok(Value::Integer(5)));
        assert!(Value::Float(5.5).coerce(T::Integer).is_err());
        assert!(Value::Integer(-1).coerce(T::UnsignedInteger).is_err());
        assert_eq!(Value::Integer(7).coerce(T::Time), Ok(Value::Time(7)));
        assert!(Value::Integer((1 << 53) + 1).coerce(T::Float).is_err());
        assert!(Value::Float(1e300).coerce(T::Integer).is_err());
        assert!(Value::from("x").coerce(T::Integer).is_err());
        assert!(Value::Boolean(true).coerce(T::String).is_err());
        assert_eq!(
            Value::from("3:1").coerce(T::ObjLnk),
            Ok(Value::ObjLnk(ObjLnk {
                object: 3,
                instance: 1
            }))
        );
    }

    #[test]
    fn float_equality_is_bitwise() {
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
        assert_ne!(Value::Float(0.0), Value::Float(-0.0));
    }
}
