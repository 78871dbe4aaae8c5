//! Certificate-renewal windows (docs/acme.md): `pbxfw acme open|close|status`.
//!
//! A Let's Encrypt HTTP-01 challenge comes from validators anywhere on the internet to port
//! 80. FreePBX opens that port to everyone for the renewal; pbxfw opens it only for
//! connections whose first request line is the challenge's. The compiled policy
//! (`settings.acme`) holds the rules; a window is the whole address space put into the
//! `acme4`/`acme6` sets with a timeout, so a crash of whatever opened it closes it on time.

use std::time::Duration;

use pbxfw_core::{names, Element, Family, Prefix, SetEdit};
use serde::{Deserialize, Serialize};

use crate::backends::BackendName;
use crate::error::{Error, Result};

/// The default length of a window, seconds.
pub const DEFAULT_SECONDS: u64 = 60;
/// The longest window, seconds: an ACME client's validation takes seconds, a whole renewal a
/// few minutes; longer is a port left open.
pub const MAX_SECONDS: u64 = 3600;

/// A window, as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The backend.
    pub backend: String,
    /// Whether a window is open.
    pub open: bool,
    /// Seconds until it closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// Unix seconds at which it closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// The port it opens.
    pub port: u16,
    /// The request line a connection must start with.
    pub request: String,
}

/// The whole address space of a family as the sets hold it: two halves (an ipset `hash:net`
/// cannot hold a /0, and one form for both backends keeps them alike).
fn everyone(f: Family) -> [Prefix; 2] {
    let (a, b) = match f {
        Family::Ipv4 => ("0.0.0.0/1", "128.0.0.0/1"),
        Family::Ipv6 => ("::/1", "8000::/1"),
    };
    [
        a.parse().expect("a valid prefix"),
        b.parse().expect("a valid prefix"),
    ]
}

fn loaded(backend: BackendName) -> Result<(Box<dyn pbxfw_core::Backend>, pbxfw_core::Ruleset)> {
    let kernel = backend.open();
    if kernel.fingerprint()?.is_none() {
        return Err(pbxfw_core::BackendError::NotLoaded.into());
    }
    let rs = crate::bans::loaded_ruleset(kernel.as_ref())?;
    if !Family::BOTH
        .iter()
        .all(|f| rs.sets.contains_key(&names::acme(*f)))
    {
        return Err(Error::Usage(
            "the loaded ruleset has no certificate-renewal window: set `acme = true` under [settings] and apply the policy (docs/acme.md)".into(),
        ));
    }
    Ok((kernel, rs))
}

fn window(backend: BackendName, open: bool, expires_in: Option<u64>, now: u64) -> Window {
    Window {
        backend: backend.as_str().to_string(),
        open,
        expires_in,
        until: expires_in.map(|s| now + s),
        port: names::ACME_PORT,
        request: names::ACME_REQUEST.to_string(),
    }
}

/// Open a window for `seconds` (1 to [`MAX_SECONDS`]); one already open is given the new
/// length, in the same kernel transaction.
pub fn open(backend: BackendName, seconds: u64, now: u64) -> Result<Window> {
    if seconds == 0 || seconds > MAX_SECONDS {
        return Err(Error::Usage(format!(
            "a window lasts 1 to {MAX_SECONDS} seconds"
        )));
    }
    let (kernel, rs) = loaded(backend)?;
    let timeout = Some(Duration::from_secs(seconds));
    let mut edits: Vec<SetEdit> = Family::BOTH
        .iter()
        .map(|f| SetEdit::Flush(names::acme(*f)))
        .collect();
    edits.extend(Family::BOTH.iter().map(|f| {
        SetEdit::Add(
            names::acme(*f),
            everyone(*f)
                .iter()
                .map(|p| Element {
                    prefix: *p,
                    timeout,
                })
                .collect(),
        )
    }));
    kernel.edit_sets(&rs, &edits)?;
    Ok(window(backend, true, Some(seconds), now))
}

/// Close the window now (nothing happens when none is open).
pub fn close(backend: BackendName, now: u64) -> Result<Window> {
    let (kernel, rs) = loaded(backend)?;
    let edits: Vec<SetEdit> = Family::BOTH
        .iter()
        .map(|f| SetEdit::Flush(names::acme(*f)))
        .collect();
    kernel.edit_sets(&rs, &edits)?;
    Ok(window(backend, false, None, now))
}

/// Whether a window is open, and until when.
pub fn status(backend: BackendName, now: u64) -> Result<Window> {
    let (kernel, _) = loaded(backend)?;
    let mut elements = Vec::new();
    for f in Family::BOTH {
        elements.extend(kernel.set_elements(&names::acme(f))?);
    }
    // An element without a timeout was put there by hand: open until it is removed.
    let left = if elements.iter().any(|e| e.expires_in.is_none()) {
        None
    } else {
        elements.iter().filter_map(|e| e.expires_in).max()
    };
    Ok(window(backend, !elements.is_empty(), left, now))
}
