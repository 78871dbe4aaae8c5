//! Asterisk log lines (SPEC 2.9): the lines fail2ban's stock `filter.d/asterisk.conf` bans on,
//! the `security` channel, and the registration lines that say a device is in or out.
//!
//! A line is `[timestamp] LEVEL[lwp][C-callid] file.c[:line function]: message`. The timestamp
//! may be Asterisk's default `Nov 20 10:15:32` (no year: the caller passes it), FreePBX's
//! `2026-11-20 10:15:32`, or absent (journald); a syslog prefix (`Nov 20 10:15:32 pbx
//! asterisk[1234]: `) is accepted too. Timestamps without a zone are local time: pass the
//! UTC offset to [`parse_line_with_offset`] ([`parse_line`] assumes UTC).
//!
//! Messages recognised (`LEVEL` in NOTICE, WARNING, SECURITY for failures, as fail2ban
//! requires; any level for registrations):
//!
//! | message | event |
//! |---|---|
//! | fail2ban 1: chan_sip `Registration from '…' failed for '<addr>' - <reason>` | `AuthFailed`, reason below |
//! | fail2ban 2: `Call from '…' (<addr>) to extension '…' rejected because extension not found in context '…'.` (chan_sip; res_pjsip_session with `TCP:`/`UDP:` and the `<name>: Call (…)` form) | `AuthFailed`, `Other` |
//! | fail2ban 3: chan_iax2 `Host <addr> failed to authenticate as …`, `Host <addr> failed MD5 authentication for '…'` | `AuthFailed`, `WrongPassword` |
//! | fail2ban 3: manager.c `<addr> failed to authenticate as '…'` / `<addr> tried to authenticate with nonexistent user '…'` | `AuthFailed`, `WrongPassword` / `UnknownAccount` |
//! | fail2ban 4: chan_iax2 `No registration for peer '…' (from <addr>)` | `AuthFailed`, `UnknownAccount` |
//! | fail2ban 5: `hacking attempt detected '<addr>'` | `AuthFailed`, `Other` |
//! | fail2ban 6: res_security_log `SecurityEvent="…",…,RemoteAddress="IPV4/UDP/<addr>/<port>",…` | as the AMI event of that name ([`super::ami`]) |
//! | fail2ban 7: FreePBX dialplan `"Rejecting unknown SIP connection from <addr>[:port]"` | `AuthFailed`, `Other` |
//! | fail2ban 8: res_pjsip `Request ['<method>' ]from '…' failed for '<addr>' (callid: …) - <reason>` | `AuthFailed`, reason below |
//! | chan_iax2 `Host <addr> denied access to register peer '…'` | `AuthFailed`, `Acl` |
//! | chan_iax2 `Host <addr> did not provide proper plaintext password for '…'` | `AuthFailed`, `WrongPassword` |
//! | chan_iax2 `Peer '…' is not dynamic (from <addr>)` | `AuthFailed`, `Other` |
//! | FreePBX `Friendly Scanner from <addr>` (commented out in fail2ban's filter) | `ScannerSeen`, `friendly-scanner` |
//! | chan_sip `Registered SIP '300' at <addr>` | `Registered` (3600 s: the line does not say) |
//! | chan_iax2 `Registered IAX2 '300' (AUTHENTICATED) at <addr>` | `Registered` (3600 s) |
//! | res_pjsip `Added contact '<uri>' to AOR '300' with expiration of N seconds` | `Registered`, N |
//! | res_pjsip (debug) `Refreshed contact '<uri>' on AOR '300' with new expiration of N seconds` | `Registered`, N |
//! | res_pjsip `Removed contact '<uri>' from AOR '300' due to …` | `Unregistered` |
//!
//! chan_sip reasons: `Wrong password`, `Username/auth name mismatch` → `WrongPassword`;
//! `No matching peer found` → `UnknownAccount`; `Device does not match ACL`, `ACL error
//! (permit/deny)` → `Acl`; `Not a local domain`, `Peer is not supposed to register`, `Device
//! not configured to use this transport type`, `Unknown failure` → `Other` (`RTP initialization
//! failed` is the server's problem: no event). res_pjsip reasons: `No matching endpoint found`
//! (also `… after N tries in M ms`) → `UnknownAccount`; `Not match Endpoint ACL`, `Not match
//! Endpoint Contact ACL` → `Acl`; `Failed to authenticate` → `WrongPassword`; `Error to
//! authenticate` (an internal error) → `Other`.
//!
//! # Attacker-controlled text
//! Several of these lines quote SIP headers (From, To, Call-ID, user names). The address is
//! always taken from the part Asterisk writes itself: the lines are read from their fixed end
//! (`… failed for '<addr>' - <reason>` is the *last* such suffix), quoted fields that fail2ban
//! requires to be quote-free are required quote-free here too, and the function slot of the
//! log prefix is only skipped when the prefix has a line number (so a user name such as
//! `x: 10.0.0.1 failed to authenticate as 'y` cannot start a message of its own). For security
//! lines the `RemoteAddress` is the one followed only by well-formed `,Key="value"` pairs, as in
//! fail2ban, and `UsingPassword` is read from after it.
//!
//! ```
//! use pbxfw_core::events::{log, AuthFailure, SecurityEvent};
//!
//! let line = "[Nov 20 10:15:32] NOTICE[1234] chan_sip.c: Registration from \
//!             '<sip:100@pbx.example.com>' failed for '203.0.113.9:5060' - Wrong password";
//! let ev = log::parse_line(line, 2026)?.expect("a failure");
//! assert_eq!(ev.at, Some(1_795_169_732));
//! match ev.event {
//!     SecurityEvent::AuthFailed { source, account, reason, .. } => {
//!         assert_eq!(source.to_string(), "203.0.113.9");
//!         assert_eq!(account.as_deref(), Some("100"));
//!         assert_eq!(reason, AuthFailure::WrongPassword);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(log::parse_line("[Nov 20 10:15:33] VERBOSE[99] pbx.c: Executing", 2026)?, None);
//! # Ok::<(), pbxfw_core::events::EventError>(())
//! ```

use std::net::IpAddr;

use super::ami::{
    civil_seconds, classify_security, clip, clock, non_empty, parse_datetime, parse_event_time,
    parse_host_port, security_event, to_unix, uri_host, uri_user, SecurityFields, DEFAULT_EXPIRES,
};
use super::scan::{pos, rpos, split_byte};
use super::{AuthFailure, EventError, SecurityEvent, TimedEvent};
use crate::SignallingProtocol;

/// Parses one line; timestamps without a zone are taken as UTC. `year` completes timestamps
/// that have none (`Nov 20 10:15:32`).
pub fn parse_line(line: &str, year: i32) -> Result<Option<TimedEvent>, EventError> {
    parse_line_with_offset(line, year, 0)
}

/// Parses one line whose zone-less timestamps are local time `utc_offset` seconds east of UTC
/// (`3600` for CET, `-18000` for EST).
pub fn parse_line_with_offset(
    line: &str,
    year: i32,
    utc_offset: i32,
) -> Result<Option<TimedEvent>, EventError> {
    let Some(h) = header(line, year) else {
        return Ok(None);
    };
    let Some(content) = content(h.body) else {
        return Ok(None);
    };
    match recognise(h.level, content) {
        Found::No | Found::Skip => Ok(None),
        Found::Bad(message) => Err(EventError::Log { message }),
        Found::Event(event, own_time) => {
            let line_time = || {
                h.time.get().map(|t| match t {
                    Stamp::Local(s) => s - i64::from(utc_offset),
                    Stamp::Utc(s) => s,
                })
            };
            Ok(Some(TimedEvent {
                at: own_time.or_else(line_time).and_then(to_unix),
                event,
            }))
        }
    }
}

// --- the prefix -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Notice,
    Warning,
    Security,
    Verbose,
    Debug,
    Other,
}

impl Level {
    /// The levels fail2ban's filter reads failures from.
    fn failure(self) -> bool {
        matches!(self, Level::Notice | Level::Warning | Level::Security)
    }
}

#[derive(Debug, Clone, Copy)]
enum Stamp {
    Local(i64),
    Utc(i64),
}

struct Header<'a> {
    time: LineTime<'a>,
    level: Level,
    /// `file.c: message`, `file.c:123 function: message`, …
    body: &'a str,
}

/// A line's timestamp, parsed only when the line turns out to be an event: most lines of a
/// log are not, and reading the time was a tenth of parsing them.
struct LineTime<'a> {
    /// A timestamp already read (one that started the line, syslog style).
    read: Option<Stamp>,
    /// Bracketed fields after it, in order; the last one that is a timestamp wins.
    brackets: [&'a str; 6],
    pending: usize,
    year: i32,
}

impl LineTime<'_> {
    fn get(&self) -> Option<Stamp> {
        self.brackets[..self.pending]
            .iter()
            .fold(self.read, |t, b| bracket_time(b, self.year).or(t))
    }
}

/// Finds the level, skipping a timestamp, a syslog host and tag, and journald's extra
/// bracketed timestamp; the end of line is not part of the message.
fn header(line: &str, year: i32) -> Option<Header<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    common_header(line, year).or_else(|| any_header(line, year))
}

/// Most lines start `[2026-11-20 10:15:32] LEVEL`: that shape read directly, exactly as
/// [`any_header`] would read it but 4 % faster over a whole log; `None` for anything else.
fn common_header(line: &str, year: i32) -> Option<Header<'_>> {
    let b = line.as_bytes();
    let shape = b.len() > 22
        && b[0] == b'['
        && b[20] == b']'
        && b[21] == b' '
        && b[1..20]
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b' ' | b':'));
    if !shape {
        return None;
    }
    let (level, body) = level(&line[22..])?;
    let mut brackets = [""; 6];
    brackets[0] = &line[1..20];
    let time = LineTime {
        read: None,
        brackets,
        pending: 1,
        year,
    };
    Some(Header { time, level, body })
}

/// Any line's header: the level found by skipping a timestamp, a syslog host and tag, and
/// journald's extra bracketed timestamp.
fn any_header(line: &str, year: i32) -> Option<Header<'_>> {
    let mut s = line.trim_start();
    let mut time = LineTime {
        read: None,
        brackets: [""; 6],
        pending: 0,
        year,
    };
    for _ in 0..6 {
        if let Some((level, body)) = level(s) {
            return Some(Header { time, level, body });
        }
        if let Some(rest) = s.strip_prefix('[') {
            let close = cfind(rest, b']')?;
            time.brackets[time.pending] = &rest[..close];
            time.pending += 1;
            s = rest[close + 1..].trim_start();
            continue;
        }
        // Only when no timestamp came before (rare: syslog and journald lines).
        if time.get().is_none() {
            if let Some((t, rest)) = leading_time(s, year) {
                time.read = Some(t);
                time.pending = 0;
                s = rest.trim_start();
                continue;
            }
        }
        // A syslog host name or an `asterisk[1234]:` tag.
        let sp = cfind(s, b' ')?;
        s = s[sp..].trim_start();
    }
    None
}

/// `NOTICE[1234][C-0000001d]: ` and variants (fail2ban's `log_prefix`): the level and what
/// follows its decorations.
fn level(s: &str) -> Option<(Level, &str)> {
    const LEVELS: &[(&str, Level)] = &[
        ("NOTICE", Level::Notice),
        ("WARNING", Level::Warning),
        ("SECURITY", Level::Security),
        ("VERBOSE", Level::Verbose),
        ("DEBUG", Level::Debug),
        ("ERROR", Level::Other),
        ("DTMF", Level::Other),
    ];
    let first = *s.as_bytes().first()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    let (level, rest) = LEVELS
        .iter()
        .find_map(|(name, l)| s.strip_prefix(name).map(|r| (*l, r)))?;
    // `[1234]` and `[C-0000002a]`: the digits run up to the first `]`, or the line is not one
    // of these (one pass, not a search for the `]` and another over what precedes it).
    let bracketed = |s: &str, ok: fn(&u8) -> bool| -> Option<usize> {
        let n = s.bytes().take_while(ok).count();
        (s.as_bytes().get(n) == Some(&b']')).then_some(n + 1)
    };
    let mut r = rest;
    let t = r.trim_start_matches(' ');
    if let Some(inner) = t.strip_prefix('[') {
        r = &inner[bracketed(inner, u8::is_ascii_digit)?..];
    }
    r = r.strip_prefix(':').unwrap_or(r);
    if let Some(inner) = r.strip_prefix("[C-") {
        r = &inner[bracketed(inner, u8::is_ascii_hexdigit)?..];
    }
    r = r.strip_prefix(':').unwrap_or(r);
    Some((level, r.strip_prefix(' ')?))
}

/// The message after `file.c: ` or, when a line number follows the file, after
/// `file.c:123 [in ]function: `.
fn content(body: &str) -> Option<&str> {
    let colon = cfind(body, b':')?;
    if colon == 0 {
        return None;
    }
    let after = &body[colon + 1..];
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    let rest = after[digits..].strip_prefix(' ')?;
    if digits > 0 {
        if let Some(c) = cfind(rest, b':') {
            if c > 0 && rest[c + 1..].starts_with(' ') {
                return Some(&rest[c + 2..]);
            }
        }
    }
    Some(rest)
}

/// Inside `[…]`: `Nov 20 10:15:32`, `2026-11-20 10:15:32[.123]`, ISO 8601 with a zone.
fn bracket_time(s: &str, year: i32) -> Option<Stamp> {
    if s.as_bytes().first()?.is_ascii_digit() {
        let (t, offset) = parse_datetime(s.trim())?;
        return Some(match offset {
            Some(off) => Stamp::Utc(t - i64::from(off)),
            None => Stamp::Local(t),
        });
    }
    let (t, rest) = syslog_time(s, year)?;
    rest.trim().is_empty().then_some(t)
}

/// A timestamp starting a syslog line: `Nov  4 18:30:40 `, `2026-11-20T10:15:32.1+00:00 `,
/// `2026-11-20 10:15:32 `.
fn leading_time(s: &str, year: i32) -> Option<(Stamp, &str)> {
    let b = s.as_bytes();
    if b.first()?.is_ascii_digit() {
        if b.len() < 19 {
            return None;
        }
        let from = if b[10] == b' ' { 11 } else { 0 };
        let end = s.get(from..)?.find(' ').map_or(s.len(), |e| e + from);
        let (t, offset) = parse_datetime(s.get(..end)?)?;
        let stamp = match offset {
            Some(off) => Stamp::Utc(t - i64::from(off)),
            None => Stamp::Local(t),
        };
        return Some((stamp, &s[end..]));
    }
    syslog_time(s, year)
}

/// `Nov 20 10:15:32` / `Nov  4 18:30:40`, optionally with a fraction, and what follows.
fn syslog_time(s: &str, year: i32) -> Option<(Stamp, &str)> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let name = s.get(..3)?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(name))? as u32 + 1;
    let r = s[3..].strip_prefix(' ')?.trim_start_matches(' ');
    let nd = r.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=2).contains(&nd) {
        return None;
    }
    let day: u32 = r[..nd].parse().ok()?;
    let r = r[nd..].strip_prefix(' ')?;
    let (h, m, sec) = clock(r.get(..8)?.as_bytes())?;
    let mut rest = &r[8..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[n..];
    }
    let t = civil_seconds(i64::from(year), month, day, h, m, sec)?;
    Some((Stamp::Local(t), rest))
}

// --- the messages -----------------------------------------------------------------------------

enum Found {
    /// Not a line of a kind this module knows.
    No,
    /// A known kind that asks for nothing (a `ChallengeSent`, a DNS-named contact, …).
    Skip,
    /// The event, with the time the message itself carries (security lines' `EventTV`).
    Event(SecurityEvent, Option<i64>),
    /// A known kind, malformed.
    Bad(String),
}

/// Turns `Option` into `Found::No` inside the recognisers.
macro_rules! get {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Found::No,
        }
    };
}

fn recognise(level: Level, content: &str) -> Found {
    let c = content.trim_start();
    let first = get!(c.as_bytes().first());
    if level.failure() {
        let found = match first {
            b'R' => match c.as_bytes().get(2) {
                Some(b'g') => registration_failed(c),
                Some(b'q') => request_failed(c),
                _ => Found::No,
            },
            b'S' => security_line(c),
            b'H' | b'0'..=b'9' | b'[' | b'a'..=b'f' | b'A'..=b'F' | b':' => host_auth(c),
            b'N' => no_registration(c),
            b'P' => peer_not_dynamic(c),
            b'h' => hacking(c),
            b'"' => rejecting_unknown(c),
            _ => Found::No,
        };
        if !matches!(found, Found::No) {
            return found;
        }
        // `Call from …`, and res_pjsip_session's `<session name>: Call (…)`.
        let found = match first {
            b'F' => friendly_scanner(c),
            _ => call_rejected(c),
        };
        if !matches!(found, Found::No) {
            return found;
        }
    }
    // Older verbose lines start `    -- ` or `  == `.
    let v = if level == Level::Verbose {
        c.trim_start_matches([' ', '-', '=', '>'])
    } else {
        c
    };
    match v.as_bytes().first() {
        Some(b'R') => match registered(v) {
            Found::No => removed_contact(v),
            f => f,
        },
        Some(b'A') => added_contact(v),
        _ => Found::No,
    }
}

fn failed(
    source: IpAddr,
    account: Option<&str>,
    reason: AuthFailure,
    protocol: Option<SignallingProtocol>,
) -> Found {
    Found::Event(
        SecurityEvent::AuthFailed {
            source,
            account: non_empty(account),
            reason,
            user_agent: None,
            protocol,
        },
        None,
    )
}

fn address(text: &str) -> Result<IpAddr, Found> {
    parse_host_port(text)
        .ok_or_else(|| Found::Bad(format!("{:?} is not an IP address", clip(text))))
}

/// fail2ban 1. chan_sip: `Registration from '<To header>' failed for '<addr>' - <reason>`.
fn registration_failed(c: &str) -> Found {
    use AuthFailure::*;
    let rest = get!(c.strip_prefix("Registration from '"));
    // The To header is the sender's text; what follows the *last* `' - ` and the last
    // `' failed for '` before it is Asterisk's.
    let (head, reason) = get!(rsplit(rest, "' - "));
    let reason = match reason.trim_end() {
        "Wrong password" | "Username/auth name mismatch" => WrongPassword,
        "No matching peer found" => UnknownAccount,
        "Device does not match ACL" | "ACL error (permit/deny)" => Acl,
        "Not a local domain"
        | "Peer is not supposed to register"
        | "Device not configured to use this transport type"
        | "Unknown failure" => Other,
        _ => return Found::No,
    };
    let (to, addr) = get!(rsplit(head, "' failed for '"));
    match address(addr) {
        Ok(source) => failed(
            source,
            uri_user(to),
            reason,
            Some(SignallingProtocol::Chansip),
        ),
        Err(f) => f,
    }
}

/// fail2ban 2. chan_sip `Call from '<user>' (<addr>) to extension '<exten>' rejected because
/// extension not found in context '<context>'.`; res_pjsip_session the same with `TCP:`/`UDP:`
/// before the address, or `<name>: Call (<transport>:<addr>) to extension …`.
fn call_rejected(c: &str) -> Found {
    let c = if c.starts_with("Call ") {
        c
    } else {
        match lsplit(c, ": ") {
            Some((name, rest)) if !name.contains(['\'', ':']) && rest.starts_with("Call ") => rest,
            _ => return Found::No,
        }
    };
    let mut rest = &c[5..];
    let mut user = None;
    if let Some(r) = rest.strip_prefix("from '") {
        // Quote-free fields, as fail2ban requires: then only one reading of the line exists.
        let q = get!(cfind(r, b'\''));
        user = Some(&r[..q]);
        rest = get!(r[q + 1..].strip_prefix(' '));
    }
    let r = get!(rest.strip_prefix('('));
    let close = get!(cfind(r, b')'));
    let addr = &r[..close];
    let r = get!(r[close + 1..].strip_prefix(" to extension '"));
    let q = get!(cfind(r, b'\''));
    let r = get!(r[q + 1..].strip_prefix(" rejected because extension not found in context '"));
    let q = get!(cfind(r, b'\''));
    let end = r[q + 1..].trim_end();
    if !(end.is_empty() || end == ".") {
        return Found::No;
    }
    let (transport, hostport) = split_transport(addr);
    let protocol = if transport.is_some() {
        SignallingProtocol::Pjsip
    } else {
        SignallingProtocol::Chansip
    };
    match address(hostport) {
        Ok(source) => failed(source, user, AuthFailure::Other, Some(protocol)),
        Err(f) => f,
    }
}

/// `UDP:1.2.3.4:5060` → (`UDP`, `1.2.3.4:5060`); `[2001:db8::1]:5060` has no transport.
fn split_transport(addr: &str) -> (Option<&str>, &str) {
    match addr.as_bytes().first() {
        Some(b) if b.is_ascii_alphabetic() => match split_byte(addr, b':') {
            Some((t, rest)) if t.bytes().all(|b| b.is_ascii_alphanumeric()) => (Some(t), rest),
            _ => (None, addr),
        },
        _ => (None, addr),
    }
}

/// fail2ban 3 (and chan_iax2 relatives). chan_iax2 `Host <addr> failed to authenticate as
/// <peer>`, `Host <addr> failed MD5 authentication for '<peer>' (…)`; manager.c `<addr> failed
/// to authenticate as '<user>'`, `<addr> tried to authenticate with nonexistent user '<user>'`.
fn host_auth(c: &str) -> Found {
    use AuthFailure::*;
    let (iax, rest) = match c.strip_prefix("Host ") {
        Some(r) => (true, r),
        None => (false, c),
    };
    let (addr, tail) = get!(split_byte(rest, b' '));
    let phrases: &[(&str, AuthFailure, bool)] = &[
        ("failed to authenticate as ", WrongPassword, false),
        ("failed MD5 authentication for ", WrongPassword, false),
        (
            "tried to authenticate with nonexistent user ",
            UnknownAccount,
            false,
        ),
        ("denied access to register peer ", Acl, true),
        (
            "did not provide proper plaintext password for ",
            WrongPassword,
            true,
        ),
    ];
    let (reason, name) = get!(phrases.iter().find_map(|(p, reason, iax_only)| {
        if *iax_only && !iax {
            return None;
        }
        tail.strip_prefix(p).map(|name| (*reason, name))
    }));
    let name = match name.strip_prefix('\'') {
        Some(n) => n.split('\'').next().unwrap_or(n),
        None => name.trim_end(),
    };
    let protocol = iax.then_some(SignallingProtocol::Iax);
    match address(addr) {
        Ok(source) => failed(source, Some(name), reason, protocol),
        Err(f) => f,
    }
}

/// fail2ban 4. chan_iax2 `No registration for peer '<peer>' (from <addr>)`.
fn no_registration(c: &str) -> Found {
    let rest = get!(c.strip_prefix("No registration for peer '"));
    let (peer, addr) = get!(rsplit(rest, "' (from "));
    let addr = get!(addr.trim_end().strip_suffix(')'));
    match address(addr) {
        Ok(source) => failed(
            source,
            Some(peer),
            AuthFailure::UnknownAccount,
            Some(SignallingProtocol::Iax),
        ),
        Err(f) => f,
    }
}

/// chan_iax2 `Peer '<peer>' is not dynamic (from <addr>)`.
fn peer_not_dynamic(c: &str) -> Found {
    let rest = get!(c.strip_prefix("Peer '"));
    let (peer, addr) = get!(rsplit(rest, "' is not dynamic (from "));
    let addr = get!(addr.trim_end().strip_suffix(')'));
    match address(addr) {
        Ok(source) => failed(
            source,
            Some(peer),
            AuthFailure::Other,
            Some(SignallingProtocol::Iax),
        ),
        Err(f) => f,
    }
}

/// fail2ban 5. `hacking attempt detected '<addr>'` (a chan_sip NOTICE).
fn hacking(c: &str) -> Found {
    let rest = get!(c.strip_prefix("hacking attempt detected '"));
    let addr = get!(rest.trim_end().strip_suffix('\''));
    match address(addr) {
        Ok(source) => failed(
            source,
            None,
            AuthFailure::Other,
            Some(SignallingProtocol::Chansip),
        ),
        Err(f) => f,
    }
}

/// fail2ban 7. FreePBX's dialplan: `"Rejecting unknown SIP connection from <addr>[:port]"`.
fn rejecting_unknown(c: &str) -> Found {
    let rest = get!(c.strip_prefix("\"Rejecting unknown SIP connection from "));
    let addr = get!(rest.trim_end().strip_suffix('"'));
    match address(addr) {
        Ok(source) => failed(source, None, AuthFailure::Other, None),
        Err(f) => f,
    }
}

/// FreePBX's dialplan `Friendly Scanner from <addr>`: its User-Agent was `friendly-scanner`.
fn friendly_scanner(c: &str) -> Found {
    let rest = get!(c.strip_prefix("Friendly Scanner from "));
    let addr = rest.trim_end().trim_end_matches('"');
    match address(addr) {
        Ok(source) => Found::Event(
            SecurityEvent::ScannerSeen {
                source,
                user_agent: Some("friendly-scanner".to_owned()),
            },
            None,
        ),
        Err(f) => f,
    }
}

/// fail2ban 8. res_pjsip `Request ['<method>' ]from '<From>' failed for '<addr>' (callid:
/// <Call-ID>) - <reason>[ after N tries in M ms]`.
fn request_failed(c: &str) -> Found {
    use AuthFailure::*;
    const CALLID: &str = "' (callid: ";
    let rest = get!(c.strip_prefix("Request "));
    // A Call-ID has no spaces, so the last `' (callid: ` is Asterisk's, and the address is the
    // quoted text just before it.
    let at = get!(rfind(rest, CALLID));
    let (head, tail) = (&rest[..at], &rest[at + CALLID.len()..]);
    let close = get!(find(tail, ") - "));
    let reason_text = &tail[close + 4..];
    if reason_text.bytes().any(|b| b == b'\'') {
        return Found::No;
    }
    let reason = if reason_text.starts_with("No matching endpoint found") {
        UnknownAccount
    } else if reason_text.starts_with("Not match Endpoint ACL")
        || reason_text.starts_with("Not match Endpoint Contact ACL")
    {
        Acl
    } else if reason_text.starts_with("Failed to authenticate") {
        WrongPassword
    } else if reason_text.starts_with("Error to authenticate") {
        Other
    } else {
        return Found::No;
    };
    let q = get!(head.bytes().rposition(|b| b == b'\''));
    let addr = &head[q + 1..];
    let before = get!(head[..q].strip_suffix("' failed for "));
    // The From header, for the account; not trusted for anything else.
    let from = match before.strip_prefix("from '") {
        Some(f) => Some(f),
        None => before
            .strip_prefix('\'')
            .and_then(|m| lsplit(m, "' from '"))
            .map(|(_, f)| f),
    };
    match address(addr) {
        Ok(source) => failed(
            source,
            from.and_then(uri_user),
            reason,
            Some(SignallingProtocol::Pjsip),
        ),
        Err(f) => f,
    }
}

/// fail2ban 6. res_security_log: `SecurityEvent="<name>",EventTV="…",…,AccountID="…",
/// SessionID="…",LocalAddress="…",RemoteAddress="IPV4/UDP/<addr>/<port>"[,Key="value"…]`.
fn security_line(c: &str) -> Found {
    let rest = get!(c.strip_prefix("SecurityEvent=\""));
    let q = get!(cfind(rest, b'"'));
    let Some(class) = classify_security(&rest[..q]) else {
        return Found::Skip;
    };
    let Some((remote, head, tail)) = find_remote(c) else {
        return Found::Bad(format!(
            "security event {:?} without a well-formed RemoteAddress",
            clip(&rest[..q])
        ));
    };
    // Fields Asterisk writes before the sender's text (SessionID) are read from the front;
    // those after RemoteAddress from the clean tail only, where no sender's text can forge them.
    let [account, service, event_tv] = kvs(head, ["AccountID", "Service", "EventTV"]);
    let [user_agent, using_password] = kvs(tail, ["UserAgent", "UsingPassword"]);
    let fields = SecurityFields {
        class,
        remote,
        account,
        service,
        user_agent,
        using_password,
    };
    match security_event(&fields) {
        Ok(Some(ev)) => Found::Event(ev, event_tv.and_then(parse_event_time)),
        Ok(None) => Found::Skip,
        Err(m) => Found::Bad(m),
    }
}

/// The `RemoteAddress` value followed only by well-formed `,Key="value"` pairs (none of them a
/// `RemoteAddress`), with the text before and after it. At most one occurrence qualifies.
fn find_remote(c: &str) -> Option<(&str, &str, &str)> {
    const KEY: &str = ",RemoteAddress=\"";
    let mut end = c.len();
    while let Some(i) = rfind(&c[..end], KEY) {
        let vstart = i + KEY.len();
        if let Some(len) = cfind(&c[vstart..], b'"') {
            let tail = &c[vstart + len + 1..];
            if clean_tail(tail) {
                return Some((&c[vstart..vstart + len], &c[..i], tail));
            }
        }
        end = i;
    }
    None
}

fn clean_tail(mut t: &str) -> bool {
    loop {
        if t.trim_end().is_empty() {
            return true;
        }
        let Some(r) = t.strip_prefix(',') else {
            return false;
        };
        let n = r
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if n == 0 || &r[..n] == "RemoteAddress" {
            return false;
        }
        let Some(v) = r[n..].strip_prefix("=\"") else {
            return false;
        };
        let Some(q) = cfind(v, b'"') else {
            return false;
        };
        t = &v[q + 1..];
    }
}

/// For each key, the value of the first `,Key="value"` in `s` (`None` when that first one has
/// no closing quote), in one pass over the commas: a pass per key, comparing at every comma,
/// was half the cost of a security line.
#[inline(never)]
fn kvs<'a, const N: usize>(s: &'a str, keys: [&str; N]) -> [Option<&'a str>; N] {
    const { assert!(N > 0 && N < 32) };
    let b = s.as_bytes();
    let mut out = [None; N];
    let mut left = (1u32 << N) - 1;
    let mut from = 0;
    while let Some(c) = pos(&b[from..], b',').map(|i| i + from) {
        from = c + 1;
        let rest = &b[from..];
        let Some(&first) = rest.first() else {
            break;
        };
        for (j, key) in keys.iter().enumerate() {
            let k = key.as_bytes();
            if left & (1 << j) != 0
                && k[0] == first
                && rest.starts_with(k)
                && rest[k.len()..].starts_with(b"=\"")
            {
                left &= !(1 << j);
                let v = &s[from + k.len() + 2..];
                out[j] = cfind(v, b'"').map(|q| &v[..q]);
            }
        }
        if left == 0 {
            break;
        }
    }
    out
}

// Substring search for the short ASCII patterns of these messages: find the first byte, then
// compare. Faster here than `str::find`'s two-way searcher, which must be built anew
// for every call. Positions are char boundaries because the patterns are ASCII.
//
// The scanning loops here are kept out of line (`inline(never)`): inlined into the one large
// function the recognisers become, the backward scan of a security line kept a dozen
// counters on the stack and took a quarter of that line's time.

#[inline(never)]
fn find(h: &str, pat: &str) -> Option<usize> {
    debug_assert!(pat.is_ascii() && !pat.is_empty());
    let (h, pat) = (h.as_bytes(), pat.as_bytes());
    let last = pat.len() - 1;
    let mut from = 0;
    while let Some(i) = pos(&h[from..], pat[0]).map(|i| i + from) {
        // The last byte first: most candidates fail there without a call to `memcmp`.
        if h.get(i + last) == Some(&pat[last]) && h[i..].starts_with(pat) {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

#[inline(never)]
fn rfind(h: &str, pat: &str) -> Option<usize> {
    debug_assert!(pat.is_ascii() && !pat.is_empty());
    let (h, pat) = (h.as_bytes(), pat.as_bytes());
    let last = pat.len() - 1;
    let mut end = h.len();
    while let Some(i) = rpos(&h[..end], pat[0]) {
        if h.get(i + last) == Some(&pat[last]) && h[i..].starts_with(pat) {
            return Some(i);
        }
        end = i;
    }
    None
}

/// `s.find(c)` for an ASCII `c`.
fn cfind(s: &str, c: u8) -> Option<usize> {
    pos(s.as_bytes(), c)
}

/// `h.split_once(pat)`.
fn lsplit<'a>(h: &'a str, pat: &str) -> Option<(&'a str, &'a str)> {
    find(h, pat).map(|i| (&h[..i], &h[i + pat.len()..]))
}

/// `h.rsplit_once(pat)`.
fn rsplit<'a>(h: &'a str, pat: &str) -> Option<(&'a str, &'a str)> {
    rfind(h, pat).map(|i| (&h[..i], &h[i + pat.len()..]))
}

/// chan_sip `Registered SIP '<peer>' at <addr>` (only logged when the address changed), chan_iax2
/// `Registered IAX2 '<peer>' (AUTHENTICATED) at <addr>`, res_pjsip (debug) `Refreshed contact
/// '<uri>' on AOR '<aor>' with new expiration of N seconds`.
fn registered(c: &str) -> Found {
    let registered = |source, account: &str, expires| {
        Found::Event(
            SecurityEvent::Registered {
                source,
                account: account.to_owned(),
                expires,
            },
            None,
        )
    };
    if let Some(rest) = c.strip_prefix("Registered SIP '") {
        let (peer, addr) = get!(rsplit(rest, "' at "));
        return match address(addr.trim_end()) {
            Ok(source) => registered(source, peer, DEFAULT_EXPIRES),
            Err(f) => f,
        };
    }
    if let Some(rest) = c.strip_prefix("Registered IAX2 '") {
        let (head, addr) = get!(rsplit(rest, ") at "));
        let (peer, state) = get!(rsplit(head, "' ("));
        if state != "AUTHENTICATED" {
            return Found::Skip;
        }
        return match address(addr.trim_end()) {
            Ok(source) => registered(source, peer, DEFAULT_EXPIRES),
            Err(f) => f,
        };
    }
    if let Some(rest) = c.strip_prefix("Refreshed contact '") {
        let (head, n) = get!(rsplit(rest, "' with new expiration of "));
        let (uri, aor) = get!(rsplit(head, "' on AOR '"));
        return contact_registered(uri, aor, n);
    }
    Found::No
}

/// res_pjsip `Added contact '<uri>' to AOR '<aor>' with expiration of N seconds`.
fn added_contact(c: &str) -> Found {
    let rest = get!(c.strip_prefix("Added contact '"));
    let (head, n) = get!(rsplit(rest, "' with expiration of "));
    let (uri, aor) = get!(rsplit(head, "' to AOR '"));
    contact_registered(uri, aor, n)
}

fn contact_registered(uri: &str, aor: &str, seconds: &str) -> Found {
    let n = get!(seconds.trim_end().strip_suffix(" seconds"));
    let Ok(expires) = n.parse::<u32>() else {
        return Found::Bad(format!("expiration {:?} is not a number", clip(n)));
    };
    // A contact named by DNS (WebRTC's `*.invalid`) gives no address to act on.
    let Some(source) = uri_host(uri) else {
        return Found::Skip;
    };
    Found::Event(
        SecurityEvent::Registered {
            source,
            account: aor.to_owned(),
            expires,
        },
        None,
    )
}

/// res_pjsip `Removed contact '<uri>' from AOR '<aor>' due to <reason>`.
fn removed_contact(c: &str) -> Found {
    let rest = get!(c.strip_prefix("Removed contact '"));
    let (head, _reason) = get!(rsplit(rest, "' due to "));
    let (uri, aor) = get!(rsplit(head, "' from AOR '"));
    let Some(source) = uri_host(uri) else {
        return Found::Skip;
    };
    Found::Event(
        SecurityEvent::Unregistered {
            source,
            account: aor.to_owned(),
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The shortcut for the common prefix reads what the general loop reads.
        #[test]
        fn the_common_header_is_read_as_any_header_reads_it(
            line in "\\[[0-9: \\-]{19}\\][ \\]]{1,2}(NOTICE|VERBOSE|SECURITY|WARNING|DEBUG|DTMF|ERROR|Nov)?( ?\\[[0-9a-f]{1,5}\\])?(\\[C-[0-9a-fx]{1,8}\\])?:? ?[a-z_.]{0,12}(:[0-9]{0,4} [a-z_]{1,10})?: [ -~]{0,30}"
        ) {
            let fast = common_header(&line, 2026);
            let slow = any_header(&line, 2026);
            if let Some(f) = fast {
                let s = slow.expect("the loop reads what the shortcut reads");
                proptest::prop_assert_eq!(f.level, s.level);
                proptest::prop_assert_eq!(f.body, s.body);
                proptest::prop_assert_eq!(f.time.brackets, s.time.brackets);
                proptest::prop_assert_eq!(f.time.pending, s.time.pending);
                proptest::prop_assert_eq!(f.time.read.is_none(), s.time.read.is_none());
            }
        }
    }

    fn at(line: &str) -> Option<u64> {
        parse_line(line, 2026).unwrap().unwrap().at
    }

    #[test]
    fn timestamps() {
        let t = 1_795_169_732;
        let msg = "NOTICE[1] chan_sip.c: hacking attempt detected '203.0.113.9'";
        assert_eq!(at(&format!("[Nov 20 10:15:32] {msg}")), Some(t));
        assert_eq!(at(&format!("[2026-11-20 10:15:32] {msg}")), Some(t));
        assert_eq!(at(&format!("[2026-11-20 10:15:32.999] {msg}")), Some(t));
        assert_eq!(
            at(&format!("Nov 20 10:15:32 pbx asterisk[7]: {msg}")),
            Some(t)
        );
        assert_eq!(
            at(&format!(
                "2026-11-20T11:15:32.5+01:00 pbx asterisk[7]: {msg}"
            )),
            Some(t)
        );
        assert_eq!(at(msg), None);
        let local = parse_line_with_offset(&format!("[Nov 20 11:15:32] {msg}"), 2026, 3600)
            .unwrap()
            .unwrap();
        assert_eq!(local.at, Some(t));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            content("chan_sip.c:28468 handle_request_register: Registration from"),
            Some("Registration from")
        );
        assert_eq!(
            content("chan_sip.c:23417 in handle_request_register: Registration"),
            Some("Registration")
        );
        assert_eq!(content("manager.c: 1.2.3.4 failed"), Some("1.2.3.4 failed"));
        // Without a line number, the function slot is not skipped: a user name cannot start
        // a message of its own.
        assert_eq!(
            content("manager.c: 1.2.3.4 failed to authenticate as 'x: 10.0.0.1 failed to authenticate as 'y'"),
            Some("1.2.3.4 failed to authenticate as 'x: 10.0.0.1 failed to authenticate as 'y'")
        );
        assert!(level("NOTICES[1] x").is_none());
        assert_eq!(
            level("NOTICE [22382] manager.c: x").map(|l| l.1),
            Some("manager.c: x")
        );
        assert_eq!(
            level("WARNING[1][C-0000001d]: Ext. s: x").map(|l| l.1),
            Some("Ext. s: x")
        );
    }

    #[test]
    fn security_tail() {
        assert!(clean_tail(""));
        assert!(clean_tail(",Challenge=\"x\",UsingPassword=\"1\""));
        assert!(!clean_tail("\",LocalAddress=\"x\""));
        assert!(!clean_tail(",RemoteAddress=\"IPV4/UDP/1.2.3.4/5060\""));
        assert_eq!(
            kvs(",a=\"1\",UsingPassword=\"0\"", ["UsingPassword"]),
            [Some("0")]
        );
        assert_eq!(kvs("xUsingPassword=\"1\"", ["UsingPassword"]), [None]);
        // The first occurrence of each key counts, closed or not; keys are found in any order.
        assert_eq!(
            kvs(
                ",B=\"2\",A=\"1\",B=\"3\",C=\"open,A=\"4\"",
                ["A", "B", "C", "D"]
            ),
            [Some("1"), Some("2"), Some("open,A="), None]
        );
        assert_eq!(kvs(",A=\"x,B=\"y\"", ["A", "B"]), [Some("x,B="), Some("y")]);
        assert_eq!(kvs(",A=\"unclosed", ["A"]), [None]);
    }
}
