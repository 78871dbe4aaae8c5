//! `explain`: what happens to a packet, which step of the packet path decided, and why.

use serde::{Deserialize, Serialize};

use crate::compile::names;
use crate::ir::{eval, DynamicState, FinalVerdict, Packet, Ruleset};
use crate::model::Zone;
use crate::net::Family;

/// The answer to "what happens to this packet".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Accept, drop or reject.
    pub verdict: FinalVerdict,
    /// The zone of the source (docs/policy.md, "Zones").
    pub zone: Option<Zone>,
    /// The deciding policy object (`trunk:provider-a`, `zone:local service:ssh`, `default`).
    pub decided_by: String,
    /// The step of the packet path (docs/policy.md, "The packet path"), 1 to 10.
    pub step: u8,
    /// What that step is.
    pub step_name: String,
    /// The deciding rule's chain, position and origin; absent when the chain policy decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
}

/// Where a rule sits in the IR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// Chain name.
    pub chain: String,
    /// Position in the chain, from 0.
    pub index: usize,
    /// The rule's origin.
    pub origin: String,
}

/// The step of docs/policy.md, "The packet path" an origin belongs to.
pub fn step_of(origin: &str) -> (u8, &'static str) {
    let starts = |p: &str| origin.starts_with(p);
    if starts("loopback") {
        (1, "loopback")
    } else if starts("invalid")
        || starts("established")
        || (starts("acme: ") && !starts("acme: window") && !starts("acme: data before"))
    {
        // The certificate-renewal window's gate sits before established flows; its admission
        // (`acme: window`, `acme: data before the handshake`) after the zones.
        (2, "connection state")
    } else if starts("blacklist") || starts("responsive ban") || starts("fleet") {
        (3, "blacklist and bans")
    } else if starts("icmp") || starts("dhcp") {
        (4, "ICMP essentials and DHCP")
    } else if starts("rtp") || starts("udptl") {
        (5, "RTP and UDPTL")
    } else if starts("trunk") {
        (6, "trunks")
    } else if starts("registered") || starts("grant") {
        (7, "registered sources and per-user grants")
    } else if starts("zone") || starts("acme: window") || starts("acme: data before") {
        (8, "zones")
    } else if starts("responsive") {
        (9, "responsive layer")
    } else {
        (10, "final verdict")
    }
}

/// Explain `packet`. With `registered`, its source is treated as a registered device.
pub fn explain(rs: &Ruleset, packet: &Packet, registered: bool) -> Explanation {
    let mut state = DynamicState::default();
    if registered {
        let f = Family::of(&packet.src);
        state.insert(rs, &names::registered(f), packet.src);
    }
    explain_with(rs, packet, &state)
}

/// Explain `packet` with the given dynamic set contents.
pub fn explain_with(rs: &Ruleset, packet: &Packet, state: &DynamicState) -> Explanation {
    let d = eval(rs, packet, state);
    let rule = d.rule.as_ref().map(|(chain, index)| RuleRef {
        chain: chain.clone(),
        index: *index,
        origin: rs.chains[chain].rules[*index].origin.clone(),
    });
    let (step, step_name) = step_of(rule.as_ref().map_or("default", |r| r.origin.as_str()));
    Explanation {
        verdict: d.verdict,
        zone: d.zone,
        decided_by: d.decided_by,
        step,
        step_name: step_name.to_string(),
        rule,
    }
}

#[cfg(test)]
mod tests {
    use super::step_of;

    #[test]
    fn every_origin_names_its_step() {
        for (origin, step) in [
            ("loopback", 1),
            ("established", 2),
            ("established: media", 2),
            ("acme: gate of a window connection", 2),
            ("acme: challenge request", 2),
            ("acme: not a challenge request", 2),
            ("invalid", 2),
            ("fleet ban", 3),
            ("blacklist:192.0.2.1", 3),
            ("responsive ban: kernel tier", 3),
            ("acme: window", 8),
            ("acme: data before the handshake", 8),
            ("zone:local service:ssh", 8),
            ("default", 10),
        ] {
            assert_eq!(step_of(origin).0, step, "{origin}");
        }
    }
}
