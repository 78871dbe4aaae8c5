//! The assertions shared by the pbxfw fuzz targets.
//!
//! Each function takes the fuzzer's input as text and panics when an invariant breaks; inputs
//! the pipeline rightly refuses (syntax errors, invalid policies, IR that does not verify)
//! return quietly. `pbxfw-core/tests/fuzz_regressions.rs` replays committed crashers through
//! the same checks (minus the nft lowering, which the core cannot depend on).
#![forbid(unsafe_code)]

use pbxfw_core::Ruleset;
use pbxfw_core::{compile, eval, DynamicState, Packet, Policy, Proto};

/// Which syntax a policy input is in.
#[derive(Debug, Clone, Copy)]
pub enum Syntax {
    /// `Policy::from_toml`.
    Toml,
    /// `Policy::from_json`.
    Json,
}

/// A policy text that parses and validates must compile to IR that verifies, lowers to nft,
/// and survives the IR text round trip.
pub fn check_policy(syntax: Syntax, text: &str) {
    let parsed = match syntax {
        Syntax::Toml => Policy::from_toml(text),
        Syntax::Json => Policy::from_json(text),
    };
    let Ok(policy) = parsed else { return };
    let Ok(valid) = policy.validate() else { return };
    let rs = compile(&valid);
    if let Err(e) = pbxfw_core::verify_ir(&rs) {
        panic!("compiled IR does not verify: {e}\n{}", rs.to_text());
    }
    if let Err(e) = pbxfw_nft::lower(&rs, &pbxfw_nft::Options::default()) {
        panic!(
            "a valid policy does not lower to nft: {e}\n{}",
            rs.to_text()
        );
    }
    check_netlink_load(&rs, true);
    let text = rs.to_text();
    match pbxfw_core::parse_ir(&text) {
        Ok(back) => assert!(
            back == rs,
            "IR text round trip changed the ruleset:\n{text}"
        ),
        Err(e) => panic!("printed IR does not parse back: {e}\n{text}"),
    }
}

/// IR text that parses must print to text that parses to the same ruleset and prints the same;
/// IR that verifies must lower (to a script or an `Unsupported` error) and evaluate without
/// panicking.
pub fn check_ir(text: &str) {
    let Ok(rs) = pbxfw_core::parse_ir(text) else { return };
    let printed = rs.to_text();
    let again: Ruleset = match pbxfw_core::parse_ir(&printed) {
        Ok(r) => r,
        Err(e) => panic!("printed IR does not parse back: {e}\n{printed}"),
    };
    assert!(again == rs, "print/parse changed the ruleset:\n{printed}");
    assert_eq!(again.to_text(), printed, "printing is not stable");
    if pbxfw_core::verify_ir(&rs).is_ok() {
        let lowered = pbxfw_nft::lower(&rs, &pbxfw_nft::Options::default()).is_ok();
        check_netlink_load(&rs, lowered);
        // The evaluator must not panic on verified IR either; a few packets reach most paths.
        let state = DynamicState::default();
        for (iif, src, proto, dport) in [
            ("eth0", "203.0.113.10", Proto::Udp, Some(5060)),
            ("eth1", "192.168.1.7", Proto::Tcp, Some(22)),
            ("lo", "::1", Proto::Icmpv6, None),
            ("eth0", "2001:db8::1", Proto::Udp, Some(10000)),
        ] {
            let _ = eval(
                &rs,
                &Packet::new(iif, src.parse().unwrap(), proto, dport),
                &state,
            );
        }
    }
}

/// An Asterisk configuration tree, given as one text of files separated by lines
/// `--- NAME` (the first file is `pjsip.conf` when no header comes first). Discovery must not
/// panic; what it prints as TOML must parse and validate as a policy equal to its JSON
/// fragment; merging it into the default policy must leave a policy that validates.
pub fn check_asterisk(text: &str) {
    use pbxfw_core::asterisk_conf::Files;

    struct Tree(Vec<(String, String)>);
    impl Files for Tree {
        fn read(&self, pattern: &str) -> Vec<(String, String)> {
            let prefix = pattern.strip_suffix('*');
            self.0
                .iter()
                .filter(|(n, _)| match prefix {
                    Some(p) => n.starts_with(p),
                    None => n == pattern,
                })
                .cloned()
                .collect()
        }
    }
    let mut files: Vec<(String, String)> = Vec::new();
    let mut name = "pjsip.conf".to_string();
    let mut body = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("--- ") {
            files.push((std::mem::replace(&mut name, n.trim().to_string()), std::mem::take(&mut body)));
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    files.push((name, body));
    let found = pbxfw_core::discover(&Tree(files));
    let toml = found.to_toml("/fuzz");
    let from_toml = Policy::from_toml(&toml)
        .unwrap_or_else(|e| panic!("discovery printed TOML that does not parse: {e}\n{toml}"))
        .validate()
        .unwrap_or_else(|e| panic!("discovery printed a policy that does not validate: {e:?}\n{toml}"));
    let from_json = Policy::from_value(found.to_policy())
        .validate()
        .expect("the JSON fragment validates");
    assert_eq!(from_toml.pbx, from_json.pbx);
    assert_eq!(from_toml.services, from_json.services);
    let _ = found.to_json().to_string();
    let mut policy = Policy::from_toml(pbxfw_core::DEFAULT_POLICY_TOML).expect("default parses");
    policy.merge_discovery(&found);
    policy.validate().expect("the default policy with a discovery merged validates");
}

/// A DNS reply from an untrusted server (and the same bytes as a resolv.conf): parsing and
/// interpreting it must not panic, whatever the bytes; what `answer_for` accepts has bounded, sorted, deduplicated contents.
pub fn check_dns(data: &[u8]) {
    use pbxfw_core::{answer_for, encode_query, parse_response, DnsRecordType as RecordType, DnsTracker as Tracker};

    // The same bytes as resolv.conf text: at most three servers, bounded timeout and attempts.
    let r = pbxfw_host::dns::Resolver::from_resolv_conf(&String::from_utf8_lossy(data));
    assert!(!r.servers().is_empty() && r.servers().len() <= 3);
    assert!((1..=30).contains(&r.timeout().as_secs()) && (1..=5).contains(&r.attempts()));
    let Ok(resp) = parse_response(data) else {
        return;
    };
    for q in &resp.questions {
        let _ = encode_query(resp.id, &q.name, RecordType::A);
    }
    let names: Vec<String> = resp
        .questions
        .iter()
        .map(|q| q.name.clone())
        .chain(resp.answers.iter().map(|r| r.name.clone()))
        .take(4)
        .collect();
    let mut tracker = Tracker::new(Default::default());
    tracker.set_names(names.iter().map(|n| (n.clone(), true)));
    for name in &names {
        for rtype in [RecordType::A, RecordType::Aaaa, RecordType::Srv] {
            if let Ok(a) = answer_for(&resp, name, rtype) {
                assert!(a.addresses.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
                assert!(a.addresses.len() <= resp.answers.len());
            }
        }
    }
    for lookup in tracker.due(1000) {
        let result = answer_for(&resp, &lookup.name, lookup.rtype);
        tracker.on_result(&lookup, result, 1000);
    }
    let snap = tracker.snapshot();
    let json = serde_json::to_string(&snap).expect("snapshots serialise");
    let back: pbxfw_core::DnsSnapshot = serde_json::from_str(&json).expect("and parse back");
    assert_eq!(back, snap);
}

/// A responsive state snapshot as the daemon reads it back from its state file (its own file,
/// but one a crash, a full disk or a hand edit can damage): restoring must never panic; what
/// restores must print and restore back equal, and run on through failures, registrations,
/// unregistrations and ticks.
pub fn check_snapshot(data: &[u8]) {
    use pbxfw_core::{AuthFailure, SecurityEvent};
    use pbxfw_core::Machine;
    use std::net::IpAddr;

    let Ok(mut m) = Machine::restore(&String::from_utf8_lossy(data)) else {
        return;
    };
    let again = Machine::restore(&m.snapshot()).expect("a snapshot restores");
    assert_eq!(again, m, "snapshot round trip");
    let now = 1_795_000_000u64;
    let sources: [IpAddr; 3] = [
        "203.0.113.9".parse().unwrap(),
        "2001:db8::9".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
    ];
    for (i, source) in sources.iter().enumerate() {
        for k in 0..50u64 {
            let reason = [
                AuthFailure::UnknownAccount,
                AuthFailure::WrongPassword,
                AuthFailure::Other,
            ][k as usize % 3];
            let event = SecurityEvent::AuthFailed {
                source: *source,
                account: Some("100".into()),
                reason,
                user_agent: (k == 49).then(|| "friendly-scanner".into()),
                protocol: None,
            };
            let _ = m.on_event(&event, now + k + i as u64);
        }
        let _ = m.on_event(
            &SecurityEvent::Registered {
                source: *source,
                account: "100".into(),
                expires: 60,
            },
            now + 60,
        );
        let _ = m.on_event(
            &SecurityEvent::Unregistered {
                source: *source,
                account: "100".into(),
            },
            now + 61,
        );
    }
    let _ = m.tick(now + 90 * 86_400);
    let _ = m.bans(now);
    let _ = m.replay_actions(now);
    assert_eq!(
        Machine::restore(&m.snapshot()).expect("a snapshot restores"),
        m,
        "snapshot round trip after use"
    );
}

/// A CrowdSec decision stream as the LAPI (or anyone between) could send it: parsing never
/// panics, keeps at most the bound, keeps only remote sources no wider than a /16 (IPv4) or a
/// /32 (IPv6) with a positive duration of at most a year; the fleet table built from it holds
/// disjoint kernel elements and never one the guard refuses. See docs/fleet.md.
pub fn check_fleet_stream(data: &[u8]) {
    use pbxfw_core::{parse_stream, FleetTable, Prefix, MAX_FLEET_SECS};
    let text = String::from_utf8_lossy(data);
    let Ok(pull) = parse_stream(&text, 64) else {
        return;
    };
    assert!(pull.new.len() <= 64);
    for d in &pull.new {
        assert!(d.remaining >= 1 && d.remaining <= MAX_FLEET_SECS);
        let min = if d.prefix.family() == pbxfw_core::Family::Ipv4 { 16 } else { 32 };
        assert!(d.prefix.prefix_len() >= min, "{}", d.prefix);
        assert!(!d.prefix.addr().is_loopback() && !d.prefix.addr().is_multicast());
    }
    let mut t = FleetTable::default();
    t.apply(&pull, true, 1_000);
    t.apply(&pull, false, 1_001);
    let guarded: Prefix = "198.51.100.7".parse().unwrap();
    let (want, refused) = t.desired(1_001, |p| {
        (p.covers(&guarded) || guarded.covers(p)).then(|| "guarded".to_string())
    });
    for w in want.windows(2) {
        let (a, b) = (w[0].0, w[1].0);
        assert!(a.family() != b.family() || a.end() < b.start(), "{a} and {b} overlap");
    }
    for (p, end) in &want {
        assert!(!p.covers(&guarded) && !guarded.covers(p));
        assert!(*end > 1_001);
    }
    assert!(refused.iter().all(|r| r.prefix.covers(&guarded) || guarded.covers(&r.prefix)));
}

/// `wg show all dump` (docs/vpn.md): parsing never panics and skips what it does not
/// understand; the tracker registers only endpoints of keys the policy maps, each session
/// at most once per key, for at most the idle bound and a poll, and a second reading of the
/// same dump changes nothing.
pub fn check_wg_dump(data: &[u8]) {
    use pbxfw_core::SecurityEvent;
    use pbxfw_runtime::wireguard::{parse_dump, Tracker};
    let text = String::from_utf8_lossy(data);
    let (peers, _odd) = parse_dump(&text);
    for p in &peers {
        assert!(!p.public_key.contains('\t') && !p.public_key.contains('\n'));
    }
    // Every key the dump names belongs to a user, but one.
    let users: std::collections::HashMap<String, String> = peers
        .iter()
        .skip(1)
        .map(|p| (p.public_key.clone(), "alice".to_string()))
        .collect();
    let now = 1_800_000_000;
    let mut t = Tracker::new(180, 5);
    let first = t.observe(&peers, &users, now);
    for e in &first {
        match e {
            SecurityEvent::Registered {
                source, expires, ..
            } => {
                assert!(*expires >= 1 && *expires <= 185);
                assert!(peers
                    .iter()
                    .any(|p| p.endpoint == Some(*source) && users.contains_key(&p.public_key)));
            }
            other => panic!("a first reading only registers: {other:?}"),
        }
    }
    assert!(first.len() <= users.len());
    assert!(t.observe(&peers, &users, now).is_empty());
}

/// The netlink load of `rs` is built exactly when the text lowering is (`lowers`), and every
/// message is whole: its length field is its length, a multiple of 4, and its attributes fit.
fn check_netlink_load(rs: &Ruleset, lowers: bool) {
    let built = pbxfw_nft::netlink::ruleset::messages(
        rs,
        &pbxfw_nft::Options::default(),
        &Default::default(),
    );
    assert_eq!(
        built.is_ok(),
        lowers,
        "the netlink load and the text lowering disagree: {:?}\n{}",
        built.as_ref().err(),
        rs.to_text()
    );
    // The new load's batch (no table yet) is built exactly when the reload's is, and removes
    // nothing.
    let fresh = pbxfw_nft::netlink::ruleset::new_load_messages(
        rs,
        &pbxfw_nft::Options::default(),
        &Default::default(),
    );
    assert_eq!(fresh.is_ok(), built.is_ok());
    let fresh = fresh.unwrap_or_default();
    assert!(fresh
        .iter()
        .all(|(_, w)| !w.starts_with("delete ") && !w.starts_with("flush ")));
    for (m, what) in built.into_iter().flatten().chain(fresh) {
        let len = u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, m.len(), "{what}: length field");
        assert_eq!(m.len() % 4, 0, "{what}: alignment");
        let mut at = 20;
        while at + 4 <= m.len() {
            let alen = u16::from_ne_bytes([m[at], m[at + 1]]) as usize;
            assert!(alen >= 4 && at + alen <= m.len(), "{what}: attribute overruns");
            at += (alen + 3) & !3;
        }
        assert_eq!(at, m.len(), "{what}: trailing bytes");
    }
}
