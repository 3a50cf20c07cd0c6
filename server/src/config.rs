//! What an operator configures: the listening address, the data directory, the CoAP
//! transmission parameters and the registry's timings and limits.
//!
//! The TOML file mirrors [`ServerConfig`]; every key is optional and falls back to the
//! default, and an unknown key is an error, so that a typo does not silently leave a default
//! in force. Durations are integers with their unit in the key name (`ack_timeout_ms`),
//! because a bare number of unknown unit is the usual misconfiguration.
//!
//! ```toml
//! coap = "0.0.0.0:5683"
//! data_dir = "./data"
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

use crate::coap;
use crate::registry::RegistryConfig;

/// Default CoAP listening address (RFC 7252 §6.1 port 5683 on every interface).
pub const DEFAULT_COAP_ADDR: &str = "0.0.0.0:5683";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Everything [`crate::runtime::Server::start`] needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP address to bind; port 0 picks a free port (the bound one is reported).
    pub coap_addr: SocketAddr,
    /// Directory of the embedded store (`lwm2m.redb`); created if missing.
    pub data_dir: PathBuf,
    pub coap: coap::Config,
    pub registry: RegistryConfig,
}

impl ServerConfig {
    /// Defaults everywhere, with the given address and data directory.
    pub fn new(coap_addr: SocketAddr, data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            coap_addr,
            data_dir: data_dir.into(),
            coap: coap::Config::default(),
            registry: RegistryConfig::default(),
        }
    }
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
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub coap_params: CoapParams,
    #[serde(default)]
    pub registry: RegistryParams,
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

    /// The final configuration: command-line values (when given) over the file's, over the
    /// defaults.
    pub fn resolve(
        self,
        cli_coap: Option<SocketAddr>,
        cli_data_dir: Option<PathBuf>,
    ) -> Result<ServerConfig, ConfigError> {
        let coap_addr = match cli_coap.or(self.coap) {
            Some(a) => a,
            None => DEFAULT_COAP_ADDR
                .parse()
                .map_err(|_| ConfigError::Invalid("default address".into()))?,
        };
        let data_dir = cli_data_dir
            .or(self.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut config = ServerConfig::new(coap_addr, data_dir);
        self.coap_params.apply(&mut config.coap)?;
        self.registry.apply(&mut config.registry);
        Ok(config)
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
    fn empty_file_gives_the_defaults() {
        let c = parse("")
            .and_then(|f| f.resolve(None, None))
            .expect("config");
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
        let c = f.resolve(Some(cli), None).expect("resolve");
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
        let bad = |t: &str| parse(t).and_then(|f| f.resolve(None, None)).is_err();
        assert!(bad("[coap_params]\nack_random_factor = 0.5"));
        assert!(bad("[coap_params]\npreferred_block_size = 100"));
        assert!(bad("[coap_params]\nack_timeout_ms = 0"));
    }
}
