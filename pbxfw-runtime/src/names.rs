//! Hostnames in the kernel (docs/discovery.md, "Hostnames"): the policy's hostnames are resolved outside the apply
//! path (`pbxfw_host::dns`, scheduled by `pbxfw_core::DnsTracker`) and their addresses are
//! written into the dynamic sets whose `resolves` name them, as set-element updates: never a
//! reload. The daemon does this continuously; `pbxfw resolve` once; an apply fills the sets
//! from the answers kept and, when a name has none, looks everything up for at most 2 s
//! ([`resolve_at_apply`]).
//!
//! Decisions:
//! - Elements carry no timeout. The tracker keeps the last good answer when a lookup fails (a
//!   DNS outage must not cut a trunk off), so an address leaves a set only when a good answer
//!   no longer lists it, or when its hostname leaves the policy.
//! - Nothing is removed from a set until every hostname feeding it has had a good answer (or a
//!   restored one): after a reboot with DNS down, the restored answers are seeded and nothing is
//!   taken away.
//! - The tracker is kept in `$PBXFW_STATE_DIR/dns.json`, so a restart re-seeds the last good
//!   answers at once, before any lookup.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use pbxfw_core::SetKind;
use pbxfw_core::{Backend, Element, Op};
use pbxfw_core::{
    DnsSnapshot as Snapshot, DnsTracker as Tracker, DnsTrackerConfig as TrackerConfig, NameStatus,
};
use pbxfw_core::{Family, Prefix};
use pbxfw_core::{Ruleset, SignallingProtocol, Source, ValidPolicy};
use pbxfw_host::dns::Resolver;
use serde::{Deserialize, Serialize};

/// The state file of the tracker.
pub fn state_path() -> PathBuf {
    pbxfw_host::dirs::state_dir().join("dns.json")
}

/// How names are resolved: the servers (empty: `/etc/resolv.conf`) and the TTL bounds.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// Nameservers; empty means the system's.
    pub servers: Vec<SocketAddr>,
    /// Shortest time an answer is kept before asking again.
    pub ttl_floor: u32,
    /// Longest time an answer is kept before asking again.
    pub ttl_ceiling: u32,
    /// How long to wait for a reply; `None`: resolv.conf's, or 2 s for explicit servers.
    pub timeout: Option<Duration>,
}

impl Default for DnsOptions {
    /// The system's servers, answers kept 30 s to an hour.
    fn default() -> DnsOptions {
        DnsOptions {
            servers: Vec::new(),
            ttl_floor: 30,
            ttl_ceiling: 3600,
            timeout: None,
        }
    }
}

impl DnsOptions {
    /// The tracker's configuration.
    pub fn config(&self) -> TrackerConfig {
        TrackerConfig {
            ttl_floor: self.ttl_floor,
            ttl_ceiling: self.ttl_ceiling.max(self.ttl_floor),
            retry_min: self.ttl_floor.clamp(1, 5),
            ..TrackerConfig::default()
        }
    }

    /// The resolver.
    pub fn resolver(&self) -> Resolver {
        if self.servers.is_empty() {
            let system = Resolver::from_system();
            match self.timeout {
                Some(t) => {
                    let attempts = system.attempts();
                    Resolver::new(system.servers().to_vec(), t).with_attempts(attempts)
                }
                None => system,
            }
        } else {
            Resolver::new(
                self.servers.clone(),
                self.timeout.unwrap_or(Duration::from_secs(2)),
            )
        }
    }
}

/// Every hostname of the policy, with whether SRV lookups apply (SIP trunks: a provider
/// publishes `_sip._udp`, `_sip._tcp`, `_sips._tcp`; IAX has no SRV convention).
pub fn tracked_names(policy: &ValidPolicy) -> Vec<(String, bool)> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    let mut host = |s: &Source, srv: bool| {
        if let Source::Host(h) = s {
            *out.entry(h.clone()).or_default() |= srv;
        }
    };
    for n in &policy.networks {
        host(&n.source, false);
    }
    for b in &policy.blacklist {
        host(&b.source, false);
    }
    for t in &policy.pbx.trunks {
        host(&t.host, t.protocol != SignallingProtocol::Iax);
    }
    out.into_iter().collect()
}

/// The tracker from its state file (a fresh one when there is none, or when it cannot be
/// read: that is logged, and only costs a lookup round).
pub fn load_tracker(config: TrackerConfig) -> (Tracker, Option<String>) {
    match pbxfw_host::state::read::<Snapshot>(&state_path(), "dns") {
        Ok(Some(s)) => (Tracker::restore(config, s), None),
        Ok(None) => (Tracker::new(config), None),
        Err(e) => (Tracker::new(config), Some(e.to_string())),
    }
}

/// Write the tracker's state file.
pub fn save_tracker(tracker: &Tracker) -> crate::Result<()> {
    let path = state_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    }
    pbxfw_host::state::write(&path, "dns", &tracker.snapshot())
        .map_err(|e| crate::Error::io(&path, e))
}

/// What each resolving set should hold, and whether every hostname feeding it has an answer
/// (only then may elements be removed).
pub type Desired = BTreeMap<String, (BTreeSet<Prefix>, bool)>;

/// The elements each resolving set of `rs` should hold, from the tracker's answers.
pub fn desired(rs: &Ruleset, tracker: &Tracker) -> Desired {
    let mut out = Desired::new();
    for (name, set) in &rs.sets {
        let SetKind::Dynamic(d) = &set.kind else {
            continue;
        };
        if d.resolves.is_empty() {
            continue;
        }
        let mut elems = BTreeSet::new();
        for host in &d.resolves {
            for a in tracker.addresses(host) {
                if Family::of(&a) == set.family {
                    elems.insert(Prefix::host(a));
                }
            }
        }
        let complete = d.resolves.iter().all(|h| tracker.answered(h));
        out.insert(name.clone(), (elems, complete));
    }
    out
}

/// What the kernel's resolving sets hold, as last read or written.
pub struct Feeder {
    current: BTreeMap<String, BTreeSet<Prefix>>,
}

/// One set's change, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The set.
    pub set: String,
    /// Addresses added.
    pub added: Vec<Prefix>,
    /// Addresses removed.
    pub removed: Vec<Prefix>,
}

impl Feeder {
    /// Read the resolving sets' elements from the kernel.
    pub fn from_kernel(kernel: &dyn Backend, rs: &Ruleset) -> crate::Result<Feeder> {
        let status = kernel.status()?;
        let mut current = BTreeMap::new();
        for s in &status.sets {
            let name = s.name.as_str();
            let resolving = matches!(rs.sets.get(name).map(|x| &x.kind),
                Some(SetKind::Dynamic(d)) if !d.resolves.is_empty());
            if !resolving {
                continue;
            }
            let elems: BTreeSet<Prefix> = s
                .elements
                .iter()
                .filter_map(|e| e.element.parse::<IpAddr>().ok().map(Prefix::host))
                .collect();
            current.insert(name.to_string(), elems);
        }
        Ok(Feeder { current })
    }

    /// Bring the kernel's sets to `want`: add what is missing; remove what is no longer
    /// wanted where the wanted list is complete. Returns the changes made; a set that could not
    /// be updated is reported and retried on the next call.
    pub fn sync(
        &mut self,
        kernel: &dyn Backend,
        rs: &Ruleset,
        want: &Desired,
    ) -> (Vec<Change>, Vec<String>) {
        let mut changes = Vec::new();
        let mut errors = Vec::new();
        for (set, (elems, complete)) in want {
            let have = self.current.entry(set.clone()).or_default();
            let added: Vec<Prefix> = elems.difference(have).copied().collect();
            let removed: Vec<Prefix> = if *complete {
                have.difference(elems).copied().collect()
            } else {
                Vec::new()
            };
            let as_elements = |v: &[Prefix]| -> Vec<Element> {
                v.iter()
                    .map(|p| Element {
                        prefix: *p,
                        timeout: None,
                    })
                    .collect()
            };
            let mut ok = true;
            if !added.is_empty() {
                match kernel.update_set(rs, set, Op::Add, &as_elements(&added)) {
                    Ok(()) => have.extend(added.iter().copied()),
                    Err(e) => {
                        ok = false;
                        errors.push(format!("{set}: {e}"));
                    }
                }
            }
            if !removed.is_empty() {
                match kernel.update_set(rs, set, Op::Remove, &as_elements(&removed)) {
                    Ok(()) => {
                        for p in &removed {
                            have.remove(p);
                        }
                    }
                    Err(e) => {
                        ok = false;
                        errors.push(format!("{set}: {e}"));
                    }
                }
            }
            if ok && !(added.is_empty() && removed.is_empty()) {
                changes.push(Change {
                    set: set.clone(),
                    added,
                    removed,
                });
            }
        }
        (changes, errors)
    }
}

/// Run lookups until nothing is due at `now` (SRV answers make their targets due at once),
/// at most four rounds. Returns whether anything was looked up.
pub fn refresh_all(resolver: &Resolver, tracker: &mut Tracker, now: u64) -> bool {
    let mut any = false;
    for _ in 0..4 {
        if tracker.due(now).is_empty() {
            break;
        }
        any = true;
        pbxfw_host::dns::refresh(resolver, tracker, now);
    }
    any
}

/// The text lines `status` and `resolve` print for the hostnames.
pub fn status_lines(names: &[NameStatus]) -> Vec<String> {
    names
        .iter()
        .map(|s| {
            let addrs: Vec<String> = s.addresses.iter().map(ToString::to_string).collect();
            let addrs = if addrs.is_empty() {
                "(no address)".to_string()
            } else {
                addrs.join(", ")
            };
            let age = s.age.map_or("never resolved".to_string(), |a| {
                format!("answer {} old", crate::human::duration(a))
            });
            let err = s.last_error.as_ref().map_or(String::new(), |e| {
                format!("; last lookup {} failed: {}", e.lookup, e.error)
            });
            format!(
                "  {}{}: {addrs} ({age}, next lookup in {}{err})",
                s.name,
                if s.srv { " [srv]" } else { "" },
                crate::human::duration(s.next_refresh)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxfw_core::DnsAnswer as Answer;
    use pbxfw_core::{compile, Policy};

    #[test]
    fn names_sets_and_completeness() {
        let policy = Policy::from_toml(
            r#"
            [[networks]]
            source = "office.example"
            zone = "trusted"
            [blacklist]
            entries = ["bad.example"]
            [[pbx.trunks]]
            name = "a"
            protocol = "pjsip"
            host = "sip.example"
            [[pbx.trunks]]
            name = "b"
            protocol = "iax"
            host = "iax.example"
            [[pbx.trunks]]
            name = "c"
            protocol = "pjsip"
            host = "sip2.example"
            "#,
        )
        .unwrap()
        .validate()
        .unwrap();
        let names = tracked_names(&policy);
        assert_eq!(
            names,
            [
                ("bad.example".into(), false),
                ("iax.example".into(), false),
                ("office.example".into(), false),
                ("sip.example".into(), true),
                ("sip2.example".into(), true),
            ]
        );
        let rs = compile(&policy);
        let mut t = Tracker::new(TrackerConfig::default());
        t.set_names(names);
        let now = 1000;
        for l in t.due(now) {
            let addresses: Vec<IpAddr> = match (l.name.as_str(), l.rtype.to_string().as_str()) {
                ("sip.example", "A") => vec!["192.0.2.1".parse().unwrap()],
                ("sip.example", "AAAA") => vec!["2001:db8::1".parse().unwrap()],
                _ => vec![],
            };
            if l.name == "sip2.example" {
                continue; // never answered
            }
            let a = Answer {
                addresses,
                ttl: 60,
                ..Answer::default()
            };
            t.on_result(&l, Ok(a), now);
        }
        let want = desired(&rs, &t);
        let (v4, complete4) = &want["trunk_pjsip_dns4"];
        assert_eq!(
            v4.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["192.0.2.1"]
        );
        assert!(!complete4, "sip2.example has no answer yet");
        let (v6, _) = &want["trunk_pjsip_dns6"];
        assert_eq!(
            v6.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["2001:db8::1"]
        );
        assert!(want["blacklist_dns4"].1, "bad.example answered (empty)");
        assert!(want["trunk_iax_dns4"].0.is_empty());
    }
}

/// How long an apply waits for the DNS at most, all lookups together.
pub const APPLY_BUDGET: Duration = Duration::from_secs(2);

/// What an apply did about the policy's hostnames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtApply {
    /// Names looked up now (none when every name had an answer kept from before).
    pub looked_up: usize,
    /// Names with no address yet, each with what it is in the policy (`trunk provider-a`,
    /// `trusted network`, `blacklist`): until it resolves, a trunk's signalling meets the
    /// responsive tiers like a stranger's.
    pub empty: Vec<(String, String)>,
    /// Set updates that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// At an apply of `loaded` into `backend`: fill the resolving sets from the answers kept from
/// before and, when some name has none yet, look up everything due now, in parallel, for at
/// most [`APPLY_BUDGET`]; then say which names are still empty. `None` when the policy names
/// no host. (The daemon keeps the sets current afterwards; this makes sure a trunk given by
/// hostname is recognised from the first packet instead of meeting the tiers, where a busy
/// trunk could be banned.)
pub fn resolve_at_apply(
    loaded: &crate::policy::Loaded,
    backend: crate::backends::BackendName,
    dns: &DnsOptions,
    now: u64,
) -> crate::Result<Option<AtApply>> {
    let names = tracked_names(&loaded.policy);
    if names.is_empty() {
        return Ok(None);
    }
    let (tracker, _) = load_tracker(dns.config());
    let mut tracker = Tracker::restore(dns.config(), tracker.snapshot());
    tracker.set_names(names.clone());
    let missing = names
        .iter()
        .any(|(n, _)| tracker.addresses(n).is_empty() && !tracker.answered(n));
    let mut looked_up = 0;
    if missing {
        looked_up = names.len();
        pbxfw_host::dns::refresh_within(&dns.resolver(), &mut tracker, now, APPLY_BUDGET);
    }
    let kernel = backend.open();
    let mut feeder = Feeder::from_kernel(kernel.as_ref(), &loaded.ruleset)?;
    let want = desired(&loaded.ruleset, &tracker);
    let (_, mut errors) = feeder.sync(kernel.as_ref(), &loaded.ruleset, &want);
    // Kept after the sets are filled: not keeping the answers costs a lookup later, an empty
    // set costs the trunk.
    if missing {
        if let Err(e) = save_tracker(&tracker) {
            errors.push(format!("{e}: the answers found now are not kept"));
        }
    }
    let roles = roles_of(&loaded.policy);
    let empty = names
        .iter()
        .filter(|(n, _)| tracker.addresses(n).is_empty())
        .map(|(n, _)| (n.clone(), roles.get(n).cloned().unwrap_or_default()))
        .collect();
    Ok(Some(AtApply {
        looked_up,
        empty,
        errors,
    }))
}

/// What each hostname of `policy` is in it, in words.
fn roles_of(policy: &ValidPolicy) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &policy.pbx.trunks {
        if let Source::Host(h) = &t.host {
            out.entry(h.clone())
                .or_default()
                .push(format!("trunk {}", t.name));
        }
    }
    for n in &policy.networks {
        if let Source::Host(h) = &n.source {
            out.entry(h.clone())
                .or_default()
                .push(format!("{} network", n.zone));
        }
    }
    for b in &policy.blacklist {
        if let Source::Host(h) = &b.source {
            out.entry(h.clone()).or_default().push("blacklist".into());
        }
    }
    out.into_iter().map(|(k, v)| (k, v.join(", "))).collect()
}

/// What [`resolve_now`] did.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Each hostname's addresses and the age of their answers.
    pub status: Vec<NameStatus>,
    /// What changed in the kernel's sets.
    pub changes: Vec<Change>,
    /// Sets that could not be updated.
    pub errors: Vec<String>,
    /// The saved answers could not be read (lookups started from none).
    pub problem: Option<String>,
}

/// Resolve every hostname of `loaded` now, whatever the schedule says, and (unless `backend`
/// is `None`: a dry run) save the answers and bring `backend`'s sets up to date.
pub fn resolve_now(
    loaded: &crate::policy::Loaded,
    backend: Option<crate::backends::BackendName>,
    dns: &DnsOptions,
    now: u64,
) -> crate::Result<Resolved> {
    let (tracker, problem) = load_tracker(dns.config());
    let mut fresh = Tracker::restore(dns.config(), tracker.snapshot());
    fresh.set_names(tracked_names(&loaded.policy));
    refresh_all(&dns.resolver(), &mut fresh, now);
    let (mut changes, mut errors) = (Vec::new(), Vec::new());
    if let Some(b) = backend {
        save_tracker(&fresh)?;
        let kernel = b.open();
        let mut feeder = Feeder::from_kernel(kernel.as_ref(), &loaded.ruleset)?;
        let want = desired(&loaded.ruleset, &fresh);
        (changes, errors) = feeder.sync(kernel.as_ref(), &loaded.ruleset, &want);
    }
    Ok(Resolved {
        status: fresh.status(now),
        changes,
        errors,
        problem,
    })
}
