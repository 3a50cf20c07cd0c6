#![no_main]
//! DDF XML object definitions, as an operator or a third party supplies them.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lwm2m_objects::model::ddf::parse(data);
});
