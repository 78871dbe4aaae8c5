//! Reading an Asterisk configuration directory for discovery (`pbxfw_core::discover`).
//!
//! The core parses; this module only finds files. Names are relative to the directory, or
//! absolute as Asterisk allows in `#include`; the last path component may be a glob (`*`, `?`),
//! as Asterisk expands `#include "pjsip_custom*.conf"`. Files that cannot be read as UTF-8 text
//! are read lossily (Asterisk files are ASCII in practice; a stray Latin-1 comment must not hide
//! the rest of the file).

use std::path::{Path, PathBuf};

use pbxfw_core::{asterisk_conf::Files, Discovery};

/// If the policy asks for discovery (`pbx.discover = "/etc/asterisk"`), read that directory and
/// merge what it finds (explicit entries win; disagreements become warnings of the next
/// `validate`). Returns the discovery merged, if any. The command line, the C API and the
/// Python bindings all call this, so a policy means the same through every front end.
pub fn merge_requested(policy: &mut pbxfw_core::Policy) -> Option<(String, Discovery)> {
    let dir = policy.discover_dir()?.to_string();
    let found = Dir::new(&dir).discover();
    policy.merge_discovery(&found);
    Some((dir, found))
}

/// An Asterisk configuration directory such as `/etc/asterisk`.
#[derive(Debug, Clone)]
pub struct Dir {
    root: PathBuf,
}

impl Dir {
    /// The directory.
    pub fn new(root: impl Into<PathBuf>) -> Dir {
        Dir { root: root.into() }
    }

    /// Discover ports, ranges and trunks. A directory that does not exist or holds none of the
    /// main files gives an empty discovery whose notes say so.
    pub fn discover(&self) -> Discovery {
        let mut d = pbxfw_core::discover(self);
        if d.files.is_empty() {
            d.notes.push(pbxfw_core::asterisk_conf::Note {
                origin: None,
                message: format!(
                    "no Asterisk configuration in {} (none of pjsip.conf, sip.conf, iax.conf, rtp.conf, udptl.conf, http.conf)",
                    self.root.display()
                ),
            });
        }
        d
    }

    fn resolve(&self, name: &str) -> PathBuf {
        let p = Path::new(name);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    /// The name a file is reported under: relative to the root when inside it.
    fn display_name(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }
}

/// The largest configuration file read (FreePBX's largest are a few hundred kB).
const MAX_FILE: u64 = 16 << 20;

impl Dir {
    /// The text of `path` if, *as opened*, it is a regular file inside the directory. The check
    /// is made on the open file (its `/proc/self/fd` link), not on the name: the directory is
    /// writable by the asterisk user, who could otherwise swap a checked file for a link to a
    /// root-only one between the check and the read. It is opened non-blocking (a FIFO put in
    /// its place cannot hang the reader) and read up to [`MAX_FILE`].
    fn read_text(&self, path: &Path) -> Option<String> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let root = self.root.canonicalize().ok()?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        if !real.starts_with(&root) {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() as u64 > MAX_FILE {
            return None;
        }
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Dir {
    /// Whether `path` (after symbolic links) lies inside the directory. A glob's directory is
    /// checked, and each file it matches again when read.
    fn inside(&self, path: &Path) -> bool {
        let Ok(root) = self.root.canonicalize() else {
            return false;
        };
        match path.canonicalize() {
            Ok(p) => p.starts_with(&root),
            // Not there (yet): its directory decides, and reading finds nothing anyway.
            Err(_) => path
                .parent()
                .and_then(|d| d.canonicalize().ok())
                .is_some_and(|d| d.starts_with(&root)),
        }
    }
}

impl Files for Dir {
    fn outside(&self, pattern: &str) -> bool {
        let path = self.resolve(pattern);
        let probe = if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(['*', '?']))
        {
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
                .join(".")
        } else {
            path
        };
        !self.inside(&probe)
    }

    fn read(&self, pattern: &str) -> Vec<(String, String)> {
        let path = self.resolve(pattern);
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !file.contains(['*', '?']) {
            if !self.inside(&path) {
                return Vec::new();
            }
            return self
                .read_text(&path)
                .map(|t| vec![(self.display_name(&path), t)])
                .unwrap_or_default();
        }
        let dir = path.parent().unwrap_or(Path::new("/"));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| glob_match(&file, n))
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .filter(|p| self.inside(p))
            .filter_map(|p| self.read_text(&p).map(|t| (self.display_name(&p), t)))
            .collect()
    }
}

/// `*` (any run) and `?` (one character) matching, as glob(3) does within one component;
/// a leading dot must be matched explicitly.
fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("pjsip_custom*.conf", "pjsip_custom.conf"));
        assert!(glob_match("pjsip_custom*.conf", "pjsip_custom_a.conf"));
        assert!(!glob_match("pjsip_custom*.conf", "pjsip.conf"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("*", ".hidden"));
    }

    /// `#include` of a file outside the directory, directly, by `..`, through a symbolic link
    /// or a glob, is never read: its content never reaches the notes or the policy.
    #[test]
    fn nothing_outside_the_directory_is_read() {
        let outer = tempfile::tempdir().unwrap();
        let secret = outer.path().join("shadow");
        std::fs::write(&secret, "root:$6$secret:19000:0:99999:7:::\n").unwrap();
        let root = outer.path().join("asterisk");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&secret, root.join("link.conf")).unwrap();
        std::fs::write(
            root.join("pjsip.conf"),
            format!(
                "[general]\n#include \"{}\"\n#include ../shadow\n#include link.conf\n#include ../sha*\n",
                secret.display()
            ),
        )
        .unwrap();
        let d = Dir::new(&root);
        for p in [
            secret.to_str().unwrap(),
            "../shadow",
            "link.conf",
            "../sha*",
        ] {
            assert!(d.outside(p), "{p}");
            assert!(d.read(p).is_empty(), "{p}");
        }
        assert!(!d.outside("pjsip.conf"));
        let found = d.discover();
        let text = format!("{:?}", found);
        assert!(!text.contains("secret"), "{text}");
        assert_eq!(
            found
                .notes
                .iter()
                .filter(|n| n.message.contains("outside the configuration directory"))
                .count(),
            4,
            "{:?}",
            found.notes
        );
    }

    /// The check is made on the file as opened: a name that passed `inside` and was then
    /// swapped for a link to a root-only file reads nothing, and a FIFO put in a file's place
    /// cannot hang the reader.
    #[test]
    fn a_file_swapped_after_its_check_is_not_read() {
        let outer = tempfile::tempdir().unwrap();
        let secret = outer.path().join("shadow");
        std::fs::write(&secret, "root:$6$secret\n").unwrap();
        let root = outer.path().join("asterisk");
        std::fs::create_dir(&root).unwrap();
        let d = Dir::new(&root);
        let conf = root.join("pjsip.conf");
        std::fs::write(&conf, "[general]\n").unwrap();
        assert!(d.inside(&conf));
        std::fs::remove_file(&conf).unwrap();
        std::os::unix::fs::symlink(&secret, &conf).unwrap();
        assert_eq!(d.read_text(&conf), None);
        std::fs::remove_file(&conf).unwrap();
        assert_eq!(
            std::process::Command::new("mkfifo")
                .arg(&conf)
                .status()
                .map(|s| s.success())
                .ok(),
            Some(true)
        );
        assert_eq!(d.read_text(&conf), None);
        assert!(d.discover().files.is_empty());
    }

    #[test]
    fn reads_relative_absolute_and_globbed_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("sip.conf"),
            "[general]\n#include sip_*.conf\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("sip_b.conf"), "bindport=5160\n").unwrap();
        std::fs::write(dir.path().join("sip_a.conf"), "bindaddr=0.0.0.0\n").unwrap();
        std::fs::write(
            dir.path().join("rtp.conf"),
            b"[general]\n; caf\xe9\nrtpstart=12000\nrtpend=13000\n",
        )
        .unwrap();
        let d = Dir::new(dir.path());
        let abs = dir.path().join("sip_a.conf");
        assert_eq!(d.read(abs.to_str().unwrap()).len(), 1);
        let found = d.discover();
        assert_eq!(
            found.files,
            ["sip.conf", "sip_a.conf", "sip_b.conf", "rtp.conf"]
        );
        assert_eq!(found.services["chansip"][0].value.to_string(), "udp/5160");
        assert_eq!(found.rtp.unwrap().value.to_string(), "12000-13000");
        let none = Dir::new(dir.path().join("absent")).discover();
        assert!(none.notes[0]
            .message
            .starts_with("no Asterisk configuration"));
    }
}
