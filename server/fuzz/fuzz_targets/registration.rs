#![no_main]
//! A CoAP datagram as a device sends it to the server's resources (/rd,
//! /dp): parsed, then routed to the registration interface or Send. Every
//! input ends in a parsed request or a 4.xx/5.xx answer.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lwm2m_server::runtime::route_datagram(data);
});
