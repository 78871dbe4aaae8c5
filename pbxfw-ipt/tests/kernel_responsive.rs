//! The responsive tiers in the kernel with the iptables backend (hashlimit meters, ipset bans
//! refreshed by `SET --exist`), on iptables-nft and iptables-legacy (see
//! `pbxfw_testkit::responsive`).

use pbxfw_core::Backend;
use pbxfw_ipt::{Kernel, Variant};
use pbxfw_testkit::netns as common;
use pbxfw_testkit::probe::SetStore;
use pbxfw_testkit::responsive as suite;

fn ipt_nft() -> Box<dyn Backend> {
    Box::new(Kernel::new(Variant::Nft))
}

fn ipt_legacy() -> Box<dyn Backend> {
    Box::new(Kernel::new(Variant::Legacy))
}

#[test]
fn tiers_clamp_then_ban_and_the_ban_slides() {
    if !common::skipped() {
        suite::tiers_clamp_then_ban_and_the_ban_slides("iptn", ipt_nft, SetStore::Ipset);
        suite::tiers_clamp_then_ban_and_the_ban_slides("iptl", ipt_legacy, SetStore::Ipset);
    }
}

#[test]
fn trunks_and_registered_sources_are_never_limited() {
    if !common::skipped() {
        suite::trunks_and_registered_sources_are_never_limited("iptn", ipt_nft, SetStore::Ipset);
        suite::trunks_and_registered_sources_are_never_limited("iptl", ipt_legacy, SetStore::Ipset);
    }
}

#[test]
fn ipv6_sources_are_tracked_per_64() {
    if !common::skipped() {
        suite::ipv6_sources_are_tracked_per_64("iptn", ipt_nft, SetStore::Ipset);
        suite::ipv6_sources_are_tracked_per_64("iptl", ipt_legacy, SetStore::Ipset);
    }
}

#[test]
fn a_clamped_source_flooding_is_banned() {
    if !common::skipped() {
        suite::a_clamped_source_flooding_is_banned("iptn", ipt_nft, SetStore::Ipset);
        suite::a_clamped_source_flooding_is_banned("iptl", ipt_legacy, SetStore::Ipset);
    }
}

#[test]
fn the_slow_lane_is_not_counted_by_the_daily_tier() {
    if !common::skipped() {
        suite::the_slow_lane_is_not_counted_by_the_daily_tier("iptn", ipt_nft, SetStore::Ipset);
        suite::the_slow_lane_is_not_counted_by_the_daily_tier("iptl", ipt_legacy, SetStore::Ipset);
    }
}
