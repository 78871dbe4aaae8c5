//! pbxfw-runtime: the procedures every front end of pbxfw runs — the `pbxfw` command line, the C
//! API (and PHP through it), the Python bindings, and Rust programs — so that they all behave
//! the same: loading a policy, applying it with its safety (anti-lockout, confirmation,
//! rollback, Safe Mode), status, replay, and the daemon.
//!
//! The core (`pbxfw-core`) decides; the backends (`pbxfw-nft`, `pbxfw-ipt`) and the host crate
//! (`pbxfw-host`) offer primitives; this crate strings them together. Front ends convert their
//! arguments, call it, and map its errors.
#![forbid(unsafe_code)]

pub mod actions;
pub mod apply;
pub mod backends;
pub mod context;
pub mod daemon;
pub mod edit;
pub mod error;
pub mod names;
pub mod policy;
pub mod policy_file;
pub mod render;
pub mod replay;
pub mod safety;
pub mod status;

pub use apply::{apply, confirm, disable, rollback, ApplyOutcome, ApplyRequest};
pub use backends::BackendName;
pub use error::{Error, Refusal, Result};
pub use policy::{load, load_text, Loaded};
pub use status::{status, Status};
