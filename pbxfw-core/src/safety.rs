//! The decisions behind "nobody gets locked out" (docs/safety.md), pure: the clock, the uptime and the
//! boot history come in as values, so every case is a table test.
//!
//! - [`lockouts`]: which administrator sessions a ruleset would cut off, with the rule that would.
//! - [`safe_mode`]: whether this boot must hold the rules back (the previous boot was short, as
//!   when a bad ruleset made someone reboot), and until when.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::explain::{explain, Explanation};
use crate::ir::{Packet, Proto, Ruleset};

/// An administrator's way in: a new TCP connection from `addr`, arriving on `iif`, to `port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminSession {
    /// The administrator's address.
    pub addr: IpAddr,
    /// The interface its packets arrive on.
    pub iif: String,
    /// The TCP port of the session (22 for SSH).
    pub port: u16,
    /// Where the session is known from (`SSH_CONNECTION`, `--admin`, `settings.admins`).
    pub from: String,
}

/// A session the ruleset would cut off, and what would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lockout {
    /// The session.
    pub session: AdminSession,
    /// What the ruleset does to a new connection of it.
    pub explanation: Explanation,
}

/// The sessions `rs` does not accept a *new* connection of. An open session survives any apply
/// (conntrack), but the next login would not: that is the lock-out this guards against.
pub fn lockouts(rs: &Ruleset, sessions: &[AdminSession]) -> Vec<Lockout> {
    sessions
        .iter()
        .filter_map(|s| {
            let packet = Packet::new(&s.iif, s.addr, Proto::Tcp, Some(s.port));
            let e = explain(rs, &packet, false);
            (e.verdict != crate::ir::FinalVerdict::Accept).then(|| Lockout {
                session: s.clone(),
                explanation: e,
            })
        })
        .collect()
}

/// One boot, as the boot history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The kernel's boot id.
    pub boot_id: String,
    /// Seconds of uptime last seen during that boot (how long it lasted, at least).
    pub lasted: u64,
}

/// Safe Mode's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafeModeConfig {
    /// On by default.
    pub enabled: bool,
    /// A previous boot shorter than this (seconds) counts as a failed one (600).
    pub short_boot: u64,
    /// Rules are held back until this much uptime (seconds, 300).
    pub hold_until: u64,
}

impl Default for SafeModeConfig {
    fn default() -> Self {
        SafeModeConfig {
            enabled: true,
            short_boot: 600,
            hold_until: 300,
        }
    }
}

/// What Safe Mode decides for this boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "safe_mode", rename_all = "snake_case")]
pub enum SafeMode {
    /// Apply now.
    Off {
        /// Why not held.
        reason: String,
    },
    /// Hold the rules back until `until_uptime` seconds of uptime.
    Hold {
        /// When to apply.
        until_uptime: u64,
        /// Why.
        reason: String,
    },
}

/// Whether to hold the rules back: only when the previous boot lasted under `short_boot` and this
/// one has been up under `hold_until` — a machine that reboots twice in quick succession gets in
/// without the firewall for a few minutes, one that was up for a day does not.
pub fn safe_mode(previous: Option<&BootRecord>, uptime: u64, cfg: &SafeModeConfig) -> SafeMode {
    let off = |reason: String| SafeMode::Off { reason };
    if !cfg.enabled {
        return off("Safe Mode is disabled".into());
    }
    let Some(prev) = previous else {
        return off("no previous boot is recorded".into());
    };
    if prev.lasted >= cfg.short_boot {
        return off(format!(
            "the previous boot lasted {}s (at least {}s)",
            prev.lasted, cfg.short_boot
        ));
    }
    if uptime >= cfg.hold_until {
        return off(format!(
            "the previous boot lasted only {}s, but this one has been up {}s already",
            prev.lasted, uptime
        ));
    }
    SafeMode::Hold {
        until_uptime: cfg.hold_until,
        reason: format!(
            "the previous boot lasted only {}s (under {}s): rules are held back until {}s of uptime",
            prev.lasted, cfg.short_boot, cfg.hold_until
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(lasted: u64) -> BootRecord {
        BootRecord {
            boot_id: "b".into(),
            lasted,
        }
    }

    #[test]
    fn safe_mode_over_boot_histories_and_uptimes() {
        let cfg = SafeModeConfig::default();
        let held = |p: Option<BootRecord>, up: u64, cfg: &SafeModeConfig| {
            matches!(safe_mode(p.as_ref(), up, cfg), SafeMode::Hold { .. })
        };
        // (previous boot lasted, uptime now, held?)
        let table = [
            (None, 0, false),
            (Some(30), 0, true),
            (Some(30), 299, true),
            (Some(30), 300, false),
            (Some(599), 10, true),
            (Some(600), 10, false),
            (Some(86_400), 10, false),
            (Some(0), 0, true),
        ];
        for (prev, up, want) in table {
            assert_eq!(
                held(prev.map(boot), up, &cfg),
                want,
                "previous {prev:?}, uptime {up}"
            );
        }
        let off = SafeModeConfig {
            enabled: false,
            ..cfg
        };
        assert!(!held(Some(boot(30)), 0, &off));
        match safe_mode(Some(&boot(30)), 10, &cfg) {
            SafeMode::Hold {
                until_uptime,
                reason,
            } => {
                assert_eq!(until_uptime, 300);
                assert!(reason.contains("30s"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lockouts_name_the_deciding_rule() {
        let p = crate::Policy::from_toml("[interfaces]\neth0 = \"internet\"\neth1 = \"local\"\n")
            .unwrap()
            .validate()
            .unwrap();
        let rs = crate::compile(&p);
        let s = |iif: &str| AdminSession {
            addr: "192.0.2.10".parse().unwrap(),
            iif: iif.into(),
            port: 22,
            from: "--admin".into(),
        };
        assert!(lockouts(&rs, &[s("eth1")]).is_empty(), "ssh from the LAN");
        let cut = lockouts(&rs, &[s("eth0"), s("eth1")]);
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].session.iif, "eth0");
        assert_eq!(cut[0].explanation.decided_by, "default");
    }
}
