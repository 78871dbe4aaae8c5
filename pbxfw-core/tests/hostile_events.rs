//! Log lines written to aim the responsive layer at someone else (docs/events.md, "Trust").
//!
//! Every attack here names a victim that never sent anything: `10.9.9.9` or `2001:db8:bad::9`.
//! Asterisk writes the sender's text raw into its log, so a sender controls parts of a line
//! (quoted fields), can end a line early and start another (newlines in decoded extensions,
//! IAX names, user names), and Asterisk's logger deletes from an ESC byte to the next `m`. Each
//! test writes what Asterisk would write and reads it as the daemon does, through
//! [`log::Framer`]; none may produce an event against the victim.

use std::net::IpAddr;

use pbxfw_core::log::{self, Framer};
use pbxfw_core::{EventError, SecurityEvent, TimedEvent};
use proptest::prelude::*;

const YEAR: i32 = 2026;
const VICTIM4: &str = "10.9.9.9";
const VICTIM6: &str = "2001:db8:bad::9";

fn is_victim(ip: IpAddr) -> bool {
    ip == VICTIM4.parse::<IpAddr>().unwrap() || ip == VICTIM6.parse::<IpAddr>().unwrap()
}

/// Reads `text` (what Asterisk wrote) line by line through a framer.
fn read_all(text: &[u8]) -> Vec<Result<Option<TimedEvent>, EventError>> {
    let mut f = Framer::default();
    text.split_inclusive(|b| *b == b'\n')
        .map(|line| f.read(line, YEAR, 0))
        .collect()
}

fn events(text: &[u8]) -> Vec<SecurityEvent> {
    read_all(text)
        .into_iter()
        .filter_map(|r| r.ok().flatten())
        .map(|t| t.event)
        .collect()
}

fn ambiguous(text: &[u8]) -> usize {
    read_all(text)
        .into_iter()
        .filter(|r| matches!(r, Err(EventError::Ambiguous { .. })))
        .count()
}

/// What Asterisk's file logger makes of one message: the prefix, the message with
/// `term_strip`'s deletion of ESC…`m`, and a line break (eaten too if the deletion reached the
/// end, which glues the next message on).
fn asterisk_writes(prefix: &str, message: &[u8]) -> Vec<u8> {
    let mut line = prefix.as_bytes().to_vec();
    line.extend_from_slice(message);
    line.push(b'\n');
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] == 0x1b {
            while i < line.len() && line[i] != b'm' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

const NOTICE: &str = "[2026-11-20 10:15:32] NOTICE[1638] ";

/// A real failure from 203.0.113.5, which must still be read after each attack.
fn genuine() -> Vec<u8> {
    asterisk_writes(
        &format!("{NOTICE}chan_sip.c: "),
        b"Registration from '<sip:1@pbx>' failed for '203.0.113.5:5060' - Wrong password",
    )
}

fn assert_names_nobody(text: &[u8], what: &str) {
    for e in events(text) {
        assert!(
            !is_victim(e.source()),
            "{what}: {e:?}\n{}",
            String::from_utf8_lossy(text)
        );
    }
}

/// The attack: pjsip writes the Call-ID raw at the end of the line, after the address.
#[test]
fn a_call_id_that_imitates_the_line_names_nobody() {
    for (victim, sender) in [
        ("10.9.9.9:5060", "203.0.113.66:5060"),
        ("[2001:db8:bad::9]:5060", "[2001:db8::66]:5060"),
    ] {
        let message = format!(
            "Request 'REGISTER' from '<sip:991@pbx>' failed for '{sender}' (callid: z' failed for '{victim}' (callid: q) - No matching endpoint found"
        );
        let text = asterisk_writes(
            &format!("{NOTICE}res_pjsip/pjsip_distributor.c: "),
            message.as_bytes(),
        );
        assert_names_nobody(&text, "Call-ID framing");
        assert_eq!(ambiguous(&text), 1);
    }
}

/// A To header long enough that Asterisk's logger cuts the line inside it, after a forged
/// suffix: what remains ends with the sender's text.
#[test]
fn a_line_the_logger_cut_short_names_nobody() {
    let forged = format!("' failed for '{VICTIM4}' - Wrong password");
    let filler = "a".repeat(log::MAX_MESSAGE - "Registration from '".len() - forged.len());
    let message =
        format!("Registration from '{filler}{forged}' failed for '203.0.113.5' - Wrong password");
    // Asterisk keeps the first 8,191 bytes of the message.
    let cut = &message.as_bytes()[..log::MAX_MESSAGE];
    assert!(cut.ends_with(b"Wrong password"));
    let text = asterisk_writes(&format!("{NOTICE}chan_sip.c: "), cut);
    assert_names_nobody(&text, "cut short");
    assert_eq!(ambiguous(&text), 1);
}

/// Lines that look right but come from a module that never writes them, from another
/// program's syslog tag, or start with a space (a folded header inside a dump).
#[test]
fn lines_from_elsewhere_are_not_read() {
    let msg = format!("Registration from '' failed for '{VICTIM4}' - Wrong password");
    for line in [
        format!("{NOTICE}res_pjsip_session.c: {msg}"),
        format!("{NOTICE}Ext. 0123: {msg}"),
        format!("{NOTICE}pbx.c: {msg}"),
        format!("Nov 20 10:15:32 pbx sshd[1]: NOTICE[1] chan_sip.c: {msg}"),
        format!(" {NOTICE}chan_sip.c: {msg}"),
        format!("\t{NOTICE}chan_sip.c: {msg}"),
    ] {
        assert!(events(format!("{line}\n").as_bytes()).is_empty(), "{line}");
    }
}

/// ESC in the To header, `m` in the reason: the logger deletes Asterisk's own address and the
/// sender's forged one remains, followed by a real-looking reason.
#[test]
fn escape_stripping_cannot_complete_a_reason() {
    for (reason, cut_at) in [
        ("No matching peer found", "No m"),
        ("Username/auth name mismatch", "Usernam"),
        ("Device does not match ACL", "Device does not m"),
    ] {
        let to = format!("x' failed for '{VICTIM4}' - {cut_at}\u{1b}");
        let message = format!("Registration from '{to}' failed for '203.0.113.5:5060' - {reason}");
        let text = asterisk_writes(&format!("{NOTICE}chan_sip.c: "), message.as_bytes());
        assert!(String::from_utf8_lossy(&text).contains(&format!("'{VICTIM4}' - {reason}")));
        assert_names_nobody(&text, reason);
    }
    // Without an `m` after the ESC, the deletion eats the line break and the next message is
    // glued on: two copies of the delimiters.
    let to = format!("x' failed for '{VICTIM4}' - Wrong password\u{1b}");
    let message =
        format!("Registration from '{to}' failed for '203.0.113.5:5060' - Wrong password");
    let mut text = asterisk_writes(&format!("{NOTICE}chan_sip.c: "), message.as_bytes());
    assert!(!text.ends_with(b"\n"));
    text.extend(genuine());
    assert_names_nobody(&text, "glued");
}

/// A decoded extension with newlines: chan_sip and res_pjsip_session print it raw, so the
/// sender writes whole lines of its own after the head of a real one.
#[test]
fn newlines_in_an_extension_cannot_write_a_line() {
    let forged = format!("NOTICE[1] manager.c: {VICTIM4} failed to authenticate as ''");
    for (module, head) in [
        (
            "chan_sip.c",
            "Call from '' (203.0.113.5:5060) to extension '",
        ),
        (
            "res_pjsip_session.c",
            " anonymous: Call (UDP:203.0.113.5:5060) to extension '",
        ),
    ] {
        // The extension is at most 79 bytes: newline, forged line, newline.
        let exten = format!("\n{forged}\n");
        assert!(exten.len() <= 79);
        let message =
            format!("{head}{exten}' rejected because extension not found in context 'default'.");
        let mut text = asterisk_writes(&format!("{NOTICE}{module}: "), message.as_bytes());
        // A prefixed line right after, so that the forged one is not the last.
        text.extend(asterisk_writes(
            &format!("{NOTICE}chan_sip.c: "),
            b"Peer '300' is now Reachable.",
        ));
        assert_names_nobody(&text, module);
        assert_eq!(ambiguous(&text), 1, "{module}");
        // The window passes: a real failure 8.5 KiB later is read again.
        let mut later = text.clone();
        for _ in 0..100 {
            later.extend(asterisk_writes(
                "[2026-11-20 10:15:33] VERBOSE[1] pbx.c: ",
                b"Executing [s@macro-dial:1] NoOp(\"PJSIP/300-00000001\", \"\") in new stack",
            ));
        }
        later.extend(genuine());
        assert_eq!(events(&later).len(), 1);
    }
}

/// pjsip debug dumps hold whole SIP messages, bodies included: any line may look like a log
/// line. They are skipped by their byte count; a dump cut short by a NUL byte opens a window.
#[test]
fn sip_message_dumps_are_not_read() {
    let forged = format!("[2026-11-20 10:15:32] NOTICE[1] chan_sip.c: Registration from '' failed for '{VICTIM4}' - Wrong password\r\n");
    let packet = format!(
        "MESSAGE sip:300@pbx SIP/2.0\r\nCall-ID: a\r\nContent-Length: {}\r\n\r\n{forged}",
        forged.len()
    );
    let dump = |count: usize, printed: &str| {
        let mut text = asterisk_writes(
            "[2026-11-20 10:15:31] VERBOSE[7] res_pjsip_logger.c: ",
            format!("<--- Received SIP request ({count} bytes) from UDP:203.0.113.5:5060 --->\n{printed}").as_bytes(),
        );
        text.extend(genuine());
        text
    };
    let exact = dump(packet.len(), &packet);
    assert_names_nobody(&exact, "pjsip dump");
    assert_eq!(events(&exact).len(), 1, "the line after the dump is read");
    // A NUL byte early in the packet: Asterisk prints less than the count says.
    let short = dump(packet.len() + 40, &packet);
    assert_names_nobody(&short, "short pjsip dump");
    // chan_sip's dumps say no length: everything within 64 KiB is suspect.
    let mut chan_sip = asterisk_writes(
        "[2026-11-20 10:15:31] VERBOSE[7] chan_sip.c: ",
        format!(
            "\n<--- SIP read from UDP:203.0.113.5:5060 --->\n{packet}\n<------------->\n{forged}"
        )
        .as_bytes(),
    );
    chan_sip.extend(genuine());
    assert_names_nobody(&chan_sip, "chan_sip dump");
    assert_eq!(events(&chan_sip).len(), 0);
}

/// The framer's state is two counters and survives a restart of the follower.
#[test]
fn the_framers_state_round_trips() {
    let mut f = Framer::default();
    assert!(f.is_clear());
    let _ = f.read(
        b"[2026-11-20 10:15:31] VERBOSE[7] res_pjsip_logger.c: <--- Received SIP request (100 bytes) from UDP:203.0.113.5:5060 --->\n",
        YEAR,
        0,
    );
    assert!(!f.is_clear());
    let back: Framer = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
    assert_eq!(back, f);
}

// --- Any text in any sender's field ----------------------------------------------------------

/// A part of a message as Asterisk formats it.
#[derive(Debug, Clone, Copy)]
enum Part {
    Lit(&'static str),
    /// The sender's address, as this message prints it.
    Addr(AddrForm),
    /// The sender's text: can it hold a newline, and how long can it be.
    Sender {
        newline: bool,
        max: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum AddrForm {
    /// `1.2.3.4:5060` / `[2001:db8::5]:5060`
    Port,
    /// `1.2.3.4` / `2001:db8::5`
    Bare,
    /// `IPV4/UDP/1.2.3.4/5060`
    Security,
    /// `UDP:1.2.3.4:5060`
    Transport,
}

use Part::*;

/// Every message the parser reads (and two it does not, which carry sender newlines), with
/// the sender's fields as Asterisk allows them (docs/events.md, research notes).
const KINDS: &[(&str, &[Part])] = &[
    (
        "chan_sip.c",
        &[
            Lit("Registration from '"),
            Sender { newline: false, max: 1024 },
            Lit("' failed for '"),
            Addr(AddrForm::Port),
            Lit("' - Wrong password"),
        ],
    ),
    (
        "chan_sip.c",
        &[
            Lit("Call from '' ("),
            Addr(AddrForm::Port),
            Lit(") to extension '"),
            Sender { newline: true, max: 79 },
            Lit("' rejected because extension not found in context 'default'."),
        ],
    ),
    (
        "res_pjsip_session.c",
        &[
            Lit(" anonymous: Call ("),
            Addr(AddrForm::Transport),
            Lit(") to extension '"),
            Sender { newline: true, max: 79 },
            Lit("' rejected because extension not found in context 'from-sip-external'."),
        ],
    ),
    (
        "res_pjsip/pjsip_distributor.c",
        &[
            Lit("Request '"),
            Sender { newline: false, max: 32 },
            Lit("' from '"),
            Sender { newline: false, max: 511 },
            Lit("' failed for '"),
            Addr(AddrForm::Port),
            Lit("' (callid: "),
            Sender { newline: false, max: 511 },
            Lit(") - No matching endpoint found"),
        ],
    ),
    (
        "chan_iax2.c",
        &[
            Lit("Host "),
            Addr(AddrForm::Port),
            Lit(" failed to authenticate as "),
            Sender { newline: true, max: 255 },
        ],
    ),
    (
        "chan_iax2.c",
        &[
            Lit("Host "),
            Addr(AddrForm::Bare),
            Lit(" failed MD5 authentication for '2001' (e7df7cd2ca07f4f1 != "),
            Sender { newline: true, max: 255 },
            Lit(")"),
        ],
    ),
    (
        "chan_iax2.c",
        &[
            Lit("No registration for peer '"),
            Sender { newline: true, max: 255 },
            Lit("' (from "),
            Addr(AddrForm::Bare),
            Lit(")"),
        ],
    ),
    (
        "manager.c",
        &[
            Addr(AddrForm::Bare),
            Lit(" failed to authenticate as '"),
            Sender { newline: false, max: 256 },
            Lit("'"),
        ],
    ),
    (
        "res_security_log.c",
        &[
            Lit("SecurityEvent=\"InvalidAccountID\",EventTV=\"2026-11-20T10:19:05.015+0000\",Severity=\"Error\",Service=\"PJSIP\",EventVersion=\"1\",AccountID=\""),
            Sender { newline: true, max: 36 },
            Lit("\",SessionID=\""),
            Sender { newline: false, max: 511 },
            Lit("\",LocalAddress=\"IPV4/UDP/192.0.2.10/5060\",RemoteAddress=\""),
            Addr(AddrForm::Security),
            Lit("\""),
        ],
    ),
    (
        "res_security_log.c",
        &[
            Lit("SecurityEvent=\"ChallengeResponseFailed\",EventTV=\"2026-11-20T10:19:05.015+0000\",Severity=\"Error\",Service=\"PJSIP\",EventVersion=\"1\",AccountID=\"300\",SessionID=\""),
            Sender { newline: false, max: 511 },
            Lit("\",LocalAddress=\"IPV4/UDP/192.0.2.10/5060\",RemoteAddress=\""),
            Addr(AddrForm::Security),
            Lit("\",Challenge=\""),
            Sender { newline: false, max: 63 },
            Lit("\",Response=\""),
            Sender { newline: false, max: 255 },
            Lit("\",ExpectedResponse=\"\""),
        ],
    ),
    (
        "res_pjsip_registrar.c",
        &[
            Lit("Added contact 'sip:300@"),
            Addr(AddrForm::Port),
            Lit(";x=\""),
            Sender { newline: false, max: 200 },
            Lit("\"' to AOR '300' with expiration of 60 seconds"),
        ],
    ),
    (
        "pbx.c",
        &[
            Lit("Executing ["),
            Sender { newline: true, max: 79 },
            Lit("@from-sip-external:1] NoOp(\"PJSIP/anonymous-00000001\", \"\") in new stack"),
        ],
    ),
];

/// What a sender puts into its fields: pieces of every message's own text, forged lines of
/// every kind naming the victim, newlines, quotes.
fn fragment() -> impl Strategy<Value = String> {
    let v4 = VICTIM4;
    let v6 = VICTIM6;
    let pieces: Vec<String> = vec![
        "\n".into(),
        // Asterisk's logger deletes from an ESC to the next `m`.
        "\u{1b}".into(),
        "m".into(),
        "'".into(),
        "\"".into(),
        ")".into(),
        " - ".into(),
        format!("{v4}"),
        format!("{v4}:5060"),
        format!("[{v6}]:5060"),
        format!("' failed for '{v4}:5060"),
        format!("' failed for '[{v6}]:5060' - Wrong password"),
        format!("' (callid: x) - No matching endpoint found"),
        format!("' (from {v4})"),
        format!(") to extension 'x"),
        format!("\",RemoteAddress=\"IPV4/UDP/{v4}/5060"),
        format!("\",RemoteAddress=\"IPV6/UDP/{v6}/5060\""),
        "' rejected because extension not found in context 'default'.".into(),
        format!("NOTICE[1] manager.c: {v4} failed to authenticate as ''"),
        format!("[2026-11-20 10:15:32] NOTICE[1] chan_sip.c: Registration from '' failed for '{v4}' - Wrong password"),
        format!("[2026-11-20 10:15:32] SECURITY[1] res_security_log.c: SecurityEvent=\"InvalidAccountID\",Service=\"PJSIP\",AccountID=\"1\",RemoteAddress=\"IPV4/UDP/{v4}/5060\""),
        format!("[2026-11-20 10:15:32] VERBOSE[1] res_pjsip_registrar.c: Added contact 'sip:1@{v4}:5060' to AOR '300' with expiration of 60 seconds"),
        format!("Nov 20 10:15:32 pbx asterisk[1]: NOTICE[1]: res_pjsip/pjsip_distributor.c:1 f: Request 'R' from '' failed for '{v4}:1' (callid: 1) - No matching endpoint found"),
    ];
    prop_oneof![
        3 => prop::sample::select(pieces),
        1 => "[ -~]{0,12}",
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..5).prop_map(|v| v.concat())
}

fn address(form: AddrForm, v6: bool) -> String {
    let (a, fam) = if v6 {
        ("2001:db8::5", "IPV6")
    } else {
        ("203.0.113.5", "IPV4")
    };
    match (form, v6) {
        (AddrForm::Port, false) => format!("{a}:5060"),
        (AddrForm::Port, true) => format!("[{a}]:5060"),
        (AddrForm::Bare, _) => a.to_string(),
        (AddrForm::Security, _) => format!("{fam}/UDP/{a}/5060"),
        (AddrForm::Transport, false) => format!("UDP:{a}:5060"),
        (AddrForm::Transport, true) => format!("UDP:[{a}]:5060"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// Whatever a sender writes into the fields Asterisk lets it write, no line read from the
    /// log names an address that appears only in the sender's text; the sender, when named,
    /// is the sender.
    #[test]
    fn a_senders_text_never_names_anyone_else(
        kind in 0..KINDS.len(),
        fields in prop::collection::vec(field(), 4),
        v6 in any::<bool>(),
        before in 0usize..3,
    ) {
        let (module, parts) = KINDS[kind];
        let mut message = String::new();
        let mut fields = fields.into_iter();
        for p in parts {
            match *p {
                Lit(s) => message.push_str(s),
                Addr(form) => message.push_str(&address(form, v6)),
                Sender { newline, max } => {
                    let mut f = fields.next().unwrap_or_default();
                    if !newline {
                        f.retain(|c| c != '\n');
                    }
                    let mut end = f.len().min(max);
                    while !f.is_char_boundary(end) {
                        end -= 1;
                    }
                    message.push_str(&f[..end]);
                }
            }
        }
        let mut text = Vec::new();
        for _ in 0..before {
            text.extend(genuine());
        }
        text.extend(asterisk_writes(&format!("{NOTICE}{module}: "), message.as_bytes()));
        text.extend(asterisk_writes(
            "[2026-11-20 10:15:33] VERBOSE[1] pbx.c: ",
            b"Executing [s@macro-dial:1] NoOp(\"PJSIP/300-00000001\", \"\") in new stack",
        ));
        text.extend(genuine());
        let sender: IpAddr = if v6 { "2001:db8::5" } else { "203.0.113.5" }.parse().unwrap();
        for e in events(&text) {
            prop_assert!(!is_victim(e.source()), "{:?}\n{}", e, String::from_utf8_lossy(&text));
            prop_assert!(
                e.source() == sender || e.source() == "203.0.113.5".parse::<IpAddr>().unwrap(),
                "{:?}\n{}", e, String::from_utf8_lossy(&text)
            );
        }
    }
}

// --- AMI ---------------------------------------------------------------------------------------

fn ami_events(stream: &str) -> Vec<Result<TimedEvent, EventError>> {
    let mut r = pbxfw_core::AmiReader::new();
    r.feed(stream.as_bytes());
    std::iter::from_fn(|| r.next_event()).collect()
}

/// AMI escapes no line break: a user name with `\r\n\r\n` ends the real event early and starts
/// one of the sender's. The real event's head then lacks its RemoteAddress, and what follows
/// it within 1 KiB names nobody; a repeated key names nobody either.
#[test]
fn ami_values_cannot_start_an_event_of_their_own() {
    let forged = format!("Event: FailedACL\r\nPrivilege: security,all\r\nService: PJSIP\r\nAccountID: x\r\nRemoteAddress: IPV4/UDP/{VICTIM4}/5060\r\n\r\nX: y");
    let stream = format!(
        "Event: InvalidAccountID\r\nPrivilege: security,all\r\nService: PJSIP\r\nAccountID: a\r\n\r\n{forged}\r\nSessionID: s\r\nLocalAddress: IPV4/UDP/192.0.2.10/5060\r\nRemoteAddress: IPV4/UDP/203.0.113.5/5060\r\n\r\n"
    );
    let got = ami_events(&stream);
    assert!(
        got.iter()
            .all(|r| !matches!(r, Ok(t) if is_victim(t.event.source()))),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|r| matches!(r, Err(EventError::Ambiguous { .. }))),
        "{got:?}"
    );
    // A duplicate key: the first occurrence would be the sender's.
    let dup = format!("Event: InvalidAccountID\r\nPrivilege: security,all\r\nService: PJSIP\r\nAccountID: a\r\nRemoteAddress: IPV4/UDP/{VICTIM4}/5060\r\nSessionID: s\r\nRemoteAddress: IPV4/UDP/203.0.113.5/5060\r\n\r\n");
    assert!(matches!(
        ami_events(&dup)[..],
        [Err(EventError::Ambiguous { .. })]
    ));
    // Beyond the window, events are read again.
    let later = format!(
        "{stream}{}Event: InvalidAccountID\r\nPrivilege: security,all\r\nService: PJSIP\r\nAccountID: b\r\nSessionID: s\r\nLocalAddress: IPV4/UDP/192.0.2.10/5060\r\nRemoteAddress: IPV4/UDP/203.0.113.5/5060\r\n\r\n",
        "Event: Reload\r\nPrivilege: system,all\r\nModule: x\r\n\r\n".repeat(30)
    );
    assert!(matches!(ami_events(&later).last(), Some(Ok(_))));
    // chan_sip's security events are never read: their RemoteAddress follows the Via header.
    let chan_sip = format!("Event: InvalidAccountID\r\nPrivilege: security,all\r\nService: SIP\r\nAccountID: a\r\nSessionID: 0x1\r\nLocalAddress: IPV4/UDP/192.0.2.10/5060\r\nRemoteAddress: IPV4/UDP/{VICTIM4}/5060\r\n\r\n");
    assert!(ami_events(&chan_sip).is_empty());
}

/// The dialplan's `Log()` puts the extension in the file slot: a newline in it cuts the
/// prefix itself short, and the next line is the sender's.
#[test]
fn a_newline_in_a_dialplan_extension_cannot_write_a_line() {
    let forged = format!("NOTICE[1] manager.c: {VICTIM4} failed to authenticate as ''");
    let mut text = format!("[2026-11-20 10:15:32] WARNING[6410][C-00000bac] Ext. 1\n{forged}\n:1 @ from-did: Friendly Scanner from 198.51.100.1\n").into_bytes();
    text.extend(genuine());
    assert_names_nobody(&text, "Log() extension");
    // The forged line, and the real one after it: both within 8.5 KiB of the cut prefix.
    assert_eq!(ambiguous(&text), 2);
}
