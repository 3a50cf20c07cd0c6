//! TLV tests from the LwM2M specification's examples (spec-facts §6, with the
//! erratum in the Device example corrected).

use super::*;
use crate::model::{ObjectDef, Operations, Registry, ResourceDef};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

const DEVICE_3_0: &str = "
    C80014 4F70656E204D6F62696C6520416C6C69616E6365
    C80116 4C69676874776569676874204D324D20436C69656E74
    C80209 333435303030313233
    C303 312E30
    8606 410001 410105
    880708 42000ED8 42011388
    8708 41007D 42010384
    C10964 C10A0F 830B 410000
    C40D 5182428F C60E 2B30323A3030 C110 55";

fn ints(v: &[(u16, i64)]) -> BTreeMap<u16, Value> {
    v.iter().map(|(k, x)| (*k, Value::Integer(*x))).collect()
}

fn single(id: u16, value: impl Into<Value>) -> Resource {
    Resource::Single {
        id,
        value: value.into(),
    }
}

fn device() -> Instance {
    Instance::new(0)
        .with(single(0, "Open Mobile Alliance"))
        .with(single(1, "Lightweight M2M Client"))
        .with(single(2, "345000123"))
        .with(single(3, "1.0"))
        .with(Resource::Multiple {
            id: 6,
            instances: ints(&[(0, 1), (1, 5)]),
        })
        .with(Resource::Multiple {
            id: 7,
            instances: ints(&[(0, 3800), (1, 5000)]),
        })
        .with(Resource::Multiple {
            id: 8,
            instances: ints(&[(0, 125), (1, 900)]),
        })
        .with(single(9, 100i64))
        .with(single(10, 15i64))
        .with(Resource::Multiple {
            id: 11,
            instances: ints(&[(0, 0)]),
        })
        .with(single(13, Value::Time(1_367_491_215)))
        .with(single(14, "+02:00"))
        .with(single(16, "U"))
}

fn dec(bytes: &[u8], path: &str, model: &dyn Model) -> Result<Node, DecodeError> {
    TlvCodec.decode(bytes, &path.parse().expect("test path"), model)
}

fn enc(node: &Node, path: &str) -> Vec<u8> {
    TlvCodec
        .encode(
            &path.parse().expect("test path"),
            node,
            &Registry::with_core(),
        )
        .expect("encodes")
}

#[test]
fn device_instance_vector() {
    let reg = Registry::with_core();
    let bytes = hex(DEVICE_3_0);
    assert_eq!(bytes.len(), 121);
    let node = Node::Instance(device());
    assert_eq!(dec(&bytes, "/3/0", &reg).unwrap(), node);
    assert_eq!(enc(&node, "/3/0"), bytes);
}

#[test]
fn device_object_vector() {
    let reg = Registry::with_core();
    let bytes = hex(&format!("080079 {DEVICE_3_0}"));
    assert_eq!(bytes.len(), 124);
    let node = Node::Object(Object::new(3).with(device()));
    assert_eq!(dec(&bytes, "/3", &reg).unwrap(), node);
    assert_eq!(enc(&node, "/3"), bytes);
    // The same wrapper is accepted at instance level, as some clients send it.
    assert_eq!(dec(&bytes, "/3/0", &reg).unwrap(), Node::Instance(device()));
    assert!(matches!(
        dec(&bytes, "/3/1", &reg),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn access_control_object_vector() {
    let reg = Registry::with_core();
    let bytes = hex("08000E C10001 C10100 8302 417F07 C1037F
         080212 C10003 C10100 8702 417F07 61013601 C1037F");
    assert_eq!(bytes.len(), 38);
    let node = Node::Object(
        Object::new(2)
            .with(
                Instance::new(0)
                    .with(single(0, 1i64))
                    .with(single(1, 0i64))
                    .with(Resource::Multiple {
                        id: 2,
                        instances: ints(&[(127, 7)]),
                    })
                    .with(single(3, 127i64)),
            )
            .with(
                Instance::new(2)
                    .with(single(0, 3i64))
                    .with(single(1, 0i64))
                    .with(Resource::Multiple {
                        id: 2,
                        instances: ints(&[(127, 7), (310, 1)]),
                    })
                    .with(single(3, 127i64)),
            ),
    );
    assert_eq!(dec(&bytes, "/2", &reg).unwrap(), node);
    assert_eq!(enc(&node, "/2"), bytes);
}

fn object_65() -> Registry {
    let res = |id, kind, multiple| ResourceDef {
        id,
        name: format!("R{id}"),
        operations: Operations::Read,
        multiple,
        mandatory: true,
        kind,
        range: String::new(),
        units: String::new(),
        description: String::new(),
    };
    let mut reg = Registry::new();
    reg.insert(ObjectDef {
        id: 65,
        name: "Objlnk example".into(),
        description: String::new(),
        version: Default::default(),
        lwm2m_version: Default::default(),
        urn: String::new(),
        multiple: true,
        mandatory: false,
        resources: [
            (0, res(0, ResourceType::ObjLnk, true)),
            (1, res(1, ResourceType::String, false)),
            (2, res(2, ResourceType::Integer, false)),
        ]
        .into(),
    });
    reg
}

#[test]
fn objlnk_vector() {
    let reg = object_65();
    let bytes =
        hex("88000C 4400 00420000 4401 00420001 C8010D 38363133383030373535353030 C402 12345678");
    assert_eq!(bytes.len(), 37);
    let link = |instance| {
        Value::ObjLnk(ObjLnk {
            object: 66,
            instance,
        })
    };
    let node = Node::Instance(
        Instance::new(0)
            .with(Resource::Multiple {
                id: 0,
                instances: [(0, link(0)), (1, link(1))].into(),
            })
            .with(single(1, "8613800755500"))
            .with(single(2, 0x12345678i64)),
    );
    assert_eq!(dec(&bytes, "/65/0", &reg).unwrap(), node);
    assert_eq!(
        TlvCodec
            .encode(&Path::instance(65, 0), &node, &reg)
            .unwrap(),
        bytes
    );
}

#[test]
fn length_fields_and_wide_ids() {
    let reg = Registry::with_core();
    let long = "x".repeat(300);
    let node = Node::Resource(single(0, long.as_str()));
    let bytes = enc(&node, "/3/0/0");
    assert_eq!(&bytes[..4], &[0b1101_0000, 0, 0x01, 0x2C]);
    assert_eq!(dec(&bytes, "/3/0/0", &reg).unwrap(), node);

    let big = Node::Resource(single(0, Value::Opaque(vec![7; 70_000])));
    let bytes = enc(&big, "/5/0/0");
    assert_eq!(&bytes[..5], &[0b1101_1000, 0, 0x01, 0x11, 0x70]);
    assert_eq!(dec(&bytes, "/5/0/0", &reg).unwrap(), big);

    let wide = Node::ResourceInstance {
        id: 310,
        value: Value::Integer(-2),
    };
    let bytes = enc(&wide, "/3/0/7/310");
    assert_eq!(bytes, [0b0110_0001, 0x01, 0x36, 0xFE]);
    assert_eq!(dec(&bytes, "/3/0/7/310", &reg).unwrap(), wide);
}

#[test]
fn integers_in_every_width() {
    let reg = Registry::with_core();
    for (v, width) in [
        (-1i64, 1),
        (-128, 1),
        (127, 1),
        (-129, 2),
        (32_767, 2),
        (-32_769, 4),
        (i64::from(i32::MIN), 4),
        (i64::from(i32::MAX) + 1, 8),
        (i64::MIN, 8),
    ] {
        let node = Node::Resource(single(9, v));
        let bytes = enc(&node, "/3/0/9");
        // Type byte, id, then an 8-bit length field once the value reaches 8 bytes.
        let header = if width < 8 { 2 } else { 3 };
        assert_eq!(bytes.len(), header + width, "{v}");
        assert_eq!(dec(&bytes, "/3/0/9", &reg).unwrap(), node, "{v}");
    }
    // A 2-byte 0xFF80 is -128 even though it fits one byte: any width is read.
    assert_eq!(
        dec(&[0xC2, 0x09, 0xFF, 0x80], "/3/0/9", &reg).unwrap(),
        Node::Resource(single(9, -128i64))
    );
}

#[test]
fn without_a_model_values_stay_opaque() {
    let bytes = hex("C10964");
    assert_eq!(
        dec(&bytes, "/3/0/9", &crate::model::NoModel).unwrap(),
        Node::Resource(single(9, Value::Opaque(vec![100])))
    );
    // The TLV's own kind tells a multiple resource apart.
    let multi = hex("8606 410001 410105");
    assert_eq!(
        dec(&multi, "/3/0/6", &crate::model::NoModel).unwrap(),
        Node::Resource(Resource::Multiple {
            id: 6,
            instances: [(0, Value::Opaque(vec![1])), (1, Value::Opaque(vec![5]))].into()
        })
    );
}

#[test]
fn bare_resource_instances_are_tolerated_for_a_multiple_resource() {
    let reg = Registry::with_core();
    assert_eq!(
        dec(&hex("410001 410105"), "/3/0/6", &reg).unwrap(),
        Node::Resource(Resource::Multiple {
            id: 6,
            instances: ints(&[(0, 1), (1, 5)])
        })
    );
    assert!(dec(&hex("410001"), "/3/0/9", &reg).is_err());
}

#[test]
fn truncated_input() {
    let reg = Registry::with_core();
    let full = hex(DEVICE_3_0);
    for cut in [1, 2, 5, 30, 120] {
        assert!(
            matches!(
                dec(&full[..cut], "/3/0", &reg),
                Err(DecodeError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    // A 24-bit length that promises more than the payload holds.
    assert!(matches!(
        dec(&[0xD8, 0x00, 0xFF, 0xFF, 0xFF, 1, 2], "/5/0/0", &reg),
        Err(DecodeError::Truncated { .. })
    ));
    // A 16-bit id cut short.
    assert!(matches!(
        dec(&[0xE1, 0x01], "/3/0/9", &reg),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn wrongly_typed_values() {
    let reg = Registry::with_core();
    let wrong = |bytes: &str, path: &str, model: &dyn Model| {
        let r = dec(&hex(bytes), path, model);
        assert!(
            matches!(r, Err(DecodeError::WrongType { .. })),
            "{bytes} at {path}: {r:?}"
        );
    };
    wrong("C309 000001", "/3/0/9", &reg); // a 3-byte integer
    wrong("C300 000000", "/6/0/0", &reg); // a 3-byte float
    wrong("C100 FF", "/3/0/0", &reg); // a string that is not UTF-8
    wrong("4200 0042", "/65/0/0/0", &object_65()); // a 2-byte object link
                                                   // Booleans are one byte, 0 or 1; /1/0/6 (Notification Storing) is one.
    wrong("C106 02", "/1/0/6", &reg);
    wrong("C206 0001", "/1/0/6", &reg);
    assert_eq!(
        dec(&hex("C106 01"), "/1/0/6", &reg).unwrap(),
        Node::Resource(single(6, true))
    );
    // A 1-byte time is a valid integer width.
    assert!(dec(&hex("C10D 01"), "/3/0/13", &reg).is_ok());
}

#[test]
fn structure_violations() {
    let reg = Registry::with_core();
    let malformed = |bytes: &str, path: &str, model: &dyn Model| {
        let r = dec(&hex(bytes), path, model);
        assert!(
            matches!(r, Err(DecodeError::Malformed { .. })),
            "{bytes} at {path}: {r:?}"
        );
    };
    // An object instance inside a multiple resource (nesting too deep).
    malformed("8506 0003 C10001", "/3/0/6", &reg);
    // A multiple resource inside a multiple resource.
    malformed("8506 8303 410001", "/3/0/6", &reg);
    // A resource instance where a resource is expected.
    malformed("410001", "/3/0", &reg);
    // A resource at object level.
    malformed("C10964", "/3", &reg);
    // A single value for a multiple resource, instances for a single one.
    malformed("C10601", "/3/0/6", &reg);
    malformed("8309 410001", "/3/0/9", &reg);
    // Ids that contradict the request path.
    malformed("C10A0F", "/3/0/9", &reg);
    malformed("410201", "/3/0/6/1", &reg);
    // Duplicates.
    assert!(matches!(
        dec(&hex("C10964 C10964"), "/3/0", &reg),
        Err(DecodeError::Tree(crate::node::TreeError::Duplicate(_)))
    ));
    assert!(matches!(
        dec(&hex("8606 410001 410005"), "/3/0/6", &reg),
        Err(DecodeError::Tree(crate::node::TreeError::Duplicate(_)))
    ));
    // The reserved id 65535.
    assert!(matches!(
        dec(&hex("E1FFFF01"), "/3/0", &reg),
        Err(DecodeError::Path(_))
    ));
}

#[test]
fn encoder_refuses_what_it_cannot_write() {
    let node = Node::Resource(single(0, "x"));
    assert!(matches!(
        TlvCodec.encode(&Path::instance(3, 0), &node, &Registry::with_core()),
        Err(EncodeError::PathMismatch { .. })
    ));
}
