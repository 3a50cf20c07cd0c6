//! The socket work both drivers (the LwM2M server's and the bootstrap server's) do the
//! same way: binding, receiving on a socket that may not exist, and flushing what the
//! CoAP endpoints and the DTLS server have to send.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::coap::Endpoint;
use crate::dtls::DtlsServer;

/// Binds a non-blocking UDP socket; answers it and the address it got (the real port when
/// 0 was asked for).
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<(std::net::UdpSocket, SocketAddr)> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    Ok((socket, local))
}

/// Receives from `socket`, or waits forever when there is none.
pub(crate) async fn recv_from(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Sends what the plain endpoint has queued.
pub(crate) async fn flush_plain(ep: &mut Endpoint, socket: Option<&UdpSocket>) {
    let Some(socket) = socket else { return };
    while let Some(t) = ep.poll_transmit() {
        if let Err(e) = socket.send_to(&t.bytes, t.peer).await {
            tracing::debug!(peer = %t.peer, error = %e, "send_to failed");
        }
    }
}

/// Hands what the secure endpoint has queued to the DTLS sessions, then sends their
/// records.
pub(crate) async fn flush_secure(
    sep: &mut Endpoint,
    dtls: Option<&mut DtlsServer>,
    socket: Option<&UdpSocket>,
) {
    let Some(d) = dtls else { return };
    let now = Instant::now();
    while let Some(t) = sep.poll_transmit() {
        if let Err(e) = d.send(now, t.peer, &t.bytes) {
            tracing::debug!(peer = %t.peer, error = %e, "not sent over DTLS");
        }
    }
    let Some(socket) = socket else { return };
    while let Some((peer, bytes)) = d.poll_transmit() {
        if let Err(e) = socket.send_to(&bytes, peer).await {
            tracing::debug!(%peer, error = %e, "send_to failed (DTLS)");
        }
    }
}
