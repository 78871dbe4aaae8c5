//! Safe apply, rollback, anti-lockout and Safe Mode at boot (docs/safety.md), on top of the
//! backends, the core's decisions (`pbxfw_core::safety`) and the host's state files.
//!
//! State kept in the state directory (`$PBXFW_STATE_DIR`, default `/var/lib/pbxfw`), every file
//! written atomically with a kind and a version:
//! - `applied.json`: the IR text of the last ruleset pbxfw applied, per backend: what a rollback
//!   returns to.
//! - `applied-delta.json`: blacklisted addresses the edit path added to that ruleset since
//!   (`pbxfw blacklist add` into a large policy does not print the whole IR again); it counts
//!   only while its `base` is the fingerprint in `applied.json`.
//! - `pending.json`: an apply waiting for `pbxfw confirm`: the deadline, the ruleset to return to
//!   (or none: pbxfw was not loaded), and the dynamic set elements to re-seed.
//! - `boots.json`: the boot history.
//!
//! A confirmation is claimed by renaming `pending.json` away, which only one of `confirm` and
//! the rollback timer can do: whichever comes first wins, never both.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pbxfw_core::Prefix;
use pbxfw_core::{lockouts, AdminSession, Lockout, SafeMode, SafeModeConfig};
use pbxfw_core::{ApplyOptions, Backend, BackendError, Element};
use pbxfw_core::{Ruleset, SetKind};
use pbxfw_core::{ValidPolicy, L4};
use pbxfw_host::boot::History;
use pbxfw_host::{dirs, state};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Refusal, Result};

/// The last applied ruleset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The backend it went to.
    pub backend: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Its IR text.
    pub ir: String,
    /// The addresses of the sessions that applied it (`SSH_CONNECTION`, `--admin`): the
    /// daemon never bans them.
    #[serde(default)]
    pub sessions: Vec<IpAddr>,
}

/// An apply waiting for confirmation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// Tells this confirmation from a later one.
    pub id: String,
    /// Unix time in milliseconds after which the apply is rolled back.
    pub deadline_ms: u64,
    /// The backend.
    pub backend: String,
    /// The fingerprint of the ruleset awaiting confirmation.
    pub fingerprint: String,
    /// The ruleset to return to; `None` when pbxfw was not loaded before.
    pub previous: Option<Applied>,
    /// Dynamic set elements to put back: (set, element, seconds left).
    pub seed: Vec<(String, String, Option<u64>)>,
}

const APPLIED: &str = "applied";
const DELTA: &str = "applied_delta";

/// Static set elements added to the applied record's ruleset since it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AppliedDelta {
    /// The fingerprint in `applied.json` these additions are to.
    base: String,
    /// The fingerprint of the ruleset with them.
    fingerprint: String,
    /// (set, address) added, in order.
    added: Vec<(String, String)>,
}

fn delta_path() -> PathBuf {
    dirs::state_dir().join("applied-delta.json")
}
const PENDING: &str = "pending_confirmation";

fn applied_path() -> PathBuf {
    dirs::state_dir().join("applied.json")
}

/// Where the pending confirmation is kept.
pub fn pending_path() -> PathBuf {
    dirs::state_dir().join("pending.json")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Remember `rs` as the last applied ruleset, applied from `sessions`.
pub fn record_applied(backend: &str, rs: &Ruleset, sessions: &[IpAddr]) -> Result<()> {
    record_applied_as(backend, rs.fingerprint(), rs.to_text(), sessions)
}

/// [`record_applied`] of a ruleset whose fingerprint and canonical text the caller has made
/// already (an apply makes them beside the kernel's load).
pub fn record_applied_as(
    backend: &str,
    fingerprint: String,
    ir: String,
    sessions: &[IpAddr],
) -> Result<()> {
    prepare_applied(backend, fingerprint, ir, sessions)?.commit()
}

/// The applied record written and on disk beside its place, put there by
/// [`PreparedApplied::commit`] once the kernel holds the ruleset; dropped, it leaves nothing.
pub struct PreparedApplied(state::Prepared);

/// Stage the applied record of [`record_applied_as`] (see [`PreparedApplied`]).
pub fn prepare_applied(
    backend: &str,
    fingerprint: String,
    ir: String,
    sessions: &[IpAddr],
) -> Result<PreparedApplied> {
    let a = Applied {
        backend: backend.into(),
        fingerprint,
        ir,
        sessions: sessions.to_vec(),
    };
    state::prepare(&applied_path(), APPLIED, &a)
        .map(PreparedApplied)
        .map_err(|e| Error::io(applied_path(), e))
}

impl PreparedApplied {
    /// Put the record in place.
    pub fn commit(self) -> Result<()> {
        // The additions go first: left behind by a crash, they would count again on top of a
        // record of the same ruleset (the same base fingerprint).
        state::remove(&delta_path()).map_err(|e| Error::io(delta_path(), e))?;
        self.0.commit().map_err(|e| Error::io(applied_path(), e))
    }

    /// [`PreparedApplied::commit`] without the fsync of the directory, for an apply that keeps
    /// the recorded backend: the record describes what the kernel holds, and a crash empties
    /// the kernel (or leaves what a restore service loaded, which is not pbxfw's ruleset).
    /// What a crash can leave is the record before, whole (the new one was on disk before its
    /// rename): every command that acts on the ruleset it records first compares it with the
    /// kernel's fingerprint and refuses when they differ, and `pbxfw boot` writes the record
    /// of what it loads (with the sessions it came from: none). What is read without that
    /// check is the backend (which `pbxfw boot` loads with when given none), hence a change
    /// of backend is committed with its fsync, and the sessions an apply came from (which
    /// the daemon spares), which an older record gives as they were one apply before.
    pub fn commit_unsynced(self) -> Result<()> {
        state::remove(&delta_path()).map_err(|e| Error::io(delta_path(), e))?;
        self.0
            .commit_unsynced()
            .map_err(|e| Error::io(applied_path(), e))
    }
}

/// The applied record without its ruleset: the IR (megabytes with a large blacklist) is
/// skipped by the parser instead of being copied, for the commands that need only these.
#[derive(Clone, Deserialize)]
struct AppliedHead {
    backend: String,
    fingerprint: String,
    #[serde(default)]
    sessions: Vec<IpAddr>,
}

/// The applied record's head, read again only when the file is another (every write renames a
/// new file into place): a program that embeds the library asks at every command that names
/// no backend, and skipping the IR of a 100k blacklist takes milliseconds each time.
fn applied_head() -> Option<AppliedHead> {
    use std::os::unix::fs::MetadataExt;
    type Seen = (PathBuf, (u64, u64, u64, i64, i64), AppliedHead);
    static LAST: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);
    let path = applied_path();
    let id = std::fs::metadata(&path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()));
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(id), Some((p, seen, head))) = (id, last.as_ref()) {
        if *p == path && *seen == id {
            return Some(head.clone());
        }
    }
    let head = state::read::<AppliedHead>(&path, APPLIED).ok().flatten();
    *last = match (id, &head) {
        (Some(id), Some(h)) => Some((path, id, h.clone())),
        _ => None,
    };
    head
}

/// The backend of the last apply (none when nothing was recorded or it cannot be read).
pub fn applied_backend() -> Option<String> {
    applied_head().map(|a| a.backend)
}

/// The sessions the last apply came from (none when nothing was recorded or it cannot be read).
pub fn applied_sessions() -> Vec<IpAddr> {
    applied_head().map(|a| a.sessions).unwrap_or_default()
}

/// Refused while an apply waits for confirmation: its timer would undo whatever changes the
/// kernel meanwhile (an apply, an edit, a disable).
pub fn refuse_if_pending() -> Result<()> {
    match pending()? {
        Some(p) => Err(Refusal::PendingConfirmation {
            fingerprint: p.fingerprint,
            left_secs: p.deadline_ms.saturating_sub(now_ms()).div_ceil(1000),
        }
        .into()),
        None => Ok(()),
    }
}

/// The pending confirmation, if any.
pub fn pending() -> Result<Option<Pending>> {
    Ok(state::read(&pending_path(), PENDING)?)
}

pub use pbxfw_core::Admin;

/// The TCP port the policy's `ssh` service listens on (its first TCP port), 22 without one.
pub fn ssh_port(policy: &ValidPolicy) -> u16 {
    policy
        .services
        .get("ssh")
        .and_then(|s| s.ports.iter().find(|p| p.proto == L4::Tcp))
        .map_or(22, |p| p.ports.first)
}

/// The administrator sessions to protect: the SSH session this process runs in
/// (`$SSH_CONNECTION`: client address and port, server address and port), the `admins` of the
/// request (`--admin`) and the policy's `settings.admins`, each on the interface the route back
/// to it leaves by. An address without a port is checked on the policy's SSH port.
pub fn sessions(admins: &[Admin], policy: &ValidPolicy) -> Vec<AdminSession> {
    let mut out = Vec::new();
    if let Ok(ssh) = std::env::var("SSH_CONNECTION") {
        let f: Vec<&str> = ssh.split_whitespace().collect();
        if let (Some(Ok(addr)), Some(Ok(port))) = (
            f.first().map(|a| a.parse::<IpAddr>()),
            f.get(3).map(|p| p.parse::<u16>()),
        ) {
            out.push(AdminSession {
                addr,
                iif: route_dev(addr),
                port,
                from: "SSH_CONNECTION".into(),
            });
        }
    }
    let ssh = ssh_port(policy);
    let listed = &policy.settings.admins;
    for (list, from) in [(admins, "--admin"), (&listed[..], "settings.admins")] {
        for a in list {
            out.push(AdminSession {
                addr: a.addr,
                iif: route_dev(a.addr),
                port: a.port.unwrap_or(ssh),
                from: from.into(),
            });
        }
    }
    out
}

/// The interface the route to `addr` leaves by (`ip route get`), or `unknown` (an unlisted
/// interface: the internet zone).
fn route_dev(addr: IpAddr) -> String {
    std::process::Command::new("ip")
        .args(["route", "get", &addr.to_string()])
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut words = text.split_whitespace();
            while let Some(w) = words.next() {
                if w == "dev" {
                    return words.next().map(str::to_string);
                }
            }
            None
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The refusal when `rs` would cut off one of `sessions`, naming each deciding rule.
pub fn check_lockout(rs: &Ruleset, sessions: &[AdminSession]) -> Result<()> {
    let cut: Vec<Lockout> = lockouts(rs, sessions);
    if cut.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = cut
        .iter()
        .map(|l| {
            let rule = l
                .explanation
                .rule
                .as_ref()
                .map_or("the chain policy".to_string(), |r| {
                    format!("rule {} of chain {} ({})", r.index, r.chain, r.origin)
                });
            let verdict = match l.explanation.verdict {
                pbxfw_core::FinalVerdict::Reject => "rejected",
                _ => "dropped",
            };
            format!(
                "  a new connection from {} (tcp/{}, on {}, from {}) would be {verdict} by {}: {rule}",
                l.session.addr,
                l.session.port,
                l.session.iif,
                l.session.from,
                l.explanation.decided_by
            )
        })
        .collect();
    Err(Refusal::Lockout { lines }.into())
}

/// The elements of `rs`'s dynamic sets now in the kernel, to put back after a rollback.
fn dynamic_elements(
    kernel: &dyn Backend,
    rs: &Ruleset,
) -> Result<Vec<(String, String, Option<u64>)>, BackendError> {
    let status = kernel.status()?;
    Ok(status
        .sets
        .into_iter()
        .filter(|s| {
            matches!(
                rs.sets.get(&s.name).map(|x| &x.kind),
                Some(SetKind::Dynamic(_))
            )
        })
        .flat_map(|s| {
            let name = s.name;
            s.elements
                .into_iter()
                .map(move |e| (name.clone(), e.element, e.expires_in))
        })
        .collect())
}

/// Apply `rs` with a deadline: remember how to go back, apply, and start the detached timer
/// that rolls back unless `pbxfw confirm` comes first.
pub fn apply_with_confirm(
    kernel: &dyn Backend,
    backend_arg: &str,
    rs: &Ruleset,
    opts: &ApplyOptions,
    seconds: u64,
    sessions: &[IpAddr],
) -> Result<(String, u64)> {
    refuse_if_pending()?;
    let loaded = kernel.fingerprint()?;
    let previous = match &loaded {
        None => None,
        Some(fp) => match applied_record()? {
            Some((a, rs)) if &a.fingerprint == fp => Some((a, rs)),
            _ => return Err(Refusal::NotLastApplied { loaded: fp.clone() }.into()),
        },
    };
    let seed = match &previous {
        Some((_, rs)) => dynamic_elements(kernel, rs)?,
        None => Vec::new(),
    };
    let previous = previous.map(|(a, _)| a);
    let id = format!("{}-{}", std::process::id(), now_ms());
    let deadline_ms = now_ms().saturating_add(seconds.saturating_mul(1000));
    let p = Pending {
        id: id.clone(),
        deadline_ms,
        backend: backend_arg.into(),
        fingerprint: rs.fingerprint(),
        previous,
        seed,
    };
    // The pending file and its timer come before the apply: a crash (or SIGKILL) at any point
    // after them leaves a timer that rolls back to what was loaded before, which is harmless
    // if the apply never happened; the other order could leave an unconfirmed ruleset with no
    // way back.
    state::write(&pending_path(), PENDING, &p).map_err(|e| Error::io(pending_path(), e))?;
    if let Err(e) = spawn_timer(backend_arg, &id) {
        let _ = state::remove(&pending_path());
        return Err(e);
    }
    if let Err(e) = kernel.load(rs, opts) {
        // Nothing changed: the timer finds no pending confirmation and ends.
        let _ = state::remove(&pending_path());
        return Err(e.into());
    }
    // Loaded: from here on the timer stays, whatever happens, so that an unconfirmed ruleset
    // is always rolled back.
    pbxfw_core::verify_loaded(kernel, rs)?;
    record_applied(backend_arg, rs, sessions)?;
    Ok((rs.fingerprint(), deadline_ms))
}

/// The last applied ruleset (what the kernel holds when its fingerprint matches), if any.
pub fn applied_ruleset() -> Result<Option<Ruleset>> {
    Ok(applied_record()?.map(|(_, rs)| rs))
}

/// The applied record with the edit path's additions in, and its ruleset.
fn applied_record() -> Result<Option<(Applied, Ruleset)>> {
    let Some(mut a) = state::read::<Applied>(&applied_path(), APPLIED)? else {
        return Ok(None);
    };
    let mut rs = parse_ir(&a.ir)?;
    let delta = state::read::<AppliedDelta>(&delta_path(), DELTA)?;
    if let Some(d) = delta.filter(|d| d.base == a.fingerprint) {
        add_elements(&mut rs, &d.added).map_err(|reason| {
            Error::State(state::StateError {
                path: delta_path(),
                reason,
                last_good: None,
            })
        })?;
        let fingerprint = rs.fingerprint();
        if fingerprint != d.fingerprint {
            return Err(Error::State(state::StateError {
                path: delta_path(),
                reason: format!(
                    "its additions lead to fingerprint {fingerprint}, not {}",
                    d.fingerprint
                ),
                last_good: None,
            }));
        }
        a.ir = rs.to_text();
        a.fingerprint = fingerprint;
    }
    Ok(Some((a, rs)))
}

/// Add addresses to static host sets of `rs`, as the compiler puts blacklisted addresses in.
fn add_elements(rs: &mut Ruleset, added: &[(String, String)]) -> std::result::Result<(), String> {
    let mut by_set: std::collections::BTreeMap<&str, Vec<Prefix>> = Default::default();
    for (set, addr) in added {
        let a: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an address"))?;
        by_set.entry(set).or_default().push(Prefix::host(a));
    }
    for (name, new) in by_set {
        let Some(set) = rs.sets.get_mut(name) else {
            return Err(format!("the ruleset has no set {name}"));
        };
        let SetKind::Static(s) = &set.kind else {
            return Err(format!("set {name} is not static"));
        };
        let elements = s
            .elements()
            .iter()
            .cloned()
            .chain(new.into_iter().map(|p| (p, String::new())));
        let s = pbxfw_core::StaticSet::hosts(set.family, elements)
            .map_err(|p| format!("{p} does not belong in set {name}"))?;
        set.kind = SetKind::Static(s);
    }
    Ok(())
}

/// Record that the edit path added `added` ((set, address)) to the ruleset with fingerprint
/// `from`, giving the ruleset with fingerprint `to`. Refused when the applied record is not of
/// `from` (nothing to add to).
pub(crate) fn record_added(from: &str, to: &str, added: &[(String, String)]) -> Result<()> {
    let head = applied_head().ok_or_else(|| Error::Usage("no applied record".into()))?;
    let delta = state::read::<AppliedDelta>(&delta_path(), DELTA)
        .ok()
        .flatten()
        .filter(|d| d.base == head.fingerprint);
    let d = match delta {
        Some(mut d) if d.fingerprint == from => {
            d.added.extend_from_slice(added);
            d.fingerprint = to.into();
            d
        }
        _ if head.fingerprint == from => AppliedDelta {
            base: from.into(),
            fingerprint: to.into(),
            added: added.to_vec(),
        },
        _ => {
            return Err(Error::Usage(format!(
                "the applied record is not of ruleset {from}"
            )))
        }
    };
    state::write(&delta_path(), DELTA, &d).map_err(|e| Error::io(delta_path(), e))
}

/// The IR text of an applied record, parsed.
fn parse_ir(ir: &str) -> Result<Ruleset> {
    pbxfw_core::parse_ir(ir).map_err(|e| {
        Error::State(state::StateError {
            path: applied_path(),
            reason: format!("the ruleset it holds does not parse: {e}"),
            last_good: None,
        })
    })
}

/// The `pbxfw` program, which runs the rollback timer: `$PBXFW_BIN`, else this program if it
/// is `pbxfw` (the command line), else the first of `/usr/bin/pbxfw`, `/usr/local/bin/pbxfw`
/// and `pbxfw` in the absolute directories of `$PATH`. A library front end (PHP, Python)
/// finds the installed one. The program runs as root later on: only an absolute path to a
/// file owned by root and writable by nobody else is taken ([`trusted_program`]).
pub fn pbxfw_program() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PBXFW_BIN").filter(|p| !p.is_empty()) {
        return trusted_program(Path::new(&p));
    }
    if let Ok(me) = std::env::current_exe() {
        if me.file_name().is_some_and(|n| n == "pbxfw") {
            return trusted_program(&me);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path).filter(|d| d.is_absolute()))
        .map(|d| d.join("pbxfw"))
        .find(|p| p.is_file())
        .map_or_else(
            || {
                Err(Error::io(
                    "pbxfw",
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no pbxfw program to run the rollback timer (set PBXFW_BIN, or install pbxfw)",
                    ),
                ))
            },
            |p| trusted_program(&p),
        )
}

/// `path`, canonical, if it is absolute and a regular file that root owns and only root may
/// write (as for the custom rules file: the timer runs it with this process's rights).
pub fn trusted_program(path: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
        )
    };
    if !path.is_absolute() {
        return Err(refuse("the program must be an absolute path".into()));
    }
    let real = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let meta = std::fs::metadata(&real).map_err(|e| Error::io(&real, e))?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        return Err(refuse("not an executable file".into()));
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "must be owned by root and not writable by group or others (uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(real)
}

/// The file a rollback timer creates when it runs: the apply waits for it, so an apply with a
/// confirmation never goes ahead without a timer that will undo it.
fn armed_path(id: &str) -> PathBuf {
    dirs::state_dir().join(format!("rollback-timer.{id}"))
}

/// How long an apply waits for its timer to say it runs.
const ARMING: Duration = Duration::from_secs(10);

/// Start `pbxfw rollback --when-due ID` in a session of its own (`setsid -f`): it outlives this
/// process, even one killed with SIGKILL. Returns once the timer runs (it created its armed
/// file); `setsid -f` itself says nothing of whether the program started.
fn spawn_timer(backend: &str, id: &str) -> Result<()> {
    let exe = pbxfw_program()?;
    let log_path = dirs::state_dir().join("rollback.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let status = std::process::Command::new("setsid")
        .arg("-f")
        .arg(&exe)
        .args(["rollback", "--backend", backend, "--when-due", id])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io(&log_path, e))?)
        .stderr(log)
        .status()
        .map_err(|e| Error::io("setsid", e))?;
    let started = std::time::Instant::now();
    while status.success() && started.elapsed() < ARMING {
        if armed_path(id).exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(Error::io(
        &exe,
        std::io::Error::other(format!(
            "the rollback timer did not start (see {})",
            log_path.display()
        )),
    ))
}

/// Take the pending confirmation for this process alone (rename it away). `None` when there is
/// none, or it is not `id`, or someone else took it first.
fn claim(id: Option<&str>) -> Result<Option<Pending>> {
    let Some(p) = pending()? else { return Ok(None) };
    if id.is_some_and(|id| id != p.id) {
        return Ok(None);
    }
    let taken = pending_path().with_extension(format!("claimed-{}", std::process::id()));
    match std::fs::rename(pending_path(), &taken) {
        Ok(()) => {
            let _ = std::fs::remove_file(&taken);
            // Made durable before the confirmation (or rollback) is reported: a pending file
            // a crash brought back would have `pbxfw boot` roll back a confirmed ruleset. The
            // claim stands if the fsync fails (the file is gone for every later reader).
            if let Some(dir) = pending_path().parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(Some(p))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(pending_path(), e)),
    }
}

/// `pbxfw confirm`: keep the applied ruleset. Returns what was confirmed.
pub fn confirm() -> Result<Option<String>> {
    Ok(claim(None)?.map(|p| p.fingerprint))
}

/// Put back what `p` says was there before, on the backend it was applied with.
fn roll_back(p: &Pending) -> Result<String> {
    // What was rolled back is never saved as the policy file by a later confirmation.
    crate::control::forget_save_on_confirm();
    let backend: crate::backends::BackendName = p.backend.parse()?;
    let kernel = backend.open();
    let kernel = kernel.as_ref();
    match &p.previous {
        None => {
            // pbxfw was not loaded: going back is removing it (whatever the lock file says: it
            // guards against switching the firewall off, not against undoing an unconfirmed
            // change).
            kernel.disable()?;
            Ok("pbxfw was not loaded before: removed".into())
        }
        Some(a) => {
            let rs = parse_ir(&a.ir)?;
            let mut opts = ApplyOptions {
                custom: custom_rules(&p.backend)?,
                ..Default::default()
            };
            for (set, el, left) in &p.seed {
                let Some(SetKind::Dynamic(d)) = rs.sets.get(set).map(|s| &s.kind) else {
                    continue;
                };
                let addr: IpAddr = match el.split('/').next().and_then(|a| a.parse().ok()) {
                    Some(a) => a,
                    None => continue,
                };
                let Ok(prefix) = Prefix::new(addr, d.key_len) else {
                    continue;
                };
                opts.seed.entry(set.clone()).or_default().push(Element {
                    prefix,
                    timeout: left.map(Duration::from_secs),
                });
            }
            pbxfw_core::apply(kernel, &rs, &opts)?;
            // `a` holds the additions already (it was read through `applied_record`).
            state::remove(&delta_path()).map_err(|e| Error::io(delta_path(), e))?;
            state::write(&applied_path(), APPLIED, a).map_err(|e| Error::io(applied_path(), e))?;
            Ok(format!("ruleset {} is back", a.fingerprint))
        }
    }
}

/// Removes a timer's armed file when the timer ends, however it ends.
struct Armed(PathBuf);

impl Drop for Armed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `pbxfw rollback`: now (`when_due` None), or at the deadline of confirmation `id` unless it
/// is confirmed first. The rollback runs on the backend the apply was made with; a caller that
/// names another (`expect`) is refused before anything is taken.
pub fn rollback(
    when_due: Option<&str>,
    expect: Option<crate::backends::BackendName>,
) -> Result<String> {
    let _armed = match when_due {
        Some(id) => {
            let path = armed_path(id);
            std::fs::write(&path, std::process::id().to_string())
                .map_err(|e| Error::io(&path, e))?;
            Some(Armed(path))
        }
        None => None,
    };
    if let (Some(want), Some(p)) = (expect, pending()?) {
        if want.as_str() != p.backend {
            return Err(Error::Usage(format!(
                "the apply waiting for confirmation was made with the {} backend, not {want}",
                p.backend
            )));
        }
    }
    if let Some(id) = when_due {
        loop {
            match pending()? {
                Some(p) if p.id == id => {
                    if now_ms() >= p.deadline_ms {
                        break;
                    }
                }
                _ => return Ok(format!("confirmation {id} was confirmed (or replaced)")),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let Some(p) = claim(when_due)? else {
        return match when_due {
            Some(id) => Ok(format!("confirmation {id} was confirmed just in time")),
            None => Err(Error::Usage(
                "nothing to roll back: no apply is waiting for confirmation".into(),
            )),
        };
    };
    roll_back(&p).map(|m| format!("rolled back ruleset {}: {m}", p.fingerprint))
}

/// A pending confirmation whose deadline passed while nothing watched it (a reboot): roll it
/// back, on the backend it was applied with. Used by `pbxfw boot` and the daemon at start.
pub fn overdue() -> Result<Option<String>> {
    match pending()? {
        Some(p) if now_ms() >= p.deadline_ms => rollback(None, None).map(Some),
        _ => Ok(None),
    }
}

/// The Safe Mode marker a UI can show.
pub fn marker_path() -> PathBuf {
    dirs::run_dir().join("safe-mode")
}

fn history() -> Result<History> {
    Ok(state::read(&History::path(), History::KIND)?.unwrap_or_default())
}

fn seen(history: &mut History, boot_id: &str, uptime: u64) -> Result<()> {
    history.seen(boot_id, uptime);
    state::write(&History::path(), History::KIND, history)
        .map_err(|e| Error::io(History::path(), e))
}

/// The custom rules for `backend`: a file anyone but root could have written is refused.
pub fn custom_rules(backend: &str) -> Result<Option<String>> {
    pbxfw_host::custom::load(backend).map_err(|e| match e {
        pbxfw_host::custom::CustomError::Unsafe { path, detail } => {
            Refusal::UnsafeCustomRules { path, detail }.into()
        }
        pbxfw_host::custom::CustomError::Io { path, source } => Error::io(path, source),
    })
}

/// `pbxfw boot`: record the boot, hold the rules back if Safe Mode says so, roll back an apply
/// left unconfirmed by a reboot, apply, then keep the boot's length in the history until it is
/// long enough to count as a good boot.
pub fn boot(
    kernel: &dyn Backend,
    backend_arg: &str,
    rs: &Ruleset,
    cfg: &SafeModeConfig,
    heartbeat: Duration,
) -> Result<()> {
    let uptime = || pbxfw_host::boot::uptime().map_err(|e| Error::io("/proc/uptime", e));
    let boot_id =
        pbxfw_host::boot::boot_id().map_err(|e| Error::io("/proc/sys/kernel/random/boot_id", e))?;
    // A damaged state file never keeps the firewall from loading: without a history there is
    // no Safe Mode decision to take (the rules load), without a readable pending confirmation
    // there is nothing to roll back to. Each problem is logged and shown by `pbxfw status`.
    let mut h = history().unwrap_or_else(|e| {
        state_problem("boot history", &e.to_string());
        History::default()
    });
    let decision = pbxfw_core::safe_mode(h.previous(&boot_id), uptime()?, cfg);
    if let Err(e) = seen(&mut h, &boot_id, uptime()?) {
        state_problem("boot history", &e.to_string());
    }
    if let SafeMode::Hold {
        until_uptime,
        reason,
    } = &decision
    {
        log(&[("event", "safe_mode"), ("detail", reason)]);
        let _ = pbxfw_host::notify::notify(&format!("STATUS=Safe Mode: {reason}"));
        write_marker(&marker_path(), &decision)?;
        while uptime()? < *until_uptime {
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = std::fs::remove_file(marker_path());
        log(&[("event", "safe_mode_over")]);
    }
    let overdue = overdue().unwrap_or_else(|e| {
        // Kept aside, so that a later apply or rollback is not refused by it.
        let mut aside = pending_path().into_os_string();
        aside.push(".damaged");
        let _ = std::fs::rename(pending_path(), &aside);
        state_problem(
            "pending confirmation",
            &format!(
                "{e}; moved to {}, the policy is loaded instead",
                Path::new(&aside).display()
            ),
        );
        None
    });
    let status = match overdue {
        Some(msg) => {
            log(&[("event", "rollback"), ("detail", &msg)]);
            msg
        }
        None => {
            let a = pbxfw_core::apply(
                kernel,
                rs,
                &ApplyOptions {
                    custom: custom_rules(backend_arg)?,
                    ..Default::default()
                },
            )?;
            record_applied(backend_arg, rs, &[])?;
            log(&[("event", "applied"), ("fingerprint", &a.fingerprint)]);
            format!("applied ruleset {}", a.fingerprint)
        }
    };
    // Units ordered after this one start once the rules are in (`Type=notify`).
    if let Err(e) = pbxfw_host::notify::notify(&format!("READY=1\nSTATUS={status}")) {
        log(&[("error", "notify"), ("detail", &e.to_string())]);
    }
    // Keep the boot's length current until it counts as a good one.
    loop {
        let up = uptime()?;
        let mut h = history().unwrap_or_default();
        if let Err(e) = seen(&mut h, &boot_id, up) {
            state_problem("boot history", &e.to_string());
        }
        if up >= cfg.short_boot {
            return Ok(());
        }
        std::thread::sleep(heartbeat);
    }
}

/// Where `pbxfw boot` notes the state files it could not use (a reboot clears it).
pub fn problems_path() -> PathBuf {
    dirs::run_dir().join("state-problems.json")
}

/// Log a state file that could not be used and note it for `pbxfw status`.
fn state_problem(what: &str, detail: &str) {
    log(&[
        ("event", "state_problem"),
        ("state", what),
        ("detail", detail),
    ]);
    let path = problems_path();
    let mut list: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    list.push(serde_json::json!({"state": what, "detail": detail}));
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let text = serde_json::to_string(&list).expect("serialisable");
    let _ = state::write_atomic(&path, text.as_bytes());
}

fn write_marker(path: &Path, decision: &SafeMode) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let text = serde_json::to_string(decision).expect("serialisable");
    state::write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))
}

/// One line of `pbxfw boot` and the rollback timer, as the daemon logs (the journal when run
/// by systemd, else standard error).
fn log(fields: &[(&str, &str)]) {
    let fields: Vec<(&str, String)> = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
    crate::context::Context::system().log(&fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> ValidPolicy {
        pbxfw_core::Policy::from_toml(toml)
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn an_admin_without_a_port_is_checked_on_the_policys_ssh_port() {
        // SSH moved to 2222 and opened to the internet: an administrator out there keeps
        // access, and checking tcp/22 instead would refuse the apply for nothing.
        let moved = policy(
            "[interfaces]\neth0 = \"internet\"\n[services.ssh]\nports = [\"tcp/2222\"]\nzones = [\"internet\", \"local\"]\n[settings]\nadmins = [\"198.51.100.9\"]\n",
        );
        assert_eq!(ssh_port(&moved), 2222);
        let admin: Admin = "198.51.100.7".parse().unwrap();
        let ours: Vec<AdminSession> = sessions(&[admin], &moved)
            .into_iter()
            .filter(|s| s.from != "SSH_CONNECTION")
            .collect();
        assert_eq!(
            ours.iter().map(|s| s.port).collect::<Vec<_>>(),
            [2222, 2222]
        );
        let rs = pbxfw_core::compile(&moved);
        assert!(check_lockout(&rs, &ours).is_ok());
        // With a port of its own, that port is checked: 443 is closed here.
        let web: Admin = "198.51.100.7:443".parse().unwrap();
        let refused = check_lockout(&rs, &sessions(&[web], &moved)).unwrap_err();
        assert!(refused.to_string().contains("tcp/443"), "{refused}");
        assert_eq!(ssh_port(&policy("")), 22);
        assert!("[2001:db8::7]:8443".parse::<Admin>().unwrap().port == Some(8443));
        assert!("nowhere".parse::<Admin>().is_err());
        // `settings.admins` takes ports too: the web interface's administrator.
        let listed = policy(
            "[interfaces]\neth0 = \"internet\"\n[services.ssh]\nzones = [\"internet\"]\n[settings]\nadmins = [\"198.51.100.9\", \"198.51.100.9:8443\"]\n",
        );
        let s: Vec<(u16, String)> = sessions(&[], &listed)
            .into_iter()
            .filter(|s| s.from == "settings.admins")
            .map(|s| (s.port, s.addr.to_string()))
            .collect();
        assert_eq!(
            s,
            [(22, "198.51.100.9".into()), (8443, "198.51.100.9".into())]
        );
        let refused = check_lockout(&pbxfw_core::compile(&listed), &sessions(&[], &listed))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("tcp/8443") && !refused.contains("tcp/22,"),
            "{refused}"
        );
    }
}
