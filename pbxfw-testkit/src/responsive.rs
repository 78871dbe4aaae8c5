//! The responsive tiers in the kernel, with real packets, for any backend: exact burst counts,
//! bans that cover every port and slide, IPv6 per-/64 tracking, and the sources that must never
//! be limited.

use std::net::IpAddr;
use std::time::Duration;

use pbxfw_core::ApplyOptions;
use pbxfw_core::{compile, Policy};

use crate::netns::in_netns;
use crate::probe::{SetStore, Topology};
use crate::suites::MakeBackend;

const POLICY: &str = r#"
[interfaces]
eth0 = "internet"
[[pbx.trunks]]
name = "provider"
protocol = "pjsip"
host = "203.0.113.10"
[[pbx.trunks]]
name = "iax-peer"
protocol = "iax"
host = "203.0.113.20"
[responsive]
ban_time = "4s"
"#;

fn setup(tag: &str, policy: &str, make: MakeBackend, sets: SetStore) -> Topology {
    let mut topo = Topology::new(tag, &["eth0".to_string()]);
    topo.sets = sets;
    let rs = compile(&Policy::from_toml(policy).unwrap().validate().unwrap());
    in_netns(&topo.pbx, move || {
        pbxfw_core::apply(make().as_ref(), &rs, &ApplyOptions::default())
            .unwrap_or_else(|e| panic!("apply: {e}"))
    });
    topo
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// See the module documentation.
pub fn tiers_clamp_then_ban_and_the_ban_slides(tag: &str, make: MakeBackend, sets: SetStore) {
    let topo = setup(&format!("{tag}-tiers"), POLICY, make, sets);
    let x = ip("198.51.100.7");
    topo.add_source("eth0", x);

    // Clamp: exactly the burst of 5 gets through, then packets are rejected.
    topo.watch("ip saddr 198.51.100.7 udp dport 5060");
    topo.send_udp("eth0", x, 5062, 5060, 30, Duration::ZERO);
    assert_eq!(topo.watched(), 5, "clamp burst");
    assert!(
        !topo.set_has("tier_ban4", "198.51.100.7"),
        "banned too early"
    );

    // Flood: the 51st packet within 10 s bans the source, on every port.
    topo.send_udp("eth0", x, 5062, 5060, 25, Duration::ZERO);
    assert!(
        topo.set_has("tier_ban4", "198.51.100.7"),
        "not banned after 55 packets"
    );
    topo.watch("ip saddr 198.51.100.7");
    topo.send_udp("eth0", x, 5062, 10000, 3, Duration::ZERO);
    assert_eq!(topo.watched(), 0, "a banned source's RTP got through");

    // The ban slides: sending every second for 6 s (ban_time 4 s) keeps it banned...
    topo.send_udp("eth0", x, 5062, 10000, 6, Duration::from_secs(1));
    assert_eq!(
        topo.watched(),
        0,
        "the ban expired while the source kept sending"
    );
    // ...and it ends once the source is quiet for longer than the ban.
    std::thread::sleep(Duration::from_secs(5));
    topo.send_udp("eth0", x, 5062, 10000, 1, Duration::ZERO);
    assert_eq!(topo.watched(), 1, "the ban did not expire");
}

/// A source in the slow lane that floods at full speed is still counted by the daily and
/// flood meters, and banned by the flood tier: the slow lane's rejects come after them. (They
/// used to come first, so a clamped attacker was rejected for ever, never banned.)
pub fn a_clamped_source_flooding_is_banned(tag: &str, make: MakeBackend, sets: SetStore) {
    let topo = setup(&format!("{tag}-clampflood"), POLICY, make, sets);
    let x = ip("198.51.100.9");
    topo.add_source("eth0", x);
    topo.add_element("clamped4", "198.51.100.9");
    topo.watch("ip saddr 198.51.100.9 udp dport 5060");
    topo.send_udp("eth0", x, 5062, 5060, 60, Duration::ZERO);
    assert_eq!(topo.watched(), 4, "the slow lane lets 4 through");
    assert!(
        topo.set_has("tier_ban4", "198.51.100.9"),
        "a clamped source flooding at full speed was not banned"
    );
}

/// A source in the slow lane is admitted 4 signalling packets a minute, and those are not
/// counted by the daily tier: a phone whose password changed, retrying every 30 s for hours,
/// must not be banned by the kernel for it (the state machine decides). An unclamped source
/// sending as much is.
pub fn the_slow_lane_is_not_counted_by_the_daily_tier(
    tag: &str,
    make: MakeBackend,
    sets: SetStore,
) {
    let policy = format!("{POLICY}daily = \"3/24h\"\n");
    let topo = setup(&format!("{tag}-slowdaily"), &policy, make, sets);
    let phone = ip("198.51.100.11");
    let other = ip("198.51.100.12");
    topo.add_source("eth0", phone);
    topo.add_source("eth0", other);
    topo.add_element("clamped4", "198.51.100.11");
    topo.watch("ip saddr 198.51.100.11 udp dport 5060");
    topo.send_udp("eth0", phone, 5062, 5060, 4, Duration::from_millis(50));
    assert_eq!(topo.watched(), 4, "the slow lane lets 4 through");
    assert!(
        !topo.set_has("tier_ban4", "198.51.100.11"),
        "a clamped source was banned by the daily tier"
    );
    topo.send_udp("eth0", other, 5062, 5060, 4, Duration::from_millis(50));
    assert!(
        topo.set_has("tier_ban4", "198.51.100.12"),
        "the daily tier did not ban an unclamped source"
    );
}

/// See the module documentation.
pub fn trunks_and_registered_sources_are_never_limited(
    tag: &str,
    make: MakeBackend,
    sets: SetStore,
) {
    let topo = setup(&format!("{tag}-never"), POLICY, make, sets);
    let trunk = ip("203.0.113.10");
    topo.add_source("eth0", trunk);
    topo.watch("ip saddr 203.0.113.10 udp dport 5060");
    topo.send_udp("eth0", trunk, 5060, 5060, 200, Duration::ZERO);
    assert_eq!(topo.watched(), 200, "the trunk was limited");
    assert!(!topo.set_has("tier_ban4", "203.0.113.10"));

    // An IAX peer sending SIP is refused, but never counted or banned.
    let peer = ip("203.0.113.20");
    topo.add_source("eth0", peer);
    topo.watch("ip saddr 203.0.113.20");
    topo.send_udp("eth0", peer, 5060, 5060, 80, Duration::ZERO);
    assert_eq!(topo.watched(), 0, "an IAX peer's SIP got through");
    assert!(
        !topo.set_has("tier_ban4", "203.0.113.20"),
        "a trunk was banned"
    );
    topo.send_udp("eth0", peer, 4569, 4569, 5, Duration::ZERO);
    assert_eq!(topo.watched(), 5, "the IAX peer lost its own protocol");

    // A registered phone sending 100 SUBSCRIBE/NOTIFY a minute is never limited.
    let phone = ip("198.51.100.30");
    topo.add_source("eth0", phone);
    topo.add_element("registered4", "198.51.100.30");
    topo.watch("ip saddr 198.51.100.30 udp dport 5060");
    topo.send_udp("eth0", phone, 5062, 5060, 150, Duration::ZERO);
    assert_eq!(topo.watched(), 150, "a registered phone was limited");
}

/// See the module documentation.
pub fn ipv6_sources_are_tracked_per_64(tag: &str, make: MakeBackend, sets: SetStore) {
    let topo = setup(&format!("{tag}-v6"), POLICY, make, sets);
    let a = ip("2001:db8:5:6::a");
    let b = ip("2001:db8:5:6::b");
    topo.add_source("eth0", a);
    topo.add_source("eth0", b);
    // Two addresses of one /64 share the clamp burst...
    topo.watch("ip6 saddr 2001:db8:5:6::/64 udp dport 5060");
    topo.send_udp("eth0", a, 5062, 5060, 3, Duration::ZERO);
    topo.send_udp("eth0", b, 5062, 5060, 3, Duration::ZERO);
    assert_eq!(topo.watched(), 5, "the /64 did not share one meter");
    // ...and one ban.
    topo.send_udp("eth0", a, 5062, 5060, 45, Duration::ZERO);
    assert!(
        topo.set_has("tier_ban6", "2001:db8:5:6::"),
        "the /64 was not banned"
    );
    topo.watch("ip6 saddr 2001:db8:5:6::b");
    topo.send_udp("eth0", b, 5062, 10000, 2, Duration::ZERO);
    assert_eq!(
        topo.watched(),
        0,
        "another address of the banned /64 got through"
    );
}
