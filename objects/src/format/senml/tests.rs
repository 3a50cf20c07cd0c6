//! SenML JSON and CBOR tests: the specification's Device example in both
//! forms, composite and timestamped payloads, and malformed input.

use super::cbor::SenmlCborCodec;
use super::json::SenmlJsonCodec;
use crate::format::fixtures::{device, hex, single};
use crate::format::{Codec, DecodeError};
use crate::model::Registry;
use crate::node::{Instance, Node, TimestampedNode};
use crate::path::Path;
use crate::value::{ObjLnk, Value};

const DEVICE_CBOR: &str = "
90A321652F332F302F00613003744F70656E204D6F62696C6520416C6C69616E
6365A200613103764C69676874776569676874204D324D20436C69656E74A200
61320369333435303030313233A20061330363312E30A20063362F300201A200
63362F310205A20063372F3002190ED8A20063372F3102191388A20063382F30
02187DA20063382F3102190384A2006139021864A200623130020FA200643131
2F300200A200623133021A5182428FA20062313403662B30323A3030A2006231
36036155";

const DEVICE_JSON: &str = r#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"1","vs":"Lightweight M2M Client"},{"n":"2","vs":"345000123"},{"n":"3","vs":"1.0"},{"n":"6/0","v":1},{"n":"6/1","v":5},{"n":"7/0","v":3800},{"n":"7/1","v":5000},{"n":"8/0","v":125},{"n":"8/1","v":900},{"n":"9","v":100},{"n":"10","v":15},{"n":"11/0","v":0},{"n":"13","v":1367491215},{"n":"14","vs":"+02:00"},{"n":"16","vs":"U"}]"#;

#[test]
fn device_instance_senml_cbor_vector() {
    let reg = Registry::with_core();
    let bytes = hex(DEVICE_CBOR);
    assert_eq!(bytes.len(), 196);
    let path = Path::instance(3, 0);
    assert_eq!(
        SenmlCborCodec.decode(&bytes, &path, &reg).unwrap(),
        device()
    );
    assert_eq!(
        SenmlCborCodec.encode(&path, &device(), &reg).unwrap(),
        bytes
    );
}

#[test]
fn device_instance_senml_json_vector() {
    let reg = Registry::with_core();
    let path = Path::instance(3, 0);
    assert_eq!(
        SenmlJsonCodec
            .decode(DEVICE_JSON.as_bytes(), &path, &reg)
            .unwrap(),
        device()
    );
    assert_eq!(
        String::from_utf8(SenmlJsonCodec.encode(&path, &device(), &reg).unwrap()).unwrap(),
        DEVICE_JSON
    );
}

#[test]
fn single_resource_uses_the_full_path_as_base_name() {
    let reg = Registry::with_core();
    let p = Path::resource(3, 0, 0);
    let node = Node::Resource(single(0, "Open Mobile Alliance"));
    let json = SenmlJsonCodec.encode(&p, &node, &reg).unwrap();
    assert_eq!(json, br#"[{"bn":"/3/0/0","vs":"Open Mobile Alliance"}]"#);
    assert_eq!(SenmlJsonCodec.decode(&json, &p, &reg).unwrap(), node);
    // Any split of the name is the same path.
    let split = br#"[{"bn":"/3/","n":"0/0","vs":"Open Mobile Alliance"}]"#;
    assert_eq!(SenmlJsonCodec.decode(split, &p, &reg).unwrap(), node);
    let no_bn = br#"[{"n":"/3/0/0","vs":"Open Mobile Alliance"}]"#;
    assert_eq!(SenmlJsonCodec.decode(no_bn, &p, &reg).unwrap(), node);
}

#[test]
fn value_fields_by_type() {
    let reg = Registry::with_core();
    // Opaque in vd (base64url, no padding), boolean in vb, float in v,
    // object link in vlo.
    let json = br#"[{"bn":"/5/0/0","vd":"AQL_"}]"#;
    assert_eq!(
        SenmlJsonCodec
            .decode(json, &Path::resource(5, 0, 0), &reg)
            .unwrap(),
        Node::Resource(single(0, Value::Opaque(vec![1, 2, 0xFF])))
    );
    let padded = br#"[{"bn":"/5/0/0","vd":"AQL/"}]"#;
    assert!(SenmlJsonCodec
        .decode(padded, &Path::resource(5, 0, 0), &reg)
        .is_ok());
    let b = br#"[{"bn":"/1/0/6","vb":true}]"#;
    assert_eq!(
        SenmlJsonCodec
            .decode(b, &Path::resource(1, 0, 6), &reg)
            .unwrap(),
        Node::Resource(single(6, true))
    );
    // A JSON integer for a float resource becomes a float.
    let f = br#"[{"bn":"/6/0/0","v":45}]"#;
    assert_eq!(
        SenmlJsonCodec
            .decode(f, &Path::resource(6, 0, 0), &reg)
            .unwrap(),
        Node::Resource(single(0, 45.0))
    );
    let l = br#"[{"bn":"/3/0/22/0","vlo":"66:1"}]"#;
    assert_eq!(
        SenmlJsonCodec
            .decode(l, &Path::resource_instance(3, 0, 22, 0), &reg)
            .unwrap(),
        Node::ResourceInstance {
            id: 0,
            value: Value::ObjLnk(ObjLnk {
                object: 66,
                instance: 1
            })
        }
    );
}

#[test]
fn composite_read_response() {
    let reg = Registry::with_core();
    let json = br#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"9","v":95},{"bn":"/1/0/","n":"1","v":86400}]"#;
    let requested = [Path::instance(3, 0), Path::resource(1, 0, 1)];
    for (codec, bytes) in [
        (&SenmlJsonCodec as &dyn Codec, json.to_vec()),
        (&SenmlCborCodec, {
            let nodes = SenmlJsonCodec
                .decode_nodes(json, Some(&requested), &reg)
                .unwrap();
            SenmlCborCodec.encode_nodes(&nodes, &reg).unwrap()
        }),
    ] {
        let nodes = codec.decode_nodes(&bytes, Some(&requested), &reg).unwrap();
        assert_eq!(
            nodes[&Path::instance(3, 0)],
            Node::Instance(
                Instance::new(0)
                    .with(single(0, "Open Mobile Alliance"))
                    .with(single(9, 95i64))
            )
        );
        assert_eq!(
            nodes[&Path::resource(1, 0, 1)],
            Node::Resource(single(1, 86400i64))
        );
        // Without requested paths (Send, Write-Composite) each record is a node.
        let flat = codec.decode_nodes(&bytes, None, &reg).unwrap();
        assert_eq!(flat.len(), 3);
        assert_eq!(
            flat[&Path::resource(3, 0, 9)],
            Node::Resource(single(9, 95i64))
        );
    }
    // A record outside every requested path is an error.
    assert!(matches!(
        SenmlJsonCodec.decode_nodes(json, Some(&[Path::instance(3, 0)]), &reg),
        Err(DecodeError::Tree(_))
    ));
}

#[test]
fn read_composite_request_paths() {
    let body = br#"[{"n":"/3/0/0"},{"n":"/1/0/1"}]"#;
    let paths = SenmlJsonCodec.decode_paths(body).unwrap();
    assert_eq!(paths, [Path::resource(3, 0, 0), Path::resource(1, 0, 1)]);
    assert_eq!(SenmlJsonCodec.encode_paths(&paths).unwrap(), body);
    let cbor = SenmlCborCodec.encode_paths(&paths).unwrap();
    assert_eq!(SenmlCborCodec.decode_paths(&cbor).unwrap(), paths);
}

#[test]
fn timestamped_series() {
    let reg = Registry::with_core();
    let p = Path::resource(3, 0, 9);
    // bt then relative t, as a device storing readings while offline sends them.
    let json = br#"[{"bn":"/3/0/9","bt":1700000000,"v":90},{"t":60,"v":80},{"t":120,"v":70}]"#;
    let series = SenmlJsonCodec.decode_timestamped(json, &p, &reg).unwrap();
    let expect: Vec<TimestampedNode> = [(0.0, 90), (60.0, 80), (120.0, 70)]
        .iter()
        .map(|(t, v)| TimestampedNode {
            time: Some(1_700_000_000.0 + t),
            node: Node::Resource(single(9, *v as i64)),
        })
        .collect();
    assert_eq!(series, expect);
    for codec in [&SenmlJsonCodec as &dyn Codec, &SenmlCborCodec] {
        let bytes = codec.encode_timestamped(&p, &expect, &reg).unwrap();
        assert_eq!(codec.decode_timestamped(&bytes, &p, &reg).unwrap(), expect);
    }
}

#[test]
fn malformed_json() {
    let reg = Registry::with_core();
    let p = Path::instance(3, 0);
    let dec = |s: &str| SenmlJsonCodec.decode(s.as_bytes(), &p, &reg);
    assert!(matches!(
        dec(r#"[{"bn":"/3/0/","n":"0","vs":"Open"#),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        dec(r#"{"bn":"/3/0/"}"#),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        dec(r#"[{"n":"/3/x/0","v":1}]"#),
        Err(DecodeError::Path(_))
    ));
    assert!(matches!(
        dec(r#"[{"n":"/3/0/9"}]"#),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        dec(r#"[{"n":"/3/0/9","vs":"full"}]"#),
        Err(DecodeError::WrongType { .. })
    ));
    assert!(matches!(
        dec(r#"[{"n":"/3/0/9","v":1},{"n":"/3/0/9","v":2}]"#),
        Err(DecodeError::Tree(_))
    ));
    assert!(matches!(
        dec(r#"[{"n":"/3/0/9","v":1,"xyz_":1}]"#),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        dec(r#"[{"n":"/3/0/9","v":1,"vs":"x"}]"#),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        dec(r#"[{"n":"/3/0/9","v":1,"n":"/3/0/10"}]"#),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        dec(r#"[{"n":"/3/0/9","v":1}] x"#),
        Err(DecodeError::Malformed { .. })
    ));
    // An unknown field is skipped; serde_json skips without recursion, so
    // even a million levels cost one byte of scratch each and no stack.
    assert!(dec(r#"[{"n":"/3/0/9","v":1,"x":[[1]]}]"#).is_ok());
    let deep = format!(
        r#"[{{"n":"/3/0/9","v":1,"x":{}1{}}}]"#,
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    assert!(dec(&deep).is_ok());
    // Records nested where a record belongs are refused at the first level.
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(dec(&nested), Err(DecodeError::Malformed { .. })));
    assert!(matches!(
        dec(r#"[{"n":"/3/0/9","v":[1]}]"#),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn malformed_cbor() {
    let reg = Registry::with_core();
    let p = Path::instance(3, 0);
    let full = hex(DEVICE_CBOR);
    for cut in [0, 1, 5, 100, 195] {
        assert!(
            matches!(
                SenmlCborCodec.decode(&full[..cut], &p, &reg),
                Err(DecodeError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    let mut trailing = full.clone();
    trailing.push(0);
    assert!(matches!(
        SenmlCborCodec.decode(&trailing, &p, &reg),
        Err(DecodeError::TrailingBytes { .. })
    ));
    // An array that claims 2^32 records holds one.
    let huge = hex("9B0000000100000000 A2 00 66 2F332F302F39 02 01");
    assert!(matches!(
        SenmlCborCodec.decode(&huge, &p, &reg),
        Err(DecodeError::Truncated { .. })
    ));
    // vs holding an integer, v holding a string.
    let wrong = hex("81 A2 00 66 2F332F302F39 03 01");
    assert!(matches!(
        SenmlCborCodec.decode(&wrong, &p, &reg),
        Err(DecodeError::Malformed { .. })
    ));
    // A text value for an integer resource.
    let typed = hex("81 A2 00 66 2F332F302F39 03 61 78");
    assert!(matches!(
        SenmlCborCodec.decode(&typed, &p, &reg),
        Err(DecodeError::WrongType { .. })
    ));
    // A "must understand" text label.
    let mu = hex("81 A3 00 66 2F332F302F39 02 01 64 78797A5F 01");
    assert!(matches!(
        SenmlCborCodec.decode(&mu, &p, &reg),
        Err(DecodeError::Malformed { .. })
    ));
    // Deep nesting inside an ignored label is skipped without recursion.
    let mut deep = hex("81 A3 00 66 2F332F302F39 02 01 18 63");
    deep.extend(std::iter::repeat_n(0x81, 10_000));
    deep.push(0x01);
    assert!(SenmlCborCodec.decode(&deep, &p, &reg).is_ok());
}
