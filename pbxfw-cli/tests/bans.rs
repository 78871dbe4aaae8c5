//! Ban management with real packets (docs/responsive.md, "Managing bans"): `pbxfw ban`,
//! `bans`, `unban`, `trust` and `explain --live` in a pbx namespace with a client behind
//! `eth0`, on nft and on iptables. A ban drops the client's next SIP packet; an unban lets the
//! next one through and stays lifted across a daemon restart and an apply; a ban by hand comes
//! back when the kernel's sets were created anew; what the policy protects is never banned.

use std::net::IpAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::{skipped, Killed, Netns};
use pbxfw_testkit::probe::{SetStore, Topology};

const POLICY: &str = "[interfaces]\neth0 = \"internet\"\n\
[[pbx.trunks]]\nname = \"provider\"\nhost = \"203.0.113.200\"\nprotocol = \"pjsip\"\n\
[services.ssh]\nzones = [\"internet\"]\n[settings]\nadmins = [\"203.0.113.250\"]\n\
[responsive]\nignore = [\"198.51.100.0/28\"]\n";

fn pbxfw(ns: &Netns, args: &[&str]) -> Output {
    ns.command(env!("CARGO_BIN_EXE_pbxfw"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(ns: &Netns, args: &[&str]) -> String {
    let out = pbxfw(ns, args);
    assert!(
        out.status.success(),
        "pbxfw {args:?}: exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether one SIP packet from `src` gets through pbxfw to udp/5060.
fn passes(t: &Topology, src: &str) -> bool {
    let before = t.watched();
    t.send_udp("eth0", src.parse().unwrap(), 5062, 5060, 1, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(100));
    t.watched() > before
}

fn bans_json(ns: &Netns) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(ns, &["bans", "--format", "json"])).unwrap();
    v["bans"].as_array().unwrap().clone()
}

/// The daemon following `events`, once it reads them.
fn daemon(ns: &Netns, policy: &str, events: &Path, log: &Path) -> Killed {
    let _ = std::fs::remove_file(log);
    let d = ns.spawn(
        &[
            env!("CARGO_BIN_EXE_pbxfw"),
            "daemon",
            policy,
            "--events",
            events.to_str().unwrap(),
            "--tick",
            "1",
        ],
        &[],
        log,
    );
    eventually("the daemon follows the events", log, || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("event=start")
    });
    d
}

fn eventually(what: &str, log: &Path, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scan(events: &Path, src: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(events)
        .unwrap();
    for _ in 0..3 {
        writeln!(
            f,
            "{{\"event\":\"auth_failed\",\"source\":\"{src}\",\"reason\":\"unknown_account\"}}"
        )
        .unwrap();
    }
}

fn topology(tag: &str, store: SetStore) -> Topology {
    let mut t = Topology::new(tag, &["eth0".to_string()]);
    t.sets = store;
    for src in [
        "203.0.113.66",
        "203.0.113.77",
        "203.0.113.200",
        "198.51.100.5",
        "2001:db8:bad::66",
        "2001:db8:bad::77",
    ] {
        t.add_source("eth0", src.parse::<IpAddr>().unwrap());
    }
    t.watch("udp dport 5060");
    t
}

#[test]
fn bans_are_listed_lifted_for_good_and_made_by_hand() {
    if skipped() {
        return;
    }
    let t = topology("bans", SetStore::Nft);
    let ns = &t.pbx;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let p = policy.to_str().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let log = dir.path().join("daemon.log");
    ok(ns, &["apply", p]);
    assert!(passes(&t, "203.0.113.66"));

    // A ban by hand drops the next packet, and is listed with its reason.
    let out = ok(
        ns,
        &[
            "ban",
            "203.0.113.66",
            "--for",
            "2h",
            "--reason",
            "scanner seen on the web server",
            "--policy",
            p,
        ],
    );
    assert!(out.contains("banned 203.0.113.66 until"), "{out}");
    assert!(!passes(&t, "203.0.113.66"));
    let bans = bans_json(ns);
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["origin"], "manual");
    assert_eq!(bans[0]["reason"], "scanner seen on the web server");
    let left = bans[0]["expires_in"].as_u64().unwrap();
    assert!((7000..=7200).contains(&left), "{left}");
    let text = ok(ns, &["bans"]);
    assert!(
        text.contains("by hand") && text.contains("in 1 h 59 min"),
        "{text}"
    );
    let live = ok(
        ns,
        &[
            "explain",
            "--live",
            "--in",
            "eth0",
            "--src",
            "203.0.113.66",
            "--proto",
            "udp",
            "--dport",
            "5060",
        ],
    );
    assert!(
        live.contains("verdict:    drop") && live.contains("banned until"),
        "{live}"
    );

    // What the policy protects is never banned: a trunk, an administrator, an ignored source.
    for (who, why) in [
        ("203.0.113.200", "trunk provider"),
        ("203.0.113.250", "administrator"),
        ("198.51.100.5", "responsive.ignore"),
        ("127.0.0.1", "loopback"),
    ] {
        let out = pbxfw(ns, &["ban", who, "--for", "1h", "--policy", p]);
        assert_eq!(out.status.code(), Some(6), "{who}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is never banned") && err.contains(why),
            "{err}"
        );
    }
    assert_eq!(
        pbxfw(ns, &["ban", "0.0.0.0/4", "--for", "1h", "--policy", p])
            .status
            .code(),
        Some(2)
    );

    // The state machine bans a scanner; the list says why.
    let d = daemon(ns, p, &events, &log);
    scan(&events, "203.0.113.77");
    eventually("the scanner is banned", &log, || {
        t.set_has("ban4", "203.0.113.77")
    });
    assert!(!passes(&t, "203.0.113.77"));
    eventually("the daemon saved its state", &log, || {
        bans_json(ns)
            .iter()
            .any(|b| b["origin"] == "state_machine" && b["prefix"] == "203.0.113.77")
    });
    let b = bans_json(ns);
    let machine = b.iter().find(|b| b["prefix"] == "203.0.113.77").unwrap();
    assert!(
        machine["reason"]
            .as_str()
            .unwrap()
            .contains("unknown-account failures"),
        "{machine}"
    );
    assert!(machine["since"].is_u64() && machine["since_iso"].is_string());

    // Unban: the next packet passes, and the daemon forgets the ban (it does not come back
    // when the daemon restarts, nor after an apply).
    let out = ok(ns, &["unban", "203.0.113.77"]);
    assert!(out.contains("lifted 203.0.113.77 from ban4"), "{out}");
    assert!(passes(&t, "203.0.113.77"));
    eventually("the daemon applied the unban", &log, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("event=unban")
    });
    drop(d);
    let d = daemon(ns, p, &events, &log);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        passes(&t, "203.0.113.77"),
        "the ban came back after a restart"
    );
    ok(ns, &["apply", p]);
    assert!(
        passes(&t, "203.0.113.77"),
        "the ban came back after an apply"
    );
    // Its strikes were forgiven: the next ban is the first one again (24 h, not 48 h).
    scan(&events, "203.0.113.77");
    eventually("the scanner is banned again", &log, || {
        t.set_has("ban4", "203.0.113.77")
    });
    eventually("the new ban is listed", &log, || {
        bans_json(ns)
            .iter()
            .any(|b| b["prefix"] == "203.0.113.77" && b["strikes"] == 1)
    });
    ok(ns, &["unban", "203.0.113.77"]);

    // A ban by hand comes back when the kernel's sets are created anew (a reboot).
    drop(d);
    ok(ns, &["disable"]);
    ok(ns, &["apply", p]);
    assert!(passes(&t, "203.0.113.66"));
    let d = daemon(ns, p, &events, &log);
    eventually("the ban by hand is put back", &log, || {
        t.set_has("ban4", "203.0.113.66")
    });
    assert!(!passes(&t, "203.0.113.66"));

    // IPv6: the ban set holds /64s. An address bans its /64, the list shows the /64, and
    // unbanning another address of it lifts it.
    let out = ok(
        ns,
        &["ban", "2001:db8:bad::66", "--for", "1h", "--policy", p],
    );
    assert!(out.contains("banned 2001:db8:bad::/64 until"), "{out}");
    assert!(!passes(&t, "2001:db8:bad::77"));
    assert!(bans_json(ns)
        .iter()
        .any(|b| b["prefix"] == "2001:db8:bad::/64" && b["origin"] == "manual"));
    let live = ok(
        ns,
        &[
            "explain",
            "--live",
            "--in",
            "eth0",
            "--src",
            "2001:db8:bad::77",
            "--proto",
            "udp",
            "--dport",
            "5060",
        ],
    );
    assert!(live.contains("verdict:    drop"), "{live}");
    let out = ok(ns, &["unban", "2001:db8:bad::77"]);
    assert!(out.contains("lifted 2001:db8:bad::/64 from ban6"), "{out}");
    assert!(passes(&t, "2001:db8:bad::77"));
    // A network wider than the set's prefix is the blacklist's.
    let out = pbxfw(ns, &["ban", "203.0.113.0/24", "--for", "1h", "--policy", p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wider than the ban set's /32"));
    // Banned again for less than it is already: the longer ban stays.
    let out = ok(ns, &["ban", "203.0.113.66", "--for", "10m", "--policy", p]);
    assert!(out.contains("that ban stays"), "{out}");
    let left = bans_json(ns)
        .iter()
        .find(|b| b["prefix"] == "203.0.113.66")
        .unwrap()["expires_in"]
        .as_u64()
        .unwrap();
    assert!(left > 3600, "{left}");

    // Trusting a banned source lifts its ban.
    let out = ok(ns, &["trust", "203.0.113.66", "--policy", p]);
    assert!(out.contains("1 ban(s) lifted"), "{out}");
    assert!(passes(&t, "203.0.113.66"));
    assert!(bans_json(ns).is_empty());
    drop(d);
}

#[test]
fn bans_follow_the_iptables_backend() {
    if skipped() {
        return;
    }
    let t = topology("bans-ipt", SetStore::Ipset);
    let ns = &t.pbx;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let p = policy.to_str().unwrap();
    ok(ns, &["apply", p, "--backend", "iptables-nft"]);
    // No --backend from here on: the commands follow the last apply.
    ok(ns, &["ban", "203.0.113.66", "--for", "10m", "--policy", p]);
    assert!(t.set_has("ban4", "203.0.113.66"));
    assert!(!passes(&t, "203.0.113.66"));
    let bans = bans_json(ns);
    assert_eq!(
        (bans.len(), &bans[0]["set"], &bans[0]["origin"]),
        (1, &"ban4".into(), &"manual".into())
    );
    ok(ns, &["unban", "203.0.113.0/24"]);
    assert!(passes(&t, "203.0.113.66"));
    assert!(bans_json(ns).is_empty());
    ok(ns, &["disable"]);
}

/// A trunk given by hostname is resolved at the apply (through a real DNS server), so that a
/// burst of its signalling is accepted as the trunk's and never meets the tiers; a name that
/// cannot be resolved delays the apply by at most 2 s, and the apply says it is empty.
#[test]
fn a_trunk_by_hostname_is_resolved_at_apply_and_never_banned() {
    if skipped() {
        return;
    }
    let t = topology("hostname-trunk", SetStore::Nft);
    let ns = &t.pbx;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "203.0.113.200 sip.provider.test\n").unwrap();
    let _dns = pbxfw_testkit::dns::dnsmasq(ns, &hosts, &[]);
    let policy = dir.path().join("pbxfw.toml");
    let trunk = "[interfaces]\neth0 = \"internet\"\n\
        [[pbx.trunks]]\nname = \"provider\"\nhost = \"sip.provider.test\"\nprotocol = \"pjsip\"\n";
    std::fs::write(&policy, trunk).unwrap();
    let p = policy.to_str().unwrap();
    ok(ns, &["apply", p, "--dns-server", "127.0.0.1:5353"]);
    assert!(t.set_has("trunk_pjsip_dns4", "203.0.113.200"));
    let before = t.watched();
    t.send_udp(
        "eth0",
        "203.0.113.200".parse().unwrap(),
        5060,
        5060,
        100,
        Duration::ZERO,
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.watched() - before, 100, "the trunk's burst was limited");
    assert!(!t.set_has("tier_ban4", "203.0.113.200"));
    assert!(passes(&t, "203.0.113.200"));

    // A DNS server that never answers: the apply waits 2 s at most and names what is empty.
    let silent =
        pbxfw_testkit::netns::in_netns(ns, || std::net::UdpSocket::bind("127.0.0.1:5399").unwrap());
    let slow = format!(
        "{trunk}[[pbx.trunks]]\nname = \"backup\"\nhost = \"backup.provider.test\"\nprotocol = \"pjsip\"\n"
    );
    std::fs::write(&policy, slow).unwrap();
    let started = Instant::now();
    let out = pbxfw(ns, &["apply", p, "--dns-server", "127.0.0.1:5399"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_millis(3500), "{took:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("backup.provider.test (trunk backup) has no address yet"),
        "{err}"
    );
    // The answer kept from before still feeds the first trunk.
    assert!(t.set_has("trunk_pjsip_dns4", "203.0.113.200"));
    drop(silent);
}
