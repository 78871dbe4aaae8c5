//! Editing the policy file from a command (`blacklist add|del`, `trust`, `untrust`): the file
//! is rewritten atomically with its comments kept, never made invalid, and the kernel follows —
//! as set elements over netlink when only set elements changed, else by a reload that keeps
//! bans and registrations.

use std::path::Path;

use pbxfw_core::ApplyOptions;
use pbxfw_core::Prefix;
use serde::{Deserialize, Serialize};

use crate::backends::BackendName;
use crate::error::{Error, Result};
use crate::policy_file::Doc;

/// What an edit did to the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kernel", rename_all = "snake_case")]
pub enum KernelChange {
    /// pbxfw is not loaded: the change takes effect at the next apply.
    NotLoaded,
    /// Set elements only, without a reload.
    Elements {
        /// Elements added.
        added: usize,
        /// Elements removed.
        removed: usize,
        /// Milliseconds.
        elapsed_ms: f64,
        /// The fingerprint now loaded.
        fingerprint: String,
    },
    /// A whole reload (keeping dynamic state), and why.
    Reloaded {
        /// Why elements were not enough.
        reason: String,
        /// The fingerprint now loaded.
        fingerprint: String,
    },
}

/// What an edit did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditOutcome {
    /// The policy file.
    pub file: String,
    /// What changed in it.
    pub summary: String,
    /// What changed in the kernel.
    #[serde(flatten)]
    pub kernel: KernelChange,
    /// Bookkeeping that failed after the change was made (it stays made).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Made by the edit index, without reading the whole policy ([`blacklist_add`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub indexed: bool,
}

/// The policy file an edit means ([`crate::policy::resolve`]); an edit needs a file.
pub fn file(path: Option<&str>) -> Result<String> {
    crate::policy::resolve(path).ok_or_else(|| {
        Error::Usage(format!(
            "no policy file to edit: pass --policy FILE or create {}",
            crate::policy::POLICY_PATH
        ))
    })
}

/// How to edit: the kernel to bring along, and the administrators the edit must not cut off
/// (besides `$SSH_CONNECTION` and `settings.admins`), as for an apply.
#[derive(Debug, Clone, Default)]
pub struct EditRequest {
    /// The backend.
    pub backend: BackendName,
    /// Administrators whose access must survive (`--admin`).
    pub admins: Vec<crate::safety::Admin>,
    /// Edit even if an administrator would be cut off.
    pub force: bool,
}

/// Edit the policy file at `path` with `f` (which says what it changed, or refuses), validate
/// the result, check it cuts off no administrator (as an apply does: a blacklist entry or an
/// `untrust` can), write it atomically, then bring the kernel along.
pub fn edit(
    path: &str,
    req: &EditRequest,
    f: impl FnOnce(&mut Doc, &crate::policy::Loaded) -> Result<String>,
) -> Result<EditOutcome> {
    let backend = req.backend;
    let _lock = edit_lock()?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // The policy as it is (validated and compiled) and the document to edit are read from
    // the same text side by side: with a large blacklist each takes tens of milliseconds.
    let (old, doc) = std::thread::scope(|s| {
        let old = s.spawn(|| crate::policy::load_text(&text, path));
        let doc = Doc::parse(&text, path).map_err(|message| Error::Parse {
            name: path.to_string(),
            message,
        });
        (old.join().expect("loading a policy does not panic"), doc)
    });
    let (old, mut doc) = (old?, doc?);
    let summary = f(&mut doc, &old)?;
    let edited = doc.render();
    let new = crate::policy::load_text(&edited, path).map_err(|e| match e {
        Error::Invalid { name, diagnostics } => Error::Usage(format!(
            "{name}: the edit would make the policy invalid; nothing changed:\n{diagnostics}"
        )),
        e => e,
    })?;
    if !req.force {
        crate::safety::check_lockout(
            &new.ruleset,
            &crate::safety::sessions(&req.admins, &new.policy),
        )?;
    }
    // Checked before the file changes: an apply waiting for confirmation would be undone by
    // its timer (and this edit with it), and a custom rules file anyone could write is refused.
    crate::safety::refuse_if_pending()?;
    let opts = ApplyOptions {
        custom: crate::safety::custom_rules(backend.as_str())?,
        ..Default::default()
    };
    crate::policy_file::write_atomic(Path::new(path), &edited).map_err(|e| Error::io(path, e))?;
    // The edit index of the new text is built beside the kernel's update (policy.md,
    // "Editing a large blacklist"), and saved whatever the kernel did: it describes the file.
    let (index, kernel) = std::thread::scope(|s| {
        let index = s.spawn(|| crate::edit_index::build(Path::new(path), &edited, &new));
        let kernel = bring_kernel(backend, &old.ruleset, &new.ruleset, &opts);
        (index.join().ok().flatten(), kernel)
    });
    let saved = match &index {
        Some(idx) => crate::edit_index::save(idx),
        None => crate::edit_index::remove(),
    };
    let (kernel, mut warnings) = kernel?;
    if let Err(e) = saved {
        warnings.push(format!(
            "{e}: the next blacklist edit reads the whole policy again"
        ));
    }
    Ok(EditOutcome {
        file: path.to_string(),
        summary,
        kernel,
        warnings,
        indexed: false,
    })
}

/// Bring the kernel from `old` to `new` after the policy file changed, and record `new` as
/// applied; with the warnings of the bookkeeping.
fn bring_kernel(
    backend: BackendName,
    old: &pbxfw_core::Ruleset,
    new: &pbxfw_core::Ruleset,
    opts: &ApplyOptions,
) -> Result<(KernelChange, Vec<String>)> {
    // The file is changed already: a kernel failure says so.
    let after = |what: &str, e: pbxfw_core::BackendError| {
        Error::Backend(pbxfw_core::BackendError::Kernel(format!(
            "the policy file is updated, but the kernel {what}: {e}"
        )))
    };
    let kernel = backend.open();
    match kernel.fingerprint() {
        Ok(Some(_)) => {}
        Ok(None) => return Ok((KernelChange::NotLoaded, Vec::new())),
        Err(e) => return Err(after("cannot be read", e)),
    }
    let started = std::time::Instant::now();
    let synced =
        pbxfw_core::sync(kernel.as_ref(), old, new, opts).map_err(|e| after("was not", e))?;
    // The kernel now holds the edited ruleset: it is the last applied one (for `apply
    // --confirm`, rollbacks, and the commands that act on the loaded sets), applied from the
    // sessions that applied the one it replaces.
    let mut warnings = Vec::new();
    if let Err(e) =
        crate::safety::record_applied(backend.as_str(), new, &crate::safety::applied_sessions())
    {
        warnings.push(format!(
            "{e}: a later `apply --confirm` is refused until an apply is recorded"
        ));
    }
    let kernel = if synced.incremental {
        KernelChange::Elements {
            added: synced.added,
            removed: synced.removed,
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
            fingerprint: synced.fingerprint,
        }
    } else {
        KernelChange::Reloaded {
            reason: synced.reason.unwrap_or_default(),
            fingerprint: synced.fingerprint,
        }
    };
    Ok((kernel, warnings))
}

/// What names a source, for comparing entries: the prefix (`192.0.2.1` and `192.0.2.1/32` are
/// the same), else the hostname without case or a final dot.
pub fn source_key(s: &str) -> String {
    match Prefix::parse_lenient(s) {
        Ok((p, _)) => p.to_string(),
        Err(_) => s.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// Whether two entries name the same source ([`source_key`]).
pub fn same_source(a: &str, b: &str) -> bool {
    source_key(a) == source_key(b)
}

/// The source an entry names, as the policy reads it (`192.0.2.1` and `192.0.2.1/32` are the
/// same; hostnames without case or a final dot).
fn source_of(s: &str) -> pbxfw_core::Source {
    match Prefix::parse_lenient(s) {
        Ok((p, _)) => pbxfw_core::Source::Net(p),
        Err(_) => pbxfw_core::Source::Host(s.trim_end_matches('.').to_ascii_lowercase()),
    }
}

/// Add `entries` to the blacklist (those already there are skipped). Entries are compared with
/// the sources of the validated policy in a hash set: adding 10,000 to a list of 100,000 costs
/// as much as reading them, and nothing is parsed twice.
pub fn blacklist_add(path: &str, req: &EditRequest, entries: &[String]) -> Result<EditOutcome> {
    if let Some(done) = blacklist_add_indexed(path, req, entries) {
        return done;
    }
    edit(path, req, |doc, old| {
        // Against `entries` only: an address a list file names is written into the policy too,
        // so that it stays blocked when the list (a feed) drops it.
        let mut seen: std::collections::HashSet<pbxfw_core::Source> = old
            .policy
            .blacklist
            .iter()
            .filter(|b| b.list.is_none())
            .map(|b| b.source.clone())
            .collect();
        let mut added = 0;
        for e in entries {
            if seen.insert(source_of(e)) {
                doc.blacklist_add(e);
                added += 1;
            }
        }
        Ok(format!("blacklist: {added} entr(ies) added"))
    })
}

/// `blacklist add` of single addresses by the edit index ([`crate::edit_index`]), when it
/// describes the file as it is and the kernel holds its ruleset: the file gets the entries
/// after its last one, the kernel the elements and the new fingerprint (one netlink
/// transaction with nft), the applied record the additions. `None` when the whole edit must
/// run: an entry that is not a single address, no index for this text, another ruleset
/// loaded, an administrator's address among the entries (the whole edit runs the anti-lockout
/// check), a file that would outgrow the policy size limit (the whole edit says so).
fn blacklist_add_indexed(
    path: &str,
    req: &EditRequest,
    entries: &[String],
) -> Option<Result<EditOutcome>> {
    let mut new: Vec<Prefix> = Vec::with_capacity(entries.len());
    // How each address was first written: the file gets the entry as given.
    let mut written: std::collections::HashMap<Prefix, &str> = Default::default();
    for e in entries {
        // Only the characters of an address, so that it needs no quoting and reads back as
        // the same address.
        let plain = e
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b".:/".contains(&b));
        match Prefix::parse_lenient(e) {
            Ok((p, false)) if plain && p.is_host() => {
                new.push(p);
                written.entry(p).or_insert(e);
            }
            _ => return None,
        }
    }
    // One edit at a time, from reading the index to recording the result: two at once would
    // each write the file without the other's entries.
    let _lock = match edit_lock() {
        Ok(l) => l,
        Err(e) => return Some(Err(e)),
    };
    let mut idx = crate::edit_index::read(Path::new(path))?;
    let text = std::fs::read(path).ok()?;
    if crate::edit_index::sha256(&text) != idx.sha256 || !idx.fits(&text) || !idx.lists_unchanged()
    {
        return None;
    }
    let sessions: Vec<std::net::IpAddr> = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .into_iter()
        .chain(req.admins.iter().map(|a| a.addr))
        .chain(idx.admins.iter().copied())
        .collect();
    if !req.force && new.iter().any(|p| sessions.iter().any(|a| p.contains(a))) {
        return None;
    }
    // An address the blacklist holds may come from a list file, and then belongs in the
    // policy too (the whole edit tells the two apart).
    if new.iter().any(|p| idx.listed(p)) {
        return None;
    }
    let kernel = req.backend.open();
    let old = idx.parts.fingerprint();
    let loaded = match kernel.fingerprint() {
        Ok(Some(fp)) if fp == old => true,
        Ok(None) => false,
        _ => return None,
    };
    let added = idx.add(&new);
    let mut insert = String::new();
    for p in &added {
        insert.push_str(&idx.separator);
        insert.push('"');
        insert.push_str(written[p]);
        insert.push('"');
    }
    if text.len() + insert.len() > pbxfw_core::MAX_POLICY_BYTES {
        return None;
    }
    let mut edited = Vec::with_capacity(text.len() + insert.len());
    edited.extend_from_slice(&text[..idx.insert_at]);
    edited.extend_from_slice(insert.as_bytes());
    edited.extend_from_slice(&text[idx.insert_at..]);
    let edited = String::from_utf8(edited).ok()?;
    Some((|| {
        crate::safety::refuse_if_pending()?;
        let fresh = idx.parts.fingerprint();
        let summary = format!("blacklist: {} entr(ies) added", added.len());
        if !added.is_empty() {
            crate::policy_file::write_atomic(Path::new(path), &edited)
                .map_err(|e| Error::io(path, e))?;
        }
        idx.insert_at += insert.len();
        idx.sha256 = crate::edit_index::sha256(edited.as_bytes());
        let mut warnings = Vec::new();
        if let Err(e) = crate::edit_index::save(&idx) {
            // The next edit reads the whole file (the index no longer matches it).
            warnings.push(format!(
                "{e}: the next blacklist edit reads the whole policy again"
            ));
        }
        let outcome = |kernel, warnings| EditOutcome {
            file: path.to_string(),
            summary: summary.clone(),
            kernel,
            warnings,
            indexed: true,
        };
        if !loaded {
            return Ok(outcome(KernelChange::NotLoaded, warnings));
        }
        let started = std::time::Instant::now();
        let (sets, changes) = host_additions(&added);
        let after = |what: &str, e: pbxfw_core::BackendError| {
            Error::Backend(pbxfw_core::BackendError::Kernel(format!(
                "the policy file is updated, but the kernel {what}: {e}; `pbxfw apply` loads it"
            )))
        };
        if let Err(refused) = kernel.patch_static(&sets, &fresh, &changes) {
            // As the whole edit does when the kernel refuses a patch (an ipset that is
            // full): the edited policy, read whole, loaded whole (bans and registrations
            // kept).
            let new = crate::policy::load_text(&edited, path)?;
            let opts = ApplyOptions {
                custom: crate::safety::custom_rules(req.backend.as_str())?,
                ..Default::default()
            };
            let a = pbxfw_core::apply(kernel.as_ref(), &new.ruleset, &opts)
                .map_err(|e| after("was not", e))?;
            if let Err(e) = crate::safety::record_applied(
                req.backend.as_str(),
                &new.ruleset,
                &crate::safety::applied_sessions(),
            ) {
                warnings.push(format!(
                    "{e}: a later `apply --confirm` is refused until an apply is recorded"
                ));
            }
            let change = KernelChange::Reloaded {
                reason: format!("the kernel refused the set update ({refused})"),
                fingerprint: a.fingerprint,
            };
            return Ok(outcome(change, warnings));
        }
        match kernel.fingerprint() {
            Ok(Some(fp)) if fp == fresh => {}
            Ok(found) => {
                return Err(after(
                    "does not hold the edit",
                    pbxfw_core::BackendError::Verify {
                        expected: fresh,
                        found,
                    },
                ))
            }
            Err(e) => return Err(after("cannot be read", e)),
        }
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let recorded: Vec<(String, String)> = added
            .iter()
            .map(|p| {
                (
                    pbxfw_core::names::blacklist_hosts(p.family()),
                    p.to_string(),
                )
            })
            .collect();
        if old != fresh {
            if let Err(e) = crate::safety::record_added(&old, &fresh, &recorded) {
                warnings.push(format!(
                    "{e}: a later `apply --confirm` is refused until an apply is recorded"
                ));
            }
        }
        let change = KernelChange::Elements {
            added: added.len(),
            removed: 0,
            elapsed_ms,
            fingerprint: fresh,
        };
        Ok(outcome(change, warnings))
    })())
}

/// The blacklist's host sets as the compiler defines them (without their elements), and the
/// additions of `added` to them.
fn host_additions(added: &[Prefix]) -> (pbxfw_core::Ruleset, Vec<pbxfw_core::SetUpdate>) {
    use pbxfw_core::{Family, Op, Set, SetKind, SetUpdate, StaticSet};
    let mut sets = pbxfw_core::Ruleset::default();
    let mut changes = Vec::new();
    for f in [Family::Ipv4, Family::Ipv6] {
        let name = pbxfw_core::names::blacklist_hosts(f);
        sets.sets.insert(
            name.clone(),
            Set {
                family: f,
                kind: SetKind::Static(
                    StaticSet::hosts(f, Vec::new()).expect("an empty set is a set of hosts"),
                ),
                comment: "blacklist".into(),
            },
        );
        let elements: Vec<pbxfw_core::Element> = added
            .iter()
            .filter(|p| p.family() == f)
            .map(|p| pbxfw_core::Element {
                prefix: *p,
                timeout: None,
            })
            .collect();
        if !elements.is_empty() {
            changes.push(SetUpdate {
                set: name,
                op: Op::Add,
                elements,
            });
        }
    }
    (sets, changes)
}

/// The lock every policy edit holds from reading the file to recording the result (released
/// when the file is closed).
fn edit_lock() -> Result<std::fs::File> {
    let dir = pbxfw_host::dirs::state_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join("edit.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io(&path, e.into()))?;
    Ok(lock)
}

/// Remove `entries` from the blacklist; one that is not there refuses the whole edit.
pub fn blacklist_del(path: &str, req: &EditRequest, entries: &[String]) -> Result<EditOutcome> {
    edit(path, req, |doc, old| {
        let present: std::collections::HashSet<String> =
            doc.blacklist().iter().map(|x| source_key(x)).collect();
        let gone: std::collections::HashSet<String> =
            entries.iter().map(|e| source_key(e)).collect();
        if let Some(e) = entries.iter().find(|e| !present.contains(&source_key(e))) {
            let src = source_of(e);
            let listed = old
                .policy
                .blacklist
                .iter()
                .find(|b| b.source == src)
                .and_then(|b| old.lists.get(b.list?));
            return Err(Error::Usage(match listed {
                Some((file, _)) => format!(
                    "{e} comes from the list file {file} (blacklist.lists); remove it there; nothing changed"
                ),
                None => format!("{e} is not in the blacklist; nothing changed"),
            }));
        }
        let removed = doc.blacklist_remove(|x| gone.contains(&source_key(x)));
        Ok(format!("blacklist: {removed} entr(ies) removed"))
    })
}

/// The blacklist's entries as the policy file writes them (the embedded default policy's when
/// there is no file).
pub fn blacklist_list(path: Option<&str>) -> Result<Vec<String>> {
    let (name, text) = match crate::policy::resolve(path) {
        Some(p) if p != "-" => {
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            (p, text)
        }
        Some(_) => return Err(Error::Usage("the blacklist is listed from a file".into())),
        None => return Err(crate::policy::no_policy()),
    };
    let doc = Doc::parse(&text, &name).map_err(|message| Error::Parse { name, message })?;
    Ok(doc.blacklist())
}

/// Put `addr` (an address or network) in the trusted zone, replacing another zone's override
/// of the same source, and lift its bans ([`crate::bans::unban`]): a trusted source that stays
/// banned would be trusted in the policy and dropped by the kernel.
pub fn trust(path: &str, req: &EditRequest, addr: &str, now: u64) -> Result<EditOutcome> {
    if Prefix::parse_lenient(addr).is_err() {
        return Err(Error::Usage(format!("{addr:?} is not an address or CIDR")));
    }
    zone_add(path, req, Zone::Trusted, &[addr.to_string()], now)
}

/// Take `addr` out of the trusted zone.
pub fn untrust(path: &str, req: &EditRequest, addr: &str) -> Result<EditOutcome> {
    zone_del(path, req, Zone::Trusted, &[addr.to_string()])
}

use pbxfw_core::Zone;

/// A zone as the command line and the control socket name it: the canonical names and
/// FreePBX's (`external` for internet, `internal` for local).
pub fn zone_named(name: &str) -> Result<Zone> {
    name.to_ascii_lowercase().parse().map_err(|()| {
        Error::Usage(format!(
            "{name:?} is not a zone: trusted, local (internal), other, internet (external) or reject"
        ))
    })
}

/// Put each of `ids` (addresses, CIDRs or hostnames) in `zone`, as `fwconsole firewall add`
/// does: an override of the same source in another zone is replaced (a source is in one zone),
/// one already in `zone` is left as it is. Into the trusted zone, their bans are lifted too
/// ([`trust`]).
pub fn zone_add(
    path: &str,
    req: &EditRequest,
    zone: Zone,
    ids: &[String],
    now: u64,
) -> Result<EditOutcome> {
    if ids.is_empty() {
        return Err(Error::Usage(
            "name at least one address, CIDR or hostname".into(),
        ));
    }
    let mut out = edit(path, req, |doc, old| {
        let (mut added, mut moved, mut kept) = (0, 0, 0);
        for id in ids {
            let src = source_of(id);
            let here = old
                .policy
                .networks
                .iter()
                .find(|n| n.source == src)
                .map(|n| n.zone);
            match here {
                Some(z) if z == zone => kept += 1,
                other => {
                    if other.is_some() {
                        doc.networks_remove(|s, _| same_source(s, id));
                        moved += 1;
                    } else {
                        added += 1;
                    }
                    doc.network_add(id, zone.name(), &format!("added by pbxfw zone add {zone}"));
                }
            }
        }
        if added + moved == 0 {
            return Err(Error::Usage(format!(
                "{} already in the {zone} zone; nothing changed",
                if ids.len() == 1 { "it is" } else { "they are" }
            )));
        }
        let mut said = Vec::new();
        if added > 0 {
            said.push(format!("{added} added to"));
        }
        if moved > 0 {
            said.push(format!("{moved} moved to"));
        }
        if kept > 0 {
            said.push(format!("{kept} already in"));
        }
        Ok(match ids {
            [one] if moved == 1 => format!("{one} moved to the {zone} zone"),
            [one] => format!("{one} added to the {zone} zone"),
            _ => format!("{} the {zone} zone", said.join(", ")),
        })
    })?;
    if zone == Zone::Trusted {
        let prefixes: Vec<Prefix> = ids
            .iter()
            .filter_map(|id| Prefix::parse_lenient(id).ok().map(|(p, _)| p))
            .collect();
        if !prefixes.is_empty() {
            let by = format!("zone add trusted ({})", crate::bans::requester());
            match crate::bans::lift(req.backend, &prefixes, now, &by) {
                Ok(u) if !u.lifted.is_empty() => {
                    out.summary += &format!("; {} ban(s) lifted", u.lifted.len());
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::Backend(pbxfw_core::BackendError::Kernel(format!(
                        "trusted in the policy and the kernel, but their bans could not be lifted ({e}); run pbxfw unban"
                    ))))
                }
            }
        }
    }
    Ok(out)
}

/// Take each of `ids` out of `zone` (as `fwconsole firewall del`); one that is not in it
/// refuses the whole edit.
pub fn zone_del(path: &str, req: &EditRequest, zone: Zone, ids: &[String]) -> Result<EditOutcome> {
    if ids.is_empty() {
        return Err(Error::Usage(
            "name at least one address, CIDR or hostname".into(),
        ));
    }
    edit(path, req, |doc, _| {
        for id in ids {
            let n =
                doc.networks_remove(|s, z| same_source(s, id) && zone_named(z).ok() == Some(zone));
            if n == 0 {
                return Err(Error::Usage(format!(
                    "{id} is not in the {zone} zone; nothing changed"
                )));
            }
        }
        Ok(match ids {
            [one] => format!("{one} removed from the {zone} zone"),
            _ => format!("{} removed from the {zone} zone", ids.len()),
        })
    })
}

/// What a zone holds, for `pbxfw zone list` and `zones`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneMembers {
    /// The zone.
    pub zone: Zone,
    /// Its other names.
    pub aliases: Vec<String>,
    /// What it is for.
    pub description: String,
    /// Interfaces in it.
    pub interfaces: Vec<String>,
    /// Networks and hosts in it (`[[networks]]`), each with its description.
    pub networks: Vec<(String, Option<String>)>,
}

/// The members of every zone (or of `only`) in `loaded`, in the order the UI lists zones.
pub fn zone_members(loaded: &crate::policy::Loaded, only: Option<Zone>) -> Vec<ZoneMembers> {
    Zone::ALL
        .into_iter()
        .filter(|z| only.is_none_or(|o| o == *z))
        .map(|zone| ZoneMembers {
            zone,
            aliases: match zone {
                Zone::Local => vec!["internal".into()],
                Zone::Internet => vec!["external".into()],
                _ => Vec::new(),
            },
            description: match zone {
                Zone::Trusted => "everything accepted",
                Zone::Local => "the LAN: most services",
                Zone::Other => "known external networks: VPN, DMZ, branch office",
                Zone::Internet => "nobody is trusted: the responsive layer decides",
                Zone::Reject => "nothing but RTP",
            }
            .into(),
            interfaces: loaded
                .policy
                .interfaces
                .iter()
                .filter(|(_, z)| **z == zone)
                .map(|(i, _)| i.clone())
                .collect(),
            networks: loaded
                .policy
                .networks
                .iter()
                .filter(|n| n.zone == zone)
                .map(|n| (n.source.to_string(), n.description.clone()))
                .collect(),
        })
        .collect()
}
