//! A set-element dump's datagram from the kernel (`pbxfw_nft::netlink::set_keys_reply`): never a
//! panic, and no key longer than the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut keys = Vec::new();
    let _ = pbxfw_nft::netlink::set_keys_reply(data, &mut keys);
    assert!(keys.iter().map(Vec::len).sum::<usize>() <= data.len());
});
