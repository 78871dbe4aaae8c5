//! What can go wrong in a procedure, as types: each front end maps an [`Error`] in one place
//! (the command line to its exit code, the C API to its result code, Python to an exception
//! class), so that all of them mean the same thing by the same failure.

use std::path::PathBuf;

use pbxfw_core::BackendError;
use pbxfw_core::Diagnostics;

/// Why a procedure failed. Every refusal, and every failure before or of a load, leaves the
/// kernel as it was; a failed verification after a load says so (`BackendError::Verify`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy text could not be parsed (TOML or JSON syntax).
    #[error("{name}: {message}")]
    Parse {
        /// Where it came from (a path, `(stdin)`, `(default policy)`).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The policy is invalid: every diagnostic, each with its path.
    #[error("{name}: the policy is invalid ({} error(s)):\n{diagnostics}", diagnostics.errors().count())]
    Invalid {
        /// Where it came from.
        name: String,
        /// Every problem.
        diagnostics: Diagnostics,
    },
    /// Refused for safety; nothing changed.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The kernel backend failed (it could not be reached, refused the change, or cannot
    /// express it).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A state file cannot be used; it names the last good copy when there is one.
    #[error(transparent)]
    State(#[from] pbxfw_host::state::StateError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The request itself is wrong: nothing to confirm or roll back, an unknown backend, an
    /// argument out of range.
    #[error("{0}")]
    Usage(String),
    /// The control socket refused the caller: not in a group that may connect, or asking for a
    /// change with the read role only (docs/control-socket.md).
    #[error("denied: {0}")]
    Denied(String),
    /// The daemon could not be asked: its control socket is missing, it did not answer in time,
    /// it is busy with other clients, or its answer was not the protocol's. Nothing is known to
    /// have changed.
    #[error("the pbxfw daemon is unavailable: {0}")]
    Unavailable(String),
}

/// Why a change was refused for safety.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// The ruleset would cut off an administrator's session: each line names the session and
    /// the rule that would drop it.
    #[error("this ruleset would lock the administrator out:\n{}\nfix the policy, or force the apply", lines.join("\n"))]
    Lockout {
        /// One line per session cut off, naming the deciding rule.
        lines: Vec<String>,
    },
    /// An apply is waiting for confirmation.
    #[error("an apply is waiting for confirmation (ruleset {fingerprint}, rolled back in {} unless confirmed); confirm it or roll it back first", crate::human::duration(*left_secs))]
    PendingConfirmation {
        /// The ruleset waiting.
        fingerprint: String,
        /// Seconds until it is rolled back.
        left_secs: u64,
    },
    /// The kernel holds a ruleset pbxfw did not apply last, so it could not be rolled back to.
    #[error("the kernel holds ruleset {loaded}, which is not the last one pbxfw applied, so it could not be rolled back to")]
    NotLastApplied {
        /// What the kernel holds.
        loaded: String,
    },
    /// The lock file exists: disabling pbxfw is refused.
    #[error("the lock file {} exists; remove it to disable pbxfw", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A ban of what is never banned: a trunk, a trusted network, an administrator, an
    /// ignored source, the sessions that applied the policy, a special address.
    #[error("{prefix} is never banned: {why}")]
    NeverBanned {
        /// The prefix asked for.
        prefix: String,
        /// What protects it.
        why: String,
    },
    /// The custom rules file could be written by someone other than root.
    #[error("{} must be owned by root and not writable by group or others ({detail})", path.display())]
    UnsafeCustomRules {
        /// The file.
        path: PathBuf,
        /// Owner and mode.
        detail: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A stable name of the kind of failure, for logs, the control socket and bindings
    /// (`parse`, `invalid`, `refused`, `backend`, `state`, `io`, `usage`, `denied`,
    /// `unavailable`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Parse { .. } => "parse",
            Error::Invalid { .. } => "invalid",
            Error::Refused(_) => "refused",
            Error::Backend(BackendError::Locked(_)) => "refused",
            Error::Backend(_) => "backend",
            Error::State(_) => "state",
            Error::Io { .. } => "io",
            Error::Usage(_) => "usage",
            Error::Denied(_) => "denied",
            Error::Unavailable(_) => "unavailable",
        }
    }

    /// The C API's result code for this error (`pbxfw_result`, docs/c-api.md): the one table
    /// every front end's codes come from, the control socket's answers included.
    pub fn code(&self) -> u32 {
        match self {
            Error::Parse { .. } => 3,
            Error::Invalid { .. } => 4,
            Error::Refused(Refusal::Locked { .. } | Refusal::UnsafeCustomRules { .. }) => 10,
            Error::Refused(_) => 11,
            Error::Backend(BackendError::Unsupported { .. }) => 6,
            Error::Backend(BackendError::NoSet(_)) => 5,
            Error::Backend(BackendError::Locked(_)) => 10,
            Error::Backend(_) => 7,
            Error::State(_) => 8,
            Error::Io { .. } => 12,
            Error::Usage(_) => 5,
            Error::Denied(_) => 13,
            Error::Unavailable(_) => 14,
        }
    }
}

impl Refusal {
    /// A stable name of the refusal (`lockout`, `pending_confirmation`, `not_last_applied`,
    /// `locked`, `unsafe_custom_rules`, `never_banned`), for bindings to branch on.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Lockout { .. } => "lockout",
            Refusal::PendingConfirmation { .. } => "pending_confirmation",
            Refusal::NotLastApplied { .. } => "not_last_applied",
            Refusal::Locked { .. } => "locked",
            Refusal::UnsafeCustomRules { .. } => "unsafe_custom_rules",
            Refusal::NeverBanned { .. } => "never_banned",
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
