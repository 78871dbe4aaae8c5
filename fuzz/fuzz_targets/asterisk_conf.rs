//! Asterisk configuration discovery: includes, templates, comments, binds, trunks. See
//! `pbxfw_fuzz::check_asterisk` for the input format and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        pbxfw_fuzz::check_asterisk(text);
    }
});
