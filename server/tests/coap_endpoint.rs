//! Behaviour of the CoAP endpoint against a hand-driven device, with a simulated clock.

mod coap_support;

use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use coap_support::*;
use lwm2m_server::coap::{CancelReason, Config, Endpoint, Event, FailReason};

#[test]
fn confirmable_retransmission_backs_off_then_times_out() {
    let mut seen_first = Vec::new();
    for seed in 0..20 {
        let mut ep = Endpoint::new(Config::default(), seed);
        let t0 = Instant::now();
        let id = ep.send_request(t0, addr(1), get("/3/0"), true).unwrap();
        let sent = run_until(&mut ep, t0, t0 + Duration::from_secs(200));
        assert_eq!(sent.len(), 5, "1 transmission + MAX_RETRANSMIT 4");
        let first = sent[1].0 - t0;
        assert!(
            first >= secs(2.0) && first <= secs(3.0),
            "first timeout {first:?}"
        );
        seen_first.push(first);
        for (i, (at, t)) in sent.iter().enumerate() {
            assert_eq!(
                t.bytes, sent[0].1.bytes,
                "retransmission is the same message"
            );
            // t0 + T*(2^i - 1)
            let expect = first * ((1u32 << i) - 1);
            let got = *at - t0;
            assert!(
                got.abs_diff(expect) < Duration::from_millis(1),
                "{i}: {got:?} vs {expect:?}"
            );
        }
        let ev = events(&mut ep);
        assert_eq!(
            ev,
            vec![Event::RequestFailed {
                request_id: id,
                reason: FailReason::Timeout
            }]
        );
        // It failed exactly 31 T after the first transmission, not before.
        let mut ep2 = Endpoint::new(Config::default(), seed);
        ep2.send_request(t0, addr(1), get("/3/0"), true).unwrap();
        run_until(&mut ep2, t0, t0 + first * 31 - Duration::from_millis(2));
        assert!(events(&mut ep2).is_empty(), "failed too early");
        run_until(&mut ep2, t0, t0 + first * 31 + Duration::from_millis(2));
        assert_eq!(events(&mut ep2).len(), 1);
        assert_eq!(ep2.sizes().requests, 0);
    }
    seen_first.sort();
    seen_first.dedup();
    assert!(seen_first.len() > 10, "the first timeout is randomised");
}

#[test]
fn piggybacked_response_is_delivered_and_stops_retransmission() {
    let mut ep = server();
    let t0 = Instant::now();
    let id = ep.send_request(t0, addr(1), get("/3/0/0"), true).unwrap();
    let (peer, req) = only(&mut ep);
    assert_eq!(peer, addr(1));
    assert_eq!(req.header.get_type(), MessageType::Confirmable);
    assert_eq!(req.get_token().len(), 8, "8-byte server tokens");
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&piggy(&req, ResponseType::Content, b"hi")),
    );
    match events(&mut ep).as_slice() {
        [Event::Response {
            request_id,
            peer,
            packet,
        }] => {
            assert_eq!((*request_id, *peer), (id, addr(1)));
            assert_eq!(packet.payload, b"hi");
        }
        other => panic!("{other:?}"),
    }
    assert!(run_until(&mut ep, t0, t0 + Duration::from_secs(100)).is_empty());
    assert_eq!(ep.sizes().requests, 0);
}

#[test]
fn separate_response_after_empty_ack_is_acked_and_delivered_once() {
    let mut ep = server();
    let t0 = Instant::now();
    let id = ep.send_request(t0, addr(1), get("/5/0/3"), true).unwrap();
    let (_, req) = only(&mut ep);
    ep.handle_datagram(
        t0,
        addr(1),
        &empty(MessageType::Acknowledgement, req.header.message_id),
    );
    // No retransmission after the empty ACK.
    assert!(run_until(&mut ep, t0, t0 + Duration::from_secs(30)).is_empty());
    let t1 = t0 + Duration::from_secs(30);
    let resp = reply(
        &req,
        MessageType::Confirmable,
        0x4242,
        ResponseType::Content,
        b"1",
    );
    ep.handle_datagram(t1, addr(1), &bytes(&resp));
    let (_, ack) = only(&mut ep);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.code, MessageClass::Empty);
    assert_eq!(ack.header.message_id, 0x4242);
    assert!(
        matches!(events(&mut ep).as_slice(), [Event::Response { request_id, .. }] if *request_id == id)
    );
    // The device did not get our ACK and sends the response again.
    ep.handle_datagram(t1, addr(1), &bytes(&resp));
    let (_, ack2) = only(&mut ep);
    assert_eq!(ack2.header.message_id, 0x4242);
    assert!(
        events(&mut ep).is_empty(),
        "a duplicate is never delivered twice"
    );
}

#[test]
fn separate_response_that_never_comes_times_out() {
    let mut ep = server();
    let t0 = Instant::now();
    let id = ep.send_request(t0, addr(1), get("/5/0/3"), true).unwrap();
    let (_, req) = only(&mut ep);
    ep.handle_datagram(
        t0,
        addr(1),
        &empty(MessageType::Acknowledgement, req.header.message_id),
    );
    run_until(&mut ep, t0, t0 + Duration::from_secs(92));
    assert!(events(&mut ep).is_empty());
    run_until(&mut ep, t0, t0 + Duration::from_secs(94));
    assert_eq!(
        events(&mut ep),
        vec![Event::RequestFailed {
            request_id: id,
            reason: FailReason::Timeout
        }]
    );
}

#[test]
fn reset_fails_the_request_and_unknown_token_response_gets_reset() {
    let mut ep = server();
    let t0 = Instant::now();
    let id = ep.send_request(t0, addr(1), get("/3/0"), true).unwrap();
    let (_, req) = only(&mut ep);
    ep.handle_datagram(
        t0,
        addr(1),
        &empty(MessageType::Reset, req.header.message_id),
    );
    assert_eq!(
        events(&mut ep),
        vec![Event::RequestFailed {
            request_id: id,
            reason: FailReason::Reset
        }]
    );
    // A CON response nobody asked for.
    let mut stray = reply(
        &req,
        MessageType::Confirmable,
        77,
        ResponseType::Content,
        b"x",
    );
    stray.set_token(vec![1, 2, 3]);
    ep.handle_datagram(t0, addr(1), &bytes(&stray));
    let (_, rst) = only(&mut ep);
    assert_eq!(rst.header.get_type(), MessageType::Reset);
    assert_eq!(rst.header.message_id, 77);
    assert!(events(&mut ep).is_empty());
}

#[test]
fn response_from_another_peer_with_the_right_token_is_not_accepted() {
    let mut ep = server();
    let t0 = Instant::now();
    let id = ep.send_request(t0, addr(1), get("/3/0"), true).unwrap();
    let (_, req) = only(&mut ep);
    // Piggybacked from the wrong address: not our exchange.
    ep.handle_datagram(
        t0,
        addr(2),
        &bytes(&piggy(&req, ResponseType::Content, b"evil")),
    );
    // Separate CON from the wrong address: rejected.
    let forged = reply(
        &req,
        MessageType::Confirmable,
        5,
        ResponseType::Content,
        b"evil",
    );
    ep.handle_datagram(t0, addr(2), &bytes(&forged));
    let (to, rst) = only(&mut ep);
    assert_eq!((to, rst.header.get_type()), (addr(2), MessageType::Reset));
    assert!(events(&mut ep).is_empty());
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&piggy(&req, ResponseType::Content, b"good")),
    );
    match events(&mut ep).as_slice() {
        [Event::Response {
            request_id, packet, ..
        }] => {
            assert_eq!(*request_id, id);
            assert_eq!(packet.payload, b"good");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nstart_one_queues_requests_per_peer() {
    let mut ep = server();
    let t0 = Instant::now();
    let a = ep.send_request(t0, addr(1), get("/1"), true).unwrap();
    let b = ep.send_request(t0, addr(1), get("/2"), true).unwrap();
    let c = ep.send_request(t0, addr(1), get("/3"), true).unwrap();
    let other = ep.send_request(t0, addr(2), get("/4"), true).unwrap();
    let ts = transmits(&mut ep);
    assert_eq!(ts.len(), 2, "one to each peer");
    let first = parse(ts.iter().find(|t| t.peer == addr(1)).unwrap());
    assert_eq!(
        first
            .get_option(CoapOption::UriPath)
            .unwrap()
            .front()
            .unwrap(),
        b"1"
    );
    // Completion by response lets the next one go.
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&piggy(&first, ResponseType::Content, b"")),
    );
    let (_, second) = only(&mut ep);
    assert_eq!(
        second
            .get_option(CoapOption::UriPath)
            .unwrap()
            .front()
            .unwrap(),
        b"2"
    );
    // Completion by failure too.
    ep.handle_datagram(
        t0,
        addr(1),
        &empty(MessageType::Reset, second.header.message_id),
    );
    let (_, third) = only(&mut ep);
    assert_eq!(
        third
            .get_option(CoapOption::UriPath)
            .unwrap()
            .front()
            .unwrap(),
        b"3"
    );
    // Cancelling the active one also frees the slot.
    assert!(ep.cancel(t0, c));
    assert!(transmits(&mut ep).is_empty());
    let ev = events(&mut ep);
    assert!(matches!(ev[0], Event::Response { request_id, .. } if request_id == a));
    assert!(matches!(ev[1], Event::RequestFailed { request_id, .. } if request_id == b));
    let _ = other;
}

#[test]
fn duplicate_confirmable_request_is_delivered_once_and_answered_from_cache() {
    let mut ep = server();
    let t0 = Instant::now();
    let mut reg = request(RequestType::Post, "/rd", b"</1/0>".to_vec());
    reg.header.message_id = 100;
    reg.set_token(vec![9, 9]);
    ep.handle_datagram(t0, addr(1), &bytes(&reg));
    ep.handle_datagram(t0, addr(1), &bytes(&reg)); // before we answered: silent
    let ev = events(&mut ep);
    let [Event::Request { id, peer, packet }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (*peer, packet.payload.as_slice()),
        (addr(1), &b"</1/0>"[..])
    );
    assert!(transmits(&mut ep).is_empty());
    let mut created = Packet::new();
    created.header.code = MessageClass::Response(ResponseType::Created);
    created.add_option(CoapOption::LocationPath, b"rd".to_vec());
    ep.respond(t0, *id, created).unwrap();
    let ts = transmits(&mut ep);
    let ack = parse(&ts[0]);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 100);
    assert_eq!(ack.get_token(), &[9, 9]);
    let t1 = t0 + Duration::from_secs(100);
    ep.handle_timeout(t1);
    ep.handle_datagram(t1, addr(1), &bytes(&reg));
    let again = transmits(&mut ep);
    assert_eq!(again, ts, "the cached response is sent again");
    assert!(events(&mut ep).is_empty());
    // After EXCHANGE_LIFETIME the id may be reused and is a new request.
    let t2 = t0 + Duration::from_secs(248);
    ep.handle_timeout(t2);
    ep.handle_datagram(t2, addr(1), &bytes(&reg));
    assert_eq!(events(&mut ep).len(), 1);
    // Same id from another peer is a different message.
    ep.handle_datagram(t2, addr(2), &bytes(&reg));
    assert_eq!(events(&mut ep).len(), 1);
}

#[test]
fn slow_application_gets_empty_ack_then_separate_confirmable_response() {
    let mut ep = server();
    let t0 = Instant::now();
    let mut req = request(RequestType::Post, "/dp", b"x".to_vec());
    req.header.message_id = 5;
    req.set_token(vec![1]);
    ep.handle_datagram(t0, addr(1), &bytes(&req));
    let [Event::Request { id, .. }] = events(&mut ep)[..] else {
        panic!()
    };
    let acks = run_until(&mut ep, t0, t0 + Duration::from_secs(1));
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].1.bytes, empty(MessageType::Acknowledgement, 5));
    ep.handle_datagram(t0, addr(1), &bytes(&req));
    assert_eq!(
        transmits(&mut ep)[0].bytes,
        empty(MessageType::Acknowledgement, 5)
    );
    let mut changed = Packet::new();
    changed.header.code = MessageClass::Response(ResponseType::Changed);
    let t1 = t0 + Duration::from_secs(1);
    ep.respond(t1, id, changed).unwrap();
    let (_, sep) = only(&mut ep);
    assert_eq!(sep.header.get_type(), MessageType::Confirmable);
    assert_eq!(sep.get_token(), &[1]);
    // Retransmitted until the device ACKs it.
    let re = run_until(&mut ep, t1, t1 + Duration::from_secs(4));
    assert_eq!(re.len(), 1);
    ep.handle_datagram(
        t1,
        addr(1),
        &empty(MessageType::Acknowledgement, sep.header.message_id),
    );
    assert!(run_until(&mut ep, t1, t1 + Duration::from_secs(100)).is_empty());
    assert_eq!(
        ep.respond(t1, id, Packet::new()),
        Err(lwm2m_server::coap::RespondError::UnknownIncoming)
    );
}

#[test]
fn block2_response_is_fetched_and_reassembled() {
    let mut ep = server();
    let t0 = Instant::now();
    let body: Vec<u8> = (0..150u8).collect();
    let id = ep.send_request(t0, addr(1), get("/3/0"), true).unwrap();
    let (_, mut req) = only(&mut ep);
    let mut tokens = vec![req.get_token().to_vec()];
    for (num, chunk) in body.chunks(64).enumerate() {
        if num > 0 {
            assert_eq!(
                block_value(&req, CoapOption::Block2),
                Some((num as u32, false, 2))
            );
            assert_eq!(req.get_option(CoapOption::UriPath).unwrap().len(), 2);
            tokens.push(req.get_token().to_vec());
        }
        let more = (num + 1) * 64 < body.len();
        let mut resp = piggy(&req, ResponseType::Content, chunk);
        resp.add_option(CoapOption::Block2, block_bytes(num as u32, more, 2));
        resp.add_option(CoapOption::ContentFormat, vec![0x2D, 0x16]);
        ep.handle_datagram(t0, addr(1), &bytes(&resp));
        if more {
            assert!(events(&mut ep).is_empty());
            req = only(&mut ep).1;
        }
    }
    match events(&mut ep).as_slice() {
        [Event::Response {
            request_id, packet, ..
        }] => {
            assert_eq!(*request_id, id);
            assert_eq!(packet.payload, body);
            assert!(packet
                .get_option(CoapOption::Block2)
                .is_none_or(|l| l.is_empty()));
            assert!(packet.get_option(CoapOption::ContentFormat).is_some());
        }
        other => panic!("{other:?}"),
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "each block exchange has its own token");
    assert_eq!(ep.sizes().tokens, 0);
}

#[test]
fn block2_response_over_the_cap_fails() {
    let config = Config {
        max_body: 100,
        ..Config::default()
    };
    let mut ep = Endpoint::new(config, 1);
    let t0 = Instant::now();
    let id = ep.send_request(t0, addr(1), get("/3/0"), true).unwrap();
    let (_, mut req) = only(&mut ep);
    for num in 0..2u32 {
        let mut resp = piggy(&req, ResponseType::Content, &[0; 64]);
        resp.add_option(CoapOption::Block2, block_bytes(num, true, 2));
        ep.handle_datagram(t0, addr(1), &bytes(&resp));
        if num == 0 {
            req = only(&mut ep).1;
        }
    }
    assert_eq!(
        events(&mut ep),
        vec![Event::RequestFailed {
            request_id: id,
            reason: FailReason::BodyTooLarge
        }]
    );
}

#[test]
fn block1_upload_waits_for_continue_and_follows_a_smaller_size() {
    let mut ep = server();
    let t0 = Instant::now();
    let body: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    let id = ep
        .send_request(
            t0,
            addr(1),
            request(RequestType::Put, "/5/0/0", body.clone()),
            true,
        )
        .unwrap();
    let (_, b0) = only(&mut ep);
    assert_eq!(block_value(&b0, CoapOption::Block1), Some((0, true, 6)));
    assert_eq!(
        b0.get_first_option(CoapOption::Size1).unwrap(),
        &vec![0x09, 0xC4]
    );
    assert_eq!(b0.payload, body[..1024]);
    // The device accepts only 512 of it and asks for 512-byte blocks.
    let mut cont = piggy(&b0, ResponseType::Continue, b"");
    cont.add_option(CoapOption::Block1, block_bytes(0, true, 5));
    ep.handle_datagram(t0, addr(1), &bytes(&cont));
    let mut received = b0.payload[..512].to_vec();
    let mut req = only(&mut ep).1;
    for _ in 0..10 {
        let (num, more, szx) = block_value(&req, CoapOption::Block1).unwrap();
        assert_eq!(szx, 5);
        assert_eq!(req.get_token(), b0.get_token(), "one token for the upload");
        assert_eq!(num as usize * 512, received.len());
        received.extend_from_slice(&req.payload);
        if !more {
            let mut done = piggy(&req, ResponseType::Changed, b"");
            done.add_option(CoapOption::Block1, block_bytes(num, false, 5));
            ep.handle_datagram(t0, addr(1), &bytes(&done));
            break;
        }
        let mut cont = piggy(&req, ResponseType::Continue, b"");
        cont.add_option(CoapOption::Block1, block_bytes(num, true, 5));
        ep.handle_datagram(t0, addr(1), &bytes(&cont));
        assert!(events(&mut ep).is_empty());
        req = only(&mut ep).1;
    }
    assert_eq!(received, body);
    match events(&mut ep).as_slice() {
        [Event::Response {
            request_id, packet, ..
        }] => {
            assert_eq!(*request_id, id);
            assert_eq!(
                packet.header.code,
                MessageClass::Response(ResponseType::Changed)
            );
        }
        other => panic!("{other:?}"),
    }
}

fn block1_request(mid: u16, num: u32, more: bool, szx: u8, payload: &[u8]) -> Packet {
    let mut p = request(RequestType::Post, "/rd", payload.to_vec());
    p.add_option(CoapOption::UriQuery, b"ep=dev".to_vec());
    p.header.message_id = mid;
    p.set_token(vec![mid as u8]);
    p.add_option(CoapOption::Block1, block_bytes(num, more, szx));
    p
}

#[test]
fn incoming_block1_register_is_reassembled_with_continue() {
    let mut ep = server();
    let t0 = Instant::now();
    let body: Vec<u8> = (0..100u8).collect();
    for (num, chunk) in body.chunks(32).enumerate() {
        let more = (num + 1) * 32 < body.len();
        let p = block1_request(10 + num as u16, num as u32, more, 1, chunk);
        ep.handle_datagram(t0, addr(1), &bytes(&p));
        if more {
            let (_, ack) = only(&mut ep);
            assert_eq!(
                ack.header.code,
                MessageClass::Response(ResponseType::Continue)
            );
            assert_eq!(
                block_value(&ack, CoapOption::Block1),
                Some((num as u32, true, 1))
            );
            assert!(events(&mut ep).is_empty());
            // A retransmitted block gets the same 2.31 and changes nothing.
            ep.handle_datagram(t0, addr(1), &bytes(&p));
            assert_eq!(only(&mut ep).1, ack);
        }
    }
    let ev = events(&mut ep);
    let [Event::Request { id, packet, .. }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(packet.payload, body);
    assert!(packet
        .get_option(CoapOption::Block1)
        .is_none_or(|l| l.is_empty()));
    let mut created = Packet::new();
    created.header.code = MessageClass::Response(ResponseType::Created);
    ep.respond(t0, *id, created).unwrap();
    let (_, fin) = only(&mut ep);
    assert_eq!(block_value(&fin, CoapOption::Block1), Some((3, false, 1)));
    assert_eq!(ep.sizes().assemblies, 0);
}

#[test]
fn incoming_block1_errors() {
    let mut ep = server();
    let t0 = Instant::now();
    // Out of order: block 2 without 0 and 1.
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&block1_request(1, 2, true, 1, &[0; 32])),
    );
    let (_, r) = only(&mut ep);
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::RequestEntityIncomplete)
    );
    // A gap after a good start.
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&block1_request(2, 0, true, 1, &[0; 32])),
    );
    only(&mut ep);
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&block1_request(3, 2, false, 1, &[0; 3])),
    );
    let (_, r) = only(&mut ep);
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::RequestEntityIncomplete)
    );
    // Announced too large.
    let mut big = block1_request(4, 0, true, 1, &[0; 32]);
    big.add_option(CoapOption::Size1, vec![0x7F, 0xFF, 0xFF, 0xFF]);
    ep.handle_datagram(t0, addr(1), &bytes(&big));
    let (_, r) = only(&mut ep);
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::RequestEntityTooLarge)
    );
    assert!(r.get_first_option(CoapOption::Size1).is_some());
    // SZX 7.
    let mut bad = block1_request(5, 0, true, 1, &[0; 32]);
    bad.clear_option(CoapOption::Block1);
    bad.add_option(CoapOption::Block1, vec![0x0F]);
    ep.handle_datagram(t0, addr(1), &bytes(&bad));
    let (_, r) = only(&mut ep);
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::BadRequest)
    );
    let mut bad2 = get("/3");
    bad2.header.message_id = 6;
    bad2.add_option(CoapOption::Block2, vec![0x07]);
    ep.handle_datagram(t0, addr(1), &bytes(&bad2));
    let (_, r) = only(&mut ep);
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::BadRequest)
    );
    assert!(events(&mut ep).is_empty());
    // Growing past the cap while uploading.
    let mut ep = Endpoint::new(
        Config {
            max_body: 64,
            ..Config::default()
        },
        3,
    );
    for num in 0..3u32 {
        ep.handle_datagram(
            t0,
            addr(1),
            &bytes(&block1_request(num as u16, num, true, 1, &[0; 32])),
        );
    }
    let codes: Vec<_> = transmits(&mut ep)
        .iter()
        .map(|t| parse(t).header.code)
        .collect();
    assert_eq!(
        codes[2],
        MessageClass::Response(ResponseType::RequestEntityTooLarge)
    );
    assert_eq!(ep.sizes().assemblies, 0);
    // Abandoned uploads expire.
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&block1_request(50, 0, true, 1, &[0; 32])),
    );
    assert_eq!(ep.sizes().assemblies, 1);
    ep.handle_timeout(t0 + Duration::from_secs(248));
    assert_eq!(ep.sizes().assemblies, 0);
}

fn observe_get() -> Packet {
    let mut p = get("/3/0/9");
    p.set_observe_value(0);
    p
}

fn notification(token: &[u8], mid: u16, seq: u32, kind: MessageType, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.message_id = mid;
    p.header.code = MessageClass::Response(ResponseType::Content);
    p.set_token(token.to_vec());
    p.set_observe_value(seq);
    p.payload = payload.to_vec();
    p
}

/// Registers an observation answered with sequence 5 and returns its token.
fn established(ep: &mut Endpoint, t0: Instant) -> (lwm2m_server::coap::RequestId, Vec<u8>) {
    let id = ep.send_request(t0, addr(1), observe_get(), true).unwrap();
    let (_, req) = only(ep);
    let mut first = piggy(&req, ResponseType::Content, b"80");
    first.set_observe_value(5);
    ep.handle_datagram(t0, addr(1), &bytes(&first));
    assert!(
        matches!(events(ep).as_slice(), [Event::Response { request_id, .. }] if *request_id == id)
    );
    (id, req.get_token().to_vec())
}

#[test]
fn observe_notifications_are_ordered_acked_and_follow_address_changes() {
    let mut ep = server();
    let t0 = Instant::now();
    let (id, token) = established(&mut ep, t0);
    // The observation does not hold the NSTART slot.
    ep.send_request(t0, addr(1), get("/3/0/0"), true).unwrap();
    assert_eq!(transmits(&mut ep).len(), 1);

    let n6 = notification(&token, 200, 6, MessageType::Confirmable, b"79");
    ep.handle_datagram(t0, addr(1), &bytes(&n6));
    let (_, ack) = only(&mut ep);
    assert_eq!(
        (ack.header.get_type(), ack.header.message_id),
        (MessageType::Acknowledgement, 200)
    );
    assert!(matches!(events(&mut ep).as_slice(),
        [Event::Notification { request_id, sequence: 6, .. }] if *request_id == id));
    // Duplicate: ACKed again, not delivered.
    ep.handle_datagram(t0, addr(1), &bytes(&n6));
    assert_eq!(only(&mut ep).1, ack);
    assert!(events(&mut ep).is_empty());
    // Stale (older sequence): ACKed, dropped.
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&notification(&token, 201, 4, MessageType::Confirmable, b"")),
    );
    assert_eq!(transmits(&mut ep).len(), 1);
    assert!(events(&mut ep).is_empty());
    // NON from a new address after NAT rebinding: delivered with the new peer.
    ep.handle_datagram(
        t0,
        addr(9),
        &bytes(&notification(
            &token,
            202,
            7,
            MessageType::NonConfirmable,
            b"77",
        )),
    );
    assert!(transmits(&mut ep).is_empty());
    assert!(matches!(events(&mut ep).as_slice(),
        [Event::Notification { peer, sequence: 7, .. }] if *peer == addr(9)));
    // A long silence makes an old number acceptable again (device rebooted).
    let t1 = t0 + Duration::from_secs(129);
    ep.handle_datagram(
        t1,
        addr(9),
        &bytes(&notification(
            &token,
            203,
            1,
            MessageType::NonConfirmable,
            b"",
        )),
    );
    assert!(matches!(
        events(&mut ep).as_slice(),
        [Event::Notification { sequence: 1, .. }]
    ));
    // An error notification ends the observation.
    let mut end = notification(&token, 204, 2, MessageType::NonConfirmable, b"");
    end.header.code = MessageClass::Response(ResponseType::NotFound);
    ep.handle_datagram(t1, addr(9), &bytes(&end));
    assert!(matches!(events(&mut ep).as_slice(),
        [Event::ObservationCancelled { request_id, reason: CancelReason::Ended, .. }] if *request_id == id));
    ep.handle_datagram(
        t1,
        addr(9),
        &bytes(&notification(&token, 205, 3, MessageType::Confirmable, b"")),
    );
    assert_eq!(only(&mut ep).1.header.get_type(), MessageType::Reset);
}

#[test]
fn active_and_passive_cancel() {
    let mut ep = server();
    let t0 = Instant::now();
    let (id, token) = established(&mut ep, t0);
    assert!(ep.cancel(t0, id));
    assert!(!ep.cancel(t0, id));
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&notification(&token, 300, 6, MessageType::Confirmable, b"")),
    );
    let (_, rst) = only(&mut ep);
    assert_eq!(
        (rst.header.get_type(), rst.header.message_id),
        (MessageType::Reset, 300)
    );
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&notification(
            &token,
            301,
            7,
            MessageType::NonConfirmable,
            b"",
        )),
    );
    assert_eq!(only(&mut ep).1.header.get_type(), MessageType::Reset);
    assert!(events(&mut ep).is_empty());
    // The operator may keep NON notifications un-reset (module quirk 8).
    let mut quiet = Endpoint::new(
        Config {
            reset_unmatched_non: false,
            ..Config::default()
        },
        1,
    );
    quiet.handle_datagram(
        t0,
        addr(1),
        &bytes(&notification(
            &token,
            1,
            7,
            MessageType::NonConfirmable,
            b"",
        )),
    );
    assert!(transmits(&mut quiet).is_empty());
    assert_eq!(ep.sizes().requests, 0);
}

/// RFC 7641 §3.6: an explicit deregistration is a GET with Observe=1 that
/// carries the observation's own token; a notification crossing it on the
/// wire is not delivered.
#[test]
fn active_cancel_sends_get_observe_1_with_the_observation_token() {
    let mut ep = server();
    let t0 = Instant::now();
    let (id, token) = established(&mut ep, t0);
    let mut cancel = get("/3/0/9");
    cancel.set_observe_value(1);
    let cid = ep.cancel_observation(t0, id, cancel).unwrap();
    let (peer, req) = only(&mut ep);
    assert_eq!(peer, addr(1));
    assert_eq!(req.get_token(), token.as_slice());
    assert_eq!(req.get_observe_value().and_then(|r| r.ok()), Some(1));
    // The device answers with the current value and no Observe option.
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&piggy(&req, ResponseType::Content, b"77")),
    );
    assert!(matches!(events(&mut ep).as_slice(),
        [Event::Response { request_id, .. }] if *request_id == cid));
    // A late notification of the ended observation is refused.
    ep.handle_datagram(
        t0,
        addr(1),
        &bytes(&notification(&token, 400, 9, MessageType::Confirmable, b"")),
    );
    assert_eq!(only(&mut ep).1.header.get_type(), MessageType::Reset);
    assert!(events(&mut ep).is_empty());
    // Only an observation can be cancelled this way.
    let plain = ep.send_request(t0, addr(2), get("/3/0/0"), true).unwrap();
    assert_eq!(
        ep.cancel_observation(t0, plain, get("/3/0/0")),
        Err(lwm2m_server::coap::SendError::NotObserving)
    );
    assert_eq!(ep.sizes().requests, 1);
}

#[test]
fn block2_notification_is_fetched_before_delivery() {
    let mut ep = server();
    let t0 = Instant::now();
    let (id, token) = established(&mut ep, t0);
    let mut n = notification(&token, 400, 6, MessageType::NonConfirmable, &[1; 16]);
    n.add_option(CoapOption::Block2, block_bytes(0, true, 0));
    ep.handle_datagram(t0, addr(1), &bytes(&n));
    let (_, fetch) = only(&mut ep);
    assert_ne!(fetch.get_token(), token.as_slice());
    assert!(fetch.get_observe_value().is_none());
    assert_eq!(block_value(&fetch, CoapOption::Block2), Some((1, false, 0)));
    let mut last = piggy(&fetch, ResponseType::Content, &[2; 5]);
    last.add_option(CoapOption::Block2, block_bytes(1, false, 0));
    ep.handle_datagram(t0, addr(1), &bytes(&last));
    match events(&mut ep).as_slice() {
        [Event::Notification {
            request_id,
            packet,
            sequence: 6,
            ..
        }] => {
            assert_eq!(*request_id, id);
            assert_eq!(packet.payload.len(), 21);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_datagrams() {
    let mut ep = server();
    let t0 = Instant::now();
    ep.handle_datagram(t0, addr(1), &[0x40]);
    assert!(
        transmits(&mut ep).is_empty(),
        "no header: nothing to answer"
    );
    // CON with a bad option (delta 15): RST with its message id.
    ep.handle_datagram(t0, addr(1), &[0x40, 0x01, 0x12, 0x34, 0xF0]);
    assert_eq!(only(&mut ep).1, {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Reset);
        p.header.code = MessageClass::Empty;
        p.header.message_id = 0x1234;
        p
    });
    // The same as NON: dropped.
    ep.handle_datagram(t0, addr(1), &[0x50, 0x01, 0x12, 0x35, 0xF0]);
    assert!(transmits(&mut ep).is_empty());
    // CoAP ping gets RST.
    ep.handle_datagram(t0, addr(1), &empty(MessageType::Confirmable, 9));
    assert_eq!(only(&mut ep).1.header.get_type(), MessageType::Reset);
    // Wrong version: ignored.
    ep.handle_datagram(t0, addr(1), &[0x80, 0x01, 0x00, 0x01]);
    assert!(transmits(&mut ep).is_empty());
    assert!(events(&mut ep).is_empty());
}

#[test]
fn caps_refuse_instead_of_growing() {
    let config = Config {
        max_pending: 2,
        max_incoming: 1,
        max_dedup: 3,
        ..Config::default()
    };
    let mut ep = Endpoint::new(config, 1);
    let t0 = Instant::now();
    ep.send_request(t0, addr(1), get("/1"), true).unwrap();
    ep.send_request(t0, addr(1), get("/2"), true).unwrap();
    assert!(ep.send_request(t0, addr(1), get("/3"), true).is_err());
    let mut resp = Packet::new();
    resp.header.code = MessageClass::Response(ResponseType::Content);
    assert!(ep.send_request(t0, addr(1), resp, true).is_err());
    transmits(&mut ep);
    for mid in 0..10u16 {
        let mut p = get("/x");
        p.header.message_id = mid;
        ep.handle_datagram(t0, addr(3), &bytes(&p));
    }
    assert_eq!(events(&mut ep).len(), 1);
    let ts = transmits(&mut ep);
    assert_eq!(
        ts.len(),
        2,
        "one 5.03, then the dedup table is full and we drop"
    );
    assert_eq!(
        parse(&ts[0]).header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    assert_eq!(ep.sizes().dedup, 3);
}
