//! pbxfw-ipt: the iptables backend of pbxfw.
//!
//! It will lower the rule IR to `ipset restore` input plus `iptables-restore` /
//! `ip6tables-restore` input that touches only pbxfw's own `PBXFW*` chains, reached by one jump
//! from INPUT, for both iptables-nft and iptables-legacy hosts (the "iptables backend" issue).
//!
//! Nothing is implemented yet: the crate exists so that the workspace has the shape SPEC
//! section 1 gives it, and `pbxfw compile --backend iptables` answers with a clear
//! "not available" error rather than a weaker ruleset.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The name backends report in `Unsupported { backend, feature }` errors.
pub const BACKEND: &str = "iptables";
