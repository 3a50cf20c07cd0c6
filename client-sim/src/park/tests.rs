use super::*;

use std::net::SocketAddr;

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use lwm2m_server::coap::Endpoint;

/// Bounds a parked device is held to (the fleet's memory budget is about 2 KiB a
/// sleeping device, of which the record must leave most to the allocator, the table and
/// the timer heap): the record itself, and everything it holds for a device that has
/// run its sensors and has no observation; a device with one observation of a
/// resource may hold more, but not a client's worth.
const MAX_RECORD: usize = 160;
const MAX_FOOTPRINT: usize = 400;
const MAX_FOOTPRINT_OBSERVED: usize = 1024;

const SERVER: &str = "127.0.0.1:5683";

fn config() -> Config {
    Config::new(SERVER.parse().unwrap(), "fleet-0000042")
}

/// A device that has lived a while: its sensors ran, the server changed its lifetime,
/// its UTC offset and an error code list, deleted a resource instance.
fn lived(config: &Config) -> Core {
    let mut core = Core::new(config.clone()).expect("core");
    for _ in 0..25 {
        core.device
            .tick(&mut core.store, Duration::from_secs(1))
            .expect("tick");
    }
    let store = &mut core.store;
    store
        .set(&Path::resource(1, 0, 1), Value::Integer(7200))
        .expect("lifetime");
    store
        .set(&Path::resource(3, 0, 14), Value::String("+05:30".into()))
        .expect("offset");
    store
        .delete(&Path::resource_instance(3, 0, 6, 1), Actor::Device)
        .expect("delete");
    core.config.lifetime = 7200;
    core
}

fn observe(core: &mut Core, path: &str, token: &[u8]) {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    for s in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    p.set_token(token.to_vec());
    p.set_observe_value(0);
    let (resp, _, _) = core.handle(Instant::now(), SERVER.parse().unwrap(), &p);
    assert_eq!(
        resp.header.code,
        MessageClass::Response(coap_lite::ResponseType::Content)
    );
}

fn capture(config: &Config, core: &Core) -> Parked {
    let now = Instant::now();
    Parked::capture(Capture {
        config,
        core,
        location: "/rd/KEV-LCwBvR4Y",
        driver_rng: &Rng::raw(99),
        timers: Timers {
            wake_at: Some(now + Duration::from_secs(600)),
            update_at: Some(now + Duration::from_secs(2700)),
            reboot_at: None,
        },
        now,
        last_port: Some(40_000),
        last_mid: Some(0x1234),
        wakes: 3,
        objects_changed: false,
    })
    .expect("parks")
}

fn tree(store: &ObjectStore) -> Vec<Node> {
    store
        .layout()
        .into_iter()
        .map(|(o, _)| store.read(&Path::object(o), Actor::Device).expect("object"))
        .collect()
}

#[test]
fn a_parked_record_is_small() {
    let config = config();
    let mut core = lived(&config);
    let parked = capture(&config, &core);
    println!(
        "record {} bytes, tree difference {} bytes, footprint {} bytes",
        size_of::<Parked>(),
        parked.tree_bytes(),
        parked.footprint()
    );
    assert!(size_of::<Parked>() <= MAX_RECORD, "{}", size_of::<Parked>());
    assert!(
        parked.footprint() <= MAX_FOOTPRINT,
        "{} bytes (tree {})",
        parked.footprint(),
        parked.tree_bytes()
    );
    observe(&mut core, "/3/0/9", &[1, 2, 3, 4]);
    let observed = capture(&config, &core);
    println!("with an observation: {} bytes", observed.footprint());
    assert_eq!(observed.observations(), 1);
    assert!(
        observed.footprint() <= MAX_FOOTPRINT_OBSERVED,
        "{}",
        observed.footprint()
    );
}

#[test]
fn a_parked_device_comes_back_as_it_was() {
    let config = config();
    let mut core = lived(&config);
    observe(&mut core, "/3/0/9", &[7, 7]);
    let parked = capture(&config, &core);
    assert_eq!(parked.location(), "/rd/KEV-LCwBvR4Y");
    let mut back = parked.restore(config.clone()).expect("restores");
    assert_eq!(tree(&back.core.store), tree(&core.store));
    assert_eq!(back.core.config.lifetime, 7200);
    assert_eq!(back.core.seq(), core.seq());
    assert_eq!(
        back.core
            .observations
            .iter()
            .map(|o| (o.token.clone(), o.seq, o.last.clone()))
            .collect::<Vec<_>>(),
        core.observations
            .iter()
            .map(|o| (o.token.clone(), o.seq, o.last.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        (back.last_port, back.last_mid, back.wakes),
        (Some(40_000), Some(0x1234), 3)
    );
    assert!(back.timers.wake_at.is_some() && back.timers.reboot_at.is_none());
    // The sensors walk on as they would have: the same next step on both.
    let step = Duration::from_secs(1);
    core.device.tick(&mut core.store, step).expect("tick");
    back.core
        .device
        .tick(&mut back.core.store, step)
        .expect("tick");
    for path in [
        Path::resource(3, 0, 9),
        Path::resource(4, 0, 2),
        Path::resource(6, 0, 0),
        Path::resource(6, 0, 1),
    ] {
        assert_eq!(
            back.core.store.value(&path),
            core.store.value(&path),
            "{path}"
        );
    }
}

#[test]
fn every_kind_of_tree_change_survives_the_encoding() {
    let mut config = config();
    config.extra_objects = vec![9];
    let initial = crate::ops::initial_store(&config).expect("initial");
    let mut store = initial.clone();
    store.add_instance(9, 3).expect("instance");
    store
        .set(&Path::resource(9, 3, 0), Value::String("pkg".into()))
        .expect("set");
    store
        .set(
            &Path::resource(5, 0, 1),
            Value::String("coap://h/fw".into()),
        )
        .expect("uri");
    store
        .set(&Path::resource(3, 0, 13), Value::Time(-5))
        .expect("time");
    store
        .set(&Path::resource(6, 0, 0), Value::Float(-0.000_123_456_789))
        .expect("float");
    store
        .set_multiple(&Path::resource(4, 0, 4), BTreeMap::new())
        .expect("empty multiple");
    store
        .delete(&Path::instance(6, 0), Actor::Device)
        .expect("delete instance");
    let bytes = encode_tree(&store, &initial).expect("encodes");
    let mut back = initial.clone();
    decode_tree(&mut back, &bytes).expect("decodes");
    assert_eq!(tree(&back), tree(&store));
    assert!(encode_tree(&initial, &initial).expect("encodes").is_empty());
    // A damaged record is an error, not a panic or a half-applied tree of nonsense.
    for cut in 0..bytes.len() {
        let mut t = initial.clone();
        let _ = decode_tree(&mut t, &bytes[..cut]);
    }
    assert!(decode_tree(&mut initial.clone(), &[9, 0, 0]).is_err());
}

#[test]
fn a_resumed_endpoint_continues_the_message_ids() {
    let server: SocketAddr = SERVER.parse().unwrap();
    for (last, random) in [(0u16, 0u64), (0x1234, 0xDEAD_BEEF_0000_0000), (u16::MAX, 7)] {
        let mut ep = Endpoint::new(
            lwm2m_server::coap::Config::default(),
            seed_after(last, random),
        );
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(RequestType::Post);
        p.add_option(CoapOption::UriPath, b"rd".to_vec());
        ep.send_request(Instant::now(), server, p, true)
            .expect("request");
        let t = ep.poll_transmit().expect("a datagram");
        let mid = u16::from_be_bytes([t.bytes[2], t.bytes[3]]);
        assert_eq!(mid, last.wrapping_add(1), "after {last}");
    }
}
