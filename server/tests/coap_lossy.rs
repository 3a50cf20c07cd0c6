//! Two endpoints over a simulated link that drops, duplicates and reorders, plus a
//! fuzz-style run of random and mutated datagrams.

mod coap_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, Packet, RequestType, ResponseType};
use coap_support::*;
use lwm2m_server::coap::{Config, Endpoint, Event, FailReason, RequestId};

/// xorshift64*: the link's own seeded randomness.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Link {
    rng: Lcg,
    in_flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    delivered: usize,
    dropped: usize,
}

impl Link {
    /// Drops 25%, duplicates 10%, and delays each copy by 0-800 ms so that order changes.
    fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if self.rng.chance(25) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(10) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_millis(self.rng.next() % 800);
            self.seq += 1;
            self.in_flight
                .insert((now + delay, self.seq), (from, to, bytes.clone()));
        }
    }
}

#[test]
fn lossy_duplicating_reordering_link_every_request_completes_once() {
    for seed in 1..=4u64 {
        run_relay(seed);
    }
}

fn run_relay(seed: u64) {
    let server_addr = addr(5683);
    let device_addr = addr(40000);
    let mut server = Endpoint::new(Config::default(), seed);
    let mut device = Endpoint::new(Config::default(), seed ^ 0xABCD);
    let mut link = Link {
        rng: Lcg(seed * 7919 + 1),
        in_flight: BTreeMap::new(),
        seq: 0,
        delivered: 0,
        dropped: 0,
    };
    let t0 = Instant::now();
    let mut now = t0;

    // 30 requests: small writes, and a few large ones that go block-wise (Block1 up).
    let mut expected: HashMap<RequestId, Vec<u8>> = HashMap::new();
    for i in 0..30u32 {
        let len = if i % 7 == 3 { 2000 + i as usize } else { 12 };
        let mut body = format!("req-{i:04}-").into_bytes();
        body.resize(len, b'.');
        let id = server
            .send_request(
                now,
                device_addr,
                request(RequestType::Put, "/3/0/13", body.clone()),
                true,
            )
            .unwrap();
        expected.insert(id, body);
    }
    let mut applied: HashSet<Vec<u8>> = HashSet::new();
    let mut outcome: HashMap<RequestId, Result<Vec<u8>, FailReason>> = HashMap::new();

    for _ in 0..200_000 {
        while let Some(t) = server.poll_transmit() {
            link.send(now, server_addr, t.peer, t.bytes);
        }
        while let Some(t) = device.poll_transmit() {
            link.send(now, device_addr, t.peer, t.bytes);
        }
        while let Some(ev) = device.poll_event() {
            if let Event::Request { id, packet, .. } = ev {
                assert!(
                    applied.insert(packet.payload.clone()),
                    "request applied twice"
                );
                let mut resp = Packet::new();
                resp.header.code = MessageClass::Response(ResponseType::Changed);
                resp.payload = packet.payload.get(..9).unwrap_or_default().to_vec();
                device.respond(now, id, resp).unwrap();
            }
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                Event::Response {
                    request_id,
                    packet,
                    peer,
                } => {
                    assert_eq!(peer, device_addr);
                    assert!(
                        outcome.insert(request_id, Ok(packet.payload)).is_none(),
                        "two outcomes"
                    );
                }
                Event::RequestFailed { request_id, reason } => {
                    assert!(
                        outcome.insert(request_id, Err(reason)).is_none(),
                        "two outcomes"
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if outcome.len() == expected.len() && link.in_flight.is_empty() {
            break;
        }
        let next = [
            link.in_flight.keys().next().map(|k| k.0),
            server.poll_timeout(),
            device.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { break };
        now = now.max(next);
        if let Some((&key, _)) = link.in_flight.iter().next() {
            if key.0 <= now {
                let (from, to, bytes) = link.in_flight.remove(&key).unwrap();
                link.delivered += 1;
                if to == device_addr {
                    device.handle_datagram(now, from, &bytes);
                } else {
                    server.handle_datagram(now, from, &bytes);
                }
                continue;
            }
        }
        server.handle_timeout(now);
        device.handle_timeout(now);
        // Stop once the server is done and only dedup expiry remains.
        if outcome.len() == expected.len() {
            break;
        }
    }
    assert_eq!(
        outcome.len(),
        expected.len(),
        "seed {seed}: every request ends"
    );
    let mut ok = 0;
    for (id, result) in &outcome {
        match result {
            Ok(payload) => {
                ok += 1;
                assert_eq!(
                    payload.as_slice(),
                    &expected[id][..9],
                    "response matches its request"
                );
                assert!(
                    applied.contains(&expected[id]),
                    "a completed request was applied"
                );
            }
            Err(reason) => assert_eq!(*reason, FailReason::Timeout, "only timeouts"),
        }
    }
    assert!(
        link.dropped * 100 >= (link.dropped + link.delivered) * 15,
        "the link really loses"
    );
    assert!(ok >= expected.len() / 2, "seed {seed}: most succeed ({ok})");
    eprintln!(
        "seed {seed}: ok {ok}/{} applied {} dropped {} delivered {} took {:?}",
        expected.len(),
        applied.len(),
        link.dropped,
        link.delivered,
        now - t0
    );
    assert!(now - t0 < Duration::from_secs(3600));
}

#[test]
fn random_and_mutated_datagrams_never_panic_and_state_stays_bounded() {
    let config = Config {
        max_dedup: 500,
        max_incoming: 50,
        max_block1_assemblies: 20,
        max_body: 4096,
        ..Config::default()
    };
    let mut ep = Endpoint::new(config, 99);
    let mut rng = Lcg(12345);
    let t0 = Instant::now();
    let mut now = t0;
    // Some real state to hit: requests in flight and an observation.
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for port in 1..5u16 {
        let mut obs = get("/3/0/9");
        obs.set_observe_value(0);
        ep.send_request(now, addr(port), obs, true).unwrap();
        ep.send_request(
            now,
            addr(port),
            request(RequestType::Put, "/5/0/0", vec![7; 3000]),
            true,
        )
        .unwrap();
    }
    for t in transmits(&mut ep) {
        let p = parse(&t);
        seeds.push(bytes(&piggy(&p, ResponseType::Content, b"x")));
        seeds.push(bytes(&piggy(&p, ResponseType::Continue, b"")));
        seeds.push(t.bytes);
    }
    let mut reg = request(RequestType::Post, "/rd", vec![b'a'; 32]);
    reg.add_option(coap_lite::CoapOption::Block1, block_bytes(0, true, 1));
    seeds.push(bytes(&reg));
    for i in 0..5000u32 {
        let mut d = match rng.next() % 3 {
            0 => (0..rng.next() % 40)
                .map(|_| rng.next() as u8)
                .collect::<Vec<u8>>(),
            _ => seeds[(rng.next() % seeds.len() as u64) as usize].clone(),
        };
        for _ in 0..rng.next() % 4 {
            if d.is_empty() {
                break;
            }
            let at = (rng.next() % d.len() as u64) as usize;
            match rng.next() % 3 {
                0 => d[at] = rng.next() as u8,
                1 => d.truncate(at),
                _ => d.insert(at, rng.next() as u8),
            }
        }
        if d.len() >= 4 && rng.chance(50) {
            d[0] = (d[0] & 0x3F) | 0x40; // keep the version valid more often
        }
        let port = 1 + (rng.next() % 6) as u16;
        ep.handle_datagram(now, addr(port), &d);
        if i % 50 == 0 {
            now += Duration::from_secs(rng.next() % 30);
            ep.handle_timeout(now);
        }
        while let Some(ev) = ep.poll_event() {
            if let Event::Request { id, .. } = ev {
                if rng.chance(50) {
                    let mut r = Packet::new();
                    r.header.code = MessageClass::Response(ResponseType::Content);
                    let _ = ep.respond(now, id, r);
                }
            }
        }
        transmits(&mut ep);
        let s = ep.sizes();
        assert!(s.dedup <= 500 && s.incoming <= 50 && s.assemblies <= 20 && s.requests <= 8);
        assert!(
            s.tokens <= 2 * 8 && s.retransmissions <= 8 + 50 && s.timers <= 10_000,
            "{s:?}"
        );
    }
}
