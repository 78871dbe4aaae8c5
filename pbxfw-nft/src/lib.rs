//! pbxfw-nft: lowers the pbxfw rule IR to nftables.
//!
//! [`lower`] turns a [`Ruleset`] into one script for `nft -f` that owns only `table inet pbxfw`
//! (docs/safety.md). [`Kernel`] loads it into the current network namespace in one transaction,
//! verifies it, reports status and removes it; [`netlink`] adds and removes set elements without
//! a reload.
//!
//! ```
//! use pbxfw_core::{compile, Policy};
//! let policy = Policy::from_toml("[interfaces]\neth1 = \"local\"\n")?.validate()?;
//! let script = pbxfw_nft::lower(&compile(&policy), &pbxfw_nft::Options::default())?;
//! assert!(script.text.contains("table inet pbxfw {"));
//! assert!(script.text.contains(r#"iifname vmap @zone_iif comment "zone: interfaces""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The reload idiom
//! `nft -f` is additive, and replacing the whole table would empty the dynamic sets (bans,
//! registrations). The script, one transaction, therefore: creates the table if absent and
//! flushes its rules (sets keep their elements); declares every set, map and chain (creating
//! the missing ones; dynamic sets are never touched again, so their elements keep their
//! remaining timeouts); deletes the static sets and maps and declares them again with their
//! elements (replaced exactly, on nft's fast path: adding 100k elements to an existing interval
//! set would make nft read the old ones back first); then adds the rules.
//!
//! # Input safety
//! Every string that reaches the script (comments, interface names, log prefixes) is either
//! validated or sanitised so that it cannot close its quotes: see [`sanitize_comment`].
#![deny(unsafe_code)] // allowed in `netlink` only, for the socket system calls
#![deny(missing_docs)]

pub mod kernel;
pub mod netlink;

use std::fmt::Write;

pub use kernel::{ApplyOptions, Kernel, KernelError, Status};

use pbxfw_core::{mask, value_addr, Family};
use pbxfw_core::{
    verify_ir as verify, BasePolicy, L4Proto, Map, Match, Rule, Ruleset, SetKind, Verdict,
    VerifyError,
};

/// The name this backend reports (`Unsupported { backend, .. }`, status).
pub const BACKEND: &str = "nft";
/// The table pbxfw owns.
pub const TABLE: &str = "pbxfw";
/// The chain a `reject` that may see TCP goes to: a reset for TCP, port-unreachable otherwise.
pub const REJECT_CHAIN: &str = "reject_packet";
/// A one-element set holding the loaded ruleset's fingerprint (as an IPv6 address whose first
/// 64 bits are the fingerprint): it is replaced on every load (table and chain comments are not),
/// and listing one small set is cheap, whereas any other listing makes `nft` read every element
/// of every set (seconds at 100k blacklist entries).
pub const FINGERPRINT_SET: &str = "fingerprint";

/// The fingerprint (16 hex digits) as the element of [`FINGERPRINT_SET`].
pub fn fingerprint_element(fp: &str) -> String {
    let hex: String = fp
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    let hex = format!("{hex:0<16}");
    format!(
        "{}:{}:{}:{}::",
        &hex[0..4],
        &hex[4..8],
        &hex[8..12],
        &hex[12..16]
    )
}

/// The fingerprint back from an element of [`FINGERPRINT_SET`] as nft prints it.
pub fn fingerprint_from_element(el: &str) -> Option<String> {
    let addr: std::net::Ipv6Addr = el.parse().ok()?;
    let seg = addr.segments();
    Some(format!(
        "{:04x}{:04x}{:04x}{:04x}",
        seg[0], seg[1], seg[2], seg[3]
    ))
}

/// How to lower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The table name (tests use their own; production uses [`TABLE`]).
    pub table: String,
    /// Add a `counter` to every rule (for `status` and debugging).
    pub counters: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            table: TABLE.into(),
            counters: false,
        }
    }
}

/// Why a ruleset could not be lowered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    /// The IR broke an invariant: a bug in whatever built it.
    #[error("the ruleset is not valid IR")]
    Invalid(#[source] VerifyError),
    /// Something nftables cannot express.
    #[error("backend {backend} does not support {feature}")]
    Unsupported {
        /// Always `nft` here.
        backend: &'static str,
        /// What is missing.
        feature: String,
    },
}

/// An nft script and the fingerprint of the IR it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Text for `nft -f`.
    pub text: String,
    /// [`Ruleset::fingerprint`] of the source IR; also stored as the table's comment.
    pub fingerprint: String,
}

/// Make a string safe inside an nft double-quoted string: quotes and backslashes become `'`
/// and `/`, control characters are dropped, and the result is cut to `max` bytes on a
/// character boundary.
pub fn sanitize_comment(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => continue,
            c => c,
        };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn iface(name: &str) -> Result<String, LowerError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(LowerError::Unsupported {
            backend: BACKEND,
            feature: format!("interface name {name:?}"),
        })
    }
}

fn addr_type(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4_addr",
        Family::Ipv6 => "ipv6_addr",
    }
}

fn saddr(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ip saddr",
        Family::Ipv6 => "ip6 saddr",
    }
}

/// Lower a ruleset to an nft script. The IR is verified first.
pub fn lower(rs: &Ruleset, opts: &Options) -> Result<Script, LowerError> {
    verify(rs).map_err(LowerError::Invalid)?;
    for reserved in [FINGERPRINT_SET, REJECT_CHAIN] {
        if rs.chains.contains_key(reserved) || rs.sets.contains_key(reserved) {
            return Err(LowerError::Unsupported {
                backend: BACKEND,
                feature: format!("a chain named {reserved} (reserved)"),
            });
        }
    }
    let t = &opts.table;
    let fingerprint = rs.fingerprint();
    let packet_path_sets: std::collections::BTreeSet<&str> = rs
        .chains
        .values()
        .flat_map(|c| &c.rules)
        .flat_map(|r| {
            let meters = r.matches.iter().filter_map(|m| match m {
                Match::Meter { set, .. } => Some(set.as_str()),
                _ => None,
            });
            meters.chain(r.update.as_deref())
        })
        .collect();
    let set_header = |out: &mut String, name: &str, set: &pbxfw_core::Set| {
        let _ = writeln!(out, "\n\tset {name} {{");
        let _ = writeln!(out, "\t\ttype {}", addr_type(set.family));
        match &set.kind {
            // A set of addresses is a hash set: O(1) lookups at any size.
            SetKind::Static(s) if s.is_hosts() => {}
            SetKind::Static(_) => {
                let _ = writeln!(out, "\t\tflags interval");
            }
            SetKind::Dynamic(d) => {
                // Sets the packet path writes (meters, sliding bans) need the dynamic flag;
                // the others are only written by pbxfw.
                let flags = if packet_path_sets.contains(name) {
                    "dynamic, timeout"
                } else if d.interval {
                    "interval, timeout"
                } else {
                    "timeout"
                };
                let _ = writeln!(out, "\t\tflags {flags}");
                if let Some(secs) = d.timeout {
                    let _ = writeln!(out, "\t\ttimeout {secs}s");
                }
                let _ = writeln!(out, "\t\tsize {}", d.size);
            }
        }
        let _ = writeln!(
            out,
            "\t\tcomment \"{}\"",
            sanitize_comment(&set.comment, 100)
        );
    };
    let map_header = |out: &mut String, name: &str, map: &Map| {
        let key = match map {
            Map::Src(m) => format!("{} : verdict;\n\t\tflags interval", addr_type(m.family())),
            Map::Iif(_) => "ifname : verdict".to_string(),
        };
        let _ = writeln!(out, "\n\tmap {name} {{\n\t\ttype {key}");
    };
    let base = rs.chains.get_key_value(pbxfw_core::INPUT);
    let others = rs
        .chains
        .iter()
        .filter(|(n, c)| c.hook.is_none() && *n != "input");
    let chains: Vec<(&String, &pbxfw_core::Chain)> = base.into_iter().chain(others).collect();

    let mut out = String::new();
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let _ = writeln!(out, "# generated by pbxfw; fingerprint {fingerprint}");
    let _ = writeln!(out, "table inet {t}");
    let _ = writeln!(out, "flush table inet {t}");
    // 1. Declare everything, creating what is missing: sets (dynamic ones keep their elements),
    //    maps, and the chains the maps' verdicts name.
    let _ = writeln!(out, "table inet {t} {{");
    let _ = writeln!(
        out,
        "\n\tset {FINGERPRINT_SET} {{\n\t\ttype ipv6_addr\n\t}}"
    );
    for (name, set) in &rs.sets {
        set_header(&mut out, name, set);
        let _ = writeln!(out, "\t}}");
    }
    for (name, map) in &rs.maps {
        map_header(&mut out, name, map);
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "\n\tchain {REJECT_CHAIN} {{\n\t}}");
    let hook_line = |policy: BasePolicy| {
        let p = match policy {
            BasePolicy::Accept => "accept",
            BasePolicy::Drop => "drop",
        };
        format!("\t\ttype filter hook input priority filter; policy {p};\n")
    };
    for (name, chain) in &chains {
        // A chain cannot become a base chain later: the hook is declared with it.
        let header = chain.hook.map(hook_line).unwrap_or_default();
        let _ = writeln!(out, "\n\tchain {name} {{\n{header}\t}}");
    }
    let _ = writeln!(out, "}}");
    // 2. Static sets and maps are deleted and declared again with their elements: replaced
    //    exactly, on the fast path (adding 100k elements to an existing interval set makes nft
    //    read the old ones back first).
    let _ = writeln!(out, "delete set inet {t} {FINGERPRINT_SET}");
    for (name, set) in &rs.sets {
        if matches!(set.kind, SetKind::Static(_)) {
            let _ = writeln!(out, "delete set inet {t} {name}");
        }
    }
    for name in rs.maps.keys() {
        let _ = writeln!(out, "delete map inet {t} {name}");
    }
    // 3. The new contents and the rules.
    let _ = writeln!(out, "table inet {t} {{");
    let _ = writeln!(
        out,
        "\n\tset {FINGERPRINT_SET} {{\n\t\ttype ipv6_addr\n\t\tcomment \"the loaded ruleset's fingerprint\"\n\t\telements = {{ {} }}\n\t}}",
        fingerprint_element(&fingerprint)
    );
    for (name, set) in &rs.sets {
        let SetKind::Static(s) = &set.kind else {
            continue;
        };
        set_header(&mut out, name, set);
        if !s.elements().is_empty() {
            out.push_str("\t\telements = { ");
            for (i, (p, _)) in s.elements().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{p}");
            }
            out.push_str(" }\n");
        }
        let _ = writeln!(out, "\t}}");
    }
    for (name, map) in &rs.maps {
        map_header(&mut out, name, map);
        let entries: Vec<String> = match map {
            Map::Src(m) => m
                .entries()
                .iter()
                .map(|(r, c)| format!("{r} : goto {c}"))
                .collect(),
            Map::Iif(m) => m
                .iter()
                .map(|(i, c)| Ok(format!("{} : goto {c}", iface(i)?)))
                .collect::<Result<_, LowerError>>()?,
        };
        if !entries.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", entries.join(", "));
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(
        out,
        "\n\tchain {REJECT_CHAIN} {{\n\t\tmeta l4proto tcp reject with tcp reset comment \"reject: tcp reset\"\n\t\treject comment \"reject: port unreachable\"\n\t}}"
    );
    for (name, chain) in &chains {
        let _ = writeln!(out, "\n\tchain {name} {{");
        if let Some(policy) = chain.hook {
            out.push_str(&hook_line(policy));
        }
        let mut i = 0;
        while i < chain.rules.len() {
            if let Some((line, used)) = merged_vmap(&chain.rules[i..], opts) {
                let _ = writeln!(out, "\t\t{line}");
                i += used;
                continue;
            }
            for line in lower_rule(rs, &chain.rules[i], opts)? {
                let _ = writeln!(out, "\t\t{line}");
            }
            i += 1;
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    Ok(Script {
        text: out,
        fingerprint,
    })
}

/// The packet's source as a set key: `ip saddr`, or masked (`ip6 saddr & ffff:ffff:ffff:ffff::`)
/// for sets keyed by prefix.
fn source_key(rs: &Ruleset, set: &str) -> String {
    let s = &rs.sets[set];
    let key_len = match &s.kind {
        SetKind::Dynamic(d) => d.key_len,
        SetKind::Static(_) => s.family.bits(),
    };
    if key_len < s.family.bits() {
        let m = value_addr(s.family, mask(s.family, key_len));
        format!("{} & {m}", saddr(s.family))
    } else {
        saddr(s.family).to_string()
    }
}

/// Consecutive rules that each test one key of the same kind (the family, the protocol, or
/// the conntrack state) against distinct values, with a plain verdict, become one verdict-map
/// rule: a packet then pays one lookup instead of one rule per value. Exact, since a packet
/// has one value of each key and the values are distinct. Returns the line and how many rules
/// it replaces (at least 2), or `None`.
fn merged_vmap(rules: &[Rule], opts: &Options) -> Option<(String, usize)> {
    #[derive(PartialEq)]
    enum Key {
        Family,
        Proto,
        Ct,
    }
    let key_of = |r: &Rule| -> Option<(Key, Vec<String>, String)> {
        if r.update.is_some() || r.mark.is_some() || r.matches.len() != 1 {
            return None;
        }
        let verdict = match &r.verdict {
            Verdict::Accept => "accept".to_string(),
            Verdict::Drop => "drop".to_string(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Goto(c) => format!("goto {c}"),
            _ => return None,
        };
        match &r.matches[0] {
            Match::Family(f) => Some((Key::Family, vec![f.to_string()], verdict)),
            Match::Proto(p @ (L4Proto::Icmp | L4Proto::Icmpv6)) => {
                Some((Key::Proto, vec![p.to_string()], verdict))
            }
            Match::Ct(states) => Some((
                Key::Ct,
                states.iter().map(|s| s.to_string()).collect(),
                verdict,
            )),
            _ => None,
        }
    };
    // Counters are per rule: keep rules apart when they are wanted.
    if opts.counters {
        return None;
    }
    let (key, _, _) = key_of(rules.first()?)?;
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut origins: Vec<&str> = Vec::new();
    let mut used = 0;
    for r in rules {
        let Some((k, values, verdict)) = key_of(r) else {
            break;
        };
        if k != key || values.iter().any(|v| entries.iter().any(|(e, _)| e == v)) {
            break;
        }
        entries.extend(values.into_iter().map(|v| (v, verdict.clone())));
        if !origins.contains(&r.origin.as_str()) {
            origins.push(&r.origin);
        }
        used += 1;
    }
    if used < 2 {
        return None;
    }
    let selector = match key {
        Key::Family => "meta nfproto",
        Key::Proto => "meta l4proto",
        Key::Ct => "ct state",
    };
    let map: Vec<String> = entries
        .iter()
        .map(|(v, verdict)| format!("{v} : {verdict}"))
        .collect();
    let comment = sanitize_comment(&origins.join(" / "), 128);
    Some((
        format!(
            "{selector} vmap {{ {} }} comment \"{comment}\"",
            map.join(", ")
        ),
        used,
    ))
}

fn ports(ps: &pbxfw_core::PortSet) -> String {
    if ps.ranges().len() == 1 {
        ps.to_string()
    } else {
        format!("{{ {} }}", ps.to_string().replace(',', ", "))
    }
}

/// One IR rule becomes one nft rule. A `reject` answers TCP with a reset (an ICMP error does
/// not abort an IPv6 TCP connect, so the client would hang until its timeout) and everything
/// else with ICMP port-unreachable: a rule that may see TCP goes to [`REJECT_CHAIN`], which
/// picks the answer, so that its matches (and meters) are evaluated once.
fn lower_rule(rs: &Ruleset, rule: &Rule, opts: &Options) -> Result<Vec<String>, LowerError> {
    let proto = rule.matches.iter().find_map(|m| match m {
        Match::Proto(p) => Some(*p),
        _ => None,
    });
    let reject = match (&rule.verdict, proto) {
        (Verdict::Reject, Some(L4Proto::Tcp)) => "reject with tcp reset".to_string(),
        (Verdict::Reject, Some(_)) => "reject".to_string(),
        (Verdict::Reject, None) => format!("goto {REJECT_CHAIN}"),
        _ => String::new(),
    };
    Ok(vec![lower_one(rs, rule, opts, &reject)?])
}

fn lower_one(
    rs: &Ruleset,
    rule: &Rule,
    opts: &Options,
    reject: &str,
) -> Result<String, LowerError> {
    let mut parts: Vec<String> = Vec::new();
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
    let proto_implied =
        has(|m| matches!(m, Match::Dport(_) | Match::Sport(_) | Match::IcmpType(_)));
    let l4 = |p: L4Proto| match p {
        L4Proto::Tcp => "tcp",
        L4Proto::Udp => "udp",
        L4Proto::Icmp => "icmp",
        L4Proto::Icmpv6 => "icmpv6",
    };
    // Emit in a fixed order: cheap, selective matches first; `limit` last so that it only
    // counts packets every other match accepted.
    for m in &rule.matches {
        if let Match::Family(f) = m {
            if !implied {
                parts.push(format!(
                    "meta nfproto {}",
                    match f {
                        Family::Ipv4 => "ipv4",
                        Family::Ipv6 => "ipv6",
                    }
                ));
            }
        }
    }
    for m in &rule.matches {
        if let Match::Iif(i) = m {
            // Loopback always exists: match its index, cheaper than comparing names. Other
            // interfaces may come and go, so they are matched by name.
            if i == "lo" {
                parts.push("iif \"lo\"".to_string());
            } else {
                parts.push(format!("iifname {}", iface(i)?));
            }
        }
    }
    for m in &rule.matches {
        if let Match::Src(s) = m {
            parts.push(format!("{} @{s}", source_key(rs, s)));
        }
    }
    if let Some(p) = proto {
        if !proto_implied {
            parts.push(format!("meta l4proto {}", l4(p)));
        }
    }
    for m in &rule.matches {
        match (m, proto) {
            (Match::Sport(ps), Some(p)) => parts.push(format!("{} sport {}", l4(p), ports(ps))),
            (Match::Dport(ps), Some(p)) => parts.push(format!("{} dport {}", l4(p), ports(ps))),
            (Match::IcmpType(types), Some(p)) => {
                let list: Vec<String> = types.iter().map(u8::to_string).collect();
                let v = if list.len() == 1 {
                    list[0].clone()
                } else {
                    format!("{{ {} }}", list.join(", "))
                };
                parts.push(format!("{} type {v}", l4(p)));
            }
            _ => {}
        }
    }
    // Sport before dport reads naturally ("udp sport 67 udp dport 68").
    parts.sort_by_key(|p| if p.contains(" dport ") { 1 } else { 0 });
    for m in &rule.matches {
        if let Match::Ct(states) = m {
            let s: Vec<String> = states.iter().map(|s| s.to_string()).collect();
            parts.push(format!("ct state {}", s.join(",")));
        }
    }
    for m in &rule.matches {
        match m {
            Match::CtMark(bits) => parts.push(format!("ct mark & {bits:#010x} == {bits:#010x}")),
            Match::CtReply => parts.push("ct direction reply".into()),
            // `@ih` is the payload after the transport header, options included, wherever
            // it starts; a load past the packet's end fails and the rule does not match.
            // One comparison holds at most 16 bytes.
            Match::Payload(bytes) => {
                for (i, chunk) in bytes.chunks(16).enumerate() {
                    let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
                    parts.push(format!("@ih,{},{} 0x{hex}", i * 128, chunk.len() * 8));
                }
            }
            // Holds whenever a byte of payload can be loaded.
            Match::Data => parts.push("@ih,0,8 & 0x0 == 0x0".into()),
            Match::Syn => parts.push("tcp flags & (fin | syn | rst | ack) == syn".into()),
            _ => {}
        }
    }
    for m in &rule.matches {
        if let Match::Meter { set, rate, burst } = m {
            parts.push(format!(
                "update @{set} {{ {} limit rate over {}/{} burst {burst} packets }}",
                source_key(rs, set),
                rate.packets,
                rate.per.name()
            ));
        }
    }
    for m in &rule.matches {
        if let Match::Limit { rate, burst } = m {
            parts.push(format!(
                "limit rate {}/{} burst {burst} packets",
                rate.packets,
                rate.per.name()
            ));
        }
    }
    if opts.counters {
        parts.push("counter".into());
    }
    if let Some(set) = &rule.update {
        parts.push(format!("update @{set} {{ {} }}", source_key(rs, set)));
    }
    match rule.mark {
        Some(pbxfw_core::MarkOp::Set(bits)) => {
            parts.push(format!("ct mark set ct mark | {bits:#010x}"))
        }
        Some(pbxfw_core::MarkOp::Clear(bits)) => {
            parts.push(format!("ct mark set ct mark & {:#010x}", !bits))
        }
        None => {}
    }
    parts.push(match &rule.verdict {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Reject => reject.to_string(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Return => "return".into(),
        Verdict::Log(p) => format!("log prefix \"{}\"", sanitize_comment(p, 64)),
        Verdict::Dispatch(m) => match &rs.maps[m] {
            Map::Src(sm) => format!("{} vmap @{m}", saddr(sm.family())),
            Map::Iif(_) => format!("iifname vmap @{m}"),
        },
    });
    parts.push(format!(
        "comment \"{}\"",
        sanitize_comment(&rule.origin, 128)
    ));
    Ok(parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_comments_cannot_escape() {
        let s = sanitize_comment("a\" ; flush ruleset ; \\\n\"", 128);
        assert!(!s.contains('"') && !s.contains('\\') && !s.contains('\n'));
        assert_eq!(sanitize_comment("ééé", 3), "é");
    }

    #[test]
    fn hostile_interface_is_refused() {
        assert!(iface("eth0\" accept").is_err());
        assert_eq!(iface("eth0.100").unwrap(), "\"eth0.100\"");
    }
}
