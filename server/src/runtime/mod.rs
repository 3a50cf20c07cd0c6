//! The tokio driver: owns the UDP socket and the clock, feeds the sans-IO [`Endpoint`]
//! and [`Registry`](crate::registry::Registry), writes through to the [`RedbStore`], and
//! exposes a [`ServerHandle`] to the rest of the program.
//!
//! The driver runs on a thread of its own with a single-threaded tokio runtime. What a
//! pass (up to 256 datagrams, a command, a timer) writes goes to the store thread of
//! `pipeline`, which commits it with one fsync ([`RedbStore::group_commit`]) while the
//! driver handles the next pass; the pass's answers, replies and events are held until
//! then, so the order "persisted, then answered" holds as before.
//! Everything else talks to the driver through channels: commands in, a broadcast of
//! [`ServerEvent`]s out.
//!
//! - [`route`]: pure routing of an incoming request (also the fuzzing entry point).
//! - `persist`: conversions between live state and store records.
//! - `driver`: the event loop.
//! - `pipeline`: the driver's writes, committed off its thread, and what waits for them.
//! - `manage`: typed device management on the handle.
//! - `inventory`: what the handle can ask of the live state (devices, observations,
//!   queued requests).

mod driver;
mod inventory;
mod manage;
mod observed;
mod peers;
pub mod persist;
mod pipeline;
pub mod route;
mod sockets;
pub(crate) use sockets::{bind_udp, flush_plain, flush_secure, recv_from};

pub use inventory::{ClientInfo, ClientPage, ObservationInfo, QueuedInfo};
pub use manage::{ManageError, Performed, Submitted};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::Packet;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::coap::{Endpoint, FailReason, SendError};
use crate::config::ServerConfig;
use crate::dtls::DtlsServer;
use crate::metrics::Metrics;
use crate::registry::{Changes, Registration};
use crate::security::Credentials;
use crate::store::{RedbStore, Store, StoreError};

pub use route::{route, route_datagram, Route};

/// Capacity of the event broadcast; a subscriber that falls further behind loses the oldest
/// events (and learns so from `RecvError::Lagged`) rather than stalling the server.
pub const EVENT_CAPACITY: usize = 4096;
/// Commands waiting for the driver.
const COMMAND_CAPACITY: usize = 1024;

/// What happened, for every layer above (fleet, campaigns, API).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A Register succeeded; `replaced` is the location id of the endpoint's previous
    /// registration, whose observations are gone.
    Registered {
        registration: Registration,
        replaced: Option<String>,
    },
    Updated {
        registration: Registration,
        changes: Changes,
    },
    Deregistered {
        registration: Registration,
    },
    /// The lifetime (plus grace) ran out without an Update.
    Expired {
        registration: Registration,
    },
    /// A notification of an observation made with [`ServerHandle::observe`] (or restored
    /// from the store after a restart); `paths` are the observed LwM2M paths, as the
    /// observing call named them.
    Notification {
        endpoint: String,
        registration_id: String,
        token: Vec<u8>,
        sequence: u32,
        packet: Packet,
        paths: Vec<lwm2m_objects::Path>,
        composite: bool,
        /// What reading the payload needs of the device's registration, taken when the
        /// notification arrived (see [`ServerHandle::read_answer`]).
        device: crate::dm::DeviceContext,
    },
    /// A queue-mode device became reachable: it registered, or spoke after its awake
    /// window had ended. Requests queued for it are being sent.
    Awake {
        endpoint: String,
        registration_id: String,
    },
    /// A queue-mode device's awake window ended without a word from it: requests wait
    /// for it from now on.
    Sleeping {
        endpoint: String,
        registration_id: String,
    },
    /// The device ended an observation (an error or a response without Observe).
    ObservationCancelled {
        endpoint: String,
        token: Vec<u8>,
        packet: Packet,
    },
    /// A device's Send (`POST /dp`), undecoded.
    SendReceived {
        endpoint: String,
        registration_id: String,
        content_format: Option<u16>,
        payload: Vec<u8>,
    },
    /// A request queued before a restart, whose caller is gone, was answered or failed;
    /// `label` says what it was and under which id its caller knew it, `token` is the
    /// observation's for an Observe.
    QueuedRequestCompleted {
        endpoint: String,
        label: RequestLabel,
        token: Vec<u8>,
        outcome: Result<Packet, RequestError>,
    },
    /// A firmware update moved (see [`crate::firmware::update`]).
    FirmwareState(Box<crate::firmware::update::UpdateRecord>),
    /// A campaign changed: `what` happened (created, paused, resumed, cancelled,
    /// completed); `progress` is its progress then.
    Campaign {
        id: String,
        what: String,
        progress: serde_json::Value,
    },
}

/// Why a request to a device produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no registered endpoint {0:?}")]
    UnknownEndpoint(String),
    #[error("the request expired before the device woke up")]
    Expired,
    #[error("the device's request queue is full")]
    QueueFull,
    #[error("the registration ended before the request was sent")]
    Deregistered,
    #[error("no response from the device: {0:?}")]
    Failed(FailReason),
    #[error("refused by the CoAP layer: {0}")]
    Send(SendError),
    #[error("the device answered without establishing the observation (code {0})")]
    NotObserved(String),
    #[error("storage failed: {0}")]
    Store(String),
    #[error("the server has stopped")]
    Stopped,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind CoAP socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        dir: std::path::PathBuf,
        source: StoreError,
    },
    #[error("no random source for CoAP tokens: {0}")]
    Random(String),
    #[error("cannot open the firmware store: {0}")]
    Firmware(String),
    #[error("cannot start the server thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot set up DTLS: {0}")]
    Dtls(String),
}

/// An established observation: its token (the key of its notifications) and the first
/// response.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub token: Vec<u8>,
    pub response: Packet,
}

/// What a request is, beyond its CoAP bytes: the LwM2M operation and paths (for metrics,
/// notifications and the inventory of queued requests) and the caller's request id. It is
/// stored with a request that waits for a sleeping device, so that after a restart its
/// result is still reported under that id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestLabel {
    /// `Read`, `Write`, ...; empty for a raw CoAP request.
    pub operation: String,
    pub paths: Vec<lwm2m_objects::Path>,
    pub request_id: Option<String>,
}

impl RequestLabel {
    /// The operation's name for metrics: `CoAP` for raw requests.
    pub fn operation_name(&self) -> &str {
        if self.operation.is_empty() {
            "CoAP"
        } else {
            &self.operation
        }
    }
}

/// A request the driver has sent or queued; [`wait`](Self::wait) for its answer.
#[derive(Debug)]
pub(crate) struct InFlight {
    reply: oneshot::Receiver<Result<Reply, RequestError>>,
}

impl InFlight {
    async fn wait(self) -> Result<Reply, RequestError> {
        self.reply.await.map_err(|_| RequestError::Stopped)?
    }
}

/// What a finished request hands back to its caller.
#[derive(Debug)]
struct Reply {
    packet: Packet,
    token: Vec<u8>,
}

type ReplyTx = oneshot::Sender<Result<Reply, RequestError>>;

enum Command {
    Request {
        endpoint: String,
        packet: Packet,
        confirmable: bool,
        observe: bool,
        expires_at: Instant,
        label: RequestLabel,
        /// Signalled once the request is sent or persisted in the device's queue;
        /// dropped when it is refused (`reply` then says why).
        accepted: oneshot::Sender<()>,
        reply: ReplyTx,
    },
    Registration {
        endpoint: String,
        reply: oneshot::Sender<Option<Registration>>,
    },
    Clients {
        prefix: String,
        after: Option<String>,
        offset: usize,
        limit: usize,
        reply: oneshot::Sender<ClientPage>,
    },
    Client {
        endpoint: String,
        reply: oneshot::Sender<Option<ClientInfo>>,
    },
    Observations {
        endpoint: String,
        reply: oneshot::Sender<Vec<ObservationInfo>>,
    },
    ForgetObservation {
        token: Vec<u8>,
        reply: oneshot::Sender<bool>,
    },
    QueuedRequests {
        reply: oneshot::Sender<Vec<QueuedInfo>>,
    },
    Security(inventory::SecurityCommand),
    CancelObservation {
        token: Vec<u8>,
        packet: Packet,
        reply: ReplyTx,
    },
    Shutdown,
}

/// The server; [`Server::start`] is the way in.
#[derive(Debug)]
pub struct Server;

/// A running server. Cloning gives another handle to the same server; it stops on
/// [`shutdown`](Self::shutdown) or when every handle is dropped.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    coap_addr: SocketAddr,
    coaps_addr: Option<SocketAddr>,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<ServerEvent>,
    stopped: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    firmware: Arc<crate::firmware::Firmware>,
    data_dir: std::path::PathBuf,
    awake_window: Duration,
}

impl Server {
    /// Opens the store, restores registrations, observations and queued requests, binds
    /// the socket and starts the driver thread. Synchronous, so it works with or without a
    /// runtime around it.
    pub fn start(config: ServerConfig) -> Result<ServerHandle, StartError> {
        let store_err = |source| StartError::Store {
            dir: config.data_dir.clone(),
            source,
        };
        // The registry admits devices; the store's own bound only backs it up, so it is
        // never the tighter of the two.
        let defaults = crate::store::StoreLimits::default();
        let limits = crate::store::StoreLimits {
            max_registrations: u64::try_from(config.registry.max_registrations)
                .unwrap_or(u64::MAX)
                .max(defaults.max_registrations),
            ..defaults
        };
        let redb = RedbStore::open_with(&config.data_dir, limits, config.store_cache_bytes)
            .map_err(store_err)?;
        // The driver commits in groups and syncs before it answers; the API's writes
        // (credentials) are durable when they return.
        let driver_store: Arc<dyn Store> = Arc::new(redb.group_commit());
        let store: Arc<dyn Store> = Arc::new(redb);
        let credentials = Arc::new(Credentials::load(store.clone()).map_err(store_err)?);
        let metrics = Arc::new(Metrics::new());
        let firmware = Arc::new(
            crate::firmware::Firmware::open(
                &config.data_dir,
                config.firmware.clone(),
                metrics.clone(),
            )
            .map_err(|e| StartError::Firmware(e.to_string()))?,
        );
        let (socket, coap_addr) = bind(config.coap_addr)?;
        let secure = config.coaps_addr.map(bind).transpose()?;
        let coaps_addr = secure.as_ref().map(|(_, a)| *a);
        let dtls = match &secure {
            Some(_) => Some(
                DtlsServer::new(config.dtls.clone(), credentials.clone())
                    .map_err(|e| StartError::Dtls(e.to_string()))?,
            ),
            None => None,
        };
        // Tokens must be unguessable (RFC 7252 §5.3.1): no fallback seed.
        let seed = crate::coap::os_seed().map_err(|e| StartError::Random(e.to_string()))?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let endpoint = Endpoint::new(config.coap.clone(), seed);
        let secure_seed = crate::coap::os_seed().map_err(|e| StartError::Random(e.to_string()))?;
        let secure_endpoint = Endpoint::new(config.coap.clone(), secure_seed);
        let mut driver = driver::Driver::new(
            endpoint,
            secure_endpoint,
            dtls,
            credentials,
            config.registry.clone(),
            driver_store,
            events.clone(),
            metrics.clone(),
            firmware.clone(),
        );
        driver.restore();
        std::thread::Builder::new()
            .name("lwm2m-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => rt.block_on(async move {
                        let secure = secure
                            .map(|(s, _)| tokio::net::UdpSocket::from_std(s))
                            .transpose();
                        match (tokio::net::UdpSocket::from_std(socket), secure) {
                            (Ok(socket), Ok(secure)) => driver.run(socket, secure, cmd_rx).await,
                            (Err(e), _) | (_, Err(e)) => {
                                tracing::error!(error = %e, "cannot register the sockets")
                            }
                        }
                    }),
                    Err(e) => tracing::error!(error = %e, "cannot build the runtime"),
                }
                let _ = stopped_tx.send(true);
            })
            .map_err(StartError::Thread)?;
        tracing::info!(%coap_addr, coaps_addr = ?coaps_addr, "server started");
        Ok(ServerHandle {
            coap_addr,
            coaps_addr,
            commands: cmd_tx,
            events,
            stopped: stopped_rx,
            metrics,
            firmware,
            data_dir: config.data_dir.clone(),
            awake_window: config.registry.awake_window,
        })
    }
}

fn bind(addr: SocketAddr) -> Result<(std::net::UdpSocket, SocketAddr), StartError> {
    sockets::bind_udp(addr).map_err(|source| StartError::Bind { addr, source })
}

impl ServerHandle {
    /// The packages, updates and download tokens of this server.
    pub fn firmware(&self) -> Arc<crate::firmware::Firmware> {
        self.firmware.clone()
    }

    /// Completes when the driver has stopped.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    /// Where this server keeps its files.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// How long a queue-mode device is taken to stay reachable after it spoke.
    pub fn awake_window(&self) -> Duration {
        self.awake_window
    }

    /// Publishes an event that did not come from the driver (a firmware update's step)
    /// to the same listeners.
    pub fn publish(&self, e: ServerEvent) {
        let _ = self.events.send(e);
    }

    /// The address the CoAP socket is bound to (the real port when 0 was asked for).
    pub fn coap_addr(&self) -> SocketAddr {
        self.coap_addr
    }

    /// The address of the DTLS socket, when DTLS is served.
    pub fn coaps_addr(&self) -> Option<SocketAddr> {
        self.coaps_addr
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    /// The server's metrics, kept up to date by the driver.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Sends a raw CoAP request to a registered device and waits for its response.
    ///
    /// A queue-mode device that is asleep gets it as soon as it wakes (its next Register
    /// or Update), in the order requests were made; the request is persisted meanwhile and
    /// fails with [`RequestError::Expired`] if `expires_in` passes first. Token, message id
    /// and type are set by the CoAP layer.
    pub async fn request(
        &self,
        endpoint_name: &str,
        packet: Packet,
        confirmable: bool,
        expires_in: Duration,
    ) -> Result<Packet, RequestError> {
        self.command(
            endpoint_name,
            packet,
            confirmable,
            false,
            expires_in,
            RequestLabel::default(),
        )
        .await
        .map(|r| r.packet)
    }

    /// Like [`request`](Self::request), with Observe=0 set: once the device answers with
    /// a success carrying Observe, the observation is persisted (so its notifications are
    /// still matched after a restart) and reported as [`ServerEvent::Notification`]s.
    pub async fn observe(
        &self,
        endpoint_name: &str,
        packet: Packet,
        expires_in: Duration,
    ) -> Result<Observation, RequestError> {
        self.observe_labelled(endpoint_name, packet, expires_in, RequestLabel::default())
            .await
    }

    /// [`observe`](Self::observe) with the label its notifications are reported with.
    async fn observe_labelled(
        &self,
        endpoint_name: &str,
        mut packet: Packet,
        expires_in: Duration,
        label: RequestLabel,
    ) -> Result<Observation, RequestError> {
        packet.set_observe_value(0);
        let r = self
            .command(endpoint_name, packet, true, true, expires_in, label)
            .await?;
        Ok(Observation {
            token: r.token,
            response: r.packet,
        })
    }

    async fn command(
        &self,
        endpoint: &str,
        packet: Packet,
        confirmable: bool,
        observe: bool,
        expires_in: Duration,
        label: RequestLabel,
    ) -> Result<Reply, RequestError> {
        self.submit(endpoint, packet, confirmable, observe, expires_in, label)
            .await?
            .wait()
            .await
    }

    /// Hands a request to the driver and returns once it is on its way: sent to an awake
    /// device, or persisted in a sleeping device's queue (so that a crash from then on
    /// does not lose it). A request refused at once (unknown endpoint, full queue, store
    /// failure) is an error here.
    async fn submit(
        &self,
        endpoint: &str,
        packet: Packet,
        confirmable: bool,
        observe: bool,
        expires_in: Duration,
        label: RequestLabel,
    ) -> Result<InFlight, RequestError> {
        let (reply, rx) = oneshot::channel();
        let (accepted, accepted_rx) = oneshot::channel();
        let now = Instant::now();
        let expires_at = now
            .checked_add(expires_in)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.commands
            .send(Command::Request {
                endpoint: endpoint.to_string(),
                packet,
                confirmable,
                observe,
                expires_at,
                label,
                accepted,
                reply,
            })
            .await
            .map_err(|_| RequestError::Stopped)?;
        if accepted_rx.await.is_ok() {
            return Ok(InFlight { reply: rx });
        }
        // Not accepted: the reply says why.
        match rx.await {
            Ok(Err(e)) => Err(e),
            _ => Err(RequestError::Stopped),
        }
    }

    /// Ends an observation actively (RFC 7641 §3.6): `packet` (the GET with
    /// Observe=1 of the original request) goes to the device with the
    /// observation's token; the stored observation is deleted first, so a
    /// notification crossing the cancel is refused. Answers the device's
    /// response, or [`RequestError::NotObserved`] for an unknown token.
    pub async fn cancel_observation(
        &self,
        token: &[u8],
        packet: Packet,
    ) -> Result<Packet, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::CancelObservation {
                token: token.to_vec(),
                packet,
                reply,
            })
            .await
            .map_err(|_| RequestError::Stopped)?;
        rx.await
            .map_err(|_| RequestError::Stopped)?
            .map(|r| r.packet)
    }

    /// The current registration of an endpoint, if it is registered.
    pub async fn registration(&self, endpoint_name: &str) -> Option<Registration> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Registration {
                endpoint: endpoint_name.to_string(),
                reply,
            })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Stops the server and waits until its thread has let go of the socket and the store.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
        self.firmware.store.close();
    }
}
