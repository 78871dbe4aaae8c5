//! The IR verifier. A ruleset that fails it is a compiler bug, never a user error.
//!
//! Invariants checked:
//! 1. Exactly one base chain, named [`INPUT`](super::INPUT).
//! 2. Every `jump`/`goto` target is an existing, non-base chain; every `dispatch` names an
//!    existing map; every map entry names an existing, non-base chain.
//! 3. The graph of jumps, gotos and dispatches has no cycle.
//! 4. Every `src @set` names an existing set, and the rule has a `family` match equal to the
//!    set's family. A rule dispatching on a source map has a `family` match equal to the map's.
//! 5. `dport`/`sport` need `proto tcp` or `proto udp` in the same rule; `icmp-type` needs
//!    `proto icmp` with family ipv4 or `proto icmpv6` with family ipv6.
//! 6. No match kind appears twice in one rule; ct state lists and ICMP type lists are non-empty.
//! 7. Static set elements and map ranges are of the set's/map's family, sorted and disjoint
//!    (also guaranteed by their constructors).
//! 8. Dynamic sets: key length within the family, size above zero.
//! 9. A `meter` and an `update` name an existing *dynamic* set of the rule's family.
//! 10. Every rule has a non-empty origin of at most 128 bytes; names are at most 64 bytes of
//!     `[A-Za-z0-9_-]`; rate limits and bursts are above zero.

use std::collections::{BTreeMap, BTreeSet};

use super::{L4Proto, Map, Match, Ruleset, SetKind, Verdict, INPUT};
use crate::net::Family;

/// A broken invariant, naming where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("IR invariant broken at {at}: {message}")]
pub struct VerifyError {
    /// `chain X rule N`, `set X`, `map X`.
    pub at: String,
    /// Which invariant.
    pub message: String,
}

fn fail(at: impl Into<String>, message: impl Into<String>) -> VerifyError {
    VerifyError {
        at: at.into(),
        message: message.into(),
    }
}

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Check every invariant listed in the module doc.
pub fn verify(rs: &Ruleset) -> Result<(), VerifyError> {
    let bases: Vec<&String> = rs
        .chains
        .iter()
        .filter(|(_, c)| c.hook.is_some())
        .map(|(n, _)| n)
        .collect();
    if bases.len() != 1 || bases[0] != INPUT {
        return Err(fail(
            "ruleset",
            format!("base chains {bases:?}, expected exactly [\"input\"]"),
        ));
    }
    let target_ok = |c: &str| rs.chains.get(c).is_some_and(|c| c.hook.is_none());

    for (name, set) in &rs.sets {
        let at = format!("set {name}");
        if !name_ok(name) {
            return Err(fail(at, "bad name"));
        }
        match &set.kind {
            SetKind::Static(s) => {
                for w in s.elements().windows(2) {
                    if w[0].0.end() >= w[1].0.start() {
                        return Err(fail(at, "elements unsorted or overlapping"));
                    }
                }
                if s.elements().iter().any(|(p, _)| p.family() != set.family) {
                    return Err(fail(at, "element of the wrong family"));
                }
                if s.is_hosts() && s.elements().iter().any(|(p, _)| !p.is_host()) {
                    return Err(fail(at, "a network in a set of addresses"));
                }
            }
            SetKind::Dynamic(d) => {
                if d.key_len == 0 || d.key_len > set.family.bits() || d.size == 0 {
                    return Err(fail(at, "bad key length or size"));
                }
                if d.interval && (d.key_len != set.family.bits() || !d.resolves.is_empty()) {
                    return Err(fail(
                        at,
                        "an interval set is keyed by whole addresses and resolves nothing",
                    ));
                }
            }
        }
    }

    for (name, map) in &rs.maps {
        let at = format!("map {name}");
        if !name_ok(name) {
            return Err(fail(at, "bad name"));
        }
        let chains: Vec<&String> = match map {
            Map::Src(m) => {
                for w in m.entries().windows(2) {
                    if w[0].0.last >= w[1].0.first {
                        return Err(fail(at, "ranges unsorted or overlapping"));
                    }
                }
                if m.entries().iter().any(|(r, _)| r.family != m.family()) {
                    return Err(fail(at, "range of the wrong family"));
                }
                m.entries().iter().map(|(_, c)| c).collect()
            }
            Map::Iif(m) => m.values().collect(),
        };
        if let Some(c) = chains.iter().find(|c| !target_ok(c)) {
            return Err(fail(at, format!("entry targets missing or base chain {c}")));
        }
    }

    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (cname, chain) in &rs.chains {
        if !name_ok(cname) {
            return Err(fail(format!("chain {cname}"), "bad name"));
        }
        let out = edges.entry(cname.as_str()).or_default();
        for (i, rule) in chain.rules.iter().enumerate() {
            let at = format!("chain {cname} rule {i}");
            if rule.origin.is_empty() || rule.origin.len() > 128 {
                return Err(fail(at, "origin empty or longer than 128 bytes"));
            }
            check_matches(rs, &at, &rule.matches)?;
            if let Some(set) = &rule.update {
                check_dynamic(rs, &at, set, rule.family())?;
            }
            if let Some(super::MarkOp::Set(0) | super::MarkOp::Clear(0)) = rule.mark {
                return Err(fail(at, "a mark change without bits"));
            }
            match &rule.verdict {
                Verdict::Jump(t) | Verdict::Goto(t) => {
                    if !target_ok(t) {
                        return Err(fail(at, format!("target {t} missing or a base chain")));
                    }
                    out.insert(t.as_str());
                }
                Verdict::Dispatch(m) => {
                    let Some(map) = rs.maps.get(m) else {
                        return Err(fail(at, format!("map {m} missing")));
                    };
                    match map {
                        Map::Src(sm) => {
                            if rule.family() != Some(sm.family()) {
                                return Err(fail(at, "source map dispatch without its family"));
                            }
                            out.extend(sm.entries().iter().map(|(_, c)| c.as_str()));
                        }
                        Map::Iif(im) => out.extend(im.values().map(String::as_str)),
                    }
                }
                Verdict::Log(p) if p.len() > 64 => {
                    return Err(fail(at, "log prefix longer than 64 bytes"))
                }
                _ => {}
            }
        }
    }
    // Cycle check: depth-first with colours.
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
    ) -> Result<(), VerifyError> {
        match state.get(n) {
            Some(1) => return Err(fail(format!("chain {n}"), "jump/goto cycle")),
            Some(2) => return Ok(()),
            _ => {}
        }
        state.insert(n, 1);
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, state)?;
        }
        state.insert(n, 2);
        Ok(())
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        visit(n, &edges, &mut state)?;
    }
    Ok(())
}

fn check_dynamic(
    rs: &Ruleset,
    at: &str,
    set: &str,
    family: Option<Family>,
) -> Result<(), VerifyError> {
    match rs.sets.get(set) {
        Some(s) if matches!(s.kind, SetKind::Dynamic(_)) && Some(s.family) == family => Ok(()),
        _ => Err(fail(
            at,
            format!("meter/update set {set} missing, not dynamic, or without its family"),
        )),
    }
}

fn check_matches(rs: &Ruleset, at: &str, matches: &[Match]) -> Result<(), VerifyError> {
    let mut kinds = std::collections::HashSet::new();
    let mut family = None;
    let mut proto = None;
    for m in matches {
        if !kinds.insert(std::mem::discriminant(m)) {
            return Err(fail(at, "a match kind appears twice"));
        }
        match m {
            Match::Family(f) => family = Some(*f),
            Match::Proto(p) => proto = Some(*p),
            _ => {}
        }
    }
    // A match and its negation in one rule: iptables refuses a second `--dport`, and a rule
    // that tests the direction both ways can never hold.
    let has = |f: fn(&Match) -> bool| matches.iter().any(f);
    if has(|m| matches!(m, Match::Dport(_))) && has(|m| matches!(m, Match::NotDport(_))) {
        return Err(fail(at, "dport and dport-not in one rule"));
    }
    if has(|m| matches!(m, Match::CtReply)) && has(|m| matches!(m, Match::CtOriginal)) {
        return Err(fail(at, "ct-reply and ct-original in one rule"));
    }
    for m in matches {
        match m {
            Match::Src(s) | Match::NotSrc(s) => {
                let Some(set) = rs.sets.get(s) else {
                    return Err(fail(at, format!("set {s} missing")));
                };
                if family != Some(set.family) {
                    return Err(fail(at, format!("src @{s} without family {}", set.family)));
                }
            }
            Match::Dport(_) | Match::NotDport(_) | Match::Sport(_)
                if !matches!(proto, Some(L4Proto::Tcp | L4Proto::Udp)) =>
            {
                return Err(fail(at, "port match without proto tcp or udp"));
            }
            Match::IcmpType(t) => {
                let ok = matches!(
                    (proto, family),
                    (Some(L4Proto::Icmp), Some(Family::Ipv4))
                        | (Some(L4Proto::Icmpv6), Some(Family::Ipv6))
                );
                if !ok || t.is_empty() {
                    return Err(fail(at, "icmp-type without matching proto and family"));
                }
            }
            Match::Ct(s) if s.is_empty() => return Err(fail(at, "empty ct state list")),
            Match::CtMark(0) => return Err(fail(at, "ct-mark without bits")),
            Match::Payload(_) | Match::Data | Match::Syn if proto != Some(L4Proto::Tcp) => {
                return Err(fail(at, "payload match without proto tcp"))
            }
            Match::Payload(b)
                if b.is_empty()
                    || b.len() > super::MAX_PAYLOAD_MATCH
                    || !b.iter().all(|c| (0x20..0x7f).contains(c)) =>
            {
                return Err(fail(at, "payload must be 1 to 32 bytes of printable ASCII"))
            }
            Match::Meter { set, rate, burst } => {
                check_dynamic(rs, at, set, family)?;
                if rate.packets == 0 || *burst == 0 {
                    return Err(fail(at, "zero rate or burst"));
                }
            }
            Match::Limit { rate, burst } if rate.packets == 0 || *burst == 0 => {
                return Err(fail(at, "zero rate or burst"))
            }
            Match::Iif(i) if i.is_empty() || i.len() > 15 => {
                return Err(fail(at, "bad interface name"))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_broken_invariants() {
        let ok = "pbxfw-ir 1\nchain input hook=input policy=drop {\n  -> jump a \"x\"\n}\nchain a {\n}\n";
        verify(&super::super::parse(ok).unwrap()).unwrap();
        for (bad, why) in [
            ("pbxfw-ir 1\nchain a {\n}\n", "base chains"),
            ("pbxfw-ir 1\nchain input hook=input policy=drop {\n  -> jump b \"x\"\n}\n", "missing"),
            ("pbxfw-ir 1\nchain input hook=input policy=drop {\n  -> jump a \"x\"\n}\nchain a {\n  -> goto b \"y\"\n}\nchain b {\n  -> jump a \"z\"\n}\n", "cycle"),
            ("pbxfw-ir 1\nset s ipv4 dynamic key=32 size=1 \"c\"\nchain input hook=input policy=drop {\n  src @s -> drop \"x\"\n}\n", "without family"),
            ("pbxfw-ir 1\nchain input hook=input policy=drop {\n  dport 22 -> drop \"x\"\n}\n", "without proto"),
            ("pbxfw-ir 1\nchain input hook=input policy=drop {\n  proto udp dport-not 5060 -> drop \"x\"\n  proto udp dport 22 dport-not 5060 -> drop \"x\"\n}\n", "dport and dport-not"),
            ("pbxfw-ir 1\nchain input hook=input policy=drop {\n  ct-reply ct-original -> drop \"x\"\n}\n", "ct-reply and ct-original"),
            ("pbxfw-ir 1\nchain input hook=input policy=drop {\n  dport-not 22 -> drop \"x\"\n}\n", "without proto"),
            ("pbxfw-ir 1\nchain input hook=input policy=drop {\n  -> drop \"\"\n}\n", "origin"),
        ] {
            let err = verify(&super::super::parse(bad).unwrap()).unwrap_err();
            assert!(err.message.contains(why), "{bad}: {err}");
        }
    }
}
