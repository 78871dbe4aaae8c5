//! pbxfw-ipt: lowers the pbxfw rule IR to ipset and iptables.
//!
//! [`lower`] turns a [`Ruleset`] into a [`Script`]: the ipsets (one per IR set and family,
//! `hash:net` for prefixes, `hash:ip` for addresses and for dynamic sets with timeouts, never one
//! rule per address) and, per family, the body of an `iptables-restore --noflush` run that
//! declares and fills only pbxfw's own chains. [`Kernel`] loads it into the current network
//! namespace on iptables-nft or iptables-legacy hosts.
//!
//! ```
//! use pbxfw_core::{compile, Policy};
//! let policy = Policy::from_toml("[interfaces]\neth1 = \"local\"\n")?.validate()?;
//! let script = pbxfw_ipt::lower(&compile(&policy))?;
//! assert!(script.v4.contains("-A PBXFW_classify -i eth1 -m comment --comment \"zone: interfaces\" -g PBXFW_zone_local"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How the IR maps onto iptables
//! - The base chain becomes `PBXFW_input`, reached from the entry chain [`ENTRY`], which INPUT
//!   jumps to first. [`ENTRY`] jumps to `PBXFW_input` (that rule's comment carries the
//!   fingerprint) and then applies the base policy, so a `return` from anywhere ends in the
//!   policy exactly as on nft, and the rules after pbxfw's jump in INPUT (fail2ban, Docker)
//!   are never run for a packet pbxfw decided.
//! - A rule is one iptables rule per family it can match in; a rule of one family only goes to
//!   that family's file.
//! - A verdict map becomes one rule per entry: an interface map matches `-i`, a source map one
//!   `hash:net` ipset per target chain (its disjoint ranges cut into prefixes).
//! - A per-source meter is `hashlimit` (`--hashlimit-above`, the source masked to the set's key
//!   length, a table as large as the set): it tracks as many sources as the set may hold,
//!   unlike xt_recent's 100 per list. A global limit is `limit`.
//! - An update of a dynamic set before the verdict is `SET --add-set … --exist` (which also
//!   refreshes the timeout) in a small chain of its own, since an iptables rule has one target:
//!   the rule's matches (and its meters) are evaluated once. A notification (the kernel tiers
//!   handing a banned source to the daemon) is `NFLOG` in the same chain.
//! - Port lists that `multiport` cannot hold (more than 15 ports, a range counting two) become
//!   `bitmap:port` ipsets.
//!
//! What iptables cannot express is refused with [`LowerError::Unsupported`], never lowered to
//! something weaker.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod kernel;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

pub use kernel::{Kernel, Variant};

use pbxfw_core::RateUnit;
use pbxfw_core::{
    verify_ir as verify, BasePolicy, L4Proto, Map, MarkOp, Match, PortSet, Rule, Ruleset, SetKind,
    Verdict, VerifyError,
};
use pbxfw_core::{Family, Prefix};

/// The name backends report in `Unsupported { backend, feature }` errors.
pub const BACKEND: &str = "iptables";
/// The chain INPUT jumps to; every chain pbxfw owns starts with this name.
pub const ENTRY: &str = "PBXFW";
/// Every ipset pbxfw owns starts with this.
pub const IPSET_PREFIX: &str = "pbxfw_";
/// The chain a `reject` that may see TCP jumps to: a reset for TCP, port-unreachable otherwise.
pub const REJECT_CHAIN: &str = "PBXFW-reject";
/// The comment of the entry rule starts with this, followed by the fingerprint.
pub const FINGERPRINT_TAG: &str = "pbxfw fingerprint ";

/// iptables chain names are at most 28 bytes; ipset names at most 31.
const CHAIN_MAX: usize = 28;
const IPSET_MAX: usize = 31;
/// Room kept in ipset names for the `-t` suffix of the set built next to a live one.
const IPSET_ROOM: usize = 2;
/// hashlimit table names are at most 15 bytes on older kernels.
const HASHLIMIT_NAME_MAX: usize = 15;

/// Why a ruleset cannot be lowered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    /// The IR is broken (a compiler bug).
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// The IR needs something iptables cannot express.
    #[error("the {backend} backend cannot express {feature}")]
    Unsupported {
        /// Always [`BACKEND`].
        backend: &'static str,
        /// What.
        feature: String,
    },
}

fn unsupported(feature: impl Into<String>) -> LowerError {
    LowerError::Unsupported {
        backend: BACKEND,
        feature: feature.into(),
    }
}

/// What an ipset holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpsetKind {
    /// Replaced on every apply (built beside the live set, then swapped in).
    Static,
    /// Created once; its elements (bans, registrations) are kept across applies.
    Dynamic,
}

/// One ipset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipset {
    /// Its name (starts with [`IPSET_PREFIX`]).
    pub name: String,
    /// The IR set or map it stands for.
    pub source: String,
    /// Static or dynamic.
    pub kind: IpsetKind,
    /// Type and options, as `ipset create NAME` takes them (`hash:net family inet maxelem 65536`).
    pub header: String,
    /// Elements, as `ipset add NAME` takes them.
    pub elements: Vec<String>,
}

/// The lowered ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The ipsets, by name.
    pub ipsets: BTreeMap<String, Ipset>,
    /// The chains pbxfw owns (the same in both families).
    pub chains: Vec<String>,
    /// The IPv4 rules: `-A` lines for `iptables-restore`.
    pub v4: String,
    /// The IPv6 rules: `-A` lines for `ip6tables-restore`.
    pub v6: String,
    /// The IR's fingerprint, carried by the entry rule's comment.
    pub fingerprint: String,
}

impl Script {
    /// The `iptables-restore --noflush` input for one family: the `*filter` table declaring
    /// (and so flushing) pbxfw's chains, then their rules. The jump from INPUT is managed by
    /// [`Kernel`], which knows whether it is there already.
    pub fn restore_input(&self, family: Family) -> String {
        let mut out = String::from("*filter\n");
        for c in &self.chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        out.push_str(match family {
            Family::Ipv4 => &self.v4,
            Family::Ipv6 => &self.v6,
        });
        out
    }

    /// The whole script as text, for reading and for golden files: `ipset restore` input that
    /// creates every set, then the two restore inputs.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# generated by pbxfw; fingerprint {}",
            self.fingerprint
        );
        let _ = writeln!(out, "# --- ipset restore -exist ---");
        for set in self.ipsets.values() {
            let _ = writeln!(out, "create {} {}", set.name, set.header);
            if set.kind == IpsetKind::Static {
                let _ = writeln!(out, "flush {}", set.name);
            }
            for e in &set.elements {
                let _ = writeln!(out, "add {} {e}", set.name);
            }
        }
        let jump = format!("-I INPUT 1 -m comment --comment \"pbxfw\" -j {ENTRY}\n");
        for (title, family) in [
            ("iptables-restore --noflush", Family::Ipv4),
            ("ip6tables-restore --noflush", Family::Ipv6),
        ] {
            let _ = writeln!(out, "# --- {title} ---");
            out.push_str(&self.restore_input(family));
            out.push_str(&jump);
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// A stable 64-bit FNV-1a hash, for names that must be shortened.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `prefix` + `name`, cut to `max` bytes with a hash of the whole when it does not fit (names
/// are ASCII: the verifier allows `[A-Za-z0-9_-]` only).
fn bounded(prefix: &str, name: &str, max: usize) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= max {
        return full;
    }
    let hash = format!("{:08x}", fnv(&full) as u32);
    format!("{}~{hash}", &full[..max - hash.len() - 1])
}

/// The iptables chain for IR chain `name`.
pub fn chain_name(name: &str) -> String {
    bounded("PBXFW_", name, CHAIN_MAX)
}

/// The ipset for IR set `name`.
pub fn ipset_name(name: &str) -> String {
    bounded(IPSET_PREFIX, name, IPSET_MAX - IPSET_ROOM)
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "inet",
        Family::Ipv6 => "inet6",
    }
}

fn rate(r: &pbxfw_core::Rate) -> String {
    let unit = match r.per {
        RateUnit::Second => "sec",
        RateUnit::Minute => "min",
        RateUnit::Hour => "hour",
        RateUnit::Day => "day",
    };
    format!("{}/{unit}", r.packets)
}

/// A burst as nft takes it: 0 means nft's default of 5 packets.
fn burst(b: u32) -> u32 {
    if b == 0 {
        5
    } else {
        b
    }
}

/// Comments go inside double quotes in restore input: no quotes, backslashes or control
/// characters can reach it, and iptables caps comments at 255 bytes.
pub fn sanitize_comment(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(255));
    for c in s.chars() {
        let c = match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => continue,
            c => c,
        };
        if out.len() + c.len_utf8() > 255 {
            break;
        }
        out.push(c);
    }
    out
}

fn iface(name: &str) -> Result<&str, LowerError> {
    if pbxfw_core::is_interface_name(name) {
        Ok(name)
    } else {
        Err(unsupported(format!("interface name {name:?}")))
    }
}

/// hash:net refuses a /0: two halves cover the same.
fn net_elements(p: &Prefix) -> Vec<String> {
    if p.prefix_len() == 0 {
        let half = Prefix::new(p.addr(), 1).expect("a /1 of the family");
        let upper = pbxfw_core::value_addr(p.family(), 1u128 << (p.family().bits() - 1));
        let other = Prefix::new(upper, 1).expect("a /1 of the family");
        vec![half.to_string(), other.to_string()]
    } else {
        vec![p.to_string()]
    }
}

struct Lowering<'a> {
    rs: &'a Ruleset,
    ipsets: BTreeMap<String, Ipset>,
    /// Extra chains (update chains), with their rules per family.
    extra: Vec<String>,
    meters: BTreeSet<&'a str>,
    v4: String,
    v6: String,
}

/// Lower `rs`. The result is deterministic: equal rulesets give byte-equal scripts.
pub fn lower(rs: &Ruleset) -> Result<Script, LowerError> {
    verify(rs)?;
    let base = rs
        .chains
        .get(pbxfw_core::INPUT)
        .ok_or_else(|| unsupported("a ruleset without the input chain"))?;
    let mut l = Lowering {
        rs,
        ipsets: BTreeMap::new(),
        extra: Vec::new(),
        meters: BTreeSet::new(),
        v4: String::new(),
        v6: String::new(),
    };
    for rule in rs.chains.values().flat_map(|c| &c.rules) {
        for m in &rule.matches {
            if let Match::Meter { set, .. } = m {
                l.meters.insert(set);
            }
        }
    }
    // A meter's state lives in its hashlimit table; a set that is also matched or updated
    // would need both, which iptables cannot share.
    for rule in rs.chains.values().flat_map(|c| &c.rules) {
        let used = rule.matches.iter().filter_map(|m| match m {
            Match::Src(s) | Match::NotSrc(s) => Some(s.as_str()),
            _ => None,
        });
        for s in used.chain(rule.update.as_deref()) {
            if l.meters.contains(s) {
                return Err(unsupported(format!(
                    "set {s} used both as a meter and as an address set"
                )));
            }
        }
    }
    l.sets()?;
    l.maps()?;
    let fingerprint = rs.fingerprint();
    let mut chains: Vec<String> = vec![ENTRY.to_string(), REJECT_CHAIN.to_string()];
    let mut seen = BTreeSet::new();
    for name in rs.chains.keys() {
        let c = chain_name(name);
        if !seen.insert(c.clone()) {
            return Err(unsupported(format!(
                "two chains whose shortened names collide ({c})"
            )));
        }
        chains.push(c);
    }
    // The entry chain: the jump into the base chain, then the base policy.
    let policy = match base.hook.unwrap_or(BasePolicy::Accept) {
        BasePolicy::Accept => "ACCEPT",
        BasePolicy::Drop => "DROP",
    };
    for out in [&mut l.v4, &mut l.v6] {
        let _ = writeln!(
            out,
            "-A {ENTRY} -m comment --comment \"{FINGERPRINT_TAG}{fingerprint}\" -j {}",
            chain_name(pbxfw_core::INPUT)
        );
        let _ = writeln!(
            out,
            "-A {ENTRY} -m comment --comment \"policy\" -j {policy}"
        );
        let _ = writeln!(
            out,
            "-A {REJECT_CHAIN} -p tcp -m comment --comment \"reject: tcp reset\" -j REJECT --reject-with tcp-reset"
        );
        let _ = writeln!(
            out,
            "-A {REJECT_CHAIN} -m comment --comment \"reject: port unreachable\" -j REJECT"
        );
    }
    for (name, chain) in &rs.chains {
        for (i, rule) in chain.rules.iter().enumerate() {
            for family in [Family::Ipv4, Family::Ipv6] {
                l.rule(name, i, rule, family)?;
            }
        }
    }
    chains.extend(l.extra.iter().cloned());
    Ok(Script {
        ipsets: l.ipsets,
        chains,
        v4: l.v4,
        v6: l.v6,
        fingerprint,
    })
}

impl<'a> Lowering<'a> {
    fn add_ipset(&mut self, set: Ipset) -> Result<(), LowerError> {
        if self.ipsets.contains_key(&set.name) {
            return Err(unsupported(format!(
                "two sets whose shortened ipset names collide ({})",
                set.name
            )));
        }
        self.ipsets.insert(set.name.clone(), set);
        Ok(())
    }

    fn sets(&mut self) -> Result<(), LowerError> {
        for (name, set) in &self.rs.sets {
            if self.meters.contains(name.as_str()) {
                continue;
            }
            let fam = family_name(set.family);
            let ipset = match &set.kind {
                SetKind::Static(s) => {
                    let elements: Vec<String> = if s.is_hosts() {
                        s.elements()
                            .iter()
                            .map(|(p, _)| p.addr().to_string())
                            .collect()
                    } else {
                        s.elements()
                            .iter()
                            .flat_map(|(p, _)| net_elements(p))
                            .collect()
                    };
                    let ty = if s.is_hosts() { "hash:ip" } else { "hash:net" };
                    let maxelem = elements.len().max(65536);
                    Ipset {
                        name: ipset_name(name),
                        source: name.clone(),
                        kind: IpsetKind::Static,
                        header: format!("{ty} family {fam} maxelem {maxelem}"),
                        elements,
                    }
                }
                SetKind::Dynamic(d) => {
                    // Every dynamic set takes per-element timeouts; a set timeout of 0 makes
                    // an element added without one permanent.
                    // Prefixes of any length (the fleet's ranges) need hash:net.
                    let ty = if d.interval { "hash:net" } else { "hash:ip" };
                    let mut header = format!(
                        "{ty} family {fam} timeout {} maxelem {}",
                        d.timeout.unwrap_or(0),
                        d.size
                    );
                    if !d.interval && d.key_len < set.family.bits() {
                        let _ = write!(header, " netmask {}", d.key_len);
                    }
                    Ipset {
                        name: ipset_name(name),
                        source: name.clone(),
                        kind: IpsetKind::Dynamic,
                        header,
                        elements: Vec::new(),
                    }
                }
            };
            self.add_ipset(ipset)?;
        }
        Ok(())
    }

    /// One `hash:net` ipset per (source map, target chain).
    fn maps(&mut self) -> Result<(), LowerError> {
        for (name, map) in &self.rs.maps {
            let Map::Src(m) = map else { continue };
            let mut by_chain: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (range, chain) in m.entries() {
                by_chain
                    .entry(chain.as_str())
                    .or_default()
                    .extend(range.prefixes().iter().flat_map(net_elements));
            }
            for (chain, elements) in by_chain {
                let maxelem = elements.len().max(65536);
                self.add_ipset(Ipset {
                    name: map_ipset_name(name, chain),
                    source: format!("{name} → {chain}"),
                    kind: IpsetKind::Static,
                    header: format!(
                        "hash:net family {} maxelem {maxelem}",
                        family_name(m.family())
                    ),
                    elements,
                })?;
            }
        }
        Ok(())
    }

    /// `--dports`/`--sports` text, or a `bitmap:port` ipset when multiport cannot hold it.
    fn ports(&mut self, ps: &PortSet, dir: &str) -> Result<String, LowerError> {
        let r = ps.ranges();
        let slots: usize = r
            .iter()
            .map(|r| if r.first == r.last { 1 } else { 2 })
            .sum();
        let item = |r: &pbxfw_core::PortRange| {
            if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}:{}", r.first, r.last)
            }
        };
        let flag = if dir == "dst" { "dport" } else { "sport" };
        if r.len() == 1 {
            return Ok(format!("--{flag} {}", item(&r[0])));
        }
        if slots <= 15 {
            let list: Vec<String> = r.iter().map(item).collect();
            return Ok(format!("-m multiport --{flag}s {}", list.join(",")));
        }
        let text = ps.to_string();
        let name = format!("{IPSET_PREFIX}ports-{:08x}", fnv(&text) as u32);
        if !self.ipsets.contains_key(&name) {
            let elements = r
                .iter()
                .map(|r| {
                    if r.first == r.last {
                        r.first.to_string()
                    } else {
                        format!("{}-{}", r.first, r.last)
                    }
                })
                .collect();
            self.add_ipset(Ipset {
                name: name.clone(),
                source: format!("ports {text}"),
                kind: IpsetKind::Static,
                header: "bitmap:port range 0-65535".into(),
                elements,
            })?;
        }
        Ok(format!("-m set --match-set {name} {dir}"))
    }

    /// The match part of `rule` for `family`, or `None` when the rule cannot match there.
    fn matches(&mut self, rule: &Rule, family: Family) -> Result<Option<String>, LowerError> {
        if rule.family().is_some_and(|f| f != family) {
            return Ok(None);
        }
        let proto = rule.matches.iter().find_map(|m| match m {
            Match::Proto(p) => Some(*p),
            _ => None,
        });
        match (proto, family) {
            (Some(L4Proto::Icmp), Family::Ipv6) | (Some(L4Proto::Icmpv6), Family::Ipv4) => {
                return Ok(None)
            }
            _ => {}
        }
        let mut parts: Vec<String> = Vec::new();
        for m in &rule.matches {
            if let Match::Iif(i) = m {
                parts.push(format!("-i {}", iface(i)?));
            }
        }
        for m in &rule.matches {
            if let Match::Src(s) = m {
                if self.rs.sets[s].family != family {
                    return Ok(None);
                }
                parts.push(format!("-m set --match-set {} src", ipset_name(s)));
            }
        }
        if let Some(p) = proto {
            parts.push(
                match p {
                    L4Proto::Tcp => "-p tcp",
                    L4Proto::Udp => "-p udp",
                    L4Proto::Icmp => "-p icmp",
                    L4Proto::Icmpv6 => "-p ipv6-icmp",
                }
                .to_string(),
            );
        }
        for m in &rule.matches {
            if let Match::Sport(ps) = m {
                parts.push(self.ports(ps, "src")?);
            }
        }
        for m in &rule.matches {
            match m {
                Match::Dport(ps) => parts.push(self.ports(ps, "dst")?),
                Match::NotDport(ps) => parts.push(negated(&self.ports(ps, "dst")?)),
                _ => {}
            }
        }
        for m in &rule.matches {
            if let Match::IcmpType(types) = m {
                if types.len() != 1 {
                    // Split by the caller (see `rule`).
                    continue;
                }
                let t = types.iter().next().expect("one type");
                parts.push(match family {
                    Family::Ipv4 => format!("--icmp-type {t}"),
                    Family::Ipv6 => format!("--icmpv6-type {t}"),
                });
            }
        }
        for m in &rule.matches {
            if let Match::Ct(states) = m {
                let s: Vec<String> = states
                    .iter()
                    .map(|s| s.to_string().to_uppercase())
                    .collect();
                parts.push(format!("-m conntrack --ctstate {}", s.join(",")));
            }
        }
        for m in &rule.matches {
            match m {
                Match::CtMark(bits) => {
                    parts.push(format!("-m connmark --mark {bits:#x}/{bits:#x}"))
                }
                Match::CtReply => parts.push("-m conntrack --ctdir REPLY".into()),
                Match::CtOriginal => parts.push("-m conntrack --ctdir ORIGINAL".into()),
                Match::Payload(bytes) => parts.push(payload_u32(family, bytes)),
                Match::Syn => parts.push("--syn".into()),
                // Split by the caller (`data_variants`): one rule per header length.
                Match::Data => {}
                _ => {}
            }
        }
        // A negated set lookup after the cheap matches: only packets they let through pay it.
        for m in &rule.matches {
            if let Match::NotSrc(s) = m {
                if self.rs.sets[s].family != family {
                    return Ok(None);
                }
                parts.push(format!("-m set ! --match-set {} src", ipset_name(s)));
            }
        }
        // Rate matches last: they count only packets every other match let through.
        for m in &rule.matches {
            if let Match::Meter {
                set,
                rate: r,
                burst: b,
            } = m
            {
                let s = &self.rs.sets[set];
                if s.family != family {
                    return Ok(None);
                }
                let SetKind::Dynamic(d) = &s.kind else {
                    unreachable!("the verifier checks that meters name dynamic sets")
                };
                // The table's name carries its parameters: hashlimit keeps a table by name
                // across reloads, with the parameters it was created with.
                let key = format!("{set} {} {} {:?} {}", rate(r), b, d.timeout, d.size);
                let hname = format!("pbxfw-{:08x}", fnv(&key) as u32);
                debug_assert!(hname.len() <= HASHLIMIT_NAME_MAX);
                let mut p = format!(
                    "-m hashlimit --hashlimit-above {} --hashlimit-burst {} --hashlimit-mode srcip",
                    rate(r),
                    burst(*b)
                );
                if d.key_len < family.bits() {
                    let _ = write!(p, " --hashlimit-srcmask {}", d.key_len);
                }
                let _ = write!(
                    p,
                    " --hashlimit-name {hname} --hashlimit-htable-max {}",
                    d.size
                );
                if let Some(t) = d.timeout {
                    let _ = write!(p, " --hashlimit-htable-expire {}", u64::from(t) * 1000);
                }
                parts.push(p);
            }
        }
        for m in &rule.matches {
            if let Match::Limit { rate: r, burst: b } = m {
                parts.push(format!(
                    "-m limit --limit {} --limit-burst {}",
                    rate(r),
                    burst(*b)
                ));
            }
        }
        Ok(Some(parts.join(" ")))
    }

    fn rule(
        &mut self,
        chain: &str,
        index: usize,
        rule: &Rule,
        family: Family,
    ) -> Result<(), LowerError> {
        let Some(matches) = self.matches(rule, family)? else {
            return Ok(());
        };
        // Several ICMP types: one rule per type (a packet has one type, so exactly one of them
        // can match). A rate match would then be split into several buckets: refused.
        let types: Vec<u8> = rule
            .matches
            .iter()
            .find_map(|m| match m {
                Match::IcmpType(t) if t.len() > 1 => Some(t.iter().copied().collect()),
                _ => None,
            })
            .unwrap_or_default();
        let stateful = rule
            .matches
            .iter()
            .any(|m| matches!(m, Match::Meter { .. } | Match::Limit { .. }));
        if !types.is_empty() && stateful {
            return Err(unsupported(format!(
                "a rate limit over several ICMP types in one rule (chain {chain} rule {index})"
            )));
        }
        let data = rule.matches.iter().any(|m| matches!(m, Match::Data));
        if data && (stateful || !types.is_empty()) {
            return Err(unsupported(format!(
                "a payload-length test with a rate limit or several ICMP types (chain {chain} rule {index})"
            )));
        }
        let variants: Vec<String> = if data {
            data_variants(family)
                .into_iter()
                .map(|d| format!("{matches} {d}"))
                .collect()
        } else if types.is_empty() {
            vec![matches]
        } else {
            let flag = match family {
                Family::Ipv4 => "--icmp-type",
                Family::Ipv6 => "--icmpv6-type",
            };
            types
                .iter()
                .map(|t| format!("{matches} {flag} {t}"))
                .collect()
        };
        let comment = format!(
            "-m comment --comment \"{}\"",
            sanitize_comment(&rule.origin)
        );
        let this = chain_name(chain);
        let proto = rule.matches.iter().find_map(|m| match m {
            Match::Proto(p) => Some(*p),
            _ => None,
        });
        let target = |v: &Verdict| -> String {
            match v {
                Verdict::Accept => "-j ACCEPT".into(),
                Verdict::Drop => "-j DROP".into(),
                Verdict::Reject => match proto {
                    Some(L4Proto::Tcp) => "-j REJECT --reject-with tcp-reset".into(),
                    Some(_) => "-j REJECT".into(),
                    None => format!("-j {REJECT_CHAIN}"),
                },
                Verdict::Jump(c) => format!("-j {}", chain_name(c)),
                Verdict::Goto(c) => format!("-g {}", chain_name(c)),
                Verdict::Return => "-j RETURN".into(),
                Verdict::Log(p) => {
                    // iptables caps log prefixes at 29 bytes.
                    let mut prefix = sanitize_comment(p);
                    while prefix.len() > 28 {
                        prefix.pop();
                    }
                    format!("-j LOG --log-prefix \"{prefix} \"")
                }
                Verdict::Dispatch(_) => unreachable!("dispatch is expanded below"),
            }
        };
        let out = match family {
            Family::Ipv4 => &mut self.v4,
            Family::Ipv6 => &mut self.v6,
        };
        let line = |out: &mut String, m: &str, t: &str| {
            let sep = if m.is_empty() { "" } else { " " };
            let _ = writeln!(out, "-A {this}{sep}{m} {comment} {t}");
        };
        if let Verdict::Dispatch(map) = &rule.verdict {
            if rule.update.is_some() || rule.notify.is_some() || (stateful && variants.len() > 1) {
                return Err(unsupported(format!(
                    "a dispatch with an update or a rate limit (chain {chain} rule {index})"
                )));
            }
            let entries: Vec<(String, String)> = match &self.rs.maps[map] {
                Map::Iif(m) => m
                    .iter()
                    .map(|(i, c)| Ok((format!("-i {}", iface(i)?), c.clone())))
                    .collect::<Result<_, LowerError>>()?,
                Map::Src(m) => {
                    if m.family() != family {
                        return Ok(());
                    }
                    let targets: BTreeSet<&str> =
                        m.entries().iter().map(|(_, c)| c.as_str()).collect();
                    targets
                        .into_iter()
                        .map(|c| {
                            (
                                format!("-m set --match-set {} src", map_ipset_name(map, c)),
                                c.to_string(),
                            )
                        })
                        .collect()
                }
            };
            if stateful && entries.len() > 1 {
                return Err(unsupported(format!(
                    "a dispatch behind a rate limit (chain {chain} rule {index})"
                )));
            }
            for v in &variants {
                for (key, target_chain) in &entries {
                    let m = [v.as_str(), key.as_str()]
                        .iter()
                        .filter(|s| !s.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" ");
                    line(out, &m, &format!("-g {}", chain_name(target_chain)));
                }
            }
            return Ok(());
        }
        if rule.update.is_none() && rule.notify.is_none() && rule.mark.is_none() {
            let t = target(&rule.verdict);
            for v in &variants {
                line(out, v, &t);
            }
            return Ok(());
        }
        // An update or a mark change, then the verdict: a chain of its own, entered with
        // `goto` for verdicts that leave the rule's chain (so that a `return` or the end of the
        // update chain returns where the rule's chain would) and with `jump` for those that
        // come back. (One chain also keeps the matches from being tested again after the mark
        // they test has changed.)
        if let Some(set) = &rule.update {
            if self.rs.sets[set].family != family {
                return Ok(());
            }
        }
        let sub = bounded(
            "PBXFW-u-",
            &format!("{:08x}", fnv(&format!("{chain} {index} {family}")) as u32),
            CHAIN_MAX,
        );
        let (enter, inner) = match &rule.verdict {
            Verdict::Jump(_) | Verdict::Log(_) => ("-j", Some(target(&rule.verdict))),
            Verdict::Return => ("-g", None),
            v => ("-g", Some(target(v))),
        };
        for v in &variants {
            line(out, v, &format!("{enter} {sub}"));
        }
        if let Some(set) = &rule.update {
            let _ = writeln!(
                out,
                "-A {sub} {comment} -j SET --add-set {} src --exist",
                ipset_name(set)
            );
        }
        if let Some(group) = rule.notify {
            // The network header up to the end of an IPv6 source address: all the listener
            // reads (the nft backend's `snaplen`).
            let _ = writeln!(
                out,
                "-A {sub} {comment} -j NFLOG --nflog-group {group} --nflog-size 40"
            );
        }
        match rule.mark {
            Some(MarkOp::Set(bits)) => {
                let _ = writeln!(
                    out,
                    "-A {sub} {comment} -j CONNMARK --set-xmark {bits:#x}/{bits:#x}"
                );
            }
            Some(MarkOp::Clear(bits)) => {
                let _ = writeln!(
                    out,
                    "-A {sub} {comment} -j CONNMARK --set-xmark 0x0/{bits:#x}"
                );
            }
            None => {}
        }
        if let Some(t) = inner {
            let _ = writeln!(out, "-A {sub} {comment} {t}");
        }
        if !self.extra.contains(&sub) {
            self.extra.push(sub);
        }
        Ok(())
    }
}

/// `Match::Data` as `u32` tests, one rule each (a packet matches at most one): the payload
/// length is the IP length less both headers', which `u32` cannot subtract, so each TCP data
/// offset (5 to 15 words) gets its own test of the IP length. What the tests cannot see past
/// counts as data: an IPv4 packet with IP options, an IPv6 packet whose next header is not TCP
/// (an extension header would move TCP's header out from under the tests).
fn data_variants(family: Family) -> Vec<String> {
    let mut out = Vec::new();
    match family {
        Family::Ipv4 => {
            out.push("-m u32 --u32 \"0>>24&0xF=6:15\"".to_string());
            for doff in 5u32..=15 {
                out.push(format!(
                    "-m u32 --u32 \"0>>24&0xF=5&&32>>28={doff}&&0&0xFFFF={}:65535\"",
                    20 + 4 * doff + 1
                ));
            }
        }
        Family::Ipv6 => {
            out.push("-m u32 --u32 \"4>>8&0xFF=0:5,7:255\"".to_string());
            for doff in 5u32..=15 {
                out.push(format!(
                    "-m u32 --u32 \"4>>8&0xFF=6&&52>>28={doff}&&4>>16&0xFFFF={}:65535\"",
                    4 * doff + 1
                ));
            }
        }
    }
    out
}

/// A `u32` match on the TCP payload: it begins with `bytes`. The offset of the payload is
/// computed from the headers' own lengths (IPv4's IHL, TCP's data offset), so TCP options move
/// nothing; an IPv6 packet must have TCP as its next header (no extension header), else the
/// match fails (and the gate's data test resets it).
fn payload_u32(family: Family, bytes: &[u8]) -> String {
    let base = match family {
        Family::Ipv4 => "0>>22&0x3C@12>>26&0x3C@",
        Family::Ipv6 => "52>>26&0x3C@",
    };
    let at = |off: usize| match family {
        Family::Ipv4 => off,
        Family::Ipv6 => off + 40,
    };
    let mut tests: Vec<String> = match family {
        Family::Ipv4 => Vec::new(),
        Family::Ipv6 => vec!["4>>8&0xFF=6".to_string()],
    };
    tests.extend(bytes.chunks(4).enumerate().map(|(i, chunk)| {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        let value = u32::from_be_bytes(word);
        let mask = u32::MAX << (8 * (4 - chunk.len()));
        if chunk.len() == 4 {
            format!("{base}{}={value:#010x}", at(4 * i))
        } else {
            format!("{base}{}&{mask:#010x}={value:#010x}", at(4 * i))
        }
    }));
    format!("-m u32 --u32 \"{}\"", tests.join("&&"))
}

/// The ipset holding the ranges of source map `map` that lead to `chain`.
pub fn map_ipset_name(map: &str, chain: &str) -> String {
    ipset_name(&format!("{map}.{chain}"))
}

/// The negation of a port match from `Lowering::ports`: `! --dport 5060`, `-m multiport !
/// --dports 5060,5160`, `-m set ! --match-set NAME dst` (iptables puts `!` before the option
/// it negates).
fn negated(ports: &str) -> String {
    for opt in [
        "--dports ",
        "--dport ",
        "--sports ",
        "--sport ",
        "--match-set ",
    ] {
        if let Some(i) = ports.find(opt) {
            return format!("{}! {}", &ports[..i], &ports[i..]);
        }
    }
    unreachable!("a port match names one of the options: {ports}")
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_with_a_hash() {
        assert_eq!(chain_name("zone_local"), "PBXFW_zone_local");
        let long = chain_name("a_very_long_chain_name_that_does_not_fit");
        assert!(long.len() <= CHAIN_MAX, "{long}");
        assert_ne!(long, chain_name("a_very_long_chain_name_that_does_not_fiT"));
        assert!(ipset_name("grant_a_very_long_custom_service4").len() <= IPSET_MAX - IPSET_ROOM);
    }

    #[test]
    fn hostile_comments_cannot_escape() {
        let s = sanitize_comment("a\" -j ACCEPT \\\n\"");
        assert!(!s.contains('"') && !s.contains('\\') && !s.contains('\n'));
    }

    #[test]
    fn a_whole_family_is_two_halves() {
        let p: Prefix = "::/0".parse().unwrap();
        assert_eq!(net_elements(&p), ["::/1", "8000::/1"]);
        let p: Prefix = "0.0.0.0/0".parse().unwrap();
        assert_eq!(net_elements(&p), ["0.0.0.0/1", "128.0.0.0/1"]);
    }
}
