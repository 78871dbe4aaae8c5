//! `pbxfw daemon` and `pbxfw replay`: security events in, kernel set updates out.
//!
//! Sources run on their own threads and send events over one channel: Asterisk AMI over TCP
//! (login, reconnect with backoff), log files followed across rotation, JSON-lines files and a
//! JSON-lines Unix socket. The main loop feeds the responsive state machine with the wall
//! clock, applies its actions as set-element updates over netlink, logs every decision as one
//! `key=value` line on standard error (journald keeps it), and persists the machine's state
//! atomically after every change. On start the state is restored and re-seeded into the kernel,
//! so a restart or reboot loses no ban, registration or strike.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pbxfw_core::backend::{Backend, Element, Op};
use pbxfw_core::events::{ami, json, log as asterisk_log, SecurityEvent, TimedEvent};
use pbxfw_core::responsive::{Action, Config, Machine};
use pbxfw_core::{compile, Ruleset, ValidPolicy};

use crate::policy_file::write_atomic;

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
}

/// One message on the event channel.
enum Msg {
    Event(SecurityEvent),
    Note(String),
    /// New answers: what the resolving sets should hold.
    Dns(crate::names::Desired),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One structured log line: `pbxfw: key=value ...`, values quoted when needed.
pub fn log_line(fields: &[(&str, String)]) {
    let mut line = String::from("pbxfw:");
    for (k, v) in fields {
        if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
            line.push_str(&format!(" {k}={v:?}"));
        } else {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    let _ = writeln!(std::io::stderr(), "{line}");
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

/// Carry out actions in the kernel. Removing an element that is not there (an expired ban)
/// is not an error. Returns the number of failed changes (each is logged).
pub fn apply_actions(kernel: &dyn Backend, rs: &Ruleset, actions: &[Action], at: u64) -> usize {
    let mut failed = 0;
    for a in actions {
        for ch in a.set_changes(at) {
            let op = if ch.add { Op::Add } else { Op::Remove };
            let el = Element {
                prefix: ch.prefix,
                timeout: ch.timeout.map(Duration::from_secs),
            };
            if let Err(e) = kernel.update_set(rs, &ch.set, op, &[el]) {
                failed += 1;
                log_line(&[
                    ("error", "kernel".into()),
                    ("set", ch.set.clone()),
                    ("detail", e.to_string()),
                ]);
            }
        }
    }
    failed
}

/// Load the machine from `state`, or start fresh when the file does not exist. A file that
/// exists but cannot be read is an error: starting empty would silently lift every ban.
pub fn load_state(state: &Path, config: Config) -> Result<Machine, String> {
    match std::fs::read_to_string(state) {
        Ok(text) => {
            let mut m = Machine::restore(&text).map_err(|e| {
                let prev = previous_copy(state);
                let good = std::fs::read_to_string(&prev)
                    .ok()
                    .is_some_and(|t| Machine::restore(&t).is_ok());
                if good {
                    format!(
                        "{}: {e}; the last good copy is {} (move it into place to use it)",
                        state.display(),
                        prev.display()
                    )
                } else {
                    format!("{}: {e}", state.display())
                }
            })?;
            m.reconfigure(config);
            Ok(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Machine::new(config)),
        Err(e) => Err(format!("{}: {e}", state.display())),
    }
}

fn previous_copy(state: &Path) -> std::path::PathBuf {
    let mut p = state.as_os_str().to_owned();
    p.push(".prev");
    p.into()
}

/// Write the machine's state atomically, keeping the current file, if it reads back, as
/// `NAME.prev`: a file damaged by something else than pbxfw still leaves a good copy.
fn save_state(state: &Path, machine: &Machine) -> std::io::Result<()> {
    if let Ok(old) = std::fs::read_to_string(state) {
        if Machine::restore(&old).is_ok() {
            write_atomic(&previous_copy(state), &old)?;
        }
    }
    write_atomic(state, &machine.snapshot())
}

/// Run the daemon until the event sources all end (they normally never do).
///
/// `reload` reads the policy file again. Every tick the daemon compares the kernel's
/// fingerprint with its own ruleset's; when an `apply` loaded another one and the policy file
/// now compiles to exactly that, the daemon adopts it: the state machine is reconfigured, its
/// bans and registrations are re-seeded, and the hostnames to resolve are updated. (A kernel
/// holding something the file does not compile to, during `apply --confirm` or after a manual
/// load, is logged once and left alone.)
pub fn run(
    policy: &ValidPolicy,
    reload: &dyn Fn() -> Result<ValidPolicy, String>,
    sources: Sources,
    state: &Path,
    tick: Duration,
    kernel: &dyn Backend,
    dns: &crate::names::DnsOptions,
) -> Result<(), String> {
    let mut rs = compile(policy);
    let mut machine = load_state(state, Config::from_policy(policy))?;
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
    let seed = machine.replay_actions(t);
    let failed = apply_actions(kernel, &rs, &seed, t);
    log_line(&[
        ("event", "start".into()),
        ("restored", seed.len().to_string()),
        ("failed", failed.to_string()),
        ("state", state.display().to_string()),
    ]);

    let (tx, rx) = mpsc::channel::<Msg>();
    let mut threads = 0;
    // Hostnames: restored answers are seeded at once; lookups run on their own thread, so a
    // slow or unreachable DNS server delays nothing else.
    let names = crate::names::tracked_names(policy);
    let mut feeder = None;
    let mut dns_ctl = None;
    if !names.is_empty() {
        dns_ctl = Some(start_dns(dns, names, &rs, kernel, &tx, &mut feeder));
        threads += 1;
    }
    if let Some((addr, user, secret)) = sources.ami.clone() {
        spawn_source(&tx, move |tx| ami_loop(&addr, &user, &secret, &tx));
        threads += 1;
    }
    for path in sources.logs.clone() {
        spawn_source(&tx, move |tx| {
            follow(&path, &tx, |line| {
                asterisk_log::parse_line(line, current_year())
                    .ok()
                    .flatten()
                    .map(|t| t.event)
            })
        });
        threads += 1;
    }
    for path in sources.json_files.clone() {
        // A JSON object may follow a log prefix (syslog, `kamailio -E`): it is read from the
        // first `{` of the line.
        spawn_source(&tx, move |tx| {
            follow(&path, &tx, |line| {
                let obj = &line[line.find('{')?..];
                json::parse_line(obj).ok().map(|t| t.event)
            })
        });
        threads += 1;
    }
    if let Some(path) = sources.json_socket.clone() {
        spawn_source(&tx, move |tx| json_socket(&path, &tx));
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
    // Housekeeping (expiry, reloads) runs every `tick` even when events never stop coming.
    let mut next_tick = std::time::Instant::now() + tick;
    loop {
        let wait = next_tick.saturating_duration_since(std::time::Instant::now());
        let msg = if wait.is_zero() {
            Err(RecvTimeoutError::Timeout)
        } else {
            rx.recv_timeout(wait)
        };
        let t = now();
        let actions = match msg {
            Ok(Msg::Event(e)) => machine.on_event(&e, t),
            Ok(Msg::Note(n)) => {
                log_line(&[("event", "source".into()), ("detail", n)]);
                continue;
            }
            Ok(Msg::Dns(want)) => {
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
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {
                next_tick = std::time::Instant::now() + tick;
                let mut actions = machine.tick(t);
                if let Some(new) = reloaded(kernel, &rs, reload, &mut known, &mut ignored) {
                    rs = compile(&new);
                    machine.reconfigure(Config::from_policy(&new));
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
                            dns_ctl =
                                Some(start_dns(dns, names, &rs, kernel, &dns_tx, &mut feeder));
                        }
                        None => {}
                    }
                }
                actions
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        if actions.is_empty() {
            continue;
        }
        for a in &actions {
            log_line(&describe(a));
        }
        apply_actions(kernel, &rs, &actions, t);
        if let Err(e) = save_state(state, &machine) {
            log_line(&[("error", "state".into()), ("detail", e.to_string())]);
        }
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

/// Start resolving `names`: the restored answers go into the kernel at once, lookups on a
/// thread of their own. Returns the channel that gives the thread new names after a reload.
fn start_dns(
    dns: &crate::names::DnsOptions,
    names: Vec<(String, bool)>,
    rs: &Ruleset,
    kernel: &dyn Backend,
    tx: &Sender<Msg>,
    feeder: &mut Option<crate::names::Feeder>,
) -> Sender<(Vec<(String, bool)>, Ruleset)> {
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
    spawn_source(tx, move |tx| dns_loop(resolver, tracker, rs, &ctl_rx, &tx));
    ctl_tx
}

/// Log what a DNS sync changed in the kernel, and what it could not.
fn log_dns((changes, errors): (Vec<crate::names::Change>, Vec<String>)) {
    let list = |v: &[pbxfw_core::net::Prefix]| {
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

/// The resolver thread: look up what is due, send the resolving sets' wanted elements to the
/// main loop when an answer changed them (or the names did), keep the state file, and wait
/// for the next lookup or for new names from a reload.
fn dns_loop(
    resolver: pbxfw_host::dns::Resolver,
    mut tracker: pbxfw_core::dns::Tracker,
    mut rs: Ruleset,
    ctl: &mpsc::Receiver<(Vec<(String, bool)>, Ruleset)>,
    tx: &Sender<Msg>,
) {
    let mut force = false;
    loop {
        let t = now();
        let before = crate::names::desired(&rs, &tracker);
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
        if (force || after != before) && tx.send(Msg::Dns(after)).is_err() {
            return;
        }
        force = false;
        // Wake for the next due lookup (at least once a minute, so a clock step is noticed),
        // or at once for new names.
        let wait = tracker
            .next_due()
            .map_or(60, |d| d.saturating_sub(now()).clamp(1, 60));
        match ctl.recv_timeout(Duration::from_secs(wait)) {
            Ok((names, new_rs)) => {
                tracker.set_names(names);
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

fn spawn_source(tx: &Sender<Msg>, f: impl FnOnce(Sender<Msg>) + Send + 'static) {
    let tx = tx.clone();
    std::thread::spawn(move || f(tx));
}

/// Follow a file like `tail -F`: start at its end, read new lines as they come, and reopen it
/// from the start when it is rotated (a new inode) or truncated.
fn follow(path: &Path, tx: &Sender<Msg>, parse: impl Fn(&str) -> Option<SecurityEvent>) {
    let open = |from_end: bool| -> Option<(BufReader<std::fs::File>, u64)> {
        let mut f = std::fs::File::open(path).ok()?;
        let ino = f.metadata().ok()?.ino();
        if from_end {
            f.seek(SeekFrom::End(0)).ok()?;
        }
        Some((BufReader::new(f), ino))
    };
    let mut cur = open(true);
    if cur.is_none() {
        let _ = tx.send(Msg::Note(format!(
            "{}: not there yet, waiting",
            path.display()
        )));
    }
    let mut line = String::new();
    loop {
        let Some((reader, ino)) = cur.as_mut() else {
            std::thread::sleep(Duration::from_millis(500));
            cur = open(false);
            continue;
        };
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                std::thread::sleep(Duration::from_millis(200));
                let pos = reader.stream_position().unwrap_or(0);
                let rotated = match std::fs::metadata(path) {
                    Ok(m) => m.ino() != *ino || m.len() < pos,
                    Err(_) => false,
                };
                if rotated {
                    let _ = tx.send(Msg::Note(format!("{}: rotated, reopening", path.display())));
                    cur = open(false);
                }
            }
            Ok(_) if !line.ends_with('\n') => {
                // A partial line: wait for the rest rather than parse half of it.
                let back = line.len() as i64;
                let _ = reader.seek(SeekFrom::Current(-back));
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(_) => {
                if let Some(e) = parse(line.trim_end()) {
                    if tx.send(Msg::Event(e)).is_err() {
                        return;
                    }
                }
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(500));
                cur = open(false);
            }
        }
    }
}

fn json_socket(path: &Path, tx: &Sender<Msg>) {
    use std::os::unix::net::UnixListener;
    let _ = std::fs::remove_file(path);
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            let _ = tx.send(Msg::Note(format!("{}: cannot listen: {e}", path.display())));
            return;
        }
    };
    for conn in listener.incoming().flatten() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(conn).lines().map_while(Result::ok) {
                match json::parse_line(&line) {
                    Ok(t) => {
                        if tx.send(Msg::Event(t.event)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Note(format!("bad event line: {e}")));
                    }
                }
            }
        });
    }
}

/// Connect to AMI, log in, read events; reconnect with backoff (1 s doubling to 30 s).
fn ami_loop(addr: &str, user: &str, secret: &str, tx: &Sender<Msg>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match ami_session(addr, user, secret, tx) {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                let _ = tx.send(Msg::Note(format!(
                    "ami {addr}: {e}; retrying in {backoff:?}"
                )));
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn ami_session(addr: &str, user: &str, secret: &str, tx: &Sender<Msg>) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let login = format!("Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: security,system,reporting\r\n\r\n");
    s.write_all(login.as_bytes()).map_err(|e| e.to_string())?;
    let _ = tx.send(Msg::Note(format!("ami {addr}: connected")));
    let mut reader = ami::AmiReader::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => n,
            // No event for a minute: ask for a pong so a dead connection is noticed.
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                s.write_all(b"Action: Ping\r\n\r\n")
                    .map_err(|e| e.to_string())?;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        reader.feed(&buf[..n]);
        while let Some(item) = reader.next_event() {
            match item {
                Ok(t) => {
                    if tx.send(Msg::Event(t.event)).is_err() {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let _ = tx.send(Msg::Note(format!("ami {addr}: {e}")));
                }
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
        let text = String::from_utf8(head)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let (events, n) = read_records(&text, year);
        return Ok(replay_leaving(policy, events.into_iter(), n, detail));
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
    let (report, machine) = std::thread::scope(|scope| {
        let placement = Placement::start();
        for h in 0..helpers {
            let done_tx = done_tx.clone();
            let blocks = &blocks;
            let spare = &spare;
            let allowed = placement.before_spawn(h);
            scope.spawn(move || {
                Placement::started(allowed);
                let mut buf = Vec::new();
                loop {
                    let parsed = match take_block(blocks, &mut buf) {
                        Ok(Some((i, len))) => Ok((i, parse_block(&buf[..len], year, spare()))),
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
        let mut pending: BTreeMap<usize, (Vec<TimedEvent>, usize)> = BTreeMap::new();
        let mut want = 0;
        let mut replayer = Replayer::new(policy, detail);
        let mut buf = Vec::new();
        let mut input_left = true;
        let receive = |parsed: Parsed, pending: &mut BTreeMap<_, _>| -> std::io::Result<()> {
            let (i, v) = parsed?;
            pending.insert(i, v);
            Ok(())
        };
        loop {
            if let Some((events, n)) = pending.remove(&want) {
                replayer.report.records += n;
                for e in &events {
                    replayer.feed(e);
                }
                // Emptied by the thread that takes it: the strings in the events go back to
                // the allocator of the thread that most likely made them.
                let _ = free_tx.send(events);
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
                match take_block(&blocks, &mut buf)? {
                    Some((i, len)) => {
                        pending.insert(i, parse_block(&buf[..len], year, spare()));
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

/// A block's index in the file and what parsing it gave (events, lines), or the read error.
type Parsed = std::io::Result<(usize, (Vec<TimedEvent>, usize))>;

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

/// Events of one block of log lines, into `events` (emptied first), and the number of lines.
fn parse_block(block: &[u8], year: i32, mut events: Vec<TimedEvent>) -> (Vec<TimedEvent>, usize) {
    events.clear();
    let n = match std::str::from_utf8(block) {
        Ok(text) => parse_log_into(text, year, &mut events),
        Err(_) => parse_log_into(&String::from_utf8_lossy(block), year, &mut events),
    };
    (events, n)
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

/// Parse log lines; returns the events and the number of lines.
fn parse_log(text: &str, year: i32) -> (Vec<TimedEvent>, usize) {
    let mut events = Vec::new();
    let n = parse_log_into(text, year, &mut events);
    (events, n)
}

/// Append the events of `text` to `events`; returns the number of lines (as `str::lines`
/// counts them). Lines are found with `memchr`'s vectorised search: `str::lines` was a tenth
/// of the parsing.
fn parse_log_into(text: &str, year: i32, events: &mut Vec<TimedEvent>) -> usize {
    let mut n = 0;
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).chain(
        // The last line, when the text does not end with a line break.
        (!text.is_empty() && !text.ends_with('\n')).then_some(text.len()),
    );
    for end in ends {
        // `\n` is ASCII: both ends are char boundaries. (`parse_line` drops a trailing `\r`.)
        let line = &text[start..end];
        start = end + 1;
        n += 1;
        if let Ok(Some(e)) = asterisk_log::parse_line(line, year) {
            events.push(e);
        }
    }
    n
}

/// Read a recorded file of any supported kind; returns the events and the number of records.
pub fn read_records(text: &str, year: i32) -> (Vec<TimedEvent>, usize) {
    match kind_of(text) {
        Kind::Json => {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let n = lines.len();
            (
                lines
                    .into_iter()
                    .filter_map(|l| json::parse_line(l).ok())
                    .collect(),
                n,
            )
        }
        Kind::Ami => {
            let mut reader = ami::AmiReader::new();
            reader.feed(text.as_bytes());
            reader.feed(b"\r\n\r\n");
            let mut events = Vec::new();
            let mut n = 0;
            while let Some(item) = reader.next_event() {
                n += 1;
                if let Ok(t) = item {
                    events.push(t);
                }
            }
            (events, n)
        }
        Kind::Log => parse_log(text, year),
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
        assert!(from_file.events > 1000, "{}", from_file.events);
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
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        let (events, n) = read_records(&lossy, 2026);
        let whole = replay(&policy, events.into_iter(), n, Detail::Actions);
        assert_eq!(streamed.records, text.lines().count());
        assert!(streamed.events > 1000, "{}", streamed.events);
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
            format!("[Nov 20 10:15:32] NOTICE[1] chan_sip.c: Registration from '<sip:1@x>' failed for '{a}:5060' - No matching peer found\n")
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
        let (events, n) = read_records(&text, 2026);
        let whole = replay(&policy, events.into_iter(), n, Detail::Actions);
        assert_eq!(streamed.records, 7);
        assert_eq!(streamed.events, 6);
        assert_eq!(streamed.banned.len(), 2, "{:?}", streamed.banned);
        assert_eq!(
            serde_json::to_value(&streamed).unwrap(),
            serde_json::to_value(&whole).unwrap()
        );
    }

    #[test]
    fn lines_are_counted_as_str_lines_counts_them() {
        for text in ["", "\n", "a", "a\n", "a\nb", "a\r\nb\r\n", "\n\n", "a\n\nb"] {
            let mut events = Vec::new();
            assert_eq!(
                parse_log_into(text, 2026, &mut events),
                text.lines().count(),
                "{text:?}"
            );
        }
    }
}
