//! Helpers shared by the CoAP endpoint tests: a fake device that speaks raw CoAP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use lwm2m_server::coap::{Config, Endpoint, Event, Transmit};

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

pub fn server() -> Endpoint {
    Endpoint::new(Config::default(), 7)
}

pub fn get(path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(RequestType::Get);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p
}

pub fn request(code: RequestType, path: &str, payload: Vec<u8>) -> Packet {
    let mut p = get(path);
    p.header.code = MessageClass::Request(code);
    p.payload = payload;
    p
}

pub fn parse(t: &Transmit) -> Packet {
    Packet::from_bytes(&t.bytes).expect("endpoint sends well-formed messages")
}

pub fn transmits(ep: &mut Endpoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ep.poll_transmit())
        .take(1000)
        .collect()
}

pub fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).take(1000).collect()
}

/// The one datagram the endpoint has queued, parsed.
pub fn only(ep: &mut Endpoint) -> (SocketAddr, Packet) {
    let ts = transmits(ep);
    assert_eq!(ts.len(), 1, "expected one datagram, got {ts:?}");
    (ts[0].peer, parse(&ts[0]))
}

pub fn reply(
    to: &Packet,
    kind: MessageType,
    mid: u16,
    code: ResponseType,
    payload: &[u8],
) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.message_id = mid;
    p.header.code = MessageClass::Response(code);
    p.set_token(to.get_token().to_vec());
    p.payload = payload.to_vec();
    p
}

pub fn piggy(to: &Packet, code: ResponseType, payload: &[u8]) -> Packet {
    reply(
        to,
        MessageType::Acknowledgement,
        to.header.message_id,
        code,
        payload,
    )
}

pub fn empty(kind: MessageType, mid: u16) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(kind);
    p.header.message_id = mid;
    p.header.code = MessageClass::Empty;
    p.to_bytes().unwrap()
}

pub fn bytes(p: &Packet) -> Vec<u8> {
    p.to_bytes_unlimited().unwrap()
}

/// Advances the clock through the endpoint's own timers until `until`, collecting
/// (time, datagram) pairs. Bounded by a step count.
pub fn run_until(ep: &mut Endpoint, mut now: Instant, until: Instant) -> Vec<(Instant, Transmit)> {
    let mut out: Vec<(Instant, Transmit)> = Vec::new();
    for _ in 0..10_000 {
        out.extend(transmits(ep).into_iter().map(|t| (now, t)));
        match ep.poll_timeout() {
            Some(at) if at <= until => {
                now = at.max(now);
                ep.handle_timeout(now);
            }
            _ => return out,
        }
    }
    panic!("timers did not settle");
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

pub fn block_value(p: &Packet, opt: CoapOption) -> Option<(u32, bool, u8)> {
    let v = p.get_first_option(opt)?;
    let n = v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
    Some((n >> 4, n & 8 != 0, (n & 7) as u8))
}

pub fn block_bytes(num: u32, more: bool, szx: u8) -> Vec<u8> {
    let v = (num << 4) | (u32::from(more) << 3) | u32::from(szx);
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}
