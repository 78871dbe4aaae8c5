//! Loading, inspecting and removing pbxfw's chains and ipsets in the kernel of the current
//! network namespace, on iptables-nft or iptables-legacy.
//!
//! # Apply, in order
//! 1. `ipset restore`: every static set is built beside its live copy (`NAME-t`) or, when new,
//!    under its own name; dynamic sets are created only when missing (their elements, the bans
//!    and registrations, stay), or rebuilt beside the live one with their elements copied when
//!    their options changed.
//! 2. `iptables-restore --test` and `ip6tables-restore --test` check both families' rules. If the
//!    kernel refuses anything so far, the sets built in step 1 are destroyed and nothing else has
//!    changed.
//! 3. The new static sets are swapped in (`ipset swap`: atomic per set, rules keep referencing
//!    the same name).
//! 4. `iptables-restore --noflush`, then `ip6tables-restore --noflush`, each one transaction:
//!    pbxfw's chains are declared (which flushes them) and refilled, chains no longer used are
//!    deleted, and the jump from INPUT is put first if it is not there already. Nothing else in
//!    the table is touched.
//! 5. ipsets no longer referenced are destroyed, and the fingerprint is read back from both
//!    families.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use pbxfw_core::Family;
use pbxfw_core::{
    ApplyOptions, Backend, BackendError, Element, ElementStatus, Op, RuleCounter, SetStatus,
    SetUpdate, Status,
};
use pbxfw_core::{Ruleset, SetEdit, SetKind};

use crate::{
    ipset_name, lower, net_elements, IpsetKind, LowerError, Script, BACKEND, ENTRY,
    FINGERPRINT_TAG, IPSET_PREFIX,
};

/// Which iptables the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// iptables over nf_tables (`iptables-nft`, Debian's default since 10).
    Nft,
    /// The legacy x_tables (`iptables-legacy`).
    Legacy,
}

impl Variant {
    /// The name in binaries (`iptables-nft-restore`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Nft => "nft",
            Variant::Legacy => "legacy",
        }
    }

    /// The variant this host uses: legacy if legacy tables hold rules and iptables-nft's do not
    /// (a host that has been running iptables-legacy), otherwise the one plain `iptables` is.
    pub fn detect() -> Variant {
        let rules = |v: Variant| {
            Command::new(binary(&format!("iptables-{}-save", v.name())))
                .output()
                .ok()
                .filter(|o| o.status.success())
                .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains("\n-A "))
        };
        // Only look at legacy tables when the legacy modules are loaded: listing them would load
        // the modules, which never go away.
        if std::path::Path::new("/proc/net/ip_tables_names").exists()
            && rules(Variant::Legacy)
            && !rules(Variant::Nft)
        {
            return Variant::Legacy;
        }
        let version = Command::new(binary("iptables"))
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if version.contains("legacy") {
            Variant::Legacy
        } else {
            Variant::Nft
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nft" | "iptables-nft" => Ok(Variant::Nft),
            "legacy" | "iptables-legacy" => Ok(Variant::Legacy),
            other => Err(format!(
                "unknown iptables variant {other:?} (nft or legacy)"
            )),
        }
    }
}

fn binary(name: &str) -> String {
    ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}

/// How to reach the kernel: which iptables variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// iptables-nft or iptables-legacy.
    pub variant: Variant,
}

impl Default for Kernel {
    /// The variant the host uses ([`Variant::detect`]).
    fn default() -> Self {
        Kernel {
            variant: Variant::detect(),
        }
    }
}

/// One `ipset list -t` entry.
#[derive(Debug, Clone)]
struct LiveSet {
    ty: String,
    header: String,
    entries: usize,
}

impl LiveSet {
    /// Whether the live set was created with `header` (`hash:ip family inet timeout 60 …`): same
    /// type, and every option given there has the same value.
    fn matches(&self, header: &str) -> bool {
        let mut words = header.split_whitespace();
        if words.next() != Some(self.ty.as_str()) {
            return false;
        }
        let live: Vec<&str> = self.header.split_whitespace().collect();
        let want: Vec<&str> = words.collect();
        want.chunks(2).all(|kv| {
            live.windows(2)
                .any(|w| w[0] == kv[0] && kv.get(1).is_some_and(|v| w[1] == *v))
        })
    }
}

fn lower_error(e: LowerError) -> BackendError {
    match e {
        LowerError::Unsupported { backend, feature } => {
            BackendError::Unsupported { backend, feature }
        }
        e => BackendError::Check(e.to_string()),
    }
}

fn tmp(name: &str) -> String {
    format!("{name}-t")
}

impl Kernel {
    /// A handle for one variant.
    pub fn new(variant: Variant) -> Kernel {
        Kernel { variant }
    }

    fn iptables(&self, family: Family, what: &str) -> String {
        let base = match family {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        };
        let v = self.variant.name();
        binary(&if what.is_empty() {
            format!("{base}-{v}")
        } else {
            format!("{base}-{v}-{what}")
        })
    }

    fn run(&self, bin: &str, args: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn = |e: std::io::Error| BackendError::Spawn {
            tool: bin.to_string(),
            message: e.to_string(),
        };
        let mut child = cmd.spawn().map_err(spawn)?;
        if let Some(text) = stdin {
            // A write error surfaces as the tool's own failure below.
            let _ = child
                .stdin
                .take()
                .expect("piped")
                .write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            return Err(BackendError::Kernel(format!(
                "{bin} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ipset(&self, args: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
        self.run(&binary("ipset"), args, stdin)
    }

    /// pbxfw's ipsets as the kernel holds them.
    fn live_sets(&self) -> Result<BTreeMap<String, LiveSet>, BackendError> {
        let text = self.ipset(&["list", "-t"], None)?;
        let mut out = BTreeMap::new();
        let mut name: Option<String> = None;
        let mut set = LiveSet {
            ty: String::new(),
            header: String::new(),
            entries: 0,
        };
        for line in text.lines().chain(std::iter::once("Name: ")) {
            if let Some(n) = line.strip_prefix("Name: ") {
                if let Some(prev) = name.take() {
                    if prev.starts_with(IPSET_PREFIX) {
                        out.insert(prev, set.clone());
                    }
                }
                name = Some(n.trim().to_string());
                set = LiveSet {
                    ty: String::new(),
                    header: String::new(),
                    entries: 0,
                };
            } else if let Some(t) = line.strip_prefix("Type: ") {
                set.ty = t.trim().to_string();
            } else if let Some(h) = line.strip_prefix("Header: ") {
                set.header = h.trim().to_string();
            } else if let Some(n) = line.strip_prefix("Number of entries: ") {
                set.entries = n.trim().parse().unwrap_or(0);
            }
        }
        Ok(out)
    }

    /// `-S` of the filter table for one family: pbxfw's chains and the INPUT rules.
    fn listing(&self, family: Family) -> Result<String, BackendError> {
        self.run(&self.iptables(family, ""), &["-w", "-S"], None)
    }

    /// The restore input for one family: the script's chains, stale chains flushed and deleted,
    /// and the jump from INPUT made first.
    fn restore_input(
        &self,
        script: &Script,
        family: Family,
        custom: Option<&str>,
    ) -> Result<String, BackendError> {
        let listing = self.listing(family)?;
        let mut text = script.restore_input(family);
        text.push_str(&custom_lines(custom, family)?);
        let ours: BTreeSet<&str> = script.chains.iter().map(String::as_str).collect();
        let stale: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.strip_prefix("-N "))
            .filter(|c| c.starts_with(ENTRY) && !ours.contains(c))
            .collect();
        for c in &stale {
            // Declaring flushes it; deleted at the end, once nothing jumps to it.
            text = text.replacen("*filter\n", &format!("*filter\n:{c} - [0:0]\n"), 1);
        }
        text.push_str(&jump_fix(&listing));
        for c in &stale {
            text.push_str(&format!("-X {c}\n"));
        }
        text.push_str("COMMIT\n");
        Ok(text)
    }

    fn restore(&self, family: Family, input: &str, test: bool) -> Result<(), BackendError> {
        let mut args = vec!["-w", "--noflush"];
        if test {
            args.push("--test");
        }
        self.run(&self.iptables(family, "restore"), &args, Some(input))
            .map(|_| ())
            .map_err(|e| match e {
                BackendError::Kernel(m) => BackendError::Load(m),
                e => e,
            })
    }

    fn load_script(&self, rs: &Ruleset, opts: &ApplyOptions) -> Result<(), BackendError> {
        let script = lower(rs).map_err(lower_error)?;
        let live = self.live_sets()?;
        // Step 1: build.
        let mut build = String::new();
        let mut created: Vec<String> = Vec::new();
        let mut swaps: Vec<String> = Vec::new();
        for set in script.ipsets.values() {
            let target = match (set.kind.clone(), live.get(&set.name)) {
                (_, None) => set.name.clone(),
                (IpsetKind::Dynamic, Some(l)) if l.matches(&set.header) => continue,
                (IpsetKind::Dynamic, Some(_)) => {
                    // New options: rebuild beside the live set, keeping its elements.
                    let saved = self.ipset(&["save", &set.name], None)?;
                    if live.contains_key(&tmp(&set.name)) {
                        build.push_str(&format!("destroy {}\n", tmp(&set.name)));
                    }
                    build.push_str(&format!("create {} {}\n", tmp(&set.name), set.header));
                    for l in saved.lines() {
                        if let Some(rest) = l.strip_prefix(&format!("add {} ", set.name)) {
                            build.push_str(&format!("add {} {rest}\n", tmp(&set.name)));
                        }
                    }
                    swaps.push(set.name.clone());
                    created.push(tmp(&set.name));
                    continue;
                }
                (IpsetKind::Static, Some(_)) => {
                    swaps.push(set.name.clone());
                    tmp(&set.name)
                }
            };
            if live.contains_key(&target) {
                build.push_str(&format!("destroy {target}\n"));
            }
            build.push_str(&format!("create {target} {}\n", set.header));
            for e in &set.elements {
                build.push_str(&format!("add {target} {e}\n"));
            }
            created.push(target);
        }
        for (set, elems) in &opts.seed {
            let name = ipset_name(set);
            let target = if swaps.contains(&name) {
                tmp(&name)
            } else {
                name
            };
            build.push_str(&seed_lines(rs, set, &target, elems)?);
        }
        let undo = |k: &Kernel| {
            let text: String = created.iter().map(|n| format!("destroy {n}\n")).collect();
            let _ = k.ipset(&["-exist", "restore"], Some(&text));
        };
        if let Err(e) = self.ipset(&["-exist", "restore"], Some(&build)) {
            undo(self);
            return Err(BackendError::Load(e.to_string()));
        }
        // Step 2: check both families before anything live changes.
        let mut inputs = Vec::new();
        for family in [Family::Ipv4, Family::Ipv6] {
            let input = match self.restore_input(&script, family, opts.custom.as_deref()) {
                Ok(i) => i,
                Err(e) => {
                    undo(self);
                    return Err(e);
                }
            };
            if let Err(e) = self.restore(family, &input, true) {
                undo(self);
                return Err(e);
            }
            inputs.push((family, input));
        }
        // What the families hold now, to put back if the kernel refuses one of them: a rule the
        // kernel itself refuses (a rate out of its range) passes `--test`.
        let mut before = Vec::new();
        for family in [Family::Ipv4, Family::Ipv6] {
            match self.run(&self.iptables(family, "save"), &["-t", "filter"], None) {
                Ok(saved) => before.push(saved),
                Err(e) => {
                    undo(self);
                    return Err(e);
                }
            }
        }
        // Step 3: swap the new static sets in; the old contents stay in the `-t` sets until the
        // rules are in.
        let swap_all = |k: &Kernel| -> Result<(), BackendError> {
            if swaps.is_empty() {
                return Ok(());
            }
            let text: String = swaps
                .iter()
                .map(|n| format!("swap {} {n}\n", tmp(n)))
                .collect();
            k.ipset(&["restore"], Some(&text)).map(|_| ())
        };
        if let Err(e) = swap_all(self) {
            undo(self);
            return Err(BackendError::Load(e.to_string()));
        }
        // Step 4: the rules, one transaction per family.
        for (i, (family, input)) in inputs.iter().enumerate() {
            if let Err(e) = self.restore(*family, input, false) {
                // Put back the families already done, then the sets.
                for (done, saved) in inputs[..i].iter().zip(&before) {
                    let _ = self.restore(done.0, &rollback_input(saved, &done.1), false);
                }
                let _ = swap_all(self);
                undo(self);
                return Err(e);
            }
        }
        if !swaps.is_empty() {
            let text: String = swaps
                .iter()
                .map(|n| format!("destroy {}\n", tmp(n)))
                .collect();
            let _ = self.ipset(&["-exist", "restore"], Some(&text));
        }
        // Step 5: sets nothing references any more.
        let stale: String = live
            .keys()
            .filter(|n| !script.ipsets.contains_key(*n) && !swaps.iter().any(|s| tmp(s) == **n))
            .map(|n| format!("destroy {n}\n"))
            .collect();
        if !stale.is_empty() {
            // A set still referenced (by a rule pbxfw does not own) stays; that is not an error
            // of this apply.
            let _ = self.ipset(&["-exist", "restore"], Some(&stale));
        }
        Ok(())
    }

    /// The `ipset restore` lines that add or remove `elements` of `set` (an interval set's
    /// prefix may take more than one ipset key).
    fn update_lines(
        &self,
        rs: &Ruleset,
        set: &str,
        op: Op,
        elements: &[Element],
    ) -> Result<String, BackendError> {
        let s = rs
            .sets
            .get(set)
            .ok_or_else(|| BackendError::NoSet(set.into()))?;
        let name = ipset_name(set);
        let mut text = String::new();
        for e in elements {
            let keys = match &s.kind {
                SetKind::Static(st) if !st.is_hosts() => net_elements(&e.prefix),
                SetKind::Dynamic(d) if d.interval => net_elements(&e.prefix),
                _ => vec![e.prefix.addr().to_string()],
            };
            for k in keys {
                match op {
                    Op::Add => text.push_str(&format!("add {name} {k}{}\n", timeout(e))),
                    Op::Remove => text.push_str(&format!("del {name} {k}\n")),
                }
            }
        }
        Ok(text)
    }

    fn family_fingerprint(&self, family: Family) -> Result<Option<String>, BackendError> {
        // The whole table's listing, not `-S PBXFW`: iptables-nft answers for a missing chain
        // with the same error as for one it cannot parse.
        let out = self.listing(family)?;
        let entry = format!("-A {ENTRY} ");
        Ok(out.lines().filter(|l| l.starts_with(&entry)).find_map(|l| {
            let rest = &l[l.find(FINGERPRINT_TAG)? + FINGERPRINT_TAG.len()..];
            Some(
                rest.chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect::<String>(),
            )
        }))
    }
}

/// The restore input that brings one family back from the chains `applied` declared to what
/// `saved` (`iptables-save -t filter` output from before) held: pbxfw's chains and rules as they
/// were, the chains that are new deleted, and no jump from INPUT if there was none.
fn rollback_input(saved: &str, applied: &str) -> String {
    let old_chains: BTreeSet<&str> = saved
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with(ENTRY))
        .collect();
    let new_chains: BTreeSet<&str> = applied
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with(ENTRY))
        .collect();
    let mut out = String::from("*filter\n");
    for c in old_chains.union(&new_chains) {
        out.push_str(&format!(":{c} - [0:0]\n"));
    }
    for l in saved.lines() {
        if l.strip_prefix("-A ").is_some_and(|r| r.starts_with(ENTRY)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    let had_jump = saved
        .lines()
        .any(|l| l.starts_with("-A INPUT ") && l.ends_with(&format!("-j {ENTRY}")));
    if !had_jump {
        out.push_str(&format!(
            "-D INPUT -m comment --comment \"pbxfw\" -j {ENTRY}\n"
        ));
    }
    for c in new_chains.difference(&old_chains) {
        out.push_str(&format!("-X {c}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// The custom rules as restore lines of the custom chain for `family`: each line holds rule
/// arguments (`-p tcp --dport 8443 -j ACCEPT`); `-4 ` or `-6 ` in front keeps it to one family;
/// blank lines and `#` comments are skipped. A line that tries to name a chain or a table of
/// its own is refused: custom rules live in their chain only.
fn custom_lines(custom: Option<&str>, family: Family) -> Result<String, BackendError> {
    let chain = crate::chain_name(pbxfw_core::names::CUSTOM);
    let mut out = String::new();
    for (i, line) in custom.unwrap_or_default().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (only, args) = match line.split_once(' ') {
            Some(("-4", rest)) => (Some(Family::Ipv4), rest.trim()),
            Some(("-6", rest)) => (Some(Family::Ipv6), rest.trim()),
            _ => (None, line),
        };
        let first = args.split_whitespace().next().unwrap_or_default();
        if args.starts_with('*')
            || args.starts_with(':')
            || matches!(
                first,
                "-A" | "-I" | "-D" | "-R" | "-N" | "-X" | "-F" | "-P" | "-t" | "COMMIT"
            )
        {
            return Err(BackendError::Check(format!(
                "custom rules line {}: {line:?} names a chain, table or command; give rule arguments only (the chain is {chain})",
                i + 1
            )));
        }
        if only.is_none_or(|f| f == family) {
            out.push_str(&format!("-A {chain} {args}\n"));
        }
    }
    Ok(out)
}

/// The restore lines that make pbxfw's jump the first rule of INPUT, exactly once.
fn jump_fix(listing: &str) -> String {
    let input: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("-A INPUT "))
        .collect();
    let ours = |l: &str| l.ends_with(&format!("-j {ENTRY}"));
    let count = input.iter().filter(|l| ours(l)).count();
    if count == 1 && input.first().is_some_and(|l| ours(l)) {
        return String::new();
    }
    let mut out = String::new();
    for l in input.iter().filter(|l| ours(l)) {
        out.push_str(&l.replacen("-A INPUT", "-D INPUT", 1));
        out.push('\n');
    }
    out.push_str(&format!(
        "-I INPUT 1 -m comment --comment \"pbxfw\" -j {ENTRY}\n"
    ));
    out
}

/// `ipset restore` lines putting `elems` into dynamic IR set `set` (ipset `target`).
fn seed_lines(
    rs: &Ruleset,
    set: &str,
    target: &str,
    elems: &[Element],
) -> Result<String, BackendError> {
    let bad = |reason: String| BackendError::Check(format!("cannot seed set {set}: {reason}"));
    let s = rs.sets.get(set).ok_or_else(|| bad("no such set".into()))?;
    let SetKind::Dynamic(d) = &s.kind else {
        return Err(bad("only dynamic sets are seeded".into()));
    };
    let mut out = String::new();
    for e in elems {
        if e.prefix.family() != s.family || e.prefix.prefix_len() != d.key_len {
            return Err(bad(format!(
                "{} is not a /{} {} key",
                e.prefix, d.key_len, s.family
            )));
        }
        out.push_str(&format!("add {target} {}{}\n", e.prefix.addr(), timeout(e)));
    }
    Ok(out)
}

/// ipset's longest timeout, in seconds (its kernel keeps milliseconds in 32 bits).
const IPSET_MAX_TIMEOUT: u64 = 2_147_483;

/// The members of an `ipset list` listing, with their remaining time.
fn members(text: &str) -> Vec<ElementStatus> {
    let members = text.split("Members:\n").nth(1).unwrap_or_default();
    members
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let element = words.next().unwrap_or_default().to_string();
            let mut expires_in = None;
            while let Some(w) = words.next() {
                if w == "timeout" {
                    expires_in = words.next().and_then(|t| t.parse().ok());
                }
            }
            ElementStatus {
                element,
                // 0 means the element never expires.
                expires_in: expires_in.filter(|t| *t > 0),
            }
        })
        .collect()
}

fn timeout(e: &Element) -> String {
    e.timeout
        .map(|t| format!(" timeout {}", t.as_secs().clamp(1, IPSET_MAX_TIMEOUT)))
        .unwrap_or_default()
}

impl Backend for Kernel {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn render(&self, rs: &Ruleset) -> Result<String, BackendError> {
        Ok(lower(rs).map_err(lower_error)?.text())
    }

    fn load(&self, rs: &Ruleset, opts: &ApplyOptions) -> Result<(), BackendError> {
        self.load_script(rs, opts)
    }

    /// The changes as one `ipset restore`, then the new fingerprint into the entry rule of
    /// both families.
    fn patch_static(
        &self,
        new: &Ruleset,
        fingerprint: &str,
        changes: &[SetUpdate],
    ) -> Result<(), BackendError> {
        let mut text = String::new();
        for c in changes {
            text.push_str(&self.update_lines(new, &c.set, c.op, &c.elements)?);
        }
        if !text.is_empty() {
            self.ipset(&["-exist", "restore"], Some(&text))?;
        }
        for family in [Family::Ipv4, Family::Ipv6] {
            let input = format!(
                "*filter\n-R {ENTRY} 1 -m comment --comment \"{FINGERPRINT_TAG}{}\" -j {}\nCOMMIT\n",
                fingerprint,
                crate::chain_name(pbxfw_core::INPUT)
            );
            self.restore(family, &input, false)?;
        }
        Ok(())
    }

    fn update_set(
        &self,
        rs: &Ruleset,
        set: &str,
        op: Op,
        elements: &[Element],
    ) -> Result<(), BackendError> {
        let text = self.update_lines(rs, set, op, elements)?;
        if text.is_empty() {
            return Ok(());
        }
        self.ipset(&["-exist", "restore"], Some(&text))
            .map(|_| ())
            .map_err(|e| match e {
                BackendError::Kernel(m) if m.contains("does not exist") => {
                    BackendError::NoSet(set.into())
                }
                e => e,
            })
    }

    fn edit_sets(&self, rs: &Ruleset, edits: &[SetEdit]) -> Result<(), BackendError> {
        // A flushed set is rebuilt aside and swapped in (`ipset swap` is atomic): packets
        // never see it empty or half written, and a refused restore leaves it as it was.
        let mut text = String::new();
        let mut swaps: Vec<(String, String)> = Vec::new();
        let aside = |set: &str| format!("{}_n", ipset_name(set));
        for e in edits {
            match e {
                SetEdit::Flush(set) => {
                    let s = rs
                        .sets
                        .get(set)
                        .ok_or_else(|| BackendError::NoSet(set.clone()))?;
                    let SetKind::Dynamic(d) = &s.kind else {
                        return Err(BackendError::Check(format!("{set} is not a dynamic set")));
                    };
                    let fam = match s.family {
                        Family::Ipv4 => "inet",
                        Family::Ipv6 => "inet6",
                    };
                    let ty = if d.interval { "hash:net" } else { "hash:ip" };
                    let mut header = format!(
                        "{ty} family {fam} timeout {} maxelem {}",
                        d.timeout.unwrap_or(0),
                        d.size
                    );
                    if !d.interval && d.key_len < s.family.bits() {
                        header.push_str(&format!(" netmask {}", d.key_len));
                    }
                    let tmp = aside(set);
                    text.push_str(&format!("create {tmp} {header}\nflush {tmp}\n"));
                    swaps.push((set.clone(), tmp));
                }
                SetEdit::Add(set, els) | SetEdit::Remove(set, els) => {
                    let op = if matches!(e, SetEdit::Add(..)) {
                        Op::Add
                    } else {
                        Op::Remove
                    };
                    let lines = self.update_lines(rs, set, op, els)?;
                    if swaps.iter().any(|(s, _)| s == set) {
                        let (name, tmp) = (ipset_name(set), aside(set));
                        for l in lines.lines() {
                            let l = l
                                .replacen(&format!("add {name} "), &format!("add {tmp} "), 1)
                                .replacen(&format!("del {name} "), &format!("del {tmp} "), 1);
                            text.push_str(&l);
                            text.push('\n');
                        }
                    } else {
                        text.push_str(&lines);
                    }
                }
            }
        }
        for (set, tmp) in &swaps {
            text.push_str(&format!("swap {tmp} {}\ndestroy {tmp}\n", ipset_name(set)));
        }
        if text.is_empty() {
            return Ok(());
        }
        let done = self.ipset(&["-exist", "restore"], Some(&text)).map(|_| ());
        if done.is_err() {
            // Whatever was made aside goes (the sets in use are untouched).
            for (_, tmp) in &swaps {
                let _ = self.ipset(&["destroy", tmp], None);
            }
        }
        done
    }

    fn fingerprint(&self) -> Result<Option<String>, BackendError> {
        let v4 = self.family_fingerprint(Family::Ipv4)?;
        let v6 = self.family_fingerprint(Family::Ipv6)?;
        // Both families must hold the same ruleset; anything else is not a loaded ruleset.
        Ok(if v4 == v6 { v4 } else { None })
    }

    /// The `initval` of the machine's IPv4 ban ipset: a random seed the kernel draws when the
    /// set is created (ipset 7's header), so a set created anew has another.
    fn instance(&self) -> Result<Option<String>, BackendError> {
        let name = crate::ipset_name(&pbxfw_core::names::ban(Family::Ipv4));
        Ok(self.live_sets()?.get(&name).and_then(|s| {
            s.header
                .split_whitespace()
                .skip_while(|w| *w != "initval")
                .nth(1)
                .map(str::to_string)
        }))
    }

    fn set_elements(&self, set: &str) -> Result<Vec<ElementStatus>, BackendError> {
        // Two `ipset` runs, where the whole status takes both rulesets and every set: the
        // daemon reads the kernel tiers' ban sets this way before each cut of a banned
        // source's flows (docs/responsive.md, "Flows of a banned source").
        let name = format!("{IPSET_PREFIX}{set}");
        match self.live_sets()?.get(&name) {
            Some(live)
                if live.entries > 0 && live.header.split_whitespace().any(|w| w == "timeout") =>
            {
                Ok(members(&self.ipset(&["list", &name], None)?))
            }
            _ => Ok(Vec::new()),
        }
    }

    fn status(&self) -> Result<Status, BackendError> {
        let Some(fingerprint) = Backend::fingerprint(self)? else {
            return Ok(Status::not_loaded(BACKEND));
        };
        let mut sets = Vec::new();
        for (name, live) in self.live_sets()? {
            let timed = live.header.split_whitespace().any(|w| w == "timeout");
            let mut elements = Vec::new();
            if timed && live.entries > 0 {
                elements = members(&self.ipset(&["list", &name], None)?);
            }
            sets.push(SetStatus {
                name: name.trim_start_matches(IPSET_PREFIX).to_string(),
                size: live.entries,
                elements,
            });
        }
        let mut counters = Vec::new();
        for family in [Family::Ipv4, Family::Ipv6] {
            let text = self.run(
                &self.iptables(family, "save"),
                &["-c", "-t", "filter"],
                None,
            )?;
            for line in text.lines() {
                // [packets:bytes] -A CHAIN ... --comment "origin" ...
                let Some((c, rule)) = line.strip_prefix('[').and_then(|l| l.split_once("] "))
                else {
                    continue;
                };
                let Some(chain) = rule
                    .strip_prefix("-A ")
                    .and_then(|r| r.split_whitespace().next())
                else {
                    continue;
                };
                if !chain.starts_with(ENTRY) {
                    continue;
                }
                let (p, b) = c.split_once(':').unwrap_or(("0", "0"));
                let origin = rule
                    .split_once("--comment ")
                    .map(|(_, r)| {
                        if let Some(q) = r.strip_prefix('"') {
                            q.split('"').next().unwrap_or_default().to_string()
                        } else {
                            r.split_whitespace().next().unwrap_or_default().to_string()
                        }
                    })
                    .unwrap_or_default();
                counters.push(RuleCounter {
                    chain: format!("{chain} ({family})"),
                    origin,
                    packets: p.parse().unwrap_or(0),
                    bytes: b.parse().unwrap_or(0),
                });
            }
        }
        Ok(Status {
            backend: BACKEND.into(),
            loaded: true,
            fingerprint: Some(fingerprint),
            sets,
            counters,
        })
    }

    fn disable(&self) -> Result<bool, BackendError> {
        let mut any = false;
        for family in [Family::Ipv4, Family::Ipv6] {
            let listing = self.listing(family)?;
            let chains: Vec<&str> = listing
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .filter(|c| c.starts_with(ENTRY))
                .collect();
            let jumps: Vec<&str> = listing
                .lines()
                .filter(|l| l.starts_with("-A INPUT ") && l.ends_with(&format!("-j {ENTRY}")))
                .collect();
            if chains.is_empty() && jumps.is_empty() {
                continue;
            }
            any = true;
            let mut text = String::from("*filter\n");
            for c in &chains {
                text.push_str(&format!(":{c} - [0:0]\n"));
            }
            for j in &jumps {
                text.push_str(&j.replacen("-A INPUT", "-D INPUT", 1));
                text.push('\n');
            }
            for c in &chains {
                text.push_str(&format!("-X {c}\n"));
            }
            text.push_str("COMMIT\n");
            self.restore(family, &text, false)?;
        }
        let live = self.live_sets()?;
        if !live.is_empty() {
            any = true;
            let text: String = live.keys().map(|n| format!("destroy {n}\n")).collect();
            self.ipset(&["restore"], Some(&text))?;
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_headers_match_by_option() {
        let live = LiveSet {
            ty: "hash:ip".into(),
            header: "family inet hashsize 1024 maxelem 65536 timeout 600 bucketsize 12".into(),
            entries: 0,
        };
        assert!(live.matches("hash:ip family inet timeout 600 maxelem 65536"));
        assert!(!live.matches("hash:ip family inet timeout 60 maxelem 65536"));
        assert!(!live.matches("hash:net family inet maxelem 65536"));
    }

    #[test]
    fn the_jump_is_moved_first_once() {
        let first =
            "-P INPUT ACCEPT\n-A INPUT -m comment --comment pbxfw -j PBXFW\n-A INPUT -j f2b-sshd\n";
        assert_eq!(jump_fix(first), "");
        let later = "-A INPUT -j DOCKER\n-A INPUT -m comment --comment pbxfw -j PBXFW\n";
        assert_eq!(
            jump_fix(later),
            "-D INPUT -m comment --comment pbxfw -j PBXFW\n-I INPUT 1 -m comment --comment \"pbxfw\" -j PBXFW\n"
        );
        assert_eq!(
            jump_fix("-A INPUT -j DOCKER\n"),
            "-I INPUT 1 -m comment --comment \"pbxfw\" -j PBXFW\n"
        );
    }
}
