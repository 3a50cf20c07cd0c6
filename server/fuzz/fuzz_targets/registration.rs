#![no_main]
//! A CoAP datagram as a device sends it to /rd: parsed by coap-lite, then
//! by the registration interface. Every input ends in a parsed request or a
//! 4.xx/5.xx error.

use coap_lite::{CoapOption, ContentFormat, Packet, RequestType};
use libfuzzer_sys::fuzz_target;
use lwm2m_server::registry::{parse_request, Method};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::from_bytes(data) else {
        return;
    };
    let method = match packet.header.code {
        coap_lite::MessageClass::Request(RequestType::Get) => Method::Get,
        coap_lite::MessageClass::Request(RequestType::Post) => Method::Post,
        coap_lite::MessageClass::Request(RequestType::Put) => Method::Put,
        coap_lite::MessageClass::Request(RequestType::Delete) => Method::Delete,
        _ => Method::Other,
    };
    let strings = |opt| -> Vec<String> {
        packet
            .get_option(opt)
            .map(|l| l.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect())
            .unwrap_or_default()
    };
    let path = strings(CoapOption::UriPath);
    let query = strings(CoapOption::UriQuery);
    let cf = packet.get_content_format().map(|c: ContentFormat| usize::from(c) as u16);
    let _ = parse_request(method, &path, &query, &packet.payload, cf);
});
