//! pbxfw-host: what pbxfw keeps and reads on the host, shared by the command line, the daemon,
//! the C API and the Python bindings:
//!
//! - [`asterisk`]: the Asterisk configuration directory that discovery reads;
//! - [`follow`]: following a growing log file as bytes, across rotation, truncation and restarts;
//! - [`dns`]: the DNS transport (nameservers, UDP and TCP) for hostnames in a policy;
//! - [`lock`]: the lock file, which refuses `disable` from every front end;
//! - [`state`]: crash-safe state files (temp file, fsync, rename, fsync of the directory), each
//!   with a kind and a version, and the last good copy kept beside;
//! - [`boot`]: uptime and boot id (with test overrides) and the boot history for Safe Mode;
//! - [`custom`]: the custom rules files, checked for their owner and mode;
//! - [`dirs`]: where state and run-time markers live;
//! - [`notify`]: readiness and status for systemd (`Type=notify`);
//! - [`peer`]: who is at the other end of a local socket (the control socket's callers).
//!
//! Decisions are the core's (`pbxfw_core::safety`); this crate only reads and writes.
// Unsafe only in `peer` (getsockopt), which allows it for its two calls.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod asterisk;
pub mod boot;
pub mod custom;
pub mod dirs;
pub mod dns;
pub mod follow;
pub mod ifaddrs;
pub mod lock;
pub mod notify;
pub mod peer;
pub mod state;
