//! Where the per-packet cost of the nft ruleset goes (not a test): UDP packets per second from
//! one sender to an RTP port (median of 3 floods of 2 s), each variant against no ruleset in
//! the same round:
//!
//! - `accept-only`: a base chain with one `accept` (the cost of having a hook at all);
//! - `ct-established`: `ct state established accept` (connection tracking alone);
//! - `5 rules`: four cheap rules and the conntrack rule;
//! - `stateful minimum`: `iif lo accept`, `ct state established accept`, the RTP port: the
//!   least any stateful firewall with a loopback rule does;
//! - `pbxfw`: the full ruleset of a policy with a 100k-address blacklist;
//! - `pbxfw, no lookups`: the same with the blacklist and ban lookups taken out (chain `pre4`
//!   flushed): what the four set lookups on the way cost;
//! - `pbxfw, media untracked`: an experiment, the full ruleset with RTP and UDPTL marked
//!   `notrack` in a `prerouting` chain at priority `raw`, and untracked packets sent by the
//!   conntrack verdict map straight to the media rules (does skipping conntrack for media
//!   close the gap?).
//!
//! Run as root: `cargo run --release -p pbxfw-benches --bin hot-path`. It creates and removes
//! its own network namespaces. Results go to BENCHMARKS.md by hand.

use std::net::{Ipv4Addr, UdpSocket};

use pbxfw_benches::flood::{median, pps};
use pbxfw_core::ApplyOptions;
use pbxfw_core::{compile, Policy};
use pbxfw_nft::Kernel;
use pbxfw_testkit::netns::in_netns;
use pbxfw_testkit::probe::{Topology, DST4};

fn measure(topo: &Topology) -> f64 {
    median((0..3).map(|_| pps(topo)).collect())
}

fn load(topo: &Topology, script: &str) {
    let out = topo.pbx.exec_stdin(&["nft", "-f", "/dev/stdin"], script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let topo = Topology::new("hotpath", &["eth0".to_string()]);
    let _sink = in_netns(&topo.pbx, || UdpSocket::bind((DST4, 10000)).unwrap());
    let addrs: Vec<String> = (0..100_000u32)
        .map(|i| format!("\"{}\"", Ipv4Addr::from(0x0b00_0000 + i * 3)))
        .collect();
    let text = format!(
        "[interfaces]\neth0 = \"internet\"\n[blacklist]\nentries = [{}]\n",
        addrs.join(",")
    );
    let rs = compile(&Policy::from_toml(&text).unwrap().validate().unwrap());
    let chain = |body: &str| {
        format!("table inet v {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n{body}\n }}\n}}\n")
    };
    let variants = [
        ("accept-only", chain("  accept")),
        ("ct-established", chain("  ct state established accept")),
        (
            "5 rules",
            chain("  iif \"lo\" accept\n  meta nfproto ipv6 drop\n  ip saddr 192.0.2.1 drop\n  udp dport 9 drop\n  ct state established accept"),
        ),
        (
            "stateful minimum",
            chain("  iif \"lo\" accept\n  ct state established accept\n  udp dport 10000 accept"),
        ),
    ];
    // The media experiment: untracked media go from the conntrack verdict map to the media
    // rules, after the blacklist and bans as before.
    let media = "table inet pbxfw {\n chain untracked {\n  type filter hook prerouting priority raw; policy accept;\n  udp dport { 4000-4568, 4570-4999, 10000-20000 } notrack\n }\n chain media {\n  udp dport { 4000-4568, 4570-4999, 10000-20000 } accept\n }\n}\n";
    println!("| round | pps: no ruleset | accept-only | ct-established | 5 rules | stateful minimum | pbxfw | pbxfw, no lookups | pbxfw, media untracked |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for round in 1..=3 {
        let _ = topo.pbx.exec(&["nft", "delete", "table", "inet", "pbxfw"]);
        let base = measure(&topo);
        let mut line = format!("| {round} | {base:.0}");
        for (_, script) in &variants {
            load(&topo, script);
            line += &format!(" | {:.2}", measure(&topo) / base);
            topo.pbx.run(&["nft", "delete", "table", "inet", "v"]);
        }
        let rs2 = rs.clone();
        in_netns(&topo.pbx, move || {
            pbxfw_core::apply(&Kernel::default(), &rs2, &ApplyOptions::default()).unwrap();
        });
        line += &format!(" | {:.2}", measure(&topo) / base);
        // The blacklist and ban chain, saved to be put back for the last variant.
        let pre4 = topo
            .pbx
            .run(&["nft", "list", "chain", "inet", "pbxfw", "pre4"]);
        topo.pbx
            .run(&["nft", "flush", "chain", "inet", "pbxfw", "pre4"]);
        line += &format!(" | {:.2}", measure(&topo) / base);
        load(&topo, &format!("{pre4}\n{media}"));
        let handle = topo
            .pbx
            .run(&["nft", "-a", "list", "chain", "inet", "pbxfw", "input"])
            .lines()
            .find(|l| l.contains("ct state vmap"))
            .and_then(|l| l.rsplit("# handle ").next())
            .expect("the conntrack verdict map")
            .trim()
            .to_string();
        topo.pbx.run(&[
            "nft",
            "replace",
            "rule",
            "inet",
            "pbxfw",
            "input",
            "handle",
            &handle,
            "ct",
            "state",
            "vmap",
            "{",
            "invalid",
            ":",
            "drop",
            ",",
            "established",
            ":",
            "jump",
            "established",
            ",",
            "related",
            ":",
            "jump",
            "established",
            ",",
            "untracked",
            ":",
            "jump",
            "media",
            "}",
        ]);
        line += &format!(" | {:.2} |", measure(&topo) / base);
        topo.pbx.run(&["nft", "delete", "table", "inet", "pbxfw"]);
        println!("{line}");
    }
}
