//! DTLS costs on this machine: full PSK handshakes per second, CoAPS round trips per second
//! over an established session, and memory per established session, each against a
//! baseline measured in the same run.
//!
//! - Handshakes: through [`DtlsServer`] (cookie exchange, demultiplexing, deadlines) with
//!   [`DtlsClient`], against the same handshake between two bare OpenSSL DTLS streams
//!   (no cookie, no bookkeeping), and against two bare streams that do the cookie
//!   exchange (OpenSSL's own, with a constant cookie): the protocol's extra round trip
//!   without our bookkeeping. Resumed handshakes against full ones.
//! - CoAPS exchanges over established sessions: a 20-byte request sealed by the client,
//!   opened by [`DtlsServer`], a 10-byte answer sealed back and opened by the client;
//!   against the same round trip between two bare OpenSSL streams.
//! - Memory: heap in use (glibc `mallinfo2`, exact where RSS is not) per session the
//!   server holds, after its clients are gone, against a bare OpenSSL server stream; and
//!   what a closed session still costs in the resumption cache.
//!
//! Client and server share one thread, so a handshake's figure includes both sides.
//!
//!     cargo bench -p lwm2m-server --bench dtls [-- HANDSHAKES SESSIONS]
//!
//! `cargo test` runs it once with 20 handshakes and 10 sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lwm2m_server::dtls::pipe::Pipe;
use lwm2m_server::dtls::{
    CloseReason, DtlsClient, DtlsClientContext, DtlsConfig, DtlsEvent, DtlsServer, PskLookup,
};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVersion,
};

const KEY: &[u8] = &[7u8; 16];
const SUITE: &str = "PSK-AES128-CCM8";

fn addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    let [a, b, c, d] = i.to_be_bytes();
    SocketAddr::from(([10 + a % 100, b, c, d], 5000))
}

fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    unsafe { libc::mallinfo2().uordblks }
}

fn server() -> DtlsServer {
    let keys: Arc<dyn PskLookup> = Arc::new(|_: &[u8]| Some(KEY.to_vec()));
    DtlsServer::new(
        DtlsConfig {
            max_half_open: usize::MAX,
            max_sessions_per_ip: usize::MAX,
            max_sessions: usize::MAX,
            ..DtlsConfig::default()
        },
        keys,
    )
    .expect("server")
}

fn client() -> DtlsClient {
    DtlsClient::psk(b"id", KEY, Some(SUITE), Duration::from_secs(1)).expect("client")
}

/// Shakes hands with `c` from `peer`; nothing is lost, so no timer is ever due.
fn handshake(s: &mut DtlsServer, c: &mut DtlsClient, peer: SocketAddr) {
    let now = Instant::now();
    for _ in 0..32 {
        for d in c.poll_transmit() {
            s.handle_datagram(now, peer, &d);
        }
        while let Some((_, d)) = s.poll_transmit() {
            c.handle_datagram(&d);
        }
        if c.is_established() && s.is_established(&peer) {
            while s.poll_event().is_some() {}
            return;
        }
    }
    panic!("no handshake with {peer}");
}

fn close(s: &mut DtlsServer, peer: SocketAddr) {
    s.close(peer, CloseReason::Closed);
    while s.poll_event().is_some() {}
    while s.poll_transmit().is_some() {}
}

fn bare_contexts() -> (SslContext, SslContext) {
    (bare_server_context(false), bare_client_context())
}

/// Cookies the bare server with cookies checked: one a handshake, or it did not ask.
static COOKIES_VERIFIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A bare server; with `cookies`, it answers a ClientHello without a cookie with a
/// HelloVerifyRequest, as a DTLS server should (RFC 6347, 4.2.1).
fn bare_server_context(cookies: bool) -> SslContext {
    let mut s = SslContextBuilder::new(SslMethod::dtls_server()).expect("ctx");
    s.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .expect("v");
    s.set_cipher_list(SUITE).expect("c");
    s.set_options(SslOptions::NO_QUERY_MTU);
    s.set_psk_server_callback(|_, _, out| {
        out[..KEY.len()].copy_from_slice(KEY);
        Ok(KEY.len())
    });
    if cookies {
        const COOKIE: &[u8] = &[0x5a; 16];
        s.set_options(SslOptions::COOKIE_EXCHANGE);
        s.set_cookie_generate_cb(|_, out| {
            out[..COOKIE.len()].copy_from_slice(COOKIE);
            Ok(COOKIE.len())
        });
        s.set_cookie_verify_cb(|_, cookie| {
            COOKIES_VERIFIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cookie == COOKIE
        });
    }
    s.build()
}

fn bare_client_context() -> SslContext {
    let mut c = SslContextBuilder::new(SslMethod::dtls_client()).expect("ctx");
    c.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .expect("v");
    c.set_cipher_list(SUITE).expect("c");
    c.set_options(SslOptions::NO_QUERY_MTU);
    c.set_psk_client_callback(|_, _, id, out| {
        id[..3].copy_from_slice(b"id\0");
        out[..KEY.len()].copy_from_slice(KEY);
        Ok(KEY.len())
    });
    c.build()
}

/// One bare handshake; answers the server's stream, which holds the session.
fn bare_handshake(sctx: &SslContext, cctx: &SslContext) -> SslStream<Pipe> {
    bare_pair(sctx, cctx).0
}

/// One bare handshake; answers both streams.
fn bare_pair(sctx: &SslContext, cctx: &SslContext) -> (SslStream<Pipe>, SslStream<Pipe>) {
    let mut ss = Ssl::new(sctx).expect("ssl");
    ss.set_mtu(1200).expect("mtu");
    let mut cs = Ssl::new(cctx).expect("ssl");
    cs.set_mtu(1200).expect("mtu");
    let mut server = SslStream::new(ss, Pipe::default()).expect("s");
    let mut client = SslStream::new(cs, Pipe::default()).expect("c");
    let (mut s_done, mut c_done) = (false, false);
    for _ in 0..32 {
        if !c_done {
            match client.connect() {
                Ok(()) => c_done = true,
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => panic!("client: {e}"),
            }
        }
        for d in client.get_mut().take_outgoing() {
            server.get_mut().push(&d);
        }
        if !s_done {
            match server.accept() {
                Ok(()) => s_done = true,
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => panic!("server: {e}"),
            }
        }
        for d in server.get_mut().take_outgoing() {
            client.get_mut().push(&d);
        }
        if s_done && c_done {
            return (server, client);
        }
    }
    panic!("no bare handshake");
}

const REQUEST: &[u8] = b"\x40\x01\x12\x34\xb1\x33\x01\x30\x01\x39GET /3/0/9..";
const ANSWER: &[u8] = b"\x60\x45\x12\x34\xff87....";

/// `n` request/answer round trips over an established session with the server.
fn exchanges(s: &mut DtlsServer, c: &mut DtlsClient, peer: SocketAddr, n: usize) {
    let now = Instant::now();
    for _ in 0..n {
        c.send(REQUEST);
        for d in c.poll_transmit() {
            s.handle_datagram(now, peer, &d);
        }
        let mut got = false;
        while let Some(e) = s.poll_event() {
            if let DtlsEvent::Data { payload, .. } = e {
                got = payload == REQUEST;
            }
        }
        assert!(got, "the server opened the request");
        s.send(now, peer, ANSWER).expect("answer");
        let mut answered = false;
        while let Some((_, d)) = s.poll_transmit() {
            answered |= c.handle_datagram(&d).iter().any(|p| p == ANSWER);
        }
        assert!(answered, "the client opened the answer");
    }
}

/// `n` round trips between two bare streams.
fn bare_exchanges(server: &mut SslStream<Pipe>, client: &mut SslStream<Pipe>, n: usize) {
    let mut buf = [0u8; 256];
    for _ in 0..n {
        client.ssl_write(REQUEST).expect("write");
        for d in client.get_mut().take_outgoing() {
            server.get_mut().push(&d);
        }
        let k = server.ssl_read(&mut buf).expect("read");
        assert_eq!(buf.get(..k), Some(REQUEST));
        server.ssl_write(ANSWER).expect("write");
        for d in server.get_mut().take_outgoing() {
            client.get_mut().push(&d);
        }
        let k = client.ssl_read(&mut buf).expect("read");
        assert_eq!(buf.get(..k), Some(ANSWER));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test` runs this once at a tiny size, so that
    // the benchmark cannot rot (its assertions run either way).
    let tiny = !raw.iter().any(|a| a == "--bench");
    let args: Vec<usize> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let handshakes = args
        .first()
        .copied()
        .unwrap_or(if tiny { 20 } else { 2000 });
    let sessions = args.get(1).copied().unwrap_or(if tiny { 10 } else { 2000 });

    // Rounds that interleave the three kinds, so that a neighbour's load on this shared
    // machine hits them alike; the medians of the per-round figures are reported.
    let (sctx, cctx) = bare_contexts();
    let cookie_sctx = bare_server_context(true);
    let fresh =
        DtlsClientContext::psk(b"id", KEY, Some(SUITE), Duration::from_secs(1)).expect("context");
    let mut resuming =
        DtlsClientContext::psk(b"id", KEY, Some(SUITE), Duration::from_secs(1)).expect("context");
    let mut s = server();
    let mut first = resuming.connect().expect("client");
    handshake(&mut s, &mut first, addr(usize::MAX >> 34));
    resuming.remember(&first);
    let rounds = 10;
    let per_round = (handshakes / rounds).max(1);
    let (mut bare, mut bare_cookie, mut full, mut resumed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut next = 0usize;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            drop(bare_handshake(&sctx, &cctx));
        }
        bare.push(per_second(per_round, t.elapsed()));
        let t = Instant::now();
        for _ in 0..per_round {
            drop(bare_handshake(&cookie_sctx, &cctx));
        }
        bare_cookie.push(per_second(per_round, t.elapsed()));
        // The fresh context remembers nothing: every handshake is a full one.
        let t = Instant::now();
        for _ in 0..per_round {
            let mut c = fresh.connect().expect("client");
            handshake(&mut s, &mut c, addr(next));
            close(&mut s, addr(next));
            next += 1;
        }
        full.push(per_second(per_round, t.elapsed()));
        let t = Instant::now();
        for _ in 0..per_round {
            let mut c = resuming.connect().expect("client");
            handshake(&mut s, &mut c, addr(next));
            assert!(c.resumed(), "a resumed handshake");
            close(&mut s, addr(next));
            next += 1;
        }
        resumed.push(per_second(per_round, t.elapsed()));
    }
    assert_eq!(
        COOKIES_VERIFIED.load(std::sync::atomic::Ordering::Relaxed),
        rounds * per_round,
        "the bare server with cookies checked one a handshake"
    );
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    println!(
        "handshakes, {rounds} rounds of {per_round} of each kind (client and server on one thread), medians:"
    );
    println!(
        "  bare OpenSSL PSK handshake (baseline) {:8.0} /s",
        median(bare.clone())
    );
    println!(
        "  bare OpenSSL with cookie exchange     {:8.0} /s   ratio {:.2} to baseline",
        median(bare_cookie.clone()),
        ratio(&bare_cookie, &bare)
    );
    println!(
        "  DtlsServer full PSK handshake         {:8.0} /s   ratio {:.2} to baseline, {:.2} to the cookie exchange",
        median(full.clone()),
        ratio(&full, &bare),
        ratio(&full, &bare_cookie)
    );
    println!(
        "  DtlsServer resumed handshake          {:8.0} /s   ratio {:.2} to full",
        median(resumed.clone()),
        ratio(&resumed, &full)
    );

    // Round trips over one established session of each kind, interleaved in rounds too.
    let round_trips = handshakes * 5 / rounds;
    let (mut bare_s, mut bare_c) = bare_pair(&sctx, &cctx);
    let mut c = fresh.connect().expect("client");
    let peer = addr(next);
    handshake(&mut s, &mut c, peer);
    let (mut bare_rt, mut ours_rt) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        bare_exchanges(&mut bare_s, &mut bare_c, round_trips);
        bare_rt.push(per_second(round_trips, t.elapsed()));
        let t = Instant::now();
        exchanges(&mut s, &mut c, peer, round_trips);
        ours_rt.push(per_second(round_trips, t.elapsed()));
    }
    println!(
        "CoAPS round trips over an established session, {rounds} rounds of {round_trips}, medians:"
    );
    println!(
        "  bare OpenSSL streams (baseline)       {:8.0} /s",
        median(bare_rt.clone())
    );
    println!(
        "  DtlsServer with DtlsClient            {:8.0} /s   ratio {:.2} to baseline",
        median(ours_rt.clone()),
        ratio(&ours_rt, &bare_rt)
    );
    close(&mut s, peer);

    let before = heap_in_use();
    let held: Vec<_> = (0..sessions)
        .map(|_| bare_handshake(&sctx, &cctx))
        .collect();
    let bare_mem = heap_in_use().saturating_sub(before) / sessions;
    drop(held);
    let mut s = server();
    let before = heap_in_use();
    for i in 0..sessions {
        let mut c = client();
        handshake(&mut s, &mut c, addr(i));
        // The client goes; the server keeps its session.
    }
    let ours_mem = heap_in_use().saturating_sub(before) / sessions;
    assert_eq!(s.sizes().sessions, sessions);
    println!("memory, {sessions} established sessions held by the server (heap in use):");
    println!("  bare OpenSSL server stream (baseline) {bare_mem:8} B per session");
    println!(
        "  DtlsServer session                    {ours_mem:8} B per session   ratio {:.2} to baseline",
        ours_mem as f64 / bare_mem.max(1) as f64
    );
    // Closed, the sessions leave only their resumption state in the cache.
    for i in 0..sessions {
        close(&mut s, addr(i));
    }
    let cached = heap_in_use().saturating_sub(before) / sessions;
    println!(
        "  kept for resumption after close       {cached:8} B per session   ratio {:.3} to a live one",
        cached as f64 / ours_mem.max(1) as f64
    );
}
