#![no_main]
//! What an operator sends to a device route of the HTTP API: the method (first byte), then
//! the path after the endpoint, the query and the body, separated by 0xFF. Every input
//! ends in a parsed call or a 4xx error; nothing panics.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lwm2m_server::api::device::parse_call;
use http::Method;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = match m % 5 {
        0 => Method::GET,
        1 => Method::PUT,
        2 => Method::POST,
        3 => Method::DELETE,
        _ => Method::PATCH,
    };
    let mut parts = rest.splitn(3, |b| *b == 0xFF);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();
    static MODEL: OnceLock<lwm2m_objects::Registry> = OnceLock::new();
    let model = MODEL.get_or_init(lwm2m_objects::Registry::with_core);
    if let Err(e) = parse_call(&method, &path, query.as_deref(), body, model) {
        assert!(e.status.is_client_error(), "{e:?}");
    }
});
