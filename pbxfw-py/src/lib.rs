//! pbxfw-py: the Python bindings of pbxfw, the private native module `pbxfw._pbxfw`.
//!
//! Conversion and error mapping only: every procedure is `pbxfw-runtime`'s (the same the
//! command line and the C API run), every decision `pbxfw-core`'s.
//! Structured values (diagnostics, status, responsive actions) cross as JSON, decoded by
//! Python's own `json` module, so Python sees plain dicts and lists with the same field names as
//! the command line's `--format json`. Errors are raised as the exception classes of
//! `pbxfw._errors` (defined in Python, so that `ConfigError` can be both a `PbxfwError` and a
//! `ValueError`). Kernel calls run with the interpreter released (`Python::detach`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::IpAddr;

use pbxfw_core::BackendError;
use pbxfw_core::{Action, Machine};
use pbxfw_runtime::actions::carry_out as carry_out_in;
use pbxfw_runtime::policy::Format;
use pbxfw_runtime::render::Target;
use pbxfw_runtime::safety::Admin;
use pbxfw_runtime::{ApplyRequest, BackendName, Error, Loaded};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

/// An exception of `pbxfw._errors`, built with `args`.
fn raise<'py>(py: Python<'py>, class: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyErr {
    let made = py
        .import("pbxfw._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1(args));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// A serialisable value as Python objects (through `json.loads`).
fn to_py<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| PyValueError::new_err(format!("cannot encode: {e}")))?;
    json_py(py, &text)
}

fn json_py<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}

/// A runtime error as the exception of `pbxfw._errors` that means it: the one place the
/// bindings map errors (`docs/python.md`). `backend` names the backend of a kernel call, and
/// `apply` makes a backend failure an `ApplyError` with its stage.
fn error(py: Python<'_>, e: Error, backend: Option<BackendName>, apply: bool) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Parse { .. } => match to_py(
            py,
            &[serde_json::json!({
                "path": "(policy)", "severity": "error", "message": message
            })],
        ) {
            Ok(list) => raise(py, "ConfigError", (message, list)),
            Err(err) => err,
        },
        Error::Invalid { diagnostics, .. } => match to_py(py, &diagnostics.0) {
            Ok(list) => raise(py, "ConfigError", (message, list)),
            Err(err) => err,
        },
        Error::Refused(r) => raise(py, "RefusedError", (message, r.reason())),
        Error::Backend(BackendError::Locked(_)) => raise(py, "RefusedError", (message, "locked")),
        Error::Backend(b) => {
            let name = backend.map_or("", |b| b.as_str());
            let (kind, stage) = match &b {
                BackendError::Unsupported { .. } => ("unsupported", "check"),
                BackendError::Check(_) => ("check", "check"),
                BackendError::Spawn { .. } => ("spawn", "load"),
                BackendError::Load(_) => ("refused", "load"),
                BackendError::Verify { .. } => ("verify", "verify"),
                BackendError::NotLoaded => ("not_loaded", "load"),
                BackendError::NoSet(_) => ("no_set", "load"),
                BackendError::Kernel(_) => ("kernel", "load"),
                BackendError::Locked(_) => ("locked", "check"),
            };
            if apply {
                raise(py, "ApplyError", (message, name, kind, stage))
            } else {
                raise(py, "BackendError", (message, name, kind))
            }
        }
        Error::State(_) => raise(py, "StateError", (message,)),
        Error::Io { path, source } => {
            // An errno makes Python pick the subclass (`FileNotFoundError`, `PermissionError`).
            let errno = source.raw_os_error().unwrap_or(match source.kind() {
                std::io::ErrorKind::NotFound => 2,
                std::io::ErrorKind::PermissionDenied => 13,
                _ => 0,
            });
            PyOSError::new_err((errno, message, path))
        }
        Error::Usage(_) => raise(py, "UsageError", (message,)),
        Error::Denied(_) => raise(py, "DeniedError", (message,)),
        Error::Unavailable(_) => raise(py, "UnavailableError", (message,)),
    }
}

/// A backend named by the caller, checked before the interpreter is released; none: the one
/// pbxfw last applied with, else nft.
fn backend_named(py: Python<'_>, name: Option<&str>) -> PyResult<BackendName> {
    match name {
        Some(name) => name.parse().map_err(|e| error(py, e, None, false)),
        None => Ok(BackendName::current()),
    }
}

/// The clock: Unix seconds.
fn clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A validated policy. Build it with `from_toml`, `from_json` or `from_dict`; an invalid
/// document raises `ConfigError` carrying every diagnostic.
#[pyclass(frozen, module = "pbxfw._pbxfw")]
struct Policy {
    loaded: Loaded,
}

impl Policy {
    /// Parsed, merged with what `pbx.discover` finds, validated and compiled, as every front
    /// end does it.
    fn load(py: Python<'_>, text: &str, format: Format) -> PyResult<Policy> {
        pbxfw_runtime::policy::load_text_as(text, format, "(policy)")
            .map(|loaded| Policy { loaded })
            .map_err(|e| error(py, e, None, false))
    }
}

#[pymethods]
impl Policy {
    /// Parse and validate TOML text.
    #[staticmethod]
    fn from_toml(py: Python<'_>, text: &str) -> PyResult<Policy> {
        Policy::load(py, text, Format::Toml)
    }

    /// Parse and validate JSON text.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Policy> {
        Policy::load(py, text, Format::Json)
    }

    /// Validate a dict (as `json.loads` or `tomllib.load` give it).
    #[staticmethod]
    fn from_dict(py: Python<'_>, doc: &Bound<'_, PyAny>) -> PyResult<Policy> {
        let text: String = py
            .import("json")?
            .call_method1("dumps", (doc,))
            .map_err(|e| {
                raise(
                    py,
                    "ConfigError",
                    (
                        format!("the policy is not JSON-serialisable: {e}"),
                        pyo3::types::PyList::empty(py),
                    ),
                )
            })?
            .extract()?;
        Policy::load(py, &text, Format::Json)
    }

    /// The warnings of the valid policy, each a dict with `path`, `severity`, `message` and,
    /// when there is one, `value`.
    #[getter]
    fn diagnostics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.loaded.policy.warnings)
    }

    /// The fingerprint of the compiled ruleset (what `status` shows once applied).
    #[getter]
    fn fingerprint(&self) -> String {
        self.loaded.ruleset.fingerprint()
    }

    /// The rules for `backend`: `"nft"`, `"iptables"`, or `"ir"` for the backend-neutral IR.
    #[pyo3(signature = (backend = "nft"))]
    fn compile(&self, py: Python<'_>, backend: &str) -> PyResult<String> {
        let target: Target = backend.parse().map_err(|e| error(py, e, None, false))?;
        pbxfw_runtime::render::render(&self.loaded.ruleset, target, false)
            .map_err(|e| error(py, e, None, false))
    }

    /// What happens to a packet, and which policy object decides.
    #[pyo3(signature = (*, iface, src, proto, dport = None, sport = None, icmp_type = None, state = "new", registered = false, reply = false))]
    #[allow(clippy::too_many_arguments)] // keyword arguments, as Python callers write them
    fn explain(
        &self,
        py: Python<'_>,
        iface: &str,
        src: &str,
        proto: &str,
        dport: Option<u16>,
        sport: Option<u16>,
        icmp_type: Option<u8>,
        state: &str,
        registered: bool,
        reply: bool,
    ) -> PyResult<Explanation> {
        let src: IpAddr = src
            .parse()
            .map_err(|_| PyValueError::new_err(format!("{src:?} is not an IP address")))?;
        let query = pbxfw_runtime::explain::Query {
            iface: iface.to_string(),
            src,
            proto: proto.to_string(),
            dport,
            sport,
            icmp_type,
            state: Some(state.to_string()),
            registered,
            reply,
        };
        let e = pbxfw_runtime::explain::explain(&self.loaded.ruleset, &query)
            .map_err(|e| error(py, e, None, false))?;
        Ok(Explanation {
            verdict: e.verdict.to_string(),
            zone: e.zone.map(|z| z.to_string()),
            decided_by: e.decided_by,
            step: e.step,
            step_name: e.step_name.to_string(),
            chain: e.rule.as_ref().map(|r| r.chain.clone()),
            rule_index: e.rule.as_ref().map(|r| r.index),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<pbxfw.Policy fingerprint={}>",
            self.loaded.ruleset.fingerprint()
        )
    }
}

/// The answer of `Policy.explain`.
#[pyclass(frozen, get_all, module = "pbxfw._pbxfw")]
struct Explanation {
    /// `"accept"`, `"drop"` or `"reject"`.
    verdict: String,
    /// The source's zone, if the packet got as far as classification.
    zone: Option<String>,
    /// The deciding policy object (`trunk:provider-a`, `zone:local service:ssh`, `default`).
    decided_by: String,
    /// The step of the packet path, 1 to 10.
    step: u8,
    /// What that step is.
    step_name: String,
    /// The deciding rule's chain, absent when the chain policy decided.
    chain: Option<String>,
    /// The deciding rule's position in its chain.
    rule_index: Option<usize>,
}

#[pymethods]
impl Explanation {
    fn __repr__(&self) -> String {
        let zone = self
            .zone
            .as_deref()
            .map_or("None".into(), |z| format!("'{z}'"));
        format!(
            "<pbxfw.Explanation verdict='{}' decided_by='{}' zone={zone} step={}>",
            self.verdict, self.decided_by, self.step
        )
    }
}

/// Apply `policy` to the kernel of this network namespace as `pbxfw apply` does: refused
/// (`RefusedError`, reason `lockout`; nothing changes) when it would cut off the administrator
/// (`$SSH_CONNECTION`, `settings.admins`, and `admins`: `"ADDR"` for SSH or `"ADDR:PORT"`),
/// unless `force`; loaded with the backend's custom rules, verified, and recorded as the last
/// applied ruleset. With `confirm`, it is rolled back after that many seconds unless
/// `confirm()` comes first. Returns `{"fingerprint", "elapsed_ms"}`, or with `confirm`
/// `{"fingerprint", "rolled_back_at_ms"}`.
#[pyfunction]
#[pyo3(signature = (policy, backend = None, *, confirm = None, admins = None, force = false, counters = false))]
fn apply<'py>(
    py: Python<'py>,
    policy: &Policy,
    backend: Option<&str>,
    confirm: Option<u64>,
    admins: Option<Vec<String>>,
    force: bool,
    counters: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let backend = backend_named(py, backend)?;
    let admins = admins
        .unwrap_or_default()
        .iter()
        .map(|a| {
            a.parse::<Admin>()
                .map_err(|e| raise(py, "UsageError", (e,)))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let req = ApplyRequest {
        backend,
        counters,
        confirm,
        admins,
        force,
        ..Default::default()
    };
    let loaded = &policy.loaded;
    match py.detach(move || pbxfw_runtime::apply(loaded, &req)) {
        Ok(done) => to_py(py, &done),
        Err(e) => Err(error(py, e, Some(backend), true)),
    }
}

/// Keep the ruleset an `apply(confirm=…)` loaded. Returns its fingerprint; `UsageError` when
/// nothing waits for confirmation.
#[pyfunction]
fn confirm(py: Python<'_>) -> PyResult<String> {
    py.detach(pbxfw_runtime::confirm)
        .map_err(|e| error(py, e, None, false))
}

/// Go back now to the ruleset before an `apply(confirm=…)`, on the backend that apply used
/// (naming another is refused). Says what happened; `UsageError` when nothing waits for
/// confirmation.
#[pyfunction]
#[pyo3(signature = (backend = None))]
fn rollback(py: Python<'_>, backend: Option<&str>) -> PyResult<String> {
    let backend = backend.map(|b| backend_named(py, Some(b))).transpose()?;
    py.detach(move || pbxfw_runtime::rollback(backend))
        .map_err(|e| error(py, e, backend, false))
}

/// What is loaded and what the host keeps about it, as `pbxfw status --format json` prints it:
/// a dict with `backend`, `loaded`, `fingerprint`, `sets`, `counters`, `pending_confirmation`,
/// `safe_mode`, `hostnames`, `discovery`, `responsive` and `state_problems`.
#[pyfunction]
#[pyo3(signature = (backend = None))]
fn status<'py>(py: Python<'py>, backend: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
    let backend = backend_named(py, backend)?;
    match py.detach(move || pbxfw_runtime::status(backend, clock())) {
        Ok(s) => json_py(py, &s.to_json()),
        Err(e) => Err(error(py, e, Some(backend), false)),
    }
}

/// Remove everything pbxfw owns from the kernel, and nothing else. Returns whether anything was
/// loaded. Refused (`RefusedError`, reason `locked`) while the lock file exists.
#[pyfunction]
#[pyo3(signature = (backend = None))]
fn disable(py: Python<'_>, backend: Option<&str>) -> PyResult<bool> {
    let backend = backend_named(py, backend)?;
    py.detach(move || pbxfw_runtime::disable(backend))
        .map_err(|e| error(py, e, Some(backend), false))
}

/// A certificate-renewal window (docs/acme.md), as `pbxfw acme open|close|status` do: `action`
/// is `open` (for `seconds`, 1 to 3600: port 80 admits, from everyone, connections whose first
/// request line is `GET /.well-known/acme-challenge/`, until the window ends by itself),
/// `close` or `status`. Returns `{"backend", "open", "expires_in", "until", "port",
/// "request"}`. The loaded policy needs `settings.acme` (`UsageError` otherwise).
#[pyfunction]
#[pyo3(signature = (action = "status", seconds = 60, backend = None))]
fn acme<'py>(
    py: Python<'py>,
    action: &str,
    seconds: u64,
    backend: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let backend = backend_named(py, backend)?;
    let action = action.to_string();
    let w = py
        .detach(move || match action.as_str() {
            "open" => Ok(pbxfw_runtime::acme::open(backend, seconds, clock())),
            "close" => Ok(pbxfw_runtime::acme::close(backend, clock())),
            "status" => Ok(pbxfw_runtime::acme::status(backend, clock())),
            other => Err(format!("action {other:?} is not open, close or status")),
        })
        .map_err(|m| raise(py, "UsageError", (m,)))?
        .map_err(|e| error(py, e, Some(backend), false))?;
    to_py(py, &w)
}

/// The bans in force, as `pbxfw bans --format json` prints them: a dict with `backend`,
/// `loaded` and `bans` (each with `prefix`, `origin` — `state_machine`, `kernel_tier`,
/// `manual`, `unknown` —, `reason`, `since`, `until` with their ISO 8601 forms, `expires_in`,
/// `strikes`, `by`, `set`).
#[pyfunction]
#[pyo3(signature = (backend = None))]
fn bans<'py>(py: Python<'py>, backend: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
    let backend = backend_named(py, backend)?;
    match py.detach(move || pbxfw_runtime::bans::list(backend, clock())) {
        Ok(b) => to_py(py, &b),
        Err(e) => Err(error(py, e, Some(backend), false)),
    }
}

/// Lift every ban of `prefixes` (addresses or CIDRs) for good, as `pbxfw unban` does: the
/// kernel's elements overlapping them go, bans by hand end, and the daemon forgets the sources
/// and their strikes. Returns `{"prefixes", "lifted", "loaded"}`. `RefusedError` (reason
/// `pending_confirmation`) while an apply waits for confirmation.
#[pyfunction]
#[pyo3(signature = (prefixes, backend = None))]
fn unban<'py>(
    py: Python<'py>,
    prefixes: Vec<String>,
    backend: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let backend = backend_named(py, backend)?;
    let prefixes = pbxfw_runtime::bans::parse_prefixes(&prefixes)
        .map_err(|e| error(py, e, Some(backend), false))?;
    let by = pbxfw_runtime::bans::requester();
    match py.detach(move || pbxfw_runtime::bans::unban(backend, &prefixes, clock(), &by)) {
        Ok(u) => to_py(py, &u),
        Err(e) => Err(error(py, e, Some(backend), false)),
    }
}

/// Ban `prefix` by hand for `seconds` (1 to 2,147,483), as `pbxfw ban` does, under `policy`:
/// what it protects is never banned (`RefusedError`, reason `never_banned`), nor an
/// administrator's address unless `force` (reason `lockout`; `admins` as for `apply`). Returns
/// `{"prefix", "until", "until_iso", "reason", "set"}`.
#[pyfunction]
#[pyo3(signature = (policy, prefix, seconds, backend = None, *, reason = None, admins = None, force = false))]
#[allow(clippy::too_many_arguments)]
fn ban<'py>(
    py: Python<'py>,
    policy: &Policy,
    prefix: &str,
    seconds: u64,
    backend: Option<&str>,
    reason: Option<String>,
    admins: Option<Vec<String>>,
    force: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let backend = backend_named(py, backend)?;
    let prefix = pbxfw_runtime::bans::parse_prefixes(&[prefix.to_string()])
        .map_err(|e| error(py, e, Some(backend), false))?[0];
    let admins = admins
        .unwrap_or_default()
        .iter()
        .map(|a| {
            a.parse::<Admin>()
                .map_err(|e| raise(py, "UsageError", (e,)))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let req = pbxfw_runtime::bans::BanRequest {
        backend,
        prefix,
        seconds,
        reason,
        admins,
        force,
    };
    let valid = &policy.loaded.policy;
    let by = pbxfw_runtime::bans::requester();
    match py.detach(move || pbxfw_runtime::bans::ban(valid, &req, clock(), &by)) {
        Ok(b) => to_py(py, &b),
        Err(e) => Err(error(py, e, Some(backend), false)),
    }
}

/// Carry out the actions `Responsive.on_event` and `Responsive.tick` returned (bans, slow
/// lane, registrations and their grants) in the kernel, `policy` being the applied one,
/// batched into one update per set and operation. `now`: when they were decided (default: the
/// clock). Returns `{"updates", "elements", "failures"}`; when the kernel refused an update the
/// others are still made and `BackendError` (kind `kernel`) names each refusal.
#[pyfunction]
#[pyo3(signature = (policy, actions, backend = None, now = None))]
fn carry_out<'py>(
    py: Python<'py>,
    policy: &Policy,
    actions: &Bound<'py, PyAny>,
    backend: Option<&str>,
    now: Option<u64>,
) -> PyResult<Bound<'py, PyAny>> {
    let backend = backend_named(py, backend)?;
    let text: String = py
        .import("json")?
        .call_method1("dumps", (actions,))?
        .extract()?;
    let actions: Vec<Action> = serde_json::from_str(&text)
        .map_err(|e| raise(py, "UsageError", (format!("actions: {e}"),)))?;
    let rs = &policy.loaded.ruleset;
    let at = now.unwrap_or_else(clock);
    let done = py.detach(move || carry_out_in(backend.open().as_ref(), rs, &actions, at));
    match done.into_result() {
        Ok(done) => to_py(py, &done),
        Err(e) => Err(error(py, e, Some(backend), false)),
    }
}

/// Read an Asterisk configuration directory and describe the ports, RTP/UDPTL ranges and
/// trunks it implies: a dict with `policy` (a fragment in the policy's shape), `origins` (each
/// item's `path`, `origin` as `file:line`, and `what`), `notes`, `files` and `dir`. A policy
/// whose `pbx.discover` names the directory has this merged already. `FileNotFoundError` when
/// the directory holds no Asterisk configuration.
#[pyfunction]
#[pyo3(signature = (dir = "/etc/asterisk"))]
fn discover<'py>(py: Python<'py>, dir: &str) -> PyResult<Bound<'py, PyAny>> {
    let path = std::path::Path::new(dir);
    let found = py
        .detach(|| pbxfw_runtime::policy::discover(path))
        .map_err(|e| error(py, e, None, false))?;
    to_py(py, &pbxfw_runtime::policy::discovery_json(path, &found))
}

/// The responsive layer's state machine, without I/O: feed it security events, get back the
/// actions (bans, clamps, registrations) for a backend to carry out.
#[pyclass(module = "pbxfw._pbxfw")]
struct Responsive {
    machine: Machine,
}

fn now_or(py: Python<'_>, now: Option<u64>) -> PyResult<u64> {
    match now {
        Some(t) => Ok(t),
        None => {
            let t: f64 = py.import("time")?.call_method0("time")?.extract()?;
            Ok(t as u64)
        }
    }
}

#[pymethods]
impl Responsive {
    /// A fresh machine configured by `policy`'s `[responsive]` settings.
    #[new]
    fn new(policy: &Policy) -> Responsive {
        Responsive {
            machine: Machine::new(pbxfw_runtime::machine_config(&policy.loaded.policy)),
        }
    }

    /// A machine from a `snapshot()`, reconfigured by `policy`. A snapshot that cannot be read
    /// raises `StateError`.
    #[staticmethod]
    fn restore(py: Python<'_>, policy: &Policy, snapshot: &str) -> PyResult<Responsive> {
        let mut machine =
            Machine::restore(snapshot).map_err(|e| raise(py, "StateError", (e.to_string(),)))?;
        machine.reconfigure(pbxfw_runtime::machine_config(&policy.loaded.policy));
        Ok(Responsive { machine })
    }

    /// Feed one event: a JSON-lines record (str) or the same as a dict (see `docs/events.md`).
    /// `now` is Unix seconds (default: the clock). Returns the actions, as dicts with an
    /// `action` key (`ban`, `clamp`, `allow_registered`, …).
    #[pyo3(signature = (event, now = None))]
    fn on_event<'py>(
        &mut self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        now: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let line: String = if event.is_instance_of::<PyString>() {
            event.extract()?
        } else {
            py.import("json")?
                .call_method1("dumps", (event,))?
                .extract()?
        };
        let timed = pbxfw_core::json::parse_line(&line)
            .map_err(|e| PyValueError::new_err(format!("not a pbxfw event: {e}")))?;
        let t = now_or(py, now.or(timed.at))?;
        let actions = self.machine.on_event(&timed.event, t);
        to_py(py, &actions)
    }

    /// Housekeeping at `now` (default: the clock): expiries and decays. Returns the actions.
    #[pyo3(signature = (now = None))]
    fn tick<'py>(&mut self, py: Python<'py>, now: Option<u64>) -> PyResult<Bound<'py, PyAny>> {
        let t = now_or(py, now)?;
        let actions = self.machine.tick(t);
        to_py(py, &actions)
    }

    /// The active bans at `now` (default: the clock), as `(prefix, until)` pairs.
    #[pyo3(signature = (now = None))]
    fn bans(&self, py: Python<'_>, now: Option<u64>) -> PyResult<Vec<(String, u64)>> {
        let t = now_or(py, now)?;
        Ok(self
            .machine
            .bans(t)
            .into_iter()
            .map(|(p, until)| (p.to_string(), until))
            .collect())
    }

    /// The whole state as versioned JSON text, for `restore`.
    fn snapshot(&self) -> String {
        self.machine.snapshot()
    }

    fn __repr__(&self) -> String {
        format!(
            "<pbxfw.Responsive tracking {} sources>",
            self.machine.tracked()
        )
    }
}

/// A connection to the daemon's control socket; `pbxfw.Client` (Python) builds its methods on
/// this one call.
#[pyclass(module = "pbxfw._pbxfw", name = "_Client")]
struct NativeClient {
    inner: std::sync::Mutex<pbxfw_runtime::control::Client>,
}

#[pymethods]
impl NativeClient {
    /// Connect to the socket at `path` (default: `$PBXFW_CONTROL_SOCKET`, else
    /// `/run/pbxfw/control.sock`); each call waits at most `timeout` seconds.
    #[new]
    #[pyo3(signature = (path = None, timeout = 30.0))]
    fn new(py: Python<'_>, path: Option<&str>, timeout: f64) -> PyResult<NativeClient> {
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 86_400.0) {
            return Err(raise(
                py,
                "UsageError",
                ("timeout must be between 0 and 86400 seconds",),
            ));
        }
        let path = path.map_or_else(pbxfw_runtime::control::socket_path, Into::into);
        let timeout = std::time::Duration::from_secs_f64(timeout);
        match py.detach(move || pbxfw_runtime::control::Client::connect(&path, timeout)) {
            Ok(c) => Ok(NativeClient {
                inner: std::sync::Mutex::new(c),
            }),
            Err(e) => Err(error(py, e, None, false)),
        }
    }

    /// Call `method` with `params` (JSON text of an object); the result as JSON text. A failure
    /// raises what the same failure raises locally.
    fn call(&self, py: Python<'_>, method: &str, params: &str) -> PyResult<String> {
        let value: serde_json::Value = serde_json::from_str(params)
            .map_err(|e| raise(py, "UsageError", (format!("params: {e}"),)))?;
        let backend = value["backend"]
            .as_str()
            .and_then(|b| b.parse::<BackendName>().ok());
        let inner = &self.inner;
        let method_owned = method.to_string();
        let result = py.detach(move || {
            inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .call_method(&method_owned, value)
        });
        match result {
            Ok(v) => Ok(v.to_string()),
            Err(e) => {
                let backend =
                    backend.or_else(|| matches!(e, Error::Backend(_)).then(BackendName::current));
                Err(error(py, e, backend, method == "apply"))
            }
        }
    }
}

/// The native module; the public API is the `pbxfw` package.
#[pymodule]
fn _pbxfw(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Policy>()?;
    m.add_class::<Explanation>()?;
    m.add_class::<Responsive>()?;
    m.add_class::<NativeClient>()?;
    m.add_function(wrap_pyfunction!(apply, m)?)?;
    m.add_function(wrap_pyfunction!(confirm, m)?)?;
    m.add_function(wrap_pyfunction!(rollback, m)?)?;
    m.add_function(wrap_pyfunction!(carry_out, m)?)?;
    m.add_function(wrap_pyfunction!(bans, m)?)?;
    m.add_function(wrap_pyfunction!(unban, m)?)?;
    m.add_function(wrap_pyfunction!(ban, m)?)?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(disable, m)?)?;
    m.add_function(wrap_pyfunction!(acme, m)?)?;
    m.add_function(wrap_pyfunction!(discover, m)?)?;
    Ok(())
}
