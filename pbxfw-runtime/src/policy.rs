//! Loading a policy, as every front end does it: read the text, parse it (TOML, or JSON for a
//! `.json` name), merge what the PBX's own configuration says (`pbx.discover`), validate, and
//! compile. The result carries the valid policy, its ruleset, the warnings and the discovery
//! that was merged, so that a front end never does any of these steps on its own.

use std::io::Read;
use std::path::Path;

use pbxfw_core::{compile, Diagnostic, Policy, Ruleset, ValidPolicy, DEFAULT_POLICY_TOML};

use crate::error::{Error, Result};

/// Where the policy lives when none is named.
pub const POLICY_PATH: &str = "/etc/pbxfw/pbxfw.toml";

/// A policy read, merged, validated and compiled.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where it came from (a path, `(stdin)`, `(default policy)`, or the name a caller gave).
    pub name: String,
    /// The valid policy.
    pub policy: ValidPolicy,
    /// Its ruleset.
    pub ruleset: Ruleset,
    /// What `pbx.discover` merged into it: the discovery as `pbxfw discover --format json`
    /// prints it, with `dir`.
    pub discovery: Option<serde_json::Value>,
    /// SHA-256 (hex) of the text it was read from, when it was read from text: an apply
    /// writes the edit index only for the text it compiled.
    pub text_sha256: Option<String>,
    /// The list files of `blacklist.lists`: (path, SHA-256 of the text read, or `unread:`
    /// and why it could not be).
    pub lists: Vec<(String, String)>,
}

impl Loaded {
    /// The warnings of the valid policy (discovery's disagreements included).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.policy.warnings
    }
}

/// The policy file a command means: `path`, else `$PBXFW_POLICY`, else [`POLICY_PATH`] when it
/// exists; `None`: there is none (a command then refuses: the embedded example is used only
/// when asked for, [`example`]).
pub fn resolve(path: Option<&str>) -> Option<String> {
    path.map(str::to_string)
        .or_else(|| std::env::var("PBXFW_POLICY").ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            Path::new(POLICY_PATH)
                .exists()
                .then(|| POLICY_PATH.to_string())
        })
}

/// The refusal when no policy file is given and none is installed.
pub fn no_policy() -> Error {
    Error::Usage(format!(
        "no policy: give a policy file, set $PBXFW_POLICY, or create {POLICY_PATH} (`--example` uses the example policy of a typical PBX, which is not your network)"
    ))
}

/// The embedded example policy of a typical PBX: a demonstration, used only when asked for.
pub fn example() -> Result<Loaded> {
    load_text(DEFAULT_POLICY_TOML, "(example policy)")
}

/// Load the policy [`resolve`] finds (`-` reads standard input); without one, [`no_policy`]:
/// the embedded example is never a silent default.
pub fn load(path: Option<&str>) -> Result<Loaded> {
    match resolve(path).as_deref() {
        None => Err(no_policy()),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("(stdin)", e))?;
            load_text(&s, "(stdin)")
        }
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            load_text(&text, p)
        }
    }
}

/// The syntax of policy text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML, the policy file's format.
    Toml,
    /// JSON, the same document.
    Json,
}

impl Format {
    /// The format a file name implies: JSON for `.json`, else TOML.
    pub fn of_name(name: &str) -> Format {
        if name.ends_with(".json") {
            Format::Json
        } else {
            Format::Toml
        }
    }
}

/// Load policy text; `name` ending in `.json` reads it as JSON, anything else as TOML.
pub fn load_text(text: &str, name: &str) -> Result<Loaded> {
    load_text_as(text, Format::of_name(name), name)
}

/// The first line of the policy file the Debian package ships: a template that no command
/// applies until `pbxfw init` has replaced it (docs/install.md).
pub const TEMPLATE_MARK: &str = "# pbxfw: not initialised";

/// Whether `text` is the package's template (its first line is [`TEMPLATE_MARK`]).
pub fn is_template(text: &str) -> bool {
    text.lines().next().map(str::trim_end) == Some(TEMPLATE_MARK)
}

/// Load policy text in `format`; `name` says where it came from in messages. The package's
/// template is refused: nothing is ever applied from it.
pub fn load_text_as(text: &str, format: Format, name: &str) -> Result<Loaded> {
    if is_template(text) {
        return Err(Error::Usage(format!(
            "{name} is the template the package installed, not a policy yet: run `pbxfw init` to write one (nothing was applied)"
        )));
    }
    let parsed = match format {
        Format::Toml => Policy::from_toml(text),
        Format::Json => Policy::from_json(text),
    };
    let policy = parsed.map_err(|e| Error::Parse {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    let mut loaded = load_policy(policy, name)?;
    loaded.text_sha256 = Some(crate::edit_index::sha256(text.as_bytes()));
    Ok(loaded)
}

/// Merge discovery into a parsed policy, validate and compile it.
pub fn load_policy(mut policy: Policy, name: &str) -> Result<Loaded> {
    let lists = read_lists(&mut policy)?;
    let discovery = pbxfw_host::asterisk::merge_requested(&mut policy).map(|(dir, found)| {
        let mut doc = found.to_json();
        doc["dir"] = dir.into();
        doc
    });
    let valid = policy.validate().map_err(|diagnostics| Error::Invalid {
        name: name.to_string(),
        diagnostics,
    })?;
    let ruleset = compile(&valid);
    Ok(Loaded {
        name: name.to_string(),
        policy: valid,
        ruleset,
        discovery,
        text_sha256: None,
        lists,
    })
}

/// Read the list files the policy names (`blacklist.lists`) and give them to it; returns
/// (path, [`list_state`]) of each. A list that cannot be read is given as such: validation
/// warns and the rest of the policy loads (docs/policy.md, "List files").
fn read_lists(policy: &mut Policy) -> Result<Vec<(String, String)>> {
    let mut paths: Vec<String> = policy
        .blacklist_lists()
        .into_iter()
        .map(str::to_string)
        .collect();
    // A repeat is validation's error; each file is read once.
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    let mut total = 0usize;
    for path in paths {
        let read = read_list_file(&path).and_then(|bytes| {
            total += bytes.len();
            if total > pbxfw_core::MAX_POLICY_BYTES {
                return Err(format!(
                    "the lists hold more than {} MiB together",
                    pbxfw_core::MAX_POLICY_BYTES >> 20
                ));
            }
            let sha = crate::edit_index::sha256(&bytes);
            String::from_utf8(bytes)
                .map(|text| (sha, text))
                .map_err(|_| "not UTF-8 text".to_string())
        });
        match read {
            Ok((sha, text)) => {
                policy.attach_list(&path, text);
                out.push((path, sha));
            }
            Err(why) => {
                policy.list_unreadable(&path, &why);
                out.push((path, format!("unread: {why}")));
            }
        }
    }
    Ok(out)
}

/// What a list file holds now, as [`Loaded::lists`] records it: its SHA-256, or why it cannot
/// be read.
pub(crate) fn list_state(path: &str) -> String {
    match read_list_file(path) {
        Ok(bytes) => crate::edit_index::sha256(&bytes),
        Err(why) => format!("unread: {why}"),
    }
}

/// The bytes of a list file: a regular file (checked before it is opened, and again on what
/// was opened), not writable by every user, no larger than a policy; opened without blocking
/// and without taking a terminal (a FIFO or a device named by mistake or on purpose).
fn read_list_file(path: &str) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.mode() & 0o002 != 0 {
        return Err(format!(
            "writable by every user (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| e.to_string())?;
    let opened = f.metadata().map_err(|e| e.to_string())?;
    if !opened.is_file() || opened.ino() != meta.ino() || opened.dev() != meta.dev() {
        return Err("replaced while it was opened".into());
    }
    let limit = pbxfw_core::MAX_POLICY_BYTES as u64;
    let mut bytes = Vec::with_capacity(opened.len().min(limit) as usize);
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {} MiB", limit >> 20));
    }
    Ok(bytes)
}

/// What an Asterisk configuration directory implies (`pbxfw discover`, `pbxfw_discover`,
/// `pbxfw.discover`). A directory holding no Asterisk file is an error (a wrong path, most
/// likely), the same for every front end.
pub fn discover(dir: &Path) -> Result<pbxfw_core::Discovery> {
    let found = pbxfw_host::asterisk::Dir::new(dir).discover();
    if found.files.is_empty() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no Asterisk configuration found",
            ),
        ));
    }
    Ok(found)
}

/// A discovery as the JSON every front end returns: `policy` (a fragment in the policy's
/// shape), `origins`, `notes`, `files`, and `dir`.
pub fn discovery_json(dir: &Path, found: &pbxfw_core::Discovery) -> serde_json::Value {
    let mut doc = found.to_json();
    doc["dir"] = dir.display().to_string().into();
    doc
}

/// The state file holding the discovery of the last applied policy.
pub fn discovery_path() -> std::path::PathBuf {
    pbxfw_host::dirs::state_dir().join("discovery.json")
}

/// After an apply: keep what discovery contributed to `loaded` for `status` (or forget an
/// earlier discovery when the policy no longer asks for one).
pub fn record_discovery(loaded: &Loaded) -> Result<()> {
    let path = discovery_path();
    match &loaded.discovery {
        Some(doc) => std::fs::create_dir_all(pbxfw_host::dirs::state_dir())
            .and_then(|()| pbxfw_host::state::write(&path, "discovery", doc)),
        None => pbxfw_host::state::remove(&path),
    }
    .map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list file is read when the policy is; a FIFO (which would block the reader until a
    /// writer comes), a directory, a missing file and a world-writable one are not read, with
    /// a warning, and the policy loads.
    #[test]
    fn list_files_are_read_and_only_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("drop.list");
        std::fs::write(&list, "# drop\n198.51.100.0/24\n").unwrap();
        let policy = |path: &Path| format!("[blacklist]\nlists = [{:?}]\n", path.to_str().unwrap());
        let loaded = load_text(&policy(&list), "p.toml").unwrap();
        assert_eq!(loaded.policy.blacklist.len(), 1);
        assert_eq!(loaded.lists[0].0, list.to_str().unwrap());
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // What cannot be read is a warning, and the policy loads without it.
        let unread = |path: &Path| {
            let l = load_text(&policy(path), "p.toml").unwrap();
            assert!(l.policy.blacklist.is_empty());
            l.warnings()[0].to_string()
        };
        assert!(unread(&fifo).contains("not a regular file"));
        assert!(unread(dir.path()).contains("not a regular file"));
        assert!(unread(&dir.path().join("none")).contains("No such file"));
        let open = dir.path().join("open.list");
        std::fs::write(&open, "192.0.2.1\n").unwrap();
        let mut perms = std::fs::metadata(&open).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o666);
        std::fs::set_permissions(&open, perms).unwrap();
        assert!(unread(&open).contains("writable by every user"));
    }
}
