//! The control socket's protocol (docs/control-socket.md): one JSON object a line each way.
//!
//! A request is `{"v": 1, "id": ID, "method": NAME, "params": {...}}`; the answer carries the
//! same `v` and `id` and either `"ok": true, "result": ...` or `"ok": false, "error": {...}`.
//! Requests are read strictly: an unknown method, an unknown or mistyped parameter, a missing
//! version or a version other than 1 is refused as a whole (kind `usage`), never guessed at.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use pbxfw_core::BackendError;

use crate::error::{Error, Refusal};

/// The version of the protocol this side speaks.
pub const PROTOCOL: u32 = 1;

/// The longest request line taken, in bytes (a policy with a 100,000-entry blacklist is about
/// 3 MB of TOML).
pub const MAX_REQUEST: usize = 16 << 20;

/// The longest request id taken, in bytes of its JSON.
pub const MAX_ID: usize = 128;

/// Which callers may make a call (docs/control-socket.md, "Roles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Looks: status, bans, explain, show, discovery, a policy's diagnostics.
    Read,
    /// Looks, and tells of VPN clients connecting and disconnecting (a VPN server's scripts).
    Vpn,
    /// Changes: apply, confirm, rollback, bans by hand and their lifting, blacklist and trust
    /// edits, disable.
    Admin,
}

/// Parameters of a call that only names a backend (empty: the one pbxfw last applied with).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendParams {
    /// `nft`, `iptables`, `iptables-nft`, `iptables-legacy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// `acme_open`: a certificate-renewal window (docs/acme.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeParams {
    /// How long, seconds (1 to 3600; default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// The backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// Parameters of a call that takes none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Who the change comes from, for anti-lockout: what an apply checks for an SSH session, the
/// daemon checks for these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    /// The address (and port) the caller's own user reaches the host from: a web module passes
    /// its HTTP client's, e.g. `198.51.100.7:443`; the command line its `$SSH_CONNECTION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// More administrators whose access must survive (`ADDR` for SSH, `ADDR:PORT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<String>,
    /// Change even if an administrator would be cut off (logged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `apply`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyParams {
    /// The policy text.
    pub policy: String,
    /// `toml` (default) or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// A counter on every rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub counters: bool,
    /// Roll back after this many seconds unless confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<u64>,
    /// Also make it the daemon's policy file (written when the apply succeeds, or with
    /// `confirm` when it is confirmed), so that the boot and the daemon follow it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub save: bool,
    /// Who it comes from.
    #[serde(flatten)]
    pub requester: Requester,
}

/// `ban`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanParams {
    /// Address or CIDR.
    pub prefix: String,
    /// For how long, in seconds.
    pub seconds: u64,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Who it comes from.
    #[serde(flatten)]
    pub requester: Requester,
}

/// `unban`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnbanParams {
    /// Addresses or CIDRs.
    pub prefixes: Vec<String>,
    /// The backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// `blacklist_add`, `blacklist_del`, `trust`, `untrust`: edits of the daemon's policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditParams {
    /// Addresses, CIDRs or hostnames (one for `trust` and `untrust`).
    pub entries: Vec<String>,
    /// The backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Who it comes from.
    #[serde(flatten)]
    pub requester: Requester,
}

/// `zone_add`, `zone_del`: zone membership in the daemon's policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneParams {
    /// The zone (`trusted`, `local` or `internal`, `other`, `internet` or `external`, `reject`).
    pub zone: String,
    /// Addresses, CIDRs or hostnames.
    pub entries: Vec<String>,
    /// The backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Who it comes from.
    #[serde(flatten)]
    pub requester: Requester,
}

/// `vpn_connect`, `vpn_disconnect`: a VPN client's session (docs/vpn.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpnParams {
    /// The public address the client connected from (OpenVPN's `untrusted_ip`).
    pub address: String,
    /// The identity it authenticated as (OpenVPN's `common_name`).
    pub identity: String,
    /// How long the grant lasts unless the client disconnects first (60 to 86,400 s; default
    /// a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

/// `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainParams {
    /// The packet.
    pub packet: crate::explain::Query,
    /// Ask the kernel (bans, registrations as they are) instead of the daemon's policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
    /// The backend asked by `live`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// `show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowParams {
    /// One zone (default: every zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// `check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    /// The policy text.
    pub policy: String,
    /// `toml` (default) or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A call: the method and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Call {
    /// The daemon's version, the protocol's, and the caller's role.
    Version(NoParams),
    /// `pbxfw status --format json`.
    Status(BackendParams),
    /// `pbxfw bans --format json`.
    Bans(BackendParams),
    /// `pbxfw explain` (on the daemon's policy, or `live`).
    Explain(ExplainParams),
    /// `pbxfw show` (the daemon's policy).
    Show(ShowParams),
    /// `pbxfw zone list` (the daemon's policy).
    Zones(ShowParams),
    /// `pbxfw discover` of the daemon's Asterisk directory.
    Discover(NoParams),
    /// `pbxfw check --format json` of a policy text.
    Check(CheckParams),
    /// `pbxfw apply` of a policy text.
    Apply(ApplyParams),
    /// `pbxfw confirm`.
    Confirm(NoParams),
    /// `pbxfw rollback`.
    Rollback(BackendParams),
    /// `pbxfw ban`.
    Ban(BanParams),
    /// `pbxfw unban`.
    Unban(UnbanParams),
    /// `pbxfw blacklist add` (the daemon's policy file).
    BlacklistAdd(EditParams),
    /// `pbxfw blacklist del`.
    BlacklistDel(EditParams),
    /// `pbxfw trust`.
    Trust(EditParams),
    /// `pbxfw untrust`.
    Untrust(EditParams),
    /// `pbxfw zone add`.
    ZoneAdd(ZoneParams),
    /// `pbxfw zone del`.
    ZoneDel(ZoneParams),
    /// `pbxfw disable` (refused while the lock file exists).
    Disable(BackendParams),
    /// `pbxfw vpn connect`.
    VpnConnect(VpnParams),
    /// `pbxfw vpn disconnect`.
    VpnDisconnect(VpnParams),
    /// `pbxfw acme open`.
    AcmeOpen(AcmeParams),
    /// `pbxfw acme close`.
    AcmeClose(BackendParams),
    /// `pbxfw acme status`.
    AcmeStatus(BackendParams),
}

impl Call {
    /// The method's name.
    pub fn method(&self) -> &'static str {
        match self {
            Call::Version(_) => "version",
            Call::Status(_) => "status",
            Call::Bans(_) => "bans",
            Call::Explain(_) => "explain",
            Call::Show(_) => "show",
            Call::Zones(_) => "zones",
            Call::Discover(_) => "discover",
            Call::Check(_) => "check",
            Call::Apply(_) => "apply",
            Call::Confirm(_) => "confirm",
            Call::Rollback(_) => "rollback",
            Call::Ban(_) => "ban",
            Call::Unban(_) => "unban",
            Call::BlacklistAdd(_) => "blacklist_add",
            Call::BlacklistDel(_) => "blacklist_del",
            Call::Trust(_) => "trust",
            Call::Untrust(_) => "untrust",
            Call::ZoneAdd(_) => "zone_add",
            Call::ZoneDel(_) => "zone_del",
            Call::Disable(_) => "disable",
            Call::VpnConnect(_) => "vpn_connect",
            Call::VpnDisconnect(_) => "vpn_disconnect",
            Call::AcmeOpen(_) => "acme_open",
            Call::AcmeClose(_) => "acme_close",
            Call::AcmeStatus(_) => "acme_status",
        }
    }

    /// The role a caller needs for it.
    pub fn role(&self) -> Role {
        match self {
            Call::Version(_)
            | Call::Status(_)
            | Call::Bans(_)
            | Call::Explain(_)
            | Call::Show(_)
            | Call::Zones(_)
            | Call::Discover(_)
            | Call::AcmeStatus(_)
            | Call::Check(_) => Role::Read,
            Call::VpnConnect(_) | Call::VpnDisconnect(_) => Role::Vpn,
            _ => Role::Admin,
        }
    }
}

/// A request as read: its id (echoed in the answer) and the call.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The caller's id: null, a number or a string of at most [`MAX_ID`] bytes.
    pub id: Value,
    /// What it asks.
    pub call: Call,
}

/// A request that cannot be read: the id, when one could be read (to answer with), and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    /// The id, or null.
    pub id: Value,
    /// Why (answered as a `usage` error).
    pub error: String,
}

/// The most `params` of a call other than `apply` and `check` may hold, in bytes (10,000
/// blacklist entries are about 200 kB).
pub const MAX_SMALL_PARAMS: usize = 1 << 20;

/// The envelope, read without building its parts: `id` and `params` stay text until they are
/// known to be small enough, so a request cannot make the daemon build a large tree of values
/// (a 16 MiB array of zeros is half a gigabyte of them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    v: Option<u32>,
    #[serde(default, borrow)]
    id: Option<&'a serde_json::value::RawValue>,
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a serde_json::value::RawValue>,
}

/// Read one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, BadRequest> {
    let bad = |id: Value, why: String| BadRequest { id, error: why };
    let text = std::str::from_utf8(line)
        .map_err(|_| bad(Value::Null, "the request is not UTF-8".into()))?;
    let env: Envelope = serde_json::from_str(text).map_err(|e| {
        bad(
            Value::Null,
            format!("the request is not a protocol object: {e}"),
        )
    })?;
    let id_error = || format!("id must be null, a number or a string of at most {MAX_ID} bytes");
    let id = match env.id {
        None => Value::Null,
        Some(raw) if raw.get().len() > MAX_ID + 2 => return Err(bad(Value::Null, id_error())),
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(v @ (Value::Null | Value::Number(_))) => v,
            Ok(Value::String(s)) if s.len() <= MAX_ID => Value::String(s),
            _ => return Err(bad(Value::Null, id_error())),
        },
    };
    match env.v {
        Some(PROTOCOL) => {}
        Some(v) => {
            return Err(bad(
                id,
                format!("protocol version {v} is not spoken here (this daemon speaks {PROTOCOL})"),
            ))
        }
        None => return Err(bad(id, format!("\"v\": {PROTOCOL} is missing"))),
    }
    let Some(method) = env.method else {
        return Err(bad(id, "\"method\" is missing".into()));
    };
    let params = match env.params.map(|p| p.get().trim_start()) {
        None | Some("null") => "{}",
        Some(p) if p.starts_with('{') => p,
        Some(_) => return Err(bad(id, "\"params\" must be an object".into())),
    };
    if params.len() > MAX_SMALL_PARAMS && !matches!(method.as_str(), "apply" | "check") {
        return Err(bad(
            id,
            format!("{method}: params longer than {MAX_SMALL_PARAMS} bytes"),
        ));
    }
    let typed = format!(
        "{{\"method\":{},\"params\":{params}}}",
        Value::String(method.clone())
    );
    let call: Call =
        serde_json::from_str(&typed).map_err(|e| bad(id.clone(), format!("{method}: {e}")))?;
    Ok(Request { id, call })
}

/// The request line for `call` (no newline).
pub fn encode_request(id: &Value, call: &Call) -> String {
    let mut v = serde_json::to_value(call).expect("a call serialises");
    if let Value::Object(o) = &mut v {
        o.insert("v".into(), PROTOCOL.into());
        o.insert("id".into(), id.clone());
    }
    v.to_string()
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// [`PROTOCOL`].
    pub v: u32,
    /// The request's id (null when it could not be read).
    pub id: Value,
    /// Whether the call succeeded.
    pub ok: bool,
    /// Its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Its failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl Response {
    /// A success.
    pub fn ok(id: Value, result: Value) -> Response {
        Response {
            v: PROTOCOL,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn failed(id: Value, e: &Error) -> Response {
        Response {
            v: PROTOCOL,
            id,
            ok: false,
            result: None,
            error: Some(WireError::from_error(e)),
        }
    }
}

/// A failure on the wire: what any client needs (`kind`, the C API's `code`, `message`, and
/// for a refusal its `reason`, for an invalid policy every diagnostic), and in `detail` what
/// the Rust client needs to rebuild the very [`Error`], so that each front end maps it as it
/// maps a local one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// [`Error::kind`].
    pub kind: String,
    /// [`Error::code`]: the C API's result code.
    pub code: u32,
    /// The message, as the command line prints it.
    pub message: String,
    /// A refusal's [`Refusal::reason`] (`lockout`, `locked`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An invalid policy's diagnostics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<pbxfw_core::Diagnostic>,
    /// The fields of the error.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl WireError {
    /// The wire form of `e`.
    pub fn from_error(e: &Error) -> WireError {
        use serde_json::json;
        let mut reason = None;
        let mut diagnostics = Vec::new();
        let detail = match e {
            Error::Parse { name, message } => json!({"name": name, "message": message}),
            Error::Invalid {
                name,
                diagnostics: d,
            } => {
                diagnostics = d.0.clone();
                json!({"name": name})
            }
            Error::Refused(r) => {
                reason = Some(r.reason().to_string());
                json!({"refusal": r})
            }
            Error::Backend(b) => {
                if let BackendError::Locked(_) = b {
                    reason = Some("locked".into());
                }
                backend_detail(b)
            }
            Error::State(s) => json!({"state": s}),
            Error::Io { path, source } => {
                json!({"path": path, "error": source.to_string(), "errno": source.raw_os_error()})
            }
            Error::Usage(_) | Error::Denied(_) | Error::Unavailable(_) => Value::Null,
        };
        WireError {
            kind: e.kind().to_string(),
            code: e.code(),
            message: match e {
                // The one-line-per-problem form the command line prints.
                Error::Invalid {
                    name,
                    diagnostics: d,
                } => d
                    .iter()
                    .map(|x| format!("{name}: {x}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                e => e.to_string(),
            },
            reason,
            diagnostics,
            detail,
        }
    }

    /// The [`Error`] this stands for. What cannot be rebuilt exactly (a daemon of another
    /// version) keeps its message under the same kind.
    pub fn into_error(self) -> Error {
        let d = &self.detail;
        let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
        match self.kind.as_str() {
            "parse" => Error::Parse {
                name: s("name"),
                message: s("message"),
            },
            "invalid" => Error::Invalid {
                name: s("name"),
                diagnostics: pbxfw_core::Diagnostics(self.diagnostics),
            },
            "refused" => match serde_json::from_value::<Refusal>(d["refusal"].clone()) {
                Ok(r) => Error::Refused(r),
                Err(_) if d["variant"] == "locked" => {
                    Error::Backend(BackendError::Locked(s("path")))
                }
                Err(_) => Error::Backend(BackendError::Locked(self.message)),
            },
            "backend" => Error::Backend(backend_error(d, self.message)),
            "state" => match serde_json::from_value(d["state"].clone()) {
                Ok(st) => Error::State(st),
                Err(_) => Error::State(pbxfw_host::state::StateError {
                    path: Default::default(),
                    reason: self.message,
                    last_good: None,
                }),
            },
            "io" => Error::Io {
                path: s("path").into(),
                source: match d["errno"].as_i64() {
                    Some(n) => std::io::Error::from_raw_os_error(n as i32),
                    None => std::io::Error::other(s("error")),
                },
            },
            "usage" => Error::Usage(self.message),
            "denied" => Error::Denied(strip(&self.message, "denied: ")),
            _ => Error::Unavailable(strip(&self.message, "the pbxfw daemon is unavailable: ")),
        }
    }
}

fn strip(message: &str, prefix: &str) -> String {
    message.strip_prefix(prefix).unwrap_or(message).to_string()
}

fn backend_detail(b: &BackendError) -> Value {
    use serde_json::json;
    match b {
        BackendError::Unsupported { backend, feature } => {
            json!({"variant": "unsupported", "backend": backend, "feature": feature})
        }
        BackendError::Check(m) => json!({"variant": "check", "text": m}),
        BackendError::Spawn { tool, message } => {
            json!({"variant": "spawn", "tool": tool, "text": message})
        }
        BackendError::Load(m) => json!({"variant": "load", "text": m}),
        BackendError::Verify { expected, found } => {
            json!({"variant": "verify", "expected": expected, "found": found})
        }
        BackendError::NotLoaded => json!({"variant": "not_loaded"}),
        BackendError::NoSet(s) => json!({"variant": "no_set", "text": s}),
        BackendError::Kernel(m) => json!({"variant": "kernel", "text": m}),
        BackendError::Locked(p) => json!({"variant": "locked", "path": p}),
    }
}

fn backend_error(d: &Value, message: String) -> BackendError {
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    match d["variant"].as_str().unwrap_or_default() {
        "unsupported" => BackendError::Unsupported {
            backend: crate::backends::BackendName::ALL
                .into_iter()
                .map(|b| b.open().name())
                .find(|n| *n == d["backend"])
                .unwrap_or("remote"),
            feature: s("feature"),
        },
        "check" => BackendError::Check(s("text")),
        "spawn" => BackendError::Spawn {
            tool: s("tool"),
            message: s("text"),
        },
        "load" => BackendError::Load(s("text")),
        "verify" => BackendError::Verify {
            expected: s("expected"),
            found: d["found"].as_str().map(str::to_string),
        },
        "not_loaded" => BackendError::NotLoaded,
        "no_set" => BackendError::NoSet(s("text")),
        "locked" => BackendError::Locked(s("path")),
        _ => BackendError::Kernel(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_read_strictly() {
        let r = parse_request(br#"{"v":1,"id":7,"method":"status"}"#).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(r.call, Call::Status(BackendParams::default()));
        let r = parse_request(
            br#"{"v":1,"id":"a","method":"unban","params":{"prefixes":["192.0.2.1"]}}"#,
        )
        .unwrap();
        assert_eq!(r.call.role(), Role::Admin);
        for (line, why) in [
            (&br#"{"id":1,"method":"status"}"#[..], "is missing"),
            (br#"{"v":2,"id":1,"method":"status"}"#, "version 2"),
            (br#"{"v":1,"id":1,"method":"reboot"}"#, "unknown variant"),
            (
                br#"{"v":1,"id":1,"method":"status","params":{"backend":"nft","x":1}}"#,
                "unknown field",
            ),
            (
                br#"{"v":1,"id":1,"method":"status","params":[]}"#,
                "must be an object",
            ),
            (
                br#"{"v":1,"id":1,"method":"apply","params":{}}"#,
                "missing field",
            ),
            (br#"{"v":1,"id":{"a":1},"method":"status"}"#, "id must be"),
            (
                br#"{"v":1,"id":1,"method":"status","extra":1}"#,
                "not a protocol object",
            ),
            (b"\xff\xfe", "not UTF-8"),
            (b"[1,2]", "not a protocol object"),
        ] {
            let e = parse_request(line).unwrap_err();
            assert!(
                e.error.contains(why),
                "{}: {}",
                String::from_utf8_lossy(line),
                e.error
            );
        }
        // The id of a request it could read is kept for the answer.
        assert_eq!(
            parse_request(br#"{"v":2,"id":"x","method":"status"}"#)
                .unwrap_err()
                .id,
            "x"
        );
    }

    /// Large parameters are refused before they are built, but for the calls that carry a
    /// policy.
    #[test]
    fn only_a_policy_may_be_large() {
        let zeros = vec!["0"; MAX_SMALL_PARAMS / 2].join(",");
        let line = format!(r#"{{"v":1,"id":1,"method":"status","params":{{"x":[{zeros}]}}}}"#);
        let e = parse_request(line.as_bytes()).unwrap_err();
        assert!(e.error.contains("params longer than"), "{}", e.error);
        let policy = "#".repeat(MAX_SMALL_PARAMS);
        let line = format!(r#"{{"v":1,"id":1,"method":"check","params":{{"policy":"{policy}"}}}}"#);
        assert!(parse_request(line.as_bytes()).is_ok());
        let long_id = format!(r#"{{"v":1,"id":"{}","method":"status"}}"#, "a".repeat(200));
        assert!(parse_request(long_id.as_bytes())
            .unwrap_err()
            .error
            .contains("id must be"));
    }

    #[test]
    fn an_encoded_request_reads_back() {
        let call = Call::Apply(ApplyParams {
            policy: "x = 1".into(),
            confirm: Some(60),
            requester: Requester {
                client: Some("198.51.100.7:443".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let line = encode_request(&Value::from(3), &call);
        assert_eq!(parse_request(line.as_bytes()).unwrap().call, call);
    }

    #[test]
    fn errors_cross_the_wire_unchanged() {
        let errors = [
            Error::Refused(Refusal::Lockout {
                lines: vec!["ssh from 198.51.100.7 dropped by blacklist".into()],
            }),
            Error::Refused(Refusal::Locked {
                path: "/etc/pbxfw/lock".into(),
            }),
            Error::Backend(BackendError::Locked("/etc/pbxfw/lock".into())),
            Error::Backend(BackendError::Load("no".into())),
            Error::Backend(BackendError::NotLoaded),
            Error::Backend(BackendError::Unsupported {
                backend: "iptables",
                feature: "x".into(),
            }),
            Error::Parse {
                name: "(control socket)".into(),
                message: "expected =".into(),
            },
            Error::Io {
                path: "/etc/pbxfw/pbxfw.toml".into(),
                source: std::io::Error::from_raw_os_error(13),
            },
            Error::Usage("nothing to confirm".into()),
            Error::Denied("uid 1000 may only look".into()),
            Error::Unavailable("busy".into()),
        ];
        for e in errors {
            let wire: WireError =
                serde_json::from_str(&serde_json::to_string(&WireError::from_error(&e)).unwrap())
                    .unwrap();
            let back = wire.into_error();
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.code(), e.code());
            assert_eq!(back.kind(), e.kind());
        }
    }
}
