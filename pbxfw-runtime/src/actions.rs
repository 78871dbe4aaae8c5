//! Carrying out the responsive machine's actions in the kernel, as the daemon does and as an
//! embedder that runs its own machine (`pbxfw_kernel_carry_out`, `pbxfw.carry_out`) does: the
//! actions name sets by role, this module finds the sets of the applied ruleset and batches a
//! burst into one update per set and operation.

use std::collections::BTreeMap;
use std::time::Duration;

use pbxfw_core::Ruleset;
use pbxfw_core::{Action, SetRole};
use pbxfw_core::{Backend, BackendError, Element, Op};
use pbxfw_core::{Family, Prefix};
use serde::Serialize;

/// What carrying out a burst of actions did.
#[derive(Debug, Default, Serialize)]
pub struct CarriedOut {
    /// Set updates made (one per set and operation).
    pub updates: usize,
    /// Elements added or removed.
    pub elements: usize,
    /// Updates the kernel refused; the others were made.
    pub failures: Vec<UpdateFailure>,
}

impl CarriedOut {
    /// Itself when every update was made; else the error naming each refused one (the others
    /// were made), as the bindings report it.
    pub fn into_result(self) -> crate::Result<CarriedOut> {
        if self.failures.is_empty() {
            return Ok(self);
        }
        let lines: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
        Err(crate::Error::Backend(BackendError::Kernel(format!(
            "{} of {} set updates refused (the others were made):\n{}",
            self.failures.len(),
            self.failures.len() + self.updates,
            lines.join("\n")
        ))))
    }
}

/// One set update the kernel refused.
#[derive(Debug, Serialize)]
pub struct UpdateFailure {
    /// The set, by role.
    #[serde(flatten)]
    pub role: SetRole,
    /// Its family.
    pub family: Family,
    /// `add` or `remove`.
    pub op: &'static str,
    /// How many elements it carried.
    pub elements: usize,
    /// Why.
    #[serde(serialize_with = "as_text")]
    pub error: BackendError,
}

fn as_text<S: serde::Serializer>(e: &BackendError, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(e)
}

impl std::fmt::Display for UpdateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match &self.role {
            SetRole::Ban => "ban".to_string(),
            SetRole::TierBan => "tier ban".to_string(),
            SetRole::Clamped => "slow lane".to_string(),
            SetRole::Registered => "registered".to_string(),
            SetRole::Grant(s) => format!("grant of {s}"),
        };
        write!(
            f,
            "{} {} element(s) of the {role} set ({}): {}",
            self.op, self.elements, self.family, self.error
        )
    }
}

/// Carry out `actions`, decided at `at` (Unix seconds), in `kernel`, whose loaded ruleset is
/// `rs`. The last change to each element wins, and each set gets one update per operation (one
/// netlink transaction for nft, one `ipset restore` for iptables), so a burst of bans costs a
/// few kernel calls, not one each. Removals go first: an element moving from one set to
/// another (a registration) never has a moment in neither. Removing an element that is not
/// there (an expired ban) is not an error. A refused update does not stop the others.
pub fn carry_out(kernel: &dyn Backend, rs: &Ruleset, actions: &[Action], at: u64) -> CarriedOut {
    let mut last: BTreeMap<(SetRole, Prefix), (bool, Option<u64>)> = BTreeMap::new();
    for a in actions {
        for ch in a.set_changes(at) {
            last.insert((ch.role, ch.prefix), (ch.add, ch.timeout));
        }
    }
    let mut grouped: BTreeMap<(bool, SetRole, Family), Vec<Element>> = BTreeMap::new();
    for ((role, prefix), (add, timeout)) in last {
        grouped
            .entry((add, role, prefix.family()))
            .or_default()
            .push(Element {
                prefix,
                timeout: timeout.map(Duration::from_secs),
            });
    }
    let mut done = CarriedOut::default();
    // `false` (remove) sorts before `true` (add).
    for ((add, role, family), elements) in grouped {
        let op = if add { Op::Add } else { Op::Remove };
        match kernel.update_set(rs, &role.set(family), op, &elements) {
            Ok(()) => {
                done.updates += 1;
                done.elements += elements.len();
            }
            Err(error) => done.failures.push(UpdateFailure {
                role,
                family,
                op: if add { "add" } else { "remove" },
                elements: elements.len(),
                error,
            }),
        }
    }
    done
}
