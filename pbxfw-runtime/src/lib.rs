//! pbxfw-runtime: the procedures every front end of pbxfw runs — the `pbxfw` command line, the C
//! API (and PHP through it), the Python bindings, and Rust programs — so that they all behave
//! the same: loading a policy, applying it with its safety (anti-lockout, confirmation,
//! rollback, Safe Mode), status, replay, and the daemon.
//!
//! The core (`pbxfw-core`) decides; the backends (`pbxfw-nft`, `pbxfw-ipt`) and the host crate
//! (`pbxfw-host`) offer primitives; this crate strings them together. Front ends convert their
//! arguments, call it, and map its errors ([`Error`]); docs/runtime.md has the table of which
//! front end calls what.
//!
//! ```no_run
//! use pbxfw_runtime::{apply, load, ApplyRequest, BackendName};
//!
//! // Parse, merge discovery, validate, compile.
//! let loaded = load(Some("/etc/pbxfw/pbxfw.toml"))?;
//! // Anti-lockout, custom rules, load, verify, the applied record; rolled back in 120 s
//! // unless confirmed.
//! let done = apply(&loaded, &ApplyRequest { confirm: Some(120), ..Default::default() })?;
//! println!("{}", done.fingerprint);
//! pbxfw_runtime::confirm()?; // or pbxfw_runtime::rollback(BackendName::Nft)
//! println!("{}", pbxfw_runtime::status(BackendName::Nft, 0)?.to_json());
//! # Ok::<(), pbxfw_runtime::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod acme;
pub mod actions;
pub mod apply;
pub mod backends;
pub mod bans;
pub mod context;
pub mod control;
pub mod daemon;
pub mod edit;
mod edit_index;
pub mod error;
pub mod explain;
pub mod fleet;
pub mod flow_cut;
pub mod hooks;
pub mod human;
pub mod init;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod policy_file;
pub mod render;
pub mod replay;
pub mod safety;
pub mod show;
pub mod status;
pub mod tier_bans;
pub mod wireguard;

pub use actions::{carry_out, CarriedOut};
pub use apply::{apply, confirm, disable, rollback, ApplyOutcome, ApplyRequest};
pub use backends::BackendName;
pub use context::Context;
pub use daemon::{machine_config, Daemon, DaemonConfig, Handle, Sources};
pub use error::{Error, Refusal, Result};
pub use policy::{load, load_text, Loaded};
pub use safety::Admin;
pub use status::{status, Status};
