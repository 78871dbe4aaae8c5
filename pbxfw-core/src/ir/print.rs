//! The canonical text form of a [`Ruleset`]. [`super::parse`] reads it back; see there for the
//! grammar.

use std::fmt::Write;

use super::{Chain, CtState, DynamicSet, Map, Match, Ruleset, SetKind, Verdict, INPUT};

/// Quote a string: `"` and `\` escaped, control characters as `\u{..}`.
pub(crate) fn q(s: &str) -> String {
    if !s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        // The common case: nothing to escape.
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return out;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(super) fn print(rs: &Ruleset) -> String {
    let mut out = String::new();
    print_to(rs, &mut out, &mut |out, p, origin| {
        let _ = writeln!(out, "  {p} {}", q(origin));
    });
    out
}

/// Print into any writer; `element` writes each static set element (the fingerprint hashes
/// them in binary instead: formatting 100k addresses twice per apply is the costly part).
pub(super) fn print_to<W: Write>(
    rs: &Ruleset,
    out: &mut W,
    element: &mut dyn FnMut(&mut W, &crate::net::Prefix, &str),
) {
    let _ = out.write_str("pbxfw-ir 1\n");
    for (name, set) in &rs.sets {
        let _ = write!(out, "set {name} {}", set.family);
        match &set.kind {
            SetKind::Static(s) => {
                let kind = if s.is_hosts() {
                    "static hosts"
                } else {
                    "static"
                };
                let _ = writeln!(out, " {kind} {} {{", q(&set.comment));
                for (p, origin) in s.elements() {
                    element(out, p, origin);
                }
                let _ = out.write_str("}\n");
            }
            SetKind::Dynamic(DynamicSet {
                key_len,
                timeout,
                size,
                resolves,
                interval,
            }) => {
                let _ = write!(out, " dynamic key={key_len} size={size}");
                if let Some(t) = timeout {
                    let _ = write!(out, " timeout={t}");
                }
                if !resolves.is_empty() {
                    let names: Vec<&str> = resolves.iter().map(String::as_str).collect();
                    let _ = write!(out, " resolves={}", names.join(","));
                }
                if *interval {
                    let _ = out.write_str(" interval");
                }
                let _ = writeln!(out, " {}", q(&set.comment));
            }
        }
    }
    for (name, map) in &rs.maps {
        match map {
            Map::Src(m) => {
                let _ = writeln!(out, "map {name} src {} {{", m.family());
                for (r, chain) in m.entries() {
                    let _ = writeln!(out, "  {r} {chain}");
                }
            }
            Map::Iif(m) => {
                let _ = writeln!(out, "map {name} iif {{");
                for (iface, chain) in m {
                    let _ = writeln!(out, "  {} {chain}", q(iface));
                }
            }
        }
        let _ = out.write_str("}\n");
    }
    // The base chain first (it is where reading starts), then the rest by name.
    let ordered = rs
        .chains
        .get_key_value(INPUT)
        .into_iter()
        .chain(rs.chains.iter().filter(|(n, _)| *n != INPUT));
    for (name, chain) in ordered {
        print_chain(out, name, chain);
    }
}

fn print_chain(out: &mut impl Write, name: &str, chain: &Chain) {
    let _ = write!(out, "chain {name}");
    if let Some(policy) = chain.hook {
        let p = match policy {
            super::BasePolicy::Accept => "accept",
            super::BasePolicy::Drop => "drop",
        };
        let _ = write!(out, " hook=input policy={p}");
    }
    if let Some(z) = chain.zone {
        let _ = write!(out, " zone={z}");
    }
    let _ = out.write_str(" {\n");
    for rule in &chain.rules {
        let _ = out.write_char(' ');
        for m in &rule.matches {
            let _ = out.write_char(' ');
            print_match(out, m);
        }
        if let Some(set) = &rule.update {
            let _ = write!(out, " update @{set}");
        }
        if let Some(group) = rule.notify {
            let _ = write!(out, " notify {group}");
        }
        match rule.mark {
            Some(super::MarkOp::Set(bits)) => {
                let _ = write!(out, " mark-set {bits:#x}");
            }
            Some(super::MarkOp::Clear(bits)) => {
                let _ = write!(out, " mark-clear {bits:#x}");
            }
            None => {}
        }
        let _ = out.write_str(" -> ");
        print_verdict(out, &rule.verdict);
        let _ = writeln!(out, " {}", q(&rule.origin));
    }
    let _ = out.write_str("}\n");
}

fn print_match(out: &mut impl Write, m: &Match) {
    let _ = match m {
        Match::Family(f) => write!(out, "family {f}"),
        Match::Iif(i) => write!(out, "iif {}", q(i)),
        Match::Proto(p) => write!(out, "proto {p}"),
        Match::Dport(p) => write!(out, "dport {p}"),
        Match::NotDport(p) => write!(out, "dport-not {p}"),
        Match::Sport(p) => write!(out, "sport {p}"),
        Match::Src(s) => write!(out, "src @{s}"),
        Match::NotSrc(s) => write!(out, "src-not @{s}"),
        Match::Ct(states) => {
            let s: Vec<String> = states.iter().map(CtState::to_string).collect();
            write!(out, "ct {}", s.join(","))
        }
        Match::IcmpType(types) => {
            let s: Vec<String> = types.iter().map(u8::to_string).collect();
            write!(out, "icmp-type {}", s.join(","))
        }
        Match::Limit { rate, burst } => {
            write!(
                out,
                "limit {}/{} burst {burst}",
                rate.packets,
                rate.per.name()
            )
        }
        Match::CtMark(bits) => write!(out, "ct-mark {bits:#x}"),
        Match::CtReply => write!(out, "ct-reply"),
        Match::CtOriginal => write!(out, "ct-original"),
        Match::Payload(bytes) => write!(out, "payload {}", q(&String::from_utf8_lossy(bytes))),
        Match::Data => write!(out, "data"),
        Match::Syn => write!(out, "syn"),
        Match::Meter { set, rate, burst } => write!(
            out,
            "meter @{set} {}/{} burst {burst}",
            rate.packets,
            rate.per.name()
        ),
    };
}

fn print_verdict(out: &mut impl Write, v: &Verdict) {
    let _ = match v {
        Verdict::Accept => write!(out, "accept"),
        Verdict::Drop => write!(out, "drop"),
        Verdict::Reject => write!(out, "reject"),
        Verdict::Jump(c) => write!(out, "jump {c}"),
        Verdict::Goto(c) => write!(out, "goto {c}"),
        Verdict::Return => write!(out, "return"),
        Verdict::Dispatch(m) => write!(out, "dispatch {m}"),
        Verdict::Log(prefix) => write!(out, "log {}", q(prefix)),
    };
}
