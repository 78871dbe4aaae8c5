//! Loading, inspecting and removing pbxfw's table in the kernel of the current network
//! namespace.
//!
//! A whole ruleset is loaded as one netlink batch built in process
//! ([`crate::netlink::ruleset`]), which the kernel applies as one transaction: a ruleset it
//! rejects changes nothing, so there is no separate `nft -c` pass. `nft -f` of the printed
//! script is the other path ([`Loader`]): for custom rules, which are nft text, and as the
//! fallback. After loading, the fingerprint stored in the one-element `fingerprint` set is read
//! back (never the 100k-element sets). Element updates go over netlink too.

pub use pbxfw_core::{ApplyOptions, ElementStatus, RuleCounter, SetStatus, Status};
use pbxfw_core::{Backend, BackendError, SetEdit, SetUpdate};
use pbxfw_core::{Ruleset, SetKind};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::netlink::{self, Element, NetlinkError, Op, SetShape};
use crate::{lower, LowerError, Options};

/// How to reach the kernel: which table, which `nft` binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The table pbxfw owns (`pbxfw` in production).
    pub table: String,
    /// The `nft` binary.
    pub nft: String,
    /// How a whole ruleset is loaded.
    pub loader: Loader,
}

/// How [`Kernel`] loads a whole ruleset. Both send the same transaction (docs/design.md, "The
/// netlink load").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// One netlink batch built in process (the default). A ruleset with custom rules, which
    /// are nft text, goes through `nft -f`, and so does one the kernel refuses over netlink
    /// (with a warning, if `nft -f` then succeeds).
    Netlink,
    /// `nft -f` of the printed script.
    Nft,
}

impl Loader {
    /// The loader `PBXFW_NFT_LOADER` names (`nft` or `netlink`), else [`Loader::Netlink`].
    pub fn from_env() -> Loader {
        match std::env::var("PBXFW_NFT_LOADER").as_deref() {
            Ok("nft") => Loader::Nft,
            _ => Loader::Netlink,
        }
    }
}

impl Default for Kernel {
    fn default() -> Self {
        let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nft");
        Kernel {
            table: crate::TABLE.into(),
            nft: nft.into(),
            loader: Loader::from_env(),
        }
    }
}

/// How a set's elements are written: the lowering makes a static set of addresses a hash set,
/// any other static set an interval set.
fn static_shape(kind: &SetKind) -> SetShape {
    match kind {
        SetKind::Static(s) if !s.is_hosts() => SetShape::Interval,
        SetKind::Dynamic(d) if d.interval => SetShape::Interval,
        _ => SetShape::Hash,
    }
}

/// Why reading or changing the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// `nft` could not be run.
    #[error("cannot run {nft}: {source}")]
    Spawn {
        /// The binary.
        nft: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `nft` failed.
    #[error("nft {args}: {stderr}")]
    Nft {
        /// The arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// `nft -j` printed something unexpected.
    #[error("cannot read nft's JSON output: {0}")]
    Json(String),
    /// pbxfw is not loaded.
    #[error("pbxfw is not loaded (no table inet {0})")]
    NotLoaded(String),
    /// No such set in the loaded table.
    #[error("no set {0} in the loaded ruleset")]
    NoSet(String),
    /// A netlink update failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

impl Kernel {
    /// A kernel handle that loads whole rulesets through `loader` (tests run both paths).
    pub fn with_loader(loader: Loader) -> Kernel {
        Kernel {
            loader,
            ..Kernel::default()
        }
    }

    /// A kernel handle for another table (tests).
    pub fn with_table(table: &str) -> Kernel {
        Kernel {
            table: table.into(),
            ..Kernel::default()
        }
    }

    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<String, KernelError> {
        let mut cmd = Command::new(&self.nft);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn = |source| KernelError::Spawn {
            nft: self.nft.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn)?;
        if let Some(text) = stdin {
            // A write error surfaces as nft's own failure below.
            let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            return Err(KernelError::Nft {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Result<Vec<Value>, KernelError> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.nft(&full, None)?;
        let v: Value = serde_json::from_str(&text).map_err(|e| KernelError::Json(e.to_string()))?;
        Ok(v["nftables"].as_array().cloned().unwrap_or_default())
    }

    /// Whether pbxfw is loaded (its fingerprint set exists). Listing one small set is cheap;
    /// listing tables or chains makes `nft` read every set element.
    pub fn is_loaded(&self) -> Result<bool, KernelError> {
        Ok(self.fingerprint()?.is_some())
    }

    /// The fingerprint of the loaded ruleset, or `None` when pbxfw is not loaded.
    pub fn fingerprint(&self) -> Result<Option<String>, KernelError> {
        // Over netlink: an `nft` process costs milliseconds, and every edit asks twice.
        if let Ok(keys) = netlink::set_keys(&self.table, crate::FINGERPRINT_SET) {
            return Ok(keys.and_then(|k| {
                k.iter().find_map(|k| {
                    let b: [u8; 16] = k.as_slice().try_into().ok()?;
                    crate::fingerprint_from_element(&std::net::Ipv6Addr::from(b).to_string())
                })
            }));
        }
        let items = match self.json(&["list", "set", "inet", &self.table, crate::FINGERPRINT_SET]) {
            Ok(items) => items,
            // No table or no set: not loaded (nft says "No such file or directory").
            Err(KernelError::Nft { stderr, .. }) if stderr.contains("No such file") => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        Ok(items.iter().find_map(|i| {
            i["set"]["elem"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(|e| e.as_str())
                .and_then(crate::fingerprint_from_element)
        }))
    }

    /// Load `rs` in one transaction, with its seeds and custom rules (checked on their own
    /// first, so that a mistake in them is reported as theirs). The kernel applies the
    /// transaction whole or not at all.
    fn load_script(&self, rs: &Ruleset, opts: &ApplyOptions) -> Result<(), BackendError> {
        let lopts = Options {
            table: self.table.clone(),
            counters: opts.counters,
        };
        for (set, elems) in &opts.seed {
            check_seed(rs, set, elems)?;
        }
        // Custom rules are nft text: with them the whole load is one `nft -f`, so that they
        // are in the same transaction.
        if self.loader == Loader::Netlink && opts.custom.is_none() {
            use netlink::ruleset::LoadError;
            let err =
                match netlink::ruleset::load(rs, &lopts, &opts.seed, opts.fingerprint.as_deref()) {
                    Ok(()) => return Ok(()),
                    Err(LoadError::Lower(e)) => return Err(lower_error(e)),
                    Err(e) => e,
                };
            // The socket failed after the batch went out (no answer, lost acknowledgements):
            // the kernel may have committed it. Its fingerprint tells.
            if let LoadError::Netlink(_) = err {
                let expected = match &opts.fingerprint {
                    Some(fp) => fp.clone(),
                    None => rs.fingerprint(),
                };
                if self.fingerprint().ok().flatten() == Some(expected) {
                    return Ok(());
                }
            }
            // The kernel refused the transaction (or never got it), so nothing changed:
            // `nft -f` tries the same ruleset and, if it fails too, says why in nft's words.
            let said = err.to_string();
            return match self.load_text(rs, &lopts, opts) {
                Ok(()) => {
                    eprintln!(
                        "pbxfw: warning: the netlink load failed ({said}); loaded with `nft -f` instead"
                    );
                    Ok(())
                }
                Err(BackendError::Load(m)) => Err(BackendError::Load(format!(
                    "{m} (the netlink load before it: {said})"
                ))),
                Err(e) => Err(e),
            };
        }
        self.load_text(rs, &lopts, opts)
    }

    /// [`Kernel::load_script`] through `nft -f`.
    fn load_text(
        &self,
        rs: &Ruleset,
        lopts: &Options,
        opts: &ApplyOptions,
    ) -> Result<(), BackendError> {
        let mut text = lower(rs, lopts).map_err(lower_error)?.text;
        for (set, elems) in &opts.seed {
            text.push_str(&seed_line(rs, &self.table, set, elems)?);
        }
        let nft_said = |e: KernelError| match e {
            KernelError::Nft { stderr, .. } => stderr,
            other => other.to_string(),
        };
        if let Some(custom) = &opts.custom {
            let rules = custom_rules(&self.table, custom).map_err(|m| {
                BackendError::Load(format!(
                    "the custom rules were refused, nothing changed: {m}"
                ))
            })?;
            text.push_str(&rules);
            if let Err(e) = self.nft(&["-c", "-f", "/dev/stdin"], Some(&text)) {
                return Err(BackendError::Load(format!(
                    "the custom rules were refused (`nft -c`), nothing changed: {}",
                    nft_said(e)
                )));
            }
        }
        match self.nft(&["-f", "/dev/stdin"], Some(&text)) {
            Ok(_) => Ok(()),
            Err(KernelError::Spawn { nft, source }) => Err(BackendError::Spawn {
                tool: nft,
                message: source.to_string(),
            }),
            Err(e) => Err(BackendError::Load(nft_said(e))),
        }
    }

    /// The static-set changes over netlink in one transaction, then the new fingerprint.
    fn patch(&self, new: &Ruleset, fresh: &str, changes: &[SetUpdate]) -> Result<(), BackendError> {
        let mut netlink_changes = Vec::with_capacity(changes.len());
        for c in changes {
            let set = new
                .sets
                .get(&c.set)
                .ok_or_else(|| BackendError::NoSet(c.set.clone()))?;
            netlink_changes.push(netlink::Change {
                set: c.set.clone(),
                shape: static_shape(&set.kind),
                op: c.op,
                elements: c.elements.clone(),
            });
        }
        // The fingerprint moves over netlink too, after the elements (the new ruleset is marked
        // only once its elements are in): `flush set` through `nft -f` made nft read every set
        // of the table first, 0.3 s with 100k entries.
        let element = |fp: &str| -> Result<Element, BackendError> {
            let addr: std::net::IpAddr = crate::fingerprint_element(fp)
                .parse()
                .map_err(|_| BackendError::Check(format!("fingerprint {fp}")))?;
            Ok(Element {
                prefix: pbxfw_core::Prefix::host(addr),
                timeout: None,
            })
        };
        let loaded = self.fingerprint()?;
        // Small updates (an edit's few elements) go in one transaction with the fingerprint.
        // Larger ones may be split into several, and the fingerprint's removal and addition
        // must never be: the elements go first, then the fingerprint in a transaction of its
        // own, so that it never goes missing (a missing fingerprint reads as "not loaded").
        let elements: usize = netlink_changes.iter().map(|c| c.elements.len()).sum();
        if elements > 256 {
            netlink::apply_changes(&self.table, &netlink_changes)
                .map_err(|e| BackendError::Kernel(e.to_string()))?;
            netlink_changes.clear();
        }
        if loaded.as_deref() != Some(fresh) {
            if let Some(old) = loaded {
                netlink_changes.push(netlink::Change {
                    set: crate::FINGERPRINT_SET.into(),
                    shape: SetShape::Hash,
                    op: Op::Remove,
                    elements: vec![element(&old)?],
                });
            }
            netlink_changes.push(netlink::Change {
                set: crate::FINGERPRINT_SET.into(),
                shape: SetShape::Hash,
                op: Op::Add,
                elements: vec![element(fresh)?],
            });
        }
        if !netlink_changes.is_empty() {
            netlink::apply_changes(&self.table, &netlink_changes)
                .map_err(|e| BackendError::Kernel(e.to_string()))?;
        }
        Ok(())
    }

    /// Remove pbxfw's table, and nothing else. Returns whether there was one.
    pub fn disable(&self) -> Result<bool, KernelError> {
        if !self.is_loaded()? {
            return Ok(false);
        }
        self.nft(&["delete", "table", "inet", &self.table], None)?;
        Ok(true)
    }

    /// Add or remove elements of a loaded set over netlink. The set's shape (hash or interval)
    /// is read from `rs`, the ruleset that was applied.
    pub fn update_set(
        &self,
        rs: &Ruleset,
        set: &str,
        op: Op,
        elements: &[Element],
    ) -> Result<(), KernelError> {
        let s = rs
            .sets
            .get(set)
            .ok_or_else(|| KernelError::NoSet(set.into()))?;
        let shape = static_shape(&s.kind);
        netlink::update_set(&self.table, set, shape, op, elements)?;
        Ok(())
    }

    /// What is loaded: fingerprint, sets with sizes, timed elements with their remaining time,
    /// and rule counters.
    pub fn status(&self) -> Result<Status, KernelError> {
        self.status_except(&[])
    }

    /// [`Kernel::status`] without the sets named in `skip`, which are not read at all (nft
    /// reads a set whole to count it: the fleet's 100,000 decisions at every metrics scrape).
    pub fn status_except(&self, skip: &[String]) -> Result<Status, KernelError> {
        let Some(fingerprint) = self.fingerprint()? else {
            return Ok(Status::not_loaded(crate::BACKEND));
        };
        let mut sets = Vec::new();
        // Terse: the sets without their elements (a 100k blacklist or fleet set is read
        // below, one set at a time, only where its elements are shown).
        for item in self.json(&["-t", "list", "sets", "inet"])? {
            let s = &item["set"];
            if s["table"].as_str() != Some(self.table.as_str()) {
                continue;
            }
            let name = s["name"].as_str().unwrap_or_default().to_string();
            if skip.contains(&name) {
                continue;
            }
            let detail = match self.json(&["list", "set", "inet", &self.table, &name]) {
                Ok(d) => d,
                // Removed since `list sets` (a reload or disable running meanwhile).
                Err(KernelError::Nft { stderr, .. }) if stderr.contains("No such file") => continue,
                Err(e) => return Err(e),
            };
            let elems = detail
                .iter()
                .find_map(|i| i["set"]["elem"].as_array().cloned())
                .unwrap_or_default();
            let timed = s["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "timeout"));
            let elements = if timed {
                elems
                    .iter()
                    .map(|e| ElementStatus {
                        element: element_text(&e["elem"]["val"])
                            .unwrap_or_else(|| element_text(e).unwrap_or_default()),
                        expires_in: e["elem"]["expires"].as_u64(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            sets.push(SetStatus {
                name,
                size: elems.len(),
                elements,
            });
        }
        let mut counters = Vec::new();
        for item in self.json(&["list", "chains", "inet"])? {
            let c = &item["chain"];
            if c["table"].as_str() != Some(self.table.as_str()) {
                continue;
            }
            let chain = c["name"].as_str().unwrap_or_default().to_string();
            let rules = match self.json(&["list", "chain", "inet", &self.table, &chain]) {
                Ok(r) => r,
                Err(KernelError::Nft { stderr, .. }) if stderr.contains("No such file") => continue,
                Err(e) => return Err(e),
            };
            for r in rules {
                let rule = &r["rule"];
                let Some(exprs) = rule["expr"].as_array() else {
                    continue;
                };
                if let Some(counter) = exprs.iter().find_map(|e| e.get("counter")) {
                    counters.push(RuleCounter {
                        chain: chain.clone(),
                        origin: rule["comment"].as_str().unwrap_or_default().to_string(),
                        packets: counter["packets"].as_u64().unwrap_or(0),
                        bytes: counter["bytes"].as_u64().unwrap_or(0),
                    });
                }
            }
        }
        Ok(Status {
            backend: crate::BACKEND.into(),
            loaded: true,
            fingerprint: Some(fingerprint),
            sets,
            counters,
        })
    }
}

/// An element as nft's JSON writes it: a string, or a prefix/range object.
fn element_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                Some(format!("{}/{}", p["addr"].as_str()?, p["len"].as_u64()?))
            } else if let Some(r) = o.get("range") {
                Some(format!("{}-{}", r[0].as_str()?, r[1].as_str()?))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A seed must go to a dynamic set, as keys of its length and family.
fn check_seed(rs: &Ruleset, set: &str, elems: &[Element]) -> Result<(), BackendError> {
    let bad = |reason: String| BackendError::Check(format!("cannot seed set {set}: {reason}"));
    let s = rs.sets.get(set).ok_or_else(|| bad("no such set".into()))?;
    let SetKind::Dynamic(d) = &s.kind else {
        return Err(bad("only dynamic sets are seeded".into()));
    };
    for e in elems {
        if e.prefix.family() != s.family || e.prefix.prefix_len() != d.key_len {
            return Err(bad(format!(
                "{} is not a /{} {} key",
                e.prefix, d.key_len, s.family
            )));
        }
    }
    Ok(())
}

fn seed_line(
    rs: &Ruleset,
    table: &str,
    set: &str,
    elems: &[Element],
) -> Result<String, BackendError> {
    check_seed(rs, set, elems)?;
    if elems.is_empty() {
        return Ok(String::new());
    }
    let mut parts = Vec::with_capacity(elems.len());
    for e in elems {
        let addr = e.prefix.addr();
        parts.push(match e.timeout {
            Some(t) => format!("{addr} timeout {}s", t.as_secs().max(1)),
            None => addr.to_string(),
        });
    }
    Ok(format!(
        "add element inet {table} {set} {{ {} }}\n",
        parts.join(", ")
    ))
}

/// A lowering failure as the check stage's error.
fn lower_error(e: LowerError) -> BackendError {
    match e {
        LowerError::Unsupported { backend, feature } => {
            BackendError::Unsupported { backend, feature }
        }
        e => BackendError::Check(e.to_string()),
    }
}

impl From<KernelError> for BackendError {
    fn from(e: KernelError) -> Self {
        match e {
            KernelError::Spawn { nft, source } => BackendError::Spawn {
                tool: nft,
                message: source.to_string(),
            },
            KernelError::NotLoaded(_) => BackendError::NotLoaded,
            KernelError::NoSet(s) => BackendError::NoSet(s),
            e => BackendError::Kernel(e.to_string()),
        }
    }
}

/// The errno of a removal of an absent element.
const ENOENT: i32 = 2;

/// The custom rules file's lines as rules of the `custom` chain: each rule line becomes
/// `add rule inet TABLE custom LINE`, so no line can leave the chain. A line that is a command
/// of its own (`table`, `flush`, `delete`, …), that holds a `;` (which ends an nft command and
/// starts another), whose braces do not balance, or that goes on to the next line, is refused
/// with its number. Empty lines and `#` comments are skipped.
pub fn custom_rules(table: &str, text: &str) -> Result<String, String> {
    const COMMANDS: &[&str] = &[
        "add",
        "chain",
        "create",
        "define",
        "delete",
        "describe",
        "destroy",
        "export",
        "flowtable",
        "flush",
        "get",
        "import",
        "include",
        "insert",
        "list",
        "map",
        "monitor",
        "rename",
        "replace",
        "reset",
        "set",
        "table",
    ];
    let mut out = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let first = line.split_whitespace().next().unwrap_or("");
        if COMMANDS.contains(&first.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "line {n}: `{first}` is a command, not a rule of the custom chain"
            ));
        }
        if line.contains(';') {
            return Err(format!(
                "line {n}: `;` would end the rule and start another command"
            ));
        }
        if line.ends_with('\\') {
            return Err(format!("line {n}: a rule is one line"));
        }
        let mut depth = 0i32;
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                break;
            }
        }
        if depth != 0 {
            return Err(format!("line {n}: its braces do not balance"));
        }
        out.push_str(&format!(
            "add rule inet {table} {} {line}\n",
            pbxfw_core::names::CUSTOM
        ));
    }
    Ok(out)
}

impl Backend for Kernel {
    fn name(&self) -> &'static str {
        crate::BACKEND
    }

    fn render(&self, rs: &Ruleset) -> Result<String, BackendError> {
        let opts = Options {
            table: self.table.clone(),
            counters: false,
        };
        Ok(lower(rs, &opts).map_err(lower_error)?.text)
    }

    fn load(&self, rs: &Ruleset, opts: &ApplyOptions) -> Result<(), BackendError> {
        self.load_script(rs, opts)
    }

    fn patch_static(
        &self,
        new: &Ruleset,
        fingerprint: &str,
        changes: &[SetUpdate],
    ) -> Result<(), BackendError> {
        self.patch(new, fingerprint, changes)
    }

    fn update_set(
        &self,
        rs: &Ruleset,
        set: &str,
        op: Op,
        elements: &[Element],
    ) -> Result<(), BackendError> {
        match Kernel::update_set(self, rs, set, op, elements) {
            // One absent element fails a whole netlink batch: retry one by one, skipping the
            // absent ones, as the trait promises.
            Err(KernelError::Netlink(NetlinkError::Refused { source, .. }))
                if op == Op::Remove && source.raw_os_error() == Some(ENOENT) =>
            {
                for e in elements {
                    match Kernel::update_set(self, rs, set, op, std::slice::from_ref(e)) {
                        Err(KernelError::Netlink(NetlinkError::Refused { source, .. }))
                            if source.raw_os_error() == Some(ENOENT) => {}
                        other => other?,
                    }
                }
                Ok(())
            }
            other => Ok(other?),
        }
    }

    fn edit_sets(&self, rs: &Ruleset, edits: &[SetEdit]) -> Result<(), BackendError> {
        let mut flush = Vec::new();
        let mut changes = Vec::new();
        for e in edits {
            let s = rs
                .sets
                .get(e.set())
                .ok_or_else(|| BackendError::NoSet(e.set().into()))?;
            let shape = static_shape(&s.kind);
            match e {
                // A flush goes first in the batch: only a flush that precedes every change of
                // the edits is expressible, and it is the only one asked for.
                SetEdit::Flush(set) if changes.is_empty() => flush.push(set.clone()),
                SetEdit::Flush(set) => {
                    return Err(BackendError::Kernel(format!(
                        "set {set}: a flush must come before the other edits"
                    )))
                }
                SetEdit::Add(set, els) | SetEdit::Remove(set, els) => {
                    let op = if matches!(e, SetEdit::Add(..)) {
                        Op::Add
                    } else {
                        Op::Remove
                    };
                    changes.push(netlink::Change {
                        set: set.clone(),
                        shape,
                        op,
                        elements: els.clone(),
                    });
                }
            }
        }
        changes.retain(|c| !c.elements.is_empty());
        netlink::apply_atomic(&self.table, &flush, &changes)
            .map_err(|e| BackendError::from(KernelError::from(e)))
    }

    fn status_except(&self, skip: &[String]) -> Result<Status, BackendError> {
        Ok(Kernel::status_except(self, skip)?)
    }

    fn set_elements(&self, set: &str) -> Result<Vec<ElementStatus>, BackendError> {
        let detail = match self.json(&["list", "set", "inet", &self.table, set]) {
            Ok(d) => d,
            Err(KernelError::Nft { stderr, .. }) if stderr.contains("No such file") => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e.into()),
        };
        Ok(detail
            .iter()
            .find_map(|i| i["set"]["elem"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| ElementStatus {
                element: element_text(&e["elem"]["val"])
                    .unwrap_or_else(|| element_text(e).unwrap_or_default()),
                expires_in: e["elem"]["expires"].as_u64(),
            })
            .collect())
    }

    fn fingerprint(&self) -> Result<Option<String>, BackendError> {
        Ok(Kernel::fingerprint(self)?)
    }

    /// The kernel's handles of the table and of the machine's IPv4 ban set: a set created
    /// anew gets another handle, one an apply keeps (dynamic sets are never re-declared)
    /// keeps its own.
    fn instance(&self) -> Result<Option<String>, BackendError> {
        let set_handle = |items: &[Value], name: &str| {
            items.iter().find_map(|i| {
                let o = &i["set"];
                (o["table"].as_str() == Some(self.table.as_str())
                    && o["name"].as_str() == Some(name))
                .then(|| o["handle"].as_u64())
                .flatten()
            })
        };
        // The table's handle over netlink (`nft list tables` reads every element first).
        let Some(table) = netlink::table_handle(&self.table).map_err(KernelError::from)? else {
            return Ok(None);
        };
        let ban = pbxfw_core::names::ban(pbxfw_core::Family::Ipv4);
        // Terse: without elements, which `list sets` prints too (megabytes at 100k).
        let sets = self.json(&["-t", "list", "sets", "inet"])?;
        Ok(set_handle(&sets, &ban).map(|set| format!("table {table} set {set}")))
    }

    fn status(&self) -> Result<Status, BackendError> {
        Ok(Kernel::status(self)?)
    }

    fn disable(&self) -> Result<bool, BackendError> {
        Ok(Kernel::disable(self)?)
    }
}
