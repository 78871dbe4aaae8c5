//! DNS for hostnames in a policy (docs/discovery.md, "Hostnames"): the wire format and the refresh schedule, pure.
//!
//! Hostnames in networks, the blacklist and trunks resolve to A and AAAA records; trunk
//! hostnames also to the SRV records a SIP provider publishes (`_sip._udp`, `_sip._tcp`,
//! `_sips._tcp`), whose targets resolve to A and AAAA in turn. Lookups run outside the apply
//! path; their answers become set-element updates, so a slow or failing DNS never holds up
//! start-up or a reload, and a failure keeps the last good answer.
//!
//! The pieces, from the bytes up:
//!
//! - [`encode_query`] and [`parse_response`]: the message format (untrusted input: bounded,
//!   never panics, property-tested);
//! - [`answer_for`]: what a response says about one question (CNAMEs followed, TTLs combined,
//!   NXDOMAIN as an empty answer, SERVFAIL and the like as [`LookupError`]);
//! - [`Tracker`]: which lookups are due when, the last good answer of each, backoff, status and
//!   a [`Snapshot`] for restarts.
//!
//! The transport (sockets, `/etc/resolv.conf`) is `pbxfw_host::dns`.
//!
//! ```
//! use pbxfw_core::{answer_for, encode_query, parse_response, DnsRecordType as RecordType, DnsTracker as Tracker, DnsTrackerConfig as TrackerConfig};
//!
//! let mut tracker = Tracker::new(TrackerConfig::default());
//! tracker.set_names([("pbx.example".to_string(), false)]);
//! let now = 1_700_000_000;
//! for lookup in tracker.due(now) {
//!     let query = encode_query(0x1234, &lookup.name, lookup.rtype)?;
//!     // … sent to a server, whose reply holds one A record (TTL 600) whatever the question:
//!     // the AAAA lookup gets "no such record", kept for the default 300 s.
//!     let mut reply = query.clone();
//!     reply[2] |= 0x80; // a response
//!     reply[7] = 1; // one answer
//!     reply.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 2, 0x58, 0, 4, 192, 0, 2, 10]);
//!     let resp = parse_response(&reply)?;
//!     let result = answer_for(&resp, &lookup.name, lookup.rtype);
//!     tracker.on_result(&lookup, result, now);
//! }
//! assert_eq!(tracker.addresses("pbx.example").len(), 1);
//! assert_eq!(tracker.next_due(), Some(now + 300));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod answer;
mod tracker;
mod wire;

pub use answer::{
    answer_for, rcode_name, Answer, LookupError, DEFAULT_NEGATIVE_TTL, MAX_CNAME_CHAIN,
};
pub use tracker::{
    Lookup, LookupFailure, NameStatus, Snapshot, Tracker, TrackerConfig, SRV_PREFIXES,
};
pub use wire::{
    encode_query, parse_response, validate_name, Question, RData, Record, RecordType, Response,
    WireError, MAX_JUMPS,
};
