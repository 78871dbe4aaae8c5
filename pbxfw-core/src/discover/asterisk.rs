//! What an Asterisk configuration says about the firewall: ports, media ranges and trunks.
//!
//! Read as FreePBX and plain Asterisk write them, following includes from the main files:
//!
//! | file | gives |
//! |---|---|
//! | `pjsip.conf` | `type=transport` binds (udp, tcp, tls; ws/wss ride on the HTTP server); trunks from `type=identify` `match=`, `type=registration` `server_uri=` and static `type=aor` `contact=` |
//! | `sip.conf` | `[general]` `bindport`/`bindaddr`/`udpbindaddr`, `tcpenable`+`tcpbindaddr`, `tlsenable`+`tlsbindaddr`; trunks from peers' `host=` (not `dynamic`) and their `permit=`, and `register =>` lines |
//! | `iax.conf` | `[general]` `bindport`/`bindaddr`; trunks from peers' `host=` and `permit=`, and `register =>` lines |
//! | `rtp.conf` | `rtpstart`/`rtpend` (Asterisk's defaults 5000-31000 when the file omits them) |
//! | `udptl.conf` | `udptlstart`/`udptlend` (defaults 4000-4999) |
//! | `http.conf` | `enabled`+`bindport`, `tlsenable`+`tlsbindaddr`: the WebRTC (WS/WSS) ports |
//!
//! Decisions where Asterisk leaves room:
//! - A bind to a loopback address opens nothing (nobody outside can reach it); a bind to one
//!   specific address opens the port (pbxfw matches ports, not destination addresses).
//! - Phones are not trunks: chan_sip/IAX peers with `host=dynamic` are skipped with their
//!   `permit=` lines; PJSIP endpoints without `identify`, registration or static contact are
//!   never looked at. `permit=` entries covering everything (`0.0.0.0/0.0.0.0`) are skipped.
//! - A trunk with several hosts becomes several trunk entries, `name`, `name#2`, … (the policy
//!   names one host per trunk); the same host for the same protocol is listed once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::conf::{self, Config, Files, Note, Origin, Section};
use crate::model::parse_source;
use crate::{PortRange, PortSpec, SignallingProtocol, Source, L4};

/// A discovered value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<T> {
    /// The value.
    pub value: T,
    /// The file and line.
    pub origin: Origin,
    /// What in the file it is (`transport 0.0.0.0-udp`, `peer provider-d`).
    pub what: String,
}

/// A trunk found in the PBX's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTrunk {
    /// A name unique among the discovered trunks (the PBX's name, `#2` for a second host).
    pub name: String,
    /// Which signalling it sends.
    pub protocol: SignallingProtocol,
    /// Address, CIDR or hostname, as a policy's `host` takes it.
    pub host: String,
}

/// Everything discovery found, each item with its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// `pbx.rtp`.
    pub rtp: Option<Found<PortRange>>,
    /// `pbx.udptl`.
    pub udptl: Option<Found<PortRange>>,
    /// Ports of the catalogue services `pjsip`, `chansip`, `iax` and `webrtc`, by service name.
    /// A service is absent when its configuration was not found.
    pub services: BTreeMap<String, Vec<Found<PortSpec>>>,
    /// Trunks, in file order.
    pub trunks: Vec<Found<DiscoveredTrunk>>,
    /// What could not be used, and why.
    pub notes: Vec<Note>,
    /// Files read.
    pub files: Vec<String>,
}

/// Read the configuration through `files` (names relative to the Asterisk directory).
pub fn discover(files: &dyn Files) -> Discovery {
    let mut d = Discovery::default();
    let mut trunks = Trunks::default();
    let load = |d: &mut Discovery, name: &str| -> Option<Config> {
        let c = conf::load(name, files)?;
        d.notes.extend(c.notes.iter().cloned());
        d.files.extend(c.files.iter().cloned());
        Some(c)
    };

    if let Some(c) = load(&mut d, "pjsip.conf") {
        pjsip(&c, &mut d, &mut trunks);
    }
    if let Some(c) = load(&mut d, "sip.conf") {
        peers(&c, SignallingProtocol::Chansip, &mut d, &mut trunks);
    }
    if let Some(c) = load(&mut d, "iax.conf") {
        peers(&c, SignallingProtocol::Iax, &mut d, &mut trunks);
    }
    if let Some(c) = load(&mut d, "rtp.conf") {
        d.rtp = range(
            &c,
            &mut d.notes,
            "rtp",
            ("rtpstart", "rtpend"),
            (5000, 31000),
        );
    }
    if let Some(c) = load(&mut d, "udptl.conf") {
        d.udptl = range(
            &c,
            &mut d.notes,
            "udptl",
            ("udptlstart", "udptlend"),
            (4000, 4999),
        );
    }
    if let Some(c) = load(&mut d, "http.conf") {
        http(&c, &mut d);
    }
    d.trunks = trunks.list;
    d
}

/// Parse one configuration text on its own (for the fuzzer): discovery of a single file with
/// no includes.
pub fn discover_text(name: &str, text: &str) -> Discovery {
    struct One<'a>(&'a str, &'a str);
    impl Files for One<'_> {
        fn read(&self, pattern: &str) -> Vec<(String, String)> {
            if pattern == self.0 {
                vec![(self.0.to_string(), self.1.to_string())]
            } else {
                Vec::new()
            }
        }
    }
    discover(&One(name, text))
}

fn note(notes: &mut Vec<Note>, origin: &Origin, message: impl Into<String>) {
    if notes.len() < 1000 {
        notes.push(Note {
            origin: Some(origin.clone()),
            message: message.into(),
        });
    }
}

#[derive(Default)]
struct Trunks {
    list: Vec<Found<DiscoveredTrunk>>,
    seen: BTreeSet<(SignallingProtocol, String)>,
    names: BTreeSet<String>,
}

impl Trunks {
    /// Add a trunk host as written in the PBX's configuration.
    fn add(
        &mut self,
        notes: &mut Vec<Note>,
        protocol: SignallingProtocol,
        name: &str,
        raw: &str,
        origin: &Origin,
        what: String,
    ) {
        let host = match trunk_host(raw) {
            Ok(Some(h)) => h,
            Ok(None) => {
                note(
                    notes,
                    origin,
                    format!("{what}: `{raw}` covers every address; not a trunk"),
                );
                return;
            }
            Err(m) => {
                note(notes, origin, format!("{what}: `{raw}` {m}; skipped"));
                return;
            }
        };
        if !self.seen.insert((protocol, host.clone())) {
            return;
        }
        let base: String = name.chars().filter(|c| !c.is_control()).take(60).collect();
        let base = if base.trim().is_empty() {
            host.clone()
        } else {
            base
        };
        let mut unique = base.clone();
        let mut n = 2;
        while !self.names.insert(unique.clone()) {
            unique = format!("{base}#{n}");
            n += 1;
        }
        self.list.push(Found {
            value: DiscoveredTrunk {
                name: unique,
                protocol,
                host,
            },
            origin: origin.clone(),
            what,
        });
    }
}

/// A trunk host as written (`203.0.113.10`, `[2001:db8::1]:5060`, `198.51.100.0/28`,
/// `192.0.2.0/255.255.255.0`, `sip.example.com:5060`) to a policy `host`. `Ok(None)` for
/// entries that cover everything.
fn trunk_host(raw: &str) -> Result<Option<String>, String> {
    let s = raw.trim();
    // Brackets around IPv6, and a port after a bracket or after a lone colon, are dropped: the
    // policy opens the protocol's signalling ports to the host.
    let s = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']').ok_or("has `[` without `]`")?;
        let after = &rest[close + 1..];
        if !(after.is_empty() || after.starts_with(':') || after.starts_with('/')) {
            return Err("has text after `]`".into());
        }
        let tail = after.strip_prefix(':').map_or(after, |_| "");
        format!("{}{}", &rest[..close], tail)
    } else if s.matches(':').count() == 1 {
        s.split(':').next().unwrap_or(s).to_string()
    } else {
        s.to_string()
    };
    // A dotted netmask to a prefix length.
    let s = match s.split_once('/') {
        Some((addr, mask)) if mask.contains('.') => {
            let m: Ipv4Addr = mask
                .parse()
                .map_err(|_| "has a netmask that is not an address")?;
            let bits = u32::from(m);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err("has a netmask that is not contiguous".into());
            }
            format!("{addr}/{}", bits.leading_ones())
        }
        _ => s,
    };
    match parse_source(&s) {
        Ok((Source::Net(p), _)) if p.prefix_len() == 0 => Ok(None),
        Ok((src, _)) => Ok(Some(src.to_string())),
        Err(m) => Err(m),
    }
}

/// A bind address (`0.0.0.0`, `0.0.0.0:5060`, `[::]:5060`, `[::]`, `::`) to its address (if it
/// is one) and port.
fn bind(raw: &str, default_port: u16) -> Result<(Option<IpAddr>, u16), String> {
    let s = raw.trim();
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("has port `{p}`, which is not 1-65535"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']').ok_or("has `[` without `]`")?;
        let addr = rest[..close].parse().ok();
        return match rest[close + 1..].strip_prefix(':') {
            Some(p) => Ok((addr, port(p)?)),
            None => Ok((addr, default_port)),
        };
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok((Some(a), default_port));
    }
    match s.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => Ok((a.parse().ok(), port(p)?)),
        _ if s.is_empty() => Ok((None, default_port)),
        _ if !s.contains(':') => Ok((None, default_port)),
        _ => Err("is not an address with an optional port".into()),
    }
}

/// Whether a bind address carries its own port (`0.0.0.0:5160`, `[::]:5060`).
fn has_port(raw: &str) -> bool {
    let s = raw.trim();
    match s.strip_prefix('[') {
        Some(r) => r.split_once(']').is_some_and(|(_, p)| p.starts_with(':')),
        None => s.matches(':').count() == 1,
    }
}

/// Add `proto/port` for service `svc` unless the bind is loopback-only.
fn add_port(
    d: &mut Discovery,
    svc: &str,
    proto: L4,
    bound: (Option<IpAddr>, u16),
    origin: &Origin,
    what: String,
) {
    if bound.0.is_some_and(|a| a.is_loopback()) {
        note(
            &mut d.notes,
            origin,
            format!("{what} binds to loopback only; nothing to open"),
        );
        return;
    }
    let spec = PortSpec {
        proto,
        ports: PortRange::single(bound.1),
    };
    let list = d.services.entry(svc.to_string()).or_default();
    if !list.iter().any(|f| f.value == spec) {
        list.push(Found {
            value: spec,
            origin: origin.clone(),
            what,
        });
    }
}

fn type_of(s: &Section) -> Option<String> {
    s.get("type").map(|v| v.value.to_ascii_lowercase())
}

fn pjsip(c: &Config, d: &mut Discovery, trunks: &mut Trunks) {
    let proto = SignallingProtocol::Pjsip;
    // Which endpoint lists an AOR, so a static contact is named after its trunk.
    let mut aor_owner: BTreeMap<String, String> = BTreeMap::new();
    for s in c.objects() {
        if type_of(s).as_deref() == Some("endpoint") {
            for v in s.all("aors") {
                for aor in v.value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                    aor_owner
                        .entry(aor.to_string())
                        .or_insert_with(|| s.name.clone());
                }
            }
        }
    }
    let mut websocket = None;
    let mut transports = 0;
    // The most telling source of a trunk's host first: `identify` (what Asterisk matches
    // requests by), then the registration's server, then static contacts.
    let rank = |s: &&Section| match type_of(s).as_deref() {
        Some("transport") => 0,
        Some("identify") => 1,
        Some("registration") => 2,
        Some("aor") => 3,
        _ => 4,
    };
    let mut objects: Vec<&Section> = c.objects().collect();
    objects.sort_by_key(rank);
    for s in objects {
        match type_of(s).as_deref() {
            Some("transport") => {
                transports += 1;
                let protocol = s
                    .get("protocol")
                    .map_or("udp".to_string(), |v| v.value.to_ascii_lowercase());
                let (l4, default_port) = match protocol.as_str() {
                    "udp" => (L4::Udp, 5060),
                    "tcp" => (L4::Tcp, 5060),
                    "tls" => (L4::Tcp, 5061),
                    "ws" | "wss" => {
                        websocket.get_or_insert_with(|| s.origin.clone());
                        continue;
                    }
                    other => {
                        note(
                            &mut d.notes,
                            &s.origin,
                            format!("transport {}: protocol `{other}` is not udp, tcp, tls, ws or wss; skipped", s.name),
                        );
                        continue;
                    }
                };
                let (raw, origin) = s
                    .get("bind")
                    .map_or(("0.0.0.0", &s.origin), |v| (v.value.as_str(), &v.origin));
                match bind(raw, default_port) {
                    Ok(b) => add_port(
                        d,
                        "pjsip",
                        l4,
                        b,
                        origin,
                        format!("transport {} ({protocol})", s.name),
                    ),
                    Err(m) => note(
                        &mut d.notes,
                        origin,
                        format!("transport {}: bind `{raw}` {m}; skipped", s.name),
                    ),
                }
            }
            Some("identify") => {
                let name = s.get("endpoint").map_or(s.name.as_str(), |v| &v.value);
                for v in s.all("match") {
                    for m in v.value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                        trunks.add(
                            &mut d.notes,
                            proto,
                            name,
                            m,
                            &v.origin,
                            format!("identify {} match", s.name),
                        );
                    }
                }
            }
            Some("registration") => {
                let name = s.get("endpoint").map_or(s.name.as_str(), |v| &v.value);
                if let Some(v) = s.get("server_uri") {
                    match uri_host(&v.value) {
                        Some(h) => trunks.add(
                            &mut d.notes,
                            proto,
                            name,
                            h,
                            &v.origin,
                            format!("registration {} server_uri", s.name),
                        ),
                        None => note(
                            &mut d.notes,
                            &v.origin,
                            format!(
                                "registration {}: server_uri `{}` has no host",
                                s.name, v.value
                            ),
                        ),
                    }
                }
            }
            Some("aor") => {
                let name = aor_owner.get(&s.name).unwrap_or(&s.name);
                for v in s.all("contact") {
                    for uri in v.value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                        if let Some(h) = uri_host(uri) {
                            trunks.add(
                                &mut d.notes,
                                proto,
                                name,
                                h,
                                &v.origin,
                                format!("aor {} contact", s.name),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if transports == 0 {
        d.notes.push(Note {
            origin: None,
            message: "pjsip: no type=transport section; PJSIP listens on nothing and its ports are left as the policy has them".into(),
        });
    }
    if let Some(origin) = websocket {
        note(
            &mut d.notes,
            &origin,
            "WebSocket transports (ws, wss) use the HTTP server's ports: see the webrtc service",
        );
    }
}

/// The host of a SIP URI: `sip:user@host:port;params`, `sips:host`, `<sip:…>`.
fn uri_host(uri: &str) -> Option<&str> {
    let u = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let u = u
        .strip_prefix("sips:")
        .or_else(|| u.strip_prefix("sip:"))
        .unwrap_or(u);
    let u = u.split([';', '?', '>']).next()?;
    let host = u.rsplit_once('@').map_or(u, |(_, h)| h);
    (!host.is_empty()).then_some(host)
}

/// chan_sip and IAX: the `[general]` binds, then peers and `register =>` lines.
fn peers(c: &Config, proto: SignallingProtocol, d: &mut Discovery, trunks: &mut Trunks) {
    let (svc, file) = match proto {
        SignallingProtocol::Chansip => ("chansip", "sip"),
        _ => ("iax", "iax2"),
    };
    let general = c.sections_named("general").last();
    let default_port = if proto == SignallingProtocol::Iax {
        4569
    } else {
        5060
    };
    let g = |k: &str| general.and_then(|s| s.get(k));
    let mut bindport = default_port;
    let mut bind_origin = general.map(|s| s.origin.clone());
    if let Some(v) = g("bindport") {
        match v.value.parse::<u16>().ok().filter(|p| *p > 0) {
            Some(p) => {
                bindport = p;
                bind_origin = Some(v.origin.clone());
            }
            None => note(
                &mut d.notes,
                &v.origin,
                format!(
                    "bindport `{}` is not 1-65535; Asterisk's default {default_port} is assumed",
                    v.value
                ),
            ),
        }
    }
    let Some(general_origin) = bind_origin else {
        d.notes.push(Note {
            origin: None,
            message: format!(
                "{file}: no [general] section; the {svc} ports are left as the policy has them"
            ),
        });
        return peer_sections(c, proto, d, trunks);
    };
    // UDP: udpbindaddr (chan_sip) or every bindaddr, else the wildcard on bindport.
    let udp_binds: Vec<_> = match general {
        Some(s) if s.get("udpbindaddr").is_some() => s.all("udpbindaddr").collect(),
        Some(s) => s.all("bindaddr").collect(),
        None => Vec::new(),
    };
    if udp_binds.is_empty() {
        add_port(
            d,
            svc,
            L4::Udp,
            (None, bindport),
            &general_origin,
            format!("{file} bindport (udp)"),
        );
    }
    for v in udp_binds {
        match bind(&v.value, bindport) {
            Ok(b) if !has_port(&v.value) => add_port(
                d,
                svc,
                L4::Udp,
                b,
                &general_origin,
                format!("{file} bindport (udp), {} at line {}", v.key, v.origin.line),
            ),
            Ok(b) => add_port(
                d,
                svc,
                L4::Udp,
                b,
                &v.origin,
                format!("{file} {} (udp)", v.key),
            ),
            Err(m) => note(
                &mut d.notes,
                &v.origin,
                format!("{} `{}` {m}", v.key, v.value),
            ),
        }
    }
    if proto == SignallingProtocol::Chansip {
        for (enable, addr, port, what) in [
            ("tcpenable", "tcpbindaddr", 5060, "tcp"),
            ("tlsenable", "tlsbindaddr", 5061, "tls"),
        ] {
            let Some(on) = g(enable).filter(|v| truthy(&v.value)) else {
                continue;
            };
            let (raw, origin) =
                g(addr).map_or(("0.0.0.0", &on.origin), |v| (v.value.as_str(), &v.origin));
            match bind(raw, port) {
                Ok(b) => add_port(d, svc, L4::Tcp, b, origin, format!("sip {addr} ({what})")),
                Err(m) => note(&mut d.notes, origin, format!("{addr} `{raw}` {m}")),
            }
        }
    }
    // Peers first, so a `register =>` line for a peer's host is listed under the peer's name.
    peer_sections(c, proto, d, trunks);
    // `register =>` lines live in [general].
    if let Some(s) = general {
        for v in s.all("register") {
            match register_host(&v.value) {
                Some((peer, host)) => trunks.add(
                    &mut d.notes,
                    proto,
                    peer.unwrap_or(host),
                    host,
                    &v.origin,
                    format!("{file} register"),
                ),
                None => note(
                    &mut d.notes,
                    &v.origin,
                    format!("register `{}` has no host", v.value),
                ),
            }
        }
    }
}

fn peer_sections(c: &Config, proto: SignallingProtocol, d: &mut Discovery, trunks: &mut Trunks) {
    for s in c.objects() {
        if s.name.eq_ignore_ascii_case("general") || s.name.eq_ignore_ascii_case("authentication") {
            continue;
        }
        if type_of(s).as_deref() == Some("user") {
            continue; // a user is matched by name, never by address
        }
        let Some(host) = s.get("host") else { continue };
        let h = host.value.trim();
        if h.eq_ignore_ascii_case("dynamic") || h.is_empty() {
            continue; // a phone: the responsive layer and registrations handle it
        }
        trunks.add(
            &mut d.notes,
            proto,
            &s.name,
            h,
            &host.origin,
            format!("peer {} host", s.name),
        );
        for v in s.all("permit") {
            // FreePBX writes several networks joined by `&`.
            for p in v.value.split('&').map(str::trim).filter(|p| !p.is_empty()) {
                trunks.add(
                    &mut d.notes,
                    proto,
                    &s.name,
                    p,
                    &v.origin,
                    format!("peer {} permit", s.name),
                );
            }
        }
    }
}

/// `register => [peer?][transport://]user[@domain][:secret[:authuser]]@host[:port][/ext][~expiry]`
/// (chan_sip) and `register => user[:secret]@host[:port]` (IAX) to (peer, host).
fn register_host(v: &str) -> Option<(Option<&str>, &str)> {
    let v = v.trim();
    let (peer, rest) = match v.split_once('?') {
        Some((p, r)) if !p.contains('@') && !p.contains(':') => (Some(p.trim()), r),
        _ => (None, v),
    };
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let rest = rest.split('~').next()?;
    let at = rest.rfind('@')?;
    let hostport = rest[at + 1..].split('/').next()?;
    let host = match hostport.strip_prefix('[') {
        Some(r) => r.split(']').next()?,
        None => hostport.split(':').next()?,
    };
    (!host.is_empty()).then_some((peer.filter(|p| !p.is_empty()), host))
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "y" | "t" | "1" | "on"
    )
}

fn range(
    c: &Config,
    notes: &mut Vec<Note>,
    what: &str,
    keys: (&str, &str),
    defaults: (u16, u16),
) -> Option<Found<PortRange>> {
    let general = c.sections_named("general").last()?;
    let get = |notes: &mut Vec<Note>, k: &str, default: u16| -> (u16, Option<Origin>) {
        match general.get(k) {
            Some(v) => match v.value.parse::<u16>() {
                Ok(p) if p > 0 => (p, Some(v.origin.clone())),
                _ => {
                    note(
                        notes,
                        &v.origin,
                        format!(
                            "{k} `{}` is not 1-65535; Asterisk's default {default} is assumed",
                            v.value
                        ),
                    );
                    (default, None)
                }
            },
            None => (default, None),
        }
    };
    let (first, o1) = get(notes, keys.0, defaults.0);
    let (last, o2) = get(notes, keys.1, defaults.1);
    if first > last {
        note(
            notes,
            &general.origin,
            format!(
                "{what}: {} {first} is above {} {last}; not used",
                keys.0, keys.1
            ),
        );
        return None;
    }
    let origin = o1.clone().or(o2.clone()).unwrap_or(general.origin.clone());
    let detail = match (o1, o2) {
        (Some(_), Some(b)) => format!("{}, {} at line {}", keys.0, keys.1, b.line),
        (Some(_), None) => format!("{}, {} by Asterisk's default", keys.0, keys.1),
        (None, Some(_)) => format!("{}, {} by Asterisk's default", keys.1, keys.0),
        (None, None) => format!("Asterisk's defaults (no {} or {})", keys.0, keys.1),
    };
    Some(Found {
        value: PortRange { first, last },
        origin,
        what: detail,
    })
}

fn http(c: &Config, d: &mut Discovery) {
    let Some(g) = c.sections_named("general").last() else {
        return;
    };
    let mut any = false;
    if let Some(v) = g.get("enabled").filter(|v| truthy(&v.value)) {
        any = true;
        let (port, origin) = match g.get("bindport") {
            Some(p) => (p.value.parse::<u16>().ok().filter(|p| *p > 0), &p.origin),
            None => (Some(8088), &v.origin),
        };
        let addr = g
            .get("bindaddr")
            .and_then(|a| bind(&a.value, 0).ok())
            .and_then(|b| b.0);
        match port {
            Some(p) => add_port(
                d,
                "webrtc",
                L4::Tcp,
                (addr, p),
                origin,
                "http bindport (ws)".into(),
            ),
            None => note(&mut d.notes, origin, "http bindport is not 1-65535"),
        }
    }
    if let Some(v) = g.get("tlsenable").filter(|v| truthy(&v.value)) {
        any = true;
        let (raw, origin) = g
            .get("tlsbindaddr")
            .map_or(("0.0.0.0", &v.origin), |a| (a.value.as_str(), &a.origin));
        match bind(raw, 8089) {
            Ok(b) => add_port(
                d,
                "webrtc",
                L4::Tcp,
                b,
                origin,
                "http tlsbindaddr (wss)".into(),
            ),
            Err(m) => note(&mut d.notes, origin, format!("tlsbindaddr `{raw}` {m}")),
        }
    }
    if !any {
        note(
            &mut d.notes,
            &g.origin,
            "the HTTP server is disabled (enabled, tlsenable not yes): WebRTC has no port; the webrtc service is left as the policy has it",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_as_asterisk_writes_them() {
        let ok = |raw: &str| trunk_host(raw).unwrap().unwrap();
        assert_eq!(ok("203.0.113.10"), "203.0.113.10");
        assert_eq!(ok("203.0.113.10:5060"), "203.0.113.10");
        assert_eq!(ok("[2001:db8::1]:5060"), "2001:db8::1");
        assert_eq!(ok("2001:db8::/48"), "2001:db8::/48");
        assert_eq!(ok("192.0.2.0/255.255.255.0"), "192.0.2.0/24");
        assert_eq!(ok("Sip.Example.COM:5061"), "sip.example.com");
        assert_eq!(trunk_host("0.0.0.0/0.0.0.0").unwrap(), None);
        assert!(trunk_host("192.0.2.0/255.0.255.0").is_err());
        assert!(trunk_host("bad host!").is_err());
    }

    #[test]
    fn binds() {
        assert_eq!(
            bind("0.0.0.0", 5060).unwrap(),
            (Some([0, 0, 0, 0].into()), 5060)
        );
        assert_eq!(bind("0.0.0.0:5160", 5060).unwrap().1, 5160);
        assert_eq!(bind("[::]:5062", 5060).unwrap().1, 5062);
        assert_eq!(bind("::", 8089).unwrap().1, 8089);
        assert!(bind("0.0.0.0:99999", 5060).is_err());
    }

    #[test]
    fn uris_and_registers() {
        assert_eq!(
            uri_host("sip:sip.example.com:5060"),
            Some("sip.example.com:5060")
        );
        assert_eq!(
            uri_host("<sips:u@[2001:db8::1]:5061;transport=tls>"),
            Some("[2001:db8::1]:5061")
        );
        assert_eq!(
            register_host("u:p@host.example:5060/100"),
            Some((None, "host.example"))
        );
        assert_eq!(
            register_host("trunk?tcp://u:p:auth@198.51.100.1:5060/1~3600"),
            Some((Some("trunk"), "198.51.100.1"))
        );
        assert_eq!(register_host("nohost"), None);
    }

    #[test]
    fn one_pjsip_file() {
        let d = discover_text(
            "pjsip.conf",
            "[t](!)\ntype=identify\n[udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0\n[lo]\ntype=transport\nprotocol=tcp\nbind=127.0.0.1:5080\n[tls]\ntype=transport\nprotocol=tls\nbind=[::]\n[a](t)\nendpoint=prov\nmatch=203.0.113.10, 198.51.100.0/28,203.0.113.10\n[phone]\ntype=endpoint\naors=phone\n[phone](+)\nauth=phone\n",
        );
        let ports: Vec<String> = d.services["pjsip"]
            .iter()
            .map(|f| f.value.to_string())
            .collect();
        assert_eq!(ports, ["udp/5060", "tcp/5061"]);
        let trunks: Vec<String> = d
            .trunks
            .iter()
            .map(|t| {
                format!(
                    "{} {} {} {}",
                    t.value.name, t.value.protocol, t.value.host, t.origin
                )
            })
            .collect();
        assert_eq!(
            trunks,
            [
                "prov pjsip 203.0.113.10 pjsip.conf:17",
                "prov#2 pjsip 198.51.100.0/28 pjsip.conf:17"
            ]
        );
        assert!(d.notes.iter().any(|n| n.message.contains("loopback")));
    }
}
