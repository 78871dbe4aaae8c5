//! A ruleset as text: what `pbxfw compile` prints, `pbxfw_policy_compile` and
//! `Policy.compile` return.

use std::str::FromStr;

use pbxfw_core::BackendError;
use pbxfw_core::Ruleset;

use crate::error::{Error, Result};

/// What to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The IR's text form.
    Ir,
    /// An `nft -f` script.
    Nft,
    /// The `ipset restore` and `iptables-restore`/`ip6tables-restore` inputs, clearly separated.
    Iptables,
}

impl FromStr for Target {
    type Err = Error;

    /// `ir`, `nft`, or any iptables backend name.
    fn from_str(s: &str) -> Result<Target> {
        match s {
            "ir" => Ok(Target::Ir),
            "nft" => Ok(Target::Nft),
            "iptables" | "iptables-nft" | "iptables-legacy" => Ok(Target::Iptables),
            other => Err(Error::Usage(format!(
                "unknown backend {other:?} (nft, iptables, ir)"
            ))),
        }
    }
}

/// `rs` as `target`'s text; `counters` adds a counter to every nft rule.
pub fn render(rs: &Ruleset, target: Target, counters: bool) -> Result<String> {
    let unsupported = |backend: &'static str, e: &dyn std::fmt::Display| {
        Error::Backend(BackendError::Unsupported {
            backend,
            feature: e.to_string(),
        })
    };
    match target {
        Target::Ir => Ok(rs.to_text()),
        Target::Nft => pbxfw_nft::lower(
            rs,
            &pbxfw_nft::Options {
                counters,
                ..Default::default()
            },
        )
        .map(|s| s.text)
        .map_err(|e| unsupported("nft", &e)),
        Target::Iptables => pbxfw_ipt::lower(rs)
            .map(|s| s.text())
            .map_err(|e| unsupported("iptables", &e)),
    }
}
