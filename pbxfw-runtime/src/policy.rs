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
    /// The list files of `blacklist.lists` it read: (path, SHA-256 of the text read).
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
/// (path, SHA-256) of each. A list is a regular file of text no larger than a policy.
fn read_lists(policy: &mut Policy) -> Result<Vec<(String, String)>> {
    use std::io::Read;
    let paths: Vec<String> = policy
        .blacklist_lists()
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut out = Vec::new();
    for path in paths {
        // Without blocking: opening a FIFO for reading would wait for a writer.
        let f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?
        };
        let meta = f.metadata().map_err(|e| Error::io(&path, e))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "{path} (blacklist.lists) is not a regular file"
            )));
        }
        let limit = pbxfw_core::MAX_POLICY_BYTES as u64;
        let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
        f.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        if bytes.len() as u64 > limit {
            return Err(Error::Usage(format!(
                "{path} (blacklist.lists) is larger than {} MiB",
                limit >> 20
            )));
        }
        let sha = crate::edit_index::sha256(&bytes);
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Usage(format!("{path} (blacklist.lists) is not UTF-8 text")))?;
        policy.attach_list(&path, text);
        out.push((path, sha));
    }
    Ok(out)
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
    /// writer comes) and a directory are refused at once.
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
        let e = load_text(&policy(&fifo), "p.toml").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = load_text(&policy(dir.path()), "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a regular file") || e.contains("directory"),
            "{e}"
        );
        let e = load_text(&policy(&dir.path().join("none")), "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("none"), "{e}");
    }
}
