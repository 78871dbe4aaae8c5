//! Applying a policy, as every front end does it: anti-lockout for the sessions the request
//! comes from, the custom rules, the confirmation timer, the applied record (what a rollback
//! returns to), and the discovery kept for `status`. Disabling, with the lock file.

use std::net::IpAddr;

use pbxfw_core::ApplyOptions;
use serde::{Deserialize, Serialize};

use crate::backends::BackendName;
use crate::error::{Error, Refusal, Result};
use crate::policy::Loaded;

/// How to apply.
#[derive(Debug, Clone, Default)]
pub struct ApplyRequest {
    /// The backend.
    pub backend: BackendName,
    /// A counter on every rule (nft).
    pub counters: bool,
    /// Roll back after this many seconds unless confirmed.
    pub confirm: Option<u64>,
    /// The administrators the request comes from, whose access must survive (`--admin`, a web
    /// front end's client), besides `$SSH_CONNECTION` and `settings.admins`.
    pub admins: Vec<crate::safety::Admin>,
    /// Apply even if an administrator would be cut off.
    pub force: bool,
    /// How the policy's hostnames are resolved when some have no answer yet.
    pub dns: crate::names::DnsOptions,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// The fingerprint now loaded.
    pub fingerprint: String,
    /// Milliseconds to lower, load and verify (none with a confirmation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<f64>,
    /// With a confirmation: when it is rolled back unless confirmed (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_at_ms: Option<u64>,
    /// What could not be kept on the host after the ruleset was loaded (the applied record,
    /// the discovery for `status`): the ruleset is loaded and verified all the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The policy's hostnames: looked up, and still empty (none when it names no host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<crate::names::AtApply>,
}

/// Apply `loaded`: refused (and nothing changes) when it would cut off a session the request
/// comes from, when an apply is waiting for confirmation (its timer would undo this one), or
/// when the custom rules file is not root's alone. A confirmation left waiting past its
/// deadline (nothing watched it) is rolled back first.
pub fn apply(loaded: &Loaded, req: &ApplyRequest) -> Result<ApplyOutcome> {
    if let Some(s) = req.confirm.filter(|s| !(1..=MAX_CONFIRM).contains(s)) {
        return Err(Error::Usage(format!(
            "confirm {s}: the window is 1 to {MAX_CONFIRM} seconds"
        )));
    }
    let sessions = crate::safety::sessions(&req.admins, &loaded.policy);
    if !req.force {
        crate::safety::check_lockout(&loaded.ruleset, &sessions)?;
    }
    crate::safety::overdue()?;
    crate::safety::refuse_if_pending()?;
    // The daemon never bans the sessions an apply came from.
    let from: Vec<IpAddr> = sessions
        .iter()
        .filter(|s| s.from != "settings.admins")
        .map(|s| s.addr)
        .collect();
    let kernel = req.backend.open_cutting();
    // Computed once: the load marks the kernel with it, the verification and the record
    // compare with it (each computation hashes every static element).
    let fingerprint = loaded.ruleset.fingerprint();
    let opts = ApplyOptions {
        counters: req.counters,
        custom: crate::safety::custom_rules(req.backend.as_str())?,
        fingerprint: Some(fingerprint.clone()),
        ..Default::default()
    };
    // Written beside the kernel's load, each to a temp file on disk, and put in place once the
    // kernel holds the ruleset (verified), while this thread cuts the flows of what it blocks:
    // the applied record (the canonical text of the ruleset), then the edit index. The
    // record is on disk (fsync) before the load ends and only renamed after it; the index is
    // never fsynced: an fsync costs as much as the load of a small ruleset.
    let (verified_tx, verified_rx) = std::sync::mpsc::channel::<()>();
    let (recorded_tx, recorded_rx) = std::sync::mpsc::channel::<bool>();
    let (index, outcome) = std::thread::scope(|s| {
        let index = s.spawn(move || {
            let staged =
                crate::edit_index::build_for(loaded).map(|i| crate::edit_index::prepare(&i));
            // A failed load drops the sender: nothing is put in place. The index goes in place
            // after the record, and only with it: an index of this ruleset beside the record
            // of the one before (a record that could not be written) would let `blacklist add`
            // patch a ruleset the record does not hold. The index's rename waits for no fsync:
            // a crash can leave an older index or a torn one, and the index is used only while
            // it matches the policy text (and the kernel, when it holds a ruleset), a torn one
            // not at all (`crate::edit_index`).
            let recorded = recorded_rx.recv().ok()?;
            Some(match staged {
                Some(Ok(staged)) if recorded => staged.commit_unsynced(),
                Some(Err(e)) if recorded => Err(e),
                _ => crate::edit_index::remove(),
            })
        });
        let (fingerprint, from) = (&fingerprint, &from);
        let record = s.spawn(move || {
            let staged = req.confirm.is_none().then(|| {
                crate::safety::prepare_applied(
                    req.backend.as_str(),
                    fingerprint.clone(),
                    loaded.ruleset.to_text(),
                    from,
                )
            });
            // The record names the backend `pbxfw boot` loads with when it is given none: a
            // change of backend is made durable before the command returns (see
            // `PreparedApplied::commit_unsynced` for why the rest need not be).
            let same_backend =
                crate::safety::applied_backend().as_deref() == Some(req.backend.as_str());
            verified_rx.recv().ok()?;
            let recorded = match staged {
                // `apply --confirm` records the ruleset itself (`safety::apply_with_confirm`).
                None => Ok(()),
                Some(Ok(staged)) if same_backend => staged.commit_unsynced(),
                Some(Ok(staged)) => staged.commit(),
                // Not staged: written now.
                Some(Err(_)) => crate::safety::record_applied_as(
                    req.backend.as_str(),
                    fingerprint.clone(),
                    loaded.ruleset.to_text(),
                    from,
                ),
            };
            let _ = recorded_tx.send(recorded.is_ok());
            Some(recorded)
        });
        let outcome = load(loaded, req, &kernel, &opts, from, record, verified_tx);
        (index.join().ok().flatten(), outcome)
    });
    let mut outcome = outcome?;
    let mut warnings = std::mem::take(&mut outcome.warnings);
    if let Some(Err(e)) = index {
        warnings.push(format!(
            "{e}: the edit index was not updated (the first blacklist edit reads the whole policy again)"
        ));
    }
    if let Err(e) = crate::policy::record_discovery(loaded) {
        warnings.push(format!("{e}: `status` does not show this discovery"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match crate::names::resolve_at_apply(loaded, req.backend, &req.dns, now) {
        Ok(names) => {
            if let Some(n) = &names {
                warnings.extend(n.errors.iter().cloned());
                warnings.extend(n.empty.iter().map(|(name, role)| {
                    format!(
                        "{name} ({role}) has no address yet: until it resolves, what it names is not in the ruleset (a trunk's signalling meets the responsive tiers); the daemon keeps trying, `pbxfw resolve` tries now"
                    )
                }));
            }
            outcome.hostnames = names;
        }
        Err(e) => warnings.push(format!(
            "{e}: the policy's hostnames were not resolved at this apply"
        )),
    }
    outcome.warnings = warnings;
    Ok(outcome)
}

/// Keep the ruleset an `apply --confirm` loaded. Returns its fingerprint. When that apply came
/// through the control socket asking to save its policy, the policy file is written now.
pub fn confirm() -> Result<String> {
    let fp = crate::safety::confirm()?.ok_or_else(|| {
        Error::Usage("nothing to confirm: no apply is waiting for confirmation".into())
    })?;
    // The ruleset stays whatever happens to the file: a failure to save says so, naming the
    // file, and the save is tried again at the next confirmation of the same ruleset.
    if let Err(e) = crate::control::saved_on_confirm(&fp) {
        return Err(Error::Usage(format!(
            "confirmed: ruleset {fp} stays; but the policy file asked to be saved with it was not written ({e})"
        )));
    }
    Ok(fp)
}

/// Go back now to the ruleset before an `apply --confirm`, on the backend that apply used.
/// Naming another backend is refused, and nothing is taken. Says what happened.
pub fn rollback(backend: Option<BackendName>) -> Result<String> {
    crate::safety::rollback(None, backend)
}

/// The longest confirmation window (a day): a pending confirmation refuses other applies,
/// unbans and `disable` until it ends.
pub const MAX_CONFIRM: u64 = 86_400;

/// Remove everything pbxfw owns (refused while the lock file exists, and while an apply waits
/// for confirmation: its timer would load the old ruleset again). Returns whether anything was
/// loaded.
pub fn disable(backend: BackendName) -> Result<bool> {
    crate::safety::refuse_if_pending()?;
    pbxfw_host::lock::disable(backend.open().as_ref()).map_err(|e| match e {
        pbxfw_core::BackendError::Locked(path) => Refusal::Locked { path: path.into() }.into(),
        e => Error::Backend(e),
    })
}

/// `pbxfw boot`: Safe Mode, an overdue rollback, or the apply of `loaded`; then keep the boot's
/// length in the history until it counts as a good boot (this takes up to 10 minutes).
pub fn boot(
    loaded: &Loaded,
    backend: BackendName,
    safe_mode: bool,
    heartbeat: std::time::Duration,
) -> Result<()> {
    let cfg = pbxfw_core::SafeModeConfig {
        enabled: safe_mode,
        ..Default::default()
    };
    // Before the boot procedure, which keeps running to record the boot's length.
    crate::policy::record_discovery(loaded)?;
    crate::safety::boot(
        backend.open().as_ref(),
        backend.as_str(),
        &loaded.ruleset,
        &cfg,
        heartbeat,
    )
}

/// Load `loaded` into `kernel`, with a confirmation timer when asked, and record it: once the
/// kernel holds it (verified), `verified` is told, and the record thread puts the record in
/// place (dropped unsent when the load failed, and nothing is put in place).
fn load(
    loaded: &Loaded,
    req: &ApplyRequest,
    kernel: &crate::flow_cut::FlowCut,
    opts: &ApplyOptions,
    from: &[IpAddr],
    record: std::thread::ScopedJoinHandle<'_, Option<Result<()>>>,
    verified: std::sync::mpsc::Sender<()>,
) -> Result<ApplyOutcome> {
    Ok(match req.confirm {
        Some(secs) => {
            let (fingerprint, deadline_ms) = crate::safety::apply_with_confirm(
                kernel,
                req.backend.as_str(),
                &loaded.ruleset,
                opts,
                secs,
                from,
            )?;
            let _ = verified.send(());
            ApplyOutcome {
                fingerprint,
                elapsed_ms: None,
                rolled_back_at_ms: Some(deadline_ms),
                warnings: match record.join() {
                    Ok(Some(Err(e))) => vec![e.to_string()],
                    _ => Vec::new(),
                },
                hostnames: None,
            }
        }
        None => {
            let started = std::time::Instant::now();
            let applied = kernel.apply_then_cut(&loaded.ruleset, opts, || {
                let _ = verified.send(());
            })?;
            let elapsed = started.elapsed();
            let recorded = match record.join() {
                Ok(Some(recorded)) => recorded,
                // The thread is gone (it panicked; the edit index stays as it was, and is not
                // used with this ruleset): written now.
                _ => crate::safety::record_applied_as(
                    req.backend.as_str(),
                    applied.fingerprint.clone(),
                    loaded.ruleset.to_text(),
                    from,
                ),
            };
            let mut warnings = Vec::new();
            if let Err(e) = recorded {
                warnings.push(format!(
                    "{e}: a later `apply --confirm` is refused until an apply is recorded"
                ));
            }
            ApplyOutcome {
                fingerprint: applied.fingerprint,
                elapsed_ms: Some(elapsed.as_secs_f64() * 1000.0),
                rolled_back_at_ms: None,
                warnings,
                hostnames: None,
            }
        }
    })
}
