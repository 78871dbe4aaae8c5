//! Kernel benchmark of the nft backend (not a test): for blacklists of 1k, 10k and 100k
//! addresses, the time to apply the whole pbxfw ruleset against a bare `nft -f` of the same set
//! (a hash set of addresses, as pbxfw makes it) and against the least stateful ruleset loaded by
//! `nft -f` (one input chain, the same set),
//! and the packets per second that reach the PBX through the full ruleset, measured side by
//! side with connection tracking alone and with no ruleset at all (two PBX namespaces flooded
//! in alternating bursts, [`pbxfw_benches::flood::interleaved`]), and with one iptables rule
//! per address (as FreePBX builds its blacklist; back-to-back floods). Also netlink set updates: one element, and 10k in one call. Then the same apply
//! and throughput rows for the iptables backend, on iptables-nft and on iptables-legacy (each in
//! a namespace of its own), and its set updates (`ipset restore`).
//!
//! `KBENCH_SIZES=100000` (comma-separated) measures only those blacklist sizes; each round's
//! packet ratios also go to stderr.
//!
//! Run as root: `cargo run --release -p pbxfw-benches --bin kernel-bench`. It creates and
//! removes its own network namespaces. Results go to BENCHMARKS.md by hand.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use pbxfw_benches::flood::{interleaved, median, open_flow, pps, sink};
use pbxfw_core::Prefix;
use pbxfw_core::{compile, Policy};
use pbxfw_core::{ApplyOptions, Backend, Element, Op};
use pbxfw_ipt::Variant;
use pbxfw_nft::Kernel;
use pbxfw_testkit::netns::in_netns;
use pbxfw_testkit::probe::Topology;

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

/// Wait out the kernel's frees of what the step before deleted, so that the next timed
/// command does not pay for them: nf_tables frees a deleted table, chain or set after an RCU
/// grace period, and the next netfilter netlink socket to close waits for that (the kernel
/// flushes its destroy work when a socket is released; 7-14 ms here, measured on `nft`'s
/// `close`). `nft list tables` opens and closes one.
fn settle(ns: &pbxfw_testkit::netns::Netns) {
    if let Some(ms) = std::env::var("KB_SLEEP").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    ns.run(&["nft", "list", "tables"]);
}

/// Seconds one process takes, run inside the pbx namespace (after [`settle`]).
fn timed(ns: &pbxfw_testkit::netns::Netns, argv: &[&str], stdin: Option<&str>) -> f64 {
    settle(ns);
    seconds(&format!("{argv:?}"), || match stdin {
        Some(text) => ns.exec_stdin(argv, text),
        None => ns.exec(argv),
    })
}

/// Seconds `run` takes; the process it runs must succeed.
fn seconds(what: &str, run: impl FnOnce() -> std::process::Output) -> f64 {
    let t = Instant::now();
    let out = run();
    let elapsed = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// The `pbxfw` binary beside this one.
fn pbxfw_bin() -> String {
    let bin = std::env::current_exe().unwrap().with_file_name("pbxfw");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p pbxfw-cli first",
        bin.display()
    );
    bin.display().to_string()
}

/// Seconds `pbxfw apply POLICY --backend nft` takes as a whole process in the pbx namespace,
/// loading through `loader` (`PBXFW_NFT_LOADER`: `netlink` or `nft`).
fn apply(topo: &Topology, pbxfw: &str, policy: &str, loader: &str) -> f64 {
    settle(&topo.pbx);
    let mut cmd = topo.pbx.command(pbxfw);
    cmd.args(["apply", policy, "--backend", "nft"]);
    cmd.env("PBXFW_NFT_LOADER", loader);
    seconds("pbxfw apply", || cmd.output().unwrap())
}

/// One row: the medians of `ROUNDS` interleaved rounds.
#[derive(Default)]
struct Row {
    apply_new: Vec<f64>,
    apply_replace: Vec<f64>,
    apply_text_new: Vec<f64>,
    load_new: Vec<f64>,
    bare_new: Vec<f64>,
    bare_replace: Vec<f64>,
    stateful_new: Vec<f64>,
    none: Vec<f64>,
    conntrack: Vec<f64>,
    pbxfw: Vec<f64>,
    pbxfw_vs_none: Vec<f64>,
    conntrack_one_way: Vec<f64>,
    pbxfw_one_way: Vec<f64>,
}

const ROUNDS: usize = 5;

/// Sending time per side of each side-by-side packet measurement.
const EACH: Duration = Duration::from_secs(1);

fn main() {
    let topo = Topology::new("kbench", &["eth0".to_string()]);
    let sink = sink(&topo);
    // The second PBX namespace of the side-by-side packet measurements.
    let topo2 = Topology::new("kbench2", &["eth0".to_string()]);
    let sink2 = pbxfw_benches::flood::sink(&topo2);
    let pbxfw = pbxfw_bin();
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut same_ruleset = Vec::new();
    // `KBENCH_SIZES=100000` (comma-separated) measures only those blacklist sizes.
    let sizes: Vec<usize> = std::env::var("KBENCH_SIZES").map_or_else(
        |_| vec![1_000, 10_000, 100_000],
        |v| v.split(',').map(|n| n.trim().parse().unwrap()).collect(),
    );
    for n in sizes {
        let addrs = blacklist(n);
        let entries: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        let text = format!(
            "[interfaces]\neth0 = \"internet\"\n[blacklist]\nentries = [{}]\n",
            entries.join(",")
        );
        let policy = dir.path().join(format!("bl{n}.toml"));
        std::fs::write(&policy, &text).unwrap();
        let policy = policy.display().to_string();
        let rs = compile(&Policy::from_toml(&text).unwrap().validate().unwrap());
        let elements: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        let declared = format!(
            "table inet bare {{\n set s {{\n  type ipv4_addr\n  elements = {{ {} }}\n }}\n}}\n",
            elements.join(", ")
        );
        // The replace does what pbxfw's reload does with a static set: delete, declare anew.
        let replace = format!("delete set inet bare s\n{declared}");
        // The least a stateful firewall loads: one input chain that accepts established
        // packets and drops the set's sources. Its first load in a namespace pays what any
        // stateful ruleset pays there and a bare set does not: connection tracking switched on
        // (its hooks, defragmentation, and a walk of the whole conntrack table for each of
        // IPv4 and IPv6) and a netfilter hook.
        let stateful = format!(
            "table inet bare {{\n set s {{\n  type ipv4_addr\n  elements = {{ {} }}\n }}\n chain input {{\n  type filter hook input priority 0; policy accept;\n  ct state established,related accept\n  ip saddr @s drop\n }}\n}}\n",
            elements.join(", ")
        );
        // Connection tracking alone: a stateful firewall pays for it before any rule of its own
        // (with no ruleset at all, the namespace tracks nothing).
        let ct = "table inet ctonly {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ct state established accept\n }\n}\n";
        let mut r = Row::default();
        for round in 0..ROUNDS {
            in_netns(&topo.pbx, || Kernel::default().disable().unwrap());

            let _ = topo.pbx.exec(&["nft", "delete", "table", "inet", "bare"]);
            // The bare set and the least stateful ruleset, first one then the other in turn
            // (each round starts after pbxfw's own table went away, a heavier step before).
            let bare = |r: &mut Row| {
                r.bare_new.push(timed(
                    &topo.pbx,
                    &["nft", "-f", "/dev/stdin"],
                    Some(&declared),
                ));
                r.bare_replace.push(timed(
                    &topo.pbx,
                    &["nft", "-f", "/dev/stdin"],
                    Some(&replace),
                ));
                topo.pbx.run(&["nft", "delete", "table", "inet", "bare"]);
            };
            let least_stateful = |r: &mut Row| {
                r.stateful_new.push(timed(
                    &topo.pbx,
                    &["nft", "-f", "/dev/stdin"],
                    Some(&stateful),
                ));
                topo.pbx.run(&["nft", "delete", "table", "inet", "bare"]);
            };
            if round % 2 == 0 {
                bare(&mut r);
                least_stateful(&mut r);
            } else {
                least_stateful(&mut r);
                bare(&mut r);
            }

            // The load and verification alone, timed by the library.
            let rs2 = rs.clone();
            settle(&topo.pbx);
            r.load_new.push(in_netns(&topo.pbx, move || {
                let k = Kernel::default();
                k.disable().unwrap();
                let t = Instant::now();
                pbxfw_core::apply(&k, &rs2, &ApplyOptions::default()).unwrap();
                let s = t.elapsed().as_secs_f64();
                k.disable().unwrap();
                s
            }));
            // The whole command as an administrator runs it: read, check, compile, load,
            // verify, record.
            r.apply_new.push(apply(&topo, &pbxfw, &policy, "netlink"));
            r.apply_replace
                .push(apply(&topo, &pbxfw, &policy, "netlink"));
            // The same command loading through `nft -f` (the fallback path), new.
            in_netns(&topo.pbx, || Kernel::default().disable().unwrap());
            r.apply_text_new.push(apply(&topo, &pbxfw, &policy, "nft"));

            // Packets, side by side (`flood::interleaved`): pbxfw in one namespace, the
            // reference in the other, flooded in alternating bursts; the namespaces swap
            // roles every round, so that their own difference cancels.
            let (a, b) = ((&topo, &sink), (&topo2, &sink2));
            let (var, reference) = if round % 2 == 0 { (a, b) } else { (b, a) };
            if round % 2 == 1 {
                let rs2 = rs.clone();
                in_netns(&topo2.pbx, move || {
                    pbxfw_core::apply(&Kernel::default(), &rs2, &ApplyOptions::default()).unwrap()
                });
                in_netns(&topo.pbx, || Kernel::default().disable().unwrap());
            }
            let side_by_side = |one_way: bool| {
                let fv = open_flow(var.0, var.1, one_way);
                let fr = open_flow(reference.0, reference.1, one_way);
                interleaved((var.0, &fv), (reference.0, &fr), EACH)
            };
            assert!(reference
                .0
                .pbx
                .exec_stdin(&["nft", "-f", "/dev/stdin"], ct)
                .status
                .success());
            let (p, c) = side_by_side(false);
            r.pbxfw.push(p);
            r.conntrack.push(c);
            let (p, c) = side_by_side(true);
            r.pbxfw_one_way.push(p);
            r.conntrack_one_way.push(c);
            reference
                .0
                .pbx
                .run(&["nft", "delete", "table", "inet", "ctonly"]);
            let (p, none) = side_by_side(false);
            r.pbxfw_vs_none.push(p);
            r.none.push(none);
            eprintln!(
                "{n} round {round}: pbxfw {:.0} conntrack {:.0}: {:.3}, pbxfw/none {:.3}, one-way {:.3}",
                r.pbxfw[round],
                r.conntrack[round],
                r.pbxfw[round] / r.conntrack[round],
                p / none,
                r.pbxfw_one_way[round] / r.conntrack_one_way[round]
            );
            in_netns(&topo2.pbx, || Kernel::default().disable().unwrap());
        }
        // Both load paths leave the same ruleset in the kernel.
        let listed = |loader: &str| {
            in_netns(&topo.pbx, || Kernel::default().disable().unwrap());
            apply(&topo, &pbxfw, &policy, loader);
            let json = topo
                .pbx
                .run(&["nft", "-j", "list", "table", "inet", "pbxfw"]);
            let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
            strip_handles(&mut v);
            v
        };
        assert_eq!(
            listed("nft"),
            listed("netlink"),
            "the two load paths differ at {n}"
        );
        same_ruleset.push(n);
        in_netns(&topo.pbx, || Kernel::default().disable().unwrap());

        let mut rules = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
        for a in &addrs {
            rules.push_str(&format!("-A INPUT -s {a}/32 -j DROP\n"));
        }
        rules.push_str("COMMIT\n");
        // In a namespace of its own, dropped afterwards: once iptables-legacy's filter table
        // is registered in a namespace its hooks stay, flushed or not, and every later packet
        // there would pay them (measured: 0.92 against 0.97 of connection tracking alone
        // when the pbxfw rounds of the next size ran beside those hooks).
        let legacy = Topology::new(&format!("kbleg{n}"), &["eth0".to_string()]);
        let legacy_sink = pbxfw_benches::flood::sink(&legacy);
        let ipt_load = timed(&legacy.pbx, &["iptables-legacy-restore"], Some(&rules));
        let with_ipt = median((0..3).map(|_| pps(&legacy, &legacy_sink)).collect());
        drop(legacy_sink);
        drop(legacy);
        rows.push((n, r, ipt_load, with_ipt));
    }

    println!("Apply (medians of {ROUNDS} interleaved rounds):");
    println!();
    println!("| blacklist | `pbxfw apply`, new | bare `nft -f`, new | ratio | `pbxfw apply`, replace | bare `nft -f`, replace | ratio | load + verify alone (library), new | `pbxfw apply` through `nft -f`, new | iptables-legacy rule per address, load |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (n, r, ipt_load, _) in &rows {
        let (an, bn, ar, br) = (
            median(r.apply_new.clone()),
            median(r.bare_new.clone()),
            median(r.apply_replace.clone()),
            median(r.bare_replace.clone()),
        );
        println!(
            "| {n} | {an:.3} s | {bn:.3} s | {:.2}x | {ar:.3} s | {br:.3} s | {:.2}x | {:.3} s | {:.3} s | {ipt_load:.3} s |",
            an / bn,
            ar / br,
            median(r.load_new.clone()),
            median(r.apply_text_new.clone()),
        );
    }
    println!();
    println!(
        "`nft -j list table` after a netlink load and after an `nft -f` load: the same at {same_ruleset:?}"
    );
    println!();
    println!("The first load of a stateful ruleset in a namespace (the least one: an input chain, `ct state established,related accept`, `ip saddr @s drop`, the same set), by `nft -f`, in the same rounds:");
    println!();
    println!("| blacklist | bare `nft -f`, new | least stateful `nft -f`, new | its ratio to the bare set | `pbxfw apply`, new | pbxfw / least stateful |");
    println!("|---|---|---|---|---|---|");
    for (n, r, _, _) in &rows {
        let (an, bn, sn) = (
            median(r.apply_new.clone()),
            median(r.bare_new.clone()),
            median(r.stateful_new.clone()),
        );
        println!(
            "| {n} | {bn:.4} s | {sn:.4} s | {:.2}x | {an:.4} s | {:.2}x |",
            sn / bn,
            an / sn
        );
    }
    println!();
    println!("Packets per second to an RTP port, pbxfw side by side with each reference (alternating bursts, two namespaces that swap roles every round; medians of {ROUNDS} rounds, ratios the medians of the rounds' ratios):");
    println!();
    println!("| blacklist | no ruleset | conntrack only | pbxfw | pbxfw / conntrack only | pbxfw / no ruleset | one-way: conntrack only | one-way: pbxfw | one-way: ratio | iptables rule per address | its ratio to no ruleset |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, r, _, with_ipt) in &rows {
        // The median of the rounds' ratios, with the lowest and highest.
        let ratios = |a: &[f64], b: &[f64]| {
            let v: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{:.3} ({lo:.3}–{hi:.3})", median(v))
        };
        let base = median(r.none.clone());
        println!(
            "| {n} | {base:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {} | {with_ipt:.0} | {:.3} |",
            median(r.conntrack.clone()),
            median(r.pbxfw.clone()),
            ratios(&r.pbxfw, &r.conntrack),
            ratios(&r.pbxfw_vs_none, &r.none),
            median(r.conntrack_one_way.clone()),
            median(r.pbxfw_one_way.clone()),
            ratios(&r.pbxfw_one_way, &r.conntrack_one_way),
            with_ipt / base,
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
        let sink = sink(&topo);
        // `KBENCH_SIZES=100000` (comma-separated) measures only those blacklist sizes.
        let sizes: Vec<usize> = std::env::var("KBENCH_SIZES").map_or_else(
            |_| vec![1_000, 10_000, 100_000],
            |v| v.split(',').map(|n| n.trim().parse().unwrap()).collect(),
        );
        for n in sizes {
            let base = median((0..3).map(|_| pps(&topo, &sink)).collect());
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
            let with_pbxfw = median((0..3).map(|_| pps(&topo, &sink)).collect());
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

/// A listing without its handles (the order objects were made in) and its metainfo.
fn strip_handles(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            o.remove("handle");
            o.values_mut().for_each(strip_handles);
        }
        serde_json::Value::Array(a) => {
            a.retain(|x| x.get("metainfo").is_none());
            a.iter_mut().for_each(strip_handles);
        }
        _ => {}
    }
}
