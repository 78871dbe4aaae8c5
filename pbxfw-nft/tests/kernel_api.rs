//! The kernel API of the nft backend, in fresh network namespaces: apply, verify, reload
//! keeping dynamic state, netlink updates, status, disable, coexistence and failure handling.

use pbxfw_testkit::netns as common;
use pbxfw_testkit::{element as el, ruleset};
use std::time::Duration;

use pbxfw_core::names;
use pbxfw_core::Family;
use pbxfw_core::{apply, BackendError};
use pbxfw_nft::netlink::{Element, Op};
use pbxfw_nft::{ApplyOptions, Kernel};

const POLICY: &str = r#"
[interfaces]
eth0 = "internet"
[blacklist]
entries = ["198.51.100.0/24", "192.0.2.66", "2001:db8:bad::/48"]
[[pbx.trunks]]
name = "a"
protocol = "pjsip"
host = "203.0.113.10"
"#;

fn set_text(ns: &common::Netns, set: &str) -> String {
    ns.run(&["nft", "list", "set", "inet", "pbxfw", set])
}

#[test]
fn apply_reload_update_status_disable() {
    if common::skipped() {
        return;
    }
    let ns = common::Netns::new("api");
    // Another tool's nft table and an iptables rule, present before pbxfw.
    let made = ns.exec_stdin(
        &["nft", "-f", "/dev/stdin"],
        "table inet fail2ban {\n chain input {\n  type filter hook input priority -1; policy accept;\n  ip saddr 192.0.2.200 drop\n }\n}\n",
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    ns.run(&["iptables", "-A", "INPUT", "-s", "192.0.2.201", "-j", "DROP"]);
    let foreign = || {
        (
            ns.run(&["nft", "list", "table", "inet", "fail2ban"]),
            ns.run(&["iptables", "-S", "INPUT"]),
        )
    };
    let before = foreign();

    let rs = ruleset(POLICY);
    let fp = common::in_netns(&ns, {
        let rs = rs.clone();
        move || {
            apply(&Kernel::default(), &rs, &ApplyOptions::default())
                .unwrap()
                .fingerprint
        }
    });
    assert_eq!(fp, rs.fingerprint());
    assert_eq!(before, foreign(), "apply touched another table");

    // Netlink: a ban with a timeout, a registration, and a blacklist entry in the interval set.
    common::in_netns(&ns, {
        let rs = rs.clone();
        move || {
            let k = Kernel::default();
            k.update_set(
                &rs,
                &names::ban(Family::Ipv4),
                Op::Add,
                &[el("192.0.2.7", Some(3600))],
            )
            .unwrap();
            k.update_set(
                &rs,
                &names::ban(Family::Ipv6),
                Op::Add,
                &[el("2001:db8:1:2::/64", None)],
            )
            .unwrap();
            k.update_set(
                &rs,
                &names::registered(Family::Ipv4),
                Op::Add,
                &[el("192.0.2.8", Some(120))],
            )
            .unwrap();
            k.update_set(
                &rs,
                &names::blacklist(Family::Ipv4),
                Op::Add,
                &[el("10.9.0.0/16", None)],
            )
            .unwrap();
        }
    });
    assert!(set_text(&ns, "ban4").contains("192.0.2.7 timeout 1h"));
    assert!(set_text(&ns, "ban6").contains("2001:db8:1:2::"));
    assert!(set_text(&ns, "blacklist4").contains("10.9.0.0/16"));
    assert!(set_text(&ns, "blacklist_hosts4").contains("192.0.2.66"));

    // Reload a changed policy: dynamic elements keep their (shrinking) timeouts, the static
    // blacklist is replaced exactly.
    std::thread::sleep(Duration::from_millis(1100));
    let changed = ruleset(&POLICY.replace("\"192.0.2.66\", ", ""));
    common::in_netns(&ns, {
        let changed = changed.clone();
        move || apply(&Kernel::default(), &changed, &ApplyOptions::default()).unwrap()
    });
    let ban4 = set_text(&ns, "ban4");
    assert!(
        ban4.contains("192.0.2.7 timeout 1h expires 59m5"),
        "ban lost or reset: {ban4}"
    );
    let reg4 = set_text(&ns, "registered4");
    assert!(
        reg4.contains("192.0.2.8 timeout 2m expires 1m5"),
        "registration lost or reset: {reg4}"
    );
    let bl4 = set_text(&ns, "blacklist4");
    assert!(
        !bl4.contains("10.9.0.0/16"),
        "static set not replaced: {bl4}"
    );
    let hosts4 = set_text(&ns, "blacklist_hosts4");
    assert!(
        !hosts4.contains("192.0.2.66"),
        "removed entry still there: {hosts4}"
    );
    assert!(bl4.contains("198.51.100.0/24"));
    assert_eq!(before, foreign(), "reload touched another table");

    // Removing over netlink.
    common::in_netns(&ns, {
        let changed = changed.clone();
        move || {
            let k = Kernel::default();
            k.update_set(&changed, "ban4", Op::Remove, &[el("192.0.2.7", None)])
                .unwrap();
            k.update_set(
                &changed,
                "blacklist4",
                Op::Remove,
                &[el("198.51.100.0/24", None)],
            )
            .unwrap();
            // Removing what is not there is refused, and changes nothing.
            assert!(k
                .update_set(&changed, "ban4", Op::Remove, &[el("192.0.2.99", None)])
                .is_err());
            // Refused in the middle of a batch: the kernel acknowledges only the last
            // message, yet the error names the message it refused, and the changes before
            // it are undone with the rest.
            use pbxfw_nft::netlink::{apply_changes, Change, SetShape};
            let change = |set: &str, op, addr| Change {
                set: set.into(),
                shape: SetShape::Hash,
                op,
                elements: vec![el(addr, None)],
            };
            let err = apply_changes(
                "pbxfw",
                &[
                    change("ban4", Op::Add, "192.0.2.50"),
                    change("registered4", Op::Remove, "192.0.2.98"),
                    change("ban4", Op::Add, "192.0.2.51"),
                ],
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("set registered4"),
                "the error names another message: {err}"
            );
        }
    });
    let ban4 = set_text(&ns, "ban4");
    assert!(
        !ban4.contains("192.0.2.50") && !ban4.contains("192.0.2.51"),
        "a refused batch left changes: {ban4}"
    );
    assert!(!set_text(&ns, "ban4").contains("192.0.2.7"));
    assert!(!set_text(&ns, "blacklist4").contains("198.51.100.0/24"));

    // Status.
    let status = common::in_netns(&ns, || Kernel::default().status().unwrap());
    assert!(status.loaded);
    assert_eq!(
        status.fingerprint.as_deref(),
        Some(changed.fingerprint().as_str())
    );
    let reg = status
        .sets
        .iter()
        .find(|s| s.name == "registered4")
        .unwrap();
    assert_eq!(reg.size, 1);
    assert!(
        reg.elements[0]
            .expires_in
            .is_some_and(|s| s > 100 && s <= 120),
        "{reg:?}"
    );

    // A ruleset the kernel refuses changes nothing.
    let err = common::in_netns(&ns, {
        let rs = rs.clone();
        move || {
            let opts = ApplyOptions {
                custom: Some("ip saddr @no_such_set drop".into()),
                ..ApplyOptions::default()
            };
            apply(&Kernel::default(), &rs, &opts).unwrap_err()
        }
    });
    assert!(matches!(err, BackendError::Load(_)), "{err}");
    let fp_now = common::in_netns(&ns, || Kernel::default().fingerprint().unwrap());
    assert_eq!(
        fp_now.as_deref(),
        Some(changed.fingerprint().as_str()),
        "a refused apply changed the kernel"
    );

    // Disable removes our table and nothing else.
    assert!(common::in_netns(&ns, || Kernel::default()
        .disable()
        .unwrap()));
    assert!(!common::in_netns(&ns, || Kernel::default()
        .disable()
        .unwrap()));
    assert_eq!(before, foreign(), "disable touched another table");
    let status = common::in_netns(&ns, || Kernel::default().status().unwrap());
    assert!(!status.loaded);
}

#[test]
fn ten_thousand_elements_in_one_call() {
    if common::skipped() {
        return;
    }
    let ns = common::Netns::new("bulk");
    let rs = ruleset(POLICY);
    let elapsed = common::in_netns(&ns, move || {
        let k = Kernel::default();
        apply(&k, &rs, &ApplyOptions::default()).unwrap();
        let elems: Vec<Element> = (0..10_000u32)
            .map(|i| {
                el(
                    &std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                    Some(600),
                )
            })
            .collect();
        let t = std::time::Instant::now();
        k.update_set(&rs, "ban4", Op::Add, &elems).unwrap();
        t.elapsed()
    });
    let status = common::in_netns(&ns, || Kernel::default().status().unwrap());
    let ban4 = status.sets.iter().find(|s| s.name == "ban4").unwrap();
    assert_eq!(ban4.size, 10_000);
    eprintln!("10k ban elements over netlink: {elapsed:?}");
}

/// `netlink::set_prefixes` reads what the kernel holds: an interval set with timeouts (the
/// fleet's shape) as its ranges, a hash set as its addresses, a missing set as `None`.
#[test]
fn set_prefixes_reads_interval_and_hash_sets() {
    if common::skipped() {
        return;
    }
    let ns = common::Netns::new("setpfx");
    let made = ns.exec_stdin(
        &["nft", "-f", "/dev/stdin"],
        "table inet pfx {\n set iv4 {\n  type ipv4_addr; flags interval, timeout;\n  elements = { 10.0.0.0/24 timeout 1h, 192.0.2.7 timeout 1h, 203.0.113.5-203.0.113.9 timeout 1h }\n }\n set h6 {\n  type ipv6_addr; flags timeout;\n  elements = { 2001:db8::1 timeout 1h, 2001:db8:66:1:: timeout 1h }\n }\n}\n",
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let got = common::in_netns(&ns, || {
        let read = |set: &str, f| pbxfw_nft::netlink::set_prefixes("pfx", set, f, 100).unwrap();
        (
            read("iv4", Family::Ipv4),
            read("h6", Family::Ipv6),
            read("none", Family::Ipv4),
        )
    });
    let text = |v: Option<Vec<pbxfw_core::Prefix>>| {
        let mut t: Vec<String> = v.unwrap().iter().map(|p| p.to_string()).collect();
        t.sort();
        t
    };
    assert_eq!(
        text(got.0),
        [
            "10.0.0.0/24",
            "192.0.2.7",
            "203.0.113.5",
            "203.0.113.6/31",
            "203.0.113.8/31"
        ]
    );
    assert_eq!(text(got.1), ["2001:db8:66:1::", "2001:db8::1"]);
    assert!(got.2.is_none());
}

/// A thread keeps its last netlink socket for its next exchange; a socket talks to the
/// namespace it was opened in, so after the thread moves to another namespace it must not be
/// reused: the question goes to the namespace the thread is in now.
#[test]
fn a_kept_socket_is_not_reused_in_another_namespace() {
    if common::skipped() {
        return;
    }
    let with_table = common::Netns::new("spare-a");
    let without = common::Netns::new("spare-b");
    let rs = ruleset(POLICY);
    common::in_netns(&with_table, move || {
        apply(&Kernel::default(), &rs, &ApplyOptions::default()).unwrap();
    });
    let (a, b) = (
        format!("/run/netns/{}", with_table.name),
        format!("/run/netns/{}", without.name),
    );
    let seen = std::thread::spawn(move || {
        let enter = |path: &str| {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(path).unwrap();
            // SAFETY: setns(2) on a valid namespace descriptor, for this thread only.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}");
        };
        enter(&a);
        let there = pbxfw_nft::netlink::table_handle("pbxfw").unwrap();
        enter(&b);
        let here = pbxfw_nft::netlink::table_handle("pbxfw").unwrap();
        (there, here)
    })
    .join()
    .unwrap();
    assert!(seen.0.is_some(), "the table is in the first namespace");
    assert_eq!(seen.1, None, "the second namespace has no table");
}
