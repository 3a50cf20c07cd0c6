//! Hex text of bytes: tokens, opaque values, keys and fingerprints in the API, keys on
//! command lines.

/// Lower-case hex, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an even number of hex digits (either case); `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(encode(&[0, 0xAB, 0xff]), "00abff");
        assert_eq!(decode("00ABff"), Some(vec![0, 0xAB, 0xff]));
        assert_eq!(decode(""), Some(vec![]));
        for bad in ["0", "zz", "+1", "0g", "é1"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
