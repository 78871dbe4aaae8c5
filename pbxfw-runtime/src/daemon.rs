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

use pbxfw_core::backend::{Backend, Element, Op};
use pbxfw_core::events::log::Framer;
use pbxfw_core::events::{ami, json, EventError, SecurityEvent, TimedEvent};
use pbxfw_core::net::Prefix;
use pbxfw_core::responsive::{Action, Config, Machine, Protected};
use pbxfw_core::{compile, Ruleset, Source, ValidPolicy};
use pbxfw_host::follow::{Follower, Next, Position};
use serde::{Deserialize, Serialize};

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
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One structured log line: `pbxfw: key=value ...`, values quoted when needed.
pub fn log_line(fields: &[(&str, String)]) {
    let _ = writeln!(std::io::stderr().lock(), "{}", format_line(fields));
}

fn format_line(fields: &[(&str, String)]) -> String {
    let mut line = String::from("pbxfw:");
    for (k, v) in fields {
        if v.is_empty()
            || v.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
        {
            line.push_str(&format!(" {k}={v:?}"));
        } else {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line
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

/// Carry out actions in the kernel: the last change to each element wins, and each set gets
/// one update per operation (one netlink transaction for nft, one `ipset restore` for
/// iptables), so a burst of bans costs a few kernel calls, not one each. Removing an element
/// that is not there (an expired ban) is not an error. Returns the number of failed updates
/// (each is logged).
pub fn apply_actions(kernel: &dyn Backend, rs: &Ruleset, actions: &[Action], at: u64) -> usize {
    let mut last: BTreeMap<(String, Prefix), (bool, Option<u64>)> = BTreeMap::new();
    for a in actions {
        for ch in a.set_changes(at) {
            last.insert((ch.set, ch.prefix), (ch.add, ch.timeout));
        }
    }
    let mut grouped: BTreeMap<(String, bool), Vec<Element>> = BTreeMap::new();
    for ((set, prefix), (add, timeout)) in last {
        grouped.entry((set, add)).or_default().push(Element {
            prefix,
            timeout: timeout.map(Duration::from_secs),
        });
    }
    let mut failed = 0;
    // Removals first: an element removed from one set and added to another (a registration
    // moving) never has a moment in neither.
    let mut order: Vec<_> = grouped.into_iter().collect();
    order.sort_by_key(|((_, add), _)| *add);
    for ((set, add), elements) in order {
        let op = if add { Op::Add } else { Op::Remove };
        if let Err(e) = kernel.update_set(rs, &set, op, &elements) {
            failed += 1;
            log_line(&[
                ("error", "kernel".into()),
                ("set", set),
                ("elements", elements.len().to_string()),
                ("detail", e.to_string()),
            ]);
        }
    }
    failed
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
pub fn load_state(state: &Path, config: Config) -> Result<Saved, String> {
    let text = match std::fs::read_to_string(state) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Saved {
                machine: Machine::new(config),
                files: BTreeMap::new(),
                counters: Counters::default(),
            })
        }
        Err(e) => return Err(format!("{}: {e}", state.display())),
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
            Err(if good {
                format!(
                    "{}: {e}; the last good copy is {} (move it into place to use it)",
                    state.display(),
                    prev.display()
                )
            } else {
                format!("{}: {e}", state.display())
            })
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

/// What `pbxfw status` shows of the daemon's state at `path`: its counters and how far each
/// file was read (`None` when there is no state yet, or it cannot be read).
pub fn state_summary(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let saved = parse_saved(&text).ok()?;
    let t = now();
    Some(serde_json::json!({
        "state": path.display().to_string(),
        "counters": saved.counters,
        "bans": saved.machine.bans(t).len(),
        "tracked": saved.machine.tracked(),
        "files": saved.files,
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
fn applied_sessions() -> Vec<Protected> {
    crate::safety::applied_sessions()
        .into_iter()
        .map(|a| Protected {
            prefix: Prefix::host(a),
            why: format!("the session that applied the policy ({a})"),
        })
        .collect()
}

/// The machine's configuration for `policy`, with the sessions that applied it protected.
fn machine_config(policy: &ValidPolicy) -> Config {
    let mut c = Config::from_policy(policy);
    c.protected.extend(applied_sessions());
    c
}

/// The protected sources named by hostname (trunks, trusted networks), with their current
/// addresses.
fn resolved_protection(policy: &ValidPolicy, answers: &[(String, Vec<IpAddr>)]) -> Vec<Protected> {
    let mut out = Vec::new();
    for (source, why) in pbxfw_core::responsive::protected_sources(policy) {
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
fn merge_kernel_bans(kernel: &dyn Backend, machine: &mut Machine, t: u64) -> usize {
    let bans: Vec<String> = pbxfw_core::net::Family::BOTH
        .iter()
        .map(|f| pbxfw_core::compile::names::ban(*f))
        .collect();
    let status = match kernel.status() {
        Ok(s) => s,
        Err(e) => {
            log_line(&[("error", "read-back".into()), ("detail", e.to_string())]);
            return 0;
        }
    };
    let mut adopted = 0;
    for set in status.sets.iter().filter(|s| bans.contains(&s.name)) {
        for el in &set.elements {
            let (Ok((prefix, _)), Some(left)) = (Prefix::parse_lenient(&el.element), el.expires_in)
            else {
                continue;
            };
            if machine.adopt_ban(prefix, t + left, t) {
                adopted += 1;
            }
        }
    }
    adopted
}

/// Run the daemon until the event sources all end (they normally never do).
///
/// `reload` reads the policy file again. Every tick the daemon compares the kernel's
/// fingerprint with its own ruleset's; when an `apply` loaded another one and the policy file
/// now compiles to exactly that, the daemon adopts it: the state machine is reconfigured, its
/// bans and registrations are re-seeded, and the hostnames to resolve are updated. (A kernel
/// holding something the file does not compile to, during `apply --confirm` or after a manual
/// load, is logged once and left alone.) When the kernel's dynamic sets were created anew (the
/// table deleted and loaded again), everything is re-seeded.
pub fn run(
    policy: &ValidPolicy,
    reload: &dyn Fn() -> Result<ValidPolicy, String>,
    sources: Sources,
    state: &Path,
    tick: Duration,
    kernel: &dyn Backend,
    dns: &crate::names::DnsOptions,
) -> Result<(), String> {
    let mut policy = policy.clone();
    let mut rs = compile(&policy);
    let Saved {
        mut machine,
        mut files,
        mut counters,
    } = load_state(state, machine_config(&policy))?;
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // An apply left unconfirmed across a restart or reboot is rolled back first.
    match crate::safety::overdue(kernel) {
        Ok(Some(msg)) => log_line(&[("event", "rollback".into()), ("detail", msg)]),
        Ok(None) => {}
        Err(e) => log_line(&[("error", "rollback".into()), ("detail", e)]),
    }
    let t = now();
    machine.tick(t);
    let adopted = merge_kernel_bans(kernel, &mut machine, t);
    let seed = machine.replay_actions(t);
    let failed = apply_actions(kernel, &rs, &seed, t);
    let mut instance = kernel.instance().ok().flatten();
    log_line(&[
        ("event", "start".into()),
        ("restored", seed.len().to_string()),
        ("adopted_from_kernel", adopted.to_string()),
        ("failed", failed.to_string()),
        ("state", state.display().to_string()),
    ]);

    let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
    let mut threads = 0;
    // Hostnames: restored answers are seeded at once; lookups run on their own thread, so a
    // slow or unreachable DNS server delays nothing else.
    let names = crate::names::tracked_names(&policy);
    let mut feeder = None;
    let mut dns_ctl = None;
    if !names.is_empty() {
        let (ctl, answers) = start_dns(dns, names, &rs, kernel, &tx, &mut feeder);
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
    // Kept for a DNS thread a reload may start; the loop ends when the sources do (never, for
    // files and sockets), not when this sender goes.
    let dns_tx = tx;
    if threads == 0 {
        return Err(
            "no event source and no hostname to resolve: give --ami, --log, --events or --events-socket"
                .into(),
        );
    }

    // The kernel fingerprint a reload could not match, so the file is read once per change.
    let mut ignored: Option<String> = None;
    let mut known: BTreeMap<String, ValidPolicy> =
        BTreeMap::from([(rs.fingerprint(), policy.clone())]);
    let mut refused = Refusals::default();
    let mut dirty = false;
    let mut last_write = Instant::now();
    let mut write_every = WRITE_BEHIND;
    // Housekeeping (expiry, reloads) runs every `tick` even when events never stop coming.
    let mut next_tick = Instant::now() + tick;
    loop {
        let deadline = if dirty {
            next_tick.min(last_write + write_every)
        } else {
            next_tick
        };
        let mut batch = Vec::new();
        let (first, ended) = receive(&rx, deadline);
        batch.extend(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let t = now();
        let mut actions = Vec::new();
        for msg in batch {
            match msg {
                Msg::Read(outcome, progress) => {
                    match outcome {
                        Outcome::Event(e) => {
                            counters.events += 1;
                            actions.extend(machine.on_event(&e, t));
                        }
                        Outcome::Ambiguous(why) => {
                            counters.ambiguous += 1;
                            refused.note(&counters, why);
                        }
                        Outcome::Malformed(why) => {
                            counters.malformed += 1;
                            refused.note(&counters, why);
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
                Msg::Note(n) => log_line(&[("event", "source".into()), ("detail", n)]),
                Msg::Dns(want, answers) => {
                    machine.set_resolved(resolved_protection(&policy, &answers));
                    let f = match feeder.take() {
                        Some(f) => Ok(f),
                        None => crate::names::Feeder::from_kernel(kernel, &rs),
                    };
                    match f {
                        Ok(mut f) => {
                            log_dns(f.sync(kernel, &rs, &want));
                            feeder = Some(f);
                        }
                        Err(e) => log_line(&[("error", "dns".into()), ("detail", e)]),
                    }
                }
            }
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + tick;
            actions.extend(machine.tick(t));
            if let Some(new) = reloaded(kernel, &rs, reload, &mut known, &mut ignored) {
                rs = compile(&new);
                machine.reconfigure(machine_config(&new));
                // Into the sets of the new ruleset (they may be new sets).
                actions.extend(machine.replay_actions(t));
                let names = crate::names::tracked_names(&new);
                log_line(&[
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
                            start_dns(dns, names, &rs, kernel, &dns_tx, &mut feeder);
                        machine.set_resolved(resolved_protection(&new, &answers));
                        dns_ctl = Some(ctl);
                    }
                    None => {}
                }
                policy = new;
                instance = kernel.instance().ok().flatten();
            } else {
                // The same ruleset, but its dynamic sets created anew (the table deleted and
                // loaded again): every ban, clamp and registration is gone from the kernel.
                let now_instance = kernel.instance().ok().flatten();
                if now_instance.is_some() && now_instance != instance {
                    if instance.is_some() {
                        log_line(&[
                            ("event", "reseed".into()),
                            (
                                "detail",
                                "the kernel's sets were created anew: bans, clamps and registrations put back"
                                    .into(),
                            ),
                        ]);
                        actions.extend(machine.replay_actions(t));
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
            let mut err = std::io::stderr().lock();
            for a in &actions {
                let _ = writeln!(err, "{}", format_line(&describe(a)));
            }
            drop(err);
            apply_actions(kernel, &rs, &actions, t);
            dirty = true;
        }
        if dirty && (ended || last_write.elapsed() >= write_every) {
            let started = Instant::now();
            if let Err(e) = save_state(state, &machine, &files, &counters) {
                log_line(&[("error", "state".into()), ("detail", e.to_string())]);
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

/// Records refused (ambiguous or malformed): counted always, logged at most once a minute (a
/// flood of them is a sender's, and must not flood the journal).
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    since: u64,
}

impl Refusals {
    fn note(&mut self, counters: &Counters, why: String) {
        self.since += 1;
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            log_line(&[
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
    kernel: &dyn Backend,
    rs: &Ruleset,
    reload: &dyn Fn() -> Result<ValidPolicy, String>,
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
            log_line(&[
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
            log_line(&[("error", "reload".into()), ("detail", e)]);
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
    dns: &crate::names::DnsOptions,
    names: Vec<(String, bool)>,
    rs: &Ruleset,
    kernel: &dyn Backend,
    tx: &SyncSender<Msg>,
    feeder: &mut Option<crate::names::Feeder>,
) -> (DnsControl, Vec<(String, Vec<IpAddr>)>) {
    let (mut tracker, problem) = crate::names::load_tracker(dns.config());
    if let Some(p) = problem {
        log_line(&[("error", "dns-state".into()), ("detail", p)]);
    }
    tracker.set_names(names.clone());
    match crate::names::Feeder::from_kernel(kernel, rs) {
        Ok(mut f) => {
            let want = crate::names::desired(rs, &tracker);
            log_dns(f.sync(kernel, rs, &want));
            *feeder = Some(f);
        }
        Err(e) => log_line(&[("error", "dns".into()), ("detail", e)]),
    }
    let answers = answers(&tracker, &names);
    let resolver = dns.resolver();
    log_line(&[
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
    spawn_source(tx, move |tx| {
        dns_loop(resolver, tracker, rs, names, &ctl_rx, &tx)
    });
    (ctl_tx, answers)
}

/// Each tracked hostname's current addresses.
fn answers(
    tracker: &pbxfw_core::dns::Tracker,
    names: &[(String, bool)],
) -> Vec<(String, Vec<IpAddr>)> {
    names
        .iter()
        .map(|(n, _)| (n.clone(), tracker.addresses(n).into_iter().collect()))
        .collect()
}

/// Log what a DNS sync changed in the kernel, and what it could not.
fn log_dns((changes, errors): (Vec<crate::names::Change>, Vec<String>)) {
    let list = |v: &[Prefix]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    for c in changes {
        log_line(&[
            ("event", "dns-update".into()),
            ("set", c.set),
            ("added", list(&c.added)),
            ("removed", list(&c.removed)),
        ]);
    }
    for e in errors {
        log_line(&[("error", "dns-update".into()), ("detail", e)]);
    }
}

/// The resolver thread: look up what is due, send the resolving sets' wanted elements and the
/// names' addresses to the main loop when an answer changed them (or the names did), keep the
/// state file, and wait for the next lookup or for new names from a reload.
fn dns_loop(
    resolver: pbxfw_host::dns::Resolver,
    mut tracker: pbxfw_core::dns::Tracker,
    mut rs: Ruleset,
    mut names: Vec<(String, bool)>,
    ctl: &mpsc::Receiver<(Vec<(String, bool)>, Ruleset)>,
    tx: &SyncSender<Msg>,
) {
    let mut force = false;
    loop {
        let t = now();
        let before = crate::names::desired(&rs, &tracker);
        let before_answers = answers(&tracker, &names);
        if crate::names::refresh_all(&resolver, &mut tracker, t) {
            for s in tracker.status(t) {
                if let Some(e) = &s.last_error {
                    log_line(&[
                        ("event", "dns-failed".into()),
                        ("name", s.name.clone()),
                        ("lookup", e.lookup.to_string()),
                        ("detail", e.error.to_string()),
                        ("kept", s.addresses.len().to_string()),
                    ]);
                }
            }
            if let Err(e) = crate::names::save_tracker(&tracker) {
                log_line(&[("error", "dns-state".into()), ("detail", e)]);
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
            .map_or(60, |d| d.saturating_sub(now()).clamp(1, 60));
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
    let days = now() / 86400;
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

fn spawn_source(tx: &SyncSender<Msg>, f: impl FnOnce(SyncSender<Msg>) + Send + 'static) {
    let tx = tx.clone();
    std::thread::spawn(move || f(tx));
}

/// How long a follower waits when its file has nothing new.
const IDLE: Duration = Duration::from_millis(50);

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
                std::thread::sleep(IDLE);
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
    let listener = match bind_private(path, group) {
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

fn bind_private(
    path: &Path,
    group: Option<&str>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let gid = match group {
        Some(g) => Some(
            pbxfw_host::dirs::group_id(g)
                .ok_or_else(|| std::io::Error::other(format!("no group {g:?}")))?,
        ),
        None => None,
    };
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

/// What `pbxfw replay` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Records read.
    pub records: usize,
    /// Records that were security events.
    pub events: usize,
    /// Every action, with the time it would have been taken.
    pub actions: Vec<(u64, Action)>,
    /// Sources that would have been banned: first ban time and reason.
    pub banned: BTreeMap<pbxfw_core::net::Prefix, (u64, String)>,
    /// Sources that would have been clamped.
    pub clamped: BTreeMap<pbxfw_core::net::Prefix, u64>,
    /// Accounts that registered, with their addresses.
    pub registered: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// Identities reported instead of banning a protected source.
    pub reported: usize,
    /// Records refused because a sender may have written them (docs/events.md, "Trust").
    pub ambiguous: usize,
}

/// How much a replay's report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Bans, clamps, registrations and counts, but not every action: the text report shows no
    /// more, and its memory then grows with the sources, not with the events (a month of logs
    /// makes millions of actions; keeping them was also a twentieth of a replay's time).
    Summary,
    /// Every action too, with its time (the JSON report).
    Actions,
}

/// Run records through a fresh machine, with time taken from the records.
pub fn replay(
    policy: &ValidPolicy,
    events: impl Iterator<Item = TimedEvent>,
    records: usize,
    detail: Detail,
) -> ReplayReport {
    replay_leaving(policy, events, records, detail).0
}

/// [`replay`], with what the replay leaves behind handed to the caller.
fn replay_leaving(
    policy: &ValidPolicy,
    events: impl Iterator<Item = TimedEvent>,
    records: usize,
    detail: Detail,
) -> (ReplayReport, Leftovers) {
    let mut replayer = Replayer::new(policy, detail);
    replayer.report.records = records;
    for e in events {
        replayer.feed(&e);
    }
    let leftovers = Leftovers {
        _machine: replayer.machine,
        _buffers: None,
    };
    (replayer.report, leftovers)
}

/// A machine being replayed, and what it did so far.
struct Replayer {
    machine: Machine,
    report: ReplayReport,
    /// The time of the last record that carried one.
    t: u64,
    /// Which (account, address) pairs `report.registered` holds: looking through an account's
    /// list made a replay quadratic in the addresses an account registers from.
    seen: std::collections::HashMap<String, std::collections::HashSet<std::net::IpAddr>>,
    detail: Detail,
}

impl Replayer {
    fn new(policy: &ValidPolicy, detail: Detail) -> Replayer {
        Replayer {
            machine: Machine::new(Config::from_policy(policy)),
            report: ReplayReport::default(),
            t: 0,
            seen: std::collections::HashMap::new(),
            detail,
        }
    }

    fn feed(&mut self, e: &TimedEvent) {
        let r = &mut self.report;
        r.events += 1;
        self.t = e.at.unwrap_or(self.t);
        let t = self.t;
        for a in self.machine.on_event(&e.event, t) {
            match &a {
                // Keyed by address, not text: a string per action was a fifth of the replay.
                Action::Ban { prefix, reason, .. } => {
                    r.banned
                        .entry(*prefix)
                        .or_insert_with(|| (t, reason.clone()));
                }
                Action::Clamp { prefix, .. } => {
                    r.clamped.entry(*prefix).or_insert(t);
                }
                Action::AllowRegistered { addr, account, .. } => {
                    // Looked up by `&str`: the account is copied once, not per registration.
                    match self.seen.get_mut(account.as_str()) {
                        Some(addrs) => {
                            // `registered` has the account since `seen` has it.
                            if addrs.insert(*addr) {
                                if let Some(v) = r.registered.get_mut(account.as_str()) {
                                    v.push(*addr);
                                }
                            }
                        }
                        None => {
                            self.seen
                                .insert(account.clone(), std::collections::HashSet::from([*addr]));
                            r.registered.insert(account.clone(), vec![*addr]);
                        }
                    }
                }
                Action::ReportIdentity { .. } => r.reported += 1,
                _ => {}
            }
            if self.detail == Detail::Actions {
                r.actions.push((t, a));
            }
        }
    }
}

/// What a replay leaves behind besides its report: the machine in its final state and the
/// event buffers. Dropping it frees them, a walk over every tracked source and thousands of
/// small frees (a millisecond or two for a large log); a process about to exit can
/// `std::mem::forget` it and let the kernel take the memory back at once. (Freed on a thread
/// of their own, as before, they slowed the report instead: Linux tends to start a new thread
/// on its parent's CPU.)
pub struct Leftovers {
    _machine: Machine,
    _buffers: Option<mpsc::Receiver<Vec<TimedEvent>>>,
}

/// Replay one recorded file of any supported kind. An Asterisk log is streamed: it is cut into
/// blocks at line breaks, blocks are parsed in parallel, and this thread runs the state machine
/// over their events in file order, so a log of millions of lines is never held whole (at most
/// a few blocks are in flight). Invalid UTF-8 in a log line is replaced, not fatal: one stray
/// byte in a month of logs must not stop the replay.
///
/// Every thread takes its next block from the file itself (under a lock, a `read` into a buffer
/// it reuses), and this thread, whenever the next block in order is not parsed yet, parses one
/// too instead of waiting: with as many threads as cores, no core idles while work is left.
///
/// The report comes with what the replay leaves behind ([`Leftovers`]).
pub fn replay_file(
    policy: &ValidPolicy,
    path: &Path,
    year: i32,
    detail: Detail,
) -> std::io::Result<(ReplayReport, Leftovers)> {
    let mut file = std::fs::File::open(path)?;
    let mut head = vec![0u8; 64 * 1024];
    let n = read_full(&mut file, &mut head)?;
    head.truncate(n);
    if kind_of(&String::from_utf8_lossy(&head)) != Kind::Log {
        let mut rest = Vec::new();
        file.read_to_end(&mut rest)?;
        head.extend(rest);
        let (events, n, ambiguous) = read_records(&head, year);
        let (mut report, left) = replay_leaving(policy, events.into_iter(), n, detail);
        report.ambiguous = ambiguous;
        return Ok((report, left));
    }
    let helpers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        - 1;
    let blocks = std::sync::Mutex::new(Blocks {
        file,
        carry: head,
        next: 0,
        done: false,
    });
    // Bounded: helpers cannot run far ahead of the machine (8 blocks each, about 0.5 MiB of
    // events; with 2 a helper waited on the machine's slow moments, such as an eviction, for
    // a twentieth of its time). Event vectors come back empty to be filled again: fresh
    // memory for every block (page faults, zeroing) cost as much as the parsing.
    let (done_tx, done_rx) = mpsc::sync_channel::<Parsed>(helpers * 8 + 8);
    let (free_tx, free_rx) = mpsc::channel::<Vec<TimedEvent>>();
    let free_rx = std::sync::Mutex::new(free_rx);
    let spare = || {
        free_rx
            .lock()
            .ok()
            .and_then(|rx| rx.try_recv().ok())
            .unwrap_or_default()
    };
    // Block buffers come back the same way, for the same reason.
    let (raw_tx, raw_rx) = mpsc::channel::<Vec<u8>>();
    let raw_rx = std::sync::Mutex::new(raw_rx);
    let spare_raw = || {
        raw_rx
            .lock()
            .ok()
            .and_then(|rx| rx.try_recv().ok())
            .unwrap_or_default()
    };
    let (report, machine) = std::thread::scope(|scope| {
        let placement = Placement::start();
        for h in 0..helpers {
            let done_tx = done_tx.clone();
            let blocks = &blocks;
            let spare = &spare;
            let spare_raw = &spare_raw;
            let allowed = placement.before_spawn(h);
            scope.spawn(move || {
                Placement::started(allowed);
                loop {
                    let mut buf = spare_raw();
                    let parsed = match take_block(blocks, &mut buf) {
                        // From a clear framer: right unless the block before ends inside a
                        // dump or a window, which the merge below checks.
                        Ok(Some((i, len))) => {
                            Ok((i, parse_block(buf, len, year, Framer::default(), spare())))
                        }
                        Ok(None) => return,
                        Err(e) => Err(e),
                    };
                    let failed = parsed.is_err();
                    if done_tx.send(parsed).is_err() || failed {
                        return;
                    }
                }
            });
        }
        placement.finish();
        drop(done_tx);
        // Owned here, so that returning early (a read error) drops it and a helper blocked on
        // sending wakes up and ends instead of holding the scope open.
        let done_rx = done_rx;
        let mut pending: BTreeMap<usize, ParsedBlock> = BTreeMap::new();
        let mut want = 0;
        let mut replayer = Replayer::new(policy, detail);
        let mut input_left = true;
        // The framer's state where the next block starts.
        let mut framer = Framer::default();
        let receive = |parsed: Parsed, pending: &mut BTreeMap<_, _>| -> std::io::Result<()> {
            let (i, v) = parsed?;
            pending.insert(i, v);
            Ok(())
        };
        loop {
            if let Some(mut block) = pending.remove(&want) {
                if block.start != framer {
                    let len = block.raw.len();
                    block = parse_block(block.raw, len, year, framer, block.events);
                }
                framer = block.end;
                replayer.report.records += block.lines;
                replayer.report.ambiguous += block.ambiguous;
                for e in &block.events {
                    replayer.feed(e);
                }
                // Emptied by the thread that takes it: the strings in the events go back to
                // the allocator of the thread that most likely made them.
                let _ = free_tx.send(block.events);
                let _ = raw_tx.send(block.raw);
                want += 1;
                continue;
            }
            match done_rx.try_recv() {
                Ok(parsed) => {
                    receive(parsed, &mut pending)?;
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) if !input_left => break,
                Err(_) => {}
            }
            if input_left {
                let mut buf = spare_raw();
                match take_block(&blocks, &mut buf)? {
                    Some((i, len)) => {
                        let start = if i == want { framer } else { Framer::default() };
                        pending.insert(i, parse_block(buf, len, year, start, spare()));
                    }
                    None => input_left = false,
                }
                continue;
            }
            match done_rx.recv() {
                Ok(parsed) => receive(parsed, &mut pending)?,
                Err(_) => break,
            }
        }
        Ok::<_, std::io::Error>((replayer.report, replayer.machine))
    })?;
    let leftovers = Leftovers {
        _machine: machine,
        _buffers: free_rx.into_inner().ok(),
    };
    Ok((report, leftovers))
}

/// Where replay's threads start: each parsing thread on a CPU of its own, not queued behind
/// the main thread.
///
/// Linux often puts a new thread on its parent's CPU, and in a virtual machine it is slow to
/// move it to an idle one: an idle virtual CPU looks preempted to the guest's scheduler, which
/// then avoids it until the next periodic balance. Here the parsing thread first ran 1.5-4 ms
/// after it was started, with one of two cores idle, in most runs of a 35 ms replay. So the
/// main thread moves itself to the CPU each helper should use before starting it (a thread
/// inherits its parent's affinity), comes back, and every thread then restores the affinity
/// it was given: after the first few microseconds the scheduler is free again. Any failure
/// (a restricted cpuset, one CPU) leaves placement to the scheduler, as before.
struct Placement {
    /// The affinity the process was given, the CPU the main thread is on, and the others.
    allowed: Option<(rustix::thread::CpuSet, usize, Vec<usize>)>,
}

impl Placement {
    fn start() -> Placement {
        use rustix::thread::{sched_getaffinity, sched_getcpu, CpuSet};
        let allowed = sched_getaffinity(None).ok().and_then(|set| {
            let here = sched_getcpu();
            let others: Vec<usize> = (0..CpuSet::MAX_CPU)
                .filter(|&c| c != here && set.is_set(c))
                .collect();
            (set.is_set(here) && !others.is_empty()).then_some((set, here, others))
        });
        Placement { allowed }
    }

    /// Move the main thread to helper `h`'s CPU, so that the helper starts there; returns the
    /// affinity the helper restores once it runs.
    fn before_spawn(&self, h: usize) -> Option<rustix::thread::CpuSet> {
        let (set, _, others) = self.allowed.as_ref()?;
        pin(others[h % others.len()]).then_some(*set)
    }

    /// In a helper: give it back the whole affinity (it is already running where it should).
    fn started(allowed: Option<rustix::thread::CpuSet>) {
        if let Some(set) = allowed {
            let _ = rustix::thread::sched_setaffinity(None, &set);
        }
    }

    /// Back on the main thread's CPU, with its whole affinity.
    fn finish(self) {
        if let Some((set, here, _)) = self.allowed {
            pin(here);
            let _ = rustix::thread::sched_setaffinity(None, &set);
        }
    }
}

/// Run the calling thread on `cpu` only (the call returns once it has moved there).
fn pin(cpu: usize) -> bool {
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu);
    rustix::thread::sched_setaffinity(None, &one).is_ok()
}

/// What parsing one block of a log gave.
struct ParsedBlock {
    events: Vec<TimedEvent>,
    /// Lines read.
    lines: usize,
    /// Records refused as ambiguous.
    ambiguous: usize,
    /// The framer's state at the block's start, and at its end.
    start: Framer,
    end: Framer,
    /// The block itself: parsed again from the right start when the block before it ends
    /// inside a dump or a window (rare: a block is 256 KiB).
    raw: Vec<u8>,
}

/// A block's index in the file and what parsing it gave, or the read error.
type Parsed = std::io::Result<(usize, ParsedBlock)>;

/// The part of a log not yet handed out: the file and what was read past the last line break.
struct Blocks {
    file: std::fs::File,
    carry: Vec<u8>,
    next: usize,
    done: bool,
}

/// Fill the front of `buf` with the next block of whole lines (the last line may lack its
/// break at the end of the file) and return its index and length, or `None` at the end.
///
/// `buf` keeps its length from call to call: it is zeroed only when it grows and is then read
/// into as it is (zeroing every block cost as much as reading it), with one `read` a block
/// (`read_to_end` starts small and doubles, six calls a block).
fn take_block(
    blocks: &std::sync::Mutex<Blocks>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(usize, usize)>> {
    const BLOCK: usize = 256 * 1024;
    let mut b = blocks.lock().unwrap_or_else(|e| e.into_inner());
    let b = &mut *b;
    let mut len = b.carry.len();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    buf[..len].copy_from_slice(&b.carry);
    b.carry.clear();
    loop {
        if b.done {
            if len == 0 {
                return Ok(None);
            }
            break;
        }
        let start = len;
        if buf.len() < start + BLOCK {
            buf.resize(start + BLOCK, 0);
        }
        let got = read_full(&mut b.file, &mut buf[start..start + BLOCK])?;
        len += got;
        if got < BLOCK {
            b.done = true;
            continue;
        }
        // Cut after the last line break; a line longer than a block makes it read on.
        if let Some(i) = memchr::memrchr(b'\n', &buf[start..len]) {
            b.carry.extend_from_slice(&buf[start + i + 1..len]);
            len = start + i + 1;
            break;
        }
    }
    let i = b.next;
    b.next += 1;
    Ok(Some((i, len)))
}

/// Parse `raw[..len]`, a block of log lines, through a framer in state `start`, into `events`
/// (emptied first).
fn parse_block(
    mut raw: Vec<u8>,
    len: usize,
    year: i32,
    start: Framer,
    mut events: Vec<TimedEvent>,
) -> ParsedBlock {
    events.clear();
    raw.truncate(len);
    let mut framer = start;
    let (lines, ambiguous) = parse_log_into(&raw, year, &mut framer, &mut events);
    ParsedBlock {
        events,
        lines,
        ambiguous,
        start,
        end: framer,
        raw,
    }
}

/// Fill `buf` as far as the file goes; returns the bytes read (less than `buf.len()` only at
/// the end of the file).
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[derive(PartialEq)]
enum Kind {
    Json,
    Ami,
    Log,
}

/// What a recorded file is, from its first non-empty line: a JSON object, an AMI block
/// (`Key: value`, or the AMI banner), or else Asterisk log lines.
fn kind_of(text: &str) -> Kind {
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start();
    let ami_key = first.split_once(": ").is_some_and(|(k, _)| {
        !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if first.starts_with('{') {
        Kind::Json
    } else if first.starts_with("Asterisk Call Manager") || ami_key {
        Kind::Ami
    } else {
        Kind::Log
    }
}

/// Parse log lines; returns the events, the number of lines and of ambiguous records.
fn parse_log(text: &[u8], year: i32) -> (Vec<TimedEvent>, usize, usize) {
    let mut events = Vec::new();
    let (n, ambiguous) = parse_log_into(text, year, &mut Framer::default(), &mut events);
    (events, n, ambiguous)
}

/// Append the events of `text` to `events`, read through `framer` as the daemon reads a log
/// (debug dumps skipped, lines a sender may have written refused); returns the number of
/// lines (as `str::lines` counts them) and of ambiguous records. Lines are found with
/// `memchr`'s vectorised search: `str::lines` was a tenth of the parsing.
fn parse_log_into(
    text: &[u8],
    year: i32,
    framer: &mut Framer,
    events: &mut Vec<TimedEvent>,
) -> (usize, usize) {
    let mut n = 0;
    let mut ambiguous = 0;
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text)
        .map(|i| i + 1)
        // The last line, when the text does not end with a line break.
        .chain((!text.is_empty() && !text.ends_with(b"\n")).then_some(text.len()));
    for end in ends {
        let line = &text[start..end];
        start = end;
        n += 1;
        match framer.read(line, year, 0) {
            Ok(Some(e)) => events.push(e),
            Err(EventError::Ambiguous { .. }) => ambiguous += 1,
            _ => {}
        }
    }
    (n, ambiguous)
}

/// Read a recorded file of any supported kind, as the daemon reads it; returns the events, the
/// number of records and of ambiguous ones.
pub fn read_records(bytes: &[u8], year: i32) -> (Vec<TimedEvent>, usize, usize) {
    let text = String::from_utf8_lossy(bytes);
    match kind_of(&text) {
        Kind::Json => {
            let mut ambiguous = 0;
            let mut n = 0;
            let mut events = Vec::new();
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                n += 1;
                match json::parse_logged_line(l) {
                    Ok(Some(e)) => events.push(e),
                    Err(EventError::Ambiguous { .. }) => ambiguous += 1,
                    _ => {}
                }
            }
            (events, n, ambiguous)
        }
        Kind::Ami => {
            let mut reader = ami::AmiReader::new();
            reader.feed(text.as_bytes());
            reader.feed(b"\r\n\r\n");
            let mut events = Vec::new();
            let mut n = 0;
            let mut ambiguous = 0;
            while let Some(item) = reader.next_event() {
                n += 1;
                match item {
                    Ok(t) => events.push(t),
                    Err(EventError::Ambiguous { .. }) => ambiguous += 1,
                    Err(_) => {}
                }
            }
            (events, n, ambiguous)
        }
        Kind::Log => parse_log(bytes, year),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy with every default.
    fn empty_policy() -> ValidPolicy {
        pbxfw_core::Policy::from_toml("")
            .unwrap()
            .validate()
            .unwrap()
    }

    /// The recorded Asterisk log fixture, repeated until it is at least `len` bytes long.
    fn fixture_repeated(len: usize) -> String {
        let fixture = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/events/asterisk-full.log"),
        )
        .unwrap();
        let mut text = String::new();
        while text.len() < len {
            text.push_str(&fixture);
        }
        text
    }

    /// Placing the parsing threads leaves no pinning behind: each helper runs with the
    /// affinity the process had, the main thread gets it back, and the helpers started where
    /// they were sent (when the machine has more than one CPU).
    #[test]
    fn placement_gives_every_thread_its_affinity_back() {
        use rustix::thread::{sched_getaffinity, sched_getcpu};
        let before = sched_getaffinity(None).unwrap();
        let placement = Placement::start();
        let sent: Vec<usize> = placement
            .allowed
            .as_ref()
            .map(|(_, _, others)| others.iter().copied().cycle().take(3).collect())
            .unwrap_or_default();
        let seen = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..3)
                .map(|h| {
                    let allowed = placement.before_spawn(h);
                    scope.spawn(move || {
                        let cpu = sched_getcpu();
                        Placement::started(allowed);
                        (cpu, sched_getaffinity(None).unwrap())
                    })
                })
                .collect();
            placement.finish();
            assert_eq!(sched_getaffinity(None).unwrap(), before);
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });
        for (h, (cpu, affinity)) in seen.into_iter().enumerate() {
            assert_eq!(affinity, before, "helper {h}");
            if let Some(want) = sent.get(h) {
                assert_eq!(cpu, *want, "helper {h} started elsewhere");
            }
        }
    }

    /// A log read from a pipe (`<(zcat full.1.gz)`) reports what the same log read from a file
    /// does.
    #[test]
    fn a_log_from_a_pipe_replays_as_from_a_file() {
        use std::os::fd::AsRawFd;
        let text = fixture_repeated(1024 * 1024);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.log");
        std::fs::write(&path, &text).unwrap();
        let policy = empty_policy();
        let from_file = replay_file(&policy, &path, 2026, Detail::Actions)
            .unwrap()
            .0;

        let (reader, mut writer) = std::io::pipe().unwrap();
        let fd = Path::new("/proc/self/fd").join(reader.as_raw_fd().to_string());
        let feeder = std::thread::spawn(move || writer.write_all(text.as_bytes()));
        let from_pipe = replay_file(&policy, &fd, 2026, Detail::Actions).unwrap().0;
        feeder.join().unwrap().unwrap();
        drop(reader);
        assert!(from_file.events > 500, "{}", from_file.events);
        assert_eq!(
            serde_json::to_value(&from_pipe).unwrap(),
            serde_json::to_value(&from_file).unwrap()
        );
    }

    /// The streamed replay (blocks cut at line breaks, parsed in parallel, fed in order) reports
    /// exactly what replaying the whole text at once does, across many blocks.
    #[test]
    fn streamed_replay_equals_the_whole_text() {
        let mut text = fixture_repeated(3 * 1024 * 1024);
        // A last line without a line break, and a stray invalid byte inside a line.
        text.push_str("[Nov 20 10:15:30] NOTICE[1234] chan_sip.c: no newline at the end");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut bytes = text.clone().into_bytes();
        let at = bytes.len() - 10;
        bytes[at] = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let policy = empty_policy();

        let streamed = replay_file(&policy, &path, 2026, Detail::Actions)
            .unwrap()
            .0;
        // The summary is the same report without the list of actions.
        let mut summary = replay_file(&policy, &path, 2026, Detail::Summary)
            .unwrap()
            .0;
        assert!(summary.actions.is_empty() && !streamed.actions.is_empty());
        summary.actions.clone_from(&streamed.actions);
        assert_eq!(
            serde_json::to_value(&summary).unwrap(),
            serde_json::to_value(&streamed).unwrap()
        );
        let (events, n, ambiguous) = read_records(&bytes, 2026);
        let mut whole = replay(&policy, events.into_iter(), n, Detail::Actions);
        whole.ambiguous = ambiguous;
        assert_eq!(streamed.records, text.lines().count());
        assert!(streamed.events > 500, "{}", streamed.events);
        assert_eq!(
            serde_json::to_value(&streamed).unwrap(),
            serde_json::to_value(&whole).unwrap()
        );
    }

    /// A line longer than a block (a pasted SDP body, a runaway debug line) is read whole,
    /// and the lines around it keep their order.
    #[test]
    fn a_line_longer_than_a_block_is_read_whole() {
        let fail = |a: &str| {
            format!("[Nov 20 10:15:32] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:1@x>' failed for '{a}:5060' (callid: 1) - No matching endpoint found\n")
        };
        // Three unknown-account failures ban; each source's third comes after the long line.
        let mut text = String::new();
        for a in ["203.0.113.1", "203.0.113.1", "203.0.113.2"] {
            text.push_str(&fail(a));
        }
        text.push_str("[Nov 20 10:15:32] VERBOSE[1] pbx.c: ");
        text.push_str(&"x".repeat(700 * 1024));
        text.push('\n');
        for a in ["203.0.113.1", "203.0.113.2", "203.0.113.2"] {
            text.push_str(&fail(a));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.log");
        std::fs::write(&path, &text).unwrap();
        let policy = empty_policy();
        let streamed = replay_file(&policy, &path, 2026, Detail::Actions)
            .unwrap()
            .0;
        let (events, n, ambiguous) = read_records(text.as_bytes(), 2026);
        let mut whole = replay(&policy, events.into_iter(), n, Detail::Actions);
        whole.ambiguous = ambiguous;
        assert_eq!(streamed.records, 7);
        assert_eq!(streamed.events, 6);
        assert_eq!(streamed.banned.len(), 2, "{:?}", streamed.banned);
        assert_eq!(
            serde_json::to_value(&streamed).unwrap(),
            serde_json::to_value(&whole).unwrap()
        );
    }

    /// A pjsip debug dump holding forged lines, across the boundary between two blocks parsed
    /// in parallel: the streamed replay reads it as one pass over the whole log does, and the
    /// forged lines name nobody.
    #[test]
    fn a_dump_across_blocks_is_skipped_as_in_one_pass() {
        let line = |a: &str| {
            format!("[Nov 20 10:15:32] NOTICE[1] chan_sip.c: Registration from '<sip:1@x>' failed for '{a}:5060' - Wrong password\n")
        };
        let mut body = String::new();
        // pjsip dumps at most a datagram, 65,535 bytes.
        for _ in 0..500 {
            body.push_str(&line("10.9.9.9"));
        }
        assert!(body.len() < 65_535);
        let header = format!(
            "[Nov 20 10:15:31] VERBOSE[7] res_pjsip_logger.c: <--- Received SIP request ({} bytes) from UDP:203.0.113.5:5060 --->\n",
            body.len()
        );
        for at in [200 * 1024, 255 * 1024, 256 * 1024 - 3] {
            let mut text = String::new();
            while text.len() < at {
                text.push_str(&line("203.0.113.7"));
            }
            text.push_str(&header);
            text.push_str(&body);
            text.push('\n');
            for _ in 0..50 {
                text.push_str(&line("203.0.113.8"));
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("dump.log");
            std::fs::write(&path, &text).unwrap();
            let policy = empty_policy();
            let streamed = replay_file(&policy, &path, 2026, Detail::Actions)
                .unwrap()
                .0;
            let (events, n, ambiguous) = read_records(text.as_bytes(), 2026);
            assert!(events
                .iter()
                .all(|e| e.event.source().to_string() != "10.9.9.9"));
            let mut whole = replay(&policy, events.into_iter(), n, Detail::Actions);
            whole.ambiguous = ambiguous;
            assert_eq!(
                serde_json::to_value(&streamed).unwrap(),
                serde_json::to_value(&whole).unwrap(),
                "dump at {at}"
            );
            assert!(streamed
                .banned
                .keys()
                .all(|p| p.to_string() != "10.9.9.9/32"));
            assert!(!streamed.banned.is_empty());
        }
    }

    #[test]
    fn lines_are_counted_as_str_lines_counts_them() {
        for text in ["", "\n", "a", "a\n", "a\nb", "a\r\nb\r\n", "\n\n", "a\n\nb"] {
            let mut events = Vec::new();
            assert_eq!(
                parse_log_into(text.as_bytes(), 2026, &mut Framer::default(), &mut events).0,
                text.lines().count(),
                "{text:?}"
            );
        }
    }
}
