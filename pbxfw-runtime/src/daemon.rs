//! `pbxfw daemon` and `pbxfw replay`: security events in, kernel set updates out.
//!
//! Sources run on their own threads and send what they read over one bounded channel:
//! Asterisk AMI over TCP (login checked, reconnect with backoff), log files and JSON-lines
//! files followed as bytes across rotation and restarts ([`pbxfw_host::follow`]), and a
//! JSON-lines Unix socket. A full channel makes the sources wait (a file is read later, AMI and
//! socket peers are read later): nothing is dropped and memory stays bounded under a flood.
//!
//! The main loop takes what is queued in batches, feeds the responsive state machine with the
//! wall clock, carries out the batch's actions as one set-element update per set and
//! operation, and logs every decision as one `key=value` line on standard error (journald
//! keeps it). Its state (the machine, how far each file was read, the counters) is written
//! behind, at most every 100 ms, atomically and fsynced. A crash loses at most that much of
//! the state, never a ban: on start the files are read again from the saved positions, and the
//! bans the kernel holds are merged into the machine before it is re-seeded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pbxfw_core::log::Framer;
use pbxfw_core::Backend;
use pbxfw_core::Prefix;
use pbxfw_core::{ami, json, EventError, SecurityEvent, TimedEvent};
use pbxfw_core::{compile, Ruleset, Source, ValidPolicy};
use pbxfw_core::{Action, Machine, MachineConfig as Config, Protected};
use pbxfw_host::follow::{Follower, Next, Position};
use serde::{Deserialize, Serialize};

use crate::backends::BackendName;
use crate::context::Context;
use crate::error::{Error, Result};

/// Where events come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Asterisk AMI `host:port`, user and secret.
    pub ami: Option<(String, String, String)>,
    /// Asterisk log files to follow.
    pub logs: Vec<PathBuf>,
    /// JSON-lines files to follow.
    pub json_files: Vec<PathBuf>,
    /// A Unix socket to accept JSON-lines connections on.
    pub json_socket: Option<PathBuf>,
    /// The group that may write to the socket (mode 0660); without one only root may (0600).
    pub json_socket_group: Option<String>,
}

/// Messages a source may have queued before it waits: about a megabyte.
const QUEUE: usize = 4096;

/// Most messages handled as one batch (one kernel update per set and operation).
const BATCH: usize = 4096;

/// How far back a restarted daemon reads a file it follows: at most this many bytes written
/// while it was not running (older lines are skipped, and it says so).
pub const MAX_RESUME: u64 = 64 << 20;

/// The state is written at most this often (and at once on a clean exit of the sources).
const WRITE_BEHIND: Duration = Duration::from_millis(100);

/// Which followed file a message comes from, and where it stands after it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    file: usize,
    pos: Position,
    framer: Framer,
}

/// What a source read.
enum Outcome {
    Event(SecurityEvent),
    /// A record a sender may have written (docs/events.md, "Trust"): acts against nobody.
    Ambiguous(String),
    /// A record of a kind the daemon reads, malformed.
    Malformed(String),
    /// Nothing to act on.
    Nothing,
}

/// One message on the event channel.
enum Msg {
    /// A record read, and, for a followed file, where reading stands after it.
    Read(Outcome, Option<Progress>),
    Note(String),
    /// New answers: what the resolving sets should hold, and each hostname's addresses.
    Dns(crate::names::Desired, Vec<(String, Vec<IpAddr>)>),
    /// Stop ([`Handle::stop`]).
    Stop,
    /// The fleet's threads (docs/fleet.md).
    Fleet(crate::fleet::Report),
}

fn describe(a: &Action) -> Vec<(&'static str, String)> {
    match a {
        Action::Ban {
            prefix,
            until,
            reason,
        } => vec![
            ("action", "ban".into()),
            ("source", prefix.to_string()),
            ("until", until.to_string()),
            ("reason", reason.clone()),
        ],
        Action::Unban { prefix } => {
            vec![("action", "unban".into()), ("source", prefix.to_string())]
        }
        Action::Clamp {
            prefix,
            until,
            reason,
        } => vec![
            ("action", "clamp".into()),
            ("source", prefix.to_string()),
            ("until", until.to_string()),
            ("reason", reason.clone()),
        ],
        Action::Unclamp { prefix } => {
            vec![("action", "unclamp".into()), ("source", prefix.to_string())]
        }
        Action::AllowRegistered {
            addr,
            until,
            account,
            grants,
        } => vec![
            ("action", "registered".into()),
            ("source", addr.to_string()),
            ("account", account.clone()),
            ("until", until.to_string()),
            ("grants", grants.join(",")),
        ],
        Action::Revoke { addr, account, .. } => vec![
            ("action", "revoke".into()),
            ("source", addr.to_string()),
            ("account", account.clone()),
        ],
        Action::ReportIdentity {
            source,
            account,
            user_agent,
            reason,
        } => vec![
            ("action", "report".into()),
            ("source", source.to_string()),
            ("account", account.clone().unwrap_or_default()),
            ("user_agent", user_agent.clone().unwrap_or_default()),
            ("reason", reason.clone()),
        ],
    }
}

/// Carry out actions in the kernel ([`crate::actions::carry_out`]), logging each update it
/// refused. Returns the number of refused updates.
fn apply_actions(
    ctx: &Context,
    kernel: &dyn Backend,
    rs: &Ruleset,
    actions: &[Action],
    at: u64,
) -> usize {
    let done = crate::actions::carry_out(kernel, rs, actions, at);
    for f in &done.failures {
        ctx.log(&[
            ("error", "kernel".into()),
            ("set", f.role.set(f.family)),
            ("op", f.op.into()),
            ("elements", f.elements.to_string()),
            ("detail", f.error.to_string()),
        ]);
    }
    done.failures.len()
}

/// Where a followed file was read up to, with the log framer's state there.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FilePosition {
    /// The file and offset.
    #[serde(flatten)]
    pub pos: Position,
    /// The log framer's state (inside a debug dump, or a window of suspect lines).
    #[serde(default)]
    pub framer: Framer,
}

/// What the daemon counted since its state was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Security events acted on.
    pub events: u64,
    /// Records refused because a sender may have written them (docs/events.md, "Trust").
    pub ambiguous: u64,
    /// Records of a kind the daemon reads that were malformed.
    pub malformed: u64,
    /// Actions taken (bans, clamps, registrations, ...).
    pub actions: u64,
    /// The number of the last ban-ledger entry applied ([`crate::bans`]): later ones are
    /// applied at the next look, earlier ones never again.
    #[serde(default)]
    pub ledger_applied: u64,
}

/// The daemon's state file (`--state`), kind `responsive`: the machine, where each followed
/// file was read up to, and the counters. (A bare machine snapshot, as written before, still
/// loads.)
#[derive(Serialize)]
struct SavedOut<'a> {
    machine: &'a Machine,
    files: &'a BTreeMap<String, FilePosition>,
    counters: &'a Counters,
}

#[derive(Deserialize)]
struct SavedIn {
    machine: serde_json::Value,
    #[serde(default)]
    files: BTreeMap<String, FilePosition>,
    #[serde(default)]
    counters: Counters,
}

/// What the daemon restores on start.
pub struct Saved {
    /// The machine.
    pub machine: Machine,
    /// Followed files' positions, by path.
    pub files: BTreeMap<String, FilePosition>,
    /// The counters.
    pub counters: Counters,
}

const STATE_KIND: &str = "responsive";

/// Load the daemon's state from `state`, or start fresh when the file does not exist. A file
/// that exists but cannot be read is an error that names the last good copy, if there is one:
/// starting empty would silently lift every ban.
pub fn load_state(state: &Path, config: Config) -> Result<Saved> {
    let text = match std::fs::read_to_string(state) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Saved {
                machine: Machine::new(config),
                files: BTreeMap::new(),
                counters: Counters::default(),
            })
        }
        Err(e) => return Err(Error::io(state, e)),
    };
    match parse_saved(&text) {
        Ok(mut saved) => {
            saved.machine.reconfigure(config);
            Ok(saved)
        }
        Err(e) => {
            let mut prev = state.as_os_str().to_owned();
            prev.push(".prev");
            let prev = PathBuf::from(prev);
            let good = std::fs::read_to_string(&prev)
                .ok()
                .is_some_and(|t| parse_saved(&t).is_ok());
            Err(Error::State(pbxfw_host::state::StateError {
                path: state.to_path_buf(),
                reason: e,
                last_good: good.then_some(prev),
            }))
        }
    }
}

/// The state as this daemon writes it, or a bare machine snapshot as daemons wrote it before
/// the state held more than the machine.
fn parse_saved(text: &str) -> Result<Saved, String> {
    #[derive(Deserialize)]
    struct Head {
        pbxfw_state: Option<String>,
        version: Option<u64>,
    }
    let head: Head = serde_json::from_str(text).map_err(|e| format!("not a state file: {e}"))?;
    let Some(kind) = head.pbxfw_state else {
        let machine = Machine::restore(text).map_err(|e| e.to_string())?;
        return Ok(Saved {
            machine,
            files: BTreeMap::new(),
            counters: Counters::default(),
        });
    };
    if kind != STATE_KIND {
        return Err(format!(
            "holds pbxfw state {kind:?}, expected {STATE_KIND:?}"
        ));
    }
    if head.version.unwrap_or(0) > u64::from(pbxfw_host::state::VERSION) {
        return Err(format!(
            "was written by a newer pbxfw (state version {}, this one reads up to {})",
            head.version.unwrap_or(0),
            pbxfw_host::state::VERSION
        ));
    }
    #[derive(Deserialize)]
    struct Envelope {
        data: SavedIn,
    }
    let env: Envelope = serde_json::from_str(text).map_err(|e| format!("corrupt state: {e}"))?;
    let machine = Machine::restore(&env.data.machine.to_string()).map_err(|e| e.to_string())?;
    Ok(Saved {
        machine,
        files: env.data.files,
        counters: env.data.counters,
    })
}

/// The machine of a daemon state file's text, if it reads.
pub fn parse_machine(text: &str) -> Option<Machine> {
    parse_saved(text).ok().map(|s| s.machine)
}

/// What `pbxfw status` shows of the daemon's state at `path`: its counters and how far each
/// file was read (`None` when there is no state yet, or it cannot be read).
pub fn state_summary(path: &Path, t: u64) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let saved = parse_saved(&text).ok()?;
    Some(serde_json::json!({
        "state": path.display().to_string(),
        "counters": saved.counters,
        "bans": saved.machine.bans(t).len(),
        "tracked": saved.machine.tracked(),
        "files": saved.files,
        "wrong_passwords": saved.machine.wrong_passwords().into_iter().map(|w| serde_json::json!({
            "account": w.account,
            "source": w.source,
            "since": w.since,
            "since_iso": crate::human::iso8601(w.since),
        })).collect::<Vec<_>>(),
    }))
}

/// Write the daemon's state atomically (temp file, fsync, rename), keeping the file it
/// replaces as `NAME.prev` by a hard link (no copy: under a flood the state is megabytes and
/// written ten times a second).
fn save_state(
    state: &Path,
    machine: &Machine,
    files: &BTreeMap<String, FilePosition>,
    counters: &Counters,
) -> std::io::Result<()> {
    // Written straight from the machine: through a `serde_json::Value` the state would exist
    // twice more in memory, tens of megabytes for a table full of sources.
    #[derive(Serialize)]
    struct Envelope<'a> {
        pbxfw_state: &'static str,
        version: u32,
        data: SavedOut<'a>,
    }
    let text = serde_json::to_string(&Envelope {
        pbxfw_state: STATE_KIND,
        version: pbxfw_host::state::VERSION,
        data: SavedOut {
            machine,
            files,
            counters,
        },
    })
    .map_err(std::io::Error::other)?;
    let mut prev = state.as_os_str().to_owned();
    prev.push(".prev");
    let mut link = prev.clone();
    link.push(".new");
    let (prev, link) = (PathBuf::from(prev), PathBuf::from(link));
    let _ = std::fs::remove_file(&link);
    if std::fs::hard_link(state, &link).is_ok() {
        std::fs::rename(&link, &prev)?;
    }
    pbxfw_host::state::write_atomic(state, text.as_bytes())
}

/// The addresses of the sessions that applied the loaded ruleset (`SSH_CONNECTION`,
/// `--admin`), as the last apply recorded them: the machine never bans them.
pub fn applied_session_protection() -> Vec<Protected> {
    crate::safety::applied_sessions()
        .into_iter()
        .map(|a| Protected {
            prefix: Prefix::host(a),
            why: format!("the session that applied the policy ({a})"),
        })
        .collect()
}

/// The machine's configuration for `policy`, with the sessions that applied it protected: the
/// daemon's, and the one an embedder's machine gets (`pbxfw_responsive_new`,
/// `pbxfw.Responsive`), so that no machine bans the administrator who applied the policy.
pub fn machine_config(policy: &ValidPolicy) -> Config {
    let mut c = Config::from_policy(policy);
    c.protected.extend(applied_session_protection());
    c
}

/// The protected sources named by hostname (trunks, trusted networks), with their current
/// addresses.
pub fn resolved_protection(
    policy: &ValidPolicy,
    answers: &[(String, Vec<IpAddr>)],
) -> Vec<Protected> {
    let mut out = Vec::new();
    for (source, why) in pbxfw_core::protected_sources(policy) {
        let Source::Host(name) = source else {
            continue;
        };
        for (n, addrs) in answers {
            if n.eq_ignore_ascii_case(name) {
                out.extend(addrs.iter().map(|a| Protected {
                    prefix: Prefix::host(*a),
                    why: format!("{why} ({a})"),
                }));
            }
        }
    }
    out
}

/// The machine's bans the kernel holds and the machine does not know (written to the kernel by
/// a daemon that was killed before its state was), adopted with their remaining time.
fn merge_kernel_bans(
    ctx: &Context,
    kernel: &dyn Backend,
    rs: &Ruleset,
    machine: &mut Machine,
    manual: &[Prefix],
    t: u64,
) -> usize {
    let bans: Vec<String> = pbxfw_core::Family::BOTH
        .iter()
        .map(|f| pbxfw_core::names::ban(*f))
        .collect();
    let status = match kernel.status() {
        Ok(s) => s,
        Err(e) => {
            ctx.log(&[("error", "read-back".into()), ("detail", e.to_string())]);
            return 0;
        }
    };
    let mut adopted = 0;
    for set in status.sets.iter().filter(|s| bans.contains(&s.name)) {
        for el in &set.elements {
            let (Some(prefix), Some(left)) = (
                crate::bans::element_prefix(Some(rs), &set.name, &el.element),
                el.expires_in,
            ) else {
                continue;
            };
            // A ban by hand is the ledger's, not the machine's.
            if manual.contains(&prefix) {
                continue;
            }
            if machine.adopt_ban(prefix, t + left, t) {
                adopted += 1;
            }
        }
    }
    adopted
}

/// What identifies the ban ledger's current content without reading it.
fn ledger_stamp() -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(crate::bans::ledger_path()).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The ban ledger, or `None` when it cannot be read (logged): its unbans and bans by hand then
/// wait until it can, and nothing is decided from its absence.
fn read_ledger(ctx: &Context) -> Option<crate::bans::Ledger> {
    crate::bans::Ledger::read()
        .map_err(|e| ctx.log(&[("error", "ledger".into()), ("detail", e.to_string())]))
        .ok()
}

/// The actions that put the ledger's bans by hand back, except what `machine` protects now.
fn manual_replay(ledger: &crate::bans::Ledger, machine: &Machine, t: u64) -> Vec<Action> {
    ledger.replay_actions(t, |p| {
        pbxfw_core::never_banned(machine.config(), &[], p).is_some()
    })
}

/// Apply the ledger's entries the machine has not seen: each unban forgives the sources it
/// overlaps (bans by hand are in the kernel already, and in `replay` for reboots). Returns the
/// actions that lift what the machine still held, and the hooks' calls for the new entries
/// (each ban by hand and each unban, once).
fn apply_ledger(
    ctx: &Context,
    machine: &mut Machine,
    ledger: &crate::bans::Ledger,
    counters: &mut Counters,
    t: u64,
) -> (Vec<Action>, Vec<Action>) {
    // A ledger numbered below what was applied was created anew: all of it is new. (An unban
    // applied twice lifts nothing more: it never lifts a ban made after it.)
    let seen = if ledger.last < counters.ledger_applied {
        0
    } else {
        counters.ledger_applied
    };
    let (mut out, mut calls) = (Vec::new(), Vec::new());
    for e in ledger.after(seen) {
        match &e.op {
            crate::bans::Op::Unban { prefix } => {
                let lifted = machine.forgive(prefix, e.at, t);
                ctx.log(&[
                    ("event", "unban".into()),
                    ("prefix", prefix.to_string()),
                    ("by", e.by.clone()),
                    ("lifted", lifted.len().to_string()),
                ]);
                out.extend(lifted);
                calls.push(Action::Unban { prefix: *prefix });
            }
            crate::bans::Op::Ban {
                prefix,
                until,
                reason,
            } => calls.push(Action::Ban {
                prefix: *prefix,
                until: *until,
                reason: format!("by hand ({}): {reason}", e.by),
            }),
        }
    }
    counters.ledger_applied = ledger.last;
    (out, calls)
}

/// How a [`Daemon`] runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The policy file ([`crate::policy::resolve`]); read again when an `apply` loads another.
    pub policy: Option<String>,
    /// Where events come from.
    pub sources: Sources,
    /// Follow `sources.logs` even when AMI is configured.
    pub logs_with_ami: bool,
    /// The state file.
    pub state: PathBuf,
    /// Housekeeping period (expiries, reloads, the kernel's sets checked).
    pub tick: Duration,
    /// The kernel backend.
    pub backend: crate::backends::BackendName,
    /// How hostnames are resolved.
    pub dns: crate::names::DnsOptions,
    /// A program run for each ban, unban and registration ([`crate::hooks`]).
    pub hooks: Option<crate::hooks::HookConfig>,
    /// Where to serve metrics for Prometheus, a loopback address ([`crate::metrics`]).
    pub metrics: Option<std::net::SocketAddr>,
    /// The control socket ([`crate::control`]); none: not served.
    pub control: Option<crate::control::ControlConfig>,
    /// How WireGuard peers are watched, when the policy maps any to users
    /// ([`crate::wireguard`], docs/vpn.md).
    pub wireguard: crate::wireguard::WireGuardConfig,
}

/// The responsive daemon: what `pbxfw daemon` runs, as a type a Rust program can run too.
///
/// ```no_run
/// use pbxfw_runtime::daemon::{Daemon, DaemonConfig, Sources};
///
/// let daemon = Daemon::new(DaemonConfig {
///     policy: Some("/etc/pbxfw/pbxfw.toml".into()),
///     sources: Sources {
///         logs: vec!["/var/log/asterisk/full".into()],
///         ..Default::default()
///     },
///     logs_with_ami: false,
///     state: "/var/lib/pbxfw/responsive.json".into(),
///     tick: std::time::Duration::from_secs(10),
///     backend: pbxfw_runtime::BackendName::Nft,
///     dns: Default::default(),
///     hooks: None,
///     metrics: None,
///     control: Some(pbxfw_runtime::control::ControlConfig::new(Some(
///         "/etc/pbxfw/pbxfw.toml".into(),
///     ))),
///     wireguard: Default::default(),
/// })?;
/// daemon.run()?;
/// # Ok::<(), pbxfw_runtime::Error>(())
/// ```
pub struct Daemon {
    config: DaemonConfig,
    loaded: crate::policy::Loaded,
    ctx: Context,
    tx: SyncSender<Msg>,
    rx: Receiver<Msg>,
    /// Whether a [`Handle`] was given out (an in-process source, so no other is needed).
    handled: bool,
}

/// A handle on a [`Daemon`] from another thread: feed it events in process (a Rust program's
/// own event source, read like any other), and stop it.
#[derive(Clone)]
pub struct Handle {
    tx: SyncSender<Msg>,
}

/// The daemon is not running any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the daemon has stopped")]
pub struct Stopped;

impl Handle {
    /// Hand the daemon one security event, acted on at its clock's time. Waits while the
    /// daemon's queue is full, as its other sources do.
    pub fn event(&self, event: SecurityEvent) -> Result<(), Stopped> {
        self.tx
            .send(Msg::Read(Outcome::Event(event), None))
            .map_err(|_| Stopped)
    }

    /// Stop the daemon: what is queued before this is handled, the state is written, and
    /// `run` returns.
    pub fn stop(&self) -> Result<(), Stopped> {
        self.tx.send(Msg::Stop).map_err(|_| Stopped)
    }
}

impl Daemon {
    /// Load the policy; with AMI configured, drop the log files unless asked to keep them
    /// (a sender can write into Asterisk's logs: docs/events.md, "Trust"). The wall clock
    /// and standard error.
    pub fn new(config: DaemonConfig) -> Result<Daemon> {
        Daemon::with_context(config, Context::system())
    }

    /// The same with a clock and log sink of the caller's.
    pub fn with_context(mut config: DaemonConfig, ctx: Context) -> Result<Daemon> {
        let loaded = crate::policy::load(config.policy.as_deref())?;
        for w in loaded.warnings() {
            ctx.log(&[("warning", "policy".into()), ("detail", w.to_string())]);
        }
        if config.sources.ami.is_some() && !config.sources.logs.is_empty() && !config.logs_with_ami
        {
            ctx.log(&[
                ("event", "sources".into()),
                (
                    "detail",
                    "AMI is configured: the --log files are not followed (a sender can write into Asterisk's logs; --log-with-ami follows them too)".into(),
                ),
            ]);
            config.sources.logs.clear();
        }
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        Ok(Daemon {
            config,
            loaded,
            ctx,
            tx,
            rx,
            handled: false,
        })
    }

    /// A handle to feed events and to stop the daemon; with one, the daemon needs no other
    /// source.
    pub fn handle(&mut self) -> Handle {
        self.handled = true;
        Handle {
            tx: self.tx.clone(),
        }
    }

    /// Run on the configured backend until a [`Handle`] stops it (without one, until the
    /// process ends).
    pub fn run(self) -> Result<()> {
        let kernel = self.config.backend.open();
        let backend = self.config.backend;
        self.run_with(kernel.as_ref(), Some(backend))
    }

    /// Run on `kernel` instead of the configured backend (an embedder's, or a test's
    /// in-memory one). Nothing listens for the kernel tiers' bans then: they are not this
    /// kernel's.
    pub fn run_on(self, kernel: &dyn Backend) -> Result<()> {
        self.run_with(kernel, None)
    }

    fn run_with(self, kernel: &dyn Backend, tiers: Option<BackendName>) -> Result<()> {
        let path = self.config.policy.clone();
        let reload = move || crate::policy::load(path.as_deref()).map(|l| l.policy);
        let hooks = self
            .config
            .hooks
            .clone()
            .map(|c| crate::hooks::Hooks::start(c, &self.ctx))
            .transpose()?;
        let metrics = match self.config.metrics {
            Some(addr) => {
                let shared = crate::metrics::Shared::default();
                crate::metrics::serve(addr, shared.clone(), self.config.backend, self.ctx.clone())?;
                Some(shared)
            }
            None => None,
        };
        // Enforcement matters more than the web module's way in: a socket that cannot be
        // served is an error in the log, not a firewall that does not run. A daemon serving
        // one runs even with no event source (a web module's only way to the firewall).
        let serving = match self.config.control.clone() {
            Some(control) => match crate::control::serve(
                control,
                self.ctx.clone(),
                Some(Handle {
                    tx: self.tx.clone(),
                }),
            ) {
                Ok(()) => true,
                Err(e) => {
                    self.ctx
                        .log(&[("error", "control".into()), ("detail", e.to_string())]);
                    false
                }
            },
            None => false,
        };
        run(
            &self.ctx,
            &self.loaded.policy,
            &reload,
            self.config.sources,
            &self.config.state,
            self.config.tick,
            kernel,
            (&self.config.dns, &self.config.wireguard),
            (hooks.as_ref(), metrics.as_ref()),
            (self.tx, self.rx),
            self.handled || serving,
            tiers,
        )
    }
}

/// Run the daemon until a [`Handle`] stops it (without one, until the process ends: the
/// hostname feed keeps the channel open even when every source has ended).
///
/// `reload` reads the policy file again. Every tick the daemon compares the kernel's
/// fingerprint with its own ruleset's; when an `apply` loaded another one and the policy file
/// now compiles to exactly that, the daemon adopts it: the state machine is reconfigured, its
/// bans and registrations are re-seeded, and the hostnames to resolve are updated. (A kernel
/// holding something the file does not compile to, during `apply --confirm` or after a manual
/// load, is logged once and left alone.) When the kernel's dynamic sets were created anew (the
/// table deleted and loaded again), everything is re-seeded.
#[allow(clippy::too_many_arguments)] // one call, from `Daemon::run_on`
fn run(
    ctx: &Context,
    policy: &ValidPolicy,
    reload: &dyn Fn() -> Result<ValidPolicy>,
    sources: Sources,
    state: &Path,
    tick: Duration,
    kernel: &dyn Backend,
    (dns, wireguard): (
        &crate::names::DnsOptions,
        &crate::wireguard::WireGuardConfig,
    ),
    (hooks, metrics): (
        Option<&crate::hooks::Hooks>,
        Option<&crate::metrics::Shared>,
    ),
    (tx, rx): (SyncSender<Msg>, Receiver<Msg>),
    handled: bool,
    tiers: Option<BackendName>,
) -> Result<()> {
    let mut policy = policy.clone();
    let mut rs = compile(&policy);
    // The kernel tiers' bans: their flows are cut from a thread of their own.
    let tier_watch = tiers.map(|b| crate::tier_bans::Watch::start(ctx, b, &rs));
    let Saved {
        mut machine,
        mut files,
        mut counters,
    } = load_state(state, machine_config(&policy))?;
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // An apply left unconfirmed across a restart or reboot is rolled back first.
    match crate::safety::overdue() {
        Ok(Some(msg)) => ctx.log(&[("event", "rollback".into()), ("detail", msg)]),
        Ok(None) => {}
        Err(e) => ctx.log(&[("error", "rollback".into()), ("detail", e.to_string())]),
    }
    let t = ctx.now();
    machine.tick(t);
    // The fleet (docs/fleet.md): its threads report on the event channel.
    let fleet_deliver = {
        let tx = tx.clone();
        move |r: crate::fleet::Report| tx.send(Msg::Fleet(r)).is_ok()
    };
    let mut fleet = crate::fleet::Member::new();
    fleet.configure(ctx, policy.fleet.as_ref(), fleet_deliver.clone());
    // Unbans made while the daemon was away come before anything is put back. Without a
    // readable ledger nothing is taken over from the kernel either: a ban by hand there would
    // look like one of the machine's.
    let mut ledger_seen = ledger_stamp();
    let mut seed = Vec::new();
    let mut adopted = 0;
    match read_ledger(ctx) {
        Some(ledger) => {
            let (forgiven, calls) = apply_ledger(ctx, &mut machine, &ledger, &mut counters, t);
            fleet.on_calls(&calls, &machine, true, t);
            seed = forgiven;
            if let Some(h) = hooks {
                h.offer(&calls, t);
            }
            let manual: Vec<Prefix> = ledger.manual_bans(t).iter().map(|b| b.prefix).collect();
            adopted = merge_kernel_bans(ctx, kernel, &rs, &mut machine, &manual, t);
            seed.extend(machine.replay_actions(t));
            seed.extend(manual_replay(&ledger, &machine, t));
        }
        None => {
            ledger_seen = None;
            seed.extend(machine.replay_actions(t));
        }
    }
    let failed = apply_actions(ctx, kernel, &rs, &seed, t);
    let mut instance = kernel.instance().ok().flatten();
    // Ready for systemd (`Type=notify`) once the state is back in the kernel.
    if let Err(e) = pbxfw_host::notify::notify(&format!(
        "READY=1\nSTATUS=restored {} ban(s), clamp(s) and registration(s)",
        seed.len()
    )) {
        ctx.log(&[("error", "notify".into()), ("detail", e.to_string())]);
    }
    ctx.log(&[
        ("event", "start".into()),
        ("restored", seed.len().to_string()),
        ("adopted_from_kernel", adopted.to_string()),
        ("failed", failed.to_string()),
        ("state", state.display().to_string()),
    ]);

    let mut threads = 0;
    // Hostnames: restored answers are seeded at once; lookups run on their own thread, so a
    // slow or unreachable DNS server delays nothing else.
    let names = crate::names::tracked_names(&policy);
    let mut feeder = None;
    let mut dns_ctl = None;
    if !names.is_empty() {
        let (ctl, answers) = start_dns(ctx, dns, names, &rs, kernel, &tx, &mut feeder);
        machine.set_resolved(resolved_protection(&policy, &answers));
        dns_ctl = Some(ctl);
        threads += 1;
    }
    if let Some((addr, user, secret)) = sources.ami.clone() {
        spawn_source(&tx, move |tx| ami_loop(&addr, &user, &secret, &tx));
        threads += 1;
    }
    let followed: Vec<(PathBuf, bool)> = sources
        .logs
        .iter()
        .map(|p| (p.clone(), true))
        .chain(sources.json_files.iter().map(|p| (p.clone(), false)))
        .collect();
    let keys: Vec<String> = followed
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    for (i, (path, is_log)) in followed.into_iter().enumerate() {
        let resume = files.get(&keys[i]).copied();
        spawn_source(&tx, move |tx| follow(i, &path, is_log, resume, &tx));
        threads += 1;
    }
    if let Some(path) = sources.json_socket.clone() {
        let group = sources.json_socket_group.clone();
        spawn_source(&tx, move |tx| json_socket(&path, group.as_deref(), &tx));
        threads += 1;
    }
    // WireGuard peers (docs/vpn.md): a thread reads them while the policy maps any to users;
    // a reload replaces the map, and starts the thread if the first keys come with it.
    let wg_keys: crate::wireguard::Keys = Default::default();
    let mut wg_started = false;
    start_wireguard(ctx, wireguard, &wg_keys, &policy, &tx, &mut wg_started);
    if wg_started {
        threads += 1;
    }
    // Kept for a DNS thread a reload may start; the loop ends when the sources do (never, for
    // files and sockets), not when this sender goes.
    let dns_tx = tx;
    if fleet.active() {
        threads += 1;
    }
    if threads == 0 && !handled {
        return Err(Error::Usage(
            "no event source and no hostname to resolve: give --ami, --log, --events or --events-socket"
                .into(),
        ));
    }

    // The kernel fingerprint a reload could not match, so the file is read once per change.
    let mut ignored: Option<String> = None;
    let mut known: BTreeMap<String, ValidPolicy> =
        BTreeMap::from([(rs.fingerprint(), policy.clone())]);
    let mut refused = Refusals::default();
    let mut timings = crate::metrics::Timings::default();
    let mut dirty = false;
    let mut last_write = Instant::now();
    let mut write_every = WRITE_BEHIND;
    // Housekeeping (expiry, reloads) runs every `tick` even when events never stop coming.
    let mut next_tick = Instant::now() + tick;
    // The first pass publishes the metrics' snapshot at once.
    let mut ticked = true;
    loop {
        let deadline = if dirty {
            next_tick.min(last_write + write_every)
        } else {
            next_tick
        };
        let mut batch = Vec::new();
        let (first, mut ended) = receive(&rx, deadline);
        batch.extend(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let t = ctx.now();
        timings.queue_depth = batch.len() as u64;
        let mut actions = Vec::new();
        // What hooks are told about: the machine's decisions and the ledger's new entries,
        // never what is only put back (a restart, a reload, a reseed).
        let mut calls = Vec::new();
        for msg in batch {
            match msg {
                Msg::Read(outcome, progress) => {
                    match outcome {
                        Outcome::Event(e) => {
                            counters.events += 1;
                            *timings.events_by_kind.entry(e.kind()).or_default() += 1;
                            let decided = machine.on_event(&e, t);
                            if hooks.is_some() {
                                calls.extend(decided.iter().cloned());
                            }
                            fleet.on_calls(&decided, &machine, false, t);
                            actions.extend(decided);
                        }
                        Outcome::Ambiguous(why) => {
                            counters.ambiguous += 1;
                            refused.note(ctx, &counters, why);
                        }
                        Outcome::Malformed(why) => {
                            counters.malformed += 1;
                            refused.note(ctx, &counters, why);
                        }
                        Outcome::Nothing => {}
                    }
                    if let Some(p) = progress {
                        files.insert(
                            keys[p.file].clone(),
                            FilePosition {
                                pos: p.pos,
                                framer: p.framer,
                            },
                        );
                        dirty = true;
                    }
                }
                Msg::Note(n) => ctx.log(&[("event", "source".into()), ("detail", n)]),
                Msg::Fleet(r) => fleet.on_report(ctx, r, t),
                Msg::Stop => ended = true,
                Msg::Dns(want, answers) => {
                    machine.set_resolved(resolved_protection(&policy, &answers));
                    let f = match feeder.take() {
                        Some(f) => Ok(f),
                        None => crate::names::Feeder::from_kernel(kernel, &rs),
                    };
                    match f {
                        Ok(mut f) => {
                            log_dns(ctx, f.sync(kernel, &rs, &want));
                            feeder = Some(f);
                        }
                        Err(e) => ctx.log(&[("error", "dns".into()), ("detail", e.to_string())]),
                    }
                }
            }
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + tick;
            ticked = true;
            let decided = machine.tick(t);
            if hooks.is_some() {
                calls.extend(decided.iter().cloned());
            }
            fleet.on_calls(&decided, &machine, false, t);
            actions.extend(decided);
            let stamp = ledger_stamp();
            if stamp != ledger_seen {
                if let Some(ledger) = read_ledger(ctx) {
                    ledger_seen = stamp;
                    let (forgiven, new) =
                        apply_ledger(ctx, &mut machine, &ledger, &mut counters, t);
                    fleet.on_calls(&new, &machine, true, t);
                    actions.extend(forgiven);
                    calls.extend(new);
                    // After the unbans: a ban by hand made right after an unban of the same
                    // prefix wins over it (the last change to an element is the one made).
                    actions.extend(manual_replay(&ledger, &machine, t));
                    dirty = true;
                }
            }
            if let Some(new) = reloaded(ctx, kernel, &rs, reload, &mut known, &mut ignored) {
                rs = compile(&new);
                if let Some(w) = &tier_watch {
                    w.update(&rs);
                }
                machine.reconfigure(machine_config(&new));
                fleet.configure(ctx, new.fleet.as_ref(), fleet_deliver.clone());
                fleet.sets_lost();
                // Into the sets of the new ruleset (they may be new sets).
                actions.extend(machine.replay_actions(t));
                if let Some(l) = read_ledger(ctx) {
                    actions.extend(manual_replay(&l, &machine, t));
                }
                let names = crate::names::tracked_names(&new);
                ctx.log(&[
                    ("event", "reload".into()),
                    ("fingerprint", rs.fingerprint()),
                    ("names", names.len().to_string()),
                ]);
                feeder = None;
                match &dns_ctl {
                    Some(ctl) => {
                        let _ = ctl.send((names, rs.clone()));
                    }
                    None if !names.is_empty() => {
                        let (ctl, answers) =
                            start_dns(ctx, dns, names, &rs, kernel, &dns_tx, &mut feeder);
                        machine.set_resolved(resolved_protection(&new, &answers));
                        dns_ctl = Some(ctl);
                    }
                    None => {}
                }
                start_wireguard(ctx, wireguard, &wg_keys, &new, &dns_tx, &mut wg_started);
                policy = new;
                instance = kernel.instance().ok().flatten();
            } else {
                // The same ruleset, but its dynamic sets created anew (the table deleted and
                // loaded again): every ban, clamp and registration is gone from the kernel.
                let now_instance = kernel.instance().ok().flatten();
                if now_instance.is_some() && now_instance != instance {
                    if instance.is_some() {
                        ctx.log(&[
                            ("event", "reseed".into()),
                            (
                                "detail",
                                "the kernel's sets were created anew: bans, clamps and registrations put back"
                                    .into(),
                            ),
                        ]);
                        actions.extend(machine.replay_actions(t));
                        if let Some(l) = read_ledger(ctx) {
                            actions.extend(manual_replay(&l, &machine, t));
                        }
                        fleet.sets_lost();
                        feeder = None;
                        if let Some(ctl) = &dns_ctl {
                            let _ = ctl.send((crate::names::tracked_names(&policy), rs.clone()));
                        }
                    }
                    instance = now_instance;
                }
            }
        }
        if !actions.is_empty() {
            counters.actions += actions.len() as u64;
            for a in &actions {
                ctx.log(&describe(a));
            }
            let started = Instant::now();
            apply_actions(ctx, kernel, &rs, &actions, t);
            let took = started.elapsed().as_secs_f64();
            timings.kernel_updates += 1;
            timings.kernel_update_seconds += took;
            timings.kernel_update_max_seconds = timings.kernel_update_max_seconds.max(took);
            dirty = true;
        }
        fleet.after_pass(ctx, kernel, &rs, &machine, t);
        // After the kernel: a hook never delays enforcement.
        if let Some(h) = hooks {
            let dropped = h.offer(&calls, t);
            if dropped > 0 {
                ctx.log(&[
                    ("error", "hook".into()),
                    ("dropped", dropped.to_string()),
                    ("detail", "the hook queue is full".into()),
                ]);
            }
        }
        // The metrics' snapshot, at the state's pace (a pass over the sources).
        if let Some(shared) = metrics {
            if ticked || dirty && last_write.elapsed() >= write_every {
                publish(shared, &machine, &counters, hooks, &timings, t);
                if let Ok(mut s) = shared.lock() {
                    s.fleet = fleet.metrics();
                }
            }
        }
        ticked = false;
        if dirty && (ended || last_write.elapsed() >= write_every) {
            let started = Instant::now();
            if let Err(e) = save_state(state, &machine, &files, &counters) {
                ctx.log(&[("error", "state".into()), ("detail", e.to_string())]);
                // The last write, when stopping: its failure is the caller's to know.
                if ended {
                    return Err(Error::io(state, e));
                }
            }
            // A large state takes a while to write: never spend more than a fifth of the
            // time writing it.
            write_every = WRITE_BEHIND.max(started.elapsed() * 5);
            last_write = Instant::now();
            dirty = false;
        }
        if ended {
            return Ok(());
        }
    }
}

/// Publish what the metrics endpoint shows of the machine and the counters.
fn publish(
    shared: &crate::metrics::Shared,
    machine: &Machine,
    counters: &Counters,
    hooks: Option<&crate::hooks::Hooks>,
    timings: &crate::metrics::Timings,
    t: u64,
) {
    let mut by_cause: BTreeMap<String, u64> = BTreeMap::new();
    for r in machine.ban_records(t) {
        let cause = serde_json::to_value(r.cause)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        *by_cause.entry(cause).or_default() += 1;
    }
    let (clamped, registered) = machine.clamped_and_registered(t);
    if let Ok(mut s) = shared.lock() {
        *s = crate::metrics::Snapshot {
            counters: counters.clone(),
            bans_by_cause: by_cause,
            clamped: clamped as u64,
            registered: registered as u64,
            tracked: machine.tracked() as u64,
            hooks_dropped: hooks.map_or(0, |h| h.dropped()),
            timings: timings.clone(),
            fleet: std::mem::take(&mut s.fleet),
        };
    }
}

/// Records refused (ambiguous or malformed): counted always, logged at most once a minute (a
/// flood of them is a sender's, and must not flood the journal).
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    since: u64,
}

impl Refusals {
    fn note(&mut self, ctx: &Context, counters: &Counters, why: String) {
        self.since += 1;
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            ctx.log(&[
                ("event", "refused".into()),
                ("records", self.since.to_string()),
                ("ambiguous_total", counters.ambiguous.to_string()),
                ("malformed_total", counters.malformed.to_string()),
                ("detail", why),
            ]);
            self.logged = Some(Instant::now());
            self.since = 0;
        }
    }
}

/// The first message before `deadline`, and whether every source has ended.
fn receive(rx: &Receiver<Msg>, deadline: Instant) -> (Option<Msg>, bool) {
    let wait = deadline.saturating_duration_since(Instant::now());
    if wait.is_zero() {
        return match rx.try_recv() {
            Ok(m) => (Some(m), false),
            Err(mpsc::TryRecvError::Empty) => (None, false),
            Err(mpsc::TryRecvError::Disconnected) => (None, true),
        };
    }
    match rx.recv_timeout(wait) {
        Ok(m) => (Some(m), false),
        Err(RecvTimeoutError::Timeout) => (None, false),
        Err(RecvTimeoutError::Disconnected) => (None, true),
    }
}

/// The policy to adopt, when the kernel holds a ruleset other than `rs`: one the daemon ran
/// before (a rollback of `apply --confirm` brings the old one back), or what the policy file
/// compiles to now, if that is exactly what is loaded.
fn reloaded(
    ctx: &Context,
    kernel: &dyn Backend,
    rs: &Ruleset,
    reload: &dyn Fn() -> Result<ValidPolicy>,
    known: &mut BTreeMap<String, ValidPolicy>,
    ignored: &mut Option<String>,
) -> Option<ValidPolicy> {
    let loaded = kernel.fingerprint().ok().flatten()?;
    if loaded == rs.fingerprint() || ignored.as_deref() == Some(loaded.as_str()) {
        return None;
    }
    if let Some(p) = known.get(&loaded) {
        return Some(p.clone());
    }
    let adopt = match reload() {
        Ok(p) if compile(&p).fingerprint() == loaded => {
            known.insert(loaded.clone(), p.clone());
            Some(p)
        }
        Ok(_) => {
            ctx.log(&[
                ("event", "reload-skipped".into()),
                ("loaded", loaded.clone()),
                (
                    "detail",
                    "the kernel holds a ruleset the policy file does not compile to".into(),
                ),
            ]);
            None
        }
        Err(e) => {
            ctx.log(&[("error", "reload".into()), ("detail", e.to_string())]);
            None
        }
    };
    if adopt.is_none() {
        *ignored = Some(loaded);
    }
    adopt
}

type DnsControl = mpsc::Sender<(Vec<(String, bool)>, Ruleset)>;

/// Start resolving `names`: the restored answers go into the kernel at once, lookups on a
/// thread of their own. Returns the channel that gives the thread new names after a reload,
/// and the restored answers.
fn start_dns(
    ctx: &Context,
    dns: &crate::names::DnsOptions,
    names: Vec<(String, bool)>,
    rs: &Ruleset,
    kernel: &dyn Backend,
    tx: &SyncSender<Msg>,
    feeder: &mut Option<crate::names::Feeder>,
) -> (DnsControl, Vec<(String, Vec<IpAddr>)>) {
    let (mut tracker, problem) = crate::names::load_tracker(dns.config());
    if let Some(p) = problem {
        ctx.log(&[("error", "dns-state".into()), ("detail", p)]);
    }
    tracker.set_names(names.clone());
    match crate::names::Feeder::from_kernel(kernel, rs) {
        Ok(mut f) => {
            let want = crate::names::desired(rs, &tracker);
            log_dns(ctx, f.sync(kernel, rs, &want));
            *feeder = Some(f);
        }
        Err(e) => ctx.log(&[("error", "dns".into()), ("detail", e.to_string())]),
    }
    let answers = answers(&tracker, &names);
    let resolver = dns.resolver();
    ctx.log(&[
        ("event", "dns-start".into()),
        ("names", names.len().to_string()),
        (
            "servers",
            resolver
                .servers()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]);
    let (ctl_tx, ctl_rx) = mpsc::channel();
    let rs = rs.clone();
    let ctx = ctx.clone();
    spawn_source(tx, move |tx| {
        dns_loop(&ctx, resolver, tracker, rs, names, &ctl_rx, &tx)
    });
    (ctl_tx, answers)
}

/// Each tracked hostname's current addresses.
fn answers(
    tracker: &pbxfw_core::DnsTracker,
    names: &[(String, bool)],
) -> Vec<(String, Vec<IpAddr>)> {
    names
        .iter()
        .map(|(n, _)| (n.clone(), tracker.addresses(n).into_iter().collect()))
        .collect()
}

/// Log what a DNS sync changed in the kernel, and what it could not.
fn log_dns(ctx: &Context, (changes, errors): (Vec<crate::names::Change>, Vec<String>)) {
    let list = |v: &[Prefix]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    for c in changes {
        ctx.log(&[
            ("event", "dns-update".into()),
            ("set", c.set),
            ("added", list(&c.added)),
            ("removed", list(&c.removed)),
        ]);
    }
    for e in errors {
        ctx.log(&[("error", "dns-update".into()), ("detail", e)]);
    }
}

/// The resolver thread: look up what is due, send the resolving sets' wanted elements and the
/// names' addresses to the main loop when an answer changed them (or the names did), keep the
/// state file, and wait for the next lookup or for new names from a reload.
fn dns_loop(
    ctx: &Context,
    resolver: pbxfw_host::dns::Resolver,
    mut tracker: pbxfw_core::DnsTracker,
    mut rs: Ruleset,
    mut names: Vec<(String, bool)>,
    ctl: &mpsc::Receiver<(Vec<(String, bool)>, Ruleset)>,
    tx: &SyncSender<Msg>,
) {
    let mut force = false;
    loop {
        let t = ctx.now();
        let before = crate::names::desired(&rs, &tracker);
        let before_answers = answers(&tracker, &names);
        if crate::names::refresh_all(&resolver, &mut tracker, t) {
            for s in tracker.status(t) {
                if let Some(e) = &s.last_error {
                    ctx.log(&[
                        ("event", "dns-failed".into()),
                        ("name", s.name.clone()),
                        ("lookup", e.lookup.to_string()),
                        ("detail", e.error.to_string()),
                        ("kept", s.addresses.len().to_string()),
                    ]);
                }
            }
            if let Err(e) = crate::names::save_tracker(&tracker) {
                ctx.log(&[("error", "dns-state".into()), ("detail", e.to_string())]);
            }
        }
        let after = crate::names::desired(&rs, &tracker);
        let after_answers = answers(&tracker, &names);
        if (force || after != before || after_answers != before_answers)
            && tx.send(Msg::Dns(after, after_answers)).is_err()
        {
            return;
        }
        force = false;
        // Wake for the next due lookup (at least once a minute, so a clock step is noticed),
        // or at once for new names.
        let wait = tracker
            .next_due()
            .map_or(60, |d| d.saturating_sub(ctx.now()).clamp(1, 60));
        match ctl.recv_timeout(Duration::from_secs(wait)) {
            Ok((new_names, new_rs)) => {
                tracker.set_names(new_names.clone());
                names = new_names;
                rs = new_rs;
                force = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// This year (UTC), for log timestamps that carry none.
pub fn current_year() -> i32 {
    // Days since 1970 to a civil year, good enough for syslog-style timestamps.
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / 86400;
    let mut y = 1970;
    let mut d = days as i64;
    loop {
        let len = if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            366
        } else {
            365
        };
        if d < len {
            return y;
        }
        d -= len;
        y += 1;
    }
}

/// Give the WireGuard watcher `policy`'s keys, and start it if it is not running and there are
/// keys to watch.
fn start_wireguard(
    ctx: &Context,
    config: &crate::wireguard::WireGuardConfig,
    keys: &crate::wireguard::Keys,
    policy: &ValidPolicy,
    tx: &SyncSender<Msg>,
    started: &mut bool,
) {
    let map = crate::wireguard::key_map(policy);
    let empty = map.is_empty();
    *keys.lock().expect("the key map is never poisoned") = map;
    if *started || empty {
        return;
    }
    *started = true;
    let (config, keys, ctx) = (config.clone(), keys.clone(), ctx.clone());
    ctx.log(&[
        ("event", "wireguard".into()),
        ("idle_s", config.idle.to_string()),
        ("poll_s", config.poll.to_string()),
    ]);
    spawn_source(tx, move |tx| {
        let note_tx = tx.clone();
        crate::wireguard::watch(
            &config,
            &keys,
            &|e| tx.send(Msg::Read(Outcome::Event(e), None)).is_ok(),
            &|n| note_tx.send(Msg::Note(n)).is_ok(),
            &|| ctx.now(),
        )
    });
}

fn spawn_source(tx: &SyncSender<Msg>, f: impl FnOnce(SyncSender<Msg>) + Send + 'static) {
    let tx = tx.clone();
    std::thread::spawn(move || f(tx));
}

/// How long a follower waits when its file has nothing new and no change was signalled (a
/// change inotify missed).
const IDLE: Duration = Duration::from_millis(250);

/// How long a follower without inotify waits when its file has nothing new.
const POLL: Duration = Duration::from_millis(50);

/// Wakes a follower as soon as its file changes: inotify on the file's directory (a rotation
/// creates or moves a file there), and on the directory of the file a link points to. Without
/// inotify (none, or the directory is not there yet), it polls every [`POLL`] as before.
struct Wake {
    inotify: Option<std::os::fd::OwnedFd>,
}

impl Wake {
    fn new(path: &Path) -> Wake {
        use rustix::fs::inotify;
        let dir_of = |p: &Path| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        };
        let mut dirs = vec![dir_of(path)];
        if let Ok(real) = std::fs::canonicalize(path) {
            let d = dir_of(&real);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        let inotify = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .ok()
            .filter(|fd| {
                dirs.iter().all(|dir| {
                    inotify::add_watch(
                        fd,
                        dir,
                        inotify::WatchFlags::MODIFY
                            | inotify::WatchFlags::CREATE
                            | inotify::WatchFlags::MOVED_TO
                            | inotify::WatchFlags::CLOSE_WRITE
                            | inotify::WatchFlags::ATTRIB,
                    )
                    .is_ok()
                })
            });
        Wake { inotify }
    }

    /// Whether changes are signalled (else the follower polls).
    fn watching(&self) -> bool {
        self.inotify.is_some()
    }

    /// Wait until something in the directory changes, at most [`IDLE`].
    fn wait(&self) {
        let Some(fd) = &self.inotify else {
            std::thread::sleep(POLL);
            return;
        };
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: IDLE.as_nanos() as _,
        };
        if rustix::event::poll(&mut fds, Some(&timeout)).is_err() {
            std::thread::sleep(IDLE);
            return;
        }
        // Drain what was signalled: the follower reads the file itself.
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = rustix::fs::inotify::Reader::new(fd, &mut buf);
        while reader.next().is_ok() {}
    }
}

/// How many lines without an event a follower reads before it reports its position anyway.
const PROGRESS_EVERY: u32 = 1024;

fn outcome(r: Result<Option<TimedEvent>, EventError>) -> Outcome {
    match r {
        Ok(Some(t)) => Outcome::Event(t.event),
        Ok(None) => Outcome::Nothing,
        Err(EventError::Ambiguous { message }) => Outcome::Ambiguous(message),
        Err(e) => Outcome::Malformed(e.to_string()),
    }
}

/// Follow file `idx` (an Asterisk log, or JSON lines) from `resume` or its end, and send what
/// each line gives with the position after it.
fn follow(
    idx: usize,
    path: &Path,
    is_log: bool,
    resume: Option<FilePosition>,
    tx: &SyncSender<Msg>,
) {
    let mut wake = Wake::new(path);
    if !wake.watching() {
        let _ = tx.send(Msg::Note(format!(
            "{}: no inotify watch on its directory: checked every {} ms",
            path.display(),
            POLL.as_millis()
        )));
    }
    let mut f = Follower::open(path, resume.map(|r| r.pos), MAX_RESUME);
    let mut framer = resume.map(|r| r.framer).unwrap_or_default();
    let year = current_year();
    let mut quiet = 0u32;
    loop {
        let msg = match f.poll() {
            Ok(Next::Line(line, pos)) => {
                let read = if is_log {
                    outcome(framer.read(line, year, 0))
                } else {
                    outcome(json::parse_logged_line(&String::from_utf8_lossy(line)))
                };
                let progress = Some(Progress {
                    file: idx,
                    pos,
                    framer,
                });
                match read {
                    Outcome::Nothing => {
                        quiet += 1;
                        if quiet < PROGRESS_EVERY {
                            continue;
                        }
                        quiet = 0;
                        Msg::Read(Outcome::Nothing, progress)
                    }
                    other => {
                        quiet = 0;
                        Msg::Read(other, progress)
                    }
                }
            }
            Ok(Next::Jump(why)) => {
                // Another file, or bytes skipped: a dump or window open before says nothing
                // about what comes now.
                framer = Framer::default();
                Msg::Note(why)
            }
            Ok(Next::Idle) => {
                if quiet > 0 {
                    quiet = 0;
                    if let Some(pos) = f.position() {
                        let p = Progress {
                            file: idx,
                            pos,
                            framer,
                        };
                        if tx.send(Msg::Read(Outcome::Nothing, Some(p))).is_err() {
                            return;
                        }
                    }
                }
                // A directory that appeared since (a log not written yet at start) is watched
                // from now on.
                if !wake.watching() {
                    wake = Wake::new(path);
                }
                wake.wait();
                continue;
            }
            Err(e) => {
                std::thread::sleep(Duration::from_millis(500));
                Msg::Note(format!("{}: {e}", path.display()))
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Most JSON-lines connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

/// Longest JSON line read from the socket; a longer one is dropped.
const MAX_JSON_LINE: usize = 64 * 1024;

/// Listen for JSON-lines connections on `path`, created 0600 (or 0660 for `group`) whatever the
/// umask: bound in a private directory, given its mode and owner, then moved into place, so
/// no other user can connect in between.
fn json_socket(path: &Path, group: Option<&str>, tx: &SyncSender<Msg>) {
    let gid = match group.map(|g| (g, pbxfw_host::dirs::group_id(g))) {
        Some((g, None)) => {
            let _ = tx.send(Msg::Note(format!(
                "{}: cannot listen: no group {g:?}",
                path.display()
            )));
            return;
        }
        Some((_, gid)) => gid,
        None => None,
    };
    let listener = match bind_private(path, gid) {
        Ok(l) => l,
        Err(e) => {
            let _ = tx.send(Msg::Note(format!("{}: cannot listen: {e}", path.display())));
            return;
        }
    };
    let active = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for conn in listener.incoming().flatten() {
        while active.load(std::sync::atomic::Ordering::Acquire) >= MAX_CONNECTIONS {
            std::thread::sleep(Duration::from_millis(20));
        }
        active.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let tx = tx.clone();
        let active = active.clone();
        std::thread::spawn(move || {
            serve_json(conn, &tx);
            active.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        });
    }
}

fn serve_json(conn: std::os::unix::net::UnixStream, tx: &SyncSender<Msg>) {
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_JSON_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > MAX_JSON_LINE && !line.ends_with(b"\n") {
            // Too long: drop the rest of it.
            let _ = tx.send(Msg::Read(
                Outcome::Malformed(format!("a JSON line longer than {MAX_JSON_LINE} bytes")),
                None,
            ));
            let mut rest = Vec::new();
            if reader.read_until(b'\n', &mut rest).is_err() {
                return;
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let read = outcome(json::parse_line(text.trim()).map(Some));
        if tx.send(Msg::Read(read, None)).is_err() {
            return;
        }
    }
}

/// Listen on a Unix socket at `path`, created 0600 (or 0660 root:`gid`) whatever the umask:
/// bound in a private directory, given its mode and owner, then moved into place, so no other
/// user can connect in between.
pub(crate) fn bind_private(
    path: &Path,
    gid: Option<u32>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private = parent.join(format!(".pbxfw-socket-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let result = (|| {
        let tmp = private.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

/// A session that lasted this long was healthy: the next failure retries after a second again.
const HEALTHY: Duration = Duration::from_secs(30);

/// Connect to AMI, log in, read events; reconnect with backoff (1 s doubling to 30 s, back to
/// 1 s after a session that logged in and lasted [`HEALTHY`]).
fn ami_loop(addr: &str, user: &str, secret: &str, tx: &SyncSender<Msg>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match ami_session(addr, user, secret, tx) {
            Ok(()) => return,
            Err(e) => {
                if e.logged_in && started.elapsed() >= HEALTHY {
                    backoff = Duration::from_secs(1);
                }
                if tx
                    .send(Msg::Note(format!(
                        "ami {addr}: {}; retrying in {backoff:?}",
                        e.detail
                    )))
                    .is_err()
                {
                    return;
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Why an AMI session ended.
struct AmiEnd {
    logged_in: bool,
    detail: String,
}

/// One AMI session. `Ok` only when the daemon is ending (the channel closed).
fn ami_session(addr: &str, user: &str, secret: &str, tx: &SyncSender<Msg>) -> Result<(), AmiEnd> {
    let fail = |logged_in: bool| {
        move |e: std::io::Error| AmiEnd {
            logged_in,
            detail: e.to_string(),
        }
    };
    let sock: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(fail(false))?
        .next()
        .ok_or_else(|| AmiEnd {
            logged_in: false,
            detail: "no address".into(),
        })?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(10)).map_err(fail(false))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(fail(false))?;
    // Only the security and system classes: the call classes carry dialled extensions and
    // caller names, values a sender writes.
    let login = format!("Action: Login\r\nActionID: pbxfw-login\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: security,system\r\n\r\n");
    s.write_all(login.as_bytes()).map_err(fail(false))?;
    let mut reader = ami::AmiReader::new();
    let mut buf = [0u8; 16 * 1024];
    let mut logged_in = false;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => {
                return Err(AmiEnd {
                    logged_in,
                    detail: if logged_in {
                        "connection closed".into()
                    } else {
                        "connection closed before the login was answered".into()
                    },
                })
            }
            Ok(n) => n,
            // No event for a minute: ask for a pong so a dead connection is noticed.
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                s.write_all(b"Action: Ping\r\n\r\n")
                    .map_err(fail(logged_in))?;
                continue;
            }
            Err(e) => return Err(fail(logged_in)(e)),
        };
        reader.feed(&buf[..n]);
        if !logged_in {
            // The answer to the login comes first (events only follow a successful one).
            match reader.next_block() {
                None => continue,
                Some(Err(e)) => {
                    return Err(AmiEnd {
                        logged_in,
                        detail: e.to_string(),
                    })
                }
                Some(Ok(block)) => match ami::login_response(&block) {
                    Some(Ok(())) => {
                        logged_in = true;
                        if tx
                            .send(Msg::Note(format!("ami {addr}: logged in as {user}")))
                            .is_err()
                        {
                            return Ok(());
                        }
                    }
                    Some(Err(why)) => {
                        return Err(AmiEnd {
                            logged_in,
                            detail: format!("login refused: {why}"),
                        })
                    }
                    None => continue,
                },
            }
        }
        while let Some(item) = reader.next_event() {
            let read = match item {
                Ok(t) => Outcome::Event(t.event),
                Err(EventError::Ambiguous { message }) => {
                    Outcome::Ambiguous(format!("ami {addr}: {message}"))
                }
                Err(e) => Outcome::Malformed(format!("ami {addr}: {e}")),
            };
            if tx.send(Msg::Read(read, None)).is_err() {
                return Ok(());
            }
        }
    }
}
