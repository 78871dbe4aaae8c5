//! Crash-safe state files. Each is JSON `{"pbxfw_state": KIND, "version": N, "data": …}`,
//! written atomically (a temp file in the same directory, fsync, rename over the old one, fsync
//! of the directory), so that a crash at any point leaves either the old file or the new one.
//! Before a file is replaced, its current content, if it reads back (a file over 1 MiB: if its
//! envelope, the head and the closing brace, is ours), is kept as `NAME.prev`.
//!
//! A file that its readers check against what it describes (the applied record and the edit
//! index, against the kernel and the policy) may skip the fsyncs ([`prepare_unsynced`],
//! [`Prepared::commit_unsynced`]): a crash then leaves the older file or, for a file never
//! synced, a torn one, which does not parse (the edit index's reader ignores it).
//!
//! Reading a file that is corrupt, of another kind or of a newer version is an error that says
//! so and names the last good copy: never a silent reset (a reset would lift every ban).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The state file format this build writes; it reads this version and older ones.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    pbxfw_state: String,
    version: u32,
    data: T,
}

/// A state file that cannot be used.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{path}: {reason}{}", match .last_good {
    Some(p) => format!("; the last good copy is {} (move it into place to use it)", p.display()),
    None => String::new(),
})]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
    /// The last good copy, when there is one that reads back.
    pub last_good: Option<PathBuf>,
}

/// Write `bytes` to `path` atomically: temp file beside it, fsync, rename, fsync the directory.
/// An existing file's permissions are kept.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic(path, |f| f.write_all(bytes))
}

/// Write `data` as state `kind` to `path` atomically, serialised straight into the file (no
/// copy of the text in memory, no `.prev` copy): for large state that is rebuilt anyway, such
/// as the fleet's decisions.
pub fn write_streamed<T: Serialize>(path: &Path, kind: &str, data: &T) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    atomic(path, |f| {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
        serde_json::to_writer(
            &mut w,
            &Envelope {
                pbxfw_state: kind.to_string(),
                version: VERSION,
                data,
            },
        )
        .map_err(std::io::Error::other)?;
        w.flush()
    })
}

/// Write a file through `fill` atomically: temp file beside it, fsync, rename, fsync the
/// directory. An existing file's permissions are kept.
fn atomic(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    stage(path, fill, true)?.put()
}

/// The first half of an atomic write: the temp file beside `path`, filled by `fill` and on
/// disk (fsync, when `sync`), with the permissions of the file it will replace.
fn stage(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    sync: bool,
) -> std::io::Result<Staged> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        unique()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    // Removed when dropped, whatever fails below.
    let staged = Staged {
        path: path.to_path_buf(),
        tmp: Some(tmp),
    };
    if let Ok(meta) = std::fs::metadata(path) {
        f.set_permissions(meta.permissions())?;
    }
    fill(&mut f)?;
    if sync {
        f.sync_all()?;
    }
    Ok(staged)
}

/// A temp file on disk, waiting to be renamed over its file ([`Staged::put`]); removed when
/// dropped before.
struct Staged {
    path: PathBuf,
    tmp: Option<PathBuf>,
}

impl Staged {
    /// The second half: rename into place, fsync the directory.
    fn put(self) -> std::io::Result<()> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        self.rename()?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// Rename into place, without the fsync of the directory (a rename the caller's next
    /// [`Staged::put`] in the same directory makes durable).
    fn rename(mut self) -> std::io::Result<()> {
        let tmp = self.tmp.take().expect("a staged file is put once");
        let renamed = std::fs::rename(&tmp, &self.path);
        // Gone after a rename, unless both names were links of one file (then the rename did
        // nothing); or the rename failed.
        let _ = std::fs::remove_file(&tmp);
        renamed
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A state file written and on disk under a temporary name ([`prepare`]), not yet in place:
/// the costly part of a crash-safe write (serialising, writing, fsync, a link to the current
/// file) done before the caller knows whether the state holds, beside a kernel load.
/// [`Prepared::commit`] puts it in place, the current file becoming `NAME.prev`; dropped
/// uncommitted, it leaves both as they were.
pub struct Prepared {
    staged: Staged,
    prev: Option<Staged>,
}

/// Stage state `kind` for `path` (creating the directory); see [`Prepared`].
pub fn prepare<T: Serialize>(path: &Path, kind: &str, data: &T) -> std::io::Result<Prepared> {
    prepare_as(path, kind, data, true)
}

/// [`prepare`] without any fsync, to be put in place by [`Prepared::commit_unsynced`]: for a
/// cache its reader checks and ignores when it does not check, which is all a crash can leave
/// of it (a torn file does not parse). The edit index is one (its policy text's hash, the
/// kernel's fingerprint).
pub fn prepare_unsynced<T: Serialize>(
    path: &Path,
    kind: &str,
    data: &T,
) -> std::io::Result<Prepared> {
    prepare_as(path, kind, data, false)
}

fn prepare_as<T: Serialize>(
    path: &Path,
    kind: &str,
    data: &T,
    sync: bool,
) -> std::io::Result<Prepared> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string(&Envelope {
        pbxfw_state: kind.to_string(),
        version: VERSION,
        data,
    })
    .map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        sweep(dir);
    }
    Ok(Prepared {
        prev: stage_prev(path, kind),
        staged: stage(path, |f| f.write_all(text.as_bytes()), sync)?,
    })
}

impl Prepared {
    /// Put the staged file in place: the current one becomes `NAME.prev`, then the new one
    /// is renamed over it and the directory fsynced.
    pub fn commit(self) -> std::io::Result<()> {
        if let Some(prev) = self.prev {
            let _ = prev.rename();
        }
        self.staged.put()
    }

    /// [`Prepared::commit`] without the fsync of the directory: the renames reach the disk
    /// with the filesystem's next commit (or the next synced write in the directory), and a
    /// crash before it leaves the file as it was. Only for a file every reader checks against
    /// what it describes, so that an older one left by a crash is ignored, never trusted: the
    /// applied record and the edit index describe what the kernel holds, which a crash
    /// empties, and are compared with the kernel's fingerprint before use.
    pub fn commit_unsynced(self) -> std::io::Result<()> {
        if let Some(prev) = self.prev {
            let _ = prev.rename();
        }
        self.staged.rename()
    }
}

/// A name no other write of this process or of another running one uses: the process's id
/// and a count.
fn unique() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Remove what writes killed midway left in `dir` (`.NAME.tmp-PID…`, `NAME.prev.new-PID…`
/// of a process that no longer runs). Once per directory and process: a temp file stays
/// behind only when a writer was killed.
fn sweep(dir: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if swept.iter().any(|d| d == dir) {
            return;
        }
        swept.push(dir.to_path_buf());
    }
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = leftover_pid(name) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The writer's process id in the name of a temp file of [`stage`] or a pending previous copy
/// of [`stage_prev`]; `None` for any other name.
fn leftover_pid(name: &str) -> Option<u32> {
    let rest = if name.starts_with('.') {
        name.rsplit_once(".tmp-")?.1
    } else {
        name.rsplit_once(".prev.new-")?.1
    };
    let pid = rest.split('-').next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn prev(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".prev");
    PathBuf::from(p)
}

/// Whether `path` holds state `kind` as [`write`] writes it: it begins with the envelope's
/// head and ends with a closing brace (read: the head and the tail only).
fn enveloped(path: &Path, kind: &str) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(kind_json) = serde_json::to_string(kind) else {
        return false;
    };
    let head = format!("{{\"pbxfw_state\":{kind_json},\"version\":");
    let mut buf = vec![0u8; head.len()];
    if f.read_exact(&mut buf).is_err() || buf != head.as_bytes() {
        return false;
    }
    let mut tail = [0u8; 1];
    if !(f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut tail).is_ok() && tail == *b"}") {
        return false;
    }
    // A small file is parsed whole as well (without building it): an envelope around a
    // corrupt middle must not replace the last good copy. Only the large ones (the applied
    // record of a big blacklist: megabytes, parsed at every apply) are taken by their
    // envelope, which atomic writes keep whole.
    match f.metadata() {
        Ok(m) if m.len() <= ENVELOPE_ONLY_ABOVE => {
            let _ = f.seek(SeekFrom::Start(0));
            let mut text = String::new();
            f.read_to_string(&mut text).is_ok()
                && decode::<serde::de::IgnoredAny>(&text, kind).is_ok()
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// State files larger than this are recognised by their envelope alone (see [`enveloped`]).
const ENVELOPE_ONLY_ABOVE: u64 = 1 << 20;

fn decode<T: DeserializeOwned>(text: &str, kind: &str) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Head {
        pbxfw_state: String,
        version: u32,
    }
    let head: Head =
        serde_json::from_str(text).map_err(|e| format!("not a pbxfw state file: {e}"))?;
    if head.pbxfw_state != kind {
        return Err(format!(
            "holds pbxfw state {:?}, expected {kind:?}",
            head.pbxfw_state
        ));
    }
    if head.version > VERSION {
        return Err(format!(
            "was written by a newer pbxfw (state version {}, this one reads up to {VERSION})",
            head.version
        ));
    }
    let env: Envelope<T> =
        serde_json::from_str(text).map_err(|e| format!("corrupt {kind} state: {e}"))?;
    Ok(env.data)
}

/// Write `data` as state `kind` to `path` (creating the directory), keeping the current file,
/// if it is state `kind` by its envelope, as `NAME.prev`.
pub fn write<T: Serialize>(path: &Path, kind: &str, data: &T) -> std::io::Result<()> {
    prepare(path, kind, data)?.commit()
}

/// The file at `path`, when it is state `kind` by its envelope, staged to become `NAME.prev`.
fn stage_prev(path: &Path, kind: &str) -> Option<Staged> {
    // The file there is kept as the previous copy when it is one of ours, by a hard link
    // rather than a copy: the applied record holds the whole IR, megabytes with a large
    // blacklist, so it is recognised by its envelope (its head and its closing brace; every
    // write is atomic) instead of being read and parsed whole. The previous copy is a
    // courtesy: failing to keep it (a file system without hard links, where it is copied,
    // or without room) never fails the write itself.
    if !enveloped(path, kind) {
        return None;
    }
    let keep = prev(path);
    let mut link = keep.as_os_str().to_owned();
    link.push(format!(".new-{}", unique()));
    let link = PathBuf::from(link);
    if std::fs::hard_link(path, &link).is_ok() {
        return Some(Staged {
            path: keep,
            tmp: Some(link),
        });
    }
    let old = std::fs::read(path).ok()?;
    stage(&keep, |f| f.write_all(&old), true).ok()
}

/// Read state `kind` from `path`: `Ok(None)` when there is no file.
pub fn read<T: DeserializeOwned>(path: &Path, kind: &str) -> Result<Option<T>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError {
                path: path.into(),
                reason: e.to_string(),
                last_good: None,
            })
        }
    };
    decode(&text, kind).map(Some).map_err(|reason| {
        let p = prev(path);
        let good = std::fs::read_to_string(&p)
            .ok()
            .is_some_and(|t| decode::<T>(&t, kind).is_ok());
        StateError {
            path: path.into(),
            reason,
            last_good: good.then_some(p),
        }
    })
}

/// Remove a state file (and nothing else); a missing file is fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_previous_copy_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/thing.json");
        assert_eq!(read::<u32>(&path, "thing").unwrap(), None);
        write(&path, "thing", &1u32).unwrap();
        write(&path, "thing", &2u32).unwrap();
        assert_eq!(read::<u32>(&path, "thing").unwrap(), Some(2));
        assert_eq!(read::<u32>(&prev(&path), "thing").unwrap(), Some(1));

        // Corrupt: an error naming the last good copy, never a default.
        std::fs::write(&path, "{\"pbxfw_state\":\"thing\",\"vers").unwrap();
        let e = read::<u32>(&path, "thing").unwrap_err();
        assert_eq!(e.last_good.as_deref(), Some(prev(&path).as_path()));
        assert!(e.to_string().contains("the last good copy is"), "{e}");
        // A newer version, another kind.
        std::fs::write(&path, r#"{"pbxfw_state":"thing","version":99,"data":3}"#).unwrap();
        assert!(read::<u32>(&path, "thing")
            .unwrap_err()
            .reason
            .contains("newer pbxfw"));
        std::fs::write(&path, r#"{"pbxfw_state":"other","version":1,"data":3}"#).unwrap();
        assert!(read::<u32>(&path, "thing")
            .unwrap_err()
            .reason
            .contains("expected"));
        // Writing over a corrupt file does not make it the "last good" copy.
        std::fs::write(&path, "garbage").unwrap();
        write(&path, "thing", &4u32).unwrap();
        assert_eq!(read::<u32>(&prev(&path), "thing").unwrap(), Some(1));
        // Nor over one whose envelope is whole around a corrupt middle.
        std::fs::write(&path, r#"{"pbxfw_state":"thing","version":1,"data":[1,,}"#).unwrap();
        write(&path, "thing", &5u32).unwrap();
        assert_eq!(read::<u32>(&prev(&path), "thing").unwrap(), Some(1));
        remove(&path).unwrap();
        remove(&path).unwrap();
    }

    /// A prepared write is on disk under a temporary name until committed: dropped, it leaves
    /// the file as it was and no temp file; committed, the file is the new state and the old
    /// one its previous copy.
    #[test]
    fn a_prepared_write_changes_nothing_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thing.json");
        write(&path, "thing", &1u32).unwrap();
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        write(&path, "thing", &2u32).unwrap();
        let staged = prepare(&path, "thing", &3u32).unwrap();
        // Two writes of one file in one process at once do not share a temp file.
        let other = prepare(&path, "thing", &4u32).unwrap();
        assert_eq!(
            listing().iter().filter(|n| n.contains(".tmp-")).count(),
            2,
            "{:?}",
            listing()
        );
        drop(other);
        assert_eq!(read::<u32>(&path, "thing").unwrap(), Some(2));
        drop(staged);
        assert_eq!(read::<u32>(&path, "thing").unwrap(), Some(2));
        assert_eq!(read::<u32>(&prev(&path), "thing").unwrap(), Some(1));
        assert_eq!(listing(), ["thing.json", "thing.json.prev"]);

        prepare(&path, "thing", &5u32).unwrap().commit().unwrap();
        assert_eq!(read::<u32>(&path, "thing").unwrap(), Some(5));
        assert_eq!(read::<u32>(&prev(&path), "thing").unwrap(), Some(2));
        assert_eq!(listing(), ["thing.json", "thing.json.prev"]);

        // Without an fsync, the same files in the same places.
        prepare_unsynced(&path, "thing", &6u32)
            .unwrap()
            .commit_unsynced()
            .unwrap();
        assert_eq!(read::<u32>(&path, "thing").unwrap(), Some(6));
        assert_eq!(read::<u32>(&prev(&path), "thing").unwrap(), Some(5));
        assert_eq!(listing(), ["thing.json", "thing.json.prev"]);
    }

    /// What a writer killed midway left (its temp file, its pending previous copy) is removed by
    /// the next prepared write in the directory; a running writer's, and other files, stay.
    #[test]
    fn leftovers_of_dead_writers_are_swept() {
        assert_eq!(leftover_pid(".applied.json.tmp-4242"), Some(4242));
        assert_eq!(leftover_pid(".applied.json.tmp-4242-7"), Some(4242));
        assert_eq!(leftover_pid("applied.json.prev.new-4242-0"), Some(4242));
        assert_eq!(leftover_pid("applied.json.prev"), None);
        assert_eq!(leftover_pid("applied.json"), None);
        assert_eq!(leftover_pid(".hidden.tmp-x1"), None);
        assert_eq!(leftover_pid("notes.tmp-12"), None);
        let dir = tempfile::tempdir().unwrap();
        // A process id no process has (above the kernel's maximum).
        let dead = 4_194_305u32;
        // This process: its own files are never swept.
        let alive = std::process::id();
        for name in [
            format!(".thing.json.tmp-{dead}-3"),
            format!("thing.json.prev.new-{dead}-4"),
            format!(".thing.json.tmp-{alive}-99"),
            "notes.txt".to_string(),
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        prepare(&dir.path().join("thing.json"), "thing", &1u32)
            .unwrap()
            .commit()
            .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                format!(".thing.json.tmp-{alive}-99"),
                "notes.txt".to_string(),
                "thing.json".to_string()
            ]
        );
    }
}
