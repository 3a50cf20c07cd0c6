//! The dialogue as the LwM2M Bootstrap Interface has it (T12 "Operation to Method and URI
//! Mapping (Bootstrap Interface)", C12 "Bootstrap Operations").

use super::*;
use crate::config::ConfigInput;

const KEY: &str = "000102030405060708090a0b0c0d0e0f";

fn config(json: serde_json::Value) -> BootstrapConfig {
    let input: ConfigInput = serde_json::from_value(json).expect("input");
    BootstrapConfig::from_input("dev-1", input, 1, &mut crate::config::os_random).expect("valid")
}

fn one_psk_server() -> BootstrapConfig {
    config(serde_json::json!({"servers":[{
        "short_server_id": 101, "uri": "coaps://192.0.2.1:5684", "lifetime": 300,
        "binding": "UQ", "psk": {"identity": "dev-1-id", "key": KEY}}]}))
}

fn decode(o: &Outgoing) -> Instance {
    let (codecs, model) = shared();
    let format = ContentFormat::from_code(o.content_format.expect("format")).expect("known");
    match codecs
        .decode(format, &o.payload, &o.path, model)
        .expect("decodes")
    {
        Node::Instance(i) => i,
        other => panic!("not an instance: {other:?}"),
    }
}

fn value(i: &Instance, r: u16) -> Value {
    match i.resources.get(&r) {
        Some(Resource::Single { value, .. }) => value.clone(),
        other => panic!("resource {r}: {other:?}"),
    }
}

fn sent(n: Next) -> Outgoing {
    match n {
        Next::Send(o) => o,
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn deletes_discover_writes_then_finish() {
    let (mut s, first) = Session::start(one_psk_server(), ContentFormat::Tlv);
    assert_eq!(
        (first.method, first.path),
        (Method::Delete, Path::object(0))
    );
    let o = sent(s.on_response((2, 2), b""));
    assert_eq!((o.method, o.path), (Method::Delete, Path::object(1)));
    let o = sent(s.on_response((2, 2), b""));
    assert_eq!(
        (o.method, o.path, o.accept),
        (Method::Get, Path::ROOT, Some(40))
    );
    // After Delete /0 the device keeps its bootstrap account, here /0/0.
    let w = sent(s.on_response((2, 5), b"</>;lwm2m=1.1,</0/0>,</1>,</3/0>"));
    assert_eq!(
        (w.method, w.path, w.content_format),
        (Method::Put, Path::instance(0, 1), Some(11542))
    );
    let sec = decode(&w);
    assert_eq!(
        value(&sec, 0),
        Value::String("coaps://192.0.2.1:5684".into())
    );
    assert_eq!(value(&sec, 1), Value::Boolean(false));
    assert_eq!(value(&sec, 2), Value::Integer(0));
    assert_eq!(value(&sec, 3), Value::Opaque(b"dev-1-id".to_vec()));
    assert_eq!(value(&sec, 5), Value::Opaque((0..16).collect()));
    assert_eq!(value(&sec, 10), Value::Integer(101));
    let w = sent(s.on_response((2, 4), b""));
    assert_eq!(w.path, Path::instance(1, 0));
    let srv = decode(&w);
    assert_eq!(value(&srv, 0), Value::Integer(101));
    assert_eq!(value(&srv, 1), Value::Integer(300));
    assert_eq!(value(&srv, 6), Value::Boolean(true));
    assert_eq!(value(&srv, 7), Value::String("UQ".into()));
    let f = sent(s.on_response((2, 4), b""));
    assert!(is_finish(&f));
    assert_eq!((f.method, f.payload.len()), (Method::Post, 0));
    assert_eq!(s.on_response((2, 4), b""), Next::Finished);
    let steps: Vec<&str> = s
        .report()
        .steps
        .iter()
        .map(|r| r.request.as_str())
        .collect();
    assert_eq!(
        steps,
        [
            "Bootstrap-Delete /0",
            "Bootstrap-Delete /1",
            "Bootstrap-Discover /",
            "Bootstrap-Write /0/1",
            "Bootstrap-Write /1/0",
            "Bootstrap-Finish"
        ]
    );
}

#[test]
fn an_account_with_the_same_short_server_id_is_overwritten_in_place() {
    let mut c = one_psk_server();
    c.delete.clear();
    let (mut s, first) = Session::start(c, ContentFormat::Tlv);
    assert_eq!(first.path, Path::ROOT);
    let w = sent(s.on_response(
        (2, 5),
        br#"</>;lwm2m=1.2,</0/0>,</0/2>;ssid=101;uri="coaps://old:5684",</0/4>;ssid=7,</1/3>;ssid=101,</1/5>;ssid=7"#,
    ));
    assert_eq!(w.path, Path::instance(0, 2));
    assert_eq!(sent(s.on_response((2, 4), b"")).path, Path::instance(1, 3));
}

#[test]
fn a_device_without_bootstrap_discover_gets_ids_counted_past_the_bootstrap_account() {
    let mut c = one_psk_server();
    c.delete = vec!["/".into()];
    let (mut s, _) = Session::start(c, ContentFormat::Tlv);
    let _discover = sent(s.on_response((2, 2), b""));
    let w = sent(s.on_response((4, 5), b""));
    assert_eq!(w.path, Path::instance(0, 1));
    assert_eq!(sent(s.on_response((2, 4), b"")).path, Path::instance(1, 0));
}

#[test]
fn deleting_what_is_not_there_is_not_a_failure_but_a_refused_write_is() {
    let (mut s, _) = Session::start(one_psk_server(), ContentFormat::Tlv);
    sent(s.on_response((4, 4), b""));
    sent(s.on_response((2, 2), b""));
    sent(s.on_response((2, 5), b"</0/0>"));
    match s.on_response((4, 0), b"bad TLV") {
        Next::Failed(e) => assert!(
            e.contains("Bootstrap-Write /0/1 answered 4.00: bad TLV"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn finish_refused_as_inconsistent_fails_the_session() {
    let (mut s, _) = Session::start(one_psk_server(), ContentFormat::Tlv);
    for code in [(2, 2), (2, 2), (2, 5), (2, 4), (2, 4)] {
        sent(s.on_response(code, b"</0/0>"));
    }
    match s.on_response((4, 6), b"no server account") {
        Next::Failed(e) => assert!(e.contains("Bootstrap-Finish answered 4.06"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.on_response((2, 4), b""), Next::Failed(_)));
}

#[test]
fn no_answer_ends_the_session_and_says_where() {
    let (mut s, _) = Session::start(one_psk_server(), ContentFormat::Tlv);
    match s.on_failure("timeout") {
        Next::Failed(e) => assert_eq!(e, "Bootstrap-Delete /0: no answer (timeout)"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_of_the_previous_servers_is_recorded() {
    let mut c = one_psk_server();
    c.read_servers = true;
    let (mut s, first) = Session::start(c, ContentFormat::Tlv);
    assert_eq!(
        (first.method, first.path, first.accept),
        (Method::Get, Path::object(1), Some(11542))
    );
    let (codecs, model) = shared();
    let previous = Node::Object(
        lwm2m_objects::Object::new(1).with(
            Instance::new(4)
                .with(single(0, Value::Integer(9)))
                .with(single(1, Value::Integer(60)))
                .with(single(6, Value::Boolean(false)))
                .with(single(7, Value::String("U".into()))),
        ),
    );
    let tlv = codecs
        .encode(ContentFormat::Tlv, &Path::object(1), &previous, model)
        .expect("encode");
    let o = sent(s.on_response((2, 5), &tlv));
    assert_eq!(o.path, Path::object(0));
    assert_eq!(
        s.report().previous_servers,
        Some(vec![PreviousServer {
            instance: 4,
            short_server_id: Some(9),
            lifetime: Some(60),
            binding: Some("U".into())
        }])
    );
}

#[test]
fn writes_go_in_the_format_the_device_prefers() {
    assert_eq!(write_format(None), Some(ContentFormat::Tlv));
    assert_eq!(write_format(Some(112)), Some(ContentFormat::SenmlCbor));
    assert_eq!(write_format(Some(0)), None);
    for format in [
        ContentFormat::SenmlCbor,
        ContentFormat::SenmlJson,
        ContentFormat::Lwm2mCbor,
    ] {
        let mut c = one_psk_server();
        c.delete.clear();
        let (mut s, _) = Session::start(c, format);
        let w = sent(s.on_response((2, 5), b"</0/0>"));
        assert_eq!(w.content_format, Some(format.code()));
        assert_eq!(value(&decode(&w), 10), Value::Integer(101), "{format:?}");
    }
}

#[test]
fn a_nosec_account_has_empty_credentials_and_mode_3() {
    let c = config(serde_json::json!({"delete": [], "servers":[
        {"short_server_id": 1, "uri": "coap://192.0.2.1:5683"}]}));
    assert_eq!(c.provision(), None);
    let (mut s, _) = Session::start(c, ContentFormat::Tlv);
    let sec = decode(&sent(s.on_response((2, 5), b"</0/0>")));
    assert_eq!(value(&sec, 2), Value::Integer(3));
    assert_eq!(value(&sec, 3), Value::Opaque(Vec::new()));
}
