//! The TLV codec (11542) against the byte vectors of the LwM2M specification
//! (as corrected in shared/spec-facts.md §6), the length and id widths of the
//! header, every value width, and malformed input.

use lwm2m_objects::format::tlv::TlvCodec;
use lwm2m_objects::model::Operations;
use lwm2m_objects::node::TreeError;
use lwm2m_objects::{
    Codec, Codecs, ContentFormat, DecodeError, EncodeError, Instance, Model, NoModel, Node, ObjLnk,
    Object, ObjectDef, Path, PathError, Registry, Resource, ResourceDef, ResourceType, Value,
    Version,
};

const CF: ContentFormat = ContentFormat::Tlv;

/// Hex digits with any whitespace between them.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn p(s: &str) -> Path {
    s.parse().unwrap()
}

fn dec(bytes: &[u8], path: &str, model: &dyn Model) -> Result<Node, DecodeError> {
    TlvCodec.decode(bytes, &p(path), model)
}

fn enc(node: &Node, path: &str, model: &dyn Model) -> Result<Vec<u8>, EncodeError> {
    TlvCodec.encode(&p(path), node, model)
}

fn core() -> Registry {
    Registry::with_core()
}

fn single(id: u16, value: impl Into<Value>) -> Resource {
    Resource::Single {
        id,
        value: value.into(),
    }
}

fn multiple(id: u16, instances: &[(u16, Value)]) -> Resource {
    Resource::Multiple {
        id,
        instances: instances.iter().cloned().collect(),
    }
}

fn malformed(r: Result<Node, DecodeError>, needle: &str) {
    match r {
        Err(DecodeError::Malformed { format, reason }) => {
            assert_eq!(format, CF);
            assert!(
                reason.contains(needle),
                "reason {reason:?} lacks {needle:?}"
            );
        }
        other => panic!("expected Malformed containing {needle:?}, got {other:?}"),
    }
}

fn truncated(r: Result<Node, DecodeError>, needle: &str) {
    match r {
        Err(DecodeError::Truncated { format, context }) => {
            assert_eq!(format, CF);
            assert!(
                context.contains(needle),
                "context {context:?} lacks {needle:?}"
            );
        }
        other => panic!("expected Truncated containing {needle:?}, got {other:?}"),
    }
}

// ------------------------------------------------------------ spec vectors

const READ_3_0: &str = "
    C80014 4F70656E204D6F62696C6520416C6C69616E6365
    C80116 4C69676874776569676874204D324D20436C69656E74
    C80209 333435303030313233
    C303 312E30
    8606 410001 410105
    880708 42000ED8 42011388
    8708 41007D 42010384
    C10964 C10A0F 830B 410000
    C40D 5182428F C60E 2B30323A3030 C110 55";

/// The Device instance of the "Read /3/0" example.
fn device() -> Instance {
    let i = Value::Integer;
    Instance::new(0)
        .with(single(0, "Open Mobile Alliance"))
        .with(single(1, "Lightweight M2M Client"))
        .with(single(2, "345000123"))
        .with(single(3, "1.0"))
        .with(multiple(6, &[(0, i(1)), (1, i(5))]))
        .with(multiple(7, &[(0, i(3800)), (1, i(5000))]))
        .with(multiple(8, &[(0, i(125)), (1, i(900))]))
        .with(single(9, 100i64))
        .with(single(10, 15i64))
        .with(multiple(11, &[(0, i(0))]))
        .with(single(13, Value::Time(1_367_491_215)))
        .with(single(14, "+02:00"))
        .with(single(16, "U"))
}

#[test]
fn read_device_instance() {
    let bytes = hex(READ_3_0);
    assert_eq!(bytes.len(), 121);
    let node = Node::Instance(device());
    assert_eq!(dec(&bytes, "/3/0", &core()).unwrap(), node);
    assert_eq!(enc(&node, "/3/0", &core()).unwrap(), bytes);
}

#[test]
fn read_device_object() {
    let bytes = hex(&format!("080079 {READ_3_0}"));
    assert_eq!(bytes.len(), 124);
    let node = Node::Object(Object::new(3).with(device()));
    assert_eq!(dec(&bytes, "/3", &core()).unwrap(), node);
    assert_eq!(enc(&node, "/3", &core()).unwrap(), bytes);
}

#[test]
fn instance_wrapped_in_its_object_instance_tlv_is_accepted() {
    let bytes = hex(&format!("080079 {READ_3_0}"));
    assert_eq!(
        dec(&bytes, "/3/0", &core()).unwrap(),
        Node::Instance(device())
    );
}

#[test]
fn read_access_control_object() {
    let bytes = hex("08000E C10001 C10100 8302 417F07 C1037F
         080212 C10003 C10100 8702 417F07 61013601 C1037F");
    assert_eq!(bytes.len(), 38);
    let i = Value::Integer;
    let node = Node::Object(
        Object::new(2)
            .with(
                Instance::new(0)
                    .with(single(0, 1i64))
                    .with(single(1, 0i64))
                    .with(multiple(2, &[(127, i(7))]))
                    .with(single(3, 127i64)),
            )
            .with(
                Instance::new(2)
                    .with(single(0, 3i64))
                    .with(single(1, 0i64))
                    .with(multiple(2, &[(127, i(7)), (310, i(1))]))
                    .with(single(3, 127i64)),
            ),
    );
    assert_eq!(dec(&bytes, "/2", &core()).unwrap(), node);
    assert_eq!(enc(&node, "/2", &core()).unwrap(), bytes);
}

fn def(id: u16, multiple: bool, kind: ResourceType) -> ResourceDef {
    ResourceDef {
        id,
        name: format!("R{id}"),
        operations: Operations::ReadWrite,
        multiple,
        mandatory: false,
        kind,
        range: String::new(),
        units: String::new(),
        description: String::new(),
    }
}

fn object_def(id: u16, resources: Vec<ResourceDef>) -> ObjectDef {
    ObjectDef {
        id,
        name: format!("Test {id}"),
        description: String::new(),
        version: Version::V1_0,
        lwm2m_version: Version::V1_0,
        urn: format!("urn:oma:lwm2m:x:{id}"),
        multiple: true,
        mandatory: false,
        resources: resources.into_iter().map(|r| (r.id, r)).collect(),
    }
}

#[test]
fn read_object_links() {
    let mut reg = Registry::new();
    reg.insert(object_def(
        65,
        vec![
            def(0, true, ResourceType::ObjLnk),
            def(1, false, ResourceType::String),
            def(2, false, ResourceType::Integer),
        ],
    ));
    let bytes = hex("88000C 4400 00420000 4401 00420001
         C8010D 38363133383030373535353030
         C402 12345678");
    assert_eq!(bytes.len(), 37);
    let link = |instance| {
        Value::ObjLnk(ObjLnk {
            object: 66,
            instance,
        })
    };
    let node = Node::Instance(
        Instance::new(0)
            .with(multiple(0, &[(0, link(0)), (1, link(1))]))
            .with(single(1, "8613800755500"))
            .with(single(2, 0x1234_5678i64)),
    );
    assert_eq!(dec(&bytes, "/65/0", &reg).unwrap(), node);
    assert_eq!(enc(&node, "/65/0", &reg).unwrap(), bytes);
}

#[test]
fn registered_in_codecs() {
    let codecs = Codecs::new();
    let codec = codecs.get(11542).unwrap();
    assert_eq!(codec.format(), CF);
    let node = codecs
        .decode(CF, &hex("C10964"), &p("/3/0/9"), &core())
        .unwrap();
    assert_eq!(node, Node::Resource(single(9, 100i64)));
}

// ------------------------------------------------------------ without a model

#[test]
fn without_a_model_values_are_raw_bytes_and_round_trip() {
    let bytes = hex(READ_3_0);
    let Node::Instance(inst) = dec(&bytes, "/3/0", &NoModel).unwrap() else {
        panic!("not an instance");
    };
    assert_eq!(inst.resources[&9], single(9, Value::Opaque(vec![100])));
    assert_eq!(
        inst.resources[&6],
        multiple(
            6,
            &[(0, Value::Opaque(vec![1])), (1, Value::Opaque(vec![5]))]
        )
    );
    assert_eq!(
        inst.resources[&0],
        single(0, Value::Opaque(b"Open Mobile Alliance".to_vec()))
    );
    assert_eq!(enc(&Node::Instance(inst), "/3/0", &NoModel).unwrap(), bytes);
}

#[test]
fn without_a_model_the_tlv_kind_decides_single_or_multiple() {
    // Object 99 is unknown to the core model too.
    for model in [&NoModel as &dyn Model, &core()] {
        let node = dec(&hex("8305 410001 C10601"), "/99/0", model).unwrap();
        assert_eq!(
            node,
            Node::Instance(
                Instance::new(0)
                    .with(multiple(5, &[(0, Value::Opaque(vec![1]))]))
                    .with(single(6, Value::Opaque(vec![1])))
            )
        );
    }
}

// ------------------------------------------------------------ shapes by path

#[test]
fn single_resource_resource_instance_and_bare_instances() {
    let reg = core();
    assert_eq!(
        dec(&hex("C10964"), "/3/0/9", &reg).unwrap(),
        Node::Resource(single(9, 100i64))
    );
    let power = Node::Resource(multiple(
        6,
        &[(0, Value::Integer(1)), (1, Value::Integer(5))],
    ));
    assert_eq!(
        dec(&hex("8606 410001 410105"), "/3/0/6", &reg).unwrap(),
        power
    );
    assert_eq!(
        enc(&power, "/3/0/6", &reg).unwrap(),
        hex("8606 410001 410105")
    );
    // Tolerated: the resource instances without their multiple-resource TLV.
    assert_eq!(dec(&hex("410001 410105"), "/3/0/6", &reg).unwrap(), power);
    let ri = Node::ResourceInstance {
        id: 1,
        value: Value::Integer(5),
    };
    assert_eq!(dec(&hex("410105"), "/3/0/6/1", &reg).unwrap(), ri);
    assert_eq!(enc(&ri, "/3/0/6/1", &reg).unwrap(), hex("410105"));
}

#[test]
fn empty_containers() {
    assert_eq!(
        dec(&[], "/3", &core()).unwrap(),
        Node::Object(Object::new(3))
    );
    assert_eq!(
        dec(&[], "/3/0", &core()).unwrap(),
        Node::Instance(Instance::new(0))
    );
    assert_eq!(
        dec(&hex("0000"), "/3", &core()).unwrap(),
        Node::Object(Object::new(3).with(Instance::new(0)))
    );
    let empty_multi = Node::Resource(multiple(6, &[]));
    assert_eq!(dec(&hex("8006"), "/3/0/6", &core()).unwrap(), empty_multi);
    assert_eq!(enc(&empty_multi, "/3/0/6", &core()).unwrap(), hex("8006"));
    assert_eq!(
        enc(&Node::Object(Object::new(3)), "/3", &core()).unwrap(),
        Vec::<u8>::new()
    );
}

// ------------------------------------------------------------ header widths

#[test]
fn length_fields_of_every_width() {
    let reg = core();
    let cases: &[(usize, &str)] = &[
        (0, "C000"),
        (7, "C700"),
        (8, "C80008"),
        (255, "C800FF"),
        (256, "D0000100"),
        (300, "D0 00 012C"),
        (65535, "D000FFFF"),
        (65536, "D800010000"),
        (70000, "D8 00 011170"),
    ];
    for &(len, header) in cases {
        // /5/0/0 Package is opaque.
        let node = Node::Resource(single(0, Value::Opaque(vec![0xA5; len])));
        let mut bytes = hex(header);
        bytes.resize(bytes.len() + len, 0xA5);
        assert_eq!(enc(&node, "/5/0/0", &reg).unwrap(), bytes, "{len}");
        assert_eq!(dec(&bytes, "/5/0/0", &reg).unwrap(), node, "{len}");
    }
    // A 300-byte string, /3/0/0 Manufacturer.
    let text = "m".repeat(300);
    let node = Node::Resource(single(0, text.as_str()));
    let mut bytes = hex("D000012C");
    bytes.extend_from_slice(text.as_bytes());
    assert_eq!(enc(&node, "/3/0/0", &reg).unwrap(), bytes);
    assert_eq!(dec(&bytes, "/3/0/0", &reg).unwrap(), node);
}

#[test]
fn non_minimal_headers_are_accepted() {
    // 16-bit id 9 and an 8-bit length field of 1.
    assert_eq!(
        dec(&hex("E8000901 64"), "/3/0/9", &core()).unwrap(),
        Node::Resource(single(9, 100i64))
    );
    // A 24-bit length field of 1, low bits set (ignored when a field follows).
    assert_eq!(
        dec(&hex("DF09000001 64"), "/3/0/9", &core()).unwrap(),
        Node::Resource(single(9, 100i64))
    );
}

#[test]
fn sixteen_bit_ids() {
    let raw = |b: &[u8]| Value::Opaque(b.to_vec());
    let node = Node::Object(
        Object::new(99).with(
            Instance::new(256)
                .with(single(300, raw(&[1])))
                .with(multiple(301, &[(255, raw(&[2])), (65534, raw(&[3]))])),
        ),
    );
    let bytes = hex("28 0100 0E
           E1 012C 01
           A7 012D  41 FF 02  61 FFFE 03");
    assert_eq!(enc(&node, "/99", &NoModel).unwrap(), bytes);
    assert_eq!(dec(&bytes, "/99", &NoModel).unwrap(), node);
}

// ------------------------------------------------------------ values

/// Object 70: one resource of every type, and a multiple integer.
fn typed_registry() -> Registry {
    use ResourceType as T;
    let mut reg = Registry::new();
    reg.insert(object_def(
        70,
        vec![
            def(0, false, T::Integer),
            def(1, false, T::UnsignedInteger),
            def(2, false, T::Float),
            def(3, false, T::Boolean),
            def(4, false, T::Time),
            def(5, false, T::ObjLnk),
            def(6, false, T::String),
            def(7, false, T::Opaque),
            def(8, false, T::CoreLnk),
            def(9, true, T::Integer),
        ],
    ));
    reg
}

/// Encodes `value` as resource `/70/0/r`, checks the value bytes and decodes
/// them back.
fn value_round_trip(r: u16, value: Value, value_hex: &str) {
    let reg = typed_registry();
    let path = format!("/70/0/{r}");
    let node = Node::Resource(single(r, value));
    let bytes = enc(&node, &path, &reg).unwrap();
    let value = hex(value_hex);
    let len = value.len() as u8;
    let mut want = if len < 8 {
        vec![0xC0 | len, r as u8]
    } else {
        vec![0xC8, r as u8, len]
    };
    want.extend_from_slice(&value);
    assert_eq!(bytes, want, "{node:?}");
    assert_eq!(dec(&bytes, &path, &reg).unwrap(), node, "{value_hex}");
}

#[test]
fn integers_in_every_width() {
    let cases: &[(i64, &str)] = &[
        (0, "00"),
        (127, "7F"),
        (-1, "FF"),
        (-128, "80"),
        (128, "0080"),
        (-129, "FF7F"),
        (-32768, "8000"),
        (32768, "00008000"),
        (-32769, "FFFF7FFF"),
        (i32::MIN.into(), "80000000"),
        (-2_147_483_649, "FFFFFFFF7FFFFFFF"),
        (i64::MIN, "8000000000000000"),
        (i64::MAX, "7FFFFFFFFFFFFFFF"),
    ];
    for &(i, h) in cases {
        value_round_trip(0, Value::Integer(i), h);
        value_round_trip(4, Value::Time(i), h);
    }
}

#[test]
fn unsigned_integers_in_every_width() {
    let cases: &[(u64, &str)] = &[
        (0, "00"),
        (255, "FF"),
        (256, "0100"),
        (65535, "FFFF"),
        (65536, "00010000"),
        (u32::MAX.into(), "FFFFFFFF"),
        (1 << 32, "0000000100000000"),
        (u64::MAX, "FFFFFFFFFFFFFFFF"),
    ];
    for &(u, h) in cases {
        value_round_trip(1, Value::UnsignedInteger(u), h);
    }
}

#[test]
fn other_value_types() {
    value_round_trip(2, Value::Float(1.5), "3FC00000");
    value_round_trip(2, Value::Float(-0.1), "BFB999999999999A");
    value_round_trip(3, Value::Boolean(true), "01");
    value_round_trip(3, Value::Boolean(false), "00");
    value_round_trip(5, Value::ObjLnk(ObjLnk::NULL), "FFFFFFFF");
    value_round_trip(6, "héllo".into(), "68C3A96C6C6F");
    value_round_trip(7, Value::Opaque(vec![0, 0xFF]), "00FF");
    value_round_trip(8, Value::CoreLnk("</3>".into()), "3C2F333E");
    // An 8-byte float that happens to be exact in single precision still reads.
    assert_eq!(
        dec(
            &hex("C802 08 3FF8000000000000"),
            "/70/0/2",
            &typed_registry()
        )
        .unwrap(),
        Node::Resource(single(2, 1.5))
    );
}

#[test]
fn values_are_converted_to_the_declared_type_when_lossless() {
    let reg = typed_registry();
    // An integer written to a float resource goes out as a float.
    let node = Node::Resource(single(2, 5i64));
    assert_eq!(enc(&node, "/70/0/2", &reg).unwrap(), hex("C402 40A00000"));
    // An unsigned 200 for a signed resource needs two bytes.
    let node = Node::Resource(single(0, 200u64));
    assert_eq!(enc(&node, "/70/0/0", &reg).unwrap(), hex("C200 00C8"));
    // Raw bytes (what a model-less decode gives) pass through unchanged.
    let node = Node::Resource(single(0, Value::Opaque(vec![1, 2, 3])));
    assert_eq!(enc(&node, "/70/0/0", &reg).unwrap(), hex("C300 010203"));
}

#[test]
fn values_of_the_wrong_length_or_content() {
    let reg = typed_registry();
    let cases: &[(&str, &str, &str)] = &[
        ("/70/0/0", "C300 010203", "3 bytes, expected 1, 2, 4 or 8"),
        ("/70/0/0", "C000", "0 bytes"),
        ("/70/0/1", "C501 0102030405", "5 bytes"),
        ("/70/0/2", "C202 0102", "2 bytes, expected 4 or 8"),
        ("/70/0/3", "C103 02", "byte 0x02, expected 0 or 1"),
        ("/70/0/3", "C203 0001", "2 bytes, expected 1"),
        ("/70/0/4", "C304 000000", "3 bytes"),
        ("/70/0/5", "C305 000100", "3 bytes, expected 4"),
        ("/70/0/6", "C206 C328", "not UTF-8"),
        ("/70/0/8", "C108 FF", "not UTF-8"),
        ("/70/0/9/0", "4300 000000", "3 bytes"),
    ];
    for (path, h, why) in cases {
        malformed(dec(&hex(h), path, &reg), why);
    }
    // The reason names the value's path and type.
    malformed(
        dec(&hex("C103 02"), "/70/0/3", &reg),
        "value of /70/0/3 is not a valid Boolean",
    );
}

// ------------------------------------------------------------ malformed input

#[test]
fn truncated_headers_and_values() {
    let reg = core();
    let cut_header: &[&str] = &["C8", "E800", "C800", "D00001", "D8000000", "E1"];
    for h in cut_header {
        truncated(dec(&hex(h), "/3/0", &reg), "header");
        truncated(dec(&hex(h), "/3/0/0", &reg), "header");
    }
    // The length runs past the end of the payload.
    truncated(dec(&hex("C80014 4F70"), "/3/0", &reg), "longer");
    truncated(dec(&hex("C302 3132"), "/3/0/2", &reg), "longer");
    // A 16 MiB length over one byte is refused, not allocated.
    truncated(dec(&hex("D800FFFFFF 00"), "/5/0/0", &reg), "longer");
    // Cut inside a container: the object instance claims more than it has,
    // or an inner TLV is cut short by its container's end.
    truncated(dec(&hex("080079 C10964"), "/3", &reg), "longer");
    truncated(dec(&hex("0400 C10964"), "/3", &reg), "longer");
    truncated(dec(&hex("0200 C10964"), "/3", &reg), "longer");
    truncated(dec(&hex("8206 4100"), "/3/0/6", &reg), "longer");
    truncated(dec(&hex("8106 41"), "/3/0/6", &reg), "header");
}

#[test]
fn trailing_bytes_after_the_one_tlv_a_path_allows() {
    let reg = core();
    let trailing = |extra| Err(DecodeError::TrailingBytes { format: CF, extra });
    assert_eq!(dec(&hex("C10964 00"), "/3/0/9", &reg), trailing(1));
    assert_eq!(dec(&hex("8306 410001 C10964"), "/3/0/6", &reg), trailing(3));
    assert_eq!(dec(&hex("410105 410001"), "/3/0/6/1", &reg), trailing(3));
    assert_eq!(dec(&hex("0300 C10964 0000"), "/3/0", &reg), trailing(2));
}

#[test]
fn duplicate_ids() {
    let reg = core();
    let dup = |s: &str| Err(DecodeError::Tree(TreeError::Duplicate(p(s))));
    assert_eq!(dec(&hex("C10964 C10965"), "/3/0", &reg), dup("/3/0/9"));
    assert_eq!(
        dec(&hex("8606 410001 410002"), "/3/0", &reg),
        dup("/3/0/6/0")
    );
    assert_eq!(dec(&hex("410001 410002"), "/3/0/6", &reg), dup("/3/0/6/0"));
    assert_eq!(dec(&hex("0000 0000"), "/3", &reg), dup("/3/0"));
    // Also when spelled with different id widths.
    assert_eq!(dec(&hex("C10964 E1000965"), "/3/0", &reg), dup("/3/0/9"));
}

#[test]
fn reserved_id_65535() {
    let reg = core();
    let reserved = Err(DecodeError::Path(PathError::OutOfRange(65535)));
    assert_eq!(dec(&hex("E1FFFF 00"), "/3/0", &reg), reserved);
    assert_eq!(dec(&hex("20FFFF 00"), "/3", &reg), reserved);
    assert_eq!(dec(&hex("8406 61FFFF00"), "/3/0/6", &reg), reserved);
    assert_eq!(dec(&hex("61FFFF 00"), "/3/0/6/0", &reg), reserved);
    let node = Node::Resource(multiple(6, &[(65535, Value::Integer(0))]));
    assert_eq!(
        enc(&node, "/3/0/6", &reg),
        Err(EncodeError::Path(PathError::OutOfRange(65535)))
    );
}

#[test]
fn ids_that_contradict_the_path() {
    let reg = core();
    let outside = |record: &str, base: &str| {
        Err(DecodeError::Tree(TreeError::OutsideBase {
            record: p(record),
            base: p(base),
        }))
    };
    assert_eq!(
        dec(&hex("0301 C10964"), "/3/0", &reg),
        outside("/3/1", "/3/0")
    );
    assert_eq!(
        dec(&hex("C10A64"), "/3/0/9", &reg),
        outside("/3/0/10", "/3/0/9")
    );
    assert_eq!(
        dec(&hex("8307 410001"), "/3/0/6", &reg),
        outside("/3/0/7", "/3/0/6")
    );
    assert_eq!(
        dec(&hex("410001"), "/3/0/6/1", &reg),
        outside("/3/0/6/0", "/3/0/6/1")
    );
}

#[test]
fn tlvs_nested_where_they_do_not_belong() {
    let reg = core();
    // Object instance inside an object instance.
    malformed(
        dec(&hex("0200 0001"), "/3", &reg),
        "object instance TLV (id 1) cannot appear inside an object instance",
    );
    // Object instance inside a multiple resource.
    malformed(
        dec(&hex("8206 0000"), "/3/0", &reg),
        "object instance TLV (id 0) cannot appear inside a multiple resource",
    );
    // Multiple resource inside a multiple resource.
    malformed(
        dec(&hex("8206 8000"), "/3/0/6", &reg),
        "multiple resource TLV (id 0) cannot appear inside a multiple resource",
    );
    // A resource instance directly in an object instance, a resource at object level.
    malformed(
        dec(&hex("410001"), "/3/0", &reg),
        "resource instance TLV (id 0) cannot appear inside an object instance",
    );
    malformed(
        dec(&hex("C10964"), "/3", &reg),
        "resource TLV (id 9) cannot appear at object level",
    );
    malformed(
        dec(&hex("0000"), "/3/0/9", &reg),
        "cannot appear at resource path /3/0/9",
    );
    malformed(
        dec(&hex("C10964"), "/3/0/6/0", &reg),
        "cannot appear at resource instance path /3/0/6/0",
    );
    // Children inside a resource with value are not parsed: they are its
    // value, here three bytes that are no integer.
    malformed(
        dec(&hex("C309 C10064"), "/3/0/9", &reg),
        "3 bytes, expected 1, 2, 4 or 8",
    );
    // Without a model they are simply opaque bytes.
    assert_eq!(
        dec(&hex("C309 C10064"), "/3/0/9", &NoModel).unwrap(),
        Node::Resource(single(9, Value::Opaque(hex("C10064"))))
    );
}

#[test]
fn deep_nesting_is_refused_at_the_second_level_without_recursion() {
    // 1,000 object instances, each wrapping the next: rejected where the
    // second one appears, in constant stack.
    let mut bytes = hex("C10964");
    for _ in 0..1_000 {
        let mut outer = vec![0x18, 0x00];
        outer.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    malformed(
        dec(&bytes, "/3", &core()),
        "object instance TLV (id 0) cannot appear inside an object instance",
    );
    // Likewise multiple resources nested in multiple resources.
    let mut bytes = hex("410001");
    for _ in 0..1_000 {
        let mut outer = vec![0x98, 0x06];
        outer.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    malformed(
        dec(&bytes, "/3/0/6", &NoModel),
        "multiple resource TLV (id 6) cannot appear inside a multiple resource",
    );
}

#[test]
fn single_and_multiple_must_match_the_model() {
    let reg = core();
    // /3/0/6 is multiple.
    malformed(
        dec(&hex("C10601"), "/3/0", &reg),
        "resource /3/0/6 is multiple",
    );
    malformed(
        dec(&hex("C10601"), "/3/0/6", &reg),
        "resource /3/0/6 is multiple",
    );
    // /3/0/9 is single.
    malformed(
        dec(&hex("8309 410064"), "/3/0", &reg),
        "resource /3/0/9 is single",
    );
    malformed(
        dec(&hex("8309 410064"), "/3/0/9", &reg),
        "resource /3/0/9 is single",
    );
    malformed(
        dec(&hex("410064"), "/3/0/9", &reg),
        "resource /3/0/9 is single",
    );
}

#[test]
fn empty_payload_for_a_resource() {
    let empty = |s: &str| Err(DecodeError::Tree(TreeError::Empty(p(s))));
    assert_eq!(dec(&[], "/3/0/9", &core()), empty("/3/0/9"));
    assert_eq!(dec(&[], "/3/0/6/0", &core()), empty("/3/0/6/0"));
}

#[test]
fn root_path_and_misplaced_nodes() {
    let unsupported_dec = Err(DecodeError::Unsupported {
        format: CF,
        operation: "root-path",
    });
    assert_eq!(dec(&hex("0000"), "/", &core()), unsupported_dec);
    let obj = Node::Object(Object::new(3));
    assert_eq!(
        enc(&obj, "/", &core()),
        Err(EncodeError::Unsupported {
            format: CF,
            operation: "root-path"
        })
    );
    // Wrong depth, and right depth with the wrong id.
    assert_eq!(
        enc(&Node::Instance(device()), "/3", &core()),
        Err(EncodeError::PathMismatch {
            path: p("/3"),
            node_depth: 2
        })
    );
    assert_eq!(
        enc(&Node::Instance(device()), "/3/1", &core()),
        Err(EncodeError::PathMismatch {
            path: p("/3/1"),
            node_depth: 2
        })
    );
}

// ------------------------------------------------------------ properties

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn raw_value() -> impl Strategy<Value = Value> {
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Opaque)
    }

    fn resource() -> impl Strategy<Value = Resource> {
        let id = 0..=65534u16;
        prop_oneof![
            (id.clone(), raw_value()).prop_map(|(id, value)| Resource::Single { id, value }),
            (
                id,
                proptest::collection::btree_map(0..=65534u16, raw_value(), 0..4)
            )
                .prop_map(|(id, instances)| Resource::Multiple { id, instances }),
        ]
    }

    fn instance() -> impl Strategy<Value = Instance> {
        (0..=65534u16, proptest::collection::vec(resource(), 0..6))
            .prop_map(|(id, rs)| rs.into_iter().fold(Instance::new(id), Instance::with))
    }

    proptest! {
        #[test]
        fn model_less_object_round_trips(insts in proptest::collection::vec(instance(), 0..4)) {
            let object = insts.into_iter().fold(Object::new(99), Object::with);
            let node = Node::Object(object);
            let bytes = enc(&node, "/99", &NoModel).unwrap();
            prop_assert_eq!(dec(&bytes, "/99", &NoModel).unwrap(), node);
        }

        #[test]
        fn typed_integers_round_trip(i in any::<i64>(), u in any::<u64>(), f in any::<f64>()) {
            let reg = typed_registry();
            let inst = Instance::new(0)
                .with(single(0, i))
                .with(single(1, u))
                .with(single(2, f))
                .with(multiple(9, &[(0, Value::Integer(i))]));
            let node = Node::Instance(inst);
            let bytes = enc(&node, "/70/0", &reg).unwrap();
            prop_assert_eq!(dec(&bytes, "/70/0", &reg).unwrap(), node);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let reg = core();
            for path in ["/3", "/3/0", "/3/0/6", "/3/0/9", "/3/0/6/0", "/99/0"] {
                let _ = dec(&bytes, path, &reg);
                let _ = dec(&bytes, path, &NoModel);
            }
        }
    }
}
