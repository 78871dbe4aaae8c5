//! `pbxfw init`: the first-run wizard. It looks at the host — its interfaces and routes, the
//! administrator's SSH session, the Asterisk configuration — proposes a policy, writes it with
//! comments, checks it and asks the reference evaluator whether the administrator keeps their
//! access. It applies nothing: FreePBX's wizard locked people out by applying half-way through.
//!
//! The proposal is deliberately cautious: an interface with the default route is `internet`,
//! one with only private addresses is `local`, anything else `internet`; no interface is ever
//! proposed as `trusted`. The administrator's address (from `$SSH_CONNECTION`, or `--admin`)
//! becomes a trusted host override and an entry of `settings.admins`, so that the check below
//! can promise their access.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use pbxfw_core::Zone;
use serde::Serialize;

use crate::error::{Error, Result};

/// One network interface as the host has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its addresses with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Whether the default route (IPv4 or IPv6) leaves by it.
    pub default_route: bool,
}

/// What the wizard found on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The interfaces, loopback aside.
    pub interfaces: Vec<Interface>,
    /// The administrator: from `$SSH_CONNECTION` (client address, server port) or given.
    pub admin: Option<crate::safety::Admin>,
    /// The Asterisk configuration directory, when it holds Asterisk files.
    pub asterisk_dir: Option<PathBuf>,
}

/// The administrator's answers (or the flags that stand for them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choices {
    /// A zone for each interface.
    pub zones: BTreeMap<String, Zone>,
    /// Whether phones may register from anywhere through the responsive layer.
    pub responsive: bool,
}

/// The zone proposed for `i`: never `trusted`.
pub fn propose(i: &Interface) -> Zone {
    let private = |(a, _): &&(IpAddr, u8)| match a {
        IpAddr::V4(a) => a.is_private() || a.is_link_local(),
        // Unique local (fc00::/7) and link-local addresses.
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00 || a.is_unicast_link_local(),
    };
    let global: Vec<&(IpAddr, u8)> = i
        .addresses
        .iter()
        .filter(|(a, _)| !matches!(a, IpAddr::V6(a) if a.is_unicast_link_local()))
        .collect();
    if i.default_route || global.is_empty() || !global.iter().all(private) {
        Zone::Internet
    } else {
        Zone::Local
    }
}

/// The interfaces of this network namespace (`ip -j addr`, `ip -j route`), loopback aside.
pub fn interfaces() -> Result<Vec<Interface>> {
    let json = |args: &[&str]| -> Result<serde_json::Value> {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| Error::io("ip", e))?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Usage(format!("ip {}: {e}", args.join(" "))))
    };
    let mut default_devs = Vec::new();
    for family in ["-4", "-6"] {
        if let Some(routes) = json(&[family, "-j", "route", "show", "default"])?.as_array() {
            default_devs.extend(
                routes
                    .iter()
                    .filter_map(|r| r["dev"].as_str().map(String::from)),
            );
        }
    }
    let links = json(&["-j", "addr", "show"])?;
    let mut out = Vec::new();
    for l in links.as_array().into_iter().flatten() {
        let Some(name) = l["ifname"].as_str() else {
            continue;
        };
        if l["link_type"] == "loopback" {
            continue;
        }
        let addresses = l["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let addr: IpAddr = a["local"].as_str()?.parse().ok()?;
                let len = u8::try_from(a["prefixlen"].as_u64()?).ok()?;
                Some((addr, len))
            })
            .collect();
        out.push(Interface {
            name: name.to_string(),
            addresses,
            default_route: default_devs.iter().any(|d| d == name),
        });
    }
    Ok(out)
}

/// The administrator of `$SSH_CONNECTION`: the client address, and the server port when it is
/// not 22 (`ADDR:PORT`).
pub fn ssh_admin() -> Option<crate::safety::Admin> {
    let ssh = std::env::var("SSH_CONNECTION").ok()?;
    let f: Vec<&str> = ssh.split_whitespace().collect();
    let addr: IpAddr = f.first()?.parse().ok()?;
    let port: u16 = f.get(3)?.parse().ok()?;
    Some(crate::safety::Admin {
        addr,
        port: (port != 22).then_some(port),
    })
}

/// The policy text for `facts` and `choices`, with comments that say where each part came
/// from.
pub fn render(facts: &Facts, choices: &Choices) -> String {
    let mut t = String::from(
        "# pbxfw policy written by `pbxfw init`: read it, change what is wrong, then\n\
         #   pbxfw check && pbxfw show && pbxfw apply --confirm 60\n\
         # docs/policy.md describes every key.\n\n[interfaces]\n",
    );
    for i in &facts.interfaces {
        let zone = choices
            .zones
            .get(&i.name)
            .copied()
            .unwrap_or(Zone::Internet);
        let addrs: Vec<String> = i
            .addresses
            .iter()
            .map(|(a, l)| format!("{a}/{l}"))
            .collect();
        t += &format!(
            "{} = \"{zone}\"  # {}{}\n",
            toml_key(&i.name),
            if addrs.is_empty() {
                "no address".to_string()
            } else {
                addrs.join(" ")
            },
            if i.default_route {
                "; the default route"
            } else {
                ""
            }
        );
    }
    if let Some(a) = &facts.admin {
        t += &format!(
            "\n# The administrator's address when `pbxfw init` ran: trusted, and protected by\n\
             # anti-lockout (settings.admins). Replace it with your office network if you have one.\n\
             [[networks]]\nsource = \"{}\"\nzone = \"trusted\"\ndescription = \"administrator (pbxfw init)\"\n",
            a.addr
        );
        if let Some(port) = a.port {
            t += &format!(
                "\n# SSH listens on tcp/{port} (from $SSH_CONNECTION).\n[services.ssh]\nports = [\"tcp/{port}\"]\n"
            );
        }
    }
    if let Some(dir) = &facts.asterisk_dir {
        t += &format!(
            "\n[pbx]\n# SIP, IAX, RTP and UDPTL ports and the trunks are read from Asterisk's files\n\
             # at every apply (`pbxfw discover` shows what is found).\ndiscover = \"{}\"\n",
            dir.display()
        );
    }
    t += &format!(
        "\n[responsive]\n# Phones may register from anywhere: unknown sources reach SIP signalling under\n\
         # the kernel's rate tiers, and the daemon bans scanners and password crackers.\nenabled = {}\n",
        choices.responsive
    );
    if let Some(a) = &facts.admin {
        t += &format!("\n[settings]\nadmins = [\"{a}\"]\n");
    }
    t
}

/// An interface name as a TOML key (quoted unless bare).
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// What the wizard checked about the policy it wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// The file written.
    pub file: String,
    /// Warnings of the check (no errors: an invalid policy is never written).
    pub warnings: Vec<String>,
    /// What a new SSH connection from the administrator gets, when there is one.
    pub admin_access: Option<pbxfw_core::Explanation>,
}

/// Write `text` to `path` (refusing to replace a file unless `force`), after checking that it
/// is a valid policy and that the administrator keeps their access; nothing is applied.
pub fn write(path: &Path, text: &str, facts: &Facts, force: bool) -> Result<Checked> {
    // The package's template is there to be replaced.
    let template = std::fs::read_to_string(path).is_ok_and(|t| crate::policy::is_template(&t));
    if path.exists() && !force && !template {
        return Err(Error::Usage(format!(
            "{} exists; pass --force to replace it, or --output another file",
            path.display()
        )));
    }
    let loaded = crate::policy::load_text(text, &path.display().to_string())?;
    let admin_access = match &facts.admin {
        Some(a) => {
            let sessions = crate::safety::sessions(&[*a], &loaded.policy);
            let s = sessions
                .iter()
                .find(|s| s.from == "--admin")
                .expect("the admin given is a session");
            let mut packet =
                pbxfw_core::Packet::new(&s.iif, s.addr, pbxfw_core::Proto::Tcp, Some(s.port));
            packet.ct = pbxfw_core::CtState::New;
            let e = pbxfw_core::explain(&loaded.ruleset, &packet, false);
            if e.verdict != pbxfw_core::FinalVerdict::Accept {
                return Err(Error::Usage(format!(
                    "the policy would not let the administrator {} in on tcp/{} ({}); nothing written",
                    s.addr, s.port, e.decided_by
                )));
            }
            Some(e)
        }
        None => None,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    pbxfw_host::state::write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))?;
    Ok(Checked {
        file: path.display().to_string(),
        warnings: loaded
            .policy
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect(),
        admin_access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, addrs: &[&str], default_route: bool) -> Interface {
        Interface {
            name: name.into(),
            addresses: addrs
                .iter()
                .map(|a| {
                    let (addr, len) = a.split_once('/').unwrap();
                    (addr.parse().unwrap(), len.parse().unwrap())
                })
                .collect(),
            default_route,
        }
    }

    #[test]
    fn interfaces_are_never_proposed_as_trusted() {
        assert_eq!(
            propose(&iface("eth0", &["198.51.100.2/24"], true)),
            Zone::Internet
        );
        assert_eq!(
            propose(&iface("eth0", &["10.0.0.2/24"], true)),
            Zone::Internet
        );
        assert_eq!(
            propose(&iface("eth1", &["192.168.1.1/24", "fd00::1/64"], false)),
            Zone::Local
        );
        assert_eq!(
            propose(&iface("eth2", &["203.0.113.1/24"], false)),
            Zone::Internet
        );
        assert_eq!(propose(&iface("eth3", &[], false)), Zone::Internet);
    }

    #[test]
    fn the_policy_written_is_valid_and_keeps_the_administrator_in() {
        let facts = Facts {
            interfaces: vec![
                iface("eth0", &["198.51.100.2/24"], true),
                iface("eth1", &["192.168.1.1/24"], false),
            ],
            admin: Some("203.0.113.9:2222".parse().unwrap()),
            asterisk_dir: None,
        };
        let choices = Choices {
            zones: facts
                .interfaces
                .iter()
                .map(|i| (i.name.clone(), propose(i)))
                .collect(),
            responsive: true,
        };
        let text = render(&facts, &choices);
        let loaded = crate::policy::load_text(&text, "init").unwrap();
        assert_eq!(loaded.policy.interfaces["eth0"], Zone::Internet);
        assert_eq!(loaded.policy.interfaces["eth1"], Zone::Local);
        assert_eq!(loaded.policy.settings.admins.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pbxfw.toml");
        let checked = write(&path, &text, &facts, false).unwrap();
        assert_eq!(
            checked.admin_access.unwrap().verdict,
            pbxfw_core::FinalVerdict::Accept
        );
        // Never over an existing file without --force.
        assert!(matches!(
            write(&path, &text, &facts, false),
            Err(Error::Usage(_))
        ));
    }
}
