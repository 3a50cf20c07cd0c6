//! The event loop: one UDP socket, one [`Endpoint`], one [`Registry`], the store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use coap_lite::{MessageClass, Packet};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};

use super::persist::{self, Clock};
use super::route::{self, Route};
use super::{Command, Reply, ReplyTx, RequestError, ServerEvent};
use crate::coap::{Endpoint, Event, IncomingId, RequestId};
use crate::registry::{RdOutcome, RegistrationError, Registry, RegistryConfig, Removed};
use crate::store::Store;

/// Largest datagram read; anything up to the UDP maximum arrives whole, so a truncated
/// read cannot turn into a different, valid message.
const RECV_BUFFER: usize = 65_535;

/// A request waiting in a device's queue.
struct Queued {
    endpoint: String,
    /// Its seq in the store's queue; `None` while it has not been persisted (a request
    /// sent at once is never stored).
    seq: Option<u64>,
    packet: Packet,
    confirmable: bool,
    observe: bool,
    reply: Option<ReplyTx>,
}

/// A request handed to the endpoint, until its response or failure.
struct Pending {
    reply: Option<ReplyTx>,
    endpoint: String,
    request: Packet,
    observe: bool,
    stored_seq: Option<u64>,
}

/// An established observation.
struct Observed {
    endpoint: String,
    registration_id: String,
    token: Vec<u8>,
}

pub(super) struct Driver {
    ep: Endpoint,
    registry: Registry<Queued>,
    store: Arc<dyn Store>,
    events: broadcast::Sender<ServerEvent>,
    clock: Clock,
    pending: HashMap<RequestId, Pending>,
    observed: HashMap<RequestId, Observed>,
    /// Which registration a peer address belongs to, for Send (which names no endpoint).
    by_peer: HashMap<SocketAddr, String>,
}

impl Driver {
    pub fn new(
        ep: Endpoint,
        registry: RegistryConfig,
        store: Arc<dyn Store>,
        events: broadcast::Sender<ServerEvent>,
    ) -> Driver {
        Driver {
            ep,
            registry: Registry::new(registry),
            store,
            events,
            clock: Clock::now(),
            pending: HashMap::new(),
            observed: HashMap::new(),
            by_peer: HashMap::new(),
        }
    }

    fn emit(&self, e: ServerEvent) {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.events.send(e);
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
                    let (id, endpoint, peer) = (reg.id.clone(), reg.endpoint.clone(), reg.peer);
                    if let Err(e) = self.registry.restore(reg) {
                        tracing::warn!(%id, error = %e, "registration not restored");
                        continue;
                    }
                    self.by_peer.insert(peer, id.clone());
                    let queued = self
                        .store
                        .peek_queue(&endpoint, max_queued)
                        .unwrap_or_default();
                    for q in queued {
                        let expires_at = self.clock.instant(q.expires_at_unix_ms).unwrap_or(now);
                        let item = Queued {
                            endpoint: endpoint.clone(),
                            seq: Some(q.seq),
                            packet: persist::from_queued(&q),
                            confirmable: true,
                            observe: q.observe == Some(0),
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
            let peer = reg.peer;
            let template = persist::observation_template(&o);
            match self
                .ep
                .restore_observation(now, peer, o.token.clone(), template, o.last_sequence)
            {
                Ok(id) => {
                    self.observed.insert(
                        id,
                        Observed {
                            endpoint: o.endpoint.clone(),
                            registration_id: o.registration_id.clone(),
                            token: o.token.clone(),
                        },
                    );
                }
                Err(e) => tracing::warn!(error = %e, "observation not restored"),
            }
        }
        tracing::info!(
            registrations = self.registry.len(),
            observations = self.observed.len(),
            "restored from the store"
        );
    }

    // ----- loop ----------------------------------------------------------------------

    pub async fn run(mut self, socket: UdpSocket, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let deadline = [
                self.ep.poll_timeout(),
                self.registry.next_expiry(),
                self.registry.next_queue_expiry(),
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
                        let data = buf.get(..n).unwrap_or_default();
                        self.ep.handle_datagram(Instant::now(), peer, data);
                    }
                    // ICMP port unreachable from a device that went away surfaces here
                    // on some systems; it concerns one peer, not the socket.
                    Err(e) => tracing::debug!(error = %e, "recv_from failed"),
                },
                c = commands.recv() => match c {
                    Some(Command::Request { endpoint, packet, confirmable, observe, expires_at, reply }) => {
                        self.on_request_command(endpoint, packet, confirmable, observe, expires_at, reply);
                    }
                    Some(Command::CancelObservation { token, packet, reply }) => {
                        self.on_cancel_observation(token, packet, reply);
                    }
                    Some(Command::Registration { endpoint, reply }) => {
                        let _ = reply.send(self.registry.by_endpoint(&endpoint).cloned());
                    }
                    Some(Command::Shutdown) | None => break,
                },
                () = sleep => self.on_timer(Instant::now()),
            }
            self.drain_events();
            while let Some(t) = self.ep.poll_transmit() {
                if let Err(e) = socket.send_to(&t.bytes, t.peer).await {
                    tracing::debug!(peer = %t.peer, error = %e, "send_to failed");
                }
            }
        }
        tracing::info!("server stopped");
    }

    fn on_timer(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        for removed in self.registry.expire(now) {
            let reg = removed.registration.clone();
            tracing::info!(endpoint = %reg.endpoint, id = %reg.id, "registration expired");
            self.forget_registration(removed, now);
            self.emit(ServerEvent::Expired { registration: reg });
        }
        for (_, q) in self.registry.expire_queued(now) {
            self.finish_queued(q, Err(RequestError::Expired));
        }
    }

    fn drain_events(&mut self) {
        // Bounded: handling an event never makes the endpoint emit another synchronously
        // more than once per call that was already counted by the datagram.
        while let Some(e) = self.ep.poll_event() {
            let now = Instant::now();
            match e {
                Event::Request { id, peer, packet } => self.on_incoming(now, id, peer, &packet),
                Event::Response {
                    request_id, packet, ..
                } => self.on_response(now, request_id, Ok(packet)),
                Event::RequestFailed { request_id, reason } => {
                    self.on_response(now, request_id, Err(RequestError::Failed(reason)))
                }
                Event::Notification {
                    request_id,
                    packet,
                    sequence,
                    peer,
                } => {
                    if let Some(o) = self.observed.get(&request_id) {
                        let (endpoint, registration_id) =
                            (o.endpoint.clone(), o.registration_id.clone());
                        let token = o.token.clone();
                        self.registry.touch(&registration_id, now);
                        tracing::debug!(%endpoint, %peer, sequence, "notification");
                        self.emit(ServerEvent::Notification {
                            endpoint,
                            registration_id,
                            token,
                            sequence,
                            packet,
                        });
                    }
                }
                Event::ObservationCancelled {
                    request_id, packet, ..
                } => {
                    if let Some(o) = self.observed.remove(&request_id) {
                        let _ = self.store.delete_observation(&o.token);
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

    fn respond(&mut self, now: Instant, id: IncomingId, packet: Packet) {
        if let Err(e) = self.ep.respond(now, id, packet) {
            tracing::warn!(error = %e, "response not sent");
        }
    }

    // ----- incoming requests ---------------------------------------------------------

    fn on_incoming(&mut self, now: Instant, id: IncomingId, peer: SocketAddr, packet: &Packet) {
        match route::route(packet) {
            Route::Registration(Ok(rd)) => match self.registry.handle(rd, peer, now) {
                Ok(outcome) => self.on_outcome(now, id, peer, outcome),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "registration request refused");
                    self.respond(now, id, route::error_response(&e));
                }
            },
            Route::Registration(Err(e)) | Route::Reject(e) => {
                tracing::debug!(%peer, error = %e, "request refused");
                self.respond(now, id, route::error_response(&e));
            }
            Route::Send {
                content_format,
                payload,
            } => {
                let reg = self
                    .by_peer
                    .get(&peer)
                    .and_then(|rid| self.registry.get(rid))
                    .map(|r| (r.id.clone(), r.endpoint.clone()));
                match reg {
                    Some((registration_id, endpoint)) => {
                        self.registry.touch(&registration_id, now);
                        self.respond(now, id, route::response((2, 4)));
                        self.emit(ServerEvent::SendReceived {
                            endpoint,
                            registration_id,
                            content_format,
                            payload,
                        });
                    }
                    None => {
                        let e = RegistrationError::new(
                            RegistrationError::FORBIDDEN,
                            "Send from an address with no registration; register first",
                        );
                        self.respond(now, id, route::error_response(&e));
                    }
                }
            }
        }
    }

    fn on_outcome(
        &mut self,
        now: Instant,
        id: IncomingId,
        peer: SocketAddr,
        outcome: RdOutcome<Queued>,
    ) {
        match outcome {
            RdOutcome::Registered(r) => {
                let Some(reg) = self.registry.get(&r.id).cloned() else {
                    return;
                };
                if let Err(e) = self
                    .store
                    .replace_registration(&persist::to_stored(&reg, &self.clock))
                {
                    tracing::error!(error = %e, endpoint = %reg.endpoint, "registration not persisted");
                    if let Ok(removed) = self.registry.deregister(&reg.id, now) {
                        self.fail_all(removed.dropped, RequestError::Store(e.to_string()));
                    }
                    let err = RegistrationError::new(
                        RegistrationError::INTERNAL,
                        "registration could not be stored",
                    );
                    self.respond(now, id, route::error_response(&err));
                    return;
                }
                if let Some(old) = &r.replaced {
                    // The store dropped the old registration's observations atomically.
                    self.cancel_observations(&old.id, now, false);
                    self.by_peer.remove(&old.peer);
                }
                self.by_peer.insert(peer, reg.id.clone());
                tracing::info!(endpoint = %reg.endpoint, id = %reg.id, %peer, "registered");
                self.respond(now, id, route::created(&r.location_path));
                self.emit(ServerEvent::Registered {
                    registration: reg.clone(),
                    replaced: r.replaced.map(|o| o.id),
                });
                self.deliver_ready(&reg.id, now);
            }
            RdOutcome::Updated(u) => {
                let Some(reg) = self.registry.get(&u.id).cloned() else {
                    return;
                };
                if let Err(e) = self
                    .store
                    .put_registration(&persist::to_stored(&reg, &self.clock))
                {
                    // The Update holds in memory; a crash before the next one costs
                    // at most the lifetime refresh.
                    tracing::error!(error = %e, id = %reg.id, "update not persisted");
                }
                if u.changes.peer {
                    self.by_peer.retain(|_, rid| *rid != reg.id);
                }
                self.by_peer.insert(peer, reg.id.clone());
                tracing::debug!(endpoint = %reg.endpoint, id = %reg.id, "updated");
                self.respond(now, id, route::response((2, 4)));
                self.emit(ServerEvent::Updated {
                    registration: reg.clone(),
                    changes: u.changes,
                });
                self.deliver_ready(&reg.id, now);
            }
            RdOutcome::Deregistered(removed) => {
                let reg = removed.registration.clone();
                tracing::info!(endpoint = %reg.endpoint, id = %reg.id, "deregistered");
                self.forget_registration(removed, now);
                self.respond(now, id, route::response((2, 2)));
                self.emit(ServerEvent::Deregistered { registration: reg });
            }
        }
    }

    /// Drops everything a removed registration held: store record, observations (in the
    /// endpoint too, so later notifications get RST), queued requests.
    fn forget_registration(&mut self, removed: Removed<Queued>, now: Instant) {
        let reg = &removed.registration;
        if let Err(e) = self.store.delete_registration(&reg.id) {
            tracing::error!(error = %e, id = %reg.id, "registration not deleted from the store");
        }
        if let Err(e) = self.store.clear_queue(&reg.endpoint) {
            tracing::warn!(error = %e, "queue not cleared");
        }
        if self.by_peer.get(&reg.peer) == Some(&reg.id) {
            self.by_peer.remove(&reg.peer);
        }
        self.cancel_observations(&reg.id, now, false);
        for q in removed.dropped {
            // clear_queue above already removed the stored copies.
            let q = Queued { seq: None, ..q };
            self.finish_queued(q, Err(RequestError::Deregistered));
        }
    }

    fn cancel_observations(&mut self, registration_id: &str, now: Instant, delete_stored: bool) {
        let ids: Vec<RequestId> = self
            .observed
            .iter()
            .filter(|(_, o)| o.registration_id == registration_id)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.ep.cancel(now, id);
            if let Some(o) = self.observed.remove(&id) {
                if delete_stored {
                    let _ = self.store.delete_observation(&o.token);
                }
            }
        }
    }

    // ----- outgoing requests ---------------------------------------------------------

    fn on_cancel_observation(&mut self, token: Vec<u8>, packet: Packet, reply: ReplyTx) {
        let now = Instant::now();
        let Some((&rid, _)) = self.observed.iter().find(|(_, o)| o.token == token) else {
            let _ = reply.send(Err(RequestError::NotObserved("no such observation".into())));
            return;
        };
        let Some(o) = self.observed.remove(&rid) else {
            return;
        };
        if let Err(e) = self.store.delete_observation(&o.token) {
            tracing::warn!(error = %e, "cancelled observation not deleted from the store");
        }
        match self.ep.cancel_observation(now, rid, packet.clone()) {
            Ok(cid) => {
                self.pending.insert(
                    cid,
                    Pending {
                        reply: Some(reply),
                        endpoint: o.endpoint.clone(),
                        request: packet,
                        observe: false,
                        stored_seq: None,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(RequestError::Send(e)));
            }
        }
    }

    fn on_request_command(
        &mut self,
        endpoint: String,
        packet: Packet,
        confirmable: bool,
        observe: bool,
        expires_at: Instant,
        reply: ReplyTx,
    ) {
        let now = Instant::now();
        let Some(reg) = self.registry.by_endpoint(&endpoint) else {
            let _ = reply.send(Err(RequestError::UnknownEndpoint(endpoint)));
            return;
        };
        let id = reg.id.clone();
        let item = Queued {
            endpoint: endpoint.clone(),
            seq: None,
            packet,
            confirmable,
            observe,
            reply: Some(reply),
        };
        if self.registry.is_awake(&id, now) && self.registry.queued(&id) == 0 {
            self.send(now, &id, item);
            return;
        }
        let record = persist::to_queued(&endpoint, &item.packet, self.clock.unix_ms(expires_at));
        let seq = match self.store.enqueue(&record) {
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
        let item = Queued {
            seq: Some(seq),
            ..item
        };
        tracing::debug!(%endpoint, seq, "device asleep; request queued");
        if let Err((e, item)) = self.registry.enqueue(&id, item, expires_at) {
            tracing::debug!(error = %e, "request not queued");
            self.finish_queued(item, Err(RequestError::QueueFull));
        }
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

    fn send(&mut self, now: Instant, registration_id: &str, q: Queued) {
        let Some(reg) = self.registry.get(registration_id) else {
            self.finish_queued(q, Err(RequestError::Deregistered));
            return;
        };
        let (peer, endpoint) = (reg.peer, reg.endpoint.clone());
        match self
            .ep
            .send_request(now, peer, q.packet.clone(), q.confirmable)
        {
            Ok(rid) => {
                self.pending.insert(
                    rid,
                    Pending {
                        reply: q.reply,
                        endpoint,
                        request: q.packet,
                        observe: q.observe,
                        stored_seq: q.seq,
                    },
                );
            }
            Err(e) => self.finish_queued(q, Err(RequestError::Send(e))),
        }
    }

    /// Ends a request that never reached the endpoint, and its stored copy.
    fn finish_queued(&mut self, q: Queued, outcome: Result<Packet, RequestError>) {
        if let Some(seq) = q.seq {
            if let Err(e) = self.store.remove_queued(&q.endpoint, seq) {
                tracing::warn!(error = %e, "queued request not removed from the store");
            }
        }
        match q.reply {
            Some(tx) => {
                let _ = tx.send(outcome.map(|packet| Reply {
                    packet,
                    token: Vec::new(),
                }));
            }
            None => self.emit(ServerEvent::QueuedRequestCompleted {
                endpoint: q.endpoint,
                outcome,
            }),
        }
    }

    fn fail_all(&mut self, items: Vec<Queued>, e: RequestError) {
        for q in items {
            self.finish_queued(q, Err(e.clone()));
        }
    }

    fn on_response(&mut self, now: Instant, id: RequestId, outcome: Result<Packet, RequestError>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(seq) = p.stored_seq {
            if let Err(e) = self.store.remove_queued(&p.endpoint, seq) {
                tracing::warn!(error = %e, "delivered request not removed from the store");
            }
        }
        let token = self.ep.token(id).map(<[u8]>::to_vec).unwrap_or_default();
        let reg_id = self.registry.by_endpoint(&p.endpoint).map(|r| r.id.clone());
        if let Some(rid) = &reg_id {
            if outcome.is_ok() {
                self.registry.touch(rid, now);
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
                            packet,
                            self.clock.unix_ms(now),
                        );
                        if let Err(e) = self.store.put_observation(&record) {
                            tracing::warn!(error = %e, "observation not persisted");
                        }
                        self.observed.insert(
                            id,
                            Observed {
                                endpoint: reg.endpoint.clone(),
                                registration_id: reg.id.clone(),
                                token: token.clone(),
                            },
                        );
                    }
                    _ => {
                        outcome = Err(RequestError::NotObserved(format!("{}", packet.header.code)));
                    }
                }
            }
        }
        match p.reply {
            Some(tx) => {
                let _ = tx.send(outcome.map(|packet| Reply { packet, token }));
            }
            None => self.emit(ServerEvent::QueuedRequestCompleted {
                endpoint: p.endpoint,
                outcome,
            }),
        }
    }
}
