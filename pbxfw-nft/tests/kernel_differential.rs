//! Differential test: random policies and random packets, the kernel against the reference
//! evaluator. `PBXFW_DIFF_CHECKS` sets how many packets to check (default 300) and
//! `PBXFW_DIFF_SEED` replays a run (the seed is printed).

use pbxfw_core::ir::{eval, SetKind};
use pbxfw_core::net::Prefix;
use pbxfw_core::{compile, Policy};
use pbxfw_nft::{ApplyOptions, Kernel};
use pbxfw_testkit::gen::{policy_doc, probe};
use pbxfw_testkit::netns as common;
use pbxfw_testkit::probe::{as_kernel_sees, observable, Topology};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[test]
fn random_policies_and_packets_agree_with_the_evaluator() {
    if common::skipped() {
        return;
    }
    let target = env_u64("PBXFW_DIFF_CHECKS").unwrap_or(300) as usize;
    let seed = env_u64("PBXFW_DIFF_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("differential test seed {seed} (PBXFW_DIFF_SEED={seed} replays it)");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let iifs: Vec<String> = ["eth0", "eth1", "eth2", "wg0", "ppp0"]
        .map(String::from)
        .to_vec();
    let mut topo = Topology::new("diff", &iifs);
    let policies = policy_doc();
    let packets = probe();
    let (mut checked, mut policies_used) = (0usize, 0usize);
    let mut failures = Vec::new();
    while checked < target && policies_used < target {
        let doc = policies.new_tree(&mut runner).unwrap().current();
        let Ok(valid) = Policy::from_value(doc.clone()).validate() else {
            continue;
        };
        policies_used += 1;
        let rs = compile(&valid);
        common::in_netns(&topo.pbx, {
            let rs = rs.clone();
            move || {
                let k = Kernel::default();
                // Start from nothing: dynamic elements of the previous policy must not leak.
                k.disable().unwrap();
                k.apply(&rs, &ApplyOptions::default()).unwrap()
            }
        });
        for _ in 0..20 {
            let mut pr = packets.new_tree(&mut runner).unwrap().current();
            let Some(seen) = as_kernel_sees(&pr.packet) else {
                continue;
            };
            pr.packet = seen;
            let state = pr.state(&rs);
            let expected = eval(&rs, &pr.packet, &state);
            for (set, elems) in &state.elements {
                let SetKind::Dynamic(d) = &rs.sets[set].kind else {
                    unreachable!()
                };
                for e in elems {
                    let key = Prefix::new(e.addr(), d.key_len).unwrap();
                    topo.add_element(set, &key.addr().to_string());
                }
            }
            let got = topo.probe(&pr.packet);
            for set in state.elements.keys() {
                topo.flush_set(set);
            }
            let Some(got) = got else { continue };
            checked += 1;
            if got != observable(&pr.packet, expected.verdict) {
                failures.push(format!(
                    "kernel {got}, evaluator {} (decided by {})\n  packet: {:?}\n  policy: {doc}",
                    expected.verdict, expected.decided_by, pr
                ));
            }
        }
    }
    eprintln!("differential test: {checked} packets over {policies_used} policies");
    assert!(
        failures.is_empty(),
        "seed {seed}: {} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= target, "only {checked} packets checked");
}
