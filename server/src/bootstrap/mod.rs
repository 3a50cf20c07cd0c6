//! The bootstrap server at work: the dialogues of `lwm2m-bootstrap` over sockets of their
//! own, CoAP and CoAP over DTLS, on a thread of their own, beside the LwM2M server in
//! `lwm2m-server --bootstrap` or alone in `lwm2m-bootstrap`.
//!
//! Who may bootstrap as an endpoint: a device whose configuration names bootstrap
//! credentials only over DTLS with them (or with a trusted certificate whose common name
//! is the endpoint); a device without them also over plain CoAP. A configuration holds
//! the keys of the device's server accounts, so bootstrapping over plain CoAP hands them
//! to whoever claims the name: that is for labs and factory lines.
//!
//! The configurations and the outcome of each session live in the bootstrap store
//! (`bootstrap.redb`); the handle reads and writes it directly (redb takes concurrent
//! readers and one writer), and the driver reads a configuration when a device asks.

mod driver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lwm2m_bootstrap::{BootstrapConfig, BootstrapStatus, BootstrapStore};
use tokio::sync::{mpsc, watch};

use crate::coap::Endpoint;
use crate::dtls::{DtlsConfig, DtlsServer};
use crate::metrics::Metrics;
use crate::runtime::persist::unix_now_ms;

/// How a bootstrap server is started.
#[derive(Debug, Clone)]
pub struct BootstrapSettings {
    /// UDP address for plain CoAP, if served.
    pub coap_addr: Option<SocketAddr>,
    /// UDP address for CoAP over DTLS, if served.
    pub coaps_addr: Option<SocketAddr>,
    /// Where `bootstrap.redb` lives.
    pub data_dir: PathBuf,
    pub coap: crate::coap::Config,
    pub dtls: DtlsConfig,
    /// Dialogues at once; a Bootstrap-Request past this is answered 5.03.
    pub max_sessions: usize,
    /// A dialogue not finished this long after the Bootstrap-Request is ended as failed.
    pub session_timeout: Duration,
}

impl BootstrapSettings {
    pub fn new(coap_addr: SocketAddr, data_dir: impl Into<PathBuf>) -> BootstrapSettings {
        BootstrapSettings {
            coap_addr: Some(coap_addr),
            coaps_addr: None,
            data_dir: data_dir.into(),
            coap: crate::coap::Config::default(),
            dtls: DtlsConfig::default(),
            max_sessions: 1024,
            session_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapStartError {
    #[error("cannot bind bootstrap socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the bootstrap store in {dir}: {source}")]
    Store {
        dir: PathBuf,
        source: lwm2m_bootstrap::StoreError,
    },
    #[error("no random source for CoAP tokens: {0}")]
    Random(String),
    #[error("cannot set up DTLS: {0}")]
    Dtls(String),
    #[error("cannot start the bootstrap thread: {0}")]
    Thread(std::io::Error),
    #[error("neither a CoAP nor a CoAPS address to serve")]
    NothingToServe,
}

/// A running bootstrap server.
#[derive(Clone)]
pub struct BootstrapHandle {
    coap_addr: Option<SocketAddr>,
    coaps_addr: Option<SocketAddr>,
    store: Arc<BootstrapStore>,
    stop: mpsc::Sender<()>,
    stopped: watch::Receiver<bool>,
}

impl std::fmt::Debug for BootstrapHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapHandle")
            .field("coap_addr", &self.coap_addr)
            .field("coaps_addr", &self.coaps_addr)
            .finish_non_exhaustive()
    }
}

fn bind(addr: SocketAddr) -> Result<(std::net::UdpSocket, SocketAddr), BootstrapStartError> {
    crate::runtime::bind_udp(addr).map_err(|source| BootstrapStartError::Bind { addr, source })
}

pub struct BootstrapServer;

impl BootstrapServer {
    /// Opens the store, binds the sockets and starts the driver thread.
    pub fn start(
        settings: BootstrapSettings,
        metrics: Arc<Metrics>,
    ) -> Result<BootstrapHandle, BootstrapStartError> {
        if settings.coap_addr.is_none() && settings.coaps_addr.is_none() {
            return Err(BootstrapStartError::NothingToServe);
        }
        let store = Arc::new(
            BootstrapStore::open(&settings.data_dir, unix_now_ms()).map_err(|source| {
                BootstrapStartError::Store {
                    dir: settings.data_dir.clone(),
                    source,
                }
            })?,
        );
        let plain = settings.coap_addr.map(bind).transpose()?;
        let secure = settings.coaps_addr.map(bind).transpose()?;
        let dtls = match &secure {
            Some(_) => {
                let lookup = store.clone();
                let psk = move |identity: &[u8]| {
                    lookup
                        .bootstrap_psk(identity)
                        .ok()
                        .flatten()
                        .map(|(_, p)| p.key)
                };
                Some(
                    DtlsServer::new(settings.dtls.clone(), Arc::new(psk))
                        .map_err(|e| BootstrapStartError::Dtls(e.to_string()))?,
                )
            }
            None => None,
        };
        let seed =
            || crate::coap::os_seed().map_err(|e| BootstrapStartError::Random(e.to_string()));
        let ep = Endpoint::new(settings.coap.clone(), seed()?);
        let sep = Endpoint::new(settings.coap.clone(), seed()?);
        let coap_addr = plain.as_ref().map(|(_, a)| *a);
        let coaps_addr = secure.as_ref().map(|(_, a)| *a);
        let (stop, stop_rx) = mpsc::channel(1);
        let (stopped_tx, stopped) = watch::channel(false);
        let driver = driver::Driver::new(ep, sep, dtls, store.clone(), &settings, metrics);
        std::thread::Builder::new()
            .name("lwm2m-bootstrap".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => rt.block_on(async move {
                        let to_tokio = |s: Option<(std::net::UdpSocket, SocketAddr)>| {
                            s.map(|(s, _)| tokio::net::UdpSocket::from_std(s))
                                .transpose()
                        };
                        match (to_tokio(plain), to_tokio(secure)) {
                            (Ok(p), Ok(s)) => driver.run(p, s, stop_rx).await,
                            (Err(e), _) | (_, Err(e)) => {
                                tracing::error!(error = %e, "cannot register the bootstrap sockets")
                            }
                        }
                    }),
                    Err(e) => tracing::error!(error = %e, "cannot build the bootstrap runtime"),
                }
                let _ = stopped_tx.send(true);
            })
            .map_err(BootstrapStartError::Thread)?;
        tracing::info!(coap = ?coap_addr, coaps = ?coaps_addr, "bootstrap server started");
        Ok(BootstrapHandle {
            coap_addr,
            coaps_addr,
            store,
            stop,
            stopped,
        })
    }
}

/// Runs a store call off the async threads (redb may wait for the disk).
async fn blocking<T: Send + 'static>(
    store: &Arc<BootstrapStore>,
    f: impl FnOnce(&BootstrapStore) -> Result<T, lwm2m_bootstrap::StoreError> + Send + 'static,
) -> Result<T, lwm2m_bootstrap::StoreError> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r,
        Err(e) => Err(lwm2m_bootstrap::StoreError::Corrupt(
            "task".into(),
            format!("store call did not complete: {e}"),
        )),
    }
}

impl BootstrapHandle {
    pub fn coap_addr(&self) -> Option<SocketAddr> {
        self.coap_addr
    }

    pub fn coaps_addr(&self) -> Option<SocketAddr> {
        self.coaps_addr
    }

    /// Stores a configuration (durably) and answers the one it replaced.
    pub async fn put(
        &self,
        config: BootstrapConfig,
    ) -> Result<Option<BootstrapConfig>, lwm2m_bootstrap::StoreError> {
        blocking(&self.store, move |s| s.put(&config)).await
    }

    /// The endpoint whose configuration has this bootstrap PSK identity.
    pub async fn identity_owner(
        &self,
        identity: &[u8],
    ) -> Result<Option<String>, lwm2m_bootstrap::StoreError> {
        let identity = identity.to_vec();
        blocking(&self.store, move |s| {
            Ok(s.bootstrap_psk(&identity)?.map(|(ep, _)| ep))
        })
        .await
    }

    pub async fn get(
        &self,
        endpoint: &str,
    ) -> Result<Option<(BootstrapConfig, Option<BootstrapStatus>)>, lwm2m_bootstrap::StoreError>
    {
        let ep = endpoint.to_string();
        blocking(&self.store, move |s| {
            let Some(c) = s.get(&ep)? else {
                return Ok(None);
            };
            Ok(Some((c, s.status(&ep)?)))
        })
        .await
    }

    pub async fn delete(
        &self,
        endpoint: &str,
    ) -> Result<Option<BootstrapConfig>, lwm2m_bootstrap::StoreError> {
        let ep = endpoint.to_string();
        blocking(&self.store, move |s| s.delete(&ep)).await
    }

    /// A page of configurations with each one's last status, and the count of matches.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<(BootstrapConfig, Option<BootstrapStatus>)>), lwm2m_bootstrap::StoreError>
    {
        let prefix = prefix.to_string();
        let after = after.map(str::to_string);
        blocking(&self.store, move |s| {
            let (total, page) = s.list(&prefix, after.as_deref(), offset, limit)?;
            let page = page
                .into_iter()
                .map(|c| {
                    let status = s.status(&c.endpoint)?;
                    Ok((c, status))
                })
                .collect::<Result<_, lwm2m_bootstrap::StoreError>>()?;
            Ok((total, page))
        })
        .await
    }

    /// Stops the driver and waits for its thread to end.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(()).await;
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }
}
