//! Reading the canonical text form back into a [`Ruleset`].
//!
//! ```text
//! file    = "pbxfw-ir 1" NL { set | map | chain }
//! set     = "set" NAME FAMILY "static" ["hosts"] STRING "{" NL { PREFIX STRING NL } "}" NL
//!         | "set" NAME FAMILY "dynamic" "key=" N "size=" N ["timeout=" N] ["resolves=" H{,H}] STRING NL
//! map     = "map" NAME "src" FAMILY "{" NL { RANGE NAME NL } "}" NL
//!         | "map" NAME "iif" "{" NL { STRING NAME NL } "}" NL
//! chain   = "chain" NAME ["hook=input" "policy=" ("accept"|"drop")] ["zone=" ZONE] "{" NL { rule } "}" NL
//! rule    = { match } ["update" "@"NAME] ["notify" N] [("mark-set" | "mark-clear") HEX] "->" verdict STRING NL
//! match   = "family" FAMILY | "iif" STRING | "proto" PROTO | "dport" PORTS | "sport" PORTS
//!         | "src" "@"NAME | "ct" STATE{,STATE} | "icmp-type" N{,N} | "limit" RATE "burst" N
//!         | "meter" "@"NAME RATE "burst" N | "ct-mark" HEX | "payload" STRING | "data" | "syn"
//! verdict = "accept" | "drop" | "reject" | "return" | "jump" NAME | "goto" NAME
//!         | "dispatch" NAME | "log" STRING
//! ```
//! Strings are double-quoted with `\"`, `\\` and `\u{HEX}` escapes. Blank lines and lines
//! starting with `#` are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use super::{
    BasePolicy, Chain, CtState, DynamicSet, L4Proto, Map, Match, PortSet, Rule, Ruleset, Set,
    SetKind, SrcMap, StaticSet, Verdict,
};
use crate::model::{PortRange, Rate};
use crate::net::{Family, Prefix, Range};

/// Why IR text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseIrError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Largest IR text accepted.
const MAX_IR_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
}

fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' || c == '\t' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated string".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('"') => s.push('"'),
                        Some('\\') => s.push('\\'),
                        Some('u') => {
                            if chars.next() != Some('{') {
                                return Err("bad \\u escape".into());
                            }
                            let mut hex = String::new();
                            loop {
                                match chars.next() {
                                    Some('}') => break,
                                    Some(h) if h.is_ascii_hexdigit() && hex.len() < 6 => {
                                        hex.push(h)
                                    }
                                    _ => return Err("bad \\u escape".into()),
                                }
                            }
                            let ch = u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or("bad \\u escape")?;
                            s.push(ch);
                        }
                        _ => return Err("bad escape".into()),
                    },
                    Some(ch) => s.push(ch),
                }
            }
            toks.push(Tok::Str(s));
        } else {
            let mut w = String::new();
            while let Some(&ch) = chars.peek() {
                if ch == ' ' || ch == '\t' || ch == '"' {
                    break;
                }
                w.push(ch);
                chars.next();
            }
            toks.push(Tok::Word(w));
        }
    }
    Ok(toks)
}

struct Cursor {
    toks: Vec<Tok>,
    pos: usize,
}

impl Cursor {
    fn word(&mut self, what: &str) -> Result<String, String> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w.clone())
            }
            _ => Err(format!("expected {what}")),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        match self.toks.get(self.pos) {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s.clone())
            }
            _ => Err(format!("expected {what} (a quoted string)")),
        }
    }

    fn peek_word(&self) -> Option<&str> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn expect(&mut self, w: &str) -> Result<(), String> {
        match self.word(&format!("'{w}'")) {
            Ok(got) if got == w => Ok(()),
            _ => Err(format!("expected '{w}'")),
        }
    }

    fn done(&self) -> Result<(), String> {
        if self.pos == self.toks.len() {
            Ok(())
        } else {
            Err("unexpected text at end of line".into())
        }
    }
}

fn family(s: &str) -> Result<Family, String> {
    match s {
        "ipv4" => Ok(Family::Ipv4),
        "ipv6" => Ok(Family::Ipv6),
        _ => Err(format!("unknown family {s:?}")),
    }
}

fn name(s: String) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(s)
    } else {
        Err(format!("bad name {s:?}"))
    }
}

fn number<T: FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad {what} {s:?}"))
}

fn kv<'a>(w: &'a str, k: &str) -> Option<&'a str> {
    w.strip_prefix(k).and_then(|r| r.strip_prefix('='))
}

fn ports(s: &str) -> Result<PortSet, String> {
    let ranges = s
        .split(',')
        .map(|p| {
            p.parse::<PortRange>()
                .map_err(|m| format!("port {p:?} {m}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let set = PortSet::new(ranges).ok_or("empty port list")?;
    if set.to_string() != s {
        return Err(format!("port list {s:?} is not in canonical form"));
    }
    Ok(set)
}

/// Parse the canonical text form.
pub fn parse(text: &str) -> Result<super::Ruleset, ParseIrError> {
    if text.len() > MAX_IR_BYTES {
        return Err(ParseIrError {
            line: 0,
            message: "IR text too large".into(),
        });
    }
    let mut p = Parser {
        rs: Ruleset::default(),
        lines: text.lines().enumerate(),
        line_no: 0,
    };
    p.run().map_err(|message| ParseIrError {
        line: p.line_no,
        message,
    })?;
    Ok(p.rs)
}

struct Parser<'a> {
    rs: Ruleset,
    lines: std::iter::Enumerate<std::str::Lines<'a>>,
    line_no: usize,
}

impl Parser<'_> {
    fn next_line(&mut self) -> Option<Result<Cursor, String>> {
        for (i, line) in self.lines.by_ref() {
            self.line_no = i + 1;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            return Some(tokenize(t).map(|toks| Cursor { toks, pos: 0 }));
        }
        None
    }

    /// Lines of a `{ ... }` block up to its closing `}`.
    /// Each with its line number; callers set `line_no` back to it while reading the line.
    fn block(&mut self) -> Result<Vec<(usize, Cursor)>, String> {
        let mut out = Vec::new();
        loop {
            let c = self.next_line().ok_or("missing '}'")??;
            if c.toks == [Tok::Word("}".into())] {
                return Ok(out);
            }
            out.push((self.line_no, c));
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let mut header = self.next_line().ok_or("empty IR text")??;
        header.expect("pbxfw-ir")?;
        header.expect("1")?;
        header.done()?;
        while let Some(c) = self.next_line() {
            let mut c = c?;
            match c.word("'set', 'map' or 'chain'")?.as_str() {
                "set" => self.set(c)?,
                "map" => self.map(c)?,
                "chain" => self.chain(c)?,
                other => return Err(format!("expected 'set', 'map' or 'chain', found {other:?}")),
            }
        }
        Ok(())
    }

    fn set(&mut self, mut c: Cursor) -> Result<(), String> {
        let n = name(c.word("set name")?)?;
        let fam = family(&c.word("family")?)?;
        let kind = c.word("'static' or 'dynamic'")?;
        let set = match kind.as_str() {
            "static" => {
                let hosts = c.peek_word() == Some("hosts");
                if hosts {
                    c.pos += 1;
                }
                let comment = c.string("comment")?;
                c.expect("{")?;
                c.done()?;
                let mut elems = Vec::new();
                let end = self.line_no;
                for (ln, mut l) in self.block()? {
                    self.line_no = ln;
                    let pw = l.word("prefix")?;
                    let p = Prefix::from_str(&pw).map_err(|_| format!("bad prefix {pw:?}"))?;
                    let origin = l.string("origin")?;
                    l.done()?;
                    elems.push((p, origin));
                }
                self.line_no = end;
                let n_in = elems.len();
                let s = if hosts {
                    StaticSet::hosts(fam, elems)
                        .map_err(|p| format!("element {p} is not an {fam} address"))?
                } else {
                    StaticSet::new(fam, elems).map_err(|p| format!("element {p} is not {fam}"))?
                };
                if s.elements().len() != n_in {
                    return Err(format!("set {n} has overlapping elements"));
                }
                Set {
                    family: fam,
                    kind: SetKind::Static(s),
                    comment,
                }
            }
            "dynamic" => {
                let mut d = DynamicSet {
                    key_len: 0,
                    timeout: None,
                    size: 0,
                    resolves: BTreeSet::new(),
                    interval: false,
                };
                let key = c.word("key=")?;
                d.key_len = number(kv(&key, "key").ok_or("expected key=")?, "key length")?;
                let size = c.word("size=")?;
                d.size = number(kv(&size, "size").ok_or("expected size=")?, "size")?;
                if let Some(t) = c.peek_word().and_then(|w| kv(w, "timeout")) {
                    d.timeout = Some(number(t, "timeout")?);
                    c.pos += 1;
                }
                if let Some(r) = c.peek_word().and_then(|w| kv(w, "resolves")) {
                    d.resolves = r.split(',').map(str::to_string).collect();
                    c.pos += 1;
                }
                if c.peek_word() == Some("interval") {
                    d.interval = true;
                    c.pos += 1;
                }
                let comment = c.string("comment")?;
                c.done()?;
                Set {
                    family: fam,
                    kind: SetKind::Dynamic(d),
                    comment,
                }
            }
            other => return Err(format!("unknown set kind {other:?}")),
        };
        if self.rs.sets.insert(n.clone(), set).is_some() {
            return Err(format!("set {n} defined twice"));
        }
        Ok(())
    }

    fn map(&mut self, mut c: Cursor) -> Result<(), String> {
        let n = name(c.word("map name")?)?;
        let map = match c.word("'src' or 'iif'")?.as_str() {
            "src" => {
                let fam = family(&c.word("family")?)?;
                c.expect("{")?;
                c.done()?;
                let mut entries = Vec::new();
                for (ln, mut l) in self.block()? {
                    self.line_no = ln;
                    let rw = l.word("range")?;
                    let r = Range::from_str(&rw).map_err(|_| format!("bad range {rw:?}"))?;
                    let chain = name(l.word("chain")?)?;
                    l.done()?;
                    entries.push((r, chain));
                }
                Map::Src(SrcMap::new(fam, entries)?)
            }
            "iif" => {
                c.expect("{")?;
                c.done()?;
                let mut entries = BTreeMap::new();
                for (ln, mut l) in self.block()? {
                    self.line_no = ln;
                    let iface = l.string("interface")?;
                    let chain = name(l.word("chain")?)?;
                    l.done()?;
                    if entries.insert(iface.clone(), chain).is_some() {
                        return Err(format!("interface {iface:?} mapped twice"));
                    }
                }
                Map::Iif(entries)
            }
            other => return Err(format!("unknown map key {other:?}")),
        };
        if self.rs.maps.insert(n.clone(), map).is_some() {
            return Err(format!("map {n} defined twice"));
        }
        Ok(())
    }

    fn chain(&mut self, mut c: Cursor) -> Result<(), String> {
        let n = name(c.word("chain name")?)?;
        let mut chain = Chain::default();
        if c.peek_word() == Some("hook=input") {
            c.pos += 1;
            chain.hook = Some(match c.word("policy=")?.as_str() {
                "policy=accept" => BasePolicy::Accept,
                "policy=drop" => BasePolicy::Drop,
                other => return Err(format!("bad policy {other:?}")),
            });
        }
        if let Some(z) = c.peek_word().and_then(|w| kv(w, "zone")) {
            chain.zone = Some(z.parse().map_err(|()| format!("unknown zone {z:?}"))?);
            c.pos += 1;
        }
        c.expect("{")?;
        c.done()?;
        for (ln, l) in self.block()? {
            self.line_no = ln;
            chain.rules.push(rule(l)?);
        }
        if self.rs.chains.insert(n.clone(), chain).is_some() {
            return Err(format!("chain {n} defined twice"));
        }
        Ok(())
    }
}

fn hex(w: &str) -> Result<u32, String> {
    w.strip_prefix("0x")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| format!("{w:?} is not a hexadecimal mark (0x...)"))
}

fn set_ref(w: String) -> Result<String, String> {
    name(w.strip_prefix('@').ok_or("expected @set")?.to_string())
}

fn rule(mut c: Cursor) -> Result<Rule, String> {
    let mut matches = Vec::new();
    let mut update = None;
    let mut notify = None;
    let mut mark = None;
    loop {
        let w = c.word("a match or '->'")?;
        let m = match w.as_str() {
            "->" => break,
            "update" => {
                update = Some(set_ref(c.word("@set")?)?);
                continue;
            }
            "notify" => {
                notify = Some(number(&c.word("log group")?, "log group")?);
                continue;
            }
            "mark-set" => {
                mark = Some(super::MarkOp::Set(hex(&c.word("mark bits")?)?));
                continue;
            }
            "mark-clear" => {
                mark = Some(super::MarkOp::Clear(hex(&c.word("mark bits")?)?));
                continue;
            }
            "ct-mark" => Match::CtMark(hex(&c.word("mark bits")?)?),
            "ct-reply" => Match::CtReply,
            "ct-original" => Match::CtOriginal,
            "payload" => Match::Payload(c.string("payload")?.into_bytes()),
            "data" => Match::Data,
            "syn" => Match::Syn,
            "meter" => {
                let set = set_ref(c.word("@set")?)?;
                let rate: Rate = c.word("rate")?.parse()?;
                c.expect("burst")?;
                let burst = number(&c.word("burst")?, "burst")?;
                Match::Meter { set, rate, burst }
            }
            "family" => Match::Family(family(&c.word("family")?)?),
            "iif" => Match::Iif(c.string("interface")?),
            "proto" => Match::Proto(match c.word("protocol")?.as_str() {
                "tcp" => L4Proto::Tcp,
                "udp" => L4Proto::Udp,
                "icmp" => L4Proto::Icmp,
                "icmpv6" => L4Proto::Icmpv6,
                other => return Err(format!("unknown protocol {other:?}")),
            }),
            "dport" => Match::Dport(ports(&c.word("ports")?)?),
            "dport-not" => Match::NotDport(ports(&c.word("ports")?)?),
            "sport" => Match::Sport(ports(&c.word("ports")?)?),
            "src" => {
                let s = c.word("@set")?;
                Match::Src(name(
                    s.strip_prefix('@').ok_or("expected @set")?.to_string(),
                )?)
            }
            "src-not" => {
                let s = c.word("@set")?;
                Match::NotSrc(name(
                    s.strip_prefix('@').ok_or("expected @set")?.to_string(),
                )?)
            }
            "ct" => {
                let states = c
                    .word("states")?
                    .split(',')
                    .map(|s| match s {
                        "new" => Ok(CtState::New),
                        "established" => Ok(CtState::Established),
                        "related" => Ok(CtState::Related),
                        "invalid" => Ok(CtState::Invalid),
                        other => Err(format!("unknown ct state {other:?}")),
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?;
                Match::Ct(states)
            }
            "icmp-type" => Match::IcmpType(
                c.word("types")?
                    .split(',')
                    .map(|t| number::<u8>(t, "icmp type"))
                    .collect::<Result<_, _>>()?,
            ),
            "limit" => {
                let rate: Rate = c.word("rate")?.parse()?;
                c.expect("burst")?;
                let burst = number(&c.word("burst")?, "burst")?;
                Match::Limit { rate, burst }
            }
            other => return Err(format!("unknown match {other:?}")),
        };
        matches.push(m);
    }
    let verdict = match c.word("verdict")?.as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        "return" => Verdict::Return,
        "jump" => Verdict::Jump(name(c.word("chain")?)?),
        "goto" => Verdict::Goto(name(c.word("chain")?)?),
        "dispatch" => Verdict::Dispatch(name(c.word("map")?)?),
        "log" => Verdict::Log(c.string("log prefix")?),
        other => return Err(format!("unknown verdict {other:?}")),
    };
    let origin = c.string("origin")?;
    c.done()?;
    Ok(Rule {
        matches,
        update,
        notify,
        mark,
        verdict,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let e =
            parse("pbxfw-ir 1\nchain input hook=input policy=drop {\n  -> frobnicate \"x\"\n}\n")
                .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("frobnicate"));
        assert_eq!(parse("").unwrap_err().message, "empty IR text");
        assert!(parse("pbxfw-ir 1\nset a ipv4 static \"c\" {\n").is_err());
    }

    #[test]
    fn strings_with_escapes_round_trip() {
        let text = "pbxfw-ir 1\nchain x {\n  iif \"a\\\"b\\\\c\\u{7}\" -> accept \"o\\\"k\"\n}\n";
        let rs = parse(text).unwrap();
        assert_eq!(
            rs.chains["x"].rules[0].matches[0],
            Match::Iif("a\"b\\c\u{7}".into())
        );
        assert_eq!(rs.to_text(), text);
    }
}
