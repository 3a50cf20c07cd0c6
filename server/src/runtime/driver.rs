//! The event loop: the plain CoAP socket and its [`Endpoint`], the DTLS socket with its
//! [`DtlsServer`] and an `Endpoint` of its own (state of the two transports never mixes:
//! a plaintext datagram can never answer a request sent over DTLS), one [`Registry`],
//! the store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use coap_lite::{MessageClass, Packet};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::inventory::SecurityCommand;
use super::observed::{Key, Observed, ObservedTable};
use super::peers::PeerIndex;
use super::persist::{self, Clock};
use super::pipeline::{Completion, Held, Pipeline, Write};
use super::route::{self, Route};
use super::sockets::recv_from;
use super::{
    ClientInfo, ClientPage, Command, ObservationInfo, QueuedInfo, Reply, ReplyTx, RequestError,
    RequestLabel, ServerEvent,
};
use crate::coap::{Endpoint, Event, FailReason, IncomingId};
use crate::dm::DeviceContext;
use crate::dtls::{DtlsEvent, DtlsServer, PeerIdentity};
use crate::metrics::{gauge_value, HandshakeLabels, Metrics, ReasonLabels};
use crate::registry::{
    RdOutcome, RdRequest, Registration, RegistrationError, Registry, RegistryConfig, Removed,
    Transport,
};
use crate::security::Credentials;
use crate::store::{Store, StoredRefresh};

/// Largest datagram read; anything up to the UDP maximum arrives whole, so a truncated
/// read cannot turn into a different, valid message.
const RECV_BUFFER: usize = 65_535;
/// Datagrams taken from the plain socket in one pass (one store sync for all of them).
const RECV_BATCH: usize = 256;

/// What a registration looked like before the request that changed it.
struct Before {
    /// Marked awake already (an Update of an awake device is no new wake-up).
    was_awake: bool,
    /// The transport and address it last spoke from.
    address: Option<(Transport, SocketAddr)>,
}

/// A request waiting in a device's queue.
struct Queued {
    endpoint: String,
    /// Its seq in the store's queue; `None` while it has not been persisted (a request
    /// sent at once is never stored).
    seq: Option<u64>,
    packet: Packet,
    confirmable: bool,
    observe: bool,
    label: RequestLabel,
    created_at_unix_ms: u64,
    /// The caller waiting to hear that the request is sent or persisted.
    accepted: Option<oneshot::Sender<()>>,
    reply: Option<ReplyTx>,
}

/// A request handed to the endpoint, until its response or failure.
struct Pending {
    reply: Option<ReplyTx>,
    endpoint: String,
    request: Packet,
    observe: bool,
    stored_seq: Option<u64>,
    label: RequestLabel,
    sent_at: Instant,
    /// Where it went: a device that registers again from elsewhere (it rebooted) will
    /// never answer there.
    to: Option<SocketAddr>,
}

/// The metrics code of a request's outcome: the device's CoAP code, or why there was none.
fn outcome_code(outcome: &Result<Packet, RequestError>) -> String {
    match outcome {
        Ok(p) => p.header.code.to_string(),
        Err(RequestError::Failed(FailReason::Timeout)) => "timeout".into(),
        Err(RequestError::Failed(FailReason::Reset)) => "reset".into(),
        Err(RequestError::Failed(_)) => "failed".into(),
        Err(RequestError::Expired) => "expired".into(),
        Err(RequestError::QueueFull) => "queue_full".into(),
        Err(RequestError::Deregistered) => "deregistered".into(),
        Err(RequestError::UnknownEndpoint(_)) => "unknown_endpoint".into(),
        Err(RequestError::NotObserved(code)) => code.clone(),
        Err(RequestError::Send(_) | RequestError::Store(_) | RequestError::Stopped) => {
            "error".into()
        }
    }
}

pub(super) struct Driver {
    ep: Endpoint,
    /// CoAP over DTLS: fed the plaintext of `dtls`'s sessions.
    sep: Endpoint,
    dtls: Option<DtlsServer>,
    credentials: Arc<Credentials>,
    /// Who each established DTLS peer authenticated as.
    dtls_peers: HashMap<SocketAddr, PeerIdentity>,
    registry: Registry<Queued>,
    store: Arc<dyn Store>,
    events: broadcast::Sender<ServerEvent>,
    clock: Clock,
    pending: HashMap<Key, Pending>,
    observed: ObservedTable,
    /// Which registration a peer address belongs to, for Send (which names no endpoint).
    by_peer: PeerIndex,
    metrics: Arc<Metrics>,
    /// The endpoint's retransmission count already added to the metrics.
    retransmissions_counted: u64,
    /// Packages served at `/fw/{token}`.
    firmware: Arc<crate::firmware::Firmware>,
    formatted: persist::FormattedObjects,
    /// What completed in this pass, told after the pass's commit.
    completed: Vec<Completion>,
    /// The writes of the passes, committed by the store thread; what a pass confirms
    /// waits there for them.
    pipe: Pipeline,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ep: Endpoint,
        sep: Endpoint,
        dtls: Option<DtlsServer>,
        credentials: Arc<Credentials>,
        registry: RegistryConfig,
        store: Arc<dyn Store>,
        events: broadcast::Sender<ServerEvent>,
        metrics: Arc<Metrics>,
        firmware: Arc<crate::firmware::Firmware>,
    ) -> Driver {
        Driver {
            ep,
            sep,
            dtls,
            credentials,
            dtls_peers: HashMap::new(),
            registry: Registry::new(registry),
            pipe: Pipeline::start(store.clone()),
            store,
            events,
            clock: Clock::now(),
            pending: HashMap::new(),
            observed: ObservedTable::default(),
            by_peer: PeerIndex::default(),
            metrics,
            retransmissions_counted: 0,
            formatted: persist::FormattedObjects::default(),
            firmware,
            completed: Vec::new(),
        }
    }

    fn endpoint(&mut self, t: Transport) -> &mut Endpoint {
        match t {
            Transport::Udp => &mut self.ep,
            Transport::Dtls => &mut self.sep,
        }
    }

    /// Events wait for the pass's commit, as replies do: a listener hears only of what is
    /// stored, and hears of a whole pass at once. Sent one by one as they happened, each
    /// event woke the listeners again (they are quicker than the pass), a futex wake and
    /// a context switch per event on a machine whose cores the devices' traffic needs.
    fn emit(&mut self, e: ServerEvent) {
        self.completed.push(Completion::Event(e));
    }

    // ----- start ---------------------------------------------------------------------

    /// Loads what the store holds: live registrations (expired ones are deleted), their
    /// queued requests and their observations.
    pub fn restore(&mut self) {
        let now = Instant::now();
        let now_ms = self.clock.unix_ms(now);
        let grace = self.registry.config().expiry_grace;
        let stored = match self.store.list_registrations() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot list stored registrations; starting empty");
                Vec::new()
            }
        };
        match self.store.drop_expired_queued(now_ms) {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(
                    count = gone.len(),
                    "dropped queued requests that expired while stopped"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot drop expired queued requests"),
        }
        let max_queued = self.registry.config().max_queued_per_device;
        for s in stored {
            let live = !persist::expired(&s, grace, now_ms);
            let reg = live.then(|| persist::from_stored(&s, &self.clock));
            match reg {
                Some(Ok(reg)) => {
                    let (id, endpoint, peer, transport) = (
                        reg.id.clone(),
                        reg.endpoint.clone(),
                        reg.peer,
                        reg.transport,
                    );
                    match self.registry.restore(reg) {
                        Ok(None) => {}
                        // Two of one endpoint: the later id, the later Register, wins
                        // (the list is in id order), and the earlier one goes.
                        Ok(Some(earlier)) => {
                            tracing::warn!(%endpoint, kept = %id, dropped = %earlier.id, "two stored registrations of one endpoint");
                            self.by_peer.remove(earlier.transport, earlier.peer);
                            if let Err(e) = self.store.delete_registration(&earlier.id) {
                                tracing::warn!(error = %e, "cannot delete the earlier registration");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "registration not restored");
                            continue;
                        }
                    }
                    // The registration's id is the allocation the registry's indexes hold.
                    self.by_peer.insert(transport, peer, id.clone());
                    let queued = self
                        .store
                        .peek_queue(&endpoint, max_queued)
                        .unwrap_or_default();
                    for q in queued {
                        let expires_at = self.clock.instant(q.expires_at_unix_ms).unwrap_or(now);
                        let item = Queued {
                            endpoint: endpoint.to_string(),
                            seq: Some(q.seq),
                            packet: persist::from_queued(&q),
                            confirmable: true,
                            observe: q.observe == Some(0),
                            label: persist::from_tracking(q.tracking.as_ref()),
                            created_at_unix_ms: q
                                .tracking
                                .as_ref()
                                .map_or(now_ms, |t| t.created_at_unix_ms),
                            accepted: None,
                            reply: None,
                        };
                        if self.registry.enqueue(&id, item, expires_at).is_err() {
                            let _ = self.store.remove_queued(&endpoint, q.seq);
                        }
                    }
                }
                other => {
                    if let Some(Err(e)) = other {
                        tracing::warn!(id = %s.id, error = %e, "stored registration unreadable; deleted");
                    }
                    if let Err(e) = self.store.delete_registration(&s.id) {
                        tracing::warn!(id = %s.id, error = %e, "cannot delete expired registration");
                    }
                }
            }
        }
        let observations = self.store.list_all_observations().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot list stored observations");
            Vec::new()
        });
        for o in observations {
            let Some(reg) = self.registry.get(&o.registration_id) else {
                let _ = self.store.delete_observation(&o.token);
                continue;
            };
            let (peer, transport) = (reg.peer, reg.transport);
            let template = persist::observation_template(&o);
            match self.endpoint(transport).restore_observation(
                now,
                peer,
                o.token.clone(),
                template,
                o.last_sequence,
            ) {
                Ok(id) => {
                    let observed = if o.observed.is_empty() {
                        &o.paths
                    } else {
                        &o.observed
                    };
                    self.observed.insert(
                        (transport, id),
                        Observed {
                            endpoint: o.endpoint.clone(),
                            registration_id: o.registration_id.clone(),
                            token: o.token.clone(),
                            paths: persist::parse_paths(observed),
                            composite: o.composite,
                        },
                    );
                }
                Err(e) => tracing::warn!(error = %e, "observation not restored"),
            }
        }
        // Devices whose awake window ended while the server was down sleep now; nobody
        // has subscribed yet, so there is no one to tell.
        self.registry.fall_asleep(now);
        self.update_gauges();
        tracing::info!(
            registrations = self.registry.len(),
            observations = self.observed.len(),
            "restored from the store"
        );
    }

    // ----- loop ----------------------------------------------------------------------

    pub async fn run(
        mut self,
        socket: UdpSocket,
        secure: Option<UdpSocket>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut sbuf = vec![0u8; RECV_BUFFER];
        let committed = self.pipe.woken();
        loop {
            let deadline = [
                self.ep.poll_timeout(),
                self.sep.poll_timeout(),
                self.dtls.as_ref().and_then(DtlsServer::poll_timeout),
                self.registry.next_expiry(),
                self.registry.next_queue_expiry(),
                self.registry.next_sleep(),
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
                r = socket.recv_from(&mut buf) => match r {
                    Ok((n, peer)) => {
                        let now = Instant::now();
                        let data = buf.get(..n).unwrap_or_default();
                        self.ep.handle_datagram(now, peer, data);
                        // What else has arrived joins this batch: one store sync answers
                        // for all of it.
                        for _ in 1..RECV_BATCH {
                            let Ok((n, peer)) = socket.try_recv_from(&mut buf) else { break };
                            let data = buf.get(..n).unwrap_or_default();
                            self.ep.handle_datagram(now, peer, data);
                        }
                    }
                    // ICMP port unreachable from a device that went away surfaces here
                    // on some systems; it concerns one peer, not the socket.
                    Err(e) => tracing::debug!(error = %e, "recv_from failed"),
                },
                r = recv_from(secure.as_ref(), &mut sbuf) => match r {
                    Ok((n, peer)) => {
                        let data = sbuf.get(..n).unwrap_or_default();
                        if let Some(d) = self.dtls.as_mut() {
                            d.handle_datagram(Instant::now(), peer, data);
                        }
                        self.drain_dtls();
                    }
                    Err(e) => tracing::debug!(error = %e, "recv_from failed (DTLS)"),
                },
                c = commands.recv() => match c {
                    Some(Command::Request { endpoint, packet, confirmable, observe, expires_at, label, accepted, reply }) => {
                        let item = Queued {
                            endpoint,
                            seq: None,
                            packet,
                            confirmable,
                            observe,
                            label,
                            created_at_unix_ms: self.clock.unix_ms(Instant::now()),
                            accepted: Some(accepted),
                            reply: Some(reply),
                        };
                        self.on_request_command(item, expires_at);
                    }
                    Some(Command::CancelObservation { token, packet, reply }) => {
                        self.on_cancel_observation(token, packet, reply);
                    }
                    Some(Command::Registration { endpoint, reply }) => {
                        let _ = reply.send(self.registry.by_endpoint(&endpoint).cloned());
                    }
                    Some(Command::Clients { prefix, after, offset, limit, reply }) => {
                        let _ = reply.send(self.clients(&prefix, after.as_deref(), offset, limit));
                    }
                    Some(Command::Client { endpoint, reply }) => {
                        let now = Instant::now();
                        let info = self.registry.by_endpoint(&endpoint).map(|r| self.client_info(r, now));
                        let _ = reply.send(info);
                    }
                    Some(Command::Observations { endpoint, reply }) => {
                        let _ = reply.send(self.observations(&endpoint));
                    }
                    Some(Command::ForgetObservation { token, reply }) => {
                        let _ = reply.send(self.forget_observation(&token));
                    }
                    Some(Command::QueuedRequests { reply }) => {
                        let _ = reply.send(self.queued_requests());
                    }
                    Some(Command::Security(c)) => self.on_security(c),
                    Some(Command::Shutdown) | None => break,
                },
                () = committed.notified() => self.pipe.committed(),
                () = sleep => self.on_timer(Instant::now()),
            }
            self.drain_events();
            // What the pass confirms goes out once what it wrote is on disk.
            let held = self.hold();
            self.pipe.end_pass(held);
            self.release(&socket, secure.as_ref()).await;
            self.update_gauges();
        }
        let held = self.hold();
        self.pipe.end_pass(held);
        self.pipe.finish();
        self.release(&socket, secure.as_ref()).await;
        tracing::info!("server stopped");
    }

    /// What the pass would send and tell, for the pipeline to hold.
    fn hold(&mut self) -> Held {
        let mut held = Held {
            completed: std::mem::take(&mut self.completed),
            ..Held::default()
        };
        while let Some(t) = self.ep.poll_transmit() {
            held.plain.push(t);
        }
        while let Some(t) = self.sep.poll_transmit() {
            held.secure.push(t);
        }
        held
    }

    /// Tells and sends what the pipeline has released, in the order the passes made it,
    /// then the DTLS records (handshakes need no commit and are sent every pass).
    async fn release(&mut self, socket: &UdpSocket, secure: Option<&UdpSocket>) {
        let held = self.pipe.take_ready();
        for c in held.completed {
            match c {
                Completion::Reply(tx, outcome) => {
                    let _ = tx.send(outcome);
                }
                Completion::Event(e) => {
                    // No subscriber is not an error: nobody is listening yet.
                    let _ = self.events.send(e);
                }
            }
        }
        for t in held.plain {
            if let Err(e) = socket.send_to(&t.bytes, t.peer).await {
                tracing::debug!(peer = %t.peer, error = %e, "send_to failed");
            }
        }
        let Some(d) = self.dtls.as_mut() else { return };
        let now = Instant::now();
        for t in held.secure {
            if let Err(e) = d.send(now, t.peer, &t.bytes) {
                tracing::debug!(peer = %t.peer, error = %e, "not sent over DTLS");
            }
        }
        let Some(socket) = secure else { return };
        while let Some((peer, bytes)) = d.poll_transmit() {
            if let Err(e) = socket.send_to(&bytes, peer).await {
                tracing::debug!(%peer, error = %e, "send_to failed (DTLS)");
            }
        }
    }

    /// Gauges from the live state, and the retransmissions counted since the last call.
    /// Every value is a counter the registry keeps: O(1) however large the fleet.
    fn update_gauges(&mut self) {
        let m = &self.metrics;
        m.registered_devices.set(gauge_value(self.registry.len()));
        m.awake_devices
            .set(gauge_value(self.registry.awake_count()));
        m.observations.set(gauge_value(self.observed.len()));
        m.queued_requests
            .set(gauge_value(self.registry.queued_total()));
        if let Some(d) = &self.dtls {
            m.dtls_sessions.set(gauge_value(d.sizes().sessions));
        }
        let sent = self.ep.retransmissions_sent() + self.sep.retransmissions_sent();
        m.retransmissions
            .inc_by(sent.saturating_sub(self.retransmissions_counted));
        self.retransmissions_counted = sent;
    }

    /// What the DTLS layer made of a datagram or a timer: sessions up and down, and the
    /// CoAP messages they carried.
    fn drain_dtls(&mut self) {
        let now = Instant::now();
        // Bounded by what one datagram or one timer pass produced.
        while let Some(e) = self.dtls.as_mut().and_then(DtlsServer::poll_event) {
            match e {
                DtlsEvent::Established {
                    peer,
                    identity,
                    resumed,
                } => {
                    tracing::debug!(%peer, resumed, "DTLS session up");
                    self.metrics
                        .dtls_handshakes
                        .get_or_create(&HandshakeLabels {
                            resumed: if resumed { "true" } else { "false" },
                        })
                        .inc();
                    self.dtls_peers.insert(peer, identity);
                }
                DtlsEvent::Data { peer, payload } => {
                    self.sep.handle_datagram(now, peer, &payload);
                }
                DtlsEvent::Closed { peer, reason } => {
                    tracing::debug!(%peer, ?reason, "DTLS session ended");
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
        for removed in self.registry.expire(now) {
            let reg = removed.registration.clone();
            tracing::info!(endpoint = %reg.endpoint, id = %reg.id, "registration expired");
            self.forget_registration(removed, now);
            self.metrics
                .deregistrations
                .get_or_create(&ReasonLabels { reason: "expired" })
                .inc();
            self.emit(ServerEvent::Expired { registration: reg });
        }
        for (_, q) in self.registry.expire_queued(now) {
            self.finish_queued(q, Err(RequestError::Expired));
        }
        for (registration_id, endpoint) in self.registry.fall_asleep(now) {
            tracing::debug!(%endpoint, "awake window over; asleep");
            self.emit(ServerEvent::Sleeping {
                endpoint,
                registration_id,
            });
        }
    }

    /// Notes that a registered device spoke: it is awake, and an Awake event is due if it
    /// was reported asleep.
    fn heard_from(&mut self, registration_id: &str, now: Instant) {
        if self.registry.touch(registration_id, now) {
            if let Some(reg) = self.registry.get(registration_id) {
                self.emit(ServerEvent::Awake {
                    endpoint: reg.endpoint.to_string(),
                    registration_id: registration_id.to_string(),
                });
            }
        }
    }

    fn drain_events(&mut self) {
        for t in [Transport::Udp, Transport::Dtls] {
            self.drain_endpoint(t);
        }
    }

    fn drain_endpoint(&mut self, t: Transport) {
        // Bounded: handling an event never makes the endpoint emit another synchronously
        // more than once per call that was already counted by the datagram.
        while let Some(e) = self.endpoint(t).poll_event() {
            let now = Instant::now();
            match e {
                Event::Request { id, peer, packet } => self.on_incoming(now, t, id, peer, &packet),
                Event::Response {
                    request_id, packet, ..
                } => self.on_response(now, (t, request_id), Ok(packet)),
                Event::RequestFailed { request_id, reason } => {
                    self.on_response(now, (t, request_id), Err(RequestError::Failed(reason)))
                }
                Event::Notification {
                    request_id,
                    packet,
                    sequence,
                    peer,
                } => {
                    if let Some(o) = self.observed.get(&(t, request_id)) {
                        let (endpoint, registration_id) =
                            (o.endpoint.clone(), o.registration_id.clone());
                        let (token, paths, composite) =
                            (o.token.clone(), o.paths.clone(), o.composite);
                        let Some(device) = self
                            .registry
                            .get(&registration_id)
                            .map(DeviceContext::from_registration)
                        else {
                            continue;
                        };
                        self.heard_from(&registration_id, now);
                        self.metrics.notifications.inc();
                        tracing::debug!(%endpoint, %peer, sequence, "notification");
                        self.emit(ServerEvent::Notification {
                            endpoint,
                            registration_id,
                            token,
                            sequence,
                            packet,
                            paths,
                            composite,
                            device,
                        });
                    }
                }
                Event::ObservationCancelled {
                    request_id, packet, ..
                } => {
                    if let Some(o) = self.observed.remove(&(t, request_id)) {
                        self.pipe.push(Write::DeleteObservation(o.token.clone()));
                        self.emit(ServerEvent::ObservationCancelled {
                            endpoint: o.endpoint,
                            token: o.token,
                            packet,
                        });
                    }
                }
            }
        }
    }

    fn respond(&mut self, now: Instant, t: Transport, id: IncomingId, packet: Packet) {
        if let Err(e) = self.endpoint(t).respond(now, id, packet) {
            tracing::warn!(error = %e, "response not sent");
        }
    }

    // ----- incoming requests ---------------------------------------------------------

    /// Whether a request that came over `t` from `peer` may speak for `endpoint`: over
    /// DTLS only as the endpoint its credentials name (4.00 otherwise, as T12 answers a
    /// Register whose name is not the identity's); over plain CoAP only for an endpoint
    /// that has no credentials and is not registered over DTLS (4.03).
    fn may_speak_for(
        &self,
        t: Transport,
        peer: SocketAddr,
        endpoint: &str,
        registered_over: Option<Transport>,
    ) -> Result<(), RegistrationError> {
        match t {
            Transport::Dtls => {
                let bound = self
                    .dtls_peers
                    .get(&peer)
                    .and_then(|id| self.credentials.endpoint_of(id));
                if bound.as_deref() == Some(endpoint) {
                    Ok(())
                } else {
                    tracing::warn!(%peer, %endpoint, bound = ?bound, "DTLS identity may not speak for this endpoint");
                    // T12 answers a Register whose ep is not the DTLS identity's with 4.00.
                    Err(RegistrationError::bad_request(format!(
                        "this DTLS identity is not the one of endpoint {}",
                        crate::registry::echo(endpoint)
                    )))
                }
            }
            Transport::Udp => {
                if registered_over == Some(Transport::Dtls) || self.credentials.is_secured(endpoint)
                {
                    tracing::warn!(%peer, %endpoint, "plain CoAP for an endpoint with credentials");
                    // 4.03: this registration is not allowed (over this transport).
                    Err(RegistrationError::new(
                        RegistrationError::FORBIDDEN,
                        format!(
                            "endpoint {} has credentials: use DTLS",
                            crate::registry::echo(endpoint)
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn on_incoming(
        &mut self,
        now: Instant,
        t: Transport,
        id: IncomingId,
        peer: SocketAddr,
        packet: &Packet,
    ) {
        match route::route(packet) {
            Route::Registration(Ok(rd)) => {
                let (was_awake, target) = match &rd {
                    RdRequest::Register(r) => (false, Some((r.endpoint.as_str(), None))),
                    RdRequest::Update(u) => (
                        self.registry.marked_awake(&u.id),
                        self.registry
                            .get(&u.id)
                            .map(|r| (&*r.endpoint, Some(r.transport))),
                    ),
                    RdRequest::Deregister { id } => (
                        false,
                        self.registry
                            .get(id)
                            .map(|r| (&*r.endpoint, Some(r.transport))),
                    ),
                };
                // An unknown registration id is the registry's 4.04 to answer.
                if let Some((endpoint, over)) = target {
                    if let Err(e) = self.may_speak_for(t, peer, endpoint, over) {
                        self.respond(now, t, id, route::error_response(&e));
                        return;
                    }
                }
                // Where an Update's device spoke from until now: its entry in `by_peer`
                // moves if the address changed.
                let previous = match &rd {
                    RdRequest::Update(u) => self.registry.get(&u.id).map(|r| (r.transport, r.peer)),
                    _ => None,
                };
                match self.registry.handle_over(rd, peer, t, now) {
                    Ok(outcome) => {
                        let before = Before {
                            was_awake,
                            address: previous,
                        };
                        self.on_outcome(now, t, id, peer, outcome, before)
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "registration request refused");
                        self.respond(now, t, id, route::error_response(&e));
                    }
                }
            }
            Route::Firmware { token, block2 } => {
                let requester = match t {
                    Transport::Dtls => self
                        .dtls_peers
                        .get(&peer)
                        .and_then(|id| self.credentials.endpoint_of(id)),
                    Transport::Udp => None,
                };
                let answer = self.firmware.coap_block(
                    &token,
                    requester.as_deref(),
                    block2,
                    self.clock.unix_ms(now),
                );
                let packet = match answer {
                    Ok((record, block)) => {
                        let mut p = route::response((2, 5));
                        p.add_option(coap_lite::CoapOption::ContentFormat, route::encode_uint(42));
                        p.add_option(
                            coap_lite::CoapOption::ETag,
                            crate::firmware::download::etag(&record.sha256),
                        );
                        p.add_option(coap_lite::CoapOption::Block2, block.option.encode());
                        if block.option.num == 0 {
                            let size = u32::try_from(record.size).unwrap_or(u32::MAX);
                            p.add_option(coap_lite::CoapOption::Size2, route::encode_uint(size));
                        }
                        p.payload = block.payload;
                        p
                    }
                    Err(_) => route::error_response(&RegistrationError::not_found(
                        "no such firmware download",
                    )),
                };
                self.respond(now, t, id, packet);
            }
            Route::Registration(Err(e)) | Route::Reject(e) => {
                tracing::debug!(%peer, error = %e, "request refused");
                self.respond(now, t, id, route::error_response(&e));
            }
            Route::Send {
                content_format,
                payload,
            } => {
                let reg = self
                    .by_peer
                    .get(t, peer)
                    .and_then(|rid| self.registry.get(rid))
                    .map(|r| (r.id.clone(), r.endpoint.clone(), r.transport));
                let allowed = reg
                    .as_ref()
                    .map(|(_, ep, over)| self.may_speak_for(t, peer, ep, Some(*over)));
                match (reg, allowed) {
                    (Some((registration_id, endpoint, _)), Some(Ok(()))) => {
                        self.heard_from(&registration_id, now);
                        self.metrics.sends.inc();
                        self.respond(now, t, id, route::response((2, 4)));
                        self.emit(ServerEvent::SendReceived {
                            endpoint: endpoint.to_string(),
                            registration_id: registration_id.to_string(),
                            content_format,
                            payload,
                        });
                    }
                    (_, Some(Err(e))) => self.respond(now, t, id, route::error_response(&e)),
                    _ => {
                        let e = RegistrationError::new(
                            RegistrationError::FORBIDDEN,
                            "Send from an address with no registration; register first",
                        );
                        self.respond(now, t, id, route::error_response(&e));
                    }
                }
            }
        }
    }

    fn on_outcome(
        &mut self,
        now: Instant,
        t: Transport,
        id: IncomingId,
        peer: SocketAddr,
        outcome: RdOutcome<Queued>,
        before: Before,
    ) {
        let Before {
            was_awake,
            address: previous,
        } = before;
        match outcome {
            RdOutcome::Registered(r) => {
                let Some(reg) = self.registry.get(&r.id).cloned() else {
                    return;
                };
                self.pipe.push(Write::Register {
                    reg: persist::to_stored(&reg, &self.clock, &mut self.formatted),
                    previous: r.replaced.as_ref().map(|old| old.id.to_string()),
                });
                if let Some(old) = &r.replaced {
                    // The store dropped the old registration's observations atomically.
                    self.cancel_observations(&old.id, now, false);
                    self.by_peer.remove(old.transport, old.peer);
                    if (old.transport, old.peer) != (t, peer) {
                        self.abandon_in_flight(old.transport, old.peer, now);
                    }
                }
                self.by_peer.insert(t, peer, reg.id.clone());
                tracing::info!(endpoint = %reg.endpoint, id = %reg.id, %peer, "registered");
                self.metrics.registrations.inc();
                self.respond(now, t, id, route::created(&r.location_path));
                self.emit(ServerEvent::Registered {
                    registration: reg.clone(),
                    replaced: r.replaced.map(|o| o.id.to_string()),
                });
                if reg.queue_mode {
                    self.emit(ServerEvent::Awake {
                        endpoint: reg.endpoint.to_string(),
                        registration_id: reg.id.to_string(),
                    });
                }
                self.deliver_ready(&reg.id, now);
            }
            RdOutcome::Updated(u) => {
                let Some(reg) = self.registry.get(&u.id).cloned() else {
                    return;
                };
                // An Update that fails to be stored holds in memory; a crash before the
                // next one costs at most the lifetime refresh.
                self.pipe.push(if u.changes.is_refresh_only() {
                    // Most Updates: the time, perhaps the address, for the refresh log.
                    Write::Refresh(StoredRefresh {
                        id: reg.id.to_string(),
                        last_update_unix_ms: self.clock.unix_ms(reg.refreshed_at),
                        peer: reg.peer,
                    })
                } else {
                    Write::Put(persist::to_stored(&reg, &self.clock, &mut self.formatted))
                });
                // One lookup, not a scan of every device's address.
                if let Some((was_t, was_peer)) = previous.filter(|_| u.changes.peer) {
                    self.by_peer.remove_if(was_t, was_peer, &reg.id);
                }
                self.by_peer.insert(t, peer, reg.id.clone());
                tracing::debug!(endpoint = %reg.endpoint, id = %reg.id, "updated");
                self.metrics.updates.inc();
                self.respond(now, t, id, route::response((2, 4)));
                self.emit(ServerEvent::Updated {
                    registration: reg.clone(),
                    changes: u.changes,
                });
                if !was_awake && self.registry.marked_awake(&reg.id) {
                    self.emit(ServerEvent::Awake {
                        endpoint: reg.endpoint.to_string(),
                        registration_id: reg.id.to_string(),
                    });
                }
                self.deliver_ready(&reg.id, now);
            }
            RdOutcome::Deregistered(removed) => {
                let reg = removed.registration.clone();
                tracing::info!(endpoint = %reg.endpoint, id = %reg.id, "deregistered");
                self.forget_registration(removed, now);
                self.metrics
                    .deregistrations
                    .get_or_create(&ReasonLabels {
                        reason: "deregister",
                    })
                    .inc();
                self.respond(now, t, id, route::response((2, 2)));
                self.emit(ServerEvent::Deregistered { registration: reg });
            }
        }
    }

    /// Drops everything a removed registration held: store record, observations (in the
    /// endpoint too, so later notifications get RST), queued requests.
    fn forget_registration(&mut self, removed: Removed<Queued>, now: Instant) {
        let reg = &removed.registration;
        self.pipe.push(Write::Delete(reg.id.to_string()));
        self.pipe.push(Write::ClearQueue(reg.endpoint.to_string()));
        self.by_peer.remove_if(reg.transport, reg.peer, &reg.id);
        self.cancel_observations(&reg.id, now, false);
        self.abandon_in_flight(reg.transport, reg.peer, now);
        for q in removed.dropped {
            // clear_queue above already removed the stored copies.
            let q = Queued { seq: None, ..q };
            self.finish_queued(q, Err(RequestError::Deregistered));
        }
    }

    /// Fails the requests in flight to a device's old address at once, rather than after
    /// their retransmissions: the device registered again from elsewhere, or is gone.
    fn abandon_in_flight(&mut self, t: Transport, peer: SocketAddr, now: Instant) {
        let keys: Vec<Key> = self
            .pending
            .iter()
            .filter(|(k, p)| k.0 == t && p.to == Some(peer))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.endpoint(k.0).cancel(now, k.1);
            self.on_response(now, k, Err(RequestError::Deregistered));
        }
    }

    fn cancel_observations(&mut self, registration_id: &str, now: Instant, delete_stored: bool) {
        for id in self.observed.keys_of(registration_id) {
            self.endpoint(id.0).cancel(now, id.1);
            if let Some(o) = self.observed.remove(&id) {
                if delete_stored {
                    self.pipe.push(Write::DeleteObservation(o.token));
                }
            }
        }
    }

    // ----- queries -------------------------------------------------------------------

    fn on_security(&mut self, c: SecurityCommand) {
        let creds = &self.credentials;
        let changed = matches!(
            c,
            SecurityCommand::Put { .. }
                | SecurityCommand::PutAll { .. }
                | SecurityCommand::Delete { .. }
        );
        if changed {
            // A device must not resume a session made with a key it no longer has.
            if let Some(d) = &self.dtls {
                d.forget_resumable_sessions();
            }
        }
        match c {
            SecurityCommand::Put { security, reply } => {
                let _ = reply.send(creds.put(&security));
            }
            SecurityCommand::PutAll { all, reply } => {
                let _ = reply.send(creds.put_all(&all));
            }
            SecurityCommand::Get { endpoint, reply } => {
                let _ = reply.send(creds.get(&endpoint));
            }
            SecurityCommand::Delete { endpoint, reply } => {
                let _ = reply.send(creds.delete(&endpoint));
            }
            SecurityCommand::List { reply } => {
                let _ = reply.send(creds.list());
            }
        }
    }

    fn client_info(&self, reg: &Registration, now: Instant) -> ClientInfo {
        let id = &reg.id;
        ClientInfo {
            registration: reg.clone(),
            // Reachable, not just awake: a DTLS registration whose session is gone waits
            // for the device to shake hands again.
            awake: self.reachable(id, now),
            registered_at_unix_ms: self.clock.unix_ms(reg.registered_at),
            last_seen_unix_ms: self
                .clock
                .unix_ms(self.registry.last_seen(id).unwrap_or(reg.refreshed_at)),
            expires_at_unix_ms: self.registry.expires_at(id).map(|t| self.clock.unix_ms(t)),
            queued_requests: self.registry.queued(id),
        }
    }

    fn clients(
        &self,
        prefix: &str,
        after: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> ClientPage {
        let now = Instant::now();
        let total = if prefix.is_empty() {
            self.registry.len()
        } else {
            self.registry.with_prefix(prefix).count()
        };
        let clients = self
            .registry
            .with_prefix_after(prefix, after)
            .skip(offset)
            .take(limit)
            .map(|r| self.client_info(r, now))
            .collect();
        ClientPage { total, clients }
    }

    fn observations(&self, endpoint: &str) -> Vec<ObservationInfo> {
        let Some(reg) = self.registry.by_endpoint(endpoint) else {
            return Vec::new();
        };
        let mut out: Vec<ObservationInfo> = self
            .observed
            .of_registration(&reg.id)
            .map(|o| ObservationInfo {
                token: o.token.clone(),
                paths: o.paths.clone(),
                composite: o.composite,
            })
            .collect();
        out.sort_by(|a, b| a.token.cmp(&b.token));
        out
    }

    fn forget_observation(&mut self, token: &[u8]) -> bool {
        let Some(rid) = self.observed.key_of_token(token) else {
            return false;
        };
        self.endpoint(rid.0).cancel(Instant::now(), rid.1);
        if let Some(o) = self.observed.remove(&rid) {
            self.pipe.push(Write::DeleteObservation(o.token));
        }
        true
    }

    fn queued_requests(&self) -> Vec<QueuedInfo> {
        let mut out = Vec::new();
        for reg in self.registry.iter() {
            for q in self.registry.queued_items(&reg.id) {
                out.push(QueuedInfo {
                    endpoint: q.endpoint.clone(),
                    label: q.label.clone(),
                    created_at_unix_ms: q.created_at_unix_ms,
                });
            }
        }
        out
    }

    // ----- outgoing requests ---------------------------------------------------------

    fn on_cancel_observation(&mut self, token: Vec<u8>, packet: Packet, reply: ReplyTx) {
        let now = Instant::now();
        let Some(rid) = self.observed.key_of_token(&token) else {
            let _ = reply.send(Err(RequestError::NotObserved("no such observation".into())));
            return;
        };
        let Some(o) = self.observed.remove(&rid) else {
            return;
        };
        self.pipe.push(Write::DeleteObservation(o.token.clone()));
        let operation = if o.composite {
            "Cancel-Observe-Composite"
        } else {
            "Cancel-Observe"
        };
        match self
            .endpoint(rid.0)
            .cancel_observation(now, rid.1, packet.clone())
        {
            Ok(cid) => {
                self.pending.insert(
                    (rid.0, cid),
                    Pending {
                        reply: Some(reply),
                        endpoint: o.endpoint.clone(),
                        request: packet,
                        observe: false,
                        stored_seq: None,
                        label: RequestLabel {
                            operation: operation.into(),
                            paths: o.paths,
                            request_id: None,
                        },
                        sent_at: now,
                        to: None,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(RequestError::Send(e)));
            }
        }
    }

    /// A request from the handle: sent at once to a reachable device with nothing
    /// queued before it, else persisted and queued until the device wakes.
    fn on_request_command(&mut self, item: Queued, expires_at: Instant) {
        let now = Instant::now();
        let Some(reg) = self.registry.by_endpoint(&item.endpoint) else {
            let endpoint = item.endpoint.clone();
            self.finish_queued(item, Err(RequestError::UnknownEndpoint(endpoint)));
            return;
        };
        let id = reg.id.clone();
        if self.reachable(&id, now) && self.registry.queued(&id) == 0 {
            self.send(now, &id, item);
            return;
        }
        let tracking = persist::to_tracking(&item.label, item.created_at_unix_ms);
        let record = persist::to_queued(
            &item.endpoint,
            &item.packet,
            self.clock.unix_ms(expires_at),
            Some(tracking),
        );
        let seq = match self.pipe.enqueue(record) {
            Ok(seq) => seq,
            Err(e) => {
                let err = match e {
                    crate::store::StoreError::QueueFull { .. } => RequestError::QueueFull,
                    e => RequestError::Store(e.to_string()),
                };
                self.finish_queued(item, Err(err));
                return;
            }
        };
        let mut item = Queued {
            seq: Some(seq),
            ..item
        };
        tracing::debug!(endpoint = %item.endpoint, seq, "device asleep; request queued");
        let accepted = item.accepted.take();
        match self.registry.enqueue(&id, item, expires_at) {
            Ok(()) => {
                if let Some(tx) = accepted {
                    let _ = tx.send(());
                }
            }
            Err((e, item)) => {
                tracing::debug!(error = %e, "request not queued");
                self.finish_queued(item, Err(RequestError::QueueFull));
            }
        }
    }

    /// Whether a request sent now reaches the device: awake, and for a registration made
    /// over DTLS, with its session still up (the server cannot open one; the device
    /// does, and its next Register or Update delivers what waited).
    fn reachable(&self, registration_id: &str, now: Instant) -> bool {
        let Some(reg) = self.registry.get(registration_id) else {
            return false;
        };
        self.registry.is_awake(registration_id, now)
            && (reg.transport == Transport::Udp || self.dtls_peers.contains_key(&reg.peer))
    }

    /// Sends what waited for the device, in order, now that it is awake.
    fn deliver_ready(&mut self, registration_id: &str, now: Instant) {
        let ready = self.registry.take_ready(registration_id, now);
        for q in ready.expired {
            self.finish_queued(q, Err(RequestError::Expired));
        }
        for q in ready.ready {
            self.send(now, registration_id, q);
        }
    }

    fn send(&mut self, now: Instant, registration_id: &str, mut q: Queued) {
        let Some(reg) = self.registry.get(registration_id) else {
            self.finish_queued(q, Err(RequestError::Deregistered));
            return;
        };
        let (peer, endpoint, t) = (reg.peer, reg.endpoint.clone(), reg.transport);
        match self
            .endpoint(t)
            .send_request(now, peer, q.packet.clone(), q.confirmable)
        {
            Ok(rid) => {
                let rid = (t, rid);
                if let Some(tx) = q.accepted.take() {
                    let _ = tx.send(());
                }
                self.pending.insert(
                    rid,
                    Pending {
                        reply: q.reply,
                        endpoint: endpoint.to_string(),
                        request: q.packet,
                        observe: q.observe,
                        stored_seq: q.seq,
                        label: q.label,
                        sent_at: now,
                        to: Some(peer),
                    },
                );
            }
            Err(e) => self.finish_queued(q, Err(RequestError::Send(e))),
        }
    }

    /// Ends a request that never reached the endpoint, and its stored copy.
    fn finish_queued(&mut self, q: Queued, outcome: Result<Packet, RequestError>) {
        if let Some(seq) = q.seq {
            self.pipe.push(Write::RemoveQueued {
                endpoint: q.endpoint.clone(),
                seq,
            });
        }
        self.metrics
            .request_done(q.label.operation_name(), &outcome_code(&outcome), None);
        self.complete(q.reply, q.endpoint, q.label, outcome, Vec::new());
    }

    /// Hands the outcome to the waiting caller or, for a request restored after a restart
    /// whose caller is gone, announces it, once the pass is committed: a caller told
    /// "done" must find it stored (an observation persisted on its first answer, a queued
    /// request removed). Committing here instead ended the pass's group, and every write
    /// after it in the pass became a commit of its own.
    fn complete(
        &mut self,
        reply: Option<ReplyTx>,
        endpoint: String,
        label: RequestLabel,
        outcome: Result<Packet, RequestError>,
        token: Vec<u8>,
    ) {
        self.completed.push(match reply {
            Some(tx) => Completion::Reply(tx, outcome.map(|packet| Reply { packet, token })),
            None => Completion::Event(ServerEvent::QueuedRequestCompleted {
                endpoint,
                label,
                token,
                outcome,
            }),
        });
    }

    fn on_response(&mut self, now: Instant, id: Key, outcome: Result<Packet, RequestError>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(seq) = p.stored_seq {
            self.pipe.push(Write::RemoveQueued {
                endpoint: p.endpoint.clone(),
                seq,
            });
        }
        let latency = outcome
            .is_ok()
            .then(|| now.saturating_duration_since(p.sent_at).as_secs_f64());
        self.metrics
            .request_done(p.label.operation_name(), &outcome_code(&outcome), latency);
        let token = self
            .endpoint(id.0)
            .token(id.1)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let reg_id = self.registry.by_endpoint(&p.endpoint).map(|r| r.id.clone());
        if let Some(rid) = &reg_id {
            if outcome.is_ok() {
                self.heard_from(rid, now);
            }
        }
        let mut outcome = outcome;
        if p.observe {
            if let Ok(packet) = &outcome {
                let established = matches!(packet.header.code, MessageClass::Response(r) if !r.is_error())
                    && packet.get_observe_value().is_some();
                let reg = reg_id
                    .as_deref()
                    .and_then(|rid| self.registry.get(rid))
                    .cloned();
                match (established, reg) {
                    (true, Some(reg)) => {
                        let record = persist::to_observation(
                            &token,
                            &reg,
                            &p.request,
                            &p.label.paths,
                            packet,
                            self.clock.unix_ms(now),
                        );
                        self.pipe.push(Write::PutObservation(record));
                        self.observed.insert(
                            id,
                            Observed {
                                endpoint: reg.endpoint.to_string(),
                                registration_id: reg.id.to_string(),
                                token: token.clone(),
                                paths: p.label.paths.clone(),
                                composite: persist::is_composite(&p.request),
                            },
                        );
                    }
                    _ => {
                        outcome = Err(RequestError::NotObserved(format!("{}", packet.header.code)));
                    }
                }
            }
        }
        self.complete(p.reply, p.endpoint, p.label, outcome, token);
    }
}
