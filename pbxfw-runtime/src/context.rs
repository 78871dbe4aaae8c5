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
    /// The wall clock and standard error.
    pub fn system() -> Context {
        Context::new(Arc::new(SystemClock), Arc::new(Stderr))
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
        self.log.line(&format_line(fields));
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
