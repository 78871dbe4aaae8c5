//! Discovery: what the PBX's own configuration says about ports, RTP and trunks (docs/discovery.md).
//!
//! [`conf`] reads Asterisk's configuration syntax (includes, templates, comments) and
//! [`asterisk`] turns the files into a [`Discovery`]: the `[pbx]` ranges, the ports of the
//! `pjsip`, `chansip`, `iax` and `webrtc` services, and the trunks, each with the file and line
//! it came from. Both are pure; the files come through a [`conf::Files`] implementation (the
//! command line reads a directory).
//!
//! A discovery becomes part of a policy in two ways:
//! - [`Discovery::to_toml`] / [`Discovery::to_json`] print it (`pbxfw discover`) for an
//!   administrator to read or copy;
//! - [`merge`] adds it to a policy document before validation (`apply --asterisk-dir`, the
//!   daemon). **Explicit policy entries win**: a range or service port list the policy writes
//!   is kept, a trunk the policy names is kept, and each disagreement is a warning naming both
//!   sides. Discovered trunks the policy does not name are added.

pub mod asterisk;
pub mod conf;

use serde_json::{json, Map, Value};

pub use asterisk::{discover, discover_text, DiscoveredTrunk, Discovery, Found};

use crate::diag::{Diagnostic, Severity};

/// The catalogue services discovery may set ports for, in output order.
const SERVICES: [&str; 4] = ["pjsip", "chansip", "iax", "webrtc"];

impl Discovery {
    /// The discovery as a policy fragment (the shape of the policy file).
    pub fn to_policy(&self) -> Value {
        let mut root = Map::new();
        let mut services = Map::new();
        for name in SERVICES {
            if let Some(list) = self.services.get(name).filter(|l| !l.is_empty()) {
                let ports: Vec<Value> = list.iter().map(|f| f.value.to_string().into()).collect();
                services.insert(name.into(), json!({ "ports": ports }));
            }
        }
        if !services.is_empty() {
            root.insert("services".into(), Value::Object(services));
        }
        let mut pbx = Map::new();
        if let Some(r) = &self.rtp {
            pbx.insert("rtp".into(), r.value.to_string().into());
        }
        if let Some(r) = &self.udptl {
            pbx.insert("udptl".into(), r.value.to_string().into());
        }
        if !self.trunks.is_empty() {
            let trunks: Vec<Value> = self.trunks.iter().map(trunk_value).collect();
            pbx.insert("trunks".into(), Value::Array(trunks));
        }
        if !pbx.is_empty() {
            root.insert("pbx".into(), Value::Object(pbx));
        }
        Value::Object(root)
    }

    /// `pbxfw discover --format json`: the fragment, where each item came from, the notes and
    /// the files read.
    pub fn to_json(&self) -> Value {
        let mut origins = Vec::new();
        for name in SERVICES {
            for (i, f) in self.services.get(name).into_iter().flatten().enumerate() {
                origins.push(json!({
                    "path": format!("services.{name}.ports[{i}]"),
                    "origin": f.origin.to_string(),
                    "what": f.what,
                }));
            }
        }
        for (key, r) in [("rtp", &self.rtp), ("udptl", &self.udptl)] {
            if let Some(f) = r {
                origins.push(json!({
                    "path": format!("pbx.{key}"),
                    "origin": f.origin.to_string(),
                    "what": f.what,
                }));
            }
        }
        for (i, t) in self.trunks.iter().enumerate() {
            origins.push(json!({
                "path": format!("pbx.trunks[{i}]"),
                "origin": t.origin.to_string(),
                "what": t.what,
            }));
        }
        json!({
            "policy": self.to_policy(),
            "origins": origins,
            "notes": self.notes,
            "files": self.files,
        })
    }

    /// `pbxfw discover`: a policy fragment in TOML, each item followed by a comment naming the
    /// file and line it came from, and the notes as comments at the end. The text is valid
    /// TOML and validates as a policy on its own.
    pub fn to_toml(&self, source: &str) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# Discovered by pbxfw from the Asterisk configuration in {}.\n# Each item names the file and line it came from. Explicit entries in your policy win.\n",
            comment_text(source)
        ));
        for name in SERVICES {
            let Some(list) = self.services.get(name).filter(|l| !l.is_empty()) else {
                continue;
            };
            out.push_str(&format!("\n[services.{name}]\nports = [\n"));
            for f in list {
                out.push_str(&format!(
                    "    {},  # {} ({})\n",
                    toml_str(&f.value.to_string()),
                    comment_text(&f.origin.to_string()),
                    comment_text(&f.what)
                ));
            }
            out.push_str("]\n");
        }
        if self.rtp.is_some() || self.udptl.is_some() || !self.trunks.is_empty() {
            out.push_str("\n[pbx]\n");
        }
        for (key, r) in [("rtp", &self.rtp), ("udptl", &self.udptl)] {
            if let Some(f) = r {
                out.push_str(&format!(
                    "{key} = {}  # {} ({})\n",
                    toml_str(&f.value.to_string()),
                    comment_text(&f.origin.to_string()),
                    comment_text(&f.what)
                ));
            }
        }
        for t in &self.trunks {
            out.push_str(&format!(
                "\n[[pbx.trunks]]  # {}\nname = {}\nprotocol = {}\nhost = {}\ndescription = {}\n",
                comment_text(&t.what),
                toml_str(&t.value.name),
                toml_str(&t.value.protocol.to_string()),
                toml_str(&t.value.host),
                toml_str(&description(t)),
            ));
        }
        if !self.notes.is_empty() {
            out.push_str("\n# Notes:\n");
            for n in &self.notes {
                match &n.origin {
                    Some(o) => out.push_str(&format!(
                        "# - {}: {}\n",
                        comment_text(&o.to_string()),
                        comment_text(&n.message)
                    )),
                    None => out.push_str(&format!("# - {}\n", comment_text(&n.message))),
                }
            }
        }
        out
    }
}

fn description(t: &Found<DiscoveredTrunk>) -> String {
    let d = format!("discovered: {} ({})", t.origin, t.what);
    d.chars().take(256).collect()
}

fn trunk_value(t: &Found<DiscoveredTrunk>) -> Value {
    json!({
        "name": t.value.name,
        "protocol": t.value.protocol.to_string(),
        "host": t.value.host,
        "description": description(t),
    })
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Text safe inside a `#` comment (one line).
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Add a discovery to a policy document (before validation). Explicit entries in the document
/// win; every disagreement is a warning. Returns the warnings.
pub fn merge(doc: &mut Value, d: &Discovery) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    let warn = |w: &mut Vec<Diagnostic>, path: String, value: String, message: String| {
        w.push(Diagnostic {
            path,
            severity: Severity::Warning,
            value: Some(value),
            message,
        })
    };
    let Some(root) = doc.as_object_mut() else {
        // Not a table: validation will say so; nothing to merge into.
        return warnings;
    };
    let fragment = d.to_policy();

    // Services: a port list the policy writes wins.
    if let Some(found) = fragment.get("services").and_then(Value::as_object) {
        let services = root
            .entry("services")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(services) = services.as_object_mut() {
            for (name, body) in found {
                let entry = services
                    .entry(name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Some(entry) = entry.as_object_mut() else {
                    continue;
                };
                match entry.get("ports") {
                    None => {
                        entry.insert("ports".into(), body["ports"].clone());
                    }
                    Some(mine) if mine != &body["ports"] => {
                        let origins: Vec<String> = d.services[name]
                            .iter()
                            .map(|f| format!("{} at {}", f.value, f.origin))
                            .collect();
                        warn(
                            &mut warnings,
                            format!("services.{name}.ports"),
                            compact(mine),
                            format!(
                                "is kept; Asterisk is configured for {} ({})",
                                compact(&body["ports"]),
                                origins.join(", ")
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }

    let pbx = root
        .entry("pbx")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(pbx) = pbx.as_object_mut() else {
        return warnings;
    };
    // A discovered range equal to pbxfw's default changes nothing and is not written: written
    // ranges get the overlap warnings a default does not (FreePBX's stock UDPTL range holds
    // IAX's port, and a warning on every FreePBX host would help nobody).
    let defaults = crate::Policy::from_value(json!({}))
        .validate()
        .map(|v| (v.pbx.rtp, v.pbx.udptl))
        .unwrap_or_default();
    for (key, found, default) in [("rtp", &d.rtp, defaults.0), ("udptl", &d.udptl, defaults.1)] {
        let Some(f) = found else { continue };
        let value = Value::String(f.value.to_string());
        match pbx.get(key) {
            None if default == Some(f.value) => {}
            None => {
                pbx.insert(key.into(), value);
            }
            Some(mine) if mine != &value => warn(
                &mut warnings,
                format!("pbx.{key}"),
                compact(mine),
                format!(
                    "is kept; Asterisk is configured for {} at {}",
                    f.value, f.origin
                ),
            ),
            Some(_) => {}
        }
    }

    // Trunks: a name the policy uses wins; the same protocol and host under another name is
    // the policy's already and is not added twice.
    let trunks = pbx
        .entry("trunks")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(trunks) = trunks.as_array_mut() else {
        return warnings;
    };
    let mine: Vec<(Option<String>, Option<String>, Option<String>)> = trunks
        .iter()
        .map(|t| {
            let s = |k: &str| {
                t.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase)
            };
            (
                t.get("name").and_then(Value::as_str).map(str::to_string),
                s("protocol"),
                s("host"),
            )
        })
        .collect();
    for t in &d.trunks {
        let proto = t.value.protocol.to_string();
        if let Some(i) = mine
            .iter()
            .position(|(n, _, _)| n.as_deref() == Some(t.value.name.as_str()))
        {
            let (_, p, h) = &mine[i];
            if p.as_deref() != Some(proto.as_str()) || h.as_deref() != Some(t.value.host.as_str()) {
                warn(
                    &mut warnings,
                    format!("pbx.trunks[{i}]"),
                    t.value.name.clone(),
                    format!(
                        "is kept as the policy writes it; Asterisk has a {proto} trunk of that name at {} with host {}",
                        t.origin, t.value.host
                    ),
                );
            }
            continue;
        }
        if mine.iter().any(|(_, p, h)| {
            p.as_deref() == Some(proto.as_str()) && h.as_deref() == Some(t.value.host.as_str())
        }) {
            continue;
        }
        if let Some(p) = too_wide(&t.value.host) {
            warnings.push(Diagnostic {
                path: "pbx.discover".into(),
                severity: Severity::Error,
                value: Some(t.value.host.clone()),
                message: format!(
                    "{proto} trunk {} at {}: {p} holds more than a /{MAX_TRUNK_V4} (IPv4) or /{MAX_TRUNK_V6} (IPv6): every source in it would be a trunk, never metered nor banned. Not taken from Asterisk's configuration (which the PBX's user can write); name it in [[pbx.trunks]] if it is meant",
                    t.value.name, t.origin
                ),
            });
            continue;
        }
        trunks.push(trunk_value(t));
    }
    if trunks.is_empty() {
        pbx.remove("trunks");
    }
    warnings
}

/// The widest IPv4 network a discovered trunk may be (a provider's range is a /24 or a /22 at
/// most; `match=0.0.0.0/1,128.0.0.0/1` would make every source a trunk).
pub const MAX_TRUNK_V4: u8 = 16;
/// The widest IPv6 network a discovered trunk may be.
pub const MAX_TRUNK_V6: u8 = 32;

/// The network of `host` when it is wider than a discovered trunk may be.
fn too_wide(host: &str) -> Option<crate::net::Prefix> {
    let (p, _) = crate::net::Prefix::parse_lenient(host).ok()?;
    let limit = match p.family() {
        crate::net::Family::Ipv4 => MAX_TRUNK_V4,
        crate::net::Family::Ipv6 => MAX_TRUNK_V6,
    };
    (p.prefix_len() < limit).then_some(p)
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    fn sample() -> Discovery {
        discover_text(
            "pjsip.conf",
            "[udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5070\n[prov]\ntype=identify\nendpoint=prov\nmatch=203.0.113.10\n[other]\ntype=identify\nendpoint=other\nmatch=sip.other.example\n",
        )
    }

    #[test]
    fn toml_output_is_a_valid_policy() {
        let text = sample().to_toml("/etc/asterisk");
        let policy = Policy::from_toml(&text).unwrap().validate().unwrap();
        assert_eq!(policy.pbx.trunks.len(), 2);
        assert!(
            text.contains("\"udp/5070\",  # pjsip.conf:4 (transport udp (udp))"),
            "{text}"
        );
        let json = Policy::from_value(sample().to_policy()).validate().unwrap();
        assert_eq!(json.pbx.trunks, policy.pbx.trunks);
    }

    #[test]
    fn explicit_entries_win_with_a_warning() {
        let mut doc = Policy::from_toml(
            "[services.pjsip]\nports = [\"udp/5060\"]\n[[pbx.trunks]]\nname = \"prov\"\nprotocol = \"pjsip\"\nhost = \"192.0.2.1\"\n[[pbx.trunks]]\nname = \"mine\"\nprotocol = \"pjsip\"\nhost = \"sip.other.example\"\n",
        )
        .unwrap()
        .as_value()
        .clone();
        let w = merge(&mut doc, &sample());
        let text: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("warning: services.pjsip.ports: "),
            "{}",
            text[0]
        );
        assert!(text[0].contains("udp/5070 at pjsip.conf:4"));
        assert!(text[1].contains("pbx.trunks[0]") && text[1].contains("203.0.113.10"));
        let v = Policy::from_value(doc).validate().unwrap();
        assert_eq!(
            v.pbx.trunks.len(),
            2,
            "nothing added: both discovered trunks are the policy's"
        );
        assert_eq!(v.services["pjsip"].ports.len(), 1);
    }

    #[test]
    fn a_discovered_default_range_is_not_written() {
        let stock = discover_text("udptl.conf", "[general]\nudptlstart=4000\nudptlend=4999\n");
        let mut doc = json!({});
        merge(&mut doc, &stock);
        assert!(doc["pbx"].get("udptl").is_none(), "{doc}");
        let v = Policy::from_value(doc).validate().unwrap();
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        let other = discover_text("udptl.conf", "[general]\nudptlstart=6000\nudptlend=6999\n");
        let mut doc = json!({});
        merge(&mut doc, &other);
        assert_eq!(doc["pbx"]["udptl"], "6000-6999");
    }

    #[test]
    fn merge_into_an_empty_policy_adds_everything() {
        let mut doc = json!({});
        assert!(merge(&mut doc, &sample()).is_empty());
        let v = Policy::from_value(doc).validate().unwrap();
        assert_eq!(v.pbx.trunks.len(), 2);
        assert_eq!(v.services["pjsip"].ports[0].to_string(), "udp/5070");
    }

    /// `match=0.0.0.0/1,128.0.0.0/1` in a file the PBX's user can write would make every IPv4
    /// source a trunk: an error, unless the policy names that trunk itself.
    #[test]
    fn a_trunk_wider_than_the_bound_is_an_error_unless_the_policy_names_it() {
        let conf = "[wide]\ntype=identify\nendpoint=wide\nmatch=0.0.0.0/1,128.0.0.0/1,2001::/16,203.0.113.0/24\n";
        let d = crate::discover::discover_text("pjsip.conf", conf);
        let mut p = Policy::from_toml("").unwrap();
        p.merge_discovery(&d);
        let errors = p.validate().unwrap_err();
        let text = errors.to_string();
        assert_eq!(
            errors
                .0
                .iter()
                .filter(|e| e.severity == Severity::Error)
                .count(),
            3,
            "{text}"
        );
        assert!(
            text.contains("0.0.0.0/1") && text.contains("never metered"),
            "{text}"
        );
        // Named by the policy itself: taken as written.
        let mut p = Policy::from_toml(
            "[[pbx.trunks]]\nname = \"all\"\nprotocol = \"pjsip\"\nhost = \"0.0.0.0/1\"\n[[pbx.trunks]]\nname = \"all2\"\nprotocol = \"pjsip\"\nhost = \"128.0.0.0/1\"\n[[pbx.trunks]]\nname = \"v6\"\nprotocol = \"pjsip\"\nhost = \"2001::/16\"\n",
        )
        .unwrap();
        p.merge_discovery(&d);
        let v = p.validate().unwrap();
        assert_eq!(v.pbx.trunks.len(), 4);
    }
}
