//! Asterisk log lines (docs/events.md): the lines fail2ban's stock `filter.d/asterisk.conf` bans on,
//! the `security` channel, and the registration lines that say a device is in or out.
//!
//! A line is `[timestamp] LEVEL[lwp][C-callid] file.c[:line function]: message`. The timestamp
//! may be Asterisk's default `Nov 20 10:15:32` (no year: the caller passes it), FreePBX's
//! `2026-11-20 10:15:32`, or absent (journald); a syslog prefix (`Nov 20 10:15:32 pbx
//! asterisk[1234]: `) is accepted when its tag is Asterisk's. Timestamps without a zone are
//! local time: pass the UTC offset to [`parse_line_with_offset`] ([`parse_line`] assumes UTC).
//!
//! Each message is read only from the module that writes it (the prefix's file slot), at the
//! levels fail2ban requires for failures (NOTICE, WARNING, SECURITY; any level for
//! registrations):
//!
//! | module | message | event |
//! |---|---|---|
//! | `chan_sip.c` | fail2ban 1: `Registration from '…' failed for '<addr>' - <reason>` | `AuthFailed`, reason below |
//! | `chan_sip.c` | fail2ban 2: `Call from '…' (<addr>) to extension '…' rejected because extension not found in context '…'.` | `AuthFailed`, `Other` |
//! | `res_pjsip_session.c` | fail2ban 2: the same with `TCP:`/`UDP:` before the address, or `<session>: Call (<transport>:<addr>) to extension …` | `AuthFailed`, `Other` |
//! | `chan_iax2.c` | fail2ban 3: `Host <addr> failed to authenticate as …`, `Host <addr> failed MD5 authentication for '…'` | `AuthFailed`, `WrongPassword` |
//! | `manager.c` | fail2ban 3: `<addr> failed to authenticate as '…'` / `<addr> tried to authenticate with nonexistent user '…'` | `AuthFailed`, `WrongPassword` / `UnknownAccount` |
//! | `chan_sip.c` | fail2ban 5: `hacking attempt detected '<addr>'` | `AuthFailed`, `Other` |
//! | `res_security_log.c` | fail2ban 6: `SecurityEvent="…",…,RemoteAddress="IPV4/UDP/<addr>/<port>",…` | as the AMI event of that name ([`super::ami`]) |
//! | `Ext. s` (FreePBX's dialplan) | fail2ban 7: `"Rejecting unknown SIP connection from <addr>[:port]"` | `AuthFailed`, `Other` |
//! | `res_pjsip/pjsip_distributor.c` | fail2ban 8: `Request ['<method>' ]from '…' failed for '<addr>' (callid: …) - <reason>` | `AuthFailed`, reason below |
//! | `chan_iax2.c` | `Host <addr> denied access to register peer '…'` | `AuthFailed`, `Acl` |
//! | `chan_iax2.c` | `Host <addr> did not provide proper plaintext password for '…'` | `AuthFailed`, `WrongPassword` |
//! | `chan_sip.c` | `Registered SIP '300' at <addr>` | `Registered` (3600 s: the line does not say) |
//! | `chan_iax2.c` | `Registered IAX2 '300' (AUTHENTICATED) at <addr>` | `Registered` (3600 s) |
//! | `res_pjsip_registrar.c` | `Added contact '<uri>' to AOR '300' with expiration of N seconds` | `Registered`, N |
//! | `res_pjsip_registrar.c` | (debug) `Refreshed contact '<uri>' on AOR '300' with new expiration of N seconds` | `Registered`, N |
//! | `res_pjsip_registrar.c` | `Removed contact '<uri>' from AOR '300' due to …` | `Unregistered` |
//!
//! FreePBX's `Friendly Scanner from <addr>` is not read: its address is the sender's own Via
//! header, so anyone could name anyone with it.
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
//! Most of these lines quote the sender's text (To and From headers, Call-IDs, user and peer
//! names, dialled extensions), raw: a Call-ID may hold `' failed for '10.0.0.5:5060' (callid:`.
//! A line is read as an event only when it has exactly one reading:
//! - every delimiter of its message (`' failed for '`, `' (callid: `, `) - `, …) occurs exactly
//!   once; a second occurrence means the sender's text imitates Asterisk's, and the line is
//!   [`EventError::Ambiguous`], whichever occurrence is real;
//! - in a security line, every key the parser reads occurs once;
//! - a line read as two different messages is ambiguous;
//! - a message of [`MAX_MESSAGE`] bytes or more may have been cut short by Asterisk's logger,
//!   so that its end is the sender's: ambiguous;
//! - the message must come from the module that writes it, with Asterisk's syslog tag, and the
//!   line must start at its first column (a folded SIP header inside a debug dump does not).
//!
//! The function slot of the prefix is only skipped when the prefix has a line number, so a user
//! name such as `x: 10.0.0.1 failed to authenticate as 'y` cannot start a message of its own.
//! Raw SIP messages that debug logging writes into the log are skipped by [`Framer`] before
//! lines reach this parser.
//!
//! ```
//! use pbxfw_core::{log, AuthFailure, SecurityEvent};
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
//! # Ok::<(), pbxfw_core::EventError>(())
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
///
/// One line alone cannot tell whether a sender wrote it (see the module docs): a log followed
/// or replayed as a whole is read through a [`Framer`].
pub fn parse_line_with_offset(
    line: &str,
    year: i32,
    utc_offset: i32,
) -> Result<Option<TimedEvent>, EventError> {
    read(line, year, utc_offset).0
}

/// What a line says about the lines after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Nothing: the next line is a line of its own.
    Nothing,
    /// A pjsip debug dump follows: this many bytes (the message and its line break).
    Dump(u64),
    /// The message may go on with a sender's newline, or a raw SIP message follows: lines
    /// that start within this many bytes may be the sender's.
    Window(u64),
}

/// How far a sender's newline in one of the fields the parser knows can reach: the longest
/// such field is 255 bytes (a chan_iax2 user name; a decoded extension is at most 79, a
/// res_pjsip user name 36).
const FIELD_WINDOW: u64 = 512;

/// How far a sender's newline in text the parser does not know the length of (what the
/// dialplan logs) can reach: Asterisk's logger writes at most 8,191 bytes a message (13.x:
/// 8,191 of message after the prefix).
const LINE_WINDOW: u64 = 8192 + 512;

/// A chan_sip debug dump holds a whole datagram (up to 65,535 bytes) and says nothing of its
/// length.
const DUMP_WINDOW: u64 = 65_536 + LINE_WINDOW;

fn read(line: &str, year: i32, utc_offset: i32) -> (Result<Option<TimedEvent>, EventError>, After) {
    let Some(h) = header(line, year) else {
        return (Ok(None), unprefixed(line));
    };
    // A prefix with no `file: ` after it: a dialplan line whose extension (in the file slot)
    // held a newline. What follows may be the sender's.
    let Some((module, message)) = content(h.body) else {
        return (Ok(None), After::Window(LINE_WINDOW));
    };
    let message = message.trim_start();
    let found = recognise(h.level, module, message);
    let after = follows(module, message, &found);
    let result = match found {
        Found::No | Found::Incomplete | Found::Skip => Ok(None),
        Found::Bad(message) => Err(EventError::Log { message }),
        Found::Ambiguous(message) => Err(EventError::Ambiguous { message }),
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
    };
    (result, after)
}

/// chan_sip's debug dumps put their header on a line of its own (the message starts with a
/// line break): `<--- SIP read from UDP:1.2.3.4:5060 --->`, `<--- Transmitting (NAT) to … --->`,
/// `<--- Reliably Transmitting (NAT) to … --->`.
fn unprefixed(line: &str) -> After {
    let l = line.trim_end();
    let chan_sip_dump = l.ends_with(" --->")
        && (l.starts_with("<--- SIP read from ")
            || l.starts_with("<--- Transmitting (")
            || l.starts_with("<--- Reliably Transmitting ("));
    if chan_sip_dump {
        After::Window(DUMP_WINDOW)
    } else {
        After::Nothing
    }
}

/// What follows a line of `module` with `message`, read as `found` (see [`Framer`]).
///
/// Asterisk writes some senders' text raw, newlines included: chan_sip and res_pjsip_session
/// print the dialled extension decoded (`%0A` is a newline), chan_iax2 the sender's user name
/// (with `authdebug`), res_security_log user names, the dialplan's `Log()` and `Executing`
/// lines the extension and whatever the dialplan expands. A line that starts as one of the
/// messages this module reads but does not end as Asterisk ends it went on past a sender's
/// newline, and the lines after it may be the sender's; so may those after a message that
/// ends with a sender's text, or after a dialplan line nothing tells the end of.
fn follows(module: &str, m: &str, found: &Found) -> After {
    let window = After::Window(FIELD_WINDOW);
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| m.starts_with(p));
    match module {
        "res_pjsip_logger.c" => pjsip_dump(m),
        module::CHAN_SIP
            if starts(&[
                "Retransmitting #",
                "Transmitting (",
                "Reliably Transmitting (",
                "<--- ",
            ]) =>
        {
            After::Window(DUMP_WINDOW)
        }
        // These end with (or start with) the sender's text: nothing tells where it ended.
        module::CHAN_IAX2
            if (m.starts_with("Host ")
                && (m.contains(" failed to authenticate as ")
                    || m.contains(" failed MD5 authentication for '")))
                || m.starts_with("No registration for peer '")
                || m.starts_with("Peer '") =>
        {
            window
        }
        // A security line that is not exactly Asterisk's may have been cut by a newline.
        module::SECURITY_LOG if !matches!(found, Found::Event(..) | Found::Skip | Found::No) => {
            window
        }
        _ if matches!(found, Found::Incomplete) => window,
        "pbx.c" if m.starts_with("Executing [") && !m.ends_with(") in new stack") => {
            After::Window(LINE_WINDOW)
        }
        _ if module.starts_with("Ext. ") && !matches!(found, Found::Event(..)) => {
            After::Window(LINE_WINDOW)
        }
        _ => After::Nothing,
    }
}

/// res_pjsip_logger: `<--- Received SIP request (543 bytes) from UDP:1.2.3.4:5060 --->` or
/// `<--- Transmitting SIP response (512 bytes) to UDP:1.2.3.4:5060 --->`, then the message raw
/// (headers and body: any line of it may look like a log line) and a line break.
fn pjsip_dump(m: &str) -> After {
    let Some(rest) = m
        .strip_prefix("<--- Received SIP ")
        .or_else(|| m.strip_prefix("<--- Transmitting SIP "))
    else {
        return After::Nothing;
    };
    let Some(rest) = rest
        .strip_prefix("request (")
        .or_else(|| rest.strip_prefix("response ("))
    else {
        return After::Nothing;
    };
    match rest.split_once(" bytes) ") {
        Some((n, _)) => match n.parse::<u64>() {
            Ok(n) if n <= 65_535 => After::Dump(n + 1),
            _ => After::Window(DUMP_WINDOW),
        },
        None => After::Nothing,
    }
}

/// Reads a log line by line, in order, as Asterisk wrote it: skips the raw SIP messages that
/// debug logging writes into the log, and refuses lines that a sender may have written.
///
/// Lines are bytes, with their line break: counts are in bytes, and a line that is not UTF-8
/// (a Latin-1 caller name) is read with its bad bytes replaced.
///
/// - **pjsip dumps** (`pjsip set logger on`) say their length: the next that many bytes are
///   skipped exactly. A dump that does not end where it said (a NUL byte in the packet cuts it
///   short) starts a window, as below.
/// - **chan_sip dumps** (`sip set debug on`) do not: every line within 64 KiB after one is
///   suspect.
/// - **A message that may go on past a sender's newline** (see the module docs) makes every
///   line that starts within the next 512 bytes suspect (the longest field a sender can put a
///   newline into is 255 bytes), or 8.5 KiB after dialplan lines (one message is at most
///   8,191 bytes).
///
/// A suspect line that would be an event is [`EventError::Ambiguous`] instead. The state is
/// two counters; it serialises, so a follower can persist it with its read offset.
///
/// ```
/// use pbxfw_core::log::Framer;
///
/// let mut f = Framer::default();
/// let dump = "GET / HTTP/1.0\r\n\r\n[Nov 20 10:15:32] NOTICE[1] chan_sip.c: Registration from '' failed for '10.9.9.9' - Wrong password\n";
/// let header = format!(
///     "[Nov 20 10:15:31] VERBOSE[7] res_pjsip_logger.c: <--- Received SIP request ({} bytes) from UDP:203.0.113.5:5060 --->\n",
///     dump.len()
/// );
/// assert_eq!(f.read(header.as_bytes(), 2026, 0), Ok(None));
/// for line in dump.split_inclusive('\n') {
///     assert_eq!(f.read(line.as_bytes(), 2026, 0), Ok(None));
/// }
/// assert_eq!(f.read(b"\n", 2026, 0), Ok(None));
/// let real = b"[Nov 20 10:15:33] NOTICE[1] chan_sip.c: Registration from '' failed for '203.0.113.5' - Wrong password\n";
/// assert!(f.read(real, 2026, 0)?.is_some());
/// # Ok::<(), pbxfw_core::EventError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Framer {
    /// Bytes of a pjsip dump still to skip, its final line break included.
    dump: u64,
    /// Lines that start within this many bytes are suspect.
    window: u64,
}

impl Framer {
    /// Reads the next line (with its line break, if it has one).
    pub fn read(
        &mut self,
        line: &[u8],
        year: i32,
        utc_offset: i32,
    ) -> Result<Option<TimedEvent>, EventError> {
        let len = line.len() as u64;
        if self.dump > 0 {
            if len <= self.dump {
                self.dump -= len;
                return Ok(None);
            }
            let rest = &line[self.dump as usize..];
            self.dump = 0;
            if rest == b"\n" || rest == b"\r\n" {
                return Ok(None);
            }
            // The dump did not end where it said: what follows cannot be placed.
            self.window = self.window.max(DUMP_WINDOW);
        }
        let text = String::from_utf8_lossy(line);
        let (result, after) = read(&text, year, utc_offset);
        let inside = self.window > 0;
        self.window = self.window.saturating_sub(len);
        match after {
            After::Nothing => {}
            After::Dump(n) => self.dump = n,
            After::Window(w) => self.window = self.window.max(w),
        }
        match result {
            Ok(Some(_)) | Err(EventError::Ambiguous { .. }) if inside => {
                Err(EventError::Ambiguous {
                    message: "within a debug dump or a message that may go on with a sender's text"
                        .into(),
                })
            }
            r => r,
        }
    }

    /// Whether the next line is read as a line of its own (no dump or window is open).
    pub fn is_clear(&self) -> bool {
        self.dump == 0 && self.window == 0
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

/// Any line's header: the level, after Asterisk's bracketed timestamp or a syslog prefix
/// (a timestamp, the host and Asterisk's tag; journald may leave out the timestamp and add one
/// of its own in brackets). A line from another program's tag is not Asterisk's, and neither
/// is a line that starts with a space (a folded SIP header inside a debug dump).
fn any_header(line: &str, year: i32) -> Option<Header<'_>> {
    let mut s = line;
    let mut time = LineTime {
        read: None,
        brackets: [""; 6],
        pending: 0,
        year,
    };
    if !s.starts_with('[') && level(s).is_none() {
        if let Some((t, rest)) = leading_time(s, year) {
            time.read = Some(t);
            s = rest.trim_start_matches(' ');
        }
        s = asterisk_tag(s)?;
    }
    for _ in 0..6 {
        if let Some((level, body)) = level(s) {
            return Some(Header { time, level, body });
        }
        let rest = s.strip_prefix('[')?;
        let close = cfind(rest, b']')?;
        time.brackets[time.pending] = &rest[..close];
        time.pending += 1;
        s = rest[close + 1..].trim_start();
    }
    None
}

/// After a syslog timestamp: `pbx asterisk[1234]: ` (or `asterisk: `), and what follows.
/// Only Asterisk's own tag: `logger -t sshd "NOTICE[1] chan_sip.c: …"` is not Asterisk's line.
/// (Any local user can still write with the tag `asterisk`: syslog files are only as
/// trustworthy as their senders, see docs/events.md.)
fn asterisk_tag(s: &str) -> Option<&str> {
    let (host, rest) = split_byte(s, b' ')?;
    if host.is_empty() {
        return None;
    }
    let rest = rest.strip_prefix("asterisk")?;
    let rest = match rest.strip_prefix('[') {
        Some(r) => {
            let (pid, after) = split_byte(r, b']')?;
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            after
        }
        None => rest,
    };
    rest.strip_prefix(": ")
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

/// The module (the prefix's file slot, `chan_sip.c`, `res_pjsip/pjsip_distributor.c`, or the
/// dialplan's `Ext. <exten>`) and the message after `file.c: ` or, when a line number follows
/// the file, after `file.c:123 [in ]function: `.
fn content(body: &str) -> Option<(&str, &str)> {
    let colon = cfind(body, b':')?;
    if colon == 0 {
        return None;
    }
    let module = &body[..colon];
    let after = &body[colon + 1..];
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    let rest = after[digits..].strip_prefix(' ')?;
    if digits > 0 {
        if let Some(c) = cfind(rest, b':') {
            if c > 0 && rest[c + 1..].starts_with(' ') {
                return Some((module, &rest[c + 2..]));
            }
        }
    }
    Some((module, rest))
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
    /// The start of a message this module reads that does not end as Asterisk ends it: it
    /// went on past a newline (see [`Framer`]).
    Incomplete,
    /// A known kind that asks for nothing (a `ChallengeSent`, a DNS-named contact, …).
    Skip,
    /// The event, with the time the message itself carries (security lines' `EventTV`).
    Event(SecurityEvent, Option<i64>),
    /// A known kind, malformed.
    Bad(String),
    /// A known kind that can be read more than one way: a sender's text imitates Asterisk's.
    Ambiguous(String),
}

impl Found {
    /// What one line gives when several message templates were tried on it: a line read as
    /// two events, or with a delimiter that occurs twice, is ambiguous; a template that read
    /// an event wins over one that found the line malformed (that one did not read it).
    fn or(self, other: Found) -> Found {
        use Found::*;
        match (self, other) {
            (a @ Ambiguous(_), _) | (_, a @ Ambiguous(_)) => a,
            (Event(..), Event(..)) => Ambiguous("the line reads as two different messages".into()),
            (e @ Event(..), _) | (_, e @ Event(..)) => e,
            (b @ Bad(_), _) | (_, b @ Bad(_)) => b,
            (Skip, _) | (_, Skip) => Skip,
            (Incomplete, _) | (_, Incomplete) => Incomplete,
            (No, No) => No,
        }
    }
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

/// `?` for `Result<_, Found>` inside the recognisers.
macro_rules! take {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(f) => return f,
        }
    };
}

/// The longest message Asterisk's logger writes whole. It formats a message into a buffer of
/// `BUFSIZ` (8,192) bytes and cuts what does not fit, so a longer sender's text pushes
/// Asterisk's own end of the line (the address, the reason) out of it, and what remains ends
/// with whatever the sender chose. A message this long is never read as an event.
pub const MAX_MESSAGE: usize = 8191;

/// Modules whose lines the parser reads, as the logger names them (`__FILE__`).
mod module {
    pub const CHAN_SIP: &str = "chan_sip.c";
    pub const CHAN_IAX2: &str = "chan_iax2.c";
    pub const MANAGER: &str = "manager.c";
    pub const SECURITY_LOG: &str = "res_security_log.c";
    pub const PJSIP_DISTRIBUTOR: &str = "res_pjsip/pjsip_distributor.c";
    pub const PJSIP_SESSION: &str = "res_pjsip_session.c";
    pub const PJSIP_REGISTRAR: &str = "res_pjsip_registrar.c";
    /// The `Log()` dialplan application (app_verbose) names the extension in the file slot;
    /// FreePBX logs its refusals of unknown callers at extension `s`.
    pub const DIALPLAN_S: &str = "Ext. s";
}

fn recognise(level: Level, module: &str, c: &str) -> Found {
    use SignallingProtocol::{Chansip, Pjsip};
    let c = c.trim_end();
    let failure = level.failure();
    // Older verbose lines start `    -- ` or `  == `.
    let v = if level == Level::Verbose {
        c.trim_start_matches([' ', '-', '=', '>'])
    } else {
        c
    };
    let found = match module {
        module::CHAN_SIP if failure => registration_failed(c)
            .or(call_rejected(c, Chansip))
            .or(hacking(c))
            .or(registered_sip(v)),
        module::CHAN_SIP => registered_sip(v),
        module::PJSIP_DISTRIBUTOR if failure => request_failed(c),
        module::PJSIP_SESSION if failure => call_rejected(c, Pjsip),
        module::CHAN_IAX2 if failure => iax_failure(c).or(registered_iax(v)),
        module::CHAN_IAX2 => registered_iax(v),
        module::MANAGER if failure => manager_failure(c),
        module::SECURITY_LOG if failure => security_line(c),
        module::PJSIP_REGISTRAR => contact(v),
        module::DIALPLAN_S if failure => rejecting_unknown(c),
        _ => Found::No,
    };
    match found {
        Found::Event(..) if c.len() >= MAX_MESSAGE => Found::Ambiguous(format!(
            "a message of {} bytes may have been cut short by Asterisk's logger",
            c.len()
        )),
        f => f,
    }
}

/// Reads `msg` as `prefix H₀ d₀ H₁ d₁ … d₍ₖ₋₁₎ Hₖ suffix` and returns the holes: the `K`
/// before each delimiter, and the last.
///
/// This is how a line that quotes a sender's text (a From header, a Call-ID, an extension) is
/// read without trusting that text: each delimiter must occur exactly once between the prefix
/// and the suffix. The line Asterisk wrote always has one reading, with its own delimiters;
/// if a delimiter occurs once only, that reading is the only one. A delimiter that occurs
/// twice means a field imitates Asterisk's own text, and the line is ambiguous: it names
/// nobody, whichever occurrence is the real one. (Reading from the fixed end, as before,
/// named the right address for most such lines, but not for those the logger cut short, nor
/// where the sender's text follows the address: a Call-ID.)
fn cut<'a, const K: usize>(
    msg: &'a str,
    prefix: &str,
    delims: [&str; K],
    suffix: &str,
) -> Result<([&'a str; K], &'a str), Found> {
    let rest = msg.strip_prefix(prefix).ok_or(Found::No)?;
    // A message that starts as this one (its prefix, or its first delimiter when it has no
    // prefix) but lacks the rest is incomplete, not another message.
    if prefix.is_empty() && delims.first().is_some_and(|d| find(rest, d).is_none()) {
        return Err(Found::No);
    }
    let body = rest.strip_suffix(suffix).ok_or(Found::Incomplete)?;
    let mut holes = [""; K];
    let mut from = 0;
    for (i, d) in delims.iter().enumerate() {
        let at = find(body, d).ok_or(Found::Incomplete)?;
        // `d` is ASCII, so `at + 1` is a char boundary.
        if find(&body[at + 1..], d).is_some() {
            return Err(Found::Ambiguous(format!(
                "{:?} occurs more than once",
                d.trim()
            )));
        }
        if at < from {
            return Err(Found::Incomplete);
        }
        holes[i] = &body[from..at];
        from = at + d.len();
    }
    Ok((holes, &body[from..]))
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
    let ([to, addr], reason) = take!(cut(
        c,
        "Registration from '",
        ["' failed for '", "' - "],
        ""
    ));
    let reason = match reason {
        "Wrong password" => WrongPassword,
        "Peer is not supposed to register"
        | "Device not configured to use this transport type"
        | "Unknown failure" => Other,
        // Asterisk's logger deletes from an ESC byte up to the next `m` (`term_strip`). A To
        // header ending `…' failed for '10.9.9.9' - No m` + ESC loses Asterisk's own
        // `' failed for '<addr>' - No m` and reads `No matching peer found` against 10.9.9.9.
        // A reason with an `m` can be completed that way; one without cannot (the deletion
        // then runs to the end of the message and glues the next one on).
        "No matching peer found"
        | "Username/auth name mismatch"
        | "Device does not match ACL"
        | "ACL error (permit/deny)"
        | "Not a local domain" => {
            return Found::Ambiguous(
                "chan_sip's reason has an `m`: the line may be a sender's, rewritten by Asterisk's escape-sequence stripping"
                    .into(),
            )
        }
        // `RTP initialization failed` is the server's own problem.
        _ => return Found::No,
    };
    let source = take!(address(addr));
    failed(
        source,
        uri_user(to),
        reason,
        Some(SignallingProtocol::Chansip),
    )
}

const REJECTED: &str = "' rejected because extension not found in context '";

/// fail2ban 2. chan_sip `Call from '<user>' (<addr>) to extension '<exten>' rejected because
/// extension not found in context '<context>'.`; res_pjsip_session the same with `TCP:`/`UDP:`
/// before the address, or `<session name>: Call (<transport>:<addr>) to extension …`.
fn call_rejected(c: &str, protocol: SignallingProtocol) -> Found {
    // The period at the end is missing in some versions.
    let c = c.strip_suffix('.').unwrap_or(c);
    let from = match cut(c, "Call from '", ["' (", ") to extension '", REJECTED], "'") {
        Ok(([user, addr, _exten], _context)) => call_from(Some(user), addr, protocol),
        Err(f) => f,
    };
    if protocol == SignallingProtocol::Chansip {
        return from;
    }
    let named = match cut(c, "", [": Call (", ") to extension '", REJECTED], "'") {
        // The session's name is Asterisk's (a channel or endpoint name): never quoted text.
        Ok(([name, addr, _exten], _context)) if !name.is_empty() && !name.contains(['\'', ':']) => {
            call_from(None, addr, protocol)
        }
        Ok(_) => Found::No,
        Err(f) => f,
    };
    from.or(named)
}

fn call_from(user: Option<&str>, addr: &str, protocol: SignallingProtocol) -> Found {
    let (transport, hostport) = split_transport(addr);
    // chan_sip prints the bare address, res_pjsip_session the transport before it.
    if transport.is_some() != (protocol == SignallingProtocol::Pjsip) {
        return Found::No;
    }
    let source = take!(address(hostport));
    failed(source, user, AuthFailure::Other, Some(protocol))
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

/// fail2ban 3 and 4, and chan_iax2's other refusals: `Host <addr> failed to authenticate as
/// <peer>`, `Host <addr> failed MD5 authentication for '<peer>' (…)`, `Host <addr> denied
/// access to register peer '<peer>'`, `Host <addr> did not provide proper plaintext password
/// for '<peer>'`, `No registration for peer '<peer>' (from <addr>)`, `Peer '<peer>' is not
/// dynamic (from <addr>)`.
fn iax_failure(c: &str) -> Found {
    use AuthFailure::*;
    let iax = |addr: &str, peer: &str, reason| {
        let source = take!(address(addr));
        failed(source, Some(peer), reason, Some(SignallingProtocol::Iax))
    };
    let mut found = Found::No;
    if c.starts_with("Host ") {
        found = match cut(c, "Host ", [" failed to authenticate as "], "") {
            Ok(([addr], peer)) => iax(addr, unquoted(peer), WrongPassword),
            Err(f) => f,
        }
        .or(
            match cut(c, "Host ", [" failed MD5 authentication for '"], "") {
                // `'<peer>' (<md5> != <md5>)`: the digests are Asterisk's, hex.
                Ok(([addr], rest)) => iax(
                    addr,
                    rsplit(rest, "' (").map_or(rest, |(p, _)| p),
                    WrongPassword,
                ),
                Err(f) => f,
            },
        )
        .or(
            match cut(c, "Host ", [" denied access to register peer '"], "'") {
                Ok(([addr], peer)) => iax(addr, peer, Acl),
                Err(f) => f,
            },
        )
        .or(
            match cut(
                c,
                "Host ",
                [" did not provide proper plaintext password for '"],
                "'",
            ) {
                Ok(([addr], peer)) => iax(addr, peer, WrongPassword),
                Err(f) => f,
            },
        );
    }
    // `No registration for peer '<name>' (from <addr>)` and `Peer '<name>' is not dynamic (from
    // <addr>)` (fail2ban 4) print the name the sender sent, raw and newlines included, before
    // the address: a name `x' (from 10.9.9.9)` + newline ends the line with any address, and
    // nothing left on it tells. They are not read.
    if c.starts_with("No registration for peer '")
        || (c.starts_with("Peer '") && c.contains("' is not dynamic (from "))
    {
        return found.or(Found::Ambiguous(
            "chan_iax2 prints the sender's peer name raw before the address".into(),
        ));
    }
    found
}

/// `'name'` → `name`; an unquoted name as it is.
fn unquoted(p: &str) -> &str {
    p.strip_prefix('\'')
        .and_then(|p| p.strip_suffix('\''))
        .unwrap_or(p)
}

/// fail2ban 3. manager.c `<addr> failed to authenticate as '<user>'`, `<addr> tried to
/// authenticate with nonexistent user '<user>'`.
fn manager_failure(c: &str) -> Found {
    let manager = |addr: &str, user: &str, reason| {
        let source = take!(address(addr));
        failed(source, Some(user), reason, None)
    };
    let wrong = match cut(c, "", [" failed to authenticate as '"], "'") {
        Ok(([addr], user)) => manager(addr, user, AuthFailure::WrongPassword),
        Err(f) => f,
    };
    let unknown = match cut(
        c,
        "",
        [" tried to authenticate with nonexistent user '"],
        "'",
    ) {
        Ok(([addr], user)) => manager(addr, user, AuthFailure::UnknownAccount),
        Err(f) => f,
    };
    wrong.or(unknown)
}

/// fail2ban 5. `hacking attempt detected '<addr>'` (a chan_sip NOTICE).
fn hacking(c: &str) -> Found {
    let ([], addr) = take!(cut(c, "hacking attempt detected '", [], "'"));
    let source = take!(address(addr));
    failed(
        source,
        None,
        AuthFailure::Other,
        Some(SignallingProtocol::Chansip),
    )
}

/// fail2ban 7. FreePBX's dialplan, at extension `s`: `"Rejecting unknown SIP connection from
/// <addr>[:port]"`. The address is `${CHANNEL(recvip)}`, the packet's source.
fn rejecting_unknown(c: &str) -> Found {
    let ([], addr) = take!(cut(c, "\"Rejecting unknown SIP connection from ", [], "\""));
    let source = take!(address(addr));
    failed(source, None, AuthFailure::Other, None)
}

/// fail2ban 8. res_pjsip `Request '<method>' from '<From>' failed for '<addr>' (callid:
/// <Call-ID>) - <reason>[ after N tries in M ms]` (older versions: `Request from '<From>' …`).
/// The Call-ID is the sender's, raw, and follows the address: a reading from the end cannot
/// skip it, only the uniqueness of every delimiter can.
fn request_failed(c: &str) -> Found {
    use AuthFailure::*;
    const DELIMS: [&str; 3] = ["' failed for '", "' (callid: ", ") - "];
    let ([from, addr, _callid], reason) = if c.starts_with("Request from '") {
        take!(cut(c, "Request from '", DELIMS, ""))
    } else {
        let ([_method, from, addr, callid], reason) = take!(cut(
            c,
            "Request '",
            ["' from '", DELIMS[0], DELIMS[1], DELIMS[2]],
            ""
        ));
        ([from, addr, callid], reason)
    };
    // `… after 5 tries in 2.500 ms` when the same source failed repeatedly.
    let reason = match reason.split_once(" after ") {
        Some((r, tries)) if tries.ends_with(" ms") && tries.contains(" tries in ") => r,
        _ => reason,
    };
    let reason = match reason {
        "No matching endpoint found" => UnknownAccount,
        "Not match Endpoint ACL" | "Not match Endpoint Contact ACL" => Acl,
        "Failed to authenticate" => WrongPassword,
        // An internal error while authenticating.
        "Error to authenticate" => Other,
        _ => return Found::No,
    };
    // pjsip prints a display name inside quotes, raw: an ESC in it, and an `m` in the Call-ID,
    // make Asterisk's logger delete everything between, its own `' failed for '<addr>' (callid: `
    // included, and the sender's Call-ID then reads as the rest of the line, with any address.
    // Asterisk's opening quote stays: a From with a quote may be a sender's line. (The same
    // holds for a quoted URI parameter.)
    if from.contains('"') {
        return Found::Ambiguous(
            "the From header is quoted: the line may be a sender's, rewritten by Asterisk's escape-sequence stripping".into(),
        );
    }
    let source = take!(address(addr));
    failed(
        source,
        uri_user(from),
        reason,
        Some(SignallingProtocol::Pjsip),
    )
}

/// The keys res_security_log writes between the event's name and the address, in this order,
/// for every event this parser reads (main/security_events.c).
const BEFORE_REMOTE: [&str; 7] = [
    "EventTV",
    "Severity",
    "Service",
    "EventVersion",
    "AccountID",
    "SessionID",
    "LocalAddress",
];

/// The keys that may follow the address: each event's own required keys, then the optional
/// ones.
const AFTER_REMOTE: [&str; 14] = [
    "Challenge",
    "Response",
    "ExpectedResponse",
    "UsingPassword",
    "Module",
    "SessionTV",
    "ACLName",
    "ReceivedChallenge",
    "ReceivedHash",
    "RequestType",
    "RequestParams",
    "AuthMethod",
    "ExpectedAddress",
    "AttemptedTransport",
];

/// fail2ban 6. res_security_log: `SecurityEvent="<name>",EventTV="…",Severity="…",Service="…",
/// EventVersion="…",AccountID="…",SessionID="…",LocalAddress="…",
/// RemoteAddress="IPV4/UDP/<addr>/<port>"[,Key="value"…]`.
///
/// res_security_log writes values as they are, quotes and commas included, and several are
/// the sender's: the account (res_pjsip: the From user), the session (the Call-ID), the
/// challenge and response. And Asterisk's logger deletes from an ESC byte to the next `m`,
/// which `RemoteAddress` itself holds: an ESC in the Call-ID deletes the real address's key,
/// and a `,RemoteAddress="…"` in the response is left as the only one. So the line is read
/// only when it is exactly what Asterisk writes: `,Key="value"` pairs with no quote inside a
/// value, the keys before the address exactly those above, each key after it a known one,
/// and none twice. Anything else is ambiguous.
fn security_line(c: &str) -> Found {
    let rest = get!(c.strip_prefix("SecurityEvent=\""));
    let q = get!(cfind(rest, b'"'));
    let class = classify_security(&rest[..q]);
    // An event this parser does not read is skipped; if it is not exactly Asterisk's, what
    // follows it may be a sender's all the same (the framer opens a window after it).
    let ambiguous = |why: &str| match class {
        Some(_) => Found::Ambiguous(format!("security line: {why}")),
        None => Found::Incomplete,
    };
    let mut pairs = [("", ""); 24];
    let mut n = 0;
    let mut t = &rest[q + 1..];
    while !t.is_empty() {
        let Some(r) = t.strip_prefix(',') else {
            return ambiguous("a value holds a quote, or the line is not Key=\"value\" pairs");
        };
        let k = r.bytes().take_while(u8::is_ascii_alphanumeric).count();
        let Some(v) = r[k..].strip_prefix("=\"") else {
            return ambiguous("not Key=\"value\" pairs");
        };
        let Some(end) = cfind(v, b'"') else {
            return ambiguous("a value is not closed");
        };
        if n == pairs.len() {
            return ambiguous("more keys than any security event has");
        }
        pairs[n] = (&r[..k], &v[..end]);
        n += 1;
        t = &v[end + 1..];
    }
    let pairs = &pairs[..n];
    let keys_before = pairs.iter().take(BEFORE_REMOTE.len()).map(|(k, _)| *k);
    if n <= BEFORE_REMOTE.len()
        || !keys_before.eq(BEFORE_REMOTE)
        || pairs[BEFORE_REMOTE.len()].0 != "RemoteAddress"
    {
        return ambiguous("the keys before RemoteAddress are not Asterisk's");
    }
    let after = &pairs[BEFORE_REMOTE.len() + 1..];
    for (i, (k, _)) in after.iter().enumerate() {
        if !AFTER_REMOTE.contains(k) || after[..i].iter().any(|(seen, _)| seen == k) {
            return ambiguous("an unknown or repeated key after RemoteAddress");
        }
    }
    let Some(class) = class else {
        return Found::Skip;
    };
    let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let fields = SecurityFields {
        class,
        remote: pairs[BEFORE_REMOTE.len()].1,
        account: get("AccountID"),
        service: get("Service"),
        user_agent: None,
        using_password: get("UsingPassword"),
    };
    match security_event(&fields) {
        Ok(Some(ev)) => Found::Event(ev, get("EventTV").and_then(parse_event_time)),
        Ok(None) => Found::Skip,
        Err(m) => Found::Bad(m),
    }
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

/// `h.rsplit_once(pat)`.
fn rsplit<'a>(h: &'a str, pat: &str) -> Option<(&'a str, &'a str)> {
    rfind(h, pat).map(|i| (&h[..i], &h[i + pat.len()..]))
}

fn registered(source: IpAddr, account: &str, expires: u32) -> Found {
    Found::Event(
        SecurityEvent::Registered {
            source,
            account: account.to_owned(),
            expires,
        },
        None,
    )
}

/// chan_sip `Registered SIP '<peer>' at <addr>` (only logged when the address changed). The
/// peer is one the configuration names, and the line does not say for how long.
fn registered_sip(v: &str) -> Found {
    let ([peer], addr) = take!(cut(v, "Registered SIP '", ["' at "], ""));
    let source = take!(address(addr));
    registered(source, peer, DEFAULT_EXPIRES)
}

/// chan_iax2 `Registered IAX2 '<peer>' (AUTHENTICATED|UNAUTHENTICATED) at <addr>`.
fn registered_iax(v: &str) -> Found {
    let ([peer, state], addr) = take!(cut(v, "Registered IAX2 '", ["' (", ") at "], ""));
    if state != "AUTHENTICATED" {
        return Found::Skip;
    }
    let source = take!(address(addr));
    registered(source, peer, DEFAULT_EXPIRES)
}

/// res_pjsip_registrar: `Added contact '<uri>' to AOR '<aor>' with expiration of N seconds`,
/// (debug) `Refreshed contact '<uri>' on AOR '<aor>' with new expiration of N seconds`,
/// `Removed contact '<uri>' from AOR '<aor>' due to <reason>`. The URI is the device's
/// Contact (the packet's source with `rewrite_contact=yes`); the AOR is configured.
fn contact(v: &str) -> Found {
    if v.starts_with("Added contact '") {
        let ([uri, aor], n) = take!(cut(
            v,
            "Added contact '",
            ["' to AOR '", "' with expiration of "],
            " seconds"
        ));
        return contact_registered(uri, aor, n);
    }
    if v.starts_with("Refreshed contact '") {
        let ([uri, aor], n) = take!(cut(
            v,
            "Refreshed contact '",
            ["' on AOR '", "' with new expiration of "],
            " seconds"
        ));
        return contact_registered(uri, aor, n);
    }
    let ([uri, aor], _reason) = take!(cut(
        v,
        "Removed contact '",
        ["' from AOR '", "' due to "],
        ""
    ));
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

fn contact_registered(uri: &str, aor: &str, n: &str) -> Found {
    let Ok(expires) = n.parse::<u32>() else {
        return Found::Bad(format!("expiration {:?} is not a number", clip(n)));
    };
    // A contact named by DNS (WebRTC's `*.invalid`) gives no address to act on.
    let Some(source) = uri_host(uri) else {
        return Found::Skip;
    };
    registered(source, aor, expires)
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
            Some(("chan_sip.c", "Registration from"))
        );
        assert_eq!(
            content("chan_sip.c:23417 in handle_request_register: Registration"),
            Some(("chan_sip.c", "Registration"))
        );
        assert_eq!(
            content("manager.c: 1.2.3.4 failed"),
            Some(("manager.c", "1.2.3.4 failed"))
        );
        // Without a line number, the function slot is not skipped: a user name cannot start
        // a message of its own.
        assert_eq!(
            content("manager.c: 1.2.3.4 failed to authenticate as 'x: 10.0.0.1 failed to authenticate as 'y'"),
            Some(("manager.c", "1.2.3.4 failed to authenticate as 'x: 10.0.0.1 failed to authenticate as 'y'"))
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
    fn syslog_lines_need_asterisks_tag() {
        let msg = "NOTICE[1] chan_sip.c: hacking attempt detected '203.0.113.9'";
        for ok in [
            format!("Nov 20 10:15:32 pbx asterisk[7]: {msg}"),
            format!("Nov 20 10:15:32 pbx asterisk: {msg}"),
            format!("pbx asterisk[7]: {msg}"),
        ] {
            assert!(parse_line(&ok, 2026).unwrap().is_some(), "{ok}");
        }
        for not in [
            format!("Nov 20 10:15:32 pbx sshd[7]: {msg}"),
            format!("Nov 20 10:15:32 pbx asterisk-fake[7]: {msg}"),
            format!("Nov 20 10:15:32 pbx asterisk[x]: {msg}"),
            format!("pbx logger: {msg}"),
            format!(" [2026-11-20 10:15:32] {msg}"),
            format!("\t{msg}"),
        ] {
            assert_eq!(parse_line(&not, 2026), Ok(None), "{not}");
        }
    }

    #[test]
    fn cut_reads_a_template_once_or_not_at_all() {
        let d = ["' failed for '", "' - "];
        assert_eq!(
            cut("R '<sip:1@x>' failed for '1.2.3.4' - Wrong", "R '", d, "").ok(),
            Some((["<sip:1@x>", "1.2.3.4"], "Wrong"))
        );
        assert!(matches!(
            cut(
                "R 'a' failed for 'b' - c' failed for '1.2.3.4' - Wrong",
                "R '",
                d,
                ""
            ),
            Err(Found::Ambiguous(_))
        ));
        // The start of the message without its end: it went on past a newline.
        assert!(matches!(
            cut("R 'a' - b' failed for 'c", "R '", d, ""),
            Err(Found::Incomplete)
        ));
        assert!(matches!(
            cut("X 'a' failed for 'b' - c", "R '", d, ""),
            Err(Found::No)
        ));
        // The prefix's own quote is not the start of a delimiter: no reading puts one there.
        assert!(matches!(
            cut("R ' failed for '1.2.3.4' - W", "R '", d, ""),
            Err(Found::Incomplete)
        ));
    }
}
