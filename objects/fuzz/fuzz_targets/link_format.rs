#![no_main]
//! CoRE link format as devices send it: Register/Update payloads, Discover
//! responses, and Write-Attributes queries.

use libfuzzer_sys::fuzz_target;
use lwm2m_objects::link::{self, Attributes, RegistrationPayload};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(links) = link::parse_links(text) {
        // What we print we must read back as the same links.
        let again = link::parse_links(&link::format_links(&links));
        assert_eq!(again.as_ref(), Ok(&links));
    }
    if let Ok(reg) = RegistrationPayload::parse(text) {
        assert!(RegistrationPayload::parse(&reg.format()).is_ok());
    }
    let _ = link::parse_discover(text, "/");
    let _ = Attributes::parse_query(text);
});
