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

pub mod backend;
pub mod compile;
mod diag;
pub mod discover;
pub mod dns;
pub mod events;
pub mod explain;
pub mod ir;
mod model;
pub mod net;
pub mod responsive;
pub mod safety;

pub use compile::compile;
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use ir::{eval, Decision, DynamicState, Packet, Proto, Ruleset};
pub use model::{
    catalogue, BlacklistEntry, CatalogueEntry, DenyVerdict, NetworkOverride, ParseError, Pbx,
    Policy, PortRange, PortSpec, Rate, RateUnit, Responsive, Service, Settings, SignallingProtocol,
    Source, Trunk, User, ValidPolicy, Zone, DEFAULT_POLICY_TOML, L4,
};
