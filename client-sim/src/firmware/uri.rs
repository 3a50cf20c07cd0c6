//! Package URIs (/5/0/1) as the device reads them: which protocol of /5/0/8
//! they name and, for CoAP, the options a GET carries. Parsing is strict and
//! bounded because the text comes from the network: a URI this device cannot
//! use is Update Result 7 (invalid URI) or 9 (unsupported protocol), never a
//! panic or a guess.

use std::net::SocketAddr;

use super::Protocol;
use crate::config::{literal_addr, parse_authority, resolve_host, AuthorityError};

/// Longest Package URI (/5/0/1 is a string of 0..255 bytes).
pub const MAX_PACKAGE_URI_LEN: usize = 255;

/// Why a Package URI cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageUriError {
    #[error("the URI is longer than {MAX_PACKAGE_URI_LEN} bytes")]
    TooLong,
    #[error("{0:?} is not a URI scheme this device knows")]
    UnknownScheme(String),
    #[error("the URI names no host")]
    NoHost,
    #[error("{0:?} is not a host name or IP address")]
    Host(String),
    #[error("{0:?} is not a port (1..65535)")]
    Port(String),
    #[error("a package URI has no user part or fragment")]
    Extra,
    #[error("bad percent-encoding in the path or query")]
    Escape,
}

/// A parsed Package URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageUri {
    pub protocol: Protocol,
    /// A host name or an IP literal (without the brackets of an IPv6 one).
    pub host: String,
    pub port: u16,
    /// Uri-Path segments, percent-decoded.
    pub path: Vec<Vec<u8>>,
    /// Uri-Query arguments, percent-decoded.
    pub query: Vec<Vec<u8>>,
    /// The text as written, for HTTP clients and logs.
    pub text: String,
}

fn decode_percent(s: &str) -> Result<Vec<u8>, PackageUriError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PackageUriError::Escape)?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

impl std::str::FromStr for PackageUri {
    type Err = PackageUriError;

    fn from_str(text: &str) -> Result<PackageUri, PackageUriError> {
        if text.len() > MAX_PACKAGE_URI_LEN {
            return Err(PackageUriError::TooLong);
        }
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| PackageUriError::UnknownScheme(String::new()))?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "coap" => Protocol::Coap,
            "coaps" => Protocol::Coaps,
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "coap+tcp" => Protocol::CoapTcp,
            "coaps+tcp" => Protocol::CoapTls,
            other => return Err(PackageUriError::UnknownScheme(other.into())),
        };
        if rest.contains('#') {
            return Err(PackageUriError::Extra);
        }
        let (authority, path_query) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(PackageUriError::Extra);
        }
        let (host, port) = parse_authority(authority).map_err(|e| match e {
            AuthorityError::NoHost => PackageUriError::NoHost,
            AuthorityError::Host(h) => PackageUriError::Host(h),
            AuthorityError::Port(p) => PackageUriError::Port(p),
        })?;
        let port = port.unwrap_or_else(|| protocol.default_port());
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        };
        let path = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode_percent)
            .collect::<Result<Vec<_>, _>>()?;
        let query = query
            .map(|q| {
                q.split('&')
                    .filter(|s| !s.is_empty())
                    .map(decode_percent)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(PackageUri {
            protocol,
            host: host.to_string(),
            port,
            path,
            query,
            text: text.to_string(),
        })
    }
}

impl PackageUri {
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
    fn coap_uris_give_path_and_query() {
        let u: PackageUri = "coap://127.0.0.1:5683/fw/ab%2Fc?x=1&y".parse().unwrap();
        assert_eq!(u.protocol, Protocol::Coap);
        assert_eq!(u.ip_addr(), Some("127.0.0.1:5683".parse().unwrap()));
        assert_eq!(u.path, vec![b"fw".to_vec(), b"ab/c".to_vec()]);
        assert_eq!(u.query, vec![b"x=1".to_vec(), b"y".to_vec()]);
        let u: PackageUri = "COAPS://[::1]/p".parse().unwrap();
        assert_eq!((u.protocol, u.port), (Protocol::Coaps, 5684));
        let u: PackageUri = "http://fw.example".parse().unwrap();
        assert_eq!((u.protocol, u.port, u.path.len()), (Protocol::Http, 80, 0));
        let u: PackageUri = "coaps+tcp://h:1/".parse().unwrap();
        assert_eq!(u.protocol, Protocol::CoapTls);
    }

    #[test]
    fn unusable_uris_are_refused() {
        let long = format!("coap://h/{}", "a".repeat(MAX_PACKAGE_URI_LEN));
        let cases = [
            ("ftp://h/x", PackageUriError::UnknownScheme("ftp".into())),
            ("no scheme", PackageUriError::UnknownScheme(String::new())),
            ("coap:///x", PackageUriError::NoHost),
            ("coap://h:0/x", PackageUriError::Port("0".into())),
            ("coap://h:99999", PackageUriError::Port("99999".into())),
            ("coap://u@h/x", PackageUriError::Extra),
            ("coap://h/x#f", PackageUriError::Extra),
            ("coap://h/%zz", PackageUriError::Escape),
            ("coap://h/%4", PackageUriError::Escape),
            ("coap://h%20/", PackageUriError::Host("h%20".into())),
            ("coap://[nope]/", PackageUriError::Host("nope".into())),
            (long.as_str(), PackageUriError::TooLong),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<PackageUri>(), Err(want), "{text}");
        }
    }
}
