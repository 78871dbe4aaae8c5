//! Deterministic policy generators for the pbxfw benchmarks (`cargo bench -p pbxfw-benches`).
//!
//! Every generator returns policy TOML text, because the benchmarks measure the whole path a
//! policy file takes: parse, validate, compile, lower. The same arguments always give the same
//! text (a fixed-seed [`SplitMix64`], no clock, no `HashMap` order), so figures from different
//! machines and commits measure the same work. Generated policies validate without errors or
//! warnings: warnings would add formatting work that real, clean policies do not do.
//!
//! ```
//! let text = pbxfw_benches::blacklist_policy(10);
//! let policy = pbxfw_core::Policy::from_toml(&text)?.validate()?;
//! assert_eq!(policy.blacklist.len(), 10);
//! assert!(policy.warnings.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The policy every generated one starts from: two interfaces, a trunk, the responsive layer.
pub const BASE_POLICY: &str = r#"[settings]
default_verdict = "drop"

[interfaces]
eth0 = "internet"
eth1 = "local"

[[pbx.trunks]]
name = "provider"
protocol = "pjsip"
host = "203.0.113.10"
"#;

/// A tiny, fixed-seed pseudo-random generator (SplitMix64): deterministic on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }
}

/// `n` distinct blacklist entries in a fixed mix: a third IPv4 addresses, a third IPv4 CIDRs
/// (/16 to /30) and a third IPv6 prefixes (/32 to /64), all in global unicast space, written
/// with host bits cleared. CIDRs may cover addresses or other CIDRs, as real lists do; the
/// compiler's set normalisation then has work to do.
pub fn blacklist_entries(n: usize) -> Vec<String> {
    let mut rng = SplitMix64::new(0x7062_7866_7700_0001);
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let entry = match out.len() % 3 {
            0 => Ipv4Addr::from(global_v4(&mut rng)).to_string(),
            1 => {
                let len = rng.range(16, 30);
                let a = global_v4(&mut rng) & (u32::MAX << (32 - len));
                format!("{}/{len}", Ipv4Addr::from(a))
            }
            _ => {
                let len = rng.range(32, 64);
                // Random in 2000::/3 (global unicast), masked to the prefix length; only the
                // top 64 bits matter for lengths up to 64.
                let top = (u128::from(rng.next_u64()) << 64 >> 3) | (1_u128 << 125);
                let a = top & (u128::MAX << (128 - len));
                format!("{}/{len}", Ipv6Addr::from(a))
            }
        };
        if seen.insert(entry.clone()) {
            out.push(entry);
        }
    }
    out
}

/// An IPv4 address in 1.0.0.0 to 223.255.255.255 outside 10/8, 127/8 and 192.168/16, so
/// blacklist entries never overlap the private networks the base policy might use.
fn global_v4(rng: &mut SplitMix64) -> u32 {
    loop {
        let a = rng.next_u64() as u32;
        let first = a >> 24;
        if (1..=223).contains(&first) && first != 10 && first != 127 && a >> 16 != 0xc0a8 {
            return a;
        }
    }
}

/// [`BASE_POLICY`] with a blacklist of [`blacklist_entries`]`(n)`.
pub fn blacklist_policy(n: usize) -> String {
    let mut s = String::with_capacity(BASE_POLICY.len() + 24 * n + 32);
    s.push_str(BASE_POLICY);
    s.push_str("\n[blacklist]\nentries = [\n");
    for e in blacklist_entries(n) {
        let _ = writeln!(s, "  \"{e}\",");
    }
    s.push_str("]\n");
    s
}

/// The same blacklist as [`blacklist_policy`], in a list file (docs/policy.md, "List files"):
/// the policy naming it, and the file's text (one entry a line).
pub fn blacklist_list_policy(n: usize) -> (String, String) {
    let policy = format!("{BASE_POLICY}\n[blacklist]\nlists = [\"{LIST_PATH}\"]\n");
    let mut list = String::with_capacity(20 * n);
    for e in blacklist_entries(n) {
        list.push_str(&e);
        list.push('\n');
    }
    (policy, list)
}

/// Where the benchmarks' list file is said to be (its text is given, never read).
pub const LIST_PATH: &str = "/etc/pbxfw/blacklist.list";

/// The zones nested network overrides cycle through.
const ZONES: [&str; 5] = ["local", "other", "trusted", "reject", "internet"];

/// `n` network overrides as `(source, zone)`, nested three deep so the zone classifier must
/// split ranges: per block a /16 (IPv4, `10.K.0.0/16`) or /48 (IPv6, `fd00:K::/48`), eight
/// /24s or /56s inside it and three hosts or /64s inside each of those; every level in a
/// different zone from its parent. 256 IPv4 blocks come first, then IPv6 blocks.
pub fn network_overrides(n: usize) -> Vec<(String, &'static str)> {
    let mut out = Vec::with_capacity(n);
    let mut block = 0usize;
    while out.len() < n {
        let zone = |level: usize, i: usize| ZONES[(block + level * 2 + i) % ZONES.len()];
        if block < 256 {
            let k = block;
            out.push((format!("10.{k}.0.0/16"), zone(0, 0)));
            for b in 0..8 {
                let third = b * 32;
                out.push((format!("10.{k}.{third}.0/24"), zone(1, b)));
                for c in 0..3 {
                    out.push((format!("10.{k}.{third}.{}", 1 + c * 50), zone(2, b + c)));
                }
            }
        } else {
            let k = block - 256;
            out.push((format!("fd00:{k:x}::/48"), zone(0, 0)));
            for b in 0..8 {
                let sub = b * 0x20;
                out.push((format!("fd00:{k:x}:{:x}::/56", sub << 8), zone(1, b)));
                for c in 0..3 {
                    let s64 = (sub << 8) | (1 + c * 0x40);
                    out.push((format!("fd00:{k:x}:{s64:x}::/64"), zone(2, b + c)));
                }
            }
        }
        block += 1;
    }
    out.truncate(n);
    out
}

/// [`BASE_POLICY`] with [`network_overrides`]`(n)` as `[[networks]]` tables.
pub fn networks_policy(n: usize) -> String {
    let mut s = String::with_capacity(BASE_POLICY.len() + 64 * n);
    s.push_str(BASE_POLICY);
    for (source, zone) in network_overrides(n) {
        let _ = write!(
            s,
            "\n[[networks]]\nsource = \"{source}\"\nzone = \"{zone}\"\n"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxfw_core::{compile, Policy};

    fn check(text: &str) -> pbxfw_core::ValidPolicy {
        let valid = Policy::from_toml(text).unwrap().validate().unwrap();
        assert!(valid.warnings.is_empty(), "{:?}", valid.warnings);
        let rs = compile(&valid);
        pbxfw_core::verify_ir(&rs).unwrap();
        pbxfw_nft::lower(&rs, &pbxfw_nft::Options::default()).unwrap();
        valid
    }

    #[test]
    fn generators_are_deterministic() {
        assert_eq!(blacklist_policy(300), blacklist_policy(300));
        assert_eq!(networks_policy(300), networks_policy(300));
        assert_eq!(blacklist_entries(10)[..], blacklist_entries(20)[..10]);
    }

    #[test]
    fn blacklists_are_clean_and_mixed() {
        let e = blacklist_entries(1000);
        assert_eq!(e.len(), 1000);
        assert_eq!(e.iter().filter(|s| s.contains(':')).count(), 333);
        assert_eq!(e.iter().filter(|s| !s.contains('/')).count(), 334);
        assert_eq!(check(&blacklist_policy(1000)).blacklist.len(), 1000);
    }

    #[test]
    fn networks_are_clean_and_nested() {
        // 10_000 reaches well into the IPv6 blocks (256 IPv4 blocks of 33 entries = 8448).
        let v = check(&networks_policy(10_000));
        assert_eq!(v.networks.len(), 10_000);
        let zones: BTreeSet<_> = v.networks.iter().map(|n| n.zone).collect();
        assert_eq!(zones.len(), 5);
    }
}

/// Throughput measurement for the kernel benchmark binaries (`kernel-bench`, `hot-path`).
pub mod flood {
    use std::net::{IpAddr, SocketAddr, UdpSocket};
    use std::str::FromStr;
    use std::time::{Duration, Instant};

    use pbxfw_testkit::netns::in_netns;
    use pbxfw_testkit::probe::{Topology, DST4};

    /// The sender's address: the client's own.
    const SENDER: &str = "100.64.255.254";

    /// How long each flood lasts.
    pub const FLOOD: Duration = Duration::from_secs(2);

    /// The PBX's end of the media flow: a socket on UDP port 10000 (the first RTP port) of the
    /// PBX, which answers the sender once per flood (media flows both ways: conntrack calls
    /// the flow established, as it does a call's RTP) and otherwise only receives, so that the
    /// PBX answers no packet with an ICMP error.
    pub fn sink(topo: &Topology) -> UdpSocket {
        topo.route_back("eth0", IpAddr::from_str(SENDER).unwrap());
        let s = in_netns(&topo.pbx, || UdpSocket::bind((DST4, 10000)).unwrap());
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    }

    /// Packets per second reaching the PBX (counted at priority 100 of its input hook, after
    /// pbxfw) from one sender in the client of `eth0` on an established media flow to UDP port
    /// 10000 of `sink` ([`sink`]): one packet each way, then the flood.
    pub fn pps(topo: &Topology, sink: &UdpSocket) -> f64 {
        let s = open_flow(topo, sink, false);
        // Counted from here: the opening packet is not part of the flood.
        topo.watch("ip saddr 100.64.255.254 udp dport 10000");
        let start = Instant::now();
        let payload = [0u8; 64];
        while start.elapsed() < FLOOD {
            for _ in 0..256 {
                let _ = s.send(&payload);
            }
        }
        topo.watched() as f64 / FLOOD.as_secs_f64()
    }

    /// Packets in one burst of [`interleaved`]: short enough that the machine's drift does
    /// not move within one (about 0.1 ms of sending), long enough that reading the clock
    /// costs nothing beside it.
    const BURST: usize = 64;

    /// The sender's end of the established media flow of [`pps`] to `sink`'s PBX (one packet
    /// each way, so that conntrack calls the flow established), or, `one_way`, of a flow
    /// nobody answers (every packet stays new).
    pub fn open_flow(topo: &Topology, sink: &UdpSocket, one_way: bool) -> UdpSocket {
        // A one-way flow needs a port of its own: an earlier flow on the same ports would
        // still be established in conntrack.
        let from = if one_way {
            "100.64.255.254:0"
        } else {
            "100.64.255.254:40000"
        };
        let s = in_netns(topo.client("eth0"), move || {
            let s = UdpSocket::bind(from).unwrap();
            s.connect(SocketAddr::new(IpAddr::from_str(DST4).unwrap(), 10000))
                .unwrap();
            s
        });
        if !one_way {
            s.send(b"hello").unwrap();
            let mut buf = [0u8; 64];
            let (_, from) = sink
                .recv_from(&mut buf)
                .expect("the ruleset accepts the first media packet");
            sink.send_to(b"hello", from).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s.recv(&mut buf).expect("the answer reaches the sender");
        }
        s
    }

    /// Packets per second of sending through each of two PBXes, `a` and `b`, each flooded on
    /// the flow of its socket (from [`open_flow`]) for `each` in all: the floods alternate in
    /// bursts of [`BURST`] packets, and each side is charged only the time of its own bursts.
    ///
    /// On one core the sender's `send` also runs the receiving side (veth hands the packet to
    /// the PBX's stack in the same softirq), so a burst's time is the whole per-packet cost,
    /// the PBX's input hook included. Interleaving at this grain makes the machine's drift
    /// (±25 % between two-second floods on this 2-vCPU VM) fall on both sides alike, which
    /// back-to-back floods cannot do. Counts are the packets that passed each PBX's ruleset
    /// ([`Topology::watch`] on both).
    pub fn interleaved(
        a: (&Topology, &UdpSocket),
        b: (&Topology, &UdpSocket),
        each: Duration,
    ) -> (f64, f64) {
        let watch = "ip saddr 100.64.255.254 udp dport 10000";
        a.0.watch(watch);
        b.0.watch(watch);
        let payload = [0u8; 64];
        let mut spent = [Duration::ZERO; 2];
        while spent[0] < each || spent[1] < each {
            for (side, s) in [a.1, b.1].into_iter().enumerate() {
                let start = Instant::now();
                for _ in 0..BURST {
                    let _ = s.send(&payload);
                }
                spent[side] += start.elapsed();
            }
        }
        (
            a.0.watched() as f64 / spent[0].as_secs_f64(),
            b.0.watched() as f64 / spent[1].as_secs_f64(),
        )
    }

    /// The median of some measurements.
    pub fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }
}
