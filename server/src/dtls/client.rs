//! The client side of one DTLS-PSK session, driven like the server: datagrams in, datagrams
//! out. The simulated devices use it, and the server's tests shake hands with it.
//!
//! Plaintext handed to [`send`](DtlsClient::send) before the handshake finished waits,
//! bounded, and goes out as soon as it has.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSession,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;

use super::pipe::Pipe;
use super::{ffi, DtlsError, MAX_DATAGRAM};

/// Plaintext messages kept while the handshake runs; older ones are dropped past it, as
/// a network would drop them (CoAP retransmits what matters).
const MAX_WAITING: usize = 16;

/// What one device's DTLS sessions share: its credentials, and the last session, to
/// resume with an abbreviated handshake (no key exchange) after a sleep.
pub struct DtlsClientContext {
    ctx: SslContext,
    initial_retransmit: Duration,
    last: Option<SslSession>,
}

impl std::fmt::Debug for DtlsClientContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClientContext")
            .field("resumable", &self.last.is_some())
            .finish_non_exhaustive()
    }
}

impl DtlsClientContext {
    /// Credentials `identity` and `key`, offering `ciphers` (an OpenSSL cipher list;
    /// `None` offers what the server does).
    pub fn psk(
        identity: &[u8],
        key: &[u8],
        ciphers: Option<&str>,
        initial_retransmit: Duration,
    ) -> Result<DtlsClientContext, DtlsError> {
        let mut b = SslContextBuilder::new(SslMethod::dtls_client())?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        b.set_cipher_list(ciphers.unwrap_or(super::CIPHER_LIST))?;
        b.set_options(SslOptions::NO_QUERY_MTU);
        b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        let (identity, key) = (identity.to_vec(), key.to_vec());
        b.set_psk_client_callback(move |_ssl, _hint, id_out, psk_out| {
            // The identity goes out as a NUL-terminated string.
            if identity.len() >= id_out.len() || key.len() > psk_out.len() {
                return Ok(0);
            }
            id_out[..identity.len()].copy_from_slice(&identity);
            id_out[identity.len()] = 0;
            psk_out[..key.len()].copy_from_slice(&key);
            Ok(key.len())
        });
        Ok(DtlsClientContext {
            ctx: b.build(),
            initial_retransmit,
            last: None,
        })
    }

    /// Credentials of a certificate: the device's chain and key (PEM) and the CA
    /// certificates (PEM) the server's certificate must chain to. Offers the ECDHE-ECDSA
    /// suites.
    pub fn certificate(
        chain_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        initial_retransmit: Duration,
    ) -> Result<DtlsClientContext, DtlsError> {
        let mut b = SslContextBuilder::new(SslMethod::dtls_client())?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        b.set_cipher_list("ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256")?;
        b.set_options(SslOptions::NO_QUERY_MTU);
        b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        let mut chain = X509::stack_from_pem(chain_pem)?.into_iter();
        let leaf = chain
            .next()
            .ok_or_else(|| DtlsError::Config("no certificate in the chain".into()))?;
        b.set_certificate(&leaf)?;
        for c in chain {
            b.add_extra_chain_cert(c)?;
        }
        let key = PKey::private_key_from_pem(key_pem)?;
        b.set_private_key(&key)?;
        b.check_private_key()?;
        for ca in X509::stack_from_pem(ca_pem)? {
            b.cert_store_mut().add_cert(ca)?;
        }
        b.set_verify(SslVerifyMode::PEER);
        Ok(DtlsClientContext {
            ctx: b.build(),
            initial_retransmit,
            last: None,
        })
    }

    /// A new session, offering to resume the last one remembered.
    pub fn connect(&self) -> Result<DtlsClient, DtlsError> {
        let mut ssl = Ssl::new(&self.ctx)?;
        ssl.set_mtu(super::DtlsConfig::default().mtu)?;
        ffi::set_initial_timeout(&mut ssl, self.initial_retransmit);
        if let Some(session) = &self.last {
            // SAFETY: the session came from a connection of this same context.
            unsafe { ssl.set_session(session)? };
        }
        let mut client = DtlsClient {
            stream: SslStream::new(ssl, Pipe::default())?,
            established: false,
            failure: None,
            waiting: VecDeque::new(),
            received: Vec::new(),
        };
        client.advance();
        Ok(client)
    }

    /// Keeps an established session's state for the next [`connect`](Self::connect).
    pub fn remember(&mut self, client: &DtlsClient) {
        if let Some(s) = client.stream.ssl().session().filter(|_| client.established) {
            self.last = Some(s.to_owned());
        }
    }
}

/// One client session.
pub struct DtlsClient {
    stream: SslStream<Pipe>,
    established: bool,
    failure: Option<String>,
    waiting: VecDeque<Vec<u8>>,
    received: Vec<Vec<u8>>,
}

impl Drop for DtlsClient {
    fn drop(&mut self) {
        // Leaving a session (to sleep, or for a new one) keeps it resumable.
        if self.established {
            ffi::quiet_shutdown(self.stream.ssl());
        }
    }
}

impl std::fmt::Debug for DtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClient")
            .field("established", &self.established)
            .finish_non_exhaustive()
    }
}

impl DtlsClient {
    /// A session with credentials of its own (no resumption): see [`DtlsClientContext`].
    pub fn psk(
        identity: &[u8],
        key: &[u8],
        ciphers: Option<&str>,
        initial_retransmit: Duration,
    ) -> Result<DtlsClient, DtlsError> {
        DtlsClientContext::psk(identity, key, ciphers, initial_retransmit)?.connect()
    }

    /// Whether the handshake was the abbreviated one of a resumed session.
    pub fn resumed(&self) -> bool {
        self.established && self.stream.ssl().session_reused()
    }

    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Whether the session can carry nothing more: the handshake failed, or the server
    /// closed it. A device then shakes hands again (resuming when it can).
    pub fn is_over(&self) -> bool {
        self.failure.is_some()
    }

    /// Why the handshake failed or the session ended, once it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// A datagram from the server; gives back the plaintext messages it carried.
    pub fn handle_datagram(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        if data.len() <= MAX_DATAGRAM {
            self.stream.get_mut().push(data);
            self.advance();
        }
        std::mem::take(&mut self.received)
    }

    /// Sends a plaintext message, or keeps it until the handshake is done.
    pub fn send(&mut self, payload: &[u8]) {
        if !self.established {
            if self.waiting.len() == MAX_WAITING {
                self.waiting.pop_front();
            }
            self.waiting.push_back(payload.to_vec());
            return;
        }
        if let Err(e) = self.stream.ssl_write(payload) {
            tracing::debug!(error = %e, "DTLS write failed");
        }
    }

    /// The datagrams to send to the server.
    pub fn poll_transmit(&mut self) -> Vec<Vec<u8>> {
        self.stream.get_mut().take_outgoing()
    }

    /// When [`handle_timeout`](Self::handle_timeout) has a retransmission to make.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        ffi::timeout(self.stream.ssl()).map(|d| now + d)
    }

    pub fn handle_timeout(&mut self) {
        if ffi::timeout(self.stream.ssl()).is_some_and(|d| d.is_zero()) {
            ffi::handle_timeout(self.stream.ssl());
        }
    }

    /// Ends the session with close_notify.
    pub fn close(&mut self) {
        if self.established {
            let _ = self.stream.shutdown();
        }
    }

    fn advance(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let was_established = self.established;
        if !self.established {
            match self.stream.connect() {
                Ok(()) => {
                    self.established = true;
                    while let Some(p) = self.waiting.pop_front() {
                        self.send(&p);
                    }
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                    return
                }
                Err(e) => {
                    self.failure = Some(e.to_string());
                    return;
                }
            }
        }
        thread_local! {
            // Where records are opened: one buffer a thread, neither 16 KiB zeroed per
            // datagram nor 16 KiB held by every client of a fleet.
            static BUFFER: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(vec![0u8; MAX_DATAGRAM]);
        }
        BUFFER.with(|b| self.read_records(&mut b.borrow_mut(), was_established));
    }

    /// `settled`: the session was established before this datagram, so nothing OpenSSL
    /// kept during the handshake can wait unseen (see the server's `Session::drive`).
    fn read_records(&mut self, buf: &mut [u8], settled: bool) {
        // Bounded by the datagrams queued on the pipe.
        loop {
            match self.stream.ssl_read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.received
                        .push(buf.get(..n).unwrap_or_default().to_vec());
                    if settled
                        && !self.stream.get_ref().has_incoming()
                        && !ffi::has_pending(self.stream.ssl())
                    {
                        break;
                    }
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    // The server ended the session (idle, or replaced): it is over here
                    // too, and still resumable.
                    self.failure = Some("closed by the server".into());
                    break;
                }
                Err(_) => break,
            }
        }
    }
}
