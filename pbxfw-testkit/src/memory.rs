//! An in-memory backend: the [`Backend`] contract without a kernel, so that the runtime's
//! procedures and the daemon's event → action → set update path can be tested without root.
//! What a packet gets is the reference evaluator's answer over the loaded ruleset and the sets'
//! current elements ([`Memory::decide`]).
//!
//! It keeps what the kernel backends keep: dynamic elements across applies, a load that fails
//! changes nothing, removing an absent element is not an error. It has no clock of its own:
//! timeouts run down when the test says time passed ([`Memory::pass`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use pbxfw_core::Prefix;
use pbxfw_core::{
    ApplyOptions, Backend, BackendError, Element, ElementStatus, Op, SetStatus, SetUpdate, Status,
};
use pbxfw_core::{Decision, DynamicState, Packet};
use pbxfw_core::{Ruleset, SetEdit, SetKind};

/// The backend's name in statuses and errors.
pub const NAME: &str = "memory";

#[derive(Debug, Clone)]
struct Loaded {
    rs: Ruleset,
    fingerprint: String,
    /// Set → element → timeout.
    elements: BTreeMap<String, BTreeMap<Prefix, Option<Duration>>>,
    instance: u64,
}

/// The in-memory backend. Shareable between threads (the daemon's and a test's).
#[derive(Debug, Default)]
pub struct Memory {
    loaded: Mutex<Option<Loaded>>,
    instances: Mutex<u64>,
}

impl Memory {
    /// An empty "kernel": pbxfw not loaded.
    pub fn new() -> Memory {
        Memory::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The elements of `set` now.
    pub fn elements(&self, set: &str) -> Vec<Prefix> {
        self.state()
            .as_ref()
            .and_then(|l| l.elements.get(set))
            .map(|e| e.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Let `elapsed` pass in the "kernel": timeouts run down, and elements whose timeout ran
    /// out are gone, as the kernel's are.
    pub fn pass(&self, elapsed: Duration) {
        if let Some(l) = self.state().as_mut() {
            for held in l.elements.values_mut() {
                held.retain(|_, t| match t {
                    Some(left) if *left <= elapsed => false,
                    Some(left) => {
                        *left -= elapsed;
                        true
                    }
                    None => true,
                });
            }
        }
    }

    /// The dynamic sets' elements, as the reference evaluator takes them.
    pub fn dynamic_state(&self) -> DynamicState {
        let state = self.state();
        let mut d = DynamicState::default();
        if let Some(l) = state.as_ref() {
            for (name, set) in &l.rs.sets {
                if matches!(set.kind, SetKind::Dynamic(_)) {
                    if let Some(e) = l.elements.get(name) {
                        d.elements.insert(name.clone(), e.keys().copied().collect());
                    }
                }
            }
        }
        d
    }

    /// What `packet` gets from the loaded ruleset and the sets as they are; `None` when pbxfw
    /// is not loaded.
    pub fn decide(&self, packet: &Packet) -> Option<Decision> {
        let rs = self.state().as_ref()?.rs.clone();
        Some(pbxfw_core::eval(&rs, packet, &self.dynamic_state()))
    }

    /// The key an element has in `set`: hash sets hold addresses masked to their key length.
    fn key(rs: &Ruleset, set: &str, e: &Element) -> Result<Prefix, BackendError> {
        let s = rs
            .sets
            .get(set)
            .ok_or_else(|| BackendError::NoSet(set.into()))?;
        if e.prefix.family() != s.family {
            return Err(BackendError::Kernel(format!(
                "{}: not an {} element of set {set}",
                e.prefix, s.family
            )));
        }
        Ok(match &s.kind {
            SetKind::Dynamic(d) if d.interval => e.prefix,
            SetKind::Dynamic(d) => {
                Prefix::new(e.prefix.addr(), d.key_len.min(e.prefix.family().bits()))
                    .map_err(|m| BackendError::Kernel(m.to_string()))?
            }
            SetKind::Static(st) if st.is_hosts() => Prefix::host(e.prefix.addr()),
            SetKind::Static(_) => e.prefix,
        })
    }
}

impl Backend for Memory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn render(&self, rs: &Ruleset) -> Result<String, BackendError> {
        Ok(rs.to_text())
    }

    fn load(&self, rs: &Ruleset, opts: &ApplyOptions) -> Result<(), BackendError> {
        if opts.custom.as_deref().is_some_and(|c| !c.trim().is_empty()) {
            return Err(BackendError::Unsupported {
                backend: NAME,
                feature: "custom rules".into(),
            });
        }
        let mut state = self.state();
        // Dynamic sets keep their elements; static sets hold what the ruleset says.
        let mut elements: BTreeMap<String, BTreeMap<Prefix, Option<Duration>>> = BTreeMap::new();
        for (name, set) in &rs.sets {
            let kept = match (&set.kind, state.as_ref()) {
                (SetKind::Dynamic(_), Some(old)) => old
                    .elements
                    .get(name)
                    .filter(|_| {
                        old.rs.sets.get(name).is_some_and(|o| {
                            o.family == set.family && matches!(o.kind, SetKind::Dynamic(_))
                        })
                    })
                    .cloned()
                    .unwrap_or_default(),
                (SetKind::Dynamic(_), None) => BTreeMap::new(),
                (SetKind::Static(s), _) => s.elements().iter().map(|(p, _)| (*p, None)).collect(),
            };
            elements.insert(name.clone(), kept);
        }
        // Seeds are checked before anything changes, as the kernel checks a transaction.
        for (set, seeds) in &opts.seed {
            let Some(SetKind::Dynamic(d)) = rs.sets.get(set).map(|s| &s.kind) else {
                return Err(BackendError::Check(format!(
                    "cannot seed set {set}: not a dynamic set of the ruleset"
                )));
            };
            for e in seeds {
                if e.prefix.family() != rs.sets[set].family || e.prefix.prefix_len() != d.key_len {
                    return Err(BackendError::Check(format!(
                        "cannot seed set {set}: {} is not a /{} key",
                        e.prefix, d.key_len
                    )));
                }
                elements
                    .get_mut(set)
                    .expect("every set has an entry")
                    .insert(e.prefix, e.timeout);
            }
        }
        let instance = match state.as_ref() {
            Some(old) => old.instance,
            None => {
                let mut n = self.instances.lock().unwrap_or_else(|e| e.into_inner());
                *n += 1;
                *n
            }
        };
        *state = Some(Loaded {
            rs: rs.clone(),
            fingerprint: rs.fingerprint(),
            elements,
            instance,
        });
        Ok(())
    }

    fn patch_static(
        &self,
        new: &Ruleset,
        fingerprint: &str,
        changes: &[SetUpdate],
    ) -> Result<(), BackendError> {
        let mut state = self.state();
        let Some(l) = state.as_mut() else {
            return Err(BackendError::NotLoaded);
        };
        // All or nothing.
        let mut elements = l.elements.clone();
        for c in changes {
            if !matches!(
                new.sets.get(&c.set).map(|s| &s.kind),
                Some(SetKind::Static(_))
            ) {
                return Err(BackendError::NoSet(c.set.clone()));
            }
            let set = elements
                .get_mut(&c.set)
                .ok_or_else(|| BackendError::NoSet(c.set.clone()))?;
            for e in &c.elements {
                let key = Memory::key(new, &c.set, e)?;
                match c.op {
                    Op::Add => {
                        set.insert(key, None);
                    }
                    Op::Remove => {
                        set.remove(&key);
                    }
                }
            }
        }
        l.elements = elements;
        l.rs = new.clone();
        l.fingerprint = fingerprint.to_string();
        Ok(())
    }

    fn update_set(
        &self,
        rs: &Ruleset,
        set: &str,
        op: Op,
        elements: &[Element],
    ) -> Result<(), BackendError> {
        let mut state = self.state();
        let Some(l) = state.as_mut() else {
            return Err(BackendError::NotLoaded);
        };
        if !rs.sets.contains_key(set) || !l.rs.sets.contains_key(set) {
            return Err(BackendError::NoSet(set.into()));
        }
        let keys = elements
            .iter()
            .map(|e| Ok((Memory::key(rs, set, e)?, e.timeout)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        let held = l.elements.entry(set.to_string()).or_default();
        for (key, timeout) in keys {
            match op {
                Op::Add => {
                    held.insert(key, timeout);
                }
                Op::Remove => {
                    held.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn edit_sets(&self, rs: &Ruleset, edits: &[SetEdit]) -> Result<(), BackendError> {
        let mut state = self.state();
        let Some(l) = state.as_mut() else {
            return Err(BackendError::NotLoaded);
        };
        // All or nothing, as one kernel transaction.
        let mut elements = l.elements.clone();
        for e in edits {
            let set = e.set();
            if !matches!(rs.sets.get(set).map(|s| &s.kind), Some(SetKind::Dynamic(_))) {
                return Err(BackendError::NoSet(set.into()));
            }
            let held = elements.entry(set.to_string()).or_default();
            match e {
                SetEdit::Flush(_) => held.clear(),
                SetEdit::Add(_, els) => {
                    for el in els {
                        held.insert(Memory::key(rs, set, el)?, el.timeout);
                    }
                }
                SetEdit::Remove(_, els) => {
                    for el in els {
                        if held.remove(&Memory::key(rs, set, el)?).is_none() {
                            return Err(BackendError::Kernel(format!(
                                "{}: no such element in set {set}",
                                el.prefix
                            )));
                        }
                    }
                }
            }
        }
        l.elements = elements;
        Ok(())
    }

    fn fingerprint(&self) -> Result<Option<String>, BackendError> {
        Ok(self.state().as_ref().map(|l| l.fingerprint.clone()))
    }

    fn instance(&self) -> Result<Option<String>, BackendError> {
        Ok(self
            .state()
            .as_ref()
            .map(|l| format!("memory {}", l.instance)))
    }

    fn status(&self) -> Result<Status, BackendError> {
        let state = self.state();
        let Some(l) = state.as_ref() else {
            return Ok(Status::not_loaded(NAME));
        };
        let sets = l
            .elements
            .iter()
            .map(|(name, held)| {
                let dynamic = matches!(
                    l.rs.sets.get(name).map(|s| &s.kind),
                    Some(SetKind::Dynamic(_))
                );
                SetStatus {
                    name: name.clone(),
                    size: held.len(),
                    elements: if dynamic {
                        held.iter()
                            .map(|(p, t)| ElementStatus {
                                element: if p.prefix_len() == p.family().bits() {
                                    p.addr().to_string()
                                } else {
                                    p.to_string()
                                },
                                expires_in: t.map(|t| t.as_secs()),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        Ok(Status {
            backend: NAME.into(),
            loaded: true,
            fingerprint: Some(l.fingerprint.clone()),
            sets,
            counters: Vec::new(),
        })
    }

    fn disable(&self) -> Result<bool, BackendError> {
        Ok(self.state().take().is_some())
    }
}
