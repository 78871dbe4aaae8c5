//! pbxfw-py: the Python bindings of pbxfw, the private native module `pbxfw._pbxfw`.
//!
//! Conversion and error mapping only: every decision is made by `pbxfw-core` and the backends.
//! Structured values (diagnostics, status, responsive actions) cross as JSON, decoded by
//! Python's own `json` module, so Python sees plain dicts and lists with the same field names as
//! the command line's `--format json`. Errors are raised as the exception classes of
//! `pbxfw._errors` (defined in Python, so that `ConfigError` can be both a `PbxfwError` and a
//! `ValueError`). Kernel calls run with the interpreter released (`Python::detach`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::IpAddr;

use pbxfw_core::backend::{ApplyOptions, Backend, BackendError};
use pbxfw_core::explain::explain;
use pbxfw_core::ir::{CtState, Proto};
use pbxfw_core::responsive::{Config, Machine};
use pbxfw_core::{compile, Packet, Ruleset, ValidPolicy};
use pyo3::exceptions::PyValueError;
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
    py.import("json")?.call_method1("loads", (text,))
}

/// A kernel backend named by the caller, checked before the interpreter is released.
#[derive(Clone, Copy)]
enum Which {
    Nft,
    Iptables,
    IptablesNft,
    IptablesLegacy,
}

impl Which {
    fn parse(name: &str) -> PyResult<Which> {
        Ok(match name {
            "nft" => Which::Nft,
            "iptables" => Which::Iptables,
            "iptables-nft" => Which::IptablesNft,
            "iptables-legacy" => Which::IptablesLegacy,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown backend {other:?} (nft, iptables, iptables-nft, iptables-legacy)"
                )))
            }
        })
    }

    /// The backend (detecting the iptables variant for plain `iptables` runs commands: call it
    /// with the interpreter released).
    fn make(self) -> Box<dyn Backend> {
        use pbxfw_ipt::Variant;
        match self {
            Which::Nft => Box::new(pbxfw_nft::Kernel::default()),
            Which::Iptables => Box::new(pbxfw_ipt::Kernel::default()),
            Which::IptablesNft => Box::new(pbxfw_ipt::Kernel::new(Variant::Nft)),
            Which::IptablesLegacy => Box::new(pbxfw_ipt::Kernel::new(Variant::Legacy)),
        }
    }
}

/// A backend error as `BackendError(message, backend, kind)`, or, from an apply,
/// `ApplyError(message, backend, kind, stage)`.
fn backend_error(py: Python<'_>, e: BackendError, backend: &str, apply: bool) -> PyErr {
    let (kind, stage) = match &e {
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
        raise(
            py,
            "ApplyError",
            (e.to_string(), backend.to_string(), kind, stage),
        )
    } else {
        raise(
            py,
            "BackendError",
            (e.to_string(), backend.to_string(), kind),
        )
    }
}

/// A validated policy. Build it with `from_toml`, `from_json` or `from_dict`; an invalid
/// document raises `ConfigError` carrying every diagnostic.
#[pyclass(frozen, module = "pbxfw._pbxfw")]
struct Policy {
    valid: ValidPolicy,
    ruleset: Ruleset,
}

impl Policy {
    fn new(
        py: Python<'_>,
        parsed: Result<pbxfw_core::Policy, impl std::fmt::Display>,
    ) -> PyResult<Policy> {
        let mut policy = parsed.map_err(|e| {
            let d = vec![serde_json::json!({
                "path": "(policy)", "severity": "error", "message": e.to_string()
            })];
            match to_py(py, &d) {
                Ok(list) => raise(py, "ConfigError", (e.to_string(), list)),
                Err(err) => err,
            }
        })?;
        // `pbx.discover`: the PBX's own configuration joins the policy, as on the command line.
        pbxfw_host::asterisk::merge_requested(&mut policy);
        let valid = policy.validate().map_err(|d| {
            let message =
                d.0.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("\n");
            match to_py(py, &d.0) {
                Ok(list) => raise(py, "ConfigError", (message, list)),
                Err(err) => err,
            }
        })?;
        let ruleset = compile(&valid);
        Ok(Policy { valid, ruleset })
    }
}

#[pymethods]
impl Policy {
    /// Parse and validate TOML text.
    #[staticmethod]
    fn from_toml(py: Python<'_>, text: &str) -> PyResult<Policy> {
        Policy::new(py, pbxfw_core::Policy::from_toml(text))
    }

    /// Parse and validate JSON text.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Policy> {
        Policy::new(py, pbxfw_core::Policy::from_json(text))
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
        Policy::new(py, pbxfw_core::Policy::from_json(&text))
    }

    /// The warnings of the valid policy, each a dict with `path`, `severity`, `message` and,
    /// when there is one, `value`.
    #[getter]
    fn diagnostics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.valid.warnings)
    }

    /// The fingerprint of the compiled ruleset (what `status` shows once applied).
    #[getter]
    fn fingerprint(&self) -> String {
        self.ruleset.fingerprint()
    }

    /// The rules for `backend`: `"nft"`, `"iptables"`, or `"ir"` for the backend-neutral IR.
    #[pyo3(signature = (backend = "nft"))]
    fn compile(&self, py: Python<'_>, backend: &str) -> PyResult<String> {
        match backend {
            "ir" => Ok(self.ruleset.to_text()),
            "nft" => pbxfw_nft::lower(&self.ruleset, &pbxfw_nft::Options::default())
                .map(|s| s.text)
                .map_err(|e| raise(py, "BackendError", (e.to_string(), "nft", "unsupported"))),
            "iptables" => pbxfw_ipt::lower(&self.ruleset)
                .map(|s| s.text())
                .map_err(|e| {
                    raise(
                        py,
                        "BackendError",
                        (e.to_string(), "iptables", "unsupported"),
                    )
                }),
            other => Err(PyValueError::new_err(format!(
                "unknown backend {other:?} (nft, iptables, ir)"
            ))),
        }
    }

    /// What happens to a packet, and which policy object decides.
    #[pyo3(signature = (*, iface, src, proto, dport = None, sport = None, icmp_type = None, state = "new", registered = false))]
    #[allow(clippy::too_many_arguments)] // keyword arguments, as Python callers write them
    fn explain(
        &self,
        iface: &str,
        src: &str,
        proto: &str,
        dport: Option<u16>,
        sport: Option<u16>,
        icmp_type: Option<u8>,
        state: &str,
        registered: bool,
    ) -> PyResult<Explanation> {
        let src: IpAddr = src
            .parse()
            .map_err(|_| PyValueError::new_err(format!("{src:?} is not an IP address")))?;
        let proto: Proto = proto.parse().map_err(PyValueError::new_err)?;
        if proto.echo_request().is_some() && (dport.is_some() || sport.is_some()) {
            return Err(PyValueError::new_err(
                "dport and sport apply to udp and tcp only",
            ));
        }
        if proto.echo_request().is_none() && icmp_type.is_some() {
            return Err(PyValueError::new_err(
                "icmp_type applies to icmp and icmpv6 only",
            ));
        }
        let mut packet = Packet::new(iface, src, proto, dport);
        packet.sport = sport;
        packet.icmp_type = proto.echo_request().map(|echo| icmp_type.unwrap_or(echo));
        packet.ct = state.parse::<CtState>().map_err(PyValueError::new_err)?;
        let e = explain(&self.ruleset, &packet, registered);
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
        format!("<pbxfw.Policy fingerprint={}>", self.ruleset.fingerprint())
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

/// Load `policy` into the kernel of this network namespace (dynamic sets keep their elements)
/// and verify it. Returns `{"fingerprint": str, "elapsed": milliseconds}`.
#[pyfunction]
#[pyo3(signature = (policy, backend = "nft"))]
fn apply<'py>(py: Python<'py>, policy: &Policy, backend: &str) -> PyResult<Bound<'py, PyAny>> {
    let which = Which::parse(backend)?;
    let custom = pbxfw_host::custom::load(backend).map_err(|m| {
        raise(
            py,
            "ApplyError",
            (m, backend.to_string(), "locked", "check"),
        )
    })?;
    let rs = &policy.ruleset;
    let opts = ApplyOptions {
        custom,
        ..Default::default()
    };
    let done = py.detach(move || which.make().apply(rs, &opts));
    match done {
        Ok(a) => to_py(py, &a),
        Err(e) => Err(backend_error(py, e, backend, true)),
    }
}

/// What is loaded: a dict with `backend`, `loaded`, `fingerprint`, `sets` and `counters`, as
/// `pbxfw status --format json` prints it.
#[pyfunction]
#[pyo3(signature = (backend = "nft"))]
fn status<'py>(py: Python<'py>, backend: &str) -> PyResult<Bound<'py, PyAny>> {
    let which = Which::parse(backend)?;
    let done = py.detach(move || which.make().status());
    match done {
        Ok(s) => to_py(py, &s),
        Err(e) => Err(backend_error(py, e, backend, false)),
    }
}

/// Remove everything pbxfw owns from the kernel, and nothing else. Returns whether anything was
/// loaded. Refused (`BackendError`, kind `locked`) while the lock file exists.
#[pyfunction]
#[pyo3(signature = (backend = "nft"))]
fn disable(py: Python<'_>, backend: &str) -> PyResult<bool> {
    let which = Which::parse(backend)?;
    py.detach(move || pbxfw_host::lock::disable(which.make().as_ref()))
        .map_err(|e| backend_error(py, e, backend, false))
}

/// Read an Asterisk configuration directory and describe the ports, RTP/UDPTL ranges and
/// trunks it implies: a dict with `policy` (a fragment in the policy's shape), `origins` (each
/// item's `path`, `origin` as `file:line`, and `what`), `notes`, `files` and `dir`. A policy
/// whose `pbx.discover` names the directory has this merged already. `ValueError` when the
/// directory holds no Asterisk configuration.
#[pyfunction]
#[pyo3(signature = (dir = "/etc/asterisk"))]
fn discover<'py>(py: Python<'py>, dir: &str) -> PyResult<Bound<'py, PyAny>> {
    let found = py.detach(|| pbxfw_host::asterisk::Dir::new(dir).discover());
    if found.files.is_empty() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{dir}: no Asterisk configuration found"
        )));
    }
    let mut doc = found.to_json();
    doc["dir"] = dir.into();
    to_py(py, &doc)
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
            machine: Machine::new(Config::from_policy(&policy.valid)),
        }
    }

    /// A machine from a `snapshot()`, reconfigured by `policy`. A snapshot that cannot be read
    /// raises `StateError`.
    #[staticmethod]
    fn restore(py: Python<'_>, policy: &Policy, snapshot: &str) -> PyResult<Responsive> {
        let mut machine =
            Machine::restore(snapshot).map_err(|e| raise(py, "StateError", (e.to_string(),)))?;
        machine.reconfigure(Config::from_policy(&policy.valid));
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
        let timed = pbxfw_core::events::json::parse_line(&line)
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

/// The native module; the public API is the `pbxfw` package.
#[pymodule]
fn _pbxfw(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Policy>()?;
    m.add_class::<Explanation>()?;
    m.add_class::<Responsive>()?;
    m.add_function(wrap_pyfunction!(apply, m)?)?;
    m.add_function(wrap_pyfunction!(status, m)?)?;
    m.add_function(wrap_pyfunction!(disable, m)?)?;
    m.add_function(wrap_pyfunction!(discover, m)?)?;
    Ok(())
}
