//! Zone membership from the command line, as `fwconsole firewall add|del|list` (docs/policy.md,
//! "Zones"): `pbxfw zone add|del|list` and `zones` round-trip through the policy file and the
//! kernel, are refused when they would cut off the SSH session, and show in `explain` and in
//! the fate of real packets.

use std::net::IpAddr;
use std::process::{Command, Output};

use pbxfw_core::{FinalVerdict, Packet, Proto};
use pbxfw_testkit::netns::{skipped, Netns};
use pbxfw_testkit::probe::{SetStore, Topology};

const POLICY: &str = "# the office\n[interfaces]\neth0 = \"internet\"\n\n\
[[networks]]\nsource = \"198.51.100.8\"\nzone = \"local\"\ndescription = \"the admin's desk\"\n";
const SSH: &str = "198.51.100.8 50022 10.99.0.1 22";

fn pbxfw(ns: &Netns, args: &[&str], ssh: bool) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_pbxfw")])
        .args(args)
        .envs(ns.host_env())
        .env_remove("PBXFW_POLICY")
        .env_remove("SSH_CONNECTION");
    if ssh {
        c.env("SSH_CONNECTION", SSH);
    }
    c.output().unwrap()
}

fn ok(ns: &Netns, args: &[&str]) -> String {
    let out = pbxfw(ns, args, true);
    assert!(
        out.status.success(),
        "pbxfw {args:?}: exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ssh_from(t: &mut Topology, src: &str) -> Option<FinalVerdict> {
    let src: IpAddr = src.parse().unwrap();
    t.probe(&Packet::new("eth0", src, Proto::Tcp, Some(22)))
}

fn explained_zone(ns: &Netns, p: &str, src: &str) -> String {
    let out = ok(
        ns,
        &[
            "explain", "--policy", p, "--in", "eth0", "--src", src, "--proto", "tcp", "--dport",
            "22", "--format", "json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["zone"].as_str().unwrap_or_default().to_string()
}

#[test]
fn zones_are_edited_like_fwconsole_and_packets_follow() {
    if skipped() {
        return;
    }
    let mut t = Topology::new("zones", &["eth0".to_string()]);
    t.sets = SetStore::Nft;
    // `probe` gives the client each source address it sends from.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let p = policy.to_str().unwrap();
    ok(&t.pbx, &["apply", p]);
    assert_eq!(ssh_from(&mut t, "203.0.113.5"), Some(FinalVerdict::Drop));
    assert_eq!(explained_zone(&t.pbx, p, "203.0.113.5"), "internet");

    // FreePBX's name for the LAN works: the host joins the local zone, over netlink.
    let out = ok(
        &t.pbx,
        &["zone", "add", "internal", "203.0.113.5", "--policy", p],
    );
    assert!(out.contains("203.0.113.5 added to the local zone"), "{out}");
    assert!(out.contains("1 element(s) added"), "{out}");
    assert_eq!(explained_zone(&t.pbx, p, "203.0.113.5"), "local");
    assert_eq!(ssh_from(&mut t, "203.0.113.5"), Some(FinalVerdict::Accept));
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(text.starts_with("# the office\n"), "comments kept: {text}");

    // Listed with its zone; `zones` counts.
    let list = ok(&t.pbx, &["zone", "list", "local", "--policy", p]);
    assert!(list.contains("local (internal)"), "{list}");
    assert!(list.contains("203.0.113.5") && list.contains("198.51.100.8  (the admin's desk)"));
    let zones = ok(&t.pbx, &["zones", "--policy", p, "--format", "json"]);
    let zones: serde_json::Value = serde_json::from_str(&zones).unwrap();
    assert_eq!(zones.as_array().unwrap().len(), 5);
    assert_eq!(zones[1]["zone"], "local");
    assert_eq!(zones[1]["networks"].as_array().unwrap().len(), 2);
    assert_eq!(zones[3]["aliases"][0], "external");

    // Adding again changes nothing and says so; moving to another zone replaces the entry.
    let again = pbxfw(
        &t.pbx,
        &["zone", "add", "local", "203.0.113.5", "--policy", p],
        true,
    );
    assert_eq!(again.status.code(), Some(2));
    let out = ok(
        &t.pbx,
        &["zone", "add", "reject", "203.0.113.5", "--policy", p],
    );
    assert!(out.contains("moved to the reject zone"), "{out}");
    assert_eq!(explained_zone(&t.pbx, p, "203.0.113.5"), "reject");
    assert_eq!(ssh_from(&mut t, "203.0.113.5"), Some(FinalVerdict::Drop));
    // … and `del` takes it out: back to its interface's zone.
    let out = ok(
        &t.pbx,
        &["zone", "del", "reject", "203.0.113.5", "--policy", p],
    );
    assert!(out.contains("removed from the reject zone"), "{out}");
    assert_eq!(explained_zone(&t.pbx, p, "203.0.113.5"), "internet");
    let missing = pbxfw(
        &t.pbx,
        &["zone", "del", "reject", "203.0.113.5", "--policy", p],
        true,
    );
    assert_eq!(missing.status.code(), Some(2));

    // Moving the SSH session's own address out of the zone that lets it in is refused, and
    // changes nothing; with --force it goes through.
    let before = std::fs::read_to_string(&policy).unwrap();
    for args in [
        &["zone", "add", "internet", "198.51.100.8", "--policy", p][..],
        &["zone", "del", "local", "198.51.100.8", "--policy", p],
    ] {
        let out = pbxfw(&t.pbx, args, true);
        assert_eq!(out.status.code(), Some(6), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("198.51.100.8 (tcp/22"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(before, std::fs::read_to_string(&policy).unwrap());
    assert_eq!(ssh_from(&mut t, "198.51.100.8"), Some(FinalVerdict::Accept));
    // Its network may go to reject: the session's own, more specific entry still decides.
    let out = ok(
        &t.pbx,
        &["zone", "add", "reject", "198.51.100.0/24", "--policy", p],
    );
    assert!(out.contains("ruleset reloaded"), "a network reloads: {out}");
    assert_eq!(ssh_from(&mut t, "198.51.100.8"), Some(FinalVerdict::Accept));
    assert_eq!(explained_zone(&t.pbx, p, "198.51.100.9"), "reject");
    let bad = pbxfw(
        &t.pbx,
        &["zone", "add", "dmz", "192.0.2.1", "--policy", p],
        true,
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a zone"));
}
