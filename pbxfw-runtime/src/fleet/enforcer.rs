//! The fleet's decisions in the daemon's loop: the table the pulls build, what the kernel's
//! `fleet4`/`fleet6` sets hold, and the guard that keeps decisions off protected sources
//! (docs/fleet.md).

use super::*;

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
    /// A full pull has come: the table is the fleet's, and may be written.
    ready: bool,
    /// After a refused write, not before (Unix seconds); the wait doubles up to a minute.
    retry_at: u64,
    /// Refused writes in a row.
    failures: u32,
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
    /// A new enforcer holding at most `max` decisions. Nothing is written to the kernel
    /// before its first full pull (the sets keep what they held across a restart, even when
    /// the LAPI cannot be reached); that pull writes them whole.
    pub fn new(max: usize) -> Enforcer {
        Enforcer {
            table: FleetTable::with_max(max),
            replace: true,
            ..Enforcer::default()
        }
    }

    /// Take back what a state file kept (the decisions, and those lifted here), before the
    /// first pull: a local unban made while the daemon was away then finds what it lifts.
    pub fn restore(&mut self, snap: &Snapshot, now: u64) {
        for d in snap.decisions.iter().filter(|d| d.until > now) {
            self.table.restore(
                d.prefix,
                pbxfw_core::FleetEntry {
                    id: d.id,
                    expires: d.until,
                    origin: d.origin.as_str().into(),
                    scenario: d.scenario.as_str().into(),
                },
            );
        }
        self.lifted = snap
            .lifted
            .iter()
            .filter(|(_, end)| *end > now)
            .copied()
            .collect();
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
            // A full pull is the whole truth: the table becomes it, and the kernel is brought
            // to it from what the daemon wrote there (the only writer of these sets), which
            // also puts back what the delta stream lost.
            self.ready = true;
            self.retry_at = 0;
        } else {
            self.stats.delta_pulls += 1;
        }
        {
            let s = &mut self.stats.skipped;
            s.not_ban += pull.skipped.not_ban;
            s.other_scope += pull.skipped.other_scope;
            s.bad_value += pull.skipped.bad_value;
            s.expired += pull.skipped.expired;
            s.over_limit += pull.skipped.over_limit;
        }
        self.lifted.retain(|_, end| *end > now);
        if !self.lifted.is_empty() {
            pull.new.retain(|d| {
                self.lifted
                    .get(&d.prefix)
                    .is_none_or(|end| now + d.remaining > end + SAME_END)
            });
        }
        let change = self.table.apply(&pull, full, now);
        self.stats.skipped.over_limit += change.over_limit as u64;
        self.stats.last_pull = Some(now);
        self.stats.last_pull_seconds = took.as_secs_f64();
        self.changed = true;
    }

    /// An administrator lifted `prefix` here at `now`: the fleet decisions overlapping it stop
    /// being enforced (until a later decision on them arrives).
    pub fn lift(&mut self, prefix: &Prefix, now: u64) {
        let hit: Vec<Prefix> = self
            .table
            .entries()
            .into_iter()
            .filter(|(p, e)| e.expires > now && crate::bans::overlaps(p, prefix))
            .map(|(p, _)| p)
            .collect();
        for p in hit {
            if let Some(end) = self.table.remove(&p) {
                self.lifted.insert(p, end);
                self.changed = true;
            }
        }
    }

    /// Whether a full pull has come since the start.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Hold at most `max` decisions from now on.
    pub fn set_max(&mut self, max: usize) {
        self.table.set_max(max);
    }

    /// What the guard protects changed (the LAPI's addresses): check the table again at the
    /// next reconcile.
    pub fn guard_changed(&mut self) {
        self.changed = true;
    }

    /// The kernel's sets were created anew (an apply that made the table again): write them
    /// whole at the next reconcile.
    pub fn sets_lost(&mut self) {
        self.replace = true;
    }

    /// Whether a reconcile has work at `now`: after the first full pull, when a pull came or
    /// the sets must be written whole, and not before the back-off of a refused write ends.
    pub fn pending(&self, now: u64) -> bool {
        self.ready && (self.changed || self.replace) && now >= self.retry_at
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
        let mut installed = None;
        if !self.replace {
            let (edits, after) = self.delta_edits(&want, now);
            self.stats.last_written = count(&edits);
            if edits.is_empty() || kernel.edit_sets(rs, &edits).is_ok() {
                installed = Some(after);
            } else {
                // An element expired meanwhile, or the sets changed under us: write them
                // whole instead.
                self.stats.kernel_errors += 1;
                self.replace = true;
            }
        }
        if self.replace {
            // What the kernel holds is not known (a start: the last daemon's elements; a
            // refused edit): the sets are emptied, then written. Two transactions: an interval
            // set flushed and filled again in one transaction costs the kernel quadratic time
            // (28 s for 110,000 elements, measured), where each alone takes a fraction of a
            // second; between them, for that moment, the fleet's bans are not enforced.
            let (flush, fill) = replace_edits(&want, now);
            self.stats.last_written = count(&fill);
            match kernel
                .edit_sets(rs, &flush)
                .and_then(|()| kernel.edit_sets(rs, &fill))
            {
                Ok(()) => {
                    self.replace = false;
                    installed = Some(want);
                }
                Err(e) => {
                    // Not again at once: the loop would resend the whole sets on every pass.
                    self.stats.kernel_errors += 1;
                    self.failures = self.failures.saturating_add(1);
                    self.retry_at = now + (1u64 << self.failures.min(6)).min(60);
                    self.stats.last_kernel_seconds = started.elapsed().as_secs_f64();
                    return (new_refusals, Some(e.to_string()));
                }
            }
        }
        self.failures = 0;
        self.installed = installed.unwrap_or_default();
        self.stats.last_kernel_seconds = started.elapsed().as_secs_f64();
        self.changed = false;
        (new_refusals, None)
    }

    /// The edits from what the kernel holds to `want`, and what it holds after them:
    /// removals of what goes or changes end, then additions. An element that ends within two
    /// seconds is left to expire, neither removed (that could race the kernel's own expiry and
    /// refuse the transaction) nor added again (an addition of an element still there changes
    /// nothing): it is added at the first reconcile after it ended.
    fn delta_edits(
        &self,
        want: &HashMap<Prefix, u64>,
        now: u64,
    ) -> (Vec<SetEdit>, HashMap<Prefix, u64>) {
        let mut remove: BTreeMap<Family, Vec<Element>> = BTreeMap::new();
        let mut add: BTreeMap<Family, Vec<Element>> = BTreeMap::new();
        let mut after: HashMap<Prefix, u64> = HashMap::with_capacity(want.len());
        let ending = |h: u64| h > now && h <= now + 2;
        for (p, end) in &self.installed {
            let same = want.get(p).is_some_and(|w| w.abs_diff(*end) <= SAME_END);
            if same || ending(*end) {
                after.insert(*p, *end);
            } else if *end > now + 2 {
                remove
                    .entry(p.family())
                    .or_default()
                    .push(element(*p, *end, now));
            }
        }
        for (p, end) in want {
            let kept = self
                .installed
                .get(p)
                .is_some_and(|h| (h.abs_diff(*end) <= SAME_END && *h > now) || ending(*h));
            if !kept {
                add.entry(p.family())
                    .or_default()
                    .push(element(*p, *end, now));
                after.insert(*p, *end);
            }
        }
        let mut edits = Vec::new();
        for (f, els) in remove {
            edits.push(SetEdit::Remove(names::fleet(f), els));
        }
        for (f, els) in add {
            edits.push(SetEdit::Add(names::fleet(f), els));
        }
        (edits, after)
    }

    /// Write the state file (the shape of [`Snapshot`]), serialised from the table as it is
    /// written: 100,000 decisions are not copied into strings first.
    pub fn write_snapshot(
        &self,
        path: &std::path::Path,
        url: &str,
        now: u64,
    ) -> std::io::Result<()> {
        use serde::ser::{SerializeSeq, Serializer};
        #[derive(Serialize)]
        struct ShownRef<'a> {
            prefix: Prefix,
            until: u64,
            origin: &'a str,
            scenario: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            refused: Option<&'a str>,
            id: i64,
        }
        struct Decisions<'a>(&'a Enforcer, u64);
        impl Serialize for Decisions<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                let (e, now) = (self.0, self.1);
                let entries = e.table.entries();
                let mut seq = s.serialize_seq(None)?;
                for (p, d) in entries.into_iter().filter(|(_, d)| d.expires > now) {
                    seq.serialize_element(&ShownRef {
                        prefix: p,
                        until: d.expires,
                        origin: &d.origin,
                        scenario: &d.scenario,
                        refused: e.last_refused.get(&p).map(String::as_str),
                        id: d.id,
                    })?;
                }
                seq.end()
            }
        }
        #[derive(Serialize)]
        struct SnapshotRef<'a> {
            at: u64,
            url: &'a str,
            last_pull: Option<u64>,
            enforced: usize,
            decisions: Decisions<'a>,
            lifted: Vec<(Prefix, u64)>,
        }
        let mut lifted: Vec<(Prefix, u64)> = self
            .lifted
            .iter()
            .filter(|(_, end)| **end > now)
            .map(|(p, e)| (*p, *e))
            .collect();
        lifted.sort();
        pbxfw_host::state::write_streamed(
            path,
            STATE_KIND,
            &SnapshotRef {
                at: now,
                url,
                last_pull: self.stats.last_pull,
                enforced: self.installed.len(),
                decisions: Decisions(self, now),
                lifted,
            },
        )
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

/// The edits that empty both sets, and those that then write `want`.
fn replace_edits(want: &HashMap<Prefix, u64>, now: u64) -> (Vec<SetEdit>, Vec<SetEdit>) {
    let flush: Vec<SetEdit> = Family::BOTH
        .iter()
        .map(|f| SetEdit::Flush(names::fleet(*f)))
        .collect();
    let mut edits = Vec::new();
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
    (flush, edits)
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
/// addresses, or what it needs to reach (`infra`, each with what it is: the LAPI, the DNS
/// resolvers, the default gateways).
pub fn guard<'a>(
    machine: &'a pbxfw_core::Machine,
    own: &'a [std::net::IpAddr],
    infra: &'a [(std::net::IpAddr, &'static str)],
    now: u64,
) -> impl Fn(&Prefix) -> Option<String> + 'a {
    move |p: &Prefix| {
        if let Some(a) = own.iter().find(|a| p.contains(a)) {
            return Some(format!("an address of this host ({a})"));
        }
        if let Some((a, what)) = infra.iter().find(|(a, _)| p.contains(a)) {
            return Some(format!("{what} ({a})"));
        }
        machine.refuses_outside_ban(p, now)
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
             [fleet]\nurl = \"https://192.0.2.1:8080\"\napi_key_file = \"/k\"\n",
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
                deleted: deleted.iter().map(|d| (d.parse().unwrap(), 1)).collect(),
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
        let lapi = vec![("192.0.2.1".parse().unwrap(), "the fleet's LAPI")];
        let mut e = Enforcer::new(1000);
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
            !shown(&kernel, "fleet4").contains(&"198.51.100.7".to_string()),
            "the decision lifted here stays lifted"
        );
        e.on_pull(
            pulled(vec![decision("198.51.100.7", 86_400)], &[], false),
            4703,
        );
        e.reconcile(&kernel, &rs, 4703, guard(&machine, &own, &lapi, 4703));
        // (The memory kernel keeps what expired: the real one drops it on its own.)
        assert!(shown(&kernel, "fleet4").contains(&"198.51.100.7".to_string()));
        assert_eq!(installed(&e), ["198.51.100.7"]);
    }

    #[test]
    fn a_failed_delta_falls_back_to_writing_the_sets_whole() {
        let p = policy();
        let rs = pbxfw_core::compile(&p);
        let kernel = Memory::new();
        pbxfw_core::apply(&kernel, &rs, &Default::default()).unwrap();
        let machine = pbxfw_core::Machine::new(pbxfw_core::MachineConfig::from_policy(&p));
        let mut e = Enforcer::new(1000);
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
    fn nothing_is_written_before_the_first_full_pull_and_a_late_renewal_is_kept() {
        let p = policy();
        let rs = pbxfw_core::compile(&p);
        let kernel = Memory::new();
        pbxfw_core::apply(&kernel, &rs, &Default::default()).unwrap();
        let machine = pbxfw_core::Machine::new(pbxfw_core::MachineConfig::from_policy(&p));
        let g = |now| guard(&machine, &[], &[], now);
        // What an earlier daemon wrote stays while the LAPI has not answered in full.
        let earlier = pbxfw_core::Element {
            prefix: "192.0.2.200".parse().unwrap(),
            timeout: Some(Duration::from_secs(3600)),
        };
        kernel
            .edit_sets(&rs, &[SetEdit::Add("fleet4".into(), vec![earlier])])
            .unwrap();
        let mut e = Enforcer::new(1000);
        e.on_pull(pulled(vec![decision("198.51.100.9", 100)], &[], false), 0);
        assert!(!e.pending(0), "a delta before any full pull writes nothing");
        assert_eq!(shown(&kernel, "fleet4"), ["192.0.2.200"]);
        e.on_pull(pulled(vec![decision("198.51.100.9", 100)], &[], true), 0);
        assert!(e.pending(0));
        e.reconcile(&kernel, &rs, 0, g(0));
        assert_eq!(shown(&kernel, "fleet4"), ["198.51.100.9"]);
        // A longer decision arrives as the element is about to end: neither removed nor added
        // then (the kernel would ignore the addition of an element it still holds), but added
        // at the first reconcile after it ended.
        e.on_pull(pulled(vec![decision("198.51.100.9", 3600)], &[], false), 99);
        e.reconcile(&kernel, &rs, 99, g(99));
        assert_eq!(e.installed[&"198.51.100.9".parse().unwrap()], 100);
        e.on_pull(pulled(Vec::new(), &[], false), 101);
        e.reconcile(&kernel, &rs, 101, g(101));
        assert_eq!(e.installed[&"198.51.100.9".parse().unwrap()], 3699);
        assert_eq!(e.stats.last_written, 1);
    }
}
