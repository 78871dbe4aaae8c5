//! The lock file: while it exists, pbxfw refuses to be disabled, from the command line, the C
//! API and Python alike (docs/safety.md). An administrator who really means it removes the file
//! first.

use pbxfw_core::{Backend, BackendError};

/// Disable `backend` unless the lock file exists. Returns whether anything was loaded.
pub fn disable(backend: &dyn Backend) -> Result<bool, BackendError> {
    let lock = crate::dirs::lock_file();
    if lock.exists() {
        return Err(BackendError::Locked(lock.display().to_string()));
    }
    backend.disable()
}
