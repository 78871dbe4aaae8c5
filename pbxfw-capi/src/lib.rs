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
//! - Objects (`pbxfw_policy`, `pbxfw_responsive`, `pbxfw_error`) are opaque and freed by their
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
use std::time::Duration;

use pbxfw_core::backend::{ApplyOptions, Backend, BackendError, Element, Op};
use pbxfw_core::explain::explain;
use pbxfw_core::ir::{CtState, Proto};
use pbxfw_core::responsive::{Config, Machine};
use pbxfw_core::{compile, Diagnostic, Packet, Ruleset, Severity, ValidPolicy};
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
    /// The kernel refused the change or could not be reached; it holds what it held before.
    PBXFW_ERR_KERNEL = 7,
    /// A responsive-state snapshot cannot be read.
    PBXFW_ERR_STATE = 8,
    /// pbxfw panicked (a bug); nothing was returned.
    PBXFW_ERR_PANIC = 9,
    /// Refused for safety: the lock file exists (disable), or the custom rules file may be
    /// written by someone other than root (apply).
    PBXFW_ERR_LOCKED = 10,
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

/// A validated policy and its compiled ruleset. Immutable.
pub struct pbxfw_policy {
    valid: ValidPolicy,
    ruleset: Ruleset,
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

/// Which kernel backend a caller names.
fn backend(name: &str) -> Result<Box<dyn Backend>, Failure> {
    use pbxfw_ipt::Variant;
    Ok(match name {
        "nft" => Box::new(pbxfw_nft::Kernel::default()),
        "iptables" => Box::new(pbxfw_ipt::Kernel::default()),
        "iptables-nft" => Box::new(pbxfw_ipt::Kernel::new(Variant::Nft)),
        "iptables-legacy" => Box::new(pbxfw_ipt::Kernel::new(Variant::Legacy)),
        other => {
            return Err(Failure::new(
                PBXFW_ERR_ARGUMENT,
                format!("unknown backend {other:?} (nft, iptables, iptables-nft, iptables-legacy)"),
            ))
        }
    })
}

fn backend_failure(e: BackendError) -> Failure {
    let code = match e {
        BackendError::Unsupported { .. } => PBXFW_ERR_UNSUPPORTED,
        BackendError::NoSet(_) => PBXFW_ERR_ARGUMENT,
        BackendError::Locked(_) => PBXFW_ERR_LOCKED,
        _ => PBXFW_ERR_KERNEL,
    };
    Failure::new(code, e.to_string())
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
        let mut parsed = match format {
            f if f == pbxfw_format::PBXFW_FORMAT_TOML as u32 => pbxfw_core::Policy::from_toml(t),
            f if f == pbxfw_format::PBXFW_FORMAT_JSON as u32 => pbxfw_core::Policy::from_json(t),
            other => {
                return Err(Failure::new(
                    PBXFW_ERR_ARGUMENT,
                    format!("format {other} is not a pbxfw_format (0: TOML, 1: JSON)"),
                ))
            }
        }
        .map_err(|e| Failure::new(PBXFW_ERR_PARSE, e.to_string()))?;
        // `pbx.discover`: the PBX's own configuration joins the policy, as on the command line.
        pbxfw_host::asterisk::merge_requested(&mut parsed);
        let valid = parsed.validate().map_err(|d| {
            let errors = d.0.iter().filter(|x| x.severity == Severity::Error).count();
            Failure {
                code: PBXFW_ERR_INVALID,
                message: format!("the policy is invalid ({errors} error(s)): {}", d.0[0]),
                diagnostics: d.0,
            }
        })?;
        let ruleset = compile(&valid);
        put(
            out,
            Box::into_raw(Box::new(pbxfw_policy { valid, ruleset })),
        );
        Ok(())
    })
}

/// Read an Asterisk configuration directory (`dir`, `len` bytes of UTF-8, e.g.
/// `/etc/asterisk`) and describe the ports, RTP/UDPTL ranges and trunks it implies, as JSON:
/// `{"policy": fragment, "origins": [{path, origin, what}], "notes": [...], "files": [...],
/// "dir": dir}`. The fragment has the shape of a policy. A policy whose `pbx.discover` names
/// the directory gets this merged by [`pbxfw_policy_parse`] already. A directory without any
/// Asterisk file gives `PBXFW_ERR_ARGUMENT`.
#[no_mangle]
pub extern "C" fn pbxfw_discover(
    dir: *const c_char,
    len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let d = self::text(dir, len, "dir")?;
        let found = pbxfw_host::asterisk::Dir::new(d).discover();
        if found.files.is_empty() {
            return Err(Failure::new(
                PBXFW_ERR_ARGUMENT,
                format!("{d}: no Asterisk configuration found"),
            ));
        }
        let mut doc = found.to_json();
        doc["dir"] = d.into();
        put(out, json_buf(&doc)?);
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
        put(out, json_buf(&p.valid.warnings)?);
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
        put(out, buf(p.ruleset.fingerprint().into_bytes()));
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
        let text = match self::text(backend, backend_len, "backend")? {
            "ir" => p.ruleset.to_text(),
            "nft" => {
                pbxfw_nft::lower(&p.ruleset, &pbxfw_nft::Options::default())
                    .map_err(|e| Failure::new(PBXFW_ERR_UNSUPPORTED, e.to_string()))?
                    .text
            }
            "iptables" => pbxfw_ipt::lower(&p.ruleset)
                .map_err(|e| Failure::new(PBXFW_ERR_UNSUPPORTED, e.to_string()))?
                .text(),
            other => {
                return Err(Failure::new(
                    PBXFW_ERR_ARGUMENT,
                    format!("unknown backend {other:?} (nft, iptables, ir)"),
                ))
            }
        };
        put(out, buf(text.into_bytes()));
        Ok(())
    })
}

/// A packet to explain, as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PacketIn {
    iface: String,
    src: std::net::IpAddr,
    proto: String,
    dport: Option<u16>,
    sport: Option<u16>,
    icmp_type: Option<u8>,
    state: Option<String>,
    #[serde(default)]
    registered: bool,
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
        let bad = |m: String| Failure::new(PBXFW_ERR_ARGUMENT, m);
        let q: PacketIn = serde_json::from_str(self::text(packet, packet_len, "packet")?)
            .map_err(|e| bad(format!("packet: {e}")))?;
        let proto: Proto = q.proto.parse().map_err(bad)?;
        if proto.echo_request().is_some() && (q.dport.is_some() || q.sport.is_some()) {
            return Err(bad(
                "packet: dport and sport apply to udp and tcp only".into()
            ));
        }
        if proto.echo_request().is_none() && q.icmp_type.is_some() {
            return Err(bad(
                "packet: icmp_type applies to icmp and icmpv6 only".into()
            ));
        }
        let mut packet = Packet::new(&q.iface, q.src, proto, q.dport);
        packet.sport = q.sport;
        packet.icmp_type = proto.echo_request().map(|echo| q.icmp_type.unwrap_or(echo));
        packet.ct = q
            .state
            .as_deref()
            .unwrap_or("new")
            .parse::<CtState>()
            .map_err(bad)?;
        put(out, json_buf(&explain(&p.ruleset, &packet, q.registered))?);
        Ok(())
    })
}

// --- the kernel ----------------------------------------------------------------------------------

/// Load the policy into the kernel of the calling thread's network namespace (dynamic sets keep
/// their elements, the custom rules file of the backend is loaded too) and verify it. `*out` is JSON `{"fingerprint": …, "elapsed": ms}`. On
/// `PBXFW_ERR_KERNEL` or `PBXFW_ERR_UNSUPPORTED` the kernel holds what it held before.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_apply(
    policy: *const pbxfw_policy,
    backend: *const c_char,
    backend_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let p = object(policy, "policy")?;
        let name = text(backend, backend_len, "backend")?;
        let k = self::backend(name)?;
        let opts = ApplyOptions {
            custom: pbxfw_host::custom::load(name)
                .map_err(|m| Failure::new(PBXFW_ERR_LOCKED, m))?,
            ..Default::default()
        };
        let applied = k.apply(&p.ruleset, &opts).map_err(backend_failure)?;
        put(out, json_buf(&applied)?);
        Ok(())
    })
}

/// What is loaded, as JSON (`backend`, `loaded`, `fingerprint`, `sets`, `counters`), as
/// `pbxfw status --format json` prints it.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_status(
    backend: *const c_char,
    backend_len: usize,
    out: *mut pbxfw_buf,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        check_out(out, "out")?;
        let k = self::backend(text(backend, backend_len, "backend")?)?;
        put(out, json_buf(&k.status().map_err(backend_failure)?)?);
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
        let k = self::backend(text(backend, backend_len, "backend")?)?;
        let any = pbxfw_host::lock::disable(k.as_ref()).map_err(backend_failure)?;
        if !was_loaded.is_null() {
            put(was_loaded, any);
        }
        Ok(())
    })
}

/// A set update, as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateIn {
    set: String,
    op: String,
    elements: Vec<ElementIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ElementIn {
    prefix: String,
    timeout: Option<u64>,
}

/// Add or remove elements of a loaded set without a reload. `update` is JSON:
/// `{"set": "ban4", "op": "add", "elements": [{"prefix": "192.0.2.9", "timeout": 600}]}` (`op` is
/// `add` or `remove`; removing an absent element is not an error). `policy` is the applied one.
#[no_mangle]
pub extern "C" fn pbxfw_kernel_update_set(
    policy: *const pbxfw_policy,
    backend: *const c_char,
    backend_len: usize,
    update: *const c_char,
    update_len: usize,
    err: *mut *mut pbxfw_error,
) -> pbxfw_result {
    guard(err, || {
        let p = object(policy, "policy")?;
        let k = self::backend(text(backend, backend_len, "backend")?)?;
        let bad = |m: String| Failure::new(PBXFW_ERR_ARGUMENT, m);
        let u: UpdateIn = serde_json::from_str(text(update, update_len, "update")?)
            .map_err(|e| bad(format!("update: {e}")))?;
        let op = match u.op.as_str() {
            "add" => Op::Add,
            "remove" => Op::Remove,
            other => return Err(bad(format!("update: op {other:?} (add, remove)"))),
        };
        let elements = u
            .elements
            .iter()
            .map(|e| {
                Ok(Element {
                    prefix: e
                        .prefix
                        .parse()
                        .map_err(|x| bad(format!("update: {:?}: {x}", e.prefix)))?,
                    timeout: e.timeout.map(Duration::from_secs),
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        k.update_set(&p.ruleset, &u.set, op, &elements)
            .map_err(backend_failure)
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
        let machine = Machine::new(Config::from_policy(&p.valid));
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
        machine.reconfigure(Config::from_policy(&p.valid));
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
/// 0 means the record's own `at`, which must then be there). `*actions` is a JSON array of the
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
        let timed = pbxfw_core::events::json::parse_line(text(event, event_len, "event")?)
            .map_err(|e| Failure::new(PBXFW_ERR_ARGUMENT, format!("event: {e}")))?;
        let t = match (now, timed.at) {
            (0, Some(at)) => at,
            (0, None) => {
                return Err(Failure::new(
                    PBXFW_ERR_ARGUMENT,
                    "now is 0 and the event has no \"at\"",
                ))
            }
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
