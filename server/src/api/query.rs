//! Query strings, read by hand: axum's extractor answers a bad query with a plain-text
//! body, and every error of this API is JSON. Bounded: at most [`MAX_PAIRS`] pairs.

use super::error::ApiError;

/// Most `key=value` pairs one query may carry.
pub const MAX_PAIRS: usize = 64;

/// The decoded pairs of a query string (`a=1&b&c=x%2Fy`); a key without `=` has the
/// value "".
pub fn pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for part in raw.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PAIRS {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("more than {MAX_PAIRS} query parameters"),
            ));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

/// Percent-decoding, with `+` as a space (HTML forms send it so).
pub fn decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("bad_query", format!("bad percent-encoding in {s:?}"));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let text = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(text, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs() {
        let p = pairs("a=1&b&c=%2F3%2F0+x&&").expect("pairs");
        assert_eq!(
            p,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "/3/0 x".into())
            ]
        );
        assert!(pairs("a=%zz").is_err());
        assert!(pairs("a=%2").is_err());
        assert!(pairs("a=%ff").is_err(), "not UTF-8");
        assert!(pairs(&"a=1&".repeat(65)).is_err());
    }
}
