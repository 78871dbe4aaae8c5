//! The rule IR: what the firewall does, in the firewall's words and nobody's syntax.
//!
//! A [`Ruleset`] holds named address [`Set`]s, verdict [`Map`]s and [`Chain`]s of [`Rule`]s.
//! Exactly one chain is the base chain on the input hook ([`INPUT`]); the others are reached by
//! `jump`, `goto` or a map dispatch. Everything is kept in sorted containers so that printing,
//! hashing and lowering are byte-stable.
//!
//! The IR is built through constructors that keep its invariants ([`StaticSet::new`] normalises
//! elements, [`SrcMap::new`] checks ranges); [`verify`] checks the whole (see its module doc for
//! the list), and [`eval`] is the reference interpreter that every backend must agree with.

mod eval;
mod parse;
mod print;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

pub use eval::{eval, Decision, DynamicState, FinalVerdict, Packet, Proto};
pub use parse::{parse, ParseIrError};
pub use verify::{verify, VerifyError};

use crate::model::{PortRange, Rate, Zone};
use crate::net::{Family, Prefix, Range};

/// The name of the base chain on the input hook.
pub const INPUT: &str = "input";
/// The name of the chain that classifies a packet's source into a zone.
pub const CLASSIFY: &str = "classify";

/// A complete ruleset: sets, maps and chains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Named address sets.
    pub sets: BTreeMap<String, Set>,
    /// Named verdict maps.
    pub maps: BTreeMap<String, Map>,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
}

impl Ruleset {
    /// The canonical text form (see [`parse`] for the grammar).
    pub fn to_text(&self) -> String {
        print::print(self)
    }

    /// A short stable hash of the canonical form: equal rulesets have equal fingerprints
    /// ([`FingerprintParts`] says how it is made).
    pub fn fingerprint(&self) -> String {
        self.fingerprint_parts().fingerprint()
    }

    /// What the fingerprint is made of: the canonical text without the static sets' elements,
    /// hashed, and per static set a digest of its elements that an added element updates
    /// without the others (the policy edit path adds a blacklisted address to a 100k-entry
    /// ruleset without building it).
    pub fn fingerprint_parts(&self) -> FingerprintParts {
        use sha2::{Digest, Sha256};
        /// Hashes the text as it is printed: the 100k-element IR is never held as a string.
        struct Hasher(Sha256);
        impl std::fmt::Write for Hasher {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.update(s.as_bytes());
                Ok(())
            }
        }
        let mut h = Hasher(Sha256::new());
        print::print_to(self, &mut h, &mut |_, _, _| {});
        let sets = self
            .sets
            .iter()
            .filter_map(|(name, set)| match &set.kind {
                SetKind::Static(s) => {
                    let mut d = SetDigest::default();
                    for (p, origin) in s.elements() {
                        d.add(p, origin);
                    }
                    Some((name.clone(), d))
                }
                SetKind::Dynamic(_) => None,
            })
            .collect();
        FingerprintParts {
            text: h.0.finalize().into(),
            sets,
        }
    }

    /// Dynamic sets fed by resolving `hostname`, for the resolver that keeps them fresh.
    pub fn sets_resolving<'a>(&'a self, hostname: &'a str) -> impl Iterator<Item = &'a str> {
        self.sets
            .iter()
            .filter_map(move |(name, set)| match &set.kind {
                SetKind::Dynamic(d) if d.resolves.contains(hostname) => Some(name.as_str()),
                _ => None,
            })
    }
}

/// A ruleset's fingerprint in parts ([`Ruleset::fingerprint_parts`]).
///
/// The fingerprint is the first 8 bytes of SHA-256 over a version tag, the SHA-256 of the
/// canonical text with no static set element printed, and each static set's name, element
/// count and [`SetDigest`], in name order. Two rulesets with equal fingerprints are equal
/// but for a collision; the fingerprint tells "the kernel holds what pbxfw recorded", it is no
/// signature (64 bits, and the policy's author could aim at a collision of the set digests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FingerprintParts {
    /// SHA-256 of the canonical text without static set elements.
    pub text: [u8; 32],
    /// Every static set's digest, by name.
    pub sets: BTreeMap<String, SetDigest>,
}

impl FingerprintParts {
    /// The fingerprint: 16 hex digits.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"pbxfw-fingerprint 2\n");
        h.update(self.text);
        for (name, d) in &self.sets {
            h.update((name.len() as u32).to_be_bytes());
            h.update(name.as_bytes());
            h.update(d.count.to_be_bytes());
            for lane in d.sum {
                h.update(lane.to_be_bytes());
            }
        }
        let digest = h.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The digest of a static set's elements: their number and the sum (four 64-bit lanes, modulo
/// 2^64 each) of each element's SHA-256 over its family, length, first address and origin. A
/// sum does not depend on the order, and an element is added or taken out alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SetDigest {
    /// Elements.
    pub count: u64,
    /// The sum of their hashes.
    pub sum: [u64; 4],
}

impl SetDigest {
    fn hash(p: &Prefix, origin: &str) -> [u64; 4] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update([p.family() as u8, p.prefix_len()]);
        h.update(p.start().to_be_bytes());
        // Length-prefixed, so that no two (prefix, origin) pairs hash alike by accident.
        h.update((origin.len() as u32).to_be_bytes());
        h.update(origin.as_bytes());
        let d = h.finalize();
        std::array::from_fn(|i| u64::from_be_bytes(d[i * 8..i * 8 + 8].try_into().unwrap()))
    }

    /// Count an element in.
    pub fn add(&mut self, p: &Prefix, origin: &str) {
        let x = Self::hash(p, origin);
        self.count += 1;
        for (s, x) in self.sum.iter_mut().zip(x) {
            *s = s.wrapping_add(x);
        }
    }

    /// Take an element out (it must have been counted in).
    pub fn remove(&mut self, p: &Prefix, origin: &str) {
        let x = Self::hash(p, origin);
        self.count = self.count.saturating_sub(1);
        for (s, x) in self.sum.iter_mut().zip(x) {
            *s = s.wrapping_sub(x);
        }
    }
}

/// A named set of addresses of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// IPv4 or IPv6.
    pub family: Family,
    /// Static (replaced on every apply) or dynamic (elements with timeouts, kept across applies).
    pub kind: SetKind,
    /// What the set is for, for people and for kernel comments.
    pub comment: String,
}

/// The two kinds of set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetKind {
    /// Elements fixed by the policy.
    Static(StaticSet),
    /// Elements added at run time (bans, registrations, resolved hostnames).
    Dynamic(DynamicSet),
}

/// Sorted, disjoint prefixes, each with the policy object it came from. An empty origin means
/// "the origin of the rule that matched it, then `:` and the element" (`blacklist:192.0.2.7`),
/// which saves building one string per element of a 100k blacklist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StaticSet {
    elements: Vec<(Prefix, String)>,
    hosts: bool,
}

impl StaticSet {
    /// Normalise: sort, and drop every prefix covered by another (the covering one's origin is
    /// kept), so the result is disjoint as interval sets require. Returns an error naming the
    /// first element of the wrong family.
    pub fn new(
        family: Family,
        elements: impl IntoIterator<Item = (Prefix, String)>,
    ) -> Result<StaticSet, Prefix> {
        let mut v: Vec<(Prefix, String)> = elements.into_iter().collect();
        if let Some((p, _)) = v.iter().find(|(p, _)| p.family() != family) {
            return Err(*p);
        }
        v.sort_by(|a, b| {
            a.0.start()
                .cmp(&b.0.start())
                .then(a.0.prefix_len().cmp(&b.0.prefix_len()))
        });
        let mut out: Vec<(Prefix, String)> = Vec::with_capacity(v.len());
        for (p, origin) in v {
            if let Some((last, _)) = out.last() {
                if last.covers(&p) {
                    continue;
                }
            }
            out.push((p, origin));
        }
        Ok(StaticSet {
            elements: out,
            hosts: false,
        })
    }

    /// A set of single addresses only (backends may use a hash set: O(1) lookups at any size).
    /// Returns an error naming the first element that is not an address of `family`.
    pub fn hosts(
        family: Family,
        elements: impl IntoIterator<Item = (Prefix, String)>,
    ) -> Result<StaticSet, Prefix> {
        let mut s = StaticSet::new(family, elements)?;
        if let Some((p, _)) = s.elements.iter().find(|(p, _)| !p.is_host()) {
            return Err(*p);
        }
        s.hosts = true;
        Ok(s)
    }

    /// Whether this set holds single addresses only, by construction.
    pub fn is_hosts(&self) -> bool {
        self.hosts
    }

    /// The elements, sorted and disjoint.
    pub fn elements(&self) -> &[(Prefix, String)] {
        &self.elements
    }

    /// The element containing `addr`, if any (binary search: elements are disjoint).
    pub fn lookup(&self, addr: &std::net::IpAddr) -> Option<&(Prefix, String)> {
        let v = crate::net::addr_value(addr);
        let i = self.elements.partition_point(|(p, _)| p.start() <= v);
        let candidate = self.elements.get(i.checked_sub(1)?)?;
        candidate.0.contains(addr).then_some(candidate)
    }

    /// Whether every element is a single address (a plain hash set suffices).
    pub fn all_hosts(&self) -> bool {
        self.elements.iter().all(|(p, _)| p.is_host())
    }
}

/// A set whose elements come and go at run time, each with its own timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicSet {
    /// Elements are prefixes of this length (32/128 for addresses, 64 for IPv6 per-/64 bans);
    /// a packet's source is masked to it before the lookup.
    pub key_len: u8,
    /// Default timeout in seconds for elements added without one; `None` means elements
    /// without a timeout never expire.
    pub timeout: Option<u32>,
    /// Maximum number of elements.
    pub size: u32,
    /// Hostnames whose A/AAAA answers feed this set.
    pub resolves: BTreeSet<String>,
    /// Elements are prefixes of any length (the fleet's `Range` bans), disjoint, instead of
    /// keys of `key_len` bits: an interval set with timeouts (nft), a `hash:net` ipset.
    pub interval: bool,
}

/// A verdict map: a key of the packet selects the chain to go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Map {
    /// Source address ranges (disjoint, sorted) → chain.
    Src(SrcMap),
    /// Input interface name → chain.
    Iif(BTreeMap<String, String>),
}

/// Disjoint, sorted source ranges of one family, each mapped to a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrcMap {
    family: Family,
    entries: Vec<(Range, String)>,
}

impl SrcMap {
    /// Build from ranges that must be of `family`, sorted and disjoint.
    pub fn new(family: Family, entries: Vec<(Range, String)>) -> Result<SrcMap, String> {
        for w in entries.windows(2) {
            if w[0].0.last >= w[1].0.first {
                return Err(format!(
                    "ranges {} and {} overlap or are unsorted",
                    w[0].0, w[1].0
                ));
            }
        }
        if let Some((r, _)) = entries.iter().find(|(r, _)| r.family != family) {
            return Err(format!("range {r} is not {family}"));
        }
        Ok(SrcMap { family, entries })
    }

    /// The family of the keys.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The entries.
    pub fn entries(&self) -> &[(Range, String)] {
        &self.entries
    }

    /// The chain for `addr`, if a range contains it.
    pub fn lookup(&self, addr: &std::net::IpAddr) -> Option<&str> {
        let v = crate::net::addr_value(addr);
        let i = self.entries.partition_point(|(r, _)| r.first <= v);
        let (r, chain) = self.entries.get(i.checked_sub(1)?)?;
        r.contains(addr).then_some(chain.as_str())
    }
}

/// A chain of rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    /// Set on the one base chain: it is attached to the input hook with this policy.
    pub hook: Option<BasePolicy>,
    /// Set on the chain a packet reaches once classified into this zone.
    pub zone: Option<Zone>,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// The policy of the base chain: what happens to a packet that falls off its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BasePolicy {
    /// Accept.
    Accept,
    /// Drop.
    Drop,
}

/// A rule: all matches must hold, then the verdict applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Conditions, all of which must hold (an empty list always matches).
    pub matches: Vec<Match>,
    /// A side effect before the verdict: put the source (masked to the set's key length) into
    /// this dynamic set with the set's timeout, or refresh its timeout if it is there.
    pub update: Option<String>,
    /// A side effect before the verdict: hand the packet's headers to the program listening
    /// on this nfnetlink_log group. The kernel tiers' bans do, so that the daemon cuts the
    /// banned source's flows (docs/responsive.md, "Flows of a banned source").
    pub notify: Option<u16>,
    /// A side effect before the verdict on the packet's connection-tracking mark.
    pub mark: Option<MarkOp>,
    /// What to do.
    pub verdict: Verdict,
    /// The policy object that caused this rule (`zone:local service:ssh`, `blacklist`).
    pub origin: String,
}

impl Rule {
    /// A rule; the origin must name what caused it.
    pub fn new(matches: Vec<Match>, verdict: Verdict, origin: impl Into<String>) -> Rule {
        Rule {
            matches,
            update: None,
            notify: None,
            mark: None,
            verdict,
            origin: origin.into(),
        }
    }

    /// The same rule, also updating `set` with the packet's source.
    pub fn with_update(mut self, set: impl Into<String>) -> Rule {
        self.update = Some(set.into());
        self
    }

    /// The same rule, also handing the packet to nfnetlink_log group `group`.
    pub fn with_notify(mut self, group: u16) -> Rule {
        self.notify = Some(group);
        self
    }

    /// The same rule, also changing the connection's mark.
    pub fn with_mark(mut self, op: MarkOp) -> Rule {
        self.mark = Some(op);
        self
    }

    /// The family this rule is restricted to, if any.
    pub fn family(&self) -> Option<Family> {
        self.matches.iter().find_map(|m| match m {
            Match::Family(f) => Some(*f),
            _ => None,
        })
    }
}

/// A protocol a rule can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (IPv4).
    Icmp,
    /// ICMPv6.
    Icmpv6,
}

impl fmt::Display for L4Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
            L4Proto::Icmp => "icmp",
            L4Proto::Icmpv6 => "icmpv6",
        })
    }
}

impl L4Proto {
    /// The echo request type of ICMP (8) and ICMPv6 (128), the type a probe or an explanation
    /// assumes when none is given; `None` for TCP and UDP.
    pub fn echo_request(self) -> Option<u8> {
        match self {
            L4Proto::Icmp => Some(8),
            L4Proto::Icmpv6 => Some(128),
            L4Proto::Tcp | L4Proto::Udp => None,
        }
    }
}

impl std::str::FromStr for L4Proto {
    type Err = String;
    /// The names [`Display`](fmt::Display) writes: `tcp`, `udp`, `icmp`, `icmpv6`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(L4Proto::Tcp),
            "udp" => Ok(L4Proto::Udp),
            "icmp" => Ok(L4Proto::Icmp),
            "icmpv6" => Ok(L4Proto::Icmpv6),
            p => Err(format!("unknown proto {p:?} (udp, tcp, icmp, icmpv6)")),
        }
    }
}

/// Connection-tracking states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CtState {
    /// First packet of a flow.
    New,
    /// Part of a flow that has seen replies.
    Established,
    /// Related to a flow (ICMP errors, FTP data).
    Related,
    /// Matches no flow and starts none.
    Invalid,
}

impl fmt::Display for CtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
        })
    }
}

impl std::str::FromStr for CtState {
    type Err = String;
    /// The names [`Display`](fmt::Display) writes: `new`, `established`, `related`, `invalid`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "new" => Ok(CtState::New),
            "established" => Ok(CtState::Established),
            "related" => Ok(CtState::Related),
            "invalid" => Ok(CtState::Invalid),
            s => Err(format!(
                "unknown state {s:?} (new, established, related, invalid)"
            )),
        }
    }
}

/// Sorted, merged port ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSet(Vec<PortRange>);

impl PortSet {
    /// Sort and merge overlapping or adjacent ranges. Returns `None` for an empty input.
    pub fn new(ranges: impl IntoIterator<Item = PortRange>) -> Option<PortSet> {
        let mut v: Vec<PortRange> = ranges.into_iter().collect();
        v.sort();
        let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
        for r in v {
            match out.last_mut() {
                Some(last) if r.first as u32 <= last.last as u32 + 1 => {
                    last.last = last.last.max(r.last)
                }
                _ => out.push(r),
            }
        }
        (!out.is_empty()).then_some(PortSet(out))
    }

    /// The ranges.
    pub fn ranges(&self) -> &[PortRange] {
        &self.0
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A change to the connection-tracking mark of the packet's connection: bits set or cleared,
/// the others kept (pbxfw owns only the bits it names; other software may use the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkOp {
    /// Set these bits.
    Set(u32),
    /// Clear these bits.
    Clear(u32),
}

/// The most payload bytes a [`Match::Payload`] compares.
pub const MAX_PAYLOAD_MATCH: usize = 32;

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The packet's address family.
    Family(Family),
    /// The input interface, by name.
    Iif(String),
    /// The layer-4 protocol.
    Proto(L4Proto),
    /// Destination port (needs `Proto` tcp or udp in the same rule).
    Dport(PortSet),
    /// Destination port *not* in the set (needs `Proto` tcp or udp in the same rule).
    NotDport(PortSet),
    /// Source port (needs `Proto` tcp or udp in the same rule).
    Sport(PortSet),
    /// The source address (masked to the set's key length) is in the named set (needs `Family`).
    Src(String),
    /// The source address (masked to the set's key length) is *not* in the named set (needs
    /// `Family`; a packet of the other family does not match).
    NotSrc(String),
    /// The connection-tracking state is one of these.
    Ct(BTreeSet<CtState>),
    /// ICMP or ICMPv6 type (needs `Proto` icmp or icmpv6).
    IcmpType(BTreeSet<u8>),
    /// Holds when the packet's source (masked to the meter set's key length) is *over* this
    /// rate; every evaluation counts a packet in the source's element of the dynamic set.
    Meter {
        /// The dynamic set holding one rate state per source.
        set: String,
        /// The rate.
        rate: Rate,
        /// Packets allowed above the rate in a burst.
        burst: u32,
    },
    /// The connection-tracking mark of the packet's connection has all these bits set.
    CtMark(u32),
    /// The packet travels in the reply direction of its connection: the PBX opened the
    /// connection (conntrack's `ct direction reply`).
    CtReply,
    /// The packet travels in the original direction of its connection: the peer opened it
    /// (conntrack's `ct direction original`; the complement of `CtReply` for a packet with a
    /// connection; an `invalid` packet has none and matches neither).
    CtOriginal,
    /// The transport payload (after the TCP header and its options) begins with these bytes
    /// (1 to [`MAX_PAYLOAD_MATCH`], printable ASCII; needs `Proto` tcp).
    Payload(Vec<u8>),
    /// The packet carries transport payload, at least one byte (needs `Proto` tcp). The
    /// iptables backend also counts as data what it cannot see past: an IPv4 packet with IP
    /// options, an IPv6 packet whose next header is not TCP.
    Data,
    /// A TCP SYN opening a connection: SYN set, ACK, FIN and RST clear (needs `Proto` tcp).
    /// Conntrack also calls a mid-stream packet of a connection it does not know `new` (its
    /// loose pickup); this tells them apart.
    Syn,
    /// Holds while packets matching the rule so far stay under this rate (global, not per
    /// source).
    Limit {
        /// The rate.
        rate: Rate,
        /// Packets allowed above the rate in a burst.
        burst: u32,
    },
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept the packet (final for this hook).
    Accept,
    /// Drop it silently.
    Drop,
    /// Drop it and answer (ICMP admin-prohibited, TCP reset).
    Reject,
    /// Run the chain, then come back.
    Jump(String),
    /// Run the chain instead of the rest of this one.
    Goto(String),
    /// Leave this chain.
    Return,
    /// Look the packet up in the map: on a hit, `goto` the chain found; on a miss, go on.
    Dispatch(String),
    /// Log the packet with this prefix and go on.
    Log(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn p(s: &str) -> Prefix {
        Prefix::from_str(s).unwrap()
    }

    #[test]
    fn static_set_drops_covered_prefixes() {
        let s = StaticSet::new(
            Family::Ipv4,
            [
                (p("10.1.2.3"), "a".into()),
                (p("10.0.0.0/8"), "b".into()),
                (p("192.0.2.0/24"), "c".into()),
                (p("10.0.0.0/8"), "d".into()),
            ],
        )
        .unwrap();
        let got: Vec<String> = s
            .elements()
            .iter()
            .map(|(p, o)| format!("{p} {o}"))
            .collect();
        assert_eq!(got, ["10.0.0.0/8 b", "192.0.2.0/24 c"]);
        assert_eq!(s.lookup(&"10.9.9.9".parse().unwrap()).unwrap().1, "b");
        assert!(s.lookup(&"11.0.0.0".parse().unwrap()).is_none());
        assert!(StaticSet::new(Family::Ipv6, [(p("10.0.0.0/8"), "x".into())]).is_err());
    }

    #[test]
    fn port_sets_merge() {
        let ps = PortSet::new([
            PortRange::single(5061),
            PortRange::single(5060),
            PortRange {
                first: 10,
                last: 20,
            },
            PortRange {
                first: 15,
                last: 30,
            },
        ])
        .unwrap();
        assert_eq!(ps.to_string(), "10-30,5060-5061");
        assert!(PortSet::new([]).is_none());
    }
}
