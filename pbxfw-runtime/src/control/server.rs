//! The daemon's side of the control socket.
//!
//! Who a caller is comes from the kernel (`SO_PEERCRED`, `SO_PEERGROUPS`) when it connects:
//! root may do everything, a member of the admin group (`pbxfw-admin`) may change things, a
//! member of the VPN group (`pbxfw-vpn`) may tell of VPN clients, a member of the socket's
//! group (`pbxfw`) may look; anyone else is refused before a byte of theirs is read. Every change is logged with the caller's uid, gid and pid.
//!
//! A hostile or slow client cannot stall the daemon or other clients: each connection has its
//! own thread; a request must arrive whole within [`REQUEST_TIME`] of its first byte and be at
//! most [`MAX_REQUEST`](super::wire::MAX_REQUEST) bytes; an idle connection is closed after
//! [`IDLE_TIME`]; an answer the client does not read within [`WRITE_TIME`] closes it; at most
//! [`MAX_CLIENTS`] connections are served at once, [`MAX_PER_USER`] per user, with room kept
//! for root. The responsive daemon's own work runs on other threads and never waits for a
//! client; changes wait for each other (one at a time), looks do not.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pbxfw_host::peer::Peer;

use super::wire::{self, Call, Request, Response, Role, MAX_REQUEST};
use crate::backends::BackendName;
use crate::context::Context;
use crate::error::{Error, Result};

/// How long a request may take to arrive, from its first byte.
pub const REQUEST_TIME: Duration = Duration::from_secs(10);
/// How long a connection may sit idle between requests.
pub const IDLE_TIME: Duration = Duration::from_secs(60);
/// How long an answer may wait for the client to read it.
pub const WRITE_TIME: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CLIENTS: usize = 32;
/// Connections of one user (other than root) at once.
pub const MAX_PER_USER: usize = 8;
/// Connections kept for root when the others are busy.
const ROOT_RESERVE: usize = 4;
/// A request line longer than this needs one of [`MAX_LARGE`] places while it is read and
/// handled: only `apply` and `check` carry that much (a policy), and thirty-two of them at
/// once would hold half a gigabyte.
const LARGE: usize = 1 << 20;
/// Large requests at once.
const MAX_LARGE: usize = 2;

/// How the daemon serves its control socket.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The socket ([`super::socket_path`]).
    pub path: PathBuf,
    /// The group that may connect and look (a name or a gid; `pbxfw`): the socket is created
    /// 0660 root:GROUP. Without such a group, 0600: root only.
    pub group: String,
    /// The group that may also change things (a name or a gid; `pbxfw-admin`). Its members
    /// must be in `group` too, to reach the socket.
    pub admin_group: String,
    /// The group that may also tell of VPN clients (a name or a gid; `pbxfw-vpn`): a VPN
    /// server's scripts. Its members must be in `group` too.
    pub vpn_group: String,
    /// The daemon's policy file: what `show`, `explain`, `ban` and the edits act on, and where
    /// `apply` with `save` writes.
    pub policy: Option<String>,
}

impl ControlConfig {
    /// The default socket and groups, for the daemon's `policy`.
    pub fn new(policy: Option<String>) -> ControlConfig {
        ControlConfig {
            path: super::socket_path(),
            group: "pbxfw".into(),
            admin_group: "pbxfw-admin".into(),
            vpn_group: "pbxfw-vpn".into(),
            policy,
        }
    }
}

/// A group named by name or number.
fn group_id(g: &str) -> Option<u32> {
    g.parse().ok().or_else(|| pbxfw_host::dirs::group_id(g))
}

struct Shared {
    config: ControlConfig,
    read_gid: Option<u32>,
    admin_gid: Option<u32>,
    vpn_gid: Option<u32>,
    /// The daemon's own event queue: VPN sessions become registrations there.
    events: Option<crate::daemon::Handle>,
    ctx: Context,
    /// Open connections per uid.
    clients: Mutex<BTreeMap<u32, usize>>,
    /// Changes run one at a time.
    changes: Mutex<()>,
    /// Large requests being read or handled.
    large: std::sync::atomic::AtomicUsize,
    /// When a busy refusal was last logged (a storm of them is logged once a minute).
    busy_logged: Mutex<Option<Instant>>,
}

/// Listen on the control socket and serve it on threads of its own; returns once it listens.
/// `events` is the daemon's queue, where VPN sessions go (without one they are refused).
pub fn serve(
    config: ControlConfig,
    ctx: Context,
    events: Option<crate::daemon::Handle>,
) -> Result<()> {
    let read_gid = group_id(&config.group);
    let admin_gid = group_id(&config.admin_group);
    let vpn_gid = group_id(&config.vpn_group);
    if read_gid.is_none() {
        ctx.log(&[
            ("warning", "control".into()),
            (
                "detail",
                format!(
                    "no group {:?}: the control socket is root's only (0600)",
                    config.group
                ),
            ),
        ]);
    }
    if admin_gid.is_none() {
        ctx.log(&[
            ("warning", "control".into()),
            (
                "detail",
                format!(
                    "no group {:?}: only root may change things through the control socket",
                    config.admin_group
                ),
            ),
        ]);
    }
    if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let listener = crate::daemon::bind_private(&config.path, read_gid)
        .map_err(|e| Error::io(&config.path, e))?;
    ctx.log(&[
        ("event", "control".into()),
        ("socket", config.path.display().to_string()),
        ("group", config.group.clone()),
        ("admin_group", config.admin_group.clone()),
    ]);
    let shared = Arc::new(Shared {
        config,
        read_gid,
        admin_gid,
        vpn_gid,
        events,
        ctx,
        clients: Mutex::new(BTreeMap::new()),
        changes: Mutex::new(()),
        large: Default::default(),
        busy_logged: Mutex::new(None),
    });
    std::thread::Builder::new()
        .name("pbxfw-control".into())
        .spawn(move || accept(listener, shared))
        .map_err(|e| Error::Usage(format!("cannot start the control socket's thread: {e}")))?;
    Ok(())
}

impl Shared {
    /// The role of `peer`, or none: refused.
    fn role(&self, peer: &Peer) -> Option<Role> {
        if peer.uid == 0 || self.admin_gid.is_some_and(|g| peer.in_group(g)) {
            Some(Role::Admin)
        } else if self.vpn_gid.is_some_and(|g| peer.in_group(g)) {
            Some(Role::Vpn)
        } else if self.read_gid.is_some_and(|g| peer.in_group(g)) {
            Some(Role::Read)
        } else {
            None
        }
    }

    /// Take a place for `uid`'s connection, or say why there is none.
    fn admit(&self, uid: u32) -> std::result::Result<(), String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = clients.values().sum();
        let mine = clients.get(&uid).copied().unwrap_or(0);
        if uid == 0 {
            if total >= MAX_CLIENTS {
                return Err(format!("{MAX_CLIENTS} clients are connected"));
            }
        } else if total >= MAX_CLIENTS - ROOT_RESERVE {
            return Err(format!("{} clients are connected", total));
        } else if mine >= MAX_PER_USER {
            return Err(format!("uid {uid} has {MAX_PER_USER} connections open"));
        }
        *clients.entry(uid).or_default() += 1;
        Ok(())
    }

    /// Take one of the [`MAX_LARGE`] places for a large request.
    fn take_large(&self) -> Option<Large<'_>> {
        use std::sync::atomic::Ordering;
        let mut n = self.large.load(Ordering::Acquire);
        loop {
            if n >= MAX_LARGE {
                return None;
            }
            match self
                .large
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Large(self)),
                Err(now) => n = now,
            }
        }
    }

    /// Log a busy refusal, at most once a minute.
    fn log_busy(&self, uid: u32, why: &str) {
        let mut last = self.busy_logged.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *last = Some(Instant::now());
        self.ctx.log(&[
            ("event", "refused".into()),
            ("control", "busy".into()),
            ("uid", uid.to_string()),
            ("detail", why.to_string()),
        ]);
    }

    fn leave(&self, uid: u32) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = clients.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&uid);
            }
        }
    }
}

/// A place for a large request, given back when dropped.
struct Large<'a>(&'a Shared);

impl Drop for Large<'_> {
    fn drop(&mut self) {
        self.0
            .large
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A connection's place, given back when its thread ends, however it ends.
struct Place {
    shared: Arc<Shared>,
    uid: u32,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.shared.leave(self.uid);
    }
}

fn accept(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(_) => {
                // Out of descriptors, most likely: let some close.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = conn.set_write_timeout(Some(WRITE_TIME));
        let peer = match pbxfw_host::peer::credentials(&conn) {
            Ok(p) => p,
            Err(e) => {
                refuse(
                    conn,
                    &Error::Denied(format!("who is calling is unknown: {e}")),
                );
                continue;
            }
        };
        let Some(role) = shared.role(&peer) else {
            shared.ctx.log(&[
                ("event", "refused".into()),
                ("control", "connect".into()),
                ("uid", peer.uid.to_string()),
                ("gid", peer.gid.to_string()),
                ("pid", peer.pid.to_string()),
            ]);
            refuse(
                conn,
                &Error::Denied(format!(
                    "uid {} is in none of the groups {:?}, {:?}, {:?}",
                    peer.uid,
                    shared.config.group,
                    shared.config.admin_group,
                    shared.config.vpn_group
                )),
            );
            continue;
        };
        if let Err(why) = shared.admit(peer.uid) {
            shared.log_busy(peer.uid, &why);
            refuse(conn, &Error::Unavailable(format!("busy: {why}")));
            continue;
        }
        let place = Place {
            shared: shared.clone(),
            uid: peer.uid,
        };
        // A thread that cannot be started drops its place with the closure.
        let _ = std::thread::Builder::new()
            .name("pbxfw-control-client".into())
            .spawn(move || {
                let place = place;
                serve_client(conn, &peer, role, &place.shared);
            });
    }
}

/// Answer a connection that is not served with why, and close it.
fn refuse(mut conn: UnixStream, e: &Error) {
    let _ = writeln!(
        conn,
        "{}",
        serde_json::to_string(&Response::failed(Value::Null, e)).expect("serialisable")
    );
}

enum Read<'a> {
    Line(Vec<u8>, Option<Large<'a>>),
    Closed,
    Idle,
    Slow,
    TooLong,
    Busy,
}

/// The next request line: the first byte may take [`IDLE_TIME`], the rest of the line must
/// follow within [`REQUEST_TIME`].
fn read_request<'a>(reader: &mut BufReader<UnixStream>, shared: &'a Shared) -> Read<'a> {
    let mut line = Vec::new();
    let mut large = None;
    let mut deadline = Instant::now() + IDLE_TIME;
    let mut started = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return if started { Read::Slow } else { Read::Idle };
        }
        let _ = reader.get_ref().set_read_timeout(Some(left));
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return if started { Read::Slow } else { Read::Idle };
            }
            Err(_) => return Read::Closed,
        };
        if chunk.is_empty() {
            return Read::Closed;
        }
        if !started {
            started = true;
            deadline = Instant::now() + REQUEST_TIME;
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if line.len() + take > MAX_REQUEST {
            return Read::TooLong;
        }
        if line.len() + take > LARGE && large.is_none() {
            match shared.take_large() {
                Some(l) => large = Some(l),
                None => return Read::Busy,
            }
        }
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take + usize::from(done));
        if done {
            return Read::Line(line, large);
        }
    }
}

fn serve_client(conn: UnixStream, peer: &Peer, role: Role, shared: &Shared) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let answer = match read_request(&mut reader, shared) {
            Read::Line(line, _large) => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match wire::parse_request(&line) {
                    Ok(req) => {
                        let id = req.id.clone();
                        // A bug is one failed answer, never a lost connection place or a
                        // daemon without its control socket.
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            handle(req, peer, role, shared)
                        }))
                        .unwrap_or_else(|_| {
                            Response::failed(
                                id,
                                &Error::Unavailable(
                                    "the daemon failed on this request (a bug); nothing is known to have changed".into(),
                                ),
                            )
                        })
                    }
                    Err(bad) => Response::failed(bad.id, &Error::Usage(bad.error)),
                }
            }
            Read::Closed | Read::Idle => return,
            Read::Slow => {
                let e = Error::Unavailable(format!(
                    "the request did not arrive within {} s",
                    REQUEST_TIME.as_secs()
                ));
                let _ = send(&mut out, &Response::failed(Value::Null, &e));
                return;
            }
            Read::TooLong => {
                let e = Error::Usage(format!("the request is longer than {MAX_REQUEST} bytes"));
                let _ = send(&mut out, &Response::failed(Value::Null, &e));
                return;
            }
            Read::Busy => {
                let e = Error::Unavailable(format!(
                    "busy: {MAX_LARGE} large requests are being handled"
                ));
                let _ = send(&mut out, &Response::failed(Value::Null, &e));
                return;
            }
        };
        if send(&mut out, &answer).is_err() {
            return;
        }
    }
}

/// Write an answer whole within [`WRITE_TIME`]: a client that reads a byte now and then
/// cannot hold its thread for longer.
fn send(out: &mut UnixStream, answer: &Response) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(answer)?;
    bytes.push(b'\n');
    let deadline = Instant::now() + WRITE_TIME;
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        out.set_write_timeout(Some(left))?;
        match out.write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Run one request for `peer`.
fn handle(req: Request, peer: &Peer, role: Role, shared: &Shared) -> Response {
    let call = req.call;
    let method = call.method();
    if call.role() > role {
        shared.ctx.log(&[
            ("event", "refused".into()),
            ("control", method.into()),
            ("uid", peer.uid.to_string()),
            ("gid", peer.gid.to_string()),
            ("pid", peer.pid.to_string()),
            ("detail", "the caller's role does not allow it".into()),
        ]);
        return Response::failed(
            req.id,
            &Error::Denied(format!(
                "{method} is not for uid {}'s role ({}); it needs group {:?}",
                peer.uid,
                match role {
                    Role::Read => "read",
                    Role::Vpn => "vpn",
                    Role::Admin => "admin",
                },
                if call.role() == Role::Vpn {
                    &shared.config.vpn_group
                } else {
                    &shared.config.admin_group
                }
            )),
        );
    }
    let result = if call.role() >= Role::Vpn {
        let _one = shared.changes.lock().unwrap_or_else(|e| e.into_inner());
        let result = run(call.clone(), peer, role, shared);
        let mut fields = vec![
            ("event", "control".to_string()),
            ("method", method.to_string()),
            ("uid", peer.uid.to_string()),
            ("gid", peer.gid.to_string()),
            ("pid", peer.pid.to_string()),
            (
                "result",
                match &result {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.kind().to_string(),
                },
            ),
        ];
        if let Some(force) = forced(&call) {
            fields.push(("force", force.to_string()));
        }
        if let Err(e) = &result {
            fields.push(("detail", e.to_string()));
        }
        shared.ctx.log(&fields);
        result
    } else {
        run(call, peer, role, shared)
    };
    match result {
        Ok(v) => Response::ok(req.id, v),
        Err(e) => Response::failed(req.id, &e),
    }
}

/// Whether a change asked for `force` (logged with it).
fn forced(call: &Call) -> Option<bool> {
    match call {
        Call::Apply(p) => Some(p.requester.force),
        Call::Ban(p) => Some(p.requester.force),
        Call::BlacklistAdd(p) | Call::BlacklistDel(p) | Call::Trust(p) | Call::Untrust(p) => {
            Some(p.requester.force)
        }
        Call::ZoneAdd(p) | Call::ZoneDel(p) => Some(p.requester.force),
        _ => None,
    }
}

fn backend(name: Option<&str>) -> Result<BackendName> {
    match name {
        None | Some("") => Ok(BackendName::current()),
        Some(n) => n.parse(),
    }
}

fn to_value(v: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Usage(format!("cannot encode the answer: {e}")))
}

/// The administrators a change must not cut off: the caller's client and the ones it names.
fn admins(r: &wire::Requester) -> Result<Vec<crate::safety::Admin>> {
    r.client
        .iter()
        .chain(&r.admins)
        .map(|a| {
            a.parse()
                .map_err(|e: String| Error::Usage(format!("admin: {e}")))
        })
        .collect()
}

/// Who did it, as the ban ledger records it.
fn by(peer: &Peer, r: Option<&wire::Requester>) -> String {
    match r.and_then(|r| r.client.as_deref()) {
        Some(c) => format!("uid {} via the control socket for {c}", peer.uid),
        None => format!("uid {} via the control socket", peer.uid),
    }
}

/// The Asterisk directory a policy sent through the socket may name: the daemon's policy's, or
/// the standard one. (Discovery reads files, following `#include`; a caller must not point it
/// elsewhere.)
fn allowed_discovery(shared: &Shared) -> String {
    daemon_policy(shared)
        .ok()
        .and_then(|l| l.discovery)
        .and_then(|d| d["dir"].as_str().map(str::to_string))
        .unwrap_or_else(|| "/etc/asterisk".into())
}

/// Load policy text sent by a caller, refusing a discovery directory other than the daemon's.
fn load_sent(text: &str, format: Option<&str>, shared: &Shared) -> Result<crate::Loaded> {
    use crate::policy::Format;
    let format = match format {
        None | Some("toml") => Format::Toml,
        Some("json") => Format::Json,
        Some(f) => return Err(Error::Usage(format!("format {f:?}: toml or json"))),
    };
    let name = "(control socket)";
    let parsed = match format {
        Format::Toml => pbxfw_core::Policy::from_toml(text),
        Format::Json => pbxfw_core::Policy::from_json(text),
    }
    .map_err(|e| Error::Parse {
        name: name.into(),
        message: e.to_string(),
    })?;
    if let Some(dir) = parsed.discover_dir() {
        let allowed = allowed_discovery(shared);
        if dir != allowed {
            return Err(Error::Usage(format!(
                "pbx.discover {dir:?}: a policy sent through the control socket may discover only {allowed:?}"
            )));
        }
    }
    // The daemon reads list files as root: a caller may name only those the daemon's own
    // policy names, never have any file on the host read (and its lines counted) for it.
    let lists: Vec<String> = parsed
        .blacklist_lists()
        .into_iter()
        .map(str::to_string)
        .collect();
    if !lists.is_empty() {
        let own: Vec<String> = daemon_policy(shared)
            .map(|l| l.lists.into_iter().map(|(p, _)| p).collect())
            .unwrap_or_default();
        if let Some(other) = lists.iter().find(|l| !own.contains(l)) {
            return Err(Error::Usage(format!(
                "blacklist.lists {other:?}: a policy sent through the control socket may name only the list files of the daemon's policy"
            )));
        }
    }
    crate::policy::load_policy(parsed, name)
}

fn daemon_policy(shared: &Shared) -> Result<crate::Loaded> {
    crate::policy::load(shared.config.policy.as_deref())
}

fn policy_file(shared: &Shared) -> Result<String> {
    crate::edit::file(shared.config.policy.as_deref())
}

/// The procedure a call names: the same one the command line runs.
fn run(call: Call, peer: &Peer, role: Role, shared: &Shared) -> Result<Value> {
    let now = shared.ctx.now();
    match call {
        Call::Version(_) => Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": wire::PROTOCOL,
            "role": role,
            "uid": peer.uid,
        })),
        Call::Status(p) => to_value(crate::status(backend(p.backend.as_deref())?, now)?),
        Call::Bans(p) => to_value(crate::bans::list(backend(p.backend.as_deref())?, now)?),
        Call::Explain(p) => {
            if p.live {
                to_value(crate::explain::live(
                    backend(p.backend.as_deref())?,
                    &p.packet,
                    now,
                )?)
            } else {
                to_value(crate::explain::explain(
                    &daemon_policy(shared)?.ruleset,
                    &p.packet,
                )?)
            }
        }
        Call::Show(p) => {
            let zone = p
                .zone
                .map(|z| {
                    z.parse::<pbxfw_core::Zone>().map_err(|()| {
                        Error::Usage(format!(
                            "{z:?} is not a zone: trusted, local, other, internet or reject"
                        ))
                    })
                })
                .transpose()?;
            to_value(crate::show::show(&daemon_policy(shared)?, zone))
        }
        Call::Zones(p) => {
            let zone = p.zone.as_deref().map(crate::edit::zone_named).transpose()?;
            to_value(crate::edit::zone_members(&daemon_policy(shared)?, zone))
        }
        Call::ZoneAdd(p) | Call::ZoneDel(p) if p.entries.is_empty() => {
            Err(Error::Usage("entries: at least one is needed".into()))
        }
        Call::ZoneAdd(ref p) | Call::ZoneDel(ref p) => {
            let zone = crate::edit::zone_named(&p.zone)?;
            let (file, req) = edit_request(
                &wire::EditParams {
                    entries: Vec::new(),
                    backend: p.backend.clone(),
                    requester: p.requester.clone(),
                },
                shared,
            )?;
            if matches!(call, Call::ZoneAdd(_)) {
                to_value(crate::edit::zone_add(&file, &req, zone, &p.entries, now)?)
            } else {
                to_value(crate::edit::zone_del(&file, &req, zone, &p.entries)?)
            }
        }
        Call::Discover(_) => {
            let dir = PathBuf::from(allowed_discovery(shared));
            let found = crate::policy::discover(&dir)?;
            Ok(crate::policy::discovery_json(&dir, &found))
        }
        Call::Check(p) => {
            let (diags, ok) = match load_sent(&p.policy, p.format.as_deref(), shared) {
                Ok(l) => (l.policy.warnings, true),
                Err(Error::Invalid { diagnostics, .. }) => (diagnostics.0, false),
                Err(e) => return Err(e),
            };
            let errors = diags
                .iter()
                .filter(|d| d.severity == pbxfw_core::Severity::Error)
                .count();
            Ok(json!({
                "ok": ok && errors == 0,
                "errors": errors,
                "warnings": diags.len() - errors,
                "diagnostics": diags,
            }))
        }
        Call::Apply(p) => {
            let loaded = load_sent(&p.policy, p.format.as_deref(), shared)?;
            let save_to = if p.save {
                let file = policy_file(shared)?;
                let wanted = crate::policy::Format::of_name(&file);
                let sent = match p.format.as_deref() {
                    Some("json") => crate::policy::Format::Json,
                    _ => crate::policy::Format::Toml,
                };
                if wanted != sent {
                    return Err(Error::Usage(format!(
                        "save: the daemon's policy file {file} is {}; send it in that format",
                        if wanted == crate::policy::Format::Json {
                            "JSON"
                        } else {
                            "TOML"
                        }
                    )));
                }
                Some(file)
            } else {
                None
            };
            // Asked for before the load: a confirmation that comes at once (from any front
            // end) finds it. An apply that fails leaves none behind.
            let on_confirm = match (&save_to, p.confirm) {
                (Some(file), Some(_)) => {
                    let path = super::save_on_confirm_path();
                    pbxfw_host::state::write(
                        &path,
                        "save-on-confirm",
                        &super::SaveOnConfirm {
                            fingerprint: loaded.ruleset.fingerprint(),
                            path: file.clone(),
                            text: p.policy.clone(),
                        },
                    )
                    .map_err(|e| Error::io(&path, e))?;
                    true
                }
                _ => false,
            };
            let applied = crate::apply(
                &loaded,
                &crate::ApplyRequest {
                    backend: backend(p.backend.as_deref())?,
                    counters: p.counters,
                    confirm: p.confirm,
                    admins: admins(&p.requester)?,
                    force: p.requester.force,
                    dns: Default::default(),
                },
            );
            let mut out = match applied {
                Ok(out) => out,
                Err(e) => {
                    if on_confirm {
                        super::forget_save_on_confirm();
                    }
                    return Err(e);
                }
            };
            if let (Some(file), None) = (save_to, p.confirm) {
                if let Err(e) = super::save_policy(&file, &p.policy) {
                    out.warnings
                        .push(format!("applied, but the policy file was not saved: {e}"));
                }
            }
            to_value(out)
        }
        Call::Confirm(_) => Ok(Value::String(crate::confirm()?)),
        Call::Rollback(p) => Ok(Value::String(crate::rollback(
            p.backend.as_deref().map(str::parse).transpose()?,
        )?)),
        Call::Ban(p) => {
            let prefix = crate::bans::parse_prefixes(std::slice::from_ref(&p.prefix))?[0];
            let loaded = daemon_policy(shared)?;
            let req = crate::bans::BanRequest {
                backend: backend(p.backend.as_deref())?,
                prefix,
                seconds: p.seconds,
                reason: p.reason.clone(),
                admins: admins(&p.requester)?,
                force: p.requester.force,
            };
            to_value(crate::bans::ban(
                &loaded.policy,
                &req,
                now,
                &by(peer, Some(&p.requester)),
            )?)
        }
        Call::Unban(p) => {
            let prefixes = crate::bans::parse_prefixes(&p.prefixes)?;
            to_value(crate::bans::unban(
                backend(p.backend.as_deref())?,
                &prefixes,
                now,
                &by(peer, None),
            )?)
        }
        Call::BlacklistAdd(p) | Call::BlacklistDel(p) | Call::Trust(p) | Call::Untrust(p)
            if p.entries.is_empty() =>
        {
            Err(Error::Usage("entries: at least one is needed".into()))
        }
        Call::BlacklistAdd(p) => {
            let (file, req) = edit_request(&p, shared)?;
            to_value(crate::edit::blacklist_add(&file, &req, &p.entries)?)
        }
        Call::BlacklistDel(p) => {
            let (file, req) = edit_request(&p, shared)?;
            to_value(crate::edit::blacklist_del(&file, &req, &p.entries)?)
        }
        Call::Trust(p) | Call::Untrust(p) if p.entries.len() != 1 => Err(Error::Usage(
            "entries: trust and untrust take exactly one address or network".into(),
        )),
        Call::Trust(p) => {
            let (file, req) = edit_request(&p, shared)?;
            to_value(crate::edit::trust(&file, &req, &p.entries[0], now)?)
        }
        Call::Untrust(p) => {
            let (file, req) = edit_request(&p, shared)?;
            to_value(crate::edit::untrust(&file, &req, &p.entries[0])?)
        }
        Call::VpnConnect(ref p) | Call::VpnDisconnect(ref p) => {
            let connect = matches!(call, Call::VpnConnect(_));
            let address: std::net::IpAddr = p.address.parse().map_err(|_| {
                Error::Usage(format!("address {:?} is not an IP address", p.address))
            })?;
            let policy = daemon_policy(shared)?;
            let user = policy
                .policy
                .users
                .iter()
                .find(|u| u.vpn.contains(&p.identity))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{:?} is not a VPN identity of any user (users.*.vpn)",
                        p.identity
                    ))
                })?;
            let seconds = p.seconds.unwrap_or(86_400);
            if !(60..=86_400).contains(&seconds) {
                return Err(Error::Usage(format!(
                    "seconds {seconds}: a VPN grant lasts 60 to 86400 seconds"
                )));
            }
            let events = shared.events.as_ref().ok_or_else(|| {
                Error::Unavailable("this control socket has no daemon behind it".into())
            })?;
            let event = if connect {
                pbxfw_core::SecurityEvent::Registered {
                    source: address,
                    account: user.name.clone(),
                    expires: seconds as u32,
                }
            } else {
                pbxfw_core::SecurityEvent::Unregistered {
                    source: address,
                    account: user.name.clone(),
                }
            };
            events
                .event(event)
                .map_err(|_| Error::Unavailable("the daemon has stopped".into()))?;
            Ok(json!({
                "user": user.name,
                "address": address,
                "connected": connect,
                "until": connect.then(|| now + seconds),
                "grants": user.services,
            }))
        }
        Call::AcmeOpen(p) => to_value(crate::acme::open(
            backend(p.backend.as_deref())?,
            p.seconds.unwrap_or(crate::acme::DEFAULT_SECONDS),
            now,
        )?),
        Call::AcmeClose(p) => to_value(crate::acme::close(backend(p.backend.as_deref())?, now)?),
        Call::AcmeStatus(p) => to_value(crate::acme::status(backend(p.backend.as_deref())?, now)?),
        Call::Disable(p) => {
            let b = backend(p.backend.as_deref())?;
            Ok(json!({"was_loaded": crate::disable(b)?, "backend": b.as_str()}))
        }
    }
}

fn edit_request(
    p: &wire::EditParams,
    shared: &Shared,
) -> Result<(String, crate::edit::EditRequest)> {
    Ok((
        policy_file(shared)?,
        crate::edit::EditRequest {
            backend: backend(p.backend.as_deref())?,
            admins: admins(&p.requester)?,
            force: p.requester.force,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            config: ControlConfig::new(None),
            read_gid: Some(64_101),
            admin_gid: Some(64_102),
            vpn_gid: Some(64_103),
            events: None,
            ctx: Context::system(),
            clients: Mutex::new(BTreeMap::new()),
            changes: Mutex::new(()),
            large: Default::default(),
            busy_logged: Mutex::new(None),
        }
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    /// A policy sent by a caller names no list file of its choosing: the daemon would read it
    /// as root and count its lines for the caller.
    #[test]
    fn a_sent_policy_names_only_the_daemons_list_files() {
        let s = shared();
        let text = "[blacklist]\nlists = [\"/etc/shadow\"]\n";
        let e = load_sent(text, None, &s).unwrap_err().to_string();
        assert!(e.contains("may name only the list files"), "{e}");
    }

    #[test]
    fn roles_follow_the_groups_and_root_may_do_everything() {
        let s = shared();
        assert_eq!(s.role(&peer(0, 0, &[])), Some(Role::Admin));
        assert_eq!(s.role(&peer(33, 64_101, &[64_102])), Some(Role::Admin));
        assert_eq!(s.role(&peer(33, 33, &[64_102])), Some(Role::Admin));
        assert_eq!(s.role(&peer(33, 33, &[64_101])), Some(Role::Read));
        assert_eq!(s.role(&peer(33, 64_101, &[64_103])), Some(Role::Vpn));
        // The VPN role may look and tell of VPN clients, nothing else.
        assert!(Role::Read < Role::Vpn && Role::Vpn < Role::Admin);
        assert_eq!(s.role(&peer(33, 33, &[5, 6])), None);
        // Without the groups on this host, only root.
        let mut s = shared();
        s.read_gid = None;
        s.admin_gid = None;
        assert_eq!(s.role(&peer(33, 64_101, &[64_102])), None);
        assert_eq!(s.role(&peer(0, 0, &[])), Some(Role::Admin));
    }

    #[test]
    fn one_user_cannot_take_every_place_and_root_keeps_some() {
        let s = shared();
        for _ in 0..MAX_PER_USER {
            s.admit(33).unwrap();
        }
        assert!(s.admit(33).unwrap_err().contains("connections open"));
        // Other users fill the rest but for root's reserve.
        let mut uid = 1000;
        while s.admit(uid).is_ok() {
            uid += 1;
        }
        let others: usize = s.clients.lock().unwrap().values().sum();
        assert_eq!(others, MAX_CLIENTS - ROOT_RESERVE);
        for _ in 0..ROOT_RESERVE {
            s.admit(0).unwrap();
        }
        assert!(s.admit(0).is_err());
        s.leave(33);
        s.admit(33).unwrap_err(); // the total is still full for users
        s.leave(0);
        s.admit(0).unwrap();
    }

    #[test]
    fn a_request_is_read_a_whole_line_at_a_time() {
        let s = shared();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = BufReader::new(a);
        b.write_all(b"{\"v\":1}\n{\"v\"").unwrap();
        assert!(matches!(read_request(&mut r, &s), Read::Line(l, None) if l == b"{\"v\":1}"));
        drop(b);
        assert!(matches!(read_request(&mut r, &s), Read::Closed));
    }

    #[test]
    fn large_requests_are_few_at_once() {
        let s = shared();
        let held: Vec<_> = (0..MAX_LARGE).map(|_| s.take_large().unwrap()).collect();
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = BufReader::new(a);
        let w = std::thread::spawn(move || {
            let _ = b.write_all(&vec![b'x'; LARGE + 10]);
        });
        assert!(matches!(read_request(&mut r, &s), Read::Busy));
        drop(r);
        w.join().unwrap();
        drop(held);
        assert_eq!(s.large.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
