//! What a device is given when it bootstraps: the operator's JSON, checked, with its keys
//! generated, and the form it is stored in.
//!
//! The operator names server accounts, not object instances: the instance ids are the
//! device's business and are picked during the session from what the device reports
//! (see [`crate::session`]). One account may be marked to be provisioned into the LwM2M
//! server's credential store (by default the one with a PSK), so that a device given a
//! fresh key can register over DTLS as soon as it has it.

use std::collections::BTreeSet;

use lwm2m_objects::{hex, Path};
use serde::{Deserialize, Serialize};

/// Longest PSK identity (OpenSSL's limit is 128 bytes plus a NUL; LwM2M asks for 128).
pub const MAX_IDENTITY_LEN: usize = 128;
/// Shortest key: 64 bits. LwM2M recommends 128 or more; generated keys are 128.
pub const MIN_KEY_LEN: usize = 8;
/// Longest key LwM2M asks clients to support.
pub const MAX_KEY_LEN: usize = 64;
/// Length of a generated key.
pub const GENERATED_KEY_LEN: usize = 16;
/// Server accounts per device: a device has room for a handful, not hundreds.
pub const MAX_SERVERS: usize = 8;
/// Paths to delete before writing.
pub const MAX_DELETES: usize = 16;
/// Longest server URI (a CoAP URI stays well under this).
pub const MAX_URI_LEN: usize = 255;
/// Longest endpoint name, as the LwM2M server accepts it.
pub const MAX_ENDPOINT_LEN: usize = 255;

/// A checked configuration is refused for this reason; the text is for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad<T>(text: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(text.into()))
}

/// Pre-shared key credentials as an operator gives them. Without `key`, one is generated;
/// without `identity`, the endpoint name is the identity.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PskInput {
    #[serde(default)]
    pub identity: Option<String>,
    /// Hex.
    #[serde(default)]
    pub key: Option<String>,
}

/// One LwM2M server account as an operator gives it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerInput {
    /// The Short Server ID (1 to 65534) that ties the Security and Server instances.
    pub short_server_id: u16,
    /// `coap://HOST:PORT` (no security) or `coaps://HOST:PORT` (PSK).
    pub uri: String,
    /// Registration lifetime in seconds.
    #[serde(default = "default_lifetime")]
    pub lifetime: u32,
    /// Binding (`U`, `UQ` for 1.0 queue mode, ...).
    #[serde(default = "default_binding")]
    pub binding: String,
    #[serde(default)]
    pub psk: Option<PskInput>,
    #[serde(default)]
    pub default_min_period: Option<u32>,
    #[serde(default)]
    pub default_max_period: Option<u32>,
    #[serde(default = "yes")]
    pub notification_storing: bool,
    /// Whether this account's credentials go into the LwM2M server's credential store
    /// (default: the account has a PSK).
    #[serde(default)]
    pub provision: Option<bool>,
}

fn default_lifetime() -> u32 {
    86_400
}
fn default_binding() -> String {
    "U".into()
}
fn yes() -> bool {
    true
}

/// A device's bootstrap configuration as an operator gives it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    /// Paths deleted first (`/`, `/0`, `/1/0`, ...); the device keeps its bootstrap
    /// account and /3/0 whatever is asked. Default: `/0` and `/1`.
    #[serde(default)]
    pub delete: Option<Vec<String>>,
    pub servers: Vec<ServerInput>,
    /// The credentials the device uses with the bootstrap server itself. With them, the
    /// device must bootstrap over DTLS as this identity; without them, it may bootstrap
    /// over plain CoAP, and whoever claims its name gets its keys.
    #[serde(default)]
    pub bootstrap_psk: Option<BootstrapPskInput>,
    /// Whether to Bootstrap-Read /1 first, to record the accounts the device had (LwM2M
    /// 1.1 and later; a 1.0 device's refusal is only recorded).
    #[serde(default)]
    pub read_servers: bool,
}

/// Credentials towards the bootstrap server: both are required (the device has them from
/// the factory).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootstrapPskInput {
    pub identity: String,
    /// Hex.
    pub key: String,
}

/// PSK credentials, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Psk {
    pub identity: Vec<u8>,
    pub key: Vec<u8>,
}

/// How a device speaks to one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    NoSec,
    Psk(Psk),
}

impl Security {
    /// Security Mode, resource /0/x/2.
    pub fn mode(&self) -> i64 {
        match self {
            Security::Psk(_) => 0,
            Security::NoSec => 3,
        }
    }
}

/// One server account, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAccount {
    pub short_server_id: u16,
    pub uri: String,
    pub lifetime: u32,
    pub binding: String,
    pub security: Security,
    pub default_min_period: Option<u32>,
    pub default_max_period: Option<u32>,
    pub notification_storing: bool,
    pub provision: bool,
}

/// A device's bootstrap configuration, checked and with its keys; what is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    pub endpoint: String,
    /// Canonical path texts (`/`, `/0`, `/1/0`).
    pub delete: Vec<String>,
    pub servers: Vec<ServerAccount>,
    pub bootstrap_psk: Option<Psk>,
    pub read_servers: bool,
    pub updated_at_unix_ms: u64,
}

/// What the LwM2M server's credential store is to hold for a bootstrapped device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub endpoint: String,
    pub psk: Psk,
}

impl BootstrapConfig {
    /// The paths to delete, parsed again (they were checked when stored).
    pub fn delete_paths(&self) -> Vec<Path> {
        self.delete.iter().filter_map(|p| p.parse().ok()).collect()
    }

    /// Checks an operator's configuration for `endpoint` and generates the keys it leaves
    /// out (`random` fills a buffer with unguessable bytes).
    pub fn from_input(
        endpoint: &str,
        input: ConfigInput,
        now_unix_ms: u64,
        random: &mut dyn FnMut(&mut [u8]) -> Result<(), ConfigError>,
    ) -> Result<BootstrapConfig, ConfigError> {
        check_endpoint(endpoint)?;
        let delete = match input.delete {
            None => vec!["/0".into(), "/1".into()],
            Some(list) => {
                if list.len() > MAX_DELETES {
                    return bad(format!("at most {MAX_DELETES} paths to delete"));
                }
                list.iter()
                    .map(|p| delete_path(p).map(|p| p.to_string()))
                    .collect::<Result<_, _>>()?
            }
        };
        if input.servers.is_empty() || input.servers.len() > MAX_SERVERS {
            return bad(format!("servers lists 1 to {MAX_SERVERS} server accounts"));
        }
        let mut ids = BTreeSet::new();
        let mut servers = Vec::with_capacity(input.servers.len());
        for s in input.servers {
            if !ids.insert(s.short_server_id) {
                return bad(format!(
                    "short_server_id {} is given twice",
                    s.short_server_id
                ));
            }
            servers.push(server_account(endpoint, s, random)?);
        }
        let provisioned = servers.iter().filter(|s| s.provision).count();
        if provisioned > 1 {
            return bad(
                "more than one account would be provisioned into this server's credential \
                 store, which holds one per device: set \"provision\": false on the others",
            );
        }
        let bootstrap_psk = input
            .bootstrap_psk
            .map(|b| psk(&b.identity, Some(&b.key), random, "bootstrap_psk"))
            .transpose()?;
        Ok(BootstrapConfig {
            endpoint: endpoint.to_string(),
            delete,
            servers,
            bootstrap_psk,
            read_servers: input.read_servers,
            updated_at_unix_ms: now_unix_ms,
        })
    }

    /// The credentials to write into the LwM2M server's store, if an account asks for it.
    pub fn provision(&self) -> Option<Provision> {
        self.servers
            .iter()
            .find(|s| s.provision)
            .and_then(|s| match &s.security {
                Security::Psk(p) => Some(Provision {
                    endpoint: self.endpoint.clone(),
                    psk: p.clone(),
                }),
                Security::NoSec => None,
            })
    }
}

/// An endpoint name as the bootstrap and LwM2M servers accept it.
pub fn check_endpoint(endpoint: &str) -> Result<(), ConfigError> {
    if endpoint.is_empty() || endpoint.len() > MAX_ENDPOINT_LEN || endpoint.contains('\0') {
        return bad(format!(
            "an endpoint name is 1 to {MAX_ENDPOINT_LEN} bytes without NUL"
        ));
    }
    Ok(())
}

fn delete_path(text: &str) -> Result<Path, ConfigError> {
    let path: Path = text
        .parse()
        .map_err(|e| ConfigError(format!("delete path {text:?}: {e}")))?;
    if path.depth() > 2 {
        return bad(format!(
            "delete path {text:?}: Bootstrap-Delete takes /, an object or an object instance"
        ));
    }
    Ok(path)
}

fn server_account(
    endpoint: &str,
    s: ServerInput,
    random: &mut dyn FnMut(&mut [u8]) -> Result<(), ConfigError>,
) -> Result<ServerAccount, ConfigError> {
    let ssid = s.short_server_id;
    if !(1..=65534).contains(&ssid) {
        return bad(format!("short_server_id {ssid} is not in 1..=65534"));
    }
    let secure = check_uri(&s.uri)?;
    let security = match (&s.psk, secure) {
        (Some(p), true) => {
            let identity = p.identity.as_deref().unwrap_or(endpoint);
            Security::Psk(psk(identity, p.key.as_deref(), random, "psk")?)
        }
        (None, false) => Security::NoSec,
        (Some(_), false) => return bad(format!("{}: a psk needs a coaps:// URI", s.uri)),
        (None, true) => {
            return bad(format!(
                "{}: a coaps:// account needs a psk (give {{}} to generate one)",
                s.uri
            ))
        }
    };
    check_binding(&s.binding)?;
    if let (Some(min), Some(max)) = (s.default_min_period, s.default_max_period) {
        if min > max {
            return bad("default_min_period is above default_max_period");
        }
    }
    Ok(ServerAccount {
        short_server_id: ssid,
        uri: s.uri,
        lifetime: s.lifetime,
        binding: s.binding,
        provision: s.provision.unwrap_or(matches!(security, Security::Psk(_))),
        security,
        default_min_period: s.default_min_period,
        default_max_period: s.default_max_period,
        notification_storing: s.notification_storing,
    })
}

/// Whether a server URI is `coaps`; refuses anything that is not `coap[s]://HOST[:PORT]`.
pub fn check_uri(uri: &str) -> Result<bool, ConfigError> {
    let (secure, rest) = if let Some(r) = uri.strip_prefix("coaps://") {
        (true, r)
    } else if let Some(r) = uri.strip_prefix("coap://") {
        (false, r)
    } else {
        return bad(format!(
            "{uri:?}: a server URI is coap://HOST:PORT or coaps://HOST:PORT"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let ok = uri.len() <= MAX_URI_LEN
        && !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !ok {
        return bad(format!("{uri:?}: not a coap[s]://HOST:PORT URI"));
    }
    Ok(secure)
}

fn check_binding(binding: &str) -> Result<(), ConfigError> {
    let ok = !binding.is_empty()
        && binding.len() <= 8
        && binding.bytes().all(|b| b"UMHTSNQ".contains(&b));
    if !ok {
        return bad(format!(
            "binding {binding:?}: letters of U, M, H, T, S, N and Q"
        ));
    }
    Ok(())
}

fn psk(
    identity: &str,
    key: Option<&str>,
    random: &mut dyn FnMut(&mut [u8]) -> Result<(), ConfigError>,
    what: &str,
) -> Result<Psk, ConfigError> {
    if identity.is_empty() || identity.len() > MAX_IDENTITY_LEN || identity.contains('\0') {
        return bad(format!(
            "{what}.identity is 1 to {MAX_IDENTITY_LEN} bytes of text without NUL"
        ));
    }
    let key = match key {
        Some(text) => {
            let k =
                hex::decode(text).ok_or_else(|| ConfigError(format!("{what}.key is not hex")))?;
            if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&k.len()) {
                return bad(format!(
                    "{what}.key is {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes"
                ));
            }
            k
        }
        None => {
            let mut k = vec![0u8; GENERATED_KEY_LEN];
            random(&mut k)?;
            k
        }
    };
    Ok(Psk {
        identity: identity.as_bytes().to_vec(),
        key,
    })
}

/// Fills `buf` from the operating system's generator.
pub fn os_random(buf: &mut [u8]) -> Result<(), ConfigError> {
    getrandom::fill(buf).map_err(|e| ConfigError(format!("no random bytes for a key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BootstrapConfig, ConfigError> {
        let input: ConfigInput = serde_json::from_str(json).expect("json");
        let mut n = 0u8;
        BootstrapConfig::from_input("dev-1", input, 7, &mut |b: &mut [u8]| {
            for x in b.iter_mut() {
                n = n.wrapping_add(1);
                *x = n;
            }
            Ok(())
        })
    }

    #[test]
    fn generated_key_identity_from_endpoint_and_defaults() {
        let c =
            parse(r#"{"servers":[{"short_server_id":1,"uri":"coaps://10.0.0.1:5684","psk":{}}]}"#)
                .expect("valid");
        assert_eq!(c.delete, ["/0", "/1"]);
        let s = &c.servers[0];
        assert_eq!(
            (s.lifetime, s.binding.as_str(), s.provision),
            (86_400, "U", true)
        );
        let Security::Psk(p) = &s.security else {
            panic!("psk")
        };
        assert_eq!(p.identity, b"dev-1");
        assert_eq!(p.key, (1..=16).collect::<Vec<u8>>());
        assert_eq!(
            c.provision().map(|p| p.psk.identity),
            Some(b"dev-1".to_vec())
        );
    }

    #[test]
    fn refusals() {
        for (json, needle) in [
            (r#"{"servers":[]}"#, "1 to 8"),
            (
                r#"{"servers":[{"short_server_id":0,"uri":"coap://h:1"}]}"#,
                "1..=65534",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"http://h"}]}"#,
                "coap://",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"coaps://h"}]}"#,
                "needs a psk",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"coap://h","psk":{}}]}"#,
                "coaps://",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"coaps://h","psk":{"key":"0011"}}]}"#,
                "8 to 64",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"coaps://h","psk":{"key":"xx"}}]}"#,
                "not hex",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"coap://h","binding":"UX"}]}"#,
                "binding",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"coap://h"},{"short_server_id":1,"uri":"coap://g"}]}"#,
                "twice",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"coaps://h","psk":{}},{"short_server_id":2,"uri":"coaps://g","psk":{}}]}"#,
                "provision",
            ),
            (
                r#"{"delete":["/1/0/1"],"servers":[{"short_server_id":1,"uri":"coap://h"}]}"#,
                "object instance",
            ),
            (
                r#"{"delete":["x"],"servers":[{"short_server_id":1,"uri":"coap://h"}]}"#,
                "delete path",
            ),
            (
                r#"{"servers":[{"short_server_id":1,"uri":"coap://a b"}]}"#,
                "URI",
            ),
        ] {
            let e = parse(json).expect_err(json);
            assert!(e.0.contains(needle), "{json}: {e}");
        }
        assert!(serde_json::from_str::<ConfigInput>(r#"{"servers":[],"x":1}"#).is_err());
    }

    #[test]
    fn second_psk_account_may_stay_unprovisioned() {
        let c = parse(
            r#"{"delete":["/"],"servers":[
              {"short_server_id":1,"uri":"coaps://h:5684","psk":{"identity":"a","key":"000102030405060708090a0b0c0d0e0f"}},
              {"short_server_id":2,"uri":"coaps://g:5684","psk":{},"provision":false}],
              "bootstrap_psk":{"identity":"bs","key":"0f0e0d0c0b0a09080706050403020100"}}"#,
        )
        .expect("valid");
        assert_eq!(c.delete, ["/"]);
        let p = c.provision().expect("provisioned");
        assert_eq!(p.psk.identity, b"a");
        assert_eq!(c.bootstrap_psk.map(|b| b.identity), Some(b"bs".to_vec()));
    }
}
