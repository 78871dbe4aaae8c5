//! The shared case suite (`testdata/cases`) in the kernel: each policy is applied with
//! pbxfw-nft in a fresh pbx namespace, and every expectation is sent as a real packet from a
//! client namespace behind the named interface. The verdict the kernel gives must equal the
//! reference evaluator's.

use pbxfw_testkit::netns as common;

use pbxfw_core::cases::CaseFile;
use pbxfw_core::ir::{eval, SetKind};
use pbxfw_core::{compile, Ruleset};
use pbxfw_nft::{ApplyOptions, Kernel};

use pbxfw_testkit::probe::{as_kernel_sees, observable, Topology};

/// The element text nft takes for `addr` in dynamic set `set` (masked to its key length).
fn element(rs: &Ruleset, set: &str, addr: std::net::IpAddr) -> String {
    let SetKind::Dynamic(d) = &rs.sets[set].kind else {
        panic!("{set} is not dynamic")
    };
    let p = pbxfw_core::net::Prefix::new(addr, d.key_len).unwrap();
    p.addr().to_string()
}

#[test]
fn case_suite_in_the_kernel_agrees_with_the_evaluator() {
    if common::skipped() {
        return;
    }
    let (mut checked, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for path in pbxfw_testkit::case_files() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let case = CaseFile::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rs = compile(&case.policy.validate().unwrap());
        let mut iifs: Vec<String> = case.expects.iter().map(|e| e.iif.clone()).collect();
        iifs.sort();
        iifs.dedup();
        let mut topo = Topology::new("cases", &iifs);
        common::in_netns(&topo.pbx, {
            let rs = rs.clone();
            move || {
                Kernel::default()
                    .apply(&rs, &ApplyOptions::default())
                    .unwrap()
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
                for el in elems {
                    topo.add_element(set, &element(&rs, set, el.addr()));
                }
            }
            let got = topo.probe(&packet);
            for set in state.elements.keys() {
                topo.flush_set(set);
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
