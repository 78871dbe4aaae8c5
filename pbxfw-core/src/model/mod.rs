//! The policy model, in the words a PBX administrator uses: zones, services, trunks, networks.
//!
//! [`Policy`] is a parsed document (TOML or JSON syntax is right); [`Policy::validate`] turns it
//! into a [`ValidPolicy`] or returns every problem found, each with its path.

mod catalogue;
mod decode;

pub(crate) use decode::parse_source;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use catalogue::{catalogue, CatalogueEntry};
pub use decode::{is_interface_name, ParseError, MAX_POLICY_BYTES};

use crate::diag::Diagnostic;
use crate::net::Prefix;

/// One of the five zones a packet's source can belong to (docs/policy.md, "Zones").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// Everything accepted.
    Trusted,
    /// LAN: most services.
    Local,
    /// Known external networks: VPN, DMZ, branch office.
    Other,
    /// Nobody is trusted.
    Internet,
    /// Nothing but RTP.
    Reject,
}

impl Zone {
    /// All zones, in the order the UI lists them.
    pub const ALL: [Zone; 5] = [
        Zone::Trusted,
        Zone::Local,
        Zone::Other,
        Zone::Internet,
        Zone::Reject,
    ];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Zone::Trusted => "trusted",
            Zone::Local => "local",
            Zone::Other => "other",
            Zone::Internet => "internet",
            Zone::Reject => "reject",
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Zone {
    type Err = ();
    /// Accepts the canonical names and the aliases `external` (= internet) and `internal`
    /// (= local).
    fn from_str(s: &str) -> Result<Zone, ()> {
        Ok(match s {
            "trusted" => Zone::Trusted,
            "local" | "internal" => Zone::Local,
            "other" => Zone::Other,
            "internet" | "external" => Zone::Internet,
            "reject" => Zone::Reject,
            _ => return Err(()),
        })
    }
}

/// A transport protocol that carries ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for L4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        })
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Whether `port` lies inside.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;
    /// `N` or `N-M` with `1 <= N <= M <= 65535`.
    fn from_str(s: &str) -> Result<PortRange, String> {
        let num = |t: &str| -> Result<u16, String> {
            if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err("is not a port number".into());
            }
            match t.parse::<u32>() {
                Ok(0) => Err("uses port 0, which is not a port".into()),
                Ok(n) if n <= 65535 => Ok(n as u16),
                _ => Err("is not a port in 1..=65535".into()),
            }
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a.trim())?, num(b.trim())?);
                if a > b {
                    return Err("is a range whose first port is above its last".into());
                }
                Ok(PortRange { first: a, last: b })
            }
            None => Ok(PortRange::single(num(s.trim())?)),
        }
    }
}

/// A protocol and a port range, written `udp/5060` or `tcp/9000-9010`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    /// TCP or UDP.
    pub proto: L4,
    /// The ports.
    pub ports: PortRange,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.proto, self.ports)
    }
}

impl FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<PortSpec, String> {
        let (proto, ports) = s
            .split_once('/')
            .ok_or_else(|| "is not a port spec (udp/N, tcp/N, udp/N-M or tcp/N-M)".to_string())?;
        let proto = match proto {
            "udp" => L4::Udp,
            "tcp" => L4::Tcp,
            _ => return Err("names a protocol other than udp or tcp".into()),
        };
        Ok(PortSpec {
            proto,
            ports: ports.parse()?,
        })
    }
}

/// Where traffic comes from: an address or CIDR, or a hostname resolved outside the core.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// An address (a /32 or /128 prefix) or a CIDR.
    Net(Prefix),
    /// A hostname or DDNS name; its A and AAAA answers are fed into dynamic sets.
    Host(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Net(p) => write!(f, "{p}"),
            Source::Host(h) => f.write_str(h),
        }
    }
}

/// A signalling protocol of the PBX (docs/policy.md, "Trunks").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignallingProtocol {
    /// res_pjsip.
    Pjsip,
    /// chan_sip.
    Chansip,
    /// chan_iax2.
    Iax,
}

impl SignallingProtocol {
    /// All three, in catalogue order.
    pub const ALL: [SignallingProtocol; 3] = [
        SignallingProtocol::Pjsip,
        SignallingProtocol::Chansip,
        SignallingProtocol::Iax,
    ];

    /// The name of the catalogue service carrying this protocol's signalling.
    pub fn service_name(self) -> &'static str {
        match self {
            SignallingProtocol::Pjsip => "pjsip",
            SignallingProtocol::Chansip => "chansip",
            SignallingProtocol::Iax => "iax",
        }
    }
}

impl fmt::Display for SignallingProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.service_name())
    }
}

impl FromStr for SignallingProtocol {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "pjsip" => SignallingProtocol::Pjsip,
            "chansip" => SignallingProtocol::Chansip,
            "iax" => SignallingProtocol::Iax,
            _ => return Err(()),
        })
    }
}

/// What the final rule does with a packet nothing accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenyVerdict {
    /// Silently discard.
    Drop,
    /// Answer with ICMP admin-prohibited or a TCP reset.
    Reject,
}

/// A packet rate such as `10/second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    /// Packets per unit.
    pub packets: u32,
    /// The unit.
    pub per: RateUnit,
}

/// The time unit of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RateUnit {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
    /// Per day.
    Day,
}

impl RateUnit {
    /// The unit's name as rates are written (`10/second`), in policies, the IR and nft.
    pub fn name(self) -> &'static str {
        match self {
            RateUnit::Second => "second",
            RateUnit::Minute => "minute",
            RateUnit::Hour => "hour",
            RateUnit::Day => "day",
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.packets, self.per.name())
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad =
            || "is not a rate such as 10/second (units: second, minute, hour, day)".to_string();
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let packets: u32 = n.trim().parse().map_err(|_| bad())?;
        if packets == 0 {
            return Err("is a rate of zero packets".into());
        }
        let per = match unit.trim() {
            "second" | "s" => RateUnit::Second,
            "minute" | "m" => RateUnit::Minute,
            "hour" | "h" => RateUnit::Hour,
            "day" | "d" => RateUnit::Day,
            _ => return Err(bad()),
        };
        Ok(Rate { packets, per })
    }
}

/// Global settings (`[settings]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The verdict of the final rule.
    pub default_verdict: DenyVerdict,
    /// Echo requests above this rate are dropped.
    pub icmp_echo_rate: Rate,
    /// Log what the final rule denies (rate-limited).
    pub log_denied: bool,
    /// Compile the certificate-renewal window (docs/acme.md): `pbxfw acme open` then admits
    /// HTTP-01 challenge requests on tcp/80 from everyone, for a while.
    pub acme: bool,
    /// Administrators whose access an apply or an edit must never cut off (anti-lockout,
    /// docs/safety.md), on top of the session it runs in: SSH (the `ssh` service's TCP port)
    /// unless a port is given (`"192.0.2.10:8443"`).
    pub admins: Vec<Admin>,
}

/// An administrator's address whose access must survive an apply: `ADDR` (its SSH: the
/// policy's `ssh` service's TCP port, 22 unless the policy moves it) or `ADDR:PORT` /
/// `[ADDR6]:PORT` (another TCP port, such as the PBX's web interface on 443, for a web front
/// end passing its client's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admin {
    /// The client's address.
    pub addr: IpAddr,
    /// The TCP port it reaches the host on; `None`: SSH.
    pub port: Option<u16>,
}

impl Admin {
    /// An administrator reaching the host's SSH.
    pub fn ssh(addr: IpAddr) -> Admin {
        Admin { addr, port: None }
    }
}

impl std::str::FromStr for Admin {
    type Err = String;

    fn from_str(s: &str) -> Result<Admin, String> {
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Admin::ssh(addr));
        }
        s.parse::<std::net::SocketAddr>()
            .map(|a| Admin {
                addr: a.ip(),
                port: Some(a.port()),
            })
            .map_err(|_| format!("{s:?} is not ADDR, ADDR:PORT or [ADDR6]:PORT"))
    }
}

impl std::fmt::Display for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => std::net::SocketAddr::new(self.addr, port).fmt(f),
            None => self.addr.fmt(f),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_verdict: DenyVerdict::Drop,
            icmp_echo_rate: Rate {
                packets: 10,
                per: RateUnit::Second,
            },
            log_denied: false,
            acme: false,
            admins: Vec::new(),
        }
    }
}

/// A service: named ports granted to zones (docs/policy.md, "Services and the catalogue").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The name (`ssh`, `pjsip`, or a custom service's name).
    pub name: String,
    /// The ports.
    pub ports: Vec<PortSpec>,
    /// The zones granted this service.
    pub zones: BTreeSet<Zone>,
    /// The signalling protocol this service carries, for pjsip, chansip and iax.
    pub signalling: Option<SignallingProtocol>,
    /// Whether the service is from the built-in catalogue.
    pub builtin: bool,
}

/// A network override: a source mapped to a zone (docs/policy.md, "Zones").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOverride {
    /// Address, CIDR or hostname.
    pub source: Source,
    /// The zone.
    pub zone: Zone,
    /// Free text for people.
    pub description: Option<String>,
    /// Position in `networks`, for origins and diagnostics.
    pub index: usize,
}

/// A trunk or peer of the PBX (docs/policy.md, "Trunks").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// The trunk's name in the PBX.
    pub name: String,
    /// Which protocol's signalling it may send.
    pub protocol: SignallingProtocol,
    /// Address, CIDR or hostname.
    pub host: Source,
}

/// A blacklist entry (docs/policy.md, "Blacklist").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlacklistEntry {
    /// Address, CIDR or hostname.
    pub source: Source,
    /// Position in `blacklist.entries`, or the line number in its list file.
    pub index: usize,
    /// The list file it comes from (its position in `blacklist.lists`); `None` for
    /// `blacklist.entries`.
    pub list: Option<usize>,
}

/// The PBX's own settings (docs/discovery.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pbx {
    /// The RTP range after removing ports below 1024; `None` when nothing is left.
    pub rtp: Option<PortRange>,
    /// The UDPTL (fax) range after removing ports below 1024.
    pub udptl: Option<PortRange>,
    /// Trunks and peers.
    pub trunks: Vec<Trunk>,
    /// The Asterisk configuration directory whose discovery (`pbxfw_core::discover`) the
    /// command line and the daemon merge into the policy before validating it.
    pub discover: Option<String>,
}

/// The responsive layer's settings (docs/responsive.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responsive {
    /// Whether unknown sources may reach signalling ports at all (under the kernel tiers).
    pub enabled: bool,
    /// Protocols whose signalling goes through the tiers.
    pub protocols: BTreeSet<SignallingProtocol>,
    /// Services every registered device's source gets (docs/policy.md, "Users and grants").
    pub registered_grants: BTreeSet<String>,
    /// Above a burst of `packets`, more than `packets` per `seconds` are rejected.
    pub clamp: Tier,
    /// More than `packets` in `seconds` bans the source.
    pub flood: Tier,
    /// More than `packets` in `seconds` (a day by default) bans the source.
    pub daily: Tier,
    /// How long a kernel-tier ban lasts; a banned source that keeps sending stays banned.
    pub ban_seconds: u32,
    /// IPv4 sources are tracked and banned per prefix of this length (32: per address).
    pub ipv4_prefix: u8,
    /// IPv6 sources are tracked and banned per prefix of this length (64 by default).
    pub ipv6_prefix: u8,
    /// Sources never limited or banned, by the kernel's tiers or by the state machine, and
    /// given nothing else (`responsive.ignore`, fail2ban's `ignoreip`): a monitoring probe, a
    /// partner's office. Unlike a trusted network they reach only what the internet reaches.
    pub ignore: Vec<Prefix>,
}

/// A rate tier: `packets` per `seconds`, written `50/10s`, `10/1m`, `100/24h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// Packets allowed in the window (also the burst).
    pub packets: u32,
    /// The window.
    pub seconds: u32,
}

impl Tier {
    /// The token-bucket rate the kernel enforces for this tier: `packets / seconds` expressed
    /// in the smallest unit that keeps it a whole number, or `None` when no unit does.
    pub fn kernel_rate(&self) -> Option<Rate> {
        let units = [
            (1u64, RateUnit::Second),
            (60, RateUnit::Minute),
            (3600, RateUnit::Hour),
            (86400, RateUnit::Day),
        ];
        let (p, s) = (self.packets as u64, self.seconds as u64);
        units.into_iter().find_map(|(u, per)| {
            (p * u % s == 0 && p * u / s >= 1 && p * u / s <= u32::MAX as u64).then(|| Rate {
                packets: (p * u / s) as u32,
                per,
            })
        })
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.packets, fmt_seconds(self.seconds))
    }
}

/// `86400` → `24h`, `60` → `1m`, `10` → `10s`.
pub fn fmt_seconds(s: u32) -> String {
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Parse a duration: `10s`, `5m`, `24h`, `7d`, or plain seconds.
pub fn parse_seconds(s: &str) -> Option<u32> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1u64),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86400),
        _ => (s, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || num.len() > 10 {
        return None;
    }
    let v = num.parse::<u64>().ok()? * mult;
    u32::try_from(v).ok().filter(|v| *v > 0)
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Tier, String> {
        let bad = || "is not a tier such as 50/10s (packets per duration: s, m, h, d)".to_string();
        let (p, d) = s.split_once('/').ok_or_else(bad)?;
        let packets: u32 = p.trim().parse().map_err(|_| bad())?;
        let seconds = parse_seconds(d).ok_or_else(bad)?;
        if packets == 0 {
            return Err("allows zero packets".into());
        }
        Ok(Tier { packets, seconds })
    }
}

/// A user (extension) with per-user grants (docs/policy.md, "Users and grants").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The extension or user name.
    pub name: String,
    /// Services that follow the user's registered devices.
    pub services: BTreeSet<String>,
    /// The VPN identities the user connects as (OpenVPN common names): while connected, the
    /// address the VPN client came from gets the user's grants, as a registered device does
    /// (docs/vpn.md).
    pub vpn: BTreeSet<String>,
    /// The WireGuard peers' public keys the user connects with (base64, as `wg` prints them):
    /// while a peer's handshake is recent, its endpoint gets the user's grants (docs/vpn.md).
    pub wireguard: BTreeSet<String>,
}

/// Bans shared with a fleet of PBXes through CrowdSec's Local API (`[fleet]`, docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The LAPI's base URL (`https://lapi.example.net:8080`).
    pub url: String,
    /// This PBX's name in what it pushes (`meta.pbx`).
    pub pbx: String,
    /// Pull the fleet's decisions into the kernel (the bouncer role).
    pub pull: bool,
    /// The bouncer's API key, in a file only root may read.
    pub api_key_file: Option<String>,
    /// Push this PBX's bans to the fleet (the machine role).
    pub push: bool,
    /// The machine's name at the LAPI.
    pub machine_id: Option<String>,
    /// The machine's password, in a file only root may read.
    pub password_file: Option<String>,
    /// A local `pbxfw unban` deletes the source's decisions at the LAPI too, every machine's.
    pub unban: bool,
    /// Seconds between delta pulls.
    pub poll_seconds: u32,
    /// Seconds between full pulls that reconcile the whole set.
    pub resync_seconds: u32,
    /// Seconds one request may take.
    pub timeout_seconds: u32,
    /// The CA certificates (PEM) a `https` LAPI's certificate is checked against, instead of
    /// the public roots.
    pub ca_file: Option<String>,
    /// Most decisions enforced (the size of the kernel's fleet sets).
    pub max_decisions: u32,
}

/// A policy whose every part has been checked. Build one with [`Policy::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPolicy {
    /// `[settings]`.
    pub settings: Settings,
    /// Interface name → zone.
    pub interfaces: BTreeMap<String, Zone>,
    /// Network overrides.
    pub networks: Vec<NetworkOverride>,
    /// Every service, catalogue and custom, by name.
    pub services: BTreeMap<String, Service>,
    /// `[pbx]`.
    pub pbx: Pbx,
    /// The blacklist.
    pub blacklist: Vec<BlacklistEntry>,
    /// `[responsive]`.
    pub responsive: Responsive,
    /// `[[users]]`.
    pub users: Vec<User>,
    /// `[fleet]`, when the PBX is part of one.
    pub fleet: Option<Fleet>,
    /// Warnings found while validating (never errors: those prevent a `ValidPolicy`).
    pub warnings: Vec<Diagnostic>,
}

impl ValidPolicy {
    /// The services carrying signalling of `protocol`.
    pub fn signalling_service(&self, protocol: SignallingProtocol) -> &Service {
        &self.services[protocol.service_name()]
    }

    /// Signalling protocols whose unknown sources go through the responsive tiers.
    pub fn responsive_protocols(&self) -> impl Iterator<Item = SignallingProtocol> + '_ {
        self.responsive
            .protocols
            .iter()
            .copied()
            .filter(|_| self.responsive.enabled)
    }
}

/// A parsed policy document: its syntax is right, its meaning not yet checked.
///
/// ```
/// use pbxfw_core::Policy;
/// let policy = Policy::from_toml(r#"
///     [interfaces]
///     eth0 = "external"
///     eth1 = "internal"
/// "#).unwrap();
/// let valid = policy.validate().unwrap();
/// assert_eq!(valid.interfaces["eth0"], pbxfw_core::Zone::Internet);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    doc: serde_json::Value,
    /// Warnings from merging a discovery, reported with validation's.
    merged: Vec<Diagnostic>,
    /// Each list file of `blacklist.lists` the caller read (its text) or could not (why).
    lists: ListTexts,
}

/// The list files' texts by path, or why one could not be read; printed by size only (a list
/// file is not the policy's to show).
#[derive(Clone, PartialEq, Default)]
pub(crate) struct ListTexts(pub(crate) std::collections::BTreeMap<String, Result<String, String>>);

impl std::fmt::Debug for ListTexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(p, t)| {
                (
                    p,
                    t.as_ref()
                        .map(|t| format!("{} bytes", t.len()))
                        .map_err(|e| e.clone()),
                )
            }))
            .finish()
    }
}

impl Policy {
    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Policy, ParseError> {
        decode::parse_toml(text).map(|doc| Policy {
            doc,
            merged: Vec::new(),
            lists: Default::default(),
        })
    }

    /// Parse JSON text.
    pub fn from_json(text: &str) -> Result<Policy, ParseError> {
        decode::parse_json(text).map(|doc| Policy {
            doc,
            merged: Vec::new(),
            lists: Default::default(),
        })
    }

    /// Parse text whose format is given by a file name (`.json` is JSON, anything else TOML).
    pub fn from_text(text: &str, file_name: &str) -> Result<Policy, ParseError> {
        if file_name.ends_with(".json") {
            Policy::from_json(text)
        } else {
            Policy::from_toml(text)
        }
    }

    /// A policy from an already-parsed JSON value (as Python dicts and C callers give it).
    pub fn from_value(doc: serde_json::Value) -> Policy {
        Policy {
            doc,
            merged: Vec::new(),
            lists: Default::default(),
        }
    }

    /// The Asterisk configuration directory `pbx.discover` names, when it is an absolute path
    /// (anything else is left for validation to report).
    pub fn discover_dir(&self) -> Option<&str> {
        self.doc
            .get("pbx")?
            .get("discover")?
            .as_str()
            .filter(|s| s.starts_with('/'))
    }

    /// The list files `blacklist.lists` names (absolute paths; anything else is left for
    /// validation to report): the caller reads each and gives its text to
    /// [`Policy::attach_list`], the core reads no file.
    pub fn blacklist_lists(&self) -> Vec<&str> {
        self.doc
            .get("blacklist")
            .and_then(|b| b.get("lists"))
            .and_then(|l| l.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .filter(|s| s.starts_with('/'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Give the text of the list file at `path` (one address or CIDR a line, `#` comments):
    /// [`Policy::validate`] reads its entries as blacklist entries.
    pub fn attach_list(&mut self, path: &str, text: String) {
        self.lists.0.insert(path.to_string(), Ok(text));
    }

    /// Say that the list file at `path` could not be read, and why: [`Policy::validate`]
    /// warns that its entries are not in the ruleset (a list fed from elsewhere that went
    /// missing keeps no firewall from loading).
    pub fn list_unreadable(&mut self, path: &str, why: &str) {
        self.lists.0.insert(path.to_string(), Err(why.to_string()));
    }

    /// Merge what discovery found into the policy; explicit entries win and each disagreement
    /// becomes a warning of the next [`Policy::validate`]. A discovered trunk wider than
    /// [`crate::discover::MAX_TRUNK_V4`] / [`crate::discover::MAX_TRUNK_V6`] is an error of it.
    pub fn merge_discovery(&mut self, found: &crate::discover::Discovery) {
        let w = crate::discover::merge(&mut self.doc, found);
        self.merged.extend(w);
    }

    /// The document as a JSON value.
    pub fn as_value(&self) -> &serde_json::Value {
        &self.doc
    }

    /// Check everything; return a [`ValidPolicy`] (carrying any warnings) or every diagnostic.
    pub fn validate(&self) -> Result<ValidPolicy, crate::Diagnostics> {
        let merge_errors = self
            .merged
            .iter()
            .any(|d| d.severity == crate::diag::Severity::Error);
        match decode::validate(&self.doc, &self.lists) {
            Ok(v) if merge_errors => {
                let mut all = self.merged.clone();
                all.extend(v.warnings);
                Err(crate::Diagnostics(all))
            }
            Ok(mut v) => {
                v.warnings.splice(0..0, self.merged.iter().cloned());
                Ok(v)
            }
            Err(mut d) => {
                d.0.splice(0..0, self.merged.iter().cloned());
                Err(d)
            }
        }
    }
}

/// The embedded default policy of a typical PBX: one internet-facing interface, a LAN, a pjsip
/// trunk, RTP 10000-20000, the responsive layer on.
pub const DEFAULT_POLICY_TOML: &str = include_str!("default_policy.toml");
