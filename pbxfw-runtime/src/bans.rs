//! Bans as an administrator manages them (`pbxfw bans`, `pbxfw ban`, `pbxfw unban`, and
//! `pbxfw trust`, which lifts the bans of what it trusts): listed with their origin, reason and
//! times, made by hand for a while, and lifted for good.
//!
//! The kernel's sets are what is enforced, so every command changes them at once, whether the
//! daemon runs or not. What must outlive the command — a ban made by hand (so that it comes
//! back after a reboot) and an unban (so that the daemon's state machine forgets the ban and
//! the strikes behind it instead of putting the ban back at its next start) — goes into the
//! **ban ledger**, `$PBXFW_STATE_DIR/bans.json`: numbered entries, appended under a lock. The
//! daemon applies the entries it has not applied yet when it starts and whenever the file
//! changes, and keeps the number of the last one in its own state, so an entry is applied once
//! even across restarts (docs/responsive.md, "Managing bans").

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use pbxfw_core::{Action, Family, Prefix, SetRole};
use serde::{Deserialize, Serialize};

use crate::backends::BackendName;
use crate::error::{Error, Refusal, Result};

/// The longest ban by hand: ipset's largest timeout (2,147,483 s, 24 d 20 h), so that a ban
/// means the same on both backends. Longer is the blacklist's job.
pub const MAX_MANUAL_SECONDS: u64 = 2_147_483;

/// The longest reason kept with a ban by hand, in bytes.
pub const MAX_REASON: usize = 200;

/// Entries kept in the ledger at most: beyond, a ban by hand is refused (use the blacklist).
pub const MAX_ENTRIES: usize = 65_536;

/// Unbans are kept this long: any ban they lifted has ended by then (a state-machine ban lasts
/// at most 30 days, and its strikes are remembered as long).
const UNBAN_MEMORY: u64 = 31 * 86_400;

const KIND: &str = "bans";

/// The ban ledger's path.
pub fn ledger_path() -> PathBuf {
    pbxfw_host::dirs::state_dir().join("bans.json")
}

/// One entry of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its number (1, 2, …; never reused).
    pub seq: u64,
    /// Unix seconds at which it was made.
    pub at: u64,
    /// Who made it (`uid 0 from 192.0.2.10`, `trust 10.0.0.0/24`).
    pub by: String,
    /// What it does.
    #[serde(flatten)]
    pub op: Op,
}

/// What a ledger entry does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A ban by hand until `until`.
    Ban {
        /// The prefix.
        prefix: Prefix,
        /// Unix seconds.
        until: u64,
        /// Why, as the administrator said.
        reason: String,
    },
    /// Every ban overlapping `prefix` made before the entry is lifted, and the state machine
    /// forgives its strikes.
    Unban {
        /// The prefix.
        prefix: Prefix,
    },
}

/// The ban ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The number of the last entry ever made (entries may have been pruned since).
    pub last: u64,
    /// The entries, oldest first.
    pub entries: Vec<Entry>,
}

/// A ban by hand in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManualBan {
    /// The prefix.
    pub prefix: Prefix,
    /// Unix seconds at which it was made.
    pub since: u64,
    /// Unix seconds at which it ends.
    pub until: u64,
    /// Why.
    pub reason: String,
    /// Who made it.
    pub by: String,
}

impl Ledger {
    /// The ledger, empty when there is none yet.
    pub fn read() -> Result<Ledger> {
        Ok(pbxfw_host::state::read::<Ledger>(&ledger_path(), KIND)?.unwrap_or_default())
    }

    /// The entries after number `seq`.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.seq > seq)
    }

    /// The bans by hand in force at `now`: made, not yet ended, and not lifted by a later
    /// unban of an overlapping prefix.
    pub fn manual_bans(&self, now: u64) -> Vec<ManualBan> {
        let mut bans: BTreeMap<Prefix, ManualBan> = BTreeMap::new();
        for e in &self.entries {
            match &e.op {
                Op::Ban {
                    prefix,
                    until,
                    reason,
                } => {
                    bans.insert(
                        *prefix,
                        ManualBan {
                            prefix: *prefix,
                            since: e.at,
                            until: *until,
                            reason: reason.clone(),
                            by: e.by.clone(),
                        },
                    );
                }
                Op::Unban { prefix } => bans.retain(|p, _| !overlaps(p, prefix)),
            }
        }
        bans.into_values().filter(|b| b.until > now).collect()
    }

    /// The actions that put the bans by hand back into empty sets (after a reboot, or when
    /// the kernel's sets were created anew), except those of prefixes `protected` says the
    /// policy now protects (a host banned by hand that became a trunk since).
    pub fn replay_actions(&self, now: u64, protected: impl Fn(&Prefix) -> bool) -> Vec<Action> {
        self.manual_bans(now)
            .into_iter()
            .filter(|b| !protected(&b.prefix))
            .map(|b| Action::Ban {
                prefix: b.prefix,
                until: b.until,
                reason: format!("by hand: {}", b.reason),
            })
            .collect()
    }

    fn append(&mut self, at: u64, by: &str, op: Op) {
        self.last += 1;
        self.entries.push(Entry {
            seq: self.last,
            at,
            by: by.to_string(),
            op,
        });
    }

    /// Forget what can no longer matter: bans by hand that ended, and unbans older than any
    /// ban they could have lifted.
    fn prune(&mut self, now: u64) {
        self.entries.retain(|e| match &e.op {
            Op::Ban { until, .. } => *until > now,
            Op::Unban { .. } => e.at + UNBAN_MEMORY > now,
        });
    }
}

/// An element of a dynamic set as the kernel prints it, as the prefix it stands for: hash
/// sets keyed on a prefix (`ban6` holds /64s) print the masked address alone, which would
/// otherwise read as one host. `rs` is the loaded ruleset; without it, or for a set it does
/// not have, the text is read as written.
pub fn element_prefix(rs: Option<&pbxfw_core::Ruleset>, set: &str, text: &str) -> Option<Prefix> {
    let (p, _) = Prefix::parse_lenient(text).ok()?;
    let key_len = match rs.and_then(|rs| rs.sets.get(set)).map(|s| &s.kind) {
        Some(pbxfw_core::SetKind::Dynamic(d)) => d.key_len,
        _ => return Some(p),
    };
    if p.is_host() && key_len < p.prefix_len() {
        Prefix::new(p.addr(), key_len).ok()
    } else {
        Some(p)
    }
}

/// The key length of `role`'s set of `family` in `rs` (32 or 128 when it has none).
fn key_len(rs: &pbxfw_core::Ruleset, role: &SetRole, family: Family) -> u8 {
    match rs.sets.get(&role.set(family)).map(|s| &s.kind) {
        Some(pbxfw_core::SetKind::Dynamic(d)) => d.key_len,
        _ => family.bits(),
    }
}

/// Whether two prefixes of the same family overlap (one covers the other).
pub fn overlaps(a: &Prefix, b: &Prefix) -> bool {
    a.family() == b.family() && (a.covers(b) || b.covers(a))
}

/// Change the ledger under its lock (concurrent commands append one after the other).
fn with_ledger<T>(now: u64, f: impl FnOnce(&mut Ledger) -> Result<T>) -> Result<T> {
    let path = ledger_path();
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let lock_path = dir.join("bans.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    // Released when `lock` is closed, at the end of this function.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io(&lock_path, e.into()))?;
    let mut ledger = Ledger::read()?;
    ledger.prune(now);
    let out = f(&mut ledger)?;
    pbxfw_host::state::write(&path, KIND, &ledger).map_err(|e| Error::io(&path, e))?;
    Ok(out)
}

/// Who asks, for the ledger and the logs: the user, and the SSH client when there is one.
pub fn requester() -> String {
    let uid = rustix::process::getuid().as_raw();
    match std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
    {
        Some(client) => format!("uid {uid} from {client}"),
        None => format!("uid {uid}"),
    }
}

/// Where a ban comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The kernel's responsive tiers (`responsive.flood`, `responsive.daily`): the source sent
    /// too many signalling packets.
    KernelTier,
    /// The daemon's state machine, from security events.
    StateMachine,
    /// An administrator (`pbxfw ban`).
    Manual,
    /// In the kernel's ban set, with no record of who put it there (a state file lost, or
    /// another program).
    Unknown,
    /// The fleet: a decision of CrowdSec's Local API (docs/fleet.md).
    Fleet,
}

/// A ban in force, as `pbxfw bans` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The banned prefix.
    pub prefix: Prefix,
    /// Who banned it.
    pub origin: Origin,
    /// Why.
    pub reason: String,
    /// Unix seconds at which it began (unknown for the kernel's tiers: each packet from a
    /// banned source starts their timeout again).
    pub since: Option<u64>,
    /// `since` in ISO 8601.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_iso: Option<String>,
    /// Unix seconds at which it ends, as the kernel holds it.
    pub until: u64,
    /// `until` in ISO 8601.
    pub until_iso: String,
    /// Seconds left.
    pub expires_in: u64,
    /// The state machine's strikes against the source (each doubles its next ban).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strikes: Option<u8>,
    /// Who banned it by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The kernel set holding it.
    pub set: String,
}

/// What `pbxfw bans` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bans {
    /// The backend asked.
    pub backend: String,
    /// Whether pbxfw is loaded (no bans are enforced when it is not).
    pub loaded: bool,
    /// The bans in force, by prefix.
    pub bans: Vec<Ban>,
    /// Problems reading what the host keeps about them (the list is still right about the
    /// kernel; reasons may be missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Fleet decisions not enforced here, each with why (a trunk, a trusted network, a
    /// registered device, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleet_refused: Vec<crate::fleet::Shown>,
}

/// The daemon's machine as its state file (the default one) holds it, if it reads.
pub(crate) fn daemon_machine() -> Option<pbxfw_core::Machine> {
    let path = pbxfw_host::dirs::state_dir().join("responsive.json");
    let text = std::fs::read_to_string(path).ok()?;
    crate::daemon::parse_machine(&text)
}

/// The bans in force in `backend` at `now` (Unix seconds), with what is known of each.
pub fn list(backend: BackendName, now: u64) -> Result<Bans> {
    let kernel = backend.open();
    let status = kernel.status()?;
    let rs = if status.loaded {
        loaded_ruleset(kernel.as_ref()).ok()
    } else {
        None
    };
    let mut warnings = Vec::new();
    let ledger = Ledger::read().unwrap_or_else(|e| {
        warnings.push(e.to_string());
        Ledger::default()
    });
    let manual: BTreeMap<Prefix, ManualBan> = ledger
        .manual_bans(now)
        .into_iter()
        .map(|b| (b.prefix, b))
        .collect();
    let machine = daemon_machine();
    let records: BTreeMap<Prefix, pbxfw_core::BanRecord> = machine
        .as_ref()
        .map(|m| {
            m.ban_records(now)
                .into_iter()
                .map(|r| (r.prefix, r))
                .collect()
        })
        .unwrap_or_default();
    let fleet = crate::fleet::read_snapshot();
    let fleet_sets: Vec<String> = Family::BOTH
        .iter()
        .map(|f| pbxfw_core::names::fleet(*f))
        .collect();
    let fleet_decisions: BTreeMap<Prefix, &crate::fleet::Shown> = fleet
        .iter()
        .flat_map(|s| s.decisions.iter())
        .map(|d| (d.prefix, d))
        .collect();
    let mut bans = Vec::new();
    for set in status.sets.iter().filter(|s| fleet_sets.contains(&s.name)) {
        for el in &set.elements {
            let Ok((prefix, _)) = Prefix::parse_lenient(&el.element) else {
                continue;
            };
            let left = el.expires_in.unwrap_or(0);
            let until = now + left;
            let reason = match fleet_decisions.get(&prefix) {
                Some(d) => format!(
                    "fleet: {} (origin {})",
                    crate::fleet::lapi::clip(&d.scenario, 128),
                    crate::fleet::lapi::clip(&d.origin, 64)
                ),
                None => "fleet: a decision of the LAPI (not in the daemon's fleet state)".into(),
            };
            bans.push(Ban {
                prefix,
                origin: Origin::Fleet,
                reason,
                since: None,
                since_iso: None,
                until,
                until_iso: crate::human::iso8601(until),
                expires_in: left,
                strikes: None,
                by: None,
                set: set.name.clone(),
            });
        }
    }
    let fleet_refused: Vec<crate::fleet::Shown> = fleet
        .map(|s| {
            s.decisions
                .into_iter()
                .filter(|d| d.refused.is_some() && d.until > now)
                .collect()
        })
        .unwrap_or_default();
    let role_of = |name: &str| {
        Family::BOTH.iter().find_map(|f| {
            if SetRole::Ban.set(*f) == name {
                Some(SetRole::Ban)
            } else if SetRole::TierBan.set(*f) == name {
                Some(SetRole::TierBan)
            } else {
                None
            }
        })
    };
    for set in &status.sets {
        let Some(role) = role_of(&set.name) else {
            continue;
        };
        for el in &set.elements {
            let Some(prefix) = element_prefix(rs.as_ref(), &set.name, &el.element) else {
                continue;
            };
            let left = el.expires_in.unwrap_or(0);
            let until = now + left;
            let mut ban = Ban {
                prefix,
                origin: Origin::Unknown,
                reason: "in the kernel's ban set; no record of why".into(),
                since: None,
                since_iso: None,
                until,
                until_iso: crate::human::iso8601(until),
                expires_in: left,
                strikes: None,
                by: None,
                set: set.name.clone(),
            };
            if role == SetRole::TierBan {
                ban.origin = Origin::KernelTier;
                ban.reason =
                    "too many signalling packets (responsive.flood or responsive.daily)".into();
            } else if let Some(m) = manual.get(&prefix) {
                ban.origin = Origin::Manual;
                ban.reason = m.reason.clone();
                ban.since = Some(m.since);
                ban.by = Some(m.by.clone());
            } else if let (Some(r), Some(machine)) = (records.get(&prefix), &machine) {
                ban.origin = Origin::StateMachine;
                ban.reason = r.cause.describe(machine.config());
                ban.since = Some(r.since);
                ban.strikes = Some(r.strikes);
            }
            ban.since_iso = ban.since.map(crate::human::iso8601);
            bans.push(ban);
        }
    }
    bans.sort_by_key(|a| (a.prefix, a.origin));
    Ok(Bans {
        backend: status.backend,
        loaded: status.loaded,
        bans,
        warnings,
        fleet_refused,
    })
}

/// One kernel element an unban removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifted {
    /// The set (`ban4`, `tier_ban6`, `clamped4`, …).
    pub set: String,
    /// The element.
    pub element: Prefix,
}

/// What an unban did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbanned {
    /// The prefixes asked for.
    pub prefixes: Vec<Prefix>,
    /// The kernel elements removed (bans, tier bans, slow-lane entries overlapping them).
    pub lifted: Vec<Lifted>,
    /// Whether pbxfw is loaded (when not, only the ledger changed).
    pub loaded: bool,
}

/// The prefixes of `args` (addresses or CIDRs), or the error naming the first that is not one.
pub fn parse_prefixes(args: &[String]) -> Result<Vec<Prefix>> {
    args.iter()
        .map(|a| match Prefix::parse_lenient(a) {
            Ok((p, false)) => Ok(p),
            Ok((p, true)) => Err(Error::Usage(format!(
                "{a} has host bits set (the network is {p})"
            ))),
            Err(_) => Err(Error::Usage(format!("{a:?} is not an address or a CIDR"))),
        })
        .collect()
}

/// Lift every ban of `prefixes` in `backend` at `now`, for good: the kernel's elements
/// overlapping them go (the responsive layer's bans, the kernel tiers' bans, the slow lane),
/// bans by hand end, and the daemon's state machine forgives the sources and their strikes
/// (through the ledger, at once if it runs, else when it starts). Refused while an apply waits
/// for confirmation (its rollback would put the bans back).
pub fn unban(backend: BackendName, prefixes: &[Prefix], now: u64, by: &str) -> Result<Unbanned> {
    crate::safety::refuse_if_pending()?;
    lift(backend, prefixes, now, by)
}

/// [`unban`] without the pending check (for `trust`, which made it already).
pub(crate) fn lift(
    backend: BackendName,
    prefixes: &[Prefix],
    now: u64,
    by: &str,
) -> Result<Unbanned> {
    if prefixes.is_empty() {
        return Err(Error::Usage("nothing to unban".into()));
    }
    // The ledger first: if the kernel then fails, the daemon still forgives at its next
    // look, and the command can be run again.
    with_ledger(now, |l| {
        for p in prefixes {
            l.append(now, by, Op::Unban { prefix: *p });
        }
        Ok(())
    })?;
    let kernel = backend.open();
    let status = kernel.status()?;
    if !status.loaded {
        return Ok(Unbanned {
            prefixes: prefixes.to_vec(),
            lifted: Vec::new(),
            loaded: false,
        });
    }
    let rs = loaded_ruleset(kernel.as_ref())?;
    let roles = [SetRole::Ban, SetRole::TierBan, SetRole::Clamped];
    let mut lifted = Vec::new();
    for set in &status.sets {
        if !roles
            .iter()
            .any(|r| Family::BOTH.iter().any(|f| r.set(*f) == set.name))
        {
            continue;
        }
        let gone: Vec<pbxfw_core::Element> = set
            .elements
            .iter()
            .filter_map(|el| element_prefix(Some(&rs), &set.name, &el.element))
            .filter(|p| prefixes.iter().any(|q| overlaps(p, q)))
            .map(|prefix| pbxfw_core::Element {
                prefix,
                timeout: None,
            })
            .collect();
        if gone.is_empty() {
            continue;
        }
        kernel.update_set(&rs, &set.name, pbxfw_core::Op::Remove, &gone)?;
        lifted.extend(gone.into_iter().map(|e| Lifted {
            set: set.name.clone(),
            element: e.prefix,
        }));
    }
    Ok(Unbanned {
        prefixes: prefixes.to_vec(),
        lifted,
        loaded: true,
    })
}

/// The ruleset the kernel holds, as the last apply recorded it.
pub(crate) fn loaded_ruleset(kernel: &dyn pbxfw_core::Backend) -> Result<pbxfw_core::Ruleset> {
    let loaded = kernel.fingerprint()?;
    match crate::safety::applied_ruleset()? {
        Some(rs) if Some(rs.fingerprint()) == loaded => Ok(rs),
        _ => Err(Error::Usage(format!(
            "the kernel holds ruleset {}, which is not the last one pbxfw applied; apply the policy first",
            loaded.unwrap_or_default()
        ))),
    }
}

/// A ban by hand.
#[derive(Debug, Clone)]
pub struct BanRequest {
    /// The backend.
    pub backend: BackendName,
    /// What to ban.
    pub prefix: Prefix,
    /// For how long, in seconds (1 to [`MAX_MANUAL_SECONDS`]).
    pub seconds: u64,
    /// Why (at most [`MAX_REASON`] bytes, no control characters).
    pub reason: Option<String>,
    /// Administrators the ban must not cut off (`--admin`), besides `$SSH_CONNECTION` and
    /// `settings.admins`.
    pub admins: Vec<crate::safety::Admin>,
    /// Ban even an administrator's address.
    pub force: bool,
}

/// What a ban by hand did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Banned {
    /// The prefix.
    pub prefix: Prefix,
    /// Unix seconds at which it ends.
    pub until: u64,
    /// `until` in ISO 8601.
    pub until_iso: String,
    /// The reason recorded.
    pub reason: String,
    /// The kernel set it went into.
    pub set: String,
    /// The prefix was banned already for longer than asked: that ban stays.
    pub kept_longer: bool,
}

/// Ban `req.prefix` by hand until `now + req.seconds`, under `policy` (what it protects is
/// never banned; an administrator's address only with `force`). The ban goes into the
/// responsive layer's ban set with its timeout and into the ledger, which puts it back after
/// a reboot; `pbxfw unban` lifts it.
pub fn ban(
    policy: &pbxfw_core::ValidPolicy,
    req: &BanRequest,
    now: u64,
    by: &str,
) -> Result<Banned> {
    if req.seconds == 0 || req.seconds > MAX_MANUAL_SECONDS {
        return Err(Error::Usage(format!(
            "a ban by hand lasts 1 s to {} ({} s); for longer, use the blacklist",
            crate::human::duration(MAX_MANUAL_SECONDS),
            MAX_MANUAL_SECONDS
        )));
    }
    let reason = req
        .reason
        .clone()
        .unwrap_or_else(|| "banned by hand".into());
    if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "the reason must be at most {MAX_REASON} bytes without control characters"
        )));
    }
    crate::safety::refuse_if_pending()?;
    let kernel = req.backend.open();
    if kernel.fingerprint()?.is_none() {
        return Err(pbxfw_core::BackendError::NotLoaded.into());
    }
    let rs = loaded_ruleset(kernel.as_ref())?;
    // The ban set holds prefixes of one length (responsive.ipv4_prefix, ipv6_prefix: /32 and
    // /64 by default): an address stands for its prefix, which is what is checked and banned
    // (an IPv6 address bans its /64); a wider network is the blacklist's.
    let len = key_len(&rs, &SetRole::Ban, req.prefix.family());
    if req.prefix.prefix_len() < len {
        return Err(Error::Usage(format!(
            "{} is wider than the ban set's /{len} (responsive.ipv{}_prefix): ban its addresses one by one, or use the blacklist",
            req.prefix,
            if req.prefix.family() == Family::Ipv4 { 4 } else { 6 }
        )));
    }
    let p = Prefix::new(req.prefix.addr(), len).map_err(|e| Error::Usage(e.to_string()))?;
    if let Some(why) = protection(policy, &p) {
        return Err(Refusal::NeverBanned {
            prefix: p.to_string(),
            why,
        }
        .into());
    }
    if !req.force {
        let cut: Vec<String> = crate::safety::sessions(&req.admins, policy)
            .iter()
            .filter(|s| p.contains(&s.addr))
            .map(|s| {
                format!(
                    "{} {} to tcp/{} would be dropped by the ban of {p}",
                    s.from, s.addr, s.port
                )
            })
            .collect();
        if !cut.is_empty() {
            return Err(Refusal::Lockout { lines: cut }.into());
        }
    }
    if Ledger::read()?.entries.len() >= MAX_ENTRIES {
        return Err(Error::Usage(format!(
            "the ban ledger holds {MAX_ENTRIES} entries; use the blacklist for long lists"
        )));
    }
    let set = SetRole::Ban.set(p.family());
    // A ban already there that lasts longer stays as it is; a shorter one is replaced (the
    // kernel keeps an element's timeout when it is added again).
    let current = kernel
        .status()?
        .sets
        .iter()
        .filter(|s| s.name == set)
        .flat_map(|s| &s.elements)
        .find(|el| element_prefix(Some(&rs), &set, &el.element) == Some(p))
        .map(|el| now + el.expires_in.unwrap_or(0));
    let asked = now + req.seconds;
    let until = current.map_or(asked, |c| c.max(asked));
    if current.is_some_and(|c| c < asked) {
        let lift = Action::Unban { prefix: p };
        crate::actions::carry_out(kernel.as_ref(), &rs, &[lift], now).into_result()?;
    }
    if current.is_none_or(|c| c < asked) {
        let action = Action::Ban {
            prefix: p,
            until,
            reason: reason.clone(),
        };
        crate::actions::carry_out(kernel.as_ref(), &rs, &[action], now).into_result()?;
    }
    // In the ledger once the kernel holds it: a ban the kernel refused is never put back.
    with_ledger(now, |l| {
        l.append(
            now,
            by,
            Op::Ban {
                prefix: p,
                until,
                reason: reason.clone(),
            },
        );
        Ok(())
    })?;
    Ok(Banned {
        prefix: p,
        until,
        until_iso: crate::human::iso8601(until),
        reason,
        set,
        kept_longer: until > asked,
    })
}

/// Why `prefix` is never banned under `policy`, if it is not: what the state machine protects
/// (trunks, trusted networks, administrators, ignored sources, special addresses), the
/// addresses of those named by hostname as last resolved, and the sessions that applied the
/// loaded policy.
fn protection(policy: &pbxfw_core::ValidPolicy, prefix: &Prefix) -> Option<String> {
    let config = crate::daemon::machine_config(policy);
    let mut resolved = Vec::new();
    if let Ok(Some(snap)) =
        pbxfw_host::state::read::<pbxfw_core::DnsSnapshot>(&crate::names::state_path(), "dns")
    {
        let answers: Vec<(String, Vec<IpAddr>)> =
            pbxfw_core::DnsTracker::status_of(Default::default(), snap, 0)
                .into_iter()
                .map(|n| (n.name, n.addresses.into_iter().collect()))
                .collect();
        resolved.extend(crate::daemon::resolved_protection(policy, &answers));
    }
    pbxfw_core::never_banned(&config, &resolved, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::parse_lenient(s).unwrap().0
    }

    #[test]
    fn an_unban_ends_the_bans_by_hand_it_overlaps_and_no_later_one() {
        let mut l = Ledger::default();
        let ban = |prefix: &str, until| Op::Ban {
            prefix: p(prefix),
            until,
            reason: "r".into(),
        };
        l.append(100, "a", ban("192.0.2.1", 1000));
        l.append(100, "a", ban("198.51.100.0/24", 1000));
        l.append(100, "a", ban("2001:db8::/64", 50));
        l.append(
            200,
            "a",
            Op::Unban {
                prefix: p("192.0.2.0/24"),
            },
        );
        l.append(300, "a", ban("192.0.2.1", 2000));
        let bans = l.manual_bans(100);
        let got: Vec<(String, u64)> = bans
            .iter()
            .map(|b| (b.prefix.to_string(), b.until))
            .collect();
        assert_eq!(
            got,
            [
                ("192.0.2.1".to_string(), 2000),
                ("198.51.100.0/24".to_string(), 1000)
            ]
        );
        assert_eq!(l.after(4).count(), 1);
        // Pruning drops ended bans and old unbans, never the numbering.
        l.prune(200 + UNBAN_MEMORY);
        assert_eq!(l.entries.len(), 0);
        assert_eq!(l.last, 5);
    }

    #[test]
    fn prefixes_are_addresses_or_networks() {
        let ok = parse_prefixes(&["192.0.2.1".into(), "2001:db8::/64".into()]).unwrap();
        assert_eq!(ok.len(), 2);
        for bad in ["192.0.2.1/24", "pbx.example.com", "1.2.3"] {
            assert!(
                matches!(parse_prefixes(&[bad.into()]), Err(Error::Usage(_))),
                "{bad}"
            );
        }
    }
}
