//! `wg show all dump` as the daemon reads it, and the sessions it makes of it.
//! See `pbxfw_fuzz::check_wg_dump`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pbxfw_fuzz::check_wg_dump(data);
});
