//! A fleet of two PBXes sharing bans through a real CrowdSec Local API (Debian's `crowdsec`,
//! LAPI only), each PBX a `pbxfw daemon` in its own network namespace (docs/fleet.md).
//!
//! ```text
//!   pbx-a (10.97.1.2) ── eth0 ──┐            ┌── eth0 ── pbx-b (10.97.2.2)
//!                               └── net ─────┘
//!            LAPI on 0.0.0.0:18080; the attacker's addresses on its loopback
//! ```
//!
//! A flood on A is banned by A's kernel tier, pushed by A's daemon, pulled by B's and
//! enforced in B's kernel; `cscli decisions add/delete` reach both kernels; a LAPI restart and a
//! network cut are survived; a decision against B's trunk is reported and not enforced.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pbxfw_testkit::lapi::{self, Lapi};
use pbxfw_testkit::netns::{skipped, Killed, Netns};

const POLL: u64 = 2;
const KEY_A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const KEY_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const KEY_WATCH: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
const ATTACKER: &str = "198.18.5.5";

/// Whether the LAPI holds a decision on `ip` (its live mode, as a third bouncer: a few
/// milliseconds, where `cscli` takes a tenth of a second).
fn at_lapi(net: &Netns, ip: &str) -> bool {
    let out = net.exec(&[
        "curl",
        "-s",
        "-H",
        &format!("X-Api-Key: {KEY_WATCH}"),
        &format!("http://10.97.1.1:{}/v1/decisions?ip={ip}", lapi::PORT),
    ]);
    String::from_utf8_lossy(&out.stdout).contains(&format!("\"value\":\"{ip}\""))
}

struct Pbx {
    ns: Netns,
    dir: PathBuf,
    daemon: Option<Killed>,
}

fn secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Pbx {
    fn new(tag: &str, net: &Netns, i: u8, key: &str, machine: &str) -> Pbx {
        Pbx::with(tag, net, i, key, machine, "http", "", true)
    }

    /// A PBX whose LAPI URL has `scheme`, with `extra` lines in its `[fleet]`.
    #[allow(clippy::too_many_arguments)]
    fn with(
        tag: &str,
        net: &Netns,
        i: u8,
        key: &str,
        machine: &str,
        scheme: &str,
        extra: &str,
        push: bool,
    ) -> Pbx {
        let ns = Netns::new(tag);
        let (here, there) = (format!("10.97.{i}.2"), format!("10.97.{i}.1"));
        let peer = format!("v{tag}");
        ns.run(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", &net.name,
        ]);
        ns.run(&["ip", "addr", "add", &format!("{here}/24"), "dev", "eth0"]);
        ns.run(&["ip", "link", "set", "eth0", "up"]);
        ns.run(&["ip", "route", "add", "default", "via", &there]);
        net.run(&["ip", "addr", "add", &format!("{there}/24"), "dev", &peer]);
        net.run(&["ip", "link", "set", &peer, "up"]);
        let dir = ns.host_dir.join("pbx");
        std::fs::create_dir_all(&dir).unwrap();
        secret(&dir.join("bouncer.key"), key);
        secret(&dir.join("password"), &format!("pw-{machine}"));
        std::fs::write(
            dir.join("pbxfw.toml"),
            format!(
                "[interfaces]\neth0 = \"internet\"\n\n\
                 [[pbx.trunks]]\nname = \"provider\"\nprotocol = \"pjsip\"\nhost = \"203.0.113.10\"\n\n\
                 [fleet]\nurl = \"{scheme}://{there}:{port}\"\napi_key_file = \"{d}/bouncer.key\"\n{extra}\
                 push = {push}\nmachine_id = \"{machine}\"\npassword_file = \"{d}/password\"\n\
                 poll_interval = \"{POLL}s\"\nresync_interval = \"60s\"\ntimeout = \"3s\"\n",
                port = lapi::PORT,
                d = dir.display()
            ),
        )
        .unwrap();
        let pbx = Pbx {
            ns,
            dir,
            daemon: None,
        };
        pbx.pbxfw(&["apply", "--counters", &pbx.policy()]);
        pbx
    }

    fn policy(&self) -> String {
        self.dir.join("pbxfw.toml").display().to_string()
    }

    fn pbxfw(&self, args: &[&str]) -> String {
        let mut argv = vec![env!("CARGO_BIN_EXE_pbxfw")];
        argv.extend_from_slice(args);
        self.ns.run(&argv)
    }

    fn start(&mut self) {
        self.spawn();
        self.wait(
            "the daemon's first full pull",
            Duration::from_secs(20),
            || self.log().contains("event=fleet-pull kind=full"),
        );
    }

    /// Start the daemon (following an empty events file) without waiting for anything.
    fn spawn(&mut self) {
        let events = self.dir.join("events.jsonl");
        std::fs::write(&events, "").unwrap();
        let policy = self.policy();
        let argv = [
            env!("CARGO_BIN_EXE_pbxfw"),
            "daemon",
            &policy,
            "--tick",
            "1",
            "--events",
            events.to_str().unwrap(),
        ];
        self.daemon = Some(self.ns.spawn(&argv, &[], &self.dir.join("daemon.log")));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn fleet_set(&self) -> String {
        let mut s = String::new();
        for set in ["fleet4", "fleet6"] {
            let out = self.ns.exec(&["nft", "list", "set", "inet", "pbxfw", set]);
            s += &String::from_utf8_lossy(&out.stdout);
        }
        s
    }

    fn has(&self, element: &str) -> bool {
        // Elements are printed between `{ ` and `, ` or ` timeout`.
        let set = self.fleet_set();
        set.contains(&format!(" {element} timeout")) || set.contains(&format!("{{ {element} "))
    }

    fn wait(&self, what: &str, limit: Duration, f: impl Fn() -> bool) -> Duration {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?} in {}\n{}",
                self.ns.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }
}

/// Whether a TCP connection from `from` to SIP over TCP on `to` is answered (a listener runs
/// there): a real packet from the source, through the PBX's ruleset.
fn connects(net: &Netns, from: &str, to: &str) -> bool {
    let script = format!(
        "import socket,sys\ns=socket.socket()\ns.settimeout(1)\ns.bind(('{from}',0))\n\
         try:\n s.connect(('{to}',5060))\nexcept OSError:\n sys.exit(1)\n"
    );
    net.exec(&["python3", "-c", &script]).status.success()
}

#[test]
fn a_fleet_of_two_shares_bans_through_a_real_lapi() {
    if skipped() {
        return;
    }
    assert!(
        lapi::installed(),
        "Debian's crowdsec is not installed (./scripts/test installs it)"
    );
    let net = Netns::new("fleet-net");
    net.run(&["ip", "addr", "add", &format!("{ATTACKER}/32"), "dev", "lo"]);
    net.run(&["ip", "addr", "add", "198.18.6.6/32", "dev", "lo"]);
    net.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let mut l = Lapi::new(
        &net.host_dir.join("lapi"),
        &format!("0.0.0.0:{}", lapi::PORT),
        &net,
    );
    l.add_machine("pbx-a", "pw-pbx-a");
    l.add_machine("pbx-b", "pw-pbx-b");
    l.add_bouncer("pbxfw-a", KEY_A);
    l.add_bouncer("pbxfw-b", KEY_B);
    l.add_bouncer("watcher", KEY_WATCH);
    l.start();
    let mut a = Pbx::new("fleet-a", &net, 1, KEY_A, "pbx-a");
    let mut b = Pbx::new("fleet-b", &net, 2, KEY_B, "pbx-b");
    a.start();
    b.start();
    // A SIP-over-TCP listener on B, for the packets the test sends it.
    let _listener = b.ns.spawn(
        &[
            "python3",
            "-c",
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('0.0.0.0',5060))\ns.listen(64)\nwhile True:\n c,_=s.accept()\n c.close()\n",
        ],
        &[],
        &b.dir.join("listener.log"),
    );
    // (A fresh veth may take a moment to carry.)
    b.wait(
        "B answers the attacker's address before any ban",
        Duration::from_secs(5),
        || connects(&net, ATTACKER, "10.97.2.2"),
    );

    // 1. A flood on A: A's kernel tier bans it, A's daemon pushes it, B enforces it.
    let flood_start = Instant::now();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{ATTACKER}',0))\n\
         for i in range(300): s.sendto(b'OPTIONS sip:x SIP/2.0\\r\\n\\r\\n',('10.97.1.2',5060))\n"
    );
    net.run(&["python3", "-c", &script]);
    a.wait(
        "A's kernel tier bans the flood",
        Duration::from_secs(5),
        || {
            let out =
                a.ns.exec(&["nft", "list", "set", "inet", "pbxfw", "tier_ban4"]);
            String::from_utf8_lossy(&out.stdout).contains(ATTACKER)
        },
    );
    let pushing = Instant::now();
    while !at_lapi(&net, ATTACKER) {
        assert!(
            pushing.elapsed() < Duration::from_secs(10),
            "A did not push its ban to the LAPI\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pushed = pushing.elapsed();
    let reached = b.wait(
        "the ban reaches B's kernel",
        Duration::from_secs(POLL + 1),
        || b.has(ATTACKER),
    );
    eprintln!(
        "flood at A -> B's kernel: {:?} in all; A's push {:?}; LAPI -> B's kernel {:?} (poll {POLL} s)",
        flood_start.elapsed(),
        pushed,
        reached
    );
    assert!(
        !connects(&net, ATTACKER, "10.97.2.2"),
        "B drops a real packet from the banned source"
    );
    assert!(
        connects(&net, "198.18.6.6", "10.97.2.2"),
        "B still answers other sources"
    );
    let bans = b.pbxfw(&["bans", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&bans).unwrap();
    let fleet_ban = v["bans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["prefix"] == ATTACKER && x["origin"] == "fleet")
        .unwrap_or_else(|| panic!("B's bans list the fleet ban: {bans}"));
    // The state file is written at most every 5 s: its scenario may lag the kernel.
    b.wait("B's bans name the scenario", Duration::from_secs(8), || {
        b.pbxfw(&["bans"]).contains("pbxfw/kernel_tier")
    });
    assert_eq!(fleet_ban["set"], "fleet4");

    // 2. Ranges reach the kernel as ranges, and deletions remove them.
    l.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.19.0.0/24",
        "--duration",
        "1h",
    ]);
    l.cscli(&[
        "decisions",
        "add",
        "--ip",
        "2001:db8:5::7",
        "--duration",
        "1h",
    ]);
    for p in [&a, &b] {
        p.wait("a range decision", Duration::from_secs(POLL + 1), || {
            p.has("198.19.0.0/24") && p.has("2001:db8:5::7")
        });
    }
    l.cscli(&["decisions", "delete", "--range", "198.19.0.0/24"]);
    b.wait(
        "a deleted range leaves",
        Duration::from_secs(POLL + 1),
        || !b.has("198.19.0.0/24"),
    );
    assert!(
        b.has("2001:db8:5::7") && b.has(ATTACKER),
        "other decisions stay"
    );

    // 3. A decision against B's trunk (and against B itself) is reported, never enforced.
    l.cscli(&[
        "decisions",
        "add",
        "--ip",
        "203.0.113.10",
        "--duration",
        "1h",
    ]);
    l.cscli(&["decisions", "add", "--ip", "10.97.2.2", "--duration", "1h"]);
    b.wait(
        "the trunk's decision is refused",
        Duration::from_secs(POLL + 2),
        || {
            let log = b.log();
            log.contains("event=fleet-refused prefix=203.0.113.10")
                && log.contains("event=fleet-refused prefix=10.97.2.2")
        },
    );
    assert!(!b.has("203.0.113.10") && !b.has("10.97.2.2"));
    b.wait("bans list the refusal", Duration::from_secs(8), || {
        let out = b.pbxfw(&["bans"]);
        out.contains("fleet decisions not enforced here") && out.contains("trunk provider")
    });

    // 4. The LAPI restarts: pulls resume, and A logs in again (the restart voids its token)
    // to push a ban of its state machine.
    l.stop();
    std::thread::sleep(Duration::from_secs(POLL + 1));
    l.start();
    l.cscli(&["decisions", "add", "--ip", "198.18.7.7", "--duration", "1h"]);
    b.wait(
        "a decision after a LAPI restart",
        Duration::from_secs(30),
        || b.has("198.18.7.7"),
    );
    std::fs::write(
        a.dir.join("events.jsonl"),
        "{\"event\":\"scanner_seen\",\"source\":\"198.18.8.8\",\"user_agent\":\"friendly-scanner\"}\n",
    )
    .unwrap();
    b.wait(
        "A's state-machine ban after the restart",
        Duration::from_secs(30),
        || b.has("198.18.8.8"),
    );
    assert!(
        b.log().contains("event=fleet-pull kind=full new="),
        "B resynced"
    );

    // 5. A network cut between B and the LAPI: decisions made meanwhile arrive afterwards.
    net.run(&["ip", "link", "set", "vfleet-b", "down"]);
    std::thread::sleep(Duration::from_secs(POLL * 2));
    l.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.19.9.0/24",
        "--duration",
        "1h",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!b.has("198.19.9.0/24"));
    net.run(&["ip", "link", "set", "vfleet-b", "up"]);
    b.wait(
        "a decision made during a network cut",
        Duration::from_secs(40),
        || b.has("198.19.9.0/24"),
    );
    assert!(b.has(ATTACKER), "the earlier bans survived the cut");
    assert!(b.log().contains("the LAPI answers again"));
    drop((a.daemon.take(), b.daemon.take()));
}

/// A LAPI behind TLS with a private CA: a PBX given the CA (`fleet.ca_file`) pulls from it; a
/// PBX that checks against the public roots refuses the certificate and enforces nothing.
#[test]
fn a_tls_lapi_is_verified() {
    if skipped() {
        return;
    }
    assert!(lapi::installed(), "Debian's crowdsec is not installed");
    let net = Netns::new("fleet-tls");
    let pki = net.host_dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let p = |f: &str| pki.join(f).display().to_string();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=fleet test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("lapi.key"),
        "-out",
        &p("lapi.csr"),
        "-subj",
        "/CN=lapi",
    ]);
    std::fs::write(
        pki.join("san.ext"),
        "subjectAltName=IP:10.97.3.1,IP:10.97.4.1,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("lapi.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("lapi.pem"),
        "-days",
        "2",
        "-extfile",
        &p("san.ext"),
    ]);
    let mut l = Lapi::new(
        &net.host_dir.join("lapi"),
        &format!("0.0.0.0:{}", lapi::PORT),
        &net,
    );
    l.add_bouncer("trusting", KEY_A);
    l.add_bouncer("public-roots", KEY_B);
    l.enable_tls(&pki.join("lapi.pem"), &pki.join("lapi.key"));
    l.start();
    l.cscli(&["decisions", "add", "--ip", "198.18.9.9", "--duration", "1h"]);
    let extra = format!("ca_file = \"{}\"\n", p("ca.pem"));
    let mut c = Pbx::with("fleet-c", &net, 3, KEY_A, "pbx-c", "https", &extra, false);
    let mut d = Pbx::with("fleet-d", &net, 4, KEY_B, "pbx-d", "https", "", false);
    c.start();
    c.wait(
        "the PBX trusting the fleet's CA pulls over TLS",
        Duration::from_secs(5),
        || c.has("198.18.9.9"),
    );
    // (`start` waits for a full pull, which never comes here.)
    d.spawn();
    d.wait(
        "the certificate is refused",
        Duration::from_secs(15),
        || d.log().contains("fleet pull failed"),
    );
    assert!(
        d.log().to_lowercase().contains("certificate"),
        "{}",
        d.log()
    );
    assert!(!d.has("198.18.9.9"));
    drop((c.daemon.take(), d.daemon.take()));
}
