//! The kernel backends by name, as every front end names them: `nft`, `iptables` (the variant
//! the host uses), `iptables-nft`, `iptables-legacy`.

use std::fmt;
use std::str::FromStr;

use pbxfw_core::Backend;

use crate::error::Error;

/// A backend by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendName {
    /// nftables (`table inet pbxfw`).
    #[default]
    Nft,
    /// iptables + ipset, on the variant the host uses (`pbxfw_ipt::Variant::detect`).
    Iptables,
    /// iptables + ipset, forcing iptables-nft.
    IptablesNft,
    /// iptables + ipset, forcing iptables-legacy.
    IptablesLegacy,
}

impl BackendName {
    /// Every name, in the order help texts list them.
    pub const ALL: [BackendName; 4] = [
        BackendName::Nft,
        BackendName::Iptables,
        BackendName::IptablesNft,
        BackendName::IptablesLegacy,
    ];

    /// The name as front ends take it (and a pending confirmation keeps it for its timer).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Nft => "nft",
            BackendName::Iptables => "iptables",
            BackendName::IptablesNft => "iptables-nft",
            BackendName::IptablesLegacy => "iptables-legacy",
        }
    }

    /// The backend pbxfw last applied with (the applied record), else nft: what a command
    /// that names none acts on, so that after `apply --backend iptables` status, disable and
    /// the edits act on iptables.
    pub fn current() -> BackendName {
        crate::safety::applied_backend()
            .and_then(|b| b.parse().ok())
            .unwrap_or_default()
    }

    /// The backend, cutting the flows of the sources it blocks (`crate::flow_cut`).
    pub fn open(self) -> Box<dyn Backend> {
        Box::new(self.open_cutting())
    }

    /// [`BackendName::open`], as the flow cut's own type (for its apply).
    pub(crate) fn open_cutting(self) -> crate::flow_cut::FlowCut {
        use pbxfw_ipt::Variant;
        let kernel: Box<dyn Backend> = match self {
            BackendName::Nft => Box::new(pbxfw_nft::Kernel::default()),
            BackendName::Iptables => Box::new(pbxfw_ipt::Kernel::default()),
            BackendName::IptablesNft => Box::new(pbxfw_ipt::Kernel::new(Variant::Nft)),
            BackendName::IptablesLegacy => Box::new(pbxfw_ipt::Kernel::new(Variant::Legacy)),
        };
        crate::flow_cut::FlowCut(kernel)
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendName {
    type Err = Error;

    fn from_str(s: &str) -> Result<BackendName, Error> {
        BackendName::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "unknown backend {s:?} (nft, iptables, iptables-nft, iptables-legacy)"
                ))
            })
    }
}
