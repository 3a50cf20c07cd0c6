//! The bootstrap event loop: two CoAP endpoints (plain, and one fed by the DTLS server)
//! and the dialogues in progress, one per device, one request in flight each.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use lwm2m_bootstrap::session::{write_format, Method};
use lwm2m_bootstrap::{
    BootstrapConfig, BootstrapStatus, BootstrapStore, Next, Outgoing, Refusal, Report, Session,
    SessionState,
};
use lwm2m_objects::ContentFormat;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::BootstrapSettings;
use crate::coap::{Endpoint, Event, IncomingId, RequestId};
use crate::dtls::{DtlsEvent, DtlsServer, PeerIdentity};
use crate::metrics::{BootstrapLabels, Metrics};
use crate::registry::Transport;
use crate::runtime::persist::unix_now_ms;
use crate::runtime::route::{encode_uint, response, TEXT_PLAIN};
use crate::runtime::{flush_plain, flush_secure, recv_from};

const RECV_BUFFER: usize = 65_535;

/// A peer, by the socket it speaks on.
type Peer = (Transport, SocketAddr);

struct Active {
    session: Session,
    peer: Peer,
    request: RequestId,
    deadline: Instant,
    status: BootstrapStatus,
}

pub(super) struct Driver {
    ep: Endpoint,
    sep: Endpoint,
    dtls: Option<DtlsServer>,
    dtls_peers: HashMap<SocketAddr, PeerIdentity>,
    store: Arc<BootstrapStore>,
    metrics: Arc<Metrics>,
    /// Dialogues by endpoint name.
    active: HashMap<String, Active>,
    /// The endpoint each request in flight belongs to.
    by_request: HashMap<(Transport, RequestId), String>,
    deadlines: BTreeSet<(Instant, String)>,
    max_sessions: usize,
    session_timeout: Duration,
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "coap",
        Transport::Dtls => "coaps",
    }
}

fn refusal_packet(r: &Refusal) -> Packet {
    let mut p = response(r.code);
    p.add_option(CoapOption::ContentFormat, encode_uint(TEXT_PLAIN.into()));
    p.payload = r.detail.as_bytes().to_vec();
    p
}

/// The CoAP request of a dialogue step. Bootstrap paths are plain (`/0/1`), never under
/// an alternate root; Finish goes to `/bs`.
fn request_packet(o: &Outgoing) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(match o.method {
        Method::Get => RequestType::Get,
        Method::Put => RequestType::Put,
        Method::Post => RequestType::Post,
        Method::Delete => RequestType::Delete,
    });
    if lwm2m_bootstrap::session::is_finish(o) {
        p.add_option(CoapOption::UriPath, b"bs".to_vec());
    } else {
        for id in o.path.ids() {
            p.add_option(CoapOption::UriPath, id.to_string().into_bytes());
        }
    }
    if let Some(cf) = o.content_format {
        p.add_option(CoapOption::ContentFormat, encode_uint(cf.into()));
    }
    if let Some(a) = o.accept {
        p.add_option(CoapOption::Accept, encode_uint(a.into()));
    }
    p.payload = o.payload.clone();
    p
}

impl Driver {
    pub fn new(
        ep: Endpoint,
        sep: Endpoint,
        dtls: Option<DtlsServer>,
        store: Arc<BootstrapStore>,
        settings: &BootstrapSettings,
        metrics: Arc<Metrics>,
    ) -> Driver {
        Driver {
            ep,
            sep,
            dtls,
            dtls_peers: HashMap::new(),
            store,
            metrics,
            active: HashMap::new(),
            by_request: HashMap::new(),
            deadlines: BTreeSet::new(),
            max_sessions: settings.max_sessions,
            session_timeout: settings.session_timeout,
        }
    }

    fn endpoint(&mut self, t: Transport) -> &mut Endpoint {
        match t {
            Transport::Udp => &mut self.ep,
            Transport::Dtls => &mut self.sep,
        }
    }

    pub async fn run(
        mut self,
        plain: Option<UdpSocket>,
        secure: Option<UdpSocket>,
        mut stop: mpsc::Receiver<()>,
    ) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut sbuf = vec![0u8; RECV_BUFFER];
        loop {
            let deadline = [
                self.ep.poll_timeout(),
                self.sep.poll_timeout(),
                self.dtls.as_ref().and_then(DtlsServer::poll_timeout),
                self.deadlines.first().map(|(t, _)| *t),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = recv_from(plain.as_ref(), &mut buf) => match r {
                    Ok((n, peer)) => {
                        let data = buf.get(..n).unwrap_or_default();
                        self.ep.handle_datagram(Instant::now(), peer, data);
                    }
                    Err(e) => tracing::debug!(error = %e, "recv_from failed (bootstrap)"),
                },
                r = recv_from(secure.as_ref(), &mut sbuf) => match r {
                    Ok((n, peer)) => {
                        let data = sbuf.get(..n).unwrap_or_default();
                        if let Some(d) = self.dtls.as_mut() {
                            d.handle_datagram(Instant::now(), peer, data);
                        }
                        self.drain_dtls();
                    }
                    Err(e) => tracing::debug!(error = %e, "recv_from failed (bootstrap DTLS)"),
                },
                _ = stop.recv() => break,
                () = sleep => self.on_timer(Instant::now()),
            }
            self.drain_endpoint(Transport::Udp);
            self.drain_endpoint(Transport::Dtls);
            flush_plain(&mut self.ep, plain.as_ref()).await;
            flush_secure(&mut self.sep, self.dtls.as_mut(), secure.as_ref()).await;
        }
        tracing::info!("bootstrap server stopped");
    }

    fn drain_dtls(&mut self) {
        let now = Instant::now();
        while let Some(e) = self.dtls.as_mut().and_then(DtlsServer::poll_event) {
            match e {
                DtlsEvent::Established { peer, identity, .. } => {
                    self.dtls_peers.insert(peer, identity);
                }
                DtlsEvent::Data { peer, payload } => self.sep.handle_datagram(now, peer, &payload),
                DtlsEvent::Closed { peer, .. } => {
                    self.dtls_peers.remove(&peer);
                }
            }
        }
    }

    fn on_timer(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.sep.handle_timeout(now);
        if let Some(d) = self.dtls.as_mut() {
            d.handle_timeout(now);
        }
        self.drain_dtls();
        while let Some((at, ep)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, ep.clone()));
            if let Some(a) = self.active.remove(&ep) {
                self.by_request.remove(&(a.peer.0, a.request));
                let t = a.peer.0;
                self.endpoint(t).cancel(now, a.request);
                let why = format!(
                    "not finished within {} s of the Bootstrap-Request",
                    self.session_timeout.as_secs()
                );
                self.end(a.session, a.status, Err(why));
            }
        }
    }

    fn drain_endpoint(&mut self, t: Transport) {
        // Bounded by what one datagram or one timer pass produced.
        while let Some(e) = self.endpoint(t).poll_event() {
            let now = Instant::now();
            match e {
                Event::Request { id, peer, packet } => self.on_request(now, t, id, peer, &packet),
                Event::Response {
                    request_id, packet, ..
                } => {
                    let code = u8::from(packet.header.code);
                    self.advance(now, (t, request_id), |s| {
                        s.on_response((code >> 5, code & 0x1f), &packet.payload)
                    });
                }
                Event::RequestFailed { request_id, reason } => {
                    let why = format!("{reason:?}").to_lowercase();
                    self.advance(now, (t, request_id), |s| s.on_failure(&why));
                }
                Event::Notification { .. } | Event::ObservationCancelled { .. } => {}
            }
        }
    }

    fn respond(&mut self, now: Instant, t: Transport, id: IncomingId, packet: Packet) {
        if let Err(e) = self.endpoint(t).respond(now, id, packet) {
            tracing::debug!(error = %e, "bootstrap response not sent");
        }
    }

    /// Whether `peer` may bootstrap as the endpoint of `config`.
    fn allowed(&self, peer: Peer, config: &BootstrapConfig) -> Result<(), Refusal> {
        let name = crate::registry::echo(&config.endpoint);
        let identity = match peer.0 {
            Transport::Dtls => self.dtls_peers.get(&peer.1),
            Transport::Udp => None,
        };
        match (identity, &config.bootstrap_psk) {
            (Some(PeerIdentity::Certificate { common_name }), _)
                if *common_name == config.endpoint =>
            {
                Ok(())
            }
            (Some(PeerIdentity::Psk(id)), Some(p)) if *id == p.identity => Ok(()),
            (None, None) if peer.0 == Transport::Udp => Ok(()),
            (None, Some(_)) => Err(Refusal::new(
                (4, 0),
                format!("endpoint {name} bootstraps over DTLS with its bootstrap credentials"),
            )),
            _ => Err(Refusal::new(
                (4, 0),
                format!("this DTLS identity is not the one of endpoint {name}"),
            )),
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        t: Transport,
        id: IncomingId,
        peer: SocketAddr,
        packet: &Packet,
    ) {
        let started = lwm2m_bootstrap::request::parse(packet).and_then(|req| {
            let config = match self.store.get(&req.endpoint) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Err(Refusal::new(
                        (4, 0),
                        format!(
                            "no bootstrap configuration for endpoint {}",
                            crate::registry::echo(&req.endpoint)
                        ),
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "bootstrap store read failed");
                    return Err(Refusal::new((5, 0), "bootstrap store unavailable"));
                }
            };
            if let Err(e) = self.allowed((t, peer), &config) {
                tracing::warn!(%peer, endpoint = %req.endpoint, "bootstrap refused: {}", e.detail);
                return Err(e);
            }
            if self.active.len() >= self.max_sessions && !self.active.contains_key(&req.endpoint) {
                return Err(Refusal::new(
                    (5, 3),
                    "too many bootstraps in progress; retry later",
                ));
            }
            Ok((req, config))
        });
        let (req, config) = match started {
            Ok(v) => v,
            Err(r) => {
                self.respond(now, t, id, refusal_packet(&r));
                return;
            }
        };
        // A device that asks again (it rebooted, or gave up waiting) starts over.
        if let Some(old) = self.active.remove(&req.endpoint) {
            self.deadlines.remove(&(old.deadline, req.endpoint.clone()));
            self.by_request.remove(&(old.peer.0, old.request));
            let ot = old.peer.0;
            self.endpoint(ot).cancel(now, old.request);
            self.end(
                old.session,
                old.status,
                Err("superseded by a new Bootstrap-Request".into()),
            );
        }
        self.respond(now, t, id, response((2, 4)));
        let format = write_format(req.preferred_format).unwrap_or(ContentFormat::Tlv);
        let (session, first) = Session::start(config, format);
        let status = BootstrapStatus {
            state: SessionState::InProgress,
            started_at_unix_ms: unix_now_ms(),
            ended_at_unix_ms: None,
            transport: transport_name(t).into(),
            peer: peer.to_string(),
            error: None,
            report: Report::default(),
        };
        if let Err(e) = self.store.set_status(&req.endpoint, &status) {
            tracing::warn!(error = %e, "bootstrap status not stored");
        }
        tracing::info!(endpoint = %req.endpoint, %peer, transport = transport_name(t), "bootstrap started");
        let deadline = now + self.session_timeout;
        match self
            .endpoint(t)
            .send_request(now, peer, request_packet(&first), true)
        {
            Ok(request) => {
                self.by_request.insert((t, request), req.endpoint.clone());
                self.deadlines.insert((deadline, req.endpoint.clone()));
                self.active.insert(
                    req.endpoint,
                    Active {
                        session,
                        peer: (t, peer),
                        request,
                        deadline,
                        status,
                    },
                );
            }
            Err(e) => self.end(session, status, Err(format!("first request not sent: {e}"))),
        }
    }

    /// Feeds the session an answer (or its absence) and sends what follows.
    fn advance(
        &mut self,
        now: Instant,
        key: (Transport, RequestId),
        f: impl FnOnce(&mut Session) -> Next,
    ) {
        let Some(ep) = self.by_request.remove(&key) else {
            return;
        };
        let Some(mut a) = self.active.remove(&ep) else {
            return;
        };
        match f(&mut a.session) {
            Next::Send(o) => {
                let (t, peer) = a.peer;
                match self
                    .endpoint(t)
                    .send_request(now, peer, request_packet(&o), true)
                {
                    Ok(request) => {
                        a.request = request;
                        self.by_request.insert((t, request), ep.clone());
                        self.active.insert(ep, a);
                    }
                    Err(e) => {
                        self.deadlines.remove(&(a.deadline, ep));
                        self.end(a.session, a.status, Err(format!("request not sent: {e}")));
                    }
                }
            }
            Next::Finished => {
                self.deadlines.remove(&(a.deadline, ep));
                self.end(a.session, a.status, Ok(()));
            }
            Next::Failed(why) => {
                self.deadlines.remove(&(a.deadline, ep));
                self.end(a.session, a.status, Err(why));
            }
        }
    }

    /// Records how a dialogue ended.
    fn end(&mut self, session: Session, mut status: BootstrapStatus, outcome: Result<(), String>) {
        let endpoint = session.endpoint().to_string();
        status.ended_at_unix_ms = Some(unix_now_ms());
        status.report = session.into_report();
        let label = match &outcome {
            Ok(()) => {
                tracing::info!(%endpoint, "bootstrap finished");
                status.state = SessionState::Finished;
                "finished"
            }
            Err(why) => {
                tracing::warn!(%endpoint, error = %why, "bootstrap failed");
                status.state = SessionState::Failed;
                status.error = Some(why.clone());
                "failed"
            }
        };
        self.metrics
            .bootstrap_sessions
            .get_or_create(&BootstrapLabels { outcome: label })
            .inc();
        if let Err(e) = self.store.set_status(&endpoint, &status) {
            tracing::warn!(error = %e, "bootstrap status not stored");
        }
    }
}
