//! Proptest strategies for policies and packets, shared by the core's property tests and the
//! kernel differential tests of every backend. Addresses come from a small space so that
//! overrides, trunks and blacklists overlap.

use std::net::IpAddr;

use pbxfw_core::names;
use pbxfw_core::Family;
use pbxfw_core::{CtState, DynamicState};
use pbxfw_core::{Packet, Proto, Ruleset};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Zone names, aliases included.
pub const ZONES: &[&str] = &[
    "trusted", "local", "other", "internet", "reject", "external", "internal",
];
/// Interface names policies use.
pub const IFACES: &[&str] = &["eth0", "eth1", "eth2", "wg0"];
/// Catalogue service names.
pub const SERVICES: &[&str] = &[
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
/// Destination ports worth probing: every catalogue port, media edges, and strays.
pub const PORTS: &[u16] = &[
    22, 69, 80, 81, 83, 84, 123, 443, 900, 1194, 1443, 2222, 4000, 4569, 5060, 5061, 5160, 5222,
    8088, 9000, 10000, 15000, 20000, 20001,
];

/// Addresses drawn from a small space so that overrides, trunks and blacklists overlap.
pub fn v4_addr() -> impl Strategy<Value = String> {
    (0u8..2, 0u8..4, 0u8..8).prop_map(|(a, b, c)| format!("10.{a}.{b}.{c}"))
}

/// An IPv6 address from a small space.
pub fn v6_addr() -> impl Strategy<Value = String> {
    (0u16..2, 0u16..2, 0u16..8).prop_map(|(a, b, c)| format!("fd00:{a}:0:{b}::{c}"))
}

/// A network override source: an IPv4 or IPv6 prefix of varied length, or a hostname.
pub fn prefix() -> impl Strategy<Value = String> {
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

/// A zone name.
pub fn zone() -> impl Strategy<Value = &'static str> {
    prop::sample::select(ZONES)
}

/// Up to three service names.
pub fn services_subset() -> impl Strategy<Value = Vec<&'static str>> {
    prop::sample::subsequence(SERVICES, 0..4)
}

/// A policy document (JSON) exercising every section of the policy file.
pub fn policy_doc() -> impl Strategy<Value = Value> {
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

/// A packet and the dynamic state of its source.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The packet.
    pub packet: Packet,
    /// Its source is a registered device.
    pub registered: bool,
    /// Its source is banned.
    pub banned: bool,
    /// Its source is banned by the kernel tiers (`tier_ban4`/`tier_ban6`).
    pub tier_banned: bool,
    /// Per-user grant sets holding its source.
    pub granted: Vec<&'static str>,
}

/// A packet with its dynamic-set membership.
pub fn probe() -> impl Strategy<Value = Probe> {
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
        (
            prop::sample::select(vec![
                CtState::New,
                CtState::Established,
                CtState::Related,
                CtState::Invalid,
            ]),
            any::<bool>(),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.25),
            services_subset(),
        ),
    )
        .prop_map(
            |(
                iif,
                src,
                proto,
                dport,
                sport,
                icmp_type,
                (ct, reply),
                (registered, banned, tier_banned, granted),
            )| {
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
                // Only a connection's later packets have a direction of their own.
                packet.ct_reply = reply && matches!(ct, CtState::Established | CtState::Related);
                Probe {
                    packet,
                    registered,
                    banned,
                    tier_banned,
                    granted,
                }
            },
        )
}

impl Probe {
    /// The dynamic set contents this probe assumes, for `rs`.
    pub fn state(&self, rs: &Ruleset) -> DynamicState {
        let mut state = DynamicState::default();
        let f = Family::of(&self.packet.src);
        if self.registered {
            state.insert(rs, &names::registered(f), self.packet.src);
        }
        if self.banned {
            state.insert(rs, &names::ban(f), self.packet.src);
        }
        if self.tier_banned {
            state.insert(rs, &names::tier_ban(f), self.packet.src);
        }
        for s in &self.granted {
            let set = names::grant(s, f);
            if rs.sets.contains_key(&set) {
                state.insert(rs, &set, self.packet.src);
            }
        }
        state
    }
}
