//! IR text → parse → print → parse (must be a fixed point); verified IR must lower and evaluate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxfw_fuzz::check_ir;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_ir(text);
    }
});
