//! What a response says about one question: the addresses or SRV targets, and for how long.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::wire::{RData, RecordType, Response};

/// How long "no such name" or "no such record" holds when the server sends no SOA to take it
/// from (RFC 2308 §5 leaves the choice to the resolver).
pub const DEFAULT_NEGATIVE_TTL: u32 = 300;

/// Most CNAMEs followed from the name asked for. Real chains are two or three long; more is a
/// loop or a misconfiguration, and following it would only burn time.
pub const MAX_CNAME_CHAIN: usize = 8;

/// The answer to one lookup.
///
/// An empty answer is an answer: the name's zone says it has no such records (NXDOMAIN, or
/// NOERROR without data), and a firewall must stop trusting addresses that DNS took away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// A or AAAA lookups: the addresses, sorted and without duplicates.
    pub addresses: Vec<IpAddr>,
    /// SRV lookups: every target and its port, whatever its priority (a trunk fails over to its
    /// lower-priority proxies without asking the firewall first). Sorted, without duplicates;
    /// the target "." ("no service", RFC 2782) is left out. Targets are lower case.
    pub srv_targets: Vec<(String, u16)>,
    /// Seconds it may be kept: the smallest TTL along the CNAME chain and of the records used.
    pub ttl: u32,
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum LookupError {
    /// No server answered in time.
    #[error("no reply before the timeout")]
    Timeout,
    /// A server answered with an error code other than NXDOMAIN (SERVFAIL, REFUSED, …).
    #[error("the server answered {}", rcode_name(*.0))]
    Server(u8),
    /// The reply could not be read or makes no sense.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// The query could not be sent or the reply received.
    #[error("network error: {0}")]
    Io(String),
    /// There is no server to ask.
    #[error("no nameservers configured")]
    NoServers,
}

/// The mnemonic of a response code (RFC 1035 §4.1.1, RFC 6895 §2.3), with its number.
pub fn rcode_name(rcode: u8) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => return format!("rcode {rcode}"),
    };
    format!("{name} (rcode {rcode})")
}

/// What `resp` says about `name` and `rtype`.
///
/// CNAMEs in the answer section are followed from `name` (names compare case-insensitively, at
/// most [`MAX_CNAME_CHAIN`] of them); records for other names are ignored, so a server cannot
/// slip in addresses for a name nobody asked about. NXDOMAIN, or NOERROR without a matching
/// record, is an empty [`Answer`] kept for the SOA's negative TTL (or
/// [`DEFAULT_NEGATIVE_TTL`]); any other response code is [`LookupError::Server`].
///
/// ```
/// use pbxfw_core::{answer_for, parse_response, DnsRecordType as RecordType};
///
/// // NXDOMAIN, no records: an authoritative "no such name".
/// let reply = [0x12, 0x34, 0x81, 0x83, 0, 0, 0, 0, 0, 0, 0, 0];
/// let answer = answer_for(&parse_response(&reply)?, "gone.example", RecordType::A)?;
/// assert!(answer.addresses.is_empty());
/// assert_eq!(answer.ttl, 300);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn answer_for(resp: &Response, name: &str, rtype: RecordType) -> Result<Answer, LookupError> {
    let negative_ttl = resp.negative_ttl.unwrap_or(DEFAULT_NEGATIVE_TTL);
    match resp.rcode {
        0 => {}
        3 => {
            return Ok(Answer {
                ttl: negative_ttl,
                ..Answer::default()
            })
        }
        rcode => return Err(LookupError::Server(rcode)),
    }
    let mut current = trim_dot(name);
    let mut ttl = u32::MAX;
    for _ in 0..=MAX_CNAME_CHAIN {
        let mut answer = Answer::default();
        let mut found = false;
        let mut alias = None;
        for rec in resp
            .answers
            .iter()
            .filter(|r| trim_dot(&r.name).eq_ignore_ascii_case(current))
        {
            match (&rec.data, rtype) {
                (RData::A(a), RecordType::A) => answer.addresses.push(IpAddr::V4(*a)),
                (RData::Aaaa(a), RecordType::Aaaa) => answer.addresses.push(IpAddr::V6(*a)),
                (RData::Srv { port, target, .. }, RecordType::Srv) => {
                    if target != "." {
                        let target = trim_dot(target).to_ascii_lowercase();
                        answer.srv_targets.push((target, *port));
                    }
                }
                (RData::Cname(target), _) => {
                    alias.get_or_insert((target.as_str(), rec.ttl));
                    continue;
                }
                _ => continue,
            }
            found = true;
            ttl = ttl.min(rec.ttl);
        }
        if found {
            answer.addresses.sort();
            answer.addresses.dedup();
            answer.srv_targets.sort();
            answer.srv_targets.dedup();
            answer.ttl = ttl;
            return Ok(answer);
        }
        match alias {
            Some((target, alias_ttl)) => {
                ttl = ttl.min(alias_ttl);
                current = trim_dot(target);
            }
            None => {
                return Ok(Answer {
                    ttl: ttl.min(negative_ttl),
                    ..Answer::default()
                })
            }
        }
    }
    Err(LookupError::Malformed(format!(
        "CNAME chain from {name} is longer than {MAX_CNAME_CHAIN}"
    )))
}

/// A name without its trailing dot; the root stays ".".
fn trim_dot(name: &str) -> &str {
    match name.strip_suffix('.') {
        Some("") | None => name,
        Some(trimmed) => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::Record;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn rec(name: &str, ttl: u32, data: RData) -> Record {
        Record {
            name: name.into(),
            ttl,
            data,
        }
    }

    fn resp(rcode: u8, answers: Vec<Record>, negative_ttl: Option<u32>) -> Response {
        Response {
            id: 1,
            rcode,
            truncated: false,
            questions: vec![],
            answers,
            negative_ttl,
        }
    }

    fn v4(last: u8) -> RData {
        RData::A(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn addresses_of_the_name_only() {
        let r = resp(
            0,
            vec![
                rec("pbx.example", 60, v4(2)),
                rec("PBX.Example.", 30, v4(1)),
                rec("pbx.example", 60, v4(1)),
                rec("other.example", 5, v4(9)),
                rec("pbx.example", 5, RData::Aaaa(Ipv6Addr::LOCALHOST)),
            ],
            None,
        );
        let a = answer_for(&r, "pbx.example", RecordType::A).unwrap();
        assert_eq!(
            a.addresses,
            ["192.0.2.1", "192.0.2.2"].map(|s| s.parse::<IpAddr>().unwrap())
        );
        assert_eq!(a.ttl, 30);
        let aaaa = answer_for(&r, "PBX.EXAMPLE.", RecordType::Aaaa).unwrap();
        assert_eq!(aaaa.addresses, [IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        assert_eq!(aaaa.ttl, 5);
    }

    #[test]
    fn cname_chain_takes_the_smallest_ttl() {
        let r = resp(
            0,
            vec![
                rec("sip.example", 300, RData::Cname("edge.cdn.example".into())),
                rec(
                    "Edge.CDN.example",
                    20,
                    RData::Cname("pop1.cdn.example".into()),
                ),
                rec("pop1.cdn.example", 100, v4(7)),
            ],
            None,
        );
        let a = answer_for(&r, "sip.example", RecordType::A).unwrap();
        assert_eq!(a.addresses, [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))]);
        assert_eq!(a.ttl, 20);
        // A chain that ends without data is a negative answer, bounded by the chain's TTLs.
        let a = answer_for(&r, "sip.example", RecordType::Aaaa).unwrap();
        assert!(a.addresses.is_empty());
        assert_eq!(a.ttl, 20);
    }

    #[test]
    fn cname_loops_and_long_chains_are_malformed() {
        let r = resp(
            0,
            vec![
                rec("a.example", 60, RData::Cname("b.example".into())),
                rec("b.example", 60, RData::Cname("a.example".into())),
            ],
            None,
        );
        assert!(matches!(
            answer_for(&r, "a.example", RecordType::A),
            Err(LookupError::Malformed(_))
        ));
        let chain: Vec<Record> = (0..=MAX_CNAME_CHAIN)
            .map(|i| {
                rec(
                    &format!("n{i}.example"),
                    60,
                    RData::Cname(format!("n{}.example", i + 1)),
                )
            })
            .chain([rec(&format!("n{}.example", MAX_CNAME_CHAIN + 1), 60, v4(1))])
            .collect();
        let r = resp(0, chain, None);
        assert!(answer_for(&r, "n0.example", RecordType::A).is_err());
        assert!(answer_for(&r, "n1.example", RecordType::A).is_ok());
    }

    #[test]
    fn srv_targets() {
        let srv = |priority, port, target: &str| RData::Srv {
            priority,
            weight: 0,
            port,
            target: target.into(),
        };
        let r = resp(
            0,
            vec![
                rec(
                    "_sip._udp.trunk.example",
                    60,
                    srv(20, 5060, "SIP2.trunk.example"),
                ),
                rec(
                    "_sip._udp.trunk.example",
                    90,
                    srv(10, 5060, "sip1.trunk.example."),
                ),
                rec(
                    "_sip._udp.trunk.example",
                    90,
                    srv(10, 5060, "sip1.trunk.example"),
                ),
            ],
            None,
        );
        let a = answer_for(&r, "_sip._udp.trunk.example", RecordType::Srv).unwrap();
        assert_eq!(
            a.srv_targets,
            [
                ("sip1.trunk.example".to_string(), 5060),
                ("sip2.trunk.example".to_string(), 5060)
            ]
        );
        assert_eq!(a.ttl, 60);
        // "." means the service is not offered: an answer with no targets.
        let none = resp(
            0,
            vec![rec("_sips._tcp.t.example", 40, srv(0, 0, "."))],
            None,
        );
        let a = answer_for(&none, "_sips._tcp.t.example", RecordType::Srv).unwrap();
        assert!(a.srv_targets.is_empty());
        assert_eq!(a.ttl, 40);
    }

    #[test]
    fn negative_answers_and_errors() {
        let nx = answer_for(&resp(3, vec![], Some(120)), "x.example", RecordType::A).unwrap();
        assert_eq!(
            nx,
            Answer {
                ttl: 120,
                ..Answer::default()
            }
        );
        let nodata = answer_for(&resp(0, vec![], None), "x.example", RecordType::A).unwrap();
        assert_eq!(nodata.ttl, DEFAULT_NEGATIVE_TTL);
        assert_eq!(
            answer_for(&resp(2, vec![], None), "x.example", RecordType::A),
            Err(LookupError::Server(2))
        );
        assert_eq!(
            LookupError::Server(5).to_string(),
            "the server answered REFUSED (rcode 5)"
        );
    }

    #[test]
    fn errors_serialise() {
        let e = LookupError::Server(2);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"kind":"server","detail":2}"#);
        assert_eq!(serde_json::from_str::<LookupError>(&json).unwrap(), e);
        assert_eq!(
            serde_json::to_string(&LookupError::Timeout).unwrap(),
            r#"{"kind":"timeout"}"#
        );
    }
}
