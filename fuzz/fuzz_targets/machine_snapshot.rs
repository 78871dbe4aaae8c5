//! The responsive state machine's snapshot (the daemon's state file). See
//! `pbxfw_fuzz::check_snapshot`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pbxfw_fuzz::check_snapshot(data);
});
