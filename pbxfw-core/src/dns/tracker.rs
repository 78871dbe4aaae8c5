//! Which lookups are due, and the last good answer of each (pure: the caller does the lookups
//! and passes the time in).
//!
//! For each hostname of the policy the tracker keeps the lookups that feed its addresses:
//!
//! | policy name            | lookups                                                     |
//! |------------------------|-------------------------------------------------------------|
//! | any                    | `NAME` A, `NAME` AAAA                                       |
//! | trunk (`srv = true`)   | also `_sip._udp.NAME`, `_sip._tcp.NAME`, `_sips._tcp.NAME` SRV |
//! | each SRV target `T`    | `T` A, `T` AAAA                                             |
//!
//! and for each lookup its state:
//!
//! | event            | last good answer | next lookup                                   |
//! |------------------|------------------|-----------------------------------------------|
//! | new, or restored | kept (if any)    | at once                                       |
//! | good answer      | replaced         | now + TTL clamped to `[ttl_floor, ttl_ceiling]` |
//! | failure number n | kept             | now + `retry_min · 2^(n-1)`, at most `retry_max` |
//!
//! A failure never removes addresses: a DNS outage must not cut off a trunk. An empty answer
//! (NXDOMAIN, no records) does: the zone's owner said the address is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::answer::{Answer, LookupError};
use super::wire::{validate_name, RecordType};

/// The SRV names a SIP trunk publishes its proxies under (RFC 3263 §4.1), as prefixes of the
/// trunk's hostname.
pub const SRV_PREFIXES: [&str; 3] = ["_sip._udp.", "_sip._tcp.", "_sips._tcp."];

/// How often names are refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrackerConfig {
    /// A good answer is kept at least this long (seconds, 30), whatever its TTL: a TTL of 0 would
    /// otherwise mean a lookup in a tight loop. Taken as at least 1.
    pub ttl_floor: u32,
    /// A good answer is refreshed at least this often (seconds, 3600), so a provider's change
    /// reaches the firewall within the hour even with day-long TTLs.
    pub ttl_ceiling: u32,
    /// First retry after a failure (seconds, 5). Taken as at least 1.
    pub retry_min: u32,
    /// Longest wait between retries (seconds, 300).
    pub retry_max: u32,
    /// SRV targets used per SRV lookup (16), in the answer's sorted order: the answer is
    /// untrusted and each target costs two lookups.
    pub max_srv_targets: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            ttl_floor: 30,
            ttl_ceiling: 3600,
            retry_min: 5,
            retry_max: 300,
            max_srv_targets: 16,
        }
    }
}

impl TrackerConfig {
    /// How long a good answer with `ttl` is kept before the next lookup.
    fn refresh_after(&self, ttl: u32) -> u64 {
        // Written with max/min, not `clamp`, which panics when floor > ceiling.
        let floor = self.ttl_floor.max(1);
        u64::from(ttl.max(floor).min(self.ttl_ceiling.max(floor)))
    }

    /// How long to wait after the `failures`-th failure in a row (1 for the first).
    fn retry_after(&self, failures: u32) -> u64 {
        let min = u64::from(self.retry_min.max(1));
        let max = u64::from(self.retry_max).max(min);
        let doublings = failures.saturating_sub(1).min(32);
        min.saturating_mul(1 << doublings).min(max)
    }
}

/// One lookup: a name and a record type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lookup {
    /// The name, lower case, without a trailing dot.
    pub name: String,
    /// The record type.
    pub rtype: RecordType,
}

impl Lookup {
    fn new(name: impl Into<String>, rtype: RecordType) -> Lookup {
        Lookup {
            name: name.into(),
            rtype,
        }
    }
}

impl fmt::Display for Lookup {
    /// `sip.example AAAA`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.rtype)
    }
}

/// What is known about one lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// The last good answer (its TTL as the server gave it).
    answer: Option<Answer>,
    /// When it was obtained.
    obtained: Option<u64>,
    /// When its TTL ran out (the answer is kept after that if no new one comes).
    expires: Option<u64>,
    /// Failures since the last good answer.
    failures: u32,
    /// The last failure, if the last lookup failed, and when.
    last_error: Option<(LookupError, u64)>,
    /// When the lookup is next due; 0 means at once.
    next: u64,
}

/// The last failure of a policy name's lookups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupFailure {
    /// The lookup that failed.
    pub lookup: Lookup,
    /// How.
    pub error: LookupError,
    /// Failures in a row.
    pub failures: u32,
}

/// The DNS state of a policy hostname, for `pbxfw status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameStatus {
    /// The hostname.
    pub name: String,
    /// Whether SRV lookups apply (a trunk).
    pub srv: bool,
    /// Its current addresses ([`Tracker::addresses`]).
    pub addresses: BTreeSet<IpAddr>,
    /// Seconds since the stalest of the good answers in use was obtained; `None` if no lookup
    /// of this name ever succeeded.
    pub age: Option<u64>,
    /// The most recent failure among its lookups whose last attempt failed.
    pub last_error: Option<LookupFailure>,
    /// Seconds until the next of its lookups is due (0: due now).
    pub next_refresh: u64,
}

/// Everything a [`Tracker`] knows, for a state file; restored with [`Tracker::restore`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    names: BTreeMap<String, bool>,
    // A list, not a map: JSON map keys must be strings.
    lookups: Vec<(Lookup, State)>,
}

/// The refresh schedule and the last good answers of the policy's hostnames.
///
/// ```
/// use pbxfw_core::{DnsAnswer as Answer, DnsRecordType as RecordType, DnsTracker as Tracker, DnsTrackerConfig as TrackerConfig};
///
/// let mut t = Tracker::new(TrackerConfig::default());
/// t.set_names([("sip.example".to_string(), false)]);
/// let due = t.due(1000);
/// assert_eq!(due.len(), 2); // A and AAAA
/// let a = Answer { addresses: vec!["192.0.2.1".parse()?], ttl: 600, ..Answer::default() };
/// let changed = t.on_result(&due[0], Ok(a), 1000);
/// assert_eq!(changed, ["sip.example"]);
/// assert!(t.addresses("sip.example").contains(&"192.0.2.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    config: TrackerConfig,
    /// Policy hostname → whether SRV lookups apply.
    names: BTreeMap<String, bool>,
    lookups: BTreeMap<Lookup, State>,
}

impl Tracker {
    /// A tracker with no names.
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker {
            config,
            names: BTreeMap::new(),
            lookups: BTreeMap::new(),
        }
    }

    /// The hostnames to keep fresh, each with whether SRV lookups apply (trunks). Names are
    /// compared case-insensitively, without a trailing dot; a name listed twice gets SRV lookups
    /// if either listing asks for them. Names no longer listed are forgotten with their SRV
    /// targets; new ones are due at once; the others keep their answers and schedule.
    pub fn set_names(&mut self, names: impl IntoIterator<Item = (String, bool)>) {
        let mut map = BTreeMap::new();
        for (name, srv) in names {
            *map.entry(normalise(&name)).or_insert(false) |= srv;
        }
        self.names = map;
        self.reconcile();
    }

    /// The lookups due at `now`, in a stable order.
    pub fn due(&self, now: u64) -> Vec<Lookup> {
        self.lookups
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(l, _)| l.clone())
            .collect()
    }

    /// The earliest time a lookup is due (`None` if nothing is tracked), so the caller can
    /// sleep until then.
    pub fn next_due(&self) -> Option<u64> {
        self.lookups.values().map(|s| s.next).min()
    }

    /// Record the outcome of `lookup` at `now`, and return the policy names whose addresses
    /// changed (their set elements need updating). A result for a lookup no longer tracked (the
    /// policy changed while it was under way) is dropped.
    ///
    /// A good answer replaces the last one and is refreshed after its TTL, clamped. A failure
    /// keeps the last good answer and retries with exponential backoff. A good SRV answer
    /// replaces the set of targets: new ones are due at once, dropped ones are forgotten.
    pub fn on_result(
        &mut self,
        lookup: &Lookup,
        result: Result<Answer, LookupError>,
        now: u64,
    ) -> Vec<String> {
        let before = self.all_addresses();
        let config = self.config;
        let Some(state) = self.lookups.get_mut(lookup) else {
            return Vec::new();
        };
        match result {
            Ok(mut answer) => {
                answer.addresses.sort();
                answer.addresses.dedup();
                answer.srv_targets.sort();
                answer.srv_targets.dedup();
                state.next = now.saturating_add(config.refresh_after(answer.ttl));
                state.expires = Some(now.saturating_add(u64::from(answer.ttl)));
                state.obtained = Some(now);
                state.answer = Some(answer);
                state.failures = 0;
                state.last_error = None;
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                state.next = now.saturating_add(config.retry_after(state.failures));
                state.last_error = Some((error, now));
            }
        }
        if lookup.rtype == RecordType::Srv {
            self.reconcile();
        }
        let after = self.all_addresses();
        self.names
            .keys()
            .filter(|n| before.get(*n) != after.get(*n))
            .cloned()
            .collect()
    }

    /// The current addresses of a policy hostname: its own A and AAAA answers and those of its
    /// SRV targets. Empty for a name that is not tracked.
    pub fn addresses(&self, name: &str) -> BTreeSet<IpAddr> {
        let name = normalise(name);
        let Some(&srv) = self.names.get(&name) else {
            return BTreeSet::new();
        };
        self.lookups_of(&name, srv)
            .iter()
            .filter(|l| l.rtype != RecordType::Srv)
            .filter_map(|l| self.lookups.get(l)?.answer.as_ref())
            .flat_map(|a| a.addresses.iter().copied())
            .collect()
    }

    /// Whether every lookup feeding `name` (A, AAAA, its SRV lookups and their targets') has a
    /// good answer, fresh or restored: only then is [`Tracker::addresses`] the whole truth, and
    /// may an address be taken away from the sets the name feeds.
    pub fn answered(&self, name: &str) -> bool {
        let name = normalise(name);
        let Some(&srv) = self.names.get(&name) else {
            return false;
        };
        self.lookups_of(&name, srv)
            .iter()
            .all(|l| self.lookups.get(l).is_some_and(|s| s.answer.is_some()))
    }

    /// The state of every policy hostname at `now`, sorted by name.
    pub fn status(&self, now: u64) -> Vec<NameStatus> {
        self.names
            .iter()
            .map(|(name, &srv)| {
                let states: Vec<(Lookup, &State)> = self
                    .lookups_of(name, srv)
                    .into_iter()
                    .filter_map(|l| {
                        let s = self.lookups.get(&l)?;
                        Some((l, s))
                    })
                    .collect();
                let age = states
                    .iter()
                    .filter_map(|(_, s)| s.obtained)
                    .min()
                    .map(|t| now.saturating_sub(t));
                let last_error = states
                    .iter()
                    .filter_map(|(l, s)| {
                        let (error, at) = s.last_error.as_ref()?;
                        Some((*at, l, error, s.failures))
                    })
                    .max_by_key(|(at, ..)| *at)
                    .map(|(_, lookup, error, failures)| LookupFailure {
                        lookup: lookup.clone(),
                        error: error.clone(),
                        failures,
                    });
                let next_refresh = states
                    .iter()
                    .map(|(_, s)| s.next)
                    .min()
                    .map_or(0, |t| t.saturating_sub(now));
                NameStatus {
                    name: name.clone(),
                    srv,
                    addresses: self.addresses(name),
                    age,
                    last_error,
                    next_refresh,
                }
            })
            .collect()
    }

    /// Everything the tracker knows, to be written to a state file.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            names: self.names.clone(),
            lookups: self
                .lookups
                .iter()
                .map(|(l, s)| (l.clone(), s.clone()))
                .collect(),
        }
    }

    /// What a snapshot says about each name, with its schedule as it was saved (for
    /// `pbxfw status`, which reads the daemon's state file; [`Tracker::restore`] makes every
    /// lookup due instead).
    pub fn status_of(config: TrackerConfig, snapshot: Snapshot, now: u64) -> Vec<NameStatus> {
        let t = Tracker {
            config,
            names: snapshot.names,
            lookups: snapshot.lookups.into_iter().collect(),
        };
        t.status(now)
    }

    /// A tracker seeded from a snapshot, so a restart with DNS down keeps the last good answers.
    /// Every lookup is due at once; its answer stays until a good one replaces it. Call
    /// [`Tracker::set_names`] next with the current policy's names.
    pub fn restore(config: TrackerConfig, snapshot: Snapshot) -> Tracker {
        let mut t = Tracker {
            config,
            names: snapshot
                .names
                .into_iter()
                .map(|(n, srv)| (normalise(&n), srv))
                .collect(),
            lookups: snapshot
                .lookups
                .into_iter()
                .map(|(l, s)| (l, State { next: 0, ..s }))
                .collect(),
        };
        // The file may come from an older policy or be edited: keep only what the names need.
        t.reconcile();
        t
    }

    /// Every lookup that feeds `name`'s addresses: its own, its SRV lookups and those of the
    /// targets its SRV answers name.
    fn lookups_of(&self, name: &str, srv: bool) -> Vec<Lookup> {
        let mut out = vec![
            Lookup::new(name, RecordType::A),
            Lookup::new(name, RecordType::Aaaa),
        ];
        if srv {
            for prefix in SRV_PREFIXES {
                let l = Lookup::new(format!("{prefix}{name}"), RecordType::Srv);
                let targets = self
                    .lookups
                    .get(&l)
                    .and_then(|s| s.answer.as_ref())
                    .map(|a| a.srv_targets.as_slice())
                    .unwrap_or_default();
                for (target, _) in targets.iter().take(self.config.max_srv_targets) {
                    let target = normalise(target);
                    // Targets come from the network: one that cannot be asked for is skipped.
                    if validate_name(&target).is_ok() {
                        out.push(Lookup::new(target.clone(), RecordType::A));
                        out.push(Lookup::new(target, RecordType::Aaaa));
                    }
                }
                out.push(l);
            }
        }
        out
    }

    /// Make the tracked lookups exactly those the names need: new ones due at once.
    fn reconcile(&mut self) {
        let needed: BTreeSet<Lookup> = self
            .names
            .iter()
            .flat_map(|(name, &srv)| self.lookups_of(name, srv))
            .collect();
        self.lookups.retain(|l, _| needed.contains(l));
        for l in needed {
            self.lookups.entry(l).or_default();
        }
    }

    fn all_addresses(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        self.names
            .keys()
            .map(|n| (n.clone(), self.addresses(n)))
            .collect()
    }
}

fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addrs(list: &[&str], ttl: u32) -> Answer {
        Answer {
            addresses: list.iter().map(|s| ip(s)).collect(),
            ttl,
            ..Answer::default()
        }
    }

    fn srv(targets: &[&str], ttl: u32) -> Answer {
        Answer {
            srv_targets: targets.iter().map(|t| (t.to_string(), 5060)).collect(),
            ttl,
            ..Answer::default()
        }
    }

    fn lk(name: &str, rtype: RecordType) -> Lookup {
        Lookup::new(name, rtype)
    }

    fn tracker(names: &[(&str, bool)]) -> Tracker {
        let mut t = Tracker::new(TrackerConfig::default());
        t.set_names(names.iter().map(|(n, s)| (n.to_string(), *s)));
        t
    }

    #[test]
    fn new_names_are_due_at_once() {
        let t = tracker(&[("PBX.example.", false)]);
        assert_eq!(
            t.due(0),
            [
                lk("pbx.example", RecordType::A),
                lk("pbx.example", RecordType::Aaaa)
            ]
        );
        assert_eq!(t.next_due(), Some(0));
        assert_eq!(Tracker::new(TrackerConfig::default()).next_due(), None);
    }

    #[test]
    fn ttl_is_clamped() {
        let mut t = tracker(&[("pbx.example", false)]);
        let a = lk("pbx.example", RecordType::A);
        let aaaa = lk("pbx.example", RecordType::Aaaa);
        t.on_result(&a, Ok(addrs(&["192.0.2.1"], 0)), 100);
        t.on_result(&aaaa, Ok(addrs(&[], 86400)), 100);
        assert_eq!(t.due(129), []);
        assert_eq!(t.due(130), std::slice::from_ref(&a));
        assert_eq!(t.next_due(), Some(130));
        t.on_result(&a, Ok(addrs(&["192.0.2.1"], 600)), 130);
        assert_eq!(t.next_due(), Some(730));
        assert_eq!(t.due(3699), std::slice::from_ref(&a));
        assert_eq!(t.due(3700), [a, aaaa]);
        // A floor above the ceiling does not panic: the floor wins.
        let c = TrackerConfig {
            ttl_floor: 50,
            ttl_ceiling: 10,
            ..TrackerConfig::default()
        };
        assert_eq!(c.refresh_after(5), 50);
    }

    #[test]
    fn failure_keeps_the_last_good_answer_and_backs_off() {
        let mut t = tracker(&[("pbx.example", false)]);
        let a = lk("pbx.example", RecordType::A);
        t.on_result(&a, Ok(addrs(&["192.0.2.1"], 60)), 0);
        let mut waits = Vec::new();
        let mut now = 60;
        for _ in 0..9 {
            let changed = t.on_result(&a, Err(LookupError::Timeout), now);
            assert!(changed.is_empty());
            let next = t.lookups[&a].next;
            waits.push(next - now);
            now = next;
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            t.addresses("pbx.example"),
            BTreeSet::from([ip("192.0.2.1")])
        );
        let st = &t.status(now)[0];
        assert_eq!(st.age, Some(now));
        let failure = st.last_error.as_ref().unwrap();
        assert_eq!(failure.error, LookupError::Timeout);
        assert_eq!(failure.failures, 9);
        // Success resets the backoff and clears the error.
        t.on_result(&a, Ok(addrs(&["192.0.2.1"], 60)), now);
        assert_eq!(t.status(now)[0].last_error, None);
        t.on_result(&a, Err(LookupError::Server(2)), now + 60);
        assert_eq!(t.lookups[&a].next, now + 65);
        // Many failures do not overflow.
        assert_eq!(TrackerConfig::default().retry_after(u32::MAX), 300);
    }

    #[test]
    fn empty_answer_removes_addresses() {
        let mut t = tracker(&[("pbx.example", false)]);
        let a = lk("pbx.example", RecordType::A);
        assert_eq!(
            t.on_result(&a, Ok(addrs(&["192.0.2.1"], 60)), 0),
            ["pbx.example"]
        );
        assert_eq!(t.on_result(&a, Ok(addrs(&[], 300)), 60), ["pbx.example"]);
        assert!(t.addresses("pbx.example").is_empty());
    }

    #[test]
    fn removed_names_are_forgotten() {
        let mut t = tracker(&[("a.example", false), ("b.example", true)]);
        t.on_result(
            &lk("_sip._udp.b.example", RecordType::Srv),
            Ok(srv(&["sip.b.example"], 60)),
            0,
        );
        assert_eq!(t.lookups.len(), 2 + 2 + 3 + 2);
        t.set_names([("a.example".to_string(), false)]);
        assert_eq!(
            t.lookups.keys().cloned().collect::<Vec<_>>(),
            [
                lk("a.example", RecordType::A),
                lk("a.example", RecordType::Aaaa)
            ]
        );
        assert!(t.addresses("b.example").is_empty());
        // A late result for a forgotten lookup is dropped.
        let late = lk("sip.b.example", RecordType::A);
        assert!(t
            .on_result(&late, Ok(addrs(&["192.0.2.9"], 60)), 1)
            .is_empty());
        assert_eq!(t.lookups.len(), 2);
    }

    #[test]
    fn srv_targets_addresses_are_included() {
        let mut t = tracker(&[("trunk.example", true)]);
        assert_eq!(t.due(0).len(), 5);
        let udp = lk("_sip._udp.trunk.example", RecordType::Srv);
        let tls = lk("_sips._tcp.trunk.example", RecordType::Srv);
        t.on_result(
            &udp,
            Ok(srv(&["sip1.trunk.example", "SIP2.trunk.example."], 60)),
            0,
        );
        t.on_result(&tls, Ok(srv(&["sip1.trunk.example", "bad name"], 60)), 0);
        let due = t.due(0);
        for target in ["sip1.trunk.example", "sip2.trunk.example"] {
            assert!(due.contains(&lk(target, RecordType::A)), "{target}");
            assert!(due.contains(&lk(target, RecordType::Aaaa)), "{target}");
        }
        assert!(!due.iter().any(|l| l.name.contains(' ')));
        t.on_result(
            &lk("trunk.example", RecordType::A),
            Ok(addrs(&["192.0.2.1"], 60)),
            1,
        );
        let changed = t.on_result(
            &lk("sip2.trunk.example", RecordType::Aaaa),
            Ok(addrs(&["2001:db8::2"], 60)),
            1,
        );
        assert_eq!(changed, ["trunk.example"]);
        t.on_result(
            &lk("sip1.trunk.example", RecordType::A),
            Ok(addrs(&["192.0.2.11", "192.0.2.1"], 60)),
            1,
        );
        assert_eq!(
            t.addresses("trunk.example"),
            BTreeSet::from([ip("192.0.2.1"), ip("192.0.2.11"), ip("2001:db8::2")])
        );
        // The UDP SRV no longer names sip2: its lookups and addresses go.
        let changed = t.on_result(&udp, Ok(srv(&["sip1.trunk.example"], 60)), 2);
        assert_eq!(changed, ["trunk.example"]);
        assert!(!t
            .lookups
            .contains_key(&lk("sip2.trunk.example", RecordType::Aaaa)));
        assert!(!t.addresses("trunk.example").contains(&ip("2001:db8::2")));
        // A failed SRV lookup keeps its targets.
        t.on_result(&udp, Err(LookupError::Timeout), 100);
        assert!(t.addresses("trunk.example").contains(&ip("192.0.2.11")));
    }

    #[test]
    fn srv_targets_are_capped() {
        let mut t = Tracker::new(TrackerConfig {
            max_srv_targets: 2,
            ..TrackerConfig::default()
        });
        t.set_names([("t.example".to_string(), true)]);
        let targets: Vec<String> = (0..50).map(|i| format!("h{i:02}.example")).collect();
        let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        t.on_result(
            &lk("_sip._udp.t.example", RecordType::Srv),
            Ok(srv(&refs, 60)),
            0,
        );
        assert_eq!(t.lookups.len(), 5 + 4);
    }

    #[test]
    fn status_reports_each_name() {
        let mut t = tracker(&[("b.example", false), ("a.example", false)]);
        t.on_result(
            &lk("a.example", RecordType::A),
            Ok(addrs(&["192.0.2.1"], 60)),
            10,
        );
        t.on_result(&lk("a.example", RecordType::Aaaa), Ok(addrs(&[], 60)), 20);
        t.on_result(
            &lk("b.example", RecordType::A),
            Err(LookupError::Server(2)),
            20,
        );
        let st = t.status(40);
        assert_eq!(st[0].name, "a.example");
        assert_eq!(st[0].age, Some(30));
        assert_eq!(st[0].next_refresh, 30);
        assert_eq!(st[0].last_error, None);
        assert_eq!(st[1].age, None);
        assert_eq!(st[1].next_refresh, 0); // its AAAA was never asked
        assert_eq!(
            st[1].last_error.as_ref().map(|f| &f.lookup),
            Some(&lk("b.example", RecordType::A))
        );
        let json = serde_json::to_value(&st[0]).unwrap();
        assert_eq!(json["addresses"], serde_json::json!(["192.0.2.1"]));
    }

    #[test]
    fn snapshot_round_trip() {
        let mut t = tracker(&[("trunk.example", true), ("pbx.example", false)]);
        t.on_result(
            &lk("_sip._tcp.trunk.example", RecordType::Srv),
            Ok(srv(&["sip1.trunk.example"], 60)),
            5,
        );
        t.on_result(
            &lk("sip1.trunk.example", RecordType::A),
            Ok(addrs(&["192.0.2.5"], 60)),
            5,
        );
        t.on_result(
            &lk("pbx.example", RecordType::Aaaa),
            Ok(addrs(&["2001:db8::1"], 60)),
            5,
        );
        t.on_result(
            &lk("pbx.example", RecordType::A),
            Err(LookupError::Timeout),
            6,
        );

        let json = serde_json::to_string(&t.snapshot()).unwrap();
        let snap: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(snap, t.snapshot());

        let mut r = Tracker::restore(TrackerConfig::default(), snap);
        assert_eq!(r.addresses("trunk.example"), t.addresses("trunk.example"));
        assert_eq!(r.addresses("pbx.example"), t.addresses("pbx.example"));
        assert_eq!(r.due(0).len(), t.lookups.len());
        // Only the schedule differs.
        for (l, s) in &r.lookups {
            assert_eq!(
                &State {
                    next: t.lookups[l].next,
                    ..s.clone()
                },
                &t.lookups[l]
            );
        }
        // DNS still down after the restart: the addresses stay.
        for l in r.due(0) {
            r.on_result(&l, Err(LookupError::Timeout), 100);
        }
        assert_eq!(
            r.addresses("trunk.example"),
            BTreeSet::from([ip("192.0.2.5")])
        );
    }
}
