//! The kernel API of the iptables backend, on iptables-nft and on iptables-legacy, each in a
//! fresh network namespace: apply, re-apply keeping dynamic state, coexistence with fail2ban-
//! and Docker-style chains (pbxfw's jump stays first), a failed apply that leaves everything as
//! it was, incremental sync, status and disable.

use pbxfw_testkit::{element as el, ruleset};

use pbxfw_core::{ApplyOptions, Backend, BackendError, Op};
use pbxfw_ipt::{Kernel, Variant};
use pbxfw_testkit::netns::{self as common, in_netns, Netns};

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

/// Run `f` with the backend inside `ns`.
fn with<T: Send + 'static>(
    ns: &Netns,
    variant: Variant,
    f: impl FnOnce(&Kernel) -> T + Send + 'static,
) -> T {
    in_netns(ns, move || f(&Kernel::new(variant)))
}

fn check(variant: Variant) {
    let v = variant.name();
    let ns = Netns::new(&format!("iptapi-{v}"));
    let ipt = format!("iptables-{v}");
    let ip6t = format!("ip6tables-{v}");
    // A fail2ban-style chain with its jump, a Docker-style chain with its jump, and an ipset of
    // another tool, all present before pbxfw.
    for cmd in [
        vec![ipt.as_str(), "-N", "f2b-sshd"],
        vec![
            ipt.as_str(),
            "-A",
            "f2b-sshd",
            "-s",
            "192.0.2.200",
            "-j",
            "REJECT",
        ],
        vec![
            ipt.as_str(),
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "22",
            "-j",
            "f2b-sshd",
        ],
        vec![ipt.as_str(), "-N", "DOCKER-USER"],
        vec![ipt.as_str(), "-A", "INPUT", "-j", "DOCKER-USER"],
        vec![
            ip6t.as_str(),
            "-A",
            "INPUT",
            "-s",
            "2001:db8::200",
            "-j",
            "DROP",
        ],
        vec!["ipset", "create", "f2b-blacklist", "hash:ip"],
    ] {
        ns.run(&cmd);
    }
    let foreign = |ns: &Netns| {
        let s4 = ns.run(&[&ipt, "-S"]);
        let s6 = ns.run(&[&ip6t, "-S"]);
        let keep = |s: &str| {
            s.lines()
                .filter(|l| !l.contains("PBXFW"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        (
            keep(&s4),
            keep(&s6),
            ns.run(&["ipset", "list", "f2b-blacklist"]),
        )
    };
    let before = foreign(&ns);
    let first_input_rule = |ns: &Netns, bin: &str| -> String {
        ns.run(&[bin, "-S", "INPUT"])
            .lines()
            .find(|l| l.starts_with("-A INPUT"))
            .unwrap_or_default()
            .to_string()
    };

    // Apply, then a ban through the set-update API.
    let a = ruleset(POLICY);
    let fp = a.fingerprint();
    let applied = with(&ns, variant, {
        let a = a.clone();
        move |k| pbxfw_core::apply(k, &a, &ApplyOptions::default())
    })
    .unwrap();
    assert_eq!(applied.fingerprint, fp);
    for bin in [&ipt, &ip6t] {
        assert!(
            first_input_rule(&ns, bin).ends_with("-j PBXFW"),
            "{bin}: pbxfw's jump is not first"
        );
    }
    with(&ns, variant, {
        let a = a.clone();
        move |k| {
            k.update_set(&a, "ban4", Op::Add, &[el("192.0.2.9", Some(300))])
                .unwrap();
            k.update_set(&a, "ban6", Op::Add, &[el("2001:db8:9:9::/64", None)])
                .unwrap();
        }
    });
    assert!(ns
        .exec(&["ipset", "test", "pbxfw_ban4", "192.0.2.9"])
        .status
        .success());

    // Someone puts a rule above pbxfw's jump; a re-apply puts the jump first again, once, and
    // keeps the bans.
    ns.run(&[&ipt, "-I", "INPUT", "1", "-j", "DOCKER-USER"]);
    with(&ns, variant, {
        let a = a.clone();
        move |k| pbxfw_core::apply(k, &a, &ApplyOptions::default())
    })
    .unwrap();
    let input = ns.run(&[&ipt, "-S", "INPUT"]);
    assert!(first_input_rule(&ns, &ipt).ends_with("-j PBXFW"), "{input}");
    assert_eq!(input.matches("-j PBXFW").count(), 1, "{input}");
    ns.run(&[&ipt, "-D", "INPUT", "-j", "DOCKER-USER"]);
    let status = with(&ns, variant, |k| k.status()).unwrap();
    assert_eq!(status.fingerprint.as_deref(), Some(fp.as_str()));
    let ban4 = status.sets.iter().find(|s| s.name == "ban4").unwrap();
    assert_eq!(ban4.size, 1, "the ban did not survive the reload");
    let left = ban4.elements[0].expires_in.unwrap();
    assert!((200..=300).contains(&left), "remaining {left}");
    let ban6 = status.sets.iter().find(|s| s.name == "ban6").unwrap();
    assert_eq!(ban6.elements[0].element, "2001:db8:9:9::");
    assert_eq!(foreign(&ns), before, "another tool's rules or sets changed");

    // A ruleset the kernel refuses (a rate out of hashlimit's range passes `--test`): the apply
    // fails at the load stage and every family, set and ban is as it was.
    let saved = |ns: &Netns| {
        (
            ns.run(&[&format!("{ipt}-save"), "-t", "filter"]),
            ns.run(&[&format!("{ip6t}-save"), "-t", "filter"]),
            ns.run(&["ipset", "list", "pbxfw_blacklist4"]),
        )
    };
    let strip = |s: (String, String, String)| {
        // Counters and the save header's timestamp differ between two saves.
        let clean = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split(" [").next().unwrap_or(l).to_string())
                .collect::<Vec<_>>()
        };
        (clean(&s.0), clean(&s.1), s.2)
    };
    // IPv4 refused: nothing changed. IPv6 refused after IPv4 went in: IPv4 is put back.
    for family in ["4", "6"] {
        let bad_text = a.to_text().replace(
            &format!("meter @meter_daily{family} 100/day burst 100"),
            &format!("meter @meter_daily{family} 1/day burst 5"),
        );
        let bad = pbxfw_core::parse_ir(&bad_text).unwrap();
        assert_ne!(bad, a);
        let was = strip(saved(&ns));
        let err = with(&ns, variant, move |k| {
            pbxfw_core::apply(k, &bad, &ApplyOptions::default())
        })
        .unwrap_err();
        assert!(matches!(err, BackendError::Load(_)), "{err}");
        assert_eq!(
            strip(saved(&ns)),
            was,
            "a failed apply (ipv{family} refused) changed the kernel"
        );
        assert_eq!(
            with(&ns, variant, |k| k.fingerprint()).unwrap().as_deref(),
            Some(fp.as_str())
        );
        assert!(ns
            .exec(&["ipset", "test", "pbxfw_ban4", "192.0.2.9"])
            .status
            .success());
    }
    let sets = ns.run(&["ipset", "list", "-n"]);
    assert!(
        !sets.contains("-t\n"),
        "a set built for the failed apply is left: {sets}"
    );

    // A blacklist entry more: only set elements change, no reload.
    let b = ruleset(&POLICY.replace("\"192.0.2.66\"", "\"192.0.2.66\", \"192.0.2.77\""));
    let synced = with(&ns, variant, {
        let (a, b) = (a.clone(), b.clone());
        move |k| pbxfw_core::sync(k, &a, &b, &ApplyOptions::default())
    })
    .unwrap();
    assert!(synced.incremental, "{synced:?}");
    assert_eq!((synced.added, synced.removed), (1, 0));
    assert_eq!(synced.fingerprint, b.fingerprint());
    assert!(ns
        .exec(&["ipset", "test", "pbxfw_blacklist_hosts4", "192.0.2.77"])
        .status
        .success());
    assert_eq!(
        with(&ns, variant, |k| k.fingerprint()).unwrap(),
        Some(b.fingerprint())
    );
    // A new zone is more than set elements: a full reload, bans kept.
    let c = ruleset(&POLICY.replace(
        "eth0 = \"internet\"",
        "eth0 = \"internet\"\neth1 = \"local\"",
    ));
    let synced = with(&ns, variant, {
        let (b, c) = (b.clone(), c.clone());
        move |k| pbxfw_core::sync(k, &b, &c, &ApplyOptions::default())
    })
    .unwrap();
    assert!(!synced.incremental);
    assert!(ns
        .exec(&["ipset", "test", "pbxfw_ban4", "192.0.2.9"])
        .status
        .success());

    // Disable removes pbxfw's chains, jump and sets, and nothing else.
    assert!(with(&ns, variant, |k| k.disable()).unwrap());
    assert!(
        !with(&ns, variant, |k| k.disable()).unwrap(),
        "second disable"
    );
    assert!(!ns.run(&[&ipt, "-S"]).contains("PBXFW"));
    assert!(!ns.run(&[&ip6t, "-S"]).contains("PBXFW"));
    assert!(!ns.run(&["ipset", "list", "-n"]).contains("pbxfw_"));
    assert_eq!(
        foreign(&ns),
        before,
        "disable touched another tool's rules or sets"
    );
    assert!(!with(&ns, variant, |k| k.status()).unwrap().loaded);
}

#[test]
fn api_on_iptables_nft() {
    if !common::skipped() {
        check(Variant::Nft);
    }
}

#[test]
fn api_on_iptables_legacy() {
    if !common::skipped() {
        check(Variant::Legacy);
    }
}
