//! A conntrack dump's datagram from the kernel (`pbxfw_nft::netlink::conntrack::flows_reply`):
//! never a panic, no entry read from fewer bytes than it holds, and matching a blocked prefix
//! against what was read never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxfw_core::Prefix;

fuzz_target!(|data: &[u8]| {
    let mut flows = Vec::new();
    let _ = pbxfw_nft::netlink::conntrack::flows_reply(data, &mut flows);
    // Each entry takes at least a netlink header, an nfgen header and a tuple.
    assert!(flows.len() * 24 <= data.len());
    let blocked: [Prefix; 2] = ["0.0.0.0/1".parse().unwrap(), "::/0".parse().unwrap()];
    let hit = pbxfw_nft::netlink::conntrack::matching(&flows, &blocked);
    assert!(hit.len() <= flows.len());
});
