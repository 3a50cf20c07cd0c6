//! The HTTPS download endpoint: `/fw/{token}` over TLS (OpenSSL, the server's
//! certificate), on an address of its own, for devices that fetch firmware over
//! `https://`. Only the download route is served there.
//!
//! Bounded like the rest: connections at once, and the time a client may take for its
//! TLS handshake and its request head; a slow or silent client costs one task until then.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use tokio::net::TcpListener;
use tokio_openssl::SslStream;

/// Connections served at once; one more waits for a free slot.
pub const MAX_CONNECTIONS: usize = 512;
/// Time for the TLS handshake, and for the request head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS acceptor from a PEM certificate chain and its private key.
pub fn acceptor(certificate: &Path, private_key: &Path) -> Result<SslAcceptor, String> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| format!("TLS: {e}"))?;
    b.set_certificate_chain_file(certificate)
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    b.set_private_key_file(private_key, SslFiletype::PEM)
        .map_err(|e| format!("{}: {e}", private_key.display()))?;
    b.check_private_key()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(b.build())
}

/// Serves `router` over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    acceptor: SslAcceptor,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = Arc::new(acceptor);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTPS accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(ssl) = Ssl::new(acceptor.context()) else {
                return;
            };
            let Ok(mut tls) = SslStream::new(ssl, tcp) else {
                return;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut tls).accept()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
}
