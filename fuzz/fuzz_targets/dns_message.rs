//! DNS replies: wire parsing, CNAME/SRV interpretation and the refresh tracker. See
//! `pbxfw_fuzz::check_dns`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pbxfw_fuzz::check_dns(data);
});
