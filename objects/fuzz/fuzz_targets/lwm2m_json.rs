#![no_main]
//! Decoding Lwm2mJson payloads, as a device or an operator can send them.

use libfuzzer_sys::fuzz_target;
use lwm2m_objects::ContentFormat;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::decode_all(ContentFormat::Lwm2mJson, data));
