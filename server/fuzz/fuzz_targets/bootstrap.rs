#![no_main]
//! What reaches the bootstrap server from outside: a device's CoAP request (read as
//! Bootstrap-Request or refused), an operator's JSON configuration (checked or refused),
//! and a device's answers to a dialogue (Bootstrap-Read and Discover payloads included).
//! The first byte picks which; nothing may panic, and a dialogue ends within its steps.

use libfuzzer_sys::fuzz_target;
use lwm2m_bootstrap::config::{BootstrapConfig, ConfigInput};
use lwm2m_bootstrap::{Next, Session};
use lwm2m_objects::ContentFormat;

const CONFIG: &str = r#"{"read_servers": true, "servers": [
  {"short_server_id": 1, "uri": "coaps://192.0.2.1:5684", "psk": {"key": "000102030405060708090a0b0c0d0e0f"}},
  {"short_server_id": 2, "uri": "coap://192.0.2.2:5683", "provision": false}]}"#;

fn no_random(buf: &mut [u8]) -> Result<(), lwm2m_bootstrap::ConfigError> {
    buf.fill(7);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(packet) = coap_lite::Packet::from_bytes(rest) {
                let _ = lwm2m_bootstrap::request::parse(&packet);
            }
        }
        1 => {
            if let Ok(input) = serde_json::from_slice::<ConfigInput>(rest) {
                let _ = BootstrapConfig::from_input("dev", input, 0, &mut no_random);
            }
        }
        _ => {
            let input: ConfigInput = serde_json::from_str(CONFIG).expect("fixed config");
            let config = BootstrapConfig::from_input("dev", input, 0, &mut no_random)
                .expect("fixed config is valid");
            let format = [ContentFormat::Tlv, ContentFormat::SenmlCbor][usize::from(mode & 1)];
            let (mut session, _) = Session::start(config, format);
            // Each answer: a code byte, a length byte, that many payload bytes.
            let mut input = rest;
            for _ in 0..64 {
                let [code, len, tail @ ..] = input else { break };
                let n = usize::from(*len).min(tail.len());
                let (payload, next) = tail.split_at(n);
                input = next;
                match session.on_response((code >> 5, code & 0x1f), payload) {
                    Next::Send(_) => {}
                    Next::Finished | Next::Failed(_) => break,
                }
            }
        }
    }
});
