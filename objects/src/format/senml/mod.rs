//! SenML (RFC 8428) as LwM2M profiles it, shared by the JSON (110) and CBOR
//! (112) forms: base name and base time resolution, the mapping between
//! SenML value fields and LwM2M types, and the conversions between records
//! and nodes that both codecs use.
//!
//! Value fields (LwM2M Core "SenML JSON"): `v` for integer, unsigned, float
//! and time; `vs` for string and core link; `vb` for boolean; `vd` for
//! opaque; `vlo` for object links (`"oid:iid"`).
//!
//! The encoder writes the request path as base name on the first record and
//! names relative to it (`bn:"/3/0/"`, `n:"0"`), as the specification's
//! examples do; a timestamped series carries its time as `bt` on the first
//! record of each measurement.

pub mod cbor;
pub mod json;

use super::{typed, Codec, ContentFormat, DecodeError, EncodeError, Nodes};
use crate::model::Model;
use crate::node::{node_from_records, nodes_from_records, Node, Record, TimestampedNode};
use crate::path::Path;
use crate::value::Value;

/// The two SenML serializations: how records are read from and written to
/// bytes. Everything else (names, times, types, nodes) is shared, so both
/// forms implement [`Codec`] through this one trait.
pub(crate) trait Serialization: Send + Sync {
    const FORMAT: ContentFormat;
    fn parse(bytes: &[u8]) -> Result<Vec<Raw>, DecodeError>;
    fn write(raws: &[Raw]) -> Result<Vec<u8>, EncodeError>;
}

fn read<S: Serialization>(bytes: &[u8]) -> Result<Vec<Resolved>, DecodeError> {
    resolve(S::FORMAT, S::parse(bytes)?)
}

impl<S: Serialization> Codec for S {
    fn format(&self) -> ContentFormat {
        S::FORMAT
    }

    fn encode(&self, path: &Path, node: &Node, _model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
        S::write(&raws_for_node(S::FORMAT, path, node)?)
    }

    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError> {
        decode_node(S::FORMAT, model, read::<S>(bytes)?, path)
    }

    fn encode_nodes(&self, nodes: &Nodes, _model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
        S::write(&raws_for_nodes(S::FORMAT, nodes)?)
    }

    fn decode_nodes(
        &self,
        bytes: &[u8],
        requested: Option<&[Path]>,
        model: &dyn Model,
    ) -> Result<Nodes, DecodeError> {
        decode_nodes(S::FORMAT, model, read::<S>(bytes)?, requested)
    }

    fn encode_timestamped(
        &self,
        path: &Path,
        nodes: &[TimestampedNode],
        _model: &dyn Model,
    ) -> Result<Vec<u8>, EncodeError> {
        S::write(&raws_for_series(S::FORMAT, path, nodes)?)
    }

    fn decode_timestamped(
        &self,
        bytes: &[u8],
        path: &Path,
        model: &dyn Model,
    ) -> Result<Vec<TimestampedNode>, DecodeError> {
        decode_timestamped(S::FORMAT, model, read::<S>(bytes)?, path)
    }

    fn encode_paths(&self, paths: &[Path]) -> Result<Vec<u8>, EncodeError> {
        S::write(&raws_for_paths(paths))
    }

    fn decode_paths(&self, bytes: &[u8]) -> Result<Vec<Path>, DecodeError> {
        decode_paths(read::<S>(bytes)?)
    }
}

/// A SenML number as decoded, before the model gives it a type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    Int(i64),
    Uint(u64),
    Float(f64),
}

/// The value field of a record, by the field it came in.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Field {
    /// `v`
    Number(Number),
    /// `vs`
    String(String),
    /// `vb`
    Bool(bool),
    /// `vd`
    Data(Vec<u8>),
    /// `vlo`
    ObjLnk(String),
}

/// One SenML record as it stands in the payload, base fields included.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Raw {
    pub bn: Option<String>,
    pub bt: Option<f64>,
    pub n: Option<String>,
    pub t: Option<f64>,
    pub value: Option<Field>,
}

/// A record with its name and time resolved against the base fields.
pub(crate) struct Resolved {
    pub path: Path,
    pub time: Option<f64>,
    pub value: Option<Field>,
}

/// Resolves base names and times: the name is bn + n, the time bt + t, and
/// each base field holds for the records after it until replaced.
pub(crate) fn resolve(cf: ContentFormat, raws: Vec<Raw>) -> Result<Vec<Resolved>, DecodeError> {
    let mut bn = String::new();
    let mut bt: Option<f64> = None;
    let mut out = Vec::with_capacity(raws.len());
    for r in raws {
        if let Some(b) = r.bn {
            bn = b;
        }
        if let Some(b) = r.bt {
            bt = Some(b);
        }
        let name = format!("{bn}{}", r.n.as_deref().unwrap_or(""));
        let path = Path::parse_lenient(&name)?;
        let time = match (bt, r.t) {
            (None, None) => None,
            (b, t) => Some(b.unwrap_or(0.0) + t.unwrap_or(0.0)),
        };
        if time.is_some_and(|t| !t.is_finite()) {
            return Err(DecodeError::malformed(cf, "time is not a finite number"));
        }
        out.push(Resolved {
            path,
            time,
            value: r.value,
        });
    }
    Ok(out)
}

/// The untyped LwM2M value of a field.
fn field_value(cf: ContentFormat, path: &Path, f: Field) -> Result<Value, DecodeError> {
    Ok(match f {
        Field::Number(Number::Int(i)) => Value::Integer(i),
        Field::Number(Number::Uint(u)) => Value::UnsignedInteger(u),
        Field::Number(Number::Float(x)) => Value::Float(x),
        Field::String(s) => Value::String(s),
        Field::Bool(b) => Value::Boolean(b),
        Field::Data(d) => Value::Opaque(d),
        Field::ObjLnk(s) => Value::ObjLnk(s.parse().map_err(|_| {
            DecodeError::malformed(cf, format!("vlo at {path} is not \"oid:iid\""))
        })?),
    })
}

/// The typed (path, value, time) triples of a value payload; a record
/// without a value is an error here.
fn typed_records(
    cf: ContentFormat,
    model: &dyn Model,
    resolved: Vec<Resolved>,
) -> Result<Vec<(Path, Value, Option<f64>)>, DecodeError> {
    resolved
        .into_iter()
        .map(|r| {
            let field = r.value.ok_or_else(|| {
                DecodeError::malformed(cf, format!("record {} has no value", r.path))
            })?;
            let v = typed(model, &r.path, field_value(cf, &r.path, field)?)?;
            Ok((r.path, v, r.time))
        })
        .collect()
}

pub(crate) fn decode_node(
    cf: ContentFormat,
    model: &dyn Model,
    resolved: Vec<Resolved>,
    path: &Path,
) -> Result<Node, DecodeError> {
    let recs = typed_records(cf, model, resolved)?;
    let multiple = super::is_multiple(model);
    Ok(node_from_records(
        path,
        recs.into_iter().map(|(p, v, _)| (p, v)),
        &multiple,
    )?)
}

pub(crate) fn decode_nodes(
    cf: ContentFormat,
    model: &dyn Model,
    resolved: Vec<Resolved>,
    requested: Option<&[Path]>,
) -> Result<Nodes, DecodeError> {
    let recs = typed_records(cf, model, resolved)?;
    let multiple = super::is_multiple(model);
    Ok(nodes_from_records(
        requested,
        recs.into_iter().map(|(p, v, _)| (p, v)),
        &multiple,
    )?)
}

/// The records measured at one time.
type Measurement = (Option<f64>, Vec<(Path, Value)>);

pub(crate) fn decode_timestamped(
    cf: ContentFormat,
    model: &dyn Model,
    resolved: Vec<Resolved>,
    path: &Path,
) -> Result<Vec<TimestampedNode>, DecodeError> {
    let recs = typed_records(cf, model, resolved)?;
    // Groups by time in order of first appearance; times compare by bits so
    // that the grouping is exact.
    let mut groups: Vec<Measurement> = Vec::new();
    for (p, v, t) in recs {
        let key = t.map(f64::to_bits);
        match groups
            .iter_mut()
            .find(|(gt, _)| gt.map(f64::to_bits) == key)
        {
            Some((_, g)) => g.push((p, v)),
            None => groups.push((t, vec![(p, v)])),
        }
    }
    let multiple = super::is_multiple(model);
    groups
        .into_iter()
        .map(|(time, recs)| {
            Ok(TimestampedNode {
                time,
                node: node_from_records(path, recs, &multiple)?,
            })
        })
        .collect()
}

pub(crate) fn decode_paths(resolved: Vec<Resolved>) -> Result<Vec<Path>, DecodeError> {
    Ok(resolved.into_iter().map(|r| r.path).collect())
}

/// The field a value is written in.
pub(crate) fn field_of(format: ContentFormat, v: &Value) -> Result<Field, EncodeError> {
    Ok(match v {
        Value::Integer(i) | Value::Time(i) => Field::Number(Number::Int(*i)),
        Value::UnsignedInteger(u) => Field::Number(Number::Uint(*u)),
        Value::Float(f) if format == ContentFormat::SenmlJson && !f.is_finite() => {
            return Err(EncodeError::ValueType {
                format,
                kind: "non-finite float",
            })
        }
        Value::Float(f) => Field::Number(Number::Float(*f)),
        Value::String(s) | Value::CoreLnk(s) => Field::String(s.clone()),
        Value::Boolean(b) => Field::Bool(*b),
        Value::Opaque(d) => Field::Data(d.clone()),
        Value::ObjLnk(l) => Field::ObjLnk(l.to_string()),
    })
}

/// Raw records for the node at `base`: the first carries `bn` (and `bt`
/// when given), later ones names relative to it.
pub(crate) fn raws_for(
    format: ContentFormat,
    base: &Path,
    records: &[Record],
    time: Option<f64>,
) -> Result<Vec<Raw>, EncodeError> {
    let prefix = if records.iter().all(|r| r.path == *base) {
        base.to_string()
    } else if base.is_root() {
        "/".to_string()
    } else {
        format!("{base}/")
    };
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let full = r.path.to_string();
        let rel = full.strip_prefix(prefix.as_str()).unwrap_or(&full);
        out.push(Raw {
            bn: (i == 0).then(|| prefix.clone()),
            bt: if i == 0 { time } else { None },
            n: (!rel.is_empty()).then(|| rel.to_string()),
            t: None,
            value: Some(field_of(format, &r.value)?),
        });
    }
    Ok(out)
}

pub(crate) fn raws_for_node(
    format: ContentFormat,
    path: &Path,
    node: &Node,
) -> Result<Vec<Raw>, EncodeError> {
    check_depth(path, node)?;
    raws_for(format, path, &node.to_records(path, None), None)
}

pub(crate) fn raws_for_nodes(
    format: ContentFormat,
    nodes: &Nodes,
) -> Result<Vec<Raw>, EncodeError> {
    let mut out = Vec::new();
    for (path, node) in nodes {
        check_depth(path, node)?;
        out.extend(raws_for(format, path, &node.to_records(path, None), None)?);
    }
    Ok(out)
}

pub(crate) fn raws_for_series(
    format: ContentFormat,
    path: &Path,
    series: &[TimestampedNode],
) -> Result<Vec<Raw>, EncodeError> {
    let mut out = Vec::new();
    for (i, tn) in series.iter().enumerate() {
        check_depth(path, &tn.node)?;
        let recs = tn.node.to_records(path, None);
        // A measurement without a time after one with a base time would
        // inherit that base time.
        if tn.time.is_none() && i > 0 {
            return Err(EncodeError::Unsupported {
                format,
                operation: "untimed measurement after a timed one",
            });
        }
        out.extend(raws_for(format, path, &recs, tn.time)?);
    }
    Ok(out)
}

pub(crate) fn raws_for_paths(paths: &[Path]) -> Vec<Raw> {
    paths
        .iter()
        .map(|p| Raw {
            n: Some(p.to_string()),
            ..Raw::default()
        })
        .collect()
}

fn check_depth(path: &Path, node: &Node) -> Result<(), EncodeError> {
    if path.depth() != node.depth() || path.ids().last() != Some(&node.id()) {
        return Err(EncodeError::PathMismatch {
            path: *path,
            node_depth: node.depth(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
