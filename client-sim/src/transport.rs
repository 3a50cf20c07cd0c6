//! What the registration driver ([`crate::client`]) and the bootstrap driver
//! ([`crate::bootstrap`]) share about talking to a server: building requests,
//! naming response codes, seeding the CoAP endpoint, setting up DTLS, reading
//! datagrams, and [`Link`], one socket to one server in plain CoAP or through
//! a DTLS session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use lwm2m_server::coap::Endpoint;
use lwm2m_server::dtls::{DtlsClient, DtlsClientContext, DtlsError};
use tokio::net::UdpSocket;

use crate::config::{CertificateCredentials, Psk};
use crate::network::{send_shaped, Shaper};

/// The largest UDP payload; a datagram is read whole or not at all.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// A seed for the endpoint's message ids and tokens.
pub(crate) fn rng_seed() -> u64 {
    lwm2m_server::coap::os_seed().unwrap_or_else(|_| {
        // No OS randomness: the clock still varies tokens between runs.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
    })
}

/// The code of a message as a log-friendly name (`Created`, `BadRequest`).
pub(crate) fn code_text(p: &Packet) -> String {
    match p.header.code {
        MessageClass::Response(r) => format!("{r:?}"),
        other => format!("{other:?}"),
    }
}

/// The Uri-Path of a request as text, `/` for none.
pub(crate) fn uri_path(p: &Packet) -> String {
    let path: String = p
        .get_option(CoapOption::UriPath)
        .map(|segs| {
            segs.iter()
                .map(|s| format!("/{}", String::from_utf8_lossy(s)))
                .collect()
        })
        .unwrap_or_default();
    if path.is_empty() {
        "/".into()
    } else {
        path
    }
}

pub(crate) fn request_packet(method: RequestType, path: &str, queries: &[String]) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Request(method);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    for q in queries {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p
}

/// The DTLS credentials of a device, if it has any; PSK wins over a certificate.
pub(crate) fn dtls_context(
    psk: Option<&Psk>,
    certificate: Option<&CertificateCredentials>,
    retransmit: Duration,
) -> Result<Option<DtlsClientContext>, DtlsError> {
    match (psk, certificate) {
        (Some(p), _) => DtlsClientContext::psk(&p.identity, &p.key, None, retransmit).map(Some),
        (None, Some(c)) => {
            DtlsClientContext::certificate(&c.chain_pem, &c.key_pem, &c.ca_pem, retransmit)
                .map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// One datagram from the socket, at most [`MAX_DATAGRAM`] bytes, in a vector of its own
/// size. A waiting device holds no buffer: the datagram is read into the thread's one
/// buffer once the socket is readable, so a fleet of many thousand devices waiting for
/// an answer does not hold 64 KiB each.
pub(crate) async fn recv_datagram(socket: &UdpSocket) -> std::io::Result<(Vec<u8>, SocketAddr)> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_DATAGRAM]);
    }
    loop {
        socket.readable().await?;
        let read = BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            socket
                .try_recv_from(&mut b)
                .map(|(n, peer)| (b.get(..n).unwrap_or_default().to_vec(), peer))
        });
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// One socket that talks to one peer only: datagrams from anyone else are
/// dropped, so a stranger cannot feed the endpoint. With a DTLS session, CoAP
/// messages go through it; with link conditions ([`Link::shape`]), every
/// datagram each way goes through them.
pub(crate) struct Link {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    dtls: Option<DtlsClient>,
    shaper: Option<Shaper>,
}

impl Link {
    pub(crate) async fn bind(
        bind: SocketAddr,
        peer: SocketAddr,
        dtls: Option<DtlsClient>,
    ) -> std::io::Result<Link> {
        let socket = Arc::new(UdpSocket::bind(bind).await?);
        Ok(Link {
            socket,
            peer,
            dtls,
            shaper: None,
        })
    }

    /// Applies link conditions to the datagrams from now on.
    pub(crate) fn shape(&mut self, shaper: Option<Shaper>) {
        self.shaper = shaper;
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Why the DTLS session cannot carry anything more, once it cannot.
    pub(crate) fn dtls_failure(&self) -> Option<String> {
        self.dtls
            .as_ref()
            .filter(|d| d.is_over())
            .map(|d| d.failure().unwrap_or("session closed").to_string())
    }

    /// Sends what the endpoint has queued for the peer, sealed when over DTLS.
    pub(crate) async fn flush(&mut self, endpoint: &mut Endpoint) {
        while let Some(t) = endpoint.poll_transmit() {
            match self.dtls.as_mut() {
                Some(d) => d.send(&t.bytes),
                None => self.send_raw(&t.bytes, t.peer).await,
            }
        }
        self.flush_records().await;
    }

    /// Sends one message that is not the endpoint's (the firmware download
    /// runs its own exchanges), sealed when over DTLS.
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        match self.dtls.as_mut() {
            Some(d) => d.send(bytes),
            None => {
                let peer = self.peer;
                self.send_raw(bytes, peer).await
            }
        }
        self.flush_records().await;
    }

    /// Sends the DTLS records waiting (handshake flights, sealed messages).
    pub(crate) async fn flush_records(&mut self) {
        let records = self
            .dtls
            .as_mut()
            .map(DtlsClient::poll_transmit)
            .unwrap_or_default();
        let peer = self.peer;
        for r in records {
            self.send_raw(&r, peer).await;
        }
    }

    async fn send_raw(&mut self, bytes: &[u8], to: SocketAddr) {
        send_shaped(&self.socket, self.shaper.as_mut(), bytes, to).await;
    }

    /// Waits for the next datagram from the peer (through the link conditions, when
    /// there are any); gives back the CoAP messages it carried (none for a DTLS
    /// handshake record). Cancel-safe: what the link holds back stays in it.
    pub(crate) async fn recv(&mut self) -> std::io::Result<Vec<Vec<u8>>> {
        loop {
            let due = match self.shaper.as_mut() {
                Some(s) => match s.pop_due(Instant::now()) {
                    Some((bytes, _)) => return Ok(self.open(bytes)),
                    None => s.next_due(),
                },
                None => None,
            };
            let (bytes, from) = match due {
                None => recv_datagram(&self.socket).await?,
                Some(at) => tokio::select! {
                    r = recv_datagram(&self.socket) => r?,
                    _ = tokio::time::sleep_until(at.into()) => continue,
                },
            };
            if from != self.peer {
                continue;
            }
            match self.shaper.as_mut() {
                Some(s) => s.inbound(Instant::now(), bytes, from),
                None => return Ok(self.open(bytes)),
            }
        }
    }

    /// The CoAP messages a datagram from the peer carries.
    fn open(&mut self, bytes: Vec<u8>) -> Vec<Vec<u8>> {
        match self.dtls.as_mut() {
            Some(d) => d.handle_datagram(&bytes),
            None => vec![bytes],
        }
    }

    /// When the DTLS session has a retransmission to make.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.dtls.as_ref().and_then(|d| d.poll_timeout(now))
    }

    pub(crate) fn handle_timeout(&mut self) {
        if let Some(d) = self.dtls.as_mut() {
            d.handle_timeout();
        }
    }

    /// Ends the DTLS session with close_notify, so the server need not wait for
    /// its idle timeout.
    pub(crate) async fn close(&mut self) {
        if let Some(d) = self.dtls.as_mut() {
            d.close();
        }
        self.flush_records().await;
    }
}
