//! From a parsed document to a [`ValidPolicy`], collecting every problem on the way.
//!
//! The document is walked by hand rather than through `#[derive(Deserialize)]` because serde
//! stops at the first problem, and an administrator fixing a policy wants all of them at once,
//! each with its path.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{
    catalogue, BlacklistEntry, DenyVerdict, NetworkOverride, Pbx, PortRange, PortSpec, Rate,
    Responsive, Service, Settings, SignallingProtocol, Source, Tier, Trunk, User, ValidPolicy,
    Zone,
};
use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::net::{Prefix, PrefixError};

/// Why a policy document could not be read at all (its syntax, not its meaning).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// TOML syntax.
    #[error("TOML syntax error: {message}")]
    Toml {
        /// The parser's message, with line and column.
        message: String,
    },
    /// JSON syntax.
    #[error("JSON syntax error at line {line}, column {column}: {message}")]
    Json {
        /// What is wrong.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The input is larger than the limit.
    #[error("policy is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Bytes given.
        size: usize,
        /// Bytes allowed.
        limit: usize,
    },
}

/// Largest policy text accepted (a 100k-entry blacklist is about 2 MB).
pub const MAX_POLICY_BYTES: usize = 64 << 20;
/// Longest name (service, trunk, user).
const MAX_NAME: usize = 64;
/// Longest description.
const MAX_DESCRIPTION: usize = 256;

pub(super) fn parse_toml(text: &str) -> Result<Value, ParseError> {
    check_size(text)?;
    // Straight into the JSON value model (one pass; a TOML table first would be two).
    let doc: Value = toml::from_str(text).map_err(|e| ParseError::Toml {
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok(doc)
}

pub(super) fn parse_json(text: &str) -> Result<Value, ParseError> {
    check_size(text)?;
    serde_json::from_str(text).map_err(|e| ParseError::Json {
        message: e.to_string(),
        line: e.line(),
        column: e.column(),
    })
}

fn check_size(text: &str) -> Result<(), ParseError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(ParseError::TooLarge {
            size: text.len(),
            limit: MAX_POLICY_BYTES,
        });
    }
    Ok(())
}

/// Paths are built as strings: `networks[3].source`, `services.ssh.ports[0]`.
fn key(path: &str, k: &str) -> String {
    let simple = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (path.is_empty(), simple) {
        (true, true) => k.to_string(),
        (true, false) => crate::diag::quote(k),
        (false, true) => format!("{path}.{k}"),
        (false, false) => format!("{path}.{}", crate::diag::quote(k)),
    }
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The walker: carries the diagnostics found so far.
#[derive(Default)]
struct Cx {
    diags: Vec<Diagnostic>,
}

impl Cx {
    fn push(&mut self, severity: Severity, path: &str, value: Option<&str>, message: String) {
        self.diags.push(Diagnostic {
            path: if path.is_empty() {
                "(policy)".into()
            } else {
                path.to_string()
            },
            severity,
            value: value.map(str::to_string),
            message,
        });
    }

    fn err(&mut self, path: &str, value: Option<&str>, message: impl Into<String>) {
        self.push(Severity::Error, path, value, message.into());
    }

    fn warn(&mut self, path: &str, value: Option<&str>, message: impl Into<String>) {
        self.push(Severity::Warning, path, value, message.into());
    }

    fn type_err(&mut self, path: &str, v: &Value, expected: &str) {
        let got = match v {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "a table",
        };
        self.err(path, None, format!("must be {expected}, not {got}"));
    }

    /// A table whose keys must all be in `known`; unknown keys are errors.
    fn table<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        known: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(m) = v else {
            self.type_err(path, v, "a table");
            return None;
        };
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                self.err(
                    &key(path, k),
                    None,
                    format!(
                        "is not a known key here (expected one of: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        Some(m)
    }

    /// A table with free keys (interfaces, services).
    fn map<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            _ => {
                self.type_err(path, v, "a table");
                None
            }
        }
    }

    fn string<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            _ => {
                self.type_err(path, v, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.type_err(path, v, "true or false");
                None
            }
        }
    }

    fn array<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            _ => {
                self.type_err(path, v, "a list");
                None
            }
        }
    }

    /// A list of strings; returns (index, string) for each element that is one.
    fn strings<'v>(&mut self, v: &'v Value, path: &str) -> Vec<(usize, &'v str)> {
        let Some(a) = self.array(v, path) else {
            return Vec::new();
        };
        a.iter()
            .enumerate()
            .filter_map(|(i, e)| self.string(e, &idx(path, i)).map(|s| (i, s)))
            .collect()
    }

    fn zone(&mut self, v: &Value, path: &str) -> Option<Zone> {
        let s = self.string(v, path)?;
        match s.parse() {
            Ok(z) => Some(z),
            Err(()) => {
                self.err(
                    path,
                    Some(s),
                    "is not a zone (trusted, local, other, internet, reject; aliases: external, internal)",
                );
                None
            }
        }
    }

    fn zones(&mut self, v: &Value, path: &str) -> Option<BTreeSet<Zone>> {
        let items = self.strings(v, path);
        let mut out = BTreeSet::new();
        for (i, s) in items {
            match s.parse::<Zone>() {
                Ok(z) => {
                    if !out.insert(z) {
                        self.warn(&idx(path, i), Some(s), "is listed twice");
                    }
                }
                Err(()) => self.err(
                    &idx(path, i),
                    Some(s),
                    "is not a zone (trusted, local, other, internet, reject; aliases: external, internal)",
                ),
            }
        }
        Some(out)
    }

    fn port_specs(&mut self, v: &Value, path: &str) -> Option<Vec<PortSpec>> {
        let items = self.strings(v, path);
        let mut out = Vec::new();
        let mut ok = true;
        for (i, s) in items {
            match s.parse::<PortSpec>() {
                Ok(p) => {
                    if out.contains(&p) {
                        self.warn(&idx(path, i), Some(s), "is listed twice");
                    } else {
                        out.push(p);
                    }
                }
                Err(m) => {
                    ok = false;
                    self.err(&idx(path, i), Some(s), m);
                }
            }
        }
        if ok && out.is_empty() {
            self.err(
                path,
                None,
                "must list at least one port (udp/N, tcp/N, udp/N-M, tcp/N-M)",
            );
            return None;
        }
        ok.then_some(out)
    }

    fn name(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        if s.trim().is_empty() {
            self.err(path, Some(s), "is empty");
            return None;
        }
        if s.chars().count() > MAX_NAME || s.chars().any(char::is_control) {
            self.err(
                path,
                Some(s),
                format!("must be at most {MAX_NAME} characters without control characters"),
            );
            return None;
        }
        Some(s.to_string())
    }

    fn description(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        if s.chars().count() > MAX_DESCRIPTION {
            self.err(
                path,
                Some(s),
                format!("is longer than {MAX_DESCRIPTION} characters"),
            );
            return None;
        }
        Some(s.to_string())
    }

    /// An address, CIDR or hostname.
    fn source(&mut self, v: &Value, path: &str) -> Option<Source> {
        let s = self.string(v, path)?;
        match parse_source(s) {
            Ok((src, host_bits)) => {
                if host_bits {
                    self.warn(
                        path,
                        Some(s),
                        format!("has host bits set; it is read as {src}"),
                    );
                }
                Some(src)
            }
            Err(m) => {
                self.err(path, Some(s), m);
                None
            }
        }
    }

    fn port_range(&mut self, v: &Value, path: &str, setting: &str) -> Option<Option<PortRange>> {
        let s = self.string(v, path)?;
        let r: PortRange = match s.parse() {
            Ok(r) => r,
            Err(m) => {
                self.err(path, Some(s), m);
                return None;
            }
        };
        Some(clip_below_1024(self, r, path, s, setting))
    }
}

/// docs/policy.md, "Media ranges": nothing below 1024 is opened for media, and never silently.
fn clip_below_1024(
    cx: &mut Cx,
    r: PortRange,
    path: &str,
    written: &str,
    setting: &str,
) -> Option<PortRange> {
    if r.last < 1024 {
        cx.warn(
            path,
            Some(written),
            format!("lies entirely below 1024, so {setting} opens nothing"),
        );
        None
    } else if r.first < 1024 {
        cx.warn(
            path,
            Some(written),
            format!(
                "starts below 1024; {setting} opens only 1024-{} (ports {}-1023 are never opened for media)",
                r.last, r.first
            ),
        );
        Some(PortRange {
            first: 1024,
            last: r.last,
        })
    } else {
        Some(r)
    }
}

/// Parse an address, CIDR or hostname. Returns the source and whether host bits were cleared.
pub(crate) fn parse_source(s: &str) -> Result<(Source, bool), String> {
    const NOT_ANY: &str = "is neither an address, a CIDR nor a hostname";
    match Prefix::parse_lenient(s) {
        Ok((p, host_bits)) => Ok((Source::Net(p), host_bits)),
        Err(PrefixError::BadLength { max }) if s.contains('/') && addr_part_ok(s) => {
            Err(format!("has a prefix length outside 0..={max}"))
        }
        Err(_) => {
            if is_hostname(s) {
                Ok((
                    Source::Host(s.trim_end_matches('.').to_ascii_lowercase()),
                    false,
                ))
            } else {
                Err(NOT_ANY.into())
            }
        }
    }
}

fn addr_part_ok(s: &str) -> bool {
    s.split_once('/')
        .is_some_and(|(a, _)| a.parse::<std::net::IpAddr>().is_ok())
}

/// RFC 1123 host names; the last label may not be all digits (so `10.0.0.300` is no name).
pub(crate) fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = s.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    labels.iter().all(label_ok) && !labels.last().unwrap().bytes().all(|b| b.is_ascii_digit())
}

/// Linux interface names: 1 to 15 bytes; we allow the characters distributions use. The
/// backends check the IR's names with it too: a name reaches their rules quoted.
pub fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Custom service names become parts of set and chain names, so they are kept plain.
fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

const ROOT_KEYS: &[&str] = &[
    "settings",
    "interfaces",
    "networks",
    "services",
    "custom_services",
    "pbx",
    "blacklist",
    "responsive",
    "users",
    "fleet",
];

pub(super) fn validate(doc: &Value, lists: &super::ListTexts) -> Result<ValidPolicy, Diagnostics> {
    let mut cx = Cx::default();
    let empty = Map::new();
    let root = cx.table(doc, "", ROOT_KEYS).unwrap_or(&empty);
    if root.is_empty() && doc.is_object() {
        cx.warn(
            "",
            None,
            "is empty: every interface is in the internet zone and only the defaults apply",
        );
    }

    let settings = settings(&mut cx, root.get("settings"));
    let interfaces = interfaces(&mut cx, root.get("interfaces"));
    let mut services = services(&mut cx, root.get("services"));
    custom_services(&mut cx, root.get("custom_services"), &mut services);
    let networks = networks(&mut cx, root.get("networks"));
    let pbx = pbx(&mut cx, root.get("pbx"));
    let blacklist = blacklist(&mut cx, root.get("blacklist"), lists);
    let responsive = responsive(&mut cx, root.get("responsive"), &services);
    let users = users(&mut cx, root.get("users"), &services);
    let fleet = root.get("fleet").and_then(|v| fleet(&mut cx, v));

    for (path, range, what) in [
        ("pbx.rtp", pbx.rtp, "RTP"),
        ("pbx.udptl", pbx.udptl, "UDPTL"),
    ] {
        // Only ranges the policy writes: the UDPTL default (Asterisk's 4000-4999) contains
        // IAX's 4569 on every stock system, and warning about a default helps nobody.
        let written = root.get("pbx").and_then(|p| p.get(&path[4..])).is_some();
        let Some(range) = range.filter(|_| written) else {
            continue;
        };
        for svc in services.values().filter(|s| s.signalling.is_some()) {
            for spec in svc.ports.iter().filter(|p| p.proto == super::L4::Udp) {
                if spec.ports.first <= range.last && range.first <= spec.ports.last {
                    cx.warn(
                        path,
                        Some(&range.to_string()),
                        format!(
                            "contains {}'s signalling port udp/{}; it is not opened as {what}",
                            svc.name, spec.ports
                        ),
                    );
                }
            }
        }
    }
    for proto in &responsive.protocols {
        let svc = &services[proto.service_name()];
        if responsive.enabled && svc.zones.contains(&Zone::Internet) {
            cx.warn(
                &format!("services.{}.zones", svc.name),
                Some("internet"),
                format!(
                    "grants {} signalling to the whole internet, bypassing the responsive layer",
                    svc.name
                ),
            );
        }
    }

    let diags = Diagnostics(cx.diags);
    if diags.has_errors() {
        return Err(diags);
    }
    Ok(ValidPolicy {
        settings,
        interfaces,
        networks,
        services,
        pbx,
        blacklist,
        responsive,
        users,
        fleet,
        warnings: diags.0,
    })
}

fn settings(cx: &mut Cx, v: Option<&Value>) -> Settings {
    let mut s = Settings::default();
    let Some(v) = v else { return s };
    let Some(m) = cx.table(
        v,
        "settings",
        &[
            "default_verdict",
            "icmp_echo_rate",
            "log_denied",
            "acme",
            "admins",
        ],
    ) else {
        return s;
    };
    if let Some(v) = m.get("default_verdict") {
        let path = "settings.default_verdict";
        match cx.string(v, path) {
            Some("drop") => s.default_verdict = DenyVerdict::Drop,
            Some("reject") => s.default_verdict = DenyVerdict::Reject,
            Some(other) => cx.err(path, Some(other), "is not \"drop\" or \"reject\""),
            None => {}
        }
    }
    if let Some(v) = m.get("icmp_echo_rate") {
        let path = "settings.icmp_echo_rate";
        if let Some(text) = cx.string(v, path) {
            match text.parse::<Rate>() {
                Ok(r) => s.icmp_echo_rate = r,
                Err(msg) => cx.err(path, Some(text), msg),
            }
        }
    }
    if let Some(b) = m
        .get("log_denied")
        .and_then(|v| cx.boolean(v, "settings.log_denied"))
    {
        s.log_denied = b;
    }
    if let Some(b) = m.get("acme").and_then(|v| cx.boolean(v, "settings.acme")) {
        s.acme = b;
    }
    if let Some(list) = m.get("admins").and_then(|v| cx.array(v, "settings.admins")) {
        for (i, v) in list.iter().enumerate() {
            let path = format!("settings.admins[{i}]");
            if let Some(text) = cx.string(v, &path) {
                match text.parse::<super::Admin>() {
                    Ok(a) => s.admins.push(a),
                    Err(_) => cx.err(
                        &path,
                        Some(text),
                        "is not an address, ADDR:PORT or [ADDR6]:PORT",
                    ),
                }
            }
        }
    }
    s
}

fn interfaces(cx: &mut Cx, v: Option<&Value>) -> BTreeMap<String, Zone> {
    let mut out = BTreeMap::new();
    let Some(m) = v.and_then(|v| cx.map(v, "interfaces")) else {
        return out;
    };
    for (name, zone) in m {
        let path = key("interfaces", name);
        if !is_interface_name(name) {
            cx.err(
                &path,
                Some(name),
                "is not an interface name (1 to 15 letters, digits, '-', '_', '.', '@')",
            );
            continue;
        }
        let Some(zone) = cx.zone(zone, &path) else {
            continue;
        };
        if zone == Zone::Trusted {
            cx.warn(
                &path,
                Some("trusted"),
                format!("puts interface {name} in the trusted zone: every packet arriving on it is accepted; trusted is meant for networks and hosts"),
            );
        }
        if name == "lo" {
            cx.warn(
                &path,
                Some(name),
                "is loopback, which is always accepted; its zone has no effect",
            );
        }
        out.insert(name.clone(), zone);
    }
    out
}

fn services(cx: &mut Cx, v: Option<&Value>) -> BTreeMap<String, Service> {
    let mut out: BTreeMap<String, Service> = catalogue()
        .into_iter()
        .map(|e| {
            (
                e.name.to_string(),
                Service {
                    name: e.name.to_string(),
                    ports: e.ports,
                    zones: e.zones.into_iter().collect(),
                    signalling: e.signalling,
                    builtin: true,
                },
            )
        })
        .collect();
    let Some(m) = v.and_then(|v| cx.map(v, "services")) else {
        return out;
    };
    for (name, body) in m {
        let path = key("services", name);
        let Some(svc) = out.get_mut(name) else {
            cx.err(
                &path,
                Some(name),
                "is not a catalogue service; define your own under [[custom_services]]",
            );
            continue;
        };
        let Some(t) = cx.table(body, &path, &["zones", "ports"]) else {
            continue;
        };
        if let Some(z) = t
            .get("zones")
            .and_then(|v| cx.zones(v, &key(&path, "zones")))
        {
            svc.zones = z;
        }
        if let Some(p) = t
            .get("ports")
            .and_then(|v| cx.port_specs(v, &key(&path, "ports")))
        {
            svc.ports = p;
        }
    }
    out
}

fn custom_services(cx: &mut Cx, v: Option<&Value>, services: &mut BTreeMap<String, Service>) {
    let Some(a) = v.and_then(|v| cx.array(v, "custom_services")) else {
        return;
    };
    for (i, item) in a.iter().enumerate() {
        let path = idx("custom_services", i);
        let Some(t) = cx.table(item, &path, &["name", "ports", "zones", "description"]) else {
            continue;
        };
        let name_path = key(&path, "name");
        let name = match t.get("name") {
            None => {
                cx.err(&name_path, None, "is missing");
                None
            }
            Some(v) => cx.string(v, &name_path).and_then(|n| {
                if !is_service_name(n) {
                    cx.err(
                        &name_path,
                        Some(n),
                        "is not a service name (lowercase letter first, then lowercase letters, digits, '-' or '_', at most 32)",
                    );
                    None
                } else if let Some(existing) = services.get(n) {
                    let what = if existing.builtin {
                        "a catalogue service (override it under [services])"
                    } else {
                        "another custom service"
                    };
                    cx.err(&name_path, Some(n), format!("is already the name of {what}"));
                    None
                } else {
                    Some(n.to_string())
                }
            }),
        };
        let ports = match t.get("ports") {
            None => {
                cx.err(&key(&path, "ports"), None, "is missing");
                None
            }
            Some(v) => cx.port_specs(v, &key(&path, "ports")),
        };
        let zones = match t.get("zones") {
            None => Some(BTreeSet::new()),
            Some(v) => cx.zones(v, &key(&path, "zones")),
        };
        if let Some(v) = t.get("description") {
            cx.description(v, &key(&path, "description"));
        }
        if let (Some(name), Some(ports), Some(zones)) = (name, ports, zones) {
            services.insert(
                name.clone(),
                Service {
                    name,
                    ports,
                    zones,
                    signalling: None,
                    builtin: false,
                },
            );
        }
    }
}

fn networks(cx: &mut Cx, v: Option<&Value>) -> Vec<NetworkOverride> {
    let mut out: Vec<NetworkOverride> = Vec::new();
    let Some(a) = v.and_then(|v| cx.array(v, "networks")) else {
        return out;
    };
    let mut seen: BTreeMap<Source, (usize, Zone)> = BTreeMap::new();
    for (i, item) in a.iter().enumerate() {
        let path = idx("networks", i);
        let Some(t) = cx.table(item, &path, &["source", "zone", "description"]) else {
            continue;
        };
        let source = match t.get("source") {
            Some(v) => cx.source(v, &key(&path, "source")),
            None => {
                cx.err(&key(&path, "source"), None, "is missing");
                None
            }
        };
        let zone = match t.get("zone") {
            Some(v) => cx.zone(v, &key(&path, "zone")),
            None => {
                cx.err(&key(&path, "zone"), None, "is missing");
                None
            }
        };
        let description = t
            .get("description")
            .and_then(|v| cx.description(v, &key(&path, "description")));
        let (Some(source), Some(zone)) = (source, zone) else {
            continue;
        };
        let written = source.to_string();
        if let Source::Net(p) = &source {
            if p.prefix_len() == 0 {
                cx.warn(
                    &key(&path, "source"),
                    Some(&written),
                    format!(
                        "covers every {} address: all of them are zone {zone}",
                        p.family()
                    ),
                );
            }
        }
        match seen.get(&source) {
            Some((j, z)) if *z == zone => {
                cx.warn(
                    &key(&path, "source"),
                    Some(&written),
                    format!("repeats networks[{j}] (same zone); the repeat has no effect"),
                );
                continue;
            }
            Some((j, z)) => {
                cx.err(
                    &key(&path, "source"),
                    Some(&written),
                    format!("conflicts with networks[{j}], which puts the same source in zone {z}"),
                );
                continue;
            }
            None => {
                seen.insert(source.clone(), (i, zone));
            }
        }
        out.push(NetworkOverride {
            source,
            zone,
            description,
            index: i,
        });
    }
    out
}

fn pbx(cx: &mut Cx, v: Option<&Value>) -> Pbx {
    let mut pbx = Pbx {
        rtp: Some(PortRange {
            first: 10000,
            last: 20000,
        }),
        udptl: Some(PortRange {
            first: 4000,
            last: 4999,
        }),
        trunks: Vec::new(),
        discover: None,
    };
    let Some(m) = v.and_then(|v| cx.table(v, "pbx", &["rtp", "udptl", "trunks", "discover"]))
    else {
        return pbx;
    };
    if let Some(v) = m.get("discover") {
        if let Some(s) = cx.string(v, "pbx.discover") {
            if s.starts_with('/') && !s.chars().any(char::is_control) {
                pbx.discover = Some(s.to_string());
            } else {
                cx.err(
                    "pbx.discover",
                    Some(s),
                    "must be the absolute path of the Asterisk configuration directory",
                );
            }
        }
    }
    if let Some(v) = m.get("rtp") {
        if let Some(r) = cx.port_range(v, "pbx.rtp", "the RTP range") {
            pbx.rtp = r;
        }
    }
    if let Some(v) = m.get("udptl") {
        if let Some(r) = cx.port_range(v, "pbx.udptl", "the UDPTL range") {
            pbx.udptl = r;
        }
    }
    let Some(a) = m.get("trunks").and_then(|v| cx.array(v, "pbx.trunks")) else {
        return pbx;
    };
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in a.iter().enumerate() {
        let path = idx("pbx.trunks", i);
        let Some(t) = cx.table(item, &path, &["name", "protocol", "host", "description"]) else {
            continue;
        };
        let name = match t.get("name") {
            Some(v) => cx.name(v, &key(&path, "name")),
            None => {
                cx.err(&key(&path, "name"), None, "is missing");
                None
            }
        };
        if let Some(n) = &name {
            if let Some(j) = names.get(n) {
                cx.err(
                    &key(&path, "name"),
                    Some(n),
                    format!("is also the name of pbx.trunks[{j}]"),
                );
            } else {
                names.insert(n.clone(), i);
            }
        }
        let protocol = match t.get("protocol") {
            Some(v) => cx.string(v, &key(&path, "protocol")).and_then(|s| {
                s.parse::<SignallingProtocol>().ok().or_else(|| {
                    cx.err(
                        &key(&path, "protocol"),
                        Some(s),
                        "is not pjsip, chansip or iax",
                    );
                    None
                })
            }),
            None => {
                cx.err(&key(&path, "protocol"), None, "is missing");
                None
            }
        };
        let host = match t.get("host") {
            Some(v) => cx.source(v, &key(&path, "host")),
            None => {
                cx.err(&key(&path, "host"), None, "is missing");
                None
            }
        };
        if let Some(Source::Net(p)) = &host {
            if p.prefix_len() == 0 {
                cx.err(
                    &key(&path, "host"),
                    Some(&p.to_string()),
                    "would accept trunk signalling from every address",
                );
                continue;
            }
        }
        if let Some(v) = t.get("description") {
            cx.description(v, &key(&path, "description"));
        }
        if let (Some(name), Some(protocol), Some(host)) = (name, protocol, host) {
            pbx.trunks.push(Trunk {
                name,
                protocol,
                host,
            });
        }
    }
    pbx
}

fn blacklist(cx: &mut Cx, v: Option<&Value>, lists: &super::ListTexts) -> Vec<BlacklistEntry> {
    let mut out = Vec::new();
    let Some(m) = v.and_then(|v| cx.table(v, "blacklist", &["entries", "lists"])) else {
        return out;
    };
    // Blacklists run to 100k entries: repeats are found with a hash map of every source.
    let mut seen: std::collections::HashMap<Source, usize> = std::collections::HashMap::new();
    if let Some(a) = m
        .get("entries")
        .and_then(|e| cx.array(e, "blacklist.entries"))
    {
        seen.reserve(a.len());
        out.reserve(a.len());
        // The common case (a plain string) is parsed without building its path; paths are
        // built only for a diagnostic.
        for (i, item) in a.iter().enumerate() {
            let path = || idx("blacklist.entries", i);
            let source = match item {
                Value::String(text) => match parse_source(text) {
                    Ok((src, false)) => src,
                    _ => match cx.source(item, &path()) {
                        Some(src) => src,
                        None => continue,
                    },
                },
                _ => match cx.source(item, &path()) {
                    Some(src) => src,
                    None => continue,
                },
            };
            if let Source::Net(p) = &source {
                if p.prefix_len() == 0 {
                    cx.err(
                        &path(),
                        Some(&p.to_string()),
                        format!("would drop every {} packet, loopback aside", p.family()),
                    );
                    continue;
                }
            }
            match seen.entry(source) {
                std::collections::hash_map::Entry::Occupied(o) => {
                    let j = *o.get();
                    cx.warn(
                        &path(),
                        Some(&o.key().to_string()),
                        format!("repeats blacklist.entries[{j}]"),
                    );
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    out.push(BlacklistEntry {
                        source: v.key().clone(),
                        index: i,
                        list: None,
                    });
                    v.insert(i);
                }
            }
        }
    }
    if let Some(a) = m.get("lists").and_then(|l| cx.array(l, "blacklist.lists")) {
        if a.len() > MAX_LISTS {
            cx.err(
                "blacklist.lists",
                None,
                format!("names {} files; at most {MAX_LISTS}", a.len()),
            );
            return out;
        }
        let mut named = std::collections::HashMap::new();
        for (n, item) in a.iter().enumerate() {
            let path = idx("blacklist.lists", n);
            let Some(file) = cx.string(item, &path) else {
                continue;
            };
            if !file.starts_with('/') {
                cx.err(&path, Some(file), "is not an absolute path");
                continue;
            }
            if let Some(j) = named.insert(file, n) {
                cx.err(&path, Some(file), format!("repeats blacklist.lists[{j}]"));
                continue;
            }
            match lists.0.get(file) {
                Some(Ok(text)) => list_entries(cx, &path, n, text, &mut seen, &mut out),
                // A list fed from elsewhere that went missing, or was replaced by something
                // that is no list, keeps no firewall from loading (at boot above all): the
                // rest of the policy holds.
                Some(Err(why)) => cx.warn(
                    &path,
                    Some(file),
                    format!("was not read ({why}): its entries are not in the ruleset"),
                ),
                None => cx.err(
                    &path,
                    Some(file),
                    "was not read (pbxfw reads the list files it names)",
                ),
            }
        }
    }
    out
}

/// The entries of list file `n` (one address or CIDR a line; blank lines and `#` comments
/// skipped). A line is never quoted back in a diagnostic, only its number: a list file may
/// name any file, and its content is not the policy's to show. Repeats of earlier entries are
/// one warning for the whole list (a list of 100k lines may repeat thousands).
/// The most list files a policy names.
pub const MAX_LISTS: usize = 64;

fn list_entries(
    cx: &mut Cx,
    path: &str,
    n: usize,
    text: &str,
    seen: &mut std::collections::HashMap<Source, usize>,
    out: &mut Vec<BlacklistEntry>,
) {
    const SHOWN: usize = 20;
    let (mut bad, mut repeats) = (Vec::new(), 0usize);
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let p = match Prefix::parse_lenient(line) {
            Ok((p, _)) if p.prefix_len() > 0 => p,
            _ => {
                bad.push(i + 1);
                continue;
            }
        };
        match seen.entry(Source::Net(p)) {
            std::collections::hash_map::Entry::Occupied(_) => repeats += 1,
            std::collections::hash_map::Entry::Vacant(v) => {
                out.push(BlacklistEntry {
                    source: v.key().clone(),
                    index: i + 1,
                    list: Some(n),
                });
                v.insert(usize::MAX);
            }
        }
    }
    // A warning, the line skipped: a list is fed from elsewhere, and one bad line of a feed's
    // update must not keep the firewall from loading.
    if !bad.is_empty() {
        let lines: Vec<String> = bad.iter().take(SHOWN).map(|l| l.to_string()).collect();
        cx.warn(
            path,
            None,
            format!(
                "line{} {}{} {} not an address or CIDR, skipped (a /0 is neither: it would drop every packet)",
                if bad.len() == 1 { "" } else { "s" },
                lines.join(", "),
                if bad.len() > SHOWN {
                    format!(" and {} more", bad.len() - SHOWN)
                } else {
                    String::new()
                },
                if bad.len() == 1 { "is" } else { "are" },
            ),
        );
    }
    if repeats > 0 {
        cx.warn(
            path,
            None,
            format!("{repeats} line(s) repeat entries of the blacklist already listed"),
        );
    }
}

fn service_names(
    cx: &mut Cx,
    v: &Value,
    path: &str,
    services: &BTreeMap<String, Service>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, s) in cx.strings(v, path) {
        if services.contains_key(s) {
            out.insert(s.to_string());
        } else {
            cx.err(
                &idx(path, i),
                Some(s),
                "is not a catalogue or custom service",
            );
        }
    }
    out
}

fn responsive(cx: &mut Cx, v: Option<&Value>, services: &BTreeMap<String, Service>) -> Responsive {
    let mut r = Responsive {
        enabled: true,
        protocols: [SignallingProtocol::Pjsip, SignallingProtocol::Chansip]
            .into_iter()
            .collect(),
        registered_grants: ["ucp", "provisioning"].map(String::from).into(),
        // Five, as FreePBX's measured reference admits: a phone's boot needs two (REGISTER,
        // and again with credentials) before its registration takes it past the tiers, and a
        // cracker gets two guesses (docs/responsive.md, "Efficacy").
        clamp: Tier {
            packets: 5,
            seconds: 60,
        },
        flood: Tier {
            packets: 50,
            seconds: 10,
        },
        daily: Tier {
            packets: 100,
            seconds: 86400,
        },
        ban_seconds: 86400,
        ipv4_prefix: 32,
        ipv6_prefix: 64,
        ignore: Vec::new(),
    };
    let Some(m) = v.and_then(|v| {
        cx.table(
            v,
            "responsive",
            &[
                "enabled",
                "protocols",
                "registered_grants",
                "clamp",
                "flood",
                "daily",
                "ban_time",
                "ipv4_prefix",
                "ipv6_prefix",
                "ignore",
            ],
        )
    }) else {
        return r;
    };
    for (k, slot) in [
        ("clamp", &mut r.clamp),
        ("flood", &mut r.flood),
        ("daily", &mut r.daily),
    ] {
        let Some(v) = m.get(k) else { continue };
        let path = format!("responsive.{k}");
        let Some(text) = cx.string(v, &path) else {
            continue;
        };
        match text.parse::<Tier>() {
            Err(msg) => cx.err(&path, Some(text), msg),
            Ok(t) if t.kernel_rate().is_none() => cx.err(
                &path,
                Some(text),
                format!(
                    "cannot be enforced by the kernel: {} packets per {} s is not a whole number of packets per second, minute, hour or day",
                    t.packets, t.seconds
                ),
            ),
            Ok(t) if t.seconds > 7 * 86400 => {
                cx.err(&path, Some(text), "has a window longer than a week")
            }
            Ok(t) => *slot = t,
        }
    }
    if let Some(v) = m.get("ban_time") {
        if let Some(text) = cx.string(v, "responsive.ban_time") {
            match super::parse_seconds(text) {
                Some(s) if s <= 365 * 86400 => r.ban_seconds = s,
                _ => cx.err(
                    "responsive.ban_time",
                    Some(text),
                    "is not a duration between 1s and 365d (such as 24h)",
                ),
            }
        }
    }
    for (k, slot, min, max) in [
        ("ipv4_prefix", &mut r.ipv4_prefix, 8u8, 32u8),
        ("ipv6_prefix", &mut r.ipv6_prefix, 16, 128),
    ] {
        let Some(v) = m.get(k) else { continue };
        let path = format!("responsive.{k}");
        match v.as_u64() {
            Some(n) if n >= min as u64 && n <= max as u64 => *slot = n as u8,
            _ => cx.err(
                &path,
                Some(&v.to_string()),
                format!("is not a prefix length in {min}..={max}"),
            ),
        }
    }
    if let Some(b) = m
        .get("enabled")
        .and_then(|v| cx.boolean(v, "responsive.enabled"))
    {
        r.enabled = b;
    }
    if let Some(v) = m.get("protocols") {
        r.protocols.clear();
        for (i, s) in cx.strings(v, "responsive.protocols") {
            match s.parse() {
                Ok(p) => {
                    r.protocols.insert(p);
                }
                Err(()) => cx.err(
                    &idx("responsive.protocols", i),
                    Some(s),
                    "is not pjsip, chansip or iax",
                ),
            }
        }
    }
    if let Some(v) = m.get("registered_grants") {
        r.registered_grants = service_names(cx, v, "responsive.registered_grants", services);
    }
    if let Some(v) = m.get("ignore") {
        for (i, text) in cx.strings(v, "responsive.ignore") {
            let path = idx("responsive.ignore", i);
            // Addresses and CIDRs only: an ignored source is an exemption from banning, and a
            // hostname's answers (the DNS's, so anyone's who controls it) must not grant one.
            match Prefix::parse_lenient(text) {
                Ok((p, false)) => r.ignore.push(p),
                Ok((p, true)) => cx.err(
                    &path,
                    Some(text),
                    format!("has host bits set (the network is {p})"),
                ),
                Err(_) => cx.err(&path, Some(text), "is not an address or a CIDR"),
            }
        }
        r.ignore.sort();
        r.ignore.dedup();
    }
    r
}

fn users(cx: &mut Cx, v: Option<&Value>, services: &BTreeMap<String, Service>) -> Vec<User> {
    let mut out = Vec::new();
    let Some(a) = v.and_then(|v| cx.array(v, "users")) else {
        return out;
    };
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut identities: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in a.iter().enumerate() {
        let path = idx("users", i);
        let Some(t) = cx.table(item, &path, &["name", "services", "vpn", "wireguard"]) else {
            continue;
        };
        let mut wireguard = BTreeSet::new();
        if let Some(v) = t.get("wireguard") {
            let wpath = key(&path, "wireguard");
            for (j, k) in cx.strings(v, &wpath) {
                let p = idx(&wpath, j);
                if !is_wireguard_key(k) {
                    cx.err(
                        &p,
                        Some(k),
                        "is not a WireGuard public key (44 characters of base64, as `wg pubkey` prints it)",
                    );
                } else if let Some(u) = identities.get(k) {
                    cx.err(&p, Some(k), format!("is also a VPN identity of users[{u}]"));
                } else {
                    identities.insert(k.to_string(), i);
                    wireguard.insert(k.to_string());
                }
            }
        }
        let mut vpn = BTreeSet::new();
        if let Some(v) = t.get("vpn") {
            let vpath = key(&path, "vpn");
            for (j, id) in cx.strings(v, &vpath) {
                let p = idx(&vpath, j);
                if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
                    cx.err(
                        &p,
                        Some(id),
                        "is not a VPN identity (1 to 128 characters, no control characters)",
                    );
                } else if let Some(k) = identities.get(id) {
                    cx.err(
                        &p,
                        Some(id),
                        format!("is also a VPN identity of users[{k}]"),
                    );
                } else {
                    identities.insert(id.to_string(), i);
                    vpn.insert(id.to_string());
                }
            }
        }
        let name = match t.get("name") {
            Some(v) => cx.name(v, &key(&path, "name")),
            None => {
                cx.err(&key(&path, "name"), None, "is missing");
                None
            }
        };
        let svcs = match t.get("services") {
            Some(v) => service_names(cx, v, &key(&path, "services"), services),
            None => BTreeSet::new(),
        };
        let Some(name) = name else { continue };
        if let Some(j) = names.get(&name) {
            cx.err(
                &key(&path, "name"),
                Some(&name),
                format!("is also the name of users[{j}]"),
            );
            continue;
        }
        names.insert(name.clone(), i);
        out.push(User {
            name,
            services: svcs,
            vpn,
            wireguard,
        });
    }
    out
}

/// A WireGuard public key as `wg` prints it: 32 bytes in standard base64, 43 characters and
/// one `=` of padding. The last character carries only 4 of the key's bits, so it is one of
/// the 16 whose low 2 bits are zero, which makes a key have exactly one spelling.
fn is_wireguard_key(s: &str) -> bool {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    b.len() == 44
        && b[43] == b'='
        && b[..43].iter().all(|c| B64.contains(c))
        && B64
            .iter()
            .position(|c| *c == b[42])
            .is_some_and(|v| v & 0b11 == 0)
}

/// `[fleet]` (docs/fleet.md).
fn fleet(cx: &mut Cx, v: &Value) -> Option<super::Fleet> {
    let m = cx.table(
        v,
        "fleet",
        &[
            "url",
            "pbx",
            "pull",
            "api_key_file",
            "push",
            "machine_id",
            "password_file",
            "unban",
            "poll_interval",
            "resync_interval",
            "timeout",
            "ca_file",
            "max_decisions",
        ],
    )?;
    let errors = cx.diags.len();
    let mut f = super::Fleet {
        url: String::new(),
        pbx: String::new(),
        pull: true,
        api_key_file: None,
        push: false,
        machine_id: None,
        password_file: None,
        unban: false,
        poll_seconds: 10,
        resync_seconds: 600,
        timeout_seconds: 10,
        ca_file: None,
        max_decisions: 262_144,
    };
    match m.get("url").and_then(|v| cx.string(v, "fleet.url")) {
        Some(u) => match fleet_url(u) {
            Ok(()) => f.url = u.trim_end_matches('/').to_string(),
            Err(msg) => cx.err("fleet.url", Some(u), msg),
        },
        None if m.get("url").is_none() => cx.err("fleet.url", None, "is required"),
        None => {}
    }
    for (k, slot) in [
        ("pull", &mut f.pull),
        ("push", &mut f.push),
        ("unban", &mut f.unban),
    ] {
        if let Some(b) = m.get(k).and_then(|v| cx.boolean(v, &format!("fleet.{k}"))) {
            *slot = b;
        }
    }
    for (k, slot) in [
        ("api_key_file", &mut f.api_key_file),
        ("password_file", &mut f.password_file),
        ("ca_file", &mut f.ca_file),
    ] {
        let path = format!("fleet.{k}");
        if let Some(text) = m.get(k).and_then(|v| cx.string(v, &path)) {
            if !text.starts_with('/') || text.len() > 4096 || text.contains('\0') {
                cx.err(&path, Some(text), "must be an absolute path");
            } else {
                *slot = Some(text.to_string());
            }
        }
    }
    if let Some(text) = m
        .get("machine_id")
        .and_then(|v| cx.string(v, "fleet.machine_id"))
    {
        if fleet_name(text) {
            f.machine_id = Some(text.to_string());
        } else {
            cx.err(
                "fleet.machine_id",
                Some(text),
                "must be 1 to 64 letters, digits, '.', '_' or '-'",
            );
        }
    }
    match m.get("pbx").and_then(|v| cx.string(v, "fleet.pbx")) {
        Some(text) if fleet_name(text) => f.pbx = text.to_string(),
        Some(text) => cx.err(
            "fleet.pbx",
            Some(text),
            "must be 1 to 64 letters, digits, '.', '_' or '-'",
        ),
        None => f.pbx = f.machine_id.clone().unwrap_or_else(|| "pbx".into()),
    }
    for (k, slot, min, max) in [
        ("poll_interval", &mut f.poll_seconds, 1u32, 3600u32),
        ("resync_interval", &mut f.resync_seconds, 10, 86_400),
        ("timeout", &mut f.timeout_seconds, 1, 300),
    ] {
        let path = format!("fleet.{k}");
        if let Some(text) = m.get(k).and_then(|v| cx.string(v, &path)) {
            match super::parse_seconds(text) {
                Some(s) if (min..=max).contains(&s) => *slot = s,
                _ => cx.err(
                    &path,
                    Some(text),
                    format!("is not a duration between {min}s and {max}s (such as 10s, 10m)"),
                ),
            }
        }
    }
    if let Some(v) = m.get("max_decisions") {
        match v.as_u64() {
            Some(n) if (1..=1_048_576).contains(&n) => f.max_decisions = n as u32,
            _ => cx.err(
                "fleet.max_decisions",
                Some(&v.to_string()),
                "is not a number between 1 and 1048576",
            ),
        }
    }
    if f.pull && f.api_key_file.is_none() {
        cx.err(
            "fleet.api_key_file",
            None,
            "is required to pull the fleet's decisions (or set fleet.pull = false)",
        );
    }
    if f.push && (f.machine_id.is_none() || f.password_file.is_none()) {
        cx.err(
            "fleet.push",
            Some("true"),
            "needs fleet.machine_id and fleet.password_file (the machine's credentials at the LAPI)",
        );
    }
    if f.unban && !f.push {
        cx.err(
            "fleet.unban",
            Some("true"),
            "needs fleet.push (unbans are made as the machine)",
        );
    }
    if !f.pull && !f.push {
        cx.warn(
            "fleet",
            None,
            "neither pulls nor pushes: the fleet is not used",
        );
    }
    if f.resync_seconds < f.poll_seconds {
        cx.err(
            "fleet.resync_interval",
            None,
            "is shorter than fleet.poll_interval",
        );
    }
    (cx.diags
        .iter()
        .skip(errors)
        .all(|d| d.severity != crate::Severity::Error))
    .then_some(f)
}

/// A LAPI URL: `http` or `https`, a host, an optional port, no credentials, query or fragment
/// (the path the API's endpoints are appended to).
fn fleet_url(u: &str) -> Result<(), &'static str> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or(
            "must start with https:// (or http:// for a LAPI on this host or a private network)",
        )?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || u.len() > 2048 {
        return Err("has no host");
    }
    if rest.contains(['@', '?', '#', ' ', '\\']) || !u.is_ascii() {
        return Err("must not carry credentials, a query or a fragment (the keys go in files)");
    }
    // Plain HTTP carries the API key and the machine's password in clear, and anything on the
    // path could write decisions: only to an address on this host or a private network.
    if u.starts_with("http://") {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        let private = match name.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => {
                a.is_loopback()
                    || a.is_private()
                    || (a.octets()[0] == 100 && a.octets()[1] & 0xc0 == 64)
            }
            Ok(std::net::IpAddr::V6(a)) => a.is_loopback() || (a.segments()[0] & 0xfe00) == 0xfc00,
            Err(_) => false,
        };
        if !private {
            return Err("http:// only to an address on this host or a private network (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7); use https://");
        }
    }
    Ok(())
}

fn fleet_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    /// Every diagnostic of a policy that validation refuses.
    fn refused(p: &Policy) -> Vec<String> {
        p.validate()
            .unwrap_err()
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    fn diags(toml: &str) -> Vec<String> {
        match Policy::from_toml(toml).unwrap().validate() {
            Ok(v) => v.warnings.iter().map(|d| d.to_string()).collect(),
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// List files: their entries join the blacklist (repeats of `entries` and of each other
    /// counted once, with one warning); a bad line is reported by number, never quoted; a
    /// list nobody read, a relative path, and a `/0` are errors.
    #[test]
    fn list_files_join_the_blacklist_and_are_never_quoted() {
        let toml = "[blacklist]\nentries = [\"192.0.2.1\"]\nlists = [\"/etc/pbxfw/a.list\", \"/etc/pbxfw/b.list\"]\n";
        let mut p = Policy::from_toml(toml).unwrap();
        assert_eq!(
            p.blacklist_lists(),
            ["/etc/pbxfw/a.list", "/etc/pbxfw/b.list"]
        );
        p.attach_list(
            "/etc/pbxfw/a.list",
            "# scanners\n198.51.100.0/24\n\n192.0.2.1   # repeats entries\n2001:db8:bad::/48\n"
                .into(),
        );
        p.attach_list("/etc/pbxfw/b.list", "198.51.100.0/24\n203.0.113.9\n".into());
        let v = p.validate().unwrap();
        let got: Vec<(String, Option<usize>, usize)> = v
            .blacklist
            .iter()
            .map(|b| (b.source.to_string(), b.list, b.index))
            .collect();
        assert_eq!(
            got,
            [
                ("192.0.2.1".to_string(), None, 0),
                ("198.51.100.0/24".to_string(), Some(0), 2),
                ("2001:db8:bad::/48".to_string(), Some(0), 5),
                ("203.0.113.9".to_string(), Some(1), 2),
            ]
        );
        let w: Vec<String> = v.warnings.iter().map(|d| d.to_string()).collect();
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("blacklist.lists[0]: 1 line(s) repeat"),
            "{w:#?}"
        );

        let mut p = Policy::from_toml(toml).unwrap();
        p.attach_list(
            "/etc/pbxfw/a.list",
            "root:$6$secret:19000:0:99999:7:::\n0.0.0.0/0\n192.0.2.7\n".into(),
        );
        let d = refused(&p);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(
            d[0].starts_with(
                "warning: blacklist.lists[0]: lines 1, 2 are not an address or CIDR, skipped"
            ),
            "{d:#?}"
        );
        assert!(!d[0].contains("root") && !d[0].contains("secret"), "{d:#?}");
        assert!(
            d[1].contains("blacklist.lists[1]") && d[1].contains("was not read"),
            "{d:#?}"
        );
        let d = diags("[blacklist]\nlists = [\"a.list\"]\n");
        assert!(d[0].contains("is not an absolute path"), "{d:#?}");
        // A list that could not be read is a warning: the rest of the policy loads.
        let mut p = Policy::from_toml("[blacklist]\nlists = [\"/a.list\", \"/a.list\"]\n").unwrap();
        p.list_unreadable("/a.list", "No such file or directory");
        let d = refused(&p);
        assert!(
            d[0].starts_with("warning: blacklist.lists[0]: \"/a.list\" was not read (No such file"),
            "{d:#?}"
        );
        assert!(
            d[1].starts_with("error: blacklist.lists[1]: \"/a.list\" repeats blacklist.lists[0]"),
            "{d:#?}"
        );
        let mut p = Policy::from_toml("[blacklist]\nlists = [\"/a.list\"]\n").unwrap();
        p.list_unreadable("/a.list", "not a regular file");
        assert_eq!(p.validate().unwrap().blacklist.len(), 0);
    }

    #[test]
    fn wireguard_keys_are_checked_and_belong_to_one_user() {
        let key = "R69YujzCWhQtagx+NF3xA9nhd0oONChBFSPKjCixRTU=";
        let ok = format!("[[users]]\nname = \"alice\"\nwireguard = [\"{key}\"]\n");
        let v = Policy::from_toml(&ok).unwrap().validate().unwrap();
        assert!(v.users[0].wireguard.contains(key));
        let d = diags(&format!(
            "[[users]]\nname = \"alice\"\nwireguard = [\"{key}\", \"short=\", \
             \"R69YujzCWhQtagx+NF3xA9nhd0oONChBFSPKjCixRTV=\", \
             \"R69YujzCWhQtagx+NF3xA9nhd0oONChBFSPKjCixRT\\n=\"]\n\
             [[users]]\nname = \"bob\"\nvpn = [\"{key}\"]\n"
        ));
        let expected = [
            r#"error: users[0].wireguard[1]: "short=" is not a WireGuard public key"#,
            // The last character holds 4 bits: `V` would spell a second key for the same bytes.
            r#"error: users[0].wireguard[2]: "R69YujzCWhQtagx+NF3xA9nhd0oONChBFSPKjCixRTV=" is not"#,
            r#"error: users[0].wireguard[3]: "#,
            r#"error: users[1].vpn[0]: "R69YujzCWhQtagx+NF3xA9nhd0oONChBFSPKjCixRTU=" is also a VPN identity of users[0]"#,
        ];
        for e in expected {
            assert!(
                d.iter().any(|l| l.starts_with(e)),
                "missing {e:?} in {d:#?}"
            );
        }
        assert_eq!(d.len(), expected.len(), "{d:#?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let d = diags(
            r#"
            [settings]
            default_verdict = "maybe"
            colour = "blue"
            [interfaces]
            eth0 = "dmz"
            eth1 = "trusted"
            [[networks]]
            source = "10.0.0.0/8"
            zone = "local"
            [[networks]]
            source = "10.0.0.0/8"
            zone = "reject"
            [[networks]]
            source = "10.0.0.300"
            zone = "local"
            [[networks]]
            source = "192.168.1.7/24"
            zone = "other"
            [services.ssh]
            ports = ["tcp/0", "sctp/5", "udp/9-3"]
            [services.telnet]
            zones = ["local"]
            [pbx]
            rtp = "500-800"
            udptl = "1000-2000"
            [[pbx.trunks]]
            name = "a"
            protocol = "h323"
            host = "203.0.113.1"
            [[users]]
            name = "300"
            services = ["ucp", "fax"]
            "#,
        );
        let expected = [
            r#"error: settings.default_verdict: "maybe" is not "drop" or "reject""#,
            "error: settings.colour: is not a known key here",
            r#"error: interfaces.eth0: "dmz" is not a zone"#,
            r#"warning: interfaces.eth1: "trusted" puts interface eth1 in the trusted zone"#,
            r#"error: networks[1].source: "10.0.0.0/8" conflicts with networks[0]"#,
            r#"error: networks[2].source: "10.0.0.300" is neither an address, a CIDR nor a hostname"#,
            r#"warning: networks[3].source: "192.168.1.7/24" has host bits set; it is read as 192.168.1.0/24"#,
            r#"error: services.ssh.ports[0]: "tcp/0" uses port 0"#,
            r#"error: services.ssh.ports[1]: "sctp/5" names a protocol other than udp or tcp"#,
            r#"error: services.ssh.ports[2]: "udp/9-3" is a range whose first port is above its last"#,
            r#"error: services.telnet: "telnet" is not a catalogue service"#,
            r#"warning: pbx.rtp: "500-800" lies entirely below 1024, so the RTP range opens nothing"#,
            r#"warning: pbx.udptl: "1000-2000" starts below 1024"#,
            r#"error: pbx.trunks[0].protocol: "h323" is not pjsip, chansip or iax"#,
            r#"error: users[0].services[1]: "fax" is not a catalogue or custom service"#,
        ];
        for e in expected {
            assert!(
                d.iter().any(|line| line.starts_with(e)),
                "missing {e:?} in\n{}",
                d.join("\n")
            );
        }
        assert_eq!(d.len(), expected.len(), "{}", d.join("\n"));
    }

    #[test]
    fn aliases_and_defaults() {
        let v = Policy::from_toml("[interfaces]\neth0 = \"external\"\neth1 = \"internal\"\n")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(v.interfaces["eth0"], Zone::Internet);
        assert_eq!(v.interfaces["eth1"], Zone::Local);
        assert_eq!(
            v.pbx.rtp,
            Some(PortRange {
                first: 10000,
                last: 20000
            })
        );
        assert!(v.responsive.enabled);
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn the_ignore_list_takes_addresses_and_networks_and_meters_them_not() {
        let e = Policy::from_toml(
            "[responsive]\nignore = [\"198.51.100.0/28\", \"2001:db8::1\", \"monitor.example\", \"192.0.2.1/24\"]\n",
        )
        .unwrap()
        .validate()
        .unwrap_err();
        let d: Vec<String> = e.iter().map(|d| d.to_string()).collect();
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("responsive.ignore[2]") && d[0].contains("not an address"));
        assert!(d[1].contains("responsive.ignore[3]") && d[1].contains("192.0.2.0/24"));
        let v = Policy::from_toml("[responsive]\nignore = [\"198.51.100.0/28\"]\n")
            .unwrap()
            .validate()
            .unwrap();
        let rs = crate::compile(&v);
        assert!(rs.sets.contains_key("ignore4") && !rs.sets.contains_key("ignore6"));
        // A flood from an ignored source is accepted without meeting a meter, and the state
        // machine never bans it.
        let src: std::net::IpAddr = "198.51.100.3".parse().unwrap();
        let mut packet = crate::Packet::new("eth0", src, crate::Proto::Udp, Some(5060));
        packet.ct = crate::CtState::New;
        let state = crate::DynamicState {
            meters_over: rs
                .sets
                .keys()
                .filter(|n| n.starts_with("meter_"))
                .cloned()
                .collect(),
            ..Default::default()
        };
        let e = crate::explain_with(&rs, &packet, &state);
        assert_eq!(e.verdict, crate::FinalVerdict::Accept, "{e:?}");
        assert!(e.decided_by.contains("ignore"), "{e:?}");
        let cfg = crate::MachineConfig::from_policy(&v);
        assert!(
            crate::never_banned(&cfg, &[], &"198.51.100.0/24".parse().unwrap())
                .unwrap()
                .contains("responsive.ignore")
        );
    }

    #[test]
    fn hostnames() {
        assert!(is_hostname("alice.dyndns.example"));
        assert!(is_hostname("pbx"));
        assert!(!is_hostname("10.0.0.300"));
        assert!(!is_hostname("-bad.example"));
        assert!(!is_hostname("a..b"));
        assert!(
            matches!(parse_source("Alice.Example."), Ok((Source::Host(h), false)) if h == "alice.example")
        );
        assert_eq!(
            parse_source("10.0.0.0/40").unwrap_err(),
            "has a prefix length outside 0..=32"
        );
    }

    #[test]
    fn json_and_toml_agree() {
        let t = Policy::from_toml("[interfaces]\neth0 = \"local\"\n").unwrap();
        let j = Policy::from_json(r#"{"interfaces": {"eth0": "local"}}"#).unwrap();
        assert_eq!(t.validate().unwrap(), j.validate().unwrap());
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(
            Policy::from_toml("[x"),
            Err(ParseError::Toml { .. })
        ));
        assert!(matches!(
            Policy::from_json("{\n\"a\": }"),
            Err(ParseError::Json { line: 2, .. })
        ));
        let d = Policy::from_json("[1]").unwrap().validate().unwrap_err();
        assert_eq!(
            d.0[0].to_string(),
            "error: (policy): must be a table, not a list"
        );
    }
}
