//! The shared case format: a policy plus the verdicts packets must get.
//!
//! A case file is a policy file (TOML) with extra `[[expect]]` tables. The reference evaluator,
//! both kernel backends and the bindings all run the same files from `testdata/cases/`:
//!
//! ```toml
//! [interfaces]
//! eth0 = "internet"
//!
//! [[expect]]
//! note = "ssh from the internet is dropped"
//! iif = "eth0"
//! src = "198.51.100.7"
//! proto = "tcp"          # udp | tcp | icmp | icmpv6
//! dport = 22             # udp and tcp
//! # sport = 1234         # optional
//! # icmp_type = 8        # icmp/icmpv6; default echo request
//! # state = "new"        # new | established | related | invalid
//! # reply = true         # established/related: the PBX opened the connection
//! # in_sets = ["ban"]    # dynamic sets holding the source, without family suffix
//! # over = ["clamp"]     # responsive tiers whose rate the source has exceeded
//! # registered = true    # shorthand for in_sets = ["registered"]
//! # ct_mark = 0x100000   # the connection's conntrack mark
//! # payload = "GET / HTTP/1.1\r\n"   # the TCP payload
//! # tcp_syn = false      # a new TCP packet that is not a SYN (conntrack's loose pickup)
//! verdict = "drop"       # accept | drop | reject
//! decided_by = "default" # optional, exact
//! zone = "internet"      # optional
//! ```

use std::net::IpAddr;

use serde::Deserialize;

use pbxfw_core::Family;
use pbxfw_core::Policy;
use pbxfw_core::{eval, Decision, DynamicState, Packet, Proto, Ruleset};

/// One expected outcome.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// What the case shows, for people.
    #[serde(default)]
    pub note: String,
    /// Input interface.
    pub iif: String,
    /// Source address.
    pub src: IpAddr,
    /// `udp`, `tcp`, `icmp` or `icmpv6`.
    pub proto: String,
    /// Destination port.
    pub dport: Option<u16>,
    /// Source port.
    pub sport: Option<u16>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
    /// Connection-tracking state (default `new`).
    pub state: Option<String>,
    /// The packet travels in the reply direction (the PBX opened the connection).
    #[serde(default)]
    pub reply: bool,
    /// Dynamic sets (without the `4`/`6` suffix) that hold the source.
    #[serde(default)]
    pub in_sets: Vec<String>,
    /// Responsive tiers (`clamp`, `flood`, `daily`) whose rate the source has exceeded.
    #[serde(default)]
    pub over: Vec<String>,
    /// Shorthand for `in_sets = ["registered"]`.
    #[serde(default)]
    pub registered: bool,
    /// The connection's conntrack mark.
    pub ct_mark: Option<u32>,
    /// The transport payload.
    pub payload: Option<String>,
    /// Whether a TCP packet is a SYN (default: a new one is).
    pub tcp_syn: Option<bool>,
    /// `accept`, `drop` or `reject`.
    pub verdict: String,
    /// The exact `decided_by`, when given.
    pub decided_by: Option<String>,
    /// The zone, when given.
    pub zone: Option<String>,
}

/// A policy with its expectations.
#[derive(Debug, Clone)]
pub struct CaseFile {
    /// The policy part.
    pub policy: Policy,
    /// The `[[expect]]` tables.
    pub expects: Vec<Expect>,
}

impl CaseFile {
    /// Split a case file into its policy and its expectations.
    pub fn parse(text: &str) -> Result<CaseFile, String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let expects = match table.remove("expect") {
            Some(v) => v
                .try_into::<Vec<Expect>>()
                .map_err(|e| format!("expect: {e}"))?,
            None => Vec::new(),
        };
        let doc = serde_json::to_value(table).map_err(|e| e.to_string())?;
        Ok(CaseFile {
            policy: Policy::from_value(doc),
            expects,
        })
    }
}

impl Expect {
    /// The packet this expectation is about.
    pub fn packet(&self) -> Result<Packet, String> {
        let proto: Proto = self.proto.parse()?;
        let mut p = Packet::new(&self.iif, self.src, proto, self.dport);
        p.sport = self.sport;
        p.icmp_type = proto
            .echo_request()
            .map(|echo| self.icmp_type.unwrap_or(echo));
        p.ct = self.state.as_deref().unwrap_or("new").parse()?;
        p.ct_mark = self.ct_mark.unwrap_or(0);
        p.ct_reply = self.reply;
        p.payload = self.payload.as_ref().map(|s| s.as_bytes().to_vec());
        p.tcp_syn = self.tcp_syn;
        Ok(p)
    }

    /// The dynamic set contents this expectation assumes.
    pub fn state(&self, rs: &Ruleset) -> Result<DynamicState, String> {
        let mut st = DynamicState::default();
        let suffix = Family::of(&self.src).suffix();
        let mut sets = self.in_sets.clone();
        if self.registered {
            sets.push("registered".into());
        }
        for s in sets {
            let name = format!("{s}{suffix}");
            match rs.sets.get(&name).map(|s| &s.kind) {
                None => return Err(format!("set {name} does not exist in the compiled ruleset")),
                Some(pbxfw_core::SetKind::Static(_)) => {
                    return Err(format!(
                        "set {name} is static: put the address in the policy"
                    ))
                }
                Some(pbxfw_core::SetKind::Dynamic(_)) => {}
            }
            st.insert(rs, &name, self.src);
        }
        for tier in &self.over {
            let name = pbxfw_core::names::meter(tier, Family::of(&self.src));
            if !rs.sets.contains_key(&name) {
                return Err(format!(
                    "meter {name} does not exist in the compiled ruleset"
                ));
            }
            st.meters_over.insert(name);
        }
        Ok(st)
    }

    /// Compare a decision with this expectation; `Err` describes the difference.
    pub fn check(&self, d: &Decision) -> Result<(), String> {
        let mut diffs = Vec::new();
        if d.verdict.to_string() != self.verdict {
            diffs.push(format!("verdict {} (expected {})", d.verdict, self.verdict));
        }
        if let Some(by) = &self.decided_by {
            if &d.decided_by != by {
                diffs.push(format!("decided_by {:?} (expected {by:?})", d.decided_by));
            }
        }
        if let Some(z) = &self.zone {
            let got = d.zone.map_or("none".to_string(), |z| z.to_string());
            if &got != z {
                diffs.push(format!("zone {got} (expected {z})"));
            }
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(diffs.join(", "))
        }
    }

    /// Evaluate this expectation against a ruleset with the reference evaluator.
    pub fn run(&self, rs: &Ruleset) -> Result<(), String> {
        let d = eval(rs, &self.packet()?, &self.state(rs)?);
        self.check(&d)
    }
}
