//! Following a growing log file line by line, as `tail -F` does, but as bytes and from a
//! position that survives restarts.
//!
//! - **Lines are bytes**: a line is whatever ends with `\n`, valid UTF-8 or not (a Latin-1
//!   caller name is one bad byte); decoding is the reader's business. A line longer than
//!   [`MAX_LINE`] is handed out in pieces of that size, so memory stays bounded.
//! - **Rotation** is a new inode at the path: the rest of the old file is read first (Asterisk
//!   writes to it until it reopens its logs), then the new one from its start. **Truncation**
//!   (`copytruncate`) is the same inode, shorter than the offset read: reading starts over.
//! - **Restarts**: each line comes with the [`Position`] after it. A follower opened at a saved
//!   position resumes there, in the same file or, if the file was rotated while nothing read
//!   it, in the rotated copy found beside it by its inode, then in the new file. It never
//!   reads more than `max_resume` bytes of backlog (older lines are skipped, and it says so).
//!   Without a saved position it starts at the end: history is `pbxfw replay`'s job.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The longest line handed out whole; longer ones come in pieces.
pub const MAX_LINE: usize = 1 << 20;

/// Where reading stands: the file (by inode) and the offset of the next byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file's inode.
    pub inode: u64,
    /// Bytes read and handed out.
    pub offset: u64,
}

/// What [`Follower::poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A line, with its `\n` when it has one, and the position after it.
    Line(&'a [u8], Position),
    /// Reading jumps (another file, or bytes skipped): what came before says nothing about
    /// what follows, so a reader's state across lines starts over. Says what happened.
    Jump(String),
    /// Nothing new yet.
    Idle,
}

/// A file being followed.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// The open file, its inode and the offset of `buf[..]`'s first byte.
    file: Option<(File, u64)>,
    offset: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out.
    used: usize,
    /// Drop bytes up to the next line break first (after a jump into the middle of a file).
    realign: bool,
    /// A jump to report before the next line.
    jump: Option<String>,
    max_resume: u64,
    /// The last bytes before the end of what was read, kept when the file had nothing new:
    /// if they are not there any more when it grows, it was truncated and written again
    /// (a length check alone misses a truncation followed by a longer write).
    tail: Vec<u8>,
}

/// How many bytes [`Follower`] compares to notice a truncation.
const TAIL: usize = 64;

impl Follower {
    /// Follow `path`: from `resume` when given (see the module docs), else from its end.
    pub fn open(path: &Path, resume: Option<Position>, max_resume: u64) -> Follower {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            buf: Vec::new(),
            used: 0,
            realign: false,
            jump: None,
            max_resume,
            tail: Vec::new(),
        };
        let current = File::open(path).ok().and_then(|file| {
            let m = file.metadata().ok()?;
            Some((file, m.ino(), m.len()))
        });
        match (resume, current) {
            (None, Some((file, ino, len))) => f.start(file, ino, len, "started at the end"),
            (None, None) => f.jump = Some(format!("{}: not there yet, waiting", path.display())),
            (Some(pos), Some((file, ino, len))) if ino == pos.inode => {
                if len >= pos.offset {
                    f.resume(file, ino, pos.offset, len);
                } else {
                    f.resume(file, ino, 0, len);
                    f.jump = Some(format!(
                        "{}: truncated while not followed, reading it from the start",
                        path.display()
                    ));
                }
            }
            (Some(pos), current) => match rotated_copy(path, pos.inode) {
                // The file was rotated while nothing followed it: its rest first.
                Some((old, len)) if len > pos.offset => {
                    f.resume(old, pos.inode, pos.offset, len);
                }
                _ => match current {
                    Some((file, ino, len)) => {
                        f.resume(file, ino, 0, len);
                        f.jump = Some(format!(
                            "{}: rotated while not followed, reading the new file",
                            path.display()
                        ));
                    }
                    None => f.jump = Some(format!("{}: not there yet, waiting", path.display())),
                },
            },
        }
        f
    }

    fn start(&mut self, mut file: File, ino: u64, len: u64, why: &str) {
        let _ = file.seek(SeekFrom::Start(len));
        self.file = Some((file, ino));
        self.offset = len;
        self.buf.clear();
        self.used = 0;
        self.jump = Some(format!("{}: {why}", self.path.display()));
    }

    /// Read `file` from `offset`, or from `max_resume` bytes before its end if that is later.
    fn resume(&mut self, mut file: File, ino: u64, offset: u64, len: u64) {
        let from = offset.max(len.saturating_sub(self.max_resume));
        if from > offset {
            self.jump = Some(format!(
                "{}: {} bytes written while not followed; reading only the last {}",
                self.path.display(),
                len - offset,
                self.max_resume
            ));
            self.realign = true;
        }
        let _ = file.seek(SeekFrom::Start(from));
        self.file = Some((file, ino));
        self.offset = from;
        self.buf.clear();
        self.used = 0;
        self.tail.clear();
    }

    /// Where reading stands now (the next byte not yet handed out).
    pub fn position(&self) -> Option<Position> {
        self.file.as_ref().map(|(_, ino)| Position {
            inode: *ino,
            offset: self.offset,
        })
    }

    /// The next line, a jump, or [`Next::Idle`] when there is nothing new (the caller waits a
    /// little before asking again).
    pub fn poll(&mut self) -> std::io::Result<Next<'_>> {
        if let Some(why) = self.jump.take() {
            return Ok(Next::Jump(why));
        }
        if self.file.is_none() {
            return Ok(self.reopen_new());
        }
        loop {
            if let Some(len) = self.complete_line() {
                let start = self.used;
                self.used += len;
                self.offset += len as u64;
                if std::mem::take(&mut self.realign) {
                    continue;
                }
                let pos = self.position().expect("a file is open");
                return Ok(Next::Line(&self.buf[start..start + len], pos));
            }
            // Keep what is not handed out at the front, then read more.
            self.buf.drain(..self.used);
            self.used = 0;
            if self.truncated_meanwhile() {
                let (file, ino) = self.file.take().expect("a file is open");
                let len = file.metadata().map_or(0, |m| m.len());
                self.resume(file, ino, 0, len);
                return Ok(Next::Jump(format!(
                    "{}: truncated, reading it from the start",
                    self.path.display()
                )));
            }
            let have = self.buf.len();
            self.buf.resize(have + 64 * 1024, 0);
            let n = {
                let (file, _) = self.file.as_mut().expect("a file is open");
                loop {
                    match file.read(&mut self.buf[have..]) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        r => break r,
                    }
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            };
            self.buf.truncate(have + n);
            if n == 0 {
                self.keep_tail();
                return Ok(self.at_end());
            }
            self.tail.clear();
        }
    }

    /// The length of the next line in `buf` (with its `\n`), or a piece of [`MAX_LINE`] bytes
    /// of one that long.
    fn complete_line(&self) -> Option<usize> {
        let rest = &self.buf[self.used..];
        match memchr::memchr(b'\n', rest) {
            Some(i) if i < MAX_LINE => Some(i + 1),
            _ if rest.len() >= MAX_LINE => Some(MAX_LINE),
            _ => None,
        }
    }

    /// Remember the last bytes read (at the end of the file), to check them when it grows.
    fn keep_tail(&mut self) {
        use std::os::unix::fs::FileExt;
        if !self.tail.is_empty() {
            return;
        }
        let end = self.offset + (self.buf.len() - self.used) as u64;
        let n = end.min(TAIL as u64) as usize;
        let mut tail = vec![0; n];
        let (file, _) = self.file.as_ref().expect("a file is open");
        if file.read_exact_at(&mut tail, end - n as u64).is_ok() {
            self.tail = tail;
        }
    }

    /// Whether the bytes kept by [`Follower::keep_tail`] changed: the file was truncated and
    /// written again past the offset read.
    fn truncated_meanwhile(&self) -> bool {
        use std::os::unix::fs::FileExt;
        if self.tail.is_empty() {
            return false;
        }
        let end = self.offset + (self.buf.len() - self.used) as u64;
        let n = self.tail.len();
        let mut now = vec![0; n];
        let (file, _) = self.file.as_ref().expect("a file is open");
        match file.read_exact_at(&mut now, end - n as u64) {
            Ok(()) => now != self.tail,
            Err(_) => true,
        }
    }

    /// At the end of the open file: has it been rotated or truncated?
    fn at_end(&mut self) -> Next<'_> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            // Renamed away and not created again yet: the open file may still grow.
            return Next::Idle;
        };
        let (_, ino) = self.file.as_ref().expect("a file is open");
        if meta.ino() != *ino {
            // Rotated. What was read of the old file's last line without its line break is
            // handed out as it is.
            if self.buf.len() > self.used {
                let start = self.used;
                let len = self.buf.len() - start;
                self.used += len;
                self.offset += len as u64;
                let pos = self.position().expect("a file is open");
                return Next::Line(&self.buf[start..start + len], pos);
            }
            self.file = None;
            return self.reopen_new();
        }
        let read_to = self.offset + (self.buf.len() - self.used) as u64;
        if meta.len() < read_to {
            // Truncated in place.
            let (file, ino) = self.file.take().expect("a file is open");
            self.resume(file, ino, 0, meta.len());
            return Next::Jump(format!(
                "{}: truncated, reading it from the start",
                self.path.display()
            ));
        }
        Next::Idle
    }

    fn reopen_new(&mut self) -> Next<'_> {
        let Ok(file) = File::open(&self.path) else {
            return Next::Idle;
        };
        let Ok(meta) = file.metadata() else {
            return Next::Idle;
        };
        self.resume(file, meta.ino(), 0, meta.len());
        Next::Jump(format!(
            "{}: a new file, reading it from the start",
            self.path.display()
        ))
    }
}

/// The file beside `path` with inode `ino` (where logrotate moved it: `full.1`,
/// `full-20261120`, …), and its length.
fn rotated_copy(path: &Path, ino: u64) -> Option<(File, u64)> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let name = path.file_name()?.to_str()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let is_sibling = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n != name && n.starts_with(name));
        if !is_sibling {
            continue;
        }
        if let Ok(m) = entry.metadata() {
            if m.ino() == ino && m.is_file() {
                let file = File::open(entry.path()).ok()?;
                return Some((file, m.len()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Every line and jump until idle.
    fn drain(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match f.poll().unwrap() {
                Next::Line(l, _) => out.push(String::from_utf8_lossy(l).into_owned()),
                Next::Jump(j) => out.push(format!("jump: {}", j.rsplit(": ").next().unwrap())),
                Next::Idle => return out,
            }
        }
    }

    fn append(path: &Path, text: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap()
            .write_all(text)
            .unwrap();
    }

    #[test]
    fn bytes_rotation_truncation_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full");
        append(&path, b"old\n");
        let mut f = Follower::open(&path, None, 1 << 20);
        assert_eq!(drain(&mut f), ["jump: started at the end"]);
        // A bad byte is a byte; a partial line waits for its end.
        append(&path, b"caf\xe9\nhalf");
        assert_eq!(drain(&mut f), ["caf\u{fffd}\n"]);
        append(&path, b" done\n");
        assert_eq!(drain(&mut f), ["half done\n"]);
        // Rotation: the old file's rest first, then the new file.
        append(&path, b"last of old\n");
        std::fs::rename(&path, dir.path().join("full.1")).unwrap();
        append(&path, b"first of new\n");
        assert_eq!(
            drain(&mut f),
            [
                "last of old\n",
                "jump: a new file, reading it from the start",
                "first of new\n"
            ]
        );
        // Truncation in place, noticed while the file is short, and truncation followed by a
        // longer write before the follower looked again.
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            drain(&mut f),
            ["jump: truncated, reading it from the start"]
        );
        append(&path, b"short\n");
        assert_eq!(drain(&mut f), ["short\n"]);
        std::fs::write(&path, b"").unwrap();
        append(&path, b"after truncation\n");
        assert_eq!(
            drain(&mut f),
            [
                "jump: truncated, reading it from the start",
                "after truncation\n"
            ]
        );
        // A restart resumes where the last line ended: lines written meanwhile are read once.
        let pos = f.position().unwrap();
        append(&path, b"while down\n");
        let mut g = Follower::open(&path, Some(pos), 1 << 20);
        assert_eq!(drain(&mut g), ["while down\n"]);
        // Rotated while down: the rest of the old file, found by its inode, then the new one.
        let pos = g.position().unwrap();
        append(&path, b"old rest\n");
        std::fs::rename(&path, dir.path().join("full.2")).unwrap();
        append(&path, b"new file\n");
        let mut h = Follower::open(&path, Some(pos), 1 << 20);
        assert_eq!(
            drain(&mut h),
            [
                "old rest\n",
                "jump: a new file, reading it from the start",
                "new file\n"
            ]
        );
    }

    #[test]
    fn backlog_and_line_length_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full");
        append(&path, b"");
        let f = Follower::open(&path, None, 100);
        let pos = f.position().unwrap();
        for i in 0..100 {
            append(&path, format!("line {i:03}\n").as_bytes());
        }
        // At most the last 100 bytes, from the first whole line in them.
        let mut g = Follower::open(&path, Some(pos), 100);
        let got = drain(&mut g);
        assert!(got[0].starts_with("jump: "), "{got:?}");
        assert_eq!(got.len(), 1 + 100 / 9, "{got:?}");
        assert_eq!(got.last().unwrap(), "line 099\n");
        // A line longer than MAX_LINE comes in pieces.
        append(&path, &vec![b'x'; MAX_LINE + 10]);
        append(&path, b"\nnext\n");
        let got = drain(&mut g);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].len(), MAX_LINE);
        assert_eq!(got[1].len(), 11);
        assert_eq!(got[2], "next\n");
    }
}
