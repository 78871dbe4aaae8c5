//! Where pbxfw keeps things. Every path can be moved by an environment variable, which the
//! tests use and packagers may.

use std::path::PathBuf;

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Persistent state: the last applied ruleset, pending confirmations, the boot history, the
/// responsive state (`$PBXFW_STATE_DIR`, default `/var/lib/pbxfw`).
pub fn state_dir() -> PathBuf {
    env_path("PBXFW_STATE_DIR", "/var/lib/pbxfw")
}

/// Run-time markers that a reboot clears, such as the Safe Mode marker a UI can show
/// (`$PBXFW_RUN_DIR`, default `/run/pbxfw`).
pub fn run_dir() -> PathBuf {
    env_path("PBXFW_RUN_DIR", "/run/pbxfw")
}

/// The lock file (`$PBXFW_LOCK_FILE`, default `/etc/pbxfw/lock`).
pub fn lock_file() -> PathBuf {
    env_path("PBXFW_LOCK_FILE", "/etc/pbxfw/lock")
}
