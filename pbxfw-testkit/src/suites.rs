//! The kernel suites every backend must pass, written once: the shared case suite and the
//! differential property test. A backend's test file calls them with a constructor of its
//! [`Backend`] (a plain `fn`, so that it can be called inside the test's network namespace).

use crate::cases::CaseFile;
use pbxfw_core::Prefix;
use pbxfw_core::{compile, Policy, Ruleset};
use pbxfw_core::{eval, SetKind};
use pbxfw_core::{ApplyOptions, Backend, Element, Op};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::gen::{policy_doc, probe};
use crate::netns::in_netns;
use crate::probe::{as_kernel_sees, observable, Topology};

/// Makes the backend under test (called inside the pbx namespace).
pub type MakeBackend = fn() -> Box<dyn Backend>;

/// Put (or, with `Op::Remove`, take out) `addrs` in dynamic set `set`, masked to its key length,
/// through the backend's own set update.
fn set_elements(
    topo: &Topology,
    make: MakeBackend,
    rs: &Ruleset,
    set: &str,
    addrs: &[std::net::IpAddr],
    op: Op,
) {
    let SetKind::Dynamic(d) = &rs.sets[set].kind else {
        panic!("{set} is not dynamic")
    };
    let elements: Vec<Element> = addrs
        .iter()
        .map(|a| Element {
            prefix: Prefix::new(*a, d.key_len).unwrap(),
            timeout: None,
        })
        .collect();
    let (rs, set) = (rs.clone(), set.to_string());
    in_netns(&topo.pbx, move || {
        make()
            .update_set(&rs, &set, op, &elements)
            .unwrap_or_else(|e| panic!("update of set {set}: {e}"))
    });
}

/// The shared case suite (`testdata/cases`) in the kernel: each policy is applied in a fresh pbx
/// namespace, and every expectation is sent as a real packet from a client namespace behind the
/// named interface. Returns the number of packets checked and the disagreements with the
/// reference evaluator.
pub fn case_suite(tag: &str, make: MakeBackend) -> (usize, usize, Vec<String>) {
    let (mut checked, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for path in crate::case_files() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let case = CaseFile::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rs = compile(&case.policy.validate().unwrap());
        let mut iifs: Vec<String> = case.expects.iter().map(|e| e.iif.clone()).collect();
        iifs.sort();
        iifs.dedup();
        let mut topo = Topology::new(tag, &iifs);
        in_netns(&topo.pbx, {
            let rs = rs.clone();
            move || {
                pbxfw_core::apply(make().as_ref(), &rs, &ApplyOptions::default())
                    .unwrap_or_else(|e| panic!("apply: {e}"))
            }
        });
        for (i, e) in case.expects.iter().enumerate() {
            let written = e.packet().unwrap();
            // The evaluator is asked about the packet as the kernel will classify it (an
            // unsolicited ICMP redirect is invalid to conntrack, whatever the case says).
            // A meter over its rate needs a burst of packets first: the responsive end-to-end
            // tests send those; here one packet is one packet.
            let Some(packet) = as_kernel_sees(&written).filter(|_| e.over.is_empty()) else {
                skipped += 1;
                continue;
            };
            let state = e.state(&rs).unwrap();
            let expected = eval(&rs, &packet, &state);
            for (set, elems) in &state.elements {
                let addrs: Vec<_> = elems.iter().map(|p| p.addr()).collect();
                set_elements(&topo, make, &rs, set, &addrs, Op::Add);
            }
            let got = topo.probe(&packet);
            for (set, elems) in &state.elements {
                let addrs: Vec<_> = elems.iter().map(|p| p.addr()).collect();
                set_elements(&topo, make, &rs, set, &addrs, Op::Remove);
            }
            match got {
                None => skipped += 1,
                Some(v) => {
                    checked += 1;
                    if v != observable(&packet, expected.verdict) {
                        failures.push(format!(
                            "{name} expect[{i}] ({}): kernel {v}, evaluator {} (decided by {})",
                            e.note, expected.verdict, expected.decided_by
                        ));
                    }
                }
            }
        }
    }
    (checked, skipped, failures)
}

/// Random policies and random packets, the kernel against the reference evaluator, until
/// `target` packets are checked. Returns the number checked, of policies used, and the
/// disagreements (each with the packet and the policy, to replay).
pub fn differential(
    tag: &str,
    make: MakeBackend,
    target: usize,
    seed: u64,
) -> (usize, usize, Vec<String>) {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let iifs: Vec<String> = ["eth0", "eth1", "eth2", "wg0", "ppp0"]
        .map(String::from)
        .to_vec();
    let mut topo = Topology::new(tag, &iifs);
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
        in_netns(&topo.pbx, {
            let rs = rs.clone();
            move || {
                let k = make();
                // Start from nothing: dynamic elements of the previous policy must not leak.
                k.disable().unwrap();
                pbxfw_core::apply(k.as_ref(), &rs, &ApplyOptions::default())
                    .unwrap_or_else(|e| panic!("apply: {e}"))
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
                let addrs: Vec<_> = elems.iter().map(|p| p.addr()).collect();
                set_elements(&topo, make, &rs, set, &addrs, Op::Add);
            }
            let got = topo.probe(&pr.packet);
            for (set, elems) in &state.elements {
                let addrs: Vec<_> = elems.iter().map(|p| p.addr()).collect();
                set_elements(&topo, make, &rs, set, &addrs, Op::Remove);
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
    (checked, policies_used, failures)
}

/// `PBXFW_DIFF_CHECKS` (default 300) and `PBXFW_DIFF_SEED` (default: the clock), as the
/// differential tests read them. The seed is printed so that a failure can be replayed.
pub fn differential_params() -> (usize, u64) {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let target = env("PBXFW_DIFF_CHECKS").unwrap_or(300) as usize;
    let seed = env("PBXFW_DIFF_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("differential test seed {seed} (PBXFW_DIFF_SEED={seed} replays it)");
    (target, seed)
}
