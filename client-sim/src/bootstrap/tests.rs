//! The bootstrap state against requests built by hand, one rule of the
//! Bootstrap Interface per test.

use coap_lite::CoapOption;
use lwm2m_objects::link::parse_discover;

use super::*;
use crate::ops::encode_uint;

const BS_URI: &str = "coap://192.0.2.1:5783";

fn state() -> BootstrapState {
    BootstrapState::new(BS_URI, None, Version::V1_1)
}

fn req(method: RequestType, path: &str) -> Packet {
    request_packet(method, path, &[])
}

fn with_cf(mut p: Packet, cf: u16, payload: Vec<u8>) -> Packet {
    p.add_option(CoapOption::ContentFormat, encode_uint(u32::from(cf)));
    p.payload = payload;
    p
}

fn with_accept(mut p: Packet, cf: u16) -> Packet {
    p.add_option(CoapOption::Accept, encode_uint(u32::from(cf)));
    p
}

fn answer(s: &mut BootstrapState, p: &Packet) -> Packet {
    match s.handle(p) {
        Reply::Answer(a) => a,
        Reply::Finish(f) => panic!("not a Finish: {f:?}"),
    }
}

fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(r) => r,
        _ => ResponseType::UnKnown,
    }
}

fn tlv(path: &Path, node: &Node) -> Vec<u8> {
    Codecs::new()
        .encode(ContentFormat::Tlv, path, node, &Registry::with_core())
        .expect("encode")
}

fn security(iid: u16, uri: &str, mode: i64, ssid: i64) -> Instance {
    Instance::new(iid)
        .with(single(0, Value::String(uri.into())))
        .with(single(1, Value::Boolean(false)))
        .with(single(2, Value::Integer(mode)))
        .with(single(3, Value::Opaque(b"dev-7".to_vec())))
        .with(single(4, Value::Opaque(Vec::new())))
        .with(single(5, Value::Opaque(vec![1, 2, 3, 4])))
        .with(single(10, Value::Integer(ssid)))
}

fn server(iid: u16, ssid: i64, lifetime: i64) -> Instance {
    Instance::new(iid)
        .with(single(0, Value::Integer(ssid)))
        .with(single(1, Value::Integer(lifetime)))
        .with(single(6, Value::Boolean(true)))
        .with(single(7, Value::String("UQ".into())))
}

fn write_instance(s: &mut BootstrapState, oid: u16, inst: Instance) -> Packet {
    let path = Path::instance(oid, inst.id);
    let body = tlv(&path, &Node::Instance(inst));
    answer(
        s,
        &with_cf(req(RequestType::Put, &path.to_string()), 11542, body),
    )
}

fn discover(s: &mut BootstrapState, path: &str) -> String {
    let a = answer(s, &with_accept(req(RequestType::Get, path), 40));
    assert_eq!(code(&a), ResponseType::Content, "{path}");
    String::from_utf8(a.payload).expect("utf-8")
}

fn finish(s: &mut BootstrapState) -> Result<Draft, String> {
    match s.handle(&req(RequestType::Post, "/bs")) {
        Reply::Finish(f) => f,
        Reply::Answer(a) => panic!("not handled as Finish: {a:?}"),
    }
}

#[test]
fn factory_state_is_the_bootstrap_account_only() {
    let mut s = state();
    let text = discover(&mut s, "/");
    assert!(text.starts_with("</>;lwm2m=1.1,"), "{text}");
    let entries = parse_discover(&text, "/").expect("parse");
    let paths: Vec<String> = entries.iter().map(|e| e.path.to_string()).collect();
    for want in ["/0/0", "/3/0", "/4/0", "/5/0", "/6/0"] {
        assert!(paths.contains(&want.to_string()), "{want} in {text}");
    }
    assert!(!paths.iter().any(|p| p.starts_with("/1/")), "{text}");
    // The bootstrap account carries neither ssid nor uri.
    let bs = entries.iter().find(|e| e.path == Path::instance(0, 0));
    assert_eq!(
        bs.map(|e| (e.attributes.ssid, e.attributes.uri.clone())),
        Some((None, None))
    );
    assert!(matches!(finish(&mut s), Err(why) if why.contains("no LwM2M Server account")));
}

#[test]
fn discover_reports_ssid_and_uri_of_server_accounts() {
    let mut s = state();
    let w = write_instance(&mut s, 0, security(1, "coap://192.0.2.9:5683", 3, 101));
    assert_eq!(code(&w), ResponseType::Changed);
    assert_eq!(
        code(&write_instance(&mut s, 1, server(0, 101, 60))),
        ResponseType::Changed
    );
    let text = discover(&mut s, "/");
    assert!(
        text.contains(r#"</0/1>;ssid=101;uri="coap://192.0.2.9:5683""#),
        "{text}"
    );
    assert!(text.contains("</1/0>;ssid=101"), "{text}");
    let only_server = discover(&mut s, "/1");
    assert!(only_server.contains("</1/0>;ssid=101"), "{only_server}");
    assert!(!only_server.contains("</0/"), "{only_server}");
    for (path, want) in [
        ("/99", ResponseType::NotFound),
        ("/1/0", ResponseType::BadRequest),
    ] {
        let a = answer(&mut s, &with_accept(req(RequestType::Get, path), 40));
        assert_eq!(code(&a), want, "{path}");
        assert!(!a.payload.is_empty(), "{path}: a diagnostic");
    }
}

#[test]
fn read_gives_the_server_object_and_refuses_security() {
    let mut s = state();
    write_instance(&mut s, 1, server(3, 7, 120));
    let a = answer(&mut s, &req(RequestType::Get, "/1"));
    assert_eq!(code(&a), ResponseType::Content);
    let node = Codecs::new()
        .decode(
            ContentFormat::Tlv,
            &a.payload,
            &Path::object(1),
            &Registry::with_core(),
        )
        .expect("decode");
    let Node::Object(o) = node else {
        panic!("not an object")
    };
    assert_eq!(o.instances.get(&3).map(|i| integer(i, 1)), Some(Some(120)));
    let a = answer(&mut s, &with_accept(req(RequestType::Get, "/1/3"), 110));
    assert_eq!(code(&a), ResponseType::Content);
    assert!(String::from_utf8_lossy(&a.payload).contains("120"));
    for (path, accept, want) in [
        ("/0", None, ResponseType::Unauthorized),
        ("/0/0", None, ResponseType::Unauthorized),
        ("/1/4", None, ResponseType::NotFound),
        ("/3", None, ResponseType::BadRequest),
        ("/1", Some(0), ResponseType::NotAcceptable),
        ("/1", Some(9999), ResponseType::NotAcceptable),
    ] {
        let mut p = req(RequestType::Get, path);
        if let Some(cf) = accept {
            p = with_accept(p, cf);
        }
        assert_eq!(code(&answer(&mut s, &p)), want, "{path} {accept:?}");
    }
}

#[test]
fn write_replaces_instances_and_object_writes_take_several() {
    let mut s = state();
    write_instance(&mut s, 1, server(0, 1, 60));
    // An instance write replaces: resource 7 is gone afterwards.
    let bare = Instance::new(0)
        .with(single(0, Value::Integer(1)))
        .with(single(1, Value::Integer(90)));
    write_instance(&mut s, 1, bare);
    assert_eq!(s.server.instances.get(&0).map(|i| text(i, 7)), Some(None));
    let object = Object::new(1).with(server(4, 4, 40)).with(server(5, 5, 50));
    let body = tlv(&Path::object(1), &Node::Object(object));
    let a = answer(&mut s, &with_cf(req(RequestType::Put, "/1"), 11542, body));
    assert_eq!(code(&a), ResponseType::Changed);
    assert_eq!(
        s.server.instances.keys().copied().collect::<Vec<_>>(),
        vec![0, 4, 5]
    );
    // A resource write creates the instance it names.
    let body = tlv(
        &Path::resource(0, 9, 0),
        &Node::Resource(single(0, Value::String("coap://192.0.2.3".into()))),
    );
    let a = answer(
        &mut s,
        &with_cf(req(RequestType::Put, "/0/9/0"), 11542, body),
    );
    assert_eq!(code(&a), ResponseType::Changed);
    assert_eq!(
        s.security.instances.get(&9).and_then(|i| text(i, 0)),
        Some("coap://192.0.2.3")
    );
    // SenML JSON works as well as TLV.
    let body = br#"[{"bn":"/1/6/","n":"0","v":6},{"n":"1","v":66}]"#.to_vec();
    let a = answer(&mut s, &with_cf(req(RequestType::Put, "/1/6"), 110, body));
    assert_eq!(code(&a), ResponseType::Changed);
    assert_eq!(
        s.server.instances.get(&6).and_then(|i| integer(i, 1)),
        Some(66)
    );
}

#[test]
fn bad_writes_are_refused_with_a_diagnostic() {
    let mut s = state();
    for (path, cf, body, want) in [
        ("/1/0", 11542u16, vec![0xC8], ResponseType::BadRequest),
        (
            "/1/0",
            40,
            b"</1>".to_vec(),
            ResponseType::UnsupportedContentFormat,
        ),
        (
            "/1/0",
            4711,
            vec![1],
            ResponseType::UnsupportedContentFormat,
        ),
        ("/", 11542, vec![], ResponseType::MethodNotAllowed),
    ] {
        let a = answer(&mut s, &with_cf(req(RequestType::Put, path), cf, body));
        assert_eq!(code(&a), want, "{path} {cf}");
        assert!(!a.payload.is_empty(), "{path} {cf}: a diagnostic");
    }
    let a = answer(&mut s, &req(RequestType::Put, "/1/0"));
    assert_eq!(code(&a), ResponseType::BadRequest, "no payload");
    // Other objects are accepted and not kept.
    let a = answer(
        &mut s,
        &with_cf(req(RequestType::Put, "/2/0"), 11542, vec![1]),
    );
    assert_eq!(code(&a), ResponseType::Changed);
    // Not Bootstrap-Interface operations.
    for (method, path, want) in [
        (RequestType::Post, "/1/0", ResponseType::MethodNotAllowed),
        (RequestType::Get, "/bs", ResponseType::MethodNotAllowed),
        (RequestType::Get, "/rd", ResponseType::NotFound),
    ] {
        assert_eq!(code(&answer(&mut s, &req(method, path))), want, "{path}");
    }
}

#[test]
fn instances_per_object_are_bounded() {
    let mut s = state();
    for i in 0..MAX_INSTANCES as u16 {
        assert_eq!(
            code(&write_instance(&mut s, 1, server(i, 1, 60))),
            ResponseType::Changed
        );
    }
    let a = write_instance(&mut s, 1, server(MAX_INSTANCES as u16, 1, 60));
    assert_eq!(code(&a), ResponseType::BadRequest);
    // Replacing an existing one is still fine.
    assert_eq!(
        code(&write_instance(&mut s, 1, server(0, 2, 60))),
        ResponseType::Changed
    );
    assert_eq!(s.server.instances.len(), MAX_INSTANCES);
}

#[test]
fn delete_spares_the_bootstrap_account() {
    let mut s = state();
    write_instance(&mut s, 0, security(1, "coap://192.0.2.9", 3, 1));
    write_instance(&mut s, 1, server(0, 1, 60));
    let a = answer(&mut s, &req(RequestType::Delete, "/"));
    assert_eq!(code(&a), ResponseType::Deleted);
    assert_eq!(
        s.security.instances.keys().copied().collect::<Vec<_>>(),
        vec![0]
    );
    assert!(s.server.instances.is_empty());
    write_instance(&mut s, 0, security(1, "coap://192.0.2.9", 3, 1));
    assert_eq!(
        code(&answer(&mut s, &req(RequestType::Delete, "/0"))),
        ResponseType::Deleted
    );
    assert_eq!(s.security.instances.len(), 1);
    let a = answer(&mut s, &req(RequestType::Delete, "/0/0"));
    assert_eq!(code(&a), ResponseType::BadRequest);
    assert!(String::from_utf8_lossy(&a.payload).contains("Bootstrap-Server"));
    write_instance(&mut s, 1, server(2, 1, 60));
    for (path, want) in [
        ("/1/2", ResponseType::Deleted),
        ("/1/2", ResponseType::Deleted),
        ("/0/5", ResponseType::Deleted),
        ("/2", ResponseType::Deleted),
        ("/3/0", ResponseType::BadRequest),
        ("/1/0/1", ResponseType::BadRequest),
    ] {
        assert_eq!(
            code(&answer(&mut s, &req(RequestType::Delete, path))),
            want,
            "{path}"
        );
    }
    assert!(s.server.instances.is_empty());
}

#[test]
fn finish_checks_the_account_is_complete() {
    let mut s = state();
    write_instance(&mut s, 0, security(1, "coaps://192.0.2.9:5684", 0, 101));
    assert!(
        matches!(finish(&mut s), Err(why) if why.contains("Short Server ID 101")),
        "no Server instance"
    );
    write_instance(&mut s, 1, server(0, 101, 77));
    let d = finish(&mut s).expect("consistent");
    assert_eq!(d.uri, "coaps://192.0.2.9:5684");
    assert_eq!(d.target.ip_addr(), Some("192.0.2.9:5684".parse().unwrap()));
    assert_eq!(
        d.psk,
        Some(Psk {
            identity: b"dev-7".to_vec(),
            key: vec![1, 2, 3, 4]
        })
    );
    assert_eq!((d.short_server_id, d.lifetime), (101, Some(77)));
    assert_eq!(d.binding.as_deref(), Some("UQ"));

    let broken = [
        (security(1, "coap://192.0.2.9", 0, 101), "coap://"),
        (security(1, "coaps://192.0.2.9", 3, 101), "NoSec"),
        (security(1, "coaps://192.0.2.9", 2, 101), "not supported"),
        (security(1, "http://192.0.2.9", 3, 101), "Server URI"),
        (security(1, "coap://192.0.2.9", 3, 0), "Short Server ID"),
        (
            security(1, "coaps://192.0.2.9", 0, 101).with(single(5, Value::Opaque(Vec::new()))),
            "key",
        ),
    ];
    for (inst, reason) in broken {
        write_instance(&mut s, 0, inst);
        match finish(&mut s) {
            Err(why) => assert!(why.contains(reason), "{why:?} lacks {reason:?}"),
            Ok(d) => panic!("accepted {d:?}, want {reason}"),
        }
    }
    // A second, complete account is enough.
    write_instance(&mut s, 0, security(2, "coap://192.0.2.10", 3, 101));
    assert_eq!(
        finish(&mut s).map(|d| d.uri),
        Ok("coap://192.0.2.10".into())
    );
}

#[test]
fn account_config_sets_server_credentials_and_queue_mode() {
    let account = Account {
        uri: "coaps://192.0.2.9:5684".into(),
        server: "192.0.2.9:5684".parse().unwrap(),
        secure: true,
        psk: Some(Psk {
            identity: b"id".to_vec(),
            key: vec![9],
        }),
        short_server_id: 101,
        lifetime: Some(77),
        binding: Some("UQ".into()),
    };
    let c = account.config("dev-1");
    assert_eq!(c.server, account.server);
    assert_eq!(c.psk, account.psk);
    assert_eq!(
        (c.lifetime, c.short_server_id, c.queue_mode),
        (77, 101, true)
    );
    let plain = Account {
        lifetime: None,
        binding: Some("U".into()),
        ..account
    };
    let c = plain.config("dev-1");
    assert_eq!(
        (c.lifetime, c.queue_mode),
        (Config::new(plain.server, "x").lifetime, false)
    );
}

#[test]
fn diagnostics_are_cut_at_a_character_boundary() {
    let long = "é".repeat(MAX_DIAGNOSTIC);
    let bytes = diagnostic_bytes(&long);
    assert!(bytes.len() <= MAX_DIAGNOSTIC);
    assert!(std::str::from_utf8(&bytes).is_ok());
    assert_eq!(
        diagnostic_text(&[b'x'; 2 * MAX_DIAGNOSTIC]).len(),
        MAX_DIAGNOSTIC
    );
}

#[test]
fn transmit_span_follows_rfc_7252() {
    // 2 s * (2^4 - 1) * 1.5 = 45 s with the default parameters.
    let span = transmit_span(&lwm2m_server::coap::Config::default());
    assert_eq!(span, Duration::from_secs(45));
}
