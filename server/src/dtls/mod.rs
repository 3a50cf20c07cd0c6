//! The DTLS 1.2 server side of CoAPS (RFC 6347, as LwM2M's transport binding asks for it),
//! on the system OpenSSL through the `openssl` crate.
//!
//! [`DtlsServer`] is driven like the CoAP endpoint: datagrams and the time go in
//! ([`handle_datagram`](DtlsServer::handle_datagram),
//! [`handle_timeout`](DtlsServer::handle_timeout)), datagrams to send and events come out
//! ([`poll_transmit`](DtlsServer::poll_transmit), [`poll_event`](DtlsServer::poll_event)).
//! It owns no socket. OpenSSL keeps its own retransmission clock, so the timers it reports
//! are real time.
//!
//! - Sessions are keyed by peer address. Only a ClientHello may open one, and only after
//!   the stateless cookie exchange (RFC 6347 §4.2.1; the first hello answered by `hello`,
//!   the second checked by `DTLSv1_listen`): a spoofed source gets one
//!   HelloVerifyRequest, no larger than its ClientHello, and costs no memory.
//! - Bounds: half-open handshakes in all, sessions per source address and in all; a
//!   handshake that does not finish in time and a session idle too long are dropped.
//!   (A wrong PSK produces no alert the server sees: OpenSSL drops the records that fail
//!   their MAC, so only the handshake deadline ends such a session.)
//! - Cipher suites are listed explicitly: the CCM8 ones LwM2M mandates are not in
//!   OpenSSL's defaults.
//!
//! - [`DtlsClient`]: the client side, for the simulated devices and the tests.
//! - `ffi`: the OpenSSL calls the crate does not wrap. [`pipe`]: the in-memory transport.
//!   `hello`: the first ClientHello's HelloVerifyRequest, written without OpenSSL.

mod client;
mod ffi;
mod hello;
pub mod pipe;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode, SslOptions,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};

pub use client::{DtlsClient, DtlsClientContext};
use pipe::Pipe;

/// The cipher suites offered, in order of preference: the PSK and certificate suites of
/// LwM2M (CCM_8 mandatory, CBC-SHA256 for 1.0 clients), then their GCM variants.
pub const CIPHER_LIST: &str = "PSK-AES128-CCM8:PSK-AES128-GCM-SHA256:PSK-AES128-CBC-SHA256:\
ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA256";

/// Largest datagram read: a DTLS record never spans datagrams.
const MAX_DATAGRAM: usize = 16_384 + 64;
/// DTLS record content types (RFC 6347 §4.1).
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;

/// Limits and timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsConfig {
    /// Path MTU assumed for handshake flights (OpenSSL cannot ask an in-memory BIO).
    pub mtu: u32,
    /// Handshakes past the cookie exchange and not yet finished, in all.
    pub max_half_open: usize,
    /// Sessions (half-open or established) from one IP address: a carrier NAT puts many
    /// devices behind one, so this is a bound against one host, not one device.
    pub max_sessions_per_ip: usize,
    pub max_sessions: usize,
    /// A handshake not finished this long after its cookie was verified is dropped.
    pub handshake_timeout: Duration,
    /// An established session without a datagram this long is dropped; the device
    /// resumes or shakes hands again (44 KB a session rules out keeping them all).
    pub idle_timeout: Duration,
    /// First retransmission timeout of a handshake flight (RFC 6347: 1 s).
    pub initial_retransmit: Duration,
    /// Sessions kept for resumption (an abbreviated handshake for a device waking from
    /// sleep); a few hundred bytes each, unlike a live session.
    pub session_cache_size: usize,
    /// How long a session may be resumed after its handshake.
    pub resumption_lifetime: Duration,
    /// The server's certificate chain and key (PEM files), for the certificate suites.
    pub certificate: Option<std::path::PathBuf>,
    pub private_key: Option<std::path::PathBuf>,
    /// CA certificates (PEM) that device certificates must chain to; without it, no
    /// device certificate is asked for.
    pub trust_store: Option<std::path::PathBuf>,
}

impl Default for DtlsConfig {
    fn default() -> DtlsConfig {
        DtlsConfig {
            mtu: 1200,
            max_half_open: 1024,
            max_sessions_per_ip: 4096,
            max_sessions: 100_000,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            initial_retransmit: Duration::from_secs(1),
            session_cache_size: 100_000,
            resumption_lifetime: Duration::from_secs(86_400),
            certificate: None,
            private_key: None,
            trust_store: None,
        }
    }
}

/// Where pre-shared keys come from: the credential store.
pub trait PskLookup: Send + Sync {
    /// The key of a PSK identity, if it has one.
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>>;
}

impl<F: Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync> PskLookup for F {
    fn psk(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self(identity)
    }
}

/// Who the peer proved to be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// The PSK identity it used.
    Psk(Vec<u8>),
    /// A certificate that chains to the trust store, by its subject's common name.
    Certificate { common_name: String },
    /// A certificate suite without a client certificate: encrypted, but nobody.
    Anonymous,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent close_notify.
    Closed,
    /// A fatal alert or a protocol error.
    Failed,
    /// No datagram within the idle timeout.
    Idle,
    /// Replaced by a new handshake from the same address.
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// A handshake finished; `resumed` when it was the abbreviated one of a cached
    /// session.
    Established {
        peer: SocketAddr,
        identity: PeerIdentity,
        resumed: bool,
    },
    /// Application data (a CoAP message) from an established session.
    Data { peer: SocketAddr, payload: Vec<u8> },
    /// An established session ended.
    Closed {
        peer: SocketAddr,
        reason: CloseReason,
    },
}

/// Why the server could not be built, or a datagram could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
    #[error("no established DTLS session with {0}")]
    NoSession(SocketAddr),
    #[error("DTLS write failed: {0}")]
    Write(String),
    #[error("DTLS configuration: {0}")]
    Config(String),
}

/// Counts for tests and metrics: each must stay within its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DtlsSizes {
    pub sessions: usize,
    pub half_open: usize,
    pub deadlines: usize,
    pub addresses: usize,
}

struct Session {
    stream: SslStream<Pipe>,
    established: bool,
    created: Instant,
    last_seen: Instant,
    /// This session's entry in `deadlines`.
    deadline: Option<Instant>,
}

/// What sessions produce besides their own state, kept apart from the session map so
/// that one lookup of the peer serves all the work of a datagram or of a send (a lookup
/// hashes the address: several per exchange were a visible share of a round trip).
struct Outbox {
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<DtlsEvent>,
    deadlines: BTreeSet<(Instant, SocketAddr)>,
    /// Handshakes past the cookie exchange and not finished.
    half_open: usize,
    /// Where records are opened: one buffer for all, not 16 KiB zeroed per datagram.
    read_buf: Box<[u8]>,
}

impl Session {
    /// Queues what OpenSSL wrote for this session.
    fn flush(&mut self, peer: SocketAddr, out: &mut Outbox) {
        for d in self.stream.get_mut().drain_outgoing() {
            out.transmits.push_back((peer, d));
        }
    }

    /// Lets OpenSSL consume what the peer sent (handshake progress, or records of data)
    /// and queues what it wrote. Says why the session must end, if it must.
    fn drive(&mut self, peer: SocketAddr, out: &mut Outbox) -> Option<CloseReason> {
        let was_established = self.established;
        if !self.established {
            match self.stream.accept() {
                Ok(()) => {
                    self.established = true;
                    out.half_open = out.half_open.saturating_sub(1);
                    let identity = identity_of(self.stream.ssl());
                    let resumed = self.stream.ssl().session_reused();
                    tracing::debug!(%peer, resumed, "DTLS session established");
                    out.events.push_back(DtlsEvent::Established {
                        peer,
                        identity,
                        resumed,
                    });
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "DTLS handshake failed");
                    self.flush(peer, out);
                    return Some(CloseReason::Failed);
                }
            }
        }
        let mut closed = None;
        // Bounded by the datagrams queued on the pipe.
        while self.established {
            match self.stream.ssl_read(&mut out.read_buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.events.push_back(DtlsEvent::Data {
                        peer,
                        payload: out.read_buf.get(..n).unwrap_or_default().to_vec(),
                    });
                    // A read that finds nothing costs about what one that opens a record
                    // does: none is made when nothing can be left. Right after the
                    // handshake, records OpenSSL kept during it may wait where neither
                    // check sees them, so there reads go on until one finds nothing.
                    if was_established
                        && !self.stream.get_ref().has_incoming()
                        && !ffi::has_pending(self.stream.ssl())
                    {
                        break;
                    }
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    closed = Some(CloseReason::Closed);
                    break;
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => break,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "DTLS record refused");
                    // A record that fails its MAC is dropped by OpenSSL without an
                    // error; anything else is fatal.
                    closed = Some(CloseReason::Failed);
                    break;
                }
            }
        }
        self.flush(peer, out);
        closed
    }

    /// Files the session under its next deadline: a retransmission, the end of its
    /// handshake time, or its idle limit. A session already filed no later keeps its
    /// place: the early deadline fires, finds the session not due (`handle_timeout`
    /// checks the real limits) and files it again, so a busy session's records cost no
    /// index change each (the idle limit moves with every record).
    fn reschedule(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        config: &DtlsConfig,
        deadlines: &mut BTreeSet<(Instant, SocketAddr)>,
    ) {
        let limit = if self.established {
            self.last_seen + config.idle_timeout
        } else {
            self.created + config.handshake_timeout
        };
        let retransmit = ffi::timeout(self.stream.ssl()).map(|d| now + d);
        let next = retransmit.map_or(limit, |r| r.min(limit));
        if self.deadline.is_some_and(|filed| filed <= next) {
            return;
        }
        if let Some(old) = self.deadline.take() {
            deadlines.remove(&(old, peer));
        }
        self.deadline = Some(next);
        deadlines.insert((next, peer));
    }
}

/// The per-process secret the cookies are keyed with.
struct CookieKey(PKey<openssl::pkey::Private>);

fn peer_index() -> &'static openssl::ex_data::Index<Ssl, SocketAddr> {
    static INDEX: OnceLock<openssl::ex_data::Index<Ssl, SocketAddr>> = OnceLock::new();
    INDEX.get_or_init(|| {
        // Allocating an ex-data index fails only when OpenSSL is out of memory at start.
        #[allow(clippy::expect_used)]
        Ssl::new_ex_index().expect("OpenSSL ex-data index")
    })
}

/// HMAC-SHA256 of the peer's address, cut to 16 bytes: a cookie only this server can
/// make, for this address only.
fn cookie(key: &CookieKey, peer: Option<&SocketAddr>, out: &mut [u8]) -> Result<usize, ErrorStack> {
    let mut signer = Signer::new(MessageDigest::sha256(), &key.0)?;
    match peer.map(SocketAddr::ip) {
        Some(IpAddr::V4(ip)) => signer.update(&ip.octets())?,
        Some(IpAddr::V6(ip)) => signer.update(&ip.octets())?,
        None => {}
    }
    if let Some(p) = peer {
        signer.update(&p.port().to_be_bytes())?;
    }
    let mac = signer.sign_to_vec()?;
    let n = out.len().min(16).min(mac.len());
    out[..n].copy_from_slice(&mac[..n]);
    Ok(n)
}

/// Who the peer of an established session proved to be.
fn identity_of(ssl: &openssl::ssl::SslRef) -> PeerIdentity {
    if let Some(id) = ssl.psk_identity() {
        return PeerIdentity::Psk(id.to_vec());
    }
    let cn = ssl.peer_certificate().and_then(|c| {
        c.subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
    });
    match cn {
        Some(common_name) => PeerIdentity::Certificate { common_name },
        None => PeerIdentity::Anonymous,
    }
}

/// Whether a datagram is a DTLS record carrying a ClientHello: the only thing that may
/// open a session.
fn is_client_hello(d: &[u8]) -> bool {
    // Record header: type(1) version(2) epoch(2) seq(6) length(2); then msg_type.
    d.first() == Some(&HANDSHAKE) && d.get(13) == Some(&CLIENT_HELLO)
}

/// The DTLS server: sessions by peer, and what to send.
pub struct DtlsServer {
    config: DtlsConfig,
    ctx: SslContext,
    cookie_key: Arc<CookieKey>,
    sessions: HashMap<SocketAddr, Session>,
    per_ip: HashMap<IpAddr, usize>,
    out: Outbox,
}

impl std::fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsServer")
            .field("sessions", &self.sessions.len())
            .field("half_open", &self.out.half_open)
            .finish_non_exhaustive()
    }
}

impl DtlsServer {
    /// A server that accepts the PSK suites with keys from `psk`.
    pub fn new(config: DtlsConfig, psk: Arc<dyn PskLookup>) -> Result<DtlsServer, DtlsError> {
        let mut b = SslContextBuilder::new(SslMethod::dtls_server())?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        b.set_cipher_list(CIPHER_LIST)?;
        // Resumption through the server's own cache only, not session tickets: the cache
        // is bounded and can be emptied when credentials change, where a ticket would
        // keep working until its key rotated.
        b.set_options(
            SslOptions::COOKIE_EXCHANGE | SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET,
        );
        b.set_mode(SslMode::RELEASE_BUFFERS);
        b.set_session_id_context(b"lwm2m-server")?;
        b.set_session_cache_mode(SslSessionCacheMode::SERVER);
        b.set_session_cache_size(i32::try_from(config.session_cache_size).unwrap_or(i32::MAX));
        b.set_psk_server_callback(move |_ssl, identity, out| {
            let Some(key) = identity.and_then(|id| psk.psk(id)) else {
                // No key: the handshake fails (OpenSSL answers unknown_psk_identity).
                return Ok(0);
            };
            if key.len() > out.len() {
                return Ok(0);
            }
            out[..key.len()].copy_from_slice(&key);
            Ok(key.len())
        });
        match (&config.certificate, &config.private_key) {
            (Some(cert), Some(key)) => {
                b.set_certificate_chain_file(cert)?;
                b.set_private_key_file(key, SslFiletype::PEM)?;
                b.check_private_key()?;
            }
            (None, None) => {}
            _ => {
                return Err(DtlsError::Config(
                    "a certificate needs its private key, and a key its certificate".into(),
                ))
            }
        }
        if let Some(ca) = &config.trust_store {
            b.set_ca_file(ca)?;
            // Asked for in the certificate suites only (PSK suites send no request). A
            // certificate that does not chain to the store fails the handshake; none at
            // all leaves the peer anonymous, which may register as nobody.
            b.set_verify(SslVerifyMode::PEER);
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|_| DtlsError::Write("no random source for the cookie secret".into()))?;
        let key = Arc::new(CookieKey(PKey::hmac(&secret)?));
        let cookie_key = key.clone();
        let k = key.clone();
        b.set_cookie_generate_cb(move |ssl, out| cookie(&k, ssl.ex_data(*peer_index()), out));
        b.set_cookie_verify_cb(move |ssl, presented| {
            let mut expected = [0u8; 16];
            match cookie(&key, ssl.ex_data(*peer_index()), &mut expected) {
                Ok(n) => n == presented.len() && openssl::memcmp::eq(&expected[..n], presented),
                Err(_) => false,
            }
        });
        let ctx = b.build();
        ffi::set_session_lifetime(&ctx, config.resumption_lifetime);
        Ok(DtlsServer {
            config,
            ctx,
            cookie_key,
            sessions: HashMap::new(),
            per_ip: HashMap::new(),
            out: Outbox {
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                deadlines: BTreeSet::new(),
                half_open: 0,
                read_buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            },
        })
    }

    pub fn config(&self) -> &DtlsConfig {
        &self.config
    }

    pub fn sizes(&self) -> DtlsSizes {
        DtlsSizes {
            sessions: self.sessions.len(),
            half_open: self.out.half_open,
            deadlines: self.out.deadlines.len(),
            addresses: self.per_ip.len(),
        }
    }

    /// Forgets every session kept for resumption: after a change of credentials, no
    /// device may come back with a key it no longer has.
    pub fn forget_resumable_sessions(&self) {
        ffi::flush_sessions(&self.ctx);
    }

    /// Whether `peer` has an established session.
    pub fn is_established(&self, peer: &SocketAddr) -> bool {
        self.sessions.get(peer).is_some_and(|s| s.established)
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.out.events.pop_front()
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.out.deadlines.first().map(|(t, _)| *t)
    }

    /// A datagram from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        if data.len() > MAX_DATAGRAM {
            return;
        }
        if let Some(s) = self.sessions.get_mut(&peer) {
            // A new ClientHello (epoch 0) on an established session: the device lost its
            // state (rebooted, woke from sleep) and shakes hands again. The old session
            // goes only once the new hello passed the cookie exchange, so a spoofed hello
            // cannot end a device's session.
            let fresh_hello =
                s.established && is_client_hello(data) && data.get(3..5) == Some(&[0, 0]);
            if !fresh_hello {
                s.last_seen = now;
                s.stream.get_mut().push(data);
                match s.drive(peer, &mut self.out) {
                    Some(reason) => self.close(peer, reason),
                    None => s.reschedule(now, peer, &self.config, &mut self.out.deadlines),
                }
                return;
            }
        }
        if is_client_hello(data) {
            self.listen(now, peer, data);
        }
    }

    /// Sends application data (a CoAP message) on an established session.
    pub fn send(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Result<(), DtlsError> {
        let s = self
            .sessions
            .get_mut(&peer)
            .filter(|s| s.established)
            .ok_or(DtlsError::NoSession(peer))?;
        s.last_seen = now;
        s.stream
            .ssl_write(payload)
            .map_err(|e| DtlsError::Write(e.to_string()))?;
        s.flush(peer, &mut self.out);
        s.reschedule(now, peer, &self.config, &mut self.out.deadlines);
        Ok(())
    }

    /// Retransmits due flights and drops sessions past their deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: each turn removes one deadline, and a session re-inserts its own only
        // at a later instant.
        while let Some((at, peer)) = self.out.deadlines.first().copied() {
            if at > now {
                break;
            }
            self.out.deadlines.remove(&(at, peer));
            let Some(s) = self.sessions.get_mut(&peer) else {
                continue;
            };
            s.deadline = None;
            if s.established && now >= s.last_seen + self.config.idle_timeout {
                self.close(peer, CloseReason::Idle);
                continue;
            }
            if !s.established && now >= s.created + self.config.handshake_timeout {
                tracing::debug!(%peer, "DTLS handshake timed out");
                self.close(peer, CloseReason::Failed);
                continue;
            }
            if ffi::timeout(s.stream.ssl()).is_some_and(|d| d.is_zero()) {
                ffi::handle_timeout(s.stream.ssl());
                s.flush(peer, &mut self.out);
            }
            s.reschedule(now, peer, &self.config, &mut self.out.deadlines);
        }
    }

    /// Ends a session, telling the peer with close_notify.
    pub fn close(&mut self, peer: SocketAddr, reason: CloseReason) {
        let Some(mut s) = self.sessions.remove(&peer) else {
            return;
        };
        if let Some(d) = s.deadline {
            self.out.deadlines.remove(&(d, peer));
        }
        if !s.established {
            self.out.half_open = self.out.half_open.saturating_sub(1);
        } else {
            if reason == CloseReason::Closed {
                // The peer said goodbye: nothing to send, and the session stays resumable.
                ffi::quiet_shutdown(s.stream.ssl());
            } else {
                let _ = s.stream.shutdown();
                s.flush(peer, &mut self.out);
            }
            self.out
                .events
                .push_back(DtlsEvent::Closed { peer, reason });
        }
        if let Some(n) = self.per_ip.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
    }

    /// A ClientHello from a peer without a session: the cookie exchange, then a session.
    fn listen(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        // The session a verified hello will replace does not count against the limits.
        let replacing = usize::from(self.sessions.contains_key(&peer));
        let per_ip = self
            .per_ip
            .get(&peer.ip())
            .copied()
            .unwrap_or(0)
            .saturating_sub(replacing);
        if self.out.half_open >= self.config.max_half_open
            || self.sessions.len().saturating_sub(replacing) >= self.config.max_sessions
            || per_ip >= self.config.max_sessions_per_ip
        {
            tracing::debug!(%peer, "DTLS handshake refused: limits reached");
            return;
        }
        // The first hello of a handshake is answered here, with no SSL made for it.
        if let Some(first) = hello::FirstHello::parse(data) {
            let mut c = [0u8; 16];
            let answer = cookie(&self.cookie_key, Some(&peer), &mut c)
                .ok()
                .and_then(|n| first.verify_request(c.get(..n)?));
            if let Some(d) = answer {
                self.out.transmits.push_back((peer, d));
            }
            return;
        }
        let stream = Ssl::new(&self.ctx).and_then(|mut ssl| {
            ssl.set_ex_data(*peer_index(), peer);
            ssl.set_mtu(self.config.mtu)?;
            ffi::set_initial_timeout(&mut ssl, self.config.initial_retransmit);
            SslStream::new(ssl, Pipe::with(data))
        });
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up a DTLS session");
                return;
            }
        };
        match ffi::listen(stream.ssl()) {
            ffi::Listen::Verified => {
                if replacing == 1 {
                    self.close(peer, CloseReason::Replaced);
                }
            }
            ffi::Listen::NotYet => {
                // A HelloVerifyRequest at most; the Ssl is dropped with everything it held.
                for d in stream.get_mut().take_outgoing() {
                    self.out.transmits.push_back((peer, d));
                }
                return;
            }
            ffi::Listen::Failed => return,
        }
        self.out.half_open += 1;
        *self.per_ip.entry(peer.ip()).or_default() += 1;
        self.sessions.insert(
            peer,
            Session {
                stream,
                established: false,
                created: now,
                last_seen: now,
                deadline: None,
            },
        );
        self.drive(now, peer);
    }

    /// [`Session::drive`] for a session just set up, and what follows from it.
    fn drive(&mut self, now: Instant, peer: SocketAddr) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        match s.drive(peer, &mut self.out) {
            Some(reason) => self.close(peer, reason),
            None => s.reschedule(now, peer, &self.config, &mut self.out.deadlines),
        }
    }
}
