//! The edit index: what `pbxfw blacklist add` needs to add single addresses to a large policy
//! without reading it whole (docs/policy.md, "Editing a large blacklist").
//!
//! Reading a 100,000-entry policy (parse, validate, compile) takes a tenth of a second, and an
//! edit read it twice and printed the whole ruleset again. Yet adding an address to the
//! blacklist changes one thing: the address joins the blacklist's host set. The index, written
//! after every edit that read the policy whole, keeps what that takes:
//! - the policy file it describes, by canonical path and SHA-256 of its text: any other text
//!   (an edit by hand, another tool) makes the index useless, and the next edit reads the
//!   file whole again;
//! - the ruleset's fingerprint in parts ([`FingerprintParts`]), so that the new fingerprint
//!   is the old one with the addresses counted in;
//! - the blacklist's single addresses (sorted), to skip the ones already there;
//! - where the entries array takes one more entry (the byte after its last value, found by
//!   `toml_edit`'s spans) and what separates two entries there;
//! - `settings.admins`: an address an administrator comes from goes through the whole edit,
//!   which runs the anti-lockout check and refuses naming the rule.
//!
//! What an addition by the index does not do: read the PBX's configuration again
//! (`pbx.discover`) or the policy's other parts; an `apply` does.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use pbxfw_core::{names, Family, FingerprintParts, Prefix, Ruleset, SetKind};
use pbxfw_host::{dirs, state};
use serde::{Deserialize, Serialize};

const KIND: &str = "edit_index";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the fast edit needs of the policy file it was written for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EditIndex {
    /// The pbxfw that wrote it: another one may compile the same text otherwise.
    pub version: String,
    /// The policy file, canonical.
    pub policy: PathBuf,
    /// SHA-256 of its text, hex.
    pub sha256: String,
    /// The ruleset compiled from it, in parts.
    pub parts: FingerprintParts,
    /// The byte offset right after the last value of `blacklist.entries`.
    pub insert_at: usize,
    /// What goes before each added entry: the text between the last two values when it is a
    /// comma and white space, else `", "`.
    pub separator: String,
    /// The blacklist's IPv4 single addresses, sorted.
    pub hosts4: Vec<u32>,
    /// The blacklist's IPv6 single addresses, sorted (high and low 64 bits).
    pub hosts6: Vec<Halves>,
    /// `settings.admins`' addresses.
    pub admins: Vec<IpAddr>,
    /// The list files of `blacklist.lists` the ruleset was compiled with: (path, SHA-256).
    #[serde(default)]
    pub lists: Vec<(String, String)>,
    /// The single addresses only list files name (not `entries`): an addition of one belongs
    /// in the policy, and is the whole edit's. Sorted, IPv4 then IPv6.
    #[serde(default)]
    pub listed: (Vec<u32>, Vec<Halves>),
}

fn path() -> PathBuf {
    dirs::state_dir().join("edit-index.json")
}

/// SHA-256 of `text`, hex.
pub(crate) fn sha256(text: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The index for `policy_path`, if one was written for it.
pub(crate) fn read(policy_path: &Path) -> Option<EditIndex> {
    let idx: EditIndex = state::read(&path(), KIND).ok().flatten()?;
    let real = std::fs::canonicalize(policy_path).ok()?;
    (idx.policy == real && idx.version == VERSION).then_some(idx)
}

/// The index of the policy file at `policy_path`, whose text `text` compiled to `rs` (with
/// `settings.admins` = `admins`); `None` without a place to add entries (a JSON policy, no
/// non-empty `blacklist.entries` array): the caller removes any index, and the next edit reads
/// the file whole.
pub(crate) fn build(
    policy_path: &Path,
    text: &str,
    loaded: &crate::policy::Loaded,
) -> Option<EditIndex> {
    if policy_path.extension().is_some_and(|e| e == "json") {
        return None;
    }
    let rs = &loaded.ruleset;
    let (insert_at, separator) = anchor(text)?;
    let (hosts4, hosts6) = hosts(rs)?;
    let (mut listed4, mut listed6) = (Vec::new(), Vec::new());
    for b in loaded.policy.blacklist.iter().filter(|b| b.list.is_some()) {
        match &b.source {
            pbxfw_core::Source::Net(p) if p.is_host() && p.family() == Family::Ipv4 => {
                listed4.push(p.start() as u32)
            }
            pbxfw_core::Source::Net(p) if p.is_host() => listed6.push(split(p.start())),
            _ => {}
        }
    }
    listed4.sort_unstable();
    listed6.sort_unstable();
    Some(EditIndex {
        version: VERSION.into(),
        policy: std::fs::canonicalize(policy_path).ok()?,
        sha256: sha256(text.as_bytes()),
        parts: rs.fingerprint_parts(),
        insert_at,
        separator,
        hosts4,
        hosts6,
        admins: loaded
            .policy
            .settings
            .admins
            .iter()
            .map(|a| a.addr)
            .collect(),
        lists: loaded.lists.clone(),
        listed: (listed4, listed6),
    })
}

/// The index of the file `loaded` was read from, if its text is still the one compiled: an
/// apply builds it beside the kernel's load (`nft` works in another process meanwhile), so
/// that the first edit after an apply is as quick as the next ones.
pub(crate) fn build_for(loaded: &crate::policy::Loaded) -> Option<EditIndex> {
    let sha = loaded.text_sha256.as_deref()?;
    let path = Path::new(&loaded.name);
    if !path.is_file() {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    if sha256(text.as_bytes()) != sha {
        return None;
    }
    build(path, &text, loaded)
}

/// Save an index.
pub(crate) fn save(idx: &EditIndex) -> std::io::Result<()> {
    state::write(&path(), KIND, idx)
}

/// An index staged beside its place, without an fsync (see [`state::prepare_unsynced`]: a
/// torn index does not parse, an older one matches neither the policy text nor the kernel,
/// and either is only a slower first edit), to be put in place by
/// [`state::Prepared::commit_unsynced`].
pub(crate) fn prepare(idx: &EditIndex) -> std::io::Result<state::Prepared> {
    state::prepare_unsynced(&path(), KIND, idx)
}

/// Forget the index.
pub(crate) fn remove() -> std::io::Result<()> {
    state::remove(&path())
}

/// Where `blacklist.entries` takes another entry in `text`, and the separator to put first.
fn anchor(text: &str) -> Option<(usize, String)> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let entries = doc.get("blacklist")?.get("entries")?.as_array()?;
    let n = entries.len();
    let last = entries.get(n.checked_sub(1)?)?.span()?;
    let separator = match n {
        1 => ", ".to_string(),
        _ => {
            // One entry a line (the indentation of the last one), or as many as the last
            // two share; a comment between them stays where it is.
            let before = entries.get(n - 2)?.span()?;
            let between = text.get(before.end..last.start)?;
            let blank = |t: &str| t.chars().all(|c| c == ' ' || c == '\t');
            match between.rsplit_once('\n') {
                Some((_, indent)) if between.starts_with(',') && blank(indent) => {
                    format!(",\n{indent}")
                }
                None if between.starts_with(',') && blank(&between[1..]) => between.to_string(),
                _ => ", ".to_string(),
            }
        }
    };
    // The span is the value's own text: a string ends with its quote.
    text.get(..last.end)
        .filter(|t| t.ends_with('"') || t.ends_with('\''))?;
    Some((last.end, separator))
}

/// An IPv6 address as two halves (JSON numbers are 64 bits at most).
type Halves = (u64, u64);

/// The blacklist's host sets, sorted (they are: a static set is kept sorted).
fn hosts(rs: &Ruleset) -> Option<(Vec<u32>, Vec<Halves>)> {
    let elements = |f: Family| -> Option<Vec<u128>> {
        match &rs.sets.get(&names::blacklist_hosts(f))?.kind {
            SetKind::Static(s) if s.is_hosts() => {
                Some(s.elements().iter().map(|(p, _)| p.start()).collect())
            }
            _ => None,
        }
    };
    let v4 = elements(Family::Ipv4)?
        .into_iter()
        .map(|v| v as u32)
        .collect();
    let v6 = elements(Family::Ipv6)?
        .into_iter()
        .map(|v| ((v >> 64) as u64, v as u64))
        .collect();
    Some((v4, v6))
}

impl EditIndex {
    /// Whether only a list file names the single address `p` (an addition of it belongs in
    /// the policy, and is the whole edit's).
    pub fn listed(&self, p: &Prefix) -> bool {
        match p.family() {
            Family::Ipv4 => self.listed.0.binary_search(&(p.start() as u32)).is_ok(),
            Family::Ipv6 => self.listed.1.binary_search(&split(p.start())).is_ok(),
        }
    }

    /// Whether the blacklist holds the single address `p`.
    pub fn has(&self, p: &Prefix) -> bool {
        match p.family() {
            Family::Ipv4 => self.hosts4.binary_search(&(p.start() as u32)).is_ok(),
            Family::Ipv6 => self.hosts6.binary_search(&split(p.start())).is_ok(),
        }
    }

    /// Count the single addresses `new` in (those not there yet, once each): the host lists
    /// and the fingerprint's parts. Returns them, in the order given.
    pub fn add(&mut self, new: &[Prefix]) -> Vec<Prefix> {
        let mut batch = std::collections::HashSet::new();
        let added: Vec<Prefix> = new
            .iter()
            .filter(|p| !self.has(p) && batch.insert(**p))
            .copied()
            .collect();
        // Merged once: inserting each into a sorted list would cost the list's length each.
        for p in &added {
            match p.family() {
                Family::Ipv4 => self.hosts4.push(p.start() as u32),
                Family::Ipv6 => self.hosts6.push(split(p.start())),
            }
            self.parts
                .sets
                .entry(names::blacklist_hosts(p.family()))
                .or_default()
                .add(p, "");
        }
        self.hosts4.sort_unstable();
        self.hosts6.sort_unstable();
        added
    }

    /// Whether the list files are still the ones the ruleset was compiled with (read as a
    /// policy load reads them: never a FIFO, never more than a policy's size).
    pub fn lists_unchanged(&self) -> bool {
        self.lists
            .iter()
            .all(|(path, state)| &crate::policy::list_state(path) == state)
    }

    /// Whether the index still reads as written by [`build`]: the offset right after a quoted
    /// value of `text`, a separator of a comma and blanks.
    pub fn fits(&self, text: &[u8]) -> bool {
        let sep = self.separator.as_bytes();
        let blank = |b: &[u8]| b.iter().all(|c| *c == b' ' || *c == b'\t');
        let sep_ok = sep.first() == Some(&b',')
            && match sep[1..].iter().position(|c| *c == b'\n') {
                Some(i) => blank(&sep[1..1 + i]) && blank(&sep[2 + i..]),
                None => blank(&sep[1..]),
            };
        sep_ok
            && self.insert_at <= text.len()
            && self.insert_at > 0
            && matches!(text[self.insert_at - 1], b'"' | b'\'')
    }
}

fn split(v: u128) -> Halves {
    ((v >> 64) as u64, v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The anchor is right after the last value, with the separator the list uses.
    #[test]
    fn the_anchor_follows_the_last_entry() {
        let text = "[blacklist]\nentries = [\n  \"192.0.2.1\",\n  \"192.0.2.2\", # noisy\n]\n";
        let (at, sep) = anchor(text).unwrap();
        assert_eq!(
            &text[..at],
            "[blacklist]\nentries = [\n  \"192.0.2.1\",\n  \"192.0.2.2\""
        );
        assert_eq!(sep, ",\n  ");
        let one = "blacklist.entries = ['192.0.2.1']\n";
        let (at, sep) = anchor(one).unwrap();
        assert_eq!(&one[..at], "blacklist.entries = ['192.0.2.1'");
        assert_eq!(sep, ", ");
        // A comment between two entries is not copied for every new one.
        let c = "[blacklist]\nentries = [\"192.0.2.1\", # a\n \"192.0.2.2\"]\n";
        assert_eq!(anchor(c).unwrap().1, ",\n ");
        let c = "[blacklist]\nentries = [\"192.0.2.1\" # a\n, \"192.0.2.2\"]\n";
        assert_eq!(anchor(c).unwrap().1, ", ");
        let c = "[blacklist]\nentries = [\"192.0.2.1\",  \"192.0.2.2\"]\n";
        assert_eq!(anchor(c).unwrap().1, ",  ");
        // Nothing to add after: the whole path.
        assert!(anchor("[blacklist]\nentries = []\n").is_none());
        assert!(anchor("[settings]\n").is_none());
        assert!(anchor("[blacklist]\nentries = [\"x\"\n").is_none());
    }
}
