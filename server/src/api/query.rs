//! Query strings, read by hand: axum's extractor answers a bad query with a plain-text
//! body, and every error of this API is JSON. Bounded: at most [`MAX_PAIRS`] pairs.

use super::error::ApiError;

/// Default and largest page of a listing.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// `?prefix=&after=&offset=&limit=` of a listing by name. `after` is the cursor (the
/// previous page's `next`): the listing goes on from the first name after it, at the
/// same cost however deep; `offset` skips that many more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub prefix: Option<String>,
    pub after: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// The cursor of the page after one that listed `names` (in order): its last name,
    /// when the page was full.
    pub fn next<'a>(
        &self,
        mut names: impl DoubleEndedIterator<Item = &'a str>,
        count: usize,
    ) -> Option<String> {
        (count == self.limit)
            .then(|| names.next_back().map(str::to_string))
            .flatten()
    }
}

impl Page {
    pub fn parse(raw: Option<&str>) -> Result<Page, ApiError> {
        let mut page = Page {
            prefix: None,
            after: None,
            offset: 0,
            limit: DEFAULT_PAGE,
        };
        for (k, v) in pairs(raw.unwrap_or(""))? {
            let number = |v: &str| {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request("bad_query", format!("{k} must be a number, not {v:?}"))
                })
            };
            match k.as_str() {
                "prefix" => page.prefix = Some(v),
                "after" => page.after = Some(v),
                "offset" => page.offset = number(&v)?,
                "limit" => {
                    page.limit = number(&v)?;
                    if !(1..=MAX_PAGE).contains(&page.limit) {
                        return Err(ApiError::bad_request(
                            "bad_query",
                            format!("limit must be 1..={MAX_PAGE}"),
                        ));
                    }
                }
                other => {
                    return Err(ApiError::bad_request(
                        "bad_query",
                        format!(
                            "unknown parameter {other:?}; accepted: prefix, after, offset, limit"
                        ),
                    ))
                }
            }
        }
        Ok(page)
    }
}

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
