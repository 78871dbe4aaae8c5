//! pbxfw in a fleet (docs/fleet.md): bans shared between PBXes through CrowdSec's Local API.
//!
//! Two threads of the daemon talk to the LAPI: the **puller** (the bouncer role) fetches the
//! decision stream — every decision at start and at each resync, the delta in between — and
//! hands what it read to the daemon's loop; the **pusher** (the machine role) sends this PBX's
//! bans as alerts, batched per second, and, when configured, its unbans. The loop owns the
//! [`Enforcer`]: the fleet's table, what the kernel's `fleet4`/`fleet6` sets hold, and the
//! guard that never enforces a decision against a protected source.

mod enforcer;
pub mod lapi;
mod threads;

pub use enforcer::{guard, Enforcer, Stats};
pub use threads::{alerts_json, start, Running, ThreadCounters};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbxfw_core::{
    names, Backend, Element, Family, Fleet, FleetTable, Prefix, Pull, Ruleset, SetEdit, Skipped,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use lapi::{Lapi, LapiError, Token};

/// The kind of the fleet's state file.
const STATE_KIND: &str = "pbxfw fleet";

/// Where the daemon writes the fleet decisions it holds, for `pbxfw bans` and `status`.
pub fn state_path() -> PathBuf {
    pbxfw_host::dirs::state_dir().join("fleet.json")
}

/// Largest secret file read (an API key or a password).
const MAX_SECRET: u64 = 4096;

/// Read a secret (`fleet.api_key_file`, `fleet.password_file`): a file owned by root that
/// nobody else may read or write, holding one line. Anything else is refused: a key another
/// user could read leaks the fleet, one another user could write makes this PBX log in as
/// someone else's machine.
pub fn read_secret(path: &str) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::Usage(format!("{path}: not a regular file")));
    }
    if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(Error::Usage(format!(
            "{path}: a fleet secret must be owned by root with mode 0600 or 0400 (it is uid {} mode {:o}); chown root:root {path} && chmod 600 {path}",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    if meta.len() > MAX_SECRET {
        return Err(Error::Usage(format!(
            "{path}: larger than {MAX_SECRET} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains(['\n', '\r']) || secret.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "{path}: must hold the secret alone on one line"
        )));
    }
    Ok(secret.to_string())
}

/// One pull, read by the puller thread.
#[derive(Debug)]
pub struct Pulled {
    /// What it said.
    pub pull: Pull,
    /// A full pull (`startup=true`): every active decision.
    pub full: bool,
    /// Bytes of JSON read.
    pub bytes: usize,
    /// How long the request and the parsing took.
    pub took: Duration,
}

/// What the fleet's threads tell the daemon's loop.
#[derive(Debug)]
pub enum Report {
    /// A pull to take.
    Pulled(Pulled),
    /// The LAPI's addresses, as its host name resolved (never banned from the fleet: a
    /// decision against the LAPI would cut the PBX off from the decision that lifts it).
    LapiAddrs(Vec<std::net::IpAddr>),
    /// Something to log (`error` when it is one).
    Note {
        /// An error (`true`) or news.
        error: bool,
        /// What.
        detail: String,
    },
}

/// What the pusher is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// A ban this PBX decided.
    Ban {
        /// The source.
        prefix: Prefix,
        /// Seconds it lasts.
        seconds: u64,
        /// `pbxfw/<reason kind>`.
        scenario: String,
    },
    /// An unban by an administrator (sent only with `fleet.unban`).
    Unban(Prefix),
}

/// A decision of the fleet as `pbxfw bans` and the state file show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The source.
    pub prefix: Prefix,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// Who decided.
    pub origin: String,
    /// Why.
    pub scenario: String,
    /// Why it is not enforced, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The LAPI's id of the decision.
    #[serde(default)]
    pub id: i64,
}

/// The fleet's state file: what the daemon holds of the fleet, written after each change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was written.
    pub at: u64,
    /// The LAPI.
    pub url: String,
    /// When the last pull succeeded.
    pub last_pull: Option<u64>,
    /// Decisions enforced.
    pub enforced: usize,
    /// Decisions held (enforced, refused, or covered by a wider one).
    pub decisions: Vec<Shown>,
    /// Decisions an administrator lifted here, with the end of each: they stay lifted across
    /// a restart.
    #[serde(default)]
    pub lifted: Vec<(Prefix, u64)>,
}

/// Read the daemon's fleet state (none when the daemon holds no fleet).
pub fn read_snapshot() -> Option<Snapshot> {
    pbxfw_host::state::read::<Snapshot>(&state_path(), STATE_KIND)
        .ok()
        .flatten()
}

/// How often the pusher looks at the kernel tiers' ban sets (bans the packet path makes, which
/// the daemon does not decide and learns only there).
const TIER_LOOK: Duration = Duration::from_secs(1);

/// The state file is written at most this often (a 100k table is a few megabytes).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// Everything the daemon's loop holds of the fleet: the threads, the enforcer, and what the
/// kernel tiers' bans pushed so far.
#[derive(Default)]
pub struct Member {
    running: Option<Running>,
    /// The fleet's decisions and the kernel's fleet sets.
    pub enforcer: Enforcer,
    /// Kernel-tier bans pushed: prefix → the end pushed.
    tier_pushed: HashMap<Prefix, u64>,
    last_tier_look: Option<Instant>,
    snapshot_due: bool,
    last_snapshot: Option<Instant>,
    own: Vec<std::net::IpAddr>,
    own_read: Option<Instant>,
    /// The LAPI's addresses.
    lapi: Vec<std::net::IpAddr>,
    /// What the host needs to reach, never banned: the LAPI, the resolvers, the gateways.
    infra: Vec<(std::net::IpAddr, &'static str)>,
}

/// What the metrics show of the fleet.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Whether the PBX is in a fleet.
    pub configured: bool,
    /// The enforcer's statistics.
    pub stats: Stats,
    /// Pulls that failed.
    pub pull_errors: u64,
    /// Decisions pushed.
    pub pushed: u64,
    /// Pushes that failed.
    pub push_errors: u64,
    /// Bans dropped from a full push queue.
    pub push_dropped: u64,
}

impl Member {
    /// A member without a fleet yet.
    pub fn new() -> Member {
        Member {
            enforcer: Enforcer::new(0),
            ..Member::default()
        }
    }

    /// Run with `config` (the policy's `[fleet]`): threads started, restarted when it changed,
    /// stopped when it is gone. A failure to start (a secret's mode, a CA file) is logged and
    /// leaves the PBX out of the fleet until the next reload.
    pub fn configure(
        &mut self,
        ctx: &crate::context::Context,
        config: Option<&Fleet>,
        deliver: impl Fn(Report) -> bool + Send + Clone + 'static,
    ) {
        if self.running.as_ref().map(|r| &r.config) == config {
            return;
        }
        if let Some(r) = self.running.take() {
            r.stop();
            ctx.log(&[("event", "fleet".into()), ("detail", "stopped".into())]);
        }
        let Some(config) = config else { return };
        match start(config, deliver) {
            Ok(r) => {
                let max = config.max_decisions as usize;
                if self.enforcer.is_ready() {
                    self.enforcer.set_max(max);
                } else {
                    // A restart: the decisions and lifts of the state file, until the first
                    // full pull.
                    self.enforcer = Enforcer::new(max);
                    if let Some(snap) = read_snapshot() {
                        self.enforcer.restore(&snap, ctx.now());
                    }
                }
                ctx.log(&[
                    ("event", "fleet".into()),
                    ("url", config.url.clone()),
                    ("pull", config.pull.to_string()),
                    ("push", r.pushes().to_string()),
                ]);
                self.running = Some(r);
                self.enforcer.sets_lost();
            }
            Err(e) => ctx.log(&[("error", "fleet".into()), ("detail", e.to_string())]),
        }
    }

    /// Whether the PBX is in a fleet.
    pub fn active(&self) -> bool {
        self.running.is_some()
    }

    /// Take a report of the threads.
    pub fn on_report(&mut self, ctx: &crate::context::Context, r: Report, now: u64) {
        match r {
            Report::Pulled(p) => {
                let (full, n, bytes) = (p.full, p.pull.new.len(), p.bytes);
                let deleted = p.pull.deleted.len();
                self.enforcer.on_pull(p, now);
                if full || n > 0 || deleted > 0 {
                    ctx.log(&[
                        ("event", "fleet-pull".into()),
                        ("kind", if full { "full" } else { "delta" }.into()),
                        ("new", n.to_string()),
                        ("deleted", deleted.to_string()),
                        ("bytes", bytes.to_string()),
                    ]);
                    self.snapshot_due = true;
                }
            }
            Report::LapiAddrs(addrs) => {
                if addrs != self.lapi {
                    self.lapi = addrs;
                    self.refresh_infra();
                    self.enforcer.guard_changed();
                }
            }
            Report::Note { error, detail } => ctx.log(&[
                (if error { "error" } else { "event" }, "fleet".into()),
                ("detail", detail),
            ]),
        }
    }

    /// What the machine and the ledger decided (the hooks' calls): bans are pushed, unbans by
    /// an administrator lift the fleet's decisions here (and at the LAPI with `fleet.unban`).
    pub fn on_calls(
        &mut self,
        calls: &[pbxfw_core::Action],
        machine: &pbxfw_core::Machine,
        from_ledger: bool,
        now: u64,
    ) {
        let Some(r) = &self.running else { return };
        for c in calls {
            match c {
                pbxfw_core::Action::Ban { prefix, until, .. } => {
                    let scenario = if from_ledger {
                        "pbxfw/manual".to_string()
                    } else {
                        let cause = machine.ban_cause(prefix).unwrap_or_default();
                        format!("pbxfw/{}", cause.name())
                    };
                    r.push(Push::Ban {
                        prefix: *prefix,
                        seconds: until.saturating_sub(now).max(1),
                        scenario,
                    });
                }
                pbxfw_core::Action::Unban { prefix } if from_ledger => {
                    self.enforcer.lift(prefix, now);
                    self.tier_pushed
                        .retain(|p, _| !crate::bans::overlaps(p, prefix));
                    if r.config.unban {
                        r.push(Push::Unban(*prefix));
                    }
                    self.snapshot_due = true;
                }
                _ => {}
            }
        }
    }

    /// The kernel's sets were created anew.
    pub fn sets_lost(&mut self) {
        self.enforcer.sets_lost();
    }

    /// After each pass of the loop: the kernel's fleet sets brought to the table when a pull
    /// came (or they must be written whole), the kernel tiers' new bans pushed, the state
    /// file written.
    pub fn after_pass(
        &mut self,
        ctx: &crate::context::Context,
        kernel: &dyn Backend,
        rs: &Ruleset,
        machine: &pbxfw_core::Machine,
        now: u64,
    ) {
        let Some(r) = &self.running else { return };
        let url = r.config.url.clone();
        let pushes = r.pushes();
        let ban_seconds = u64::from(machine.config().ban_seconds);
        if self
            .own_read
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            match pbxfw_host::ifaddrs::local_addresses() {
                Ok(a) => self.own = a,
                Err(e) => ctx.log(&[
                    ("error", "fleet".into()),
                    ("detail", format!("reading this host's addresses: {e}")),
                ]),
            }
            self.refresh_infra();
            self.own_read = Some(Instant::now());
        }
        if self.enforcer.pending(now) {
            let (refused, error) = {
                let g = guard(machine, &self.own, &self.infra, now);
                self.enforcer.reconcile(kernel, rs, now, g)
            };
            // One line per new refusal, at most a hundred a pass: a LAPI that makes thousands
            // of refused decisions (deleting and adding them again) does not flood the log.
            const MAX_LOGGED: usize = 100;
            let more = refused.len().saturating_sub(MAX_LOGGED);
            for f in refused.into_iter().take(MAX_LOGGED) {
                ctx.log(&[
                    ("event", "fleet-refused".into()),
                    ("prefix", f.prefix.to_string()),
                    ("origin", lapi::clip(&f.origin, 64)),
                    ("scenario", lapi::clip(&f.scenario, 128)),
                    ("why", f.why),
                ]);
            }
            if more > 0 {
                ctx.log(&[
                    ("event", "fleet-refused".into()),
                    ("more", more.to_string()),
                    ("detail", "pbxfw bans lists every refused decision".into()),
                ]);
            }
            if let Some(e) = error {
                ctx.log(&[
                    ("error", "fleet".into()),
                    ("detail", format!("writing the fleet's sets: {e}")),
                ]);
            } else if self.enforcer.stats.last_written > 0 {
                let s = &self.enforcer.stats;
                ctx.log(&[
                    ("event", "fleet-sync".into()),
                    ("enforced", s.enforced.to_string()),
                    ("written", s.last_written.to_string()),
                    (
                        "kernel_ms",
                        format!("{:.1}", s.last_kernel_seconds * 1000.0),
                    ),
                ]);
            }
            self.snapshot_due = true;
        }
        if pushes && self.last_tier_look.is_none_or(|t| t.elapsed() >= TIER_LOOK) {
            self.last_tier_look = Some(Instant::now());
            self.push_tier_bans(ctx, kernel, rs, now, ban_seconds);
        }
        if self.snapshot_due
            && self
                .last_snapshot
                .is_none_or(|t| t.elapsed() >= SNAPSHOT_EVERY)
        {
            if let Err(e) = self.enforcer.write_snapshot(&state_path(), &url, now) {
                ctx.log(&[
                    ("error", "fleet".into()),
                    ("detail", format!("{}: {e}", state_path().display())),
                ]);
            }
            self.snapshot_due = false;
            self.last_snapshot = Some(Instant::now());
        }
    }

    /// Push the kernel tiers' bans not pushed yet (or renewed well past what was pushed: a
    /// tier ban slides while its source keeps sending).
    fn push_tier_bans(
        &mut self,
        ctx: &crate::context::Context,
        kernel: &dyn Backend,
        rs: &Ruleset,
        now: u64,
        ban_seconds: u64,
    ) {
        let Some(r) = &self.running else { return };
        self.tier_pushed.retain(|_, end| *end > now);
        for f in Family::BOTH {
            let set = names::tier_ban(f);
            let elements = match kernel.set_elements(&set) {
                Ok(e) => e,
                Err(e) => {
                    ctx.log(&[
                        ("error", "fleet".into()),
                        ("detail", format!("reading {set}: {e}")),
                    ]);
                    continue;
                }
            };
            for el in elements {
                let (Some(prefix), Some(left)) = (
                    crate::bans::element_prefix(Some(rs), &set, &el.element),
                    el.expires_in,
                ) else {
                    continue;
                };
                let end = now + left;
                let pushed = self.tier_pushed.get(&prefix).copied();
                if pushed.is_none_or(|p| end > p + ban_seconds / 2) {
                    self.tier_pushed.insert(prefix, end);
                    r.push(Push::Ban {
                        prefix,
                        seconds: left.max(1),
                        scenario: "pbxfw/kernel_tier".into(),
                    });
                }
            }
        }
    }

    /// The LAPI's addresses, this host's DNS resolvers (`/etc/resolv.conf`) and its default
    /// gateways: a ban on one of them would cut the PBX off from the decision that lifts it.
    fn refresh_infra(&mut self) {
        let mut infra: Vec<(std::net::IpAddr, &'static str)> =
            self.lapi.iter().map(|a| (*a, "the fleet's LAPI")).collect();
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        infra.extend(
            pbxfw_host::dns::Resolver::from_resolv_conf(&resolv)
                .servers()
                .iter()
                .map(|s| (s.ip(), "a DNS resolver of this host")),
        );
        infra.extend(
            pbxfw_host::ifaddrs::default_gateways()
                .into_iter()
                .map(|g| (g, "a default gateway of this host")),
        );
        self.infra = infra;
    }

    /// What the metrics show.
    pub fn metrics(&self) -> Metrics {
        let Some(r) = &self.running else {
            return Metrics::default();
        };
        let c = &r.counters;
        Metrics {
            configured: true,
            stats: self.enforcer.stats.clone(),
            pull_errors: c.pull_errors.load(Ordering::Relaxed),
            pushed: c.pushed.load(Ordering::Relaxed),
            push_errors: c.push_errors.load(Ordering::Relaxed),
            push_dropped: c.push_dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_must_be_roots_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "abc\n").unwrap();
        let path = f.to_str().unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(path).unwrap_err().to_string();
        assert!(e.contains("mode 0600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        if rustix::process::geteuid().is_root() {
            assert_eq!(read_secret(path).unwrap(), "abc");
        }
        std::fs::write(&f, "abc\ndef\n").unwrap();
        assert!(read_secret(path).is_err());
        std::fs::write(&f, "\n").unwrap();
        assert!(read_secret(path).is_err());
    }
}
