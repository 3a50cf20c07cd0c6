//! The server against OpenSSL's own DTLS client, in memory: datagrams are carried by hand
//! between the two, with loss where a test asks for it. Timers are OpenSSL's real ones,
//! shortened (50 ms first retransmission) so that every test ends in well under a second
//! or a few when it loses datagrams on purpose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, Ssl, SslContextBuilder, SslMethod, SslStream, SslVersion};

use super::pipe::Pipe;
use super::*;

const KEY: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const STEP: Duration = Duration::from_millis(2);

fn config() -> DtlsConfig {
    DtlsConfig {
        handshake_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_secs(30),
        initial_retransmit: Duration::from_millis(50),
        ..DtlsConfig::default()
    }
}

fn keys() -> Arc<dyn PskLookup> {
    Arc::new(|id: &[u8]| (id == b"dev-1" || id == b"dev-2").then(|| KEY.to_vec()))
}

fn server(config: DtlsConfig) -> DtlsServer {
    DtlsServer::new(config, keys()).expect("server")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], port))
}

struct Client {
    addr: SocketAddr,
    stream: SslStream<Pipe>,
    connected: bool,
    /// Why the client's handshake failed, if it did.
    failed: Option<String>,
}

fn client(port: u16, identity: &'static str, key: &'static [u8]) -> Client {
    let mut b = SslContextBuilder::new(SslMethod::dtls_client()).expect("ctx");
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .expect("version");
    b.set_cipher_list("PSK-AES128-CCM8").expect("ciphers");
    b.set_psk_client_callback(move |_ssl, _hint, id_out, psk_out| {
        // The identity is a NUL-terminated string.
        id_out[..identity.len()].copy_from_slice(identity.as_bytes());
        id_out[identity.len()] = 0;
        psk_out[..key.len()].copy_from_slice(key);
        Ok(key.len())
    });
    b.set_options(openssl::ssl::SslOptions::NO_QUERY_MTU);
    let ctx = b.build();
    let mut ssl = Ssl::new(&ctx).expect("ssl");
    ssl.set_mtu(1200).expect("mtu");
    ffi::set_initial_timeout(&mut ssl, Duration::from_millis(50));
    Client {
        addr: addr(port),
        stream: SslStream::new(ssl, Pipe::default()).expect("stream"),
        connected: false,
        failed: None,
    }
}

/// A deterministic coin: true with probability `p` (xorshift).
struct Coin(u64);

impl Coin {
    fn lose(&mut self, p: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1000) < (p * 1000.0) as u64
    }
}

/// Moves datagrams both ways (losing `loss` of them) and runs both sides' timers until
/// `done` holds or `limit` passes. Returns whether `done` held.
fn pump(
    s: &mut DtlsServer,
    clients: &mut [Client],
    loss: f64,
    limit: Duration,
    mut done: impl FnMut(&DtlsServer, &[Client]) -> bool,
) -> bool {
    let mut coin = Coin(0x9E37_79B9_7F4A_7C15);
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let now = Instant::now();
        for c in clients.iter_mut() {
            if !c.connected && c.failed.is_none() {
                match c.stream.connect() {
                    Ok(()) => c.connected = true,
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(e) => c.failed = Some(e.to_string()),
                }
            }
            if ffi::timeout(c.stream.ssl()).is_some_and(|d| d.is_zero()) {
                ffi::handle_timeout(c.stream.ssl());
            }
            for d in c.stream.get_mut().take_outgoing() {
                if !coin.lose(loss) {
                    s.handle_datagram(now, c.addr, &d);
                }
            }
        }
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        while let Some((to, d)) = s.poll_transmit() {
            if coin.lose(loss) {
                continue;
            }
            if let Some(c) = clients.iter_mut().find(|c| c.addr == to) {
                c.stream.get_mut().push(&d);
            }
        }
        if done(s, clients) {
            return true;
        }
        std::thread::sleep(STEP);
    }
    false
}

fn events(s: &mut DtlsServer) -> Vec<DtlsEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// A server with one client of "dev-1" established on it, its events taken.
fn established(port: u16) -> (DtlsServer, [Client; 1]) {
    let mut s = server(config());
    let mut c = [client(port, "dev-1", KEY)];
    assert!(pump(&mut s, &mut c, 0.0, Duration::from_secs(5), |s, c| {
        c[0].connected && s.is_established(&c[0].addr)
    }));
    events(&mut s);
    (s, c)
}

#[test]
fn a_psk_handshake_then_data_both_ways() {
    let mut s = server(config());
    let mut c = [client(40_001, "dev-1", KEY)];
    assert!(pump(&mut s, &mut c, 0.0, Duration::from_secs(5), |s, c| {
        c[0].connected && s.is_established(&c[0].addr)
    }));
    assert_eq!(
        events(&mut s),
        vec![DtlsEvent::Established {
            peer: c[0].addr,
            identity: PeerIdentity::Psk(b"dev-1".to_vec()),
            resumed: false,
        }]
    );
    assert_eq!(
        c[0].stream.ssl().current_cipher().map(|x| x.name()),
        Some("PSK-AES128-CCM8")
    );
    // Client to server.
    c[0].stream.ssl_write(b"coap request").expect("write");
    pump(&mut s, &mut c, 0.0, Duration::from_secs(1), |_, _| true);
    assert_eq!(
        events(&mut s),
        vec![DtlsEvent::Data {
            peer: c[0].addr,
            payload: b"coap request".to_vec()
        }]
    );
    // Server to client.
    s.send(Instant::now(), c[0].addr, b"coap response")
        .expect("send");
    pump(&mut s, &mut c, 0.0, Duration::from_secs(1), |_, _| true);
    let mut buf = [0u8; 64];
    let n = c[0].stream.ssl_read(&mut buf).expect("read");
    assert_eq!(&buf[..n], b"coap response");
    assert_eq!(s.sizes().half_open, 0);
    assert!(
        s.send(Instant::now(), addr(9), b"x").is_err(),
        "no session, no send"
    );
}

/// RFC 6347 §4.1.1 lets a sender put several records in one datagram: every one of them
/// is opened, not only the first (the server stops reading once nothing can be left).
#[test]
fn every_record_of_a_datagram_is_opened() {
    let (mut s, mut c) = established(40_002);
    for text in [&b"first"[..], b"second", b"third"] {
        c[0].stream.ssl_write(text).expect("write");
    }
    let records = c[0].stream.get_mut().take_outgoing();
    assert_eq!(records.len(), 3, "one record a write");
    let (one, alone) = records.split_at(2);
    s.handle_datagram(Instant::now(), c[0].addr, &one.concat());
    s.handle_datagram(Instant::now(), c[0].addr, &alone[0]);
    let payloads: Vec<Vec<u8>> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            DtlsEvent::Data { payload, .. } => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(
        payloads,
        vec![b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
    );
    assert!(s.is_established(&c[0].addr));
}

#[test]
fn a_wrong_key_or_unknown_identity_never_establishes_and_leaves_nothing() {
    let mut s = server(config());
    let mut c = [
        client(40_002, "dev-1", b"wrong key 123456"),
        client(40_003, "nobody", KEY),
    ];
    let established = pump(&mut s, &mut c, 0.0, Duration::from_millis(1500), |s, c| {
        c.iter().any(|c| s.is_established(&c.addr))
    });
    assert!(!established);
    // The unknown identity is told so; the wrong key is not (its Finished just fails).
    assert!(c[1]
        .failed
        .as_deref()
        .is_some_and(|e| e.contains("unknown psk identity")));
    assert!(!c[0].connected);
    assert!(!events(&mut s)
        .iter()
        .any(|e| matches!(e, DtlsEvent::Established { .. })));
    // The handshake deadline (800 ms) swept both.
    assert_eq!(s.sizes(), DtlsSizes::default());
}

#[test]
fn spoofed_client_hellos_get_a_cookie_and_cost_no_state() {
    let mut s = server(config());
    // A real ClientHello, replayed from a thousand source ports.
    let mut c = client(40_004, "dev-1", KEY);
    let _ = c.stream.connect();
    let hello = c
        .stream
        .get_mut()
        .take_outgoing()
        .pop()
        .expect("ClientHello");
    assert!(is_client_hello(&hello));
    let now = Instant::now();
    for port in 1..=1000 {
        s.handle_datagram(now, addr(port), &hello);
    }
    assert_eq!(
        s.sizes(),
        DtlsSizes::default(),
        "no session before the cookie"
    );
    let mut answers = 0;
    while let Some((_, d)) = s.poll_transmit() {
        assert!(
            d.len() <= hello.len(),
            "no amplification: {} > {}",
            d.len(),
            hello.len()
        );
        assert_eq!(d.get(13), Some(&3), "a HelloVerifyRequest");
        answers += 1;
    }
    assert_eq!(answers, 1000);
    // Garbage and records that are not a ClientHello are ignored outright.
    for junk in [&b""[..], &[22u8; 5][..], &[23u8; 40][..], &[0xFF; 100][..]] {
        s.handle_datagram(now, addr(1), junk);
    }
    assert!(s.poll_transmit().is_none());
    assert_eq!(s.sizes(), DtlsSizes::default());
}

#[test]
fn a_handshake_completes_under_twenty_percent_loss() {
    let mut s = server(DtlsConfig {
        handshake_timeout: Duration::from_secs(20),
        ..config()
    });
    let mut c = [client(40_005, "dev-2", KEY), client(40_006, "dev-1", KEY)];
    assert!(pump(
        &mut s,
        &mut c,
        0.2,
        Duration::from_secs(20),
        |s, c| { c.iter().all(|c| c.connected && s.is_established(&c.addr)) }
    ));
}

#[test]
fn half_open_handshakes_and_sessions_per_address_are_bounded() {
    let mut s = server(DtlsConfig {
        max_half_open: 2,
        ..config()
    });
    // Three clients get through the cookie exchange, but their key exchange is never
    // delivered: only two are kept half-open.
    let mut c = [
        client(40_010, "dev-1", KEY),
        client(40_011, "dev-1", KEY),
        client(40_012, "dev-1", KEY),
    ];
    let now = Instant::now();
    for _ in 0..2 {
        for cl in c.iter_mut() {
            let _ = cl.stream.connect();
            for d in cl.stream.get_mut().take_outgoing() {
                if is_client_hello(&d) {
                    s.handle_datagram(now, cl.addr, &d);
                }
            }
        }
        while let Some((to, d)) = s.poll_transmit() {
            if let Some(cl) = c.iter_mut().find(|cl| cl.addr == to) {
                cl.stream.get_mut().push(&d);
            }
        }
    }
    assert_eq!(s.sizes().half_open, 2);
    assert_eq!(s.sizes().sessions, 2);
    // One address may hold only so many sessions.
    let mut s = server(DtlsConfig {
        max_sessions_per_ip: 1,
        ..config()
    });
    let mut c = [client(40_020, "dev-1", KEY), client(40_021, "dev-2", KEY)];
    pump(&mut s, &mut c, 0.0, Duration::from_millis(600), |_, _| {
        false
    });
    assert_eq!(s.sizes().sessions, 1);
    assert_eq!(s.sizes().addresses, 1);
}

#[test]
fn idle_and_closed_sessions_end_with_an_event() {
    let mut s = server(DtlsConfig {
        idle_timeout: Duration::from_millis(300),
        ..config()
    });
    let mut c = [client(40_030, "dev-1", KEY), client(40_031, "dev-2", KEY)];
    assert!(pump(&mut s, &mut c, 0.0, Duration::from_secs(5), |s, c| {
        c.iter().all(|c| c.connected && s.is_established(&c.addr))
    }));
    events(&mut s);
    // The first says goodbye; the second falls silent.
    let _ = c[0].stream.shutdown();
    assert!(pump(&mut s, &mut c, 0.0, Duration::from_secs(2), |s, _| s
        .sizes()
        .sessions
        == 0));
    let ev = events(&mut s);
    assert!(
        ev.contains(&DtlsEvent::Closed {
            peer: c[0].addr,
            reason: CloseReason::Closed
        }),
        "{ev:?}"
    );
    assert!(
        ev.contains(&DtlsEvent::Closed {
            peer: c[1].addr,
            reason: CloseReason::Idle
        }),
        "{ev:?}"
    );
    assert_eq!(s.sizes(), DtlsSizes::default());
}

#[test]
fn a_spoofed_client_hello_does_not_end_an_established_session() {
    let (mut s, mut c) = established(40_060);
    // Someone else sends a ClientHello with the device's address; the cookie answer goes
    // to the device, which ignores it, so the hello never comes back with it.
    let mut other = client(1, "dev-2", KEY);
    let _ = other.stream.connect();
    let hello = other.stream.get_mut().take_outgoing().pop().expect("hello");
    s.handle_datagram(Instant::now(), c[0].addr, &hello);
    assert!(s.is_established(&c[0].addr), "the session survives");
    assert!(events(&mut s).is_empty());
    // And it still carries data.
    c[0].stream.ssl_write(b"still here").expect("write");
    pump(&mut s, &mut c, 0.0, Duration::from_millis(200), |_, _| true);
    assert!(events(&mut s).contains(&DtlsEvent::Data {
        peer: c[0].addr,
        payload: b"still here".to_vec()
    }));
}

#[test]
fn a_new_client_hello_on_an_established_session_starts_over() {
    let (mut s, c) = established(40_040);
    // The device rebooted: same address, a new handshake.
    let port = c[0].addr.port();
    let mut again = [client(port, "dev-2", KEY)];
    assert!(pump(
        &mut s,
        &mut again,
        0.0,
        Duration::from_secs(5),
        |s, c| { c[0].connected && s.is_established(&c[0].addr) }
    ));
    let ev = events(&mut s);
    assert_eq!(
        ev,
        vec![
            DtlsEvent::Closed {
                peer: again[0].addr,
                reason: CloseReason::Replaced
            },
            DtlsEvent::Established {
                peer: again[0].addr,
                identity: PeerIdentity::Psk(b"dev-2".to_vec()),
                resumed: false,
            }
        ]
    );
    assert_eq!(s.sizes().sessions, 1);
}

/// Runs one [`DtlsClient`] against the server until it is established (or `limit`).
fn pump_client(s: &mut DtlsServer, c: &mut DtlsClient, from: SocketAddr, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let now = Instant::now();
        c.handle_timeout();
        for d in c.poll_transmit() {
            s.handle_datagram(now, from, &d);
        }
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        while let Some((to, d)) = s.poll_transmit() {
            if to == from {
                c.handle_datagram(&d);
            }
        }
        if c.is_established() && s.is_established(&from) {
            return true;
        }
        std::thread::sleep(STEP);
    }
    false
}

#[test]
fn a_device_back_from_sleep_resumes_its_session_until_credentials_change() {
    let mut s = server(config());
    let mut ctx =
        DtlsClientContext::psk(b"dev-1", KEY, None, Duration::from_millis(50)).expect("context");
    let mut first = ctx.connect().expect("client");
    assert!(pump_client(
        &mut s,
        &mut first,
        addr(40_050),
        Duration::from_secs(5)
    ));
    assert!(!first.resumed());
    ctx.remember(&first);
    events(&mut s);
    // The server dropped the idle session; the device wakes on another port.
    s.close(addr(40_050), CloseReason::Idle);
    let mut again = ctx.connect().expect("client");
    assert!(pump_client(
        &mut s,
        &mut again,
        addr(40_051),
        Duration::from_secs(5)
    ));
    assert!(again.resumed(), "an abbreviated handshake");
    let ev = events(&mut s);
    assert!(
        ev.contains(&DtlsEvent::Established {
            peer: addr(40_051),
            identity: PeerIdentity::Psk(b"dev-1".to_vec()),
            resumed: true,
        }),
        "{ev:?}"
    );
    // Credentials changed: nothing cached may be resumed, a full handshake follows.
    ctx.remember(&again);
    s.forget_resumable_sessions();
    let mut third = ctx.connect().expect("client");
    assert!(pump_client(
        &mut s,
        &mut third,
        addr(40_052),
        Duration::from_secs(5)
    ));
    assert!(!third.resumed());
}

/// The client side of [`every_record_of_a_datagram_is_opened`].
#[test]
fn the_client_opens_every_record_of_a_datagram() {
    let mut s = server(config());
    let mut c = DtlsClient::psk(b"dev-2", KEY, None, Duration::from_millis(50)).expect("client");
    let from = addr(40_060);
    assert!(pump_client(&mut s, &mut c, from, Duration::from_secs(5)));
    let now = Instant::now();
    s.send(now, from, b"one").expect("send");
    s.send(now, from, b"two").expect("send");
    let datagrams: Vec<Vec<u8>> = std::iter::from_fn(|| s.poll_transmit())
        .map(|(_, d)| d)
        .collect();
    assert_eq!(datagrams.len(), 2);
    assert_eq!(
        c.handle_datagram(&datagrams.concat()),
        vec![b"one".to_vec(), b"two".to_vec()]
    );
}

/// A client's first ClientHello, as OpenSSL's client sends it.
fn first_hello(port: u16) -> Vec<u8> {
    let mut c = client(port, "dev-1", KEY);
    let _ = c.stream.connect();
    c.stream
        .get_mut()
        .take_outgoing()
        .pop()
        .expect("ClientHello")
}

#[test]
fn the_first_hello_gets_the_very_bytes_openssl_would_answer() {
    let peer = addr(40_010);
    let hello = first_hello(40_010);
    let mut s = server(config());
    // OpenSSL's answer: DTLSv1_listen on an SSL of the server's own context.
    let mut ssl = Ssl::new(&s.ctx).expect("ssl");
    ssl.set_ex_data(*peer_index(), peer);
    ssl.set_mtu(s.config.mtu).expect("mtu");
    let mut stream = SslStream::new(ssl, Pipe::with(&hello)).expect("stream");
    assert_eq!(ffi::listen(stream.ssl()), ffi::Listen::NotYet);
    let theirs = stream.get_mut().take_outgoing();
    assert_eq!(theirs.len(), 1);
    s.handle_datagram(Instant::now(), peer, &hello);
    let (to, ours) = s.poll_transmit().expect("a HelloVerifyRequest");
    assert_eq!(to, peer);
    assert_eq!(ours, theirs[0]);
    assert!(s.poll_transmit().is_none());
    assert_eq!(s.sizes(), DtlsSizes::default(), "and no state kept");
}

#[test]
fn only_a_plain_first_hello_is_answered_without_openssl() {
    use super::hello::FirstHello;
    let hello = first_hello(40_011);
    assert!(FirstHello::parse(&hello).is_some());
    // Every shorter prefix, a byte more, a second record: not a plain first hello.
    for cut in 0..hello.len() {
        assert_eq!(FirstHello::parse(&hello[..cut]), None, "cut at {cut}");
    }
    let mut longer = hello.clone();
    longer.push(0);
    assert_eq!(FirstHello::parse(&longer), None);
    let mut two = hello.clone();
    two.extend_from_slice(&hello);
    assert_eq!(FirstHello::parse(&two), None);
    // A fragment (its fragment length short of the message's length).
    let mut fragment = hello.clone();
    fragment[13 + 11] = fragment[13 + 11].wrapping_sub(1);
    assert_eq!(FirstHello::parse(&fragment), None);
    // A hello with a cookie: the second of a handshake, OpenSSL's to verify.
    let first = FirstHello::parse(&hello).expect("first");
    let answer = first.verify_request(&[7; 16]).expect("answer");
    assert!(answer.len() <= hello.len());
    let sid = usize::from(hello[13 + 12 + 34]);
    let mut with_cookie = hello.clone();
    with_cookie[13 + 12 + 35 + sid] = 1;
    assert_eq!(FirstHello::parse(&with_cookie), None);
    // Any single byte changed: parsed or not, never a panic, never a larger answer.
    for at in 0..hello.len() {
        for to in [0u8, 1, 0x20, 0xfe, 0xff] {
            let mut d = hello.clone();
            d[at] = to;
            if let Some(f) = FirstHello::parse(&d) {
                let a = f.verify_request(&[7; 16]).expect("answer");
                assert!(a.len() <= d.len());
            }
        }
    }
    // A cookie too long for the hello it answers gets no answer at all.
    assert_eq!(first.verify_request(&vec![7; hello.len()]), None);
}
