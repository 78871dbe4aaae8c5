//! The flow cut: every backend the runtime opens deletes the connection-tracking entries of the
//! sources it has just blocked.
//!
//! The ruleset accepts established packets of connections the remote end opened at step 2 of
//! the packet path, before the blacklist and bans of step 3 (docs/policy.md, "The packet
//! path"): such a flow met those checks when it started. So that a source blacklisted or banned
//! later still loses its flows at once, every kernel write that adds to a set holding blocked
//! sources ([`names::blocks_sources`]: the blacklist, resolved blacklisted hostnames, the
//! fleet's bans, the state machine's bans, the kernel tiers' bans) is followed by a cut of the
//! flows opened from what was added: a static patch of the edit path, a ban, a fleet pull, a
//! resolved hostname; and a whole load, which cuts the flows of every source the new ruleset
//! blocks, its dynamic sets' current elements included (what an older ruleset, or a cut the
//! kernel refused, left). The set changes first, so the source can start no new flow while its
//! old ones are deleted; the next packet of a cut flow is `new` and meets step 3. Flows the
//! host's own addresses opened are never cut. The kernel adds to the tiers' ban sets itself:
//! the daemon cuts those sources' flows when the kernel hands them over ([`crate::tier_bans`]).
//!
//! [`FlowCut`] wraps the backend, so that no caller can add to those sets and forget the cut.
//! A cut the kernel refuses (no ctnetlink) never undoes or fails the change that blocked the
//! sources: it is reported on standard error, which is the journal for the daemon, and the
//! flows run until they end as they would have before pbxfw had the fast path.

use std::net::IpAddr;

use pbxfw_core::{
    names, ApplyOptions, Backend, BackendError, Element, ElementStatus, Family, Op, Prefix, Range,
    Ruleset, SetEdit, SetKind, SetUpdate, Status,
};
use pbxfw_nft::netlink::conntrack;

/// A backend whose additions to blocking sets cut the flows of what they added.
pub struct FlowCut(pub Box<dyn Backend>);

impl FlowCut {
    /// [`pbxfw_core::apply`] with its flow cut after the verification, and `verified` called
    /// between the two: an apply puts its record and its edit index in place (renames) while
    /// this thread cuts (a walk of the conntrack table), neither waiting for the other. The cut
    /// follows every load, verified or not: the kernel holds whatever the load put there.
    pub(crate) fn apply_then_cut(
        &self,
        rs: &Ruleset,
        opts: &ApplyOptions,
        verified: impl FnOnce(),
    ) -> Result<pbxfw_core::Applied, BackendError> {
        self.0.load(rs, opts)?;
        let applied = pbxfw_core::verify(self.0.as_ref(), rs, opts);
        if applied.is_ok() {
            verified();
        }
        self.cut_loaded(rs, opts);
        applied
    }

    /// Cut the flows of `blocked`, reporting a refusal (see the module's documentation).
    fn cut(&self, blocked: Vec<Prefix>) {
        if blocked.is_empty() {
            return;
        }
        if let Err(e) = conntrack::cut(&blocked, &local()) {
            self.refused(0, &e);
        }
    }

    /// After a whole load: cut the flows of every source `rs` blocks, statically or in its
    /// dynamic sets as the kernel now holds them. Nothing is read when the namespace tracks no
    /// connection; else the table is read first, and the sets only when some flow was opened
    /// from elsewhere than the host.
    fn cut_loaded(&self, rs: &Ruleset, opts: &ApplyOptions) {
        if conntrack::tracked() == Some(0) {
            return;
        }
        let local = local();
        // The kernel's text listing first (a fraction of a millisecond): the dump (9 ms on a
        // large host) only when a flow of a blocked source is there to cut.
        let openers = conntrack::openers();
        if let Some(o) = &openers {
            if o.iter().all(|(f, v)| {
                local
                    .iter()
                    .any(|a| Family::of(a) == *f && pbxfw_core::addr_value(a) == *v)
            }) {
                return;
            }
        } else {
            match conntrack::flows() {
                Ok(flows) if flows.iter().all(|f| f.opened_from(&local)) => return,
                Ok(_) => {}
                Err(e) => return self.refused(0, &e),
            }
        }
        let mut blocked = blocked_statically(rs);
        for (set, elements) in &opts.seed {
            blocked.extend(self::blocked(rs, set, elements));
        }
        for (name, set) in &rs.sets {
            if !names::blocks_sources(name) || !matches!(set.kind, SetKind::Dynamic(_)) {
                continue;
            }
            match self.held(name, set.family) {
                Ok(held) => {
                    let elements: Vec<Element> = held
                        .into_iter()
                        .map(|prefix| Element {
                            prefix,
                            timeout: None,
                        })
                        .collect();
                    blocked.extend(self::blocked(rs, name, &elements));
                }
                Err(e) => eprintln!(
                    "pbxfw: warning: could not read set {name} to cut its sources' flows ({e})"
                ),
            }
        }
        if let Some(o) = &openers {
            if !conntrack::any_opened(o, &blocked, &local) {
                return;
            }
        }
        let flows = match conntrack::flows() {
            Ok(f) => f,
            Err(e) => return self.refused(0, &e),
        };
        let doomed: Vec<&conntrack::Flow> = conntrack::matching(&flows, &blocked)
            .into_iter()
            .filter(|f| !f.opened_from(&local))
            .collect();
        if let Err(e) = conntrack::delete(&doomed) {
            self.refused(doomed.len(), &e);
        }
    }

    fn held(&self, name: &str, family: Family) -> Result<Vec<Prefix>, String> {
        held(self.0.as_ref(), name, family)
    }

    /// Report a cut the kernel refused: the sources stay blocked, their flows run on.
    fn refused(&self, flows: usize, e: &dyn std::fmt::Display) {
        let what = match flows {
            0 => "the flows of the sources it blocks".to_string(),
            n => format!("{n} flow(s) of the sources it blocks"),
        };
        eprintln!(
            "pbxfw: warning: the {} ruleset is in place, but {what} could not be cut ({e}); \
             they end when their peers stop",
            self.0.name(),
        );
    }
}

/// The prefixes the kernel holds in dynamic set `name` of `backend`: over netlink for nft
/// (`nft list set` would read the whole blacklist first), else as the backend lists them.
pub(crate) fn held(
    backend: &dyn Backend,
    name: &str,
    family: Family,
) -> Result<Vec<Prefix>, String> {
    if backend.name() == "nft" {
        let table = pbxfw_nft::Kernel::default().table;
        return pbxfw_nft::netlink::set_prefixes(&table, name, family, 1 << 20)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string());
    }
    backend
        .set_elements(name)
        .map(|held| {
            held.iter()
                .flat_map(|e| element_prefixes(&e.element))
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// The host's own addresses, whose flows are never cut (none when they cannot be read: a cut
/// then spares nothing, which only matters for a ban that covers the host itself).
pub(crate) fn local() -> Vec<IpAddr> {
    pbxfw_host::ifaddrs::local_addresses().unwrap_or_default()
}

/// The prefixes an element as a backend reports it stands for: an address, a network, or a
/// range (an interval set's), as prefixes.
fn element_prefixes(text: &str) -> Vec<Prefix> {
    let text = text.split_whitespace().next().unwrap_or("");
    if let Ok(p) = text.parse::<Prefix>() {
        return vec![p];
    }
    text.parse::<Range>()
        .map(|r| r.prefixes())
        .unwrap_or_default()
}

/// The prefixes `elements` of `set` block, widened to the set's key length (an IPv6 ban keyed
/// by /64 blocks the whole /64), or nothing when `set` blocks no sources.
fn blocked(rs: &Ruleset, set: &str, elements: &[Element]) -> Vec<Prefix> {
    if !names::blocks_sources(set) {
        return Vec::new();
    }
    let key_len = match rs.sets.get(set).map(|s| &s.kind) {
        Some(SetKind::Dynamic(d)) if !d.interval => Some(d.key_len),
        _ => None,
    };
    elements
        .iter()
        .map(|e| match key_len {
            Some(len) if e.prefix.prefix_len() > len => {
                Prefix::new(e.prefix.addr(), len).unwrap_or(e.prefix)
            }
            _ => e.prefix,
        })
        .collect()
}

/// Every source `rs` blocks statically (the blacklist's networks and addresses).
fn blocked_statically(rs: &Ruleset) -> Vec<Prefix> {
    rs.sets
        .iter()
        .filter(|(name, _)| names::blocks_sources(name))
        .filter_map(|(_, s)| match &s.kind {
            SetKind::Static(st) => Some(st.elements().iter().map(|(p, _)| *p)),
            SetKind::Dynamic(_) => None,
        })
        .flatten()
        .collect()
}

impl Backend for FlowCut {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn render(&self, rs: &Ruleset) -> Result<String, BackendError> {
        self.0.render(rs)
    }

    fn load(&self, rs: &Ruleset, opts: &ApplyOptions) -> Result<(), BackendError> {
        self.0.load(rs, opts)?;
        self.cut_loaded(rs, opts);
        Ok(())
    }

    fn patch_static(
        &self,
        new: &Ruleset,
        fingerprint: &str,
        changes: &[SetUpdate],
    ) -> Result<(), BackendError> {
        self.0.patch_static(new, fingerprint, changes)?;
        self.cut(
            changes
                .iter()
                .filter(|c| c.op == Op::Add)
                .flat_map(|c| blocked(new, &c.set, &c.elements))
                .collect(),
        );
        Ok(())
    }

    fn update_set(
        &self,
        rs: &Ruleset,
        set: &str,
        op: Op,
        elements: &[Element],
    ) -> Result<(), BackendError> {
        self.0.update_set(rs, set, op, elements)?;
        if op == Op::Add {
            self.cut(blocked(rs, set, elements));
        }
        Ok(())
    }

    fn edit_sets(&self, rs: &Ruleset, edits: &[SetEdit]) -> Result<(), BackendError> {
        self.0.edit_sets(rs, edits)?;
        self.cut(
            edits
                .iter()
                .filter_map(|e| match e {
                    SetEdit::Add(set, elements) => Some(blocked(rs, set, elements)),
                    SetEdit::Flush(_) | SetEdit::Remove(..) => None,
                })
                .flatten()
                .collect(),
        );
        Ok(())
    }

    fn fingerprint(&self) -> Result<Option<String>, BackendError> {
        self.0.fingerprint()
    }

    fn instance(&self) -> Result<Option<String>, BackendError> {
        self.0.instance()
    }

    fn status(&self) -> Result<Status, BackendError> {
        self.0.status()
    }

    fn status_except(&self, skip: &[String]) -> Result<Status, BackendError> {
        self.0.status_except(skip)
    }

    fn set_elements(&self, set: &str) -> Result<Vec<ElementStatus>, BackendError> {
        self.0.set_elements(set)
    }

    fn disable(&self) -> Result<bool, BackendError> {
        self.0.disable()
    }
}
