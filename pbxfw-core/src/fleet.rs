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
    /// Sources whose decisions were deleted or expired.
    pub deleted: Vec<Prefix>,
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

/// `{"new": [...], "deleted": [...]}`; LAPI 1.4 writes an empty list as `null`.
#[derive(Deserialize)]
struct WireStream<'a> {
    #[serde(default, borrow)]
    new: Option<Vec<WireDecision<'a>>>,
    #[serde(default, borrow)]
    deleted: Option<Vec<WireDecision<'a>>>,
}

/// Read a decision stream body. At most `max` decisions are kept from `new` (the rest are
/// counted as over the limit): a server cannot make the table grow without bound.
pub fn parse_stream(body: &str, max: usize) -> Result<Pull, StreamError> {
    let wire: WireStream =
        serde_json::from_str(body).map_err(|e| StreamError::Json(e.to_string()))?;
    let mut pull = Pull::default();
    let mut labels = Labels::default();
    for d in wire.new.unwrap_or_default() {
        let Some(prefix) = enforceable(&d, &mut pull.skipped) else {
            continue;
        };
        let remaining = match parse_go_duration(&d.duration) {
            Some(ms) if ms >= 1000 => ((ms / 1000) as u64).min(MAX_FLEET_SECS),
            _ => {
                pull.skipped.expired += 1;
                continue;
            }
        };
        if pull.new.len() >= max {
            pull.skipped.over_limit += 1;
            continue;
        }
        pull.new.push(FleetDecision {
            id: d.id,
            prefix,
            remaining,
            origin: labels.get(&d.origin),
            scenario: labels.get(&d.scenario),
        });
    }
    for d in wire.deleted.unwrap_or_default() {
        // A deletion's type and scope are checked as a decision's: a deleted `captcha` on an
        // address must not lift its `ban`.
        let mut ignored = Skipped::default();
        if let Some(prefix) = enforceable(&d, &mut ignored) {
            pull.deleted.push(prefix);
        }
    }
    Ok(pull)
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
    // Not a remote unicast source (loopback, link-local, multicast, the whole address space):
    // acting on it would cut the host off from itself or from everyone.
    if prefix.prefix_len() < min_len(prefix.family())
        || crate::responsive::special_addr(&prefix.addr()).is_some()
    {
        skipped.bad_value += 1;
        return None;
    }
    Some(prefix)
}

/// The shortest prefix taken from the fleet: a /8 of IPv4, a /16 of IPv6. A `0.0.0.0/0` ban
/// (a mistake or an attack on the fleet) would drop the whole internet.
fn min_len(f: Family) -> u8 {
    match f {
        Family::Ipv4 => 8,
        Family::Ipv6 => 16,
    }
}

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
}

/// What one pull changed in the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableChange {
    /// Decisions new to the table (or longer than the one it held).
    pub added: usize,
    /// Decisions the pull deleted (or a full pull no longer carried).
    pub removed: usize,
}

impl FleetTable {
    /// Take a pull received at `now`. A full pull (`startup=true`) carries every active
    /// decision: the table becomes exactly it. A delta applies its deletions first, then its
    /// new decisions, so that a source deleted and banned again in the same delta (the stream
    /// repeats the last two seconds' deletions) stays banned. Of two decisions on the same
    /// source the longer holds, as the LAPI's own deduplication keeps.
    pub fn apply(&mut self, pull: &Pull, full: bool, now: u64) -> TableChange {
        let mut change = TableChange::default();
        if full {
            let before = std::mem::take(&mut self.entries);
            for d in &pull.new {
                self.insert(d, now);
            }
            change.removed = before
                .keys()
                .filter(|p| !self.entries.contains_key(p))
                .count();
            change.added = self
                .entries
                .iter()
                .filter(|(p, e)| before.get(p).is_none_or(|b| b.expires < e.expires))
                .count();
            return change;
        }
        for p in &pull.deleted {
            if self.entries.remove(p).is_some() {
                change.removed += 1;
            }
        }
        for d in &pull.new {
            if self.insert(d, now) {
                change.added += 1;
            }
        }
        change
    }

    fn insert(&mut self, d: &FleetDecision, now: u64) -> bool {
        let entry = FleetEntry {
            expires: now.saturating_add(d.remaining),
            origin: d.origin.clone(),
            scenario: d.scenario.clone(),
        };
        match self.entries.get(&d.prefix) {
            Some(e) if e.expires >= entry.expires => false,
            _ => {
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
        for (p, expires) in live {
            if let Some(why) = guard(&p) {
                let e = &self.entries[&p];
                refused.push(Refused {
                    prefix: p,
                    why,
                    origin: e.origin.clone(),
                    scenario: e.scenario.clone(),
                });
                continue;
            }
            if let Some((last, _)) = out.last() {
                if last.family() == p.family() && last.covers(&p) {
                    continue;
                }
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
        assert_eq!(pull.deleted, ["192.0.2.44".parse::<Prefix>().unwrap()]);
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
        FleetDecision {
            id: 0,
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
            new: vec![decision("203.0.113.7", 10)],
            deleted: vec![
                "203.0.113.7".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap(),
            ],
            ..Pull::default()
        };
        let c = t.apply(&delta, false, 1001);
        assert_eq!((c.added, c.removed), (1, 2));
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
    }
}
