//! What every kernel backend offers, in one trait of primitives: [`Backend`]; and the
//! procedures built on them, written once for every backend: [`apply`] (load, then verify the
//! fingerprint the kernel reports), [`sync`] (set elements only when that is all that changed,
//! else a full apply) and [`static_changes`] (the element difference of two rulesets).
//!
//! The core does no I/O; this module only names the operations and the data they exchange, so
//! that every front end drives nftables and iptables hosts the same way. Each backend crate
//! implements the trait (`pbxfw_nft::Kernel`, `pbxfw_ipt::Kernel`); the test kit has an
//! in-memory one, and one contract suite runs against all of them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ir::Ruleset;
use crate::net::Prefix;

/// The longest element timeout any backend is given, in seconds: 365 days, the longest ban a
/// policy may ask for. Both of the kernel's paths accept it (`nft` refuses `timeout` values of
/// 10^8 seconds and more; netlink takes milliseconds in 64 bits), so an expiry from outside —
/// a registration's `expires` — can never make a load or a re-seed fail.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 86_400;

/// Add or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Add elements (existing ones are left as they are).
    Add,
    /// Remove elements (through [`Backend::update_set`], an absent element is not an error: an
    /// expired ban is already gone).
    Remove,
}

/// One element: a prefix (a single address for hash sets) and an optional timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    /// The key. Hash sets take addresses masked to their key length; interval sets take any
    /// prefix.
    pub prefix: Prefix,
    /// Time until the element expires (sets with timeouts only).
    pub timeout: Option<Duration>,
}

/// One edit of a dynamic set, for [`Backend::edit_sets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetEdit {
    /// Remove every element.
    Flush(String),
    /// Add elements (to give one already there another timeout, remove it first).
    Add(String, Vec<Element>),
    /// Remove elements. Through nft, an absent one (expired meanwhile) refuses the whole
    /// transaction: a caller that may meet one starts again from a flush.
    Remove(String, Vec<Element>),
}

impl SetEdit {
    /// The set edited.
    pub fn set(&self) -> &str {
        match self {
            SetEdit::Flush(s) | SetEdit::Add(s, _) | SetEdit::Remove(s, _) => s,
        }
    }
}

/// Extra inputs of an apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Add a counter to every rule (nft; iptables rules always count).
    pub counters: bool,
    /// Elements to (re)seed into dynamic sets, e.g. bans restored from the daemon's state
    /// after a reboot.
    pub seed: BTreeMap<String, Vec<Element>>,
    /// Custom rules: the body of the `custom` chain in the backend's own syntax (nft rule
    /// statements; for iptables, rule arguments such as `-p tcp --dport 8443 -j ACCEPT`, a
    /// leading `-4 `/`-6 ` keeping a line to one family). The kernel checks them before they
    /// go live; refused rules leave everything as it was.
    pub custom: Option<String>,
    /// The ruleset's fingerprint, when the caller has computed it already (it reads every
    /// static element: tens of milliseconds with a 100,000-entry blacklist); `None` computes
    /// it. It must be the fingerprint of the ruleset applied: the kernel is marked with it.
    pub fingerprint: Option<String>,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The fingerprint now in the kernel (read back and checked).
    pub fingerprint: String,
}

/// What a [`sync`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Synced {
    /// The fingerprint now in the kernel.
    pub fingerprint: String,
    /// Whether only set elements were sent (no reload).
    pub incremental: bool,
    /// Elements added (incremental only).
    pub added: usize,
    /// Elements removed (incremental only).
    pub removed: usize,
    /// Why the whole ruleset was applied instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Synced {
    /// A sync that applied the whole ruleset, and why.
    pub fn full(fingerprint: String, reason: String) -> Synced {
        Synced {
            fingerprint,
            incremental: false,
            added: 0,
            removed: 0,
            reason: Some(reason),
        }
    }
}

/// Elements to add to or remove from one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetUpdate {
    /// The set (the IR's name).
    pub set: String,
    /// Add or remove.
    pub op: Op,
    /// The elements.
    pub elements: Vec<Element>,
}

/// Why `old → new` cannot be sent as set elements only, given the fingerprint the kernel holds
/// (`loaded`); `None` when it can: the kernel holds `old`, and the two rulesets differ in static
/// set elements and nothing else. [`sync`] decides by this for every backend.
pub fn full_apply_reason(loaded: Option<&str>, old: &Ruleset, new: &Ruleset) -> Option<String> {
    match loaded {
        None => return Some("pbxfw was not loaded".into()),
        Some(fp) if fp != old.fingerprint() => {
            return Some(format!(
                "the kernel holds ruleset {fp}, not the one the change starts from"
            ))
        }
        Some(_) => {}
    }
    let without_static_elements = |rs: &Ruleset| {
        let mut rs = rs.clone();
        for set in rs.sets.values_mut() {
            if let crate::ir::SetKind::Static(s) = &mut set.kind {
                *s = Default::default();
            }
        }
        rs
    };
    (without_static_elements(old) != without_static_elements(new))
        .then(|| "the change is more than static set elements".into())
}

/// The static set elements that differ between `old` and `new`, as updates: every removal
/// before any addition, so that an element moving between sets never is in neither.
pub fn static_changes(old: &Ruleset, new: &Ruleset) -> Vec<SetUpdate> {
    use std::collections::BTreeSet;
    let mut removals = Vec::new();
    let mut additions = Vec::new();
    for (name, set) in &new.sets {
        let (crate::ir::SetKind::Static(n), Some(crate::ir::SetKind::Static(o))) =
            (&set.kind, old.sets.get(name).map(|s| &s.kind))
        else {
            continue;
        };
        let olds: BTreeSet<Prefix> = o.elements().iter().map(|(p, _)| *p).collect();
        let news: BTreeSet<Prefix> = n.elements().iter().map(|(p, _)| *p).collect();
        let update = |op: Op, elements: Vec<&Prefix>| SetUpdate {
            set: name.clone(),
            op,
            elements: elements
                .into_iter()
                .map(|p| Element {
                    prefix: *p,
                    timeout: None,
                })
                .collect(),
        };
        let gone: Vec<&Prefix> = olds.difference(&news).collect();
        let fresh: Vec<&Prefix> = news.difference(&olds).collect();
        if !gone.is_empty() {
            removals.push(update(Op::Remove, gone));
        }
        if !fresh.is_empty() {
            additions.push(update(Op::Add, fresh));
        }
    }
    removals.extend(additions);
    removals
}

/// Load `rs` into `kernel`, then check that the kernel reports its fingerprint: what every
/// front end means by an apply. Dynamic sets keep their elements.
pub fn apply(
    kernel: &dyn Backend,
    rs: &Ruleset,
    opts: &ApplyOptions,
) -> Result<Applied, BackendError> {
    kernel.load(rs, opts)?;
    verify(kernel, rs, opts)
}

/// The check of [`apply`] after its load: the kernel reports the fingerprint of `rs` (the one
/// `opts` carries, when the caller computed it).
pub fn verify(
    kernel: &dyn Backend,
    rs: &Ruleset,
    opts: &ApplyOptions,
) -> Result<Applied, BackendError> {
    match &opts.fingerprint {
        Some(fp) => verify_fingerprint(kernel, fp.clone()),
        None => verify_loaded(kernel, rs),
    }
}

/// Read the fingerprint back: the kernel must hold `rs`.
pub fn verify_loaded(kernel: &dyn Backend, rs: &Ruleset) -> Result<Applied, BackendError> {
    verify_fingerprint(kernel, rs.fingerprint())
}

/// Read the fingerprint back: the kernel must hold the ruleset of fingerprint `expected`.
fn verify_fingerprint(kernel: &dyn Backend, expected: String) -> Result<Applied, BackendError> {
    let found = kernel.fingerprint()?;
    if found.as_deref() == Some(expected.as_str()) {
        Ok(Applied {
            fingerprint: expected,
        })
    } else {
        Err(BackendError::Verify { expected, found })
    }
}

/// Bring `kernel` from `old` (what the caller believes is loaded) to `new`. When only static
/// set elements differ (a blacklist entry, a trusted host) and the kernel really holds `old`,
/// only the difference is sent ([`Backend::patch_static`], which also marks the new
/// fingerprint) and verified; otherwise, or when the kernel refuses the patch, `new` is applied
/// whole (which keeps dynamic elements too).
pub fn sync(
    kernel: &dyn Backend,
    old: &Ruleset,
    new: &Ruleset,
    opts: &ApplyOptions,
) -> Result<Synced, BackendError> {
    let full = |reason: String| -> Result<Synced, BackendError> {
        let a = apply(kernel, new, opts)?;
        Ok(Synced::full(a.fingerprint, reason))
    };
    let loaded = kernel.fingerprint()?;
    if let Some(reason) = full_apply_reason(loaded.as_deref(), old, new) {
        return full(reason);
    }
    let changes = static_changes(old, new);
    let count = |op: Op| {
        changes
            .iter()
            .filter(|c| c.op == op)
            .map(|c| c.elements.len())
            .sum()
    };
    if let Err(e) = kernel.patch_static(new, &new.fingerprint(), &changes) {
        return full(format!("the kernel refused the set update ({e})"));
    }
    let a = verify_loaded(kernel, new)?;
    Ok(Synced {
        fingerprint: a.fingerprint,
        incremental: true,
        added: count(Op::Add),
        removed: count(Op::Remove),
        reason: None,
    })
}

/// One dynamic element as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementStatus {
    /// The address or prefix.
    pub element: String,
    /// Seconds until it expires, when it has a timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// A set as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStatus {
    /// Set name (the IR's name).
    pub name: String,
    /// Number of elements (interval sets count each range once).
    pub size: usize,
    /// The elements of sets with timeouts (bans, registrations, grants), with remaining time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<ElementStatus>,
}

/// A rule's counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounter {
    /// Chain.
    pub chain: String,
    /// The rule's comment (its origin).
    pub origin: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// What `pbxfw status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Which backend answered.
    pub backend: String,
    /// Whether pbxfw's rules are loaded.
    pub loaded: bool,
    /// Their fingerprint.
    pub fingerprint: Option<String>,
    /// Every set.
    pub sets: Vec<SetStatus>,
    /// Counters of rules that have one.
    pub counters: Vec<RuleCounter>,
}

impl Status {
    /// The status of a host where pbxfw is not loaded.
    pub fn not_loaded(backend: &str) -> Status {
        Status {
            backend: backend.into(),
            loaded: false,
            fingerprint: None,
            sets: Vec::new(),
            counters: Vec::new(),
        }
    }
}

/// Why a backend operation failed. Apply errors name their stage; in every case the kernel
/// still holds what it held before.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Check stage: the IR needs something this backend cannot express.
    #[error("check: the {backend} backend cannot express {feature}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// What.
        feature: String,
    },
    /// Check stage: the ruleset could not be lowered (a compiler bug) or a seed does not fit.
    #[error("check: {0}")]
    Check(String),
    /// A tool (`nft`, `iptables-restore`, `ipset`) could not be run.
    #[error("cannot run {tool}: {message}")]
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        message: String,
    },
    /// Load stage: the kernel refused the ruleset; nothing changed.
    #[error("load: the kernel refused the ruleset, nothing changed: {0}")]
    Load(String),
    /// Verify stage: the kernel does not hold what was loaded.
    #[error("verify: expected fingerprint {expected}, the kernel holds {found:?}")]
    Verify {
        /// What was loaded.
        expected: String,
        /// What was read back.
        found: Option<String>,
    },
    /// pbxfw is not loaded.
    #[error("pbxfw is not loaded")]
    NotLoaded,
    /// No such set in the loaded ruleset.
    #[error("no set {0} in the loaded ruleset")]
    NoSet(String),
    /// Reading or changing the kernel failed.
    #[error("{0}")]
    Kernel(String),
    /// Refused for safety: the lock file exists (`disable`).
    #[error("refused: the lock file {0} exists; remove it to disable pbxfw")]
    Locked(String),
}

/// A kernel backend's primitives: load rulesets into the current network namespace, report
/// and remove them, and change set elements without a reload. Only pbxfw's own table, chains
/// and sets are ever touched. The procedures over them ([`apply`], [`sync`]) are this
/// module's, the same for every backend.
pub trait Backend {
    /// The backend's name (`nft`, `iptables`).
    fn name(&self) -> &'static str;

    /// The text the backend would load for `rs` (what `pbxfw compile` prints).
    fn render(&self, rs: &Ruleset) -> Result<String, BackendError>;

    /// Load `rs` with the seeds and custom rules of `opts`, all or nothing: dynamic sets keep
    /// their elements, and a refusal leaves the kernel as it was. (Use [`apply`], which also
    /// verifies.)
    fn load(&self, rs: &Ruleset, opts: &ApplyOptions) -> Result<(), BackendError>;

    /// Make the static-set `changes` to the loaded ruleset and mark it as holding the ruleset
    /// whose fingerprint is `fingerprint`. `new` defines the changed sets (it may hold only
    /// those: the policy edit path does not build the whole ruleset). (Use [`sync`], which
    /// decides when this is enough, and verifies.)
    fn patch_static(
        &self,
        new: &Ruleset,
        fingerprint: &str,
        changes: &[SetUpdate],
    ) -> Result<(), BackendError>;

    /// Add or remove elements of a loaded set (`rs` is the ruleset that was applied). Removing
    /// an absent element is not an error.
    fn update_set(
        &self,
        rs: &Ruleset,
        set: &str,
        op: Op,
        elements: &[Element],
    ) -> Result<(), BackendError>;

    /// Make `edits` to dynamic sets of the loaded ruleset `rs`, in order, as one kernel
    /// transaction where the backend has them (nft: packets never see a set half written, and
    /// a refusal changes nothing); the iptables backend makes them in one `ipset restore`.
    fn edit_sets(&self, rs: &Ruleset, edits: &[SetEdit]) -> Result<(), BackendError>;

    /// The fingerprint of the loaded ruleset, or `None` when pbxfw is not loaded.
    fn fingerprint(&self) -> Result<Option<String>, BackendError>;

    /// An identifier of the loaded ruleset's dynamic sets as the kernel holds them: the same
    /// as long as they keep their elements (an apply keeps them), another once they were
    /// created anew (the table deleted and loaded again), which lost every ban and
    /// registration in them. `None` when pbxfw is not loaded, or when the backend cannot tell.
    fn instance(&self) -> Result<Option<String>, BackendError> {
        Ok(None)
    }

    /// What is loaded.
    fn status(&self) -> Result<Status, BackendError>;

    /// [`Backend::status`] without the sets named in `skip`. Backends that must read a set
    /// whole to count it do not read those (what the metrics count otherwise).
    fn status_except(&self, skip: &[String]) -> Result<Status, BackendError> {
        let mut s = self.status()?;
        s.sets.retain(|x| !skip.contains(&x.name));
        Ok(s)
    }

    /// The elements of one set with timeouts, with their remaining time (empty when the set
    /// is not loaded). Backends that can read one set alone do: a large blacklist is not read
    /// to look at a few bans.
    fn set_elements(&self, set: &str) -> Result<Vec<ElementStatus>, BackendError> {
        Ok(self
            .status()?
            .sets
            .into_iter()
            .find(|s| s.name == set)
            .map(|s| s.elements)
            .unwrap_or_default())
    }

    /// Remove everything pbxfw owns, and nothing else. Returns whether anything was loaded.
    fn disable(&self) -> Result<bool, BackendError>;
}
