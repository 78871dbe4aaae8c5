//! What happens to a packet, asked the same way by every front end (`pbxfw explain`,
//! `pbxfw_policy_explain`, `Policy.explain`): one place decides what makes a well-formed
//! question, so that none of them accepts what another refuses.

use std::net::IpAddr;

use pbxfw_core::{CtState, DynamicState, Explanation, Packet, Proto, Ruleset, SetKind};
use pbxfw_core::{Family, SetRole};
use serde::{Deserialize, Serialize};

use crate::backends::BackendName;
use crate::error::{Error, Result};

/// A packet to explain, as the front ends take it (C and PHP as JSON with these keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The input interface.
    pub iface: String,
    /// The source address.
    pub src: IpAddr,
    /// `udp`, `tcp`, `icmp` or `icmpv6`.
    pub proto: String,
    /// The destination port: required for udp and tcp, refused otherwise.
    pub dport: Option<u16>,
    /// The source port (udp and tcp only).
    #[serde(default)]
    pub sport: Option<u16>,
    /// The ICMP type (icmp and icmpv6 only; default: echo request).
    #[serde(default)]
    pub icmp_type: Option<u8>,
    /// `new` (default), `established`, `related` or `invalid`.
    #[serde(default)]
    pub state: Option<String>,
    /// Whether the source is a registered device.
    #[serde(default)]
    pub registered: bool,
    /// Whether the packet answers a connection the PBX opened (established and related
    /// packets only): such answers do not take the established fast path.
    #[serde(default)]
    pub reply: bool,
}

impl Query {
    /// The packet asked about, or why the question is not well formed.
    pub fn packet(&self) -> Result<Packet> {
        let proto: Proto = self.proto.parse().map_err(Error::Usage)?;
        let ported = matches!(proto, Proto::Udp | Proto::Tcp);
        if ported && self.dport.is_none() {
            return Err(Error::Usage("dport is required for udp and tcp".into()));
        }
        if !ported && (self.dport.is_some() || self.sport.is_some()) {
            return Err(Error::Usage(
                "dport and sport apply to udp and tcp only".into(),
            ));
        }
        if ported && self.icmp_type.is_some() {
            return Err(Error::Usage(
                "icmp_type applies to icmp and icmpv6 only".into(),
            ));
        }
        let mut packet = Packet::new(&self.iface, self.src, proto, self.dport);
        packet.sport = self.sport;
        packet.icmp_type = proto
            .echo_request()
            .map(|echo| self.icmp_type.unwrap_or(echo));
        packet.ct = match &self.state {
            Some(s) => s.parse::<CtState>().map_err(Error::Usage)?,
            None => CtState::New,
        };
        if self.reply && !matches!(packet.ct, CtState::Established | CtState::Related) {
            return Err(Error::Usage(
                "reply applies to established and related packets only".into(),
            ));
        }
        packet.ct_reply = self.reply;
        Ok(packet)
    }
}

/// What happens to the packet of `query` under `rs`, and which policy object decides.
pub fn explain(rs: &Ruleset, query: &Query) -> Result<Explanation> {
    Ok(pbxfw_core::explain(rs, &query.packet()?, query.registered))
}

/// A registration the kernel holds for the packet's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRegistration {
    /// The account, when the daemon's state names it.
    pub account: Option<String>,
    /// Unix seconds at which it ends.
    pub until: u64,
    /// `until` in ISO 8601.
    pub until_iso: String,
}

/// What happens to a packet now: the loaded ruleset with the kernel's dynamic sets as they
/// are (bans, the slow lane, registrations, grants), and what they hold for its source.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveExplanation {
    /// The answer.
    #[serde(flatten)]
    pub explanation: Explanation,
    /// The ruleset asked (the one loaded).
    pub fingerprint: String,
    /// The bans in force covering the source.
    pub bans: Vec<crate::bans::Ban>,
    /// Its registrations.
    pub registrations: Vec<LiveRegistration>,
    /// Until when it is in the slow lane (Unix seconds).
    pub clamped_until: Option<u64>,
}

/// What happens to the packet of `query` in `backend` at `now` (Unix seconds), as the kernel
/// holds pbxfw's ruleset and dynamic sets. `query.registered` is not used: the kernel says.
pub fn live(backend: BackendName, query: &Query, now: u64) -> Result<LiveExplanation> {
    let packet = query.packet()?;
    let kernel = backend.open();
    let status = kernel.status()?;
    if !status.loaded {
        return Err(pbxfw_core::BackendError::NotLoaded.into());
    }
    let rs = crate::bans::loaded_ruleset(kernel.as_ref())?;
    let src = query.src;
    let family = Family::of(&src);
    let mut state = DynamicState::default();
    let mut clamped_until = None;
    let mut registered: Vec<u64> = Vec::new();
    for set in &status.sets {
        if !matches!(
            rs.sets.get(&set.name).map(|s| &s.kind),
            Some(SetKind::Dynamic(_))
        ) {
            continue;
        }
        for el in &set.elements {
            let Some(p) = crate::bans::element_prefix(Some(&rs), &set.name, &el.element) else {
                continue;
            };
            if !p.contains(&src) {
                continue;
            }
            state.insert(&rs, &set.name, src);
            let until = now + el.expires_in.unwrap_or(0);
            if set.name == SetRole::Clamped.set(family) {
                clamped_until = Some(until);
            } else if set.name == SetRole::Registered.set(family) {
                registered.push(until);
            }
        }
    }
    let explanation = pbxfw_core::explain_with(&rs, &packet, &state);
    let bans = crate::bans::list(backend, now)?
        .bans
        .into_iter()
        .filter(|b| b.prefix.contains(&src))
        .collect();
    let known = crate::bans::daemon_machine()
        .map(|m| m.registrations_of(&src, now))
        .unwrap_or_default();
    let registrations = registered
        .into_iter()
        .flat_map(|until| {
            let accounts: Vec<Option<String>> = if known.is_empty() {
                vec![None]
            } else {
                known.iter().map(|(a, _)| Some(a.clone())).collect()
            };
            accounts.into_iter().map(move |account| LiveRegistration {
                account,
                until,
                until_iso: crate::human::iso8601(until),
            })
        })
        .collect();
    Ok(LiveExplanation {
        explanation,
        fingerprint: rs.fingerprint(),
        bans,
        registrations,
        clamped_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(proto: &str, dport: Option<u16>) -> Query {
        Query {
            iface: "eth0".into(),
            src: "192.0.2.1".parse().unwrap(),
            proto: proto.into(),
            dport,
            sport: None,
            icmp_type: None,
            state: None,
            registered: false,
            reply: false,
        }
    }

    #[test]
    fn every_front_end_gets_the_same_rules() {
        assert!(query("udp", Some(5060)).packet().is_ok());
        assert!(query("icmp", None).packet().is_ok());
        for bad in [
            query("udp", None),
            query("icmp", Some(1)),
            query("sctp", Some(1)),
            Query {
                icmp_type: Some(8),
                ..query("tcp", Some(22))
            },
            Query {
                state: Some("half-open".into()),
                ..query("tcp", Some(22))
            },
            Query {
                reply: true,
                ..query("tcp", Some(22))
            },
        ] {
            assert!(matches!(bad.packet(), Err(Error::Usage(_))), "{bad:?}");
        }
        let answer = Query {
            state: Some("established".into()),
            reply: true,
            ..query("udp", Some(14000))
        };
        assert!(answer.packet().unwrap().ct_reply);
        let echo = query("icmpv6", None).packet().unwrap();
        assert_eq!(echo.icmp_type, Some(128));
    }
}
