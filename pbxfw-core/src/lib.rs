//! pbxfw-core: the pure heart of pbxfw.
//!
//! A policy in the words of a PBX administrator (zones, services, trunks, networks) is parsed,
//! validated into a [`ValidPolicy`], compiled into a [`Ruleset`] of the rule IR, and evaluated
//! by the reference evaluator [`eval`], which every backend's kernel tests agree with.
//!
//! ```
//! use pbxfw_core::{compile, eval, DynamicState, Packet, Policy, Proto};
//!
//! let policy = Policy::from_toml(r#"
//!     [interfaces]
//!     eth0 = "internet"
//!     eth1 = "local"
//!     [[pbx.trunks]]
//!     name = "provider-a"
//!     protocol = "pjsip"
//!     host = "203.0.113.10"
//! "#)?.validate()?;
//! let ruleset = compile(&policy);
//!
//! let sip = Packet::new("eth0", "203.0.113.10".parse()?, Proto::Udp, Some(5060));
//! let d = eval(&ruleset, &sip, &DynamicState::default());
//! assert_eq!(d.verdict.to_string(), "accept");
//! assert_eq!(d.decided_by, "trunk:provider-a");
//!
//! let ssh = Packet::new("eth0", "198.51.100.7".parse()?, Proto::Tcp, Some(22));
//! assert_eq!(eval(&ruleset, &ssh, &DynamicState::default()).decided_by, "default");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//! Stage boundaries are types: [`Policy`] (syntax checked) → [`ValidPolicy`] (meaning checked,
//! every problem reported with its path) → [`Ruleset`] (compiled; cannot fail). The IR knows
//! nothing of nftables or iptables; backends lower it.
//!
//! # Input safety
//! Policy text is limited to 64 MiB and IR text to 256 MiB; names, descriptions and interface
//! names are length-limited and restricted to characters that cannot escape a kernel comment or
//! identifier. No input can make the compiler panic (property-tested and fuzzed).
//!
//! # Crate features
//! None. The crate does no I/O, reads no clock and contains no `unsafe`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The modules are private: the public surface is the flat list below, in the words of the
// model (`Zone`, `Service`, `Trunk`), the IR (`Ruleset`, `Chain`, `Rule`, `Match`, `Verdict`),
// the responsive layer and the backends. Three families of same-named functions stay
// namespaces: the event formats (`ami`, `json`, `log`), the Asterisk configuration parser
// (`asterisk_conf`) and the set names of a compiled ruleset (`names`).
mod backend;
mod compile;
mod diag;
mod discover;
mod dns;
mod events;
mod explain;
mod fleet;
pub mod human;
mod ir;
mod model;
mod net;
mod responsive;
mod safety;

pub use backend::{
    apply, full_apply_reason, static_changes, sync, verify, verify_loaded, Applied, ApplyOptions,
    Backend, BackendError, Element, ElementStatus, Op, RuleCounter, SetEdit, SetStatus, SetUpdate,
    Status, Synced, MAX_TIMEOUT_SECS,
};
pub use compile::{compile, names, subtract, DYNAMIC_SET_SIZE};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use discover::{
    conf as asterisk_conf, discover, discover_text, merge as merge_discovery, DiscoveredTrunk,
    Discovery, Found, MAX_TRUNK_V4, MAX_TRUNK_V6,
};
pub use dns::{
    answer_for, encode_query, parse_response, rcode_name, validate_name, Answer as DnsAnswer,
    Lookup as DnsLookup, LookupError as DnsLookupError, LookupFailure as DnsLookupFailure,
    NameStatus, Question as DnsQuestion, RData as DnsRData, Record as DnsRecord,
    RecordType as DnsRecordType, Response as DnsResponse, Snapshot as DnsSnapshot,
    Tracker as DnsTracker, TrackerConfig as DnsTrackerConfig, WireError as DnsWireError,
    DEFAULT_NEGATIVE_TTL, MAX_CNAME_CHAIN, MAX_JUMPS, SRV_PREFIXES,
};
pub use events::{
    ami, attack_tools, is_attack_tool, json, log, parse_ami_event, parse_json_line, parse_log_line,
    parse_log_line_with_offset, to_json_line, AmiReader, AuthFailure, EventError, SecurityEvent,
    TimedEvent,
};
pub use explain::{explain, explain_with, step_of, Explanation, RuleRef};
pub use fleet::{
    parse_go_duration, parse_stream, FleetDecision, FleetEntry, FleetTable, Pull, Refused, Skipped,
    StreamError, TableChange, MAX_FLEET_SECS,
};
pub use ir::{
    eval, parse as parse_ir, verify as verify_ir, BasePolicy, Chain, CtState, Decision, DynamicSet,
    DynamicState, FinalVerdict, FingerprintParts, L4Proto, Map, MarkOp, Match, Packet,
    ParseIrError, PortSet, Proto, Rule, Ruleset, Set, SetDigest, SetKind, SrcMap, StaticSet,
    Verdict, VerifyError, CLASSIFY, INPUT,
};
pub use model::parse_seconds;
pub use model::{
    catalogue, is_interface_name, Admin, BlacklistEntry, CatalogueEntry, DenyVerdict, Fleet,
    NetworkOverride, ParseError, Pbx, Policy, PortRange, PortSpec, Rate, RateUnit, Responsive,
    Service, Settings, SignallingProtocol, Source, Trunk, User, ValidPolicy, Zone,
    DEFAULT_POLICY_TOML, L4, MAX_POLICY_BYTES,
};
pub use net::{addr_value, mask, value_addr, Family, Prefix, PrefixError, Range};
pub use responsive::{
    never_banned, protected_sources, Action, BanCause, BanRecord, Config as MachineConfig, Machine,
    Protected, RestoreError, SetChange, SetRole, Threshold, MAX_RECENT, SNAPSHOT_VERSION,
};
pub use safety::{
    lockouts, safe_mode, AdminSession, BootRecord, Lockout, SafeMode, SafeModeConfig,
};
