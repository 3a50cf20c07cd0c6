//! From an incoming CoAP request to what the server does with it, as pure functions: no
//! state, no I/O. The driver, the tests and a fuzz target all go through [`route`], so the
//! whole path from a peer's bytes to a registration outcome can be fuzzed without a socket.

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};

use crate::registry::{parse_request, Method, RdRequest, RegistrationError};

/// CoAP Content-Format of a diagnostic payload (text/plain; charset=utf-8).
pub const TEXT_PLAIN: u16 = 0;

/// Longest Uri-Path read; deeper paths are not ours (`/rd/{id}` has two segments).
const MAX_PATH_SEGMENTS: usize = 8;

/// What an incoming request is.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// A request on `/rd`: a parsed Register/Update/De-register, or the error to answer.
    Registration(Result<RdRequest, RegistrationError>),
    /// The device's Send (`POST /dp`): raw payload and its Content-Format.
    Send {
        content_format: Option<u16>,
        payload: Vec<u8>,
    },
    /// `GET /fw/{token}`: a block of a firmware package; `block2` is the block asked for
    /// (`None`: the first, at the largest size).
    Firmware {
        token: String,
        block2: Option<crate::coap::block::BlockOpt>,
    },
    /// Anything else: answer with this code and diagnostic.
    Reject(RegistrationError),
}

/// Routes a request; a response or empty message is rejected with 4.00 (the endpoint never
/// delivers those as requests, but a fuzz target may).
pub fn route(packet: &Packet) -> Route {
    let method = match packet.header.code {
        MessageClass::Request(RequestType::Get) => Method::Get,
        MessageClass::Request(RequestType::Post) => Method::Post,
        MessageClass::Request(RequestType::Put) => Method::Put,
        MessageClass::Request(RequestType::Delete) => Method::Delete,
        MessageClass::Request(_) => Method::Other,
        _ => return Route::Reject(RegistrationError::bad_request("not a request")),
    };
    let path = match text_options(packet, CoapOption::UriPath, MAX_PATH_SEGMENTS, "Uri-Path") {
        Ok(p) => p,
        Err(e) => return Route::Reject(e),
    };
    let content_format = match uint_option(packet, CoapOption::ContentFormat) {
        Ok(cf) => cf,
        Err(e) => return Route::Reject(e),
    };
    match path.first().map(String::as_str) {
        Some("rd") => {
            let query = match text_options(
                packet,
                CoapOption::UriQuery,
                crate::registry::MAX_QUERY_OPTIONS,
                "Uri-Query",
            ) {
                Ok(q) => q,
                Err(e) => return Route::Registration(Err(e)),
            };
            Route::Registration(parse_request(
                method,
                &path,
                &query,
                &packet.payload,
                content_format,
            ))
        }
        Some("dp") if path.len() == 1 => match method {
            Method::Post => Route::Send {
                content_format,
                payload: packet.payload.clone(),
            },
            _ => Route::Reject(RegistrationError::new(
                RegistrationError::METHOD_NOT_ALLOWED,
                "/dp accepts POST only",
            )),
        },
        Some("fw") if path.len() == 2 => match method {
            Method::Get => {
                match crate::coap::block::block_of(packet, crate::coap::block::OPT_BLOCK2) {
                    Some(Err(_)) => {
                        Route::Reject(RegistrationError::bad_request("invalid Block2 option"))
                    }
                    block2 => Route::Firmware {
                        token: path.get(1).cloned().unwrap_or_default(),
                        block2: block2.and_then(Result::ok),
                    },
                }
            }
            _ => Route::Reject(RegistrationError::new(
                RegistrationError::METHOD_NOT_ALLOWED,
                "/fw accepts GET only",
            )),
        },
        _ => Route::Reject(RegistrationError::not_found("no such resource")),
    }
}

/// [`route`] from raw bytes: `None` when they are not a CoAP message at all.
pub fn route_datagram(bytes: &[u8]) -> Option<Route> {
    Packet::from_bytes(bytes).ok().map(|p| route(&p))
}

/// Each occurrence of a repeatable text option, refusing more than `max` (the remainder
/// would be a different resource or query, not one we can answer) and non-UTF-8 values.
fn text_options(
    packet: &Packet,
    option: CoapOption,
    max: usize,
    name: &str,
) -> Result<Vec<String>, RegistrationError> {
    let Some(values) = packet.get_option(option) else {
        return Ok(Vec::new());
    };
    if values.len() > max {
        return Err(RegistrationError::bad_request(format!(
            "more than {max} {name} options"
        )));
    }
    values
        .iter()
        .map(|v| {
            String::from_utf8(v.clone())
                .map_err(|_| RegistrationError::bad_request(format!("{name} is not UTF-8")))
        })
        .collect()
}

/// A uint option of up to two bytes (Content-Format, Accept), first occurrence.
fn uint_option(packet: &Packet, option: CoapOption) -> Result<Option<u16>, RegistrationError> {
    let Some(v) = packet.get_first_option(option) else {
        return Ok(None);
    };
    if v.len() > 2 {
        return Err(RegistrationError::bad_request(
            "Content-Format longer than 2 bytes",
        ));
    }
    Ok(Some(
        v.iter().fold(0u16, |acc, b| (acc << 8) | u16::from(*b)),
    ))
}

/// The uint encoding of RFC 7252 §3.2: big-endian without leading zero bytes.
pub fn encode_uint(v: u32) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(skip..).unwrap_or_default().to_vec()
}

/// A response of the given code: type, message id and token are the endpoint's business.
pub fn response(code: (u8, u8)) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::from((code.0 << 5) | (code.1 & 0x1F));
    p
}

/// An error answer: the code and the diagnostic as text/plain (RFC 7252 §5.5.2).
pub fn error_response(e: &RegistrationError) -> Packet {
    let mut p = response(e.code);
    p.add_option(CoapOption::ContentFormat, encode_uint(TEXT_PLAIN.into()));
    p.payload = e.message.as_bytes().to_vec();
    p
}

/// 2.01 Created with Location-Path `rd`, `{id}`.
pub fn created(location_path: &[String]) -> Packet {
    let mut p = response((2, 1));
    for seg in location_path {
        p.add_option(CoapOption::LocationPath, seg.as_bytes().to_vec());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(method: RequestType, path: &[&str], query: &[&str], payload: &[u8]) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(method);
        for s in path {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p.payload = payload.to_vec();
        p
    }

    #[test]
    fn routes_registration_send_and_unknown() {
        let r = route(&req(
            RequestType::Post,
            &["rd"],
            &["ep=a", "lt=60"],
            b"</1/0>,</3/0>",
        ));
        assert!(
            matches!(r, Route::Registration(Ok(RdRequest::Register(ref reg))) if reg.endpoint == "a" && reg.lifetime_s == 60)
        );
        let r = route(&req(RequestType::Post, &["rd"], &["lt=60"], b""));
        assert!(matches!(r, Route::Registration(Err(ref e)) if e.code == (4, 0)));
        let r = route(&req(
            RequestType::Post,
            &["rd"],
            &["ep=a", "lwm2m=2.0"],
            b"",
        ));
        assert!(matches!(r, Route::Registration(Err(ref e)) if e.code == (4, 12)));
        let r = route(&req(RequestType::Delete, &["rd", "x"], &[], b""));
        assert_eq!(
            r,
            Route::Registration(Ok(RdRequest::Deregister { id: "x".into() }))
        );
        let mut send = req(RequestType::Post, &["dp"], &[], b"[1]");
        send.add_option(CoapOption::ContentFormat, encode_uint(110));
        assert_eq!(
            route(&send),
            Route::Send {
                content_format: Some(110),
                payload: b"[1]".to_vec()
            }
        );
        assert!(
            matches!(route(&req(RequestType::Get, &["dp"], &[], b"")), Route::Reject(ref e) if e.code == (4, 5))
        );
        assert!(
            matches!(route(&req(RequestType::Get, &["x"], &[], b"")), Route::Reject(ref e) if e.code == (4, 4))
        );
        assert!(
            matches!(route(&req(RequestType::Get, &[], &[], b"")), Route::Reject(ref e) if e.code == (4, 4))
        );
        let mut bad = req(RequestType::Post, &["rd"], &[], b"");
        bad.add_option(CoapOption::UriQuery, vec![0xff, 0xfe]);
        assert!(matches!(route(&bad), Route::Registration(Err(ref e)) if e.code == (4, 0)));
    }

    #[test]
    fn responses_carry_code_diagnostic_and_location() {
        let p = error_response(&RegistrationError::bad_request("ep missing"));
        assert_eq!(u8::from(p.header.code), 0x80);
        assert_eq!(p.payload, b"ep missing");
        assert_eq!(
            p.get_first_option(CoapOption::ContentFormat),
            Some(&Vec::new())
        );
        let p = created(&["rd".into(), "abc".into()]);
        assert_eq!(u8::from(p.header.code), 0x41);
        let loc: Vec<_> = p
            .get_option(CoapOption::LocationPath)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        assert_eq!(loc, vec![b"rd".to_vec(), b"abc".to_vec()]);
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(11542), vec![0x2d, 0x16]);
    }

    proptest! {
        /// Whatever bytes arrive, routing answers and every rejection is a 4.xx/5.xx.
        #[test]
        fn arbitrary_datagrams_route_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(Route::Registration(Err(e)) | Route::Reject(e)) = route_datagram(&bytes) {
                prop_assert!(e.code.0 == 4 || e.code.0 == 5);
            }
        }
    }
}
