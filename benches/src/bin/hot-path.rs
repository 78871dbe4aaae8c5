//! Where the per-packet cost of the nft ruleset goes (not a test): UDP packets per second from
//! one sender on an established media flow to an RTP port, through each variant and through
//! connection tracking alone, measured side by side: two PBX namespaces, one holding the
//! variant and one holding the conntrack-only reference, flooded in alternating bursts of 64
//! packets ([`pbxfw_benches::flood::interleaved`]), so that the machine's drift falls on both
//! alike. Each round swaps which namespace holds which (the namespaces' own difference
//! cancels); the figure is the median of the rounds' ratios, with their spread.
//!
//! - `no ruleset`: nothing loaded: what connection tracking alone costs, inverted;
//! - `conntrack only, again`: the reference against itself: the method's own noise;
//! - `stateful minimum`: `iif lo accept`, `ct state established accept`, the RTP port: the
//!   least any stateful firewall with a loopback rule does;
//! - `pbxfw`: the full ruleset of a policy with a 100k-address blacklist;
//! - `pbxfw, loaded by nft -f`: the same ruleset through the fallback load path;
//! - `pbxfw, media rule with the tier lookup (before)`: the same with the `established:
//!   media` rule also looking the kernel tiers' bans up (`ip saddr != @tier_ban4`), as it did
//!   before the daemon cut those sources' flows (what that per-packet lookup costs);
//! - `pbxfw, media rule after loopback`: the same with the rule moved back behind the
//!   loopback rule (what putting it first saves);
//! - `pbxfw, media rule without the port check`: the same with the rules' test of the
//!   responsive signalling ports taken out (what counting every signalling packet costs
//!   media);
//! - `pbxfw, without the media rule`: established media through the conntrack verdict map and
//!   the `established` chain, as before the media rule (what the rule saves);
//! - `pbxfw, one-way`: a flood nobody answers, which conntrack keeps calling new, so that every
//!   packet takes the path of a new flow (the blacklist and bans, then the RTP range), against
//!   the same flood through connection tracking alone.
//!
//! `HOTPATH_ONLY="name;name"` measures only the variants named. Run as root: `cargo run
//! --release -p pbxfw-benches --bin hot-path`. It creates and removes its own network
//! namespaces. Results go to BENCHMARKS.md by hand.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use pbxfw_benches::flood::{interleaved, median, open_flow, sink};
use pbxfw_core::ApplyOptions;
use pbxfw_core::{compile, Policy, Ruleset};
use pbxfw_nft::{Kernel, Loader};
use pbxfw_testkit::netns::in_netns;
use pbxfw_testkit::probe::Topology;

/// Rounds per variant, half with each namespace holding the variant.
const ROUNDS: usize = 10;
/// Sending time per side and round.
const EACH: Duration = Duration::from_secs(1);
const CT_ONLY: &str = "table inet ctonly {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ct state established accept\n }\n}\n";
const MINIMUM: &str = "table inet v {\n chain input {\n  type filter hook input priority 0; policy drop;\n  iif \"lo\" accept\n  ct state established accept\n  udp dport 10000 accept\n }\n}\n";

fn load(topo: &Topology, script: &str) {
    let out = topo.pbx.exec_stdin(&["nft", "-f", "/dev/stdin"], script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rewrite (or, on `None`, delete) the `established: media` rules of the input chain.
fn rewrite_media(topo: &Topology, edit: &dyn Fn(&str) -> Option<String>) {
    let listing = topo
        .pbx
        .run(&["nft", "-a", "list", "chain", "inet", "pbxfw", "input"]);
    for l in listing
        .lines()
        .filter(|l| l.contains("\"established: media\""))
    {
        let (rule, handle) = l.trim().rsplit_once(" # handle ").unwrap();
        match edit(rule) {
            Some(text) => {
                let script = format!("replace rule inet pbxfw input handle {handle} {text}\n");
                load(topo, &script);
            }
            None => {
                topo.pbx.run(&[
                    "nft", "delete", "rule", "inet", "pbxfw", "input", "handle", handle,
                ]);
            }
        }
    }
}

/// `rule` without the expression that starts with `from` and ends before `to`.
/// Move the `established: media` rule behind the loopback rule, where it was first written.
fn after_loopback(topo: &Topology) {
    let listing = topo
        .pbx
        .run(&["nft", "-a", "list", "chain", "inet", "pbxfw", "input"]);
    let handle = |origin: &str| {
        let l = listing
            .lines()
            .find(|l| l.contains(origin))
            .unwrap_or_else(|| panic!("{origin} in {listing}"));
        let (rule, handle) = l.trim().rsplit_once(" # handle ").unwrap();
        (rule.to_string(), handle.to_string())
    };
    let (media, media_handle) = handle("\"established: media\"");
    let (_, loopback) = handle("\"loopback\"");
    let script = format!(
        "delete rule inet pbxfw input handle {media_handle}\n\
         add rule inet pbxfw input position {loopback} {media}\n"
    );
    load(topo, &script);
}

fn cut(rule: &str, from: &str, to: &str) -> String {
    let i = rule
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} in {rule}"));
    let j = i + rule[i..]
        .find(to)
        .unwrap_or_else(|| panic!("{to:?} in {rule}"));
    format!("{}{}", &rule[..i], &rule[j..])
}

fn apply(topo: &Topology, rs: &Ruleset) {
    apply_with(topo, rs, Loader::Netlink)
}

fn apply_with(topo: &Topology, rs: &Ruleset, loader: Loader) {
    let rs = rs.clone();
    in_netns(&topo.pbx, move || {
        pbxfw_core::apply(&Kernel::with_loader(loader), &rs, &ApplyOptions::default()).unwrap();
    });
}

/// A variant: its name, how it is loaded into a PBX namespace, the table to delete afterwards
/// (none when nothing is loaded), whether the flood is one-way.
struct Variant<'a> {
    name: &'a str,
    setup: Box<dyn Fn(&Topology) + 'a>,
    table: Option<&'a str>,
    one_way: bool,
}

/// The lowest, median and highest ratio of the variant's packet rate to the conntrack-only
/// reference's over [`ROUNDS`] interleaved rounds, and the reference's median rate.
fn rounds(sides: [(&Topology, &UdpSocket); 2], v: &Variant) -> (f64, f64, f64, f64) {
    let mut ratios = Vec::new();
    let mut reference = Vec::new();
    for round in 0..ROUNDS {
        // Even rounds: the variant in the first namespace; odd ones: in the second.
        let (var, ct) = if round % 2 == 0 {
            (sides[0], sides[1])
        } else {
            (sides[1], sides[0])
        };
        (v.setup)(var.0);
        load(ct.0, CT_ONLY);
        let fv = open_flow(var.0, var.1, v.one_way);
        let fc = open_flow(ct.0, ct.1, v.one_way);
        let (pv, pc) = interleaved((var.0, &fv), (ct.0, &fc), EACH);
        if let Some(t) = v.table {
            var.0.pbx.run(&["nft", "delete", "table", "inet", t]);
        }
        ct.0.pbx.run(&["nft", "delete", "table", "inet", "ctonly"]);
        reference.push(pc);
        ratios.push(pv / pc);
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    (median(reference), lo, median(ratios), hi)
}

fn main() {
    let topos = [
        Topology::new("hotpa", &["eth0".to_string()]),
        Topology::new("hotpb", &["eth0".to_string()]),
    ];
    let sinks: Vec<UdpSocket> = topos.iter().map(sink).collect();
    let addrs: Vec<String> = (0..100_000u32)
        .map(|i| format!("\"{}\"", Ipv4Addr::from(0x0b00_0000 + i * 3)))
        .collect();
    let text = format!(
        "[interfaces]\neth0 = \"internet\"\n[blacklist]\nentries = [{}]\n",
        addrs.join(",")
    );
    let rs = compile(&Policy::from_toml(&text).unwrap().validate().unwrap());
    let rs = &rs;
    let media = |edit: fn(&str) -> Option<String>| -> Box<dyn Fn(&Topology) + '_> {
        Box::new(move |t: &Topology| {
            apply(t, rs);
            rewrite_media(t, &edit);
        })
    };
    let variants = vec![
        Variant {
            name: "no ruleset",
            setup: Box::new(|_: &Topology| {}),
            table: None,
            one_way: false,
        },
        Variant {
            name: "conntrack only, again",
            setup: Box::new(|t: &Topology| load(t, &CT_ONLY.replace("ctonly", "ctagain"))),
            table: Some("ctagain"),
            one_way: false,
        },
        Variant {
            name: "stateful minimum",
            setup: Box::new(|t: &Topology| load(t, MINIMUM)),
            table: Some("v"),
            one_way: false,
        },
        Variant {
            name: "pbxfw",
            setup: Box::new(|t: &Topology| apply(t, rs)),
            table: Some("pbxfw"),
            one_way: false,
        },
        Variant {
            name: "pbxfw, loaded by nft -f",
            setup: Box::new(|t: &Topology| apply_with(t, rs, Loader::Nft)),
            table: Some("pbxfw"),
            one_way: false,
        },
        Variant {
            name: "pbxfw, media rule with the tier lookup (before)",
            // The flood is IPv4: the rule's IPv4 form of before.
            setup: media(|r| Some(r.replace(" accept", " ip saddr != @tier_ban4 accept"))),
            table: Some("pbxfw"),
            one_way: false,
        },
        Variant {
            name: "pbxfw, media rule after loopback",
            setup: Box::new(|t: &Topology| {
                apply(t, rs);
                after_loopback(t);
            }),
            table: Some("pbxfw"),
            one_way: false,
        },
        Variant {
            name: "pbxfw, media rule without the port check",
            setup: media(|r| {
                Some(
                    cut(r, "udp dport", "ct state")
                        .replace("ct state", "meta l4proto udp ct state"),
                )
            }),
            table: Some("pbxfw"),
            one_way: false,
        },
        Variant {
            name: "pbxfw, without the media rule",
            setup: media(|_| None),
            table: Some("pbxfw"),
            one_way: false,
        },
        Variant {
            name: "pbxfw, one-way",
            setup: Box::new(|t: &Topology| apply(t, rs)),
            table: Some("pbxfw"),
            one_way: true,
        },
    ];
    let only = std::env::var("HOTPATH_ONLY").ok();
    println!("| variant | pps: conntrack only (median) | variant / conntrack only: median of {ROUNDS} rounds (lowest–highest) |");
    println!("|---|---|---|");
    for v in &variants {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(';').any(|n| n == v.name))
        {
            continue;
        }
        let (reference, lo, mid, hi) = rounds([(&topos[0], &sinks[0]), (&topos[1], &sinks[1])], v);
        println!(
            "| {} | {reference:.0} | {mid:.3} ({lo:.3}–{hi:.3}) |",
            v.name
        );
    }
}
