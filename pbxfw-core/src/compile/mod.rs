//! The compiler: [`ValidPolicy`] → [`Ruleset`], following the packet path (docs/policy.md, "The packet path").
//!
//! ```text
//! chain input (hook input, policy drop)
//!   1  iif lo                                         accept
//!  1b  (settings.acme) tcp/80 of a window connection  jump acme_gate: challenge line or reset
//!   2  ct invalid drop; ct established,related        jump established
//!        (established: responsive signalling ports and kernel-tier bans return, so every
//!        such packet meets step 3 and is counted or dropped below; answers on the PBX's own
//!        connections pass step 3's chain; every other established packet is accepted: the
//!        runtime cuts the flows of the sources it blocks)
//!   3  jump pre4 / pre6: src in blacklist / banned    drop or reject
//!   4  jump icmp_essentials: ICMP/ICMPv6 errors, neighbour discovery, rate-limited echo;
//!      DHCP replies
//!   5  RTP and UDPTL ranges                           accept
//!   6  trunk sets × their own protocol's ports        accept
//!   7  registered sources: signalling + registered grants; per-user grant sets
//!   8  jump classify → goto zone_<zone> (hostname sets, source map, interface map, internet)
//!  8b  (settings.acme) new tcp/80 from acme4/acme6    mark the connection, accept
//!   9  responsive signalling ports                    jump responsive
//!  10  final                                          drop or reject
//! ```
//! Compiling cannot fail: everything that could go wrong was checked by validation. The result
//! always passes [`crate::ir::verify`] (property-tested).

pub mod zones;

use std::collections::{BTreeMap, BTreeSet};

use crate::ir::{
    BasePolicy, Chain, CtState, DynamicSet, L4Proto, Map, MarkOp, Match, PortSet, Rule, Ruleset,
    Set, SetKind, SrcMap, StaticSet, Verdict, CLASSIFY, INPUT,
};
use crate::model::{
    DenyVerdict, PortRange, PortSpec, Rate, RateUnit, SignallingProtocol, Source, ValidPolicy,
    Zone, L4,
};
use crate::net::{Family, Prefix};

/// Capacity of every dynamic set: sized for distributed attacks (docs/responsive.md).
pub const DYNAMIC_SET_SIZE: u32 = 65536;
/// Longest origin a rule may carry (kernel comments are limited).
const MAX_ORIGIN: usize = 128;

/// Names of the sets and chains the compiler creates, for backends and tools that update them.
pub mod names {
    use crate::net::Family;

    /// The chain of custom rules: empty in the IR, filled by a backend at apply time with the
    /// administrator's own backend-specific rules.
    pub const CUSTOM: &str = "custom";

    /// Static set of blacklisted networks of a family (an interval set).
    pub fn blacklist(f: Family) -> String {
        format!("blacklist{}", f.suffix())
    }
    /// Static set of blacklisted single addresses (a hash set).
    pub fn blacklist_hosts(f: Family) -> String {
        format!("blacklist_hosts{}", f.suffix())
    }
    /// Dynamic set of resolved blacklisted hostnames.
    pub fn blacklist_dns(f: Family) -> String {
        format!("blacklist_dns{}", f.suffix())
    }
    /// Dynamic interval set of the fleet's bans (docs/fleet.md), written by the daemon.
    pub fn fleet(f: Family) -> String {
        format!("fleet{}", f.suffix())
    }
    /// Dynamic interval set holding the whole family while a certificate-renewal window is
    /// open (docs/acme.md), written by `pbxfw acme open` with a timeout.
    pub fn acme(f: Family) -> String {
        format!("acme{}", f.suffix())
    }
    /// The chain that checks the first request of a connection a window admitted.
    pub const ACME_GATE: &str = "acme_gate";
    /// The conntrack mark bit of a connection a window admitted whose first request line has
    /// not been seen yet (docs/acme.md). Only this bit is set or cleared.
    pub const ACME_MARK: u32 = 0x0010_0000;
    /// The request line an HTTP-01 challenge starts with (RFC 8555, 8.3), the most a window
    /// admits.
    pub const ACME_REQUEST: &str = "GET /.well-known/acme-challenge/";
    /// The port of HTTP-01 challenges (RFC 8555: always 80).
    pub const ACME_PORT: u16 = 80;
    /// Dynamic ban set written by the responsive state machine.
    pub fn ban(f: Family) -> String {
        format!("ban{}", f.suffix())
    }
    /// Dynamic ban set written by the kernel tiers (sliding).
    pub fn tier_ban(f: Family) -> String {
        format!("tier_ban{}", f.suffix())
    }
    /// The nfnetlink_log group the kernel tiers hand each source they ban to: the daemon
    /// listens there and cuts the source's flows (docs/responsive.md, "Flows of a banned
    /// source"). Groups are per network namespace; this one is pbxfw's own.
    pub const TIER_BAN_LOG_GROUP: u16 = 20550;
    /// Whether `set` holds sources whose new flows step 3 of the packet path drops: the
    /// blacklist (networks, addresses, resolved hostnames), the fleet's bans, the state
    /// machine's bans and the kernel tiers' bans. Established packets are accepted at step 2,
    /// before those sets are looked at, so every program that adds to them also deletes the
    /// connection-tracking entries of what it added (the runtime's flow cut, docs/policy.md
    /// "The packet path"). The kernel adds to the tiers' ban sets itself and hands each source
    /// it bans to the daemon ([`TIER_BAN_LOG_GROUP`]), which cuts its flows.
    pub fn blocks_sources(set: &str) -> bool {
        let base = set
            .strip_suffix(Family::Ipv4.suffix())
            .or_else(|| set.strip_suffix(Family::Ipv6.suffix()));
        matches!(
            base,
            Some("blacklist" | "blacklist_hosts" | "blacklist_dns" | "fleet" | "ban" | "tier_ban")
        )
    }
    /// Dynamic set of sources the state machine put in the slow lane.
    pub fn clamped(f: Family) -> String {
        format!("clamped{}", f.suffix())
    }
    /// Dynamic per-source meter of a responsive tier (`clamp`, `flood`, `daily`).
    pub fn meter(tier: &str, f: Family) -> String {
        format!("meter_{tier}{}", f.suffix())
    }
    /// Static set of the administrators' addresses (`settings.admins`), which the responsive
    /// tiers never meter.
    pub fn admins(f: Family) -> String {
        format!("admins{}", f.suffix())
    }
    /// Static set of the sources the responsive layer ignores (`responsive.ignore`).
    pub fn ignore(f: Family) -> String {
        format!("ignore{}", f.suffix())
    }
    /// Dynamic set of registered device sources.
    pub fn registered(f: Family) -> String {
        format!("registered{}", f.suffix())
    }
    /// Dynamic per-user grant set for a service.
    pub fn grant(service: &str, f: Family) -> String {
        format!("grant_{}{}", service.replace('-', "_"), f.suffix())
    }
    /// Static set of single addresses in a zone (`trust ADDR` adds to the trusted one).
    pub fn zone_hosts(zone: crate::Zone, f: Family) -> String {
        format!("zone_{zone}_hosts{}", f.suffix())
    }
    /// Dynamic set of the resolved addresses of hostnames in a zone.
    pub fn zone_dns(zone: crate::Zone, f: Family) -> String {
        format!("zone_{zone}_dns{}", f.suffix())
    }
    /// The chain of a zone.
    pub fn zone_chain(zone: crate::Zone) -> String {
        format!("zone_{zone}")
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ORIGIN {
        let mut cut = MAX_ORIGIN - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn proto(l4: L4) -> L4Proto {
    match l4 {
        L4::Tcp => L4Proto::Tcp,
        L4::Udp => L4Proto::Udp,
    }
}

/// Group port specs by protocol: one (proto, ports) pair per protocol present, TCP first.
fn by_proto<'a>(specs: impl IntoIterator<Item = &'a PortSpec>) -> Vec<(L4Proto, PortSet)> {
    let mut m: BTreeMap<L4, Vec<crate::model::PortRange>> = BTreeMap::new();
    for s in specs {
        m.entry(s.proto).or_default().push(s.ports);
    }
    m.into_iter()
        .filter_map(|(l4, r)| PortSet::new(r).map(|ps| (proto(l4), ps)))
        .collect()
}

fn port_rules(
    prefix: &[Match],
    specs: &[(L4Proto, PortSet)],
    verdict: &Verdict,
    origin: &str,
) -> Vec<Rule> {
    specs
        .iter()
        .map(|(p, ports)| {
            let mut m = prefix.to_vec();
            m.push(Match::Proto(*p));
            m.push(Match::Dport(ports.clone()));
            Rule::new(m, verdict.clone(), truncate(origin.to_string()))
        })
        .collect()
}

struct Builder {
    rs: Ruleset,
}

impl Builder {
    fn static_set(
        &mut self,
        name: String,
        family: Family,
        comment: &str,
        elems: Vec<(Prefix, String)>,
        hosts: bool,
    ) {
        let set = if hosts {
            StaticSet::hosts(family, elems).expect("elements filtered to addresses of the family")
        } else {
            StaticSet::new(family, elems).expect("elements filtered by family")
        };
        self.rs.sets.insert(
            name,
            Set {
                family,
                kind: SetKind::Static(set),
                comment: comment.to_string(),
            },
        );
    }

    fn dynamic_set(
        &mut self,
        name: String,
        family: Family,
        comment: &str,
        key_len: u8,
        timeout: Option<u32>,
        resolves: BTreeSet<String>,
    ) {
        self.rs.sets.insert(
            name,
            Set {
                family,
                kind: SetKind::Dynamic(DynamicSet {
                    key_len,
                    timeout,
                    size: DYNAMIC_SET_SIZE,
                    resolves,
                    interval: false,
                }),
                comment: comment.to_string(),
            },
        );
    }

    /// A dynamic interval set whose elements (any prefix) each carry their own timeout,
    /// written from outside the ruleset (the fleet's decisions, a certificate-renewal window).
    fn interval_set(&mut self, name: String, family: Family, comment: &str, size: u32) {
        self.rs.sets.insert(
            name,
            Set {
                family,
                kind: SetKind::Dynamic(DynamicSet {
                    key_len: family.bits(),
                    timeout: None,
                    size,
                    resolves: BTreeSet::new(),
                    interval: true,
                }),
                comment: comment.to_string(),
            },
        );
    }
}

/// A static set element: a prefix and its origin.
type Element = (Prefix, String);

fn hostnames<'a>(sources: impl IntoIterator<Item = &'a Source>) -> BTreeSet<String> {
    sources
        .into_iter()
        .filter_map(|s| match s {
            Source::Host(h) => Some(h.clone()),
            Source::Net(_) => None,
        })
        .collect()
}

fn join_names<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Compile a validated policy into the IR.
pub fn compile(policy: &ValidPolicy) -> Ruleset {
    let mut b = Builder {
        rs: Ruleset::default(),
    };
    let mut input: Vec<Rule> = Vec::new();
    let deny = match policy.settings.default_verdict {
        DenyVerdict::Drop => Verdict::Drop,
        DenyVerdict::Reject => Verdict::Reject,
    };

    // 0. Established media: peer-opened UDP that is not responsive signalling, accepted by
    // the first rule of all. UDP is media, the flood every call brings, and this one rule of
    // comparisons (no lookup) is all such a packet meets: 0.97 of what connection tracking
    // alone costs (BENCHMARKS.md, "Where the per-packet cost goes"). It accepts exactly what
    // the `established` chain of step 2 accepts of such packets, so it may come first: ahead
    // of the loopback rule, which accepts everything it would, and of the certificate window's
    // gate, which sees TCP only. Every other established packet (TCP, signalling, the PBX's
    // own connections) misses it and takes step 2. No ban or blacklist is looked up: every
    // source blocked after its flow began has its flows deleted (step 2's comment).
    let responsive_ports = by_proto(
        policy
            .responsive_protocols()
            .flat_map(|p| policy.signalling_service(p).ports.iter()),
    );
    let mut media = vec![
        Match::Ct([CtState::Established, CtState::Related].into()),
        Match::CtOriginal,
        Match::Proto(L4Proto::Udp),
    ];
    if let Some((_, ports)) = responsive_ports.iter().find(|(p, _)| *p == L4Proto::Udp) {
        media.push(Match::NotDport(ports.clone()));
    }
    input.push(Rule::new(media, Verdict::Accept, "established: media"));

    // 1. Loopback.
    input.push(Rule::new(
        vec![Match::Iif("lo".into())],
        Verdict::Accept,
        "loopback",
    ));

    // 1b. The certificate-renewal window's gate (docs/acme.md): a connection a window admitted
    // carries a mark for its whole life, and every data packet it sends must start with the
    // challenge request line (a retransmitted request does; a second request, a request split
    // over packets, a decoy the receiver discards and the real request after it do not) or the
    // connection is reset. Before established flows, which would accept those packets. A
    // filter sees packets, not the byte stream: a sender that crafts overlapping segments gets
    // past it, which docs/acme.md says and the server must close.
    if policy.settings.acme {
        let tcp = || Match::Proto(L4Proto::Tcp);
        b.rs.chains.insert(
            names::ACME_GATE.into(),
            Chain {
                rules: vec![
                    Rule::new(
                        vec![
                            tcp(),
                            Match::Payload(names::ACME_REQUEST.as_bytes().to_vec()),
                        ],
                        Verdict::Accept,
                        "acme: challenge request",
                    ),
                    Rule::new(
                        vec![tcp(), Match::Data],
                        Verdict::Reject,
                        "acme: not a challenge request",
                    ),
                ],
                ..Chain::default()
            },
        );
        input.push(Rule::new(
            vec![
                tcp(),
                Match::Dport(
                    PortSet::new([PortRange::single(names::ACME_PORT)]).expect("one port"),
                ),
                Match::CtMark(names::ACME_MARK),
            ],
            Verdict::Jump(names::ACME_GATE.into()),
            "acme: gate of a window connection",
        ));
    }

    // 2. Connection tracking, before the blacklist and bans. A flow passed the blacklist and
    // bans when it started, and every source blocked afterwards has its flows' entries
    // deleted (docs/policy.md "The packet path"): pbxfw's own writes cut them (the runtime's
    // flow cut), and the kernel tiers hand each source they ban to the daemon, which does
    // (docs/responsive.md, "Flows of a banned source"). So a peer's established packet needs
    // no lookup of its own. Signalling of responsive protocols returns to the checks below:
    // UDP conntrack calls a brute forcer's flow established after the first 401, and every one
    // of its packets must still reach the tiers (docs/responsive.md). Answers on connections
    // the PBX opened pass the blacklist and bans of step 3 first (a jump to the same
    // per-family chain), then are accepted: their first packet went out, never through step 3,
    // and the output path is not filtered, so a blocked peer's answers (even to media the PBX
    // sends after a cut) must meet it on every packet.
    input.push(Rule::new(
        vec![Match::Ct([CtState::Invalid].into())],
        Verdict::Drop,
        "invalid",
    ));
    let mut rules = port_rules(
        &[],
        &responsive_ports,
        &Verdict::Return,
        "responsive: every signalling packet is counted",
    );
    for f in Family::BOTH {
        rules.push(Rule::new(
            vec![Match::Family(f), Match::CtReply],
            Verdict::Jump(format!("pre{}", f.suffix())),
            "established: blacklist and bans of the PBX's own connections",
        ));
    }
    rules.push(Rule::new(vec![], Verdict::Accept, "established"));
    b.rs.chains.insert(
        "established".into(),
        Chain {
            rules,
            ..Chain::default()
        },
    );
    input.push(Rule::new(
        vec![Match::Ct([CtState::Established, CtState::Related].into())],
        Verdict::Jump("established".into()),
        "established",
    ));

    // 3. Blacklist and responsive bans, before anything else a new flow meets (ICMP, RTP,
    // trunks, zones).
    let step3 = input.len();
    let bl_hosts = hostnames(policy.blacklist.iter().map(|e| &e.source));
    for f in Family::BOTH {
        // Networks and single addresses in two sets: an address lookup in a hash set costs
        // the same at 100k entries as at 10, an interval lookup does not. Networks first, so a
        // host inside a blacklisted network is reported as that network.
        let (hosts, nets): (Vec<Element>, Vec<Element>) = policy
            .blacklist
            .iter()
            .filter_map(|e| match &e.source {
                // An empty origin reads as "the rule's origin: the element" (blacklist:ADDR),
                // without building 100k strings.
                Source::Net(p) if p.family() == f => Some((*p, String::new())),
                _ => None,
            })
            .partition(|(p, _)| p.is_host());
        for (set, elems, only_hosts) in [
            (names::blacklist(f), nets, false),
            (names::blacklist_hosts(f), hosts, true),
        ] {
            b.static_set(set.clone(), f, "blacklist", elems, only_hosts);
            input.push(Rule::new(
                vec![Match::Family(f), Match::Src(set)],
                deny.clone(),
                "blacklist",
            ));
        }
        if !bl_hosts.is_empty() {
            b.dynamic_set(
                names::blacklist_dns(f),
                f,
                "blacklisted hostnames, resolved",
                f.bits(),
                None,
                bl_hosts.clone(),
            );
            input.push(Rule::new(
                vec![Match::Family(f), Match::Src(names::blacklist_dns(f))],
                deny.clone(),
                truncate(format!("blacklist:{}", join_names(&bl_hosts))),
            ));
        }
    }
    // The fleet's bans (docs/fleet.md): checked with the blacklist; the runtime cuts the flows
    // of every source a pull adds, so that a source banned anywhere in the fleet loses its
    // flows here too.
    if let Some(fleet) = policy.fleet.as_ref().filter(|f| f.pull) {
        for f in Family::BOTH {
            b.interval_set(
                names::fleet(f),
                f,
                "fleet bans (CrowdSec LAPI)",
                fleet.max_decisions,
            );
            input.push(Rule::new(
                vec![Match::Family(f), Match::Src(names::fleet(f))],
                Verdict::Drop,
                "fleet ban",
            ));
        }
    }
    // Bans: those the state machine decides (each with its own, possibly escalated, timeout)
    // and those the kernel tiers decide (sliding: every packet from a banned source restarts
    // its ban, so a source that keeps sending stays banned).
    let key_len = |f: Family| match f {
        Family::Ipv4 => policy.responsive.ipv4_prefix,
        Family::Ipv6 => policy.responsive.ipv6_prefix,
    };
    for f in Family::BOTH {
        b.dynamic_set(
            names::ban(f),
            f,
            "responsive bans",
            key_len(f),
            Some(policy.responsive.ban_seconds),
            BTreeSet::new(),
        );
        input.push(Rule::new(
            vec![Match::Family(f), Match::Src(names::ban(f))],
            Verdict::Drop,
            "responsive ban",
        ));
        b.dynamic_set(
            names::tier_ban(f),
            f,
            "responsive bans by the kernel tiers",
            key_len(f),
            Some(policy.responsive.ban_seconds),
            BTreeSet::new(),
        );
        input.push(
            Rule::new(
                vec![Match::Family(f), Match::Src(names::tier_ban(f))],
                Verdict::Drop,
                "responsive ban: kernel tier",
            )
            .with_update(names::tier_ban(f)),
        );
    }

    // Every new packet passes step 3, so its rules sit in one chain per family: a packet is checked
    // against its own family's sets only.
    let step3_rules = input.split_off(step3);
    for f in Family::BOTH {
        let chain = format!("pre{}", f.suffix());
        let rules: Vec<Rule> = step3_rules
            .iter()
            .filter(|r| r.family() == Some(f))
            .cloned()
            .collect();
        b.rs.chains.insert(
            chain.clone(),
            Chain {
                rules,
                ..Chain::default()
            },
        );
        input.push(Rule::new(
            vec![Match::Family(f)],
            Verdict::Jump(chain),
            "blacklist and bans",
        ));
    }

    // 4. ICMP essentials (in a chain of their own, so other packets skip them with one check
    // per family) and DHCP replies.
    let mut essentials = Vec::new();
    icmp_rules(&mut essentials, policy.settings.icmp_echo_rate);
    let (icmp, dhcp): (Vec<Rule>, Vec<Rule>) = essentials.into_iter().partition(|r| {
        r.matches
            .iter()
            .any(|m| matches!(m, Match::Proto(L4Proto::Icmp | L4Proto::Icmpv6)))
    });
    // ("icmp" is an nft keyword, not a chain name.)
    b.rs.chains.insert(
        "icmp_essentials".into(),
        Chain {
            rules: icmp,
            ..Chain::default()
        },
    );
    // (The rules inside check the family; the jumps need only the protocol.)
    for p in [L4Proto::Icmp, L4Proto::Icmpv6] {
        input.push(Rule::new(
            vec![Match::Proto(p)],
            Verdict::Jump("icmp_essentials".into()),
            "icmp essentials",
        ));
    }
    input.extend(dhcp);

    // Custom rules (docs/safety.md): the administrator's own backend-specific rules, loaded into this
    // chain at apply time after the kernel has checked them. Empty in the IR, so the evaluator
    // and `explain` describe the policy without them.
    b.rs.chains.insert(names::CUSTOM.into(), Chain::default());
    input.push(Rule::new(
        vec![],
        Verdict::Jump(names::CUSTOM.into()),
        "custom rules",
    ));

    // 5. Media from every zone, `reject` included. A media range never opens a UDP port the
    // PBX uses for signalling (Asterisk's default UDPTL range 4000-4999 contains IAX's 4569):
    // Asterisk cannot allocate media on a port it is bound to, and opening it to every zone
    // would bypass trunks, zones and the responsive layer. Validation warns about the overlap.
    let signalling_udp: Vec<PortRange> = SignallingProtocol::ALL
        .iter()
        .flat_map(|p| policy.signalling_service(*p).ports.iter())
        .filter(|s| s.proto == L4::Udp)
        .map(|s| s.ports)
        .collect();
    for (range, origin) in [(policy.pbx.rtp, "rtp"), (policy.pbx.udptl, "udptl")] {
        let Some(range) = range else { continue };
        if let Some(ports) = PortSet::new(subtract(range, &signalling_udp)) {
            input.push(Rule::new(
                vec![Match::Proto(L4Proto::Udp), Match::Dport(ports)],
                Verdict::Accept,
                origin,
            ));
        }
    }

    // 6. Trunks: their own protocol's signalling ports only.
    for proto in SignallingProtocol::ALL {
        let trunks: Vec<_> = policy
            .pbx
            .trunks
            .iter()
            .filter(|t| t.protocol == proto)
            .collect();
        if trunks.is_empty() {
            continue;
        }
        let ports = by_proto(&policy.signalling_service(proto).ports);
        let hosts = hostnames(trunks.iter().map(|t| &t.host));
        for f in Family::BOTH {
            let elems: Vec<(Prefix, String)> = trunks
                .iter()
                .filter_map(|t| match &t.host {
                    Source::Net(p) if p.family() == f => Some((*p, format!("trunk:{}", t.name))),
                    _ => None,
                })
                .collect();
            if !elems.is_empty() {
                let name = format!("trunk_{proto}{}", f.suffix());
                b.static_set(name.clone(), f, &format!("{proto} trunks"), elems, false);
                input.extend(port_rules(
                    &[Match::Family(f), Match::Src(name)],
                    &ports,
                    &Verdict::Accept,
                    &format!("trunks:{proto}"),
                ));
            }
            if !hosts.is_empty() {
                let name = format!("trunk_{proto}_dns{}", f.suffix());
                b.dynamic_set(
                    name.clone(),
                    f,
                    &format!("{proto} trunks, resolved"),
                    f.bits(),
                    None,
                    hosts.clone(),
                );
                let names: Vec<&String> = trunks
                    .iter()
                    .filter(|t| matches!(t.host, Source::Host(_)))
                    .map(|t| &t.name)
                    .collect();
                input.extend(port_rules(
                    &[Match::Family(f), Match::Src(name)],
                    &ports,
                    &Verdict::Accept,
                    &format!("trunk:{}", join_names(names)),
                ));
            }
        }
    }

    // 7. Registered sources and per-user grants.
    let all_signalling = by_proto(
        SignallingProtocol::ALL
            .iter()
            .flat_map(|p| policy.signalling_service(*p).ports.iter()),
    );
    let mut grant_users: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for u in &policy.users {
        for s in &u.services {
            grant_users.entry(s).or_default().push(&u.name);
        }
    }
    for f in Family::BOTH {
        let reg = names::registered(f);
        b.dynamic_set(
            reg.clone(),
            f,
            "registered devices",
            f.bits(),
            None,
            BTreeSet::new(),
        );
        let prefix = [Match::Family(f), Match::Src(reg)];
        input.extend(port_rules(
            &prefix,
            &all_signalling,
            &Verdict::Accept,
            "registered",
        ));
        for svc in &policy.responsive.registered_grants {
            let ports = by_proto(&policy.services[svc].ports);
            input.extend(port_rules(
                &prefix,
                &ports,
                &Verdict::Accept,
                &format!("registered grant:{svc}"),
            ));
        }
        for (svc, users) in &grant_users {
            let set = names::grant(svc, f);
            b.dynamic_set(
                set.clone(),
                f,
                &format!("per-user grant of {svc}"),
                f.bits(),
                None,
                BTreeSet::new(),
            );
            input.extend(port_rules(
                &[Match::Family(f), Match::Src(set)],
                &by_proto(&policy.services[*svc].ports),
                &Verdict::Accept,
                &format!("grant:{svc} users:{}", join_names(users.iter().copied())),
            ));
        }
    }

    // 8. Zones.
    classify(&mut b, policy, &deny);
    input.push(Rule::new(vec![], Verdict::Jump(CLASSIFY.into()), "zones"));

    // 8b. An open certificate-renewal window (docs/acme.md): new connections to tcp/80 from
    // anyone the zones did not already accept or refuse, marked for the gate (2b). Only a SYN
    // opens one (a mid-stream packet conntrack picks up as new would skip the gate), and a SYN
    // carrying data (TCP Fast Open) is refused: its data would reach the server unchecked.
    if policy.settings.acme {
        for f in Family::BOTH {
            b.interval_set(names::acme(f), f, "certificate-renewal window", 16);
            // A new packet to port 80 from the window's set, and what else it must be.
            let new_to_port = |last: Match| {
                vec![
                    Match::Family(f),
                    Match::Src(names::acme(f)),
                    Match::Proto(L4Proto::Tcp),
                    Match::Dport(
                        PortSet::new([PortRange::single(names::ACME_PORT)]).expect("one port"),
                    ),
                    Match::Ct([CtState::New].into()),
                    last,
                ]
            };
            input.push(Rule::new(
                new_to_port(Match::Data),
                Verdict::Drop,
                "acme: data before the handshake",
            ));
            input.push(
                Rule::new(new_to_port(Match::Syn), Verdict::Accept, "acme: window")
                    .with_mark(MarkOp::Set(names::ACME_MARK)),
            );
        }
    }

    // 9. The responsive layer: unknown sources on responsive signalling ports.
    if !responsive_ports.is_empty() {
        let protos: Vec<String> = policy
            .responsive_protocols()
            .map(|p| p.to_string())
            .collect();
        let rules = responsive_chain(&mut b, policy, key_len);
        b.rs.chains.insert(
            "responsive".into(),
            Chain {
                rules,
                ..Chain::default()
            },
        );
        input.extend(port_rules(
            &[],
            &responsive_ports,
            &Verdict::Jump("responsive".into()),
            &format!("responsive:{}", protos.join(",")),
        ));
    }

    // 10. Final verdict.
    if policy.settings.log_denied {
        input.push(Rule::new(
            vec![Match::Limit {
                rate: Rate {
                    packets: 5,
                    per: RateUnit::Minute,
                },
                burst: 5,
            }],
            Verdict::Log("pbxfw denied: ".into()),
            "default: log",
        ));
    }
    input.push(Rule::new(vec![], deny, "default"));

    b.rs.chains.insert(
        INPUT.into(),
        Chain {
            hook: Some(BasePolicy::Drop),
            zone: None,
            rules: input,
        },
    );
    debug_assert_eq!(crate::ir::verify(&b.rs), Ok(()));
    b.rs
}

/// Step 9: the kernel tiers of docs/responsive.md, per source (per prefix), in the kernel.
///
/// Every packet reaching the chain is counted by the meters in the order flood, the slow lane
/// (clamped sources only, which it then admits or rejects), daily, clamp; the first exceeded
/// decides. Trunks never reach the meters (a trunk sending another
/// protocol's signalling is refused at the final rule, never banned); registered sources and
/// zone grants were accepted before step 9.
fn responsive_chain(
    b: &mut Builder,
    policy: &ValidPolicy,
    key_len: impl Fn(Family) -> u8,
) -> Vec<Rule> {
    let r = &policy.responsive;
    let mut rules = Vec::new();
    let trunk_sets: Vec<(String, Family)> =
        b.rs.sets
            .iter()
            .filter(|(n, _)| n.starts_with("trunk_"))
            .map(|(n, s)| (n.clone(), s.family))
            .collect();
    for (set, f) in trunk_sets {
        rules.push(Rule::new(
            vec![Match::Family(f), Match::Src(set)],
            Verdict::Return,
            "responsive: trunks are never limited or banned",
        ));
    }
    // The administrators (`settings.admins`) are admitted without being metered: an admin
    // testing a softphone from the office must not ban the office.
    for f in Family::BOTH {
        // One element per address, however many ports it is listed with.
        let addrs: BTreeSet<std::net::IpAddr> = policy
            .settings
            .admins
            .iter()
            .map(|a| a.addr)
            .filter(|a| Family::of(a) == f)
            .collect();
        let admins: Vec<Element> = addrs
            .into_iter()
            .map(|a| (Prefix::host(a), format!("settings.admins {a}")))
            .collect();
        if admins.is_empty() {
            continue;
        }
        let set = names::admins(f);
        b.static_set(
            set.clone(),
            f,
            "administrators (settings.admins): never metered by the responsive tiers",
            admins,
            true,
        );
        rules.push(Rule::new(
            vec![Match::Family(f), Match::Src(set)],
            Verdict::Accept,
            "responsive: administrators are never limited or banned (settings.admins)",
        ));
    }
    // The ignore list (`responsive.ignore`): never metered either, and given no more than
    // signalling, which is what the tiers would have admitted.
    for f in Family::BOTH {
        let ignored: Vec<Element> = policy
            .responsive
            .ignore
            .iter()
            .filter(|p| p.family() == f)
            .map(|p| (*p, format!("responsive.ignore {p}")))
            .collect();
        if ignored.is_empty() {
            continue;
        }
        let set = names::ignore(f);
        b.static_set(
            set.clone(),
            f,
            "ignored sources (responsive.ignore): never metered by the responsive tiers",
            ignored,
            false,
        );
        rules.push(Rule::new(
            vec![Match::Family(f), Match::Src(set)],
            Verdict::Accept,
            "responsive: ignored sources are never limited or banned (responsive.ignore)",
        ));
    }
    // Sources the state machine clamped (a phone with a wrong password, a slow cracker): a
    // slow lane of 4 signalling packets a minute (two authenticated attempts), rejected beyond
    // it so a phone fails fast; a phone retrying every 30 s still gets every attempt through
    // and registers at once when fixed, while a slow cracker gets two guesses a minute. The
    // slow lane comes after the flood meter, which counts a clamped source too (one flooding
    // at full speed is banned like any other: rejected first, it never was), and before the
    // daily and clamp meters, which it replaces for that source: what the slow lane admits is
    // the state machine's to judge, so a phone whose password changed, retrying for hours, is
    // not banned by the daily tier for it (docs/responsive.md, "Known devices").
    for f in Family::BOTH {
        let clamped = names::clamped(f);
        b.dynamic_set(
            clamped.clone(),
            f,
            "sources clamped by the responsive state machine",
            key_len(f),
            Some(600),
            BTreeSet::new(),
        );
        let slow = names::meter("slow", f);
        b.dynamic_set(
            slow.clone(),
            f,
            "slow lane meter of clamped sources",
            key_len(f),
            Some(120),
            BTreeSet::new(),
        );
        let slow_lane = [
            Rule::new(
                vec![
                    Match::Family(f),
                    Match::Src(clamped.clone()),
                    Match::Meter {
                        set: slow,
                        rate: crate::model::Rate {
                            packets: 4,
                            per: RateUnit::Minute,
                        },
                        burst: 4,
                    },
                ],
                Verdict::Reject,
                "responsive: clamped source over 4/1m",
            ),
            Rule::new(
                vec![Match::Family(f), Match::Src(clamped)],
                Verdict::Accept,
                "responsive: clamped source within 4/1m",
            ),
        ];
        let tiers = [
            ("flood", r.flood, Some(names::tier_ban(f))),
            ("daily", r.daily, Some(names::tier_ban(f))),
            ("clamp", r.clamp, None),
        ];
        for (tier, t, ban) in tiers {
            if tier == "daily" {
                rules.extend(slow_lane.iter().cloned());
            }
            let rate = t.kernel_rate().expect("validation checks kernel rates");
            let meter = names::meter(tier, f);
            // A meter element lives as long as its source keeps sending within the window
            // (every packet refreshes it), and a little longer.
            b.dynamic_set(
                meter.clone(),
                f,
                &format!("responsive {tier} tier meter ({t})"),
                key_len(f),
                Some(t.seconds.saturating_mul(2).max(60)),
                BTreeSet::new(),
            );
            let m = vec![
                Match::Family(f),
                Match::Meter {
                    set: meter,
                    rate,
                    burst: t.packets,
                },
            ];
            let origin = format!("responsive: {tier} tier {t}");
            rules.push(match ban {
                Some(ban) => Rule::new(m, Verdict::Drop, origin)
                    .with_update(ban)
                    .with_notify(names::TIER_BAN_LOG_GROUP),
                None => Rule::new(m, Verdict::Reject, origin),
            });
        }
    }
    rules.push(Rule::new(vec![], Verdict::Accept, "responsive"));
    rules
}

/// `range` without the ports in `holes`.
pub fn subtract(range: PortRange, holes: &[PortRange]) -> Vec<PortRange> {
    let mut out = vec![range];
    for h in holes {
        out = out
            .into_iter()
            .flat_map(|r| {
                if h.last < r.first || h.first > r.last {
                    return vec![r];
                }
                let mut parts = Vec::new();
                if h.first > r.first {
                    parts.push(PortRange {
                        first: r.first,
                        last: h.first - 1,
                    });
                }
                if h.last < r.last {
                    parts.push(PortRange {
                        first: h.last + 1,
                        last: r.last,
                    });
                }
                parts
            })
            .collect();
    }
    out
}

fn icmp_rules(input: &mut Vec<Rule>, echo_rate: Rate) {
    let icmp =
        |f: Family, p: L4Proto, types: &[u8], limit: Option<Rate>, v: Verdict, origin: &str| {
            let mut m = vec![
                Match::Family(f),
                Match::Proto(p),
                Match::IcmpType(types.iter().copied().collect()),
            ];
            if let Some(rate) = limit {
                m.push(Match::Limit {
                    rate,
                    burst: rate.packets,
                });
            }
            Rule::new(m, v, origin)
        };
    use Family::{Ipv4, Ipv6};
    use L4Proto::{Icmp, Icmpv6};
    // Destination unreachable (path MTU), time exceeded, parameter problem.
    input.push(icmp(
        Ipv4,
        Icmp,
        &[3, 11, 12],
        None,
        Verdict::Accept,
        "icmp: errors",
    ));
    input.push(icmp(
        Ipv4,
        Icmp,
        &[8],
        Some(echo_rate),
        Verdict::Accept,
        "icmp: echo",
    ));
    input.push(icmp(
        Ipv4,
        Icmp,
        &[8],
        None,
        Verdict::Drop,
        "icmp: echo above rate",
    ));
    // Destination unreachable, packet too big, time exceeded, parameter problem.
    input.push(icmp(
        Ipv6,
        Icmpv6,
        &[1, 2, 3, 4],
        None,
        Verdict::Accept,
        "icmpv6: errors",
    ));
    // Router solicitation/advertisement, neighbour solicitation/advertisement, MLD query and
    // MLDv2 report: without these IPv6 stops working.
    input.push(icmp(
        Ipv6,
        Icmpv6,
        &[130, 133, 134, 135, 136, 143],
        None,
        Verdict::Accept,
        "icmpv6: neighbour discovery",
    ));
    input.push(icmp(
        Ipv6,
        Icmpv6,
        &[128],
        Some(echo_rate),
        Verdict::Accept,
        "icmpv6: echo",
    ));
    input.push(icmp(
        Ipv6,
        Icmpv6,
        &[128],
        None,
        Verdict::Drop,
        "icmpv6: echo above rate",
    ));
    let dhcp = |f: Family, sport: u16, dport: u16, origin: &str| {
        Rule::new(
            vec![
                Match::Family(f),
                Match::Proto(L4Proto::Udp),
                Match::Dport(PortSet::new([crate::model::PortRange::single(dport)]).unwrap()),
                Match::Sport(PortSet::new([crate::model::PortRange::single(sport)]).unwrap()),
            ],
            Verdict::Accept,
            origin,
        )
    };
    input.push(dhcp(Ipv4, 67, 68, "dhcp: client replies"));
    input.push(dhcp(Ipv6, 547, 546, "dhcpv6: client replies"));
}

fn classify(b: &mut Builder, policy: &ValidPolicy, deny: &Verdict) {
    let mut rules = Vec::new();
    // Host overrides (a /32 or /128, and the resolved addresses of hostnames) are the longest
    // prefixes there are, so they are checked before the prefix map and need no hole in it.
    // They live in sets so that `pbxfw trust ADDR` is a set-element update, not a reload; the
    // trusted host sets always exist for that reason. Explicit addresses come before hostnames.
    for zone in Zone::ALL {
        for f in Family::BOTH {
            let elems: Vec<(Prefix, String)> = policy
                .networks
                .iter()
                .filter(|n| n.zone == zone)
                .filter_map(|n| match &n.source {
                    Source::Net(p) if p.family() == f && p.is_host() => {
                        Some((*p, format!("networks[{}]", n.index)))
                    }
                    _ => None,
                })
                .collect();
            if elems.is_empty() && zone != Zone::Trusted {
                continue;
            }
            let set = names::zone_hosts(zone, f);
            b.static_set(
                set.clone(),
                f,
                &format!("hosts in zone {zone}"),
                elems,
                true,
            );
            rules.push(Rule::new(
                vec![Match::Family(f), Match::Src(set)],
                Verdict::Goto(names::zone_chain(zone)),
                format!("zone:{zone} hosts"),
            ));
        }
    }
    for zone in Zone::ALL {
        let hosts = hostnames(
            policy
                .networks
                .iter()
                .filter(|n| n.zone == zone)
                .map(|n| &n.source),
        );
        if hosts.is_empty() {
            continue;
        }
        for f in Family::BOTH {
            let set = names::zone_dns(zone, f);
            let comment = format!("zone {zone} by hostname, resolved");
            b.dynamic_set(set.clone(), f, &comment, f.bits(), None, hosts.clone());
            rules.push(Rule::new(
                vec![Match::Family(f), Match::Src(set)],
                Verdict::Goto(names::zone_chain(zone)),
                truncate(format!("zone:{zone} hostnames:{}", join_names(&hosts))),
            ));
        }
    }
    let nets: Vec<(Prefix, Zone)> = policy
        .networks
        .iter()
        .filter_map(|n| match &n.source {
            Source::Net(p) if !p.is_host() => Some((*p, n.zone)),
            _ => None,
        })
        .collect();
    for f in Family::BOTH {
        let ranges = zones::flatten(f, &nets);
        if ranges.is_empty() {
            continue;
        }
        let name = format!("zone_src{}", f.suffix());
        let entries = ranges
            .into_iter()
            .map(|(r, z)| (r, names::zone_chain(z)))
            .collect();
        b.rs.maps.insert(
            name.clone(),
            Map::Src(SrcMap::new(f, entries).expect("flatten yields sorted disjoint ranges")),
        );
        rules.push(Rule::new(
            vec![Match::Family(f)],
            Verdict::Dispatch(name),
            "zone: network overrides",
        ));
    }
    if !policy.interfaces.is_empty() {
        let entries = policy
            .interfaces
            .iter()
            .map(|(i, z)| (i.clone(), names::zone_chain(*z)))
            .collect();
        b.rs.maps.insert("zone_iif".into(), Map::Iif(entries));
        rules.push(Rule::new(
            vec![],
            Verdict::Dispatch("zone_iif".into()),
            "zone: interfaces",
        ));
    }
    rules.push(Rule::new(
        vec![],
        Verdict::Goto(names::zone_chain(Zone::Internet)),
        "zone: unlisted interface is internet",
    ));
    b.rs.chains.insert(
        CLASSIFY.into(),
        Chain {
            rules,
            ..Chain::default()
        },
    );

    for zone in Zone::ALL {
        let mut rules = Vec::new();
        if zone == Zone::Trusted {
            rules.push(Rule::new(vec![], Verdict::Accept, "zone:trusted"));
        } else if zone == Zone::Reject {
            // Nothing but RTP (accepted at step 5): not even the responsive layer's admission.
            rules.push(Rule::new(vec![], deny.clone(), "zone:reject"));
        } else {
            for svc in policy.services.values().filter(|s| s.zones.contains(&zone)) {
                rules.extend(port_rules(
                    &[],
                    &by_proto(&svc.ports),
                    &Verdict::Accept,
                    &format!("zone:{zone} service:{}", svc.name),
                ));
            }
        }
        b.rs.chains.insert(
            names::zone_chain(zone),
            Chain {
                hook: None,
                zone: Some(zone),
                rules,
            },
        );
    }
}
