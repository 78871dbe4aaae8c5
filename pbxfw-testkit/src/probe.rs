//! Real packets across a real ruleset: a `pbx` namespace with one veth interface per input
//! interface a test needs (named as the policy names them), a client namespace behind each,
//! and probes that send one packet with a given source address and report what the kernel did
//! to it.
//!
//! How a verdict is observed: a second table in the pbx namespace counts the probe's packet in
//! a base chain on the input hook at priority 100, after pbxfw's (priority 0). A packet pbxfw
//! accepts reaches that chain; one it drops or rejects does not (a drop in any base chain is
//! final). Between drop and reject, the client tells: a rejected probe gets an ICMP error or a
//! reset, a dropped one gets nothing before the timeout.

use std::collections::BTreeMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use pbxfw_core::{CtState, FinalVerdict, Packet, Proto};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::{in_netns, Netns};

/// The pbx's own address.
pub const DST4: &str = "100.64.0.1";
/// The pbx's own IPv6 address.
pub const DST6: &str = "fd99::1";
const WAIT: Duration = Duration::from_millis(150);

/// The test network: one pbx namespace and one client namespace per interface.
pub struct Topology {
    /// The namespace holding the ruleset under test.
    pub pbx: Netns,
    clients: BTreeMap<String, (Netns, String)>,
    next_port: u16,
    /// Where pbxfw's dynamic sets live, for [`Topology::set_has`] and friends.
    pub sets: SetStore,
}

/// Where the backend under test keeps pbxfw's sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetStore {
    /// Sets of `table inet pbxfw` (the nft backend).
    Nft,
    /// ipsets named `pbxfw_<set>` (the iptables backend; the suites' sets have short names,
    /// which the backend does not shorten).
    Ipset,
}

fn sysctls(ns: &Netns) {
    for kv in [
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv6.conf.default.accept_ra=0",
        "net.ipv4.icmp_ratelimit=0",
        "net.ipv6.icmp.ratelimit=0",
    ] {
        ns.run(&["sysctl", "-qw", kv]);
    }
}

impl Topology {
    /// Build the pbx namespace with interfaces `iifs` (besides `lo`), each with a client.
    pub fn new(tag: &str, iifs: &[String]) -> Topology {
        let pbx = Netns::new(&format!("{tag}-pbx"));
        sysctls(&pbx);
        // The pbx's addresses live on its loopback (the weak host model accepts them on every
        // interface), so that probes arriving on `lo` itself have a destination too.
        pbx.run(&["ip", "addr", "add", &format!("{DST4}/32"), "dev", "lo"]);
        pbx.run(&[
            "ip",
            "addr",
            "add",
            &format!("{DST6}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
        let mut clients = BTreeMap::new();
        for (i, iif) in iifs.iter().filter(|i| *i != "lo").enumerate() {
            let c = Netns::new(&format!("{tag}-c{i}"));
            sysctls(&c);
            let pbx_mac = format!("02:00:00:00:01:{:02x}", i + 1);
            let cli_mac = format!("02:00:00:00:02:{:02x}", i + 1);
            pbx.run(&[
                "ip", "link", "add", iif, "address", &pbx_mac, "type", "veth", "peer", "name",
                "c0", "address", &cli_mac, "netns", &c.name,
            ]);
            pbx.run(&["ip", "link", "set", iif, "up"]);
            c.run(&["ip", "link", "set", "c0", "up"]);
            // A permanent address of its own: removing the last address of an interface would
            // take its routes with it between probes.
            c.run(&["ip", "addr", "add", "100.64.255.254/32", "dev", "c0"]);
            c.run(&["ip", "addr", "add", "fd99::fffe/128", "dev", "c0", "nodad"]);
            c.run(&["ip", "route", "add", &format!("{DST4}/32"), "dev", "c0"]);
            c.run(&[
                "ip",
                "-6",
                "route",
                "add",
                &format!("{DST6}/128"),
                "dev",
                "c0",
            ]);
            // Static neighbours: no ARP or neighbour discovery on the probe path, so a probe
            // whose source is blacklisted cannot fail for want of a neighbour.
            c.run(&[
                "ip",
                "neigh",
                "replace",
                DST4,
                "lladdr",
                &pbx_mac,
                "dev",
                "c0",
                "nud",
                "permanent",
            ]);
            c.run(&[
                "ip",
                "neigh",
                "replace",
                DST6,
                "lladdr",
                &pbx_mac,
                "dev",
                "c0",
                "nud",
                "permanent",
            ]);
            clients.insert(iif.clone(), (c, cli_mac));
        }
        let made = pbx.exec_stdin(
            &["nft", "-f", "/dev/stdin"],
            "table inet probe {\n chain seen {\n  type filter hook input priority 100; policy accept;\n }\n}\n",
        );
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        Topology {
            pbx,
            clients,
            next_port: 40000,
            sets: SetStore::Nft,
        }
    }

    /// Send `packet` and report the kernel's verdict. `None` when the packet cannot be
    /// reproduced with real traffic here (see [`as_kernel_sees`]).
    pub fn probe(&mut self, packet: &Packet) -> Option<FinalVerdict> {
        let packet = &as_kernel_sees(packet)?;
        // Conntrack outlives rulesets: a flow an earlier probe (under an earlier policy) opened
        // would make this packet `established` and accepted whatever the rules say now.
        self.pbx.run(&["conntrack", "-F"]);
        self.next_port = if self.next_port >= 60000 {
            40000
        } else {
            self.next_port + 1
        };
        let sport = packet.sport.unwrap_or(self.next_port);
        let src = packet.src;
        let v6 = src.is_ipv6();
        let plen = if v6 { 128 } else { 32 };
        let (client, lo) = match packet.iif.as_str() {
            "lo" => (&self.pbx, true),
            iif => {
                self.add_source(iif, src);
                (&self.clients[iif].0, false)
            }
        };
        // 127.0.0.0/8 and ::1 are local already.
        let lo_addr = lo && !src.is_loopback();
        if lo_addr {
            self.pbx.run(&[
                "ip",
                "addr",
                "add",
                &format!("{src}/{plen}"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        self.count(packet);
        let dst: IpAddr = if v6 {
            DST6.parse().unwrap()
        } else {
            DST4.parse().unwrap()
        };
        if packet.ct == CtState::Established && !packet.ct_reply {
            // A flow the client opened, which conntrack has seen both ways: entered in the
            // table directly, since the ruleset need not accept a first packet.
            self.pbx.run(&[
                "conntrack",
                "-I",
                "-p",
                "udp",
                "-s",
                &src.to_string(),
                "-d",
                &dst.to_string(),
                "--sport",
                &sport.to_string(),
                "--dport",
                &packet.dport.expect("udp has ports").to_string(),
                "-u",
                "SEEN_REPLY,ASSURED",
                "-t",
                "60",
            ]);
        }
        let p = packet.clone();
        let pbx_name = self.pbx.name.clone();
        let iface = if lo { "lo" } else { "c0" };
        let answered = in_netns(client, move || send(&p, dst, sport, &pbx_name, iface));
        let seen = self.seen();
        // Undo the addresses and routes so the next probe starts clean.
        if lo_addr {
            self.pbx
                .run(&["ip", "addr", "del", &format!("{src}/{plen}"), "dev", "lo"]);
        } else if !lo {
            self.clients[&packet.iif].0.run(&[
                "ip",
                "addr",
                "del",
                &format!("{src}/{plen}"),
                "dev",
                "c0",
            ]);
            self.pbx
                .run(&["ip", "route", "del", &format!("{src}/{plen}")]);
        }
        Some(if seen {
            FinalVerdict::Accept
        } else if answered {
            FinalVerdict::Reject
        } else {
            FinalVerdict::Drop
        })
    }

    /// Count packets matching the probe in the table that runs after pbxfw's.
    fn count(&self, p: &Packet) {
        let fam = if p.src.is_ipv6() { "ip6" } else { "ip" };
        let l4 = match p.proto {
            Proto::Udp => format!("udp dport {}", p.dport.unwrap()),
            Proto::Tcp => format!("tcp dport {}", p.dport.unwrap()),
            Proto::Icmp => format!("icmp type {}", p.icmp_type.unwrap()),
            Proto::Icmpv6 => format!("icmpv6 type {}", p.icmp_type.unwrap()),
        };
        self.watch(&format!("{fam} saddr {} {l4}", p.src));
    }

    fn seen(&self) -> bool {
        self.watched() > 0
    }

    /// Give a client the source address `src` on interface `iif` (and the pbx a route back).
    pub fn add_source(&self, iif: &str, src: IpAddr) {
        let plen = if src.is_ipv6() { 128 } else { 32 };
        let (c, _) = &self.clients[iif];
        c.run(&[
            "ip",
            "addr",
            "add",
            &format!("{src}/{plen}"),
            "dev",
            "c0",
            "nodad",
        ]);
        self.route_back(iif, src);
    }

    /// Give the pbx a route and a static neighbour back to `src` behind `iif` (a client's
    /// address the pbx answers).
    pub fn route_back(&self, iif: &str, src: IpAddr) {
        let plen = if src.is_ipv6() { 128 } else { 32 };
        let (_, mac) = &self.clients[iif];
        self.pbx.run(&[
            "ip",
            "route",
            "replace",
            &format!("{src}/{plen}"),
            "dev",
            iif,
        ]);
        self.pbx.run(&[
            "ip",
            "neigh",
            "replace",
            &src.to_string(),
            "lladdr",
            mac,
            "dev",
            iif,
            "nud",
            "permanent",
        ]);
    }

    /// Make `src` the default source address of the client behind `iif` (for tools that do not
    /// bind one themselves).
    pub fn prefer_source(&self, iif: &str, src: IpAddr) {
        let c = &self.clients[iif].0;
        if src.is_ipv6() {
            c.run(&[
                "ip",
                "-6",
                "route",
                "replace",
                &format!("{DST6}/128"),
                "dev",
                "c0",
                "src",
                &src.to_string(),
            ]);
        } else {
            c.run(&[
                "ip",
                "route",
                "replace",
                &format!("{DST4}/32"),
                "dev",
                "c0",
                "src",
                &src.to_string(),
            ]);
        }
    }

    /// The client namespace behind `iif`.
    pub fn client(&self, iif: &str) -> &Netns {
        &self.clients[iif].0
    }

    /// Count, after pbxfw, the packets matching an nft rule expression (replaces the last one).
    pub fn watch(&self, expr: &str) {
        let text =
            format!("flush chain inet probe seen\nadd rule inet probe seen {expr} counter\n");
        let out = self.pbx.exec_stdin(&["nft", "-f", "/dev/stdin"], &text);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Packets counted by [`Topology::watch`] so far: the ones pbxfw accepted.
    pub fn watched(&self) -> u64 {
        counted(&self.pbx, "probe", "seen")
    }

    /// Send `count` UDP datagrams from `src:sport` (unconnected, as a flood tool does) to the
    /// pbx's `dport`, from the client behind `iif`, `gap` apart.
    pub fn send_udp(
        &self,
        iif: &str,
        src: IpAddr,
        sport: u16,
        dport: u16,
        count: usize,
        gap: Duration,
    ) {
        let dst: IpAddr = if src.is_ipv6() {
            DST6.parse().unwrap()
        } else {
            DST4.parse().unwrap()
        };
        in_netns(self.client(iif), move || {
            let domain = if src.is_ipv6() {
                Domain::IPV6
            } else {
                Domain::IPV4
            };
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&sockaddr(src, sport)).unwrap();
            let to = sockaddr(dst, dport);
            let host = |a: IpAddr| {
                if a.is_ipv6() {
                    format!("[{a}]")
                } else {
                    a.to_string()
                }
            };
            for i in 0..count {
                let msg = format!(
                    "REGISTER sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP {s}:{sport};branch=z9hG4bK-{i}-{sport}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:100@{d}>;tag={i}\r\nTo: <sip:100@{d}>\r\n\
                     Call-ID: flood-{i}@{s}\r\nCSeq: {n} REGISTER\r\nContact: <sip:100@{s}:{sport}>\r\n\
                     User-Agent: pbxfw-test-flood\r\nContent-Length: 0\r\n\r\n",
                    d = host(dst),
                    s = host(src),
                    n = i + 1,
                );
                s.send_to(msg.as_bytes(), &to).unwrap();
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
            }
        });
    }

    /// Whether pbxfw's dynamic `set` holds `element`.
    pub fn set_has(&self, set: &str, element: &str) -> bool {
        if self.sets == SetStore::Ipset {
            let name = format!("pbxfw_{set}");
            return self
                .pbx
                .exec(&["ipset", "test", &name, element])
                .status
                .success();
        }
        let out = self
            .pbx
            .exec(&["nft", "-j", "list", "set", "inet", "pbxfw", set]);
        if !out.status.success() {
            // No table or no set: nothing is in it.
            return false;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["set"]["elem"].as_array())
            .flatten()
            .any(|e| e == element || e["elem"]["val"] == element)
    }

    /// Put `addr` (masked by the caller) into a dynamic set of pbxfw's.
    pub fn add_element(&self, set: &str, element: &str) {
        if self.sets == SetStore::Ipset {
            let name = format!("pbxfw_{set}");
            self.pbx.run(&["ipset", "add", &name, element, "-exist"]);
            return;
        }
        self.pbx.run(&[
            "nft",
            "add",
            "element",
            "inet",
            "pbxfw",
            set,
            &format!("{{ {element} }}"),
        ]);
    }

    /// Empty a dynamic set.
    pub fn flush_set(&self, set: &str) {
        if self.sets == SetStore::Ipset {
            self.pbx.run(&["ipset", "flush", &format!("pbxfw_{set}")]);
            return;
        }
        self.pbx.run(&["nft", "flush", "set", "inet", "pbxfw", set]);
    }
}

/// The sum of the packet counters of the rules of chain `table`/`chain` (family inet) in `ns`.
pub fn counted(ns: &Netns, table: &str, chain: &str) -> u64 {
    let text = ns.run(&["nft", "-j", "list", "chain", "inet", table, chain]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .sum()
}

/// The verdict a probe can observe when the ruleset decides `v`: the kernel answers an ICMP
/// message with an ICMP error only when it is a query (ICMPv4 echo and timestamp, and their
/// replies; ICMPv6 informational types, 128 and up): never an error message or an unassigned
/// type (RFC 1122, RFC 4443). A rejected message of another type looks dropped.
pub fn observable(p: &Packet, v: FinalVerdict) -> FinalVerdict {
    let unanswerable = match (p.proto, p.icmp_type) {
        (Proto::Icmp, Some(t)) => !matches!(t, 0 | 8 | 13 | 14),
        (Proto::Icmpv6, Some(t)) => t < 128,
        _ => false,
    };
    if v == FinalVerdict::Reject && unanswerable {
        FinalVerdict::Drop
    } else {
        v
    }
}

const ICMP4_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];

/// The packet as the kernel will see it when a probe sends it, or `None` when real traffic here
/// cannot give it the connection-tracking state it claims.
///
/// Conntrack decides the state of an ICMP message by its type: echo, timestamp, information
/// and address-mask requests (ICMPv6: echo and node-information queries) start flows; ICMPv6
/// neighbour discovery and MLD are untracked (the ruleset treats them as new); an error message
/// with no flow to relate to, and every other type, is invalid. Established is reproduced for
/// UDP only (TCP would need a handshake the ruleset may refuse), in both directions: the reply
/// direction (the pbx speaks first) and the original one (the client's flow, entered in
/// conntrack's table with `conntrack -I` as seen both ways, since the ruleset need not accept
/// its first packet); related is not reproduced.
pub fn as_kernel_sees(p: &Packet) -> Option<Packet> {
    // A payload or a connection's mark takes a real connection (the ACME kernel test makes
    // them).
    if p.payload.is_some() || p.ct_mark != 0 || p.tcp_syn.is_some() {
        return None;
    }
    let icmp_state = match (p.proto, p.icmp_type) {
        (Proto::Icmp, Some(t)) if ICMP4_ERRORS.contains(&t) => None,
        (Proto::Icmp, Some(8 | 13 | 15 | 17)) => Some(CtState::New),
        (Proto::Icmp, Some(_)) => Some(CtState::Invalid),
        (Proto::Icmpv6, Some(1..=4)) => None,
        (Proto::Icmpv6, Some(128 | 139 | 130..=136 | 143)) => Some(CtState::New),
        (Proto::Icmpv6, Some(_)) => Some(CtState::Invalid),
        _ => Some(CtState::New),
    };
    let state = match p.ct {
        CtState::New => icmp_state?,
        CtState::Established if p.proto == Proto::Udp => CtState::Established,
        CtState::Invalid if icmp_state == Some(CtState::Invalid) => CtState::Invalid,
        _ => return None,
    };
    Some(Packet {
        ct: state,
        // An established probe either answers a datagram the pbx sent first (the reply
        // direction) or continues a flow the client opened (the original direction, entered
        // in conntrack's table by `probe`).
        ct_reply: state == CtState::Established && p.ct_reply,
        ..p.clone()
    })
}

fn sockaddr(ip: IpAddr, port: u16) -> SockAddr {
    SockAddr::from(SocketAddr::new(ip, port))
}

/// A source address to bind: link-local IPv6 needs the interface's scope.
fn src_addr(ip: IpAddr, port: u16, iface: &str) -> SockAddr {
    match ip {
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
            let name = std::ffi::CString::new(iface).unwrap();
            #[allow(unsafe_code)]
            // SAFETY: if_nametoindex(3) reads a NUL-terminated name.
            let scope = unsafe { libc::if_nametoindex(name.as_ptr()) };
            SockAddr::from(std::net::SocketAddrV6::new(a, port, 0, scope))
        }
        _ => sockaddr(ip, port),
    }
}

fn is_answer(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::EACCES
                | libc::ENETUNREACH
                | libc::EPERM
        )
    )
}

/// Send one probe from the current namespace; returns whether it was answered with an error
/// (ICMP unreachable or TCP reset) within the wait.
fn send(p: &Packet, dst: IpAddr, sport: u16, pbx_ns: &str, iface: &str) -> bool {
    let domain = if p.src.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    match p.proto {
        Proto::Udp => {
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&src_addr(p.src, sport, iface)).unwrap();
            if p.ct == CtState::Established && p.ct_reply {
                // The pbx speaks first, from the probed port: the probe is then a reply of a
                // flow conntrack has seen both ways.
                let to = SocketAddr::new(p.src, sport);
                let from = SocketAddr::new(dst, p.dport.unwrap());
                let path = format!("/run/netns/{pbx_ns}");
                std::thread::spawn(move || {
                    enter(&path);
                    let s =
                        Socket::new(Domain::for_address(from), Type::DGRAM, Some(Protocol::UDP))
                            .unwrap();
                    s.set_reuse_address(true).unwrap();
                    s.bind(&from.into()).unwrap();
                    s.send_to(b"hello", &to.into()).unwrap();
                })
                .join()
                .unwrap();
                let mut buf = [MaybeUninit::<u8>::uninit(); 64];
                s.set_read_timeout(Some(WAIT)).unwrap();
                let _ = s.recv(&mut buf);
            }
            s.connect(&sockaddr(dst, p.dport.unwrap()))
                .unwrap_or_else(|e| panic!("connect {p:?}: {e}"));
            s.send(b"pbxfw probe").unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut buf = [MaybeUninit::<u8>::uninit(); 64];
            match s.recv(&mut buf) {
                Ok(_) => false,
                Err(e) => is_answer(&e),
            }
        }
        Proto::Tcp => {
            let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).unwrap();
            s.bind(&src_addr(p.src, sport, iface)).unwrap();
            match s.connect_timeout(&sockaddr(dst, p.dport.unwrap()), WAIT) {
                Ok(()) => false,
                Err(e) => is_answer(&e),
            }
        }
        Proto::Icmp | Proto::Icmpv6 => {
            let v6 = p.proto == Proto::Icmpv6;
            let proto = if v6 {
                Protocol::ICMPV6
            } else {
                Protocol::ICMPV4
            };
            let s = Socket::new(domain, Type::RAW, Some(proto)).unwrap();
            s.bind(&src_addr(p.src, 0, iface))
                .unwrap_or_else(|e| panic!("bind {p:?}: {e}"));
            if v6 {
                // Neighbour discovery messages are only valid with hop limit 255.
                s.set_unicast_hops_v6(255).unwrap();
            }
            let mut msg = vec![p.icmp_type.unwrap(), 0, 0, 0, 0x12, 0x34, 0, 1];
            msg.extend_from_slice(&[0u8; 24]);
            if !v6 {
                let ck = checksum(&msg);
                msg[2..4].copy_from_slice(&ck.to_be_bytes());
            }
            s.send_to(&msg, &sockaddr(dst, 0)).unwrap();
            let deadline = Instant::now() + WAIT;
            let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                s.set_read_timeout(Some(left)).unwrap();
                let Ok(n) = s.recv(&mut buf) else {
                    return false;
                };
                // SAFETY-free view: recv initialised the first n bytes.
                let bytes: Vec<u8> = buf[..n].iter().map(unsafe_read).collect();
                let icmp_type = if v6 {
                    bytes.first().copied()
                } else {
                    let ihl = (bytes.first().copied().unwrap_or(0x45) & 0x0f) as usize * 4;
                    bytes.get(ihl).copied()
                };
                let unreachable = if v6 { 1 } else { 3 };
                if icmp_type == Some(unreachable) {
                    return true;
                }
            }
        }
    }
}

#[allow(unsafe_code)]
fn unsafe_read(b: &MaybeUninit<u8>) -> u8 {
    // SAFETY: only called on the prefix of the buffer that recv(2) wrote.
    unsafe { b.assume_init() }
}

fn enter(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: setns(2) on a valid namespace descriptor, for this thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0);
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
