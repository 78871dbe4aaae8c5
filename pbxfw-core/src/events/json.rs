//! The JSON-lines event format: one [`TimedEvent`] per line, exactly its serde form
//! (documented field by field in `docs/events.md`). For PBXs other than Asterisk (Kamailio,
//! FreeSWITCH), for the bindings, and for tests.
//!
//! Unknown keys are refused, so a misspelt field (`"user-agent"`) is an error instead of a
//! silently missing value.
//!
//! ```
//! use pbxfw_core::{json, AuthFailure, SecurityEvent};
//!
//! let line = r#"{"event":"auth_failed","source":"203.0.113.9","reason":"unknown_account","account":"100","user_agent":"friendly-scanner","at":1795000000}"#;
//! let ev = json::parse_line(line)?;
//! assert_eq!(ev.at, Some(1_795_000_000));
//! assert!(matches!(ev.event, SecurityEvent::AuthFailed { reason: AuthFailure::UnknownAccount, .. }));
//! assert_eq!(json::parse_line(&json::to_line(&ev))?, ev);
//!
//! let err = json::parse_line(r#"{"event":"registered","source":"198.51.100.7","account":"300","expires":3600,"expiry":1}"#)
//!     .unwrap_err();
//! assert!(err.to_string().contains("unknown field `expiry`"));
//! # Ok::<(), pbxfw_core::EventError>(())
//! ```

use std::net::IpAddr;

use serde::Deserialize;

use super::{AuthFailure, EventError, SecurityEvent, TimedEvent};
use crate::SignallingProtocol;

/// Parses one line (surrounding whitespace allowed).
pub fn parse_line(line: &str) -> Result<TimedEvent, EventError> {
    // `TimedEvent` flattens an internally tagged enum, and serde cannot deny unknown fields
    // through `flatten`; this mirror of the wire form can, and converts exhaustively.
    let wire: Wire = serde_json::from_str(line).map_err(|e| EventError::Json {
        message: e.to_string(),
    })?;
    Ok(wire.into())
}

/// Reads a line of a followed file of JSON events: a JSON object that starts the line, or one
/// that follows exactly a Kamailio log prefix written by the script (`xlog`): ` 0(1234)
/// NOTICE: <script>: {…}`, possibly after a syslog prefix. The rest of such a file (Kamailio's
/// own messages, which quote SIP text) is never read: an object anywhere else on a line is
/// not an event. `Ok(None)` for lines that hold no event.
pub fn parse_logged_line(line: &str) -> Result<Option<TimedEvent>, EventError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    if line.starts_with('{') {
        return parse_line(line).map(Some);
    }
    const SCRIPT: &str = "<script>: {";
    let Some(at) = line.find(SCRIPT) else {
        return Ok(None);
    };
    if !kamailio_prefix(&line[..at]) {
        return Ok(None);
    }
    parse_line(&line[at + SCRIPT.len() - 1..]).map(Some)
}

/// What Kamailio writes before a message: `N(pid) LEVEL: ` on standard error (`%2d(%d) %s: `),
/// after a syslog prefix that ends with Kamailio's tag (`… kamailio[1234]: `), or both.
fn kamailio_prefix(p: &str) -> bool {
    let Some(p) = p.strip_suffix(": ") else {
        return false;
    };
    let (head, level) = p.rsplit_once(' ').unwrap_or(("", p));
    if level.is_empty() || !level.bytes().all(|b| b.is_ascii_uppercase()) {
        return false;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let tag = |s: &str| {
        s.strip_suffix(':').is_some_and(|s| {
            s.rsplit(' ').next().is_some_and(|t| {
                t == "kamailio"
                    || t.strip_prefix("kamailio[")
                        .and_then(|r| r.strip_suffix(']'))
                        .is_some_and(digits)
            })
        })
    };
    let head = head.trim_end();
    // `N(pid)`, and what precedes it: nothing, or a syslog prefix with Kamailio's tag.
    if let Some(h) = head.strip_suffix(')') {
        if let Some((h, pid)) = h.rsplit_once('(') {
            let (before, proc_no) = h.rsplit_once(' ').unwrap_or(("", h));
            if digits(pid) && digits(proc_no) {
                let before = before.trim();
                return before.is_empty() || tag(before);
            }
        }
        return false;
    }
    tag(head)
}

/// One line for `event` (no trailing newline), in the form [`parse_line`] reads.
pub fn to_line(event: &TimedEvent) -> String {
    serde_json::to_string(event).expect("a TimedEvent always serialises")
}

#[derive(Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    AuthFailed {
        #[serde(default)]
        at: Option<u64>,
        source: IpAddr,
        #[serde(default)]
        account: Option<String>,
        reason: AuthFailure,
        #[serde(default)]
        user_agent: Option<String>,
        #[serde(default)]
        protocol: Option<SignallingProtocol>,
    },
    AuthSucceeded {
        #[serde(default)]
        at: Option<u64>,
        source: IpAddr,
        #[serde(default)]
        account: Option<String>,
        #[serde(default)]
        user_agent: Option<String>,
    },
    Registered {
        #[serde(default)]
        at: Option<u64>,
        source: IpAddr,
        account: String,
        expires: u32,
    },
    Unregistered {
        #[serde(default)]
        at: Option<u64>,
        source: IpAddr,
        account: String,
    },
    ScannerSeen {
        #[serde(default)]
        at: Option<u64>,
        source: IpAddr,
        #[serde(default)]
        user_agent: Option<String>,
    },
}

impl From<Wire> for TimedEvent {
    fn from(w: Wire) -> TimedEvent {
        let (at, event) = match w {
            Wire::AuthFailed {
                at,
                source,
                account,
                reason,
                user_agent,
                protocol,
            } => (
                at,
                SecurityEvent::AuthFailed {
                    source,
                    account,
                    reason,
                    user_agent,
                    protocol,
                },
            ),
            Wire::AuthSucceeded {
                at,
                source,
                account,
                user_agent,
            } => (
                at,
                SecurityEvent::AuthSucceeded {
                    source,
                    account,
                    user_agent,
                },
            ),
            Wire::Registered {
                at,
                source,
                account,
                expires,
            } => (
                at,
                SecurityEvent::Registered {
                    source,
                    account,
                    expires,
                },
            ),
            Wire::Unregistered {
                at,
                source,
                account,
            } => (at, SecurityEvent::Unregistered { source, account }),
            Wire::ScannerSeen {
                at,
                source,
                user_agent,
            } => (at, SecurityEvent::ScannerSeen { source, user_agent }),
        };
        TimedEvent { at, event }
    }
}

/// Exhaustive over [`SecurityEvent`] ([`SecurityEvent::kind`]): a new variant does not compile
/// until [`Wire`] has it too.
#[cfg(test)]
fn wire_name(e: &SecurityEvent) -> &'static str {
    e.kind()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<TimedEvent> {
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        let events = vec![
            SecurityEvent::AuthFailed {
                source: v4,
                account: Some("100".into()),
                reason: AuthFailure::WrongPassword,
                user_agent: Some("friendly-scanner".into()),
                protocol: Some(SignallingProtocol::Pjsip),
            },
            SecurityEvent::AuthFailed {
                source: v6,
                account: None,
                reason: AuthFailure::Acl,
                user_agent: None,
                protocol: None,
            },
            SecurityEvent::AuthSucceeded {
                source: v4,
                account: Some("300".into()),
                user_agent: Some("Yealink".into()),
            },
            SecurityEvent::Registered {
                source: v6,
                account: "300".into(),
                expires: 3600,
            },
            SecurityEvent::Unregistered {
                source: v4,
                account: "300".into(),
            },
            SecurityEvent::ScannerSeen {
                source: v4,
                user_agent: None,
            },
        ];
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| TimedEvent {
                at: (i % 2 == 0).then_some(1_795_000_000 + i as u64),
                event,
            })
            .collect()
    }

    #[test]
    fn every_variant_round_trips_through_its_serde_form() {
        for ev in all() {
            let line = to_line(&ev);
            assert!(line.contains(wire_name(&ev.event)), "{line}");
            assert_eq!(parse_line(&line).unwrap(), ev, "{line}");
            // The derived Deserialize of TimedEvent agrees with the mirror.
            assert_eq!(serde_json::from_str::<TimedEvent>(&line).unwrap(), ev);
        }
    }

    #[test]
    fn logged_lines_are_read_only_after_kamailios_own_prefix() {
        let ev = r#"{"event":"scanner_seen","source":"203.0.113.9"}"#;
        for ok in [
            ev.to_string(),
            format!(" 0(1234) NOTICE: <script>: {ev}"),
            format!("12(99) ERR: <script>: {ev}"),
            format!("Nov 20 10:15:32 pbx kamailio[1234]: NOTICE: <script>: {ev}"),
            format!("Nov 20 10:15:32 pbx kamailio[1234]:  3(1240) NOTICE: <script>: {ev}"),
        ] {
            assert!(parse_logged_line(&ok).unwrap().is_some(), "{ok}");
        }
        // Kamailio's own messages quote SIP text: an object in them is never an event.
        for not in [
            format!(" 0(1234) ERROR: <core> [parser/parse_uri.c:1]: bad uri <script>: {ev}"),
            format!(" 0(1234) WARNING: tm [t_lookup.c:1]: x {ev}"),
            format!("Nov 20 10:15:32 pbx sshd[1]: NOTICE: <script>: {ev}"),
            format!("x 0(1234) NOTICE: <script>: {ev}"),
            format!("  {ev} trailing"),
            String::new(),
        ] {
            assert_eq!(parse_logged_line(&not), Ok(None), "{not}");
        }
    }

    #[test]
    fn errors_are_clear() {
        let e = |s: &str| parse_line(s).unwrap_err().to_string();
        assert!(e(
            r#"{"event":"auth_failed","source":"1.2.3.4","reason":"wrong_password","colour":1}"#
        )
        .contains("unknown field `colour`"));
        assert!(e(r#"{"event":"banned","source":"1.2.3.4"}"#).contains("unknown variant `banned`"));
        assert!(e(r#"{"source":"1.2.3.4"}"#).contains("missing field `event`"));
        assert!(
            e(r#"{"event":"registered","source":"1.2.3.4","account":"300"}"#)
                .contains("missing field `expires`")
        );
        assert!(
            e(r#"{"event":"unregistered","source":"1.2.3.400","account":"300"}"#)
                .contains("invalid IP address")
        );
        assert!(
            e(r#"{"event":"scanner_seen","source":"1.2.3.4"} x"#).contains("trailing characters")
        );
        assert!(e("").starts_with("JSON event: EOF"));
    }
}
