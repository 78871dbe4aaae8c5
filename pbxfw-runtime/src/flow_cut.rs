//! The flow cut: every backend the runtime opens deletes the connection-tracking entries of the
//! sources it has just blocked.
//!
//! The ruleset accepts established packets at step 2 of the packet path, before the blacklist
//! and bans of step 3 (docs/policy.md, "The packet path"): a flow met those checks when it
//! started. So that a source blacklisted or banned later still loses its flows at once, every
//! kernel write that adds to a set holding blocked sources ([`names::blocks_sources`]: the
//! blacklist, resolved blacklisted hostnames, the fleet's bans, the state machine's bans) is
//! followed by a cut of the flows whose opener or peer lies in what was added: a whole apply
//! (the static blacklist and every seeded ban), a static patch of the edit path, a ban, a
//! fleet pull, a resolved hostname. The set changes first, so the source can start no new flow
//! while its old ones are deleted; the next packet of a cut flow is `new` and meets step 3.
//!
//! [`FlowCut`] wraps the backend, so that no caller can add to those sets and forget the cut.
//! A cut the kernel refuses (no ctnetlink) never undoes or fails the change that blocked the
//! sources: it is reported on standard error, which is the journal for the daemon, and the
//! flows run until they end as they would have before pbxfw had the fast path.

use pbxfw_core::{
    names, ApplyOptions, Backend, BackendError, Element, ElementStatus, Op, Prefix, Ruleset,
    SetEdit, SetKind, SetUpdate, Status,
};
use pbxfw_nft::netlink::conntrack;

/// A backend whose additions to blocking sets cut the flows of what they added.
pub struct FlowCut(pub Box<dyn Backend>);

impl FlowCut {
    /// Cut the flows of `blocked`, reporting a refusal (see the module's documentation).
    fn cut(&self, blocked: Vec<Prefix>) {
        if blocked.is_empty() {
            return;
        }
        if let Err(e) = conntrack::cut(&blocked) {
            eprintln!(
                "pbxfw: warning: {} blocked source(s) are in the {} ruleset, but their \
                 established flows could not be cut ({e}); they end when their peers stop",
                blocked.len(),
                self.0.name()
            );
        }
    }
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
        let mut cut = blocked_statically(rs);
        for (set, elements) in &opts.seed {
            cut.extend(blocked(rs, set, elements));
        }
        self.cut(cut);
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
