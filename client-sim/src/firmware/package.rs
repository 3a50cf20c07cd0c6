//! The package format of the simulated device. A real device checks a vendor
//! signature; the simulator checks something a server's tests can build in a
//! few lines, so that every outcome of the package check (accepted, result 5,
//! result 6) can be provoked on purpose:
//!
//! ```text
//! lwm2m-sim-firmware 1\n
//! version: <text>\n
//! sha256: <64 lowercase hex digits of BODY>\n
//! \n
//! BODY (any bytes)
//! ```
//!
//! - The first line is exactly `lwm2m-sim-firmware 1`; lines end with `\n`
//!   alone (no `\r`).
//! - `<text>` is 1 to [`MAX_VERSION_LEN`] bytes of UTF-8 without control
//!   characters; it becomes /5/0/7 PkgVersion on download and /3/0/3
//!   Firmware Version after the update.
//! - The digest is SHA-256 of BODY, which is everything after the empty line
//!   (it may be empty).
//!
//! Anything else is not a package of this device: Update Result 6
//! (unsupported package type). A well-formed header whose digest does not
//! match BODY is Update Result 5 (integrity check failure).
//!
//! ```
//! use lwm2m_client_sim::firmware::package;
//! let bytes = package::build("2.0.0", b"new image");
//! assert!(bytes.starts_with(b"lwm2m-sim-firmware 1\nversion: 2.0.0\nsha256: "));
//! assert_eq!(package::parse(&bytes).unwrap().version, "2.0.0");
//! ```

/// The first line of every package, with its newline.
pub const MAGIC: &[u8] = b"lwm2m-sim-firmware 1\n";
/// What /5/0/6 PkgName says once a package is accepted.
pub const PKG_NAME: &str = "sim-firmware";
/// Longest version text: /3/0/3 is a string a server stores and shows.
pub const MAX_VERSION_LEN: usize = 255;

/// What the header of an accepted package says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub version: String,
    /// Bytes of BODY.
    pub body_len: usize,
}

/// Why bytes are not an acceptable package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    /// Not this format at all (Update Result 6).
    #[error("not a package of this device: {0}")]
    Format(&'static str),
    /// The header is fine, BODY is not what it promises (Update Result 5).
    #[error("the SHA-256 of the body is {actual}, the header says {expected}")]
    Digest { expected: String, actual: String },
}

/// A package carrying `body` as `version`, in the format above.
pub fn build(version: &str, body: &[u8]) -> Vec<u8> {
    let digest = lwm2m_objects::hex::encode(&openssl::sha::sha256(body)).to_ascii_lowercase();
    let mut out = Vec::with_capacity(MAGIC.len() + version.len() + 90 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(format!("version: {version}\nsha256: {digest}\n\n").as_bytes());
    out.extend_from_slice(body);
    out
}

/// One `\n`-terminated line at the start of `bytes`, and the rest; lines are
/// short, so a missing newline within `max` bytes is a format error.
fn line(bytes: &[u8], max: usize) -> Result<(&[u8], &[u8]), PackageError> {
    let end = bytes
        .iter()
        .take(max + 1)
        .position(|b| *b == b'\n')
        .ok_or(PackageError::Format("header line too long or unterminated"))?;
    Ok((&bytes[..end], &bytes[end + 1..]))
}

/// Checks a complete image: the header and the digest of its body.
pub fn parse(bytes: &[u8]) -> Result<PackageInfo, PackageError> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or(PackageError::Format("no lwm2m-sim-firmware 1 line"))?;
    let (version, rest) = line(rest, "version: ".len() + MAX_VERSION_LEN)?;
    let version = version
        .strip_prefix(b"version: ")
        .ok_or(PackageError::Format("no version line"))?;
    let version = std::str::from_utf8(version)
        .map_err(|_| PackageError::Format("the version is not UTF-8"))?;
    if version.is_empty() || version.chars().any(char::is_control) {
        return Err(PackageError::Format(
            "the version is empty or has control characters",
        ));
    }
    let (digest, rest) = line(rest, "sha256: ".len() + 64)?;
    let expected = digest
        .strip_prefix(b"sha256: ")
        .filter(|d| d.len() == 64 && d.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
        .ok_or(PackageError::Format(
            "no sha256 line of 64 lowercase hex digits",
        ))?;
    let body = rest
        .strip_prefix(b"\n")
        .ok_or(PackageError::Format("no empty line after the header"))?;
    let actual = lwm2m_objects::hex::encode(&openssl::sha::sha256(body)).to_ascii_lowercase();
    if actual.as_bytes() != expected {
        return Err(PackageError::Digest {
            expected: String::from_utf8_lossy(expected).into_owned(),
            actual,
        });
    }
    Ok(PackageInfo {
        version: version.to_string(),
        body_len: body.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packages_parse_back() {
        for (version, body) in [
            ("2.0.0", &b"image"[..]),
            ("v", b""),
            ("1.0 beta", &[0u8; 3000]),
        ] {
            let p = build(version, body);
            assert_eq!(
                parse(&p),
                Ok(PackageInfo {
                    version: version.into(),
                    body_len: body.len()
                })
            );
        }
    }

    #[test]
    fn the_digest_is_of_the_body() {
        let p = build("2.0.0", b"abc");
        let text = String::from_utf8(p).unwrap();
        assert!(text.contains(
            "sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n\nabc"
        ));
        let mut bad = text.into_bytes();
        *bad.last_mut().unwrap() = b'x';
        assert!(matches!(parse(&bad), Err(PackageError::Digest { .. })));
    }

    #[test]
    fn other_bytes_are_not_packages() {
        let good = String::from_utf8(build("2.0.0", b"abc")).unwrap();
        let cases = [
            String::new(),
            "\0".into(),
            "lwm2m-sim-firmware 2\n".into(),
            good.replacen("version: 2.0.0", "version: ", 1),
            good.replacen("version: 2.0.0", "version: a\tb", 1),
            good.replacen("version:", "Version:", 1),
            good.replacen("sha256: ba", "sha256: BA", 1),
            good.replacen("sha256: ba", "sha256: b", 1),
            good.replacen("\n\nabc", "\nabc", 1),
            good.replacen('\n', "\r\n", 1),
            format!("lwm2m-sim-firmware 1\nversion: {}", "9".repeat(10_000)),
        ];
        for c in cases {
            assert!(
                matches!(parse(c.as_bytes()), Err(PackageError::Format(_))),
                "{c:?}"
            );
        }
    }
}
