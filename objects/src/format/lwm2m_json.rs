//! `application/vnd.oma.lwm2m+json` (11543), the JSON format of LwM2M 1.0.
//!
//! `{"bn":"/3/0/","bt":..,"e":[{"n":"0","sv":".."},{"n":"6/0","v":1}]}`:
//! entries carry `v` (numbers), `sv` (strings, and opaque values in base64),
//! `bv` (booleans) or `ov` (object links), and an optional `t` added to the
//! document's `bt`. 1.1 clients must not send it but 1.1 servers must still
//! accept it, so it shares SenML's name and time resolution.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Number as JsonNumber, Value as Json};

use super::senml::{self, Field, Number, Raw};
use super::{Codec, ContentFormat, DecodeError, EncodeError};
use crate::model::{Model, ResourceType};
use crate::node::{Node, TimestampedNode};
use crate::path::Path;

const CF: ContentFormat = ContentFormat::Lwm2mJson;

pub struct Lwm2mJsonCodec;

impl Codec for Lwm2mJsonCodec {
    fn format(&self) -> ContentFormat {
        CF
    }

    fn encode(&self, path: &Path, node: &Node, _model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
        write(senml::raws_for_node(CF, path, node)?)
    }

    fn decode(&self, bytes: &[u8], path: &Path, model: &dyn Model) -> Result<Node, DecodeError> {
        senml::decode_node(CF, model, read(bytes, model)?, path)
    }

    fn encode_timestamped(
        &self,
        path: &Path,
        nodes: &[TimestampedNode],
        _model: &dyn Model,
    ) -> Result<Vec<u8>, EncodeError> {
        write(senml::raws_for_series(CF, path, nodes)?)
    }

    fn decode_timestamped(
        &self,
        bytes: &[u8],
        path: &Path,
        model: &dyn Model,
    ) -> Result<Vec<TimestampedNode>, DecodeError> {
        senml::decode_timestamped(CF, model, read(bytes, model)?, path)
    }
}

#[derive(Deserialize)]
struct Doc {
    bn: Option<String>,
    bt: Option<f64>,
    e: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    n: Option<String>,
    t: Option<f64>,
    v: Option<JsonNumber>,
    sv: Option<String>,
    bv: Option<bool>,
    ov: Option<String>,
}

fn read(bytes: &[u8], model: &dyn Model) -> Result<Vec<senml::Resolved>, DecodeError> {
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| senml::json::json_error_in(CF, e))?;
    let mut raws = Vec::with_capacity(doc.e.len());
    for (i, e) in doc.e.into_iter().enumerate() {
        let fields = [
            e.v.map(|n| number(&n).map(Field::Number)),
            e.sv.map(|s| Ok(Field::String(s))),
            e.bv.map(|b| Ok(Field::Bool(b))),
            e.ov.map(|s| Ok(Field::ObjLnk(s))),
        ];
        let mut present = fields.into_iter().flatten();
        let value = present.next().transpose()?;
        if present.next().is_some() {
            return Err(DecodeError::malformed(
                CF,
                format!("entry {i} has more than one value"),
            ));
        }
        raws.push(Raw {
            bn: if i == 0 { doc.bn.clone() } else { None },
            bt: if i == 0 { doc.bt } else { None },
            n: e.n,
            t: e.t,
            value,
        });
    }
    let mut resolved = senml::resolve(CF, raws)?;
    // Opaque values travel as base64 in `sv`; only the model can tell.
    for r in &mut resolved {
        if super::resource_type(model, &r.path) == Some(ResourceType::Opaque) {
            if let Some(Field::String(s)) = &r.value {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| {
                        DecodeError::malformed(
                            CF,
                            format!("opaque value at {} is not base64", r.path),
                        )
                    })?;
                r.value = Some(Field::Data(bytes));
            }
        }
    }
    Ok(resolved)
}

fn number(n: &JsonNumber) -> Result<Number, DecodeError> {
    if let Some(i) = n.as_i64() {
        Ok(Number::Int(i))
    } else if let Some(u) = n.as_u64() {
        Ok(Number::Uint(u))
    } else {
        n.as_f64()
            .filter(|f| f.is_finite())
            .map(Number::Float)
            .ok_or_else(|| DecodeError::malformed(CF, "number out of range"))
    }
}

/// Writes records produced by the SenML helpers: one document whose `bn` is
/// the shared base name, with each measurement's time as `t` on its entries.
fn write(raws: Vec<Raw>) -> Result<Vec<u8>, EncodeError> {
    let bn = raws.first().and_then(|r| r.bn.clone());
    if raws.iter().any(|r| r.bn.is_some() && r.bn != bn) {
        return Err(EncodeError::Unsupported {
            format: CF,
            operation: "records under different base names",
        });
    }
    let mut time = None;
    let mut entries = Vec::with_capacity(raws.len());
    for r in raws {
        if r.bt.is_some() {
            time = r.bt;
        }
        let mut m = Map::new();
        if let Some(n) = r.n {
            m.insert("n".into(), Json::String(n));
        }
        let (key, value) = match r.value {
            Some(Field::Number(Number::Int(i))) => ("v", Json::Number(i.into())),
            Some(Field::Number(Number::Uint(u))) => ("v", Json::Number(u.into())),
            Some(Field::Number(Number::Float(f))) => ("v", float(f)?),
            Some(Field::String(s)) => ("sv", Json::String(s)),
            Some(Field::Data(d)) => (
                "sv",
                Json::String(base64::engine::general_purpose::STANDARD.encode(d)),
            ),
            Some(Field::Bool(b)) => ("bv", Json::Bool(b)),
            Some(Field::ObjLnk(s)) => ("ov", Json::String(s)),
            None => continue,
        };
        m.insert(key.into(), value);
        if let Some(t) = time {
            m.insert("t".into(), float(t)?);
        }
        entries.push(Json::Object(m));
    }
    // Key order is fixed by hand: "bn" before "e", as the specification prints it.
    let mut out = Vec::new();
    out.extend_from_slice(b"{");
    if let Some(bn) = bn {
        out.extend_from_slice(b"\"bn\":");
        out.extend(Json::String(bn).to_string().into_bytes());
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(b"\"e\":");
    out.extend(Json::Array(entries).to_string().into_bytes());
    out.extend_from_slice(b"}");
    Ok(out)
}

fn float(f: f64) -> Result<Json, EncodeError> {
    JsonNumber::from_f64(f)
        .map(Json::Number)
        .ok_or(EncodeError::ValueType {
            format: CF,
            kind: "non-finite float",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::fixtures::{device, single};
    use crate::model::Registry;
    use crate::value::Value;

    /// The Device object example of the 1.0 specification (§6.4.4), with
    /// the values of the TLV and SenML examples.
    const DEVICE: &str = r#"{"bn":"/3/0/","e":[{"n":"0","sv":"Open Mobile Alliance"},{"n":"1","sv":"Lightweight M2M Client"},{"n":"2","sv":"345000123"},{"n":"3","sv":"1.0"},{"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"7/0","v":3800},{"n":"7/1","v":5000},{"n":"8/0","v":125},{"n":"8/1","v":900},{"n":"9","v":100},{"n":"10","v":15},{"n":"11/0","v":0},{"n":"13","v":1367491215},{"n":"14","sv":"+02:00"},{"n":"16","sv":"U"}]}"#;

    #[test]
    fn device_instance() {
        let reg = Registry::with_core();
        let p = Path::instance(3, 0);
        assert_eq!(
            Lwm2mJsonCodec.decode(DEVICE.as_bytes(), &p, &reg).unwrap(),
            device()
        );
        let out = Lwm2mJsonCodec.encode(&p, &device(), &reg).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), DEVICE);
    }

    #[test]
    fn timestamped_with_base_time() {
        // The 1.0 specification's shape: one resource measured three times,
        // times relative to bt.
        let reg = Registry::with_core();
        let p = Path::resource(3, 0, 9);
        let json = br#"{"bn":"/3/0/9","bt":25462634,"e":[{"v":22,"t":-5},{"v":23,"t":-50},{"v":24,"t":-75}]}"#;
        let series = Lwm2mJsonCodec.decode_timestamped(json, &p, &reg).unwrap();
        let times: Vec<_> = series.iter().map(|s| s.time).collect();
        assert_eq!(
            times,
            [Some(25462629.0), Some(25462584.0), Some(25462559.0)]
        );
        assert_eq!(series[1].node, Node::Resource(single(9, 23i64)));
        let again = Lwm2mJsonCodec
            .encode_timestamped(&p, &series, &reg)
            .unwrap();
        assert_eq!(
            Lwm2mJsonCodec.decode_timestamped(&again, &p, &reg).unwrap(),
            series
        );
    }

    #[test]
    fn opaque_objlnk_and_boolean() {
        let reg = Registry::with_core();
        let pkg = br#"{"bn":"/5/0/0","e":[{"sv":"AQID"}]}"#;
        assert_eq!(
            Lwm2mJsonCodec
                .decode(pkg, &Path::resource(5, 0, 0), &reg)
                .unwrap(),
            Node::Resource(single(0, Value::Opaque(vec![1, 2, 3])))
        );
        let b = br#"{"bn":"/1/0/6","e":[{"bv":false}]}"#;
        assert_eq!(
            Lwm2mJsonCodec
                .decode(b, &Path::resource(1, 0, 6), &reg)
                .unwrap(),
            Node::Resource(single(6, false))
        );
        let l = br#"{"e":[{"n":"/3/0/22/1","ov":"66:0"}]}"#;
        assert!(Lwm2mJsonCodec
            .decode(l, &Path::resource_instance(3, 0, 22, 1), &reg)
            .is_ok());
    }

    #[test]
    fn malformed() {
        let reg = Registry::with_core();
        let p = Path::instance(3, 0);
        let dec = |s: &str| Lwm2mJsonCodec.decode(s.as_bytes(), &p, &reg);
        assert!(matches!(
            dec(r#"{"bn":"/3/0/","e":[{"n":"0""#),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            dec(r#"[{"n":"0","sv":"x"}]"#),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            dec(r#"{"bn":"/3/0/"}"#),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            dec(r#"{"bn":"/3/0/","e":[{"n":"9","sv":"x"}]}"#),
            Err(DecodeError::WrongType { .. })
        ));
        assert!(matches!(
            dec(r#"{"bn":"/3/0/","e":[{"n":"9","v":1,"sv":"x"}]}"#),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            dec(r#"{"bn":"/3/0/","e":[{"n":"9"}]}"#),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            dec(r#"{"bn":"/3/0/","e":[{"n":"x","v":1}]}"#),
            Err(DecodeError::Path(_))
        ));
        assert!(matches!(
            dec(r#"{"bn":"/3/0/","e":[{"n":"9","v":1},{"n":"9","v":2}]}"#),
            Err(DecodeError::Tree(_))
        ));
        assert!(matches!(
            Lwm2mJsonCodec.decode(
                br#"{"bn":"/5/0/0","e":[{"sv":"!!"}]}"#,
                &Path::resource(5, 0, 0),
                &reg
            ),
            Err(DecodeError::Malformed { .. })
        ));
        let nested = format!(r#"{{"e":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(dec(&nested), Err(DecodeError::Malformed { .. })));
    }
}
