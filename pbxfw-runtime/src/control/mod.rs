//! The control socket: how a program that is not root — a PBX's web module under php-fpm, a
//! member of the `pbxfw` group at the command line — asks the daemon to look at or change the
//! firewall (docs/control-socket.md).
//!
//! - [`wire`]: the protocol, JSON lines with a version, request ids and typed errors;
//! - [`server`]: the daemon's side: who the caller is (`SO_PEERCRED`), what its role allows,
//!   bounds on size, time and clients, and the dispatch to the very procedures the command
//!   line runs as root;
//! - [`client`]: the caller's side, which the command line, the C API and Python use.

pub mod client;
pub mod server;
pub mod wire;

pub use client::Client;
pub use server::{serve, ControlConfig};
pub use wire::{Call, Role};

/// Where the daemon's control socket is: `$PBXFW_CONTROL_SOCKET`, else `control.sock` in the
/// run directory (`/run/pbxfw/control.sock`).
pub fn socket_path() -> std::path::PathBuf {
    std::env::var_os("PBXFW_CONTROL_SOCKET")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| pbxfw_host::dirs::run_dir().join("control.sock"))
}

/// A policy an `apply` through the socket asked to save once it is confirmed: written by
/// [`saved_on_confirm`] when the confirmed ruleset is the one it compiled to.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SaveOnConfirm {
    pub fingerprint: String,
    pub path: String,
    pub text: String,
}

pub(crate) fn save_on_confirm_path() -> std::path::PathBuf {
    pbxfw_host::dirs::state_dir().join("save-on-confirm.json")
}

/// Write `text` as the policy file `path`: through a link, keeping owner, group and mode when
/// it exists; else created root's, 0640.
pub(crate) fn save_policy(path: &str, text: &str) -> crate::Result<()> {
    let p = std::path::Path::new(path);
    if !p.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(p)
            .map_err(|e| crate::Error::io(p, e))?;
        return f
            .write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| crate::Error::io(p, e));
    }
    crate::policy_file::write_atomic(p, text).map_err(|e| crate::Error::io(p, e))
}

/// After a confirmation of `fingerprint` (by any front end): the policy an apply through the
/// socket asked to save, if it is that ruleset's, becomes the policy file. Returns the file.
/// The request is forgotten once written (or when it is another ruleset's); one that could
/// not be written stays, and the error says so.
pub(crate) fn saved_on_confirm(fingerprint: &str) -> crate::Result<Option<String>> {
    let path = save_on_confirm_path();
    let pending: Option<SaveOnConfirm> =
        pbxfw_host::state::read(&path, "save-on-confirm").map_err(crate::Error::from)?;
    match pending {
        Some(p) if p.fingerprint == fingerprint => {
            save_policy(&p.path, &p.text)?;
            forget_save_on_confirm();
            Ok(Some(p.path))
        }
        Some(_) => {
            forget_save_on_confirm();
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Forget a save asked for on confirmation (its apply failed, or was rolled back).
pub(crate) fn forget_save_on_confirm() {
    let _ = pbxfw_host::state::remove(&save_on_confirm_path());
}
