//! The responsive state machine: scenarios from docs/responsive.md and properties over random event
//! streams (no ban without its threshold inside its window, protected sources never banned,
//! bans expire, snapshot and restore lose nothing).

use std::net::IpAddr;

use pbxfw_core::Policy;
use pbxfw_core::Prefix;
use pbxfw_core::{Action, Machine, MachineConfig as Config};
use pbxfw_core::{AuthFailure, SecurityEvent};
use proptest::prelude::*;

const POLICY: &str = r#"
[interfaces]
eth0 = "internet"
[[networks]]
source = "192.0.2.0/24"
zone = "trusted"
[[pbx.trunks]]
name = "provider"
protocol = "pjsip"
host = "203.0.113.10"
[[users]]
name = "333"
services = ["https", "ssh"]
"#;

fn machine() -> Machine {
    let policy = Policy::from_toml(POLICY).unwrap().validate().unwrap();
    Machine::new(Config::from_policy(&policy))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fail(src: &str, account: &str, reason: AuthFailure, ua: Option<&str>) -> SecurityEvent {
    SecurityEvent::AuthFailed {
        source: ip(src),
        account: Some(account.into()),
        reason,
        user_agent: ua.map(str::to_string),
        protocol: None,
    }
}

fn bans(actions: &[Action]) -> Vec<&Action> {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Ban { .. }))
        .collect()
}

const T0: u64 = 1_795_000_000;

#[test]
fn enumeration_bans_after_three_unknown_accounts() {
    let mut m = machine();
    let e = |acc| fail("198.51.100.7", acc, AuthFailure::UnknownAccount, None);
    assert!(m.on_event(&e("100"), T0).is_empty());
    assert!(m.on_event(&e("101"), T0 + 5).is_empty());
    let a = m.on_event(&e("102"), T0 + 10);
    match bans(&a)[..] {
        [Action::Ban { prefix, until, .. }] => {
            assert_eq!(prefix.to_string(), "198.51.100.7");
            assert_eq!(*until, T0 + 10 + 86400);
        }
        _ => panic!("no ban: {a:?}"),
    }
    // Slow enumeration, one try every 5 minutes, is not banned by this rule.
    let mut m = machine();
    for i in 0..10 {
        let a = m.on_event(
            &fail("198.51.100.8", "x", AuthFailure::UnknownAccount, None),
            T0 + i * 300,
        );
        assert!(bans(&a).is_empty(), "banned at try {i}");
    }
}

#[test]
fn attack_tools_are_banned_at_once() {
    let mut m = machine();
    let a = m.on_event(
        &fail(
            "198.51.100.9",
            "100",
            AuthFailure::WrongPassword,
            Some("friendly-scanner"),
        ),
        T0,
    );
    assert_eq!(bans(&a).len(), 1);
    let a = m.on_event(
        &SecurityEvent::ScannerSeen {
            source: ip("2001:db8:1:2::99"),
            user_agent: Some("sipvicious".into()),
        },
        T0,
    );
    match bans(&a)[..] {
        [Action::Ban { prefix, .. }] => assert_eq!(prefix.to_string(), "2001:db8:1:2::/64"),
        _ => panic!("{a:?}"),
    }
}

#[test]
fn a_phone_with_a_wrong_password_is_clamped_not_banned_and_registers_when_fixed() {
    let mut m = machine();
    let phone = "198.51.100.20";
    let mut clamped = false;
    // Retrying every 30 s for 10 minutes.
    for i in 0..=20 {
        let a = m.on_event(
            &fail(
                phone,
                "300",
                AuthFailure::WrongPassword,
                Some("Yealink SIP-T46S"),
            ),
            T0 + i * 30,
        );
        assert!(bans(&a).is_empty(), "banned at retry {i}");
        clamped |= a.iter().any(|a| matches!(a, Action::Clamp { .. }));
    }
    assert!(clamped, "never clamped");
    let a = m.on_event(
        &SecurityEvent::Registered {
            source: ip(phone),
            account: "300".into(),
            expires: 3600,
        },
        T0 + 630,
    );
    assert!(
        a.iter().any(|a| matches!(a, Action::Unclamp { .. })),
        "{a:?}"
    );
    assert!(a
        .iter()
        .any(|a| matches!(a, Action::AllowRegistered { until, .. } if *until == T0 + 630 + 3600)));
}

/// The kernel's clamp element outlives the failures: a source that keeps failing stays in the
/// slow lane (its element written only at the first clamp used to expire after ten minutes
/// while the failures went on), and the element is renewed now and then, not at every failure.
#[test]
fn a_clamp_is_renewed_while_the_failures_go_on() {
    let mut m = machine();
    let src = "198.51.100.21";
    let mut kernel_until = None::<u64>;
    let mut writes = 0;
    // One wrong password a minute for 35 minutes (under the ban threshold of 40 an hour).
    for i in 0..35u64 {
        let now = T0 + i * 60;
        if let Some(until) = kernel_until {
            assert!(
                until > now,
                "the kernel's clamp lapsed at minute {i} while failing"
            );
        }
        let a = m.on_event(
            &fail(
                src,
                "300",
                AuthFailure::WrongPassword,
                Some("Yealink SIP-T46S"),
            ),
            now,
        );
        assert!(bans(&a).is_empty(), "banned at minute {i}");
        for action in &a {
            if let Action::Clamp { until, .. } = action {
                assert!(*until > now);
                kernel_until = Some(*until);
                writes += 1;
            }
        }
    }
    assert!(kernel_until.is_some(), "never clamped");
    // Renewed once it has under half its 10 minutes left: about every 5 minutes.
    assert!(
        (6..=10).contains(&writes),
        "{writes} clamp writes in 35 minutes"
    );
    // When the failures stop, the clamp ends with the element.
    let last = kernel_until.unwrap();
    assert!(last <= T0 + 34 * 60 + 600, "{last}");
}

fn registered(src: &str, account: &str, expires: u32) -> SecurityEvent {
    SecurityEvent::Registered {
        source: ip(src),
        account: account.into(),
        expires,
    }
}

/// A known device (its account registered from its address lately) whose password changed is
/// kept in the slow lane and reported, never banned for it, however long it retries; it is
/// listed as failing until it registers again.
#[test]
fn a_known_device_with_a_wrong_password_is_never_banned_for_it() {
    let mut m = machine();
    let phone = "198.51.100.22";
    m.on_event(&registered(phone, "300", 300), T0);
    m.tick(T0 + 400);
    let start = T0 + 600;
    let (mut clamps, mut reports) = (0, 0);
    // Retrying every 30 s for two hours: 240 wrong passwords.
    for i in 0..240u64 {
        let a = m.on_event(
            &fail(
                phone,
                "300",
                AuthFailure::WrongPassword,
                Some("Yealink SIP-T46S"),
            ),
            start + i * 30,
        );
        assert!(bans(&a).is_empty(), "a known device banned at retry {i}");
        clamps += a
            .iter()
            .filter(|a| matches!(a, Action::Clamp { .. }))
            .count();
        reports += a
            .iter()
            .filter(|a| matches!(a, Action::ReportIdentity { reason, .. } if reason.contains("has the wrong password")))
            .count();
        m.tick(start + i * 30);
    }
    assert!(clamps >= 1, "never in the slow lane");
    assert_eq!(reports, 1, "announced once");
    let w = m.wrong_passwords();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((w[0].account.as_str(), w[0].since), ("300", start));
    // Fixed: it registers at once and is no longer listed.
    let a = m.on_event(&registered(phone, "300", 3600), start + 7200);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::AllowRegistered { .. })),
        "{a:?}"
    );
    assert!(m.wrong_passwords().is_empty());
    // A device never seen (or another account from the same address) is not known: banned at
    // the wrong-password threshold as before.
    let mut banned = false;
    for i in 0..40u64 {
        let a = m.on_event(
            &fail("198.51.100.23", "300", AuthFailure::WrongPassword, None),
            start + i * 30,
        );
        banned |= !bans(&a).is_empty();
    }
    assert!(banned, "an unknown device was never banned");
}

/// A source with a registered phone (a NAT, or the cracker's own registered account) guessing
/// other accounts' passwords: reported, then (at a cracker's pace, 20 a minute) its devices
/// lose their bypass of the kernel tiers, and at 60 in 10 minutes it is banned. What a forged
/// address could send (unknown accounts, a scanner's packet) never counts; a phone retrying a
/// wrong password every 30 s never gets that far; a restart does not give the bypass back.
#[test]
fn failures_for_other_accounts_end_a_registered_sources_bypass_then_ban_it() {
    let mut m = machine();
    let nat = "198.51.100.41";
    m.on_event(&registered(nat, "301", 3600), T0);
    let mut reports = 0;
    let mut revoked_at = None;
    let mut banned_at = None;
    for i in 0..80u64 {
        let now = T0 + 10 + i * 2;
        let a = m.on_event(
            &fail(
                nat,
                &format!("{}", 1000 + i % 7),
                AuthFailure::WrongPassword,
                Some("Z 5.4"),
            ),
            now,
        );
        reports += a
            .iter()
            .filter(|a| matches!(a, Action::ReportIdentity { .. }))
            .count();
        if a.iter()
            .any(|a| matches!(a, Action::Revoke { account, .. } if account == "301"))
        {
            assert!(revoked_at.is_none(), "revoked twice");
            revoked_at = Some(i + 1);
            // While its distrust lasts, neither a registration nor a restart gives the bypass
            // back.
            let again = m.on_event(&registered(nat, "301", 3600), now);
            assert!(
                !again
                    .iter()
                    .any(|a| matches!(a, Action::AllowRegistered { .. })),
                "{again:?}"
            );
            assert!(
                !m.replay_actions(now)
                    .iter()
                    .any(|a| matches!(a, Action::AllowRegistered { .. })),
                "a restart gave the bypass back"
            );
        }
        if !bans(&a).is_empty() {
            banned_at.get_or_insert(i + 1);
        }
    }
    assert_eq!(revoked_at, Some(20));
    assert_eq!(banned_at, Some(60));
    // Reported once per account and 10 minutes (7 accounts), plus the distrust: not at every
    // failure.
    assert!(reports <= 8, "{reports} reports");

    // What a forged address can send never counts toward distrust or a ban.
    let mut m = machine();
    m.on_event(&registered(nat, "301", 3600), T0);
    for i in 0..200u64 {
        for e in [
            fail(nat, "999", AuthFailure::UnknownAccount, None),
            SecurityEvent::ScannerSeen {
                source: ip(nat),
                user_agent: Some("friendly-scanner".into()),
            },
        ] {
            let a = m.on_event(&e, T0 + 1 + i);
            assert!(bans(&a).is_empty() && !a.iter().any(|a| matches!(a, Action::Revoke { .. })));
        }
    }

    // A new phone behind the NAT retrying a wrong password every 30 s for an hour: reported,
    // never distrusting or banning the site.
    let mut m = machine();
    m.on_event(&registered(nat, "301", 86_400), T0);
    for i in 0..120u64 {
        let a = m.on_event(
            &fail(nat, "302", AuthFailure::WrongPassword, None),
            T0 + 1 + i * 30,
        );
        assert!(
            bans(&a).is_empty() && !a.iter().any(|a| matches!(a, Action::Revoke { .. })),
            "at {i}"
        );
    }

    // The phone's own account failing at a cracker's pace while it is registered (the kernel
    // does not meter it): the bypass ends, but a known device is never banned for it.
    let mut m = machine();
    m.on_event(&registered(nat, "301", 3600), T0);
    let (mut revoked, mut banned) = (false, false);
    for i in 0..100u64 {
        let a = m.on_event(
            &fail(nat, "301", AuthFailure::WrongPassword, None),
            T0 + 1 + i,
        );
        revoked |= a.iter().any(|a| matches!(a, Action::Revoke { .. }));
        banned |= !bans(&a).is_empty();
    }
    assert!(revoked && !banned, "revoked {revoked}, banned {banned}");
    // Known devices and distrust survive a snapshot.
    let back = Machine::restore(&m.snapshot()).unwrap();
    assert_eq!(back, m);
}

#[test]
fn per_user_grants_follow_registrations() {
    let mut m = machine();
    let a = m.on_event(
        &SecurityEvent::Registered {
            source: ip("198.51.100.33"),
            account: "333".into(),
            expires: 600,
        },
        T0,
    );
    let Some(Action::AllowRegistered { grants, .. }) = a.first() else {
        panic!("{a:?}")
    };
    assert_eq!(grants, &["https", "ssh"]);
    let changes: Vec<String> = a[0]
        .set_changes(T0)
        .iter()
        .map(|c| format!("{} {} {:?}", c.set(), c.prefix, c.timeout))
        .collect();
    assert_eq!(
        changes,
        [
            "registered4 198.51.100.33 Some(600)",
            "grant_https4 198.51.100.33 Some(600)",
            "grant_ssh4 198.51.100.33 Some(600)",
        ]
    );
    let a = m.on_event(
        &SecurityEvent::Unregistered {
            source: ip("198.51.100.33"),
            account: "333".into(),
        },
        T0 + 10,
    );
    assert!(matches!(&a[..], [Action::Revoke { grants, .. }] if grants.len() == 2));
}

/// Registrations end one by one: an address stays registered while another account's
/// registration from it lasts, and a prefix (an IPv6 /64) while any address inside it has one.
#[test]
fn a_registration_ends_only_its_own_account_and_address() {
    let mut m = machine();
    let reg = |m: &mut Machine, src: &str, account: &str| {
        m.on_event(
            &SecurityEvent::Registered {
                source: ip(src),
                account: account.into(),
                expires: 3600,
            },
            T0,
        )
    };
    let unreg = |m: &mut Machine, src: &str, account: &str| {
        m.on_event(
            &SecurityEvent::Unregistered {
                source: ip(src),
                account: account.into(),
            },
            T0 + 10,
        )
    };
    // Registered in the reverse of their order: the snapshot still restores equal.
    reg(&mut m, "198.51.100.50", "302");
    reg(&mut m, "198.51.100.50", "301");
    assert_eq!(Machine::restore(&m.snapshot()).unwrap(), m);
    assert!(unreg(&mut m, "198.51.100.50", "301").is_empty());
    assert!(
        unreg(&mut m, "198.51.100.50", "301").is_empty(),
        "ended twice"
    );
    assert!(matches!(
        &unreg(&mut m, "198.51.100.50", "302")[..],
        [Action::Revoke { account, .. }] if account == "302"
    ));
    // Two phones in one /64; one leaves, the prefix still hosts a registered device and is
    // not banned for the failures of a third device in it.
    reg(&mut m, "2001:db8:5:6::a", "310");
    reg(&mut m, "2001:db8:5:6::b", "311");
    assert!(!unreg(&mut m, "2001:db8:5:6::a", "310").is_empty());
    for i in 0..6 {
        let a = m.on_event(
            &fail("2001:db8:5:6::c", "999", AuthFailure::UnknownAccount, None),
            T0 + 20 + i,
        );
        assert!(bans(&a).is_empty(), "the /64 was banned: {a:?}");
    }
    // When the last one leaves, it is an ordinary prefix again.
    unreg(&mut m, "2001:db8:5:6::b", "311");
    let banned = (0..6).any(|i| {
        !bans(&m.on_event(
            &fail("2001:db8:5:6::c", "999", AuthFailure::UnknownAccount, None),
            T0 + 30 + i,
        ))
        .is_empty()
    });
    assert!(banned);
}

#[test]
fn protected_and_nat_sources_are_reported_not_banned() {
    let mut m = machine();
    for (src, what) in [("192.0.2.5", "trusted network"), ("203.0.113.10", "trunk")] {
        let mut reported = false;
        for i in 0..10 {
            let a = m.on_event(
                &fail(
                    src,
                    "9",
                    AuthFailure::UnknownAccount,
                    Some("friendly-scanner"),
                ),
                T0 + i,
            );
            assert!(bans(&a).is_empty(), "{what} banned");
            reported |= a.iter().any(|a| matches!(a, Action::ReportIdentity { .. }));
        }
        assert!(reported, "{what} not reported");
    }
    // A NAT with a registered phone: a bad device behind it is reported, the site not banned.
    m.on_event(
        &SecurityEvent::Registered {
            source: ip("198.51.100.40"),
            account: "301".into(),
            expires: 3600,
        },
        T0,
    );
    let mut reports = 0;
    for i in 0..6 {
        let a = m.on_event(
            &fail("198.51.100.40", "999", AuthFailure::UnknownAccount, None),
            T0 + i,
        );
        assert!(bans(&a).is_empty(), "the NAT was banned");
        reports += a
            .iter()
            .filter(
                |a| matches!(a, Action::ReportIdentity { account: Some(acc), .. } if acc == "999"),
            )
            .count();
    }
    assert!(reports >= 1);
}

/// Everything an attacker could aim the machine at that it must never ban: an administrator,
/// a trunk or trusted network named by hostname (through its resolved address), loopback,
/// link-local (IPv6 /64 keys would take neighbour discovery with them), and a /64 that holds
/// a trunk. Each refusal is a report that names why.
#[test]
fn nothing_the_policy_protects_is_ever_banned() {
    let policy = Policy::from_toml(
        r#"
[settings]
admins = ["198.51.100.99"]
[[networks]]
source = "office.example"
zone = "trusted"
[[pbx.trunks]]
name = "carrier"
protocol = "pjsip"
host = "sip.carrier.example"
[[pbx.trunks]]
name = "v6"
protocol = "pjsip"
host = "2001:db8:77::10"
"#,
    )
    .unwrap()
    .validate()
    .unwrap();
    let mut m = Machine::new(Config::from_policy(&policy));
    m.set_resolved(vec![
        pbxfw_core::Protected {
            prefix: Prefix::host(ip("203.0.113.77")),
            why: "trunk carrier".into(),
        },
        pbxfw_core::Protected {
            prefix: "198.51.100.128/25".parse().unwrap(),
            why: "trusted network office.example".into(),
        },
    ]);
    for (src, why) in [
        ("198.51.100.99", "administrator 198.51.100.99"),
        ("203.0.113.77", "trunk carrier"),
        ("198.51.100.200", "trusted network office.example"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("169.254.3.4", "link-local"),
        // Another host in the trunk's /64: banning the /64 would cut the trunk off.
        ("2001:db8:77::66", "trunk v6"),
    ] {
        let mut reported = false;
        for i in 0..10 {
            let a = m.on_event(
                &fail(src, "9", AuthFailure::UnknownAccount, Some("sipvicious")),
                T0 + i,
            );
            assert!(bans(&a).is_empty(), "{src} banned: {a:?}");
            assert!(
                !a.iter().any(|a| matches!(a, Action::Clamp { .. })),
                "{src} clamped"
            );
            reported |= a.iter().any(|a| {
                matches!(a, Action::ReportIdentity { reason, .. } if reason.ends_with(&format!("not banned: {why}")))
            });
        }
        assert!(reported, "{src}: no report naming {why:?}");
    }
    // A new answer replaces the old: the trunk's old address is fair game again.
    m.set_resolved(Vec::new());
    let a = m.on_event(
        &fail(
            "203.0.113.77",
            "9",
            AuthFailure::UnknownAccount,
            Some("sipvicious"),
        ),
        T0 + 20,
    );
    assert_eq!(bans(&a).len(), 1, "{a:?}");
}

/// An `expires` from outside is capped (one day by default), and every timeout handed to a
/// backend stays within what both kernel paths accept.
#[test]
fn registrations_and_timeouts_are_capped() {
    let mut m = machine();
    let a = m.on_event(
        &SecurityEvent::Registered {
            source: ip("198.51.100.7"),
            account: "300".into(),
            expires: u32::MAX,
        },
        T0,
    );
    let until = a
        .iter()
        .find_map(|a| match a {
            Action::AllowRegistered { until, .. } => Some(*until),
            _ => None,
        })
        .unwrap();
    assert_eq!(until, T0 + 86_400);
    let far = Action::Ban {
        prefix: "198.51.100.8/32".parse().unwrap(),
        until: u64::MAX,
        reason: "x".into(),
    };
    for ch in far.set_changes(T0) {
        assert_eq!(ch.timeout, Some(pbxfw_core::MAX_TIMEOUT_SECS));
    }
}

#[test]
fn repeat_offenders_get_longer_bans() {
    let mut m = machine();
    let mut durations = Vec::new();
    let mut t = T0;
    for _ in 0..3 {
        let a = m.on_event(
            &fail(
                "198.51.100.50",
                "1",
                AuthFailure::WrongPassword,
                Some("sipcli"),
            ),
            t,
        );
        let Some(Action::Ban { until, .. }) = bans(&a).first().copied() else {
            panic!("{a:?}")
        };
        durations.push(until - t);
        t = until + 1;
        m.tick(t);
    }
    assert_eq!(durations, [86400, 2 * 86400, 4 * 86400]);
}

#[test]
fn memory_is_bounded_and_active_bans_are_never_evicted() {
    let policy = Policy::from_toml(POLICY).unwrap().validate().unwrap();
    let mut cfg = Config::from_policy(&policy);
    cfg.max_sources = 1000;
    let mut m = Machine::new(cfg);
    m.on_event(
        &SecurityEvent::ScannerSeen {
            source: ip("198.51.100.1"),
            user_agent: Some("sipvicious".into()),
        },
        T0,
    );
    for i in 0..20_000u32 {
        let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        m.on_event(
            &SecurityEvent::AuthFailed {
                source: src,
                account: None,
                reason: AuthFailure::Other,
                user_agent: None,
                protocol: None,
            },
            T0 + 1 + i as u64 / 100,
        );
        assert!(m.tracked() <= 1001, "{} tracked", m.tracked());
    }
    assert!(m
        .bans(T0 + 300)
        .iter()
        .any(|(p, _)| p.to_string() == "198.51.100.1"));
}

#[test]
fn snapshots_restore_exactly_and_refuse_newer_versions() {
    let mut m = machine();
    m.on_event(
        &fail(
            "198.51.100.60",
            "1",
            AuthFailure::UnknownAccount,
            Some("sipvicious"),
        ),
        T0,
    );
    m.on_event(
        &SecurityEvent::Registered {
            source: ip("2001:db8::5"),
            account: "333".into(),
            expires: 60,
        },
        T0,
    );
    let snap = m.snapshot();
    let back = Machine::restore(&snap).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.replay_actions(T0 + 1).len(), 2);
    let newer = snap.replacen("\"version\":1", "\"version\":99", 1);
    assert!(Machine::restore(&newer)
        .unwrap_err()
        .to_string()
        .contains("newer"));
    assert!(Machine::restore("{}").is_err());
}

fn event() -> impl Strategy<Value = (SecurityEvent, u64)> {
    let src = prop_oneof![
        (0u8..6).prop_map(|i| IpAddr::from([198, 51, 100, i])),
        Just(ip("192.0.2.9")),
        Just(ip("203.0.113.10")),
        (0u16..3).prop_map(|i| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i])),
    ];
    let reason = prop_oneof![
        Just(AuthFailure::UnknownAccount),
        Just(AuthFailure::WrongPassword),
        Just(AuthFailure::Acl),
        Just(AuthFailure::Other)
    ];
    let ua = prop_oneof![
        Just(None),
        Just(Some("Yealink".to_string())),
        Just(Some("friendly-scanner".to_string()))
    ];
    let ev =
        (src, reason, ua, 0u8..10, 0u8..3).prop_map(|(source, reason, user_agent, kind, acc)| {
            let account = format!("{}", 300 + acc as u32);
            match kind {
                0..=6 => SecurityEvent::AuthFailed {
                    source,
                    account: Some(account),
                    reason,
                    user_agent,
                    protocol: None,
                },
                7 => SecurityEvent::Registered {
                    source,
                    account,
                    expires: 120,
                },
                8 => SecurityEvent::Unregistered { source, account },
                _ => SecurityEvent::AuthSucceeded {
                    source,
                    account: Some(account),
                    user_agent,
                },
            }
        });
    (ev, 0u64..400)
}

proptest! {
    #[test]
    fn state_machine_properties(events in prop::collection::vec(event(), 1..200)) {
        let mut m = machine();
        let mut t = T0;
        let mut history: Vec<(u64, SecurityEvent)> = Vec::new();
        for (i, (e, dt)) in events.iter().enumerate() {
            t += dt;
            history.push((t, e.clone()));
            // Snapshot/restore at an arbitrary point changes nothing that follows.
            if i == events.len() / 2 {
                let restored = Machine::restore(&m.snapshot()).unwrap();
                prop_assert_eq!(&restored, &m);
                m = restored;
            }
            let actions = m.on_event(e, t);
            for a in &actions {
                if let Action::Ban { prefix, until, reason } = a {
                    prop_assert!(*until > t);
                    // Never a protected source (trusted network, trunk).
                    prop_assert!(!Prefix::from_str_lenient("192.0.2.0/24").covers(prefix));
                    prop_assert!(!prefix.contains(&ip("203.0.113.10")));
                    // No ban without its threshold inside its window (attack tools aside).
                    let (kind, n, window) = if reason.contains("unknown-account") {
                        (Some(AuthFailure::UnknownAccount), 3, 300)
                    } else if reason.contains("wrong-password") {
                        (Some(AuthFailure::WrongPassword), 40, 3600)
                    } else if reason.contains("failed authentications") {
                        (None, 10, 600)
                    } else {
                        prop_assert!(reason.contains("attack tool"), "{}", reason);
                        continue;
                    };
                    let count = history.iter().filter(|(at, ev)| {
                        *at + window > t && matches!(ev, SecurityEvent::AuthFailed { source, reason: r, .. }
                            if prefix.contains(source) && match kind {
                                Some(k) => *r == k,
                                None => matches!(r, AuthFailure::Acl | AuthFailure::Other),
                            })
                    }).count();
                    prop_assert!(count >= n, "ban after {} failures in window ({})", count, reason);
                }
            }
        }
        // Bans expire.
        let later = t + 31 * 86400;
        m.tick(later);
        prop_assert!(m.bans(later).is_empty());
    }
}

trait Lenient {
    fn from_str_lenient(s: &str) -> Prefix;
}

impl Lenient for Prefix {
    fn from_str_lenient(s: &str) -> Prefix {
        Prefix::parse_lenient(s).unwrap().0
    }
}
