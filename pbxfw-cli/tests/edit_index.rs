//! `pbxfw blacklist add` by the edit index (docs/policy.md, "Editing a large blacklist"), with real
//! packets: addresses added without reading the policy whole are dropped at once, the file
//! keeps its layout and comments and compiles to exactly the ruleset the kernel then holds,
//! the applied record follows (a rollback returns to the edited ruleset), and whatever the
//! index cannot decide alone (a network, an administrator's address, a file edited by hand)
//! goes through the whole edit. For the nft and the iptables backends.

use std::process::Output;

use pbxfw_core::{FinalVerdict, Packet, Proto};
use pbxfw_testkit::netns::{skipped, Netns};
use pbxfw_testkit::probe::Topology;
use pbxfw_testkit::text;

const POLICY: &str = "# office PBX
[interfaces]
eth0 = \"internet\"

[blacklist]
entries = [
  \"198.51.100.0/24\", # scanners
  \"192.0.2.200\",
]
lists = [\"LIST\"]

[settings]
admins = [\"203.0.113.50\"]

[[networks]]
source = \"203.0.113.50\"
zone = \"trusted\"
";

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

/// The fingerprint `status` reports.
fn loaded(ns: &Netns) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&ok(ns, &["status", "--format", "json"])).unwrap();
    v["fingerprint"].as_str().unwrap().to_string()
}

/// The fingerprint of the file compiled whole, in this process.
fn compiled(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    pbxfw_runtime::policy::load_text(&text, path.to_str().unwrap())
        .unwrap()
        .ruleset
        .fingerprint()
}

fn sip(src: &str) -> Packet {
    Packet::new("eth0", src.parse().unwrap(), Proto::Udp, Some(5060))
}

fn run(backend: &str) {
    let mut t = Topology::new(&format!("eidx-{}", &backend[..3]), &["eth0".to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    let list = dir.path().join("scanners.list");
    std::fs::write(&list, "# a list file\n198.18.5.0/24\n198.18.6.6\n").unwrap();
    std::fs::write(&policy, POLICY.replace("LIST", list.to_str().unwrap())).unwrap();
    let p = policy.to_str().unwrap();
    ok(&t.pbx, &["apply", p, "--backend", backend]);
    assert_eq!(t.probe(&sip("203.0.113.7")), Some(FinalVerdict::Accept));
    // The list file's entries are the blacklist's.
    assert_eq!(t.probe(&sip("198.18.5.5")), Some(FinalVerdict::Drop));
    assert_eq!(t.probe(&sip("198.18.6.6")), Some(FinalVerdict::Drop));

    // By the index: the file takes the entries after its last one, in its own layout, the
    // kernel the elements (a repeat and an entry already there are skipped).
    let out = ok(
        &t.pbx,
        &[
            "blacklist",
            "add",
            "203.0.113.7",
            "2001:db8::7",
            "203.0.113.7",
            "192.0.2.200",
            "--policy",
            p,
        ],
    );
    assert!(out.contains("2 entr(ies) added"), "{out}");
    assert!(out.contains("(by the edit index)"), "{out}");
    let now = std::fs::read_to_string(&policy).unwrap();
    assert!(
        now.contains(
            "  \"198.51.100.0/24\", # scanners\n  \"192.0.2.200\",\n  \"203.0.113.7\",\n  \"2001:db8::7\",\n]"
        ),
        "{now}"
    );
    assert_eq!(t.probe(&sip("203.0.113.7")), Some(FinalVerdict::Drop));
    assert_eq!(t.probe(&sip("2001:db8::7")), Some(FinalVerdict::Drop));
    assert_eq!(t.probe(&sip("203.0.113.8")), Some(FinalVerdict::Accept));
    // What the kernel holds is what the file compiles to, read whole.
    let fp = loaded(&t.pbx);
    assert_eq!(fp, compiled(&policy));

    // An administrator's address goes through the whole edit, whose anti-lockout check
    // refuses it: nothing changes.
    let before = std::fs::read_to_string(&policy).unwrap();
    let out = pbxfw(&t.pbx, &["blacklist", "add", "203.0.113.50", "--policy", p]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("blacklist"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), before);
    assert_eq!(loaded(&t.pbx), fp);

    // A network, and any text the index was not written for, go through the whole edit,
    // which writes the index again for the next one.
    let out = ok(
        &t.pbx,
        &["blacklist", "add", "203.0.113.64/26", "--policy", p],
    );
    assert!(!out.contains("(by the edit index)"), "{out}");
    std::fs::write(
        &policy,
        std::fs::read_to_string(&policy).unwrap() + "# by hand\n",
    )
    .unwrap();
    let out = ok(&t.pbx, &["blacklist", "add", "203.0.113.9", "--policy", p]);
    assert!(!out.contains("(by the edit index)"), "{out}");
    let out = ok(&t.pbx, &["blacklist", "add", "203.0.113.10", "--policy", p]);
    assert!(out.contains("(by the edit index)"), "{out}");
    assert_eq!(t.probe(&sip("203.0.113.10")), Some(FinalVerdict::Drop));
    let fp = loaded(&t.pbx);
    assert_eq!(fp, compiled(&policy));

    // The applied record holds the additions: an apply with a confirmation accepts it as
    // what is loaded, and its rollback returns to it.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[interfaces]\neth0 = \"internet\"\n").unwrap();
    ok(
        &t.pbx,
        &["apply", other.to_str().unwrap(), "--confirm", "300"],
    );
    assert_eq!(t.probe(&sip("203.0.113.10")), Some(FinalVerdict::Accept));
    ok(&t.pbx, &["rollback"]);
    assert_eq!(loaded(&t.pbx), fp);
    assert_eq!(t.probe(&sip("203.0.113.10")), Some(FinalVerdict::Drop));
    assert_eq!(t.probe(&sip("203.0.113.7")), Some(FinalVerdict::Drop));

    // Eight edits at once hold the edit lock in turn: none writes the file without another's
    // entry, and the kernel ends with what the file compiles to.
    let children: Vec<_> = (20..28)
        .map(|i| {
            let addr = format!("203.0.113.{i}");
            t.pbx
                .command(env!("CARGO_BIN_EXE_pbxfw"))
                .args(["blacklist", "add", &addr, "--policy", p])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let now = std::fs::read_to_string(&policy).unwrap();
    for i in 20..28 {
        assert!(now.contains(&format!("\"203.0.113.{i}\"")), "{i}: {now}");
    }
    assert_eq!(loaded(&t.pbx), compiled(&policy));
    assert_eq!(t.probe(&sip("203.0.113.27")), Some(FinalVerdict::Drop));

    // An entry of a list file is removed there, not from the policy.
    let out = pbxfw(&t.pbx, &["blacklist", "del", "198.18.6.6", "--policy", p]);
    assert!(
        text(&out).contains("comes from the list file"),
        "{}",
        text(&out)
    );

    // A list file changed since: the next edit reads everything, the list's new line with it.
    std::fs::write(&list, "198.18.5.0/24\n198.18.6.6\n198.18.7.7\n").unwrap();
    let out = ok(&t.pbx, &["blacklist", "add", "203.0.113.30", "--policy", p]);
    assert!(!out.contains("(by the edit index)"), "{out}");
    assert_eq!(t.probe(&sip("198.18.7.7")), Some(FinalVerdict::Drop));
    assert_eq!(loaded(&t.pbx), compiled(&policy));
    let out = ok(&t.pbx, &["blacklist", "add", "203.0.113.31", "--policy", p]);
    assert!(out.contains("(by the edit index)"), "{out}");
}

#[test]
fn blacklist_additions_by_the_edit_index_nft() {
    if skipped() {
        return;
    }
    run("nft");
}

#[test]
fn blacklist_additions_by_the_edit_index_iptables() {
    if skipped() {
        return;
    }
    run("iptables-legacy");
}
