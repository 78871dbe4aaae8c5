//! What is loaded and what the host keeps about it: one [`Status`], serialised once, the same
//! for every front end (`pbxfw status --format json`, `pbxfw_kernel_status`, `pbxfw.status()`).

use serde::{Deserialize, Serialize};

use crate::backends::BackendName;
use crate::error::Result;

/// An apply waiting for confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingConfirmation {
    /// The ruleset waiting.
    pub fingerprint: String,
    /// Unix time in milliseconds at which it is rolled back unless confirmed.
    pub deadline_ms: u64,
    /// The same in ISO 8601.
    pub deadline_iso: String,
}

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// What the kernel holds: backend, fingerprint, sets with their timed elements, counters.
    #[serde(flatten)]
    pub kernel: pbxfw_core::Status,
    /// An apply waiting for confirmation.
    pub pending_confirmation: Option<PendingConfirmation>,
    /// Safe Mode holding the rules back at boot (`pbxfw boot`), with why.
    pub safe_mode: Option<serde_json::Value>,
    /// The policy's hostnames, their addresses and the age of their answers.
    pub hostnames: Vec<pbxfw_core::NameStatus>,
    /// What discovery merged into the applied policy.
    pub discovery: Option<serde_json::Value>,
    /// The responsive daemon's counters, bans and read positions.
    pub responsive: Option<serde_json::Value>,
    /// State files `boot` could not use.
    pub state_problems: Vec<serde_json::Value>,
    /// The fleet as the daemon last wrote it (docs/fleet.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSummary>,
    /// Problems reading what the host keeps (they do not make the status fail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What `status` says of the fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSummary {
    /// The LAPI.
    pub url: String,
    /// When the daemon last pulled (Unix seconds).
    pub last_pull: Option<u64>,
    /// Decisions enforced in the kernel's fleet sets.
    pub enforced: usize,
    /// Decisions held (enforced, covered by a wider one, or refused).
    pub decisions: usize,
    /// Decisions refused (protected sources).
    pub refused: usize,
}

/// The status of `backend` at `now` (Unix seconds).
pub fn status(backend: BackendName, now: u64) -> Result<Status> {
    let kernel = backend.open().status()?;
    let pending = crate::safety::pending()?.map(|p| PendingConfirmation {
        fingerprint: p.fingerprint,
        deadline_ms: p.deadline_ms,
        deadline_iso: crate::human::iso8601(p.deadline_ms.div_ceil(1000)),
    });
    let mut warnings = Vec::new();
    let hostnames = match pbxfw_host::state::read::<pbxfw_core::DnsSnapshot>(
        &crate::names::state_path(),
        "dns",
    ) {
        Ok(Some(snap)) => pbxfw_core::DnsTracker::status_of(Default::default(), snap, now),
        Ok(None) => Vec::new(),
        Err(e) => {
            warnings.push(e.to_string());
            Vec::new()
        }
    };
    let discovery =
        pbxfw_host::state::read::<serde_json::Value>(&crate::policy::discovery_path(), "discovery")
            .unwrap_or_else(|e| {
                warnings.push(e.to_string());
                None
            });
    let json_file = |p: std::path::PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    };
    let safe_mode = json_file(crate::safety::marker_path());
    let state_problems = json_file(crate::safety::problems_path())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let responsive =
        crate::daemon::state_summary(&pbxfw_host::dirs::state_dir().join("responsive.json"), now);
    Ok(Status {
        kernel,
        pending_confirmation: pending,
        safe_mode,
        hostnames,
        discovery,
        responsive,
        state_problems,
        fleet: crate::fleet::read_snapshot().map(|s| FleetSummary {
            refused: s.decisions.iter().filter(|d| d.refused.is_some()).count(),
            decisions: s.decisions.len(),
            url: s.url,
            last_pull: s.last_pull,
            enforced: s.enforced,
        }),
        warnings,
    })
}

impl Status {
    /// The status as the JSON text every front end prints and returns, byte for byte.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a status serialises")
    }
}
