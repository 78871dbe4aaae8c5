//! Custom rules: the administrator's own backend-specific rules, kept in
//! `$PBXFW_CUSTOM_DIR` (default `/etc/pbxfw`) as `custom.nft` (nft rule statements) or
//! `custom.iptables` (iptables rule arguments, one rule a line). Every apply loads them into the
//! ruleset's `custom` chain after the kernel has checked them. A file anyone but root could
//! have written is refused: it would be a way to open the firewall.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The custom rules file for a backend family (`nft` or `iptables`).
pub fn path(backend: &str) -> PathBuf {
    let dir = std::env::var_os("PBXFW_CUSTOM_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/pbxfw"));
    let kind = if backend.starts_with("iptables") {
        "iptables"
    } else {
        "nft"
    };
    dir.join(format!("custom.{kind}"))
}

/// Why the custom rules file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CustomError {
    /// Someone other than root could have written it.
    #[error("refused: {} must be owned by root and not writable by group or others ({detail})", path.display())]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// Its owner and mode.
        detail: String,
    },
    /// It cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The custom rules for `backend`, if its file exists: refused unless owned by root and not
/// writable by group or others.
pub fn load(backend: &str) -> Result<Option<String>, CustomError> {
    let p = path(backend);
    let meta = match std::fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CustomError::Io { path: p, source }),
    };
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(CustomError::Unsafe {
            detail: format!("owner uid {}, mode {:o}", meta.uid(), meta.mode() & 0o7777),
            path: p,
        });
    }
    std::fs::read_to_string(&p)
        .map(Some)
        .map_err(|source| CustomError::Io { path: p, source })
}
