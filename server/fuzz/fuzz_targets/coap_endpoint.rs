#![no_main]
//! Datagrams from devices into the CoAP message layer: a sequence of
//! datagrams from a few peers, with time moving forward between them. The
//! endpoint must neither panic nor let its tables grow past their caps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lwm2m_server::coap::{Config, Endpoint};

fuzz_target!(|data: &[u8]| {
    let config = Config::default();
    let mut ep = Endpoint::new(config, 7);
    let mut now = Instant::now();
    // Each chunk: [peer selector, time step, len, bytes...].
    let mut rest = data;
    let mut rounds = 0;
    while let [peer, step, len, tail @ ..] = rest {
        rounds += 1;
        if rounds > 64 {
            break;
        }
        let n = usize::from(*len).min(tail.len());
        let (dgram, next) = tail.split_at(n);
        rest = next;
        let peer: SocketAddr = ([127, 0, 0, 1 + (peer % 4)], 5683).into();
        now += Duration::from_millis(u64::from(*step) * 100);
        ep.handle_datagram(now, peer, dgram);
        ep.handle_timeout(now);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
});
