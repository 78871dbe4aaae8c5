//! The responsive state machine (docs/responsive.md): security events in, set-element actions out.
//!
//! It is sans-I/O: [`Machine::on_event`] takes an event and the current time (Unix seconds,
//! supplied by the caller) and returns [`Action`]s, which backends turn into set-element
//! updates with timeouts ([`Action::set_changes`]). The kernel tiers already stop fast floods;
//! the machine decides what only the PBX can see: which account failed and why, who succeeded,
//! which device registered.
//!
//! # Transition table
//!
//! Per source *prefix* (the address masked to `ipv4_prefix`/`ipv6_prefix`):
//!
//! | event | source is | effect |
//! |---|---|---|
//! | auth failed, attack-tool User-Agent | anyone but protected/registered | **ban** at once |
//! | auth failed, unknown account | unprotected | count; `unknown_account.failures` within its window → **ban** |
//! | auth failed, wrong password | unprotected | count; `wrong_password_clamp` within window → **clamp** (slow lane), `wrong_password_ban` within window → **ban** |
//! | auth failed, ACL / other | unprotected | count; `other.failures` within window → **ban** |
//! | any failure reaching a ban threshold | protected (trusted network, trunk) or with active registrations | **report identity** (account, User-Agent), never ban |
//! | scanner seen | as "auth failed": attack-tool UA → ban; otherwise counts as unknown account |
//! | auth succeeded | clamped | **unclamp** |
//! | registered (expiry *e*) | anyone not banned | **allow registered** until now + *e* with the user's grants; unclamp |
//! | unregistered | registered | **revoke** |
//! | tick | — | forget expired bans, clamps, registrations, idle sources |
//!
//! Ban durations escalate for repeat offenders: the *n*-th ban of a source lasts
//! `ban_seconds × 2^(n−1)`, capped at `max_ban_seconds`. Strikes are forgotten after
//! `strike_memory_seconds` without a ban.
//!
//! Memory is bounded: on reaching `max_sources` tracked prefixes, the idlest sources with no
//! active ban, clamp or registration are forgotten first; active bans are never evicted. A
//! tracked source costs under 128 bytes (measured in `benches/`). The default bound, 57,344,
//! is 7/8 of 65,536: the table's size where that holds.
//!
//! [`Machine`] serialises (serde) with a version; a snapshot restores it exactly.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compile::names;
use crate::events::{is_attack_tool, AuthFailure, SecurityEvent};
use crate::model::ValidPolicy;
use crate::net::{Family, Prefix};
use crate::Source;

/// A failure threshold: `failures` within `window` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threshold {
    /// Failures.
    pub failures: u32,
    /// Window in seconds.
    pub window: u32,
}

/// How the machine decides. Built from a policy by [`Config::from_policy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Enumeration: a few unknown-account failures within minutes ban.
    pub unknown_account: Threshold,
    /// Wrong password on a real account: clamp first (a misconfigured phone)...
    pub wrong_password_clamp: Threshold,
    /// ...ban later.
    pub wrong_password_ban: Threshold,
    /// ACL and other failures.
    pub other: Threshold,
    /// How long a clamp lasts after the last failure.
    pub clamp_seconds: u32,
    /// First ban duration.
    pub ban_seconds: u32,
    /// Longest ban.
    pub max_ban_seconds: u32,
    /// How long strikes (for escalation) are remembered after the last ban.
    pub strike_memory_seconds: u32,
    /// Sources are tracked per prefix of this length (IPv4).
    pub ipv4_prefix: u8,
    /// Sources are tracked per prefix of this length (IPv6).
    pub ipv6_prefix: u8,
    /// Sources never banned or clamped: trusted networks, trunks, administrators (by address;
    /// those named by hostname are given as they resolve, [`Machine::set_resolved`]).
    pub protected: Vec<Protected>,
    /// Longest registration honoured, in seconds: an event's `expires` is capped to it (a
    /// forged or broken `expires` of 2^32 − 1 s would otherwise register a source for a
    /// century). The device refreshes long before.
    #[serde(default = "default_max_registration")]
    pub max_registration_seconds: u32,
    /// Per-user grants: account → services.
    pub user_grants: BTreeMap<String, Vec<String>>,
    /// Most sources tracked at once.
    pub max_sources: usize,
}

impl Config {
    /// The defaults of docs/responsive.md with the policy's protected sources, grants and prefixes.
    pub fn from_policy(policy: &ValidPolicy) -> Config {
        let r = &policy.responsive;
        let mut protected: Vec<Protected> = protected_sources(policy)
            .into_iter()
            .filter_map(|(source, why)| match source {
                Source::Net(p) => Some(Protected { prefix: *p, why }),
                Source::Host(_) => None,
            })
            .collect();
        protected.extend(policy.settings.admins.iter().map(|a| Protected {
            prefix: Prefix::host(a.addr),
            why: format!("administrator {}", a.addr),
        }));
        protected.extend(r.ignore.iter().map(|p| Protected {
            prefix: *p,
            why: format!("ignored source {p} (responsive.ignore)"),
        }));
        protected.sort();
        protected.dedup_by(|a, b| a.prefix == b.prefix);
        Config {
            unknown_account: Threshold {
                failures: 3,
                window: 300,
            },
            wrong_password_clamp: Threshold {
                failures: 5,
                window: 600,
            },
            wrong_password_ban: Threshold {
                failures: 40,
                window: 3600,
            },
            other: Threshold {
                failures: 10,
                window: 600,
            },
            clamp_seconds: 600,
            ban_seconds: r.ban_seconds,
            max_ban_seconds: 30 * 86400,
            strike_memory_seconds: 30 * 86400,
            ipv4_prefix: r.ipv4_prefix,
            ipv6_prefix: r.ipv6_prefix,
            protected,
            max_registration_seconds: default_max_registration(),
            user_grants: policy
                .users
                .iter()
                .map(|u| (u.name.clone(), u.services.iter().cloned().collect()))
                .collect(),
            // 7/8 of 65,536: the source table then never outgrows 65,536 buckets, which keeps
            // a tracked source under 128 bytes (benches/src/bin/memory-per-source.rs).
            max_sources: 57_344,
        }
    }
}

/// A source the machine never bans or clamps, and why (named in the report it gives instead).
///
/// Older snapshots list protected sources as bare prefixes; they still restore.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Protected {
    /// The source.
    pub prefix: Prefix,
    /// Why it is protected: `trunk provider-a`, `trusted network 10.0.0.0/8`, ….
    pub why: String,
}

impl<'de> Deserialize<'de> for Protected {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Protected, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Full { prefix: Prefix, why: String },
            Bare(Prefix),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Full { prefix, why } => Protected { prefix, why },
            Repr::Bare(prefix) => Protected {
                why: format!("protected source {prefix}"),
                prefix,
            },
        })
    }
}

/// One day: registrations are refreshed well within it (phones ask for an hour or less).
fn default_max_registration() -> u32 {
    86_400
}

/// The policy's sources that are never banned, in whatever form they are given (addresses,
/// networks, hostnames), with why: trunks and trusted networks. (Administrators are addresses
/// only.) The daemon resolves the hostnames among them and gives their addresses to
/// [`Machine::set_resolved`].
pub fn protected_sources(policy: &ValidPolicy) -> Vec<(&Source, String)> {
    let trusted = policy
        .networks
        .iter()
        .filter(|n| n.zone == crate::Zone::Trusted)
        .map(|n| (&n.source, format!("trusted network {}", n.source)));
    let trunks = policy
        .pbx
        .trunks
        .iter()
        .map(|t| (&t.host, format!("trunk {}", t.name)));
    trusted.chain(trunks).collect()
}

/// Why `prefix` must never be banned, if it must not (what `pbxfw ban` asks before a ban by
/// hand): it overlaps a protected source of `config` or `resolved` (trunks, trusted networks,
/// administrators, ignored sources; the addresses of those named by hostname), or its address
/// is not a remote unicast source.
pub fn never_banned(config: &Config, resolved: &[Protected], prefix: &Prefix) -> Option<String> {
    if let Some(why) = special(&prefix.addr()) {
        return Some(why.to_string());
    }
    let overlaps =
        |p: &Prefix| p.family() == prefix.family() && (p.covers(prefix) || prefix.covers(p));
    config
        .protected
        .iter()
        .chain(resolved)
        .find(|p| overlaps(&p.prefix))
        .map(|p| p.why.clone())
}

/// Why an address is never acted on whatever the policy says: it is not a remote unicast
/// source (loopback, link-local — which also carries IPv6 neighbour discovery —, unspecified,
/// multicast, broadcast). An event naming one is forged or broken.
pub(crate) fn special_addr(addr: &IpAddr) -> Option<&'static str> {
    special(addr)
}

fn special(addr: &IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V4(a) if a.is_link_local() => Some("link-local"),
        IpAddr::V4(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
            Some("not a unicast address")
        }
        IpAddr::V6(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V6(a) if a.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(a) if a.is_unspecified() || a.is_multicast() => Some("not a unicast address"),
        IpAddr::V6(a) => a.to_ipv4_mapped().and_then(|v4| special(&IpAddr::V4(v4))),
        IpAddr::V4(_) => None,
    }
}

/// What the backends are asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Drop everything from `prefix` until `until`.
    Ban {
        /// The source prefix.
        prefix: Prefix,
        /// Unix seconds.
        until: u64,
        /// Why, for logs.
        reason: String,
    },
    /// Lift a ban early (not emitted for bans that simply expire: their set elements time out).
    Unban {
        /// The source prefix.
        prefix: Prefix,
    },
    /// Put `prefix`'s signalling in the slow lane until `until`.
    Clamp {
        /// The source prefix.
        prefix: Prefix,
        /// Unix seconds.
        until: u64,
        /// Why.
        reason: String,
    },
    /// Take `prefix` out of the slow lane.
    Unclamp {
        /// The source prefix.
        prefix: Prefix,
    },
    /// Accept `addr`'s signalling and `grants` until `until` (a registration).
    AllowRegistered {
        /// The device's address.
        addr: IpAddr,
        /// Unix seconds.
        until: u64,
        /// The account that registered.
        account: String,
        /// The user's own grants (docs/policy.md, "Users and grants"), on top of signalling and the registered grants.
        grants: Vec<String>,
    },
    /// Withdraw a registration's acceptance and grants.
    Revoke {
        /// The device's address.
        addr: IpAddr,
        /// The account.
        account: String,
        /// The grants to withdraw.
        grants: Vec<String>,
    },
    /// A bad identity behind a source that must not be banned (NAT with registered phones,
    /// trusted network, trunk): the host can act on the account or device.
    ReportIdentity {
        /// The source.
        source: IpAddr,
        /// The account that keeps failing.
        account: Option<String>,
        /// Its User-Agent.
        user_agent: Option<String>,
        /// What happened.
        reason: String,
    },
}

/// Which dynamic set of the ruleset an action changes, by its role. The set's name in the
/// kernel (`ban4`, `grant_voicemail6`, …) is the backend's business: [`SetRole::set`] gives it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "role", content = "service", rename_all = "snake_case")]
pub enum SetRole {
    /// Sources the responsive layer banned.
    Ban,
    /// Sources the kernel's own tiers banned (an unban clears them too).
    TierBan,
    /// Sources in the slow lane.
    Clamped,
    /// Registered devices: their signalling is accepted.
    Registered,
    /// Registered devices granted a service of their user's (`users.*.grants`).
    Grant(String),
}

impl SetRole {
    /// The name of this role's set for `family` in the compiled ruleset.
    pub fn set(&self, family: Family) -> String {
        match self {
            SetRole::Ban => names::ban(family),
            SetRole::TierBan => names::tier_ban(family),
            SetRole::Clamped => names::clamped(family),
            SetRole::Registered => names::registered(family),
            SetRole::Grant(service) => names::grant(service, family),
        }
    }
}

/// One set-element change an action asks of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetChange {
    /// The set, by role.
    #[serde(flatten)]
    pub role: SetRole,
    /// Add (true) or remove.
    pub add: bool,
    /// The element.
    pub prefix: Prefix,
    /// Seconds until it expires (adds only).
    pub timeout: Option<u64>,
}

impl SetChange {
    /// The kernel set this change is made to (its role's set of the element's family).
    pub fn set(&self) -> String {
        self.role.set(self.prefix.family())
    }
}

impl Action {
    /// The set-element changes that carry out this action at time `now`.
    pub fn set_changes(&self, now: u64) -> Vec<SetChange> {
        let ch = |role: SetRole, add: bool, prefix: Prefix, until: Option<u64>| SetChange {
            role,
            add,
            prefix,
            timeout: until.map(|u| {
                u.saturating_sub(now)
                    .clamp(1, crate::backend::MAX_TIMEOUT_SECS)
            }),
        };
        match self {
            Action::Ban { prefix, until, .. } => {
                vec![ch(SetRole::Ban, true, *prefix, Some(*until))]
            }
            Action::Unban { prefix } => vec![
                ch(SetRole::Ban, false, *prefix, None),
                ch(SetRole::TierBan, false, *prefix, None),
            ],
            Action::Clamp { prefix, until, .. } => {
                vec![ch(SetRole::Clamped, true, *prefix, Some(*until))]
            }
            Action::Unclamp { prefix } => vec![ch(SetRole::Clamped, false, *prefix, None)],
            Action::AllowRegistered {
                addr,
                until,
                grants,
                ..
            } => {
                let host = Prefix::host(*addr);
                let mut v = vec![ch(SetRole::Registered, true, host, Some(*until))];
                v.extend(
                    grants
                        .iter()
                        .map(|g| ch(SetRole::Grant(g.clone()), true, host, Some(*until))),
                );
                v
            }
            Action::Revoke { addr, grants, .. } => {
                let host = Prefix::host(*addr);
                let mut v = vec![ch(SetRole::Registered, false, host, None)];
                v.extend(
                    grants
                        .iter()
                        .map(|g| ch(SetRole::Grant(g.clone()), false, host, None)),
                );
                v
            }
            Action::ReportIdentity { .. } => Vec::new(),
        }
    }
}

/// The most recent failures of one source, with their kind: exactly what "N failures within W
/// seconds" needs, kept small (only failures inside the longest window, at most
/// [`MAX_RECENT`]).
///
/// One failure is held inline, more in a boxed slice (16 bytes, no spare capacity): a tracked
/// source must stay under 128 bytes, and most sources of a distributed attack fail once, so
/// they cost no allocation at all (allocating was a tenth of a replay). No failures is the
/// empty slice, which allocates nothing either. Serialised as the list of failures.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recent {
    One((u32, Kind)),
    Many(Box<[(u32, Kind)]>),
}

impl Default for Recent {
    fn default() -> Recent {
        Recent::Many(Box::default())
    }
}

impl Serialize for Recent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Recent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Recent, D::Error> {
        Ok(Recent::from_vec(Vec::deserialize(d)?))
    }
}

/// Failure categories with thresholds of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Unknown,
    Wrong,
    Other,
    /// From a source with registered devices, for an account none of them registered: what a
    /// cracker behind (or as) a registered phone's address does.
    Foreign,
}

/// Most failures remembered per source (the largest threshold must not exceed it).
pub const MAX_RECENT: usize = 64;

impl Recent {
    fn as_slice(&self) -> &[(u32, Kind)] {
        match self {
            Recent::One(f) => std::slice::from_ref(f),
            Recent::Many(v) => v,
        }
    }

    fn from_vec(v: Vec<(u32, Kind)>) -> Recent {
        match v[..] {
            [f] => Recent::One(f),
            // Exactly sized (`into_boxed_slice` shrinks only when there is spare room).
            _ => Recent::Many(v.into_boxed_slice()),
        }
    }

    /// Record a failure at `now`, forgetting those older than `longest` seconds.
    fn push(&mut self, kind: Kind, now: u32, longest: u32) {
        let live = |(t, _): &(u32, Kind)| t.saturating_add(longest) > now;
        let v = match std::mem::take(self) {
            Recent::One(f) if live(&f) => vec![f, (now, kind)],
            Recent::One(_) => {
                *self = Recent::One((now, kind));
                return;
            }
            // In place: the slice becomes a vector (no copy), loses what is outside the
            // window and the oldest beyond the cap, and grows by exactly one (one `realloc`).
            Recent::Many(b) => {
                let mut v = b.into_vec();
                v.retain(live);
                if v.is_empty() {
                    *self = Recent::One((now, kind));
                    return;
                }
                if v.len() >= MAX_RECENT {
                    v.drain(..v.len() + 1 - MAX_RECENT);
                }
                if v.capacity() > v.len() + 1 {
                    v.shrink_to(v.len() + 1);
                } else {
                    v.reserve_exact(1);
                }
                v.push((now, kind));
                v
            }
        };
        *self = Recent::from_vec(v);
    }

    /// Whether `t.failures` of `kind` happened within the last `t.window` seconds.
    fn reached(&self, kind: Kind, t: Threshold, now: u32) -> bool {
        t.failures > 0 && self.count(kind, t.window, now) >= t.failures as usize
    }

    /// How many failures of `kind` happened within the last `window` seconds.
    fn count(&self, kind: Kind, window: u32, now: u32) -> usize {
        self.as_slice()
            .iter()
            .filter(|(at, k)| *k == kind && at.saturating_add(window) > now)
            .count()
    }

    fn forget(&mut self, kind: Kind) {
        if self.as_slice().iter().any(|(_, k)| *k == kind) {
            *self = Recent::from_vec(
                self.as_slice()
                    .iter()
                    .copied()
                    .filter(|(_, k)| *k != kind)
                    .collect(),
            );
        }
    }
}

/// What the machine knows about one source prefix. Times are Unix seconds as `u32` (enough
/// until 2106) to keep a tracked source small.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SourceState {
    recent: Recent,
    strikes: u8,
    banned_until: u32,
    clamped_until: u32,
    last_ban: u32,
    last_seen: u32,
    /// The latest expiry of a registration from inside this prefix: while it lies ahead, the
    /// prefix hosts a registered device (a NAT, an IPv6 /64) and is never banned.
    registered_until: u32,
    /// What made the machine ban it last (one byte: it fits in the padding).
    #[serde(default, skip_serializing_if = "BanCause::is_unknown")]
    cause: BanCause,
    /// The expiry last written to the kernel's clamp element (the machine's own
    /// `clamped_until` moves with every failure; the element is renewed once it has less than
    /// half its time left).
    #[serde(default, skip_serializing_if = "no_clamp_written")]
    clamp_written: u32,
}

fn no_clamp_written(v: &u32) -> bool {
    *v == 0
}

/// What made the state machine ban a source, kept with the ban for `pbxfw bans`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanCause {
    /// Not recorded (a ban from a snapshot older than causes).
    #[default]
    Unknown,
    /// A User-Agent of a known attack tool.
    AttackTool,
    /// Failures for accounts that do not exist.
    UnknownAccount,
    /// Wrong passwords for an account that exists.
    WrongPassword,
    /// Other failed authentications (ACL, no matching endpoint, …).
    FailedAuth,
    /// Found in the kernel's ban set and taken over (a daemon killed before it saved its state).
    Adopted,
    /// Wrong passwords for accounts its registered devices never used, from a source with
    /// registered devices (docs/responsive.md, "Known devices").
    ForeignAccounts,
}

impl BanCause {
    fn is_unknown(&self) -> bool {
        *self == BanCause::Unknown
    }

    /// The cause's short name, as it is serialised (`attack_tool`, `wrong_password`, …).
    pub fn name(&self) -> &'static str {
        match self {
            BanCause::Unknown => "unknown",
            BanCause::AttackTool => "attack_tool",
            BanCause::UnknownAccount => "unknown_account",
            BanCause::WrongPassword => "wrong_password",
            BanCause::FailedAuth => "failed_auth",
            BanCause::Adopted => "adopted",
            BanCause::ForeignAccounts => "foreign_accounts",
        }
    }

    /// The cause in words, with the threshold of `config` it crossed.
    pub fn describe(&self, config: &Config) -> String {
        match self {
            BanCause::Unknown => "banned by the state machine".into(),
            BanCause::AttackTool => "User-Agent of an attack tool".into(),
            BanCause::UnknownAccount => format!(
                "{} unknown-account failures in {}",
                config.unknown_account.failures,
                crate::human::duration(u64::from(config.unknown_account.window))
            ),
            BanCause::WrongPassword => format!(
                "{} wrong-password failures in {}",
                config.wrong_password_ban.failures,
                crate::human::duration(u64::from(config.wrong_password_ban.window))
            ),
            BanCause::FailedAuth => format!(
                "{} failed authentications in {}",
                config.other.failures,
                crate::human::duration(u64::from(config.other.window))
            ),
            BanCause::Adopted => "found in the kernel's ban set (cause not recorded)".into(),
            BanCause::ForeignAccounts => format!(
                "{} wrong passwords in {} for accounts its registered devices never used",
                FOREIGN_BAN.failures,
                crate::human::duration(u64::from(FOREIGN_BAN.window))
            ),
        }
    }
}

/// A ban the state machine holds ([`Machine::ban_records`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BanRecord {
    /// The banned prefix.
    pub prefix: Prefix,
    /// Unix seconds at which it began.
    pub since: u64,
    /// Unix seconds at which it ends.
    pub until: u64,
    /// Why.
    pub cause: BanCause,
    /// Bans of this source remembered (each doubles the next one's length).
    pub strikes: u8,
}

fn secs(now: u64) -> u32 {
    now.min(u32::MAX as u64) as u32
}

impl SourceState {
    /// Ban this source at `now` for `cause`: strikes older than the memory are forgotten, the
    /// n-th ban lasts `ban_seconds × 2^(n−1)` (at most `max_ban_seconds`), and the counted
    /// failures are spent. Returns when it ends (Unix seconds).
    fn strike(&mut self, cfg: &Thresholds, cause: BanCause, now: u64) -> u64 {
        let n = secs(now);
        if self.last_ban.saturating_add(cfg.strike_memory_seconds) <= n {
            self.strikes = 0;
        }
        self.strikes = self.strikes.saturating_add(1);
        let secs_banned = (cfg.ban_seconds as u64)
            .saturating_mul(1u64 << (self.strikes - 1).min(20))
            .min(cfg.max_ban_seconds as u64);
        self.banned_until = secs(now + secs_banned);
        self.last_ban = n;
        self.cause = cause;
        self.recent = Recent::default();
        now + secs_banned
    }

    fn active(&self, now: u32) -> bool {
        self.banned_until > now || self.clamped_until > now || self.registered_until > now
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Registration {
    until: u64,
    grants: Vec<String>,
}

/// The state machine. Serialise it to persist it; [`Machine::restore`] checks the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    version: u32,
    config: Config,
    /// A hash map, not a tree: with tens of thousands of sources, a lookup is one cache miss
    /// instead of five. The hasher is [`KeyHasher`], fixed (deterministic, no randomness from
    /// the OS in the core); outputs that list sources are sorted.
    #[serde(with = "sources_serde")]
    sources: Sources,
    /// Address → the accounts registered from it (sorted by account), each with its expiry
    /// and grants. A hash map, not a tree ordered by (address, account): a registration is
    /// looked up by its address, and the tree's search was a third of handling one. Outputs
    /// that list registrations are sorted.
    #[serde(with = "registrations_serde")]
    registrations: Registrations,
    /// The table size at which the next eviction pass runs, when active sources left too
    /// little room for the bound to trigger it usefully (0: at the bound). See `bound`.
    #[serde(default, skip_serializing_if = "is_zero")]
    evict_at: usize,
    /// The current addresses of protected sources named by hostname ([`Machine::set_resolved`]);
    /// not part of a snapshot: the resolver keeps its own answers and gives them again.
    #[serde(skip)]
    resolved: Vec<Protected>,
    /// Known devices: address → the accounts that registered from it within
    /// [`KNOWN_SECONDS`], each with when it last did, and since when it has been failing with
    /// a wrong password (docs/responsive.md, "Known devices").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    known: BTreeMap<IpAddr, Vec<KnownAccount>>,
    /// Sources with registered devices that lost their bypass of the kernel tiers (too many
    /// failures for accounts none of their devices registered), until when.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    distrusted: BTreeMap<Prefix, u32>,
    /// Wrong passwords from sources with registered devices, when (their own count: mixed
    /// with other failures, they could be pushed out of [`MAX_RECENT`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    foreign: BTreeMap<Prefix, Vec<u32>>,
    /// When each (source, account) was last reported.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "reported_serde"
    )]
    reported: BTreeMap<(Prefix, String), u32>,
}

/// `reported` as a list (JSON map keys must be strings).
mod reported_serde {
    use super::*;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<(Prefix, String), u32>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|((p, a), t)| (p, a, t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(Prefix, String), u32>, D::Error> {
        let v: Vec<(Prefix, String, u32)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(p, a, t)| ((p, a), t)).collect())
    }
}

/// How long a device is remembered as known after its last registration (30 days).
pub const KNOWN_SECONDS: u32 = 30 * 86_400;
/// Accounts remembered per address (a desk phone has one or two; the oldest goes first).
pub const KNOWN_PER_ADDRESS: usize = 8;
/// Addresses remembered (the oldest goes first).
pub const MAX_KNOWN: usize = 16_384;
/// Wrong passwords from a source with registered devices that end its bypass of the kernel
/// tiers: 20 within a minute, a pace no phone retrying keeps (one every 30 to 60 s) and any
/// cracker does.
pub const FOREIGN_BYPASS: Threshold = Threshold {
    failures: 20,
    window: 60,
};
/// Wrong passwords for accounts none of its devices registered that ban a source with
/// registered devices: 60 within 10 minutes (a misconfigured phone retrying every 30 s makes
/// 20).
pub const FOREIGN_BAN: Threshold = Threshold {
    failures: 60,
    window: 600,
};
/// A report about one source and account is given at most once in this many seconds.
pub const REPORT_EVERY: u32 = 600;
/// Reports remembered (the oldest goes first).
const MAX_REPORTED: usize = 4096;
/// How long a source that lost its bypass stays without it.
pub const DISTRUST_SECONDS: u32 = 3600;

/// An account a device registered from an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KnownAccount {
    account: String,
    /// When it last registered from there.
    registered: u32,
    /// Since when it has been failing with a wrong password (0: it is not).
    #[serde(default, skip_serializing_if = "no_clamp_written")]
    wrong_since: u32,
}

/// A known device failing with a wrong password ([`Machine::wrong_passwords`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrongPassword {
    /// The account.
    pub account: String,
    /// The device's address.
    pub source: IpAddr,
    /// Unix seconds of the first failure of this episode.
    pub since: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

type Sources = HashMap<Key, SourceState, BuildHasherDefault<KeyHasher>>;

type Registrations = HashMap<IpAddr, Vec<(String, Registration)>, BuildHasherDefault<KeyHasher>>;

/// The hash of a [`Key`]: two multiply-xorshift rounds over its two words (a keyed SipHash
/// was a tenth of a replay). Not keyed, like the SipHash with fixed keys it replaces (the core
/// takes no randomness from the OS): a source chooses only its own address, and colliding
/// keys cost lookups, never correctness.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        // murmur3's finaliser: every input bit reaches the low bits (the bucket) and the top
        // seven (the tag).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A tracked source prefix, compactly: 16 bytes with 8-byte alignment (a `Prefix` is 32, being
/// 16-aligned), which keeps a tracked source under 128 bytes. IPv4 keys have `hi == u64::MAX`
/// (no IPv6 source address starts with `ffff:`, that is multicast); the prefix length is the
/// configured one for the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    hi: u64,
    lo: u64,
}

impl Key {
    fn of(p: &Prefix) -> Key {
        match p.family() {
            Family::Ipv4 => Key {
                hi: u64::MAX,
                lo: p.start() as u64,
            },
            Family::Ipv6 => Key {
                hi: (p.start() >> 64) as u64,
                lo: p.start() as u64,
            },
        }
    }

    fn prefix(self, cfg: &Config) -> Prefix {
        let (addr, len) = if self.hi == u64::MAX {
            (
                IpAddr::from(std::net::Ipv4Addr::from(self.lo as u32)),
                cfg.ipv4_prefix,
            )
        } else {
            let v = ((self.hi as u128) << 64) | self.lo as u128;
            (IpAddr::from(std::net::Ipv6Addr::from(v)), cfg.ipv6_prefix)
        };
        Prefix::new(addr, len).unwrap_or_else(|_| Prefix::host(addr))
    }
}

/// Sources are written as a list of `[prefix, state]` pairs (JSON maps need string keys).
mod sources_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Key, SourceState, Sources};
    use crate::net::Prefix;

    pub fn serialize<S: Serializer>(m: &Sources, s: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<(&Key, &SourceState)> = m.iter().collect();
        sorted.sort_by_key(|(k, _)| **k);
        let v: Vec<(Prefix, &SourceState)> = sorted
            .into_iter()
            .map(|(k, st)| {
                let v = if k.hi == u64::MAX {
                    std::net::IpAddr::from(std::net::Ipv4Addr::from(k.lo as u32))
                } else {
                    std::net::IpAddr::from(std::net::Ipv6Addr::from(
                        ((k.hi as u128) << 64) | k.lo as u128,
                    ))
                };
                (Prefix::host(v), st)
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sources, D::Error> {
        let v = Vec::<(Prefix, SourceState)>::deserialize(d)?;
        Ok(v.into_iter().map(|(p, st)| (Key::of(&p), st)).collect())
    }
}

/// JSON maps need string keys: registrations are written as a list, sorted by address and
/// account.
mod registrations_serde {
    use std::net::IpAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Registration, Registrations};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        addr: IpAddr,
        account: String,
        #[serde(flatten)]
        registration: Registration,
    }

    pub fn serialize<S: Serializer>(m: &Registrations, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<Entry> = super::sorted_registrations(m)
            .into_iter()
            .map(|(addr, account, r)| Entry {
                addr: *addr,
                account: account.clone(),
                registration: r.clone(),
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Registrations, D::Error> {
        let mut m = Registrations::default();
        for e in Vec::<Entry>::deserialize(d)? {
            super::register(&mut m, e.addr, &e.account, e.registration);
        }
        Ok(m)
    }
}

/// Every registration, sorted by address and account.
fn sorted_registrations(m: &Registrations) -> Vec<(&IpAddr, &String, &Registration)> {
    let mut v: Vec<_> = m
        .iter()
        .flat_map(|(addr, accounts)| accounts.iter().map(move |(a, r)| (addr, a, r)))
        .collect();
    v.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    v
}

/// Record (or renew) `account`'s registration from `addr`, keeping the accounts sorted.
fn register(m: &mut Registrations, addr: IpAddr, account: &str, r: Registration) {
    let accounts = m.entry(addr).or_default();
    match accounts.binary_search_by(|(a, _)| a.as_str().cmp(account)) {
        Ok(i) => accounts[i].1 = r,
        Err(i) => accounts.insert(i, (account.to_owned(), r)),
    }
}

/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// Not a snapshot.
    #[error("not a pbxfw responsive snapshot: {0}")]
    Format(String),
    /// Written by a newer pbxfw.
    #[error("snapshot version {found} is newer than this pbxfw understands ({supported})")]
    Version {
        /// In the file.
        found: u32,
        /// Known here.
        supported: u32,
    },
}

impl Machine {
    /// A machine with no state.
    pub fn new(config: Config) -> Machine {
        // Sized for the bound at once (up to 65,536 buckets): growing it step by step meant
        // rehashing every source several times. Only the table's control bytes are touched
        // now; the rest is written as sources arrive.
        let capacity = config.max_sources.clamp(8, 57_344);
        Machine {
            version: SNAPSHOT_VERSION,
            config,
            sources: Sources::with_capacity_and_hasher(capacity, Default::default()),
            registrations: Registrations::default(),
            evict_at: 0,
            resolved: Vec::new(),
            known: BTreeMap::new(),
            distrusted: BTreeMap::new(),
            foreign: BTreeMap::new(),
            reported: BTreeMap::new(),
        }
    }

    /// The known devices failing with a wrong password, sorted by address and account.
    pub fn wrong_passwords(&self) -> Vec<WrongPassword> {
        self.known
            .iter()
            .flat_map(|(addr, accounts)| {
                accounts
                    .iter()
                    .filter(|k| k.wrong_since > 0)
                    .map(|k| WrongPassword {
                        account: k.account.clone(),
                        source: *addr,
                        since: u64::from(k.wrong_since),
                    })
            })
            .collect()
    }

    /// Whether `account` is registered now from inside `key` (the address itself first: one
    /// lookup; a wider prefix, an IPv6 /64, looks at the registrations inside it).
    fn registered_in(&self, key: &Prefix, addr: &IpAddr, account: &str, now: u64) -> bool {
        let has = |accounts: &Vec<(String, Registration)>| {
            accounts
                .iter()
                .any(|(acc, r)| acc == account && r.until > now)
        };
        self.registrations.get(addr).is_some_and(has)
            || (*key != Prefix::host(*addr)
                && self.registrations.iter().any(|(ra, accounts)| {
                    Prefix::new(*ra, key.prefix_len()).ok() == Some(*key) && has(accounts)
                }))
    }

    /// A report of a bad identity behind a source that is not banned for it, at most one per
    /// source, account and [`REPORT_EVERY`] seconds: reports reach hooks, and a steady trickle
    /// of failures must not become a steady trickle of calls.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        out: &mut Vec<Action>,
        key: Prefix,
        addr: IpAddr,
        account: Option<&str>,
        user_agent: Option<&str>,
        reason: String,
        n: u32,
    ) {
        let id = (key, account.unwrap_or_default().to_string());
        if self
            .reported
            .get(&id)
            .is_some_and(|at| at.saturating_add(REPORT_EVERY) > n)
        {
            return;
        }
        if !self.reported.contains_key(&id) && self.reported.len() >= MAX_REPORTED {
            if let Some(oldest) = self
                .reported
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            {
                self.reported.remove(&oldest);
            }
        }
        self.reported.insert(id, n);
        out.push(Action::ReportIdentity {
            source: addr,
            account: account.map(str::to_string),
            user_agent: user_agent.map(str::to_string),
            reason,
        });
    }

    /// Count a wrong password from a registered source ([`FOREIGN_BYPASS`], [`FOREIGN_BAN`]);
    /// `other_account`: for an account none of its devices registered (only those can ban).
    /// Returns whether the failure was dealt with here (the ordinary thresholds do not apply
    /// to it then).
    #[allow(clippy::too_many_arguments)]
    fn foreign_failure(
        &mut self,
        key: Prefix,
        addr: IpAddr,
        account: Option<&str>,
        user_agent: Option<&str>,
        other_account: bool,
        now: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        let n = secs(now);
        let times = self.foreign.entry(key).or_default();
        times.retain(|t| t.saturating_add(FOREIGN_BAN.window) > n);
        if times.len() >= MAX_RECENT {
            times.remove(0);
        }
        times.push(n);
        let within = |w: u32| times.iter().filter(|t| t.saturating_add(w) > n).count();
        let bypass = within(FOREIGN_BYPASS.window) >= FOREIGN_BYPASS.failures as usize;
        let ban = other_account && within(FOREIGN_BAN.window) >= FOREIGN_BAN.failures as usize;
        if ban {
            self.foreign.remove(&key);
            let cfg = self.config.clone_thresholds();
            let s = self.sources.entry(Key::of(&key)).or_default();
            s.last_seen = n;
            if s.banned_until > n {
                return true;
            }
            let until = s.strike(&cfg, BanCause::ForeignAccounts, now);
            out.push(Action::Ban {
                prefix: key,
                until,
                reason: format!(
                    "{} wrong passwords in {} for accounts its registered devices never used",
                    FOREIGN_BAN.failures,
                    crate::human::duration(u64::from(FOREIGN_BAN.window))
                ),
            });
            return true;
        }
        if bypass && self.distrusted.get(&key).is_none_or(|u| *u <= n) {
            self.distrusted
                .insert(key, n.saturating_add(DISTRUST_SECONDS));
            out.push(Action::ReportIdentity {
                source: addr,
                account: account.map(str::to_string),
                user_agent: user_agent.map(str::to_string),
                reason: format!(
                    "{} wrong passwords in {} from a source with registered devices: they lose their bypass of the kernel tiers for {}",
                    FOREIGN_BYPASS.failures,
                    crate::human::duration(u64::from(FOREIGN_BYPASS.window)),
                    crate::human::duration(u64::from(DISTRUST_SECONDS))
                ),
            });
            // Every registration inside the prefix stops bypassing the tiers.
            let mut inside: Vec<(IpAddr, String, Vec<String>)> = self
                .registrations
                .iter()
                .filter(|(ra, _)| Prefix::new(**ra, key.prefix_len()).ok() == Some(key))
                .flat_map(|(ra, accounts)| {
                    accounts
                        .iter()
                        .filter(|(_, r)| r.until > now)
                        .map(|(a, r)| (*ra, a.clone(), r.grants.clone()))
                })
                .collect();
            inside.sort();
            for (addr, account, grants) in inside {
                out.push(Action::Revoke {
                    addr,
                    account,
                    grants,
                });
            }
        }
        if other_account {
            let reason = format!(
                "wrong password for an account its registered devices never used; not banned yet: registered devices behind it ({} in {} ban it)",
                FOREIGN_BAN.failures,
                crate::human::duration(u64::from(FOREIGN_BAN.window))
            );
            self.report(out, key, addr, account, user_agent, reason, n);
            return true;
        }
        // A known device's own account: the ordinary path (slow lane, never banned for it).
        false
    }

    /// Whether `account` registered from `addr` within [`KNOWN_SECONDS`].
    fn known_account(&mut self, addr: &IpAddr, account: &str, n: u32) -> Option<&mut KnownAccount> {
        self.known
            .get_mut(addr)?
            .iter_mut()
            .find(|k| k.account == account && k.registered.saturating_add(KNOWN_SECONDS) > n)
    }

    /// Remember that `account` registered from `addr` at `n`; its wrong-password episode ends.
    fn remember(&mut self, addr: IpAddr, account: &str, n: u32) {
        if !self.known.contains_key(&addr) && self.known.len() >= MAX_KNOWN {
            if let Some(oldest) = self
                .known
                .iter()
                .min_by_key(|(_, v)| v.iter().map(|k| k.registered).max().unwrap_or(0))
                .map(|(a, _)| *a)
            {
                self.known.remove(&oldest);
            }
        }
        let v = self.known.entry(addr).or_default();
        match v.iter_mut().find(|k| k.account == account) {
            Some(k) => {
                k.registered = n;
                k.wrong_since = 0;
            }
            None => {
                if v.len() >= KNOWN_PER_ADDRESS {
                    if let Some(i) = (0..v.len()).min_by_key(|i| v[*i].registered) {
                        v.remove(i);
                    }
                }
                v.push(KnownAccount {
                    account: account.to_string(),
                    registered: n,
                    wrong_since: 0,
                });
                v.sort_by(|a, b| a.account.cmp(&b.account));
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replace the configuration (a policy reload), keeping every ban, registration and strike.
    pub fn reconfigure(&mut self, config: Config) {
        self.config = config;
    }

    /// Number of tracked source prefixes.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// How many sources are in the slow lane at `now`, and how many devices are registered.
    pub fn clamped_and_registered(&self, now: u64) -> (usize, usize) {
        let n = secs(now);
        let clamped = self
            .sources
            .values()
            .filter(|s| s.clamped_until > n)
            .count();
        let registered = self
            .registrations
            .values()
            .map(|accounts| accounts.iter().filter(|(_, r)| r.until > now).count())
            .sum();
        (clamped, registered)
    }

    /// Active bans: prefix and until.
    pub fn bans(&self, now: u64) -> Vec<(Prefix, u64)> {
        let now = secs(now);
        let mut v: Vec<(Prefix, u64)> = self
            .sources
            .iter()
            .filter(|(_, s)| s.banned_until > now)
            .map(|(k, s)| (k.prefix(&self.config), s.banned_until as u64))
            .collect();
        v.sort();
        v
    }

    /// Active bans with when and why they began, sorted by prefix.
    pub fn ban_records(&self, now: u64) -> Vec<BanRecord> {
        let n = secs(now);
        let mut v: Vec<BanRecord> = self
            .sources
            .iter()
            .filter(|(_, s)| s.banned_until > n)
            .map(|(k, s)| BanRecord {
                prefix: k.prefix(&self.config),
                since: u64::from(s.last_ban),
                until: u64::from(s.banned_until),
                cause: s.cause,
                strikes: s.strikes,
            })
            .collect();
        v.sort_by_key(|r| r.prefix);
        v
    }

    /// What made the machine ban `prefix` (a key it tracks), for what is told of the ban
    /// (the fleet's scenario, docs/fleet.md).
    pub fn ban_cause(&self, prefix: &Prefix) -> Option<BanCause> {
        self.sources.get(&Key::of(prefix)).map(|s| s.cause)
    }

    /// Why a ban of `prefix` from outside (the fleet, docs/fleet.md) must not be enforced, if
    /// it must not: it overlaps a protected source (a trunk, a trusted network, an
    /// administrator, an ignored source, a resolved protected hostname), is not a remote
    /// unicast source, or holds a device registered at `now`.
    pub fn refuses_outside_ban(&self, prefix: &Prefix, now: u64) -> Option<String> {
        if let Some(why) = self.protection(&prefix.addr(), prefix) {
            return Some(why);
        }
        let registered = |addr: &IpAddr| {
            self.registrations
                .get(addr)
                .and_then(|accounts| accounts.iter().find(|(_, r)| r.until > now))
                .map(|(account, _)| format!("device registered as {account} ({addr})"))
        };
        if prefix.is_host() {
            return registered(&prefix.addr());
        }
        self.registrations
            .keys()
            .filter(|a| prefix.contains(a))
            .find_map(registered)
    }

    /// The accounts registered from `addr`, each with its expiry (Unix seconds), sorted.
    pub fn registrations_of(&self, addr: &IpAddr, now: u64) -> Vec<(String, u64)> {
        self.registrations
            .get(addr)
            .map(|accounts| {
                accounts
                    .iter()
                    .filter(|(_, r)| r.until > now)
                    .map(|(a, r)| (a.clone(), r.until))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An administrator lifted the bans of `prefix` at `at` (Unix seconds; `pbxfw unban`,
    /// `pbxfw trust`): every tracked source overlapping it whose ban began no later than `at`
    /// is unbanned and unclamped, and its strikes and failures are forgiven, so its next ban
    /// starts again from the shortest. A source banned again after `at` keeps its new ban (an
    /// unban read twice, after a restart, must not lift it). Returns the actions that carry
    /// it out (bans and clamps that had not expired by `now`).
    pub fn forgive(&mut self, prefix: &Prefix, at: u64, now: u64) -> Vec<Action> {
        let (at, n) = (secs(at), secs(now));
        let config = &self.config;
        let mut out = Vec::new();
        let mut keys: Vec<(&Key, &mut SourceState)> = self
            .sources
            .iter_mut()
            .filter(|(k, _)| {
                let key = k.prefix(config);
                key.family() == prefix.family() && (key.covers(prefix) || prefix.covers(&key))
            })
            .collect();
        keys.sort_by_key(|(k, _)| **k);
        for (k, s) in keys {
            if s.last_ban > at {
                continue;
            }
            let key = k.prefix(config);
            if s.banned_until > n {
                out.push(Action::Unban { prefix: key });
            }
            if s.clamped_until > n {
                out.push(Action::Unclamp { prefix: key });
            }
            s.banned_until = 0;
            s.clamped_until = 0;
            s.strikes = 0;
            s.recent = Recent::default();
            s.cause = BanCause::Unknown;
        }
        out
    }

    /// Take over a ban found in the kernel that the machine does not know (a daemon killed
    /// after it banned and before it saved its state): the ban lasts `until`. A source this
    /// machine would never ban is not taken over, nor one it already bans. Returns whether
    /// it was.
    pub fn adopt_ban(&mut self, prefix: Prefix, until: u64, now: u64) -> bool {
        let key = self.key(prefix.addr());
        if key != prefix || until <= now || self.protection(&prefix.addr(), &key).is_some() {
            return false;
        }
        let n = secs(now);
        let s = self.sources.entry(Key::of(&key)).or_default();
        if s.banned_until > n {
            return false;
        }
        s.banned_until = secs(until);
        s.last_ban = n;
        s.last_seen = n;
        s.strikes = s.strikes.max(1);
        s.cause = BanCause::Adopted;
        self.bound(now);
        true
    }

    /// The actions that re-create the current state in empty sets (after a reboot).
    pub fn replay_actions(&self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let n = secs(now);
        let mut sorted: Vec<(&Key, &SourceState)> = self.sources.iter().collect();
        sorted.sort_by_key(|(k, _)| **k);
        for (k, s) in sorted {
            let p = &k.prefix(&self.config);
            if s.banned_until > n {
                out.push(Action::Ban {
                    prefix: *p,
                    until: s.banned_until as u64,
                    reason: "restored".into(),
                });
            }
            if s.clamped_until > n {
                out.push(Action::Clamp {
                    prefix: *p,
                    until: s.clamped_until as u64,
                    reason: "restored".into(),
                });
            }
        }
        for (addr, account, r) in sorted_registrations(&self.registrations) {
            // A distrusted source's devices stay without the kernel's bypass until it ends.
            let distrusted = self
                .distrusted
                .get(&self.key(*addr))
                .is_some_and(|u| *u > n);
            if r.until > now && !distrusted {
                out.push(Action::AllowRegistered {
                    addr: *addr,
                    until: r.until,
                    account: account.clone(),
                    grants: r.grants.clone(),
                });
            }
        }
        out
    }

    /// Serialise to JSON.
    pub fn snapshot(&self) -> String {
        serde_json::to_string(self).expect("the machine serialises")
    }

    /// Restore from [`Machine::snapshot`] output.
    pub fn restore(text: &str) -> Result<Machine, RestoreError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| RestoreError::Format(e.to_string()))?;
        let found = v["version"]
            .as_u64()
            .ok_or_else(|| RestoreError::Format("no version".into()))? as u32;
        if found > SNAPSHOT_VERSION {
            return Err(RestoreError::Version {
                found,
                supported: SNAPSHOT_VERSION,
            });
        }
        serde_json::from_value(v).map_err(|e| RestoreError::Format(e.to_string()))
    }

    fn key(&self, addr: IpAddr) -> Prefix {
        let len = match Family::of(&addr) {
            Family::Ipv4 => self.config.ipv4_prefix,
            Family::Ipv6 => self.config.ipv6_prefix,
        };
        Prefix::new(addr, len).unwrap_or_else(|_| Prefix::host(addr))
    }

    /// The current addresses of the protected sources named by hostname (trunks, trusted
    /// networks), as the resolver last answered; they replace those given before.
    pub fn set_resolved(&mut self, resolved: Vec<Protected>) {
        self.resolved = resolved;
    }

    /// Why the source `addr`, tracked as `key`, must never be banned or clamped, if it must
    /// not: a ban covers the whole key (an IPv6 /64), so a protected source anywhere inside
    /// it protects the key.
    fn protection(&self, addr: &IpAddr, key: &Prefix) -> Option<String> {
        if let Some(why) = special(addr) {
            return Some(why.to_string());
        }
        let overlaps = |p: &Prefix| p.family() == key.family() && (p.covers(key) || key.covers(p));
        self.config
            .protected
            .iter()
            .chain(&self.resolved)
            .find(|p| overlaps(&p.prefix))
            .map(|p| p.why.clone())
    }

    /// The latest expiry of the active registrations inside `key` (0 when none): one lookup
    /// for a single address, a scan of all registrations for a wider prefix (an IPv6 /64; run
    /// only when a registration inside it ends).
    fn registered_until_in(&self, key: &Prefix, now: u64) -> u32 {
        let latest = |accounts: &Vec<(String, Registration)>| {
            accounts
                .iter()
                .filter(|(_, r)| r.until > now)
                .map(|(_, r)| secs(r.until))
                .max()
        };
        let found = if key.is_host() {
            self.registrations.get(&key.addr()).and_then(latest)
        } else {
            self.registrations
                .iter()
                .filter(|(a, _)| key.contains(a))
                .filter_map(|(_, accounts)| latest(accounts))
                .max()
        };
        found.unwrap_or(0)
    }

    /// Forget `account`'s registration from `addr`, returning it.
    fn unregister(&mut self, addr: &IpAddr, account: &str) -> Option<Registration> {
        let accounts = self.registrations.get_mut(addr)?;
        let i = accounts.iter().position(|(a, _)| a == account)?;
        let (_, r) = accounts.remove(i);
        if accounts.is_empty() {
            self.registrations.remove(addr);
        }
        Some(r)
    }

    /// The per-user grants of `account`. (The services every registered device gets come
    /// with the registered set itself and need no grant set.)
    fn grants_for(&self, account: &str) -> Vec<String> {
        let mut g: Vec<String> = self
            .config
            .user_grants
            .get(account)
            .cloned()
            .unwrap_or_default();
        g.sort();
        g.dedup();
        g
    }

    /// Feed one event at time `now` (Unix seconds).
    pub fn on_event(&mut self, event: &SecurityEvent, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            SecurityEvent::AuthFailed {
                source,
                account,
                reason,
                user_agent,
                ..
            } => self.failure(
                *source,
                account.as_deref(),
                *reason,
                user_agent.as_deref(),
                now,
                &mut out,
            ),
            SecurityEvent::ScannerSeen { source, user_agent } => self.failure(
                *source,
                None,
                AuthFailure::UnknownAccount,
                user_agent.as_deref(),
                now,
                &mut out,
            ),
            SecurityEvent::AuthSucceeded {
                source, account, ..
            } => {
                let key = self.key(*source);
                let n = secs(now);
                if let Some(k) = account
                    .as_deref()
                    .and_then(|a| self.known_account(source, a, n))
                {
                    k.wrong_since = 0;
                }
                if let Some(s) = self.sources.get_mut(&Key::of(&key)) {
                    s.last_seen = n;
                    s.recent.forget(Kind::Wrong);
                    if s.clamped_until > n {
                        s.clamped_until = 0;
                        out.push(Action::Unclamp { prefix: key });
                    }
                }
            }
            SecurityEvent::Registered {
                source,
                account,
                expires,
            } => {
                let key = self.key(*source);
                let n = secs(now);
                let until = now
                    + u64::from((*expires).clamp(1, self.config.max_registration_seconds.max(1)));
                let s = self.sources.entry(Key::of(&key)).or_default();
                if s.banned_until > n {
                    // A banned source cannot register (its packets never reach the PBX); an
                    // event saying so is stale or forged.
                    return out;
                }
                s.last_seen = n;
                s.registered_until = s.registered_until.max(secs(until));
                s.recent.forget(Kind::Wrong);
                if s.clamped_until > n {
                    s.clamped_until = 0;
                    out.push(Action::Unclamp { prefix: key });
                }
                let grants = self.grants_for(account);
                register(
                    &mut self.registrations,
                    *source,
                    account,
                    Registration {
                        until,
                        grants: grants.clone(),
                    },
                );
                self.remember(*source, account, n);
                // A source that lost its bypass keeps its registrations (they still shield it
                // from the ordinary thresholds) but not the kernel's acceptance, until its
                // distrust ends.
                if self.distrusted.get(&key).is_some_and(|u| *u > n) {
                    return out;
                }
                out.push(Action::AllowRegistered {
                    addr: *source,
                    until,
                    account: account.clone(),
                    grants,
                });
            }
            SecurityEvent::Unregistered { source, account } => {
                if let Some(r) = self.unregister(source, account) {
                    // The prefix stays shielded while other registrations inside it last.
                    let key = self.key(*source);
                    let remaining = self.registered_until_in(&key, now);
                    if let Some(s) = self.sources.get_mut(&Key::of(&key)) {
                        s.registered_until = remaining;
                    }
                    // Another account registered from the same address keeps it registered.
                    let still = self
                        .registrations
                        .get(source)
                        .is_some_and(|accounts| accounts.iter().any(|(_, r)| r.until > now));
                    if !still {
                        out.push(Action::Revoke {
                            addr: *source,
                            account: account.clone(),
                            grants: r.grants,
                        });
                    }
                }
            }
        }
        self.bound(now);
        out
    }

    fn failure(
        &mut self,
        addr: IpAddr,
        account: Option<&str>,
        reason: AuthFailure,
        user_agent: Option<&str>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let key = self.key(addr);
        let protection = self.protection(&addr, &key);
        let cfg = self.config.clone_thresholds();
        let n = secs(now);
        // A known device (its account registered from this address lately) failing with a
        // wrong password is a phone whose password changed: kept in the slow lane and
        // reported, never banned for it (docs/responsive.md, "Known devices").
        let known_wrong = matches!(reason, AuthFailure::WrongPassword)
            && account.is_some_and(|a| self.known_account(&addr, a, n).is_some());
        if known_wrong {
            let k = self
                .known_account(&addr, account.unwrap_or_default(), n)
                .expect("checked above");
            if k.wrong_since == 0 {
                k.wrong_since = n;
                self.report(
                    out,
                    key,
                    addr,
                    account,
                    user_agent,
                    format!(
                        "account {} at {addr} has the wrong password (a known device: kept in the slow lane, never banned for it)",
                        account.unwrap_or_default()
                    ),
                    n,
                );
            }
        }
        let registered = self
            .sources
            .get(&Key::of(&key))
            .is_some_and(|s| s.registered_until > n);
        // Wrong passwords from a source with registered devices, for an account none of them
        // registered (a cracker that registered one account, or a cracker behind a NAT), or at
        // a cracker's pace for one of theirs (the kernel does not meter a registered source):
        // counted on their own. Past a rate no phone reaches they end the source's bypass of
        // the kernel tiers; past a higher one, for other accounts, they ban it. Only wrong
        // passwords count: they take a challenge and its answer, so they cannot come from a
        // forged address, where an unknown account or a scanner's single packet can.
        if registered && protection.is_none() && matches!(reason, AuthFailure::WrongPassword) {
            let registered_here = account.is_some_and(|a| self.registered_in(&key, &addr, a, now));
            let other_account = !registered_here && !known_wrong;
            if self.foreign_failure(key, addr, account, user_agent, other_account, now, out) {
                return;
            }
        }
        let s = self.sources.entry(Key::of(&key)).or_default();
        let shield = match protection {
            Some(why) => Some(why),
            None if s.registered_until > n => Some("registered devices behind it".to_string()),
            None if known_wrong => Some("a known device with a wrong password".to_string()),
            None => None,
        };
        // A known device is still put in the slow lane; other shields keep a source out of it.
        let shielded = shield.is_some() && !known_wrong;
        s.last_seen = n;
        if s.banned_until > n {
            return;
        }
        let kind = match reason {
            AuthFailure::UnknownAccount => Kind::Unknown,
            AuthFailure::WrongPassword => Kind::Wrong,
            AuthFailure::Acl | AuthFailure::Other => Kind::Other,
        };
        s.recent.push(kind, n, cfg.longest_window);
        let mut clamp = false;
        let ban_reason = if user_agent.is_some_and(is_attack_tool) {
            Some((
                BanCause::AttackTool,
                format!("attack tool {:?}", user_agent.unwrap_or("")),
            ))
        } else {
            match kind {
                Kind::Unknown => s.recent.reached(kind, cfg.unknown_account, n).then(|| {
                    (
                        BanCause::UnknownAccount,
                        format!("{} unknown-account failures", cfg.unknown_account.failures),
                    )
                }),
                Kind::Wrong => {
                    clamp = s.recent.reached(kind, cfg.wrong_password_clamp, n);
                    s.recent.reached(kind, cfg.wrong_password_ban, n).then(|| {
                        (
                            BanCause::WrongPassword,
                            format!(
                                "{} wrong-password failures",
                                cfg.wrong_password_ban.failures
                            ),
                        )
                    })
                }
                Kind::Other => s.recent.reached(kind, cfg.other, n).then(|| {
                    (
                        BanCause::FailedAuth,
                        format!("{} failed authentications", cfg.other.failures),
                    )
                }),
                Kind::Foreign => None,
            }
        };
        if let Some((cause, reason)) = ban_reason {
            // Counted failures are spent: the next threshold starts from zero.
            s.recent.forget(kind);
            if let Some(why) = shield {
                // A known device was announced at its first failure.
                if !known_wrong {
                    self.report(
                        out,
                        key,
                        addr,
                        account,
                        user_agent,
                        format!("{reason}; not banned: {why}"),
                        n,
                    );
                }
                return;
            }
            let until = s.strike(&cfg, cause, now);
            s.clamped_until = 0;
            out.push(Action::Ban {
                prefix: key,
                until,
                reason,
            });
        } else if clamp && !shielded {
            let was = s.clamped_until > n;
            // The clamp lasts until the failures stop. The kernel's element is written again
            // once it has less than half its time left: written only at the first clamp, it
            // used to expire while the failures went on, and the source left the slow lane.
            s.clamped_until = n.saturating_add(cfg.clamp_seconds);
            if !was || s.clamp_written <= n.saturating_add(cfg.clamp_seconds / 2) {
                s.clamp_written = s.clamped_until;
                out.push(Action::Clamp {
                    prefix: key,
                    until: s.clamped_until as u64,
                    reason: format!(
                        "{} wrong-password failures",
                        cfg.wrong_password_clamp.failures
                    ),
                });
            }
        }
    }

    /// Advance time: forget expired bans, clamps and registrations, and idle sources.
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        self.registrations.retain(|_, accounts| {
            accounts.retain(|(_, r)| r.until > now);
            !accounts.is_empty()
        });
        let memory = self.config.strike_memory_seconds;
        let longest = self.config.clone_thresholds().longest_window;
        let n = secs(now);
        self.known.retain(|_, accounts| {
            accounts.retain(|k| k.registered.saturating_add(KNOWN_SECONDS) > n);
            !accounts.is_empty()
        });
        self.distrusted.retain(|_, until| *until > n);
        self.foreign.retain(|_, times| {
            times.retain(|t| t.saturating_add(FOREIGN_BAN.window) > n);
            !times.is_empty()
        });
        self.reported
            .retain(|_, at| at.saturating_add(REPORT_EVERY) > n);
        self.sources.retain(|_, s| {
            s.active(n)
                || (s.strikes > 0 && s.last_ban.saturating_add(memory) > n)
                || s.last_seen.saturating_add(longest) > n
        });
        Vec::new()
    }

    /// Keep at most `max_sources`: forget the idlest inactive sources, never an active ban.
    ///
    /// On reaching the bound, the idlest inactive sources are forgotten down to 7/16 of it and
    /// the table is rebuilt without tombstones (removing an entry in place leaves one, which
    /// counts as an occupied slot until a rehash). Evicting an eighth with the tombstones left
    /// in, as before, doubled the table at the first eviction and kept it doubled: 205 bytes
    /// per source of the bound under a flood of new sources instead of 81. Rebuilt in place,
    /// the table keeps exactly the bound's size.
    ///
    /// Active sources are never forgotten, so when they fill most of the table a pass frees
    /// little room. The next pass then waits until another sixteenth of the bound has arrived
    /// (`evict_at`): a pass over the table is paid for by that many new sources, not by each
    /// one. Before, a table filled with active bans or registrations made every event from a
    /// new source a pass over the whole table: a log that replays in 30 ms took 4.6 s with
    /// the bound at 4,096, and a botnet with the bound's number of banned addresses could
    /// have slowed the daemon to a few hundred events a second.
    fn bound(&mut self, now: u64) {
        let max = self.config.max_sources.max(8);
        if self.sources.len() < max.max(self.evict_at) {
            return;
        }
        self.evict(max, secs(now));
        self.evict_at = self.sources.len() + max / 16;
    }

    /// Forget the idlest inactive sources, down to 7/16 of `max` if there are enough of them.
    fn evict(&mut self, max: usize, n: u32) {
        // When the inactive sources were last seen; the idlest `excess` go. Their times are
        // found by selection, not by sorting them all; of those last seen at the cut-off time
        // itself, as many as needed go, in table order (deterministic: the hash is fixed).
        // Sized up front, here and for the survivors below: grown by doubling, these vectors
        // touched twice the memory, page faults and copies that were half of an eviction.
        let mut idle: Vec<u32> = Vec::with_capacity(self.sources.len());
        idle.extend(
            self.sources
                .values()
                .filter(|s| !s.active(n))
                .map(|s| s.last_seen),
        );
        let excess = (self.sources.len() - max * 7 / 16).min(idle.len());
        if excess == 0 {
            return;
        }
        let cut = *idle.select_nth_unstable(excess - 1).1;
        let mut ties = excess - idle.iter().filter(|t| **t < cut).count();
        drop(idle);
        let mut keep = |s: &SourceState| {
            if s.active(n) || s.last_seen > cut {
                true
            } else if s.last_seen < cut {
                false
            } else if ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        };
        // Rebuilt in place, without tombstones: the survivors are taken out (draining keeps
        // the table's memory and leaves it empty) and put back.
        let mut kept: Vec<(Key, SourceState)> = Vec::with_capacity(self.sources.len() - excess);
        kept.extend(self.sources.drain().filter(|(_, s)| keep(s)));
        self.sources.extend(kept);
    }
}

/// The thresholds copied out so that a source's state can be borrowed mutably meanwhile.
struct Thresholds {
    longest_window: u32,
    unknown_account: Threshold,
    wrong_password_clamp: Threshold,
    wrong_password_ban: Threshold,
    other: Threshold,
    clamp_seconds: u32,
    ban_seconds: u32,
    max_ban_seconds: u32,
    strike_memory_seconds: u32,
}

impl Config {
    fn clone_thresholds(&self) -> Thresholds {
        Thresholds {
            longest_window: [
                self.unknown_account,
                self.wrong_password_clamp,
                self.wrong_password_ban,
                self.other,
            ]
            .iter()
            .map(|t| t.window)
            .max()
            .unwrap_or(0),
            clamp_seconds: self.clamp_seconds,
            unknown_account: self.unknown_account,
            wrong_password_clamp: self.wrong_password_clamp,
            wrong_password_ban: self.wrong_password_ban,
            other: self.other,
            ban_seconds: self.ban_seconds,
            max_ban_seconds: self.max_ban_seconds,
            strike_memory_seconds: self.strike_memory_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(max_sources: usize) -> Machine {
        let policy = crate::Policy::from_toml("").unwrap().validate().unwrap();
        let mut cfg = Config::from_policy(&policy);
        cfg.max_sources = max_sources;
        Machine::new(cfg)
    }

    #[test]
    fn forgiving_lifts_bans_made_before_it_and_the_strikes_behind_them() {
        let mut m = machine(64);
        let t = 1_800_000_000;
        let ban = |m: &mut Machine, at: u64| {
            (0..10)
                .flat_map(|_| m.on_event(&failure(7), at))
                .find(|a| matches!(a, Action::Ban { .. }))
        };
        let Some(Action::Ban { until, .. }) = ban(&mut m, t) else {
            panic!("no ban");
        };
        let first = until - t;
        ban(&mut m, until + 1).expect("a second ban");
        let records = m.ban_records(until + 2);
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].strikes, records[0].cause, records[0].since),
            (2, BanCause::FailedAuth, until + 1)
        );
        // An unban of an older time lifts nothing; one of the network lifts it all.
        let key: Prefix = "10.0.0.7/32".parse().unwrap();
        assert!(m.forgive(&key, until, until + 2).is_empty());
        let net: Prefix = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            m.forgive(&net, until + 2, until + 2),
            [Action::Unban { prefix: key }]
        );
        assert!(m.bans(until + 2).is_empty());
        // Forgiven: the next ban is a first one again.
        let Some(Action::Ban { until: u3, .. }) = ban(&mut m, until + 3) else {
            panic!("no third ban");
        };
        assert_eq!(u3 - (until + 3), first);
        // Read again (after a restart), the same unban leaves the new ban alone.
        assert!(m.forgive(&net, until + 2, until + 4).is_empty());
        assert_eq!(m.bans(until + 4).len(), 1);
    }

    fn failure(i: u32) -> SecurityEvent {
        SecurityEvent::AuthFailed {
            source: IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
            account: None,
            reason: AuthFailure::Other,
            user_agent: None,
            protocol: None,
        }
    }

    /// Under a flood of new sources the table keeps the size it was made with: eviction
    /// rebuilds it without tombstones instead of letting it double.
    #[test]
    fn a_flood_of_new_sources_never_grows_the_table() {
        let mut m = machine(1000);
        let capacity = m.sources.capacity();
        for i in 0..20_000 {
            m.on_event(&failure(i), 1_795_000_000 + u64::from(i / 100));
            assert!(m.tracked() < 1000);
            assert!(m.sources.capacity() <= capacity, "{}", m.sources.capacity());
        }
    }

    /// The idlest go first, and exactly down to 7/16 of the bound.
    #[test]
    fn eviction_forgets_the_idlest() {
        let mut m = machine(64);
        for i in 0..63 {
            m.on_event(&failure(i), 1_795_000_000 + u64::from(i));
        }
        assert_eq!(m.tracked(), 63);
        m.on_event(&failure(63), 1_795_000_063);
        assert_eq!(m.tracked(), 28);
        let key = |i: u32| Key::of(&m.key(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))));
        assert!((36..64).all(|i| m.sources.contains_key(&key(i))));
    }

    /// A table filled with active bans stays usable: the bans stay, new sources are still
    /// tracked (and banned when they earn it), and eviction passes are spaced a sixteenth of
    /// the bound apart instead of running on every event.
    #[test]
    fn a_table_full_of_bans_spaces_its_eviction_passes() {
        let mut m = machine(64);
        let t = 1_795_000_000;
        for i in 0..64 {
            let scanner = SecurityEvent::ScannerSeen {
                source: IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)),
                user_agent: Some("friendly-scanner".into()),
            };
            assert!(matches!(m.on_event(&scanner, t)[..], [Action::Ban { .. }]));
        }
        let mut most = 0;
        for i in 0..1000 {
            m.on_event(&failure(i), t + 1);
            most = most.max(m.tracked());
            assert!(m.tracked() <= 64 + 64 / 16, "{}", m.tracked());
        }
        // Each pass waited for four new sources and ran as the fourth came in; a pass on
        // every event would have kept the table at 64.
        assert_eq!(most, 67);
        let banned = m
            .sources
            .values()
            .filter(|s| u64::from(s.banned_until) > t)
            .count();
        assert_eq!(banned, 64);
        // A newcomer that earns a ban still gets it.
        let mut actions = Vec::new();
        for _ in 0..10 {
            actions.extend(m.on_event(&failure(5000), t + 2));
        }
        assert!(
            actions.iter().any(|a| matches!(a, Action::Ban { .. })),
            "{actions:?}"
        );
        // The spacing is state: a snapshot keeps it.
        let back = Machine::restore(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    /// Snapshots written before protected sources carried their reason still restore.
    #[test]
    fn older_snapshots_with_bare_protected_prefixes_restore() {
        let m = machine(64);
        let mut v: serde_json::Value = serde_json::from_str(&m.snapshot()).unwrap();
        v["config"]["protected"] = serde_json::json!(["192.0.2.0/24"]);
        v["config"]
            .as_object_mut()
            .unwrap()
            .remove("max_registration_seconds");
        let back = Machine::restore(&v.to_string()).unwrap();
        assert_eq!(
            back.config().protected,
            vec![Protected {
                prefix: "192.0.2.0/24".parse().unwrap(),
                why: "protected source 192.0.2.0/24".into()
            }]
        );
        assert_eq!(back.config().max_registration_seconds, 86_400);
    }

    /// One failure is held without an allocation, and the snapshot still lists failures.
    #[test]
    fn recent_failures_keep_their_size_and_format() {
        assert_eq!(std::mem::size_of::<Recent>(), 16);
        let mut r = Recent::default();
        r.push(Kind::Wrong, 100, 600);
        assert!(matches!(r, Recent::One((100, Kind::Wrong))));
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"[[100,"Wrong"]]"#);
        r.push(Kind::Other, 200, 600);
        assert_eq!(r.as_slice(), [(100, Kind::Wrong), (200, Kind::Other)]);
        let back: Recent = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        // Outside the window, the old failures go.
        r.push(Kind::Other, 900, 600);
        assert_eq!(r, Recent::One((900, Kind::Other)));
        r.forget(Kind::Other);
        assert_eq!(r.as_slice(), []);
        for t in 0..100 {
            r.push(Kind::Unknown, 1000 + t, 600);
        }
        assert_eq!(r.as_slice().len(), MAX_RECENT);
    }
}
