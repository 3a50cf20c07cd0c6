//! Firmware Update (object 5) against small servers on 127.0.0.1: the
//! scripted LwM2M server of `support` writes /5/0/1 or /5/0/0, observes
//! /5/0/3 and /5/0/5 and executes /5/0/2; a CoAP file server (the sans-IO
//! endpoint, optionally behind DTLS-PSK) answers Block2 requests for any
//! block number with ETag and Size2; an HTTP file server supports Range.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use lwm2m_client_sim::firmware::package;
use lwm2m_client_sim::{
    Client, ClientEvent, ClientHandle, Config, FailureMode, FwState, Psk, UpdateResult,
};
use lwm2m_objects::{Node, Path, Resource, Value};
use lwm2m_server::coap::block::{block_of, BlockOpt, OPT_BLOCK2};
use lwm2m_server::coap::{Endpoint, Event};
use lwm2m_server::dtls::{DtlsConfig, DtlsEvent, DtlsServer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::broadcast;

/// Longest wait for any one step.
const T: Duration = Duration::from_secs(10);
const BLOCK: usize = 512;

type States = Vec<(FwState, UpdateResult)>;

fn config(server: &TestServer, ep: &str) -> Config {
    let mut c = Config::new(server.addr, ep);
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.lifetime = 60;
    c.tick = Duration::from_secs(3600);
    c.observe_poll = Duration::from_millis(50);
    c.reboot_delay = Duration::from_millis(100);
    c.coap.ack_timeout = Duration::from_millis(200);
    c.coap.max_retransmit = 2;
    c.profile.update_time = Duration::from_millis(200);
    c.firmware.block_size = BLOCK;
    c.firmware.retries = 1;
    c.firmware.retry_delay = Duration::from_millis(50);
    c.firmware.http_timeout = Duration::from_secs(2);
    c
}

/// A started device, its events from before the Register, and the Register.
async fn start(
    server: &mut TestServer,
    c: Config,
) -> (ClientHandle, broadcast::Receiver<ClientEvent>, Seen) {
    let h = Client::start(c).await.expect("start");
    let events = h.subscribe();
    let reg = server
        .wait_for(T, |s| s.path() == "/rd")
        .await
        .expect("register request");
    h.wait_registered(T).await.expect("registered");
    (h, events, reg)
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn write_uri(server: &TestServer, peer: SocketAddr, uri: &str) -> ResponseType {
    let p = with_payload(request(RequestType::Put, "/5/0/1"), 0, uri.as_bytes());
    code(
        &server
            .request(peer, p)
            .await
            .expect("answer to the URI write"),
    )
}

async fn execute(server: &TestServer, peer: SocketAddr, path: &str) -> Packet {
    server
        .request(peer, request(RequestType::Post, path))
        .await
        .expect("answer to the execute")
}

async fn read_text(server: &TestServer, peer: SocketAddr, path: &str) -> String {
    let r = server
        .request(peer, with_accept(request(RequestType::Get, path), 0))
        .await
        .expect("answer to the read");
    assert_eq!(code(&r), ResponseType::Content, "{path}");
    String::from_utf8(r.payload).expect("text")
}

async fn local(h: &ClientHandle, path: Path) -> Value {
    match h.read(path).await.expect("local read") {
        Node::Resource(Resource::Single { value, .. }) => value,
        n => panic!("{n:?}"),
    }
}

/// An observation of one text value.
struct Watch {
    obs: Observing,
    /// The answer to the Observe, until it is reported once.
    first: Option<String>,
}

async fn observe_text(server: &TestServer, peer: SocketAddr, path: &str) -> Watch {
    let mut p = with_accept(request(RequestType::Get, path), 0);
    p.set_observe_value(0);
    let obs = server.observe(peer, p).await.expect("observe");
    let first = Some(String::from_utf8_lossy(&obs.first.payload).into_owned());
    Watch { obs, first }
}

/// The values reported since the last call (the Observe's answer first),
/// until `last`.
async fn notified_until(w: &mut Watch, last: &str) -> Vec<String> {
    let mut seen: Vec<String> = w.first.take().into_iter().collect();
    let deadline = Instant::now() + T;
    while seen.last().map(String::as_str) != Some(last) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no notification {last:?}; saw {seen:?}"));
        let n = w
            .obs
            .next(left)
            .await
            .unwrap_or_else(|| panic!("no notification {last:?}; saw {seen:?}"));
        seen.push(String::from_utf8_lossy(&n.packet.payload).into_owned());
    }
    seen
}

/// Events until one matches `stop`, which is included.
async fn events_until(
    events: &mut broadcast::Receiver<ClientEvent>,
    stop: impl Fn(&ClientEvent) -> bool,
) -> Vec<ClientEvent> {
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("event never came; saw {out:?}"));
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(e)) => {
                let done = stop(&e);
                out.push(e);
                if done {
                    return out;
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            _ => panic!("event never came; saw {out:?}"),
        }
    }
}

/// The firmware states among `events`.
fn states(events: &[ClientEvent]) -> States {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::FirmwareState { state, result } => Some((*state, *result)),
            _ => None,
        })
        .collect()
}

/// Firmware state events until `want`; the states seen on the way.
async fn states_until(
    events: &mut broadcast::Receiver<ClientEvent>,
    want: (FwState, UpdateResult),
) -> States {
    states(
        &events_until(events, |e| {
            *e == ClientEvent::FirmwareState {
                state: want.0,
                result: want.1,
            }
        })
        .await,
    )
}

fn blocks(events: &[ClientEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::FirmwareBlock { num, .. } => Some(*num),
            _ => None,
        })
        .collect()
}

use FwState::{Downloaded, Downloading, Idle, Updating};

// ----- a CoAP file server ------------------------------------------------------

/// One Block2 request the file server got.
#[derive(Debug, Clone)]
struct Asked {
    num: u32,
    szx: u8,
    size2: bool,
    token: Vec<u8>,
    port: u16,
    at: Instant,
}

#[derive(Clone, Default)]
struct FileOptions {
    /// Answer 4.04 to everything.
    not_found: bool,
    /// From this many requests on, the package has another ETag.
    change_etag_after: Option<usize>,
    /// Speak DTLS only, with this PSK identity and key.
    psk: Option<(Vec<u8>, Vec<u8>)>,
}

struct CoapFiles {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl CoapFiles {
    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
    fn nums(&self) -> Vec<u32> {
        self.asked().iter().map(|a| a.num).collect()
    }
    fn uri(&self, scheme: &str) -> String {
        format!("{scheme}://{}/fw/pkg", self.addr)
    }
}

fn answer(packet: &Packet, body: &[u8], etag: &[u8]) -> Packet {
    let mut resp = Packet::new();
    let path = uri_path(packet);
    if packet.header.code != MessageClass::Request(RequestType::Get) || path != "/fw/pkg" {
        resp.header.code = MessageClass::Response(ResponseType::NotFound);
        return resp;
    }
    let asked = match block_of(packet, OPT_BLOCK2) {
        Some(Ok(b)) => b,
        _ => BlockOpt {
            num: 0,
            more: false,
            szx: 6,
        },
    };
    let szx = asked.szx.min(6);
    let size = 16usize << szx;
    let offset = asked.num as usize * size;
    if offset >= body.len() {
        resp.header.code = MessageClass::Response(ResponseType::BadOption);
        return resp;
    }
    let end = (offset + size).min(body.len());
    resp.header.code = MessageClass::Response(ResponseType::Content);
    resp.add_option(CoapOption::ETag, etag.to_vec());
    resp.add_option(CoapOption::ContentFormat, uint(42));
    resp.add_option(
        CoapOption::Block2,
        BlockOpt {
            num: asked.num,
            more: end < body.len(),
            szx,
        }
        .encode(),
    );
    resp.add_option(CoapOption::Size2, uint(body.len() as u32));
    resp.payload = body[offset..end].to_vec();
    resp
}

async fn coap_files(body: Vec<u8>, options: FileOptions) -> CoapFiles {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let mut dtls = options.psk.clone().map(|(identity, key)| {
        let lookup = move |id: &[u8]| (id == identity.as_slice()).then(|| key.clone());
        DtlsServer::new(DtlsConfig::default(), Arc::new(lookup)).expect("DTLS server")
    });
    tokio::spawn(async move {
        let mut ep = Endpoint::new(lwm2m_server::coap::Config::default(), 11);
        let mut buf = vec![0u8; 65_535];
        let mut served = 0usize;
        // Ends with the test's runtime.
        loop {
            while let Some(ev) = ep.poll_event() {
                if let Event::Request { id, peer, packet } = ev {
                    let b = block_of(&packet, OPT_BLOCK2).and_then(Result::ok);
                    log.lock().unwrap().push(Asked {
                        num: b.map_or(0, |b| b.num),
                        szx: b.map_or(6, |b| b.szx),
                        size2: packet.get_first_option(CoapOption::Size2).is_some(),
                        token: packet.get_token().to_vec(),
                        port: peer.port(),
                        at: Instant::now(),
                    });
                    served += 1;
                    let etag: &[u8] = match options.change_etag_after {
                        Some(n) if served > n => b"v2",
                        _ => b"v1",
                    };
                    let resp = if options.not_found {
                        let mut r = Packet::new();
                        r.header.code = MessageClass::Response(ResponseType::NotFound);
                        r
                    } else {
                        answer(&packet, &body, etag)
                    };
                    let _ = ep.respond(Instant::now(), id, resp);
                }
            }
            while let Some(t) = ep.poll_transmit() {
                match dtls.as_mut() {
                    Some(d) => {
                        let _ = d.send(Instant::now(), t.peer, &t.bytes);
                    }
                    None => {
                        let _ = socket.send_to(&t.bytes, t.peer).await;
                    }
                }
            }
            if let Some(d) = dtls.as_mut() {
                while let Some((peer, bytes)) = d.poll_transmit() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
            let now = Instant::now();
            let deadline = [
                ep.poll_timeout(),
                dtls.as_ref().and_then(DtlsServer::poll_timeout),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(60))
            .max(now);
            tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    if let Ok((n, peer)) = r {
                        let now = Instant::now();
                        match dtls.as_mut() {
                            Some(d) => {
                                d.handle_datagram(now, peer, &buf[..n]);
                                while let Some(e) = d.poll_event() {
                                    if let DtlsEvent::Data { peer, payload } = e {
                                        ep.handle_datagram(now, peer, &payload);
                                    }
                                }
                            }
                            None => ep.handle_datagram(now, peer, &buf[..n]),
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    ep.handle_timeout(Instant::now());
                    if let Some(d) = dtls.as_mut() {
                        d.handle_timeout(Instant::now());
                    }
                }
            }
        }
    });
    CoapFiles { addr, asked }
}

/// A UDP port that reads and never answers.
async fn silent_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while socket.recv_from(&mut buf).await.is_ok() {}
    });
    addr
}

// ----- an HTTP file server -----------------------------------------------------

struct HttpFiles {
    addr: SocketAddr,
    /// The Range header of each request (`None` without one).
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

impl HttpFiles {
    fn ranges(&self) -> Vec<Option<String>> {
        self.ranges.lock().unwrap().clone()
    }
}

/// Reads a request head, at most 8 KiB.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

async fn http_files(body: Vec<u8>, status: Option<u16>) -> HttpFiles {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let log = ranges.clone();
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (log, body) = (log.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(Some(head)) = tokio::time::timeout(T, read_head(&mut stream)).await else {
                    return;
                };
                let range = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("range")
                        .then(|| value.trim().to_string())
                });
                log.lock().unwrap().push(range.clone());
                let from = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|r| r.parse::<usize>().ok());
                let (head, part) = match (status, from) {
                    (Some(s), _) => (
                        format!(
                            "HTTP/1.1 {s} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                        &[][..],
                    ),
                    (None, Some(f)) if f < body.len() => (
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {f}-{}/{}\r\n\
                             Content-Length: {}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
                            body.len() - 1,
                            body.len(),
                            body.len() - f
                        ),
                        &body[f..],
                    ),
                    _ => (
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"v1\"\r\n\
                             Connection: close\r\n\r\n",
                            body.len()
                        ),
                        &body[..],
                    ),
                };
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for chunk in part.chunks(1024) {
                    if stream.write_all(chunk).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    HttpFiles { addr, ranges }
}

// ----- the tests ----------------------------------------------------------------

#[tokio::test]
async fn pull_over_coap_updates_and_registers_again() {
    let mut server = TestServer::start().await;
    let pkg = package::build("2.0.0", &body(5000));
    let n = pkg.len().div_ceil(BLOCK) as u32;
    let files = coap_files(pkg, FileOptions::default()).await;
    let c = config(&server, "fw-pull");
    let (h, mut events, reg) = start(&mut server, c).await;
    assert_eq!(read_text(&server, reg.peer, "/3/0/3").await, "1.0.0");
    let mut state = observe_text(&server, reg.peer, "/5/0/3").await;
    let mut result = observe_text(&server, reg.peer, "/5/0/5").await;

    assert_eq!(
        write_uri(&server, reg.peer, &files.uri("coap")).await,
        ResponseType::Changed
    );
    let seen = events_until(&mut events, |e| {
        matches!(
            e,
            ClientEvent::FirmwareState {
                state: Downloaded,
                ..
            }
        )
    })
    .await;
    assert_eq!(
        states(&seen),
        vec![
            (Downloading, UpdateResult::Initial),
            (Downloaded, UpdateResult::Initial)
        ]
    );
    assert_eq!(blocks(&seen), (0..n).collect::<Vec<_>>());
    assert_eq!(notified_until(&mut state, "2").await, ["0", "1", "2"]);
    let asked = files.asked();
    assert_eq!(files.nums(), (0..n).collect::<Vec<_>>());
    assert!(asked.iter().all(|a| a.szx == 5), "{asked:?}");
    assert!(asked[0].size2, "Size2: 0 on the first request");
    assert!(asked.iter().all(|a| a.token == asked[0].token));
    assert_eq!(read_text(&server, reg.peer, "/5/0/6").await, "sim-firmware");
    assert_eq!(read_text(&server, reg.peer, "/5/0/7").await, "2.0.0");

    let r = execute(&server, reg.peer, "/5/0/2").await;
    assert_eq!(code(&r), ResponseType::Changed);
    assert_eq!(notified_until(&mut state, "3").await, ["3"]);
    let seen = events_until(&mut events, |e| matches!(e, ClientEvent::Registered { .. })).await;
    assert!(seen.contains(&ClientEvent::FirmwareUpdated {
        version: "2.0.0".into()
    }));
    assert!(seen.contains(&ClientEvent::Rebooting));
    assert_eq!(
        states(&seen),
        vec![
            (Updating, UpdateResult::Initial),
            (Idle, UpdateResult::Success)
        ]
    );
    let again = server
        .wait_for(T, |s| s.path() == "/rd")
        .await
        .expect("a fresh Register after the update");
    assert!(again.queries().contains(&"ep=fw-pull".to_string()));
    // The reboot ended the observations of the old firmware: the result
    // reaches the server when it reads or observes again.
    assert!(result.obs.next(Duration::from_millis(300)).await.is_none());

    let peer = again.peer;
    assert_eq!(read_text(&server, peer, "/3/0/3").await, "2.0.0");
    assert_eq!(read_text(&server, peer, "/5/0/3").await, "0");
    assert_eq!(read_text(&server, peer, "/5/0/5").await, "1");
    // The server observes again: later changes reach it.
    let mut result = observe_text(&server, peer, "/5/0/5").await;
    assert_eq!(
        code(&execute(&server, peer, "/5/0/10").await),
        ResponseType::Changed
    );
    assert_eq!(notified_until(&mut result, "10").await, ["1", "10"]);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn push_over_coap_block1_reaches_downloaded() {
    let mut server = TestServer::start().await;
    let c = config(&server, "fw-push");
    let (h, mut events, reg) = start(&mut server, c).await;
    let pkg = package::build("3.1.4", &body(6000));
    assert!(pkg.len() > 4 * 1024, "several Block1 blocks");
    let p = with_payload(request(RequestType::Put, "/5/0/0"), 42, &pkg);
    let r = server.request(reg.peer, p).await.unwrap();
    assert_eq!(code(&r), ResponseType::Changed);
    assert!(
        r.get_first_option(CoapOption::Block1).is_some(),
        "a block-wise answer"
    );
    assert_eq!(
        states_until(&mut events, (Downloaded, UpdateResult::Initial)).await,
        vec![(Downloaded, UpdateResult::Initial)]
    );
    assert_eq!(read_text(&server, reg.peer, "/5/0/7").await, "3.1.4");

    // A single NUL resets to Idle with result 0 and deletes the image.
    let p = with_payload(request(RequestType::Put, "/5/0/0"), 42, &[0]);
    assert_eq!(
        code(&server.request(reg.peer, p).await.unwrap()),
        ResponseType::Changed
    );
    states_until(&mut events, (Idle, UpdateResult::Initial)).await;
    assert_eq!(read_text(&server, reg.peer, "/5/0/7").await, "");
    let r = execute(&server, reg.peer, "/5/0/2").await;
    assert_eq!(code(&r), ResponseType::MethodNotAllowed);
    assert!(
        String::from_utf8_lossy(&r.payload).contains("Downloaded"),
        "diagnostic: {:?}",
        r.payload
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn pull_over_http_resumes_with_a_range() {
    let mut server = TestServer::start().await;
    let pkg = package::build("4.0.0", &body(5000));
    let files = http_files(pkg, None).await;
    let mut c = config(&server, "fw-http");
    c.firmware.interrupt_after_blocks = Some(2);
    c.firmware.interrupt_for = Duration::from_millis(300);
    let (h, mut events, reg) = start(&mut server, c).await;
    let uri = format!("http://{}/fw/pkg", files.addr);
    assert_eq!(
        write_uri(&server, reg.peer, &uri).await,
        ResponseType::Changed
    );
    let seen = events_until(&mut events, |e| {
        matches!(
            e,
            ClientEvent::FirmwareState {
                state: Downloaded,
                ..
            }
        )
    })
    .await;
    let resumed_at = 2 * BLOCK;
    let gets: Vec<&ClientEvent> = seen
        .iter()
        .filter(|e| {
            matches!(
                e,
                ClientEvent::FirmwareHttpGet { .. } | ClientEvent::FirmwareDownloadPaused { .. }
            )
        })
        .collect();
    assert_eq!(
        gets,
        [
            &ClientEvent::FirmwareHttpGet { from: 0 },
            &ClientEvent::FirmwareDownloadPaused { offset: resumed_at },
            &ClientEvent::FirmwareHttpGet { from: resumed_at },
        ]
    );
    assert_eq!(
        files.ranges(),
        vec![None, Some(format!("bytes={resumed_at}-"))]
    );
    assert_eq!(read_text(&server, reg.peer, "/5/0/7").await, "4.0.0");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_interrupted_coap_download_resumes_at_the_next_block() {
    let mut server = TestServer::start().await;
    let pkg = package::build("5.0.0", &body(6000));
    let n = pkg.len().div_ceil(BLOCK) as u32;
    let files = coap_files(pkg, FileOptions::default()).await;
    let k = 3;
    let pause = Duration::from_millis(400);
    let mut c = config(&server, "fw-resume");
    c.firmware.interrupt_after_blocks = Some(k);
    c.firmware.interrupt_for = pause;
    let (h, mut events, reg) = start(&mut server, c).await;
    write_uri(&server, reg.peer, &files.uri("coap")).await;
    let seen = events_until(&mut events, |e| {
        matches!(
            e,
            ClientEvent::FirmwareState {
                state: Downloaded,
                ..
            }
        )
    })
    .await;
    assert_eq!(
        states(&seen),
        vec![
            (Downloading, UpdateResult::Initial),
            (Downloaded, UpdateResult::Initial)
        ],
        "State stays Downloading through the pause"
    );
    let paused = seen
        .iter()
        .position(|e| matches!(e, ClientEvent::FirmwareDownloadPaused { .. }))
        .expect("a pause");
    assert_eq!(
        seen[paused],
        ClientEvent::FirmwareDownloadPaused {
            offset: k as usize * BLOCK
        }
    );
    assert_eq!(blocks(&seen[..paused]), (0..k).collect::<Vec<_>>());
    assert_eq!(blocks(&seen[paused..]), (k..n).collect::<Vec<_>>());
    // The server saw block k asked for directly, from a new socket, after the pause.
    let asked = files.asked();
    assert_eq!(files.nums(), (0..n).collect::<Vec<_>>());
    let (before, after) = (&asked[k as usize - 1], &asked[k as usize]);
    assert!(after.at.duration_since(before.at) >= pause, "{asked:?}");
    assert_ne!(after.port, before.port);
    assert!(after.size2);
    assert_eq!(
        local(&h, Path::resource(5, 0, 7)).await,
        Value::String("5.0.0".into())
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_changed_etag_restarts_at_block_0() {
    let mut server = TestServer::start().await;
    let pkg = package::build("6.0.0", &body(3000));
    let n = pkg.len().div_ceil(BLOCK) as u32;
    let files = coap_files(
        pkg,
        FileOptions {
            change_etag_after: Some(3),
            ..FileOptions::default()
        },
    )
    .await;
    let c = config(&server, "fw-etag");
    let (h, mut events, reg) = start(&mut server, c).await;
    write_uri(&server, reg.peer, &files.uri("coap")).await;
    states_until(&mut events, (Downloaded, UpdateResult::Initial)).await;
    let mut want = vec![0, 1, 2, 3];
    want.extend(0..n);
    assert_eq!(files.nums(), want);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn pull_over_coaps_uses_the_device_psk() {
    let psk = (b"fw-dtls".to_vec(), b"0123456789abcdef".to_vec());
    let mut server = TestServer::start_with(Options {
        psk: Some(psk.clone()),
        ..Options::default()
    })
    .await;
    let pkg = package::build("7.0.0", &body(2500));
    let n = pkg.len().div_ceil(BLOCK) as u32;
    let files = coap_files(
        pkg,
        FileOptions {
            psk: Some(psk.clone()),
            ..FileOptions::default()
        },
    )
    .await;
    let mut c = config(&server, "fw-dtls");
    c.coap.ack_timeout = Duration::from_secs(1);
    c.psk = Some(Psk {
        identity: psk.0,
        key: psk.1,
    });
    let (h, mut events, reg) = start(&mut server, c).await;
    write_uri(&server, reg.peer, &files.uri("coaps")).await;
    states_until(&mut events, (Downloaded, UpdateResult::Initial)).await;
    assert_eq!(files.nums(), (0..n).collect::<Vec<_>>());
    assert_eq!(read_text(&server, reg.peer, "/5/0/7").await, "7.0.0");
    h.shutdown().await.unwrap();
}

fn faked_package() -> Vec<u8> {
    package::build("9.9.9", &body(4000))
}

/// Runs one faked failure from the URI write (or push) to its end; the
/// states passed, and the file server's requests.
async fn faked(mode: FailureMode) -> (States, usize) {
    let mut server = TestServer::start().await;
    let files = coap_files(faked_package(), FileOptions::default()).await;
    let mut c = config(&server, &format!("fw-fail-{mode}"));
    c.firmware.fail = Some(mode);
    let (h, mut events, reg) = start(&mut server, c).await;
    write_uri(&server, reg.peer, &files.uri("coap")).await;
    let want = mode.result();
    let mut seen = if mode == FailureMode::UpdateFailed {
        let mut s = states_until(&mut events, (Downloaded, UpdateResult::Initial)).await;
        assert_eq!(
            code(&execute(&server, reg.peer, "/5/0/2").await),
            ResponseType::Changed
        );
        s.extend(states_until(&mut events, (Downloaded, want)).await);
        assert_eq!(read_text(&server, reg.peer, "/3/0/3").await, "1.0.0");
        s
    } else {
        states_until(&mut events, (Idle, want)).await
    };
    // Nothing more happens: a failed download is not resumed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = files.asked().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(files.asked().len(), asked, "{mode}: the download went on");
    while let Ok(e) = events.try_recv() {
        if let ClientEvent::FirmwareState { state, result } = e {
            seen.push((state, result));
        }
    }
    h.shutdown().await.unwrap();
    (seen, asked)
}

#[tokio::test]
async fn every_faked_failure_ends_with_its_update_result() {
    let runs: Vec<_> = FailureMode::ALL
        .into_iter()
        .map(|m| (m, tokio::spawn(faked(m))))
        .collect();
    for (mode, run) in runs {
        let (seen, asked) = run.await.expect("run");
        let r = mode.result();
        let want: States = match mode {
            FailureMode::InvalidUri | FailureMode::UnsupportedProtocol => vec![(Idle, r)],
            FailureMode::UpdateFailed => vec![
                (Downloading, UpdateResult::Initial),
                (Downloaded, UpdateResult::Initial),
                (Updating, UpdateResult::Initial),
                (Downloaded, r),
            ],
            _ => vec![(Downloading, UpdateResult::Initial), (Idle, r)],
        };
        assert_eq!(seen, want, "{mode}");
        match mode {
            FailureMode::InvalidUri | FailureMode::UnsupportedProtocol => {
                assert_eq!(asked, 0, "{mode}")
            }
            // Stopped after the first block; at most the next request was under way.
            FailureMode::OutOfStorage | FailureMode::OutOfMemory | FailureMode::ConnectionLost => {
                assert!((1..=2).contains(&asked), "{mode}: {asked} requests")
            }
            _ => assert_eq!(asked, faked_package().len().div_ceil(BLOCK), "{mode}"),
        }
    }
}

#[tokio::test]
async fn faked_failures_of_a_push() {
    for (mode, want) in [
        (FailureMode::OutOfStorage, UpdateResult::NotEnoughFlash),
        (FailureMode::OutOfMemory, UpdateResult::OutOfRam),
        (FailureMode::Integrity, UpdateResult::IntegrityFailure),
        (
            FailureMode::UnsupportedPackage,
            UpdateResult::UnsupportedPackage,
        ),
    ] {
        let mut server = TestServer::start().await;
        let mut c = config(&server, "fw-push-fail");
        c.firmware.fail = Some(mode);
        let (h, mut events, reg) = start(&mut server, c).await;
        let p = with_payload(
            request(RequestType::Put, "/5/0/0"),
            42,
            &package::build("1.1", b"x"),
        );
        assert_eq!(
            code(&server.request(reg.peer, p).await.unwrap()),
            ResponseType::Changed
        );
        assert_eq!(
            states_until(&mut events, (Idle, want)).await,
            vec![(Idle, want)],
            "{mode}"
        );
        h.shutdown().await.unwrap();
    }
}

/// The Update Result a pull from `uri` ends with, on a device tuned by `tune`.
async fn pull_result(uri: &str, tune: impl FnOnce(&mut Config)) -> (States, Vec<ClientEvent>) {
    let mut server = TestServer::start().await;
    let mut c = config(&server, "fw-real-fail");
    tune(&mut c);
    let (h, mut events, reg) = start(&mut server, c).await;
    assert_eq!(
        write_uri(&server, reg.peer, uri).await,
        ResponseType::Changed
    );
    let seen = events_until(&mut events, |e| {
        matches!(
            e,
            ClientEvent::FirmwareState {
                state: Idle | Downloaded,
                ..
            }
        )
    })
    .await;
    h.shutdown().await.unwrap();
    (states(&seen), seen)
}

#[tokio::test]
async fn real_failures_give_their_update_results() {
    let dl = (Downloading, UpdateResult::Initial);
    // Not the package format.
    let files = coap_files(b"MZ\x90\x00 not a package".to_vec(), FileOptions::default()).await;
    let (s, _) = pull_result(&files.uri("coap"), |_| {}).await;
    assert_eq!(s, vec![dl, (Idle, UpdateResult::UnsupportedPackage)]);
    // The digest does not match the body.
    let mut bad = package::build("2", &body(700));
    *bad.last_mut().unwrap() ^= 1;
    let files = coap_files(bad, FileOptions::default()).await;
    let (s, _) = pull_result(&files.uri("coap"), |_| {}).await;
    assert_eq!(s, vec![dl, (Idle, UpdateResult::IntegrityFailure)]);
    // Larger than the device stores: known from Size2 at the first block.
    let files = coap_files(package::build("2", &body(5000)), FileOptions::default()).await;
    let (s, seen) = pull_result(&files.uri("coap"), |c| c.firmware.max_package_size = 4096).await;
    assert_eq!(s, vec![dl, (Idle, UpdateResult::NotEnoughFlash)]);
    assert!(blocks(&seen).is_empty(), "{seen:?}");
    // 4.04 over CoAP, 404 over HTTP.
    let files = coap_files(
        Vec::new(),
        FileOptions {
            not_found: true,
            ..FileOptions::default()
        },
    )
    .await;
    let (s, _) = pull_result(&files.uri("coap"), |_| {}).await;
    assert_eq!(s, vec![dl, (Idle, UpdateResult::ConnectionLost)]);
    assert_eq!(files.asked().len(), 1, "4.04 is not retried");
    let http = http_files(Vec::new(), Some(404)).await;
    let (s, _) = pull_result(&format!("http://{}/fw/x", http.addr), |_| {}).await;
    assert_eq!(s, vec![dl, (Idle, UpdateResult::ConnectionLost)]);
    // No answer at all: the configured retries, then result 4.
    let silent = silent_server().await;
    let started = Instant::now();
    let (s, seen) = pull_result(&format!("coap://{silent}/fw"), |c| {
        c.coap.ack_timeout = Duration::from_millis(100);
        c.coap.max_retransmit = 1;
    })
    .await;
    assert_eq!(s, vec![dl, (Idle, UpdateResult::ConnectionLost)]);
    assert!(started.elapsed() < T);
    assert!(
        seen.iter()
            .any(|e| matches!(e, ClientEvent::FirmwareDownloadFailed { reason } if reason.contains("2 tries"))),
        "{seen:?}"
    );
    // URIs the device cannot use: answered 2.04, then result 7 or 9.
    for (uri, want) in [
        ("gopher://127.0.0.1/fw", UpdateResult::InvalidUri),
        ("coap://[::1/fw", UpdateResult::InvalidUri),
        ("https://127.0.0.1/fw", UpdateResult::UnsupportedProtocol),
        // No credentials for a coaps:// download.
        ("coaps://127.0.0.1/fw", UpdateResult::UnsupportedProtocol),
    ] {
        let (s, _) = pull_result(uri, |_| {}).await;
        assert_eq!(s, vec![(Idle, want)], "{uri}");
    }
    let long = format!("coap://127.0.0.1/{}", "a".repeat(250));
    let (s, _) = pull_result(&long, |_| {}).await;
    assert_eq!(s, vec![(Idle, UpdateResult::InvalidUri)]);
    // A scheme the device does not list in /5/0/8.
    let http = http_files(package::build("2", b""), None).await;
    let (s, _) = pull_result(&format!("http://{}/fw", http.addr), |c| {
        c.firmware.protocols = vec![lwm2m_client_sim::Protocol::Coap];
    })
    .await;
    assert_eq!(s, vec![(Idle, UpdateResult::UnsupportedProtocol)]);
    assert!(http.ranges().is_empty());
}

#[tokio::test]
async fn an_empty_uri_resets_and_cancel_is_refused_while_updating() {
    let mut server = TestServer::start().await;
    let files = coap_files(package::build("8.0.0", &body(1000)), FileOptions::default()).await;
    let mut c = config(&server, "fw-reset");
    c.profile.update_time = Duration::from_secs(2);
    let (h, mut events, reg) = start(&mut server, c).await;
    write_uri(&server, reg.peer, &files.uri("coap")).await;
    states_until(&mut events, (Downloaded, UpdateResult::Initial)).await;
    assert_eq!(
        write_uri(&server, reg.peer, "").await,
        ResponseType::Changed
    );
    assert_eq!(
        states_until(&mut events, (Idle, UpdateResult::Initial)).await,
        vec![(Idle, UpdateResult::Initial)]
    );
    assert_eq!(read_text(&server, reg.peer, "/5/0/7").await, "");
    assert_eq!(read_text(&server, reg.peer, "/5/0/6").await, "");
    let r = execute(&server, reg.peer, "/5/0/2").await;
    assert_eq!(code(&r), ResponseType::MethodNotAllowed);

    // Cancel ends a download; it is refused once the installation began.
    write_uri(&server, reg.peer, &files.uri("coap")).await;
    states_until(&mut events, (Downloaded, UpdateResult::Initial)).await;
    assert_eq!(
        code(&execute(&server, reg.peer, "/5/0/2").await),
        ResponseType::Changed
    );
    let r = execute(&server, reg.peer, "/5/0/10").await;
    assert_eq!(code(&r), ResponseType::MethodNotAllowed);
    assert_eq!(
        write_uri(&server, reg.peer, "").await,
        ResponseType::MethodNotAllowed,
        "no URI write while installing"
    );
    assert_eq!(
        local(&h, Path::resource(5, 0, 3)).await,
        Value::Integer(Updating.code())
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_a_download() {
    let mut server = TestServer::start().await;
    let files = coap_files(package::build("8.0.0", &body(8000)), FileOptions::default()).await;
    let mut c = config(&server, "fw-cancel");
    c.firmware.block_delay = Duration::from_millis(100);
    let (h, mut events, reg) = start(&mut server, c).await;
    write_uri(&server, reg.peer, &files.uri("coap")).await;
    events_until(&mut events, |e| {
        matches!(e, ClientEvent::FirmwareBlock { num: 1, .. })
    })
    .await;
    assert_eq!(
        code(&execute(&server, reg.peer, "/5/0/10").await),
        ResponseType::Changed
    );
    states_until(&mut events, (Idle, UpdateResult::Cancelled)).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let asked = files.asked().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(files.asked().len(), asked, "the download went on");
    assert!(asked < 8000 / BLOCK);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lying_device_reports_success_and_keeps_its_version() {
    let mut server = TestServer::start().await;
    let files = coap_files(package::build("2.0.0", &body(1500)), FileOptions::default()).await;
    let mut c = config(&server, "fw-lie");
    c.firmware.lie = true;
    let (h, mut events, reg) = start(&mut server, c).await;
    write_uri(&server, reg.peer, &files.uri("coap")).await;
    states_until(&mut events, (Downloaded, UpdateResult::Initial)).await;
    execute(&server, reg.peer, "/5/0/2").await;
    let seen = events_until(&mut events, |e| matches!(e, ClientEvent::Registered { .. })).await;
    assert!(seen.contains(&ClientEvent::FirmwareUpdated {
        version: "1.0.0".into()
    }));
    let again = server
        .wait_for(T, |s| s.path() == "/rd")
        .await
        .expect("a fresh Register");
    assert_eq!(read_text(&server, again.peer, "/5/0/5").await, "1");
    assert_eq!(read_text(&server, again.peer, "/5/0/7").await, "2.0.0");
    assert_eq!(read_text(&server, again.peer, "/3/0/3").await, "1.0.0");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pull_only_device_refuses_a_push() {
    let mut server = TestServer::start().await;
    let mut c = config(&server, "fw-pull-only");
    c.firmware.delivery = lwm2m_client_sim::DeliveryMethod::Pull;
    let (h, _events, reg) = start(&mut server, c).await;
    assert_eq!(read_text(&server, reg.peer, "/5/0/9").await, "0");
    let p = with_payload(
        request(RequestType::Put, "/5/0/0"),
        42,
        &package::build("1", b""),
    );
    let r = server.request(reg.peer, p).await.unwrap();
    assert_eq!(code(&r), ResponseType::MethodNotAllowed);
    assert_eq!(
        local(&h, Path::resource(5, 0, 3)).await,
        Value::Integer(Idle.code())
    );
    h.shutdown().await.unwrap();
}
