//! The established fast path and the flow cut with real packets (docs/policy.md, "The packet
//! path", step 2, and "The flow cut"): established flows a client opened are accepted before
//! the blacklist and bans, and every way pbxfw blocks a source deletes that source's
//! connection-tracking entries, so a source blocked mid-flow loses its flow at the very next
//! packet. A UDP media stream and a TCP session, each echoed by the pbx, are blocked by `pbxfw
//! ban` (IPv4, and IPv6 by its /64), `pbxfw blacklist add`, an `apply` of a policy with a new
//! blacklist entry, and the kernel tiers (a SIP flood past the flood tier, with `pbxfw
//! daemon` running, which the kernel hands the banned source to; IPv4, and IPv6 by its /64);
//! after each cut the pbx also speaks first on
//! both flows (media it keeps sending, a TCP segment), which opens new connection-tracking
//! entries in its own name: the blocked source's answers on them must still be refused. A flow
//! of a source nobody blocked keeps running. For the nft and the iptables backends.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::{in_netns, skipped, Netns};
use pbxfw_testkit::probe::{SetStore, Topology, DST4, DST6};
use pbxfw_testkit::text;

const POLICY: &str = "[interfaces]
eth0 = \"internet\"

[services.ssh]
zones = [\"internet\"]

[blacklist]
entries = [\"192.0.2.200\"NEW]
";

const RTP: u16 = 10000;
const SSH: u16 = 22;
const WAIT: Duration = Duration::from_millis(400);

fn pbxfw(ns: &Netns, args: &[&str]) -> Output {
    let mut c = ns.command(env!("CARGO_BIN_EXE_pbxfw"));
    c.args(args).env("PBXFW_BIN", env!("CARGO_BIN_EXE_pbxfw"));
    c.output().unwrap()
}

fn ok(ns: &Netns, args: &[&str]) -> String {
    let out = pbxfw(ns, args);
    assert!(out.status.success(), "pbxfw {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many connection-tracking entries of the pbx's namespace `src` opened.
fn flows_of(ns: &Netns, src: &str) -> usize {
    let family = if src.contains(':') { "ipv6" } else { "ipv4" };
    let out = ns.exec(&["conntrack", "-L", "-f", family, "-s", src]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn dst(src: IpAddr) -> IpAddr {
    if src.is_ipv6() {
        DST6.parse().unwrap()
    } else {
        DST4.parse().unwrap()
    }
}

/// The pbx's ends of the flows, so that the test can make the pbx speak first.
struct PbxEnds {
    udp: Vec<UdpSocket>,
    tcp: Arc<Mutex<Vec<TcpStream>>>,
}

impl PbxEnds {
    /// The pbx sends on both flows of `src` unasked: a datagram from the RTP port to the
    /// client's port, one byte on its TCP session.
    fn speak_first(&self, src: IpAddr) {
        let udp = self
            .udp
            .iter()
            .find(|s| s.local_addr().unwrap().is_ipv6() == src.is_ipv6())
            .unwrap();
        udp.send_to(b"!", SocketAddr::new(src, 40000)).unwrap();
        let tcp = self.tcp.lock().unwrap();
        let mut s = tcp
            .iter()
            .find(|s| s.peer_addr().is_ok_and(|a| a.ip() == src))
            .unwrap();
        s.write_all(b"!").unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Echo servers in the pbx: UDP on the RTP port and TCP on the ssh port, both families, until
/// the returned flag is cleared.
fn echo_servers(pbx: &Netns) -> (Arc<AtomicBool>, PbxEnds) {
    let running = Arc::new(AtomicBool::new(true));
    let ends = PbxEnds {
        udp: Vec::new(),
        tcp: Arc::new(Mutex::new(Vec::new())),
    };
    let mut ends = ends;
    for ip in [DST4, DST6] {
        let ip: IpAddr = ip.parse().unwrap();
        let udp = in_netns(pbx, move || {
            UdpSocket::bind(SocketAddr::new(ip, RTP)).unwrap()
        });
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ends.udp.push(udp.try_clone().unwrap());
        let r = running.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while r.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
        let tcp = in_netns(pbx, move || {
            TcpListener::bind(SocketAddr::new(ip, SSH)).unwrap()
        });
        tcp.set_nonblocking(true).unwrap();
        let r = running.clone();
        let accepted = ends.tcp.clone();
        std::thread::spawn(move || {
            while r.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        accepted.lock().unwrap().push(s.try_clone().unwrap());
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 512];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }
    (running, ends)
}

/// A media stream and a session of one source, opened from its client namespace.
struct Flows {
    src: IpAddr,
    udp: UdpSocket,
    tcp: TcpStream,
}

impl Flows {
    fn open(t: &Topology, src: &str) -> Flows {
        let src: IpAddr = src.parse().unwrap();
        let to = dst(src);
        let (udp, tcp) = in_netns(t.client("eth0"), move || {
            let udp = UdpSocket::bind(SocketAddr::new(src, 40000)).unwrap();
            udp.connect(SocketAddr::new(to, RTP)).unwrap();
            let domain = socket2::Domain::for_address(SocketAddr::new(src, 0));
            let tcp = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
            tcp.bind(&SocketAddr::new(src, 0).into()).unwrap();
            tcp.connect_timeout(&SocketAddr::new(to, SSH).into(), WAIT)
                .unwrap_or_else(|e| panic!("{src}: connect: {e}"));
            (udp, TcpStream::from(tcp))
        });
        udp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let f = Flows { src, udp, tcp };
        // Both ways at least once: conntrack calls the flows established.
        assert_eq!(f.both(), (true, true), "{src}: the flows do not run");
        f
    }

    /// Whether the next media packet and the next session segment are echoed.
    fn both(&self) -> (bool, bool) {
        (self.media(), self.session())
    }

    fn media(&self) -> bool {
        let mut buf = [0u8; 64];
        // A reply still queued from before does not count.
        while self.udp.recv(&mut buf).is_ok() {}
        self.udp.send(b"rtp").unwrap();
        matches!(self.udp.recv(&mut buf), Ok(3))
    }

    fn session(&self) -> bool {
        let mut s = &self.tcp;
        if s.write_all(b"data").is_err() {
            return false;
        }
        // Only the echo counts (not a byte the pbx sent unasked).
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).is_ok() && &buf == b"data"
    }

    /// Right after the source was blocked: neither flow gets its next packet through, nor
    /// after the pbx spoke first on both.
    fn cut_off(&self, ends: &PbxEnds, what: &str) {
        assert_eq!(self.both(), (false, false), "{what}");
        ends.speak_first(self.src);
        assert_eq!(
            self.both(),
            (false, false),
            "{what}: after the pbx spoke first"
        );
    }
}

fn run(backend: &str, store: SetStore) {
    let mut t = Topology::new(&format!("fcut-{}", &backend[..3]), &["eth0".to_string()]);
    t.sets = store;
    let sources = [
        "203.0.113.7",
        "203.0.113.8",
        "203.0.113.9",
        "203.0.113.10",
        "203.0.113.11",
        "203.0.113.12",
        "2001:db8:5::99",
        "2001:db8:6::99",
    ];
    for s in sources {
        t.add_source("eth0", s.parse().unwrap());
    }
    let (running, ends) = echo_servers(&t.pbx);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    std::fs::write(&policy, POLICY.replace("NEW", "")).unwrap();
    let p = policy.to_str().unwrap();
    ok(&t.pbx, &["apply", p, "--backend", backend]);

    // The PBX's own connections: answered by a peer nobody blocked, never by a blacklisted one
    // (the answers of a connection the PBX opened meet the blacklist on every packet).
    t.add_source("eth0", "192.0.2.200".parse().unwrap());
    let listeners: Vec<TcpListener> = ["203.0.113.10", "192.0.2.200"]
        .iter()
        .map(|a| {
            let a: IpAddr = a.parse().unwrap();
            in_netns(t.client("eth0"), move || {
                TcpListener::bind(SocketAddr::new(a, 8080)).unwrap()
            })
        })
        .collect();
    let pbx_connects = |to: &str| {
        let to = SocketAddr::new(to.parse().unwrap(), 8080);
        in_netns(&t.pbx, move || {
            TcpStream::connect_timeout(&to, WAIT).is_ok()
        })
    };
    assert!(pbx_connects("203.0.113.10"), "the PBX's own connection");
    assert!(
        !pbx_connects("192.0.2.200"),
        "a connection to a blacklisted peer"
    );
    drop(listeners);

    let flows: Vec<Flows> = sources.iter().map(|s| Flows::open(&t, s)).collect();
    let by = |s: &str| flows.iter().find(|f| f.src.to_string() == s).unwrap();
    let control = by("203.0.113.10");

    // A ban by hand: the next packet of either flow is dropped.
    ok(
        &t.pbx,
        &["ban", "203.0.113.7", "--for", "1h", "--policy", p],
    );
    by("203.0.113.7").cut_off(&ends, "banned mid-flow");
    assert_eq!(control.both(), (true, true));
    // IPv6 bans are per /64: the ban of ::7 cuts the flows of ::99.
    ok(
        &t.pbx,
        &["ban", "2001:db8:5::7", "--for", "1h", "--policy", p],
    );
    by("2001:db8:5::99").cut_off(&ends, "its /64 banned");

    // `blacklist add`.
    ok(&t.pbx, &["blacklist", "add", "203.0.113.8", "--policy", p]);
    by("203.0.113.8").cut_off(&ends, "blacklisted mid-flow");
    assert_eq!(control.both(), (true, true));

    // An apply whose policy blacklists one more source.
    std::fs::write(&policy, POLICY.replace("NEW", ", \"203.0.113.9\"")).unwrap();
    ok(&t.pbx, &["apply", p, "--backend", backend]);
    by("203.0.113.9").cut_off(&ends, "blacklisted by apply");
    assert_eq!(control.both(), (true, true));

    // The kernel tiers' bans: the kernel hands each source it bans to the daemon, which cuts
    // its flows. The source floods SIP past the flood tier (50 packets in 10 s) and is banned
    // by the kernel; its media and session are gone by the time its next RTP packet is due
    // (20 ms at 50 packets a second). IPv6: the tiers ban the /64 of a flooding source, and
    // the flows of another address in it are cut.
    let log = dir.path().join("daemon.log");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let state = dir.path().join("state.json");
    let lock = dir.path().join("lock");
    let _daemon = t.pbx.spawn(
        &[
            env!("CARGO_BIN_EXE_pbxfw"),
            "daemon",
            "--policy",
            p,
            "--events",
            events.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--backend",
            backend,
            "--no-control",
        ],
        &[("PBXFW_LOCK_FILE", lock.to_str().unwrap())],
        &log,
    );
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("event=start")
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.add_source("eth0", "2001:db8:6::7".parse().unwrap());
    for (flooder, victim) in [
        ("203.0.113.11", "203.0.113.11"),
        ("2001:db8:6::7", "2001:db8:6::99"),
    ] {
        assert_eq!(
            by(victim).both(),
            (true, true),
            "{victim}: before the flood"
        );
        t.send_udp(
            "eth0",
            flooder.parse().unwrap(),
            5062,
            5060,
            70,
            Duration::ZERO,
        );
        let sent = Instant::now();
        // How long the cut took, seen from here (each look starts a process: an upper bound).
        while flows_of(&t.pbx, victim) > 0 {
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "{victim}: flows not cut by the daemon\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let took: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("event=tier_ban_cut"))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("took_us=")))
            .map(str::to_string)
            .collect();
        eprintln!(
            "{backend}: {victim}'s flows cut within {:?} of the flood's end, seen from here; \
             the daemon's cuts: {took:?}",
            sent.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
        by(victim).cut_off(&ends, &format!("{victim}: banned by the kernel tiers"));
    }
    assert_eq!(control.both(), (true, true));
    // A notification decides nothing by itself: another program's rule handing the daemon a
    // source the kernel tiers did not ban cuts none of its flows.
    let out = t.pbx.exec_stdin(
        &["nft", "-f", "/dev/stdin"],
        "table inet other {\n chain c {\n  type filter hook input priority -10;\n  \
         udp dport 9999 log group 20550 snaplen 40\n }\n}\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    // (Its flows' entries are looked at, not its packets: a cut flow of a source nobody
    // blocked starts again at its next packet.)
    let held = flows_of(&t.pbx, "203.0.113.10");
    assert!(held > 0);
    t.send_udp("eth0", control.src, 5062, 9999, 3, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        flows_of(&t.pbx, "203.0.113.10"),
        held,
        "a source nobody banned, notified"
    );
    t.pbx.run(&["nft", "delete", "table", "inet", "other"]);

    // A ban that reached the kernel without a cut (an older pbxfw, a cut the kernel refused)
    // is cut by the next load, which reads the dynamic sets as the kernel holds them.
    t.add_element("ban4", "203.0.113.12");
    assert_eq!(by("203.0.113.12").both(), (true, true), "no cut yet");
    ok(&t.pbx, &["apply", p, "--backend", backend]);
    by("203.0.113.12").cut_off(&ends, "banned before the load");

    // The source nobody blocked kept both flows through all of it.
    assert_eq!(control.both(), (true, true));
    running.store(false, Ordering::Relaxed);
}

#[test]
fn blocked_sources_lose_their_flows_at_once_nft() {
    if skipped() {
        return;
    }
    run("nft", SetStore::Nft);
}

#[test]
fn blocked_sources_lose_their_flows_at_once_iptables() {
    if skipped() {
        return;
    }
    run("iptables-legacy", SetStore::Ipset);
}
