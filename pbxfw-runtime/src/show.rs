//! What each zone opens, in the administrator's words (`pbxfw show [ZONE]`, as
//! `firewall-cmd --list-all` answers): the interfaces and networks in the zone, and the services
//! it reaches with their ports and where those came from (the catalogue, the policy, the
//! Asterisk configuration through discovery); then what every zone gets before the zones are
//! asked (trunks, media, registered devices).

use std::collections::BTreeMap;

use pbxfw_core::{catalogue, Source, ValidPolicy, Zone};
use serde::{Deserialize, Serialize};

use crate::policy::Loaded;

/// One service as a zone reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// The service's name.
    pub name: String,
    /// Its ports (`udp/5060`, `tcp/8088-8089`).
    pub ports: Vec<String>,
    /// Where the ports come from: `catalogue`, `policy` (a catalogue service the policy
    /// changed), `custom` (`[[custom_services]]`), `discovery (FILE:LINE, …)`.
    pub origin: String,
    /// What it is, for catalogue services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneView {
    /// The zone.
    pub zone: Zone,
    /// The interfaces whose traffic is in it (sources no override names).
    pub interfaces: Vec<String>,
    /// The sources overriding into it (`networks`).
    pub networks: Vec<String>,
    /// What it reaches besides the services, in words (`every protocol and port`,
    /// `SIP signalling through the responsive tiers`, `nothing`).
    pub summary: String,
    /// The services it reaches.
    pub services: Vec<ServiceView>,
}

/// What `pbxfw show` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Show {
    /// The zones asked for.
    pub zones: Vec<ZoneView>,
    /// What is open whatever the zone, before the zones are asked (the packet path's earlier
    /// steps): trunks, media ranges, registered devices and users' grants.
    pub everywhere: Vec<String>,
}

/// What `loaded` opens, for `zone` or for every zone.
pub fn show(loaded: &Loaded, zone: Option<Zone>) -> Show {
    let p = &loaded.policy;
    let origins = discovered_ports(loaded.discovery.as_ref());
    let cat: BTreeMap<&str, _> = catalogue().into_iter().map(|e| (e.name, e)).collect();
    let zones = [
        Zone::Trusted,
        Zone::Local,
        Zone::Other,
        Zone::Internet,
        Zone::Reject,
    ];
    let views = zones
        .into_iter()
        .filter(|z| zone.is_none_or(|want| want == *z))
        .map(|z| {
            let services = p
                .services
                .values()
                .filter(|s| z != Zone::Trusted && z != Zone::Reject && s.zones.contains(&z))
                .map(|s| {
                    let ports: Vec<String> = s.ports.iter().map(ToString::to_string).collect();
                    let entry = cat.get(s.name.as_str());
                    let origin = match origins.get(&s.name) {
                        Some((found, lines)) if *found == ports => {
                            format!("discovery ({})", lines.join(", "))
                        }
                        _ if !s.builtin => "custom".to_string(),
                        _ => match entry {
                            Some(e)
                                if s.builtin
                                    && e.ports
                                        .iter()
                                        .map(ToString::to_string)
                                        .collect::<Vec<_>>()
                                        == ports =>
                            {
                                "catalogue".to_string()
                            }
                            _ => "policy".to_string(),
                        },
                    };
                    ServiceView {
                        name: s.name.clone(),
                        ports,
                        origin,
                        description: entry.map(|e| e.description.to_string()),
                    }
                })
                .collect();
            ZoneView {
                zone: z,
                interfaces: p
                    .interfaces
                    .iter()
                    .filter(|(_, iz)| **iz == z)
                    .map(|(i, _)| i.clone())
                    .collect(),
                networks: p
                    .networks
                    .iter()
                    .filter(|n| n.zone == z)
                    .map(|n| match &n.description {
                        Some(d) => format!("{} ({d})", n.source),
                        None => n.source.to_string(),
                    })
                    .collect(),
                summary: summary(p, z),
                services,
            }
        })
        .collect();
    Show {
        zones: views,
        everywhere: everywhere(p),
    }
}

fn summary(p: &ValidPolicy, z: Zone) -> String {
    match z {
        Zone::Trusted => "every protocol and port".into(),
        Zone::Reject => format!(
            "nothing: {} (only trunks, media and established flows, before the zones)",
            match p.settings.default_verdict {
                pbxfw_core::DenyVerdict::Drop => "dropped",
                pbxfw_core::DenyVerdict::Reject => "rejected",
            }
        ),
        Zone::Internet if p.responsive.enabled => {
            let protocols: Vec<String> = p
                .responsive_protocols()
                .map(|s| s.service_name().to_string())
                .collect();
            format!(
                "the services below, and {} signalling from anyone through the responsive tiers (clamp {}, flood {}, daily {})",
                protocols.join(", "),
                p.responsive.clamp,
                p.responsive.flood,
                p.responsive.daily
            )
        }
        _ => "the services below".into(),
    }
}

fn everywhere(p: &ValidPolicy) -> Vec<String> {
    let mut out = Vec::new();
    for t in &p.pbx.trunks {
        let host = match &t.host {
            Source::Host(h) => format!("{h} (by DNS)"),
            s => s.to_string(),
        };
        out.push(format!(
            "trunk {}: {} signalling from {host}",
            t.name,
            t.protocol.service_name()
        ));
    }
    if let Some(r) = p.pbx.rtp {
        out.push(format!("media: RTP udp/{r} (pbx.rtp)"));
    }
    if let Some(r) = p.pbx.udptl {
        out.push(format!("media: UDPTL (fax) udp/{r} (pbx.udptl)"));
    }
    if p.responsive.enabled {
        let grants: Vec<&str> = p
            .responsive
            .registered_grants
            .iter()
            .map(String::as_str)
            .collect();
        out.push(format!(
            "registered devices: signalling{} (responsive.registered_grants)",
            if grants.is_empty() {
                String::new()
            } else {
                format!(" and {}", grants.join(", "))
            }
        ));
    }
    for u in &p.users {
        let s: Vec<&str> = u.services.iter().map(String::as_str).collect();
        out.push(format!(
            "user {}: {} for the user's registered devices",
            u.name,
            s.join(", ")
        ));
    }
    out
}

/// The ports discovery gave each service, with the file and line of each.
fn discovered_ports(
    discovery: Option<&serde_json::Value>,
) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut out = BTreeMap::new();
    let Some(d) = discovery else {
        return out;
    };
    let Some(services) = d["policy"]["services"].as_object() else {
        return out;
    };
    for (name, body) in services {
        let ports: Vec<String> = body["ports"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let prefix = format!("services.{name}.ports[");
        let lines: Vec<String> = d["origins"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|o| o["path"].as_str().is_some_and(|p| p.starts_with(&prefix)))
                    .filter_map(|o| o["origin"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name.clone(), (ports, lines));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_zone_says_what_it_opens_and_where_it_came_from() {
        let loaded = crate::policy::load_text(
            "[interfaces]\neth0 = \"internet\"\neth1 = \"local\"\n\
             [[networks]]\nsource = \"10.8.0.0/24\"\nzone = \"other\"\ndescription = \"VPN\"\n\
             [services.ssh]\nports = [\"tcp/2222\"]\nzones = [\"local\"]\n\
             [[custom_services]]\nname = \"crm\"\nports = [\"tcp/8443\"]\nzones = [\"other\"]\n",
            "t",
        )
        .unwrap();
        let s = show(&loaded, None);
        assert_eq!(s.zones.len(), 5);
        let local = &s.zones[1];
        assert_eq!(local.interfaces, ["eth1"]);
        let ssh = local.services.iter().find(|v| v.name == "ssh").unwrap();
        assert_eq!(
            (ssh.ports.clone(), ssh.origin.as_str()),
            (vec!["tcp/2222".to_string()], "policy")
        );
        let pjsip = local.services.iter().find(|v| v.name == "pjsip").unwrap();
        assert_eq!(pjsip.origin, "catalogue");
        let other = show(&loaded, Some(Zone::Other));
        assert_eq!(other.zones.len(), 1);
        assert_eq!(other.zones[0].networks, ["10.8.0.0/24 (VPN)"]);
        assert!(other.zones[0]
            .services
            .iter()
            .any(|v| v.name == "crm" && v.origin == "custom"));
        assert!(s.zones[3].summary.contains("responsive tiers"));
        assert!(s
            .everywhere
            .iter()
            .any(|l| l.starts_with("media: RTP udp/10000-20000")));
    }
}
