//! The CoAP endpoint state machine: datagrams and the time in, datagrams, events and
//! timers out. Nothing here touches a socket or reads a clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, MessageType, Packet, ResponseType};

use super::block::{
    self, block_of, size_of_szx, Assemblies, AssemblyKey, Block1Outcome, BlockOpt, Limits,
    OPT_BLOCK1, OPT_BLOCK2, OPT_SIZE1, OPT_SIZE2,
};
use super::config::Config;
use super::dedup::{Dedup, Reply};
use super::observe::is_fresh;
use super::rng::Rng;

/// Names one request we sent, from `send_request` until its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Names one request a peer sent us, until we answer it with `respond`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncomingId(pub u64);

/// A datagram the driver must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Why one of our requests ended without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No ACK after MAX_RETRANSMIT retransmissions, or no response in `response_timeout`.
    Timeout,
    /// The peer answered our confirmable message with RST.
    Reset,
    /// The block-wise response grew past `max_body`.
    BodyTooLarge,
    /// The peer's Block1/Block2 answers did not fit the transfer we were doing.
    BlockMismatch,
}

/// Why an established observation ended without us cancelling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The device sent a final response (an error, or no Observe option): RFC 7641 §3.2.
    Ended,
}

/// What the application learns from the endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A peer's request, reassembled if it came in blocks; answer with `respond`.
    Request {
        id: IncomingId,
        peer: SocketAddr,
        packet: Packet,
    },
    /// The response to our request, reassembled if it came in blocks.
    Response {
        request_id: RequestId,
        peer: SocketAddr,
        packet: Packet,
    },
    /// A fresh notification of an observation; `peer` is where it came from, which may
    /// differ from where the request went (NAT rebinding).
    Notification {
        request_id: RequestId,
        peer: SocketAddr,
        packet: Packet,
        sequence: u32,
    },
    RequestFailed {
        request_id: RequestId,
        reason: FailReason,
    },
    ObservationCancelled {
        request_id: RequestId,
        peer: SocketAddr,
        reason: CancelReason,
        packet: Packet,
    },
}

/// Why `send_request` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("packet code is not a request method")]
    NotARequest,
    #[error("too many outgoing requests pending ({0})")]
    TooManyPending(usize),
    #[error("request body of {0} bytes exceeds the block-wise limit")]
    BodyTooLarge(usize),
    #[error("request cannot be encoded: {0}")]
    Encode(String),
    #[error("no observation with this id")]
    NotObserving,
}

/// Why `respond` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    #[error("no unanswered incoming request with this id")]
    UnknownIncoming,
    #[error("response cannot be encoded: {0}")]
    Encode(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Retransmit(SocketAddr, u16),
    ResponseWait(RequestId),
    Incoming(IncomingId),
}

#[derive(Debug)]
enum Owner {
    Request(RequestId),
    Response,
}

/// A confirmable message of ours awaiting ACK.
#[derive(Debug)]
struct Retransmission {
    bytes: Vec<u8>,
    retransmits: u32,
    timeout: Duration,
    next_at: Instant,
    owner: Owner,
}

/// The one message of a request currently on the wire.
#[derive(Debug)]
struct Flight {
    token: Vec<u8>,
    mid: u16,
    response_deadline: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Response,
    Notification(u32),
}

#[derive(Debug)]
struct Download {
    first: Packet,
    body: Vec<u8>,
    szx: u8,
    purpose: Purpose,
}

#[derive(Debug)]
struct Upload {
    body: Vec<u8>,
    offset: usize,
    szx: u8,
}

#[derive(Debug, PartialEq)]
enum Phase {
    Queued,
    Active,
    Observing { last_seq: u32, last_at: Instant },
}

#[derive(Debug)]
struct OutRequest {
    peer: SocketAddr,
    slot_peer: Option<SocketAddr>,
    token: Vec<u8>,
    template: Packet,
    confirmable: bool,
    phase: Phase,
    flight: Option<Flight>,
    upload: Option<Upload>,
    download: Option<Download>,
}

#[derive(Debug, Default)]
struct PeerSlots {
    active: usize,
    queue: VecDeque<RequestId>,
}

#[derive(Debug)]
struct Incoming {
    peer: SocketAddr,
    mid: u16,
    token: Vec<u8>,
    confirmable: bool,
    acked: bool,
    ack_at: Option<Instant>,
    expires: Instant,
    block1: Option<BlockOpt>,
}

const CON: u8 = 0;
const ACK: u8 = 2;
const RST: u8 = 3;

/// A sans-IO CoAP endpoint (RFC 7252, RFC 7641 client side, RFC 7959 both ways).
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    rng: Rng,
    next_mid: u16,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    requests: HashMap<RequestId, OutRequest>,
    by_token: HashMap<Vec<u8>, RequestId>,
    peers: HashMap<SocketAddr, PeerSlots>,
    retransmissions: HashMap<(SocketAddr, u16), Retransmission>,
    incoming: HashMap<IncomingId, Incoming>,
    dedup: Dedup,
    assemblies: Assemblies,
    /// Confirmable messages sent again since start, for metrics.
    retransmitted: u64,
}

/// Table sizes, for tests and metrics: every one of them must stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub requests: usize,
    pub tokens: usize,
    pub peers: usize,
    pub retransmissions: usize,
    pub incoming: usize,
    pub dedup: usize,
    pub assemblies: usize,
    pub timers: usize,
}

fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(now)
}

fn empty_message(kind: u8, mid: u16) -> Vec<u8> {
    let [hi, lo] = mid.to_be_bytes();
    vec![0x40 | (kind << 4), 0, hi, lo]
}

fn encode(packet: &Packet) -> Result<Vec<u8>, String> {
    packet.to_bytes_unlimited().map_err(|e| e.to_string())
}

fn is_success(code: MessageClass) -> bool {
    matches!(code, MessageClass::Response(r) if !r.is_error())
}

impl Endpoint {
    pub fn new(config: Config, rng_seed: u64) -> Self {
        let mut rng = Rng::new(rng_seed);
        let next_mid = rng.next_u64() as u16;
        let (dedup_cap, assembly_cap) = (config.max_dedup, config.max_block1_assemblies);
        Self {
            config,
            rng,
            next_mid,
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: BinaryHeap::new(),
            requests: HashMap::new(),
            by_token: HashMap::new(),
            peers: HashMap::new(),
            retransmissions: HashMap::new(),
            incoming: HashMap::new(),
            dedup: Dedup::new(dedup_cap),
            assemblies: Assemblies::new(assembly_cap),
            retransmitted: 0,
        }
    }

    /// Duplicate-detection entries expiring before this instant are of messages older
    /// than MAX_TRANSMIT_SPAN (RFC 7252 §4.8.2), whose retransmissions are all over.
    fn evictable_until(&self, now: Instant) -> Instant {
        let c = &self.config;
        let span = c
            .ack_timeout
            .mul_f64(c.ack_random_factor.max(1.0))
            .saturating_mul((1u32 << c.max_retransmit.min(16)) - 1);
        now + c.exchange_lifetime.saturating_sub(span)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next instant `handle_timeout` has work to do.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if self.timer_live(at, key) {
                break;
            }
            self.timers.pop();
        }
        [
            self.timers.peek().map(|Reverse((at, _))| *at),
            self.dedup.next_expiry(),
            self.assemblies.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Retransmissions sent since start (every one, of requests and of responses).
    pub fn retransmissions_sent(&self) -> u64 {
        self.retransmitted
    }

    pub fn sizes(&self) -> Sizes {
        Sizes {
            requests: self.requests.len(),
            tokens: self.by_token.len(),
            peers: self.peers.len(),
            retransmissions: self.retransmissions.len(),
            incoming: self.incoming.len(),
            dedup: self.dedup.len(),
            assemblies: self.assemblies.len(),
            timers: self.timers.len(),
        }
    }

    // ----- outgoing requests -------------------------------------------------------

    /// Queues a request to `peer`; it goes out at once unless NSTART exchanges with that
    /// peer are already in flight. A request carrying Observe=0 stays registered after
    /// its first response and reports later notifications.
    pub fn send_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: Packet,
        confirmable: bool,
    ) -> Result<RequestId, SendError> {
        self.send_with_token(now, peer, request, confirmable, None)
    }

    /// Cancels an observation actively (RFC 7641 §3.6): the observation is
    /// forgotten and `request` (the original GET with Observe=1, built by the
    /// caller) goes to the device with the observation's own token, which is
    /// how the device knows which observation to end. Its response arrives
    /// as an ordinary [`Event::Response`] for the returned id.
    pub fn cancel_observation(
        &mut self,
        now: Instant,
        id: RequestId,
        request: Packet,
    ) -> Result<RequestId, SendError> {
        if !matches!(
            self.requests.get(&id).map(|r| &r.phase),
            Some(Phase::Observing { .. })
        ) {
            return Err(SendError::NotObserving);
        }
        let Some(obs) = self.requests.remove(&id) else {
            return Err(SendError::NotObserving);
        };
        let (peer, token) = (obs.peer, obs.token.clone());
        self.forget(now, obs);
        self.send_with_token(now, peer, request, true, Some(token))
    }

    fn send_with_token(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mut request: Packet,
        confirmable: bool,
        token: Option<Vec<u8>>,
    ) -> Result<RequestId, SendError> {
        if !matches!(request.header.code, MessageClass::Request(_)) {
            return Err(SendError::NotARequest);
        }
        if self.requests.len() >= self.config.max_pending {
            return Err(SendError::TooManyPending(self.requests.len()));
        }
        let block_size = size_of_szx(self.config.preferred_szx);
        if request.payload.len() > block_size.saturating_mul(block::MAX_NUM as usize + 1) {
            return Err(SendError::BodyTooLarge(request.payload.len()));
        }
        request.set_token(Vec::new());
        encode(&request).map_err(SendError::Encode)?;
        let upload = (request.payload.len() > block_size).then(|| Upload {
            body: std::mem::take(&mut request.payload),
            offset: 0,
            szx: self.config.preferred_szx.min(6),
        });
        let token = match token {
            Some(t) => t,
            None => self.fresh_token(),
        };
        let id = RequestId(self.next_id());
        self.by_token.insert(token.clone(), id);
        self.requests.insert(
            id,
            OutRequest {
                peer,
                slot_peer: None,
                token,
                template: request,
                confirmable,
                phase: Phase::Queued,
                flight: None,
                upload,
                download: None,
            },
        );
        let slots = self.peers.entry(peer).or_default();
        if slots.active < self.config.nstart.max(1) {
            slots.active += 1;
            self.start(now, id, peer);
        } else {
            slots.queue.push_back(id);
        }
        Ok(id)
    }

    /// Forgets a request or observation: no event follows, and a later response or
    /// notification for it is rejected with RST (a passive cancel at the device).
    pub fn cancel(&mut self, now: Instant, id: RequestId) -> bool {
        match self.requests.remove(&id) {
            Some(req) => {
                self.forget(now, req);
                true
            }
            None => false,
        }
    }

    /// The token our request carries (its first message's token; block fetches of a
    /// notification use tokens of their own). A driver persists it so that an observation
    /// can be [`restore_observation`](Self::restore_observation)ed after a restart.
    pub fn token(&self, id: RequestId) -> Option<&[u8]> {
        self.requests.get(&id).map(|r| r.token.as_slice())
    }

    /// Re-establishes an observation made before a restart, so that the device's
    /// notifications carrying `token` are matched again instead of being answered with RST.
    /// `template` is the original request (used only to fetch further blocks of a
    /// block-wise notification). `last_seq` is the sequence number of the newest
    /// notification accepted before the restart, if known; without it the next
    /// notification is accepted whatever its number, since the ordering state is lost.
    pub fn restore_observation(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Vec<u8>,
        mut template: Packet,
        last_seq: Option<u32>,
    ) -> Result<RequestId, SendError> {
        if !matches!(template.header.code, MessageClass::Request(_)) {
            return Err(SendError::NotARequest);
        }
        if self.requests.len() >= self.config.max_pending {
            return Err(SendError::TooManyPending(self.requests.len()));
        }
        if token.is_empty() || token.len() > 8 || self.by_token.contains_key(&token) {
            return Err(SendError::Encode(
                "token must be 1 to 8 bytes and unused".into(),
            ));
        }
        template.set_token(Vec::new());
        encode(&template).map_err(SendError::Encode)?;
        // Without a stored sequence number, date the last one far enough back that the
        // freshness rule of RFC 7641 §3.4 accepts any number.
        let stale = self
            .config
            .observe_freshness
            .checked_add(Duration::from_secs(1))
            .and_then(|d| now.checked_sub(d));
        let (last_seq, last_at) = match (last_seq, stale) {
            (Some(seq), _) => (seq, now),
            (None, Some(at)) => (0, at),
            (None, None) => (0, now),
        };
        let id = RequestId(self.next_id());
        self.by_token.insert(token.clone(), id);
        self.requests.insert(
            id,
            OutRequest {
                peer,
                slot_peer: None,
                token,
                template,
                confirmable: true,
                phase: Phase::Observing { last_seq, last_at },
                flight: None,
                upload: None,
                download: None,
            },
        );
        Ok(id)
    }

    fn start(&mut self, now: Instant, id: RequestId, peer: SocketAddr) {
        if let Some(req) = self.requests.get_mut(&id) {
            req.slot_peer = Some(peer);
            req.phase = Phase::Active;
            self.send_flight(now, id);
        }
    }

    /// Sends the next message of a request: the first, the next Block1 block or the
    /// request for the next Block2 block.
    fn send_flight(&mut self, now: Instant, id: RequestId) {
        let token_if_new = self.fresh_token();
        let mid = self.alloc_mid();
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        let mut packet = req.template.clone();
        let token = if let Some(dl) = &req.download {
            // Later blocks are plain GETs (RFC 7959 §2.4); a token of their own keeps a
            // block fetch from being taken for the observation (RFC 7959 §3.4).
            packet.clear_option(6.into());
            packet.payload.clear();
            packet.clear_option(OPT_BLOCK1.into());
            packet.clear_option(OPT_SIZE1.into());
            let num = dl.body.len() >> (u32::from(dl.szx) + 4);
            let block = BlockOpt {
                num: u32::try_from(num).unwrap_or(block::MAX_NUM),
                more: false,
                szx: dl.szx,
            };
            packet.clear_option(OPT_BLOCK2.into());
            packet.add_option(OPT_BLOCK2.into(), block.encode());
            token_if_new
        } else {
            if let Some(up) = &req.upload {
                let size = size_of_szx(up.szx);
                let end = up.offset.saturating_add(size).min(up.body.len());
                packet.payload = up.body.get(up.offset..end).unwrap_or_default().to_vec();
                let block = BlockOpt {
                    num: u32::try_from(up.offset / size).unwrap_or(block::MAX_NUM),
                    more: end < up.body.len(),
                    szx: up.szx,
                };
                packet.clear_option(OPT_BLOCK1.into());
                packet.add_option(OPT_BLOCK1.into(), block.encode());
                if up.offset == 0 {
                    packet.clear_option(OPT_SIZE1.into());
                    packet.add_option(
                        OPT_SIZE1.into(),
                        block::encode_uint(u32::try_from(up.body.len()).unwrap_or(u32::MAX)),
                    );
                }
            }
            req.token.clone()
        };
        packet.set_token(token.clone());
        packet.header.message_id = mid;
        packet.header.set_type(if req.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        let peer = req.peer;
        let confirmable = req.confirmable;
        let Ok(bytes) = encode(&packet) else {
            // The template encoded when it was accepted; only block options changed.
            self.fail(now, id, FailReason::BlockMismatch);
            return;
        };
        if let Some(old) = req.flight.take() {
            if old.token != req.token {
                self.by_token.remove(&old.token);
            }
        }
        if token != req.token {
            self.by_token.insert(token.clone(), id);
        }
        let response_deadline = (!confirmable).then(|| later(now, self.config.response_timeout));
        req.flight = Some(Flight {
            token,
            mid,
            response_deadline,
        });
        if let Some(at) = response_deadline {
            self.timers.push(Reverse((at, TimerKey::ResponseWait(id))));
        }
        if confirmable {
            self.send_confirmable(now, peer, mid, bytes, Owner::Request(id));
        } else {
            self.transmits.push_back(Transmit { peer, bytes });
        }
    }

    fn send_confirmable(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        bytes: Vec<u8>,
        owner: Owner,
    ) {
        let base = self.config.ack_timeout;
        let factor = 1.0 + self.rng.next_f64() * (self.config.ack_random_factor - 1.0);
        let timeout = Duration::try_from_secs_f64(base.as_secs_f64() * factor)
            .ok()
            .filter(|t| *t >= base)
            .unwrap_or(base);
        let next_at = later(now, timeout);
        self.transmits.push_back(Transmit {
            peer,
            bytes: bytes.clone(),
        });
        self.retransmissions.insert(
            (peer, mid),
            Retransmission {
                bytes,
                retransmits: 0,
                timeout,
                next_at,
                owner,
            },
        );
        self.timers
            .push(Reverse((next_at, TimerKey::Retransmit(peer, mid))));
    }

    /// Ends a request with an event; an observation only loses the block fetch of a
    /// notification, not the observation itself.
    fn fail(&mut self, now: Instant, id: RequestId, reason: FailReason) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        if matches!(req.phase, Phase::Observing { .. }) {
            tracing::debug!(?id, ?reason, "notification block fetch failed");
            req.download = None;
            if let Some(f) = req.flight.take() {
                self.retransmissions.remove(&(req.peer, f.mid));
                if f.token != req.token {
                    self.by_token.remove(&f.token);
                }
            }
            return;
        }
        if let Some(req) = self.requests.remove(&id) {
            self.forget(now, req);
        }
        self.events.push_back(Event::RequestFailed {
            request_id: id,
            reason,
        });
    }

    /// Drops every trace of a request that was already removed from `requests`.
    fn forget(&mut self, now: Instant, req: OutRequest) {
        self.by_token.remove(&req.token);
        if let Some(f) = &req.flight {
            self.by_token.remove(&f.token);
            self.retransmissions.remove(&(req.peer, f.mid));
        }
        if let Some(peer) = req.slot_peer {
            if req.phase != Phase::Queued && !matches!(req.phase, Phase::Observing { .. }) {
                self.release_slot(now, peer);
                return;
            }
        }
        self.tidy_peer(req.peer);
    }

    fn release_slot(&mut self, now: Instant, peer: SocketAddr) {
        let next = {
            let Some(slots) = self.peers.get_mut(&peer) else {
                return;
            };
            slots.active = slots.active.saturating_sub(1);
            let mut next = None;
            while let Some(id) = slots.queue.pop_front() {
                if self.requests.contains_key(&id) {
                    next = Some(id);
                    slots.active += 1;
                    break;
                }
            }
            next
        };
        match next {
            Some(id) => self.start(now, id, peer),
            None => self.tidy_peer(peer),
        }
    }

    fn tidy_peer(&mut self, peer: SocketAddr) {
        let requests = &self.requests;
        if let Some(slots) = self.peers.get_mut(&peer) {
            slots.queue.retain(|id| requests.contains_key(id));
            if slots.active == 0 && slots.queue.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }

    /// The request's exchange is over; the NSTART slot goes to the next queued request.
    fn complete_exchange(&mut self, now: Instant, id: RequestId) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        if let Some(f) = req.flight.take() {
            self.retransmissions.remove(&(req.peer, f.mid));
            if f.token != req.token {
                self.by_token.remove(&f.token);
            }
        }
        let observing = matches!(req.phase, Phase::Observing { .. });
        if !observing {
            if let Some(req) = self.requests.remove(&id) {
                self.forget(now, req);
            }
        } else if let Some(peer) = req.slot_peer.take() {
            self.release_slot(now, peer);
        }
    }

    // ----- incoming datagrams ------------------------------------------------------

    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let Some(&[first, code, mid_hi, mid_lo]) = bytes.get(..4) else {
            return;
        };
        let mid = u16::from_be_bytes([mid_hi, mid_lo]);
        if first >> 6 != 1 {
            return; // unknown version: silently ignored (RFC 7252 §3)
        }
        let kind = (first >> 4) & 3;
        let reject = |this: &mut Self| {
            if kind == CON {
                this.transmits.push_back(Transmit {
                    peer,
                    bytes: empty_message(RST, mid),
                });
            }
        };
        let Ok(packet) = Packet::from_bytes(bytes) else {
            reject(self);
            return;
        };
        if code == 0 {
            if bytes.len() != 4 {
                reject(self); // an empty message has nothing after the header
                return;
            }
            match kind {
                ACK => self.on_empty_ack(now, peer, mid),
                RST => self.on_reset(now, peer, mid),
                _ => reject(self), // CoAP ping, or a meaningless empty NON
            }
            return;
        }
        match (packet.header.code, kind) {
            (MessageClass::Request(_), CON | 1) => self.on_request(now, peer, packet),
            (MessageClass::Response(_), ACK) => self.on_piggybacked(now, peer, packet),
            (MessageClass::Response(_), CON | 1) => self.on_separate(now, peer, packet),
            _ => reject(self),
        }
    }

    fn on_empty_ack(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(r) = self.retransmissions.remove(&(peer, mid)) else {
            return;
        };
        if let Owner::Request(id) = r.owner {
            let deadline = later(now, self.config.response_timeout);
            if let Some(f) = self.requests.get_mut(&id).and_then(|r| r.flight.as_mut()) {
                if f.mid == mid {
                    f.response_deadline = Some(deadline);
                    self.timers
                        .push(Reverse((deadline, TimerKey::ResponseWait(id))));
                }
            }
        }
    }

    fn on_reset(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(r) = self.retransmissions.remove(&(peer, mid)) else {
            return;
        };
        if let Owner::Request(id) = r.owner {
            self.fail(now, id, FailReason::Reset);
        }
    }

    fn on_piggybacked(&mut self, now: Instant, peer: SocketAddr, packet: Packet) {
        let key = (peer, packet.header.message_id);
        let Some(Retransmission {
            owner: Owner::Request(id),
            ..
        }) = self.retransmissions.get(&key)
        else {
            if let Some(Retransmission {
                owner: Owner::Response,
                ..
            }) = self.retransmissions.get(&key)
            {
                self.retransmissions.remove(&key); // a peer ACKing with a code: accept
            }
            return;
        };
        let id = *id;
        let token_matches = self
            .requests
            .get(&id)
            .and_then(|r| r.flight.as_ref())
            .is_some_and(|f| f.token == packet.get_token());
        if !token_matches {
            tracing::debug!(%peer, "ACK with a foreign token ignored");
            return;
        }
        self.retransmissions.remove(&key);
        self.on_response(now, id, peer, packet);
    }

    fn on_separate(&mut self, now: Instant, peer: SocketAddr, packet: Packet) {
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let key = (peer, packet.header.message_id);
        if let Some(reply) = self.dedup.get(&key) {
            if let Reply::Resend(bytes) = reply {
                self.transmits.push_back(Transmit {
                    peer,
                    bytes: bytes.clone(),
                });
            }
            return;
        }
        let matched = self.by_token.get(packet.get_token()).copied().filter(|id| {
            self.requests.get(id).is_some_and(|r| {
                let main = r.token == packet.get_token();
                let observing = matches!(r.phase, Phase::Observing { .. });
                (observing && main)
                    || (r.peer == peer
                        && r.flight
                            .as_ref()
                            .is_some_and(|f| f.token == packet.get_token()))
            })
        });
        let reply = match (matched.is_some(), confirmable) {
            (true, true) => Reply::Resend(empty_message(ACK, key.1)),
            (false, true) => Reply::Resend(empty_message(RST, key.1)),
            (false, false) if self.config.reset_unmatched_non => {
                Reply::Resend(empty_message(RST, key.1))
            }
            _ => Reply::Nothing,
        };
        let lifetime = if confirmable {
            self.config.exchange_lifetime
        } else {
            self.config.non_lifetime
        };
        if self
            .dedup
            .insert(now, key, lifetime, reply.clone(), self.evictable_until(now))
            .is_err()
        {
            tracing::warn!(%peer, "dedup table full; response dropped");
            return;
        }
        if let Reply::Resend(bytes) = reply {
            self.transmits.push_back(Transmit { peer, bytes });
        }
        let Some(id) = matched else {
            return;
        };
        let is_notification = self.requests.get(&id).is_some_and(|r| {
            r.token == packet.get_token() && matches!(r.phase, Phase::Observing { .. })
        });
        if is_notification {
            self.on_notification(now, id, peer, packet);
        } else {
            // A separate response also proves our request arrived.
            if let Some(f) = self.requests.get(&id).and_then(|r| r.flight.as_ref()) {
                self.retransmissions.remove(&(peer, f.mid));
            }
            self.on_response(now, id, peer, packet);
        }
    }

    /// The response to the message in flight: advance the block transfer or finish.
    fn on_response(&mut self, now: Instant, id: RequestId, peer: SocketAddr, packet: Packet) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        if let Some(f) = req.flight.take() {
            if f.token != req.token {
                self.by_token.remove(&f.token);
            }
        }
        let continue_code = packet.header.code == MessageClass::Response(ResponseType::Continue);
        // Block1 upload: 2.31 asks for the next block.
        if let Some(up) = req.upload.as_mut() {
            if continue_code {
                let Some(Ok(b)) = block_of(&packet, OPT_BLOCK1) else {
                    self.fail(now, id, FailReason::BlockMismatch);
                    return;
                };
                let acked_end = ((b.num as usize) + 1).saturating_mul(b.size());
                if b.size() > size_of_szx(up.szx)
                    || acked_end <= up.offset
                    || acked_end >= up.body.len()
                {
                    self.fail(now, id, FailReason::BlockMismatch);
                    return;
                }
                up.offset = acked_end;
                up.szx = b.szx;
                self.send_flight(now, id);
                return;
            }
            req.upload = None;
        }
        // Block2 download.
        let block2 = match block_of(&packet, OPT_BLOCK2) {
            Some(Ok(b)) if is_success(packet.header.code) => Some(b),
            Some(Err(_)) => {
                self.fail(now, id, FailReason::BlockMismatch);
                return;
            }
            _ => None,
        };
        if let Some(b) = block2 {
            let (have, first_purpose) = match &req.download {
                Some(dl) => (dl.body.len(), dl.purpose),
                None => (0, Purpose::Response),
            };
            if b.offset() != have {
                self.fail(now, id, FailReason::BlockMismatch);
                return;
            }
            if have.saturating_add(packet.payload.len()) > self.config.max_body {
                self.fail(now, id, FailReason::BodyTooLarge);
                return;
            }
            if b.more && packet.payload.len() != b.size() {
                self.fail(now, id, FailReason::BlockMismatch);
                return;
            }
            let szx = b.szx.min(self.config.preferred_szx);
            let dl = req.download.get_or_insert_with(|| Download {
                first: packet.clone(),
                body: Vec::new(),
                szx,
                purpose: first_purpose,
            });
            dl.body.extend_from_slice(&packet.payload);
            dl.szx = szx;
            if b.more {
                self.send_flight(now, id);
                return;
            }
        }
        let (packet, purpose) = match req.download.take() {
            Some(dl) => {
                let mut p = dl.first;
                p.payload = dl.body;
                p.clear_option(OPT_BLOCK2.into());
                p.clear_option(OPT_SIZE2.into());
                (p, dl.purpose)
            }
            None => (packet, Purpose::Response),
        };
        match purpose {
            Purpose::Notification(sequence) => {
                self.events.push_back(Event::Notification {
                    request_id: id,
                    peer,
                    packet,
                    sequence,
                });
            }
            Purpose::Response => {
                let observed = req.template.get_observe_value() == Some(Ok(0))
                    && is_success(packet.header.code);
                if let (true, Some(Ok(seq))) = (observed, packet.get_observe_value()) {
                    req.phase = Phase::Observing {
                        last_seq: seq,
                        last_at: now,
                    };
                }
                self.events.push_back(Event::Response {
                    request_id: id,
                    peer,
                    packet,
                });
                self.complete_exchange(now, id);
            }
        }
    }

    fn on_notification(&mut self, now: Instant, id: RequestId, peer: SocketAddr, packet: Packet) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        let Phase::Observing { last_seq, last_at } = req.phase else {
            return;
        };
        let seq = match packet.get_observe_value() {
            Some(Ok(seq)) if is_success(packet.header.code) => seq,
            _ => {
                if let Some(req) = self.requests.remove(&id) {
                    self.forget(now, req);
                }
                self.events.push_back(Event::ObservationCancelled {
                    request_id: id,
                    peer,
                    reason: CancelReason::Ended,
                    packet,
                });
                return;
            }
        };
        if !is_fresh(last_seq, last_at, seq, now, self.config.observe_freshness) {
            tracing::debug!(?id, seq, last_seq, "stale notification dropped");
            return;
        }
        req.phase = Phase::Observing {
            last_seq: seq,
            last_at: now,
        };
        if req.peer != peer {
            tracing::debug!(?id, old = %req.peer, new = %peer, "observed device moved");
            if let Some(f) = req.flight.take() {
                self.retransmissions.remove(&(req.peer, f.mid));
                if f.token != req.token {
                    self.by_token.remove(&f.token);
                }
            }
            req.download = None;
            req.peer = peer;
        }
        match block_of(&packet, OPT_BLOCK2) {
            Some(Ok(b)) if b.more && b.num == 0 && packet.payload.len() == b.size() => {
                // A newer notification supersedes a fetch still running for an older one.
                if let Some(f) = req.flight.take() {
                    self.retransmissions.remove(&(req.peer, f.mid));
                    if f.token != req.token {
                        self.by_token.remove(&f.token);
                    }
                }
                let szx = b.szx.min(self.config.preferred_szx);
                req.download = Some(Download {
                    body: packet.payload.clone(),
                    first: packet,
                    szx,
                    purpose: Purpose::Notification(seq),
                });
                self.send_flight(now, id);
            }
            Some(Ok(b)) if b.more || b.num != 0 => {
                tracing::debug!(?id, "malformed block-wise notification dropped");
            }
            Some(Err(_)) => tracing::debug!(?id, "notification with bad Block2 dropped"),
            _ => self.events.push_back(Event::Notification {
                request_id: id,
                peer,
                packet,
                sequence: seq,
            }),
        }
    }

    // ----- incoming requests -------------------------------------------------------

    fn on_request(&mut self, now: Instant, peer: SocketAddr, mut packet: Packet) {
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let key = (peer, packet.header.message_id);
        match self.dedup.get(&key) {
            Some(Reply::Resend(bytes)) => {
                if confirmable {
                    self.transmits.push_back(Transmit {
                        peer,
                        bytes: bytes.clone(),
                    });
                }
                return;
            }
            Some(_) => return,
            None => {}
        }
        let lifetime = if confirmable {
            self.config.exchange_lifetime
        } else {
            self.config.non_lifetime
        };
        if self
            .dedup
            .insert(
                now,
                key,
                lifetime,
                Reply::Nothing,
                self.evictable_until(now),
            )
            .is_err()
        {
            tracing::warn!(%peer, "dedup table full; request dropped");
            return;
        }
        let block2 = block_of(&packet, OPT_BLOCK2);
        let block1 = match (block_of(&packet, OPT_BLOCK1), block2) {
            (Some(Err(_)), _) | (_, Some(Err(_))) => {
                self.reply_direct(
                    now,
                    peer,
                    &packet,
                    ResponseType::BadRequest,
                    b"invalid block option (SZX 7 is reserved)",
                    &[],
                );
                return;
            }
            (Some(Ok(b)), _) => Some(b),
            _ => None,
        };
        let mut echo = None;
        if let Some(b) = block1 {
            let size1 = packet
                .get_first_option(OPT_SIZE1.into())
                .and_then(|v| block::decode_uint(v));
            let limits = Limits {
                preferred_szx: self.config.preferred_szx,
                max_body: self.config.max_body,
                lifetime: self.config.exchange_lifetime,
            };
            let akey = AssemblyKey::new(peer, &packet);
            match self
                .assemblies
                .offer(now, akey, b, &packet.payload, size1, &limits)
            {
                Block1Outcome::Continue(answer) => {
                    self.reply_direct(
                        now,
                        peer,
                        &packet,
                        ResponseType::Continue,
                        b"",
                        &[(OPT_BLOCK1, answer.encode())],
                    );
                    return;
                }
                Block1Outcome::Reject(code, diagnostic, size1) => {
                    let extra: Vec<(u16, Vec<u8>)> = size1
                        .map(|s| (OPT_SIZE1, block::encode_uint(s)))
                        .into_iter()
                        .collect();
                    self.reply_direct(now, peer, &packet, code, diagnostic.as_bytes(), &extra);
                    return;
                }
                Block1Outcome::Complete(body, b) => {
                    packet.payload = body;
                    packet.clear_option(OPT_BLOCK1.into());
                    packet.clear_option(OPT_SIZE1.into());
                    echo = Some(b);
                }
            }
        }
        if self.incoming.len() >= self.config.max_incoming {
            self.reply_direct(
                now,
                peer,
                &packet,
                ResponseType::ServiceUnavailable,
                b"too many requests in progress",
                &[],
            );
            return;
        }
        let id = IncomingId(self.next_id());
        let ack_at = confirmable.then(|| later(now, self.config.piggyback_delay));
        let expires = later(now, self.config.exchange_lifetime);
        self.incoming.insert(
            id,
            Incoming {
                peer,
                mid: key.1,
                token: packet.get_token().to_vec(),
                confirmable,
                acked: false,
                ack_at,
                expires,
                block1: echo,
            },
        );
        if let Some(at) = ack_at {
            self.timers.push(Reverse((at, TimerKey::Incoming(id))));
        }
        self.timers.push(Reverse((expires, TimerKey::Incoming(id))));
        self.dedup.set(&key, Reply::Pending(id));
        self.events.push_back(Event::Request { id, peer, packet });
    }

    /// Answers a request at once from inside the endpoint (block-wise steps and errors),
    /// remembering the answer for duplicates.
    fn reply_direct(
        &mut self,
        _now: Instant,
        peer: SocketAddr,
        request: &Packet,
        code: ResponseType,
        payload: &[u8],
        options: &[(u16, Vec<u8>)],
    ) {
        let confirmable = request.header.get_type() == MessageType::Confirmable;
        let mut p = Packet::new();
        p.header.code = MessageClass::Response(code);
        p.set_token(request.get_token().to_vec());
        for (n, v) in options {
            p.add_option((*n).into(), v.clone());
        }
        p.payload = payload.to_vec();
        if confirmable {
            p.header.set_type(MessageType::Acknowledgement);
            p.header.message_id = request.header.message_id;
        } else {
            p.header.set_type(MessageType::NonConfirmable);
            p.header.message_id = self.alloc_mid();
        }
        let Ok(bytes) = encode(&p) else {
            return;
        };
        let key = (peer, request.header.message_id);
        self.dedup.set(
            &key,
            if confirmable {
                Reply::Resend(bytes.clone())
            } else {
                Reply::Nothing
            },
        );
        self.transmits.push_back(Transmit { peer, bytes });
    }

    /// Answers a request delivered as `Event::Request`: piggybacked on the ACK if the
    /// empty ACK has not gone out yet, otherwise as a separate confirmable response.
    /// Type, message id and token are filled in here.
    pub fn respond(
        &mut self,
        now: Instant,
        id: IncomingId,
        mut response: Packet,
    ) -> Result<(), RespondError> {
        let inc = self
            .incoming
            .get(&id)
            .ok_or(RespondError::UnknownIncoming)?;
        response.set_token(inc.token.clone());
        if let Some(b) = inc.block1 {
            if response.get_first_option(OPT_BLOCK1.into()).is_none() {
                response.add_option(OPT_BLOCK1.into(), BlockOpt { more: false, ..b }.encode());
            }
        }
        let piggyback = inc.confirmable && !inc.acked;
        let separate = inc.confirmable && inc.acked;
        let (peer, req_mid) = (inc.peer, inc.mid);
        let mid = if piggyback { req_mid } else { self.alloc_mid() };
        response.header.message_id = mid;
        response.header.set_type(if piggyback {
            MessageType::Acknowledgement
        } else if separate {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        let bytes = encode(&response).map_err(RespondError::Encode)?;
        self.incoming.remove(&id);
        let key = (peer, req_mid);
        if piggyback {
            self.dedup.set(&key, Reply::Resend(bytes.clone()));
            self.transmits.push_back(Transmit { peer, bytes });
        } else if separate {
            self.dedup
                .set(&key, Reply::Resend(empty_message(ACK, req_mid)));
            self.send_confirmable(now, peer, mid, bytes, Owner::Response);
        } else {
            self.dedup.set(&key, Reply::Nothing);
            self.transmits.push_back(Transmit { peer, bytes });
        }
        Ok(())
    }

    /// Sends a notification of an observation we serve (RFC 7641 §4.2): a response with
    /// the observer's `token`, outside any pending exchange. A confirmable one is
    /// retransmitted like any confirmable message. Returns the message id so that the
    /// caller can recognise an RST to it (RFC 7641 §3.6: the observer lost interest).
    /// Type, message id and token are filled in here.
    pub fn notify(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: &[u8],
        mut notification: Packet,
        confirmable: bool,
    ) -> Result<u16, RespondError> {
        notification.set_token(token.to_vec());
        let mid = self.alloc_mid();
        notification.header.message_id = mid;
        notification.header.set_type(if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        let bytes = encode(&notification).map_err(RespondError::Encode)?;
        if confirmable {
            self.send_confirmable(now, peer, mid, bytes, Owner::Response);
        } else {
            self.transmits.push_back(Transmit { peer, bytes });
        }
        Ok(mid)
    }

    // ----- timers ------------------------------------------------------------------

    fn timer_live(&self, at: Instant, key: TimerKey) -> bool {
        match key {
            TimerKey::Retransmit(peer, mid) => self
                .retransmissions
                .get(&(peer, mid))
                .is_some_and(|r| r.next_at == at),
            TimerKey::ResponseWait(id) => self
                .requests
                .get(&id)
                .and_then(|r| r.flight.as_ref())
                .is_some_and(|f| f.response_deadline == Some(at)),
            TimerKey::Incoming(id) => self
                .incoming
                .get(&id)
                .is_some_and(|i| i.expires == at || (!i.acked && i.ack_at == Some(at))),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.dedup.expire(now);
        self.assemblies.expire(now);
        // Bounded: each pass pops one entry, and firing pushes only entries later than now.
        while let Some(Reverse((at, key))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.timer_live(at, key) {
                continue;
            }
            match key {
                TimerKey::Retransmit(peer, mid) => self.on_retransmit_timer(now, peer, mid),
                TimerKey::ResponseWait(id) => self.fail(now, id, FailReason::Timeout),
                TimerKey::Incoming(id) => self.on_incoming_timer(now, id),
            }
        }
    }

    fn on_retransmit_timer(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let max = self.config.max_retransmit;
        let Some(r) = self.retransmissions.get_mut(&(peer, mid)) else {
            return;
        };
        if r.retransmits >= max {
            if let Some(r) = self.retransmissions.remove(&(peer, mid)) {
                match r.owner {
                    Owner::Request(id) => self.fail(now, id, FailReason::Timeout),
                    Owner::Response => tracing::debug!(%peer, "separate response never ACKed"),
                }
            }
            return;
        }
        r.retransmits += 1;
        self.retransmitted += 1;
        r.timeout = r.timeout.checked_mul(2).unwrap_or(r.timeout);
        // From the scheduled time, so a late wake-up does not stretch the schedule.
        r.next_at = later(r.next_at, r.timeout).max(now);
        let (at, bytes) = (r.next_at, r.bytes.clone());
        self.timers
            .push(Reverse((at, TimerKey::Retransmit(peer, mid))));
        self.transmits.push_back(Transmit { peer, bytes });
    }

    fn on_incoming_timer(&mut self, now: Instant, id: IncomingId) {
        let Some(inc) = self.incoming.get_mut(&id) else {
            return;
        };
        if inc.expires <= now {
            tracing::debug!(?id, "application never answered; request forgotten");
            self.incoming.remove(&id);
            return;
        }
        if !inc.acked && inc.ack_at.is_some_and(|at| at <= now) {
            inc.acked = true;
            inc.ack_at = None;
            let (peer, mid) = (inc.peer, inc.mid);
            let bytes = empty_message(ACK, mid);
            self.dedup.set(&(peer, mid), Reply::Resend(bytes.clone()));
            self.transmits.push_back(Transmit { peer, bytes });
        }
    }

    // ----- ids ---------------------------------------------------------------------

    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn alloc_mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    /// Eight random bytes (RFC 7252 §5.3.1 asks for enough randomness to resist
    /// spoofing), unique among the tokens we are waiting on.
    fn fresh_token(&mut self) -> Vec<u8> {
        let mut token = self.rng.next_u64().to_be_bytes().to_vec();
        for _ in 0..8 {
            if !self.by_token.contains_key(&token) {
                break;
            }
            token = self.rng.next_u64().to_be_bytes().to_vec();
        }
        token
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use coap_lite::{CoapOption, RequestType};

    fn notification(token: &[u8], seq: u32, mid: u16) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.set_type(MessageType::NonConfirmable);
        p.header.code = MessageClass::Response(ResponseType::Content);
        p.header.message_id = mid;
        p.set_token(token.to_vec());
        p.set_observe_value(seq);
        p.payload = b"42".to_vec();
        p.to_bytes().unwrap_or_default()
    }

    fn observe_get() -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(RequestType::Get);
        p.add_option(CoapOption::UriPath, b"3".to_vec());
        p.set_observe_value(0);
        p
    }

    #[test]
    fn restored_observation_matches_notifications_and_unknown_tokens_do_not() {
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:5683".parse().unwrap_or_else(|_| unreachable!());
        let moved: SocketAddr = "127.0.0.1:6000".parse().unwrap_or_else(|_| unreachable!());
        let mut ep = Endpoint::new(Config::default(), 7);
        let token = vec![1, 2, 3, 4, 5, 6, 7, 8];
        let id = ep
            .restore_observation(now, peer, token.clone(), observe_get(), None)
            .expect("restore");
        assert_eq!(ep.token(id), Some(token.as_slice()));
        assert!(ep.poll_transmit().is_none(), "restoring sends nothing");
        // Any sequence number is fresh after a restart, and the device may have moved.
        ep.handle_datagram(now, moved, &notification(&token, 5, 100));
        match ep.poll_event() {
            Some(Event::Notification {
                request_id,
                peer: from,
                sequence,
                ..
            }) => {
                assert_eq!((request_id, from, sequence), (id, moved, 5));
            }
            other => panic!("expected a notification, got {other:?}"),
        }
        // Ordering applies from then on: an older number is dropped.
        ep.handle_datagram(now, moved, &notification(&token, 4, 101));
        assert!(ep.poll_event().is_none());
        // A token that was not restored is still refused with RST.
        ep.handle_datagram(now, moved, &notification(&[9; 8], 1, 102));
        assert!(ep.poll_event().is_none());
        let rst = ep.poll_transmit().expect("RST for an unknown token");
        assert_eq!(rst.bytes.first().map(|b| (b >> 4) & 3), Some(RST));
        // The same token cannot be restored twice; cancel forgets it.
        assert!(ep
            .restore_observation(now, peer, token.clone(), observe_get(), Some(1))
            .is_err());
        assert!(ep.cancel(now, id));
        assert_eq!(ep.sizes().tokens, 0);
    }

    #[test]
    fn restore_with_known_sequence_keeps_ordering() {
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:5683".parse().unwrap_or_else(|_| unreachable!());
        let mut ep = Endpoint::new(Config::default(), 7);
        let token = vec![7; 4];
        ep.restore_observation(now, peer, token.clone(), observe_get(), Some(10))
            .expect("restore");
        ep.handle_datagram(now, peer, &notification(&token, 9, 1));
        assert!(ep.poll_event().is_none(), "older than the stored sequence");
        ep.handle_datagram(now, peer, &notification(&token, 11, 2));
        assert!(matches!(
            ep.poll_event(),
            Some(Event::Notification { sequence: 11, .. })
        ));
    }
}
