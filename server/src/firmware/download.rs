//! Serving packages to devices at `/fw/{token}`: over CoAP one Block2 block per request,
//! any block number asked for directly (a device resumes, or fetches only what it
//! missed), with ETag and Size2; over HTTP with Range (in the API). A block is read from
//! the file at its offset: a package is never loaded whole.
//!
//! A token is 128 random bits, bound to one device and one package, valid until it
//! expires or the update ends. A refused token gets 4.04 / 404, whatever the reason, so a
//! stranger learns nothing; the reason goes to the metrics.

use crate::coap::block::BlockOpt;

/// Hex digits of a token (128 bits).
pub const TOKEN_HEX_LEN: usize = 32;
/// Largest block served: 1024 bytes (SZX 6), which with CoAP and DTLS headers fits the
/// 1200-byte datagrams the DTLS layer assumes.
pub const MAX_SZX: u8 = 6;

/// Why a download was refused (all answered as "not found").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token we issued, or one revoked since.
    Unknown,
    Expired,
    /// Valid, but presented by another device (its DTLS identity says so).
    Foreign,
    /// The block number lies past the end of the package.
    PastEnd,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown",
            Refused::Expired => "expired",
            Refused::Foreign => "foreign",
            Refused::PastEnd => "past_end",
        }
    }
}

/// A fresh download token.
pub fn new_token() -> std::io::Result<String> {
    let mut t = [0u8; TOKEN_HEX_LEN / 2];
    getrandom::fill(&mut t).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(crate::hex::encode(&t))
}

/// Whether a text could be a token (checked before any lookup).
pub fn is_token(text: &str) -> bool {
    text.len() == TOKEN_HEX_LEN && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The ETag of a package: the first 8 bytes of its SHA-256.
pub fn etag(sha256_hex: &str) -> Vec<u8> {
    crate::hex::decode(sha256_hex.get(..16).unwrap_or_default()).unwrap_or_default()
}

/// One block of a package file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub option: BlockOpt,
    pub payload: Vec<u8>,
}

/// Reads block `num` (of `szx`, capped at [`MAX_SZX`]) of a file of `size` bytes, at its
/// offset (no seek: one open file serves every block of every download of it).
pub fn read_block(
    file: &std::fs::File,
    size: u64,
    num: u32,
    szx: u8,
) -> Result<Block, BlockReadError> {
    use std::os::unix::fs::FileExt;
    let szx = szx.min(MAX_SZX);
    let block = 16u64 << szx;
    let offset = u64::from(num) * block;
    if offset >= size {
        return Err(BlockReadError::PastEnd);
    }
    let len = block.min(size - offset);
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset)?;
    Ok(Block {
        option: BlockOpt {
            num,
            more: offset + len < size,
            szx,
        },
        payload,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BlockReadError {
    #[error("block past the end of the package")]
    PastEnd,
    #[error("package file: {0}")]
    Io(#[from] std::io::Error),
}

/// An HTTP `Range: bytes=...` header for a file of `size` bytes: the first and last byte
/// (inclusive). Only one range is served; `None` for a header that does not parse or
/// asks for nothing inside the file (answered 416).
pub fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (n > 0).then(|| (size.saturating_sub(n), size - 1))
        }
        (a, "") => {
            let a: u64 = a.parse().ok()?;
            (a < size).then_some((a, size - 1))
        }
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b && a < size).then(|| (a, b.min(size - 1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a client sends as Range, the answer is nothing or bytes inside the file.
        #[test]
        fn any_range_header_is_refused_or_inside_the_file(header in ".{0,40}", size in 0u64..10_000) {
            if let Some((first, last)) = parse_range(&header, size) {
                prop_assert!(first <= last && last < size, "{header:?} {size}: {first}-{last}");
            }
        }

        #[test]
        fn numeric_ranges_stay_inside(a in 0u64..20_000, b in 0u64..20_000, size in 1u64..10_000) {
            for h in [format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{b}")] {
                if let Some((first, last)) = parse_range(&h, size) {
                    prop_assert!(first <= last && last < size, "{h} {size}");
                }
            }
        }
    }

    #[test]
    fn blocks_are_read_at_their_offset_and_past_the_end_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let path = std::fs::File::open(&path).expect("open");
        let b = read_block(&path, 3000, 2, 6).expect("block 2");
        assert_eq!(
            (b.option.num, b.option.more, b.payload.len()),
            (2, false, 952)
        );
        assert_eq!(b.payload[..], data[2048..]);
        let b = read_block(&path, 3000, 1, 7).expect("szx capped");
        assert_eq!((b.option.szx, b.option.more), (6, true));
        let b = read_block(&path, 3000, 5, 4).expect("256-byte block 5");
        assert_eq!(b.payload[..], data[1280..1536]);
        assert!(matches!(
            read_block(&path, 3000, 3, 6),
            Err(BlockReadError::PastEnd)
        ));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        for bad in [
            "bytes=1000-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
            "bytes=x-",
        ] {
            assert_eq!(parse_range(bad, 1000), None, "{bad}");
        }
        assert!(is_token("0123456789abcdef0123456789ABCDEF"));
        assert!(!is_token("0123"));
        assert_eq!(
            etag("00112233445566778899"),
            vec![0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]
        );
    }
}
