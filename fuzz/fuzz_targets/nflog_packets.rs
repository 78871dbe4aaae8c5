//! A datagram on the kernel tiers' nfnetlink_log group
//! (`pbxfw_nft::netlink::nflog::sources`): never a panic, and no source read from fewer bytes
//! than a netlink header, an nfgen header, a payload attribute and an IPv4 header hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let group = data.first().map_or(0, |b| u16::from(*b));
    let sources = pbxfw_nft::netlink::nflog::sources(data, group);
    assert!(sources.len() * (16 + 4 + 4 + 20) <= data.len());
});
