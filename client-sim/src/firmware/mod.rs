//! Firmware Update, object 5 (REG 5.xml v1.2), for real: the device pulls a
//! package from the Package URI (/5/0/1) over CoAP, CoAPS or HTTP, or takes
//! it pushed into Package (/5/0/0), checks it, and on Execute Update (/5/0/2)
//! "installs" it: /3/0/3 Firmware Version becomes the package's version and
//! the device reboots, registering afresh as a rebooted device does.
//!
//! [`Firmware`] is the state machine, without I/O: the DM operations of
//! [`crate::ops`] feed it, and it asks the client driver to start or stop a
//! download (a background task) whose blocks it writes to its package
//! buffer as they arrive. Every change of State (/5/0/3) or
//! Update Result (/5/0/5) is written to the object tree at once and reported
//! to the driver, which sends the notifications and a
//! [`ClientEvent::FirmwareState`](crate::ClientEvent::FirmwareState).
//!
//! The package format the device accepts is described in [`package`].
//!
//! What a pull looks like on the wire:
//!
//! - `coap://`, `coaps://`: confirmable GETs, one per Block2 block of
//!   [`FirmwareConfig::block_size`], numbered 0, 1, 2, ... and each asked for
//!   directly; the first on each connection carries `Size2: 0`; every
//!   request of one connection carries the same token. The device uses a
//!   socket of its own (for `coaps://` a DTLS session with its own PSK or
//!   certificate). Only 2.05 with the Block2 asked for is taken; a smaller
//!   block size chosen by the server is followed. A Size2 above
//!   [`FirmwareConfig::max_package_size`] fails at once with Update Result 2.
//!   A changed ETag starts again at block 0. After a pause or a failed try
//!   the download continues on a new socket at the block it stopped at.
//! - `http://`: a GET, after a pause or a broken connection
//!   `Range: bytes=N-` from the byte it stopped at, answered 206 (a 200
//!   starts again from byte 0). `https://` the same over TLS (the system
//!   OpenSSL), checking the server's certificate against
//!   [`FirmwareConfig::https_ca_pem`] or the system's roots.
//! - 4.04 or any other 4.xx (HTTP 4xx) ends the download with Update Result
//!   4; no answer, 5.xx or a broken connection is tried again
//!   [`FirmwareConfig::retries`] times first.
//!
//! Transitions (spec-facts §9; the failed download going back to Idle is
//! what Anjay does):
//!
//! | from | trigger | to, Update Result |
//! |---|---|---|
//! | any but Updating | non-empty URI written | Downloading, 0; or Idle, 7/9 if the URI is unusable |
//! | Downloading | download complete, package good | Downloaded, 0 |
//! | Downloading | package too large | Idle, 2 |
//! | Downloading | 4.04/404, or no answer after the retries | Idle, 4 |
//! | Downloading | not the package format / digest wrong | Idle, 6 / 5 |
//! | any but Updating | package pushed to /5/0/0 | Downloaded, 0 (after the same checks) |
//! | any but Updating | empty URI, or `\0` or nothing to /5/0/0 | Idle, 0, image deleted |
//! | Downloaded | Execute /5/0/2 | Updating, 0 |
//! | Updating | update time passed | Idle, 1, /3/0/3 = version, reboot and Register |
//! | any but Updating | Execute /5/0/10 | Idle, 10 |
//!
//! Writes to /5/0/0 or /5/0/1 and Cancel while Updating get 4.05, as does
//! Update outside Downloaded.

pub(crate) mod download;
pub mod package;
pub mod stats;
pub mod uri;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lwm2m_objects::{Path, Value};

use crate::device::DeviceNote;
use crate::store::{ObjectStore, OpError};
pub use package::{PackageError, PackageInfo};
pub use uri::{PackageUri, PackageUriError};

/// State (/5/0/3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FwState {
    Idle = 0,
    Downloading = 1,
    Downloaded = 2,
    Updating = 3,
}

impl FwState {
    pub fn code(self) -> i64 {
        self as i64
    }
}

/// Update Result (/5/0/5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateResult {
    Initial = 0,
    Success = 1,
    NotEnoughFlash = 2,
    OutOfRam = 3,
    ConnectionLost = 4,
    IntegrityFailure = 5,
    UnsupportedPackage = 6,
    InvalidUri = 7,
    UpdateFailed = 8,
    UnsupportedProtocol = 9,
    Cancelled = 10,
}

impl UpdateResult {
    pub fn code(self) -> i64 {
        self as i64
    }
}

/// Firmware Update Protocol Support (/5/0/8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Coap = 0,
    Coaps = 1,
    Http = 2,
    Https = 3,
    CoapTcp = 4,
    CoapTls = 5,
}

impl Protocol {
    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Coap | Protocol::CoapTcp => 5683,
            Protocol::Coaps | Protocol::CoapTls => 5684,
            Protocol::Http => 80,
            Protocol::Https => 443,
        }
    }

    /// Whether the simulator can download over it at all (CoAP over TCP and
    /// TLS are not written).
    pub fn implemented(self) -> bool {
        matches!(
            self,
            Protocol::Coap | Protocol::Coaps | Protocol::Http | Protocol::Https
        )
    }
}

/// Firmware Update Delivery Method (/5/0/9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryMethod {
    Pull = 0,
    Push = 1,
    Both = 2,
}

impl DeliveryMethod {
    pub fn code(self) -> i64 {
        self as i64
    }
    fn pull(self) -> bool {
        self != DeliveryMethod::Push
    }
    fn push(self) -> bool {
        self != DeliveryMethod::Pull
    }
}

/// A failure the device fakes, so that a server's handling of each Update
/// Result can be tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureMode {
    /// Result 2 once the first block (or the pushed package) arrives.
    OutOfStorage,
    /// Result 3 once the first block (or the pushed package) arrives.
    OutOfMemory,
    /// Result 4 once the first block arrives: the download stops for good.
    ConnectionLost,
    /// Result 5 at the package check, whatever the digest.
    Integrity,
    /// Result 6 at the package check, whatever the format.
    UnsupportedPackage,
    /// Result 7 on the URI write, whatever the URI.
    InvalidUri,
    /// Result 8 when the update time has passed: back to Downloaded, the old
    /// version stays (a failed installation keeps the image, spec-facts §9).
    UpdateFailed,
    /// Result 9 on the URI write, whatever the scheme.
    UnsupportedProtocol,
}

impl FailureMode {
    pub const ALL: [FailureMode; 8] = [
        FailureMode::OutOfStorage,
        FailureMode::OutOfMemory,
        FailureMode::ConnectionLost,
        FailureMode::Integrity,
        FailureMode::UnsupportedPackage,
        FailureMode::InvalidUri,
        FailureMode::UpdateFailed,
        FailureMode::UnsupportedProtocol,
    ];

    /// The name `--fw-fail` takes.
    pub fn name(self) -> &'static str {
        match self {
            FailureMode::OutOfStorage => "out-of-storage",
            FailureMode::OutOfMemory => "out-of-memory",
            FailureMode::ConnectionLost => "connection-lost",
            FailureMode::Integrity => "integrity",
            FailureMode::UnsupportedPackage => "unsupported-package",
            FailureMode::InvalidUri => "invalid-uri",
            FailureMode::UpdateFailed => "update-failed",
            FailureMode::UnsupportedProtocol => "unsupported-protocol",
        }
    }

    /// The Update Result the device ends with.
    pub fn result(self) -> UpdateResult {
        match self {
            FailureMode::OutOfStorage => UpdateResult::NotEnoughFlash,
            FailureMode::OutOfMemory => UpdateResult::OutOfRam,
            FailureMode::ConnectionLost => UpdateResult::ConnectionLost,
            FailureMode::Integrity => UpdateResult::IntegrityFailure,
            FailureMode::UnsupportedPackage => UpdateResult::UnsupportedPackage,
            FailureMode::InvalidUri => UpdateResult::InvalidUri,
            FailureMode::UpdateFailed => UpdateResult::UpdateFailed,
            FailureMode::UnsupportedProtocol => UpdateResult::UnsupportedProtocol,
        }
    }
}

impl std::fmt::Display for FailureMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--fw-fail` value that names no [`FailureMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown firmware failure mode {0:?}")]
pub struct UnknownFailureMode(pub String);

impl std::str::FromStr for FailureMode {
    type Err = UnknownFailureMode;

    fn from_str(s: &str) -> Result<FailureMode, UnknownFailureMode> {
        FailureMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownFailureMode(s.into()))
    }
}

/// Largest package by default: 16 MiB, a generous flash partition of a
/// constrained device.
pub const DEFAULT_MAX_PACKAGE_SIZE: usize = 16 << 20;

/// How the firmware object of one device behaves. The update time is
/// [`DeviceProfile::update_time`](crate::DeviceProfile::update_time).
#[derive(Debug, Clone)]
pub struct FirmwareConfig {
    /// Largest package the device stores; a larger one is Update Result 2.
    /// A push also needs the CoAP endpoint to reassemble it, so the client
    /// raises `coap.max_body` to fit it.
    pub max_package_size: usize,
    /// Block2 size of a CoAP download: a power of two from 16 to 1024 (other
    /// values are rounded down into that range).
    pub block_size: usize,
    /// Pause after each block (CoAP) or chunk (HTTP), to make a download last.
    pub block_delay: Duration,
    /// Further tries of a block (or HTTP request) after no answer, a 5.xx or
    /// a broken connection, before the download fails with Update Result 4.
    pub retries: u32,
    /// Wait before trying again after a 5.xx, an HTTP 5xx or a refused
    /// connection (a timeout has waited already).
    pub retry_delay: Duration,
    /// Connect and read timeout of an HTTP download.
    pub http_timeout: Duration,
    /// What /5/0/8 lists; a URI of another known scheme is Update Result 9.
    pub protocols: Vec<Protocol>,
    /// /5/0/9: a pull-only device refuses a Package write with 4.05, a
    /// push-only one a non-empty Package URI.
    pub delivery: DeliveryMethod,
    pub fail: Option<FailureMode>,
    /// A lying device: the update reports success but /3/0/3 keeps the old
    /// version, which a server must catch.
    pub lie: bool,
    /// Pause the download after this many blocks (for HTTP: this many times
    /// `block_size` bytes) for `interrupt_for`, closing the connection, then
    /// resume from the next block on a new one. State stays Downloading.
    pub interrupt_after_blocks: Option<u32>,
    pub interrupt_for: Duration,
    /// CA certificates (PEM) an `https://` server's certificate must chain to;
    /// `None`: the system's roots.
    pub https_ca_pem: Option<Vec<u8>>,
    /// Where downloads and installations are counted (benchmarks); `None`: nowhere.
    pub stats: Option<stats::StatsHandle>,
    /// Execute Update (/5/0/2) is answered 2.04 but does nothing this many times, as
    /// on a device that loses the command (a reboot race, a datagram acknowledged and
    /// dropped): the state stays Downloaded, and only a server that executes again
    /// gets the update installed.
    pub ignore_executes: u32,
}

impl Default for FirmwareConfig {
    fn default() -> Self {
        FirmwareConfig {
            max_package_size: DEFAULT_MAX_PACKAGE_SIZE,
            block_size: 1024,
            block_delay: Duration::ZERO,
            retries: 3,
            retry_delay: Duration::from_secs(1),
            http_timeout: Duration::from_secs(30),
            protocols: vec![Protocol::Coap, Protocol::Coaps, Protocol::Http],
            delivery: DeliveryMethod::Both,
            fail: None,
            lie: false,
            interrupt_after_blocks: None,
            interrupt_for: Duration::from_secs(1),
            https_ca_pem: None,
            stats: None,
            ignore_executes: 0,
        }
    }
}

impl FirmwareConfig {
    /// The Block2 size exponent (size = 2^(szx+4)).
    pub fn block_szx(&self) -> u8 {
        let size = self.block_size.clamp(16, 1024);
        (size.ilog2() - 4) as u8
    }
}

/// A download the driver must run.
#[derive(Debug, Clone)]
pub(crate) struct DownloadJob {
    /// Progress of an older download (stopped or replaced) carries another
    /// number and is ignored.
    pub attempt: u64,
    pub uri: PackageUri,
}

/// What the state machine asks of the driver.
#[derive(Debug, Clone)]
pub(crate) enum FwCommand {
    Start(DownloadJob),
    Stop,
}

fn p(r: u16) -> Path {
    Path::resource(5, 0, r)
}

/// Object 5 of a parked device: Idle or Downloaded, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FirmwareMemory {
    pub(crate) downloaded: bool,
    pub(crate) result: UpdateResult,
    /// What the Downloaded image is (version and size).
    pub(crate) package: Option<PackageInfo>,
}

/// The firmware update state machine of one device.
#[derive(Debug, Clone)]
pub struct Firmware {
    config: FirmwareConfig,
    update_time: Duration,
    dtls_credentials: bool,
    state: FwState,
    result: UpdateResult,
    /// The package buffer: blocks are appended as they arrive.
    image: Vec<u8>,
    package: Option<PackageInfo>,
    attempt: u64,
    /// Blocks written in the current download.
    blocks: u32,
    update_due: Option<Instant>,
    /// Executes ignored so far, of `config.ignore_executes`.
    executes_ignored: u32,
    commands: Vec<FwCommand>,
    changes: Vec<(FwState, UpdateResult)>,
}

impl Firmware {
    /// `dtls_credentials`: whether the device has a PSK or certificate for
    /// a `coaps://` download.
    pub fn new(config: FirmwareConfig, update_time: Duration, dtls_credentials: bool) -> Firmware {
        Firmware {
            config,
            update_time,
            dtls_credentials,
            state: FwState::Idle,
            result: UpdateResult::Initial,
            image: Vec::new(),
            package: None,
            attempt: 0,
            blocks: 0,
            update_due: None,
            executes_ignored: 0,
            commands: Vec::new(),
            changes: Vec::new(),
        }
    }

    pub fn config(&self) -> &FirmwareConfig {
        &self.config
    }

    pub fn state(&self) -> FwState {
        self.state
    }

    pub fn result(&self) -> UpdateResult {
        self.result
    }

    /// Bytes in the package buffer.
    pub fn image_len(&self) -> usize {
        self.image.len()
    }

    /// The initial values of /5/0.
    pub fn populate(&mut self, store: &mut ObjectStore) -> Result<(), OpError> {
        store.set(&p(1), Value::String(String::new()))?;
        store.set(&p(3), Value::Integer(FwState::Idle.code()))?;
        store.set(&p(5), Value::Integer(UpdateResult::Initial.code()))?;
        store.set(&p(6), Value::String(String::new()))?;
        store.set(&p(7), Value::String(String::new()))?;
        let protocols: BTreeMap<u16, Value> = (0u16..)
            .zip(
                self.config
                    .protocols
                    .iter()
                    .map(|p| Value::Integer(p.code())),
            )
            .collect();
        store.set_multiple(&p(8), protocols)?;
        store.set(&p(9), Value::Integer(self.config.delivery.code()))?;
        Ok(())
    }

    fn set(&mut self, store: &mut ObjectStore, state: FwState, result: UpdateResult) {
        if (state, result) != (self.state, self.result) {
            self.changes.push((state, result));
        }
        self.state = state;
        self.result = result;
        let _ = store.set(&p(3), Value::Integer(state.code()));
        let _ = store.set(&p(5), Value::Integer(result.code()));
    }

    /// Forgets the image and what it was.
    fn delete_image(&mut self, store: &mut ObjectStore) {
        self.image = Vec::new();
        self.package = None;
        self.blocks = 0;
        let _ = store.set(&p(6), Value::String(String::new()));
        let _ = store.set(&p(7), Value::String(String::new()));
    }

    /// Ends a download in progress; its late progress is ignored.
    fn stop_download(&mut self) {
        if self.state == FwState::Downloading {
            self.commands.push(FwCommand::Stop);
        }
        self.attempt += 1;
    }

    fn fail(&mut self, store: &mut ObjectStore, result: UpdateResult) {
        self.stop_download();
        self.delete_image(store);
        self.set(store, FwState::Idle, result);
    }

    /// Refuses, before anything is stored, a write this device cannot take:
    /// none while installing, and none of a delivery method it lacks.
    pub fn check_write(&self, package: bool, uri: Option<&str>) -> Result<(), OpError> {
        if self.state == FwState::Updating && (package || uri.is_some()) {
            return Err(OpError::MethodNotAllowed(
                "the firmware is being installed".into(),
            ));
        }
        if package && !self.config.delivery.push() {
            return Err(OpError::MethodNotAllowed(
                "this device takes packages by Package URI only (/5/0/9 = 0)".into(),
            ));
        }
        if uri.is_some_and(|u| !u.is_empty()) && !self.config.delivery.pull() {
            return Err(OpError::MethodNotAllowed(
                "this device takes packages written to /5/0/0 only (/5/0/9 = 1)".into(),
            ));
        }
        Ok(())
    }

    /// A URI this device can download from, or the Update Result saying why not.
    fn usable_uri(&self, text: &str) -> Result<PackageUri, UpdateResult> {
        match self.config.fail {
            Some(FailureMode::InvalidUri) => return Err(UpdateResult::InvalidUri),
            Some(FailureMode::UnsupportedProtocol) => {
                return Err(UpdateResult::UnsupportedProtocol)
            }
            _ => {}
        }
        let uri: PackageUri = text.parse().map_err(|_| UpdateResult::InvalidUri)?;
        let listed = self.config.protocols.contains(&uri.protocol);
        let coaps_ok = uri.protocol != Protocol::Coaps || self.dtls_credentials;
        if !listed || !uri.protocol.implemented() || !coaps_ok {
            return Err(UpdateResult::UnsupportedProtocol);
        }
        Ok(uri)
    }

    /// After a Write of /5/0/1: a non-empty URI starts a download, an empty
    /// one resets. A bad URI is still a successful write (spec-facts §9: the
    /// error surfaces in Update Result only).
    pub fn on_uri_write(&mut self, store: &mut ObjectStore, text: &str) {
        self.stop_download();
        self.delete_image(store);
        self.update_due = None;
        if text.is_empty() {
            self.set(store, FwState::Idle, UpdateResult::Initial);
            return;
        }
        match self.usable_uri(text) {
            Err(result) => self.set(store, FwState::Idle, result),
            Ok(uri) => {
                self.attempt += 1;
                self.set(store, FwState::Downloading, UpdateResult::Initial);
                self.commands.push(FwCommand::Start(DownloadJob {
                    attempt: self.attempt,
                    uri,
                }));
            }
        }
    }

    /// After a Write of /5/0/0: the whole pushed package (the CoAP endpoint
    /// reassembled its Block1 transfer), or `\0` or nothing for a reset.
    pub fn on_package_write(&mut self, store: &mut ObjectStore, bytes: Vec<u8>) {
        self.stop_download();
        self.delete_image(store);
        self.update_due = None;
        if bytes.is_empty() || bytes == [0] {
            self.set(store, FwState::Idle, UpdateResult::Initial);
            return;
        }
        if bytes.len() > self.config.max_package_size {
            self.set(store, FwState::Idle, UpdateResult::NotEnoughFlash);
            return;
        }
        if let Some(f @ (FailureMode::OutOfStorage | FailureMode::OutOfMemory)) = self.config.fail {
            self.set(store, FwState::Idle, f.result());
            return;
        }
        self.image = bytes;
        self.check_image(store);
    }

    /// The package check of a complete image.
    fn check_image(&mut self, store: &mut ObjectStore) {
        let checked = match self.config.fail {
            Some(FailureMode::Integrity) => Err(UpdateResult::IntegrityFailure),
            Some(FailureMode::UnsupportedPackage) => Err(UpdateResult::UnsupportedPackage),
            _ => package::parse(&self.image).map_err(|e| {
                tracing::debug!(error = %e, "firmware package refused");
                match e {
                    PackageError::Format(_) => UpdateResult::UnsupportedPackage,
                    PackageError::Digest { .. } => UpdateResult::IntegrityFailure,
                }
            }),
        };
        match checked {
            Ok(info) => {
                let _ = store.set(&p(6), Value::String(package::PKG_NAME.into()));
                let _ = store.set(&p(7), Value::String(info.version.clone()));
                self.package = Some(info);
                self.set(store, FwState::Downloaded, UpdateResult::Initial);
            }
            Err(result) => {
                self.delete_image(store);
                self.set(store, FwState::Idle, result);
            }
        }
    }

    /// Whether progress of download `attempt` still counts.
    pub(crate) fn is_current(&self, attempt: u64) -> bool {
        attempt == self.attempt && self.state == FwState::Downloading
    }

    /// A block of the current download, at `offset` of the package: it
    /// replaces whatever the buffer held from there on (a download that
    /// restarts writes at 0 again).
    pub(crate) fn on_block(
        &mut self,
        store: &mut ObjectStore,
        attempt: u64,
        offset: usize,
        data: &[u8],
    ) {
        if !self.is_current(attempt) {
            return;
        }
        if offset > self.image.len() {
            // The task never skips ahead; if it did, the image would have a hole.
            self.fail(store, UpdateResult::ConnectionLost);
            return;
        }
        if offset.saturating_add(data.len()) > self.config.max_package_size {
            self.fail(store, UpdateResult::NotEnoughFlash);
            return;
        }
        if let Some(
            f
            @ (FailureMode::OutOfStorage | FailureMode::OutOfMemory | FailureMode::ConnectionLost),
        ) = self.config.fail
        {
            self.fail(store, f.result());
            return;
        }
        self.image.truncate(offset);
        self.image.extend_from_slice(data);
        self.blocks = self.blocks.saturating_add(1);
    }

    /// The current download has every byte.
    pub(crate) fn on_download_done(&mut self, store: &mut ObjectStore, attempt: u64) {
        if self.is_current(attempt) {
            self.check_image(store);
        }
    }

    /// The current download gave up.
    pub(crate) fn on_download_failed(
        &mut self,
        store: &mut ObjectStore,
        attempt: u64,
        result: UpdateResult,
    ) {
        if self.is_current(attempt) {
            self.delete_image(store);
            self.set(store, FwState::Idle, result);
        }
    }

    /// Execute of /5/0/2 (Update): only in Downloaded.
    pub fn start_update(&mut self, store: &mut ObjectStore, now: Instant) -> Result<(), OpError> {
        if self.state != FwState::Downloaded {
            return Err(OpError::MethodNotAllowed(format!(
                "firmware update needs state Downloaded (2); the state is {:?} ({})",
                self.state,
                self.state.code()
            )));
        }
        if self.executes_ignored < self.config.ignore_executes {
            self.executes_ignored += 1;
            return Ok(());
        }
        self.set(store, FwState::Updating, UpdateResult::Initial);
        self.update_due = Some(now + self.update_time);
        Ok(())
    }

    /// Execute of /5/0/10 (Cancel): back to Idle with result 10, refused once
    /// the installation has begun.
    pub fn cancel(&mut self, store: &mut ObjectStore) -> Result<(), OpError> {
        if self.state == FwState::Updating {
            return Err(OpError::MethodNotAllowed(
                "the installation has begun".into(),
            ));
        }
        self.stop_download();
        self.delete_image(store);
        self.set(store, FwState::Idle, UpdateResult::Cancelled);
        Ok(())
    }

    /// When the state machine next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.update_due
    }

    /// Finishes an installation whose time has come. Success is reported
    /// with the version /3/0/3 now holds: the client then reboots.
    pub fn poll(&mut self, store: &mut ObjectStore, now: Instant) -> Option<DeviceNote> {
        if self.update_due.is_none_or(|at| at > now) {
            return None;
        }
        self.update_due = None;
        if self.config.fail == Some(FailureMode::UpdateFailed) {
            self.set(store, FwState::Downloaded, UpdateResult::UpdateFailed);
            return None;
        }
        let version = self
            .package
            .as_ref()
            .map(|p| p.version.clone())
            .unwrap_or_default();
        if !self.config.lie && !version.is_empty() {
            let _ = store.set(&Path::resource(3, 0, 3), Value::String(version));
        }
        // Installed: the buffer is free again; PkgName/PkgVersion still say
        // what was installed.
        self.image = Vec::new();
        self.set(store, FwState::Idle, UpdateResult::Success);
        let shown = match store.value(&Path::resource(3, 0, 3)) {
            Some(Value::String(v)) => v.clone(),
            _ => String::new(),
        };
        if let Some(stats) = &self.config.stats {
            stats.installed(&shown);
        }
        Some(DeviceNote::FirmwareUpdated(shown))
    }

    /// What a parked device keeps of object 5 ([`crate::park`]), or `None` while the
    /// state machine has work of its own: a download running (or about to be started
    /// or stopped by the driver), an installation under way, changes not yet reported.
    /// A Downloaded image keeps its [`PackageInfo`] only: installing needs no more of
    /// it, and a parked device must not hold a package's bytes.
    pub(crate) fn memory(&self) -> Option<FirmwareMemory> {
        let quiet = self.commands.is_empty() && self.changes.is_empty();
        let resting = match self.state {
            FwState::Idle => true,
            FwState::Downloaded => self.package.is_some(),
            FwState::Downloading | FwState::Updating => false,
        };
        (quiet && resting && self.update_due.is_none()).then(|| FirmwareMemory {
            downloaded: self.state == FwState::Downloaded,
            result: self.result,
            package: self.package.clone(),
        })
    }

    /// Takes the state a parked device kept; its values in /5/0 come back with the rest
    /// of the object tree.
    pub(crate) fn restore(&mut self, m: FirmwareMemory) {
        self.state = if m.downloaded {
            FwState::Downloaded
        } else {
            FwState::Idle
        };
        self.result = m.result;
        self.package = m.package;
    }

    pub(crate) fn take_commands(&mut self) -> Vec<FwCommand> {
        std::mem::take(&mut self.commands)
    }

    /// The (State, Update Result) pairs entered since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<(FwState, UpdateResult)> {
        std::mem::take(&mut self.changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(config: FirmwareConfig) -> (Firmware, ObjectStore) {
        let mut store = ObjectStore::new(lwm2m_objects::Registry::with_core(), &[3, 5]);
        store.add_instance(3, 0).unwrap();
        store.add_instance(5, 0).unwrap();
        store
            .set(&Path::resource(3, 0, 3), Value::String("1.0.0".into()))
            .unwrap();
        let mut fw = Firmware::new(config, Duration::from_millis(10), false);
        fw.populate(&mut store).unwrap();
        (fw, store)
    }

    fn started(fw: &mut Firmware) -> u64 {
        match fw.take_commands().as_slice() {
            [FwCommand::Start(j)] => j.attempt,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pull_then_update_sets_the_version() {
        let (mut fw, mut store) = setup(FirmwareConfig::default());
        fw.on_uri_write(&mut store, "coap://127.0.0.1/fw");
        let a = started(&mut fw);
        let pkg = package::build("2.0.0", &[7u8; 3000]);
        for (i, chunk) in pkg.chunks(1024).enumerate() {
            fw.on_block(&mut store, a, i * 1024, chunk);
        }
        fw.on_download_done(&mut store, a);
        assert_eq!(fw.state(), FwState::Downloaded);
        assert_eq!(store.value(&p(7)), Some(&Value::String("2.0.0".into())));
        let now = Instant::now();
        fw.start_update(&mut store, now).unwrap();
        assert!(fw.cancel(&mut store).is_err());
        assert_eq!(fw.poll(&mut store, now), None);
        let note = fw.poll(&mut store, now + Duration::from_secs(1));
        assert_eq!(note, Some(DeviceNote::FirmwareUpdated("2.0.0".into())));
        assert_eq!(
            fw.take_changes(),
            vec![
                (FwState::Downloading, UpdateResult::Initial),
                (FwState::Downloaded, UpdateResult::Initial),
                (FwState::Updating, UpdateResult::Initial),
                (FwState::Idle, UpdateResult::Success),
            ]
        );
    }

    #[test]
    fn late_blocks_of_a_stopped_download_are_ignored() {
        let (mut fw, mut store) = setup(FirmwareConfig::default());
        fw.on_uri_write(&mut store, "coap://127.0.0.1/fw");
        let a = started(&mut fw);
        fw.on_uri_write(&mut store, "coap://127.0.0.1/other");
        let cmds = fw.take_commands();
        assert!(
            matches!(cmds.as_slice(), [FwCommand::Stop, FwCommand::Start(j)] if j.attempt != a)
        );
        fw.on_block(&mut store, a, 0, b"old");
        assert_eq!(fw.image_len(), 0);
        fw.cancel(&mut store).unwrap();
        assert_eq!(
            (fw.state(), fw.result()),
            (FwState::Idle, UpdateResult::Cancelled)
        );
    }

    #[test]
    fn uris_the_device_cannot_use_give_7_or_9() {
        let (mut fw, mut store) = setup(FirmwareConfig::default());
        for (uri, want) in [
            ("ftp://h/x", UpdateResult::InvalidUri),
            ("coap//h", UpdateResult::InvalidUri),
            ("coap+tcp://h/x", UpdateResult::UnsupportedProtocol),
            // No DTLS credentials in this device.
            ("coaps://h/x", UpdateResult::UnsupportedProtocol),
        ] {
            fw.on_uri_write(&mut store, uri);
            assert_eq!((fw.state(), fw.result()), (FwState::Idle, want), "{uri}");
            assert!(fw.take_commands().is_empty());
        }
        let (mut fw, mut store) = setup(FirmwareConfig {
            protocols: vec![Protocol::Coap],
            ..FirmwareConfig::default()
        });
        fw.on_uri_write(&mut store, "http://127.0.0.1/x");
        assert_eq!(fw.result(), UpdateResult::UnsupportedProtocol);
    }

    #[test]
    fn push_checks_the_package_and_a_nul_resets() {
        let (mut fw, mut store) = setup(FirmwareConfig {
            max_package_size: 4096,
            ..FirmwareConfig::default()
        });
        fw.on_package_write(&mut store, package::build("3", b"x"));
        assert_eq!(fw.state(), FwState::Downloaded);
        fw.on_package_write(&mut store, vec![0]);
        assert_eq!(
            (fw.state(), fw.result()),
            (FwState::Idle, UpdateResult::Initial)
        );
        assert_eq!(store.value(&p(7)), Some(&Value::String(String::new())));
        fw.on_package_write(&mut store, b"garbage".to_vec());
        assert_eq!(fw.result(), UpdateResult::UnsupportedPackage);
        let mut bad = package::build("3", b"x");
        *bad.last_mut().unwrap() = b'y';
        fw.on_package_write(&mut store, bad);
        assert_eq!(fw.result(), UpdateResult::IntegrityFailure);
        fw.on_package_write(&mut store, vec![1; 4097]);
        assert_eq!(fw.result(), UpdateResult::NotEnoughFlash);
        assert!(fw.start_update(&mut store, Instant::now()).is_err());
    }

    #[test]
    fn a_download_past_the_size_limit_fails_with_2() {
        let (mut fw, mut store) = setup(FirmwareConfig {
            max_package_size: 1500,
            ..FirmwareConfig::default()
        });
        fw.on_uri_write(&mut store, "coap://127.0.0.1/fw");
        let a = started(&mut fw);
        fw.on_block(&mut store, a, 0, &[0; 1024]);
        fw.on_block(&mut store, a, 1024, &[0; 1024]);
        assert_eq!(
            (fw.state(), fw.result()),
            (FwState::Idle, UpdateResult::NotEnoughFlash)
        );
        assert!(matches!(fw.take_commands().as_slice(), [FwCommand::Stop]));
        assert_eq!(fw.image_len(), 0);
    }

    #[test]
    fn failure_modes_parse_by_name() {
        for m in FailureMode::ALL {
            assert_eq!(m.name().parse::<FailureMode>(), Ok(m));
        }
        assert!("nope".parse::<FailureMode>().is_err());
        let c = FirmwareConfig {
            block_size: 512,
            ..FirmwareConfig::default()
        };
        assert_eq!(c.block_szx(), 5);
        let c = FirmwareConfig {
            block_size: 5000,
            ..FirmwareConfig::default()
        };
        assert_eq!(c.block_szx(), 6);
    }
}
