//! The exact packet each operation builds, and the parsing of each
//! success and error answer.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use lwm2m_objects::format::Nodes;
use lwm2m_objects::link::{AttributeValue, Attributes};
use lwm2m_objects::{
    Codecs, ContentFormat, Instance, Node, Object, Path, Registry, Resource, Value, Version,
};

use super::*;

const V10: Version = Version::V1_0;
const V11: Version = Version::V1_1;
const V12: Version = Version::V1_2;

fn dev(v: Version, cts: &[ContentFormat]) -> DeviceContext {
    DeviceContext::new(v).with_formats(cts)
}

fn rooted(v: Version, cts: &[ContentFormat]) -> DeviceContext {
    dev(v, cts).with_root_path("/lwm2m")
}

fn build(op: &Operation, d: &DeviceContext) -> Result<Packet, DmError> {
    op.to_request(d, &Codecs::new(), &Registry::with_core())
}

fn uri_path(p: &Packet) -> Vec<String> {
    strings(p, CoapOption::UriPath)
}

fn queries(p: &Packet) -> Vec<String> {
    strings(p, CoapOption::UriQuery)
}

fn strings(p: &Packet, o: CoapOption) -> Vec<String> {
    p.get_option(o)
        .map(|l| {
            l.iter()
                .map(|v| String::from_utf8(v.clone()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn uint(p: &Packet, o: CoapOption) -> Option<u32> {
    p.get_first_option(o)
        .map(|v| v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
}

fn cf(p: &Packet) -> Option<u32> {
    uint(p, CoapOption::ContentFormat)
}

fn accept(p: &Packet) -> Option<u32> {
    uint(p, CoapOption::Accept)
}

fn observe(p: &Packet) -> Option<u32> {
    uint(p, CoapOption::Observe)
}

fn method(p: &Packet) -> RequestType {
    match p.header.code {
        MessageClass::Request(r) => r,
        other => panic!("not a request: {other}"),
    }
}

fn p(s: &str) -> Path {
    s.parse().unwrap()
}

fn single(id: u16, value: Value) -> Resource {
    Resource::Single { id, value }
}

// ------------------------------------------------------------ requests

#[test]
fn read_is_get_with_accept_under_the_root_path() {
    let op = Operation::Read {
        path: p("/3/0/0"),
        format: None,
    };
    let req = build(&op, &dev(V11, &[ContentFormat::SenmlCbor])).unwrap();
    assert_eq!(method(&req), RequestType::Get);
    assert_eq!(req.header.get_type(), MessageType::Confirmable);
    assert_eq!(uri_path(&req), ["3", "0", "0"]);
    assert_eq!(accept(&req), Some(112));
    assert_eq!(cf(&req), None);
    assert_eq!(observe(&req), None);
    assert!(req.payload.is_empty() && req.get_token().is_empty());

    let req = build(&op, &rooted(V10, &[])).unwrap();
    assert_eq!(uri_path(&req), ["lwm2m", "3", "0", "0"]);
    assert_eq!(
        accept(&req),
        Some(0),
        "single resource, nothing advertised: text/plain"
    );

    let op = Operation::Read {
        path: p("/3/0"),
        format: Some(ContentFormat::SenmlJson),
    };
    let req = build(&op, &dev(V10, &[])).unwrap();
    assert_eq!(
        (uri_path(&req), accept(&req)),
        (vec!["3".into(), "0".into()], Some(110))
    );
    let op = Operation::Read {
        path: p("/3/0"),
        format: None,
    };
    assert_eq!(accept(&build(&op, &dev(V10, &[])).unwrap()), Some(11542));
}

#[test]
fn read_of_the_root_is_refused() {
    let op = Operation::Read {
        path: Path::ROOT,
        format: None,
    };
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::InvalidTarget { .. })
    ));
}

#[test]
fn discover_asks_for_link_format_and_depth_on_1_2() {
    let op = Operation::Discover {
        path: p("/3/0"),
        depth: None,
    };
    let req = build(&op, &rooted(V11, &[])).unwrap();
    assert_eq!(method(&req), RequestType::Get);
    assert_eq!(uri_path(&req), ["lwm2m", "3", "0"]);
    assert_eq!(accept(&req), Some(40));
    assert!(queries(&req).is_empty());

    let op = Operation::Discover {
        path: p("/3"),
        depth: Some(2),
    };
    let req = build(&op, &dev(V12, &[])).unwrap();
    assert_eq!(queries(&req), ["depth=2"]);
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::VersionTooOld { .. })
    ));
    let op = Operation::Discover {
        path: p("/3"),
        depth: Some(4),
    };
    assert!(matches!(
        build(&op, &dev(V12, &[])),
        Err(DmError::InvalidRequest { .. })
    ));
    let op = Operation::Discover {
        path: p("/3/0/6/0"),
        depth: None,
    };
    assert!(matches!(
        build(&op, &dev(V12, &[])),
        Err(DmError::InvalidTarget { .. })
    ));
}

#[test]
fn write_replace_is_put_and_partial_update_is_post() {
    let model = Registry::with_core();
    let codecs = Codecs::new();
    let node = Node::Resource(single(14, Value::String("+02:00".into())));
    let op = Operation::Write {
        path: p("/3/0/14"),
        node: node.clone(),
        mode: WriteMode::Replace,
        format: None,
    };
    let req = build(&op, &rooted(V10, &[])).unwrap();
    assert_eq!(method(&req), RequestType::Put);
    assert_eq!(uri_path(&req), ["lwm2m", "3", "0", "14"]);
    assert_eq!(cf(&req), Some(0));
    assert_eq!(req.payload, b"+02:00");
    assert_eq!(accept(&req), None);

    let inst = Node::Instance(
        Instance::new(0)
            .with(single(14, Value::String("+01:00".into())))
            .with(single(13, Value::Time(1_700_000_000))),
    );
    let op = Operation::Write {
        path: p("/3/0"),
        node: inst.clone(),
        mode: WriteMode::PartialUpdate,
        format: None,
    };
    let req = build(&op, &dev(V10, &[])).unwrap();
    assert_eq!(method(&req), RequestType::Post);
    assert_eq!(uri_path(&req), ["3", "0"]);
    assert_eq!(cf(&req), Some(11542));
    let back = codecs
        .decode(ContentFormat::Tlv, &req.payload, &p("/3/0"), &model)
        .unwrap();
    assert_eq!(back, inst);

    let req = build(&op, &dev(V11, &[ContentFormat::SenmlJson])).unwrap();
    assert_eq!(cf(&req), Some(110));
    let back = codecs
        .decode(ContentFormat::SenmlJson, &req.payload, &p("/3/0"), &model)
        .unwrap();
    assert_eq!(back, inst);
}

#[test]
fn write_refusals() {
    let d = dev(V11, &[]);
    let node = Node::Resource(single(14, Value::String("x".into())));
    // Partial update of a single resource.
    let op = Operation::Write {
        path: p("/3/0/14"),
        node: node.clone(),
        mode: WriteMode::PartialUpdate,
        format: None,
    };
    assert!(matches!(build(&op, &d), Err(DmError::InvalidTarget { .. })));
    // Node at the wrong path.
    let op = Operation::Write {
        path: p("/3/0/15"),
        node: node.clone(),
        mode: WriteMode::Replace,
        format: None,
    };
    assert!(matches!(build(&op, &d), Err(DmError::InvalidTarget { .. })));
    // Object-level write.
    let obj = Node::Object(Object::new(3));
    let op = Operation::Write {
        path: p("/3"),
        node: obj,
        mode: WriteMode::Replace,
        format: None,
    };
    assert!(matches!(build(&op, &d), Err(DmError::InvalidTarget { .. })));
    // LwM2M JSON towards 1.1.
    let op = Operation::Write {
        path: p("/3/0/14"),
        node,
        mode: WriteMode::Replace,
        format: Some(ContentFormat::Lwm2mJson),
    };
    assert!(matches!(build(&op, &d), Err(DmError::FormatRefused { .. })));
    assert!(build(&op, &dev(V10, &[])).is_ok());
}

#[test]
fn write_attributes_is_put_with_query_only() {
    let a = Attributes::parse_query("pmin=10&pmax=60&gt=20.5&lt").unwrap();
    let op = Operation::WriteAttributes {
        path: p("/3/0/9"),
        attributes: a,
    };
    let req = build(&op, &rooted(V11, &[])).unwrap();
    assert_eq!(method(&req), RequestType::Put);
    assert_eq!(uri_path(&req), ["lwm2m", "3", "0", "9"]);
    assert_eq!(queries(&req), ["pmin=10", "pmax=60", "gt=20.5", "lt"]);
    assert_eq!((cf(&req), accept(&req)), (None, None));
    assert!(req.payload.is_empty());

    let bad: [(Path, Attributes); 4] = [
        (p("/3/0"), Attributes::parse_query("gt=5").unwrap()),
        (p("/3/0/9"), Attributes::default()),
        (
            p("/3/0/9"),
            Attributes {
                dim: Some(2),
                ..Attributes::default()
            },
        ),
        (
            p("/3/0/9"),
            Attributes {
                lt: Some(AttributeValue::Set(9.0)),
                gt: Some(AttributeValue::Set(1.0)),
                ..Attributes::default()
            },
        ),
    ];
    for (path, attributes) in bad {
        let op = Operation::WriteAttributes { path, attributes };
        assert!(build(&op, &dev(V11, &[])).is_err(), "{op:?}");
    }
    let op = Operation::WriteAttributes {
        path: p("/3/0"),
        attributes: Attributes::parse_query("con=1").unwrap(),
    };
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::VersionTooOld { .. })
    ));
    assert_eq!(queries(&build(&op, &dev(V12, &[])).unwrap()), ["con=1"]);
}

#[test]
fn execute_is_post_with_text_arguments() {
    let op = Operation::Execute {
        path: p("/3/0/4"),
        args: ExecuteArgs::default(),
    };
    let req = build(&op, &rooted(V11, &[])).unwrap();
    assert_eq!(method(&req), RequestType::Post);
    assert_eq!(uri_path(&req), ["lwm2m", "3", "0", "4"]);
    assert_eq!((cf(&req), accept(&req)), (None, None));
    assert!(req.payload.is_empty());

    let op = Operation::Execute {
        path: p("/3/0/4"),
        args: "2='10.3',5".parse().unwrap(),
    };
    let req = build(&op, &dev(V11, &[])).unwrap();
    assert_eq!(cf(&req), Some(0));
    assert_eq!(req.payload, b"2='10.3',5");

    let op = Operation::Execute {
        path: p("/3/0"),
        args: ExecuteArgs::default(),
    };
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::InvalidTarget { .. })
    ));
}

#[test]
fn create_posts_to_the_object() {
    let model = Registry::with_core();
    let codecs = Codecs::new();
    let resources = vec![single(0, Value::Integer(7)), single(1, Value::Integer(300))];
    let op = Operation::Create {
        object: 1,
        instance: Some(2),
        resources: resources.clone(),
        format: None,
    };
    let req = build(&op, &rooted(V11, &[ContentFormat::SenmlJson])).unwrap();
    assert_eq!(method(&req), RequestType::Post);
    assert_eq!(uri_path(&req), ["lwm2m", "1"]);
    assert_eq!(cf(&req), Some(110));
    let back = codecs
        .decode(ContentFormat::SenmlJson, &req.payload, &p("/1"), &model)
        .unwrap();
    let want = Instance::new(2)
        .with(resources[0].clone())
        .with(resources[1].clone());
    assert_eq!(back, Node::Object(Object::new(1).with(want.clone())));

    // TLV with an id: wrapped in an object-instance TLV carrying it.
    let op = Operation::Create {
        object: 1,
        instance: Some(2),
        resources: resources.clone(),
        format: None,
    };
    let req = build(&op, &dev(V10, &[])).unwrap();
    assert_eq!(cf(&req), Some(11542));
    assert_eq!(
        req.payload.first(),
        Some(&0x07),
        "object instance TLV, 8-bit id, 7 bytes"
    );
    assert_eq!(req.payload.get(1), Some(&2), "the instance id");
    let back = codecs
        .decode(ContentFormat::Tlv, &req.payload, &p("/1"), &model)
        .unwrap();
    assert_eq!(back, Node::Object(Object::new(1).with(want)));

    // Without an id: bare resources in TLV, whatever the device prefers.
    let op = Operation::Create {
        object: 1,
        instance: None,
        resources: resources.clone(),
        format: None,
    };
    let req = build(&op, &dev(V12, &[ContentFormat::Lwm2mCbor])).unwrap();
    assert_eq!(cf(&req), Some(11542));
    let back = codecs
        .decode(ContentFormat::Tlv, &req.payload, &p("/1/0"), &model)
        .unwrap();
    assert_eq!(
        back,
        Node::Instance(
            Instance::new(0)
                .with(resources[0].clone())
                .with(resources[1].clone())
        )
    );
    let op = Operation::Create {
        object: 1,
        instance: None,
        resources: resources.clone(),
        format: Some(ContentFormat::SenmlCbor),
    };
    assert!(matches!(
        build(&op, &dev(V12, &[])),
        Err(DmError::FormatRefused { .. })
    ));
    let twice = vec![resources[0].clone(), resources[0].clone()];
    let op = Operation::Create {
        object: 1,
        instance: Some(1),
        resources: twice,
        format: None,
    };
    assert!(matches!(
        build(&op, &dev(V12, &[])),
        Err(DmError::InvalidRequest { .. })
    ));
}

#[test]
fn delete_targets_instances_and_resource_instances() {
    let op = Operation::Delete { path: p("/1/2") };
    let req = build(&op, &rooted(V11, &[])).unwrap();
    assert_eq!(method(&req), RequestType::Delete);
    assert_eq!(uri_path(&req), ["lwm2m", "1", "2"]);
    assert!(req.payload.is_empty() && accept(&req).is_none());
    assert!(build(
        &Operation::Delete {
            path: p("/3/0/6/1")
        },
        &dev(V12, &[])
    )
    .is_ok());
    for bad in ["/3", "/3/0/6", "/"] {
        assert!(
            build(&Operation::Delete { path: p(bad) }, &dev(V12, &[])).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn observe_and_cancel() {
    let attributes = Attributes::parse_query("pmin=5&pmax=30").unwrap();
    let op = Operation::Observe {
        path: p("/3/0/9"),
        attributes,
        format: None,
    };
    let req = build(&op, &rooted(V11, &[ContentFormat::SenmlCbor])).unwrap();
    assert_eq!(method(&req), RequestType::Get);
    assert_eq!(uri_path(&req), ["lwm2m", "3", "0", "9"]);
    assert_eq!(observe(&req), Some(0));
    assert!(req.get_first_option(CoapOption::Observe).is_some());
    assert_eq!(accept(&req), Some(112));
    assert_eq!(queries(&req), ["pmin=5", "pmax=30"]);
    assert!(op.is_observe());

    let op = Operation::CancelObserve {
        path: p("/3/0/9"),
        format: None,
    };
    let req = build(&op, &dev(V11, &[])).unwrap();
    assert_eq!(method(&req), RequestType::Get);
    assert_eq!(observe(&req), Some(1));
    assert_eq!(accept(&req), Some(0));
    assert!(queries(&req).is_empty());
}

#[test]
fn read_composite_fetches_a_senml_path_list() {
    let paths = vec![p("/3/0/0"), p("/1/0/1")];
    let op = Operation::ReadComposite {
        paths: paths.clone(),
        format: Some(ContentFormat::SenmlJson),
    };
    let req = build(&op, &dev(V11, &[])).unwrap();
    assert_eq!(method(&req), RequestType::Fetch);
    assert!(uri_path(&req).is_empty());
    assert_eq!(cf(&req), Some(110));
    assert_eq!(accept(&req), Some(110));
    assert_eq!(observe(&req), None);
    assert_eq!(
        std::str::from_utf8(&req.payload).unwrap(),
        r#"[{"n":"/3/0/0"},{"n":"/1/0/1"}]"#
    );

    // Default: LwM2M CBOR answer for a 1.2 device, SenML CBOR path list.
    let op = Operation::ReadComposite {
        paths: paths.clone(),
        format: None,
    };
    let req = build(&op, &rooted(V12, &[ContentFormat::Lwm2mCbor])).unwrap();
    assert_eq!(uri_path(&req), ["lwm2m"]);
    assert_eq!((cf(&req), accept(&req)), (Some(112), Some(11544)));
    let back = Codecs::new()
        .get(112)
        .unwrap()
        .decode_paths(&req.payload)
        .unwrap();
    assert_eq!(back, paths);

    assert!(matches!(
        build(&op, &dev(V10, &[])),
        Err(DmError::VersionTooOld { .. })
    ));
    let op = Operation::ReadComposite {
        paths: vec![],
        format: None,
    };
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::InvalidRequest { .. })
    ));
    let op = Operation::ReadComposite {
        paths: vec![p("/3/0/0")],
        format: Some(ContentFormat::Tlv),
    };
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::FormatRefused { .. })
    ));
    let op = Operation::ReadComposite {
        paths: vec![p("/3/0/0"); MAX_COMPOSITE_PATHS + 1],
        format: None,
    };
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::InvalidRequest { .. })
    ));
}

#[test]
fn write_composite_is_ipatch_with_senml() {
    let mut nodes = Nodes::new();
    nodes.insert(
        p("/3/0/14"),
        Node::Resource(single(14, Value::String("+01:00".into()))),
    );
    nodes.insert(p("/1/0/1"), Node::Resource(single(1, Value::Integer(600))));
    let op = Operation::WriteComposite {
        nodes: nodes.clone(),
        format: Some(ContentFormat::SenmlJson),
    };
    let req = build(&op, &rooted(V11, &[])).unwrap();
    assert_eq!(method(&req), RequestType::IPatch);
    assert_eq!(uri_path(&req), ["lwm2m"]);
    assert_eq!((cf(&req), accept(&req)), (Some(110), None));
    let back = Codecs::new()
        .get(110)
        .unwrap()
        .decode_nodes(&req.payload, None, &Registry::with_core())
        .unwrap();
    assert_eq!(back, nodes);
    let op = Operation::WriteComposite {
        nodes: nodes.clone(),
        format: None,
    };
    assert_eq!(cf(&build(&op, &dev(V11, &[])).unwrap()), Some(112));

    let mut bad = Nodes::new();
    bad.insert(p("/3/0"), Node::Instance(Instance::new(0)));
    let op = Operation::WriteComposite {
        nodes: bad,
        format: None,
    };
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::InvalidTarget { .. })
    ));
}

#[test]
fn observe_composite_and_cancel() {
    let paths = vec![p("/3/0/9"), p("/6/0")];
    let attributes = Attributes::parse_query("pmin=1&pmax=10").unwrap();
    let op = Operation::ObserveComposite {
        paths: paths.clone(),
        attributes,
        format: None,
    };
    let req = build(&op, &dev(V11, &[ContentFormat::SenmlJson])).unwrap();
    assert_eq!(method(&req), RequestType::Fetch);
    assert!(uri_path(&req).is_empty());
    assert_eq!(observe(&req), Some(0));
    assert_eq!((cf(&req), accept(&req)), (Some(110), Some(110)));
    assert_eq!(queries(&req), ["pmin=1", "pmax=10"]);
    assert_eq!(
        std::str::from_utf8(&req.payload).unwrap(),
        r#"[{"n":"/3/0/9"},{"n":"/6/0"}]"#
    );

    let op = Operation::CancelObserveComposite {
        paths,
        format: None,
    };
    let req = build(&op, &dev(V11, &[ContentFormat::SenmlJson])).unwrap();
    assert_eq!((method(&req), observe(&req)), (RequestType::Fetch, Some(1)));
    assert_eq!(
        std::str::from_utf8(&req.payload).unwrap(),
        r#"[{"n":"/3/0/9"},{"n":"/6/0"}]"#
    );

    let attributes = Attributes::parse_query("gt=5").unwrap();
    let op = Operation::ObserveComposite {
        paths: vec![p("/3/0/9")],
        attributes,
        format: None,
    };
    assert!(matches!(
        build(&op, &dev(V11, &[])),
        Err(DmError::InvalidRequest { .. })
    ));
}

#[test]
fn security_and_oscore_objects_are_refused_for_every_operation() {
    let d = dev(V12, &[ContentFormat::SenmlCbor]);
    for o in [0u16, 21] {
        let path = Path::instance(o, 0);
        let res = Path::resource(o, 0, 0);
        let mut nodes = Nodes::new();
        nodes.insert(res, Node::Resource(single(0, Value::Integer(1))));
        let ops = vec![
            Operation::Read { path, format: None },
            Operation::Discover { path, depth: None },
            Operation::Write {
                path: res,
                node: Node::Resource(single(0, Value::Integer(1))),
                mode: WriteMode::Replace,
                format: None,
            },
            Operation::WriteAttributes {
                path,
                attributes: Attributes::parse_query("pmin=1").unwrap(),
            },
            Operation::Execute {
                path: res,
                args: ExecuteArgs::default(),
            },
            Operation::Create {
                object: o,
                instance: Some(1),
                resources: vec![],
                format: None,
            },
            Operation::Delete { path },
            Operation::Observe {
                path,
                attributes: Attributes::default(),
                format: None,
            },
            Operation::CancelObserve { path, format: None },
            Operation::ReadComposite {
                paths: vec![p("/3/0"), res],
                format: None,
            },
            Operation::WriteComposite {
                nodes,
                format: None,
            },
            Operation::ObserveComposite {
                paths: vec![res],
                attributes: Attributes::default(),
                format: None,
            },
            Operation::CancelObserveComposite {
                paths: vec![res],
                format: None,
            },
        ];
        for op in ops {
            assert_eq!(
                build(&op, &d),
                Err(DmError::ProtectedObject(o)),
                "{}",
                op.name()
            );
        }
    }
}

// ------------------------------------------------------------ responses

fn response(code: ResponseType, format: Option<u16>, payload: &[u8]) -> Packet {
    let mut r = Packet::new();
    r.header.set_type(MessageType::Acknowledgement);
    r.header.code = MessageClass::Response(code);
    if let Some(f) = format {
        r.add_option(CoapOption::ContentFormat, operation::uint_option(f));
    }
    r.payload = payload.to_vec();
    r
}

fn parse(op: &Operation, d: &DeviceContext, r: &Packet) -> Result<DmResponse, DmError> {
    op.parse_response(r, d, &Codecs::new(), &Registry::with_core())
}

#[test]
fn read_responses_decode_into_nodes() {
    let d = dev(V11, &[]);
    let op = Operation::Read {
        path: p("/3/0/9"),
        format: None,
    };
    let r = response(ResponseType::Content, Some(0), b"87");
    let want = Node::Resource(single(9, Value::Integer(87)));
    assert_eq!(parse(&op, &d, &r), Ok(DmResponse::Node(want.clone())));
    // Missing Content-Format: the format asked for (text/plain here).
    let r = response(ResponseType::Content, None, b"87");
    assert_eq!(parse(&op, &d, &r), Ok(DmResponse::Node(want.clone())));
    // TLV answer to a text request: the option wins.
    let r = response(ResponseType::Content, Some(11542), &[0xC1, 0x09, 0x57]);
    assert_eq!(parse(&op, &d, &r), Ok(DmResponse::Node(want)));
    // Unknown format, garbage payload.
    let r = response(ResponseType::Content, Some(9999), b"x");
    assert!(matches!(parse(&op, &d, &r), Err(DmError::Decode(_))));
    let r = response(ResponseType::Content, Some(11542), &[0xC1]);
    assert!(matches!(parse(&op, &d, &r), Err(DmError::Decode(_))));
    // Wrong success code.
    let r = response(ResponseType::Changed, None, b"");
    assert!(matches!(
        parse(&op, &d, &r),
        Err(DmError::UnexpectedCode { .. })
    ));
}

#[test]
fn error_responses_carry_code_and_diagnostic() {
    let d = dev(V11, &[]);
    let ops = [
        Operation::Read {
            path: p("/3/0/9"),
            format: None,
        },
        Operation::Execute {
            path: p("/3/0/4"),
            args: ExecuteArgs::default(),
        },
        Operation::Delete { path: p("/1/0") },
    ];
    let rows = [
        (ResponseType::BadRequest, ErrorCode::BadRequest),
        (ResponseType::Unauthorized, ErrorCode::Unauthorized),
        (ResponseType::NotFound, ErrorCode::NotFound),
        (ResponseType::MethodNotAllowed, ErrorCode::MethodNotAllowed),
        (ResponseType::NotAcceptable, ErrorCode::NotAcceptable),
        (
            ResponseType::RequestEntityIncomplete,
            ErrorCode::RequestEntityIncomplete,
        ),
        (
            ResponseType::RequestEntityTooLarge,
            ErrorCode::RequestEntityTooLarge,
        ),
        (
            ResponseType::UnsupportedContentFormat,
            ErrorCode::UnsupportedContentFormat,
        ),
        (ResponseType::InternalServerError, ErrorCode::Server(0xA0)),
        (ResponseType::ServiceUnavailable, ErrorCode::Server(0xA3)),
    ];
    for op in &ops {
        for (rt, code) in rows {
            let r = response(rt, None, b"no such\nthing");
            let want = DeviceError {
                code,
                diagnostic: "no such\u{FFFD}thing".into(),
            };
            assert_eq!(
                parse(op, &d, &r),
                Err(DmError::Device(want)),
                "{} {rt:?}",
                op.name()
            );
        }
    }
    let e = parse(
        &ops[0],
        &d,
        &response(ResponseType::NotFound, None, b"gone"),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "device answered 4.04 \"gone\"");
}

#[test]
fn discover_response_strips_the_root_path() {
    let d = rooted(V11, &[]);
    let op = Operation::Discover {
        path: p("/3/0"),
        depth: None,
    };
    let r = response(
        ResponseType::Content,
        Some(40),
        b"</lwm2m/3/0>;pmin=10,</lwm2m/3/0/6>;dim=2",
    );
    let Ok(DmResponse::Discovered(entries)) = parse(&op, &d, &r) else {
        panic!()
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].path, p("/3/0"));
    assert_eq!(entries[0].attributes.pmin, Some(AttributeValue::Set(10)));
    assert_eq!(
        (entries[1].path, entries[1].attributes.dim),
        (p("/3/0/6"), Some(2))
    );
    let r = response(ResponseType::Content, Some(0), b"</3/0>");
    assert!(parse(&op, &d, &r).is_err());
    let r = response(ResponseType::Content, Some(40), b"<3/0");
    assert!(matches!(
        parse(&op, &d, &r),
        Err(DmError::MalformedResponse(_))
    ));
}

#[test]
fn changed_created_deleted() {
    let d = rooted(V11, &[]);
    let changed = response(ResponseType::Changed, None, b"");
    for op in [
        Operation::Execute {
            path: p("/3/0/4"),
            args: ExecuteArgs::default(),
        },
        Operation::WriteAttributes {
            path: p("/3/0/9"),
            attributes: Attributes::parse_query("pmin=1").unwrap(),
        },
        Operation::Write {
            path: p("/3/0/14"),
            node: Node::Resource(single(14, Value::String("x".into()))),
            mode: WriteMode::Replace,
            format: None,
        },
        Operation::WriteComposite {
            nodes: Nodes::new(),
            format: None,
        },
    ] {
        assert_eq!(
            parse(&op, &d, &changed),
            Ok(DmResponse::Changed),
            "{}",
            op.name()
        );
    }
    let op = Operation::Delete { path: p("/1/0") };
    assert_eq!(
        parse(&op, &d, &response(ResponseType::Deleted, None, b"")),
        Ok(DmResponse::Deleted)
    );
    assert!(parse(&op, &d, &changed).is_err());

    let op = Operation::Create {
        object: 1,
        instance: None,
        resources: vec![],
        format: None,
    };
    let mut r = response(ResponseType::Created, None, b"");
    for s in ["lwm2m", "1", "4"] {
        r.add_option(CoapOption::LocationPath, s.as_bytes().to_vec());
    }
    assert_eq!(
        parse(&op, &d, &r),
        Ok(DmResponse::Created {
            path: Some(p("/1/4"))
        })
    );
    let bare = response(ResponseType::Created, None, b"");
    assert_eq!(
        parse(&op, &d, &bare),
        Ok(DmResponse::Created { path: None })
    );
    let with_id = Operation::Create {
        object: 1,
        instance: Some(3),
        resources: vec![],
        format: None,
    };
    assert_eq!(
        parse(&with_id, &d, &bare),
        Ok(DmResponse::Created {
            path: Some(p("/1/3"))
        })
    );
    let mut wrong = response(ResponseType::Created, None, b"");
    for s in ["3", "0"] {
        wrong.add_option(CoapOption::LocationPath, s.as_bytes().to_vec());
    }
    assert!(matches!(
        parse(&op, &d, &wrong),
        Err(DmError::MalformedResponse(_))
    ));
}

#[test]
fn observe_responses_and_notifications_carry_the_sequence() {
    let d = dev(V11, &[]);
    let op = Operation::Observe {
        path: p("/3/0/9"),
        attributes: Attributes::default(),
        format: None,
    };
    let mut r = response(ResponseType::Content, Some(0), b"55");
    r.add_option(CoapOption::Observe, vec![0x01, 0x02]);
    let node = Node::Resource(single(9, Value::Integer(55)));
    assert_eq!(
        parse(&op, &d, &r),
        Ok(DmResponse::Observed {
            node: node.clone(),
            sequence: Some(0x0102)
        })
    );
    let plain = response(ResponseType::Content, Some(0), b"55");
    assert_eq!(
        parse(&op, &d, &plain),
        Ok(DmResponse::Observed {
            node: node.clone(),
            sequence: None
        })
    );
    let mut bad = response(ResponseType::Content, Some(0), b"55");
    bad.add_option(CoapOption::Observe, vec![1, 2, 3, 4]);
    assert!(matches!(
        parse(&op, &d, &bad),
        Err(DmError::MalformedResponse(_))
    ));
    let cancel = Operation::CancelObserve {
        path: p("/3/0/9"),
        format: None,
    };
    assert_eq!(parse(&cancel, &d, &plain), Ok(DmResponse::Node(node)));
}

#[test]
fn composite_responses_decode_per_requested_path() {
    let d = dev(V11, &[ContentFormat::SenmlJson]);
    let paths = vec![p("/3/0/0"), p("/1/0/1")];
    let body = br#"[{"n":"/3/0/0","vs":"ACME"},{"n":"/1/0/1","v":300}]"#;
    let mut want = Nodes::new();
    want.insert(
        p("/3/0/0"),
        Node::Resource(single(0, Value::String("ACME".into()))),
    );
    want.insert(p("/1/0/1"), Node::Resource(single(1, Value::Integer(300))));
    let op = Operation::ReadComposite {
        paths: paths.clone(),
        format: None,
    };
    let r = response(ResponseType::Content, Some(110), body);
    assert_eq!(parse(&op, &d, &r), Ok(DmResponse::Nodes(want.clone())));
    let op = Operation::ObserveComposite {
        paths: paths.clone(),
        attributes: Attributes::default(),
        format: None,
    };
    let mut r = response(ResponseType::Content, Some(110), body);
    r.add_option(CoapOption::Observe, vec![7]);
    assert_eq!(
        parse(&op, &d, &r),
        Ok(DmResponse::ObservedComposite {
            nodes: want.clone(),
            sequence: Some(7)
        })
    );
    let op = Operation::CancelObserveComposite {
        paths,
        format: None,
    };
    assert_eq!(
        parse(&op, &d, &response(ResponseType::Content, None, body)),
        Ok(DmResponse::Nodes(want))
    );
    let stray = br#"[{"n":"/5/0/3","v":1}]"#;
    assert!(matches!(
        parse(&op, &d, &response(ResponseType::Content, Some(110), stray)),
        Err(DmError::Decode(_))
    ));
}

// ------------------------------------------------------------ send

fn send_packet(format: Option<u16>, payload: &[u8]) -> Packet {
    let mut r = Packet::new();
    r.header.code = MessageClass::Request(RequestType::Post);
    r.add_option(CoapOption::UriPath, b"dp".to_vec());
    if let Some(f) = format {
        r.add_option(CoapOption::ContentFormat, operation::uint_option(f));
    }
    r.payload = payload.to_vec();
    r
}

#[test]
fn send_with_several_objects_gives_nodes() {
    let m = Registry::with_core();
    let c = Codecs::new();
    let body = br#"[{"bn":"/3/0/","n":"9","v":80},{"n":"/6/0/0","bn":"","v":60.5}]"#;
    let got = parse_send(&send_packet(Some(110), body), &c, &m).unwrap();
    let mut want = Nodes::new();
    want.insert(p("/3/0/9"), Node::Resource(single(9, Value::Integer(80))));
    want.insert(p("/6/0/0"), Node::Resource(single(0, Value::Float(60.5))));
    assert_eq!(got, SendData::Nodes(want));
}

#[test]
fn send_of_one_resource_over_time_gives_a_series() {
    let m = Registry::with_core();
    let c = Codecs::new();
    let body = br#"[{"bn":"/3/0/9","bt":1700000000,"v":80},{"t":60,"v":79}]"#;
    let SendData::Series { path, series } =
        parse_send(&send_packet(Some(110), body), &c, &m).unwrap()
    else {
        panic!("expected a series")
    };
    assert_eq!(path, p("/3/0/9"));
    let times: Vec<Option<f64>> = series.iter().map(|t| t.time).collect();
    assert_eq!(times, [Some(1_700_000_000.0), Some(1_700_000_060.0)]);
    assert_eq!(
        series[1].node,
        Node::Resource(single(9, Value::Integer(79)))
    );
}

#[test]
fn send_refusals_map_to_codes() {
    let m = Registry::with_core();
    let c = Codecs::new();
    let rows: [(Packet, ResponseType); 6] = [
        (
            send_packet(None, b"[]"),
            ResponseType::UnsupportedContentFormat,
        ),
        (
            send_packet(Some(11542), &[0xC1, 0x09, 0x57]),
            ResponseType::UnsupportedContentFormat,
        ),
        (send_packet(Some(110), b"[{"), ResponseType::BadRequest),
        (send_packet(Some(110), b"[]"), ResponseType::BadRequest),
        (
            send_packet(Some(110), br#"[{"n":"/0/0/0","vs":"x"}]"#),
            ResponseType::BadRequest,
        ),
        (send_packet(Some(112), &[0xFF]), ResponseType::BadRequest),
    ];
    for (packet, code) in rows {
        let e = parse_send(&packet, &c, &m).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
    }
    let mut get = send_packet(Some(110), b"[]");
    get.header.code = MessageClass::Request(RequestType::Get);
    assert_eq!(
        parse_send(&get, &c, &m).unwrap_err().code(),
        ResponseType::MethodNotAllowed
    );
}

#[test]
fn device_context_from_a_registration_payload() {
    let payload = lwm2m_objects::link::RegistrationPayload::parse(
        r#"</lwm2m>;rt="oma.lwm2m";ct="110 112",</lwm2m/3/0>"#,
    )
    .unwrap();
    let d = DeviceContext::from_payload(V11, &payload);
    assert_eq!(d.root_path, "/lwm2m");
    assert_eq!(d.supported_formats, [110, 112]);
    let op = Operation::Read {
        path: p("/3/0/0"),
        format: None,
    };
    let req = build(&op, &d).unwrap();
    assert_eq!(uri_path(&req), ["lwm2m", "3", "0", "0"]);
    assert_eq!(accept(&req), Some(112));
}

// ------------------------------------------------------------ hostile input

mod hostile {
    use super::*;
    use proptest::prelude::*;

    fn any_packet() -> impl Strategy<Value = Packet> {
        (
            any::<u8>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..5)),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..20),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(code, cf, obs, locs, payload)| {
                let mut r = Packet::new();
                r.header.code = MessageClass::from(code);
                if let Some(v) = cf {
                    r.add_option(CoapOption::ContentFormat, v);
                }
                if let Some(v) = obs {
                    r.add_option(CoapOption::Observe, v);
                }
                for l in locs {
                    r.add_option(CoapOption::LocationPath, l);
                }
                r.payload = payload;
                r
            })
    }

    proptest! {
        /// Whatever a device answers, parsing returns a value or a typed
        /// error, and a device error's diagnostic stays bounded and free
        /// of control characters.
        #[test]
        fn responses_never_panic(packet in any_packet(), which in 0usize..8) {
            let d = rooted(V12, &[ContentFormat::SenmlJson]);
            let paths = vec![p("/3/0/0"), p("/1/0/1")];
            let ops = [
                Operation::Read { path: p("/3/0"), format: None },
                Operation::Discover { path: p("/3"), depth: None },
                Operation::Create { object: 1, instance: None, resources: vec![], format: None },
                Operation::Observe { path: p("/3/0/9"), attributes: Attributes::default(), format: None },
                Operation::ReadComposite { paths: paths.clone(), format: None },
                Operation::ObserveComposite { paths, attributes: Attributes::default(), format: None },
                Operation::Delete { path: p("/1/0") },
                Operation::Read { path: p("/3/0/6"), format: Some(ContentFormat::Tlv) },
            ];
            let op = &ops[which];
            if let Err(DmError::Device(e)) = parse(op, &d, &packet) {
                prop_assert!(e.diagnostic.len() <= 3 * error::MAX_DIAGNOSTIC_BYTES);
                prop_assert!(!e.diagnostic.chars().any(char::is_control));
            }
            let mut send = packet.clone();
            send.header.code = MessageClass::Request(RequestType::Post);
            let _ = parse_send(&send, &Codecs::new(), &Registry::with_core());
        }
    }
}
