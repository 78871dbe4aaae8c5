//! The shared kernel suites against the iptables backend, on iptables-nft and on
//! iptables-legacy, each in fresh namespaces of its own: the case suite (`testdata/cases`) and
//! the differential property test (`PBXFW_DIFF_CHECKS`, `PBXFW_DIFF_SEED` as for nft). Every
//! verdict the kernel gives must equal the reference evaluator's.

use pbxfw_core::Backend;
use pbxfw_ipt::{Kernel, Variant};
use pbxfw_testkit::netns as common;
use pbxfw_testkit::suites::{case_suite, differential, differential_params, MakeBackend};

fn ipt_nft() -> Box<dyn Backend> {
    Box::new(Kernel::new(Variant::Nft))
}

fn ipt_legacy() -> Box<dyn Backend> {
    Box::new(Kernel::new(Variant::Legacy))
}

fn cases(tag: &str, make: MakeBackend) {
    let (checked, skipped, failures) = case_suite(tag, make);
    eprintln!("{tag}: {checked} packets checked, {skipped} not reproducible with real traffic");
    assert!(
        failures.is_empty(),
        "{tag}: {} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        checked >= 120,
        "too few cases reproduced in the kernel: {checked}"
    );
}

fn diff(tag: &str, make: MakeBackend) {
    let (target, seed) = differential_params();
    let (checked, policies, failures) = differential(tag, make, target, seed);
    eprintln!("{tag}: {checked} packets over {policies} policies");
    assert!(
        failures.is_empty(),
        "{tag} seed {seed}: {} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= target, "only {checked} packets checked");
}

#[test]
fn case_suite_on_iptables_nft() {
    if !common::skipped() {
        cases("cases-iptn", ipt_nft);
    }
}

#[test]
fn case_suite_on_iptables_legacy() {
    if !common::skipped() {
        cases("cases-iptl", ipt_legacy);
    }
}

#[test]
fn differential_on_iptables_nft() {
    if !common::skipped() {
        diff("diff-iptn", ipt_nft);
    }
}

#[test]
fn differential_on_iptables_legacy() {
    if !common::skipped() {
        diff("diff-iptl", ipt_legacy);
    }
}
