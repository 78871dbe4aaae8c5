//! The DNS message format (RFC 1035 §4), as much of it as pbxfw needs: a query for one name and
//! type, and the parts of a response that answer it.
//!
//! A response is untrusted input (anyone on the path can send one). Every read is bounds-checked,
//! a name may take at most [`MAX_JUMPS`] compression pointers and 255 bytes, so no message can
//! make the parser panic, loop or allocate without bound. The additional section is not read at
//! all: glue there is not trusted (it is how cache poisoning works), and nothing here needs it.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Most compression pointers followed while reading one name. A real name needs at most one per
/// label; more means a loop (`a → b → a`) or a message built to burn time.
pub const MAX_JUMPS: usize = 64;
/// Longest name on the wire, length octets and the final zero included (RFC 1035 §2.3.4).
const MAX_WIRE_NAME: usize = 255;
/// Longest name in text form without the trailing dot (255 minus the length octets).
const MAX_NAME: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
const HEADER_LEN: usize = 12;
const CLASS_IN: u16 = 1;
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
/// Flag bits of the header's second word (RFC 1035 §4.1.1).
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;

/// A record type pbxfw asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordType {
    /// An IPv4 address (RFC 1035).
    A,
    /// An IPv6 address (RFC 3596).
    Aaaa,
    /// A service location (RFC 2782): SIP trunks publish their proxies this way (RFC 3263).
    Srv,
}

impl RecordType {
    /// The type's number on the wire.
    pub fn code(self) -> u16 {
        match self {
            RecordType::A => TYPE_A,
            RecordType::Aaaa => TYPE_AAAA,
            RecordType::Srv => TYPE_SRV,
        }
    }
}

impl fmt::Display for RecordType {
    /// Upper case, as zone files and `dig` write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Srv => "SRV",
        })
    }
}

/// Why a name cannot be asked for, or a message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The name to ask for is not a hostname.
    #[error("{name:?} is not a valid DNS name: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The message ends in the middle of something.
    #[error("message ends inside the {what} at byte {at}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        at: usize,
    },
    /// A name follows more than [`MAX_JUMPS`] compression pointers.
    #[error("name at byte {at} follows more than {MAX_JUMPS} compression pointers (a loop?)")]
    TooManyJumps {
        /// Where the name starts.
        at: usize,
    },
    /// A name is longer than 255 bytes on the wire.
    #[error("name at byte {at} is longer than {MAX_WIRE_NAME} bytes")]
    NameTooLong {
        /// Where the name starts.
        at: usize,
    },
    /// A label length byte uses one of the reserved or obsolete label types (RFC 6891 §5).
    #[error("unsupported label type {byte:#04x} at byte {at}")]
    BadLabelType {
        /// The length byte.
        byte: u8,
        /// Where it is.
        at: usize,
    },
    /// A record's data does not have the size or shape its type requires.
    #[error("record data of type {rtype} at byte {at}: {reason}")]
    BadRdata {
        /// The record type's number.
        rtype: u16,
        /// Where the data starts.
        at: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The message is a query, not a response.
    #[error("message is a query, not a response")]
    NotAResponse,
}

/// A question of a response, as the server echoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name, in text form (see [`Record::name`]).
    pub name: String,
    /// The type's number.
    pub qtype: u16,
}

/// A parsed response: the header fields that matter, the questions echoed, the answer section
/// and what the authority section says about negative caching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The query id it answers.
    pub id: u16,
    /// The response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED, …).
    pub rcode: u8,
    /// The TC bit: the reply did not fit in UDP; ask again over TCP. The sections of a truncated
    /// reply are read as far as they go, without an error.
    pub truncated: bool,
    /// The question section.
    pub questions: Vec<Question>,
    /// The answer section.
    pub answers: Vec<Record>,
    /// How long a "no such name" or "no such record" may be cached (RFC 2308 §5): from the first
    /// SOA in the authority section, the smaller of its TTL and its MINIMUM field.
    pub negative_ttl: Option<u32>,
}

/// One resource record of the answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name in text form, without the trailing dot ("." for the root), case as sent.
    /// Bytes other than ASCII letters, digits, `-` and `_` are written `\DDD` (RFC 1035 §5.1),
    /// so a name with odd bytes can never equal a hostname pbxfw asked for.
    pub name: String,
    /// Seconds it may be cached. RFC 2181 §8: a value with the top bit set counts as 0.
    pub ttl: u32,
    /// The data.
    pub data: RData,
}

/// The data of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// An alias: the owner name is another name for this one.
    Cname(String),
    /// A service location.
    Srv {
        /// Lower is tried first.
        priority: u16,
        /// Share among targets of equal priority.
        weight: u16,
        /// The port the service listens on.
        port: u16,
        /// The host that offers it; "." means the service is not offered.
        target: String,
    },
    /// Any other type (its number), or a record of a class other than IN.
    Other(u16),
}

/// Check that `name` can be asked for: labels of 1 to 63 bytes of ASCII letters, digits, `-` and
/// `_` (SRV owner names start with `_`), 253 bytes at most, one trailing dot allowed.
pub fn validate_name(name: &str) -> Result<(), WireError> {
    labels(name).map(|_| ())
}

fn labels(name: &str) -> Result<Vec<&str>, WireError> {
    let bad = |reason| WireError::InvalidName {
        name: name.to_string(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("empty name"));
    }
    if trimmed.len() > MAX_NAME {
        return Err(bad("longer than 253 bytes"));
    }
    let labels: Vec<&str> = trimmed.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(bad("label longer than 63 bytes"));
        }
        if !label.bytes().all(is_name_byte) {
            return Err(bad(
                "only ASCII letters, digits, '-' and '_' may appear in a label",
            ));
        }
    }
    Ok(labels)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A standard query with recursion desired, one question of class IN. The name's case is kept:
/// servers answer case-insensitively and echo the question as sent.
pub fn encode_query(id: u16, name: &str, rtype: RecordType) -> Result<Vec<u8>, WireError> {
    let labels = labels(name)?;
    let mut msg = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    for word in [id, FLAG_RD, 1, 0, 0, 0] {
        msg.extend_from_slice(&word.to_be_bytes());
    }
    for label in labels {
        // `labels` checked the length fits in the 6 bits of a length byte.
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&rtype.code().to_be_bytes());
    msg.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(msg)
}

/// Read a response. Garbage, a query, a cut-off message or a compression loop is an error; a
/// message with the TC bit set is read as far as it goes. Never panics (property-tested).
pub fn parse_response(msg: &[u8]) -> Result<Response, WireError> {
    let mut r = Reader { msg, pos: 0 };
    let id = r.u16("header")?;
    let flags = r.u16("header")?;
    let qdcount = r.u16("header")?;
    let ancount = r.u16("header")?;
    let nscount = r.u16("header")?;
    r.u16("header")?; // ARCOUNT: the additional section is not read.
    if flags & FLAG_QR == 0 {
        return Err(WireError::NotAResponse);
    }
    let mut resp = Response {
        id,
        rcode: (flags & 0x000f) as u8,
        truncated: flags & FLAG_TC != 0,
        questions: Vec::new(),
        answers: Vec::new(),
        negative_ttl: None,
    };
    match read_sections(&mut r, qdcount, ancount, nscount, &mut resp) {
        Ok(()) => Ok(resp),
        // A truncated reply may be cut anywhere; the caller only needs to know to retry on TCP.
        Err(_) if resp.truncated => Ok(resp),
        Err(e) => Err(e),
    }
}

fn read_sections(
    r: &mut Reader<'_>,
    qdcount: u16,
    ancount: u16,
    nscount: u16,
    resp: &mut Response,
) -> Result<(), WireError> {
    // The counts are not trusted for allocation: each entry takes bytes, so a lying count ends
    // in a `Truncated` error after at most `msg.len()` steps.
    for _ in 0..qdcount {
        let name = r.name()?;
        let qtype = r.u16("question")?;
        r.u16("question")?;
        resp.questions.push(Question { name, qtype });
    }
    for _ in 0..ancount {
        resp.answers.push(read_record(r)?);
    }
    for _ in 0..nscount {
        let at = r.pos;
        r.name()?;
        let rtype = r.u16("record header")?;
        let class = r.u16("record header")?;
        let ttl = sane_ttl(r.u32("record header")?);
        let rdata = r.rdata()?;
        if rtype == TYPE_SOA && class == CLASS_IN && resp.negative_ttl.is_none() {
            let mut d = Reader {
                msg: r.msg,
                pos: rdata.start,
            };
            d.name()?; // MNAME
            d.name()?; // RNAME
            for _ in 0..4 {
                d.u32("SOA data")?; // SERIAL, REFRESH, RETRY, EXPIRE
            }
            let minimum = d.u32("SOA data")?;
            if d.pos != rdata.end {
                return Err(WireError::BadRdata {
                    rtype,
                    at,
                    reason: "SOA data length does not match its fields",
                });
            }
            resp.negative_ttl = Some(ttl.min(sane_ttl(minimum)));
        }
    }
    Ok(())
}

fn read_record(r: &mut Reader<'_>) -> Result<Record, WireError> {
    let name = r.name()?;
    let rtype = r.u16("record header")?;
    let class = r.u16("record header")?;
    let ttl = sane_ttl(r.u32("record header")?);
    let rdata = r.rdata()?;
    let bad = |reason| WireError::BadRdata {
        rtype,
        at: rdata.start,
        reason,
    };
    let bytes = &r.msg[rdata.start..rdata.end];
    let data = if class != CLASS_IN {
        RData::Other(rtype)
    } else {
        match rtype {
            TYPE_A => {
                let b: [u8; 4] = bytes.try_into().map_err(|_| bad("A data is not 4 bytes"))?;
                RData::A(Ipv4Addr::from(b))
            }
            TYPE_AAAA => {
                let b: [u8; 16] = bytes
                    .try_into()
                    .map_err(|_| bad("AAAA data is not 16 bytes"))?;
                RData::Aaaa(Ipv6Addr::from(b))
            }
            TYPE_CNAME => {
                let mut d = Reader {
                    msg: r.msg,
                    pos: rdata.start,
                };
                let target = d.name()?;
                if d.pos != rdata.end {
                    return Err(bad("CNAME data length does not match its name"));
                }
                RData::Cname(target)
            }
            TYPE_SRV => {
                let mut d = Reader {
                    msg: r.msg,
                    pos: rdata.start,
                };
                let priority = d.u16("SRV data")?;
                let weight = d.u16("SRV data")?;
                let port = d.u16("SRV data")?;
                let target = d.name()?;
                if d.pos != rdata.end {
                    return Err(bad("SRV data length does not match its fields"));
                }
                RData::Srv {
                    priority,
                    weight,
                    port,
                    target,
                }
            }
            other => RData::Other(other),
        }
    };
    Ok(Record { name, ttl, data })
}

/// RFC 2181 §8: a TTL with the most significant bit set is treated as zero.
fn sane_ttl(ttl: u32) -> u32 {
    if ttl > i32::MAX as u32 {
        0
    } else {
        ttl
    }
}

struct Span {
    start: usize,
    end: usize,
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let at = self.pos;
        let bytes = self
            .msg
            .get(at..at.saturating_add(N))
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or(WireError::Truncated { what, at })?;
        self.pos = at + N;
        Ok(bytes)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.take::<2>(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.take::<4>(what).map(u32::from_be_bytes)
    }

    /// RDLENGTH and the span of the data it announces; the reader moves past the data.
    fn rdata(&mut self) -> Result<Span, WireError> {
        let len = usize::from(self.u16("record header")?);
        let start = self.pos;
        let end = start + len;
        if end > self.msg.len() {
            return Err(WireError::Truncated {
                what: "record data",
                at: start,
            });
        }
        self.pos = end;
        Ok(Span { start, end })
    }

    /// A possibly compressed name (RFC 1035 §4.1.4); the reader moves past the name where it
    /// sits (to just after the first pointer, if any).
    fn name(&mut self) -> Result<String, WireError> {
        let start = self.pos;
        let mut pos = start;
        let mut resume = None;
        let mut jumps = 0;
        let mut wire_len = 1; // the final zero
        let mut text = String::new();
        loop {
            let len = *self.msg.get(pos).ok_or(WireError::Truncated {
                what: "name",
                at: pos,
            })?;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    resume.get_or_insert(pos + 1);
                    break;
                }
                0x00 => {
                    let len = usize::from(len);
                    wire_len += 1 + len;
                    if wire_len > MAX_WIRE_NAME {
                        return Err(WireError::NameTooLong { at: start });
                    }
                    let label =
                        self.msg
                            .get(pos + 1..pos + 1 + len)
                            .ok_or(WireError::Truncated {
                                what: "name",
                                at: pos,
                            })?;
                    if !text.is_empty() {
                        text.push('.');
                    }
                    push_label(&mut text, label);
                    pos += 1 + len;
                }
                0xc0 => {
                    let low = *self.msg.get(pos + 1).ok_or(WireError::Truncated {
                        what: "name",
                        at: pos,
                    })?;
                    jumps += 1;
                    if jumps > MAX_JUMPS {
                        return Err(WireError::TooManyJumps { at: start });
                    }
                    resume.get_or_insert(pos + 2);
                    pos = (usize::from(len & 0x3f) << 8) | usize::from(low);
                }
                _ => return Err(WireError::BadLabelType { byte: len, at: pos }),
            }
        }
        // `resume` is always set when the loop ends; the fallback only keeps this panic-free.
        self.pos = resume.unwrap_or(self.msg.len());
        if text.is_empty() {
            text.push('.');
        }
        Ok(text)
    }
}

/// Append a label in presentation form: odd bytes as `\DDD`, so they cannot fake a dot or a
/// hostname character.
fn push_label(text: &mut String, label: &[u8]) {
    for &b in label {
        if is_name_byte(b) {
            text.push(char::from(b));
        } else {
            text.push_str(&format!("\\{b:03}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A response header: id, flags, then QD/AN/NS/AR counts.
    fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut m = Vec::new();
        for w in [id, flags, counts[0], counts[1], counts[2], counts[3]] {
            m.extend_from_slice(&w.to_be_bytes());
        }
        m
    }

    fn name(text: &str) -> Vec<u8> {
        let mut m = Vec::new();
        for label in text.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m
    }

    fn record(owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        let mut m = owner.to_vec();
        m.extend_from_slice(&rtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(rdata);
        m
    }

    fn question(qname: &str, qtype: u16) -> Vec<u8> {
        let mut m = name(qname);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m
    }

    #[test]
    fn query_bytes_are_rfc_1035() {
        let q = encode_query(0xabcd, "Sip.Example.com.", RecordType::Aaaa).unwrap();
        let expected: &[u8] = &[
            0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, // header: RD, one question
            3, b'S', b'i', b'p', 7, b'E', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm',
            0, // name, case kept
            0, 28, 0, 1, // AAAA, IN
        ];
        assert_eq!(q, expected);
    }

    #[test]
    fn bad_names_are_refused() {
        let long_label = "a".repeat(64);
        let long_name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(long_name.len(), 254);
        for bad in [
            "",
            ".",
            "a..b",
            "sp ace.com",
            "x.com..",
            &long_label,
            &long_name,
            "ü.de",
        ] {
            assert!(
                matches!(
                    encode_query(1, bad, RecordType::A),
                    Err(WireError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        let ok = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert!(encode_query(1, &ok, RecordType::A).is_ok());
        assert!(encode_query(1, "_sip._udp.trunk-1.example", RecordType::Srv).is_ok());
    }

    #[test]
    fn round_trip_a_answer() {
        let q = encode_query(7, "pbx.example", RecordType::A).unwrap();
        let mut m = q.clone();
        m[2] |= 0x80; // QR
        m[7] = 2; // ANCOUNT
        m.extend(record(&name("pbx.example"), TYPE_A, 60, &[192, 0, 2, 1]));
        m.extend(record(&name("PBX.example"), TYPE_A, 30, &[192, 0, 2, 2]));
        let r = parse_response(&m).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(r.rcode, 0);
        assert!(!r.truncated);
        assert_eq!(
            r.questions,
            [Question {
                name: "pbx.example".into(),
                qtype: TYPE_A
            }]
        );
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.answers[0].data, RData::A(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(r.answers[1].name, "PBX.example");
        assert_eq!(r.answers[1].ttl, 30);
    }

    #[test]
    fn compressed_names() {
        // Hand-written: question "pbx.example" at 12; the answer's owner is a pointer to it
        // (0xc00c), and the CNAME target "sip" + pointer to "example" at 16.
        let m: &[u8] = &[
            0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, // header
            3, b'p', b'b', b'x', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 5, 0,
            1, // question at 12, "example" at 16
            0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 100, 0,
            6, // owner pointer, CNAME, ttl 100, rdlen 6
            3, b's', b'i', b'p', 0xc0, 16, // "sip" + pointer to "example"
        ];
        let r = parse_response(m).unwrap();
        assert_eq!(r.answers[0].name, "pbx.example");
        assert_eq!(r.answers[0].data, RData::Cname("sip.example".into()));
    }

    #[test]
    fn srv_record() {
        let mut m = header(1, 0x8180, [1, 1, 0, 0]);
        m.extend(question("_sip._udp.trunk.example", TYPE_SRV));
        let mut rdata = vec![0, 10, 0, 5, 0x13, 0xc4];
        rdata.extend(name("sip1.trunk.example"));
        m.extend(record(&[0xc0, 12], TYPE_SRV, 300, &rdata));
        let r = parse_response(&m).unwrap();
        assert_eq!(r.answers[0].name, "_sip._udp.trunk.example");
        assert_eq!(
            r.answers[0].data,
            RData::Srv {
                priority: 10,
                weight: 5,
                port: 5060,
                target: "sip1.trunk.example".into()
            }
        );
    }

    #[test]
    fn nxdomain_with_soa() {
        let mut m = header(2, 0x8183, [1, 0, 1, 0]);
        m.extend(question("nope.example", TYPE_A));
        let mut soa = name("ns.example");
        soa.extend(name("hostmaster.example"));
        for v in [2024u32, 7200, 900, 1209600, 120] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        m.extend(record(&name("example"), TYPE_SOA, 600, &soa));
        let r = parse_response(&m).unwrap();
        assert_eq!(r.rcode, 3);
        assert!(r.answers.is_empty());
        assert_eq!(r.negative_ttl, Some(120));
        // The SOA's own TTL bounds it too (RFC 2308 §5).
        let at = m.len() - soa.len() - 6;
        m[at..at + 4].copy_from_slice(&60u32.to_be_bytes());
        assert_eq!(parse_response(&m).unwrap().negative_ttl, Some(60));
    }

    #[test]
    fn truncated_and_garbage_messages_are_errors() {
        let mut m = header(3, 0x8180, [1, 1, 0, 0]);
        m.extend(question("pbx.example", TYPE_A));
        m.extend(record(&[0xc0, 12], TYPE_A, 60, &[192, 0, 2, 1]));
        assert!(parse_response(&m).is_ok());
        for cut in 0..m.len() {
            assert!(parse_response(&m[..cut]).is_err(), "cut at {cut}");
        }
        // A query is not a response.
        let q = encode_query(3, "pbx.example", RecordType::A).unwrap();
        assert_eq!(parse_response(&q), Err(WireError::NotAResponse));
        // A record of type A with 5 bytes of data.
        let mut bad = header(3, 0x8180, [0, 1, 0, 0]);
        bad.extend(record(&name("x"), TYPE_A, 1, &[1, 2, 3, 4, 5]));
        assert!(matches!(
            parse_response(&bad),
            Err(WireError::BadRdata { .. })
        ));
        // Label types 0x40 and 0x80 are not supported.
        let mut ext = header(3, 0x8180, [1, 0, 0, 0]);
        ext.extend([0x41, 0, 0, 1, 0, 1]);
        assert!(matches!(
            parse_response(&ext),
            Err(WireError::BadLabelType { byte: 0x41, .. })
        ));
    }

    #[test]
    fn tc_bit_reads_what_is_there() {
        let mut m = header(4, 0x8380, [1, 2, 0, 0]);
        m.extend(question("pbx.example", TYPE_A));
        m.extend(record(&[0xc0, 12], TYPE_A, 60, &[192, 0, 2, 1]));
        m.extend([0xc0, 12, 0]); // the second answer is cut off
        let r = parse_response(&m).unwrap();
        assert!(r.truncated);
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn compression_loops_are_errors() {
        // The question name points at itself.
        let mut m = header(5, 0x8180, [1, 0, 0, 0]);
        m.extend([0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_response(&m), Err(WireError::TooManyJumps { at: 12 }));
        // Two labels pointing at each other: stopped by the name length limit or the jumps.
        let mut m = header(5, 0x8180, [1, 0, 0, 0]);
        m.extend([1, b'a', 0xc0, 16, 1, b'b', 0xc0, 12]);
        assert!(parse_response(&m).is_err());
        // A pointer beyond the end.
        let mut m = header(5, 0x8180, [1, 0, 0, 0]);
        m.extend([0xc0, 200, 0, 1, 0, 1]);
        assert!(matches!(
            parse_response(&m),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn odd_bytes_are_escaped() {
        let mut m = header(6, 0x8180, [0, 1, 0, 0]);
        m.extend(record(
            &[5, b'a', b'.', b'b', b' ', 0xff, 0],
            TYPE_A,
            1,
            &[1, 2, 3, 4],
        ));
        assert_eq!(
            parse_response(&m).unwrap().answers[0].name,
            "a\\046b\\032\\255"
        );
    }

    #[test]
    fn top_bit_ttl_is_zero() {
        let mut m = header(6, 0x8180, [0, 1, 0, 0]);
        m.extend(record(&name("x"), TYPE_A, 0x8000_0000, &[1, 2, 3, 4]));
        assert_eq!(parse_response(&m).unwrap().answers[0].ttl, 0);
    }

    #[test]
    fn record_type_forms() {
        assert_eq!(RecordType::Aaaa.to_string(), "AAAA");
        assert_eq!(
            serde_json::to_string(&RecordType::Aaaa).unwrap(),
            "\"aaaa\""
        );
        assert_eq!(
            serde_json::from_str::<RecordType>("\"srv\"").unwrap(),
            RecordType::Srv
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_response(&bytes);
        }

        #[test]
        fn parse_never_panics_on_plausible_headers(
            counts in proptest::array::uniform4(0u16..4),
            body in proptest::collection::vec(prop_oneof![any::<u8>(), Just(0xc0), Just(12), Just(0)], 0..300),
        ) {
            let mut m = header(1, 0x8180, counts);
            m.extend(body);
            let _ = parse_response(&m);
        }

        #[test]
        fn encoded_queries_parse_back(id: u16, labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,20}", 1..6)) {
            let qname = labels.join(".");
            let mut q = encode_query(id, &qname, RecordType::Srv).unwrap();
            q[2] |= 0x80;
            let r = parse_response(&q).unwrap();
            prop_assert_eq!(r.id, id);
            prop_assert_eq!(&r.questions[0].name, &qname);
            prop_assert_eq!(r.questions[0].qtype, TYPE_SRV);
        }
    }
}
