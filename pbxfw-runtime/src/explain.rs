//! What happens to a packet, asked the same way by every front end (`pbxfw explain`,
//! `pbxfw_policy_explain`, `Policy.explain`): one place decides what makes a well-formed
//! question, so that none of them accepts what another refuses.

use std::net::IpAddr;

use pbxfw_core::{CtState, Explanation, Packet, Proto, Ruleset};
use serde::Deserialize;

use crate::error::{Error, Result};

/// A packet to explain, as the front ends take it (C and PHP as JSON with these keys).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
        Ok(packet)
    }
}

/// What happens to the packet of `query` under `rs`, and which policy object decides.
pub fn explain(rs: &Ruleset, query: &Query) -> Result<Explanation> {
    Ok(pbxfw_core::explain(rs, &query.packet()?, query.registered))
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
        ] {
            assert!(matches!(bad.packet(), Err(Error::Usage(_))), "{bad:?}");
        }
        let echo = query("icmpv6", None).packet().unwrap();
        assert_eq!(echo.icmp_type, Some(128));
    }
}
