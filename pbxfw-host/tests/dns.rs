//! The DNS transport against a real server (Debian's dnsmasq, run on 127.0.0.1 on a free port
//! for each test) and against hand-written fake servers for what dnsmasq will not do (spoofed
//! replies, SERVFAIL).
//!
//! The dnsmasq tests need root (dnsmasq is started with `--user=root` so that it can re-read its
//! hosts file in the test's private directory after SIGHUP) and `/usr/sbin/dnsmasq` (or
//! `$PBXFW_DNSMASQ`). Without either they fail, saying so: they never pass without running.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use pbxfw_core::{
    DnsAnswer as Answer, DnsLookupError as LookupError, DnsRecordType as RecordType,
    DnsTracker as Tracker, DnsTrackerConfig as TrackerConfig,
};
use pbxfw_host::dns::{refresh, Resolver};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

/// The dnsmasq binary, after checking the tests can run it; panics with the reason otherwise.
fn dnsmasq_binary() -> PathBuf {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("unknown");
    if euid != "0" {
        panic!(
            "the DNS tests run dnsmasq as root (--user=root, so that it can re-read its hosts \
             file after SIGHUP) but this process has uid {euid}: run them as root"
        );
    }
    let path = std::env::var_os("PBXFW_DNSMASQ")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/sbin/dnsmasq".into());
    assert!(
        path.is_file(),
        "{} not found: the DNS tests need dnsmasq (apt-get install dnsmasq-base, or set \
         $PBXFW_DNSMASQ)",
        path.display()
    );
    path
}

/// A port free on 127.0.0.1 for both UDP and TCP, at the time of asking.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A dnsmasq serving only what the test gives it; killed when dropped, even if the test fails.
struct Dnsmasq {
    child: Child,
    port: u16,
    hosts: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Start dnsmasq with `hosts` as its only hosts file and `extra` flags. Nothing from the
    /// system is read (`--conf-file=/dev/null --no-hosts --no-resolv`), nothing is forwarded.
    fn start(hosts: &str, extra: &[&str]) -> Dnsmasq {
        let binary = dnsmasq_binary();
        let dir = tempfile::tempdir().unwrap();
        let hosts_path = dir.path().join("hosts");
        std::fs::write(&hosts_path, hosts).unwrap();
        let log = dir.path().join("dnsmasq.log");
        for _ in 0..5 {
            let port = free_port();
            let out = File::create(&log).unwrap();
            let mut child = Command::new(&binary)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--pid-file=",
                    "--user=root",
                    "--log-queries",
                    "--log-facility=-",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", hosts_path.display()))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_ready(&mut child, addr) {
                Ok(()) => {
                    return Dnsmasq {
                        child,
                        port,
                        hosts: hosts_path,
                        log,
                        _dir: dir,
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    // Someone took the port between `free_port` and dnsmasq's bind: try another.
                    if !text.contains("Address already in use") {
                        panic!("dnsmasq did not start ({why}); its log:\n{text}");
                    }
                }
            }
        }
        panic!("dnsmasq found no free port in 5 tries");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn resolver(&self) -> Resolver {
        Resolver::new(vec![self.addr()], Duration::from_secs(2)).with_attempts(1)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Replace the hosts file and make dnsmasq re-read it: SIGHUP reloads hosts files (and
    /// clears the cache); `--host-record` and `--srv-host` records are fixed at start-up.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP dnsmasq failed");
    }
}

/// Wait until the dnsmasq at `addr` answers.
fn wait_ready(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let probe = Resolver::new(vec![addr], Duration::from_millis(100)).with_attempts(1);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited: {status}"));
        }
        // Any reply at all, even REFUSED, shows it is listening.
        if probe.lookup("probe.test", RecordType::A) != Err(LookupError::Timeout) {
            return Ok(());
        }
    }
    Err("no reply within 10 s".into())
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HOSTS: &str = "192.0.2.10 pbx.test\n2001:db8::10 pbx.test\n192.0.2.21 sip1.test\n";

/// Names in `.test` are dnsmasq's own (`--local=/test/`): unknown ones are NXDOMAIN, never
/// forwarded. Hosts-file, `--srv-host` and TTL-less `--host-record` answers carry `--local-ttl`.
fn local_server() -> Dnsmasq {
    Dnsmasq::start(
        HOSTS,
        &[
            "--local=/test/",
            "--local-ttl=7",
            "--host-record=rec.test,192.0.2.50,2001:db8::50,42",
            "--srv-host=_sip._udp.trunk.test,sip1.test,5060,10,0",
        ],
    )
}

#[test]
fn a_and_aaaa_from_the_hosts_file_with_local_ttl() {
    let d = local_server();
    let r = d.resolver();
    let a = r.lookup("pbx.test", RecordType::A).unwrap();
    assert_eq!(a.addresses, ips(&["192.0.2.10"]));
    assert_eq!(a.ttl, 7);
    let aaaa = r.lookup("PBX.test.", RecordType::Aaaa).unwrap();
    assert_eq!(aaaa.addresses, ips(&["2001:db8::10"]));
    assert_eq!(aaaa.ttl, 7);
    // A name with an A record and no AAAA: NOERROR without data, no SOA: the default 300 s.
    let none = r.lookup("sip1.test", RecordType::Aaaa).unwrap();
    assert_eq!(
        none,
        Answer {
            ttl: 300,
            ..Answer::default()
        }
    );
    // --host-record's own TTL.
    let rec = r.lookup("rec.test", RecordType::Aaaa).unwrap();
    assert_eq!((rec.addresses, rec.ttl), (ips(&["2001:db8::50"]), 42));
}

#[test]
fn srv_lookup_returns_the_target() {
    let d = local_server();
    let r = d.resolver();
    let srv = r.lookup("_sip._udp.trunk.test", RecordType::Srv).unwrap();
    assert_eq!(srv.srv_targets, [("sip1.test".to_string(), 5060)]);
    assert_eq!(srv.ttl, 7);
    assert!(srv.addresses.is_empty());
    // No TLS service published: an empty answer, not an error.
    let tls = r.lookup("_sips._tcp.trunk.test", RecordType::Srv).unwrap();
    assert!(tls.srv_targets.is_empty());
}

#[test]
fn unknown_names() {
    let d = local_server();
    let r = d.resolver();
    // NXDOMAIN (dnsmasq sends no SOA for --local names): an empty answer, kept 300 s.
    let nx = r.lookup("nope.test", RecordType::A).unwrap();
    assert_eq!(
        nx,
        Answer {
            ttl: 300,
            ..Answer::default()
        }
    );
    // Outside its domains, with no upstream (--no-resolv), dnsmasq refuses.
    assert_eq!(
        r.lookup("pbx.example", RecordType::A),
        Err(LookupError::Server(5))
    );
    assert!(d.log().contains("query[A] nope.test"), "{}", d.log());
}

#[test]
fn nxdomain_from_an_authoritative_zone_carries_its_soa() {
    // In authoritative mode every answer's TTL is --auth-ttl, and the SOA's MINIMUM too.
    let d = Dnsmasq::start(
        HOSTS,
        &[
            "--auth-server=ns.test,127.0.0.1",
            "--auth-zone=test",
            "--auth-ttl=13",
            "--auth-soa=1,hostmaster.test,1200,180,1209600",
        ],
    );
    let r = d.resolver();
    assert_eq!(
        r.lookup("nope.test", RecordType::A).unwrap(),
        Answer {
            ttl: 13,
            ..Answer::default()
        }
    );
    let a = r.lookup("pbx.test", RecordType::A).unwrap();
    assert_eq!((a.addresses, a.ttl), (ips(&["192.0.2.10"]), 13));
}

#[test]
fn a_changed_hosts_file_changes_the_answer_after_sighup() {
    let d = local_server();
    let r = d.resolver();
    assert_eq!(
        r.lookup("pbx.test", RecordType::A).unwrap().addresses,
        ips(&["192.0.2.10"])
    );
    d.set_hosts("192.0.2.99 pbx.test\n192.0.2.21 sip1.test\n");
    // The reload is asynchronous: ask until it shows.
    let until = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < until {
        seen = r.lookup("pbx.test", RecordType::A).unwrap().addresses;
        if seen == ips(&["192.0.2.99"]) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen, ips(&["192.0.2.99"]), "log:\n{}", d.log());
    // Its AAAA line is gone: the name has no AAAA any more.
    assert!(r
        .lookup("pbx.test", RecordType::Aaaa)
        .unwrap()
        .addresses
        .is_empty());
}

#[test]
fn a_truncated_reply_is_asked_again_over_tcp() {
    // 40 A records do not fit in 512 bytes: dnsmasq sets TC over UDP and sends all over TCP.
    let hosts: String = (1..=40)
        .map(|i| format!("198.51.100.{i} big.test\n"))
        .collect();
    let d = Dnsmasq::start(&hosts, &["--local=/test/"]);
    let a = d.resolver().lookup("big.test", RecordType::A).unwrap();
    assert_eq!(a.addresses.len(), 40);
}

#[test]
fn tracker_and_resolver_together() {
    let d = local_server();
    let mut t = Tracker::new(TrackerConfig::default());
    t.set_names([
        ("trunk.test".to_string(), true),
        ("pbx.test".to_string(), false),
    ]);
    let now = 1_000;
    // Round one: the names and the SRV records; round two: the SRV target that was learnt.
    let changed = refresh(&d.resolver(), &mut t, now);
    assert_eq!(changed, ["pbx.test"]);
    let changed = refresh(&d.resolver(), &mut t, now);
    assert_eq!(changed, ["trunk.test"]);
    assert_eq!(
        t.addresses("trunk.test"),
        BTreeSet::from([ip("192.0.2.21")])
    );
    assert_eq!(
        t.addresses("pbx.test"),
        BTreeSet::from([ip("192.0.2.10"), ip("2001:db8::10")])
    );
    assert!(t.status(now).iter().all(|s| s.last_error.is_none()));
    // TTL 7 is below the floor: refreshed after 30 s.
    assert_eq!(t.next_due(), Some(now + 30));

    // DNS goes away: the lookups fail, the addresses stay.
    let resolver = d.resolver();
    drop(d);
    let resolver = Resolver::new(resolver.servers().to_vec(), Duration::from_millis(100));
    assert!(refresh(&resolver, &mut t, now + 30).is_empty());
    assert_eq!(
        t.addresses("trunk.test"),
        BTreeSet::from([ip("192.0.2.21")])
    );
    let status = t.status(now + 30);
    assert!(status.iter().all(|s| s.last_error.is_some()));
    assert_eq!(status[0].age, Some(30));
}

#[test]
fn nothing_listening_is_a_timeout() {
    // UDP to a closed port: the ICMP error is not reported on an unconnected socket, so this
    // is a plain timeout, two rounds of 300 ms.
    let port = free_port();
    let r = Resolver::new(
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
        Duration::from_millis(300),
    );
    let start = Instant::now();
    assert_eq!(
        r.lookup("pbx.test", RecordType::A),
        Err(LookupError::Timeout)
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

/// A reply to `query` with `rcode` and one A record per address (TTL 60).
fn reply(query: &[u8], rcode: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
    let mut m = query.to_vec();
    m[2] |= 0x80;
    m[3] = (m[3] & 0xf0) | rcode;
    m[7] = addrs.len() as u8;
    for a in addrs {
        m.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend(a);
    }
    m
}

/// A fake server on 127.0.0.1 that answers one query with `respond(server, client, query)`.
fn fake_server(
    respond: impl FnOnce(&UdpSocket, SocketAddr, &[u8]) + Send + 'static,
) -> (SocketAddr, thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let mut buf = [0; 512];
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if let Ok((n, client)) = sock.recv_from(&mut buf) {
            respond(&sock, client, &buf[..n]);
        }
    });
    (addr, handle)
}

#[test]
fn spoofed_replies_are_ignored() {
    let (server, h) = fake_server(|sock, client, query| {
        // Wrong id, from the right address.
        let mut wrong_id = reply(query, 0, &[[203, 0, 113, 66]]);
        wrong_id[0] ^= 0xff;
        sock.send_to(&wrong_id, client).unwrap();
        // Right id, from the wrong port.
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        other
            .send_to(&reply(query, 0, &[[203, 0, 113, 67]]), client)
            .unwrap();
        // Right id, other question.
        let mut other_q = reply(query, 0, &[[203, 0, 113, 68]]);
        other_q[13] = b'x';
        sock.send_to(&other_q, client).unwrap();
        // Garbage.
        sock.send_to(&[0xde, 0xad], client).unwrap();
        thread::sleep(Duration::from_millis(50));
        sock.send_to(&reply(query, 0, &[[192, 0, 2, 1]]), client)
            .unwrap();
    });
    let r = Resolver::new(vec![server], Duration::from_secs(2)).with_attempts(1);
    let a = r.lookup("pbx.test", RecordType::A).unwrap();
    assert_eq!(a.addresses, ips(&["192.0.2.1"]));
    h.join().unwrap();
}

#[test]
fn only_garbage_is_malformed_not_a_timeout() {
    let (server, h) = fake_server(|sock, client, _| {
        sock.send_to(&[0xde, 0xad, 0x80], client).unwrap();
    });
    let r = Resolver::new(vec![server], Duration::from_millis(300)).with_attempts(1);
    assert!(matches!(
        r.lookup("pbx.test", RecordType::A),
        Err(LookupError::Malformed(_))
    ));
    h.join().unwrap();
}

#[test]
fn servfail_moves_on_to_the_next_server() {
    let (failing, h1) = fake_server(|sock, client, query| {
        sock.send_to(&reply(query, 2, &[]), client).unwrap();
    });
    let (working, h2) = fake_server(|sock, client, query| {
        sock.send_to(&reply(query, 0, &[[192, 0, 2, 7]]), client)
            .unwrap();
    });
    let r = Resolver::new(vec![failing, working], Duration::from_secs(2)).with_attempts(1);
    let a = r.lookup("pbx.test", RecordType::A).unwrap();
    assert_eq!((a.addresses, a.ttl), (ips(&["192.0.2.7"]), 60));
    h1.join().unwrap();
    h2.join().unwrap();
    // Only a failing server: its error, not a timeout.
    let (failing, h) = fake_server(|sock, client, query| {
        sock.send_to(&reply(query, 2, &[]), client).unwrap();
    });
    let r = Resolver::new(vec![failing], Duration::from_secs(2)).with_attempts(1);
    assert_eq!(
        r.lookup("pbx.test", RecordType::A),
        Err(LookupError::Server(2))
    );
    h.join().unwrap();
}

#[test]
fn resolv_conf_from_the_environment() {
    // The only test that sets the variable: no other test reads it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(&path, "nameserver 192.0.2.53\noptions attempts:1\n").unwrap();
    std::env::set_var("PBXFW_RESOLV_CONF", &path);
    let r = Resolver::from_system();
    std::env::remove_var("PBXFW_RESOLV_CONF");
    assert_eq!(r.servers(), ["192.0.2.53:53".parse().unwrap()]);
    assert_eq!(r.attempts(), 1);
}
