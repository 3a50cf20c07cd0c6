#![no_main]
//! Datagrams from a few peers into the DTLS server: whatever arrives (records, half a
//! handshake, garbage), nothing panics and the tables stay within their bounds.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use lwm2m_server::dtls::{DtlsConfig, DtlsServer, PskLookup};

fuzz_target!(|data: &[u8]| {
    static HELLO: OnceLock<Vec<u8>> = OnceLock::new();
    let keys: Arc<dyn PskLookup> = Arc::new(|_: &[u8]| Some(vec![7u8; 16]));
    let config = DtlsConfig {
        max_half_open: 4,
        max_sessions: 8,
        max_sessions_per_ip: 4,
        ..DtlsConfig::default()
    };
    let Ok(mut server) = DtlsServer::new(config, keys) else {
        return;
    };
    // Datagrams are separated by 0xFE; the byte before each picks the peer. A real
    // ClientHello leads, so that the fuzzer starts from a live handshake.
    let hello = HELLO.get_or_init(|| {
        lwm2m_server::dtls::DtlsClient::psk(b"id", &[7u8; 16], None, std::time::Duration::from_secs(1))
            .ok()
            .and_then(|mut c| c.poll_transmit().pop())
            .unwrap_or_default()
    });
    let now = Instant::now();
    let peer = |b: u8| SocketAddr::from(([192, 0, 2, b % 4], 5684));
    server.handle_datagram(now, peer(0), hello);
    for part in data.split(|b| *b == 0xFE).take(64) {
        let (who, body) = part.split_first().unwrap_or((&0, &[]));
        server.handle_datagram(now, peer(*who), body);
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
        let sizes = server.sizes();
        assert!(sizes.sessions <= 8 && sizes.half_open <= 4, "{sizes:?}");
    }
    server.handle_timeout(now);
});
