//! What one simulated device is configured with.

use std::net::SocketAddr;
use std::time::Duration;

use lwm2m_objects::{ContentFormat, Version};

use crate::device::DeviceProfile;
use crate::firmware::FirmwareConfig;
use crate::network::LinkConditions;

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
    /// The server account's Short Server ID (/0/0/10, /1/0/0): 1 unless a
    /// bootstrap server assigned another.
    pub short_server_id: u16,
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
    /// Each sleep lasts `sleep_duration` times 1 ± this fraction, drawn anew
    /// every time: devices of one schedule drift apart, as real ones do, and
    /// do not all wake at once.
    pub sleep_jitter: f64,
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
    /// Events a slow subscriber may fall behind by before it misses some. The channel
    /// holds this many slots from the start: a fleet's devices, which nobody watches
    /// closely, keep it small.
    pub event_capacity: usize,
    /// Further objects (known to the model) to host, empty at start, so that
    /// a server can Create instances in them.
    pub extra_objects: Vec<u16>,
    /// Send notifications as CON (otherwise only when `con=1` asks).
    pub confirmable_notifications: bool,
    /// Wait before registering again after a failed Register.
    pub registration_retry: Duration,
    /// How long a reboot (Execute /3/0/4) takes before the device registers again.
    pub reboot_delay: Duration,
    /// The device also reboots on its own, at exponentially distributed
    /// intervals of this mean (watchdogs, brown-outs, field resets), and
    /// registers again as after Execute /3/0/4. `None`: never.
    pub reboot_mean: Option<Duration>,
    /// What the network does to the device's datagrams (loss, delay, a shared
    /// cell); `None`: loopback as it is, at no cost.
    pub link: Option<LinkConditions>,
    pub profile: DeviceProfile,
    /// How object 5 behaves: package size, block size, supported protocols,
    /// faked failures. The update time is `profile.update_time`.
    pub firmware: FirmwareConfig,
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
            short_server_id: 1,
            version: Version::V1_1,
            format: ContentFormat::SenmlCbor,
            queue_mode: false,
            awake_window: Duration::from_secs(30),
            sleep_duration: Duration::from_secs(60),
            sleep_jitter: 0.0,
            rebind_on_wake: false,
            bind: if server.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            },
            coap: lwm2m_server::coap::Config::default(),
            tick: Duration::from_secs(1),
            observe_poll: Duration::from_millis(200),
            event_capacity: 1024,
            extra_objects: Vec::new(),
            confirmable_notifications: false,
            registration_retry: Duration::from_secs(10),
            reboot_delay: Duration::from_secs(1),
            reboot_mean: None,
            link: None,
            profile: DeviceProfile::default(),
            firmware: FirmwareConfig::default(),
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

/// The longest server URI the Security object holds (/0/x/0 is 0..255 bytes).
pub const MAX_URI_LEN: usize = 255;

/// A server address as LwM2M writes it: `coap://HOST[:PORT]` or
/// `coaps://HOST[:PORT]` (LwM2M 1.2 Transport, UDP binding), the form of
/// `--server`, `--bootstrap` and a Security instance's /0/x/0. A missing port
/// is the scheme's default, 5683 or 5684.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUri {
    pub secure: bool,
    /// A host name or an IP literal (without the brackets of an IPv6 one).
    pub host: String,
    pub port: u16,
}

/// Why a text is not a `coap://` or `coaps://` server URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("not a coap:// or coaps:// URI")]
    Scheme,
    #[error("the URI is longer than {MAX_URI_LEN} bytes")]
    TooLong,
    #[error("the URI names no host")]
    NoHost,
    #[error("{0:?} is not a host name or IP address")]
    Host(String),
    #[error("{0:?} is not a port (1..65535)")]
    Port(String),
    #[error("a server URI has no path, query, fragment or user part")]
    Extra,
}

/// Why a URI authority (`host[:port]`) is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthorityError {
    NoHost,
    Host(String),
    Port(String),
}

/// The host and port of a URI authority: an IPv6 literal in brackets, or a name or IPv4
/// address of letters, digits and `-._` (which also refuses an IPv6 literal without
/// brackets); a port is 1..=65535.
pub(crate) fn parse_authority(authority: &str) -> Result<(&str, Option<u16>), AuthorityError> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| AuthorityError::Host(authority.into()))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| AuthorityError::Host(host.into()))?;
            let port = match after {
                "" => None,
                a => Some(
                    a.strip_prefix(':')
                        .ok_or_else(|| AuthorityError::Port(a.into()))?,
                ),
            };
            (host, port)
        }
        None => {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let host_char = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
            if !host.chars().all(host_char) {
                return Err(AuthorityError::Host(host.into()));
            }
            (host, port)
        }
    };
    if host.is_empty() {
        return Err(AuthorityError::NoHost);
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| AuthorityError::Port(p.into()))
        })
        .transpose()?;
    Ok((host, port))
}

impl std::str::FromStr for ServerUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<ServerUri, UriError> {
        if s.len() > MAX_URI_LEN {
            return Err(UriError::TooLong);
        }
        let (secure, rest) = if let Some(r) = s.strip_prefix("coaps://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("coap://") {
            (false, r)
        } else {
            return Err(UriError::Scheme);
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(UriError::Extra);
        }
        let (host, port) = parse_authority(rest).map_err(|e| match e {
            AuthorityError::NoHost => UriError::NoHost,
            AuthorityError::Host(h) => UriError::Host(h),
            AuthorityError::Port(p) => UriError::Port(p),
        })?;
        let port = port.unwrap_or(if secure { 5684 } else { 5683 });
        Ok(ServerUri {
            secure,
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for ServerUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.secure { "coaps" } else { "coap" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The address of `host` when it is an IP literal, without any lookup.
pub(crate) fn literal_addr(host: &str, port: u16) -> Option<SocketAddr> {
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// The address to send to: the IP literal, or the first address a lookup of the host
/// name gives.
pub(crate) async fn resolve_host(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    if let Some(a) = literal_addr(host, port) {
        return Ok(a);
    }
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            )
        })
}

impl ServerUri {
    /// The address when the host is an IP literal, without any lookup.
    pub fn ip_addr(&self) -> Option<SocketAddr> {
        literal_addr(&self.host, self.port)
    }

    /// The address to send to: the IP literal, or the host name looked up.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        resolve_host(&self.host, self.port).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_uris_parse_with_default_ports() {
        let cases = [
            ("coap://192.0.2.1", false, "192.0.2.1", 5683),
            ("coaps://192.0.2.1", true, "192.0.2.1", 5684),
            ("coap://lwm2m.example:5783/", false, "lwm2m.example", 5783),
            ("coaps://[2001:db8::1]:15684", true, "2001:db8::1", 15684),
            ("coap://[::1]", false, "::1", 5683),
        ];
        for (text, secure, host, port) in cases {
            let u: ServerUri = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (u.secure, u.host.as_str(), u.port),
                (secure, host, port),
                "{text}"
            );
        }
        let u: ServerUri = "coaps://[2001:db8::1]".parse().unwrap();
        assert_eq!(u.to_string(), "coaps://[2001:db8::1]:5684");
        assert_eq!(u.ip_addr(), Some("[2001:db8::1]:5684".parse().unwrap()));
        let named: ServerUri = "coap://lwm2m.example".parse().unwrap();
        assert_eq!(named.ip_addr(), None);
    }

    #[test]
    fn other_uris_are_refused() {
        let cases = [
            ("http://192.0.2.1", UriError::Scheme),
            ("coap+tcp://192.0.2.1", UriError::Scheme),
            ("coap://", UriError::NoHost),
            ("coap://:5683", UriError::NoHost),
            ("coap://::1", UriError::Host(":".into())),
            ("coap://192.0.2.1:0", UriError::Port("0".into())),
            ("coap://192.0.2.1:70000", UriError::Port("70000".into())),
            ("coap://192.0.2.1/rd", UriError::Extra),
            ("coap://user@192.0.2.1", UriError::Extra),
            ("coap://[2001:db8::1", UriError::Host("[2001:db8::1".into())),
            ("coap://[nope]:1", UriError::Host("nope".into())),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ServerUri>(), Err(want), "{text}");
        }
        let long = format!("coap://{}", "a".repeat(MAX_URI_LEN));
        assert_eq!(long.parse::<ServerUri>(), Err(UriError::TooLong));
    }

    #[tokio::test]
    async fn ip_literals_resolve_without_a_lookup() {
        let u: ServerUri = "coap://127.0.0.1:5999".parse().unwrap();
        assert_eq!(
            u.resolve().await.unwrap(),
            "127.0.0.1:5999".parse().unwrap()
        );
    }
}
