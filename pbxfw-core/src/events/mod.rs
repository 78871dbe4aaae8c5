//! Security events from the PBX, parsed without I/O (docs/events.md).
//!
//! Three sources feed the same [`SecurityEvent`]: Asterisk AMI events (security events such as
//! `InvalidAccountID`, `ChallengeResponseFailed`, `InvalidPassword`, `FailedACL`,
//! `SuccessfulAuth`, and registration events `ContactStatus` and chan_sip `PeerStatus`),
//! Asterisk log lines (the `security` channel and the chan_sip/res_pjsip NOTICE lines that
//! fail2ban's asterisk filter reads), and a documented JSON-lines format for any other PBX.
//! The responsive state machine ([`crate::responsive`]) consumes them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::SignallingProtocol;

/// Why an authentication failed; the state machine treats them differently (docs/responsive.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailure {
    /// No such account or extension: enumeration. Counts heavily.
    UnknownAccount,
    /// The account exists, the password or digest is wrong: maybe a misconfigured phone.
    WrongPassword,
    /// Refused by an ACL (permit/deny, `FailedACL`).
    Acl,
    /// Any other failure (bad request format, unsupported auth, ...).
    Other,
}

/// What happened, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SecurityEvent {
    /// An authentication attempt failed.
    AuthFailed {
        /// The remote address.
        source: IpAddr,
        /// The account (extension, user name) tried, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// Why it failed.
        reason: AuthFailure,
        /// The User-Agent header, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
        /// The signalling protocol, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<SignallingProtocol>,
    },
    /// An authentication succeeded.
    AuthSucceeded {
        /// The remote address.
        source: IpAddr,
        /// The account.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// The User-Agent header, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
    },
    /// A device registered (or refreshed its registration).
    Registered {
        /// The contact's address.
        source: IpAddr,
        /// The account (extension).
        account: String,
        /// Seconds until the registration expires.
        expires: u32,
    },
    /// A registration ended (unregistered, removed, or the peer became unreachable).
    Unregistered {
        /// The contact's address.
        source: IpAddr,
        /// The account (extension).
        account: String,
    },
    /// Traffic that only scanners send (a known attack tool's User-Agent, an OPTIONS sweep).
    ScannerSeen {
        /// The remote address.
        source: IpAddr,
        /// The User-Agent, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
    },
}

impl SecurityEvent {
    /// The event's kind, as the JSON-lines format names it (`auth_failed`, `registered`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            SecurityEvent::AuthFailed { .. } => "auth_failed",
            SecurityEvent::AuthSucceeded { .. } => "auth_succeeded",
            SecurityEvent::Registered { .. } => "registered",
            SecurityEvent::Unregistered { .. } => "unregistered",
            SecurityEvent::ScannerSeen { .. } => "scanner_seen",
        }
    }

    /// The remote address the event is about.
    pub fn source(&self) -> IpAddr {
        match self {
            SecurityEvent::AuthFailed { source, .. }
            | SecurityEvent::AuthSucceeded { source, .. }
            | SecurityEvent::Registered { source, .. }
            | SecurityEvent::Unregistered { source, .. }
            | SecurityEvent::ScannerSeen { source, .. } => *source,
        }
    }
}

/// An event with the time it happened, when the record says (Unix seconds, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedEvent {
    /// When, if the record carries a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// What.
    #[serde(flatten)]
    pub event: SecurityEvent,
}

pub mod agents;
pub use agents::{attack_tools, is_attack_tool};

pub mod ami;
pub mod json;
pub mod log;
mod scan;

pub use ami::{parse_event as parse_ami_event, AmiReader};
pub use json::{parse_line as parse_json_line, to_line as to_json_line};
pub use log::{parse_line as parse_log_line, parse_line_with_offset as parse_log_line_with_offset};

/// Why a record from the PBX could not be turned into an event.
///
/// Records the firewall does not use are not errors (the parsers return `Ok(None)`); these are
/// records it does use that are malformed, or input it refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// An AMI event the firewall uses lacks a field or carries a malformed one.
    #[error("AMI {event} event: {message}")]
    Ami {
        /// The `Event:` name.
        event: String,
        /// What is wrong.
        message: String,
    },
    /// An AMI block longer than the reader's limit was dropped.
    #[error("AMI block longer than {limit} bytes dropped")]
    AmiTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// An Asterisk log line of a kind the firewall uses is malformed.
    #[error("log line: {message}")]
    Log {
        /// What is wrong.
        message: String,
    },
    /// A JSON-lines record is not a valid event.
    #[error("JSON event: {message}")]
    Json {
        /// serde_json's message, with line and column.
        message: String,
    },
    /// A record of a kind the firewall uses that can be read more than one way: text the
    /// sender chose (a Call-ID, a From header, a user name) imitates the record's own
    /// structure, a key occurs twice, or the record may have been cut short. It acts against
    /// nobody (docs/events.md, "Trust"); callers count it.
    #[error("ambiguous record, ignored: {message}")]
    Ambiguous {
        /// Why it can be read more than one way.
        message: String,
    },
}
