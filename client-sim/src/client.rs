//! The tokio driver around the sans-IO CoAP [`Endpoint`] and the DM [`Core`]:
//! it owns the UDP socket and the clock, registers, updates, de-registers,
//! sleeps in queue mode, and turns the [`ClientHandle`]'s commands into
//! requests.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use lwm2m_objects::{ContentFormat, Node, Path, Value, Version};
use lwm2m_server::coap::{Endpoint, Event, FailReason, RequestId};
use lwm2m_server::dtls::{DtlsClient, DtlsClientContext};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::device::DeviceNote;
use crate::firmware::download::{self, Progress};
use crate::firmware::{FwCommand, FwState, UpdateResult};
use crate::network::{send_shaped, Shaper};
use crate::ops::{encode_uint, Action, Core, Operation};
use crate::park::{Capture, ParkError, Parked, Timers};
use crate::rng::Rng;
use crate::store::OpError;
use crate::transport::{code_text, recv_datagram, request_packet, uri_path};

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(String),
    #[error("the client task has stopped")]
    Stopped,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the server answered {0}")]
    Rejected(String),
    #[error("request failed: {0:?}")]
    Failed(FailReason),
    #[error("CoAP: {0}")]
    Coap(String),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Park(#[from] ParkError),
}

/// What the client reports to tests and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Registered; the server's location (`/rd/...`).
    Registered {
        location: String,
    },
    RegistrationFailed {
        reason: String,
    },
    Updated,
    UpdateFailed {
        reason: String,
    },
    Deregistered,
    /// A DM request from the server was answered.
    Operation {
        operation: Operation,
        method: String,
        path: String,
        code: String,
    },
    /// A notification went out.
    Notified {
        seq: u32,
    },
    /// The server reset a notification: the observation is gone.
    ObservationCancelled,
    /// Queue mode: the socket is closed until the next wake.
    Sleeping,
    /// Queue mode: awake again, on this local address.
    Awake {
        local: SocketAddr,
    },
    /// A fleet device fell asleep and its driver ended, handing what the device must
    /// remember to the fleet ([`crate::park`]), which starts a client again from it at
    /// the wake time. This handle reaches nobody from now on.
    Parked,
    Rebooting,
    /// Object 5 entered this State (/5/0/3) and Update Result (/5/0/5):
    /// one event per change, in order.
    FirmwareState {
        state: FwState,
        result: UpdateResult,
    },
    /// A CoAP download wrote Block2 block `num` (of `len` bytes) to the
    /// package buffer.
    FirmwareBlock {
        num: u32,
        len: usize,
    },
    /// An HTTP download sent a GET, with `Range: bytes=from-` unless `from`
    /// is 0.
    FirmwareHttpGet {
        from: usize,
    },
    /// The configured interruption paused the download after `offset` bytes.
    FirmwareDownloadPaused {
        offset: usize,
    },
    /// The download gave up; Update Result says how it counts.
    FirmwareDownloadFailed {
        reason: String,
    },
    /// The installation finished; `version` is what /3/0/3 says now (still
    /// the old one on a lying device). The device reboots next.
    FirmwareUpdated {
        version: String,
    },
    /// The driver stopped.
    Stopped,
}

/// Where the client is in its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Unregistered,
    Registered { location: String },
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

enum Command {
    Read(Path, Reply<Node>),
    Set(Path, Value, Reply<()>),
    Update(Reply<()>),
    Send(Vec<Path>, Reply<()>),
    Sleep(Reply<()>),
    Wake(Reply<()>),
    Shutdown(Reply<()>),
    LocalAddr(Reply<Option<SocketAddr>>),
}

/// Handle to a running client. Dropping it does not stop the client; call
/// [`shutdown`](ClientHandle::shutdown).
#[derive(Clone)]
pub struct ClientHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<ClientEvent>,
    status: watch::Receiver<Status>,
}

/// Entry point of the library.
pub struct Client;

/// Room for the content-format framing of a pushed package (TLV or SenML
/// headers) on top of its bytes.
const PUSH_FRAMING: usize = 64 * 1024;

/// Tells the driver's draws (sleep jitter, reboots, its socket's link) from the
/// device's sensor draws, which start from the same seed.
const DRIVER_SALT: u64 = 0xD41E;

/// When the next reboot of its own is due, for a device that has them.
fn next_reboot(rng: &mut Rng, mean: Option<Duration>, now: Instant) -> Option<Instant> {
    let mean = mean?.as_secs_f64();
    // The exponential's tail cut at 20 means (a chance of 2e-9): a far draw must not
    // reach past what the clock holds.
    let wait = rng.exponential(mean).min(mean * 20.0).max(0.001);
    now.checked_add(Duration::try_from_secs_f64(wait).ok()?)
}

/// Where a fleet device's driver hands its state when the device falls asleep.
pub(crate) trait ParkingLot: Send + Sync {
    /// Takes the record of device `index`, or gives it back when parking is over (the
    /// fleet is shutting down): the device then sleeps as a running client.
    fn park(&self, index: u32, parked: Box<Parked>) -> Result<(), Box<Parked>>;
}

/// A fleet device's way to its [`ParkingLot`].
#[derive(Clone)]
pub(crate) struct ParkHook {
    pub(crate) index: u32,
    pub(crate) lot: Arc<dyn ParkingLot>,
}

/// Where a driver starts from: a new device, or a parked one.
struct Start {
    core: Core,
    socket: Option<Arc<UdpSocket>>,
    location: Option<String>,
    rng: Rng,
    timers: Timers,
    last_local: Option<SocketAddr>,
    /// The last message id the device used, when it used one before parking.
    last_mid: Option<u16>,
    wakes: u32,
    objects_changed: bool,
}

impl Client {
    /// Binds the socket, fills the object tree and starts registering.
    pub async fn start(config: Config) -> Result<ClientHandle, ClientError> {
        Client::start_parking(config, None).await
    }

    /// [`start`](Client::start) for a fleet device that parks when it falls asleep in
    /// queue mode.
    pub(crate) async fn start_parking(
        config: Config,
        park: Option<ParkHook>,
    ) -> Result<ClientHandle, ClientError> {
        let socket = UdpSocket::bind(config.bind)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let core = Core::new(config.clone())?;
        let mut rng = Rng::derive(
            config
                .profile
                .seed
                .unwrap_or_else(|| crate::device::endpoint_seed(&config.endpoint)),
            DRIVER_SALT,
        );
        let reboot_at = next_reboot(&mut rng, config.reboot_mean, Instant::now());
        let start = Start {
            core,
            socket: Some(Arc::new(socket)),
            location: None,
            rng,
            timers: Timers {
                reboot_at,
                ..Timers::default()
            },
            last_local: None,
            last_mid: None,
            wakes: 0,
            objects_changed: false,
        };
        Client::launch(config, start, park)
    }

    /// Starts a parked device again, asleep: it wakes at its wake time (or its
    /// lifetime's Update, or its reboot, whichever comes first) as a client that never
    /// stopped would, with an Update from a new socket. `config` is the one it was
    /// started with. The sensors first catch up with the time it slept.
    pub(crate) fn resume(
        config: Config,
        parked: Parked,
        park: Option<ParkHook>,
    ) -> Result<ClientHandle, ClientError> {
        let mut r = parked.restore(config.clone())?;
        let slept = Instant::now().saturating_duration_since(r.parked_at);
        if let Err(e) = r
            .core
            .device
            .catch_up(&mut r.core.store, slept, config.tick)
        {
            tracing::warn!(error = %e, "sensor catch-up failed");
        }
        let last_local = r
            .last_port
            .map(|port| SocketAddr::new(config.bind.ip(), port));
        let start = Start {
            core: r.core,
            socket: None,
            location: Some(r.location),
            rng: r.driver_rng,
            timers: r.timers,
            last_local,
            last_mid: r.last_mid,
            wakes: r.wakes.saturating_add(1),
            objects_changed: r.objects_changed,
        };
        Client::launch(config, start, park)
    }

    fn launch(
        config: Config,
        start: Start,
        park: Option<ParkHook>,
    ) -> Result<ClientHandle, ClientError> {
        // A pushed package arrives as one Block1 body: the endpoint must be
        // able to reassemble the largest the device stores, also when a text
        // format carries it as base64.
        let max_package = config.firmware.max_package_size;
        let mut coap = config.coap.clone();
        coap.max_body = coap.max_body.max(
            max_package
                .saturating_add(max_package / 3)
                .saturating_add(PUSH_FRAMING),
        );
        let (fw_tx, fw_rx) = mpsc::channel(16);
        let fw_settings = Arc::new(download::Settings {
            bind: config.bind,
            coap: config.coap.clone(),
            psk: config.psk.clone(),
            certificate: config.certificate.clone(),
            firmware: config.firmware.clone(),
            link: config.link.clone(),
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, _) = broadcast::channel(config.event_capacity.max(1));
        let status = match &start.location {
            Some(location) => Status::Registered {
                location: location.clone(),
            },
            None => Status::Unregistered,
        };
        let (st_tx, st_rx) = watch::channel(status);
        let seed = match start.last_mid {
            Some(last) => crate::park::seed_after(last, crate::transport::rng_seed()),
            None => crate::transport::rng_seed(),
        };
        let retransmit = config.coap.ack_timeout;
        let dtls_context = crate::transport::dtls_context(
            config.psk.as_ref(),
            config.certificate.as_ref(),
            retransmit,
        )
        .map_err(|e| ClientError::Io(format!("DTLS: {e}")))?;
        let dtls = dtls_context
            .as_ref()
            .map(DtlsClientContext::connect)
            .transpose()
            .map_err(|e| ClientError::Io(format!("DTLS: {e}")))?;
        let now = Instant::now();
        let asleep = start.socket.is_none();
        // A parked device's sensors caught up with its sleep already.
        let first_tick = if asleep { now + config.tick } else { now };
        // Each wake draws its link conditions afresh, not the first wake's again.
        let salt = DRIVER_SALT ^ (u64::from(start.wakes) << 32);
        let driver = Driver {
            shaper: Shaper::for_conditions(config.link.as_ref(), salt),
            rng: start.rng,
            reboot_at: start.timers.reboot_at,
            endpoint: Endpoint::new(coap, seed),
            socket: start.socket,
            dtls,
            dtls_context,
            core: start.core,
            config,
            commands: cmd_rx,
            events: ev_tx.clone(),
            status: st_tx,
            pending: HashMap::new(),
            register_at: start.location.is_none().then_some(now),
            location: start.location,
            update_at: start.timers.update_at,
            tick_at: first_tick,
            observe_at: now,
            awake_until: None,
            asleep,
            last_local: start.last_local,
            wake_at: start.timers.wake_at,
            objects_changed: start.objects_changed,
            notification_mids: VecDeque::new(),
            shutdown: None,
            done: false,
            fw_tx,
            fw_rx,
            fw_task: None,
            fw_settings,
            park,
            parked: false,
            wakes: start.wakes,
            hold_notifications: false,
            last_mid: start.last_mid,
        };
        tokio::spawn(driver.run());
        Ok(ClientHandle {
            commands: cmd_tx,
            events: ev_tx,
            status: st_rx,
        })
    }
}

impl ClientHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ClientError::Stopped)?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until registered; returns the server's location.
    pub async fn wait_registered(&self, timeout: Duration) -> Result<String, ClientError> {
        let mut rx = self.status.clone();
        let fut = async {
            rx.wait_for(|s| matches!(s, Status::Registered { .. } | Status::Stopped))
                .await
                .map(|s| s.clone())
        };
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(ClientError::Timeout("registration")),
            Ok(Err(_)) => Err(ClientError::Stopped),
            Ok(Ok(Status::Registered { location })) => Ok(location),
            Ok(Ok(_)) => Err(ClientError::Stopped),
        }
    }

    /// The local value at `path`, as the device sees it (no operation checks).
    pub async fn read(&self, path: Path) -> Result<Node, ClientError> {
        self.call(|r| Command::Read(path, r)).await
    }

    /// Sets a local value (a sensor reading), type-checked against the model;
    /// observations see the change.
    pub async fn set(&self, path: Path, value: Value) -> Result<(), ClientError> {
        self.call(|r| Command::Set(path, value, r)).await
    }

    /// Sends an Update now and waits for the answer.
    pub async fn update(&self) -> Result<(), ClientError> {
        self.call(Command::Update).await
    }

    /// Send operation (`POST /dp`) with the current values of `paths`.
    pub async fn send(&self, paths: Vec<Path>) -> Result<(), ClientError> {
        self.call(|r| Command::Send(paths, r)).await
    }

    /// Queue mode: go to sleep now.
    pub async fn sleep(&self) -> Result<(), ClientError> {
        self.call(Command::Sleep).await
    }

    /// Queue mode: wake now (sends an Update).
    pub async fn wake(&self) -> Result<(), ClientError> {
        self.call(Command::Wake).await
    }

    /// The local socket address, `None` while asleep.
    pub async fn local_addr(&self) -> Result<Option<SocketAddr>, ClientError> {
        self.call(Command::LocalAddr).await
    }

    /// De-registers (if registered) and stops the client.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.call(Command::Shutdown).await
    }
}

enum Pending {
    Register,
    Update(Option<Reply<()>>),
    Deregister,
    Send(Reply<()>),
}

struct Driver {
    endpoint: Endpoint,
    socket: Option<Arc<UdpSocket>>,
    /// The link conditions applied to the socket's datagrams, when the device has any.
    shaper: Option<Shaper>,
    rng: Rng,
    /// The next reboot of the device's own accord.
    reboot_at: Option<Instant>,
    /// The DTLS session to the server, when the client uses one, and what its sessions
    /// share (credentials, the session to resume).
    dtls: Option<DtlsClient>,
    dtls_context: Option<DtlsClientContext>,
    core: Core,
    config: Config,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<ClientEvent>,
    status: watch::Sender<Status>,
    pending: HashMap<RequestId, Pending>,
    location: Option<String>,
    update_at: Option<Instant>,
    register_at: Option<Instant>,
    tick_at: Instant,
    observe_at: Instant,
    awake_until: Option<Instant>,
    asleep: bool,
    /// The address we had before sleeping, to wake on the same port.
    last_local: Option<SocketAddr>,
    wake_at: Option<Instant>,
    objects_changed: bool,
    /// Message ids of recent notifications, to recognise an RST to one.
    notification_mids: VecDeque<(u16, Vec<u8>)>,
    shutdown: Option<(Reply<()>, Instant)>,
    done: bool,
    /// Progress of the firmware download task comes back on this channel.
    fw_tx: mpsc::Sender<Progress>,
    fw_rx: mpsc::Receiver<Progress>,
    fw_task: Option<tokio::task::JoinHandle<()>>,
    fw_settings: Arc<download::Settings>,
    /// A fleet device's way to park when it falls asleep.
    park: Option<ParkHook>,
    /// The driver handed its device to the fleet and is ending.
    parked: bool,
    /// Times this device was taken up again after parking.
    wakes: u32,
    /// After a wake, notifications wait for the answer to the Update: until then the
    /// server does not know the new address they come from.
    hold_notifications: bool,
    /// The message id of the last CON or NON message sent, which a parked device
    /// continues from.
    last_mid: Option<u16>,
}

/// What woke the driver loop.
enum Wake {
    Datagram(Vec<u8>, SocketAddr),
    Timer,
    Command(Option<Command>),
    Firmware(Option<Progress>),
    SocketError,
}

async fn recv(socket: Option<Arc<UdpSocket>>) -> Wake {
    let Some(s) = socket else {
        return std::future::pending().await;
    };
    match recv_datagram(&s).await {
        Ok((bytes, peer)) => Wake::Datagram(bytes, peer),
        Err(_) => Wake::SocketError,
    }
}

impl Driver {
    fn emit(&self, e: ClientEvent) {
        let _ = self.events.send(e);
    }

    async fn run(mut self) {
        // Bounded per iteration: each pass handles one wake-up and drains the
        // endpoint's queues, which only hold what that wake-up produced.
        while !self.done {
            self.flush().await;
            let now = Instant::now();
            let deadline = self.next_deadline(now);
            let socket = self.socket.clone();
            let wake = tokio::select! {
                w = recv(socket) => w,
                c = self.commands.recv() => Wake::Command(c),
                p = self.fw_rx.recv() => Wake::Firmware(p),
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            let now = Instant::now();
            match wake {
                Wake::Datagram(bytes, peer) => match self.shaper.as_mut() {
                    Some(s) => s.inbound(now, bytes, peer),
                    None => self.receive(now, peer, &bytes),
                },
                Wake::Timer => {}
                Wake::Firmware(Some(p)) => self.on_firmware_progress(now, p),
                Wake::Firmware(None) => {}
                Wake::Command(Some(c)) => self.on_command(now, c),
                Wake::Command(None) => {
                    // Every handle is gone: nobody can stop us later, so stop now.
                    self.begin_shutdown(now, None);
                }
                Wake::SocketError => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // Bounded by what the shaper holds, which is bounded.
            while let Some((bytes, peer)) = self.shaper.as_mut().and_then(|s| s.pop_due(now)) {
                self.receive(now, peer, &bytes);
            }
            self.on_timers(Instant::now());
        }
        if let Some(t) = self.fw_task.take() {
            t.abort();
        }
        self.flush().await;
        if self.parked {
            // Still registered; the fleet holds the rest.
            self.emit(ClientEvent::Parked);
            return;
        }
        let _ = self.status.send(Status::Stopped);
        self.emit(ClientEvent::Stopped);
    }

    /// A datagram from the socket, once the link conditions let it through.
    fn receive(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        match self.dtls.as_mut() {
            Some(d) if peer == self.config.server => {
                for plaintext in d.handle_datagram(bytes) {
                    self.on_datagram(now, peer, &plaintext);
                }
            }
            // Over DTLS, nothing else speaks for the server.
            Some(_) => {}
            None => self.on_datagram(now, peer, bytes),
        }
    }

    async fn flush(&mut self) {
        // Bounded: each pass sends what the endpoint queued; handling events
        // only queues answers to them.
        for _ in 0..64 {
            while let Some(t) = self.endpoint.poll_transmit() {
                // CON and NON carry ids of our own; ACK and RST echo the server's.
                if let [first, _, hi, lo, ..] = t.bytes[..] {
                    if first >> 4 & 3 <= 1 {
                        self.last_mid = Some(u16::from_be_bytes([hi, lo]));
                    }
                }
                // Only something to say makes a device shake hands again.
                self.renew_dtls_if_over();
                match self.dtls.as_mut() {
                    Some(d) => d.send(&t.bytes),
                    None => {
                        if let Some(s) = &self.socket {
                            send_shaped(s, self.shaper.as_mut(), &t.bytes, t.peer).await;
                        }
                    }
                }
            }
            let records = self.dtls.as_mut().map(DtlsClient::poll_transmit);
            if let (Some(records), Some(s)) = (records, &self.socket) {
                for r in records {
                    send_shaped(s, self.shaper.as_mut(), &r, self.config.server).await;
                }
            }
            let Some(ev) = self.endpoint.poll_event() else {
                break;
            };
            self.on_event(Instant::now(), ev);
        }
    }

    fn next_deadline(&mut self, now: Instant) -> Instant {
        let far = now + Duration::from_secs(3600);
        let mut candidates = vec![
            self.endpoint.poll_timeout(),
            self.core.firmware.next_deadline(),
            self.dtls.as_ref().and_then(|d| d.poll_timeout(now)),
        ];
        candidates.push(Some(self.tick_at));
        if !self.core.observations.is_empty() && !self.asleep && !self.hold_notifications {
            candidates.push(Some(self.observe_at));
        }
        candidates.extend([
            self.shaper.as_ref().and_then(Shaper::next_due),
            self.reboot_at,
            self.update_at,
            self.register_at,
            self.awake_until,
            self.wake_at,
            self.shutdown.as_ref().map(|s| s.1),
        ]);
        candidates
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far)
            .max(now)
    }

    fn on_timers(&mut self, now: Instant) {
        if self.parked {
            return;
        }
        self.endpoint.handle_timeout(now);
        if let Some(d) = self.dtls.as_mut() {
            d.handle_timeout();
        }
        if let Some(note) = self.core.firmware.poll(&mut self.core.store, now) {
            let DeviceNote::FirmwareUpdated(version) = note;
            // The device restarts on its new firmware: whoever observed the
            // old one must observe again after the Register.
            self.emit_firmware_changes();
            self.emit(ClientEvent::FirmwareUpdated { version });
            self.reboot(now);
        }
        self.apply_firmware(now);
        if self.tick_at <= now {
            if let Err(e) = self
                .core
                .device
                .tick(&mut self.core.store, self.config.tick)
            {
                tracing::warn!(error = %e, "sensor step failed");
            }
            self.tick_at = now + self.config.tick;
        }
        if self.observe_at <= now && !self.asleep && !self.hold_notifications {
            self.send_notifications(now);
        }
        if self.register_at.is_some_and(|t| t <= now) && !self.asleep {
            self.register_at = None;
            self.register(now);
        }
        if self.update_at.is_some_and(|t| t <= now) {
            self.update_at = None;
            if self.asleep {
                self.wake(now);
            } else {
                self.send_update(now, None);
            }
        }
        if self.wake_at.is_some_and(|t| t <= now) && self.asleep {
            self.wake(now);
        }
        if self.awake_until.is_some_and(|t| t <= now) && !self.asleep {
            if self.pending.is_empty() && self.shutdown.is_none() {
                self.go_to_sleep(now);
                if self.parked {
                    return;
                }
            } else {
                // Never sleep in the middle of an exchange of ours.
                self.awake_until = Some(now + self.config.awake_window);
            }
        }
        if self.reboot_at.is_some_and(|t| t <= now) && self.shutdown.is_none() {
            self.reboot_at = next_reboot(&mut self.rng, self.config.reboot_mean, now);
            self.reboot(now);
        }
        if let Some((_, deadline)) = &self.shutdown {
            if *deadline <= now {
                self.finish_shutdown(Err(ClientError::Timeout("de-registration")));
            }
        }
    }

    /// Sends the notifications that are due now.
    fn send_notifications(&mut self, now: Instant) {
        self.observe_at = now + self.config.observe_poll;
        for n in self.core.poll_notifications(now) {
            let seq = n.packet.get_observe_value().and_then(Result::ok);
            match self
                .endpoint
                .notify(now, n.peer, &n.token, n.packet, n.confirmable)
            {
                Ok(mid) => {
                    self.notification_mids.push_back((mid, n.token));
                    if self.notification_mids.len() > 256 {
                        self.notification_mids.pop_front();
                    }
                    if let Some(seq) = seq {
                        self.emit(ClientEvent::Notified { seq });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "notification not sent"),
            }
        }
    }

    /// Reports the firmware's state changes as events; whether there were any.
    fn emit_firmware_changes(&mut self) -> bool {
        let changes = self.core.firmware.take_changes();
        for (state, result) in &changes {
            self.emit(ClientEvent::FirmwareState {
                state: *state,
                result: *result,
            });
        }
        !changes.is_empty()
    }

    /// Does what the firmware state machine asked for (start or stop the
    /// download task) and reports its state changes at once: observers of
    /// /5/0/3 and /5/0/5 must see every state, not only the one a later
    /// observation poll finds.
    fn apply_firmware(&mut self, now: Instant) {
        for c in self.core.firmware.take_commands() {
            if let Some(t) = self.fw_task.take() {
                t.abort();
            }
            if let FwCommand::Start(job) = c {
                let task = download::run(job, self.fw_settings.clone(), self.fw_tx.clone());
                self.fw_task = Some(tokio::spawn(task));
            }
        }
        if self.emit_firmware_changes() && !self.asleep && !self.hold_notifications {
            self.send_notifications(now);
        }
    }

    fn on_firmware_progress(&mut self, now: Instant, p: Progress) {
        let fw = &mut self.core.firmware;
        let store = &mut self.core.store;
        match p {
            Progress::Block {
                attempt,
                offset,
                num,
                data,
            } if fw.is_current(attempt) => {
                if let Some(num) = num {
                    self.emit(ClientEvent::FirmwareBlock {
                        num,
                        len: data.len(),
                    });
                }
                self.core
                    .firmware
                    .on_block(&mut self.core.store, attempt, offset, &data);
            }
            Progress::HttpGet { attempt, from } if fw.is_current(attempt) => {
                self.emit(ClientEvent::FirmwareHttpGet { from });
            }
            Progress::Paused { attempt, offset } if fw.is_current(attempt) => {
                self.emit(ClientEvent::FirmwareDownloadPaused { offset });
            }
            Progress::Done { attempt } if fw.is_current(attempt) => {
                self.fw_task = None;
                fw.on_download_done(store, attempt);
            }
            Progress::Failed {
                attempt,
                result,
                reason,
            } if fw.is_current(attempt) => {
                self.fw_task = None;
                fw.on_download_failed(store, attempt, result);
                self.emit(ClientEvent::FirmwareDownloadFailed { reason });
            }
            // Of a download stopped since.
            _ => {}
        }
        self.apply_firmware(now);
    }

    /// Restarts the device: observations are gone, and it registers afresh
    /// (same endpoint name) once it has booted.
    fn reboot(&mut self, now: Instant) {
        self.emit(ClientEvent::Rebooting);
        self.core.clear_observations();
        self.location = None;
        self.update_at = None;
        let _ = self.status.send(Status::Unregistered);
        if self.asleep {
            // A device that boots is awake; without a registration, waking
            // only opens the socket.
            self.wake(now);
        }
        self.register_at = Some(now + self.config.reboot_delay);
    }

    fn on_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        // An RST to one of our notifications cancels that observation
        // (RFC 7641 §3.6); the endpoint itself reports no event for it.
        if let [first, 0, hi, lo] = *bytes {
            if first >> 4 & 3 == 3 {
                let mid = u16::from_be_bytes([hi, lo]);
                if let Some(pos) = self.notification_mids.iter().position(|(m, _)| *m == mid) {
                    if let Some((_, token)) = self.notification_mids.remove(pos) {
                        if self.core.cancel_observation(peer, &token) {
                            self.emit(ClientEvent::ObservationCancelled);
                        }
                    }
                }
            }
        }
        self.endpoint.handle_datagram(now, peer, bytes);
        if self.config.queue_mode {
            self.extend_awake(now);
        }
    }

    fn extend_awake(&mut self, now: Instant) {
        if self.config.queue_mode && !self.asleep && self.location.is_some() {
            self.awake_until = Some(now + self.config.awake_window);
        }
    }

    fn on_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::Request { id, peer, packet } => {
                let (resp, operation, actions) = self.core.handle(now, peer, &packet);
                let method = match packet.header.code {
                    MessageClass::Request(m) => format!("{m:?}"),
                    _ => String::new(),
                };
                let path = uri_path(&packet);
                let code = code_text(&resp);
                if let Err(e) = self.endpoint.respond(now, id, resp) {
                    tracing::warn!(error = %e, "response not sent");
                }
                self.emit(ClientEvent::Operation {
                    operation,
                    method,
                    path,
                    code,
                });
                self.extend_awake(now);
                for a in actions {
                    match a {
                        Action::ObjectsChanged => {
                            self.objects_changed = true;
                            self.send_update(now, None);
                        }
                        Action::TriggerUpdate => self.send_update(now, None),
                        Action::Reboot => self.reboot(now),
                    }
                }
                self.apply_firmware(now);
            }
            Event::Response {
                request_id, packet, ..
            } => self.on_response(now, request_id, Ok(packet)),
            Event::RequestFailed { request_id, reason } => {
                self.on_response(now, request_id, Err(reason))
            }
            Event::Notification { .. } | Event::ObservationCancelled { .. } => {}
        }
    }

    fn on_response(&mut self, now: Instant, id: RequestId, result: Result<Packet, FailReason>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        let code = result.as_ref().ok().map(|p| p.header.code);
        let ok = |c: ResponseType| code == Some(MessageClass::Response(c));
        let describe = || match &result {
            Ok(p) => format!(
                "{} {}",
                code_text(p),
                String::from_utf8_lossy(&p.payload)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
            Err(r) => format!("{r:?}"),
        };
        match pending {
            Pending::Register => {
                let location = result.as_ref().ok().and_then(|p| {
                    p.get_option(CoapOption::LocationPath).map(|segs| {
                        segs.iter()
                            .map(|s| format!("/{}", String::from_utf8_lossy(s)))
                            .collect::<String>()
                    })
                });
                match (ok(ResponseType::Created), location) {
                    (true, Some(location)) if !location.is_empty() => {
                        self.location = Some(location.clone());
                        self.objects_changed = false;
                        self.schedule_update(now);
                        self.extend_awake(now);
                        let _ = self.status.send(Status::Registered {
                            location: location.clone(),
                        });
                        self.emit(ClientEvent::Registered { location });
                    }
                    _ => {
                        self.emit(ClientEvent::RegistrationFailed { reason: describe() });
                        self.register_at = Some(now + self.config.registration_retry);
                    }
                }
            }
            Pending::Update(reply) => {
                self.hold_notifications = false;
                if ok(ResponseType::Changed) {
                    self.schedule_update(now);
                    self.extend_awake(now);
                    self.emit(ClientEvent::Updated);
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                } else {
                    let reason = describe();
                    self.emit(ClientEvent::UpdateFailed {
                        reason: reason.clone(),
                    });
                    if let Some(r) = reply {
                        let _ = r.send(Err(ClientError::Rejected(reason)));
                    }
                    // 4.04 or no answer: the registration is gone; register anew.
                    self.location = None;
                    let _ = self.status.send(Status::Unregistered);
                    self.core.clear_observations();
                    self.register_at = Some(now);
                }
            }
            Pending::Deregister => {
                self.location = None;
                self.emit(ClientEvent::Deregistered);
                let r = if ok(ResponseType::Deleted) {
                    Ok(())
                } else {
                    Err(ClientError::Rejected(describe()))
                };
                self.finish_shutdown(r);
            }
            Pending::Send(reply) => {
                let r = match (&result, ok(ResponseType::Changed)) {
                    (_, true) => Ok(()),
                    (Err(reason), _) => Err(ClientError::Failed(*reason)),
                    (Ok(_), false) => Err(ClientError::Rejected(describe())),
                };
                let _ = reply.send(r);
            }
        }
    }

    /// The next Update goes out well before the lifetime ends: at 3/4 of it,
    /// leaving the rest for retransmissions.
    fn schedule_update(&mut self, now: Instant) {
        let lt = u64::from(self.core.config.lifetime);
        self.update_at =
            (lt > 0).then(|| now + Duration::from_millis((lt * 1000 * 3 / 4).max(500)));
    }

    fn send(&mut self, now: Instant, packet: Packet, pending: Pending) -> Result<(), ClientError> {
        let id = self
            .endpoint
            .send_request(now, self.config.server, packet, true)
            .map_err(|e| ClientError::Coap(e.to_string()))?;
        self.pending.insert(id, pending);
        Ok(())
    }

    fn register(&mut self, now: Instant) {
        let c = &self.core.config;
        let mut queries = vec![
            format!("ep={}", c.endpoint),
            format!("lt={}", c.lifetime),
            format!("lwm2m={}", c.version),
            format!("b={}", c.binding()),
        ];
        if c.queue_mode && c.version != Version::V1_0 {
            queries.push("Q".into());
        }
        let mut p = request_packet(RequestType::Post, "/rd", &queries);
        p.add_option(
            CoapOption::ContentFormat,
            encode_uint(u32::from(ContentFormat::LinkFormat.code())),
        );
        p.payload = self.core.registration_payload().into_bytes();
        self.core.clear_observations();
        if let Err(e) = self.send(now, p, Pending::Register) {
            self.emit(ClientEvent::RegistrationFailed {
                reason: e.to_string(),
            });
            self.register_at = Some(now + self.config.registration_retry);
        }
    }

    fn send_update(&mut self, now: Instant, reply: Option<Reply<()>>) {
        let Some(location) = self.location.clone() else {
            if let Some(r) = reply {
                let _ = r.send(Err(ClientError::Rejected("not registered".into())));
            }
            return;
        };
        if self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Update(_)))
            && reply.is_none()
        {
            return; // one already in flight carries the same news
        }
        let lt = self.core.config.lifetime;
        let mut p = request_packet(RequestType::Post, &location, &[format!("lt={lt}")]);
        if self.objects_changed {
            p.add_option(
                CoapOption::ContentFormat,
                encode_uint(u32::from(ContentFormat::LinkFormat.code())),
            );
            p.payload = self.core.registration_payload().into_bytes();
            self.objects_changed = false;
        }
        if let Err(e) = self.send(now, p, Pending::Update(reply)) {
            self.hold_notifications = false;
            self.emit(ClientEvent::UpdateFailed {
                reason: e.to_string(),
            });
        }
    }

    fn go_to_sleep(&mut self, now: Instant) {
        self.awake_until = None;
        self.asleep = true;
        self.last_local = self.socket.as_ref().and_then(|s| s.local_addr().ok());
        self.socket = None;
        if let Some(s) = self.shaper.as_mut() {
            s.clear();
        }
        let base = self.config.sleep_duration;
        let jitter = self.config.sleep_jitter.clamp(0.0, 0.99);
        let sleep = if jitter > 0.0 {
            let factor = 1.0 + jitter * self.rng.signed();
            Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
        } else {
            base
        };
        // A sleep past what the clock holds is a sleep until the lifetime's Update.
        self.wake_at = now.checked_add(sleep);
        self.emit(ClientEvent::Sleeping);
        self.park(now);
    }

    /// A fleet device that fell asleep with nothing under way hands its state to the
    /// fleet and ends; one with work of its own (object 5 downloading or installing, an
    /// exchange, a registration to make, DTLS) sleeps as a running client.
    fn park(&mut self, now: Instant) {
        let Some(hook) = self.park.clone() else {
            return;
        };
        let Some(location) = self.location.as_deref() else {
            return;
        };
        let idle = self.asleep
            && self.config.queue_mode
            && self.register_at.is_none()
            && self.pending.is_empty()
            && self.shutdown.is_none()
            && self.dtls_context.is_none()
            && self.fw_task.is_none();
        if !idle {
            return;
        }
        let parked = Parked::capture(Capture {
            config: &self.config,
            core: &self.core,
            location,
            driver_rng: &self.rng,
            timers: Timers {
                wake_at: self.wake_at,
                update_at: self.update_at,
                reboot_at: self.reboot_at,
            },
            now,
            last_port: self.last_local.map(|a| a.port()),
            last_mid: self.last_mid,
            wakes: self.wakes,
            objects_changed: self.objects_changed,
        });
        match parked {
            Ok(p) => {
                if hook.lot.park(hook.index, Box::new(p)).is_ok() {
                    self.parked = true;
                    self.done = true;
                }
            }
            Err(ParkError::Busy(_)) => {}
            Err(e) => tracing::warn!(error = %e, "device not parked"),
        }
    }

    /// A session the server closed (idle, or after its restart a failed one) is
    /// replaced, resuming when the server still knows it.
    fn renew_dtls_if_over(&mut self) {
        let over = self
            .dtls
            .as_ref()
            .is_some_and(|d| d.is_established() && d.is_over());
        if !over {
            return;
        }
        if let (Some(ctx), Some(old)) = (self.dtls_context.as_mut(), self.dtls.as_ref()) {
            ctx.remember(old);
            match ctx.connect() {
                Ok(d) => {
                    tracing::debug!("DTLS session closed by the server; shaking hands again");
                    self.dtls = Some(d);
                }
                Err(e) => tracing::warn!(error = %e, "no new DTLS session"),
            }
        }
    }

    fn wake(&mut self, now: Instant) {
        self.wake_with(now, true);
    }

    /// Opens the socket again; with `update`, tells the server (a device that wakes to
    /// de-register has nothing to update).
    fn wake_with(&mut self, now: Instant, update: bool) {
        if !self.asleep {
            if update {
                self.send_update(now, None);
            }
            return;
        }
        let bind = if self.config.rebind_on_wake {
            self.config.bind
        } else {
            self.last_local.unwrap_or(self.config.bind)
        };
        let std_socket = std::net::UdpSocket::bind(bind)
            .or_else(|_| std::net::UdpSocket::bind(self.config.bind))
            .and_then(|s| s.set_nonblocking(true).map(|_| s));
        let socket = std_socket.and_then(UdpSocket::from_std);
        match socket {
            Ok(s) => {
                let local = s.local_addr().ok();
                self.socket = Some(Arc::new(s));
                // A new session, resuming the last one (the server may have dropped it
                // while we slept, and our address may have changed).
                if let Some(ctx) = self.dtls_context.as_mut() {
                    if let Some(old) = &self.dtls {
                        ctx.remember(old);
                    }
                    match ctx.connect() {
                        Ok(d) => self.dtls = Some(d),
                        Err(e) => tracing::warn!(error = %e, "no DTLS session after wake"),
                    }
                }
                self.asleep = false;
                self.wake_at = None;
                if let Some(local) = local {
                    self.emit(ClientEvent::Awake { local });
                }
                self.awake_until = Some(now + self.config.awake_window);
                if self.location.is_some() {
                    if update {
                        self.hold_notifications = true;
                        self.send_update(now, None);
                    }
                } else {
                    self.register_at = Some(now);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot bind on wake; retrying");
                self.wake_at = Some(now + Duration::from_secs(1));
            }
        }
    }

    fn on_command(&mut self, now: Instant, c: Command) {
        match c {
            Command::Read(p, r) => {
                let _ = r.send(
                    self.core
                        .store
                        .read(&p, crate::store::Actor::Device)
                        .map_err(ClientError::from),
                );
            }
            Command::Set(p, v, r) => {
                let _ = r.send(self.core.store.set(&p, v).map_err(ClientError::from));
            }
            Command::Update(r) => {
                if self.asleep {
                    self.wake(now);
                    let _ = r.send(Ok(()));
                } else {
                    self.send_update(now, Some(r));
                }
            }
            Command::Send(paths, r) => self.send_data(now, paths, r),
            Command::Sleep(r) => {
                if !self.asleep {
                    self.go_to_sleep(now);
                }
                let _ = r.send(Ok(()));
            }
            Command::Wake(r) => {
                self.wake(now);
                let _ = r.send(Ok(()));
            }
            Command::LocalAddr(r) => {
                let _ = r.send(Ok(self.socket.as_ref().and_then(|s| s.local_addr().ok())));
            }
            Command::Shutdown(r) => self.begin_shutdown(now, Some(r)),
        }
    }

    fn send_data(&mut self, now: Instant, paths: Vec<Path>, reply: Reply<()>) {
        let format = if matches!(
            self.config.format,
            ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::Lwm2mCbor
        ) {
            self.config.format
        } else {
            ContentFormat::SenmlCbor
        };
        let nodes: lwm2m_objects::format::Nodes = paths
            .iter()
            .filter_map(|p| {
                self.core
                    .store
                    .read(p, crate::store::Actor::Server)
                    .ok()
                    .map(|n| (*p, n))
            })
            .collect();
        let bytes = match self
            .core
            .codecs
            .get(format.code())
            .map_err(|e| e.to_string())
            .and_then(|c| {
                c.encode_nodes(&nodes, self.core.store.model())
                    .map_err(|e| e.to_string())
            }) {
            Ok(b) => b,
            Err(e) => {
                let _ = reply.send(Err(ClientError::Coap(e)));
                return;
            }
        };
        if self.asleep {
            self.wake(now);
        }
        let mut p = request_packet(RequestType::Post, "/dp", &[]);
        p.add_option(
            CoapOption::ContentFormat,
            encode_uint(u32::from(format.code())),
        );
        p.payload = bytes;
        let (tx, rx) = oneshot::channel();
        match self.send(now, p, Pending::Send(tx)) {
            Ok(()) => {
                tokio::spawn(async move {
                    let r = rx.await.unwrap_or(Err(ClientError::Stopped));
                    let _ = reply.send(r);
                });
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant, reply: Option<Reply<()>>) {
        let (tx, rx) = oneshot::channel();
        if let Some(r) = reply {
            tokio::spawn(async move {
                let _ = r.send(rx.await.unwrap_or(Ok(())));
            });
        }
        if self.shutdown.is_some() {
            let _ = tx.send(Ok(()));
            return;
        }
        let deadline = now + Duration::from_secs(10);
        match self.location.clone() {
            Some(location) => {
                if self.asleep {
                    self.wake_with(now, false);
                    self.update_at = None;
                    self.pending
                        .retain(|_, p| !matches!(p, Pending::Update(None)));
                }
                let p = request_packet(RequestType::Delete, &location, &[]);
                self.shutdown = Some((tx, deadline));
                if self.send(now, p, Pending::Deregister).is_err() {
                    self.finish_shutdown(Ok(()));
                }
            }
            None => {
                self.shutdown = Some((tx, deadline));
                self.finish_shutdown(Ok(()));
            }
        }
    }

    fn finish_shutdown(&mut self, result: Result<(), ClientError>) {
        if let Some(t) = self.fw_task.take() {
            t.abort();
        }
        // Status first, so that a caller woken by the reply sees it.
        let _ = self.status.send(Status::Stopped);
        if let Some((tx, _)) = self.shutdown.take() {
            let _ = tx.send(result);
        }
        self.location = None;
        self.done = true;
    }
}
