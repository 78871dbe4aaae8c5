//! The daemon's event → action → set update path on the in-memory backend, without root: the
//! same `Daemon` the command line runs, with a clock the test moves and a log it reads. What a
//! packet gets afterwards is the reference evaluator's answer over the sets as the daemon left
//! them. (The kernel tests of the command line run the same path on nft and iptables.)

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pbxfw_core::json::parse_line;
use pbxfw_core::{apply, ApplyOptions, Backend};
use pbxfw_core::{Packet, Proto};
use pbxfw_runtime::context::{Context, LogSink, ManualClock};
use pbxfw_runtime::daemon::{Daemon, DaemonConfig, Sources};
use pbxfw_testkit::memory::Memory;

const T0: u64 = 1_795_000_000;

const POLICY: &str = r#"
[interfaces]
eth0 = "internet"
eth1 = "local"

[settings]
admins = ["198.51.100.200"]

[[pbx.trunks]]
name = "provider-a"
protocol = "pjsip"
host = "203.0.113.10"
"#;

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl LogSink for Lines {
    fn line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl Lines {
    fn any(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

fn event(json: &str) -> pbxfw_core::SecurityEvent {
    parse_line(json).unwrap().event
}

fn scanner(source: &str, account: u32) -> pbxfw_core::SecurityEvent {
    event(&format!(
        r#"{{"event":"auth_failed","source":"{source}","reason":"unknown_account","account":"{account}","protocol":"pjsip"}}"#
    ))
}

fn sip_from(addr: &str) -> Packet {
    let src: IpAddr = addr.parse().unwrap();
    Packet::new("eth0", src, Proto::Udp, Some(5060))
}

struct Bed {
    _dir: tempfile::TempDir,
    config: DaemonConfig,
    // The host's state directories are process-wide (environment variables): one test at a
    // time.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: Mutex<()> = Mutex::new(());

fn bed() -> Bed {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    std::fs::write(&policy, POLICY).unwrap();
    // What the runtime keeps on the host (the applied record, pending confirmations) goes
    // here, not to /var/lib/pbxfw.
    std::env::set_var("PBXFW_STATE_DIR", dir.path().join("state"));
    std::env::set_var("PBXFW_RUN_DIR", dir.path().join("run"));
    let config = DaemonConfig {
        policy: Some(policy.display().to_string()),
        sources: Sources::default(),
        logs_with_ami: false,
        state: dir.path().join("state/responsive.json"),
        tick: Duration::from_millis(20),
        backend: pbxfw_runtime::BackendName::Nft,
        dns: Default::default(),
        hooks: None,
        metrics: None,
        control: None,
        wireguard: Default::default(),
    };
    Bed {
        _dir: dir,
        config,
        _serial: serial,
    }
}

/// Run a daemon on `kernel` while `feed` hands it events; stop it and return its log.
fn run_daemon(
    config: &DaemonConfig,
    kernel: &Memory,
    clock: &Arc<ManualClock>,
    feed: impl FnOnce(&pbxfw_runtime::daemon::Handle),
) -> Arc<Lines> {
    let lines = Arc::new(Lines::default());
    let ctx = Context::new(clock.clone(), lines.clone());
    let mut daemon = Daemon::with_context(config.clone(), ctx).unwrap();
    let handle = daemon.handle();
    std::thread::scope(|s| {
        let running = s.spawn(move || daemon.run_on(kernel));
        feed(&handle);
        handle.stop().unwrap();
        running.join().unwrap().unwrap();
    });
    lines
}

#[test]
fn events_become_bans_registrations_and_verdicts_without_a_kernel() {
    let bed = bed();
    let kernel = Memory::new();
    let loaded = pbxfw_runtime::load(bed.config.policy.as_deref()).unwrap();
    apply(&kernel, &loaded.ruleset, &ApplyOptions::default()).unwrap();
    let clock = Arc::new(ManualClock::at(T0));

    // Before: a scanner's SIP gets what any stranger gets on 5060 (no ban).
    let before = kernel.decide(&sip_from("203.0.113.9")).unwrap();
    assert_ne!(before.decided_by, "responsive:ban");

    let log = run_daemon(&bed.config, &kernel, &clock, |h| {
        for i in 0..5 {
            h.event(scanner("203.0.113.9", 100 + i)).unwrap();
        }
        // Forged failures for the trunk and the administrator: never banned.
        for i in 0..20 {
            h.event(scanner("203.0.113.10", 200 + i)).unwrap();
            h.event(scanner("198.51.100.200", 300 + i)).unwrap();
        }
        h.event(event(
            r#"{"event":"registered","source":"198.51.100.7","account":"300","expires":600}"#,
        ))
        .unwrap();
    });

    let bans = kernel.elements("ban4");
    assert_eq!(
        bans,
        vec!["203.0.113.9/32".parse().unwrap()],
        "only the scanner is banned"
    );
    assert!(
        log.any("action=ban source=203.0.113.9"),
        "the ban is logged"
    );
    assert!(log.any("not banned"), "the refused bans are reported");
    let banned = kernel.decide(&sip_from("203.0.113.9")).unwrap();
    assert_eq!(banned.verdict.to_string(), "drop");
    assert!(banned.decided_by.contains("ban"), "{banned:?}");
    let trunk = kernel.decide(&sip_from("203.0.113.10")).unwrap();
    assert_eq!(trunk.verdict.to_string(), "accept");
    assert_eq!(trunk.decided_by, "trunk:provider-a");
    assert_eq!(
        kernel.elements("registered4"),
        vec!["198.51.100.7/32".parse().unwrap()]
    );
    let phone = kernel.decide(&sip_from("198.51.100.7")).unwrap();
    assert_eq!(phone.verdict.to_string(), "accept", "{phone:?}");

    // The state was written on stop; the timeout the kernel got runs from the daemon's clock
    // (the test's, years away from the wall clock): exactly the logged `until` minus T0.
    let state = std::fs::read_to_string(&bed.config.state).unwrap();
    assert!(
        state.contains("\"events\":46") || state.contains("\"events\": 46"),
        "{state}"
    );
    let until: u64 = log
        .0
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| {
            l.strip_prefix("pbxfw: action=ban source=203.0.113.9 until=")
                .and_then(|rest| rest.split_whitespace().next())
                .map(|u| u.parse().unwrap())
        })
        .expect("the ban is logged with its end");
    let ttl = kernel
        .status()
        .unwrap()
        .sets
        .into_iter()
        .find(|s| s.name == "ban4")
        .unwrap()
        .elements[0]
        .expires_in
        .unwrap();
    assert_eq!(ttl, until - T0);

    // The table created anew (every element lost): a restarted daemon puts the ban and the
    // registration back from its state.
    kernel.disable().unwrap();
    apply(&kernel, &loaded.ruleset, &ApplyOptions::default()).unwrap();
    assert!(kernel.elements("ban4").is_empty());
    clock.set(T0 + 60);
    let log = run_daemon(&bed.config, &kernel, &clock, |_| {});
    assert!(log.any("event=start"), "{:?}", log.0.lock().unwrap());
    assert_eq!(kernel.elements("ban4"), bans, "the ban is back");
    assert_eq!(
        kernel.elements("registered4").len(),
        1,
        "the registration is back"
    );

    // Past the registration's expiry the kernel dropped it; the table created anew once more,
    // a daemon restarted then puts back the ban (still running) and not the registration.
    clock.set(T0 + 700);
    kernel.pass(Duration::from_secs(640));
    assert!(kernel.elements("registered4").is_empty());
    assert_eq!(kernel.elements("ban4"), bans);
    kernel.disable().unwrap();
    apply(&kernel, &loaded.ruleset, &ApplyOptions::default()).unwrap();
    run_daemon(&bed.config, &kernel, &clock, |_| {});
    assert!(
        kernel.elements("registered4").is_empty(),
        "an expired registration stays gone"
    );
    assert_eq!(kernel.elements("ban4"), bans, "the ban is back again");
}

#[test]
fn the_session_that_applied_the_policy_is_never_banned_by_any_machine() {
    let bed = bed();
    let kernel = Memory::new();
    let loaded = pbxfw_runtime::load(bed.config.policy.as_deref()).unwrap();
    apply(&kernel, &loaded.ruleset, &ApplyOptions::default()).unwrap();
    // As `apply` records it: applied from 198.51.100.44 (a web front end's client, say).
    pbxfw_runtime::safety::record_applied(
        "nft",
        &loaded.ruleset,
        &["198.51.100.44".parse().unwrap()],
    )
    .unwrap();
    // An embedder's machine (C, PHP, Python build theirs with this) protects it too.
    let mut machine = pbxfw_core::Machine::new(pbxfw_runtime::machine_config(&loaded.policy));
    let mut actions = Vec::new();
    for i in 0..10 {
        actions.extend(machine.on_event(&scanner("198.51.100.44", 400 + i), T0));
    }
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, pbxfw_core::Action::Ban { .. })),
        "{actions:?}"
    );
    let clock = Arc::new(ManualClock::at(T0));
    run_daemon(&bed.config, &kernel, &clock, |h| {
        for i in 0..10 {
            h.event(scanner("198.51.100.44", 500 + i)).unwrap();
        }
    });
    assert!(
        kernel.elements("ban4").is_empty(),
        "the daemon did not ban it either"
    );
}
