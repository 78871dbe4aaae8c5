//! The backend contract (`pbxfw_testkit::contract`) on the kernel backends, each in a network
//! namespace of its own. The in-memory backend runs it in the test kit's own tests.

use pbxfw_testkit::netns::{in_netns, skipped, Netns};

fn run(tag: &str, make: fn() -> Box<dyn pbxfw_core::Backend>) {
    if skipped() {
        return;
    }
    let ns = Netns::new(tag);
    in_netns(&ns, move || pbxfw_testkit::contract::check(make().as_ref()));
    eprintln!("{tag}: the contract holds");
}

#[test]
fn nft_keeps_the_contract() {
    run("contract-nft", || Box::new(pbxfw_nft::Kernel::default()));
}

#[test]
fn iptables_nft_keeps_the_contract() {
    run("contract-iptn", || {
        Box::new(pbxfw_ipt::Kernel::new(pbxfw_ipt::Variant::Nft))
    });
}

#[test]
fn iptables_legacy_keeps_the_contract() {
    run("contract-iptl", || {
        Box::new(pbxfw_ipt::Kernel::new(pbxfw_ipt::Variant::Legacy))
    });
}
