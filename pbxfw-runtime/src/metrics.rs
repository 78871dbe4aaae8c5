//! Metrics for Prometheus (`pbxfw daemon --metrics 127.0.0.1:9477`): a plain-text endpoint on a
//! loopback address, off by default. The daemon's main loop publishes a small snapshot (its
//! counters, the state machine's bans by cause, the slow lane and registrations) at most ten
//! times a second; a scrape adds what the kernel holds (each pbxfw set's size, the counters of
//! rules applied with `--counters`) and the hostnames' answers, read by the scraping thread
//! itself, so a scrape never stalls event handling. One scrape is served at a time, each
//! bounded in size and time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backends::BackendName;
use crate::context::Context;
use crate::error::{Error, Result};

/// What the daemon's loop publishes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The daemon's counters.
    pub counters: crate::daemon::Counters,
    /// The state machine's bans by cause (`attack_tool`, `unknown_account`, …).
    pub bans_by_cause: BTreeMap<String, u64>,
    /// Sources in the slow lane.
    pub clamped: u64,
    /// Registered devices.
    pub registered: u64,
    /// Source prefixes tracked.
    pub tracked: u64,
    /// Hook calls dropped because their queue was full.
    pub hooks_dropped: u64,
    /// How long the daemon's kernel updates take.
    pub timings: Timings,
    /// The fleet (docs/fleet.md).
    pub fleet: crate::fleet::Metrics,
}

/// What the daemon's loop measures of itself (not kept across restarts).
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Batches of actions carried out in the kernel (one netlink transaction per set and
    /// operation each).
    pub kernel_updates: u64,
    /// Their total duration, in seconds.
    pub kernel_update_seconds: f64,
    /// The longest, in seconds.
    pub kernel_update_max_seconds: f64,
    /// Events acted on, by kind (`auth_failed`, `registered`, …).
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Records the loop took off its queue in its last pass: the queue's depth then (at most
    /// the batch of 4,096; sources wait when the queue of 4,096 is full).
    pub queue_depth: u64,
}

/// The snapshot the loop writes and the endpoint reads.
pub type Shared = Arc<Mutex<Snapshot>>;

/// Serve the metrics of `shared` (and of the kernel of `backend`) on `addr`, which must be a
/// loopback address: the numbers say who is banned and why.
pub fn serve(addr: SocketAddr, shared: Shared, backend: BackendName, ctx: Context) -> Result<()> {
    if !addr.ip().is_loopback() {
        return Err(Error::Usage(format!(
            "--metrics {addr}: only a loopback address (127.0.0.1, ::1); put a proxy in front to expose it"
        )));
    }
    let listener = TcpListener::bind(addr).map_err(|e| Error::io(addr.to_string(), e))?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if let Err(e) = answer(conn, &shared, backend) {
                ctx.log(&[("error", "metrics".into()), ("detail", e.to_string())]);
            }
        }
    });
    Ok(())
}

fn answer(mut conn: TcpStream, shared: &Shared, backend: BackendName) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    // The request line and headers, at most 8 KiB.
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let (status, body) = if line.starts_with("GET /metrics ") || line.starts_with("GET / ") {
        let snap = shared.lock().map(|s| s.clone()).unwrap_or_default();
        ("200 OK", render(&snap, backend))
    } else {
        ("404 Not Found", "GET /metrics\n".to_string())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The exposition text: the snapshot, the kernel's sets and counters, the hostnames.
pub fn render(snap: &Snapshot, backend: BackendName) -> String {
    let mut out = String::new();
    let t = &snap.timings;
    out += &format!(
        "# HELP pbxfw_kernel_update_seconds The daemon's updates of the kernel's sets (one batch of actions each).\n\
         # TYPE pbxfw_kernel_update_seconds summary\n\
         pbxfw_kernel_update_seconds_sum {:.6}\npbxfw_kernel_update_seconds_count {}\n\
         # HELP pbxfw_kernel_update_max_seconds The longest of them since the daemon started.\n\
         # TYPE pbxfw_kernel_update_max_seconds gauge\npbxfw_kernel_update_max_seconds {:.6}\n\
         # HELP pbxfw_queue_depth Records waiting in the daemon's queue when its loop last took them.\n\
         # TYPE pbxfw_queue_depth gauge\npbxfw_queue_depth {}\n",
        t.kernel_update_seconds, t.kernel_updates, t.kernel_update_max_seconds, t.queue_depth
    );
    out += "# HELP pbxfw_events_by_kind_total Events acted on, by kind.\n# TYPE pbxfw_events_by_kind_total counter\n";
    for (kind, n) in &t.events_by_kind {
        out += &format!("pbxfw_events_by_kind_total{{kind=\"{kind}\"}} {n}\n");
    }
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, v) in samples {
            out += &format!("{name}{labels} {v}\n");
        }
    };
    let c = &snap.counters;
    metric(
        "pbxfw_events_total",
        "counter",
        "Security events read, by what became of them.",
        &[
            ("{outcome=\"acted_on\"}".into(), c.events),
            ("{outcome=\"ambiguous\"}".into(), c.ambiguous),
            ("{outcome=\"malformed\"}".into(), c.malformed),
        ],
    );
    metric(
        "pbxfw_actions_total",
        "counter",
        "Actions carried out (bans, clamps, registrations, ...).",
        &[(String::new(), c.actions)],
    );
    let bans: Vec<(String, u64)> = snap
        .bans_by_cause
        .iter()
        .map(|(cause, n)| {
            (
                format!("{{origin=\"state_machine\",cause=\"{cause}\"}}"),
                *n,
            )
        })
        .collect();
    metric(
        "pbxfw_bans",
        "gauge",
        "Bans the state machine holds, by cause.",
        &bans,
    );
    metric(
        "pbxfw_clamped_sources",
        "gauge",
        "Sources in the slow lane.",
        &[(String::new(), snap.clamped)],
    );
    metric(
        "pbxfw_registered_devices",
        "gauge",
        "Registered devices.",
        &[(String::new(), snap.registered)],
    );
    metric(
        "pbxfw_tracked_sources",
        "gauge",
        "Source prefixes the state machine tracks.",
        &[(String::new(), snap.tracked)],
    );
    metric(
        "pbxfw_hook_calls_dropped_total",
        "counter",
        "Hook calls dropped because their queue was full.",
        &[(String::new(), snap.hooks_dropped)],
    );
    let f = &snap.fleet;
    if f.configured {
        let s = &f.stats;
        metric(
            "pbxfw_fleet_decisions",
            "gauge",
            "Fleet decisions (CrowdSec LAPI), by state: enforced in the kernel, refused (protected sources).",
            &[
                ("{state=\"enforced\"}".into(), s.enforced),
                ("{state=\"refused\"}".into(), s.refused),
            ],
        );
        metric(
            "pbxfw_fleet_pulls_total",
            "counter",
            "Decision-stream pulls taken, by kind, and those that failed.",
            &[
                ("{kind=\"full\"}".into(), s.full_pulls),
                ("{kind=\"delta\"}".into(), s.delta_pulls),
                ("{kind=\"failed\"}".into(), f.pull_errors),
            ],
        );
        metric(
            "pbxfw_fleet_skipped_total",
            "counter",
            "Decisions read and not enforced, by why.",
            &[
                ("{why=\"not_ban\"}".into(), s.skipped.not_ban),
                ("{why=\"other_scope\"}".into(), s.skipped.other_scope),
                ("{why=\"bad_value\"}".into(), s.skipped.bad_value),
                ("{why=\"expired\"}".into(), s.skipped.expired),
                ("{why=\"over_limit\"}".into(), s.skipped.over_limit),
            ],
        );
        metric(
            "pbxfw_fleet_pushed_total",
            "counter",
            "This PBX's bans pushed to the fleet, and pushes that failed or were dropped.",
            &[
                ("{outcome=\"sent\"}".into(), f.pushed),
                ("{outcome=\"failed\"}".into(), f.push_errors),
                ("{outcome=\"dropped\"}".into(), f.push_dropped),
            ],
        );
        metric(
            "pbxfw_fleet_kernel_errors_total",
            "counter",
            "Writes of the fleet's sets the kernel refused.",
            &[(String::new(), s.kernel_errors)],
        );
    }
    // The fleet's sets are counted by `pbxfw_fleet_decisions` (the daemon knows them): listing
    // 100,000 elements at every scrape would cost the daemon a second and 100 MB each time.
    let fleet: Vec<String> = pbxfw_core::Family::BOTH
        .iter()
        .map(|f| pbxfw_core::names::fleet(*f))
        .collect();
    if let Ok(status) = backend.open().status_except(&fleet) {
        metric(
            "pbxfw_loaded",
            "gauge",
            "Whether pbxfw's ruleset is loaded.",
            &[(String::new(), u64::from(status.loaded))],
        );
        let sets: Vec<(String, u64)> = status
            .sets
            .iter()
            .map(|s| (format!("{{set=\"{}\"}}", s.name), s.size as u64))
            .collect();
        metric(
            "pbxfw_set_elements",
            "gauge",
            "Elements of each pbxfw set in the kernel.",
            &sets,
        );
        let rules: Vec<(String, u64)> = status
            .counters
            .iter()
            .map(|r| {
                (
                    format!(
                        "{{chain=\"{}\",origin={:?}}}",
                        r.chain,
                        r.origin.replace('\\', "").replace('"', "'")
                    ),
                    r.packets,
                )
            })
            .collect();
        if !rules.is_empty() {
            metric(
                "pbxfw_rule_packets_total",
                "counter",
                "Packets counted by each rule (applied with --counters).",
                &rules,
            );
        }
    }
    if let Ok(Some(snapshot)) =
        pbxfw_host::state::read::<pbxfw_core::DnsSnapshot>(&crate::names::state_path(), "dns")
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let names = pbxfw_core::DnsTracker::status_of(Default::default(), snapshot, now);
        let addrs: Vec<(String, u64)> = names
            .iter()
            .map(|n| (format!("{{name=\"{}\"}}", n.name), n.addresses.len() as u64))
            .collect();
        metric(
            "pbxfw_hostname_addresses",
            "gauge",
            "Addresses each policy hostname resolves to now.",
            &addrs,
        );
        let failing: Vec<(String, u64)> = names
            .iter()
            .map(|n| {
                (
                    format!("{{name=\"{}\"}}", n.name),
                    n.last_error.as_ref().map_or(0, |e| u64::from(e.failures)),
                )
            })
            .collect();
        metric(
            "pbxfw_hostname_failures",
            "gauge",
            "Failed lookups in a row of each policy hostname.",
            &failing,
        );
    }
    out
}
