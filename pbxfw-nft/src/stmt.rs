//! The nftables statements a chain's rules lower to, shared by the two load paths: printed as
//! text for `nft -f` ([`Line::text`]) and encoded as netlink expressions in process
//! ([`crate::netlink::ruleset`]). Every decision of the lowering (which rules merge into a
//! verdict map, the order of a rule's statements, how a `reject` answers) is taken once, here,
//! so that both paths load the same ruleset.

use std::collections::BTreeSet;

use pbxfw_core::{
    mask, value_addr, BasePolicy, CtState, Family, L4Proto, Map, MarkOp, Match, PortSet, Rate,
    Rule, Ruleset, SetKind, Verdict,
};

use crate::{sanitize_comment, LowerError, Options, BACKEND, REJECT_CHAIN};

/// Which port of the transport header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortDir {
    /// The source port.
    Sport,
    /// The destination port.
    Dport,
}

/// The packet's source as a set key: the family's source address, masked to `key_len` bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceKey {
    pub family: Family,
    pub key_len: u8,
}

impl SourceKey {
    fn of(rs: &Ruleset, set: &str) -> SourceKey {
        let s = &rs.sets[set];
        let key_len = match &s.kind {
            SetKind::Dynamic(d) => d.key_len,
            SetKind::Static(_) => s.family.bits(),
        };
        SourceKey {
            family: s.family,
            key_len,
        }
    }

    /// The mask, when the key is shorter than an address.
    pub fn mask(&self) -> Option<u128> {
        (self.key_len < self.family.bits()).then(|| mask(self.family, self.key_len))
    }

    fn text(&self) -> String {
        match self.mask() {
            Some(m) => format!("{} & {}", saddr(self.family), value_addr(self.family, m)),
            None => saddr(self.family).to_string(),
        }
    }
}

/// How a `reject` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// A TCP reset.
    TcpReset,
    /// ICMP port unreachable (of the family the rule established, else ICMPX).
    PortUnreachable,
}

/// What a rule does last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Final {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    Reject(Reject),
    /// Log with this prefix and go on.
    Log(String),
    /// Look the source up in a source map (goto on a hit).
    SrcVmap(Family, String),
    /// Look the input interface's name up in a map.
    IifVmap(String),
}

/// One statement of a rule, in the order nft evaluates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stmt {
    Nfproto(Family),
    /// `iif "lo"`: loopback is interface 1 in every network namespace.
    Loopback,
    IifName(String),
    Src(SourceKey, String),
    /// The source is not in the set.
    NotSrc(SourceKey, String),
    L4proto(L4Proto),
    Ports(L4Proto, PortDir, PortSet),
    /// The destination port is not in the set.
    NotDports(L4Proto, PortSet),
    IcmpTypes(L4Proto, BTreeSet<u8>),
    CtState(BTreeSet<CtState>),
    CtMarkHas(u32),
    CtReply,
    CtOriginal,
    /// Transport payload bytes (at most 16) at a bit offset.
    Payload(usize, Vec<u8>),
    Data,
    Syn,
    Meter {
        set: String,
        key: SourceKey,
        rate: Rate,
        burst: u32,
    },
    Limit(Rate, u32),
    Counter,
    Update(String, SourceKey),
    /// Hand the packet's first [`NOTIFY_SNAPLEN`] bytes to nfnetlink_log group N.
    Notify(u16),
    Mark(MarkOp),
    Final(Final),
}

/// A key a merged verdict map dispatches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VmapKey {
    Family(Family),
    Proto(L4Proto),
    Ct(CtState),
}

/// One rule of a chain as nft holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A rule of statements.
    Rule(Vec<Stmt>, String),
    /// Several IR rules merged into one verdict-map rule.
    Vmap(Vec<(VmapKey, Final)>, String),
}

/// The base chain's hook line.
pub(crate) fn hook_line(policy: BasePolicy) -> String {
    let p = match policy {
        BasePolicy::Accept => "accept",
        BasePolicy::Drop => "drop",
    };
    format!("\t\ttype filter hook input priority filter; policy {p};\n")
}

/// The rules of [`REJECT_CHAIN`]: a reset for TCP, port-unreachable otherwise.
pub(crate) fn reject_chain() -> Vec<Line> {
    vec![
        Line::Rule(
            vec![
                Stmt::L4proto(L4Proto::Tcp),
                Stmt::Final(Final::Reject(Reject::TcpReset)),
            ],
            "reject: tcp reset".into(),
        ),
        Line::Rule(
            vec![Stmt::Final(Final::Reject(Reject::PortUnreachable))],
            "reject: port unreachable".into(),
        ),
    ]
}

/// A chain's rules as nft lines.
pub(crate) fn chain_lines(
    rs: &Ruleset,
    rules: &[Rule],
    opts: &Options,
) -> Result<Vec<Line>, LowerError> {
    let mut out = Vec::with_capacity(rules.len());
    let mut i = 0;
    while i < rules.len() {
        if let Some((line, used)) = merged_vmap(&rules[i..], opts) {
            out.push(line);
            i += used;
            continue;
        }
        out.push(rule_line(rs, &rules[i], opts)?);
        i += 1;
    }
    Ok(out)
}

pub(crate) fn saddr(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ip saddr",
        Family::Ipv6 => "ip6 saddr",
    }
}

pub(crate) fn iface(name: &str) -> Result<String, LowerError> {
    if pbxfw_core::is_interface_name(name) {
        Ok(format!("\"{name}\""))
    } else {
        Err(LowerError::Unsupported {
            backend: BACKEND,
            feature: format!("interface name {name:?}"),
        })
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

fn plain_final(v: &Verdict) -> Option<Final> {
    Some(match v {
        Verdict::Accept => Final::Accept,
        Verdict::Drop => Final::Drop,
        Verdict::Jump(c) => Final::Jump(c.clone()),
        Verdict::Goto(c) => Final::Goto(c.clone()),
        _ => return None,
    })
}

/// Consecutive rules that each test one key of the same kind (the family, the protocol, or
/// the conntrack state) against distinct values, with a plain verdict, become one verdict-map
/// rule: a packet then pays one lookup instead of one rule per value. Exact, since a packet
/// has one value of each key and the values are distinct. Returns the line and how many rules
/// it replaces (at least 2), or `None`.
fn merged_vmap(rules: &[Rule], opts: &Options) -> Option<(Line, usize)> {
    let key_of = |r: &Rule| -> Option<(Vec<VmapKey>, Final)> {
        if r.update.is_some() || r.mark.is_some() || r.matches.len() != 1 {
            return None;
        }
        let verdict = plain_final(&r.verdict)?;
        match &r.matches[0] {
            Match::Family(f) => Some((vec![VmapKey::Family(*f)], verdict)),
            Match::Proto(p @ (L4Proto::Icmp | L4Proto::Icmpv6)) => {
                Some((vec![VmapKey::Proto(*p)], verdict))
            }
            Match::Ct(states) => Some((states.iter().map(|s| VmapKey::Ct(*s)).collect(), verdict)),
            _ => None,
        }
    };
    let kind = |k: &VmapKey| std::mem::discriminant(k);
    // Counters are per rule: keep rules apart when they are wanted.
    if opts.counters {
        return None;
    }
    let (first, _) = key_of(rules.first()?)?;
    let want = kind(first.first()?);
    let mut entries: Vec<(VmapKey, Final)> = Vec::new();
    let mut origins: Vec<&str> = Vec::new();
    let mut used = 0;
    for r in rules {
        let Some((keys, verdict)) = key_of(r) else {
            break;
        };
        if keys.iter().any(|k| kind(k) != want)
            || keys.iter().any(|k| entries.iter().any(|(e, _)| e == k))
        {
            break;
        }
        entries.extend(keys.into_iter().map(|k| (k, verdict.clone())));
        if !origins.contains(&r.origin.as_str()) {
            origins.push(&r.origin);
        }
        used += 1;
    }
    if used < 2 {
        return None;
    }
    Some((
        Line::Vmap(entries, sanitize_comment(&origins.join(" / "), 128)),
        used,
    ))
}

/// One IR rule becomes one nft rule. A `reject` answers TCP with a reset (an ICMP error does
/// not abort an IPv6 TCP connect, so the client would hang until its timeout) and everything
/// else with ICMP port-unreachable: a rule that may see TCP goes to [`REJECT_CHAIN`], which
/// picks the answer, so that its matches (and meters) are evaluated once.
fn rule_line(rs: &Ruleset, rule: &Rule, opts: &Options) -> Result<Line, LowerError> {
    let mut out: Vec<Stmt> = Vec::new();
    let proto = rule.matches.iter().find_map(|m| match m {
        Match::Proto(p) => Some(*p),
        _ => None,
    });
    let has = |f: fn(&Match) -> bool| rule.matches.iter().any(f);
    // The family is implied by an `ip saddr`/`ip6 saddr` or `icmp`/`icmpv6` expression, and by
    // dispatching on a source map; state it only when nothing else does.
    let implied = has(|m| matches!(m, Match::Src(_) | Match::IcmpType(_) | Match::Meter { .. }))
        || matches!(&rule.verdict, Verdict::Dispatch(m) if matches!(rs.maps.get(m), Some(Map::Src(_))));
    // Ports name their protocol (`udp dport`); state the protocol alone only without them.
    let proto_implied = has(|m| {
        matches!(
            m,
            Match::Dport(_) | Match::NotDport(_) | Match::Sport(_) | Match::IcmpType(_)
        )
    });
    // Emit in a fixed order: cheap, selective matches first; `limit` last so that it only
    // counts packets every other match accepted.
    for m in &rule.matches {
        if let Match::Family(f) = m {
            if !implied {
                out.push(Stmt::Nfproto(*f));
            }
        }
    }
    for m in &rule.matches {
        if let Match::Iif(i) = m {
            // Loopback always exists: match its index, cheaper than comparing names. Other
            // interfaces may come and go, so they are matched by name.
            if i == "lo" {
                out.push(Stmt::Loopback);
            } else {
                iface(i)?;
                out.push(Stmt::IifName(i.clone()));
            }
        }
    }
    for m in &rule.matches {
        if let Match::Src(s) = m {
            out.push(Stmt::Src(SourceKey::of(rs, s), s.clone()));
        }
    }
    if let Some(p) = proto {
        if !proto_implied {
            out.push(Stmt::L4proto(p));
        }
    }
    // Sport before dport reads naturally ("udp sport 67 udp dport 68").
    for m in &rule.matches {
        match (m, proto) {
            (Match::Sport(ps), Some(p)) => out.push(Stmt::Ports(p, PortDir::Sport, ps.clone())),
            (Match::IcmpType(types), Some(p)) => out.push(Stmt::IcmpTypes(p, types.clone())),
            _ => {}
        }
    }
    for m in &rule.matches {
        match (m, proto) {
            (Match::Dport(ps), Some(p)) => out.push(Stmt::Ports(p, PortDir::Dport, ps.clone())),
            (Match::NotDport(ps), Some(p)) => out.push(Stmt::NotDports(p, ps.clone())),
            _ => {}
        }
    }
    for m in &rule.matches {
        if let Match::Ct(states) = m {
            out.push(Stmt::CtState(states.clone()));
        }
    }
    for m in &rule.matches {
        match m {
            Match::CtMark(bits) => out.push(Stmt::CtMarkHas(*bits)),
            Match::CtReply => out.push(Stmt::CtReply),
            Match::CtOriginal => out.push(Stmt::CtOriginal),
            // `@ih` is the payload after the transport header, options included, wherever
            // it starts; a load past the packet's end fails and the rule does not match.
            // One comparison holds at most 16 bytes.
            Match::Payload(bytes) => {
                for (i, chunk) in bytes.chunks(16).enumerate() {
                    out.push(Stmt::Payload(i * 128, chunk.to_vec()));
                }
            }
            // Holds whenever a byte of payload can be loaded.
            Match::Data => out.push(Stmt::Data),
            Match::Syn => out.push(Stmt::Syn),
            _ => {}
        }
    }
    // A negated lookup last among the plain matches: it is the dearest, and only a packet
    // every cheaper match let through pays it (the family is stated at the front: a negated
    // lookup does not say it).
    for m in &rule.matches {
        if let Match::NotSrc(s) = m {
            out.push(Stmt::NotSrc(SourceKey::of(rs, s), s.clone()));
        }
    }
    for m in &rule.matches {
        if let Match::Meter { set, rate, burst } = m {
            out.push(Stmt::Meter {
                set: set.clone(),
                key: SourceKey::of(rs, set),
                rate: *rate,
                burst: *burst,
            });
        }
    }
    for m in &rule.matches {
        if let Match::Limit { rate, burst } = m {
            out.push(Stmt::Limit(*rate, *burst));
        }
    }
    if opts.counters {
        out.push(Stmt::Counter);
    }
    if let Some(set) = &rule.update {
        out.push(Stmt::Update(set.clone(), SourceKey::of(rs, set)));
    }
    if let Some(group) = rule.notify {
        out.push(Stmt::Notify(group));
    }
    if let Some(op) = rule.mark {
        out.push(Stmt::Mark(op));
    }
    out.push(Stmt::Final(match &rule.verdict {
        Verdict::Reject => match proto {
            Some(L4Proto::Tcp) => Final::Reject(Reject::TcpReset),
            Some(_) => Final::Reject(Reject::PortUnreachable),
            None => Final::Goto(REJECT_CHAIN.into()),
        },
        Verdict::Return => Final::Return,
        Verdict::Log(p) => Final::Log(sanitize_comment(p, 64)),
        Verdict::Dispatch(m) => match &rs.maps[m] {
            Map::Src(sm) => Final::SrcVmap(sm.family(), m.clone()),
            Map::Iif(_) => Final::IifVmap(m.clone()),
        },
        v => plain_final(v).expect("every other verdict is plain"),
    }));
    Ok(Line::Rule(out, sanitize_comment(&rule.origin, 128)))
}

fn l4(p: L4Proto) -> &'static str {
    match p {
        L4Proto::Tcp => "tcp",
        L4Proto::Udp => "udp",
        L4Proto::Icmp => "icmp",
        L4Proto::Icmpv6 => "icmpv6",
    }
}

/// How much of a notified packet the listener gets: the network header up to the end of an
/// IPv6 source address (an IPv4 source ends at byte 16), all it reads.
pub(crate) const NOTIFY_SNAPLEN: u32 = 40;

/// Up to this many ports, a negated port match with a range among several ranges lists its
/// ports one by one: an anonymous set holding a range is an interval set, which the kernel
/// looks up markedly slower than a hash of single ports (BENCHMARKS.md, "Where the per-packet
/// cost goes": 0.944 against 0.975 of connection tracking alone on the media path).
pub(crate) const SINGLES_UP_TO: u32 = 32;

/// The ports of `ps` one by one, when it has several ranges, a range among them, and at most
/// [`SINGLES_UP_TO`] ports; the text and the netlink lowering both use it, so that both load
/// paths declare the same set.
pub(crate) fn as_singles(ps: &PortSet) -> Option<Vec<u16>> {
    let r = ps.ranges();
    if r.len() < 2 || r.iter().all(|r| r.first == r.last) {
        return None;
    }
    let n: u32 = r.iter().map(|r| u32::from(r.last - r.first) + 1).sum();
    (n <= SINGLES_UP_TO).then(|| r.iter().flat_map(|r| r.first..=r.last).collect())
}

fn ports_text(ps: &PortSet) -> String {
    if ps.ranges().len() == 1 {
        ps.to_string()
    } else {
        format!("{{ {} }}", ps.to_string().replace(',', ", "))
    }
}

fn final_text(f: &Final) -> String {
    match f {
        Final::Accept => "accept".into(),
        Final::Drop => "drop".into(),
        Final::Return => "return".into(),
        Final::Jump(c) => format!("jump {c}"),
        Final::Goto(c) => format!("goto {c}"),
        Final::Reject(Reject::TcpReset) => "reject with tcp reset".into(),
        Final::Reject(Reject::PortUnreachable) => "reject".into(),
        Final::Log(p) => format!("log prefix \"{p}\""),
        Final::SrcVmap(f, m) => format!("{} vmap @{m}", saddr(*f)),
        Final::IifVmap(m) => format!("iifname vmap @{m}"),
    }
}

impl Stmt {
    fn text(&self) -> String {
        match self {
            Stmt::Nfproto(f) => format!("meta nfproto {}", family_name(*f)),
            Stmt::Loopback => "iif \"lo\"".into(),
            Stmt::IifName(i) => format!("iifname \"{i}\""),
            Stmt::Src(key, set) => format!("{} @{set}", key.text()),
            Stmt::NotSrc(key, set) => format!("{} != @{set}", key.text()),
            Stmt::L4proto(p) => format!("meta l4proto {}", l4(*p)),
            Stmt::Ports(p, dir, ps) => {
                let d = match dir {
                    PortDir::Sport => "sport",
                    PortDir::Dport => "dport",
                };
                format!("{} {d} {}", l4(*p), ports_text(ps))
            }
            Stmt::NotDports(p, ps) => match as_singles(ps) {
                Some(ports) => {
                    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                    format!("{} dport != {{ {} }}", l4(*p), list.join(", "))
                }
                None => format!("{} dport != {}", l4(*p), ports_text(ps)),
            },
            Stmt::IcmpTypes(p, types) => {
                let list: Vec<String> = types.iter().map(u8::to_string).collect();
                let v = if list.len() == 1 {
                    list[0].clone()
                } else {
                    format!("{{ {} }}", list.join(", "))
                };
                format!("{} type {v}", l4(*p))
            }
            Stmt::CtState(states) => {
                let s: Vec<String> = states.iter().map(|s| s.to_string()).collect();
                format!("ct state {}", s.join(","))
            }
            Stmt::CtMarkHas(bits) => format!("ct mark & {bits:#010x} == {bits:#010x}"),
            Stmt::CtReply => "ct direction reply".into(),
            Stmt::CtOriginal => "ct direction original".into(),
            Stmt::Payload(offset, bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                format!("@ih,{offset},{} 0x{hex}", bytes.len() * 8)
            }
            Stmt::Data => "@ih,0,8 & 0x0 == 0x0".into(),
            Stmt::Syn => "tcp flags & (fin | syn | rst | ack) == syn".into(),
            Stmt::Meter {
                set,
                key,
                rate,
                burst,
            } => format!(
                "update @{set} {{ {} limit rate over {}/{} burst {burst} packets }}",
                key.text(),
                rate.packets,
                rate.per.name()
            ),
            Stmt::Limit(rate, burst) => format!(
                "limit rate {}/{} burst {burst} packets",
                rate.packets,
                rate.per.name()
            ),
            Stmt::Counter => "counter".into(),
            Stmt::Update(set, key) => format!("update @{set} {{ {} }}", key.text()),
            Stmt::Notify(group) => format!("log group {group} snaplen {NOTIFY_SNAPLEN}"),
            Stmt::Mark(MarkOp::Set(bits)) => format!("ct mark set ct mark | {bits:#010x}"),
            Stmt::Mark(MarkOp::Clear(bits)) => format!("ct mark set ct mark & {:#010x}", !bits),
            Stmt::Final(f) => final_text(f),
        }
    }
}

impl Line {
    /// The rule as a line of an nft script.
    pub(crate) fn text(&self) -> String {
        match self {
            Line::Rule(stmts, comment) => {
                let mut parts: Vec<String> = stmts.iter().map(Stmt::text).collect();
                parts.push(format!("comment \"{comment}\""));
                parts.join(" ")
            }
            Line::Vmap(entries, comment) => {
                let selector = match entries[0].0 {
                    VmapKey::Family(_) => "meta nfproto",
                    VmapKey::Proto(_) => "meta l4proto",
                    VmapKey::Ct(_) => "ct state",
                };
                let map: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| {
                        let k = match k {
                            VmapKey::Family(f) => family_name(*f).to_string(),
                            VmapKey::Proto(p) => p.to_string(),
                            VmapKey::Ct(s) => s.to_string(),
                        };
                        format!("{k} : {}", final_text(v))
                    })
                    .collect();
                format!(
                    "{selector} vmap {{ {} }} comment \"{comment}\"",
                    map.join(", ")
                )
            }
        }
    }
}
