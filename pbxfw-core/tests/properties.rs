//! Property tests: on arbitrary policies, validation and compilation never panic, the IR always
//! verifies and round-trips through its text form, and the reference evaluator over the IR
//! agrees with a naive evaluator written directly over the policy model (SPEC section 3).

use std::net::IpAddr;

use pbxfw_core::compile::names;
use pbxfw_core::ir::{self, CtState, DynamicState, FinalVerdict};
use pbxfw_core::net::Family;
use pbxfw_core::{
    compile, eval, DenyVerdict, Packet, Policy, Proto, Source, ValidPolicy, Zone, L4,
};
use proptest::prelude::*;
use serde_json::{json, Value};

const ZONES: &[&str] = &[
    "trusted", "local", "other", "internet", "reject", "external", "internal",
];
const IFACES: &[&str] = &["eth0", "eth1", "eth2", "wg0"];
const SERVICES: &[&str] = &[
    "ssh",
    "http",
    "https",
    "ucp",
    "api",
    "pjsip",
    "chansip",
    "iax",
    "webrtc",
    "provisioning",
    "xmpp",
    "ntp",
    "vpn",
];
const PORTS: &[u16] = &[
    22, 69, 80, 81, 83, 84, 123, 443, 900, 1194, 1443, 2222, 4000, 4569, 5060, 5061, 5160, 5222,
    8088, 9000, 10000, 15000, 20000, 20001,
];

/// Addresses drawn from a small space so that overrides, trunks and blacklists overlap.
fn v4_addr() -> impl Strategy<Value = String> {
    (0u8..2, 0u8..4, 0u8..8).prop_map(|(a, b, c)| format!("10.{a}.{b}.{c}"))
}

fn v6_addr() -> impl Strategy<Value = String> {
    (0u16..2, 0u16..2, 0u16..8).prop_map(|(a, b, c)| format!("fd00:{a}:0:{b}::{c}"))
}

fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            v4_addr(),
            prop::sample::select(vec![8u8, 15, 16, 24, 30, 32])
        )
            .prop_map(|(a, l)| format!("{a}/{l}")),
        (
            v6_addr(),
            prop::sample::select(vec![16u8, 32, 63, 64, 127, 128])
        )
            .prop_map(|(a, l)| format!("{a}/{l}")),
        Just("trunk.example".to_string()),
    ]
}

fn zone() -> impl Strategy<Value = &'static str> {
    prop::sample::select(ZONES)
}

fn services_subset() -> impl Strategy<Value = Vec<&'static str>> {
    prop::sample::subsequence(SERVICES, 0..4)
}

fn policy_doc() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(prop::sample::select(IFACES), zone(), 0..4),
        prop::collection::vec((prefix(), zone()), 0..6),
        prop::collection::vec(
            (prop::sample::select(SERVICES), prop::sample::subsequence(&ZONES[..5], 0..3)),
            0..3,
        ),
        prop::collection::vec(
            (prop::sample::select(vec!["pjsip", "chansip", "iax"]), prefix()),
            0..3,
        ),
        prop::collection::vec(prefix(), 0..3),
        (any::<bool>(), prop::sample::subsequence(vec!["pjsip", "chansip", "iax"], 0..3)),
        prop::collection::vec(services_subset(), 0..3),
        (any::<bool>(), prop::option::of((500u16..12000, 0u16..12000))),
        services_subset(),
    )
        .prop_map(
            |(ifaces, nets, svc, trunks, bl, (resp_on, protos), users, (reject, rtp), grants)| {
                let mut doc = json!({
                    "settings": {"default_verdict": if reject {"reject"} else {"drop"}},
                    "interfaces": ifaces,
                    "networks": nets.iter().map(|(s, z)| json!({"source": s, "zone": z})).collect::<Vec<_>>(),
                    "services": svc.iter().map(|(s, z)| (s.to_string(), json!({"zones": z}))).collect::<serde_json::Map<_, _>>(),
                    "pbx": {
                        "trunks": trunks.iter().enumerate().map(|(i, (p, h))| json!({"name": format!("t{i}"), "protocol": p, "host": h})).collect::<Vec<_>>(),
                    },
                    "blacklist": {"entries": bl},
                    "responsive": {"enabled": resp_on, "protocols": protos, "registered_grants": grants},
                    "users": users.iter().enumerate().map(|(i, s)| json!({"name": format!("{}", 300 + i), "services": s})).collect::<Vec<_>>(),
                    "custom_services": [{"name": "billing", "ports": ["tcp/9000-9010", "udp/9000"], "zones": ["local"]}],
                });
                if let Some((a, len)) = rtp {
                    doc["pbx"]["rtp"] = json!(format!("{a}-{}", a.saturating_add(len)));
                }
                doc
            },
        )
}

#[derive(Debug, Clone)]
struct Probe {
    packet: Packet,
    registered: bool,
    banned: bool,
    granted: Vec<&'static str>,
}

fn probe() -> impl Strategy<Value = Probe> {
    let src = prop_oneof![
        v4_addr(),
        v6_addr(),
        Just("192.0.2.1".to_string()),
        Just("2001:db8::1".to_string())
    ];
    (
        prop::sample::select(vec!["lo", "eth0", "eth1", "eth2", "wg0", "ppp0"]),
        src,
        0u8..4,
        prop::sample::select(PORTS),
        prop::option::of(prop::sample::select(vec![67u16, 547, 5060, 40000])),
        prop::sample::select(vec![1u8, 2, 3, 8, 11, 128, 135, 137, 200]),
        prop::sample::select(vec![
            CtState::New,
            CtState::Established,
            CtState::Related,
            CtState::Invalid,
        ]),
        (any::<bool>(), any::<bool>(), services_subset()),
    )
        .prop_map(
            |(iif, src, proto, dport, sport, icmp_type, ct, (registered, banned, granted))| {
                let src: IpAddr = src.parse().unwrap();
                let proto = match (proto, src.is_ipv4()) {
                    (0, _) => Proto::Udp,
                    (1, _) => Proto::Tcp,
                    (_, true) => Proto::Icmp,
                    (_, false) => Proto::Icmpv6,
                };
                let ported = matches!(proto, Proto::Udp | Proto::Tcp);
                let mut packet = Packet::new(iif, src, proto, ported.then_some(dport));
                packet.sport = if ported { sport } else { None };
                packet.icmp_type = (!ported).then_some(icmp_type);
                packet.ct = ct;
                Probe {
                    packet,
                    registered,
                    banned,
                    granted,
                }
            },
        )
}

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

/// SPEC section 3, written straight over the policy model, with no IR in between.
fn naive(policy: &ValidPolicy, pr: &Probe) -> (FinalVerdict, Zone) {
    let p = &pr.packet;
    let deny = match policy.settings.default_verdict {
        DenyVerdict::Drop => FinalVerdict::Drop,
        DenyVerdict::Reject => FinalVerdict::Reject,
    };
    // Zone (SPEC 2.1): the longest network override containing the source, else the interface.
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
        let blacklisted = policy
            .blacklist
            .iter()
            .any(|e| matches!(&e.source, Source::Net(pre) if pre.contains(&p.src)));
        if blacklisted {
            return deny;
        }
        if pr.banned {
            return FinalVerdict::Drop;
        }
        let responsive_port = policy
            .responsive_protocols()
            .any(|proto| serves(policy, proto.service_name(), p));
        match p.ct {
            CtState::Invalid => return FinalVerdict::Drop,
            CtState::Established | CtState::Related if !responsive_port => {
                return FinalVerdict::Accept
            }
            _ => {}
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
        if responsive_port {
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
        prop_assert_eq!(ir::verify(&rs), Ok(()));
        let back = ir::parse(&rs.to_text());
        prop_assert_eq!(back.as_ref(), Ok(&rs));
        for pr in &probes {
            let mut state = DynamicState::default();
            let f = Family::of(&pr.packet.src);
            if pr.registered {
                state.insert(&rs, &names::registered(f), pr.packet.src);
            }
            if pr.banned {
                state.insert(&rs, &names::ban(f), pr.packet.src);
            }
            for s in &pr.granted {
                let set = names::grant(s, f);
                if rs.sets.contains_key(&set) {
                    state.insert(&rs, &set, pr.packet.src);
                }
            }
            let d = eval(&rs, &pr.packet, &state);
            let (verdict, zone) = naive(&policy, pr);
            prop_assert_eq!(d.verdict, verdict, "packet {:?} decided by {}", pr, d.decided_by);
            prop_assert_eq!(d.zone, Some(zone));
        }
    }

    /// Arbitrary JSON documents: validation reports problems, never panics; valid ones compile.
    #[test]
    fn arbitrary_documents_never_panic(doc in arbitrary_json()) {
        if let Ok(v) = Policy::from_value(doc).validate() {
            prop_assert_eq!(ir::verify(&compile(&v)), Ok(()));
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
