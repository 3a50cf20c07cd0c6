//! What an operator configures: the listening addresses, the data directory, the CoAP
//! transmission parameters, the registry's timings and limits, and the REST API's tokens.
//!
//! Three sources, lowest precedence first: the TOML file, environment variables
//! (`LWM2M_*`), command-line flags. The binary reads the last two through clap and hands
//! them over as [`Overrides`]. In the file every key is optional and falls back to the
//! default, and an unknown key is an error, so that a typo does not silently leave a default
//! in force. Durations are integers with their unit in the key name (`ack_timeout_ms`),
//! because a bare number of unknown unit is the usual misconfiguration.
//!
//! ```toml
//! coap = "0.0.0.0:5683"
//! coaps = "0.0.0.0:5684"   # or "off"
//! http = "127.0.0.1:8080"
//! data_dir = "./data"
//!
//! [api]
//! admin_tokens = ["a-long-random-admin-token"]
//! read_tokens = ["a-long-random-read-only-token"]
//! open_metrics = true
//! open_health = true
//! request_expiry_s = 86400
//! default_timeout_s = 30
//!
//! [dtls]
//! mtu = 1200
//! max_half_open = 1024
//! max_sessions_per_ip = 4096
//! max_sessions = 100000
//! handshake_timeout_ms = 30000
//! idle_timeout_ms = 600000
//! initial_retransmit_ms = 1000
//! session_cache_size = 100000
//! resumption_lifetime_s = 86400
//!
//! [bootstrap]               # the bootstrap server, off unless an address is given
//! coap = "0.0.0.0:5783"
//! coaps = "0.0.0.0:5784"
//! max_sessions = 1024
//! session_timeout_s = 300
//!
//! [firmware]
//! max_package_size = 67108864
//! token_lifetime_s = 21600
//! download_timeout_s = 7200
//! update_timeout_s = 1800
//! request_expiry_s = 86400
//! poll_interval_ms = 60000
//! coap_url = "coap://fw.example.net:5683"   # default: the bound address
//! https = "0.0.0.0:8443"   # downloads over HTTPS, with the [dtls] certificate
//!
//! [store]
//! cache_mb = 64            # redb's page cache
//!
//! [coap_params]
//! ack_timeout_ms = 2000
//! ack_random_factor = 1.5
//! max_retransmit = 4
//! nstart = 1
//!
//! [registry]
//! awake_window_ms = 93000
//! expiry_grace_ms = 45000
//! max_registrations = 100000
//! max_queued_per_device = 64
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::bootstrap::BootstrapSettings;
use crate::coap;
use crate::dtls::DtlsConfig;
use crate::firmware::FirmwareSettings;
use crate::registry::RegistryConfig;

/// Default CoAP listening address (RFC 7252 §6.1 port 5683 on every interface).
pub const DEFAULT_COAP_ADDR: &str = "0.0.0.0:5683";
/// Default CoAPS (DTLS) listening address (RFC 7252 §6.2 port 5684).
pub const DEFAULT_COAPS_ADDR: &str = "0.0.0.0:5684";
/// Default HTTP address: loopback only, so that a first start exposes nothing.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Shortest API token accepted: a short token is guessable over the network.
pub const MIN_TOKEN_LEN: usize = 16;

/// Everything [`crate::runtime::Server::start`] needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP address to bind; port 0 picks a free port (the bound one is reported).
    pub coap_addr: SocketAddr,
    /// UDP address for CoAP over DTLS; `None` serves no DTLS.
    pub coaps_addr: Option<SocketAddr>,
    /// Directory of the embedded store (`lwm2m.redb`); created if missing.
    pub data_dir: PathBuf,
    pub coap: coap::Config,
    pub registry: RegistryConfig,
    pub dtls: DtlsConfig,
    pub firmware: FirmwareSettings,
    /// redb's page cache of the store, bytes.
    pub store_cache_bytes: usize,
}

impl ServerConfig {
    /// Defaults everywhere, with the given address and data directory.
    pub fn new(coap_addr: SocketAddr, data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            coap_addr,
            coaps_addr: None,
            data_dir: data_dir.into(),
            coap: coap::Config::default(),
            registry: RegistryConfig::default(),
            dtls: DtlsConfig::default(),
            firmware: FirmwareSettings::default(),
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
        }
    }
}

/// Everything the binary needs: the server's configuration, where to serve HTTP and how.
#[derive(Debug, Clone)]
pub struct BinaryConfig {
    pub server: ServerConfig,
    pub http_addr: SocketAddr,
    pub api: ApiSettings,
    /// Credentials to load into the store at start (a JSON array, see
    /// [`crate::api::security::read_file`]).
    pub security_file: Option<PathBuf>,
    /// The bootstrap server to run beside the LwM2M server, if any.
    pub bootstrap: Option<BootstrapSettings>,
}

/// The REST API's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// Tokens with every right. Empty means "generate one in the data directory".
    pub admin_tokens: Vec<String>,
    /// Tokens that may only read (GET): inventory, values, events, metrics.
    pub read_tokens: Vec<String>,
    /// Whether `/metrics` is served without a token (Prometheus scrapers often have none).
    pub open_metrics: bool,
    /// Whether `/healthz` is served without a token (load balancers have none).
    pub open_health: bool,
    /// How long a request for a sleeping device waits for it to wake, unless the call says.
    pub request_expiry: Duration,
    /// How long a call waits for an awake device's answer, unless it says.
    pub default_timeout: Duration,
    /// Finished request results kept for `GET /api/requests/{id}`; the oldest go first.
    pub max_tracked_requests: usize,
    /// Event streams (`GET /api/events`) open at once; one more is refused with 503, so
    /// that forgotten listeners cannot pile up.
    pub max_event_streams: usize,
    /// How the fleet's inventory is kept.
    pub fleet: crate::fleet::FleetSettings,
}

impl Default for ApiSettings {
    fn default() -> ApiSettings {
        ApiSettings {
            admin_tokens: Vec::new(),
            read_tokens: Vec::new(),
            open_metrics: true,
            open_health: true,
            request_expiry: Duration::from_secs(86_400),
            default_timeout: Duration::from_secs(30),
            max_tracked_requests: 10_000,
            max_event_streams: 64,
            fleet: crate::fleet::FleetSettings::default(),
        }
    }
}

/// Tokens are secrets: never print them in logs or `{:?}`.
impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("admin_tokens", &self.admin_tokens.len())
            .field("read_tokens", &self.read_tokens.len())
            .field("open_metrics", &self.open_metrics)
            .field("open_health", &self.open_health)
            .field("request_expiry", &self.request_expiry)
            .field("default_timeout", &self.default_timeout)
            .field("max_tracked_requests", &self.max_tracked_requests)
            .field("max_event_streams", &self.max_event_streams)
            .finish()
    }
}

/// Values from the environment and the command line, which win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub coap: Option<SocketAddr>,
    /// `ADDR`, or `off` for no DTLS.
    pub coaps: Option<String>,
    pub security_file: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// When non-empty, replaces the file's admin tokens.
    pub admin_tokens: Vec<String>,
    /// When non-empty, replaces the file's read-only tokens.
    pub read_tokens: Vec<String>,
    /// Bootstrap server addresses: `ADDR`, or `off`.
    pub bootstrap: Option<String>,
    pub bootstrap_coaps: Option<String>,
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The TOML file's shape: every field optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub coap: Option<SocketAddr>,
    /// `"ADDR"`, or `"off"` for no DTLS.
    pub coaps: Option<String>,
    pub security_file: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub api: ApiParams,
    #[serde(default)]
    pub coap_params: CoapParams,
    #[serde(default)]
    pub registry: RegistryParams,
    #[serde(default)]
    pub dtls: DtlsParams,
    #[serde(default)]
    pub bootstrap: BootstrapParams,
    #[serde(default)]
    pub firmware: FirmwareParams,
    #[serde(default)]
    pub store: StoreParams,
    #[serde(default)]
    pub fleet: FleetParams,
}

/// `[fleet]`: the inventory.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetParams {
    /// Read and observe each device at registration (default true).
    pub inventory_reads: Option<bool>,
    /// Devices read at once.
    pub read_concurrency: Option<usize>,
    /// How often changed attributes are written.
    pub flush_interval_ms: Option<u64>,
    pub max_devices: Option<usize>,
}

impl FleetParams {
    fn apply(&self, f: &mut crate::fleet::FleetSettings) -> Result<(), ConfigError> {
        if let Some(v) = self.inventory_reads {
            f.inventory_reads = v;
        }
        if let Some(v) = self.read_concurrency {
            f.read_concurrency = v.max(1);
        }
        if let Some(v) = self.flush_interval_ms {
            if !(10..=60_000).contains(&v) {
                return Err(ConfigError::Invalid(
                    "fleet flush_interval_ms is 10 to 60000".into(),
                ));
            }
            f.flush_interval = ms(v);
        }
        if let Some(v) = self.max_devices {
            f.max_devices = v;
        }
        Ok(())
    }
}

/// `[store]`: the embedded store.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreParams {
    /// redb's page cache, MiB (default 64).
    pub cache_mb: Option<usize>,
}

/// `[firmware]`: the fields of [`FirmwareSettings`].
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirmwareParams {
    pub max_package_size: Option<u64>,
    pub token_lifetime_s: Option<u64>,
    pub download_timeout_s: Option<u64>,
    pub update_timeout_s: Option<u64>,
    pub request_expiry_s: Option<u64>,
    pub poll_interval_ms: Option<u64>,
    pub coap_url: Option<String>,
    pub coaps_url: Option<String>,
    pub http_url: Option<String>,
    pub https_url: Option<String>,
    /// Address of the HTTPS download listener; needs `[dtls] certificate` and `private_key`.
    pub https: Option<SocketAddr>,
}

impl FirmwareParams {
    fn apply(&self, f: &mut FirmwareSettings) -> Result<(), ConfigError> {
        let positive = |name: &str, v: Option<u64>| match v {
            Some(0) => Err(ConfigError::Invalid(format!(
                "firmware {name} is at least 1"
            ))),
            other => Ok(other),
        };
        if let Some(v) = positive("max_package_size", self.max_package_size)? {
            f.max_package_size = v;
        }
        for (name, value, target) in [
            (
                "token_lifetime_s",
                self.token_lifetime_s,
                &mut f.token_lifetime,
            ),
            (
                "download_timeout_s",
                self.download_timeout_s,
                &mut f.download_timeout,
            ),
            (
                "update_timeout_s",
                self.update_timeout_s,
                &mut f.update_timeout,
            ),
            (
                "request_expiry_s",
                self.request_expiry_s,
                &mut f.request_expiry,
            ),
        ] {
            if let Some(v) = positive(name, value)? {
                *target = Duration::from_secs(v);
            }
        }
        if let Some(v) = positive("poll_interval_ms", self.poll_interval_ms)? {
            f.poll_interval = Duration::from_millis(v);
        }
        for (name, value, target) in [
            ("coap_url", &self.coap_url, &mut f.coap_url),
            ("coaps_url", &self.coaps_url, &mut f.coaps_url),
            ("http_url", &self.http_url, &mut f.http_url),
            ("https_url", &self.https_url, &mut f.https_url),
        ] {
            if let Some(url) = value {
                let scheme = name.trim_end_matches("_url");
                if !url.starts_with(&format!("{scheme}://")) || url.len() > 160 {
                    return Err(ConfigError::Invalid(format!(
                        "firmware {name} is a {scheme}:// URL of at most 160 characters (a Package URI holds 255)"
                    )));
                }
                *target = Some(url.trim_end_matches('/').to_string());
            }
        }
        f.https_addr = self.https;
        Ok(())
    }
}

/// `[bootstrap]`: the bootstrap server's addresses (each `"ADDR"` or `"off"`) and bounds.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootstrapParams {
    pub coap: Option<String>,
    pub coaps: Option<String>,
    pub max_sessions: Option<usize>,
    pub session_timeout_s: Option<u64>,
}

impl BootstrapParams {
    /// The bootstrap settings when an address is given (flags first); `None` when both
    /// are off. CoAP and DTLS parameters are the LwM2M server's.
    pub fn resolve(
        &self,
        coap: Option<String>,
        coaps: Option<String>,
        data_dir: &Path,
        server: &ServerConfig,
    ) -> Result<Option<BootstrapSettings>, ConfigError> {
        let coap_addr = addr_or_off("bootstrap", coap.or(self.coap.clone()))?;
        let coaps_addr = addr_or_off("bootstrap coaps", coaps.or(self.coaps.clone()))?;
        if coap_addr.is_none() && coaps_addr.is_none() {
            return Ok(None);
        }
        let mut b = BootstrapSettings::new(coap_addr.unwrap_or(server.coap_addr), data_dir);
        b.coap_addr = coap_addr;
        b.coaps_addr = coaps_addr;
        b.coap = server.coap.clone();
        b.dtls = server.dtls.clone();
        if let Some(n) = self.max_sessions {
            if n == 0 {
                return Err(ConfigError::Invalid(
                    "bootstrap max_sessions is at least 1".into(),
                ));
            }
            b.max_sessions = n;
        }
        if let Some(s) = self.session_timeout_s {
            if s == 0 {
                return Err(ConfigError::Invalid(
                    "bootstrap session_timeout_s is at least 1".into(),
                ));
            }
            b.session_timeout = Duration::from_secs(s);
        }
        Ok(Some(b))
    }
}

/// An address, `off`, or nothing given (off).
fn addr_or_off(what: &str, text: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    match text.as_deref().map(str::trim) {
        None | Some("off") => Ok(None),
        Some(a) => a.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!("{what} is an address or \"off\", not {a:?}"))
        }),
    }
}

/// `[coap_params]`: the fields of [`coap::Config`].
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoapParams {
    pub ack_timeout_ms: Option<u64>,
    pub ack_random_factor: Option<f64>,
    pub max_retransmit: Option<u32>,
    pub nstart: Option<usize>,
    pub exchange_lifetime_ms: Option<u64>,
    pub non_lifetime_ms: Option<u64>,
    pub response_timeout_ms: Option<u64>,
    pub piggyback_delay_ms: Option<u64>,
    pub preferred_block_size: Option<usize>,
    pub max_body: Option<usize>,
    pub max_pending: Option<usize>,
    pub max_dedup: Option<usize>,
    pub max_incoming: Option<usize>,
    pub max_block1_assemblies: Option<usize>,
    pub observe_freshness_ms: Option<u64>,
    pub reset_unmatched_non: Option<bool>,
}

/// `[api]`: the fields of [`ApiSettings`].
#[derive(Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiParams {
    pub admin_tokens: Option<Vec<String>>,
    pub read_tokens: Option<Vec<String>>,
    pub open_metrics: Option<bool>,
    pub open_health: Option<bool>,
    pub request_expiry_s: Option<u64>,
    pub default_timeout_s: Option<u64>,
    pub max_tracked_requests: Option<usize>,
    pub max_event_streams: Option<usize>,
}

impl std::fmt::Debug for ApiParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiParams").finish_non_exhaustive()
    }
}

/// `[dtls]`: the fields of [`DtlsConfig`].
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DtlsParams {
    pub mtu: Option<u32>,
    pub max_half_open: Option<usize>,
    pub max_sessions_per_ip: Option<usize>,
    pub max_sessions: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub initial_retransmit_ms: Option<u64>,
    pub session_cache_size: Option<usize>,
    pub resumption_lifetime_s: Option<u64>,
    /// PEM files: the server's certificate chain and key, and the CAs of devices.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub trust_store: Option<PathBuf>,
}

impl DtlsParams {
    fn apply(&self, d: &mut DtlsConfig) -> Result<(), ConfigError> {
        if let Some(v) = self.mtu {
            if !(256..=16_384).contains(&v) {
                return Err(ConfigError::Invalid(
                    "[dtls] mtu must be 256..=16384".into(),
                ));
            }
            d.mtu = v;
        }
        if let Some(v) = self.max_half_open {
            d.max_half_open = v;
        }
        if let Some(v) = self.max_sessions_per_ip {
            d.max_sessions_per_ip = v;
        }
        if let Some(v) = self.max_sessions {
            d.max_sessions = v;
        }
        if let Some(v) = self.handshake_timeout_ms {
            d.handshake_timeout = ms(v);
        }
        if let Some(v) = self.idle_timeout_ms {
            d.idle_timeout = ms(v);
        }
        if let Some(v) = self.initial_retransmit_ms {
            if v == 0 {
                return Err(ConfigError::Invalid(
                    "[dtls] initial_retransmit_ms must be above 0".into(),
                ));
            }
            d.initial_retransmit = ms(v);
        }
        if let Some(v) = self.session_cache_size {
            d.session_cache_size = v;
        }
        if let Some(v) = self.resumption_lifetime_s {
            d.resumption_lifetime = Duration::from_secs(v);
        }
        for (from, to) in [
            (&self.certificate, &mut d.certificate),
            (&self.private_key, &mut d.private_key),
            (&self.trust_store, &mut d.trust_store),
        ] {
            if let Some(p) = from {
                if !p.is_file() {
                    return Err(ConfigError::Invalid(format!(
                        "[dtls] file {} does not exist",
                        p.display()
                    )));
                }
                *to = Some(p.clone());
            }
        }
        Ok(())
    }
}

/// `[registry]`: the fields of [`RegistryConfig`].
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryParams {
    pub awake_window_ms: Option<u64>,
    pub expiry_grace_ms: Option<u64>,
    pub max_registrations: Option<usize>,
    pub max_queued_per_device: Option<usize>,
}

impl FileConfig {
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }

    /// The final configuration: overrides (environment, command line) over the file's
    /// values, over the defaults.
    pub fn resolve(self, over: Overrides) -> Result<BinaryConfig, ConfigError> {
        let coap_addr = match over.coap.or(self.coap) {
            Some(a) => a,
            None => default_addr(DEFAULT_COAP_ADDR)?,
        };
        let http_addr = match over.http.or(self.http) {
            Some(a) => a,
            None => default_addr(DEFAULT_HTTP_ADDR)?,
        };
        let data_dir = over
            .data_dir
            .or(self.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let coaps = over
            .coaps
            .or(self.coaps)
            .unwrap_or_else(|| DEFAULT_COAPS_ADDR.to_string());
        let coaps_addr = addr_or_off("coaps", Some(coaps))?;
        let mut server = ServerConfig::new(coap_addr, data_dir.clone());
        server.coaps_addr = coaps_addr;
        self.coap_params.apply(&mut server.coap)?;
        self.registry.apply(&mut server.registry);
        self.dtls.apply(&mut server.dtls)?;
        self.firmware.apply(&mut server.firmware)?;
        if let Some(mb) = self.store.cache_mb {
            if mb == 0 {
                return Err(ConfigError::Invalid("store cache_mb is at least 1".into()));
            }
            server.store_cache_bytes = mb.saturating_mul(1 << 20);
        }
        let mut api = ApiSettings::default();
        self.api.apply(&mut api)?;
        self.fleet.apply(&mut api.fleet)?;
        if !over.admin_tokens.is_empty() {
            api.admin_tokens = over.admin_tokens;
        }
        if !over.read_tokens.is_empty() {
            api.read_tokens = over.read_tokens;
        }
        check_tokens(&api)?;
        let bootstrap =
            self.bootstrap
                .resolve(over.bootstrap, over.bootstrap_coaps, &data_dir, &server)?;
        Ok(BinaryConfig {
            server,
            http_addr,
            api,
            security_file: over.security_file.or(self.security_file),
            bootstrap,
        })
    }
}

fn default_addr(text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| ConfigError::Invalid(format!("default address {text}")))
}

/// Refuses short tokens, tokens that are not plain visible ASCII (they must travel in a
/// header) and one token given both roles (its role would be ambiguous).
fn check_tokens(api: &ApiSettings) -> Result<(), ConfigError> {
    for t in api.admin_tokens.iter().chain(&api.read_tokens) {
        if t.len() < MIN_TOKEN_LEN {
            return Err(ConfigError::Invalid(format!(
                "API tokens must be at least {MIN_TOKEN_LEN} characters long"
            )));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid(
                "API tokens must be visible ASCII characters without spaces".into(),
            ));
        }
    }
    if api.read_tokens.iter().any(|t| api.admin_tokens.contains(t)) {
        return Err(ConfigError::Invalid(
            "a token cannot be both an admin and a read-only token".into(),
        ));
    }
    Ok(())
}

impl ApiParams {
    fn apply(&self, a: &mut ApiSettings) -> Result<(), ConfigError> {
        if let Some(v) = &self.admin_tokens {
            a.admin_tokens = v.clone();
        }
        if let Some(v) = &self.read_tokens {
            a.read_tokens = v.clone();
        }
        if let Some(v) = self.open_metrics {
            a.open_metrics = v;
        }
        if let Some(v) = self.open_health {
            a.open_health = v;
        }
        if let Some(v) = self.request_expiry_s {
            a.request_expiry = Duration::from_secs(v);
        }
        if let Some(v) = self.default_timeout_s {
            if v == 0 {
                return Err(ConfigError::Invalid(
                    "default_timeout_s must be above 0".into(),
                ));
            }
            a.default_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.max_tracked_requests {
            a.max_tracked_requests = v.max(1);
        }
        if let Some(v) = self.max_event_streams {
            a.max_event_streams = v;
        }
        Ok(())
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl CoapParams {
    fn apply(&self, c: &mut coap::Config) -> Result<(), ConfigError> {
        if let Some(v) = self.ack_timeout_ms {
            if v == 0 {
                return Err(ConfigError::Invalid(
                    "ack_timeout_ms must be above 0".into(),
                ));
            }
            c.ack_timeout = ms(v);
        }
        if let Some(v) = self.ack_random_factor {
            if !(1.0..=10.0).contains(&v) {
                return Err(ConfigError::Invalid(
                    "ack_random_factor must be within 1.0..=10.0 (RFC 7252 requires >= 1)".into(),
                ));
            }
            c.ack_random_factor = v;
        }
        if let Some(v) = self.max_retransmit {
            c.max_retransmit = v;
        }
        if let Some(v) = self.nstart {
            c.nstart = v.max(1);
        }
        if let Some(v) = self.exchange_lifetime_ms {
            c.exchange_lifetime = ms(v);
        }
        if let Some(v) = self.non_lifetime_ms {
            c.non_lifetime = ms(v);
        }
        if let Some(v) = self.response_timeout_ms {
            c.response_timeout = ms(v);
        }
        if let Some(v) = self.piggyback_delay_ms {
            c.piggyback_delay = ms(v);
        }
        if let Some(size) = self.preferred_block_size {
            let szx = (0u8..=6)
                .find(|szx| 16usize << szx == size)
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "preferred_block_size must be 16, 32, ..., 1024, not {size}"
                    ))
                })?;
            c.preferred_szx = szx;
        }
        if let Some(v) = self.max_body {
            c.max_body = v;
        }
        if let Some(v) = self.max_pending {
            c.max_pending = v;
        }
        if let Some(v) = self.max_dedup {
            c.max_dedup = v;
        }
        if let Some(v) = self.max_incoming {
            c.max_incoming = v;
        }
        if let Some(v) = self.max_block1_assemblies {
            c.max_block1_assemblies = v;
        }
        if let Some(v) = self.observe_freshness_ms {
            c.observe_freshness = ms(v);
        }
        if let Some(v) = self.reset_unmatched_non {
            c.reset_unmatched_non = v;
        }
        Ok(())
    }
}

impl RegistryParams {
    fn apply(&self, r: &mut RegistryConfig) {
        if let Some(v) = self.awake_window_ms {
            r.awake_window = ms(v);
        }
        if let Some(v) = self.expiry_grace_ms {
            r.expiry_grace = ms(v);
        }
        if let Some(v) = self.max_registrations {
            r.max_registrations = v;
        }
        if let Some(v) = self.max_queued_per_device {
            r.max_queued_per_device = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn coaps_and_dtls_settings() {
        let c = parse("")
            .and_then(|f| f.resolve(Overrides::default()))
            .expect("c");
        assert_eq!(
            c.server.coaps_addr.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_COAPS_ADDR)
        );
        let c = parse("coaps = \"off\"\n[dtls]\nmtu = 1280\nidle_timeout_ms = 5000\n")
            .and_then(|f| f.resolve(Overrides::default()))
            .expect("c");
        assert_eq!(c.server.coaps_addr, None);
        assert_eq!(c.server.dtls.mtu, 1280);
        assert_eq!(c.server.dtls.idle_timeout, Duration::from_secs(5));
        let c = parse("coaps = \"off\"")
            .and_then(|f| {
                f.resolve(Overrides {
                    coaps: Some("127.0.0.1:0".into()),
                    ..Overrides::default()
                })
            })
            .expect("c");
        assert!(c.server.coaps_addr.is_some(), "the flag wins over the file");
        for bad in ["coaps = \"nowhere\"", "[dtls]\nmtu = 10", "[dtls]\nfoo = 1"] {
            assert!(
                parse(bad)
                    .and_then(|f| f.resolve(Overrides::default()))
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let c = parse("")
            .and_then(|f| f.resolve(Overrides::default()))
            .expect("config");
        assert_eq!(c.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(c.api, ApiSettings::default());
        let c = c.server;
        assert_eq!(c.coap_addr.to_string(), DEFAULT_COAP_ADDR);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.coap.ack_timeout, Duration::from_secs(2));
        assert_eq!(c.registry, RegistryConfig::default());
    }

    #[test]
    fn file_values_apply_and_the_command_line_overrides_them() {
        let f = parse(
            r#"
            coap = "127.0.0.1:7000"
            data_dir = "/var/lib/x"
            [coap_params]
            ack_timeout_ms = 500
            max_retransmit = 2
            preferred_block_size = 256
            [registry]
            awake_window_ms = 1000
            expiry_grace_ms = 0
            "#,
        )
        .expect("parse");
        let cli: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let c = f
            .resolve(Overrides {
                coap: Some(cli),
                ..Overrides::default()
            })
            .expect("resolve")
            .server;
        assert_eq!(c.coap_addr, cli);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/x"));
        assert_eq!(c.coap.ack_timeout, Duration::from_millis(500));
        assert_eq!(c.coap.max_retransmit, 2);
        assert_eq!(c.coap.preferred_szx, 4);
        assert_eq!(c.registry.awake_window, Duration::from_secs(1));
        assert_eq!(c.registry.expiry_grace, Duration::ZERO);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(parse("[coap_params]\nack_timout_ms = 5").is_err());
        assert!(parse("coap = \"not an address\"").is_err());
        let bad = |t: &str| {
            parse(t)
                .and_then(|f| f.resolve(Overrides::default()))
                .is_err()
        };
        assert!(bad("[coap_params]\nack_random_factor = 0.5"));
        assert!(bad("[coap_params]\npreferred_block_size = 100"));
        assert!(bad("[coap_params]\nack_timeout_ms = 0"));
        assert!(bad("[api]\nadmin_tokens = [\"short\"]"));
        assert!(bad("[api]\nadmin_tokens = [\"with a space inside it\"]"));
        assert!(bad(
            "[api]\nadmin_tokens = [\"0123456789abcdef\"]\nread_tokens = [\"0123456789abcdef\"]"
        ));
        assert!(bad("[api]\ndefault_timeout_s = 0"));
    }

    #[test]
    fn overrides_beat_the_file_and_tokens_replace_not_add() {
        let f = parse(
            r#"
            http = "127.0.0.1:9000"
            [api]
            admin_tokens = ["file-admin-token-0001"]
            read_tokens = ["file-read-token-00001"]
            open_metrics = false
            request_expiry_s = 60
            "#,
        )
        .expect("parse");
        let http: SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        let c = f
            .resolve(Overrides {
                http: Some(http),
                admin_tokens: vec!["flag-admin-token-0001".into()],
                ..Overrides::default()
            })
            .expect("resolve");
        assert_eq!(c.http_addr, http);
        assert_eq!(
            c.api.admin_tokens,
            vec!["flag-admin-token-0001".to_string()]
        );
        assert_eq!(c.api.read_tokens, vec!["file-read-token-00001".to_string()]);
        assert!(!c.api.open_metrics);
        assert!(c.api.open_health);
        assert_eq!(c.api.request_expiry, Duration::from_secs(60));
        assert!(!format!("{:?}", c.api).contains("flag-admin"));
    }
}
