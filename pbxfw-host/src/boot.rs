//! Uptime, boot id and the boot history, for Safe Mode. The sources can be replaced for tests:
//! `$PBXFW_UPTIME_FILE` (read like `/proc/uptime`) and `$PBXFW_BOOT_ID_FILE` (like
//! `/proc/sys/kernel/random/boot_id`).

use std::path::PathBuf;

use pbxfw_core::BootRecord;
use serde::{Deserialize, Serialize};

fn source(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Seconds since boot.
pub fn uptime() -> std::io::Result<u64> {
    let path = source("PBXFW_UPTIME_FILE", "/proc/uptime");
    let text = std::fs::read_to_string(&path)?;
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| s as u64)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not an uptime: {text:?}", path.display()),
            )
        })
}

/// This boot's id.
pub fn boot_id() -> std::io::Result<String> {
    let path = source("PBXFW_BOOT_ID_FILE", "/proc/sys/kernel/random/boot_id");
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// The boot history: the most recent boots, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Boots, oldest first (at most [`History::KEEP`]).
    pub boots: Vec<BootRecord>,
}

impl History {
    /// How many boots are kept.
    pub const KEEP: usize = 20;
    /// The state kind of the history file.
    pub const KIND: &'static str = "boot_history";

    /// The history file.
    pub fn path() -> PathBuf {
        crate::dirs::state_dir().join("boots.json")
    }

    /// The boot before `boot_id`, if recorded.
    pub fn previous(&self, boot_id: &str) -> Option<&BootRecord> {
        self.boots.iter().rev().find(|b| b.boot_id != boot_id)
    }

    /// Record that boot `boot_id` has lasted at least `uptime` seconds.
    pub fn seen(&mut self, boot_id: &str, uptime: u64) {
        match self.boots.last_mut() {
            Some(b) if b.boot_id == boot_id => b.lasted = b.lasted.max(uptime),
            _ => self.boots.push(BootRecord {
                boot_id: boot_id.into(),
                lasted: uptime,
            }),
        }
        let extra = self.boots.len().saturating_sub(Self::KEEP);
        self.boots.drain(..extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_tracks_the_current_boot_and_its_predecessor() {
        let mut h = History::default();
        h.seen("a", 10);
        h.seen("a", 700);
        h.seen("a", 5);
        h.seen("b", 3);
        assert_eq!(h.previous("b").unwrap().lasted, 700);
        assert!(h.previous("a").is_none() || h.previous("a").unwrap().boot_id == "b");
        for i in 0..30 {
            h.seen(&format!("x{i}"), 1);
        }
        assert_eq!(h.boots.len(), History::KEEP);
    }
}
