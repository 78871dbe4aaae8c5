//! Differential test: random policies and random packets, the kernel (pbxfw-nft) against the
//! reference evaluator. `PBXFW_DIFF_CHECKS` sets how many packets to check (default 300) and
//! `PBXFW_DIFF_SEED` replays a run (the seed is printed).

use pbxfw_core::Backend;
use pbxfw_testkit::netns as common;

fn nft() -> Box<dyn Backend> {
    Box::new(pbxfw_nft::Kernel::with_loader(pbxfw_nft::Loader::Netlink))
}

/// The same through `nft -f`, the fallback load path.
fn nft_text() -> Box<dyn Backend> {
    Box::new(pbxfw_nft::Kernel::with_loader(pbxfw_nft::Loader::Nft))
}

#[test]
fn random_policies_and_packets_agree_with_the_evaluator() {
    run("diff", nft);
}

#[test]
fn random_policies_loaded_by_nft_text_agree_with_the_evaluator() {
    run("textdiff", nft_text);
}

fn run(tag: &str, backend: fn() -> Box<dyn Backend>) {
    if common::skipped() {
        return;
    }
    let (target, seed) = pbxfw_testkit::suites::differential_params();
    let (checked, policies, failures) =
        pbxfw_testkit::suites::differential(tag, backend, target, seed);
    eprintln!("differential test: {checked} packets over {policies} policies");
    assert!(
        failures.is_empty(),
        "seed {seed}: {} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= target, "only {checked} packets checked");
}
