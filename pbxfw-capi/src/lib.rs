//! pbxfw-capi: the C API of pbxfw, for C programs and for PHP through FFI.
//!
//! The conventions (also in `docs/c-api.md`):
//! - Functions are named `pbxfw_<object>_<verb>` and return a [`pbxfw_result`], a stable
//!   numbered enum; `PBXFW_OK` is 0.
//! - Out-parameters are written only on success. Every pointer is checked for NULL
//!   (`PBXFW_ERR_NULL`); the error out-parameter `err` may itself be NULL when the caller does not
//!   want details.
//! - Every export runs behind a panic boundary: a bug inside becomes `PBXFW_ERR_PANIC`, never an
//!   unwind into C or PHP.
//! - Text goes in as `(const char *ptr, size_t len)`, UTF-8, not NUL-terminated; results come out
//!   as [`pbxfw_buf`] byte buffers (UTF-8 JSON or text), freed by [`pbxfw_buf_free`].
//! - Objects (`pbxfw_policy`, `pbxfw_responsive`, `pbxfw_client`, `pbxfw_error`) are opaque and freed by their
//!   `_free` function, which takes the caller's pointer by address and sets it to NULL: calling it
//!   twice on the same variable is harmless. [`pbxfw_buf_free`] zeroes the buffer the same way.
//! - A `pbxfw_policy` is immutable: it may be shared by threads. A `pbxfw_responsive` must not be
//!   used by two threads at once. A `pbxfw_error` belongs to the caller.
#![allow(unsafe_code)]
// the C ABI: raw pointers in, raw pointers out, each checked
// C type names (`pbxfw_result`, `pbxfw_buf`) follow C's conventions.
#![allow(non_camel_case_types)]
// The exports are called from C and PHP, where `unsafe` means nothing: each one checks its
// pointers for NULL and documents what the rest of its contract is, as C APIs do.
#![allow(clippy::not_unsafe_ptr_arg_deref)]
#![deny(missing_docs)]

use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pbxfw_core::Diagnostic;
use pbxfw_core::{Action, Machine};
use pbxfw_runtime::actions::carry_out;
use pbxfw_runtime::explain::Query;
use pbxfw_runtime::policy::Format;
use pbxfw_runtime::render::Target;
use pbxfw_runtime::safety::Admin;
use pbxfw_runtime::{ApplyRequest, BackendName, Error, Loaded};
use serde::Deserialize;

/// The result of every call. The numbers are stable.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pbxfw_result {
    /// Success.
    PBXFW_OK = 0,
    /// A required pointer was NULL.
    PBXFW_ERR_NULL = 1,
    /// Text was not valid UTF-8.
    PBXFW_ERR_UTF8 = 2,
    /// A policy could not be parsed (TOML or JSON syntax).
    PBXFW_ERR_PARSE = 3,
    /// A policy is invalid; the error carries every diagnostic.
    PBXFW_ERR_INVALID = 4,
    /// An argument has a wrong value (unknown backend, malformed packet or event JSON).
    PBXFW_ERR_ARGUMENT = 5,
    /// The backend cannot express the ruleset.
    PBXFW_ERR_UNSUPPORTED = 6,
    /// The kernel refused the change or could not be reached (a refused load changes nothing).
    PBXFW_ERR_KERNEL = 7,
    /// A responsive-state snapshot, or a state file pbxfw keeps, cannot be read.
    PBXFW_ERR_STATE = 8,
    /// pbxfw panicked (a bug); nothing was returned.
    PBXFW_ERR_PANIC = 9,
    /// Refused for safety: the lock file exists (disable), or the custom rules file may be
    /// written by someone other than root (apply).
    PBXFW_ERR_LOCKED = 10,
    /// Refused for safety, nothing changed: the ruleset would cut off an administrator
    /// (anti-lockout), an apply is waiting for confirmation, or the kernel holds a ruleset
    /// pbxfw did not apply last.
    PBXFW_ERR_REFUSED = 11,
    /// A file pbxfw keeps could not be read or written; the message names it.
    PBXFW_ERR_IO = 12,
    /// The control socket does not allow the caller: not in a group that may connect, or a
    /// change asked with the read role (docs/control-socket.md).
    PBXFW_ERR_DENIED = 13,
    /// The daemon could not be asked through its control socket: not running, busy, or no
    /// answer within the timeout (the daemon may still carry a request out).
    PBXFW_ERR_UNAVAILABLE = 14,
}

use pbxfw_result::*;

/// The format of policy text.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pbxfw_format {
    /// TOML (the policy file format).
    PBXFW_FORMAT_TOML = 0,
    /// JSON (the same document).
    PBXFW_FORMAT_JSON = 1,
}

/// A byte buffer owned by pbxfw, freed by [`pbxfw_buf_free`]. Text results are UTF-8 and not
/// NUL-terminated.
#[repr(C)]
#[derive(Debug)]
pub struct pbxfw_buf {
    /// The bytes (NULL when empty or freed).
    pub ptr: *mut u8,
    /// How many.
    pub len: usize,
}

/// What went wrong: a code, a message, and for invalid policies every diagnostic.
pub struct pbxfw_error {
    code: pbxfw_result,
    message: CString,
    diagnostics: String,
}

/// A validated policy (with what `pbx.discover` merged into it) and its compiled ruleset.
/// Immutable.
pub struct pbxfw_policy {
    loaded: Loaded,
}

/// A connection to the daemon's control socket ([`pbxfw_client_connect`]). Calls on one
/// client from several threads are serialised by a lock inside it.
pub struct pbxfw_client {
    client: std::sync::Mutex<pbxfw_runtime::control::Client>,
}

/// The responsive layer's state machine. Calls on one handle from several threads are
/// serialised by a lock inside it.
pub struct pbxfw_responsive {
    machine: std::sync::Mutex<Machine>,
}

impl pbxfw_responsive {
    fn new(machine: Machine) -> pbxfw_responsive {
        pbxfw_responsive {
            machine: std::sync::Mutex::new(machine),
        }
    }

    /// The machine, locked. A panic while it was held (a bug, reported as `PBXFW_ERR_PANIC`)
    /// leaves it usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Failure {
    code: pbxfw_result,
    message: String,
    diagnostics: Vec<Diagnostic>,
}

impl Failure {
    fn new(code: pbxfw_result, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }
}

type Outcome = Result<(), Failure>;

/// Run `f` behind the panic boundary, turning a failure into a result code and (when `err` is
/// not NULL) an error object.
fn guard(err: *mut *mut pbxfw_error, f: impl FnOnce() -> Outcome) -> pbxfw_result {
    let failure = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return PBXFW_OK,
        Ok(Err(failure)) => failure,
        Err(_) => Failure::new(
            PBXFW_ERR_PANIC,
            "pbxfw panicked (a bug); nothing was returned",
        ),
    };
    let code = failure.code;
    if !err.is_null() {
        let diagnostics =
            serde_json::to_string(&failure.diagnostics).unwrap_or_else(|_| "[]".into());
        // A message never holds NUL in practice; if it did, cut it there.
        let message = CString::new(failure.message.replace('\0', " ")).unwrap_or_default();
        let boxed = Box::new(pbxfw_error {
            code,
            message,
            diagnostics,
        });
        // SAFETY: `err` is non-NULL and, by the API's contract, points to writable storage for
        // one pointer.
        unsafe { *err = Box::into_raw(boxed) };
    }
    code
}

fn null(what: &str) -> Failure {
    Failure::new(PBXFW_ERR_NULL, format!("{what} is NULL"))
}

/// The text at `(ptr, len)`. An empty text may have a NULL pointer.
fn text<'a>(ptr: *const c_char, len: usize, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        if len == 0 {
            return Ok("");
        }
        return Err(null(what));
    }
    // SAFETY: the caller passes `len` readable bytes at `ptr`, alive for this call.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    std::str::from_utf8(bytes)
        .map_err(|e| Failure::new(PBXFW_ERR_UTF8, format!("{what} is not UTF-8: {e}")))
}

/// A reference to the object behind `ptr`.
fn object<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: non-NULL pointers come from this library's constructors and are alive until the
    // caller frees them.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(what))
}

/// Write `value` through the out-pointer `out`.
fn put<T>(out: *mut T, value: T) {
    // SAFETY: `out` was checked for NULL by the caller before any work was done, and points
    // to writable storage for one `T`.
    unsafe { out.write(value) }
}

fn check_out<T>(out: *mut T, what: &str) -> Outcome {
    if out.is_null() {
        Err(null(what))
    } else {
        Ok(())
    }
}

fn buf(bytes: Vec<u8>) -> pbxfw_buf {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed).cast::<u8>();
    pbxfw_buf { ptr, len }
}

fn json_buf(value: &impl serde::Serialize) -> Result<pbxfw_buf, Failure> {
    serde_json::to_vec(value)
        .map(buf)
        .map_err(|e| Failure::new(PBXFW_ERR_PANIC, format!("cannot encode a result: {e}")))
}

/// Which kernel backend a caller names; the empty name: the one pbxfw last applied with, else
/// nft.
fn backend(name: &str) -> Result<BackendName, Failure> {
    if name.is_empty() {
        return Ok(BackendName::current());
    }
    name.parse().map_err(failure)
}

/// A runtime error as a result code: the runtime's table ([`Error::code`]), which the control
/// socket's answers carry too (`docs/c-api.md`).
fn failure(e: Error) -> Failure {
    let code = match e.code() {
        3 => PBXFW_ERR_PARSE,
        4 => PBXFW_ERR_INVALID,
        5 => PBXFW_ERR_ARGUMENT,
        6 => PBXFW_ERR_UNSUPPORTED,
        7 => PBXFW_ERR_KERNEL,
        8 => PBXFW_ERR_STATE,
        10 => PBXFW_ERR_LOCKED,
        11 => PBXFW_ERR_REFUSED,
        12 => PBXFW_ERR_IO,
        13 => PBXFW_ERR_DENIED,
        14 => PBXFW_ERR_UNAVAILABLE,
        _ => PBXFW_ERR_PANIC,
    };
    let diagnostics = match e {
        Error::Invalid {
            ref diagnostics, ..
        } => diagnostics.0.clone(),
        _ => Vec::new(),
    };
    Failure {
        code,
        message: e.to_string(),
        diagnostics,
    }
}

/// The clock, for the calls that take none.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Free the object `*slot` points to and set `*slot` to NULL, so that freeing through the same
/// variable twice is harmless. `slot` and `*slot` may be NULL.
fn free_object<T>(slot: *mut *mut T) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `slot` is NULL or points to the caller's pointer variable.
        let Some(slot) = (unsafe { slot.as_mut() }) else {
            return;
        };
        if !slot.is_null() {
            // SAFETY: every object pointer this library hands out comes from `Box::into_raw`
            // and is freed only here, which then clears the caller's copy.
            drop(unsafe { Box::from_raw(*slot) });
        }
        *slot = std::ptr::null_mut();
    }));
}

// --- buffers and errors --------------------------------------------------------------------------

/// Free a buffer returned by pbxfw and set it to `{NULL, 0}`; freeing an empty or already freed
/// buffer does nothing. `buf` may be NULL.
#[no_mangle]
pub extern "C" fn pbxfw_buf_free(buf: *mut pbxfw_buf) {
    let _ = catch_unwind(|| {
        // SAFETY: `buf` is NULL or points to a buffer this library filled.
        let Some(b) = (unsafe { buf.as_mut() }) else {
            return;
        };
        if !b.ptr.is_null() {
            // SAFETY: `ptr`/`len` came from `Box<[u8]>::into_raw` in `buf()` and were not freed
            // since (a freed buffer is zeroed below).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(b.ptr, b.len)) });
        }
        b.ptr = std::ptr::null_mut();
        b.len = 0;
    });
}

/// Free an error object and set `*err` to NULL. `err` and `*err` may be NULL.
#[no_mangle]
pub extern "C" fn pbxfw_error_free(err: *mut *mut pbxfw_error) {
    free_object(err);
}

/// The error's result code (`PBXFW_ERR_NULL` for a NULL error).
#[no_mangle]
pub extern "C" fn pbxfw_error_code(err: *const pbxfw_error) -> pbxfw_result {
    // SAFETY: `err` is NULL or a live error object.
    unsafe { err.as_ref() }.map_or(PBXFW_ERR_NULL, |e| e.code)
}

/// The error's message, NUL-terminated UTF-8 owned by the error (valid until it is freed).
/// NULL for a NULL error.
#[no_mangle]
pub extern "C" fn pbxfw_error_message(err: *const pbxfw_error) -> *const c_char {
    // SAFETY: `err` is NULL or a live error object.
    unsafe { err.as_ref() }.map_or(std::ptr::null(), |e| e.message.as_ptr())
}

/// The error's diagnostics as a JSON array (each with `path`, `severity`, `message` and, when
/// there is one, `value`); `[]` unless the policy was invalid.
#[no_mangle]
pub extern "C" fn pbxfw_error_diagnostics(
    err: *const pbxfw_error,
    out: *mut pbxfw_buf,
) -> pbxfw_result {
    guard(std::ptr::null_mut(), || {
        check_out(out, "out")?;
        let e = object(err, "err")?;
        put(out, buf(e.diagnostics.clone().into_bytes()));
        Ok(())
    })
}

/// The library's version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn pbxfw_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

// --- policies ------------------------------------------------------------------------------------

/// Parse and validate a policy. On success `*out` is a new policy the caller frees with
/// [`pbxfw_policy_free`]. An invalid policy gives `PBXFW_ERR_INVALID` and, in `*err`, every
/// diagnostic. `format` is a `pbxfw_format` (passed as an integer: any other value gives
/// `PBXFW_ERR_ARGUMENT`, never undefined behaviour).
#[no_mangle]
pub extern "C" fn pbxfw_policy_parse(
    text: *const c_char,
    len: usize,
    format: u32,
    out: *mut *mut pbxfw_policy,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let t = self::text(text, len, "text")?;
        let format = match format {
            f if f == pbxfw_format::PBXFW_FORMAT_TOML as u32 => Format::Toml,
            f if f == pbxfw_format::PBXFW_FORMAT_JSON as u32 => Format::Json,
            other => {
                return Err(Failure::new(
                    PBXFW_ERR_ARGUMENT,
                    format!("format {other} is not a pbxfw_format (0: TOML, 1: JSON)"),
                ))
            }
        };
        // Parsed, merged with what `pbx.discover` finds, validated and compiled, as every front
        // end does it.
        let loaded = pbxfw_runtime::policy::load_text_as(t, format, "(policy)").map_err(failure)?;
        put(out, Box::into_raw(Box::new(pbxfw_policy { loaded })));
        Ok(())
    })
}

/// Read an Asterisk configuration directory (`dir`, `len` bytes of UTF-8, e.g.
/// `/etc/asterisk`) and describe the ports, RTP/UDPTL ranges and trunks it implies, as JSON:
/// `{"policy": fragment, "origins": [{path, origin, what}], "notes": [...], "files": [...],
/// "dir": dir}`. The fragment has the shape of a policy. A policy whose `pbx.discover` names
/// the directory gets this merged by [`pbxfw_policy_parse`] already. A directory without any
/// Asterisk file gives `PBXFW_ERR_IO` (as `pbxfw discover` exits 3).
#[no_mangle]
pub extern "C" fn pbxfw_discover(
    dir: *const c_char,
    len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let d = std::path::Path::new(self::text(dir, len, "dir")?);
        let found = pbxfw_runtime::policy::discover(d).map_err(failure)?;
        put(
            out,
            json_buf(&pbxfw_runtime::policy::discovery_json(d, &found))?,
        );
        Ok(())
    })
}

/// Free a policy and set `*policy` to NULL. `policy` and `*policy` may be NULL.
#[no_mangle]
pub extern "C" fn pbxfw_policy_free(policy: *mut *mut pbxfw_policy) {
    free_object(policy);
}

/// The warnings of a valid policy, as a JSON array of diagnostics.
#[no_mangle]
pub extern "C" fn pbxfw_policy_diagnostics(
    policy: *const pbxfw_policy,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let p = object(policy, "policy")?;
        put(out, json_buf(&p.loaded.policy.warnings)?);
        Ok(())
    })
}

/// The compiled ruleset's fingerprint (16 hex digits), as status reports it once applied.
#[no_mangle]
pub extern "C" fn pbxfw_policy_fingerprint(
    policy: *const pbxfw_policy,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let p = object(policy, "policy")?;
        put(out, buf(p.loaded.ruleset.fingerprint().into_bytes()));
        Ok(())
    })
}

/// The rules for a backend as text: `nft`, `iptables` (ipset + restore input) or `ir`.
#[no_mangle]
pub extern "C" fn pbxfw_policy_compile(
    policy: *const pbxfw_policy,
    backend: *const c_char,
    backend_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let p = object(policy, "policy")?;
        let target: Target = self::text(backend, backend_len, "backend")?
            .parse()
            .map_err(failure)?;
        let text =
            pbxfw_runtime::render::render(&p.loaded.ruleset, target, false).map_err(failure)?;
        put(out, buf(text.into_bytes()));
        Ok(())
    })
}

/// What happens to a packet and which policy object decides. `packet` is JSON:
/// `{"iface": "eth0", "src": "203.0.113.10", "proto": "udp", "dport": 5060}` with optional
/// `sport`, `icmp_type`, `state` (`new`, `established`, `related`, `invalid`) and `registered`.
/// The answer is JSON with `verdict`, `zone`, `decided_by`, `step`, `step_name` and `rule`, as
/// `pbxfw explain --format json` prints it.
#[no_mangle]
pub extern "C" fn pbxfw_policy_explain(
    policy: *const pbxfw_policy,
    packet: *const c_char,
    packet_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let p = object(policy, "policy")?;
        let bad = |m: String| Failure::new(PBXFW_ERR_ARGUMENT, format!("packet: {m}"));
        let q: Query = serde_json::from_str(self::text(packet, packet_len, "packet")?)
            .map_err(|e| bad(e.to_string()))?;
        let e = pbxfw_runtime::explain::explain(&p.loaded.ruleset, &q).map_err(|e| match e {
            Error::Usage(m) => bad(m),
            e => failure(e),
        })?;
        put(out, json_buf(&e)?);
        Ok(())
    })
}

// --- the kernel ----------------------------------------------------------------------------------

/// How to apply, as JSON; every field may be left out.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApplyIn {
    /// Roll back after this many seconds unless confirmed.
    confirm: Option<u64>,
    /// Administrators whose access must survive: `ADDR` (SSH) or `ADDR:PORT`.
    #[serde(default)]
    admins: Vec<String>,
    /// Apply even if an administrator would be cut off.
    #[serde(default)]
    force: bool,
    /// A counter on every rule (nft).
    #[serde(default)]
    counters: bool,
}

/// Apply the policy to the kernel of the calling thread's network namespace, as `pbxfw apply`
/// does: refused (`PBXFW_ERR_REFUSED`, nothing changes) when the ruleset would cut off the
/// administrator (`$SSH_CONNECTION`, `settings.admins` and the `admins` of `options`), then
/// loaded with the backend's custom rules, verified, and recorded as the last applied ruleset
/// (what `rollback` returns to). Dynamic sets keep their elements. `options` is JSON (empty
/// text: none): `{"confirm": seconds, "admins": ["198.51.100.7", "198.51.100.7:443"], "force":
/// false, "counters": false}`; with `confirm`, the ruleset is rolled back after that many
/// seconds unless [`pbxfw_kernel_confirm`] comes first (the timer is a `pbxfw rollback`
/// process: `$PBXFW_BIN`, else the installed `pbxfw`, root's alone; the apply waits until it
/// runs, and without one it is refused with `PBXFW_ERR_IO`). `*out` is JSON
/// `{"fingerprint": …, "elapsed_ms": …}` or, with `confirm`, `{"fingerprint": …,
/// "rolled_back_at_ms": …}`, with `warnings` when what the host keeps could not be written after
/// the load. A refusal, or a load the kernel refuses, changes nothing.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_apply(
    policy: *const pbxfw_policy,
    backend: *const c_char,
    backend_len: usize,
    options: *const c_char,
    options_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let p = object(policy, "policy")?;
        let backend = self::backend(text(backend, backend_len, "backend")?)?;
        let bad = |m: String| Failure::new(PBXFW_ERR_ARGUMENT, m);
        let options = text(options, options_len, "options")?;
        let o: ApplyIn = if options.trim().is_empty() {
            ApplyIn::default()
        } else {
            serde_json::from_str(options).map_err(|e| bad(format!("options: {e}")))?
        };
        let admins = admins_of(&o.admins, "options")?;
        let req = ApplyRequest {
            backend,
            counters: o.counters,
            confirm: o.confirm,
            admins,
            force: o.force,
            ..Default::default()
        };
        let done = pbxfw_runtime::apply(&p.loaded, &req).map_err(failure)?;
        put(out, json_buf(&done)?);
        Ok(())
    })
}

/// Keep the ruleset an apply with `confirm` loaded. `*fingerprint` (which may be NULL) is its
/// fingerprint. Nothing waiting for confirmation gives `PBXFW_ERR_ARGUMENT`.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_confirm(
    fingerprint: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        let fp = pbxfw_runtime::confirm().map_err(failure)?;
        if !fingerprint.is_null() {
            put(fingerprint, buf(fp.into_bytes()));
        }
        Ok(())
    })
}

/// Go back now to the ruleset before an apply with `confirm` (its dynamic sets' elements put
/// back), on the backend that apply used: `backend` may be empty; naming another one is
/// refused (`PBXFW_ERR_ARGUMENT`) and nothing changes. `*message` (which may be NULL) says
/// what happened. Nothing waiting for confirmation gives `PBXFW_ERR_ARGUMENT`.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_rollback(
    backend: *const c_char,
    backend_len: usize,
    message: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        let backend = match text(backend, backend_len, "backend")? {
            "" => None,
            name => Some(self::backend(name)?),
        };
        let m = pbxfw_runtime::rollback(backend).map_err(failure)?;
        if !message.is_null() {
            put(message, buf(m.into_bytes()));
        }
        Ok(())
    })
}

/// What is loaded and what the host keeps about it, as the JSON text `pbxfw status --format
/// json` prints, byte for byte: the backend, fingerprint, sets with their timed elements and
/// counters, and `pending_confirmation`, `safe_mode`, `hostnames`, `discovery`, `responsive`,
/// `state_problems`.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_status(
    backend: *const c_char,
    backend_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let backend = self::backend(text(backend, backend_len, "backend")?)?;
        let s = pbxfw_runtime::status(backend, now()).map_err(failure)?;
        put(out, buf(s.to_json().into_bytes()));
        Ok(())
    })
}

/// The bans in force, as the JSON text `pbxfw bans --format json` prints: `backend`, `loaded`
/// and `bans`, each with `prefix`, `origin` (`state_machine`, `kernel_tier`, `manual`,
/// `unknown`), `reason`, `since`, `until` (Unix seconds, and ISO 8601 in `since_iso`,
/// `until_iso`), `expires_in`, `strikes`, `by` and `set`.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_bans(
    backend: *const c_char,
    backend_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let backend = self::backend(text(backend, backend_len, "backend")?)?;
        let b = pbxfw_runtime::bans::list(backend, now()).map_err(failure)?;
        put(out, json_buf(&b)?);
        Ok(())
    })
}

/// Lift every ban of `prefixes` (JSON: an array of addresses or CIDRs) for good, as `pbxfw
/// unban` does: the kernel's elements overlapping them go, bans by hand end, and the daemon
/// forgets the sources and their strikes. `*out` (which may be NULL) is JSON `{"prefixes",
/// "lifted", "loaded"}`. Refused (`PBXFW_ERR_REFUSED`) while an apply waits for confirmation.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_unban(
    backend: *const c_char,
    backend_len: usize,
    prefixes: *const c_char,
    prefixes_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        let backend = self::backend(text(backend, backend_len, "backend")?)?;
        let list: Vec<String> = serde_json::from_str(text(prefixes, prefixes_len, "prefixes")?)
            .map_err(|e| Failure::new(PBXFW_ERR_ARGUMENT, format!("prefixes: {e}")))?;
        let prefixes = pbxfw_runtime::bans::parse_prefixes(&list).map_err(failure)?;
        let by = pbxfw_runtime::bans::requester();
        let u = pbxfw_runtime::bans::unban(backend, &prefixes, now(), &by).map_err(failure)?;
        if !out.is_null() {
            put(out, json_buf(&u)?);
        }
        Ok(())
    })
}

/// The administrators of an apply's options or a ban's request (`"ADDR"`, `"ADDR:PORT"`).
fn admins_of(list: &[String], what: &str) -> Result<Vec<Admin>, Failure> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|e| Failure::new(PBXFW_ERR_ARGUMENT, format!("{what}: admins: {e}")))
        })
        .collect()
}

/// A ban by hand, as [`pbxfw_kernel_ban`] takes it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BanIn {
    prefix: String,
    seconds: u64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    force: bool,
}

/// Ban by hand, as `pbxfw ban` does, under `policy`: `request` is JSON `{"prefix":
/// "203.0.113.66", "seconds": 3600, "reason": "…", "admins": ["198.51.100.7"], "force":
/// false}`. What the policy protects is never banned (`PBXFW_ERR_REFUSED`), nor an
/// administrator's address unless `force`. `*out` (which may be NULL) is JSON `{"prefix",
/// "until", "until_iso", "reason", "set"}`.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_ban(
    policy: *const pbxfw_policy,
    backend: *const c_char,
    backend_len: usize,
    request: *const c_char,
    request_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        let p = object(policy, "policy")?;
        let backend = self::backend(text(backend, backend_len, "backend")?)?;
        let bad = |m: String| Failure::new(PBXFW_ERR_ARGUMENT, m);
        let r: BanIn = serde_json::from_str(text(request, request_len, "request")?)
            .map_err(|e| bad(format!("request: {e}")))?;
        let prefix = pbxfw_runtime::bans::parse_prefixes(&[r.prefix]).map_err(failure)?[0];
        let admins = admins_of(&r.admins, "request")?;
        let req = pbxfw_runtime::bans::BanRequest {
            backend,
            prefix,
            seconds: r.seconds,
            reason: r.reason,
            admins,
            force: r.force,
        };
        let by = pbxfw_runtime::bans::requester();
        let b = pbxfw_runtime::bans::ban(&p.loaded.policy, &req, now(), &by).map_err(failure)?;
        if !out.is_null() {
            put(out, json_buf(&b)?);
        }
        Ok(())
    })
}

/// A certificate-renewal window (docs/acme.md), as `pbxfw acme open|close|status` do:
/// `action` is `open` (for `seconds`, 1 to 3600: port 80 admits, from everyone, connections
/// whose first request line is `GET /.well-known/acme-challenge/`, until the window ends by
/// itself), `close` or `status` (`seconds` is ignored). The loaded ruleset must come from a
/// policy with `settings.acme` (`PBXFW_ERR_ARGUMENT` otherwise). `*out` (which may be NULL) is
/// JSON `{"backend", "open", "expires_in", "until", "port", "request"}`.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_acme(
    backend: *const c_char,
    backend_len: usize,
    action: *const c_char,
    action_len: usize,
    seconds: u64,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        let backend = self::backend(text(backend, backend_len, "backend")?)?;
        let w = match text(action, action_len, "action")? {
            "open" => pbxfw_runtime::acme::open(backend, seconds, now()),
            "close" => pbxfw_runtime::acme::close(backend, now()),
            "status" => pbxfw_runtime::acme::status(backend, now()),
            other => {
                return Err(Failure::new(
                    PBXFW_ERR_ARGUMENT,
                    format!("action {other:?} is not open, close or status"),
                ))
            }
        }
        .map_err(failure)?;
        if !out.is_null() {
            put(out, json_buf(&w)?);
        }
        Ok(())
    })
}

/// Remove everything pbxfw owns from the kernel, and nothing else. `*was_loaded` (which may be
/// NULL) says whether anything was loaded. Refused with `PBXFW_ERR_LOCKED` while the lock file
/// (`$PBXFW_LOCK_FILE`, default `/etc/pbxfw/lock`) exists.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_disable(
    backend: *const c_char,
    backend_len: usize,
    was_loaded: *mut bool,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        let backend = self::backend(text(backend, backend_len, "backend")?)?;
        let any = pbxfw_runtime::disable(backend).map_err(failure)?;
        if !was_loaded.is_null() {
            put(was_loaded, any);
        }
        Ok(())
    })
}

/// Carry out responsive actions (the JSON array `pbxfw_responsive_on_event` and
/// `pbxfw_responsive_tick` return) in the kernel, where `policy` is the applied one: bans,
/// slow lane, registrations and their grants, batched into one update per set and operation.
/// `now` is the Unix time the actions were decided at (0: the clock). `*out` (which may be
/// NULL) is JSON `{"updates": n, "elements": n, "failures": []}`. When the kernel refuses an
/// update the others are still made, and the result is `PBXFW_ERR_KERNEL` naming each refusal.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_carry_out(
    policy: *const pbxfw_policy,
    backend: *const c_char,
    backend_len: usize,
    actions: *const c_char,
    actions_len: usize,
    now: u64,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        let p = object(policy, "policy")?;
        let backend = self::backend(text(backend, backend_len, "backend")?)?;
        let actions: Vec<Action> = serde_json::from_str(text(actions, actions_len, "actions")?)
            .map_err(|e| Failure::new(PBXFW_ERR_ARGUMENT, format!("actions: {e}")))?;
        let at = if now == 0 { self::now() } else { now };
        let done = carry_out(backend.open().as_ref(), &p.loaded.ruleset, &actions, at)
            .into_result()
            .map_err(failure)?;
        if !out.is_null() {
            put(out, json_buf(&done)?);
        }
        Ok(())
    })
}

// --- the responsive state machine ----------------------------------------------------------------

/// A fresh responsive state machine configured by the policy. Freed by
/// [`pbxfw_responsive_free`].
#[no_mangle]
pub extern "C" fn pbxfw_responsive_new(
    policy: *const pbxfw_policy,
    out: *mut *mut pbxfw_responsive,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let p = object(policy, "policy")?;
        let machine = Machine::new(pbxfw_runtime::machine_config(&p.loaded.policy));
        put(out, Box::into_raw(Box::new(pbxfw_responsive::new(machine))));
        Ok(())
    })
}

/// A state machine from a snapshot ([`pbxfw_responsive_snapshot`]), reconfigured by the policy.
/// A snapshot that cannot be read gives `PBXFW_ERR_STATE`.
#[no_mangle]
pub extern "C" fn pbxfw_responsive_restore(
    policy: *const pbxfw_policy,
    snapshot: *const c_char,
    snapshot_len: usize,
    out: *mut *mut pbxfw_responsive,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let p = object(policy, "policy")?;
        let mut machine = Machine::restore(text(snapshot, snapshot_len, "snapshot")?)
            .map_err(|e| Failure::new(PBXFW_ERR_STATE, e.to_string()))?;
        machine.reconfigure(pbxfw_runtime::machine_config(&p.loaded.policy));
        put(out, Box::into_raw(Box::new(pbxfw_responsive::new(machine))));
        Ok(())
    })
}

/// Free a state machine and set `*responsive` to NULL. Either may be NULL.
#[no_mangle]
pub extern "C" fn pbxfw_responsive_free(responsive: *mut *mut pbxfw_responsive) {
    free_object(responsive);
}

/// Feed one security event (a JSON-lines record, see `docs/events.md`) at `now` (Unix seconds;
/// 0 means the record's own `at`, or the clock without one). `*actions` is a JSON array of the
/// actions to carry out (`ban`, `clamp`, `allow_registered`, …).
#[no_mangle]
pub extern "C" fn pbxfw_responsive_on_event(
    responsive: *mut pbxfw_responsive,
    event: *const c_char,
    event_len: usize,
    now: u64,
    actions: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(actions, "actions")?;
        let r = object(responsive, "responsive")?;
        let timed = pbxfw_core::json::parse_line(text(event, event_len, "event")?)
            .map_err(|e| Failure::new(PBXFW_ERR_ARGUMENT, format!("event: {e}")))?;
        let t = match (now, timed.at) {
            (0, Some(at)) => at,
            // As in Python: the clock.
            (0, None) => self::now(),
            (t, _) => t,
        };
        let done = r.lock().on_event(&timed.event, t);
        put(actions, json_buf(&done)?);
        Ok(())
    })
}

/// Housekeeping at `now` (Unix seconds): expiries and decays. `*actions` as for `on_event`.
#[no_mangle]
pub extern "C" fn pbxfw_responsive_tick(
    responsive: *mut pbxfw_responsive,
    now: u64,
    actions: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(actions, "actions")?;
        let r = object(responsive, "responsive")?;
        let done = r.lock().tick(now);
        put(actions, json_buf(&done)?);
        Ok(())
    })
}

/// The active bans at `now`, as a JSON array of `{"prefix": …, "until": …}`.
#[no_mangle]
pub extern "C" fn pbxfw_responsive_bans(
    responsive: *const pbxfw_responsive,
    now: u64,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let r = object(responsive, "responsive")?;
        let bans: Vec<serde_json::Value> = r
            .lock()
            .bans(now)
            .into_iter()
            .map(|(p, until)| serde_json::json!({"prefix": p.to_string(), "until": until}))
            .collect();
        put(out, json_buf(&bans)?);
        Ok(())
    })
}

/// The whole state as versioned JSON text, for [`pbxfw_responsive_restore`].
#[no_mangle]
pub extern "C" fn pbxfw_responsive_snapshot(
    responsive: *const pbxfw_responsive,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let r = object(responsive, "responsive")?;
        let snapshot = r.lock().snapshot();
        put(out, buf(snapshot.into_bytes()));
        Ok(())
    })
}

// --- the control socket --------------------------------------------------------------------------

/// Connect to the daemon's control socket at `path` (`len` bytes of UTF-8; empty: the default,
/// `$PBXFW_CONTROL_SOCKET` or `/run/pbxfw/control.sock`), each call then waiting at most
/// `timeout_ms` (0: 30 s) for its answer. On success `*out` is a client the caller frees with
/// [`pbxfw_client_free`]. A caller outside the socket's group gets `PBXFW_ERR_DENIED`; no
/// daemon listening, `PBXFW_ERR_UNAVAILABLE`.
#[no_mangle]
pub extern "C" fn pbxfw_client_connect(
    path: *const c_char,
    len: usize,
    timeout_ms: u64,
    out: *mut *mut pbxfw_client,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let path = match text(path, len, "path")? {
            "" => pbxfw_runtime::control::socket_path(),
            p => p.into(),
        };
        let timeout =
            std::time::Duration::from_millis(if timeout_ms == 0 { 30_000 } else { timeout_ms });
        let client = pbxfw_runtime::control::Client::connect(&path, timeout).map_err(failure)?;
        put(
            out,
            Box::into_raw(Box::new(pbxfw_client {
                client: std::sync::Mutex::new(client),
            })),
        );
        Ok(())
    })
}

/// Call `method` (`status`, `bans`, `apply`, `unban`, …: docs/control-socket.md) with `params`,
/// a JSON object (`params_len` 0: none), waiting at most `timeout_ms` (0: the client's). On
/// success `*out` is the result as JSON, the same document the local call returns (e.g.
/// `status` as [`pbxfw_kernel_status`]). A failure has the result code and message the same
/// failure has locally (a refused apply is `PBXFW_ERR_REFUSED`, an invalid policy
/// `PBXFW_ERR_INVALID` with every diagnostic); the socket's own are `PBXFW_ERR_DENIED` and
/// `PBXFW_ERR_UNAVAILABLE`. Malformed parameters are refused before anything is sent
/// (`PBXFW_ERR_ARGUMENT`).
#[no_mangle]
pub extern "C" fn pbxfw_client_call(
    client: *const pbxfw_client,
    method: *const c_char,
    method_len: usize,
    params: *const c_char,
    params_len: usize,
    timeout_ms: u64,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let c = object(client, "client")?;
        let method = text(method, method_len, "method")?;
        let params = text(params, params_len, "params")?;
        let params: serde_json::Value = if params.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(params)
                .map_err(|e| Failure::new(PBXFW_ERR_ARGUMENT, format!("params: {e}")))?
        };
        let mut client = c.client.lock().unwrap_or_else(|e| e.into_inner());
        let kept = client.timeout();
        if timeout_ms != 0 {
            client.set_timeout(std::time::Duration::from_millis(timeout_ms));
        }
        let result = client.call_method(method, params);
        client.set_timeout(kept);
        let value = result.map_err(failure)?;
        put(out, json_buf(&value)?);
        Ok(())
    })
}

/// Close a client and set `*client` to NULL. `client` and `*client` may be NULL.
#[no_mangle]
pub extern "C" fn pbxfw_client_free(client: *mut *mut pbxfw_client) {
    free_object(client);
}
