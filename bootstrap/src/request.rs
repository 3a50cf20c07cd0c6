//! What a device may ask of a bootstrap server, read from a CoAP request.
//!
//! Only two requests come from the device: Bootstrap-Request (`POST /bs?ep=NAME[&pct=N]`)
//! and, from LwM2M 1.2 devices, Bootstrap-Pack-Request (`GET /bspack?ep=NAME`). Packs are
//! not served: the answer is 4.05, after which a 1.2 client falls back to
//! Bootstrap-Request (as the specification has it for any error).

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};

use crate::config::{check_endpoint, MAX_ENDPOINT_LEN};
use crate::session::write_format;

/// Query options a Bootstrap-Request may carry; more is not a real client.
const MAX_QUERY_OPTIONS: usize = 8;

/// A Bootstrap-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapRequest {
    pub endpoint: String,
    /// `pct`: the content format the device prefers for the writes.
    pub preferred_format: Option<u16>,
}

/// A refusal: the CoAP code and the diagnostic payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}.{:02} {detail}", code.0, code.1)]
pub struct Refusal {
    pub code: (u8, u8),
    pub detail: String,
}

impl Refusal {
    pub fn new(code: (u8, u8), detail: impl Into<String>) -> Refusal {
        Refusal {
            code,
            detail: detail.into(),
        }
    }
}

/// Reads a device's request to the bootstrap server.
pub fn parse(packet: &Packet) -> Result<BootstrapRequest, Refusal> {
    let path: Vec<&[u8]> = packet
        .get_option(CoapOption::UriPath)
        .map(|l| l.iter().map(|v| v.as_slice()).collect())
        .unwrap_or_default();
    let method = match packet.header.code {
        MessageClass::Request(m) => m,
        _ => return Err(Refusal::new((4, 0), "not a request")),
    };
    match (method, path.as_slice()) {
        (RequestType::Post, [b"bs"]) => {}
        (RequestType::Get, [b"bspack"]) => {
            return Err(Refusal::new(
                (4, 5),
                "Bootstrap-Pack is not served here; use Bootstrap-Request (POST /bs)",
            ))
        }
        (_, [b"bs"]) => return Err(Refusal::new((4, 5), "/bs takes POST")),
        _ => return Err(Refusal::new((4, 4), "a bootstrap server serves /bs only")),
    }
    let queries = packet.get_option(CoapOption::UriQuery);
    if queries.is_some_and(|q| q.len() > MAX_QUERY_OPTIONS) {
        return Err(Refusal::new((4, 0), "too many query parameters"));
    }
    let mut endpoint = None;
    let mut preferred_format = None;
    for q in queries.into_iter().flatten() {
        let Ok(text) = std::str::from_utf8(q) else {
            return Err(Refusal::new((4, 0), "a query parameter is not UTF-8"));
        };
        let (name, value) = text.split_once('=').unwrap_or((text, ""));
        match name {
            "ep" => {
                check_endpoint(value).map_err(|e| Refusal::new((4, 0), e.0))?;
                endpoint = Some(value.to_string());
            }
            "pct" => {
                let code = value
                    .parse::<u16>()
                    .map_err(|_| Refusal::new((4, 0), "pct is a content-format number"))?;
                if write_format(Some(code)).is_none() {
                    return Err(Refusal::new(
                        (4, 15),
                        format!("pct={code}: writes go as TLV (11542), SenML JSON (110), SenML CBOR (112) or LwM2M CBOR (11544)"),
                    ));
                }
                preferred_format = Some(code);
            }
            // Unknown parameters are not errors (later versions may add some).
            _ => {}
        }
    }
    let Some(endpoint) = endpoint else {
        return Err(Refusal::new(
            (4, 0),
            format!("Bootstrap-Request needs ep= (1 to {MAX_ENDPOINT_LEN} bytes)"),
        ));
    };
    Ok(BootstrapRequest {
        endpoint,
        preferred_format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: RequestType, path: &[&str], query: &[&str]) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(method);
        for s in path {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p
    }

    #[test]
    fn bootstrap_request_and_refusals() {
        let ok = parse(&request(
            RequestType::Post,
            &["bs"],
            &["ep=dev-1", "pct=112", "x=1"],
        ));
        assert_eq!(
            ok,
            Ok(BootstrapRequest {
                endpoint: "dev-1".into(),
                preferred_format: Some(112)
            })
        );
        let code = |p: Packet| parse(&p).expect_err("refused").code;
        assert_eq!(code(request(RequestType::Post, &["bs"], &[])), (4, 0));
        assert_eq!(code(request(RequestType::Post, &["bs"], &["ep="])), (4, 0));
        assert_eq!(
            code(request(RequestType::Post, &["bs"], &["ep=a", "pct=0"])),
            (4, 15)
        );
        assert_eq!(
            code(request(RequestType::Post, &["bs"], &["ep=a", "pct=x"])),
            (4, 0)
        );
        assert_eq!(
            code(request(RequestType::Get, &["bspack"], &["ep=a"])),
            (4, 5)
        );
        assert_eq!(code(request(RequestType::Get, &["bs"], &["ep=a"])), (4, 5));
        assert_eq!(code(request(RequestType::Post, &["rd"], &["ep=a"])), (4, 4));
        let many: Vec<String> = (0..9).map(|i| format!("q{i}=1")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(code(request(RequestType::Post, &["bs"], &many)), (4, 0));
    }
}
