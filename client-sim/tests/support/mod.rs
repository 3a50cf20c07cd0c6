//! A tiny scripted LwM2M server for the client tests, built on the same
//! sans-IO CoAP endpoint: it accepts Register/Update/De-register/Send (and,
//! as a bootstrap server, Bootstrap-Request) with fixed answers, records every
//! request the client sends, and lets a test send DM or bootstrap requests
//! and collect notifications. Plain CoAP, or DTLS-PSK through the server's
//! sans-IO DTLS. 127.0.0.1 only.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use lwm2m_server::coap::{Config, Endpoint, Event, RequestId};
use lwm2m_server::dtls::{DtlsConfig, DtlsEvent, DtlsServer};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

pub const LOCATION: [&str; 2] = ["rd", "a1b2"];

/// A request the client sent us.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    pub packet: Packet,
    pub at: Instant,
}

impl Seen {
    pub fn path(&self) -> String {
        uri_path(&self.packet)
    }
    pub fn queries(&self) -> Vec<String> {
        self.packet
            .get_option(CoapOption::UriQuery)
            .map(|q| {
                q.iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn method(&self) -> Option<RequestType> {
        match self.packet.header.code {
            MessageClass::Request(m) => Some(m),
            _ => None,
        }
    }
}

pub fn uri_path(p: &Packet) -> String {
    p.get_option(CoapOption::UriPath)
        .map(|s| {
            s.iter()
                .map(|v| format!("/{}", String::from_utf8_lossy(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of the first `name=` Uri-Query option.
pub fn query_value(p: &Packet, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    p.get_option(CoapOption::UriQuery)?.iter().find_map(|q| {
        std::str::from_utf8(q)
            .ok()
            .and_then(|q| q.strip_prefix(&prefix))
            .map(str::to_string)
    })
}

/// A notification or response to one of our requests.
#[derive(Debug, Clone)]
pub struct Note {
    pub request: RequestId,
    pub packet: Packet,
    pub at: Instant,
}

enum Cmd {
    Request(
        SocketAddr,
        Packet,
        oneshot::Sender<Result<Packet, String>>,
        Option<(mpsc::UnboundedSender<Note>, oneshot::Sender<RequestId>)>,
    ),
    Cancel(RequestId),
}

pub struct TestServer {
    pub addr: SocketAddr,
    cmds: mpsc::UnboundedSender<Cmd>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// An observation the test made.
pub struct Observing {
    pub id: RequestId,
    pub first: Packet,
    pub notes: mpsc::UnboundedReceiver<Note>,
}

pub fn request(method: RequestType, path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    for s in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
    }
    p
}

pub fn uint(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

pub fn with_accept(mut p: Packet, cf: u16) -> Packet {
    p.add_option(CoapOption::Accept, uint(u32::from(cf)));
    p
}

pub fn with_payload(mut p: Packet, cf: u16, payload: &[u8]) -> Packet {
    p.add_option(CoapOption::ContentFormat, uint(u32::from(cf)));
    p.payload = payload.to_vec();
    p
}

pub fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(r) => r,
        _ => ResponseType::UnKnown,
    }
}

pub fn content_format(p: &Packet) -> Option<u16> {
    p.get_first_option(CoapOption::ContentFormat)
        .map(|b| b.iter().fold(0u16, |a, x| (a << 8) | u16::from(*x)))
}

/// What a [`TestServer`] is besides an LwM2M server.
#[derive(Default, Clone)]
pub struct Options {
    /// Endpoint names whose Bootstrap-Request (`POST /bs?ep=`) gets 2.04; any
    /// other gets 4.00 "unknown endpoint".
    pub bootstrap: Vec<String>,
    /// Speak CoAP over DTLS only, with this PSK identity and key.
    pub psk: Option<(Vec<u8>, Vec<u8>)>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    /// A bootstrap server: POST /bs answers 2.04 for `endpoints`.
    pub async fn start_bootstrap(endpoints: &[&str]) -> TestServer {
        TestServer::start_with(Options {
            bootstrap: endpoints.iter().map(|e| e.to_string()).collect(),
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let addr = socket.local_addr().expect("addr");
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let mut dtls = options.psk.clone().map(|(identity, key)| {
            let lookup = move |id: &[u8]| (id == identity.as_slice()).then(|| key.clone());
            DtlsServer::new(DtlsConfig::default(), Arc::new(lookup)).expect("DTLS server")
        });
        tokio::spawn(async move {
            let mut ep = Endpoint::new(Config::default(), 7);
            let mut waiting: HashMap<RequestId, oneshot::Sender<Result<Packet, String>>> =
                HashMap::new();
            let mut observers: HashMap<RequestId, mpsc::UnboundedSender<Note>> = HashMap::new();
            let mut buf = vec![0u8; 65_535];
            loop {
                loop {
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
                    let Some(ev) = ep.poll_event() else { break };
                    {
                        let now = Instant::now();
                        match ev {
                            Event::Request { id, peer, packet } => {
                                let path = uri_path(&packet);
                                let method = packet.header.code;
                                let mut resp = Packet::new();
                                let c = match (method, path.as_str()) {
                                    (MessageClass::Request(RequestType::Post), "/bs") => {
                                        let ep_name = query_value(&packet, "ep");
                                        if ep_name.is_some_and(|e| options.bootstrap.contains(&e)) {
                                            ResponseType::Changed
                                        } else {
                                            resp.payload = b"unknown endpoint".to_vec();
                                            ResponseType::BadRequest
                                        }
                                    }
                                    (MessageClass::Request(RequestType::Post), "/rd") => {
                                        for s in LOCATION {
                                            resp.add_option(
                                                CoapOption::LocationPath,
                                                s.as_bytes().to_vec(),
                                            );
                                        }
                                        ResponseType::Created
                                    }
                                    (MessageClass::Request(RequestType::Post), "/rd/a1b2") => {
                                        ResponseType::Changed
                                    }
                                    (MessageClass::Request(RequestType::Delete), "/rd/a1b2") => {
                                        ResponseType::Deleted
                                    }
                                    (MessageClass::Request(RequestType::Post), "/dp") => {
                                        ResponseType::Changed
                                    }
                                    _ => ResponseType::NotFound,
                                };
                                resp.header.code = MessageClass::Response(c);
                                let _ = ep.respond(now, id, resp);
                                let _ = seen_tx.send(Seen {
                                    peer,
                                    packet,
                                    at: now,
                                });
                            }
                            Event::Response {
                                request_id, packet, ..
                            } => {
                                if let Some(tx) = waiting.remove(&request_id) {
                                    let _ = tx.send(Ok(packet));
                                }
                            }
                            Event::Notification {
                                request_id, packet, ..
                            } => {
                                if let Some(tx) = observers.get(&request_id) {
                                    let _ = tx.send(Note {
                                        request: request_id,
                                        packet,
                                        at: now,
                                    });
                                }
                            }
                            Event::RequestFailed { request_id, reason } => {
                                if let Some(tx) = waiting.remove(&request_id) {
                                    let _ = tx.send(Err(format!("{reason:?}")));
                                }
                            }
                            Event::ObservationCancelled { request_id, .. } => {
                                observers.remove(&request_id);
                            }
                        }
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
                .unwrap_or(now + Duration::from_secs(60));
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
                    c = cmd_rx.recv() => match c {
                        None => return,
                        Some(Cmd::Request(peer, p, tx, obs)) => {
                            match ep.send_request(Instant::now(), peer, p, true) {
                                Ok(id) => {
                                    waiting.insert(id, tx);
                                    if let Some((o, id_tx)) = obs {
                                        observers.insert(id, o);
                                        let _ = id_tx.send(id);
                                    }
                                }
                                Err(e) => { let _ = tx.send(Err(e.to_string())); }
                            }
                        }
                        Some(Cmd::Cancel(id)) => { ep.cancel(Instant::now(), id); observers.remove(&id); }
                    },
                    _ = tokio::time::sleep_until(deadline.max(now).into()) => {
                        ep.handle_timeout(Instant::now());
                        if let Some(d) = dtls.as_mut() {
                            d.handle_timeout(Instant::now());
                        }
                    }
                }
            }
        });
        TestServer {
            addr,
            cmds: cmd_tx,
            seen: seen_rx,
        }
    }

    /// The next request the client sent, within `timeout`.
    pub async fn next_seen(&mut self, timeout: Duration) -> Option<Seen> {
        tokio::time::timeout(timeout, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for a request from the client matching `f`, skipping others.
    pub async fn wait_for(&mut self, timeout: Duration, f: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let s = self.next_seen(left).await?;
            if f(&s) {
                return Some(s);
            }
        }
    }

    /// Sends a DM request and waits for the response.
    pub async fn request(&self, peer: SocketAddr, p: Packet) -> Result<Packet, String> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request(peer, p, tx, None))
            .map_err(|_| "server stopped".to_string())?;
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .map_err(|_| "no response".to_string())?
            .map_err(|_| "server stopped".to_string())?
    }

    /// Sends an Observe (the packet must carry Observe 0).
    pub async fn observe(&self, peer: SocketAddr, p: Packet) -> Result<Observing, String> {
        let (tx, rx) = oneshot::channel();
        let (ntx, nrx) = mpsc::unbounded_channel();
        let (id_tx, id_rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request(peer, p, tx, Some((ntx, id_tx))))
            .map_err(|_| "server stopped".to_string())?;
        let first = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .map_err(|_| "no response".to_string())?
            .map_err(|_| "server stopped".to_string())??;
        let id = id_rx.await.map_err(|_| "server stopped".to_string())?;
        Ok(Observing {
            id,
            first,
            notes: nrx,
        })
    }
}

impl TestServer {
    /// Forgets an observation locally: its next notification gets an RST
    /// (a passive cancel, RFC 7641 §3.6).
    pub fn forget(&self, id: RequestId) {
        let _ = self.cmds.send(Cmd::Cancel(id));
    }
}

impl Observing {
    pub async fn next(&mut self, timeout: Duration) -> Option<Note> {
        tokio::time::timeout(timeout, self.notes.recv())
            .await
            .ok()
            .flatten()
    }
}
