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

/// The id of group `name` from `/etc/group` (`None` when there is no such group).
pub fn group_id(name: &str) -> Option<u32> {
    group_id_in(&std::fs::read_to_string("/etc/group").ok()?, name)
}

fn group_id_in(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod group_tests {
    #[test]
    fn groups_are_found_by_name() {
        let text = "root:x:0:\nasterisk:x:998:\npbxfw:x:997:www-data\n";
        assert_eq!(super::group_id_in(text, "pbxfw"), Some(997));
        assert_eq!(super::group_id_in(text, "pbx"), None);
        assert_eq!(super::group_id("root"), Some(0));
    }
}
