//! The responsive tiers in the kernel with pbxfw-nft (see `pbxfw_testkit::responsive`).

use pbxfw_core::Backend;
use pbxfw_testkit::netns as common;
use pbxfw_testkit::probe::SetStore;
use pbxfw_testkit::responsive as suite;

fn nft() -> Box<dyn Backend> {
    Box::new(pbxfw_nft::Kernel::default())
}

#[test]
fn tiers_clamp_then_ban_and_the_ban_slides() {
    if !common::skipped() {
        suite::tiers_clamp_then_ban_and_the_ban_slides("nft", nft, SetStore::Nft);
    }
}

#[test]
fn trunks_and_registered_sources_are_never_limited() {
    if !common::skipped() {
        suite::trunks_and_registered_sources_are_never_limited("nft", nft, SetStore::Nft);
    }
}

#[test]
fn ipv6_sources_are_tracked_per_64() {
    if !common::skipped() {
        suite::ipv6_sources_are_tracked_per_64("nft", nft, SetStore::Nft);
    }
}

#[test]
fn a_clamped_source_flooding_is_banned() {
    if !common::skipped() {
        suite::a_clamped_source_flooding_is_banned("nft", nft, SetStore::Nft);
    }
}

#[test]
fn the_slow_lane_is_not_counted_by_the_daily_tier() {
    if !common::skipped() {
        suite::the_slow_lane_is_not_counted_by_the_daily_tier("nft", nft, SetStore::Nft);
    }
}
