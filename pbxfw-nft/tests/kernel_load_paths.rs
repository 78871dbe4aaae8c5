//! The two load paths give the same kernel ruleset: every case policy, the example policy,
//! with and without counters, an IR with every statement the backend lowers, and random
//! policies, each loaded once through `nft -f` and once as the in-process netlink batch into
//! a fresh network namespace, then listed by `nft -j list table` (and by nft's netlink debug
//! listing, which shows every expression as the kernel holds it). Reloads over a loaded
//! ruleset keep dynamic elements on both paths, and seeds land the same.

use std::collections::BTreeMap;
use std::time::Duration;

use pbxfw_testkit::netns as common;

use pbxfw_core::{compile, Element, Prefix, Ruleset};
use pbxfw_nft::{Loader, Options};
use pbxfw_testkit::cases::CaseFile;

/// What the kernel holds, as nft lists it, with the handles (allocation order) taken out.
fn listing(ns: &common::Netns) -> (String, String) {
    let json = ns.run(&["nft", "-j", "list", "table", "inet", "pbxfw"]);
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(o) => {
                o.remove("handle");
                // The ruleset's generation number counts transactions.
                o.remove("metainfo");
                for x in o.values_mut() {
                    strip(x);
                }
            }
            serde_json::Value::Array(a) => {
                a.retain(|x| x.get("metainfo").is_none());
                a.iter_mut().for_each(strip);
            }
            _ => {}
        }
    }
    strip(&mut v);
    let debug = ns.run(&["nft", "--debug=netlink", "list", "table", "inet", "pbxfw"]);
    (
        serde_json::to_string_pretty(&v).unwrap(),
        sort_elements(&debug),
    )
}

/// A hash set's elements are listed in the order of its buckets, which hash with a seed of
/// their own per set: each run of element lines is sorted. Rule handles are left out.
fn sort_elements(listing: &str) -> String {
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in listing.lines() {
        // A rule's header names its chain, its handle and the handle it follows: handles
        // count the objects the table ever held (a reload declares sets twice, a new load
        // once), so only the chain is compared.
        let line = match line.strip_prefix("inet pbxfw ") {
            Some(rest) if !rest.starts_with('@') => {
                &line[..line.len() - rest.len() + rest.find(' ').unwrap_or(rest.len())]
            }
            _ => line,
        };
        if line.starts_with("\telement") {
            run.push(line);
            continue;
        }
        run.sort_unstable();
        out.append(&mut run);
        out.push(line);
    }
    run.sort_unstable();
    out.append(&mut run);
    out.join("\n")
}

fn load(ns: &common::Netns, rs: &Ruleset, loader: Loader, counters: bool) {
    let rs = rs.clone();
    common::in_netns(ns, move || {
        let k = pbxfw_nft::Kernel::with_loader(loader);
        let opts = pbxfw_core::ApplyOptions {
            counters,
            ..Default::default()
        };
        pbxfw_core::Backend::load(&k, &rs, &opts).unwrap();
    });
}

fn assert_same(tag: &str, name: &str, rs: &Ruleset, counters: bool) {
    let ns = common::Netns::new(tag);
    load(&ns, rs, Loader::Nft, counters);
    let by_nft = listing(&ns);
    ns.run(&["nft", "delete", "table", "inet", "pbxfw"]);
    load(&ns, rs, Loader::Netlink, counters);
    let by_netlink = listing(&ns);
    if by_nft != by_netlink {
        // For a closer look: both listings, whole.
        let _ = std::fs::write(
            format!("/tmp/pbxfw-{tag}-nft.txt"),
            format!("{}\n{}", by_nft.0, by_nft.1),
        );
        let _ = std::fs::write(
            format!("/tmp/pbxfw-{tag}-netlink.txt"),
            format!("{}\n{}", by_netlink.0, by_netlink.1),
        );
    }
    if by_nft.0 != by_netlink.0 {
        let diff = first_difference(&by_nft.0, &by_netlink.0);
        panic!("{name}: `nft -j list table` differs between the load paths:\n{diff}");
    }
    if by_nft.1 != by_netlink.1 {
        let diff = first_difference(&by_nft.1, &by_netlink.1);
        panic!("{name}: the kernel's expressions differ between the load paths:\n{diff}");
    }
}

fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = i.saturating_sub(12);
    format!(
        "nft -f:\n{}\nnetlink:\n{}",
        a[from..(i + 6).min(a.len())].join("\n"),
        b[from..(i + 6).min(b.len())].join("\n")
    )
}

#[test]
fn case_policies_load_alike_on_both_paths() {
    if common::skipped() {
        return;
    }
    for path in pbxfw_testkit::case_files() {
        let case = CaseFile::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rs = compile(&case.policy.validate().unwrap());
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        assert_same("paths-case", &name, &rs, false);
    }
}

#[test]
fn the_example_policy_loads_alike_with_and_without_counters() {
    if common::skipped() {
        return;
    }
    let rs = compile(
        &pbxfw_core::Policy::from_toml(pbxfw_core::DEFAULT_POLICY_TOML)
            .unwrap()
            .validate()
            .unwrap(),
    );
    assert_same("paths-ex", "example", &rs, false);
    assert_same("paths-ex", "example, counters", &rs, true);
}

/// Every statement the lowering knows, in one IR (the canonical text form).
const EVERY_STATEMENT: &str = r#"pbxfw-ir 1
set ban4 ipv4 dynamic key=32 size=1024 timeout=60 "bans"
set ban6 ipv6 dynamic key=64 size=1024 timeout=60 "bans per /64"
set meter4 ipv4 dynamic key=32 size=1024 timeout=60 "meter"
set meter6 ipv6 dynamic key=64 size=1024 timeout=60 "meter per /64"
set wide4 ipv4 dynamic key=32 size=1024 interval "ranges"
set hosts4 ipv4 static hosts "hosts" {
  192.0.2.1 ""
  192.0.2.9 ""
}
set nets6 ipv6 static "nets" {
  2001:db8::/48 ""
  2001:db8:1::/48 ""
}
set all4 ipv4 static "everything" {
  0.0.0.0/1 ""
  128.0.0.0/1 ""
}
map src4 src ipv4 {
  10.0.0.0/24 zone_a
  10.0.1.0/24 zone_a
  192.168.0.0/16 zone_b
}
map ifs iif {
  "eth0" zone_a
  "eth1.100" zone_b
}
chain input hook=input policy=drop {
  iif "lo" -> accept "loopback"
  ct invalid -> drop "state"
  ct established,related -> accept "state"
  family ipv4 proto udp sport 67 dport 68 -> accept "dhcp"
  family ipv4 proto udp sport 5060 -> accept "one sport"
  proto tcp dport 22 sport 1024-65535 -> accept "sport range"
  family ipv6 proto tcp sport 1000-2000 dport 22,80-90 -> reject "ports"
  family ipv4 src @ban4 meter @meter4 5/second burst 10 update @ban4 -> drop "meter"
  family ipv6 meter @meter6 5/second burst 10 update @ban6 notify 20550 -> drop "meter notified"
  family ipv4 proto tcp dport 5061 notify 7 -> accept "notified"
  family ipv6 src @ban6 -> reject "ban6"
  family ipv6 src @ban6 proto udp -> reject "ban6 udp"
  family ipv4 proto icmp icmp-type 8 limit 10/second burst 10 -> accept "echo"
  family ipv6 proto icmpv6 icmp-type 1,2,128 -> accept "icmpv6"
  family ipv4 proto icmp icmp-type 3,11 -> reject "icmp reject"
  proto udp dport 60000-65535 -> accept "high"
  proto udp dport 100-200,60000-65535 -> accept "high set"
  proto tcp dport 80 syn payload "GET /.well-known/acme-challenge/" -> accept "acme"
  proto tcp data -> drop "data"
  ct-mark 0x4 mark-clear 0x4 -> log "pbxfw: " "log"
  family ipv4 ct-reply mark-set 0x8 -> return "reply"
  family ipv4 ct established ct-original proto udp dport-not 5060 src-not @ban4 -> accept "not: port"
  family ipv6 ct established,related ct-original proto udp dport-not 5060-5061 src-not @ban6 -> accept "not: range"
  family ipv4 proto tcp dport-not 5060,5160 src-not @hosts4 -> accept "not: ports"
  family ipv6 proto udp dport-not 5060-5061,5080 src-not @nets6 -> accept "not: port ranges"
  family ipv4 proto udp dport-not 100-200,5060 -> accept "not: wide port ranges"
  family ipv4 src @hosts4 -> goto zone_a "hosts"
  family ipv4 src @wide4 proto udp dport 5060 -> accept "wide"
  family ipv6 src @nets6 -> jump zone_b "nets"
  family ipv4 src @all4 -> drop "all"
  iif "eth0" proto udp -> reject "udp reject"
  proto tcp -> reject "tcp reject"
  ct new -> accept "new"
  family ipv4 -> dispatch src4 "overrides"
  -> dispatch ifs "interfaces"
  family ipv4 -> goto zone_a "v4"
  family ipv6 -> goto zone_b "v6"
  -> reject "reject"
}
chain zone_a {
  proto icmp -> accept "icmp"
  proto icmpv6 -> accept "icmpv6"
  -> accept "a"
}
chain zone_b {
  -> drop "b"
}
"#;

#[test]
fn every_statement_loads_alike() {
    if common::skipped() {
        return;
    }
    let rs = pbxfw_core::parse_ir(EVERY_STATEMENT).unwrap_or_else(|e| panic!("{e}"));
    pbxfw_core::verify_ir(&rs).unwrap_or_else(|e| panic!("{e:?}"));
    assert_same("paths-every", "every statement", &rs, false);
    assert_same("paths-every", "every statement, counters", &rs, true);
}

#[test]
fn reloads_keep_dynamic_elements_and_seeds_land_alike() {
    if common::skipped() {
        return;
    }
    let rs = pbxfw_core::parse_ir(EVERY_STATEMENT).unwrap();
    let seed: BTreeMap<String, Vec<Element>> = [(
        "ban4".to_string(),
        vec![Element {
            prefix: "198.51.100.7".parse::<Prefix>().unwrap(),
            timeout: Some(Duration::from_secs(600)),
        }],
    )]
    .into();
    let mut listed = Vec::new();
    for loader in [Loader::Nft, Loader::Netlink] {
        let ns = common::Netns::new(&format!("paths-reload-{loader:?}"));
        let (rs, seed) = (rs.clone(), seed.clone());
        common::in_netns(&ns, move || {
            let k = pbxfw_nft::Kernel::with_loader(loader);
            let opts = pbxfw_core::ApplyOptions {
                seed,
                ..Default::default()
            };
            pbxfw_core::Backend::load(&k, &rs, &opts).unwrap();
            // A ban made at run time, then a reload: both stay.
            pbxfw_nft::netlink::update_set(
                "pbxfw",
                "ban6",
                pbxfw_nft::netlink::SetShape::Hash,
                pbxfw_core::Op::Add,
                &[Element {
                    prefix: "2001:db8:5::/64".parse().unwrap(),
                    timeout: None,
                }],
            )
            .unwrap();
            pbxfw_core::Backend::load(&k, &rs, &Default::default()).unwrap();
        });
        let text = ns.run(&["nft", "list", "table", "inet", "pbxfw"]);
        assert!(
            text.contains("198.51.100.7 timeout 10m expires"),
            "{loader:?}: {text}"
        );
        assert!(text.contains("2001:db8:5::"), "{loader:?}: {text}");
        // Remaining times differ by the seconds between the loads.
        let cleaned: String = text
            .lines()
            .map(|l| l.split(" expires ").next().unwrap().to_string() + "\n")
            .collect();
        listed.push(cleaned);
    }
    assert_eq!(listed[0], listed[1]);
}

/// Load, over netlink in `ns`, a ruleset the kernel refuses at its last message: more seeds
/// than a set holds, which only the kernel counts.
fn load_refused_at_its_last_message(
    ns: &common::Netns,
) -> Result<(), pbxfw_nft::netlink::ruleset::LoadError> {
    let tiny = format!(
        "{}set tiny4 ipv4 dynamic key=32 size=1 timeout=60 \"tiny\"\n",
        EVERY_STATEMENT
    );
    let bad = pbxfw_core::parse_ir(&tiny).unwrap_or_else(|e| panic!("{e}"));
    let seeds: BTreeMap<String, Vec<Element>> = [(
        "tiny4".to_string(),
        ["192.0.2.1", "192.0.2.2"]
            .iter()
            .map(|a| Element {
                prefix: a.parse().unwrap(),
                timeout: None,
            })
            .collect(),
    )]
    .into();
    common::in_netns(ns, move || {
        pbxfw_nft::netlink::ruleset::load(&bad, &Options::default(), &seeds, None)
    })
}

#[test]
fn the_netlink_load_is_one_transaction() {
    if common::skipped() {
        return;
    }
    let ns = common::Netns::new("paths-txn");
    let good = pbxfw_core::parse_ir(EVERY_STATEMENT).unwrap();
    load(&ns, &good, Loader::Netlink, false);
    let before = listing(&ns);
    // Nothing of a ruleset the kernel refuses may stay.
    let err =
        load_refused_at_its_last_message(&ns).expect_err("two elements went into a set of one");
    assert!(err.to_string().contains("set tiny4"), "{err}");
    assert_eq!(listing(&ns), before);
}

/// A new load declares each set once and deletes nothing (`Start::Fresh` in the encoder). A
/// table that appears between the question "is it there?" and the batch must not turn the
/// load into a union with what is there: the kernel refuses the exclusive table, and the
/// reload idiom replaces everything exactly.
#[test]
fn a_table_that_appeared_meanwhile_is_still_replaced_exactly() {
    if common::skipped() {
        return;
    }
    let ns = common::Netns::new("paths-appeared");
    let wanted = pbxfw_core::parse_ir(EVERY_STATEMENT).unwrap();
    load(&ns, &wanted, Loader::Netlink, false);
    let exact = listing(&ns);
    // What another writer left: other static elements, another map entry.
    let other = EVERY_STATEMENT
        .replace("192.0.2.9 \"\"", "203.0.113.5 \"\"")
        .replace("10.0.1.0/24 zone_a", "10.0.9.0/24 zone_b");
    let other = pbxfw_core::parse_ir(&other).unwrap();
    load(&ns, &other, Loader::Netlink, false);
    assert_ne!(listing(&ns), exact);
    let fp = wanted.fingerprint();
    common::in_netns(&ns, move || {
        pbxfw_nft::netlink::ruleset::load_as(
            &wanted,
            &Options::default(),
            &BTreeMap::new(),
            &fp,
            true,
        )
    })
    .unwrap();
    assert_eq!(listing(&ns), exact);
}

/// A new load the kernel refuses leaves no table behind.
#[test]
fn a_refused_new_load_leaves_nothing() {
    if common::skipped() {
        return;
    }
    let ns = common::Netns::new("paths-refnew");
    assert!(load_refused_at_its_last_message(&ns).is_err());
    assert_eq!(ns.run(&["nft", "list", "tables"]).trim(), "");
}

mod random {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn random_policies_load_alike(doc in pbxfw_testkit::gen::policy_doc()) {
            if common::skipped() {
                return Ok(());
            }
            let text = serde_json::to_string(&doc).unwrap();
            let Ok(policy) = pbxfw_core::Policy::from_json(&text) else { return Ok(()) };
            let Ok(valid) = policy.validate() else { return Ok(()) };
            assert_same("paths-rand", "random policy", &compile(&valid), false);
        }
    }
}
