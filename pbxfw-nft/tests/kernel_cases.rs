//! The shared case suite (`testdata/cases`) in the kernel with pbxfw-nft: every expectation is
//! sent as a real packet, and the verdict the kernel gives must equal the reference evaluator's
//! (see `pbxfw_testkit::suites::case_suite`).

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
fn case_suite_in_the_kernel_agrees_with_the_evaluator() {
    run("cases", nft);
}

#[test]
fn case_suite_loaded_by_nft_text_agrees_with_the_evaluator() {
    run("textcases", nft_text);
}

fn run(tag: &str, backend: fn() -> Box<dyn Backend>) {
    if common::skipped() {
        return;
    }
    let (checked, skipped, failures) = pbxfw_testkit::suites::case_suite(tag, backend);
    eprintln!("kernel case suite: {checked} packets checked, {skipped} not reproducible with real traffic");
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        checked >= 120,
        "too few cases reproduced in the kernel: {checked}"
    );
}
