//! Behaviour the specification and real devices fix, checked end to end
//! through `parse_request` and `Registry` with a simulated clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_objects::Version;

use super::*;

fn q(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn rd() -> Vec<String> {
    q(&["rd"])
}

fn loc(id: &str) -> Vec<String> {
    q(&["rd", id])
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

const OBJECTS: &[u8] = b"</>;ct=112,</1/0>,</3/0>,</4/0>,</5/0>";

fn register_req(query: &[&str]) -> Result<RdRequest, RegistrationError> {
    parse_request(Method::Post, &rd(), &q(query), OBJECTS, Some(LINK_FORMAT))
}

fn parse_register(query: &[&str]) -> RegisterRequest {
    match register_req(query) {
        Ok(RdRequest::Register(r)) => r,
        other => panic!("expected a Register, got {other:?}"),
    }
}

fn update_req(id: &str, query: &[&str], payload: &[u8]) -> RdRequest {
    parse_request(Method::Post, &loc(id), &q(query), payload, None).unwrap()
}

fn config() -> RegistryConfig {
    RegistryConfig {
        max_registrations: 4,
        expiry_grace: Duration::from_secs(10),
        awake_window: Duration::from_secs(93),
        max_queued_per_device: 3,
    }
}

/// Ids 0, 1, 2, ... so tests can also force collisions.
struct Counter(u64, u64);

impl IdSource for Counter {
    fn next_bytes(&mut self) -> Option<[u8; ID_BYTES]> {
        let mut b = [0u8; ID_BYTES];
        b[ID_BYTES - 8..].copy_from_slice(&(self.0 / self.1).to_be_bytes());
        self.0 += 1;
        Some(b)
    }
}

fn registry() -> Registry<&'static str> {
    Registry::new(config())
}

fn register(reg: &mut Registry<&'static str>, query: &[&str], now: Instant) -> Registered {
    match reg.handle(register_req(query).unwrap(), peer(5683), now) {
        Ok(RdOutcome::Registered(r)) => r,
        other => panic!("expected Registered, got {other:?}"),
    }
}

#[test]
fn a_register_again_keeps_the_shared_name() {
    let mut reg = Registry::new(config());
    let t0 = Instant::now();
    let first = register(&mut reg, &["ep=a", "lt=60"], t0);
    let name = reg.get(&first.id).unwrap().endpoint.clone();
    let second = register(&mut reg, &["ep=a", "lt=60"], t0);
    assert_ne!(first.id, second.id);
    assert!(Arc::ptr_eq(&reg.get(&second.id).unwrap().endpoint, &name));
}

#[test]
fn extras_take_room_only_when_sent() {
    let mut reg = Registry::new(config());
    let t0 = Instant::now();
    let plain = register(&mut reg, &["ep=a", "lt=60"], t0);
    assert!(reg.get(&plain.id).unwrap().extras.is_none());
    let with = register(&mut reg, &["ep=b", "lt=60", "pid=6:1", "vendor=7"], t0);
    let r = reg.get(&with.id).unwrap();
    assert_eq!((r.profile_id(), r.sms()), (Some("6:1"), None));
    assert_eq!(
        r.extra_params(),
        [("vendor".to_string(), Some("7".to_string()))]
    );
    // An Update that brings an SMS number keeps what was there.
    let u = match update_req(&with.id, &["sms=+358"], b"") {
        RdRequest::Update(u) => u,
        _ => unreachable!(),
    };
    assert!(reg.update(u, peer(5683), t0).unwrap().changes.sms);
    let r = reg.get(&with.id).unwrap();
    assert_eq!((r.profile_id(), r.sms()), (Some("6:1"), Some("+358")));
}

// ----------------------------------------------------------- parsing

#[test]
fn zephyr_1_1_queue_mode_register() {
    // Zephyr's order: lwm2m, ep, lt, b (only when not U or queue on), bare Q.
    let r = parse_register(&[
        "lwm2m=1.1",
        "ep=urn:imei:351358811331351",
        "lt=43200",
        "b=U",
        "Q",
    ]);
    assert_eq!(r.endpoint, "urn:imei:351358811331351");
    assert_eq!(r.version, Version::V1_1);
    assert_eq!(r.lifetime_s, 43200);
    assert!(r.binding.udp && !r.binding.queue);
    assert!(r.queue_mode);
    assert_eq!(r.objects.content_formats, vec![112]);
    assert_eq!(r.objects.objects.len(), 4);
}

#[test]
fn one_point_zero_queue_mode_is_in_the_binding() {
    let r = parse_register(&["lwm2m=1.0", "ep=dev", "lt=60", "b=UQ"]);
    assert_eq!(r.version, Version::V1_0);
    assert!(r.binding.udp && r.binding.queue);
    assert!(r.queue_mode);
}

#[test]
fn leshan_style_order_and_defaults() {
    // Leshan's client: ep first, then lt, lwm2m, b; no Q.
    let r = parse_register(&["ep=leshan", "lt=300", "lwm2m=1.2", "b=U"]);
    assert_eq!(
        (r.endpoint.as_str(), r.lifetime_s, r.version),
        ("leshan", 300, Version::V1_2)
    );
    assert!(!r.queue_mode);
    // Only ep: 1.0 defaults (lwm2m 1.0, lt 86400, b U).
    let r = parse_register(&["ep=old"]);
    assert_eq!(r.version, Version::V1_0);
    assert_eq!(r.lifetime_s, DEFAULT_LIFETIME_S);
    assert_eq!(r.binding, Binding::default());
}

#[test]
fn extra_and_1_2_parameters_are_kept() {
    let r = parse_register(&[
        "ep=x",
        "lwm2m=1.2",
        "pid=6:1234abcd",
        "sms=+3581234",
        "vendor=7",
    ]);
    assert_eq!(r.profile_id.as_deref(), Some("6:1234abcd"));
    assert_eq!(r.sms.as_deref(), Some("+3581234"));
    assert_eq!(
        r.extra_params,
        vec![("vendor".to_string(), Some("7".to_string()))]
    );
}

fn code_of(query: &[&str]) -> (u8, u8) {
    register_req(query).unwrap_err().code
}

#[test]
fn missing_or_malformed_parameters_get_4_00_with_a_diagnostic() {
    let e = register_req(&["lwm2m=1.1", "lt=60"]).unwrap_err();
    assert_eq!(e.code, (4, 0));
    assert!(e.message.contains("ep"), "{e}");
    let e = register_req(&["ep=x", "lt=abc"]).unwrap_err();
    assert_eq!(e.code, (4, 0));
    assert!(e.message.contains("lt"), "{e}");
    for bad in [
        &["ep=x", "lt=-1"][..],
        &["ep=x", "lt="],
        &["ep=x", "lt"],
        &["ep=x", "lt=4294967296"],
        &["ep=x", "lt=+5"],
        &["ep=x", "b=UX"],
        &["ep=x", "b="],
        &["ep=x", "Q=1"],
        &["ep=x", "ep=y"],
        &["ep=x", "lt=60", "lt=60"],
        &["ep="],
        &["ep"],
        &["ep=a\nb"],
        &["ep=x", "lwm2m=1"],
        &["ep=x", "lwm2m=v1.1"],
        &["ep=x", "=5"],
    ] {
        assert_eq!(code_of(bad), (4, 0), "{bad:?}");
    }
    let long = format!("ep={}", "e".repeat(MAX_ENDPOINT_LEN + 1));
    assert_eq!(code_of(&[&long]), (4, 0));
    let ok = format!("ep={}", "e".repeat(MAX_ENDPOINT_LEN));
    assert!(register_req(&[&ok]).is_ok());
    let many: Vec<String> = (0..=MAX_QUERY_OPTIONS).map(|i| format!("x{i}=1")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(code_of(&many), (4, 0));
}

#[test]
fn diagnostics_do_not_echo_long_input() {
    let lt = format!("lt={}", "9".repeat(200));
    let e = register_req(&["ep=x", &lt]).unwrap_err();
    assert!(e.message.len() < 120, "{}", e.message);
}

#[test]
fn unsupported_versions_get_4_12_even_without_ep() {
    for v in ["lwm2m=2.0", "lwm2m=1.3", "lwm2m=0.9", "lwm2m=3.1"] {
        let e = register_req(&["ep=x", v]).unwrap_err();
        assert_eq!(e.code, (4, 12), "{v}");
        assert!(e.message.contains("not supported"), "{e}");
        assert_eq!(
            register_req(&[v, "future=param"]).unwrap_err().code,
            (4, 12),
            "{v}"
        );
    }
    for v in ["1.0", "1.1", "1.2"] {
        let r = parse_register(&["ep=x", &format!("lwm2m={v}")]);
        assert_eq!(r.version.to_string(), v);
    }
}

#[test]
fn payload_checks() {
    let post = |payload: &[u8], cf| parse_request(Method::Post, &rd(), &q(&["ep=x"]), payload, cf);
    // Not link format.
    assert_eq!(post(b"{\"a\":1}", None).unwrap_err().code, (4, 0));
    assert_eq!(post(b"</1/0", Some(40)).unwrap_err().code, (4, 0));
    assert_eq!(post(&[0xff, 0xfe], Some(40)).unwrap_err().code, (4, 0));
    // Another content format.
    assert_eq!(post(OBJECTS, Some(0)).unwrap_err().code, (4, 15));
    assert_eq!(post(OBJECTS, Some(11542)).unwrap_err().code, (4, 15));
    // No content format, or an empty payload with any: accepted.
    assert!(post(OBJECTS, None).is_ok());
    assert!(post(b"", Some(0)).is_ok());
    let big = vec![b' '; MAX_PAYLOAD_LEN + 1];
    assert_eq!(post(&big, Some(40)).unwrap_err().code, (4, 13));
    // Quirk 1: repeated ct, and no </> link at all.
    match post(b"</>;ct=110;ct=112,</1/0>,</3/0>", Some(40)).unwrap() {
        RdRequest::Register(r) => assert_eq!(r.objects.content_formats, vec![110, 112]),
        other => panic!("{other:?}"),
    }
    assert!(post(b"</1/0>,</3/0>", Some(40)).is_ok());
}

#[test]
fn routes_and_methods() {
    let p = |m, path: &[&str]| parse_request(m, &q(path), &[], b"", None);
    assert_eq!(p(Method::Get, &["rd"]).unwrap_err().code, (4, 5));
    assert_eq!(p(Method::Put, &["rd", "abc"]).unwrap_err().code, (4, 5));
    assert_eq!(p(Method::Post, &["rd", "a", "b"]).unwrap_err().code, (4, 4));
    assert_eq!(p(Method::Post, &["bs"]).unwrap_err().code, (4, 4));
    assert_eq!(p(Method::Post, &[]).unwrap_err().code, (4, 4));
    assert_eq!(
        p(Method::Delete, &["rd", "abc"]).unwrap(),
        RdRequest::Deregister { id: "abc".into() }
    );
    // Zephyr's bare Update: no query, no payload.
    assert_eq!(
        p(Method::Post, &["rd", "abc"]).unwrap(),
        RdRequest::Update(UpdateRequest {
            id: "abc".into(),
            ..UpdateRequest::default()
        })
    );
}

#[test]
fn update_parameters() {
    let RdRequest::Update(u) = update_req("i", &["lt=90", "b=UQ", "sms=123", "ep=ignored"], b"")
    else {
        panic!()
    };
    assert_eq!(u.lifetime_s, Some(90));
    assert!(u.binding.is_some_and(|b| b.queue));
    assert_eq!(u.sms.as_deref(), Some("123"));
    assert!(u.objects.is_none());
    let e = parse_request(Method::Post, &loc("i"), &q(&["lt=x"]), b"", None).unwrap_err();
    assert_eq!(e.code, (4, 0));
}

// ----------------------------------------------------------- registry

#[test]
fn register_gives_a_short_url_safe_location() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["ep=a", "lt=60"], t0);
    assert_eq!(r.location_path, vec!["rd".to_string(), r.id.clone()]);
    assert!(r.id.len() <= 12 && r.id.len() <= 32, "{}", r.id);
    assert!(r
        .id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert!(r.replaced.is_none());
    let got = reg.get(&r.id).unwrap();
    assert_eq!(&*got.endpoint, "a");
    assert_eq!(got.peer, peer(5683));
    assert_eq!(reg.by_endpoint("a").map(|g| &*g.id), Some(r.id.as_str()));
    let other = register(&mut reg, &["ep=b"], t0);
    assert_ne!(other.id, r.id);
}

#[test]
fn re_register_replaces_and_reports_the_old_registration() {
    let mut reg = registry();
    let t0 = Instant::now();
    let first = register(&mut reg, &["ep=a", "lt=60", "b=UQ"], t0);
    reg.enqueue(&first.id, "read /3/0", t0 + Duration::from_secs(600))
        .unwrap();
    let second = register(
        &mut reg,
        &["ep=a", "lt=120", "lwm2m=1.1"],
        t0 + Duration::from_secs(5),
    );
    assert_ne!(first.id, second.id);
    let old = second.replaced.expect("the old registration");
    assert_eq!((&*old.id, old.lifetime_s), (first.id.as_str(), 60));
    assert_eq!(reg.len(), 1);
    assert!(reg.get(&first.id).is_none());
    assert_eq!(reg.by_endpoint("a").unwrap().id.as_ref(), second.id);
    // The old id is gone for Update and De-register.
    let e = reg
        .handle(update_req(&first.id, &[], b""), peer(1), t0)
        .unwrap_err();
    assert_eq!(e.code, (4, 4));
    // Queued requests belong to the device and moved with it.
    assert_eq!(reg.queued(&second.id), 1);
    // Only the new registration's expiry remains.
    assert_eq!(
        reg.next_expiry(),
        Some(t0 + Duration::from_secs(5 + 120 + 10))
    );
}

#[test]
fn update_without_parameters_refreshes_the_lifetime_only() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["ep=a", "lt=60"], t0);
    let before = reg.get(&r.id).unwrap().clone();
    assert_eq!(reg.expires_at(&r.id), Some(t0 + Duration::from_secs(70)));
    let t1 = t0 + Duration::from_secs(50);
    let out = reg
        .handle(update_req(&r.id, &[], b""), peer(5683), t1)
        .unwrap();
    assert_eq!(
        out,
        RdOutcome::Updated(Updated {
            id: r.id.clone(),
            changes: Changes::default()
        })
    );
    assert_eq!(reg.expires_at(&r.id), Some(t1 + Duration::from_secs(70)));
    let after = reg.get(&r.id).unwrap();
    assert_eq!(after.refreshed_at, t1);
    assert_eq!(
        (after.lifetime_s, &after.objects, after.binding),
        (before.lifetime_s, &before.objects, before.binding)
    );
    // Past the old expiry, still registered.
    assert!(reg.expire(t0 + Duration::from_secs(100)).is_empty());
    assert_eq!(reg.len(), 1);
}

#[test]
fn update_applies_only_given_parameters() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["ep=a", "lt=60", "sms=1"], t0);
    let out = reg
        .update(
            match update_req(&r.id, &["lt=300"], b"</1/0>,</3/0>,</33629/1>") {
                RdRequest::Update(u) => u,
                _ => unreachable!(),
            },
            peer(40000),
            t0,
        )
        .unwrap();
    assert!(out.changes.lifetime && out.changes.objects && out.changes.peer);
    assert!(!out.changes.binding && !out.changes.sms && !out.changes.queue_mode);
    let g = reg.get(&r.id).unwrap();
    assert_eq!(g.lifetime_s, 300);
    assert_eq!(g.sms(), Some("1"));
    assert_eq!(g.peer, peer(40000), "quirk 2: new port after sleep");
    assert_eq!(g.objects.instances(33629).collect::<Vec<_>>(), vec![1]);
    assert!(
        g.objects.content_formats.is_empty(),
        "payload replaced the list"
    );
}

#[test]
fn update_and_deregister_of_unknown_ids_get_4_04() {
    let mut reg = registry();
    let t0 = Instant::now();
    let e = reg
        .handle(update_req("nope", &[], b""), peer(1), t0)
        .unwrap_err();
    assert_eq!(e.code, (4, 4));
    let del = parse_request(Method::Delete, &loc("nope"), &[], b"", None).unwrap();
    assert_eq!(reg.handle(del, peer(1), t0).unwrap_err().code, (4, 4));
}

#[test]
fn deregister_removes_and_hands_back_queued_requests() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["ep=a", "b=UQ"], t0);
    reg.enqueue(&r.id, "w1", t0 + Duration::from_secs(999))
        .unwrap();
    let del = parse_request(Method::Delete, &loc(&r.id), &[], b"", None).unwrap();
    match reg.handle(del, peer(1), t0).unwrap() {
        RdOutcome::Deregistered(d) => {
            assert_eq!(&*d.registration.id, r.id);
            assert_eq!(d.dropped, vec!["w1"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(reg.is_empty() && reg.by_endpoint("a").is_none() && reg.next_expiry().is_none());
    let del = parse_request(Method::Delete, &loc(&r.id), &[], b"", None).unwrap();
    assert_eq!(reg.handle(del, peer(1), t0).unwrap_err().code, (4, 4));
}

#[test]
fn expiry_is_exact_at_the_boundary() {
    let mut reg = registry();
    let t0 = Instant::now();
    let a = register(&mut reg, &["ep=a", "lt=30"], t0);
    let b = register(&mut reg, &["ep=b", "lt=60"], t0);
    let _forever = register(&mut reg, &["ep=c", "lt=0"], t0);
    let at = t0 + Duration::from_secs(30 + 10);
    assert_eq!(reg.next_expiry(), Some(at));
    let just_before = at - Duration::from_nanos(1);
    assert!(reg.expire(just_before).is_empty());
    assert!(
        reg.is_awake(&a.id, just_before),
        "not queue mode: always awake"
    );
    // An Update right at the boundary is too late: 4.04, register again.
    let e = reg
        .handle(update_req(&a.id, &[], b""), peer(1), at)
        .unwrap_err();
    assert_eq!(e.code, (4, 4));
    let gone = reg.expire(at);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].registration.id.as_ref(), a.id);
    assert!(reg.get(&a.id).is_none() && reg.by_endpoint("a").is_none());
    assert_eq!(reg.next_expiry(), Some(t0 + Duration::from_secs(70)));
    let gone = reg.expire(t0 + Duration::from_secs(10 * 365 * 86400));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].registration.id.as_ref(), b.id);
    assert_eq!(reg.len(), 1, "lt=0 never expires");
    assert_eq!(reg.next_expiry(), None);
}

#[test]
fn the_table_is_capped_with_5_03_but_re_register_still_works() {
    let mut reg = registry();
    let t0 = Instant::now();
    for i in 0..4 {
        register(&mut reg, &[&format!("ep=d{i}")], t0);
    }
    let e = reg
        .handle(register_req(&["ep=d9"]).unwrap(), peer(1), t0)
        .unwrap_err();
    assert_eq!(e.code, (5, 3));
    assert_eq!(reg.len(), 4);
    let r = register(&mut reg, &["ep=d2"], t0);
    assert!(r.replaced.is_some());
}

#[test]
fn ids_sort_in_the_order_they_were_issued_and_differ_in_their_random_tail() {
    // Many in one millisecond, then some later: each sorts after the one before.
    let mut ids = OsIds::default();
    let drawn: Vec<String> = (0..2_000)
        .map(|_| encode_id(&ids.next_bytes().unwrap()))
        .collect();
    for pair in drawn.windows(2) {
        assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
    }
    for id in &drawn {
        assert_eq!(id.len(), ID_LEN);
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
    let tails: std::collections::HashSet<&str> = drawn.iter().map(|id| &id[7..]).collect();
    assert!(
        tails.len() > 1_990,
        "random tails repeat: {} distinct",
        tails.len()
    );
    // The alphabet is in ASCII order, so the encoding keeps the bytes' order.
    let (mut low, mut high) = ([0u8; ID_BYTES], [0u8; ID_BYTES]);
    low[ID_BYTES - 1] = 63;
    high[ID_BYTES - 2] = 1;
    assert!(encode_id(&low) < encode_id(&high));
}

#[test]
fn colliding_ids_are_redrawn_and_exhaustion_is_an_error() {
    // Each id value comes twice in a row: the second draw collides.
    let mut reg: Registry<()> = Registry::with_id_source(config(), Box::new(Counter(0, 2)));
    let t0 = Instant::now();
    let a = reg
        .register(parse_register(&["ep=a"]), peer(1), t0)
        .unwrap();
    let b = reg
        .register(parse_register(&["ep=b"]), peer(1), t0)
        .unwrap();
    assert_ne!(a.id, b.id);
    struct Same;
    impl IdSource for Same {
        fn next_bytes(&mut self) -> Option<[u8; ID_BYTES]> {
            Some([7; ID_BYTES])
        }
    }
    let mut reg: Registry<()> = Registry::with_id_source(config(), Box::new(Same));
    reg.register(parse_register(&["ep=a"]), peer(1), t0)
        .unwrap();
    let e = reg
        .register(parse_register(&["ep=b"]), peer(1), t0)
        .unwrap_err();
    assert_eq!(e.code, (5, 0));
}

// ----------------------------------------------------------- queue mode

#[test]
fn queue_mode_device_is_awake_only_in_its_window() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["lwm2m=1.1", "ep=z", "lt=3600", "b=U", "Q"], t0);
    let end = t0 + Duration::from_secs(93);
    assert_eq!(reg.awake_until(&r.id), Some(end));
    assert!(reg.is_awake(&r.id, end - Duration::from_nanos(1)));
    assert!(!reg.is_awake(&r.id, end));
    // Any message from the device restarts the window.
    reg.touch(&r.id, end + Duration::from_secs(5));
    assert!(reg.is_awake(&r.id, end + Duration::from_secs(50)));
    assert!(!reg.is_awake("unknown", t0));
    let plain = register(&mut reg, &["ep=p"], t0);
    assert_eq!(reg.awake_until(&plain.id), None);
    assert!(reg.is_awake(&plain.id, t0 + Duration::from_secs(10_000)));
}

#[test]
fn queued_requests_wait_for_the_device_and_leave_in_order() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["lwm2m=1.1", "ep=z", "lt=3600", "Q"], t0);
    let asleep = t0 + Duration::from_secs(200);
    assert!(!reg.is_awake(&r.id, asleep));
    let far = t0 + Duration::from_secs(10_000);
    for req in ["write /5/0/1", "execute /5/0/2", "read /3/0/3"] {
        reg.enqueue(&r.id, req, far).unwrap();
    }
    // Full queue hands the request back.
    let (e, back) = reg.enqueue(&r.id, "fourth", far).unwrap_err();
    assert_eq!((e, back), (EnqueueError::QueueFull(3), "fourth"));
    // Asleep: nothing is released, however often asked.
    for i in 0..5u64 {
        let out = reg.take_ready(&r.id, asleep + Duration::from_secs(i));
        assert!(out.ready.is_empty() && out.expired.is_empty());
    }
    assert_eq!(reg.queued(&r.id), 3);
    // The device wakes with an Update: released at once, in order.
    let wake = t0 + Duration::from_secs(300);
    reg.handle(update_req(&r.id, &[], b""), peer(5683), wake)
        .unwrap();
    let out = reg.take_ready(&r.id, wake);
    assert_eq!(
        out.ready,
        vec!["write /5/0/1", "execute /5/0/2", "read /3/0/3"]
    );
    assert!(out.expired.is_empty());
    assert_eq!(reg.queued(&r.id), 0);
    assert!(reg.take_ready(&r.id, wake).ready.is_empty());
}

#[test]
fn expired_queue_entries_are_dropped_and_reported() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["lwm2m=1.0", "ep=z", "b=UQ"], t0);
    let asleep = t0 + Duration::from_secs(100);
    reg.enqueue(&r.id, "short", asleep + Duration::from_secs(10))
        .unwrap();
    reg.enqueue(&r.id, "long", asleep + Duration::from_secs(1000))
        .unwrap();
    reg.enqueue(&r.id, "mid", asleep + Duration::from_secs(20))
        .unwrap();
    assert_eq!(
        reg.next_queue_expiry(),
        Some(asleep + Duration::from_secs(10))
    );
    // While asleep, expiry at the exact instant drops the entry.
    let out = reg.take_ready(&r.id, asleep + Duration::from_secs(10));
    assert_eq!((out.ready, out.expired), (vec![], vec!["short"]));
    let gone = reg.expire_queued(asleep + Duration::from_secs(20));
    assert_eq!(gone, vec![(r.id.clone(), "mid")]);
    let wake = asleep + Duration::from_secs(30);
    reg.handle(update_req(&r.id, &[], b""), peer(5683), wake)
        .unwrap();
    let out = reg.take_ready(&r.id, wake);
    assert_eq!((out.ready, out.expired), (vec!["long"], vec![]));
    assert!(matches!(
        reg.enqueue("nope", "x", wake),
        Err((EnqueueError::UnknownRegistration(_), "x"))
    ));
}

#[test]
fn update_can_switch_queue_mode() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["lwm2m=1.1", "ep=z", "Q"], t0);
    // No b and no Q: unchanged.
    let RdOutcome::Updated(u) = reg
        .handle(update_req(&r.id, &["lt=50"], b""), peer(5683), t0)
        .unwrap()
    else {
        panic!()
    };
    assert!(!u.changes.queue_mode && reg.get(&r.id).unwrap().queue_mode);
    // b without Q: off.
    let RdOutcome::Updated(u) = reg
        .handle(update_req(&r.id, &["b=U"], b""), peer(5683), t0)
        .unwrap()
    else {
        panic!()
    };
    assert!(u.changes.queue_mode && !reg.get(&r.id).unwrap().queue_mode);
    assert!(reg.is_awake(&r.id, t0 + Duration::from_secs(1000)));
    assert_eq!(
        reg.awake_count(),
        1,
        "a device not in queue mode counts as awake"
    );
    // Q again: on, awake for its window from this Update, asleep after it.
    let t1 = t0 + Duration::from_secs(10);
    let RdOutcome::Updated(u) = reg
        .handle(update_req(&r.id, &["b=U", "Q"], b""), peer(5683), t1)
        .unwrap()
    else {
        panic!()
    };
    assert!(u.changes.queue_mode && reg.get(&r.id).unwrap().queue_mode);
    assert_eq!(reg.awake_until(&r.id), Some(t1 + config().awake_window));
    assert!(!reg.is_awake(&r.id, t1 + config().awake_window + Duration::from_secs(1)));
    assert_eq!(reg.awake_count(), 1);
    reg.fall_asleep(t1 + config().awake_window + Duration::from_secs(1));
    assert_eq!(reg.awake_count(), 0, "{:?}", reg.awake_until(&r.id));
}

#[test]
fn restore_puts_back_a_stored_registration_with_its_times() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["ep=a", "lt=60", "b=UQ"], t0);
    let stored = reg.get(&r.id).unwrap().clone();
    let mut fresh = registry();
    assert_eq!(fresh.restore(stored.clone()).unwrap(), None);
    assert_eq!(fresh.expires_at(&r.id), Some(t0 + Duration::from_secs(70)));
    assert_eq!(fresh.by_endpoint("a").unwrap().id.as_ref(), r.id);
    assert_eq!(fresh.restore(stored.clone()).unwrap(), Some(stored));
    assert_eq!(fresh.len(), 1);
}

// ----------------------------------------------------------- arbitrary input

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    fn query_option() -> impl Strategy<Value = String> {
        prop_oneof![
            "(ep|lt|lwm2m|b|Q|sms|pid|x)(=[ -~]{0,12})?",
            "[ -~\u{80}-\u{10ffff}]{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever a peer sends, parsing answers with a request or a
        /// 4.xx, and the registry never panics applying it.
        #[test]
        fn any_request_is_answered_without_panic(
            method in prop_oneof![Just(Method::Post), Just(Method::Delete), Just(Method::Get)],
            path in proptest::collection::vec("(rd|[a-zA-Z0-9_-]{0,14})", 0..4),
            query in proptest::collection::vec(query_option(), 0..10),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            cf in proptest::option::of(prop_oneof![Just(40u16), any::<u16>()]),
        ) {
            let now = Instant::now();
            let mut reg: Registry<()> = Registry::new(config());
            match parse_request(method, &path, &query, &payload, cf) {
                Ok(req) => {
                    if let Err(e) = reg.handle(req, peer(1), now) {
                        prop_assert!(e.code.0 == 4 || e.code.0 == 5, "{e}");
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e.code.0, 4, "{}", e);
                    prop_assert!(e.message.len() < 300, "{}", e);
                }
            }
        }
    }
}

// ----------------------------------------------------------- awake and asleep, inventory

#[test]
fn a_queue_mode_device_falls_asleep_once_and_wakes_when_it_speaks() {
    let mut reg = registry();
    let t0 = Instant::now();
    let r = register(&mut reg, &["lwm2m=1.1", "ep=z", "lt=3600", "Q"], t0);
    let plain = register(&mut reg, &["ep=p", "lt=3600"], t0);
    assert!(reg.marked_awake(&r.id) && reg.marked_awake(&plain.id));
    assert_eq!(reg.awake_count(), 2);
    let end = t0 + Duration::from_secs(93);
    assert_eq!(reg.next_sleep(), Some(end));
    assert!(reg.fall_asleep(end - Duration::from_millis(1)).is_empty());
    assert_eq!(reg.fall_asleep(end), vec![(r.id.clone(), "z".to_string())]);
    assert!(
        reg.fall_asleep(end + Duration::from_secs(1)).is_empty(),
        "reported once"
    );
    assert!(!reg.marked_awake(&r.id));
    assert_eq!(
        reg.awake_count(),
        1,
        "the device without queue mode stays awake"
    );
    assert_eq!(reg.next_sleep(), None);
    // A notification or response wakes it: reported once, then the window restarts.
    let t1 = end + Duration::from_secs(100);
    assert!(reg.touch(&r.id, t1));
    assert!(!reg.touch(&r.id, t1 + Duration::from_secs(1)));
    assert_eq!(reg.last_seen(&r.id), Some(t1 + Duration::from_secs(1)));
    assert_eq!(reg.next_sleep(), Some(t1 + Duration::from_secs(94)));
    assert_eq!(reg.awake_count(), 2);
    // Touching a device without queue mode changes its last-seen time only.
    assert!(!reg.touch(&plain.id, t1));
    assert_eq!(reg.last_seen(&plain.id), Some(t1));
    // An Update marks it awake again too; a De-register leaves nothing behind.
    reg.fall_asleep(t1 + Duration::from_secs(94));
    assert!(!reg.marked_awake(&r.id));
    let t2 = t1 + Duration::from_secs(200);
    reg.handle(update_req(&r.id, &[], b""), peer(5683), t2)
        .unwrap();
    assert!(reg.marked_awake(&r.id));
    reg.deregister(&r.id, t2).unwrap();
    assert_eq!(reg.next_sleep(), None);
    assert_eq!(reg.awake_count(), 1);
}

#[test]
fn queued_total_follows_every_way_in_and_out() {
    let mut reg = registry();
    let t0 = Instant::now();
    let a = register(&mut reg, &["lwm2m=1.1", "ep=a", "lt=3600", "Q"], t0);
    let b = register(&mut reg, &["lwm2m=1.1", "ep=b", "lt=3600", "Q"], t0);
    let asleep = t0 + Duration::from_secs(200);
    let soon = asleep + Duration::from_secs(10);
    let far = t0 + Duration::from_secs(10_000);
    reg.enqueue(&a.id, "a1", far).unwrap();
    reg.enqueue(&a.id, "a2", soon).unwrap();
    reg.enqueue(&b.id, "b1", far).unwrap();
    assert_eq!(reg.queued_total(), 3);
    assert_eq!(
        reg.next_queue_expiry(),
        Some(soon),
        "the earliest, across devices"
    );
    assert_eq!(
        reg.queued_items(&a.id).copied().collect::<Vec<_>>(),
        ["a1", "a2"]
    );
    assert_eq!(reg.expire_queued(soon).len(), 1);
    assert_eq!(reg.queued_total(), 2);
    assert_eq!(reg.next_queue_expiry(), Some(far));
    assert!(reg.expire_queued(soon).is_empty(), "nothing twice");
    // Re-registering moves the queue to the new registration: still counted once.
    let a2 = register(&mut reg, &["lwm2m=1.1", "ep=a", "lt=3600", "Q"], soon);
    assert_eq!(reg.queued_total(), 2);
    assert_eq!(reg.take_ready(&a2.id, soon).ready, ["a1"]);
    assert_eq!(reg.queued_total(), 1);
    reg.deregister(&b.id, soon).unwrap();
    assert_eq!(reg.queued_total(), 0);
    assert_eq!(reg.next_queue_expiry(), None, "no queue left, no deadline");
}

#[test]
fn the_inventory_is_sorted_and_filtered_by_prefix() {
    let mut reg: Registry<&'static str> = Registry::new(RegistryConfig {
        max_registrations: 10,
        ..config()
    });
    let t0 = Instant::now();
    for ep in ["truck-2", "sensor-1", "truck-10", "truck-1", "tractor"] {
        register(&mut reg, &[&format!("ep={ep}")], t0);
    }
    let names = |prefix: &str| -> Vec<String> {
        reg.with_prefix(prefix)
            .map(|r| r.endpoint.to_string())
            .collect()
    };
    assert_eq!(names("truck-"), ["truck-1", "truck-10", "truck-2"]);
    assert_eq!(names("tr"), ["tractor", "truck-1", "truck-10", "truck-2"]);
    assert_eq!(names("").len(), 5);
    assert!(names("zz").is_empty());
    assert_eq!(names("sensor-1"), ["sensor-1"]);
}

#[test]
fn devices_announcing_the_same_objects_share_one_copy() {
    let mut reg = registry();
    let now = Instant::now();
    let a = register(&mut reg, &["ep=share-a", "lt=300"], now);
    let b = register(&mut reg, &["ep=share-b", "lt=300"], now);
    let objects =
        |reg: &Registry<&'static str>, id: &str| reg.get(id).expect("registered").objects.clone();
    assert!(std::sync::Arc::ptr_eq(
        &objects(&reg, &a.id),
        &objects(&reg, &b.id)
    ));
    // An Update with another list gives that device a list of its own; the others keep
    // theirs.
    let other = update_req(&a.id, &[], b"</1/0>,</3/0>,</6/0>");
    reg.handle(other, peer(5683), now).expect("updated");
    assert!(!std::sync::Arc::ptr_eq(
        &objects(&reg, &a.id),
        &objects(&reg, &b.id)
    ));
    assert_eq!(objects(&reg, &a.id).objects.len(), 3);
    assert_eq!(objects(&reg, &b.id).objects.len(), 4);
}
