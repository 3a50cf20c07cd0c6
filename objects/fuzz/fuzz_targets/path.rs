#![no_main]
//! Path parsing (Uri-Path strings, SenML names, LwM2M JSON base names).

use libfuzzer_sys::fuzz_target;
use lwm2m_objects::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = s.parse::<Path>() {
            // What parses prints to a text that parses back to it.
            assert_eq!(p.to_string().parse::<Path>(), Ok(p));
        }
        let _ = Path::parse_lenient(s);
    }
});
