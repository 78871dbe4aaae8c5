//! A set-element dump's datagram from the kernel (`pbxfw_nft::netlink::set_keys_reply` and
//! `set_elements_reply`): never a panic, and no key longer than the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut keys = Vec::new();
    let _ = pbxfw_nft::netlink::set_keys_reply(data, &mut keys);
    assert!(keys.iter().map(Vec::len).sum::<usize>() <= data.len());
    let mut elements = Vec::new();
    let _ = pbxfw_nft::netlink::set_elements_reply(data, &mut elements);
    assert!(elements.iter().map(|(k, _)| k.len()).sum::<usize>() <= data.len());
});
