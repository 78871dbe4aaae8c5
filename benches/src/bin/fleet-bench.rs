//! The fleet's pull side by side with Debian's `crowdsec-firewall-bouncer` 0.0.25 on the same
//! real LAPI (Debian's `crowdsec`, LAPI only), each in its own network namespace: N decisions
//! imported into the LAPI, then the time from the puller's start to all of them in the
//! kernel, and its peak RSS. Then the loss test: 10,000 decisions created while pbxfw pulls
//! every second, and the kernel compared with what the LAPI holds, before and after a full
//! resync. Run as root (BENCHMARKS.md, "The fleet"):
//!
//! ```sh
//! cargo build --release -p pbxfw-cli -p pbxfw-benches --bin pbxfw --bin fleet-bench
//! ./target/release/fleet-bench                   # SIZES=1000,10000,100000 BOUNCER=1 LOSS=1
//! ```
//!
//! Decisions are not tuned for pbxfw: 90 % IPv4 addresses (198.18.0.0/15), 5 % IPv4 ranges
//! (/20 to /28 inside 100.64.0.0/10), 5 % IPv6 addresses, random, distinct, 24 h, imported
//! with `cscli decisions import` (one alert, as an administrator imports a list).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pbxfw_testkit::lapi::{Lapi, PORT};
use pbxfw_testkit::netns::{Killed, Netns};

const KEY_PBXFW: &str = "1111aaaa1111aaaa1111aaaa1111aaaa";
const KEY_BOUNCER: &str = "2222bbbb2222bbbb2222bbbb2222bbbb";
const KEY_WATCH: &str = "3333cccc3333cccc3333cccc3333cccc";

fn pbxfw_bin() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("pbxfw")
}

/// A small deterministic generator (xorshift): the same decisions in every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` distinct decisions as (scope, value), and how many distinct elements the packaged
/// bouncer can hold of them (it truncates a range to its first address).
fn decisions(n: usize, seed: u64, space: u32) -> Vec<(&'static str, String)> {
    let mut rng = Rng(seed | 1);
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    while out.len() < n {
        let r = rng.next();
        let (scope, value) = match r % 20 {
            0 => {
                // A range inside 100.64.0.0/10, disjoint from those already made.
                let len = 20 + (r >> 8) % 9;
                // 100.64.0.0/10, or 100.128.0.0/10 for the second space.
                let base = (0x6440_0000u32 + (space << 22)) | ((rng.next() as u32) & 0x003f_ffff);
                let start = base & (u32::MAX << (32 - len));
                let end = start | !(u32::MAX << (32 - len));
                if ranges.iter().any(|(s, e)| start <= *e && *s <= end) {
                    continue;
                }
                ranges.push((start, end));
                (
                    "Range",
                    format!("{}/{len}", std::net::Ipv4Addr::from(start)),
                )
            }
            1 => (
                "Ip",
                format!(
                    "2001:db{}:{:x}:{:x}::{:x}",
                    8 + space,
                    (r >> 16) & 0xffff,
                    (r >> 32) & 0xffff,
                    (r >> 48) | 1
                ),
            ),
            _ => {
                // 198.18.0.0/15, or 198.20.0.0/15 for the second space.
                let v = (0xc612_0000u32 + (space << 17)) | ((r >> 8) as u32 & 0x0001_ffff);
                ("Ip", std::net::Ipv4Addr::from(v).to_string())
            }
        };
        if seen.insert(value.clone()) {
            out.push((scope, value));
        }
    }
    out
}

fn import(lapi: &Lapi, dir: &Path, name: &str, ds: &[(&str, String)]) -> Duration {
    let csv = dir.join(format!("{name}.csv"));
    let mut text = String::from("duration,scope,value,type,reason\n");
    for (scope, value) in ds {
        text += &format!("24h,{scope},{value},ban,bench/{name}\n");
    }
    std::fs::write(&csv, text).unwrap();
    let t = Instant::now();
    lapi.cscli(&["decisions", "import", "-i", csv.to_str().unwrap()]);
    t.elapsed()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The elements of the named nft sets, as text.
fn nft_elements(ns: &Netns, sets: &[(&str, &str, &str)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (family, table, set) in sets {
        let o = ns.exec(&["nft", "-j", "list", "set", family, table, set]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        for item in v["nftables"].as_array().into_iter().flatten() {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                let val = e.get("elem").map_or(e, |x| &x["val"]);
                let text = match val {
                    serde_json::Value::String(s) => s.clone(),
                    v if v.get("prefix").is_some() => format!(
                        "{}/{}",
                        v["prefix"]["addr"].as_str().unwrap_or(""),
                        v["prefix"]["len"]
                    ),
                    v => v.to_string(),
                };
                out.insert(text);
            }
        }
    }
    out
}

/// A namespace wired to `net` through a veth, at 10.96.`i`.2 (the LAPI at 10.96.`i`.1).
fn wired(tag: &str, net: &Netns, i: u8) -> Netns {
    let ns = Netns::new(tag);
    let peer = format!("vb{i}");
    ns.run(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", &net.name,
    ]);
    ns.run(&[
        "ip",
        "addr",
        "add",
        &format!("10.96.{i}.2/24"),
        "dev",
        "eth0",
    ]);
    ns.run(&["ip", "link", "set", "eth0", "up"]);
    net.run(&[
        "ip",
        "addr",
        "add",
        &format!("10.96.{i}.1/24"),
        "dev",
        &peer,
    ]);
    net.run(&["ip", "link", "set", &peer, "up"]);
    ns
}

struct Pbx {
    ns: Netns,
    dir: PathBuf,
}

impl Pbx {
    /// A PBX wired to `net` as number `i` (a namespace deleted a moment ago may still hold
    /// its link: each PBX of a run has a number of its own).
    fn new(net: &Netns, i: u8, max: usize, poll: &str, resync: &str) -> Pbx {
        let ns = wired(&format!("fbench-pbx{i}"), net, i);
        let dir = ns.host_dir.join("pbx");
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, format!("{KEY_PBXFW}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.join("pbxfw.toml"),
            format!(
                "[interfaces]\neth0 = \"internet\"\n[fleet]\nurl = \"http://10.96.{i}.1:{PORT}\"\n\
                 api_key_file = \"{}\"\npoll_interval = \"{poll}\"\nresync_interval = \"{resync}\"\n\
                 timeout = \"60s\"\nmax_decisions = {}\n",
                key.display(),
                max.max(1024)
            ),
        )
        .unwrap();
        let bin = pbxfw_bin();
        ns.run(&[
            bin.to_str().unwrap(),
            "apply",
            dir.join("pbxfw.toml").to_str().unwrap(),
        ]);
        Pbx { ns, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn start(&self) -> Killed {
        let _ = std::fs::remove_file(self.dir.join("daemon.log"));
        let bin = pbxfw_bin();
        let policy = self.dir.join("pbxfw.toml");
        self.ns.spawn(
            &[
                bin.to_str().unwrap(),
                "daemon",
                policy.to_str().unwrap(),
                "--tick",
                "1",
            ],
            &[],
            &self.dir.join("daemon.log"),
        )
    }

    fn elements(&self) -> BTreeSet<String> {
        nft_elements(
            &self.ns,
            &[("inet", "pbxfw", "fleet4"), ("inet", "pbxfw", "fleet6")],
        )
    }
}

/// The last `event=fleet-sync enforced=N` of the log.
fn enforced(log: &str) -> Option<usize> {
    log.lines()
        .rev()
        .find(|l| l.contains("event=fleet-sync"))
        .and_then(|l| {
            l.split("enforced=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("SIZES: numbers"))
        .collect();
    let bouncer = std::env::var("BOUNCER").map_or(true, |v| v != "0");
    let loss = std::env::var("LOSS").map_or(true, |v| v != "0");
    assert!(
        pbxfw_testkit::lapi::installed(),
        "install Debian's crowdsec"
    );
    let net = Netns::new("fbench-net");
    println!("| decisions | import (cscli) | pbxfw: start → all in the kernel (median of 3) | pbxfw peak RSS | packaged bouncer: start → all in the kernel | bouncer peak RSS | bouncer elements (ranges truncated) |");
    println!("|---|---|---|---|---|---|---|");
    for (k, &n) in sizes.iter().enumerate() {
        let dir = net.host_dir.join(format!("lapi-{n}"));
        let mut lapi = Lapi::new(&dir, &format!("0.0.0.0:{PORT}"), &net);
        lapi.add_bouncer("pbxfw", KEY_PBXFW);
        lapi.add_bouncer("packaged", KEY_BOUNCER);
        lapi.add_bouncer("watch", KEY_WATCH);
        lapi.start();
        let ds = decisions(n, 0x9e37_79b9 + k as u64, 0);
        let imported = import(&lapi, &dir, "base", &ds);
        // pbxfw: three runs, each a fresh daemon and empty sets; the median, and the
        // highest peak.
        let mut runs = Vec::new();
        let mut hwm = 0;
        for r in 0..3u8 {
            let pbx = Pbx::new(&net, 10 + 2 * k as u8 + 40 * r, n + 20_000, "10s", "10m");
            let started = Instant::now();
            let daemon = pbx.start();
            let pid = daemon.0.id();
            while enforced(&pbx.log()).is_none_or(|e| e < n) {
                hwm = hwm.max(peak_rss_kib(pid));
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "pbxfw did not load {n}:\n{}",
                    pbx.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            runs.push(started.elapsed());
            hwm = hwm.max(peak_rss_kib(pid));
            let got = pbx.elements();
            assert_eq!(got.len(), n, "pbxfw's sets hold every decision");
        }
        runs.sort();
        let pbxfw_took = runs[1];
        // The packaged bouncer.
        let (b_took, b_hwm, b_elems) = if bouncer {
            let b = 100 + k as u8;
            let ns = wired(&format!("fbench-bouncer{b}"), &net, b);
            let cfg = dir.join("bouncer.yaml");
            std::fs::write(
                &cfg,
                format!(
                    "mode: nftables\nupdate_frequency: 1s\ndaemonize: false\nlog_mode: stdout\nlog_level: info\n\
                     api_url: http://10.96.{b}.1:{PORT}/\napi_key: {KEY_BOUNCER}\ninsecure_skip_verify: false\n\
                     disable_ipv6: false\ndeny_action: DROP\ndeny_log: false\nsupported_decisions_types:\n  - ban\n\
                     blacklists_ipv4: crowdsec-blacklists\nblacklists_ipv6: crowdsec6-blacklists\n\
                     nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    chain: crowdsec-chain\n\
                       ipv6:\n    enabled: true\n    set-only: false\n    table: crowdsec6\n    chain: crowdsec6-chain\n\
                     prometheus:\n  enabled: false\n  listen_addr: 127.0.0.1\n  listen_port: 60601\n"
                ),
            )
            .unwrap();
            let want: BTreeSet<String> = ds
                .iter()
                .map(|(_, v)| v.split('/').next().unwrap().to_string())
                .collect();
            let started = Instant::now();
            let child = ns.spawn(
                &["crowdsec-firewall-bouncer", "-c", cfg.to_str().unwrap()],
                &[],
                &dir.join("bouncer.log"),
            );
            let pid = child.0.id();
            let mut hwm = 0;
            let sets = [
                ("ip", "crowdsec", "crowdsec-blacklists"),
                ("ip6", "crowdsec6", "crowdsec6-blacklists"),
            ];
            let mut have = 0;
            // The bouncer's log says how many it added; the kernel is counted once it says all.
            loop {
                hwm = hwm.max(peak_rss_kib(pid));
                let log = std::fs::read_to_string(dir.join("bouncer.log")).unwrap_or_default();
                let added: usize = log
                    .lines()
                    .filter_map(|l| {
                        l.split("msg=\"")
                            .nth(1)?
                            .split(" decisions added")
                            .next()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .sum();
                if added >= want.len() {
                    have = nft_elements(&ns, &sets).len();
                    if have >= want.len() {
                        break;
                    }
                }
                if started.elapsed() > Duration::from_secs(1800) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let took = started.elapsed();
            hwm = hwm.max(peak_rss_kib(pid));
            drop(child);
            (Some(took), hwm, have)
        } else {
            (None, 0, 0)
        };
        println!(
            "| {n} | {:.2} s | {:.3} s (runs {:.3}, {:.3}) | {:.1} MB | {} | {} | {} |",
            imported.as_secs_f64(),
            pbxfw_took.as_secs_f64(),
            runs[0].as_secs_f64(),
            runs[2].as_secs_f64(),
            hwm as f64 / 1024.0,
            b_took.map_or("-".into(), |t| format!("{:.2} s", t.as_secs_f64())),
            if bouncer {
                format!("{:.1} MB", b_hwm as f64 / 1024.0)
            } else {
                "-".into()
            },
            if bouncer {
                b_elems.to_string()
            } else {
                "-".into()
            },
        );
        // The loss test, on the largest size: 10,000 more while pbxfw pulls every second.
        if loss && k + 1 == sizes.len() {
            let pbx = Pbx::new(&net, 11 + 2 * k as u8, n + 20_000, "1s", "60s");
            let daemon = pbx.start();
            let pid = daemon.0.id();
            while enforced(&pbx.log()).is_none_or(|e| e < n) {
                std::thread::sleep(Duration::from_millis(50));
            }
            // From address space the first decisions do not use: every one is new.
            let more = decisions(10_000, 0x5151_5151, 1);
            // Ten imports of a thousand, back to back: pulls fall inside them.
            for (i, chunk) in more.chunks(1000).enumerate() {
                import(&lapi, &dir, &format!("more{i}"), chunk);
            }
            let total = n + more.len();
            eprintln!(
                "loss test: imported; pbxfw RSS {:.1} MB",
                rss_kib(pid) as f64 / 1024.0
            );
            std::thread::sleep(Duration::from_secs(3));
            let after_deltas = pbx.elements().len();
            let fulls_before = pbx.log().matches("kind=full").count();
            let t = Instant::now();
            while pbx.log().matches("kind=full").count() == fulls_before {
                assert!(t.elapsed() < Duration::from_secs(120), "no resync");
                std::thread::sleep(Duration::from_millis(200));
            }
            std::thread::sleep(Duration::from_secs(2));
            let after_resync = pbx.elements();
            // What the LAPI holds, as a fresh bouncer's full pull says, each value looked for
            // in the kernel (a range as that range).
            let out = net.exec(&[
                "curl",
                "-s",
                "-H",
                &format!("X-Api-Key: {KEY_WATCH}"),
                &format!("http://127.0.0.1:{PORT}/v1/decisions/stream?startup=true"),
            ]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let lapi_values: BTreeSet<String> = v["new"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["value"].as_str().map(str::to_string))
                .collect();
            let missing = lapi_values
                .iter()
                .filter(|v| !after_resync.contains(*v))
                .count();
            println!(
                "\nloss test: {n} + {} created during 1 s pulls; kernel after the deltas: {after_deltas} of {total} ({} missing); after the next full resync: {} ({} missing; {missing} of the {} decisions the LAPI holds not in the kernel); pbxfw RSS {:.1} MB, peak {:.1} MB",
                more.len(),
                total.saturating_sub(after_deltas),
                after_resync.len(),
                total.saturating_sub(after_resync.len()),
                lapi_values.len(),
                rss_kib(pid) as f64 / 1024.0,
                peak_rss_kib(pid) as f64 / 1024.0
            );
            if std::env::var_os("FLEET_BENCH_LOG").is_some() {
                for l in pbx
                    .log()
                    .lines()
                    .filter(|l| !l.contains("kind=delta new=0"))
                {
                    eprintln!("{l}");
                }
            }
            drop(daemon);
        }
        lapi.stop();
    }
}
