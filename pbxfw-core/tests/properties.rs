//! Property tests: on arbitrary policies, validation and compilation never panic, the IR always
//! verifies and round-trips through its text form, and the reference evaluator over the IR
//! agrees with a naive evaluator written directly over the policy model (docs/policy.md, "The packet path").

use pbxfw_core::Family;
use pbxfw_core::{
    compile, eval, DenyVerdict, Packet, Policy, Proto, Source, ValidPolicy, Zone, L4,
};
use pbxfw_core::{CtState, FinalVerdict};
use pbxfw_testkit::gen::{policy_doc, probe, Probe};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Whether a service of `policy` carries (proto, dport).
fn serves(policy: &ValidPolicy, service: &str, p: &Packet) -> bool {
    let l4 = match p.proto {
        Proto::Udp => L4::Udp,
        Proto::Tcp => L4::Tcp,
        _ => return false,
    };
    let dport = p.dport.unwrap();
    policy.services[service]
        .ports
        .iter()
        .any(|s| s.proto == l4 && s.ports.contains(dport))
}

/// The sets whose sources step 3 drops are exactly those `names::blocks_sources` names (whose
/// additions cut the flows of what they add: the runtime's flow cut, and the daemon for the
/// kernel tiers' bans), and no rule that accepts a peer's established packets looks a set up.
fn blocking_sets(rs: &pbxfw_core::Ruleset) -> Result<(), String> {
    use pbxfw_core::{names, Match, Verdict};
    let mut dropping = std::collections::BTreeSet::new();
    for chain in ["pre4", "pre6"] {
        for r in &rs.chains[chain].rules {
            for m in &r.matches {
                if let Match::Src(set) = m {
                    if matches!(r.verdict, Verdict::Drop | Verdict::Reject) {
                        dropping.insert(set.clone());
                    }
                }
            }
        }
    }
    for set in rs.sets.keys() {
        if names::blocks_sources(set) != dropping.contains(set) {
            return Err(format!(
                "{set}: blocks_sources disagrees with the pre chains"
            ));
        }
    }
    let established = rs
        .chains
        .get("established")
        .map_or(&[][..], |c| &c.rules[..]);
    let media = rs.chains["input"]
        .rules
        .iter()
        .filter(|r| r.origin == "established: media");
    for r in established.iter().chain(media) {
        if r.matches
            .iter()
            .any(|m| matches!(m, Match::Src(_) | Match::NotSrc(_)))
        {
            return Err(format!("{:?} looks a set up", r.origin));
        }
    }
    Ok(())
}

/// docs/policy.md, "The packet path", written straight over the policy model, with no IR in between.
fn naive(policy: &ValidPolicy, pr: &Probe) -> (FinalVerdict, Zone) {
    let p = &pr.packet;
    let deny = match policy.settings.default_verdict {
        DenyVerdict::Drop => FinalVerdict::Drop,
        DenyVerdict::Reject => FinalVerdict::Reject,
    };
    // Zone (docs/policy.md, "Zones"): the longest network override containing the source, else the interface.
    let zone = policy
        .networks
        .iter()
        .filter_map(|n| match &n.source {
            Source::Net(pre) if pre.contains(&p.src) => Some((pre.prefix_len(), n.zone)),
            _ => None,
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, z)| z)
        .or_else(|| policy.interfaces.get(&p.iif).copied())
        .unwrap_or(Zone::Internet);
    let v = (|| {
        if p.iif == "lo" {
            return FinalVerdict::Accept;
        }
        let responsive_port = policy
            .responsive_protocols()
            .any(|proto| serves(policy, proto.service_name(), p));
        let blacklisted = policy
            .blacklist
            .iter()
            .any(|e| matches!(&e.source, Source::Net(pre) if pre.contains(&p.src)));
        // Established flows before the blacklist and bans: whoever blocks a source cuts the
        // flows it opened (the runtime's flow cut), so those that remain passed them; answers
        // on the PBX's own connections meet them on every packet.
        match p.ct {
            CtState::Invalid => return FinalVerdict::Drop,
            CtState::Established | CtState::Related if !responsive_port => {
                if p.ct_reply && blacklisted {
                    return deny;
                }
                if p.ct_reply && (pr.banned || pr.tier_banned) {
                    return FinalVerdict::Drop;
                }
                return FinalVerdict::Accept;
            }
            _ => {}
        }
        if blacklisted {
            return deny;
        }
        if pr.banned || pr.tier_banned {
            return FinalVerdict::Drop;
        }
        let icmp_ok: &[u8] = match p.proto {
            Proto::Icmp => &[3, 11, 12, 8],
            Proto::Icmpv6 => &[1, 2, 3, 4, 130, 133, 134, 135, 136, 143, 128],
            _ => &[],
        };
        if p.icmp_type.is_some_and(|t| icmp_ok.contains(&t)) {
            return FinalVerdict::Accept;
        }
        let dhcp = match Family::of(&p.src) {
            Family::Ipv4 => (67, 68),
            Family::Ipv6 => (547, 546),
        };
        if p.proto == Proto::Udp && p.sport == Some(dhcp.0) && p.dport == Some(dhcp.1) {
            return FinalVerdict::Accept;
        }
        if p.proto == Proto::Udp {
            let d = p.dport.unwrap();
            // Media ranges never open a port of a signalling service.
            let signalling = ["pjsip", "chansip", "iax"]
                .iter()
                .any(|s| serves(policy, s, p));
            let media = [policy.pbx.rtp, policy.pbx.udptl]
                .iter()
                .flatten()
                .any(|r| r.contains(d));
            if media && !signalling {
                return FinalVerdict::Accept;
            }
        }
        for t in &policy.pbx.trunks {
            if matches!(&t.host, Source::Net(pre) if pre.contains(&p.src))
                && serves(policy, t.protocol.service_name(), p)
            {
                return FinalVerdict::Accept;
            }
        }
        if pr.registered {
            let signalling = ["pjsip", "chansip", "iax"]
                .iter()
                .any(|s| serves(policy, s, p));
            let granted = policy
                .responsive
                .registered_grants
                .iter()
                .any(|s| serves(policy, s, p));
            if signalling || granted {
                return FinalVerdict::Accept;
            }
        }
        for u in &policy.users {
            for s in &u.services {
                if pr.granted.contains(&s.as_str()) && serves(policy, s, p) {
                    return FinalVerdict::Accept;
                }
            }
        }
        match zone {
            Zone::Trusted => return FinalVerdict::Accept,
            Zone::Reject => return deny,
            _ => {}
        }
        if policy
            .services
            .values()
            .any(|s| s.zones.contains(&zone) && serves(policy, &s.name, p))
        {
            return FinalVerdict::Accept;
        }
        // The tiers admit unknown sources; a trunk sending another protocol's signalling is
        // never admitted (nor ever banned).
        let trunk = policy
            .pbx
            .trunks
            .iter()
            .any(|t| matches!(&t.host, Source::Net(pre) if pre.contains(&p.src)));
        if responsive_port && !trunk {
            return FinalVerdict::Accept;
        }
        deny
    })();
    (v, zone)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PBXFW_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn compile_verifies_round_trips_and_agrees_with_naive(
        doc in policy_doc(),
        probes in prop::collection::vec(probe(), 1..24),
    ) {
        let Ok(policy) = Policy::from_value(doc).validate() else {
            return Ok(());
        };
        let rs = compile(&policy);
        prop_assert_eq!(pbxfw_core::verify_ir(&rs), Ok(()));
        let back = pbxfw_core::parse_ir(&rs.to_text());
        prop_assert_eq!(back.as_ref(), Ok(&rs));
        prop_assert_eq!(blocking_sets(&rs), Ok(()));
        for pr in &probes {
            let d = eval(&rs, &pr.packet, &pr.state(&rs));
            let (verdict, zone) = naive(&policy, pr);
            prop_assert_eq!(d.verdict, verdict, "packet {:?} decided by {}", pr, d.decided_by);
            prop_assert_eq!(d.zone, Some(zone));
        }
    }

    /// Arbitrary JSON documents: validation reports problems, never panics; valid ones compile.
    #[test]
    fn arbitrary_documents_never_panic(doc in arbitrary_json()) {
        if let Ok(v) = Policy::from_value(doc).validate() {
            prop_assert_eq!(pbxfw_core::verify_ir(&compile(&v)), Ok(()));
        }
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "settings",
        "interfaces",
        "networks",
        "services",
        "custom_services",
        "pbx",
        "blacklist",
        "responsive",
        "users",
        "source",
        "zone",
        "name",
        "ports",
        "zones",
        "protocol",
        "host",
        "entries",
        "rtp",
        "trunks",
        "enabled",
        "protocols",
        "services",
        "ssh",
        "eth0",
        "default_verdict",
        "registered_grants",
        "bogus",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "local",
            "trusted",
            "tcp/22",
            "udp/5060-5061",
            "10.0.0.0/8",
            "::/0",
            "pjsip",
            "x",
            "",
            "10000-20000",
            "0-0",
            "a.example",
            "300",
            "drop",
            "udp/70000",
            "10.0.0.300",
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// The agreement property is only as strong as the share of generated policies that are valid:
/// guard against a generator that drifts into producing mostly invalid documents.
#[test]
fn most_generated_policies_are_valid() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = policy_doc();
    let valid = (0..500)
        .filter(|_| {
            let doc = strategy.new_tree(&mut runner).unwrap().current();
            Policy::from_value(doc).validate().is_ok()
        })
        .count();
    assert!(
        valid >= 250,
        "only {valid} of 500 generated policies are valid"
    );
}
