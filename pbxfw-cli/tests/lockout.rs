//! Anti-lockout with a live session (docs/safety.md): an administrator holds an open TCP
//! connection to the PBX's SSH on tcp/2222 from a client namespace, and every command that
//! changes the kernel is run as from that session (`SSH_CONNECTION`). Each one that would cut
//! it off is refused, changes nothing, and the session keeps working; with `--force` it goes
//! through, and the session dies, as the check predicted.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use pbxfw_testkit::netns::{in_netns, skipped, Netns};
use pbxfw_testkit::probe::{Topology, DST4};

const ADMIN: &str = "203.0.113.10";

fn pbxfw(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_pbxfw")])
        .args(args)
        .envs(ns.host_env())
        .env("SSH_CONNECTION", format!("{ADMIN} 40222 {DST4} 2222"))
        .env_remove("PBXFW_POLICY")
        .output()
        .unwrap()
}

fn ok(ns: &Netns, args: &[&str]) -> String {
    let out = pbxfw(ns, args);
    assert!(
        out.status.success(),
        "pbxfw {args:?}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An SSH-like session: a TCP connection from the admin to the pbx's tcp/2222, echoed.
struct Session(TcpStream);

impl Session {
    fn open(t: &Topology) -> Session {
        let listener = in_netns(&t.pbx, || TcpListener::bind((DST4, 2222)).unwrap());
        std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
        let stream = in_netns(t.client("eth0"), || {
            TcpStream::connect((DST4, 2222)).unwrap()
        });
        stream
            .set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        Session(stream)
    }

    /// Whether a line still goes there and back.
    fn alive(&mut self) -> bool {
        if self.0.write_all(b"ping\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 5];
        self.0.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
    }
}

#[test]
fn no_mutating_command_cuts_off_a_live_session_to_ssh_on_2222() {
    if skipped() {
        return;
    }
    let t = Topology::new("lockout", &["eth0".to_string()]);
    let admin: IpAddr = ADMIN.parse().unwrap();
    t.add_source("eth0", admin);
    t.prefer_source("eth0", admin);
    let ns = &t.pbx;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    // SSH on 2222 for the trusted zone only; the administrator's network is trusted.
    let text = "[interfaces]\neth0 = \"internet\"\n\
        [services.ssh]\nports = [\"tcp/2222\"]\nzones = [\"local\"]\n\
        [[networks]]\nsource = \"203.0.113.0/24\"\nzone = \"trusted\"\n";
    std::fs::write(&policy, text).unwrap();
    let p = policy.to_str().unwrap();
    ok(ns, &["apply", p]);
    let mut s = Session::open(&t);
    assert!(s.alive());
    let fingerprint = || {
        let v: serde_json::Value =
            serde_json::from_str(&ok(ns, &["status", "--format", "json"])).unwrap();
        v["fingerprint"].clone()
    };
    let before = fingerprint();

    for args in [
        vec!["blacklist", "add", ADMIN, "--policy", p],
        vec!["blacklist", "add", "203.0.113.0/24", "--policy", p],
        vec!["untrust", "203.0.113.0/24", "--policy", p],
        vec!["ban", ADMIN, "--for", "1h", "--policy", p],
    ] {
        let out = pbxfw(ns, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {err}");
        // A ban names what protects the address (the trusted network, the session that
        // applied the policy) before it gets to the session check.
        assert!(
            err.contains("tcp/2222") || err.contains("is never banned"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&policy).unwrap(), text, "{args:?}");
        assert_eq!(fingerprint(), before, "{args:?}");
        assert!(s.alive(), "{args:?} cut the session off");
    }
    // An administrator named on the command line is checked by a ban too.
    let out = pbxfw(
        ns,
        &[
            "ban",
            "198.51.100.20",
            "--for",
            "1h",
            "--policy",
            p,
            "--admin",
            "198.51.100.20",
        ],
    );
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin 198.51.100.20 to tcp/2222"), "{err}");
    // A ban elsewhere, and a blacklist entry elsewhere, go through; the session lives.
    ok(ns, &["ban", "198.51.100.66", "--for", "1h", "--policy", p]);
    ok(ns, &["blacklist", "add", "198.51.100.0/24", "--policy", p]);
    assert!(s.alive());

    // Forced, the check is overridden: the blacklist is checked before established flows,
    // so the session dies, as the refusal said it would.
    ok(ns, &["blacklist", "add", ADMIN, "--policy", p, "--force"]);
    assert!(
        !s.alive(),
        "the forced blacklist entry left the session open"
    );
}
