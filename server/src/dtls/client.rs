//! The client side of one DTLS-PSK session, driven like the server: datagrams in, datagrams
//! out. The simulated devices use it, and the server's tests shake hands with it.
//!
//! Plaintext handed to [`send`](DtlsClient::send) before the handshake finished waits,
//! bounded, and goes out as soon as it has.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, Ssl, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVersion,
};

use super::pipe::Pipe;
use super::{ffi, DtlsError, MAX_DATAGRAM};

/// Plaintext messages kept while the handshake runs; older ones are dropped past it, as
/// a network would drop them (CoAP retransmits what matters).
const MAX_WAITING: usize = 16;

/// One client session.
pub struct DtlsClient {
    stream: SslStream<Pipe>,
    established: bool,
    failure: Option<String>,
    waiting: VecDeque<Vec<u8>>,
    received: Vec<Vec<u8>>,
}

impl std::fmt::Debug for DtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClient")
            .field("established", &self.established)
            .finish_non_exhaustive()
    }
}

impl DtlsClient {
    /// A session that will authenticate with `identity` and `key`, offering `ciphers`
    /// (an OpenSSL cipher list; `None` offers what the server does).
    pub fn psk(
        identity: &[u8],
        key: &[u8],
        ciphers: Option<&str>,
        initial_retransmit: Duration,
    ) -> Result<DtlsClient, DtlsError> {
        let mut b = SslContextBuilder::new(SslMethod::dtls_client())?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        b.set_cipher_list(ciphers.unwrap_or(super::CIPHER_LIST))?;
        b.set_options(SslOptions::NO_QUERY_MTU);
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
        let ctx = b.build();
        let mut ssl = Ssl::new(&ctx)?;
        ssl.set_mtu(super::DtlsConfig::default().mtu)?;
        ffi::set_initial_timeout(&mut ssl, initial_retransmit);
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

    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Why the handshake failed, once it has.
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
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Bounded by the datagrams queued on the pipe.
        loop {
            match self.stream.ssl_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self
                    .received
                    .push(buf.get(..n).unwrap_or_default().to_vec()),
                Err(_) => break,
            }
        }
    }
}
