//! Kernel benchmark of the nft backend (not a test): for blacklists of 1k, 10k and 100k
//! addresses, the time to apply the whole pbxfw ruleset against a bare `nft -f` of the same set
//! (a hash set of addresses, as pbxfw makes it),
//! and the packets per second that reach the PBX through the full ruleset, compared in the same
//! run with no ruleset at all and with one iptables rule per address (as FreePBX builds its
//! blacklist). Also netlink set updates: one element, and 10k in one call. Then the same apply
//! and throughput rows for the iptables backend, on iptables-nft and on iptables-legacy (each in
//! a namespace of its own), and its set updates (`ipset restore`).
//!
//! Run as root: `cargo run --release -p pbxfw-benches --bin kernel-bench`. It creates and
//! removes its own network namespaces. Results go to BENCHMARKS.md by hand.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use pbxfw_benches::flood::{median, pps};
use pbxfw_core::Prefix;
use pbxfw_core::{compile, Policy};
use pbxfw_core::{ApplyOptions, Backend, Element, Op};
use pbxfw_ipt::Variant;
use pbxfw_nft::Kernel;
use pbxfw_testkit::netns::in_netns;
use pbxfw_testkit::probe::{Topology, DST4};

fn blacklist(n: usize) -> Vec<Ipv4Addr> {
    (0..n as u32)
        .map(|i| Ipv4Addr::from(0x0b00_0000 + i * 3))
        .collect()
}

/// Seconds to add one ban element (median of `samples` calls), and 10,000 in one call, through
/// the backend's set update.
fn time_updates(k: &dyn Backend, rs: &pbxfw_core::Ruleset, samples: u32) -> (f64, f64) {
    let ban = |base: u32, i: u32| Element {
        prefix: Prefix::host(IpAddr::from(Ipv4Addr::from(base + i))),
        timeout: Some(Duration::from_secs(600)),
    };
    let one = median(
        (0..samples)
            .map(|i| {
                let e = ban(0x0c00_0000, i);
                let t = Instant::now();
                k.update_set(rs, "ban4", Op::Add, &[e]).unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let many: Vec<Element> = (0..10_000u32).map(|i| ban(0x0d00_0000, i)).collect();
    let t = Instant::now();
    k.update_set(rs, "ban4", Op::Add, &many).unwrap();
    (one, t.elapsed().as_secs_f64())
}

fn main() {
    let topo = Topology::new("kbench", &["eth0".to_string()]);
    // A sink for the flood, so the PBX does not answer every packet with an ICMP error.
    let _sink = in_netns(&topo.pbx, || UdpSocket::bind((DST4, 10000)).unwrap());
    println!("| blacklist | pbxfw apply | bare `nft -f` of the set | ratio | iptables-legacy rules load | pps: no ruleset | pps: conntrack only | pps: pbxfw | ratio | pps: iptables rule per address | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for n in [1_000usize, 10_000, 100_000] {
        let addrs = blacklist(n);
        let _ = topo.pbx.exec(&["nft", "delete", "table", "inet", "pbxfw"]);
        let base = median((0..3).map(|_| pps(&topo)).collect());
        // Connection tracking alone: a stateful firewall pays for it before any rule of its own
        // (with no ruleset at all, the namespace tracks nothing).
        let ct = "table inet ctonly {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ct state established accept\n }\n}\n";
        assert!(topo
            .pbx
            .exec_stdin(&["nft", "-f", "/dev/stdin"], ct)
            .status
            .success());
        let conntrack = median((0..3).map(|_| pps(&topo)).collect());
        topo.pbx.run(&["nft", "delete", "table", "inet", "ctonly"]);

        let entries: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        let text = format!(
            "[interfaces]\neth0 = \"internet\"\n[blacklist]\nentries = [{}]\n",
            entries.join(",")
        );
        let rs = compile(&Policy::from_toml(&text).unwrap().validate().unwrap());
        let apply = median(
            (0..3)
                .map(|_| {
                    let rs = rs.clone();
                    in_netns(&topo.pbx, move || {
                        let k = Kernel::default();
                        k.disable().unwrap();
                        let t = Instant::now();
                        pbxfw_core::apply(&k, &rs, &ApplyOptions::default()).unwrap();
                        t.elapsed().as_secs_f64()
                    })
                })
                .collect(),
        );
        let elements: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let bare_script = format!(
            "table inet bare {{\n set s {{\n  type ipv4_addr\n  elements = {{ {} }}\n }}\n}}\n",
            elements.join(", ")
        );
        let bare = median(
            (0..3)
                .map(|_| {
                    let _ = topo.pbx.exec(&["nft", "delete", "table", "inet", "bare"]);
                    let t = Instant::now();
                    let out = topo
                        .pbx
                        .exec_stdin(&["nft", "-f", "/dev/stdin"], &bare_script);
                    assert!(out.status.success());
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        let _ = topo.pbx.exec(&["nft", "delete", "table", "inet", "bare"]);
        let with_pbxfw = median((0..3).map(|_| pps(&topo)).collect());
        topo.pbx.run(&["nft", "delete", "table", "inet", "pbxfw"]);

        let mut rules = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
        for a in &addrs {
            rules.push_str(&format!("-A INPUT -s {a}/32 -j DROP\n"));
        }
        rules.push_str("COMMIT\n");
        let t = Instant::now();
        let out = topo.pbx.exec_stdin(&["iptables-legacy-restore"], &rules);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ipt_load = t.elapsed().as_secs_f64();
        let with_ipt = median((0..3).map(|_| pps(&topo)).collect());
        topo.pbx.run(&["iptables-legacy", "-F", "INPUT"]);

        println!(
            "| {n} | {:.3} s | {:.3} s | {:.2}x | {:.3} s | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.3} |",
            apply,
            bare,
            apply / bare,
            ipt_load,
            base,
            conntrack,
            with_pbxfw,
            with_pbxfw / base,
            with_ipt,
            with_ipt / base
        );
    }

    // Netlink set updates.
    let text = "[interfaces]\neth0 = \"internet\"\n";
    let rs = compile(&Policy::from_toml(text).unwrap().validate().unwrap());
    let (one, ten_k) = in_netns(&topo.pbx, move || {
        let k = Kernel::default();
        pbxfw_core::apply(&k, &rs, &ApplyOptions::default()).unwrap();
        time_updates(&k, &rs, 200)
    });
    println!();
    println!(
        "netlink: one ban element (median of 200): {:.3} ms; 10,000 elements in one call: {:.1} ms",
        one * 1000.0,
        ten_k * 1000.0
    );
    ipt_rows();
}

/// The iptables backend's rows: apply time and throughput at 1k/10k/100k blacklist entries,
/// and set updates, per iptables variant.
fn ipt_rows() {
    println!();
    println!("| variant | blacklist | pbxfw apply | pps: no ruleset | pps: pbxfw | ratio |");
    println!("|---|---|---|---|---|---|");
    let mut updates = Vec::new();
    for variant in [Variant::Nft, Variant::Legacy] {
        let topo = Topology::new(&format!("kb-{}", variant.name()), &["eth0".to_string()]);
        let _sink = in_netns(&topo.pbx, || UdpSocket::bind((DST4, 10000)).unwrap());
        for n in [1_000usize, 10_000, 100_000] {
            let base = median((0..3).map(|_| pps(&topo)).collect());
            let entries: Vec<String> = blacklist(n).iter().map(|a| format!("\"{a}\"")).collect();
            let text = format!(
                "[interfaces]\neth0 = \"internet\"\n[blacklist]\nentries = [{}]\n",
                entries.join(",")
            );
            let rs = compile(&Policy::from_toml(&text).unwrap().validate().unwrap());
            let apply = median(
                (0..3)
                    .map(|_| {
                        let rs = rs.clone();
                        in_netns(&topo.pbx, move || {
                            let k = pbxfw_ipt::Kernel::new(variant);
                            k.disable().unwrap();
                            let t = Instant::now();
                            pbxfw_core::apply(&k, &rs, &ApplyOptions::default()).unwrap();
                            t.elapsed().as_secs_f64()
                        })
                    })
                    .collect(),
            );
            let with_pbxfw = median((0..3).map(|_| pps(&topo)).collect());
            in_netns(&topo.pbx, move || {
                pbxfw_ipt::Kernel::new(variant).disable().unwrap()
            });
            println!(
                "| iptables-{} | {n} | {apply:.3} s | {base:.0} | {with_pbxfw:.0} | {:.2} |",
                variant.name(),
                with_pbxfw / base
            );
        }
        let text = "[interfaces]\neth0 = \"internet\"\n";
        let rs = compile(&Policy::from_toml(text).unwrap().validate().unwrap());
        updates.push(in_netns(&topo.pbx, move || {
            let k = pbxfw_ipt::Kernel::new(variant);
            pbxfw_core::apply(&k, &rs, &ApplyOptions::default()).unwrap();
            let (one, ten_k) = time_updates(&k, &rs, 50);
            k.disable().unwrap();
            (variant, one, ten_k)
        }));
    }
    println!();
    for (variant, one, ten_k) in updates {
        println!(
            "ipset (iptables-{}): one ban element (median of 50): {:.3} ms; 10,000 elements in one call: {:.1} ms",
            variant.name(),
            one * 1000.0,
            ten_k * 1000.0
        );
    }
}
