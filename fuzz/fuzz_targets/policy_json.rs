//! Policy JSON text → validate → compile → verify → nft lowering, and the IR text round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxfw_fuzz::{check_policy, Syntax};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_policy(Syntax::Json, text);
    }
});
