//! The reference evaluator: what a packet gets from a ruleset, and which rule decided.
//!
//! It walks the IR exactly as the kernel walks the lowered rules: the base chain from the top,
//! `jump` pushes a return point, `goto` replaces the current chain, `return` and the end of a
//! non-base chain go back to the caller, the end of the base chain applies its policy. It is the
//! oracle every backend's kernel tests compare with.
//!
//! Rate limits (`limit`) are assumed not to be exceeded: the evaluator answers for one packet,
//! not a sequence of them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use super::{BasePolicy, CtState, L4Proto, Map, Match, Ruleset, SetKind, Verdict, CLASSIFY, INPUT};
use crate::model::Zone;
use crate::net::{Family, Prefix};

/// The protocol of a packet.
pub type Proto = L4Proto;

/// A packet arriving on the input hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// Input interface name.
    pub iif: String,
    /// Source address.
    pub src: IpAddr,
    /// Protocol.
    pub proto: Proto,
    /// Destination port (TCP, UDP).
    pub dport: Option<u16>,
    /// Source port (TCP, UDP).
    pub sport: Option<u16>,
    /// ICMP or ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// Connection-tracking state.
    pub ct: CtState,
    /// The connection's conntrack mark (0 for a new connection).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ct_mark: u32,
    /// The packet travels in the reply direction of its connection: the PBX opened it (an
    /// answer to the PBX's own request, or media of a stream the PBX sent first).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ct_reply: bool,
    /// The transport payload, for the rules that look into it (an HTTP request line); none
    /// for a packet without one (a SYN, a pure ACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Vec<u8>>,
    /// Whether a TCP packet is a SYN; `None`: a new connection's packet is, others are not
    /// (`Some(false)` with `ct` new is conntrack's loose pickup of a mid-stream packet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_syn: Option<bool>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Packet {
    /// A new-flow packet.
    pub fn new(iif: &str, src: IpAddr, proto: Proto, dport: Option<u16>) -> Packet {
        Packet {
            iif: iif.to_string(),
            src,
            proto,
            dport,
            sport: None,
            icmp_type: None,
            ct: CtState::New,
            ct_mark: 0,
            ct_reply: false,
            payload: None,
            tcp_syn: None,
        }
    }
}

/// The current elements of dynamic sets (bans, registrations, grants, resolved hostnames), and
/// the meters the packet's source is over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicState {
    /// Set name → elements, each a prefix of the set's key length.
    pub elements: BTreeMap<String, BTreeSet<Prefix>>,
    /// Meter sets whose rate the packet's source has exceeded (by default none: the evaluator
    /// answers for a source within every limit).
    pub meters_over: BTreeSet<String>,
}

impl DynamicState {
    /// Add an address to a dynamic set, masked to the set's key length.
    pub fn insert(&mut self, rs: &Ruleset, set: &str, addr: IpAddr) {
        let key_len = match rs.sets.get(set).map(|s| &s.kind) {
            Some(SetKind::Dynamic(d)) => d.key_len,
            _ => Family::of(&addr).bits(),
        };
        let len = key_len.min(Family::of(&addr).bits());
        if let Ok(p) = Prefix::new(addr, len) {
            self.elements.entry(set.to_string()).or_default().insert(p);
        }
    }
}

/// The final verdict for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalVerdict {
    /// Accepted.
    Accept,
    /// Dropped silently.
    Drop,
    /// Rejected with an answer.
    Reject,
}

impl std::fmt::Display for FinalVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FinalVerdict::Accept => "accept",
            FinalVerdict::Drop => "drop",
            FinalVerdict::Reject => "reject",
        })
    }
}

/// What happens to a packet and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Accept, drop or reject.
    pub verdict: FinalVerdict,
    /// The zone the packet's source belongs to (docs/policy.md, "Zones"), whatever step decided.
    pub zone: Option<Zone>,
    /// The policy object that decided: the matched set element's origin when the deciding rule
    /// matched through a static set element, the rule's origin otherwise.
    pub decided_by: String,
    /// The deciding rule: `(chain, index)`; `None` when the base chain's policy decided.
    pub rule: Option<(String, usize)>,
}

/// Evaluate `packet` against `rs` with the dynamic sets holding `state`.
pub fn eval(rs: &Ruleset, packet: &Packet, state: &DynamicState) -> Decision {
    let zone = classify(rs, packet, state);
    // A rule that changes the connection's mark changes it for the rules after it too.
    let mut packet = std::borrow::Cow::Borrowed(packet);
    let mut stack: Vec<(&str, usize)> = vec![(INPUT, 0)];
    // The verifier guarantees no cycles, but a hand-made IR may not be verified: bound the walk.
    let mut budget = 1_000_000usize;
    while let Some((chain_name, start)) = stack.pop() {
        let Some(chain) = rs.chains.get(chain_name) else {
            continue;
        };
        let mut i = start;
        let mut next: Option<(&str, usize)> = None;
        while i < chain.rules.len() && budget > 0 {
            budget -= 1;
            let rule = &chain.rules[i];
            let Some(element) = matches(rs, &rule.matches, &packet, state) else {
                i += 1;
                continue;
            };
            match rule.mark {
                Some(super::MarkOp::Set(bits)) => packet.to_mut().ct_mark |= bits,
                Some(super::MarkOp::Clear(bits)) => packet.to_mut().ct_mark &= !bits,
                None => {}
            }
            let decided_by = || match element {
                Some((prefix, "")) => format!("{}:{prefix}", rule.origin),
                Some((_, origin)) => origin.to_string(),
                None => rule.origin.clone(),
            };
            let done = |verdict| Decision {
                verdict,
                zone,
                decided_by: decided_by(),
                rule: Some((chain_name.to_string(), i)),
            };
            match &rule.verdict {
                Verdict::Accept => return done(FinalVerdict::Accept),
                Verdict::Drop => return done(FinalVerdict::Drop),
                Verdict::Reject => return done(FinalVerdict::Reject),
                Verdict::Jump(t) => {
                    stack.push((chain_name, i + 1));
                    next = Some((t, 0));
                    break;
                }
                Verdict::Goto(t) => {
                    next = Some((t, 0));
                    break;
                }
                Verdict::Return => break,
                Verdict::Dispatch(m) => match lookup_map(rs, m, &packet) {
                    Some(t) => {
                        next = Some((t, 0));
                        break;
                    }
                    None => i += 1,
                },
                Verdict::Log(_) => i += 1,
            }
        }
        if let Some(n) = next {
            stack.push(n);
        }
    }
    let policy = rs
        .chains
        .get(INPUT)
        .and_then(|c| c.hook)
        .unwrap_or(BasePolicy::Drop);
    Decision {
        verdict: match policy {
            BasePolicy::Accept => FinalVerdict::Accept,
            BasePolicy::Drop => FinalVerdict::Drop,
        },
        zone,
        decided_by: "policy".into(),
        rule: None,
    }
}

fn lookup_map<'a>(rs: &'a Ruleset, map: &str, packet: &Packet) -> Option<&'a str> {
    match rs.maps.get(map)? {
        Map::Src(m) => m.lookup(&packet.src),
        Map::Iif(m) => m.get(&packet.iif).map(String::as_str),
    }
}

/// The zone of the packet: the first zone chain the classify chain would send it to.
fn classify(rs: &Ruleset, packet: &Packet, state: &DynamicState) -> Option<Zone> {
    let chain = rs.chains.get(CLASSIFY)?;
    for rule in &chain.rules {
        if matches(rs, &rule.matches, packet, state).is_none() {
            continue;
        }
        let target = match &rule.verdict {
            Verdict::Goto(t) | Verdict::Jump(t) => Some(t.as_str()),
            Verdict::Dispatch(m) => lookup_map(rs, m, packet),
            _ => None,
        };
        if let Some(z) = target.and_then(|t| rs.chains.get(t)).and_then(|c| c.zone) {
            return Some(z);
        }
    }
    None
}

/// `None` when a match fails; `Some(the static set element matched and its origin, if any)`.
fn matches<'a>(
    rs: &'a Ruleset,
    ms: &[Match],
    p: &Packet,
    state: &DynamicState,
) -> Option<Option<(&'a Prefix, &'a str)>> {
    let mut element = None;
    let family = Family::of(&p.src);
    for m in ms {
        let ok = match m {
            Match::Family(f) => *f == family,
            Match::Iif(i) => *i == p.iif,
            Match::Proto(pr) => *pr == p.proto,
            Match::Dport(ports) => p.dport.is_some_and(|d| ports.contains(d)),
            Match::NotDport(ports) => p.dport.is_some_and(|d| !ports.contains(d)),
            Match::Sport(ports) => p.sport.is_some_and(|s| ports.contains(s)),
            Match::Ct(states) => states.contains(&p.ct),
            Match::IcmpType(types) => p.icmp_type.is_some_and(|t| types.contains(&t)),
            Match::Limit { .. } => true,
            Match::CtMark(bits) => p.ct_mark & bits == *bits,
            Match::CtReply => p.ct_reply,
            // The kernel has no direction for a packet without a connection (invalid): neither
            // `ct direction original` nor `--ctdir ORIGINAL` matches it.
            Match::CtOriginal => !p.ct_reply && p.ct != super::CtState::Invalid,
            Match::Payload(prefix) => p.payload.as_ref().is_some_and(|b| b.starts_with(prefix)),
            Match::Data => p.payload.as_ref().is_some_and(|b| !b.is_empty()),
            Match::Syn => {
                p.proto == L4Proto::Tcp && p.tcp_syn.unwrap_or(p.ct == super::CtState::New)
            }
            Match::Meter { set, .. } => state.meters_over.contains(set),
            Match::NotSrc(name) => match rs.sets.get(name) {
                None => false,
                Some(set) if set.family != family => false,
                Some(set) => match &set.kind {
                    SetKind::Static(s) => s.lookup(&p.src).is_none(),
                    SetKind::Dynamic(_) => !state
                        .elements
                        .get(name)
                        .is_some_and(|es| es.iter().any(|e| e.contains(&p.src))),
                },
            },
            Match::Src(name) => match rs.sets.get(name) {
                None => false,
                Some(set) if set.family != family => false,
                Some(set) => match &set.kind {
                    SetKind::Static(s) => match s.lookup(&p.src) {
                        Some((prefix, origin)) => {
                            element = Some((prefix, origin.as_str()));
                            true
                        }
                        None => false,
                    },
                    SetKind::Dynamic(_) => state
                        .elements
                        .get(name)
                        .is_some_and(|es| es.iter().any(|e| e.contains(&p.src))),
                },
            },
        };
        if !ok {
            return None;
        }
    }
    Some(element)
}
