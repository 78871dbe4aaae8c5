//! CrowdSec's decision stream (`GET /v1/decisions/stream`) and the fleet table built from it.
//! See `pbxfw_fuzz::check_fleet_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pbxfw_fuzz::check_fleet_stream(data);
});
