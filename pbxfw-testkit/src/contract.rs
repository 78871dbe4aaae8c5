//! The backend contract: what every [`Backend`] must do, as one sequence of checks run against
//! nft, iptables-nft, iptables-legacy (each in a network namespace of its own) and the
//! in-memory backend. The runtime and the daemon rely on exactly this, nothing more: that is
//! what lets them be tested on the in-memory backend without root.

use pbxfw_core::names;
use pbxfw_core::Family;
use pbxfw_core::{apply, sync, ApplyOptions, Backend, BackendError, Op, SetEdit, Status};

use crate::{element, ruleset};

const BASE: &str = "[interfaces]\neth0 = \"internet\"\neth1 = \"local\"\n";

fn policy(blacklist: &[&str], extra: &str) -> pbxfw_core::Ruleset {
    let entries: Vec<String> = blacklist.iter().map(|e| format!("{e:?}")).collect();
    ruleset(&format!(
        "{BASE}{extra}[blacklist]\nentries = [{}]\n",
        entries.join(", ")
    ))
}

fn set<'a>(s: &'a Status, name: &str) -> &'a pbxfw_core::SetStatus {
    s.sets
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("no set {name} in the status: {s:?}"))
}

fn holds(s: &Status, name: &str, addr: &str) -> bool {
    set(s, name)
        .elements
        .iter()
        .any(|e| e.element == addr || e.element.starts_with(&format!("{addr}/")))
}

/// Run the contract against `k`, which must start with pbxfw not loaded. Panics naming the
/// first broken promise. Leaves pbxfw not loaded.
pub fn check(k: &dyn Backend) {
    let name = k.name();
    let ctx = |what: &str| format!("{name}: {what}");
    let a = policy(&["192.0.2.66", "10.9.0.0/16"], "");
    let b = policy(&["192.0.2.66", "192.0.2.67", "10.9.0.0/16"], "");
    let c = policy(&["192.0.2.67", "10.8.0.0/16"], "");
    let d = policy(&["192.0.2.67", "10.8.0.0/16"], "");
    let d = {
        // More than static elements: another interface.
        let more = ruleset(&format!(
            "{BASE}eth2 = \"local\"\n[blacklist]\nentries = [\"192.0.2.67\", \"10.8.0.0/16\"]\n"
        ));
        assert_ne!(more.fingerprint(), d.fingerprint());
        more
    };
    let none = ApplyOptions::default();
    let ban4 = names::ban(Family::Ipv4);
    let ban6 = names::ban(Family::Ipv6);
    let reg4 = names::registered(Family::Ipv4);
    let hosts4 = names::blacklist_hosts(Family::Ipv4);
    let nets4 = names::blacklist(Family::Ipv4);

    // Not loaded.
    assert_eq!(
        k.fingerprint().unwrap(),
        None,
        "{}",
        ctx("fingerprint before")
    );
    assert!(!k.status().unwrap().loaded, "{}", ctx("status before"));
    assert!(!k.disable().unwrap(), "{}", ctx("disable before"));
    assert!(
        k.update_set(&a, &ban4, Op::Add, &[element("192.0.2.7", Some(60))])
            .is_err(),
        "{}",
        ctx("an update with nothing loaded")
    );

    // Apply, verified.
    let applied = apply(k, &a, &none).unwrap_or_else(|e| panic!("{}: {e}", ctx("apply a")));
    assert_eq!(applied.fingerprint, a.fingerprint(), "{}", ctx("apply a"));
    let s = k.status().unwrap();
    assert!(s.loaded && s.fingerprint.as_deref() == Some(&*a.fingerprint()));
    assert_eq!(set(&s, &hosts4).size, 1, "{}", ctx("static hosts"));
    assert_eq!(set(&s, &nets4).size, 1, "{}", ctx("static networks"));
    let instance = k.instance().unwrap();

    // Dynamic elements: added with a timeout, removed, absent removals are no error.
    k.update_set(&a, &ban4, Op::Add, &[element("192.0.2.7", Some(600))])
        .unwrap_or_else(|e| panic!("{}: {e}", ctx("ban")));
    k.update_set(&a, &ban6, Op::Add, &[element("2001:db8:1:2::/64", None)])
        .unwrap_or_else(|e| panic!("{}: {e}", ctx("ban6")));
    k.update_set(
        &a,
        &reg4,
        Op::Add,
        &[
            element("198.51.100.8", Some(120)),
            element("198.51.100.9", Some(120)),
        ],
    )
    .unwrap_or_else(|e| panic!("{}: {e}", ctx("registrations")));
    k.update_set(&a, &reg4, Op::Remove, &[element("198.51.100.9", None)])
        .unwrap();
    k.update_set(
        &a,
        &reg4,
        Op::Remove,
        &[
            element("198.51.100.9", None),
            element("198.51.100.10", None),
        ],
    )
    .unwrap_or_else(|e| panic!("{}: {e}", ctx("removing absent elements")));
    let s = k.status().unwrap();
    assert!(holds(&s, &ban4, "192.0.2.7"), "{}: {s:?}", ctx("ban held"));
    let ttl = set(&s, &ban4).elements[0].expires_in;
    assert!(
        ttl.is_some_and(|t| (500..=600).contains(&t)),
        "{}: {ttl:?}",
        ctx("ban timeout")
    );
    assert!(holds(&s, &ban6, "2001:db8:1:2::"), "{}", ctx("ban6 held"));
    assert_eq!(set(&s, &reg4).size, 1, "{}", ctx("one registration left"));
    assert!(
        matches!(
            k.update_set(&a, "no_such_set", Op::Add, &[element("192.0.2.7", None)]),
            Err(BackendError::NoSet(_))
        ),
        "{}",
        ctx("an unknown set")
    );

    // Another apply keeps the dynamic elements and the instance; static sets are replaced.
    apply(k, &b, &none).unwrap_or_else(|e| panic!("{}: {e}", ctx("apply b")));
    let s = k.status().unwrap();
    assert!(
        holds(&s, &ban4, "192.0.2.7"),
        "{}",
        ctx("ban kept by apply")
    );
    assert_eq!(
        set(&s, &reg4).size,
        1,
        "{}",
        ctx("registration kept by apply")
    );
    assert_eq!(set(&s, &hosts4).size, 2, "{}", ctx("static hosts replaced"));
    assert_eq!(k.instance().unwrap(), instance, "{}", ctx("instance kept"));

    // Static elements only: sent incrementally, verified.
    let synced = sync(k, &b, &c, &none).unwrap_or_else(|e| panic!("{}: {e}", ctx("sync b→c")));
    assert!(synced.incremental, "{}: {synced:?}", ctx("sync b→c"));
    assert_eq!(
        (synced.added, synced.removed),
        (1, 2),
        "{}",
        ctx("sync counts")
    );
    assert_eq!(k.fingerprint().unwrap(), Some(c.fingerprint()));
    let s = k.status().unwrap();
    assert_eq!(set(&s, &hosts4).size, 1, "{}", ctx("hosts after sync"));
    assert_eq!(set(&s, &nets4).size, 1, "{}", ctx("networks after sync"));
    assert!(holds(&s, &ban4, "192.0.2.7"), "{}", ctx("ban kept by sync"));

    // More than that: a full apply, saying why; and when the kernel does not hold `old`.
    let synced = sync(k, &c, &d, &none).unwrap();
    assert!(
        !synced.incremental && synced.reason.is_some(),
        "{}",
        ctx("sync c→d")
    );
    assert_eq!(k.fingerprint().unwrap(), Some(d.fingerprint()));
    let synced = sync(k, &c, &b, &none).unwrap();
    assert!(
        !synced.incremental
            && synced
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("not the one")),
        "{}: {synced:?}",
        ctx("sync from a ruleset the kernel does not hold")
    );

    // Seeds go in with the load; a bad one refuses the whole load, which changes nothing.
    let seeded = ApplyOptions {
        seed: [(ban4.clone(), vec![element("198.51.100.77/32", Some(300))])].into(),
        ..Default::default()
    };
    apply(k, &a, &seeded).unwrap_or_else(|e| panic!("{}: {e}", ctx("seeded apply")));
    assert!(holds(&k.status().unwrap(), &ban4, "198.51.100.77"));
    let bad = ApplyOptions {
        seed: [(ban4.clone(), vec![element("2001:db8::1/128", None)])].into(),
        ..Default::default()
    };
    assert!(
        matches!(apply(k, &b, &bad), Err(BackendError::Check(_))),
        "{}",
        ctx("a bad seed")
    );
    assert_eq!(
        k.fingerprint().unwrap(),
        Some(a.fingerprint()),
        "{}",
        ctx("a refused load changed the fingerprint")
    );
    assert!(holds(&k.status().unwrap(), &ban4, "192.0.2.7"));

    // Edits of dynamic sets (the fleet's interval sets): networks and addresses with their
    // own timeouts; a flush then additions replace the set; `set_elements` reads one set.
    let f = ruleset(&format!(
        "{BASE}[fleet]\nurl = \"https://192.0.2.1:8080\"\napi_key_file = \"/k\"\n"
    ));
    apply(k, &f, &none).unwrap();
    let fleet4 = names::fleet(Family::Ipv4);
    let fleet6 = names::fleet(Family::Ipv6);
    let timed = |p: &str, secs: u64| pbxfw_core::Element {
        prefix: p.parse().unwrap(),
        timeout: Some(std::time::Duration::from_secs(secs)),
    };
    k.edit_sets(
        &f,
        &[
            SetEdit::Add(
                fleet4.clone(),
                vec![timed("198.51.100.0/24", 3600), timed("203.0.113.7", 60)],
            ),
            SetEdit::Add(fleet6.clone(), vec![timed("2001:db8:1::/48", 600)]),
        ],
    )
    .unwrap_or_else(|e| panic!("{}", ctx(&format!("fleet edits: {e}"))));
    let s = k.status().unwrap();
    assert!(
        holds(&s, &fleet4, "198.51.100.0"),
        "{}: {s:?}",
        ctx("a range")
    );
    assert!(holds(&s, &fleet4, "203.0.113.7"), "{}", ctx("an address"));
    assert!(
        holds(&s, &fleet6, "2001:db8:1::"),
        "{}",
        ctx("an IPv6 range")
    );
    let without = k.status_except(std::slice::from_ref(&fleet4)).unwrap();
    assert!(
        !without.sets.iter().any(|x| x.name == fleet4) && holds(&without, &fleet6, "2001:db8:1::"),
        "{}",
        ctx("status without one set")
    );
    let one = k.set_elements(&fleet4).unwrap();
    assert_eq!(one.len(), 2, "{}: {one:?}", ctx("set_elements"));
    assert!(one.iter().all(|e| e.expires_in.is_some_and(|t| t <= 3600)));
    k.edit_sets(
        &f,
        &[
            SetEdit::Flush(fleet4.clone()),
            SetEdit::Flush(fleet6.clone()),
            SetEdit::Add(fleet4.clone(), vec![timed("192.0.2.128/25", 60)]),
        ],
    )
    .unwrap();
    let s = k.status().unwrap();
    assert_eq!(set(&s, &fleet4).size, 1, "{}", ctx("flush then add"));
    assert_eq!(set(&s, &fleet6).size, 0);
    k.edit_sets(
        &f,
        &[SetEdit::Remove(
            fleet4.clone(),
            vec![timed("192.0.2.128/25", 60)],
        )],
    )
    .unwrap();
    assert_eq!(
        set(&k.status().unwrap(), &fleet4).size,
        0,
        "{}",
        ctx("remove")
    );

    // Disable: everything goes; loaded again, the sets are new.
    assert!(k.disable().unwrap(), "{}", ctx("disable"));
    assert!(!k.disable().unwrap(), "{}", ctx("disable again"));
    assert_eq!(k.fingerprint().unwrap(), None);
    apply(k, &a, &none).unwrap();
    assert!(!holds(&k.status().unwrap(), &ban4, "192.0.2.7"));
    if instance.is_some() {
        assert_ne!(k.instance().unwrap(), instance, "{}", ctx("instance anew"));
    }
    assert!(k.disable().unwrap());
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_memory_backend_keeps_the_contract() {
        super::check(&crate::memory::Memory::new());
    }
}
