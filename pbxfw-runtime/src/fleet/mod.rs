//! pbxfw in a fleet (docs/fleet.md): bans shared between PBXes through CrowdSec's Local API.
//!
//! Two threads of the daemon talk to the LAPI: the **puller** (the bouncer role) fetches the
//! decision stream — every decision at start and at each resync, the delta in between — and
//! hands what it read to the daemon's loop; the **pusher** (the machine role) sends this PBX's
//! bans as alerts, batched per second, and, when configured, its unbans. The loop owns the
//! [`Enforcer`]: the fleet's table, what the kernel's `fleet4`/`fleet6` sets hold, and the
//! guard that never enforces a decision against a protected source.

pub mod lapi;

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

/// The largest answer accepted from the LAPI for `max` decisions: about 140 bytes each in
/// the stream, so 1 KiB each leaves room for long scenarios, plus a megabyte.
fn max_body(max: u32) -> u64 {
    u64::from(max) * 1024 + (1 << 20)
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

/// Counters the threads keep, read by the metrics.
#[derive(Debug, Default)]
pub struct ThreadCounters {
    /// Pulls that failed.
    pub pull_errors: AtomicU64,
    /// Decisions pushed.
    pub pushed: AtomicU64,
    /// Pushes that failed (the bans stay queued).
    pub push_errors: AtomicU64,
    /// Bans dropped from a full push queue.
    pub push_dropped: AtomicU64,
    /// Decisions deleted at the LAPI by a propagated unban.
    pub unbans_sent: AtomicU64,
}

/// The fleet's threads, running.
pub struct Running {
    /// The configuration they run with.
    pub config: Fleet,
    stop: Arc<AtomicBool>,
    push: Option<SyncSender<Push>>,
    /// Their counters.
    pub counters: Arc<ThreadCounters>,
}

/// Most bans waiting to be pushed (a LAPI down for long under attack): the oldest go first.
const PUSH_QUEUE: usize = 50_000;

impl Running {
    /// Hand a ban or an unban to the pusher; never waits (a full channel drops it, counted).
    pub fn push(&self, p: Push) {
        if let Some(tx) = &self.push {
            if let Err(TrySendError::Full(_)) = tx.try_send(p) {
                self.counters.push_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether this PBX pushes its bans.
    pub fn pushes(&self) -> bool {
        self.push.is_some()
    }

    /// Stop the threads (they end at their next look, within a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the fleet's threads for `config`, reporting through `deliver`. The secrets are read
/// here, so a wrong mode or a missing file fails the start with its reason.
pub fn start(
    config: &Fleet,
    deliver: impl Fn(Report) -> bool + Send + Clone + 'static,
) -> Result<Running> {
    let lapi = Lapi::new(
        &config.url,
        config.ca_file.as_deref(),
        Duration::from_secs(u64::from(config.timeout_seconds)),
        max_body(config.max_decisions),
    )
    .map_err(|e| Error::Usage(e.to_string()))?;
    let key = match (&config.api_key_file, config.pull) {
        (Some(f), true) => Some(read_secret(f)?),
        _ => None,
    };
    let machine = match (&config.machine_id, &config.password_file, config.push) {
        (Some(id), Some(f), true) => Some((id.clone(), read_secret(f)?)),
        _ => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(ThreadCounters::default());
    if let Some(key) = key {
        let (lapi, stop, counters, deliver) = (
            lapi.clone(),
            stop.clone(),
            counters.clone(),
            deliver.clone(),
        );
        let cfg = config.clone();
        std::thread::Builder::new()
            .name("fleet-pull".into())
            .spawn(move || puller(&lapi, &key, &cfg, &stop, &counters, &deliver))
            .map_err(|e| Error::io("fleet-pull thread", e))?;
    }
    let push = match machine {
        Some((id, password)) => {
            let (tx, rx) = std::sync::mpsc::sync_channel(PUSH_QUEUE);
            let (stop, counters) = (stop.clone(), counters.clone());
            let cfg = config.clone();
            std::thread::Builder::new()
                .name("fleet-push".into())
                .spawn(move || pusher(&lapi, &id, &password, &cfg, &rx, &stop, &counters, &deliver))
                .map_err(|e| Error::io("fleet-push thread", e))?;
            Some(tx)
        }
        None => None,
    };
    Ok(Running {
        config: config.clone(),
        stop,
        push,
        counters,
    })
}

/// The addresses of the host of `url` (`http[s]://HOST[:PORT]/…`), looked up when it is a
/// name; `None` when it does not resolve now.
fn lapi_addrs(url: &str) -> Option<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once(']')?;
            (h, p.strip_prefix(':').unwrap_or("443"))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, "443"),
        },
    };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(vec![ip]);
    }
    let port: u16 = port.parse().ok()?;
    let mut v: Vec<std::net::IpAddr> = (host, port)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .collect();
    v.sort();
    v.dedup();
    Some(v)
}

/// Sleep `d` in steps, ending early when `stop` is set. Returns whether to go on.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    !stop.load(Ordering::Relaxed)
}

/// The bouncer: a full pull first and every `resync_seconds`, the delta every
/// `poll_seconds`. It never gives up: after a failure it waits (doubling up to a minute) and
/// its next pull is a full one, since the LAPI may have moved this key's cursor past a delta
/// whose answer was lost.
fn puller(
    lapi: &Lapi,
    key: &str,
    cfg: &Fleet,
    stop: &AtomicBool,
    counters: &ThreadCounters,
    deliver: &impl Fn(Report) -> bool,
) {
    let poll = Duration::from_secs(u64::from(cfg.poll_seconds));
    let resync = Duration::from_secs(u64::from(cfg.resync_seconds));
    let mut last_full: Option<Instant> = None;
    let mut failures: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let full = last_full.is_none_or(|t| t.elapsed() >= resync);
        let started = Instant::now();
        if full {
            if let Some(addrs) = lapi_addrs(&cfg.url) {
                deliver(Report::LapiAddrs(addrs));
            }
        }
        let got = lapi.stream(key, full).and_then(|body| {
            let pull =
                pbxfw_core::parse_stream(&body, cfg.max_decisions as usize).map_err(|e| {
                    LapiError::Answer {
                        url: format!("{}/v1/decisions/stream", cfg.url),
                        detail: e.to_string(),
                    }
                })?;
            Ok((pull, body.len()))
        });
        let wait = match got {
            Ok((pull, bytes)) => {
                if failures > 0 {
                    deliver(Report::Note {
                        error: false,
                        detail: format!(
                            "fleet: the LAPI answers again after {failures} failed pull(s)"
                        ),
                    });
                }
                failures = 0;
                if full {
                    last_full = Some(started);
                }
                let alive = deliver(Report::Pulled(Pulled {
                    pull,
                    full,
                    bytes,
                    took: started.elapsed(),
                }));
                if !alive {
                    return;
                }
                poll
            }
            Err(e) => {
                counters.pull_errors.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                last_full = None;
                // The first failure and then one in ten: a LAPI down for an hour is one line
                // a minute at most, not one per poll.
                if failures == 1 || failures % 10 == 0 {
                    let hint = match e.status() {
                        Some(403) => " (the API key is wrong: cscli bouncers add NAME)",
                        _ => "",
                    };
                    deliver(Report::Note {
                        error: true,
                        detail: format!("fleet pull failed ({failures} in a row): {e}{hint}"),
                    });
                }
                (poll * 2u32.saturating_pow(failures.min(6)))
                    .min(Duration::from_secs(60))
                    .max(poll)
            }
        };
        if !nap(
            wait.saturating_sub(started.elapsed().min(wait))
                .max(Duration::from_millis(200)),
            stop,
        ) {
            return;
        }
    }
}

/// The machine: bans are gathered for a second and sent as one request (an alert per
/// scenario, each carrying its decisions); the token is renewed before it expires and on any
/// 401 (a LAPI restart invalidates every token); a heartbeat every minute. Bans that could
/// not be sent stay queued (at most [`PUSH_QUEUE`]) and go with the next batch.
#[allow(clippy::too_many_arguments)]
fn pusher(
    lapi: &Lapi,
    machine: &str,
    password: &str,
    cfg: &Fleet,
    rx: &Receiver<Push>,
    stop: &AtomicBool,
    counters: &ThreadCounters,
    deliver: &impl Fn(Report) -> bool,
) {
    let mut token: Option<(Token, Instant)> = None;
    let mut bans: VecDeque<(Prefix, u64, String, u64)> = VecDeque::new();
    let mut unbans: VecDeque<Prefix> = VecDeque::new();
    let mut last_heartbeat = Instant::now();
    let mut failures: u32 = 0;
    let mut retry_at = Instant::now();
    let scenarios = [
        "pbxfw/attack_tool",
        "pbxfw/unknown_account",
        "pbxfw/wrong_password",
        "pbxfw/failed_auth",
        "pbxfw/foreign_accounts",
        "pbxfw/kernel_tier",
        "pbxfw/manual",
    ];
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(p) => {
                let mut take = |p: Push| match p {
                    Push::Ban {
                        prefix,
                        seconds,
                        scenario,
                    } => {
                        if bans.len() >= PUSH_QUEUE {
                            bans.pop_front();
                            counters.push_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        bans.push_back((prefix, seconds, scenario, unix_now()));
                    }
                    Push::Unban(p) => {
                        if unbans.len() < PUSH_QUEUE {
                            unbans.push_back(p);
                        }
                    }
                };
                take(p);
                // Gather what comes within the second.
                let until = Instant::now() + Duration::from_secs(1);
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    match rx.recv_timeout(left) {
                        Ok(p) => take(p),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let heartbeat_due = last_heartbeat.elapsed() >= Duration::from_secs(60);
        if (bans.is_empty() && unbans.is_empty() && !heartbeat_due) || Instant::now() < retry_at {
            continue;
        }
        let result = (|| -> std::result::Result<(), LapiError> {
            let mut attempt = 0;
            loop {
                attempt += 1;
                // Tokens last an hour: renewed after 50 minutes.
                if token
                    .as_ref()
                    .is_none_or(|(_, at)| at.elapsed() >= Duration::from_secs(50 * 60))
                {
                    token = Some((lapi.login(machine, password, &scenarios)?, Instant::now()));
                }
                let t = &token.as_ref().expect("logged in").0;
                let sent =
                    send_batch(lapi, t, cfg, &mut bans, &mut unbans, counters).and_then(|()| {
                        if heartbeat_due {
                            lapi.heartbeat(t)?;
                            last_heartbeat = Instant::now();
                        }
                        Ok(())
                    });
                match sent {
                    Err(e) if e.status() == Some(401) && attempt == 1 => token = None,
                    other => return other,
                }
            }
        })();
        match result {
            Ok(()) => {
                if failures > 0 {
                    deliver(Report::Note {
                        error: false,
                        detail: "fleet: pushing to the LAPI again".into(),
                    });
                }
                failures = 0;
            }
            Err(e) => {
                counters.push_errors.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                if e.status() == Some(401) {
                    token = None;
                }
                if failures == 1 || failures % 10 == 0 {
                    deliver(Report::Note {
                        error: true,
                        detail: format!(
                            "fleet push failed ({failures} in a row, {} ban(s) waiting): {e}",
                            bans.len()
                        ),
                    });
                }
                retry_at = Instant::now()
                    + Duration::from_secs(2u64.saturating_pow(failures.min(5)))
                        .min(Duration::from_secs(30));
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Most decisions in one `POST /v1/alerts`.
const MAX_PUSH_BATCH: usize = 1000;

/// Send what is queued: the bans as alerts, then the unbans. What was sent leaves the queues;
/// on an error the rest stays.
fn send_batch(
    lapi: &Lapi,
    token: &Token,
    cfg: &Fleet,
    bans: &mut VecDeque<(Prefix, u64, String, u64)>,
    unbans: &mut VecDeque<Prefix>,
    counters: &ThreadCounters,
) -> std::result::Result<(), LapiError> {
    while !bans.is_empty() {
        let n = bans.len().min(MAX_PUSH_BATCH);
        let batch: Vec<_> = bans.iter().take(n).cloned().collect();
        let body = alerts_json(&cfg.pbx, &batch);
        lapi.post_alerts(token, &body)?;
        bans.drain(..n);
        counters.pushed.fetch_add(n as u64, Ordering::Relaxed);
    }
    while let Some(p) = unbans.front() {
        let n = lapi.delete_decisions(token, p)?;
        counters.unbans_sent.fetch_add(n, Ordering::Relaxed);
        unbans.pop_front();
    }
    Ok(())
}

/// The alerts of `bans` (prefix, seconds, scenario, when): one per scenario, in decision mode
/// (pbxfw has decided: the LAPI stores the decisions as sent, origin `pbxfw`). Scopes are
/// `Ip` and `Range`, with those capitals: LAPIs before 1.6.4 store a scope as written and
/// their stream knows only these.
pub fn alerts_json(pbx: &str, bans: &[(Prefix, u64, String, u64)]) -> String {
    let mut by_scenario: BTreeMap<&str, Vec<&(Prefix, u64, String, u64)>> = BTreeMap::new();
    for b in bans {
        by_scenario.entry(b.2.as_str()).or_default().push(b);
    }
    let scope_value = |p: &Prefix| {
        if p.is_host() {
            ("Ip", p.addr().to_string())
        } else {
            ("Range", p.to_string())
        }
    };
    let alerts: Vec<serde_json::Value> = by_scenario
        .into_iter()
        .map(|(scenario, bans)| {
            let first = bans[0];
            let start = bans.iter().map(|b| b.3).min().unwrap_or(first.3);
            let stop = bans.iter().map(|b| b.3).max().unwrap_or(first.3);
            let (scope, value) = scope_value(&first.0);
            let mut source = serde_json::json!({"scope": scope, "value": value});
            source[if scope == "Ip" { "ip" } else { "range" }] = value.clone().into();
            let decisions: Vec<serde_json::Value> = bans
                .iter()
                .map(|(p, secs, _, _)| {
                    let (scope, value) = scope_value(p);
                    serde_json::json!({
                        "origin": "pbxfw",
                        "type": "ban",
                        "scope": scope,
                        "value": value,
                        "duration": format!("{}s", secs.max(&1)),
                        "scenario": scenario,
                    })
                })
                .collect();
            serde_json::json!({
                "scenario": scenario,
                "scenario_hash": "",
                "scenario_version": env!("CARGO_PKG_VERSION"),
                "message": format!("pbxfw on {pbx}: {} ban(s), {scenario}", bans.len()),
                "events_count": bans.len(),
                "start_at": crate::human::iso8601(start),
                "stop_at": crate::human::iso8601(stop),
                "capacity": 0,
                "leakspeed": "0s",
                "simulated": false,
                "remediation": true,
                "events": [],
                "meta": [
                    {"key": "service", "value": "sip"},
                    {"key": "pbx", "value": pbx},
                ],
                "source": source,
                "decisions": decisions,
            })
        })
        .collect();
    serde_json::Value::Array(alerts).to_string()
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
}

/// Read the daemon's fleet state (none when the daemon holds no fleet).
pub fn read_snapshot() -> Option<Snapshot> {
    pbxfw_host::state::read::<Snapshot>(&state_path(), STATE_KIND)
        .ok()
        .flatten()
}

/// What the daemon's loop knows of the fleet's decisions, and what it wrote to the kernel.
#[derive(Debug, Default)]
pub struct Enforcer {
    table: FleetTable,
    /// What the kernel's fleet sets hold: prefix → end.
    installed: HashMap<Prefix, u64>,
    /// Decisions an administrator lifted here (`pbxfw unban`): prefix → the end of the
    /// decision lifted. The same decision coming back in a pull stays lifted; a later one
    /// (a new ban somewhere in the fleet) is enforced.
    lifted: HashMap<Prefix, u64>,
    /// Refused decisions already reported.
    reported: std::collections::HashSet<Prefix>,
    /// The refusals of the last reconcile, with why (for the state file).
    last_refused: HashMap<Prefix, String>,
    /// The sets must be written whole (start, a resync, a failed edit, the sets made anew).
    replace: bool,
    /// A pull changed the table since the last reconcile.
    changed: bool,
    /// Statistics for metrics and status.
    pub stats: Stats,
}

/// What the enforcer counts.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Full pulls taken.
    pub full_pulls: u64,
    /// Delta pulls taken.
    pub delta_pulls: u64,
    /// Decisions read and skipped, by why.
    pub skipped: Skipped,
    /// Decisions enforced now.
    pub enforced: u64,
    /// Decisions refused now (protected sources).
    pub refused: u64,
    /// When the last pull was taken.
    pub last_pull: Option<u64>,
    /// How long it took (request and parsing), seconds.
    pub last_pull_seconds: f64,
    /// How long writing the kernel took the last time, seconds.
    pub last_kernel_seconds: f64,
    /// Kernel edits that failed.
    pub kernel_errors: u64,
    /// Elements added and removed by the last reconcile (0 when it changed nothing).
    pub last_written: usize,
}

/// Two ends closer than this are the same decision (a pull's durations are measured when the
/// LAPI answered, a few seconds apart from one pull to the next).
const SAME_END: u64 = 30;

impl Enforcer {
    /// A new enforcer; its first reconcile writes the sets whole.
    pub fn new() -> Enforcer {
        Enforcer {
            replace: true,
            ..Enforcer::default()
        }
    }

    /// Take a pull received at `now`.
    pub fn on_pull(&mut self, p: Pulled, now: u64) {
        let Pulled {
            mut pull,
            full,
            took,
            ..
        } = p;
        if full {
            self.stats.full_pulls += 1;
            // A full pull is the whole truth: the sets are written whole from it, which also
            // puts back what an expired or lost element left out.
            self.replace = true;
        } else {
            self.stats.delta_pulls += 1;
        }
        let s = &mut self.stats.skipped;
        s.not_ban += pull.skipped.not_ban;
        s.other_scope += pull.skipped.other_scope;
        s.bad_value += pull.skipped.bad_value;
        s.expired += pull.skipped.expired;
        s.over_limit += pull.skipped.over_limit;
        self.lifted.retain(|_, end| *end > now);
        if !self.lifted.is_empty() {
            pull.new.retain(|d| {
                self.lifted
                    .get(&d.prefix)
                    .is_none_or(|end| now + d.remaining > end + SAME_END)
            });
        }
        self.table.apply(&pull, full, now);
        self.stats.last_pull = Some(now);
        self.stats.last_pull_seconds = took.as_secs_f64();
        self.changed = true;
    }

    /// An administrator lifted `prefix` here at `now`: the fleet decisions overlapping it stop
    /// being enforced (until a later decision on them arrives).
    pub fn lift(&mut self, prefix: &Prefix, now: u64) {
        let hit: Vec<(Prefix, u64)> = self
            .table
            .entries()
            .into_iter()
            .filter(|(p, _)| crate::bans::overlaps(p, prefix))
            .map(|(p, e)| (p, e.expires))
            .collect();
        if hit.is_empty() {
            return;
        }
        let pull = Pull {
            deleted: hit.iter().map(|(p, _)| *p).collect(),
            ..Pull::default()
        };
        self.table.apply(&pull, false, now);
        self.lifted.extend(hit);
        self.changed = true;
    }

    /// The kernel's sets were created anew (an apply that made the table again): write them
    /// whole at the next reconcile.
    pub fn sets_lost(&mut self) {
        self.replace = true;
    }

    /// Whether the next reconcile has work (a pull came, the sets must be written whole).
    pub fn pending(&self) -> bool {
        self.changed || self.replace
    }

    /// Bring the kernel's fleet sets to the table at `now`, never enforcing a decision
    /// `guard` refuses. Returns the refused decisions not reported before, and the error of
    /// the kernel if it failed twice (then the next reconcile writes the sets whole).
    pub fn reconcile(
        &mut self,
        kernel: &dyn Backend,
        rs: &Ruleset,
        now: u64,
        guard: impl Fn(&Prefix) -> Option<String>,
    ) -> (Vec<pbxfw_core::Refused>, Option<String>) {
        if !Family::BOTH
            .iter()
            .all(|f| rs.sets.contains_key(&names::fleet(*f)))
        {
            return (Vec::new(), None);
        }
        self.table.expire(now);
        let (want, refused) = self.table.desired(now, guard);
        self.stats.enforced = want.len() as u64;
        self.stats.refused = refused.len() as u64;
        let new_refusals: Vec<pbxfw_core::Refused> = refused
            .iter()
            .filter(|r| !self.reported.contains(&r.prefix))
            .cloned()
            .collect();
        self.reported = refused.iter().map(|r| r.prefix).collect();
        self.last_refused = refused.iter().map(|r| (r.prefix, r.why.clone())).collect();
        let want: HashMap<Prefix, u64> = want.into_iter().collect();
        let started = Instant::now();
        let count = |edits: &[SetEdit]| {
            edits
                .iter()
                .map(|e| match e {
                    SetEdit::Add(_, v) | SetEdit::Remove(_, v) => v.len(),
                    SetEdit::Flush(_) => 0,
                })
                .sum::<usize>()
        };
        self.stats.last_written = 0;
        if !self.replace {
            let edits = self.delta_edits(&want, now);
            self.stats.last_written = count(&edits);
            if !edits.is_empty() && kernel.edit_sets(rs, &edits).is_err() {
                // An element expired meanwhile, or the sets changed under us: write them
                // whole instead.
                self.stats.kernel_errors += 1;
                self.replace = true;
            }
        }
        if self.replace {
            let edits = replace_edits(&want, now);
            self.stats.last_written = count(&edits);
            match kernel.edit_sets(rs, &edits) {
                Ok(()) => self.replace = false,
                Err(e) => {
                    self.stats.kernel_errors += 1;
                    self.stats.last_kernel_seconds = started.elapsed().as_secs_f64();
                    self.changed = false;
                    return (new_refusals, Some(e.to_string()));
                }
            }
        }
        self.installed = want;
        self.stats.last_kernel_seconds = started.elapsed().as_secs_f64();
        self.changed = false;
        (new_refusals, None)
    }

    /// The edits from what the kernel holds to `want`: removals of what goes or changes end,
    /// then additions. An element that ends within two seconds is left to expire (removing it
    /// could race the kernel's own expiry and refuse the transaction).
    fn delta_edits(&self, want: &HashMap<Prefix, u64>, now: u64) -> Vec<SetEdit> {
        let mut remove: BTreeMap<Family, Vec<Element>> = BTreeMap::new();
        let mut add: BTreeMap<Family, Vec<Element>> = BTreeMap::new();
        for (p, end) in &self.installed {
            let keep = want.get(p).is_some_and(|w| w.abs_diff(*end) <= SAME_END);
            if !keep && *end > now + 2 {
                remove
                    .entry(p.family())
                    .or_default()
                    .push(element(*p, *end, now));
            }
        }
        for (p, end) in want {
            let have = self
                .installed
                .get(p)
                .is_some_and(|h| h.abs_diff(*end) <= SAME_END && *h > now + 2);
            if !have {
                add.entry(p.family())
                    .or_default()
                    .push(element(*p, *end, now));
            }
        }
        let mut edits = Vec::new();
        for (f, els) in remove {
            edits.push(SetEdit::Remove(names::fleet(f), els));
        }
        for (f, els) in add {
            edits.push(SetEdit::Add(names::fleet(f), els));
        }
        edits
    }

    /// What the state file shows: every decision held, with refusals, in prefix order.
    pub fn snapshot(&self, url: &str, now: u64) -> Snapshot {
        let refusals = &self.last_refused;
        let decisions = self
            .table
            .entries()
            .into_iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(p, e)| Shown {
                prefix: p,
                until: e.expires,
                origin: e.origin.to_string(),
                scenario: e.scenario.to_string(),
                refused: refusals.get(&p).map(|w| w.to_string()),
            })
            .collect();
        Snapshot {
            at: now,
            url: url.to_string(),
            last_pull: self.stats.last_pull,
            enforced: self.installed.len(),
            decisions,
        }
    }

    /// Decisions held.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Flush both sets and write `want` in one transaction.
fn replace_edits(want: &HashMap<Prefix, u64>, now: u64) -> Vec<SetEdit> {
    let mut edits: Vec<SetEdit> = Family::BOTH
        .iter()
        .map(|f| SetEdit::Flush(names::fleet(*f)))
        .collect();
    for f in Family::BOTH {
        let els: Vec<Element> = want
            .iter()
            .filter(|(p, _)| p.family() == f)
            .map(|(p, end)| element(*p, *end, now))
            .collect();
        if !els.is_empty() {
            edits.push(SetEdit::Add(names::fleet(f), els));
        }
    }
    edits
}

fn element(prefix: Prefix, end: u64, now: u64) -> Element {
    Element {
        prefix,
        timeout: Some(Duration::from_secs(
            end.saturating_sub(now).clamp(1, pbxfw_core::MAX_FLEET_SECS),
        )),
    }
}

/// The guard of the fleet: never a decision against a source the machine protects (trunks,
/// trusted networks, administrators, ignored sources, registered devices), this host's own
/// addresses, or the LAPI's.
pub fn guard<'a>(
    machine: &'a pbxfw_core::Machine,
    own: &'a [std::net::IpAddr],
    lapi: &'a [std::net::IpAddr],
    now: u64,
) -> impl Fn(&Prefix) -> Option<String> + 'a {
    move |p: &Prefix| {
        if let Some(a) = own.iter().find(|a| p.contains(a)) {
            return Some(format!("an address of this host ({a})"));
        }
        if let Some(a) = lapi.iter().find(|a| p.contains(a)) {
            return Some(format!("the fleet's LAPI ({a})"));
        }
        machine.refuses_outside_ban(p, now)
    }
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
            enforcer: Enforcer::new(),
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
                    self.enforcer.changed = true;
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
            self.own_read = Some(Instant::now());
        }
        if self.enforcer.pending() {
            let (refused, error) = {
                let g = guard(machine, &self.own, &self.lapi, now);
                self.enforcer.reconcile(kernel, rs, now, g)
            };
            for f in refused {
                ctx.log(&[
                    ("event", "fleet-refused".into()),
                    ("prefix", f.prefix.to_string()),
                    ("origin", f.origin.to_string()),
                    ("scenario", lapi::clip(&f.scenario, 128)),
                    ("why", f.why),
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
            let snap = self.enforcer.snapshot(&url, now);
            if let Err(e) = pbxfw_host::state::write(&state_path(), STATE_KIND, &snap) {
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
    use pbxfw_core::{FleetDecision, Policy};
    use pbxfw_testkit::memory::Memory;

    fn policy() -> pbxfw_core::ValidPolicy {
        Policy::from_toml(
            "[interfaces]\neth0 = \"internet\"\n[[pbx.trunks]]\nname = \"p\"\nprotocol = \"pjsip\"\nhost = \"203.0.113.10\"\n\
             [fleet]\nurl = \"http://192.0.2.1:8080\"\napi_key_file = \"/k\"\n",
        )
        .unwrap()
        .validate()
        .unwrap()
    }

    fn decision(v: &str, secs: u64) -> FleetDecision {
        FleetDecision {
            id: 1,
            prefix: v.parse().unwrap(),
            remaining: secs,
            origin: "crowdsec".into(),
            scenario: "crowdsecurity/ssh-bf".into(),
        }
    }

    fn pulled(new: Vec<FleetDecision>, deleted: &[&str], full: bool) -> Pulled {
        Pulled {
            pull: Pull {
                new,
                deleted: deleted.iter().map(|d| d.parse().unwrap()).collect(),
                ..Pull::default()
            },
            full,
            bytes: 0,
            took: Duration::ZERO,
        }
    }

    fn installed(e: &Enforcer) -> Vec<String> {
        let mut v: Vec<Prefix> = e.installed.keys().copied().collect();
        v.sort();
        v.iter().map(|p| p.to_string()).collect()
    }

    fn shown(m: &Memory, set: &str) -> Vec<String> {
        m.elements(set).iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_kernel_follows_full_and_delta_pulls_and_never_holds_a_protected_source() {
        let p = policy();
        let rs = pbxfw_core::compile(&p);
        let kernel = Memory::new();
        pbxfw_core::apply(&kernel, &rs, &Default::default()).unwrap();
        let machine = pbxfw_core::Machine::new(pbxfw_core::MachineConfig::from_policy(&p));
        let own: Vec<std::net::IpAddr> = vec!["192.0.2.50".parse().unwrap()];
        let lapi: Vec<std::net::IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        let mut e = Enforcer::new();
        e.on_pull(
            pulled(
                vec![
                    decision("198.51.100.0/24", 3600),
                    decision("198.51.100.7", 7200),
                    decision("203.0.113.0/24", 3600),
                    decision("192.0.2.50", 3600),
                    decision("192.0.2.0/28", 3600),
                    decision("2001:db8::/64", 3600),
                ],
                &[],
                true,
            ),
            1000,
        );
        let (refused, err) = e.reconcile(&kernel, &rs, 1000, guard(&machine, &own, &lapi, 1000));
        assert_eq!(err, None);
        let why: Vec<String> = refused
            .iter()
            .map(|r| format!("{} {}", r.prefix, r.why))
            .collect();
        assert_eq!(
            why,
            [
                "192.0.2.0/28 the fleet's LAPI (192.0.2.1)",
                "192.0.2.50 an address of this host (192.0.2.50)",
                "203.0.113.0/24 trunk p"
            ]
        );
        assert_eq!(shown(&kernel, "fleet4"), ["198.51.100.0/24"]);
        assert_eq!(shown(&kernel, "fleet6"), ["2001:db8::/64"]);
        // A delta: a deletion and an addition, as one set of edits; refusals are reported once.
        e.on_pull(
            pulled(vec![decision("192.0.2.99", 60)], &["2001:db8::/64"], false),
            1010,
        );
        let (refused, err) = e.reconcile(&kernel, &rs, 1010, guard(&machine, &own, &lapi, 1010));
        assert_eq!((refused.len(), err), (0, None));
        assert_eq!(shown(&kernel, "fleet4"), ["192.0.2.99", "198.51.100.0/24"]);
        assert!(shown(&kernel, "fleet6").is_empty());
        // The covering range ends (the kernel drops it on its own; the memory kernel has no
        // clock): the address it covered, which outlives it, is written.
        e.on_pull(pulled(Vec::new(), &[], false), 4700);
        e.reconcile(&kernel, &rs, 4700, guard(&machine, &own, &lapi, 4700));
        assert_eq!(installed(&e), ["198.51.100.7"]);
        assert!(shown(&kernel, "fleet4").contains(&"198.51.100.7".to_string()));
        // An administrator lifts it here: it stays lifted when the same decision comes back,
        // a later one is enforced.
        e.lift(&"198.51.100.7".parse().unwrap(), 4701);
        e.reconcile(&kernel, &rs, 4701, guard(&machine, &own, &lapi, 4701));
        assert!(!shown(&kernel, "fleet4").contains(&"198.51.100.7".to_string()));
        e.on_pull(
            pulled(vec![decision("198.51.100.7", 8200 - 4702)], &[], true),
            4702,
        );
        e.reconcile(&kernel, &rs, 4702, guard(&machine, &own, &lapi, 4702));
        assert!(
            shown(&kernel, "fleet4").is_empty(),
            "a full pull writes the sets whole"
        );
        e.on_pull(
            pulled(vec![decision("198.51.100.7", 86_400)], &[], false),
            4703,
        );
        e.reconcile(&kernel, &rs, 4703, guard(&machine, &own, &lapi, 4703));
        assert_eq!(shown(&kernel, "fleet4"), ["198.51.100.7"]);
    }

    #[test]
    fn a_failed_delta_falls_back_to_writing_the_sets_whole() {
        let p = policy();
        let rs = pbxfw_core::compile(&p);
        let kernel = Memory::new();
        pbxfw_core::apply(&kernel, &rs, &Default::default()).unwrap();
        let machine = pbxfw_core::Machine::new(pbxfw_core::MachineConfig::from_policy(&p));
        let mut e = Enforcer::new();
        e.on_pull(pulled(vec![decision("198.51.100.9", 3600)], &[], true), 0);
        e.reconcile(&kernel, &rs, 0, guard(&machine, &[], &[], 0));
        // The element goes behind the enforcer's back (it expired early, someone removed it):
        // removing it fails in the memory kernel as in nft, and the sets are rewritten.
        kernel
            .edit_sets(&rs, &[SetEdit::Flush("fleet4".into())])
            .unwrap();
        e.on_pull(
            pulled(
                vec![decision("198.51.100.10", 3600)],
                &["198.51.100.9"],
                false,
            ),
            5,
        );
        let (_, err) = e.reconcile(&kernel, &rs, 5, guard(&machine, &[], &[], 5));
        assert_eq!(err, None);
        assert_eq!(shown(&kernel, "fleet4"), ["198.51.100.10"]);
        assert_eq!(e.stats.kernel_errors, 1);
    }

    #[test]
    fn alerts_carry_the_scopes_the_stream_knows() {
        let bans = vec![
            (
                "192.0.2.7".parse().unwrap(),
                3600,
                "pbxfw/attack_tool".to_string(),
                100,
            ),
            (
                "2001:db8:1::/64".parse().unwrap(),
                60,
                "pbxfw/attack_tool".to_string(),
                101,
            ),
            (
                "192.0.2.8".parse().unwrap(),
                0,
                "pbxfw/kernel_tier".to_string(),
                102,
            ),
        ];
        let v: serde_json::Value = serde_json::from_str(&alerts_json("pbx-a", &bans)).unwrap();
        let alerts = v.as_array().unwrap();
        assert_eq!(alerts.len(), 2, "one alert per scenario");
        let a = &alerts[0];
        assert_eq!(a["scenario"], "pbxfw/attack_tool");
        assert_eq!(
            a["source"],
            serde_json::json!({"scope": "Ip", "value": "192.0.2.7", "ip": "192.0.2.7"})
        );
        let d = a["decisions"].as_array().unwrap();
        assert_eq!(d[0]["scope"], "Ip");
        assert_eq!(d[0]["value"], "192.0.2.7");
        assert_eq!(d[0]["duration"], "3600s");
        assert_eq!(d[0]["origin"], "pbxfw");
        assert_eq!(d[1]["scope"], "Range");
        assert_eq!(d[1]["value"], "2001:db8:1::/64");
        assert_eq!(alerts[1]["decisions"][0]["duration"], "1s");
        assert_eq!(
            a["meta"][1],
            serde_json::json!({"key": "pbx", "value": "pbx-a"})
        );
        for k in [
            "scenario_hash",
            "scenario_version",
            "message",
            "events_count",
            "start_at",
            "stop_at",
            "capacity",
            "leakspeed",
            "simulated",
            "events",
        ] {
            assert!(a.get(k).is_some(), "the LAPI requires {k}");
        }
    }

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

    #[test]
    fn the_lapi_host_is_read_from_the_url() {
        assert_eq!(
            lapi_addrs("http://192.0.2.1:8080"),
            Some(vec!["192.0.2.1".parse().unwrap()])
        );
        assert_eq!(
            lapi_addrs("https://[2001:db8::1]:8443/x"),
            Some(vec!["2001:db8::1".parse().unwrap()])
        );
        assert_eq!(
            lapi_addrs("https://192.0.2.2"),
            Some(vec!["192.0.2.2".parse().unwrap()])
        );
        assert_eq!(lapi_addrs("nonsense"), None);
    }
}
