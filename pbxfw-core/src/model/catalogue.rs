//! The built-in service catalogue (docs/policy.md, "Services and the catalogue").

use super::{PortRange, PortSpec, SignallingProtocol, Zone, L4};

/// One built-in service with its default ports and zones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueEntry {
    /// The service name used in policies.
    pub name: &'static str,
    /// What it is, for people.
    pub description: &'static str,
    /// Default ports.
    pub ports: Vec<PortSpec>,
    /// Zones granted it by default.
    pub zones: Vec<Zone>,
    /// The signalling protocol it carries, if any.
    pub signalling: Option<SignallingProtocol>,
}

fn p(proto: L4, first: u16, last: u16) -> PortSpec {
    PortSpec {
        proto,
        ports: PortRange { first, last },
    }
}

/// The catalogue, in the order docs/policy.md lists it.
pub fn catalogue() -> Vec<CatalogueEntry> {
    use Zone::{Internet, Local, Other};
    use L4::{Tcp, Udp};
    let e = |name, description, ports, zones, signalling| CatalogueEntry {
        name,
        description,
        ports,
        zones,
        signalling,
    };
    vec![
        e(
            "ssh",
            "secure shell",
            vec![p(Tcp, 22, 22)],
            vec![Local],
            None,
        ),
        e(
            "http",
            "admin web interface",
            vec![p(Tcp, 80, 80)],
            vec![Local],
            None,
        ),
        e(
            "https",
            "admin web interface over TLS",
            vec![p(Tcp, 443, 443)],
            vec![Local],
            None,
        ),
        e(
            "ucp",
            "user control panel",
            vec![p(Tcp, 81, 81), p(Tcp, 4443, 4443)],
            vec![Other, Local],
            None,
        ),
        e(
            "api",
            "REST and GraphQL API",
            vec![p(Tcp, 83, 83), p(Tcp, 2443, 2443)],
            vec![Local],
            None,
        ),
        e(
            "pjsip",
            "SIP signalling (res_pjsip), UDP, TCP and TLS",
            vec![p(Udp, 5060, 5060), p(Tcp, 5060, 5060), p(Tcp, 5061, 5061)],
            vec![Other, Local],
            Some(SignallingProtocol::Pjsip),
        ),
        e(
            "chansip",
            "SIP signalling (chan_sip)",
            vec![p(Udp, 5160, 5160)],
            vec![Local],
            Some(SignallingProtocol::Chansip),
        ),
        e(
            "iax",
            "IAX2 signalling",
            vec![p(Udp, 4569, 4569)],
            vec![Local],
            Some(SignallingProtocol::Iax),
        ),
        e(
            "webrtc",
            "WebRTC over WebSocket (ws, wss)",
            vec![p(Tcp, 8088, 8088), p(Tcp, 8089, 8089)],
            vec![Local],
            None,
        ),
        e(
            "provisioning",
            "phone provisioning over HTTP, HTTPS and TFTP",
            vec![p(Tcp, 84, 84), p(Tcp, 1443, 1443), p(Udp, 69, 69)],
            vec![Other, Local],
            None,
        ),
        e(
            "xmpp",
            "XMPP chat",
            vec![p(Tcp, 5222, 5222)],
            vec![Local],
            None,
        ),
        e(
            "ntp",
            "time service",
            vec![p(Udp, 123, 123)],
            vec![Local],
            None,
        ),
        e(
            "vpn",
            "OpenVPN",
            vec![p(Udp, 1194, 1194)],
            vec![Internet, Other, Local],
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_signalling_services_exist() {
        let c = catalogue();
        let mut names: Vec<_> = c.iter().map(|e| e.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), c.len());
        for proto in SignallingProtocol::ALL {
            let entry = c.iter().find(|e| e.name == proto.service_name()).unwrap();
            assert_eq!(entry.signalling, Some(proto));
        }
    }
}
