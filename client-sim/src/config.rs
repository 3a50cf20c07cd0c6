//! What one simulated device is configured with.

use std::net::SocketAddr;
use std::time::Duration;

use lwm2m_objects::{ContentFormat, Version};

use crate::device::DeviceProfile;

/// Configuration of one client. [`Config::new`] gives a device that behaves
/// like a real one (30 s awake window, 1 s sensor steps); tests shorten the
/// times.
#[derive(Debug, Clone)]
pub struct Config {
    /// The LwM2M server's CoAP address.
    pub server: SocketAddr,
    /// Endpoint client name (`ep=`).
    pub endpoint: String,
    /// Registration lifetime in seconds (`lt=`, /1/0/1).
    pub lifetime: u32,
    /// Enabler version (`lwm2m=`): 1.0, 1.1 or 1.2.
    pub version: Version,
    /// Preferred content format for 1.1/1.2 (1.0 always defaults to TLV).
    pub format: ContentFormat,
    /// Queue mode: sleep after `awake_window` without traffic.
    pub queue_mode: bool,
    /// How long a queue-mode client stays awake after its last exchange.
    pub awake_window: Duration,
    /// A sleeping queue-mode client wakes (and sends an Update) after this
    /// long; it also wakes before its lifetime runs out.
    pub sleep_duration: Duration,
    /// Wake from sleep on a new source port, as NB-IoT devices behind a NAT do.
    pub rebind_on_wake: bool,
    /// Local address to bind; port 0 picks one.
    pub bind: SocketAddr,
    /// CoAP transmission parameters.
    pub coap: lwm2m_server::coap::Config,
    /// Step of the sensor simulation (battery, clock, radio, position).
    pub tick: Duration,
    /// How often observations are evaluated.
    pub observe_poll: Duration,
    /// Further objects (known to the model) to host, empty at start, so that
    /// a server can Create instances in them.
    pub extra_objects: Vec<u16>,
    /// Send notifications as CON (otherwise only when `con=1` asks).
    pub confirmable_notifications: bool,
    /// Wait before registering again after a failed Register.
    pub registration_retry: Duration,
    /// How long a reboot (Execute /3/0/4) takes before the device registers again.
    pub reboot_delay: Duration,
    pub profile: DeviceProfile,
    /// DTLS-PSK credentials: with them the client speaks CoAP over DTLS to `server`
    /// (a CoAPS address), shaking hands again after every wake from sleep.
    pub psk: Option<Psk>,
    /// X.509 credentials instead (PEM): the client speaks CoAP over DTLS with the
    /// certificate suites.
    pub certificate: Option<CertificateCredentials>,
}

/// A device certificate chain, its key and the CAs the server must chain to (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateCredentials {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

/// A PSK identity and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Psk {
    pub identity: Vec<u8>,
    pub key: Vec<u8>,
}

impl Config {
    pub fn new(server: SocketAddr, endpoint: impl Into<String>) -> Config {
        Config {
            server,
            endpoint: endpoint.into(),
            lifetime: 300,
            version: Version::V1_1,
            format: ContentFormat::SenmlCbor,
            queue_mode: false,
            awake_window: Duration::from_secs(30),
            sleep_duration: Duration::from_secs(60),
            rebind_on_wake: false,
            bind: if server.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            },
            coap: lwm2m_server::coap::Config::default(),
            tick: Duration::from_secs(1),
            observe_poll: Duration::from_millis(200),
            extra_objects: Vec::new(),
            confirmable_notifications: false,
            registration_retry: Duration::from_secs(10),
            reboot_delay: Duration::from_secs(1),
            profile: DeviceProfile::default(),
            psk: None,
            certificate: None,
        }
    }

    /// The format used when the server sends no Accept: TLV for 1.0 (the only
    /// one a 1.0 client must support), else the configured one.
    pub fn default_format(&self) -> ContentFormat {
        if self.version == Version::V1_0 {
            ContentFormat::Tlv
        } else {
            self.format
        }
    }

    /// The `b=` binding: 1.0 writes queue mode as `UQ`, later versions use `Q`.
    pub fn binding(&self) -> &'static str {
        if self.queue_mode && self.version == Version::V1_0 {
            "UQ"
        } else {
            "U"
        }
    }
}
