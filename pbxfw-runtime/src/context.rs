//! What a long-running procedure takes from its host instead of reaching for it: the clock and
//! the log sink. The command line passes the system's ([`Context::system`]: the wall clock,
//! standard error, which journald keeps); an embedder passes its own logger, and a test a clock
//! it moves itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The time of day.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// Where log lines go: one structured line per call (`pbxfw: key=value …`).
pub trait LogSink: Send + Sync {
    /// Take one line (no newline at its end).
    fn line(&self, line: &str);

    /// Take one record: its fields, and the line they make. A sink that keeps fields (the
    /// journal) overrides this; the others take the line.
    fn record(&self, fields: &[(&str, String)], line: &str) {
        let _ = fields;
        self.line(line);
    }
}

/// The syslog priority of a record (journald's `PRIORITY`), from what it says: a ban or an
/// unban is NOTICE (5); records refused as hostile, a skipped reload, a failed lookup, and
/// failures that lose nothing (a hook, the metrics, readiness, DNS) are WARNING (4); a kernel
/// update refused, state not written, a rollback or reload that failed, an unreadable ledger
/// are ERR (3); the rest is INFO (6).
pub fn priority(fields: &[(&str, String)]) -> u8 {
    match fields.first().map(|(k, v)| (*k, v.as_str())) {
        Some(("action", "ban" | "unban")) => 5,
        Some(("event", "rollback")) => 5,
        Some(("event", "refused" | "reload-skipped" | "dns-failed")) => 4,
        Some(("warning", _)) => 4,
        Some(("error", "hook" | "metrics" | "notify" | "dns" | "dns-update" | "dns-state")) => 4,
        Some(("error", _)) => 3,
        _ => 6,
    }
}

/// The systemd journal, through its native protocol: one datagram per record with
/// `MESSAGE`, `PRIORITY` ([`priority`]), `SYSLOG_IDENTIFIER=pbxfw` and each field as
/// `PBXFW_<KEY>` (so `journalctl PBXFW_ACTION=ban` finds the bans). Values are sent with their
/// length, so text from outside (a reason quoting a User-Agent) can never forge a field. A
/// record the journal does not take goes to standard error.
pub struct Journal {
    socket: std::path::PathBuf,
}

impl Journal {
    /// The journal listening at `socket` (`/run/systemd/journal/socket`).
    pub fn at(socket: impl Into<std::path::PathBuf>) -> Journal {
        Journal {
            socket: socket.into(),
        }
    }

    /// The journal, when standard error is connected to it (`$JOURNAL_STREAM` names it, as
    /// systemd sets it for a service); `$PBXFW_JOURNAL_SOCKET` moves the socket (tests).
    pub fn for_stderr() -> Option<Journal> {
        use std::os::unix::fs::MetadataExt;
        let stream = std::env::var("JOURNAL_STREAM").ok()?;
        let meta = std::fs::metadata("/proc/self/fd/2").ok()?;
        if stream != format!("{}:{}", meta.dev(), meta.ino()) {
            return None;
        }
        let socket: std::path::PathBuf = std::env::var_os("PBXFW_JOURNAL_SOCKET")
            .map_or_else(|| "/run/systemd/journal/socket".into(), Into::into);
        Some(Journal::at(socket))
    }

    /// The datagram for a record.
    pub fn datagram(fields: &[(&str, String)], line: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut field = |key: &str, value: &str| {
            out.extend_from_slice(key.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        };
        field("MESSAGE", line);
        field("PRIORITY", &priority(fields).to_string());
        field("SYSLOG_IDENTIFIER", "pbxfw");
        for (k, v) in fields {
            let key: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            field(&format!("PBXFW_{key}"), v);
        }
        out
    }
}

impl LogSink for Journal {
    fn line(&self, line: &str) {
        self.record(&[], line);
    }

    fn record(&self, fields: &[(&str, String)], line: &str) {
        let sent = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.send_to(&Journal::datagram(fields, line), &self.socket));
        if sent.is_err() {
            Stderr.line(line);
        }
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Standard error, a line at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl LogSink for Stderr {
    fn line(&self, line: &str) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// A clock that stands still until it is moved: tests of expiry and decay.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `unix_secs`.
    pub fn at(unix_secs: u64) -> ManualClock {
        ManualClock(AtomicU64::new(unix_secs))
    }

    /// Move it to `unix_secs`.
    pub fn set(&self, unix_secs: u64) {
        self.0.store(unix_secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// The clock and the log sink, cheap to clone (threads of the daemon each hold one).
#[derive(Clone)]
pub struct Context {
    clock: Arc<dyn Clock>,
    log: Arc<dyn LogSink>,
}

impl Default for Context {
    fn default() -> Context {
        Context::system()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

impl Context {
    /// The wall clock, and the journal when standard error goes to it (a systemd service),
    /// else standard error.
    pub fn system() -> Context {
        let log: Arc<dyn LogSink> = match Journal::for_stderr() {
            Some(j) => Arc::new(j),
            None => Arc::new(Stderr),
        };
        Context::new(Arc::new(SystemClock), log)
    }

    /// A clock and a log sink of the caller's.
    pub fn new(clock: Arc<dyn Clock>, log: Arc<dyn LogSink>) -> Context {
        Context { clock, log }
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// One structured line: `pbxfw: key=value ...`, values quoted when needed.
    pub fn log(&self, fields: &[(&str, String)]) {
        self.log.record(fields, &format_line(fields));
    }

    /// A line already formatted.
    pub fn log_text(&self, line: &str) {
        self.log.line(line);
    }
}

/// `pbxfw: key=value ...`: a value that is empty, or holds white space, a control character,
/// `"` or `=`, is quoted (and escaped), so that text from outside can never forge a field.
pub fn format_line(fields: &[(&str, String)]) -> String {
    let mut line = String::from("pbxfw:");
    for (k, v) in fields {
        if v.is_empty()
            || v.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
        {
            line.push_str(&format!(" {k}={v:?}"));
        } else {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_reaches_the_journal_as_notice_with_its_fields_and_nothing_forged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let ctx = Context::new(Arc::new(SystemClock), Arc::new(Journal::at(&path)));
        // A reason holding a newline and `PRIORITY=0`, as a sender's text could.
        ctx.log(&[
            ("action", "ban".into()),
            ("source", "203.0.113.66".into()),
            ("reason", "evil\nPRIORITY=0".into()),
        ]);
        let mut buf = vec![0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let got = &buf[..n];
        let text = String::from_utf8_lossy(got);
        assert!(text.contains("PRIORITY\n"), "{text}");
        // Every field is KEY, newline, little-endian length, value, newline.
        let mut fields = Vec::new();
        let mut rest = got;
        while !rest.is_empty() {
            let nl = rest.iter().position(|b| *b == b'\n').unwrap();
            let key = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&rest[nl + 9..nl + 9 + len]).into_owned();
            fields.push((key, value));
            rest = &rest[nl + 9 + len + 1..];
        }
        let get = |k: &str| {
            fields
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("PRIORITY"), ["5"]);
        assert_eq!(get("SYSLOG_IDENTIFIER"), ["pbxfw"]);
        assert_eq!(get("PBXFW_ACTION"), ["ban"]);
        assert_eq!(get("PBXFW_REASON"), ["evil\nPRIORITY=0"]);
        assert!(get("MESSAGE")[0].starts_with("pbxfw: action=ban source=203.0.113.66"));
    }

    #[test]
    fn priorities_follow_what_a_record_says() {
        let p = |k: &'static str, v: &str| priority(&[(k, v.to_string())]);
        assert_eq!(p("action", "ban"), 5);
        assert_eq!(p("action", "registered"), 6);
        assert_eq!(p("event", "refused"), 4);
        assert_eq!(p("error", "kernel"), 3);
        assert_eq!(p("error", "hook"), 4);
        assert_eq!(p("event", "start"), 6);
    }
}
