//! The fleet: bans shared between PBXes through CrowdSec's Local API (docs/fleet.md).
//!
//! This module is the protocol's pure half: reading a decision stream (`GET
//! /v1/decisions/stream`) into decisions a firewall can enforce, keeping the fleet's table of
//! active decisions across full and delta pulls, and turning it into the disjoint elements an
//! interval set with timeouts holds. The HTTP, the clock and the kernel are the runtime's.
//!
//! Everything here reads text a remote server wrote: a decision acts only when its type is
//! `ban`, its scope `Ip` or `Range`, its value an address or prefix of a remote unicast source
//! and its duration positive; anything else is counted and skipped, never guessed at.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::net::{Family, Prefix};

/// Longest ban taken from the fleet: a year, as [`crate::MAX_TIMEOUT_SECS`] for every timeout.
pub const MAX_FLEET_SECS: u64 = crate::MAX_TIMEOUT_SECS;

/// Longest origin or scenario text kept (longer ones are cut on a character boundary).
const MAX_LABEL: usize = 128;

/// One decision a firewall enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDecision {
    /// The LAPI's id of the decision.
    pub id: i64,
    /// The banned source: an address (`Ip`) or a network (`Range`).
    pub prefix: Prefix,
    /// Seconds left, as the LAPI computed them when it answered (at least 1).
    pub remaining: u64,
    /// Who decided: `crowdsec`, `cscli`, `CAPI`, `pbxfw`, ….
    pub origin: Arc<str>,
    /// Why: the scenario's name (`pbxfw/sip-auth-bf`, `crowdsecurity/ssh-bf`, …).
    pub scenario: Arc<str>,
}

/// What a pull said, in the firewall's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pull {
    /// Decisions to enforce.
    pub new: Vec<FleetDecision>,
    /// Decisions deleted or expired: their source and id (a deletion ends that decision, not
    /// a later one on the same source).
    pub deleted: Vec<(Prefix, i64)>,
    /// Decisions read and not taken, by why.
    pub skipped: Skipped,
}

/// Decisions a pull carried that a firewall does not enforce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Another type than `ban` (`captcha`, `throttle`, …).
    pub not_ban: u64,
    /// Another scope than `Ip` and `Range` (`Country`, `AS`, `Username`, …).
    pub other_scope: u64,
    /// A value that is not an address or prefix, or not a remote unicast source.
    pub bad_value: u64,
    /// A duration that does not parse, or has run out.
    pub expired: u64,
    /// Beyond the table's bound.
    pub over_limit: u64,
}

impl Skipped {
    /// How many in all.
    pub fn total(&self) -> u64 {
        self.not_ban + self.other_scope + self.bad_value + self.expired + self.over_limit
    }
}

/// Why a stream could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Not the JSON the LAPI sends.
    #[error("the decision stream is not valid: {0}")]
    Json(String),
}

/// A decision as the LAPI writes it; unknown fields (`uuid`, `simulated`, …) are ignored.
#[derive(Deserialize)]
struct WireDecision<'a> {
    #[serde(default)]
    id: i64,
    #[serde(default, borrow)]
    origin: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    scenario: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    scope: std::borrow::Cow<'a, str>,
    #[serde(default, rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    value: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    duration: std::borrow::Cow<'a, str>,
}

/// Read a decision stream body. At most `max` decisions are kept from `new` (the rest are
/// counted as over the limit), and each decision is checked as it is read, so memory is the
/// body and what is kept, never one object per entry of the body: a server cannot make the
/// daemon grow without bound.
pub fn parse_stream(body: &str, max: usize) -> Result<Pull, StreamError> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    struct Cx {
        pull: Pull,
        labels: Labels,
        max: usize,
        /// Deletions kept: as many as decisions (a deletion is one of them).
        max_deleted: usize,
    }
    /// `new` or `deleted`: a list (or `null`) read one decision at a time.
    struct List<'c> {
        cx: &'c mut Cx,
        deleted: bool,
    }
    impl<'de> DeserializeSeed<'de> for List<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_option(self)
        }
    }
    impl<'de> Visitor<'de> for List<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of decisions or null")
        }
        fn visit_none<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(d) = seq.next_element::<WireDecision>()? {
                self.cx.take(&d, self.deleted);
            }
            Ok(())
        }
    }
    impl Cx {
        fn take(&mut self, d: &WireDecision, deleted: bool) {
            if deleted {
                // A deletion's type and scope are checked as a decision's: a deleted
                // `captcha` on an address must not lift its `ban`.
                let mut ignored = Skipped::default();
                if self.pull.deleted.len() < self.max_deleted {
                    if let Some(prefix) = enforceable(d, &mut ignored) {
                        self.pull.deleted.push((prefix, d.id));
                    }
                }
                return;
            }
            let Some(prefix) = enforceable(d, &mut self.pull.skipped) else {
                return;
            };
            let remaining = match parse_go_duration(&d.duration) {
                Some(ms) if ms >= 1000 => (ms / 1000).min(i128::from(MAX_FLEET_SECS)) as u64,
                _ => {
                    self.pull.skipped.expired += 1;
                    return;
                }
            };
            if self.pull.new.len() >= self.max {
                self.pull.skipped.over_limit += 1;
                return;
            }
            self.pull.new.push(FleetDecision {
                id: d.id,
                prefix,
                remaining,
                origin: self.labels.get(&d.origin),
                scenario: self.labels.get(&d.scenario),
            });
        }
    }
    struct Stream<'c>(&'c mut Cx);
    impl<'de> Visitor<'de> for Stream<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object with \"new\" and \"deleted\"")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match &*key {
                    "new" => map.next_value_seed(List {
                        cx: self.0,
                        deleted: false,
                    })?,
                    "deleted" => map.next_value_seed(List {
                        cx: self.0,
                        deleted: true,
                    })?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }
    let mut cx = Cx {
        pull: Pull::default(),
        labels: Labels::default(),
        max,
        max_deleted: max.max(1024),
    };
    let mut de = serde_json::Deserializer::from_str(body);
    de.deserialize_map(Stream(&mut cx))
        .and_then(|()| de.end())
        .map_err(|e| StreamError::Json(e.to_string()))?;
    Ok(cx.pull)
}

/// The prefix of a `ban` on an `Ip` or `Range`, or why not.
fn enforceable(d: &WireDecision, skipped: &mut Skipped) -> Option<Prefix> {
    if d.kind != "ban" {
        skipped.not_ban += 1;
        return None;
    }
    if !matches!(&*d.scope, "Ip" | "Range") {
        skipped.other_scope += 1;
        return None;
    }
    // An `Ip` whose value is a CIDR (`cscli decisions import` writes every row of a list as
    // `Ip`, networks included) is the network it names: the LAPI itself matches it so (its
    // live mode finds 100.80.0.5 in an `Ip` decision on 100.80.0.0/24). A CIDR with host bits
    // set is ambiguous (an address, or its network?) and acts against nobody.
    let prefix = match Prefix::parse_lenient(d.value.trim()) {
        Ok((p, false)) => p,
        _ => {
            skipped.bad_value += 1;
            return None;
        }
    };
    // Wider than the fleet takes, or overlapping what is no remote unicast source (loopback,
    // link-local, multicast, reserved, the IPv4-mapped space): acting on it would cut the
    // host off from everyone, from itself or from its link.
    if prefix.prefix_len() < min_len(prefix.family())
        || crate::responsive::special_addr(&prefix.addr()).is_some()
        || special_blocks(prefix.family())
            .iter()
            .any(|b| b.covers(&prefix) || prefix.covers(b))
    {
        skipped.bad_value += 1;
        return None;
    }
    Some(prefix)
}

/// The widest decision taken from the fleet: a /16 of IPv4 (65,536 addresses), a /32 of IPv6
/// (a provider's allocation). A wider one (`0.0.0.0/0` at the extreme) is a mistake or an
/// attack on the fleet.
fn min_len(f: Family) -> u8 {
    match f {
        Family::Ipv4 => 16,
        Family::Ipv6 => 32,
    }
}

/// Blocks no fleet decision may overlap: "this network", loopback, link-local, multicast and
/// the reserved 240.0.0.0/4 (with broadcast); IPv6 loopback and unspecified (in ::/96), the
/// IPv4-mapped space, link-local and multicast.
fn special_blocks(f: Family) -> &'static [Prefix] {
    use std::sync::OnceLock;
    static V4: OnceLock<Vec<Prefix>> = OnceLock::new();
    static V6: OnceLock<Vec<Prefix>> = OnceLock::new();
    let parse = |list: &[&str]| list.iter().map(|p| p.parse().expect("a prefix")).collect();
    match f {
        Family::Ipv4 => {
            V4.get_or_init(|| parse(&["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"]))
        }
        Family::Ipv6 => {
            V6.get_or_init(|| parse(&["::/96", "::ffff:0:0/96", "fe80::/10", "ff00::/8"]))
        }
    }
}

/// Most IPv4 addresses the fleet's ranges may cover together: 2^24, a sixteenth of a /4 and
/// 0.4 % of the address space. Beyond it a range is refused (a fleet of hostile decisions,
/// each a /16, cannot add up to the internet).
pub const MAX_FLEET_V4_COVERAGE: u64 = 1 << 24;

/// Origin and scenario strings shared between decisions (a 100k pull has a handful).
#[derive(Default)]
struct Labels(HashMap<String, Arc<str>>);

impl Labels {
    fn get(&mut self, s: &str) -> Arc<str> {
        let mut end = s.len().min(MAX_LABEL);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let s = &s[..end];
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        // Bounded: a hostile server naming every decision differently costs one string each,
        // as the decisions themselves do.
        self.0.insert(s.to_string(), a.clone());
        a
    }
}

/// A Go `time.Duration` string (`3h59m53.253583734s`, `-37.181407ms`, `4h`) in milliseconds,
/// or `None` when it is not one. Units: `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`.
pub fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() || rest.len() > 64 {
        return None;
    }
    // Nanoseconds, in 128 bits: 64 characters of digits cannot overflow it unnoticed.
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_end);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => {
                let e = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(e)
            }
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let (unit_ns, after): (i128, &str) = if let Some(a) = after.strip_prefix("ns") {
            (1, a)
        } else if let Some(a) = after
            .strip_prefix("us")
            .or_else(|| after.strip_prefix("µs"))
            .or_else(|| after.strip_prefix("μs"))
        {
            (1_000, a)
        } else if let Some(a) = after.strip_prefix("ms") {
            (1_000_000, a)
        } else if let Some(a) = after.strip_prefix('s') {
            (1_000_000_000, a)
        } else if let Some(a) = after.strip_prefix('m') {
            (60_000_000_000, a)
        } else if let Some(a) = after.strip_prefix('h') {
            (3_600_000_000_000, a)
        } else {
            return None;
        };
        let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = int.checked_mul(unit_ns)?;
        let mut scale = unit_ns;
        for d in frac.bytes().take(18) {
            scale /= 10;
            part = part.checked_add(i128::from(d - b'0') * scale)?;
        }
        total = total.checked_add(part)?;
        rest = after;
    }
    let ms = total / 1_000_000;
    Some(if neg { -ms } else { ms })
}

/// One active fleet decision in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEntry {
    /// The LAPI's id of the decision that holds (the longest on the source).
    pub id: i64,
    /// When it ends (seconds since the epoch).
    pub expires: u64,
    /// Who decided.
    pub origin: Arc<str>,
    /// Why.
    pub scenario: Arc<str>,
}

/// The fleet's active decisions, as the last pulls left them.
#[derive(Debug, Clone, Default)]
pub struct FleetTable {
    entries: HashMap<Prefix, FleetEntry>,
    /// Most decisions held (0: no bound).
    max: usize,
}

/// What one pull changed in the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableChange {
    /// Decisions new to the table (or longer than the one it held).
    pub added: usize,
    /// Decisions the pull deleted (or a full pull no longer carried).
    pub removed: usize,
    /// New decisions not taken: the table holds its bound already.
    pub over_limit: usize,
}

impl FleetTable {
    /// A table holding at most `max` decisions: deltas cannot add up beyond it.
    pub fn with_max(max: usize) -> FleetTable {
        FleetTable {
            entries: HashMap::new(),
            max,
        }
    }

    /// Take a pull received at `now`. A full pull (`startup=true`) carries every active
    /// decision: the table becomes exactly it. A delta applies its deletions first, then its
    /// new decisions, so that a source deleted and banned again in the same delta (the stream
    /// repeats the last two seconds' deletions) stays banned. Of two decisions on the same
    /// source the longer holds, as the LAPI's own deduplication keeps.
    pub fn apply(&mut self, pull: &Pull, full: bool, now: u64) -> TableChange {
        let mut change = TableChange::default();
        if full {
            // In place: a second table of 100,000 decisions would double the memory a resync
            // needs. The pull's decision replaces the table's (the LAPI's longest may now be
            // shorter: the longer one was deleted); of two in the pull the longer holds.
            let mut seen: std::collections::HashSet<Prefix> =
                std::collections::HashSet::with_capacity(pull.new.len());
            for d in &pull.new {
                let entry = FleetEntry {
                    id: d.id,
                    expires: now.saturating_add(d.remaining),
                    origin: d.origin.clone(),
                    scenario: d.scenario.clone(),
                };
                // The bound counts what the pull keeps: what it does not carry goes below.
                let full_now = self.max > 0 && seen.len() >= self.max && !seen.contains(&d.prefix);
                let again = !seen.insert(d.prefix);
                match self.entries.get_mut(&d.prefix) {
                    Some(e) if again && e.expires >= entry.expires => {}
                    Some(e) => {
                        if e.expires < entry.expires {
                            change.added += 1;
                        }
                        *e = entry;
                    }
                    None if full_now => {
                        seen.remove(&d.prefix);
                        change.over_limit += 1;
                    }
                    None => {
                        self.entries.insert(d.prefix, entry);
                        change.added += 1;
                    }
                }
            }
            let before = self.entries.len();
            self.entries.retain(|p, _| seen.contains(p));
            change.removed = before - self.entries.len();
            return change;
        }
        for (p, id) in &pull.deleted {
            // The decision deleted, not a later one on the same source (the stream repeats a
            // deletion for two seconds after a new ban may have replaced it).
            if self.entries.get(p).is_some_and(|e| e.id == *id) {
                self.entries.remove(p);
                change.removed += 1;
            }
        }
        for d in &pull.new {
            if self.insert(d, now) {
                change.added += 1;
            } else if !self.entries.contains_key(&d.prefix) {
                change.over_limit += 1;
            }
        }
        change
    }

    /// Hold at most `max` decisions from now on (those held beyond it stay until they end).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Take `prefix`'s decision out (an administrator lifted it here); its end, if it held one.
    pub fn remove(&mut self, prefix: &Prefix) -> Option<u64> {
        self.entries.remove(prefix).map(|e| e.expires)
    }

    /// Put back a decision as a state file kept it (a daemon's restart, before its first pull).
    pub fn restore(&mut self, prefix: Prefix, entry: FleetEntry) {
        if self.max == 0 || self.entries.len() < self.max {
            self.entries.insert(prefix, entry);
        }
    }

    fn insert(&mut self, d: &FleetDecision, now: u64) -> bool {
        let entry = FleetEntry {
            id: d.id,
            expires: now.saturating_add(d.remaining),
            origin: d.origin.clone(),
            scenario: d.scenario.clone(),
        };
        match self.entries.get(&d.prefix) {
            Some(e) if e.expires >= entry.expires => false,
            Some(_) => {
                self.entries.insert(d.prefix, entry);
                true
            }
            None if self.max > 0 && self.entries.len() >= self.max => false,
            None => {
                self.entries.insert(d.prefix, entry);
                true
            }
        }
    }

    /// Forget the decisions that ended by `now`.
    pub fn expire(&mut self, now: u64) {
        self.entries.retain(|_, e| e.expires > now);
    }

    /// How many decisions the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The decisions, in prefix order.
    pub fn entries(&self) -> Vec<(Prefix, &FleetEntry)> {
        let mut v: Vec<(Prefix, &FleetEntry)> = self.entries.iter().map(|(p, e)| (*p, e)).collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// What the kernel's interval sets should hold at `now`: disjoint prefixes with their end,
    /// none that `guard` refuses (a protected source: a trunk, a trusted network, an
    /// administrator, a registered phone, the host itself), and the refused decisions with why.
    ///
    /// Of nested decisions the covering one is written, with its own end; one it covers that
    /// outlives it is written when it ends (at the next reconcile, a poll interval later).
    /// A decision overlapping a protected source is refused whole: the fleet never bans a
    /// network around a protected address.
    pub fn desired(
        &self,
        now: u64,
        guard: impl Fn(&Prefix) -> Option<String>,
    ) -> (Vec<(Prefix, u64)>, Vec<Refused>) {
        let mut live: Vec<(Prefix, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(p, e)| (*p, e.expires))
            .collect();
        // By family, start, then shorter (covering) first.
        live.sort_by_key(|(p, _)| (p.family(), p.start(), p.prefix_len()));
        let mut out: Vec<(Prefix, u64)> = Vec::with_capacity(live.len());
        let mut refused = Vec::new();
        let mut covered_v4: u64 = 0;
        for (p, expires) in live {
            if let Some((last, _)) = out.last() {
                if last.family() == p.family() && last.covers(&p) {
                    continue;
                }
            }
            let mut why = guard(&p);
            if why.is_none() && p.family() == Family::Ipv4 && !p.is_host() {
                let size = 1u64 << (32 - u32::from(p.prefix_len()));
                if covered_v4 + size > MAX_FLEET_V4_COVERAGE {
                    why = Some(format!(
                        "the fleet's IPv4 ranges already cover {covered_v4} addresses (at most {MAX_FLEET_V4_COVERAGE})"
                    ));
                } else {
                    covered_v4 += size;
                }
            }
            if let Some(why) = why {
                let e = &self.entries[&p];
                refused.push(Refused {
                    prefix: p,
                    why,
                    origin: e.origin.clone(),
                    scenario: e.scenario.clone(),
                });
                continue;
            }
            out.push((p, expires));
        }
        (out, refused)
    }
}

/// A fleet decision not enforced, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its source.
    pub prefix: Prefix,
    /// Why it is not enforced.
    pub why: String,
    /// Who decided it.
    pub origin: Arc<str>,
    /// Its scenario.
    pub scenario: Arc<str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("3h59m53.253583734s"), Some(14_393_253));
        assert_eq!(parse_go_duration("-37.181407ms"), Some(-37));
        assert_eq!(parse_go_duration("4h"), Some(14_400_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500));
        assert_eq!(parse_go_duration("250µs"), Some(0));
        assert_eq!(parse_go_duration("0"), Some(0));
        for bad in [
            "",
            "h",
            "4",
            "4x",
            "--4h",
            "4h-",
            ".s",
            "1e3s",
            "99999999999999999999999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    const STREAM: &str = r#"{"deleted":[{"duration":"-37.181407ms","id":3,"origin":"cscli","scenario":"manual","scope":"Ip","type":"ban","value":"192.0.2.44"}],
      "new":[{"duration":"3h59m53.253583734s","id":1,"origin":"pbxfw","scenario":"pbxfw/sip-auth-bf","scope":"Ip","type":"ban","value":"203.0.113.7"},
             {"duration":"23h59m53s","id":2,"origin":"pbxfw","scenario":"pbxfw/sip-auth-bf","scope":"Range","type":"ban","value":"198.51.100.0/24","uuid":"x"},
             {"duration":"4h","id":4,"origin":"crowdsec","scenario":"s","scope":"Ip","type":"captcha","value":"203.0.113.8"},
             {"duration":"4h","id":5,"origin":"crowdsec","scenario":"s","scope":"Country","type":"ban","value":"FR"},
             {"duration":"4h","id":6,"origin":"crowdsec","scenario":"s","scope":"Ip","type":"ban","value":"198.51.100.9/24"},
             {"duration":"4h","id":12,"origin":"cscli-import","scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.0/25"},
             {"duration":"4h","id":7,"origin":"crowdsec","scenario":"s","scope":"Range","type":"ban","value":"0.0.0.0/0"},
             {"duration":"4h","id":8,"origin":"crowdsec","scenario":"s","scope":"Ip","type":"ban","value":"127.0.0.1"},
             {"duration":"-1s","id":9,"origin":"crowdsec","scenario":"s","scope":"Ip","type":"ban","value":"203.0.113.9"},
             {"duration":"4h","id":10,"origin":"crowdsec","scenario":"s","scope":"Ip","type":"ban","value":"not an address"},
             {"duration":"4h","id":11,"origin":"crowdsec","scenario":"s","scope":"ip","type":"ban","value":"203.0.113.10"}]}"#;

    #[test]
    fn a_stream_keeps_only_bans_of_remote_sources() {
        let pull = parse_stream(STREAM, 100).unwrap();
        let got: Vec<String> = pull.new.iter().map(|d| d.prefix.to_string()).collect();
        assert_eq!(got, ["203.0.113.7", "198.51.100.0/24", "192.0.2.0/25"]);
        assert_eq!(pull.new[0].remaining, 14_393);
        assert_eq!(&*pull.new[1].scenario, "pbxfw/sip-auth-bf");
        assert_eq!(pull.deleted, [("192.0.2.44".parse::<Prefix>().unwrap(), 3)]);
        assert_eq!(
            pull.skipped,
            Skipped {
                not_ban: 1,
                other_scope: 2,
                bad_value: 4,
                expired: 1,
                over_limit: 0
            }
        );
        // The bound holds, whatever the server sends.
        let capped = parse_stream(STREAM, 1).unwrap();
        assert_eq!(capped.new.len(), 1);
        assert_eq!(capped.skipped.over_limit, 2);
    }

    #[test]
    fn null_lists_and_garbage() {
        assert_eq!(
            parse_stream(r#"{"deleted":null,"new":null}"#, 10).unwrap(),
            Pull::default()
        );
        assert!(parse_stream("null", 10).is_err());
        assert!(parse_stream("{\"new\": [", 10).is_err());
        assert!(parse_stream("{\"new\": 5}", 10).is_err());
    }

    fn decision(value: &str, secs: u64) -> FleetDecision {
        decision_id(value, secs, 0)
    }

    fn decision_id(value: &str, secs: u64, id: i64) -> FleetDecision {
        FleetDecision {
            id,
            prefix: value.parse().unwrap(),
            remaining: secs,
            origin: "o".into(),
            scenario: "s".into(),
        }
    }

    #[test]
    fn deletes_come_before_adds_and_the_longer_decision_holds() {
        let mut t = FleetTable::default();
        let full = Pull {
            new: vec![
                decision("203.0.113.7", 100),
                decision("198.51.100.0/24", 50),
            ],
            ..Pull::default()
        };
        assert_eq!(t.apply(&full, true, 1000).added, 2);
        // The same source deleted and banned again in one delta stays banned.
        let delta = Pull {
            new: vec![decision_id("203.0.113.7", 10, 6)],
            deleted: vec![
                ("203.0.113.7".parse().unwrap(), 0),
                ("198.51.100.0/24".parse().unwrap(), 0),
            ],
            ..Pull::default()
        };
        let c = t.apply(&delta, false, 1001);
        assert_eq!((c.added, c.removed), (1, 2));
        assert_eq!(t.len(), 1);
        // The stream repeats that deletion in the next delta: the new decision (id 6) holds.
        let again = Pull {
            deleted: vec![("203.0.113.7".parse().unwrap(), 0)],
            ..Pull::default()
        };
        assert_eq!(t.apply(&again, false, 1001).removed, 0);
        assert_eq!(t.len(), 1);
        // A shorter decision on a source does not shorten its ban.
        t.apply(
            &Pull {
                new: vec![decision("203.0.113.7", 500)],
                ..Pull::default()
            },
            false,
            1002,
        );
        t.apply(
            &Pull {
                new: vec![decision("203.0.113.7", 5)],
                ..Pull::default()
            },
            false,
            1003,
        );
        assert_eq!(t.entries()[0].1.expires, 1502);
        // A full pull replaces the table.
        let c = t.apply(
            &Pull {
                new: vec![decision("192.0.2.0/24", 60)],
                ..Pull::default()
            },
            true,
            1004,
        );
        assert_eq!((c.added, c.removed), (1, 1));
        t.expire(1064);
        assert!(t.is_empty());
    }

    #[test]
    fn desired_elements_are_disjoint_and_never_protected() {
        let mut t = FleetTable::default();
        let pull = Pull {
            new: vec![
                decision("198.51.100.0/24", 100),
                decision("198.51.100.7", 1000),
                decision("203.0.113.0/24", 100),
                decision("192.0.2.5", 100),
                decision("2001:db8::/64", 100),
                decision("2001:db8::1", 100),
            ],
            ..Pull::default()
        };
        t.apply(&pull, true, 0);
        let trunk: Prefix = "203.0.113.10".parse().unwrap();
        let (want, refused) = t.desired(0, |p| {
            (p.covers(&trunk) || trunk.covers(p)).then(|| "trunk provider".to_string())
        });
        let got: Vec<String> = want.iter().map(|(p, e)| format!("{p} {e}")).collect();
        assert_eq!(
            got,
            ["192.0.2.5 100", "198.51.100.0/24 100", "2001:db8::/64 100"]
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].prefix.to_string(), "203.0.113.0/24");
        // Once the covering range has ended, the address it covered is written.
        let (want, _) = t.desired(100, |_| None);
        let got: Vec<String> = want.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(got, ["198.51.100.7"]);
    }

    #[test]
    fn the_fleet_cannot_ban_the_internet_or_special_blocks() {
        let stream = |values: &[&str]| {
            let items: Vec<String> = values
                .iter()
                .map(|v| format!(r#"{{"duration":"4h","id":1,"origin":"o","scenario":"s","scope":"Range","type":"ban","value":"{v}"}}"#))
                .collect();
            parse_stream(&format!(r#"{{"new":[{}]}}"#, items.join(",")), 1000).unwrap()
        };
        // Too wide, or overlapping loopback, link-local, multicast, 240/4 and broadcast, the
        // IPv6 specials: none taken. (255.255.255.0/24 would also end the address space,
        // which an interval set cannot express.)
        let bad = stream(&[
            "10.0.0.0/8",
            "169.0.0.0/8",
            "169.254.0.0/16",
            "255.255.255.0/24",
            "240.0.0.0/16",
            "224.1.0.0/16",
            "127.1.0.0/16",
            "0.0.0.0/16",
            "2001::/16",
            "fe80::/64",
            "ff02::/64",
            "::ffff:0:0/112",
            "::/120",
        ]);
        assert!(bad.new.is_empty(), "{:?}", bad.new);
        assert_eq!(bad.skipped.bad_value, 13);
        // Two thousand /16s are accepted one by one, but together they may cover 2^24
        // addresses (256 of them): the rest are refused.
        let many: Vec<String> = (0..2000u32)
            .map(|i| format!("{}.{}.0.0/16", 11 + i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let pull = stream(&refs);
        assert_eq!(pull.new.len(), 1000, "the pull's bound");
        let mut t = FleetTable::with_max(10_000);
        t.apply(&pull, true, 0);
        let (want, refused) = t.desired(0, |_| None);
        assert_eq!(want.len(), 256);
        assert_eq!(refused.len(), 744);
        assert!(refused[0].why.contains("already cover"));
    }

    #[test]
    fn the_table_holds_its_bound_across_deltas() {
        let mut t = FleetTable::with_max(3);
        for i in 0..10 {
            t.apply(
                &Pull {
                    new: vec![decision(&format!("192.0.2.{i}"), 60)],
                    ..Pull::default()
                },
                false,
                0,
            );
        }
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn the_fleet_section_is_validated_with_paths() {
        let ok = crate::Policy::from_toml(
            "[fleet]\nurl = \"https://lapi.example.net:8080/\"\napi_key_file = \"/etc/pbxfw/k\"\npush = true\nmachine_id = \"pbx-a\"\npassword_file = \"/etc/pbxfw/p\"\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        let f = ok.fleet.unwrap();
        assert_eq!(f.url, "https://lapi.example.net:8080");
        assert_eq!(
            (f.pbx.as_str(), f.poll_seconds, f.resync_seconds),
            ("pbx-a", 10, 600)
        );
        let bad = crate::Policy::from_toml(
            "[fleet]\nurl = \"ftp://user:pw@x\"\napi_key_file = \"relative\"\npush = true\npoll_interval = \"0s\"\nunknown = 1\nmax_decisions = 0\n",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        for path in [
            "fleet.url",
            "fleet.api_key_file",
            "fleet.push",
            "fleet.poll_interval",
            "fleet.unknown",
            "fleet.max_decisions",
        ] {
            assert!(bad.contains(path), "{path} in {bad}");
        }
        let no_key = crate::Policy::from_toml("[fleet]\nurl = \"http://10.0.0.1:8080\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(no_key.contains("fleet.api_key_file"), "{no_key}");
        // The key and the password never travel in clear over the internet.
        for url in [
            "http://203.0.113.5:8080",
            "http://lapi.example.net",
            "http://[2001:db8::1]:80",
        ] {
            let e = crate::Policy::from_toml(&format!(
                "[fleet]\nurl = \"{url}\"\napi_key_file = \"/k\"\n"
            ))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
            assert!(e.contains("use https://"), "{url}: {e}");
        }
        for url in [
            "http://127.0.0.1:8080",
            "http://10.1.2.3:8080",
            "http://[fd00::1]:8080",
            "http://100.64.0.9",
        ] {
            crate::Policy::from_toml(&format!(
                "[fleet]\nurl = \"{url}\"\napi_key_file = \"/k\"\n"
            ))
            .unwrap()
            .validate()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }
}
