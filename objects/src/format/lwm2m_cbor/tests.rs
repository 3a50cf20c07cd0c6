use super::*;
use crate::model::Registry;
use crate::node::{Object, TreeError};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn p(s: &str) -> Path {
    s.parse().unwrap()
}

fn single(id: u16, value: impl Into<Value>) -> Resource {
    Resource::Single {
        id,
        value: value.into(),
    }
}

fn multiple(id: u16, values: &[(u16, i64)]) -> Resource {
    Resource::Multiple {
        id,
        instances: values
            .iter()
            .map(|&(ri, v)| (ri, Value::Integer(v)))
            .collect(),
    }
}

fn dec(bytes: &[u8], path: &str) -> Result<Node, DecodeError> {
    Lwm2mCborCodec.decode(bytes, &p(path), &Registry::with_core())
}

fn enc(path: &str, node: &Node) -> Vec<u8> {
    Lwm2mCborCodec
        .encode(&p(path), node, &Registry::with_core())
        .unwrap()
}

const MANUFACTURER: &str = "4F70656E204D6F62696C6520416C6C69616E6365";

/// C12 "LwM2M CBOR": Read /3/0/0, 26 bytes.
#[test]
fn spec_read_single_resource() {
    let bytes = hex(&format!("A1 830300 00 74 {MANUFACTURER}"));
    assert_eq!(bytes.len(), 26);
    let node = Node::Resource(single(0, "Open Mobile Alliance"));
    assert_eq!(enc("/3/0/0", &node), bytes);
    assert_eq!(dec(&bytes, "/3/0/0"), Ok(node));
}

/// C12 "LwM2M CBOR": Read /3/0/6, 10 bytes.
#[test]
fn spec_read_multiple_resource() {
    let bytes = hex("A1 83030006 A2 0001 0105");
    assert_eq!(bytes.len(), 10);
    let node = Node::Resource(multiple(6, &[(0, 1), (1, 5)]));
    assert_eq!(enc("/3/0/6", &node), bytes);
    assert_eq!(dec(&bytes, "/3/0/6"), Ok(node));
}

fn composite_nodes() -> Vec<(Path, Node)> {
    vec![
        (
            p("/3/0/0"),
            Node::Resource(single(0, "Open Mobile Alliance")),
        ),
        (p("/3/0/9"), Node::Resource(single(9, Value::Integer(100)))),
        (
            p("/1/0/1"),
            Node::Resource(single(1, Value::Integer(86400))),
        ),
    ]
}

/// C12 "LwM2M CBOR": Read-Composite of /3/0/0, /3/0/9 and /1/0/1, 39 bytes,
/// in the order of the request.
#[test]
fn spec_composite() {
    let bytes = hex(&format!(
        "A2 820300 A2 00 74 {MANUFACTURER} 09 1864 83010001 1A00015180"
    ));
    assert_eq!(bytes.len(), 39);
    let nodes = composite_nodes();
    let out = Lwm2mCborCodec
        .encode_composite(nodes.iter().map(|(p, n)| (p, n)))
        .unwrap();
    assert_eq!(out, bytes);

    let reg = Registry::with_core();
    let requested = [p("/3/0/0"), p("/3/0/9"), p("/1/0/1")];
    let want: Nodes = nodes.into_iter().collect();
    let got = Lwm2mCborCodec
        .decode_nodes(&bytes, Some(&requested), &reg)
        .unwrap();
    assert_eq!(got, want);
    // Without requested paths (Send, Write-Composite) each value is a node.
    assert_eq!(
        Lwm2mCborCodec.decode_nodes(&bytes, None, &reg).unwrap(),
        want
    );
    // The trait method encodes in path order; same content.
    let sorted = Lwm2mCborCodec.encode_nodes(&want, &reg).unwrap();
    assert_eq!(
        sorted,
        hex(&format!(
            "A2 83010001 1A00015180 820300 A2 00 74 {MANUFACTURER} 09 1864"
        ))
    );
    assert_eq!(
        Lwm2mCborCodec.decode_nodes(&sorted, None, &reg).unwrap(),
        want
    );
}

fn device_instance() -> Instance {
    Instance::new(0)
        .with(single(0, "Open Mobile Alliance"))
        .with(single(1, "Lightweight M2M Client"))
        .with(single(2, "345000123"))
        .with(single(3, "1.0"))
        .with(multiple(6, &[(0, 1), (1, 5)]))
        .with(multiple(7, &[(0, 3800), (1, 5000)]))
        .with(multiple(8, &[(0, 125), (1, 900)]))
        .with(single(9, Value::Integer(100)))
        .with(single(10, Value::Integer(15)))
        .with(multiple(11, &[(0, 0)]))
        .with(single(13, Value::Time(1_367_491_215)))
        .with(single(14, "+02:00"))
        .with(single(16, "U"))
}

/// Read /3/0, 118 bytes: built by hand from the values of the C12 TLV and
/// SenML examples (the printed LwM2M CBOR vector was not available). The
/// size matches the 118 bytes the specification gives. The time is an
/// untagged integer, as in the SenML CBOR example.
#[test]
fn read_instance_118_bytes() {
    let bytes = hex("A1 820300 AD
         00 74 4F70656E204D6F62696C6520416C6C69616E6365
         01 76 4C69676874776569676874204D324D20436C69656E74
         02 69 333435303030313233
         03 63 312E30
         06 A2 0001 0105
         07 A2 00190ED8 01191388
         08 A2 00187D 01190384
         09 1864 0A 0F 0B A1 0000
         0D 1A5182428F
         0E 66 2B30323A3030
         10 61 55");
    assert_eq!(bytes.len(), 118);
    let node = Node::Instance(device_instance());
    assert_eq!(dec(&bytes, "/3/0"), Ok(node.clone()));
    // The encoder tags time (tag 1), one byte more; everything else equal.
    let out = enc("/3/0", &node);
    assert_eq!(out.len(), 119);
    assert_eq!(dec(&out, "/3/0"), Ok(node));
}

/// Read /1 with two server accounts, built by hand (the printed 63-byte
/// vector was not available), in the fully nested form.
#[test]
fn read_object_nested_form() {
    let bytes = hex("A1 01 A2
           00 A4 00 01 01 1A00015180 06 F4 07 61 55
           01 A4 00 02 01 190E10 06 F5 07 62 5551");
    let obj = Object::new(1)
        .with(
            Instance::new(0)
                .with(single(0, Value::Integer(1)))
                .with(single(1, Value::Integer(86400)))
                .with(single(6, Value::Boolean(false)))
                .with(single(7, "U")),
        )
        .with(
            Instance::new(1)
                .with(single(0, Value::Integer(2)))
                .with(single(1, Value::Integer(3600)))
                .with(single(6, Value::Boolean(true)))
                .with(single(7, "UQ")),
        );
    let node = Node::Object(obj);
    assert_eq!(dec(&bytes, "/1"), Ok(node.clone()));
    // The encoder uses an array key for the request path.
    let out = enc("/1", &node);
    assert_eq!(out.first().copied(), Some(0xA1));
    assert_eq!(out.get(1..3), Some(&[0x81, 0x01][..]));
    assert_eq!(out.get(3..), bytes.get(2..));
    assert_eq!(dec(&out, "/1"), Ok(node));
}

#[test]
fn every_split_is_equivalent() {
    let want = Ok(Node::Resource(single(9, Value::Integer(42))));
    for form in [
        "A1 83030009 182A",
        "A1 03 A1 00 A1 09 182A",
        "A1 820300 A1 09 182A",
        "A1 03 A1 820009 182A",
        "A1 81 03 A1 81 00 A1 81 09 182A",
        // indefinite map and array
        "BF 9F 03 00 09 FF 182A FF",
        "BF 03 BF 00 BF 09 182A FF FF FF",
    ] {
        assert_eq!(dec(&hex(form), "/3/0/9"), want, "{form}");
    }
}

/// Write and Create may give keys relative to the request path.
#[test]
fn relative_keys_for_write_and_create() {
    let inst = Instance::new(0)
        .with(single(14, "+01:00"))
        .with(single(15, "Europe/Oslo"));
    let rel = hex("A2 0E 66 2B30313A3030 0F 6B 4575726F70652F4F736C6F");
    assert_eq!(dec(&rel, "/3/0"), Ok(Node::Instance(inst.clone())));
    // Create on /1 with an instance id in the payload.
    let create = hex("A1 05 A2 00 03 01 190E10");
    let obj = Object::new(1).with(
        Instance::new(5)
            .with(single(0, Value::Integer(3)))
            .with(single(1, Value::Integer(3600))),
    );
    assert_eq!(dec(&create, "/1"), Ok(Node::Object(obj)));
    // A full path is taken as full.
    let full = hex("A1 820300 A1 0E 66 2B30313A3030");
    assert_eq!(
        dec(&full, "/3/0"),
        Ok(Node::Instance(Instance::new(0).with(single(14, "+01:00"))))
    );
}

#[test]
fn rejects_malformed_payloads() {
    let bytes = hex(&format!("A1 830300 00 74 {MANUFACTURER}"));
    for cut in [1, 4, 10, 25] {
        assert!(
            matches!(
                dec(&bytes[..cut], "/3/0/0"),
                Err(DecodeError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        dec(&[], "/3/0/0"),
        Err(DecodeError::Truncated { .. })
    ));
    let mut trailing = bytes.clone();
    trailing.push(0x00);
    assert_eq!(
        dec(&trailing, "/3/0/0"),
        Err(DecodeError::TrailingBytes {
            format: CF,
            extra: 1
        })
    );
    // A definite map announcing more entries than the input holds.
    assert!(matches!(
        dec(&hex("BB FFFFFFFFFFFFFFFF 00"), "/3/0/0"),
        Err(DecodeError::Truncated { .. })
    ));
    // An indefinite map that never ends.
    assert!(matches!(
        dec(&hex("BF 830300 00 01"), "/3/0/0"),
        Err(DecodeError::Truncated { .. })
    ));
    // Not a map at the top.
    for top in ["83030000", "01", "6161", "F6"] {
        assert!(
            matches!(dec(&hex(top), "/3/0/0"), Err(DecodeError::Malformed { .. })),
            "{top}"
        );
    }
    // Keys that are neither ids nor arrays of ids.
    for key in [
        "A1 61 30 01",       // text
        "A1 20 01",          // negative
        "A1 82 03 61 30 01", // array with text
        "A1 80 01",          // empty array
        "A1 9F FF 01",       // empty indefinite array
        "A1 C1 00 01",       // tagged
        "A1 A0 01",          // map
        "A1 F5 01",          // true
    ] {
        assert!(
            matches!(dec(&hex(key), "/3/0/0"), Err(DecodeError::Malformed { .. })),
            "{key}"
        );
    }
    // A value that is not a resource value.
    assert!(matches!(
        dec(&hex("A1 830300 00 F6"), "/3/0/0"),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        dec(&hex("A1 830300 00 80"), "/3/0/0"),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn rejects_paths_too_deep_or_out_of_range() {
    let deep = DecodeError::TooDeep {
        format: CF,
        limit: 4,
    };
    for form in [
        "A1 85 03 00 06 00 00 01",          // 5-id array
        "A1 9F 03 00 06 00 00 FF 01",       // 5-id indefinite array
        "A1 84 03 00 06 00 A1 00 01",       // map below a full path
        "A1 83 03 00 06 A1 82 00 00 01",    // array adds two ids to three
        "A1 03 A1 00 A1 06 A1 00 A1 00 01", // five nested maps
    ] {
        assert_eq!(dec(&hex(form), "/3/0/6"), Err(deep.clone()), "{form}");
    }
    // Deep nesting through many maps stops at the limit, never recursing further.
    let mut nested = Vec::new();
    for _ in 0..10_000 {
        nested.extend_from_slice(&[0xA1, 0x00]);
    }
    nested.push(0x01);
    assert_eq!(dec(&nested, "/3/0/6"), Err(deep));

    assert_eq!(
        dec(&hex("A1 83 03 00 19FFFF 01"), "/3/0"),
        Err(DecodeError::Path(PathError::OutOfRange(65535)))
    );
    assert_eq!(
        dec(&hex("A1 03 A1 1A00010000 A1 00 01"), "/3"),
        Err(DecodeError::Path(PathError::OutOfRange(65536)))
    );
    assert_eq!(
        dec(&hex("A1 03 A1 1B0000000100000000 A1 00 01"), "/3"),
        Err(DecodeError::Path(PathError::OutOfRange(u32::MAX)))
    );
}

#[test]
fn rejects_wrong_types_and_duplicates() {
    // /3/0/9 Battery Level is an integer.
    assert!(matches!(
        dec(&hex("A1 83030009 61 78"), "/3/0/9"),
        Err(DecodeError::WrongType { path, .. }) if path == p("/3/0/9")
    ));
    assert!(matches!(
        dec(&hex("A1 83030000 F5"), "/3/0/0"),
        Err(DecodeError::WrongType { .. })
    ));
    // The same path through two splits: {[3,0,0]: 1, 3: {0: {0: 2}}}.
    let dup = hex("A2 83030000 01 03 A1 00 A1 00 02");
    assert_eq!(
        Lwm2mCborCodec.decode(&dup, &p("/3/0"), &crate::model::NoModel),
        Err(DecodeError::Tree(TreeError::Duplicate(p("/3/0/0"))))
    );
    assert_eq!(
        dec(&hex("A2 83030000 6161 03 A1 00 A1 00 6162"), "/3/0"),
        Err(DecodeError::Tree(TreeError::Duplicate(p("/3/0/0"))))
    );
    assert_eq!(
        Lwm2mCborCodec.decode_nodes(
            &hex("A2 83030000 61 61 03 A1 00 A1 00 61 62"),
            None,
            &Registry::with_core()
        ),
        Err(DecodeError::Tree(TreeError::Duplicate(p("/3/0/0"))))
    );
    // A value at an instance path.
    assert_eq!(
        dec(&hex("A1 820300 01"), "/3/0"),
        Err(DecodeError::Tree(TreeError::NotAValuePath(p("/3/0"))))
    );
    // A single value given for a multiple resource.
    assert!(matches!(
        dec(&hex("A1 83030006 01"), "/3/0/6"),
        Err(DecodeError::Tree(TreeError::Conflict(_)))
    ));
    // Outside the request and too deep to be relative to it.
    assert!(matches!(
        dec(&hex("A1 84 04 00 00 00 01"), "/3/0/6"),
        Err(DecodeError::Tree(TreeError::OutsideBase { .. }))
    ));
}

#[test]
fn encoder_refuses_bad_input() {
    let reg = Registry::with_core();
    let node = Node::Resource(single(0, "x"));
    assert!(matches!(
        Lwm2mCborCodec.encode(&p("/3/0"), &node, &reg),
        Err(EncodeError::PathMismatch { .. })
    ));
    assert!(matches!(
        Lwm2mCborCodec.encode(&p("/3/0/1"), &node, &reg),
        Err(EncodeError::PathMismatch { .. })
    ));
    let inst = Node::Instance(Instance::new(0).with(single(0, "x")));
    let overlapping: Nodes = [(p("/3/0"), inst), (p("/3/0/0"), node)].into();
    assert!(matches!(
        Lwm2mCborCodec.encode_nodes(&overlapping, &reg),
        Err(EncodeError::PathMismatch { .. })
    ));
    let bad_id = Node::Resource(Resource::Multiple {
        id: 6,
        instances: [(65535, Value::Integer(1))].into(),
    });
    assert_eq!(
        Lwm2mCborCodec.encode(&p("/3/0/6"), &bad_id, &reg),
        Err(EncodeError::Path(PathError::OutOfRange(65535)))
    );
}

#[test]
fn round_trips_every_depth() {
    let reg = Registry::with_core();
    let inst = device_instance();
    let cases = [
        (p("/3"), Node::Object(Object::new(3).with(inst.clone()))),
        (p("/3"), Node::Object(Object::new(3))),
        (p("/3/0"), Node::Instance(inst)),
        (p("/3/0/7"), Node::Resource(multiple(7, &[(0, 3800)]))),
        (
            p("/3/0/7/1"),
            Node::ResourceInstance {
                id: 1,
                value: Value::Integer(5000),
            },
        ),
        (p("/6/0/0"), Node::Resource(single(0, Value::Float(59.5)))),
        (
            p("/5/0/0"),
            Node::Resource(single(0, Value::Opaque(vec![0, 1, 2]))),
        ),
    ];
    for (path, node) in cases {
        let bytes = Lwm2mCborCodec.encode(&path, &node, &reg).unwrap();
        assert_eq!(
            Lwm2mCborCodec.decode(&bytes, &path, &reg),
            Ok(node),
            "{path}"
        );
    }
}

#[test]
fn composite_groups_nested_paths() {
    let reg = Registry::with_core();
    let nodes: Nodes = [
        (p("/3/0/0"), Node::Resource(single(0, "a"))),
        (
            p("/3/0/7/1"),
            Node::ResourceInstance {
                id: 1,
                value: Value::Integer(2),
            },
        ),
        (p("/4"), Node::Object(Object::new(4))),
    ]
    .into();
    let bytes = Lwm2mCborCodec.encode_nodes(&nodes, &reg).unwrap();
    // {[3,0]: {0: "a", [7,1]: 2}, [4]: {}}
    assert_eq!(bytes, hex("A2 820300 A2 00 6161 820701 02 8104 A0"));
    let requested: Vec<Path> = nodes.keys().copied().collect();
    // An empty object carries no value, so it comes back as no node.
    let mut want = nodes;
    want.remove(&p("/4"));
    assert_eq!(
        Lwm2mCborCodec.decode_nodes(&bytes, Some(&requested), &reg),
        Ok(want)
    );
}
