//! Where the per-packet cost of the nft ruleset goes (not a test): UDP packets per second from
//! one sender on an established media flow to an RTP port (a 2 s flood), each variant measured
//! right after the connection-tracking-only reference, and reported as its ratio to it (the
//! median of the pairs: neighbouring floods share the machine's state, which moves by ±10 %
//! between rounds on 2 vCPUs):
//!
//! - `stateful minimum`: `iif lo accept`, `ct state established accept`, the RTP port: the
//!   least any stateful firewall with a loopback rule does;
//! - `pbxfw`: the full ruleset of a policy with a 100k-address blacklist;
//! - `pbxfw, no tier lookup`: the same without the `established` chain's lookups of the kernel
//!   tiers' bans (what the per-packet enforcement of those bans costs);
//! - `pbxfw, no signalling returns`: the same without the `established` chain's returns of the
//!   responsive signalling ports (what counting every signalling packet costs media);
//! - `pbxfw, neither`: without both: the fast path alone (loopback, the conntrack verdict map,
//!   the jump, accept);
//! - `pbxfw, one-way`: a flood nobody answers, which conntrack keeps calling new, so that every
//!   packet takes the path of a new flow (the blacklist and bans, then the RTP range), against
//!   the same flood through connection tracking alone.
//!
//! Run as root: `cargo run --release -p pbxfw-benches --bin hot-path`. It creates and removes
//! its own network namespaces. Results go to BENCHMARKS.md by hand.

use std::net::{Ipv4Addr, UdpSocket};

use pbxfw_benches::flood::{median, pps, pps_one_way, sink};
use pbxfw_core::ApplyOptions;
use pbxfw_core::{compile, Policy};
use pbxfw_nft::Kernel;
use pbxfw_testkit::netns::in_netns;
use pbxfw_testkit::probe::Topology;

const PAIRS: usize = 7;
const CT_ONLY: &str = "table inet ctonly {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ct state established accept\n }\n}\n";

fn load(topo: &Topology, script: &str) {
    let out = topo.pbx.exec_stdin(&["nft", "-f", "/dev/stdin"], script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Delete the rules of `chain` whose text contains `needle`.
fn delete_rules(topo: &Topology, chain: &str, needle: &str) {
    let listing = topo
        .pbx
        .run(&["nft", "-a", "list", "chain", "inet", "pbxfw", chain]);
    for l in listing.lines().filter(|l| l.contains(needle)) {
        let handle = l.rsplit("# handle ").next().unwrap().trim();
        topo.pbx.run(&[
            "nft", "delete", "rule", "inet", "pbxfw", chain, "handle", handle,
        ]);
    }
}

/// The median ratio of `PAIRS` floods through the variant (set up by `variant`, torn down by
/// deleting `table`) to floods through connection tracking alone, one each in turn.
fn paired(topo: &Topology, flood: &dyn Fn() -> f64, variant: &dyn Fn(), table: &str) -> (f64, f64) {
    let mut ratios = Vec::new();
    let mut reference = Vec::new();
    for _ in 0..PAIRS {
        load(topo, CT_ONLY);
        let c = flood();
        topo.pbx.run(&["nft", "delete", "table", "inet", "ctonly"]);
        variant();
        let v = flood();
        topo.pbx.run(&["nft", "delete", "table", "inet", table]);
        reference.push(c);
        ratios.push(v / c);
    }
    (median(reference), median(ratios))
}

fn main() {
    let topo = Topology::new("hotpath", &["eth0".to_string()]);
    let sink: UdpSocket = sink(&topo);
    let addrs: Vec<String> = (0..100_000u32)
        .map(|i| format!("\"{}\"", Ipv4Addr::from(0x0b00_0000 + i * 3)))
        .collect();
    let text = format!(
        "[interfaces]\neth0 = \"internet\"\n[blacklist]\nentries = [{}]\n",
        addrs.join(",")
    );
    let rs = compile(&Policy::from_toml(&text).unwrap().validate().unwrap());
    let pbxfw = || {
        let rs = rs.clone();
        in_netns(&topo.pbx, move || {
            pbxfw_core::apply(&Kernel::default(), &rs, &ApplyOptions::default()).unwrap();
        });
    };
    let minimum = "table inet v {\n chain input {\n  type filter hook input priority 0; policy drop;\n  iif \"lo\" accept\n  ct state established accept\n  udp dport 10000 accept\n }\n}\n";
    let established = || pps(&topo, &sink);
    let one_way = || pps_one_way(&topo);
    // Name, set-up, the table to delete afterwards, whether the flood is one-way.
    type Variant<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str, bool);
    let variants: Vec<Variant> = vec![
        (
            "stateful minimum",
            Box::new(|| load(&topo, minimum)),
            "v",
            false,
        ),
        ("pbxfw", Box::new(pbxfw), "pbxfw", false),
        (
            "pbxfw, no tier lookup",
            Box::new(|| {
                pbxfw();
                delete_rules(&topo, "established", "kernel tier");
            }),
            "pbxfw",
            false,
        ),
        (
            "pbxfw, no signalling returns",
            Box::new(|| {
                pbxfw();
                delete_rules(&topo, "established", "every signalling packet");
            }),
            "pbxfw",
            false,
        ),
        (
            "pbxfw, neither",
            Box::new(|| {
                pbxfw();
                delete_rules(&topo, "established", "kernel tier");
                delete_rules(&topo, "established", "every signalling packet");
            }),
            "pbxfw",
            false,
        ),
        ("pbxfw, one-way", Box::new(pbxfw), "pbxfw", true),
    ];
    println!("| variant | pps: conntrack only (median) | variant / conntrack only (median of {PAIRS} pairs) |");
    println!("|---|---|---|");
    for (name, setup, table, is_one_way) in &variants {
        let flood: &dyn Fn() -> f64 = if *is_one_way { &one_way } else { &established };
        let (reference, ratio) = paired(&topo, flood, setup.as_ref(), table);
        println!("| {name} | {reference:.0} | {ratio:.3} |");
    }
}
