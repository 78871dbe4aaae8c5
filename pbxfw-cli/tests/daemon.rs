//! `pbxfw daemon` event sources against the kernel of a network namespace: an Asterisk AMI
//! server (login, events, a dropped connection and the reconnect), and an Asterisk log file
//! followed across rotation, truncation and restarts, and a JSON-lines socket.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use std::sync::mpsc;
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::{in_netns, skipped, Killed, Netns};

fn setup(tag: &str) -> (Netns, PathBuf) {
    let ns = Netns::new(tag);
    let dir = std::env::temp_dir().join(format!("pbxfw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pbxfw.toml"),
        "[interfaces]\neth0 = \"internet\"\n",
    )
    .unwrap();
    let out = ns.exec(&[
        env!("CARGO_BIN_EXE_pbxfw"),
        "apply",
        dir.join("pbxfw.toml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ns, dir)
}

fn daemon(ns: &Netns, dir: &Path, args: &[&str]) -> Killed {
    let policy = dir.join("pbxfw.toml");
    let state = dir.join("state.json");
    let mut argv = vec![
        env!("CARGO_BIN_EXE_pbxfw"),
        "daemon",
        policy.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--tick",
        "1",
    ];
    argv.extend_from_slice(args);
    let _ = std::fs::remove_file(dir.join("daemon.log"));
    ns.spawn(&argv, &[], &dir.join("daemon.log"))
}

fn banned(ns: &Netns, addr: &str) -> bool {
    let out = ns.exec(&["nft", "list", "set", "inet", "pbxfw", "ban4"]);
    String::from_utf8_lossy(&out.stdout).contains(addr)
}

fn eventually(what: &str, dir: &Path, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until the daemon logging to `dir/daemon.log` has restored its state and started.
/// The daemon is up and follows its events file: its follower logs where it started, after
/// the daemon's `start` (a line written before the follower opened the file would be skipped:
/// a follower without a saved position starts at the end).
fn started(dir: &Path) {
    eventually("the daemon started", dir, || {
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        log.contains("event=start") && log.contains("event=source")
    });
}

fn invalid_account(addr: &str, n: u32) -> String {
    format!(
        "Event: InvalidAccountID\r\nPrivilege: security,all\r\nEventTV: 2026-11-20T10:15:3{n}.000000+0000\r\n\
         Severity: MajorError\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: 10{n}\r\n\
         SessionID: 1-{n}@x\r\nLocalAddress: IPV4/UDP/100.64.0.1/5060\r\nRemoteAddress: IPV4/UDP/{addr}/5060\r\n\r\n"
    )
}

#[test]
fn ami_events_ban_and_the_connection_is_restored() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("ami");
    let listener = in_netns(&ns, || TcpListener::bind("127.0.0.1:5038").unwrap());
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for round in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.write_all(b"Asterisk Call Manager/5.0.1\r\n").unwrap();
            let mut login = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                login.push_str(&line);
            }
            let _ = tx.send(login);
            s.write_all(b"Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
                .unwrap();
            let addr = if round == 0 {
                "203.0.113.50"
            } else {
                "203.0.113.51"
            };
            for n in 0..3 {
                s.write_all(invalid_account(addr, n).as_bytes()).unwrap();
            }
            // The first connection drops; the daemon must come back.
            if round == 0 {
                std::thread::sleep(Duration::from_millis(500));
                drop(s);
            } else {
                std::thread::sleep(Duration::from_secs(30));
            }
        }
    });
    let _d = daemon(
        &ns,
        &dir,
        &[
            "--ami",
            "127.0.0.1:5038",
            "--ami-user",
            "pbxfw",
            "--ami-secret",
            "s3cret",
        ],
    );
    let login = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the daemon logged in");
    assert!(
        login.contains("Action: Login")
            && login.contains("Username: pbxfw")
            && login.contains("Secret: s3cret"),
        "{login}"
    );
    eventually("ban from AMI events", &dir, || banned(&ns, "203.0.113.50"));
    let again = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the daemon reconnected");
    assert!(again.contains("Action: Login"));
    eventually("ban after the reconnect", &dir, || {
        banned(&ns, "203.0.113.51")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The number of events the daemon's state says it acted on.
fn events_counted(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["data"]["counters"]["events"].as_u64())
        .unwrap_or(0)
}

/// An Asterisk log followed through what happens to it: a line that is not UTF-8, a restart
/// with lines written while the daemon was down, a rotation, a truncation. Every event is
/// counted exactly once: two failures of a source never ban it (three unknown accounts do),
/// and the state's counter matches the lines written.
#[test]
fn a_log_file_is_followed_across_rotation_truncation_and_restarts() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("logf");
    let log = dir.join("full");
    std::fs::write(
        &log,
        "[2026-11-20 10:00:00] NOTICE[1] chan_sip.c: old line before the first start\n",
    )
    .unwrap();
    let fail = |path: &PathBuf, addr: &str, n: usize| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for i in 0..n {
            writeln!(
                f,
                "[2026-11-20 10:15:3{i}] NOTICE[1638] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:10{i}@pbx>' failed for '{addr}:5060' (callid: {i}) - No matching endpoint found"
            )
            .unwrap();
        }
    };
    let mut written = 0u64;
    let mut expect_count = |n: u64, dir: &Path| {
        written += n;
        let want = written;
        eventually(&format!("{want} events counted"), dir, || {
            events_counted(dir) == want
        });
    };
    let mut d = Some(daemon(&ns, &dir, &["--log", log.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(800));
    // A Latin-1 byte (a caller name) is one bad byte, not a reason to stop or start over.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"[2026-11-20 10:15:29] VERBOSE[1] pbx.c: Caller 'Jos\xe9' dialled 100\n")
        .unwrap();
    fail(&log, "198.51.100.61", 2);
    expect_count(2, &dir);
    // A restart reads on from where it stopped: the two are not counted again.
    drop(d.take());
    d = Some(daemon(&ns, &dir, &["--log", log.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(800));
    assert!(!banned(&ns, "198.51.100.61"), "counted twice");
    fail(&log, "198.51.100.61", 1);
    expect_count(1, &dir);
    eventually("ban from the log", &dir, || banned(&ns, "198.51.100.61"));
    // Written while the daemon is down: read when it is back, once.
    drop(d.take());
    fail(&log, "198.51.100.62", 2);
    d = Some(daemon(&ns, &dir, &["--log", log.to_str().unwrap()]));
    expect_count(2, &dir);
    assert!(!banned(&ns, "198.51.100.62"));
    fail(&log, "198.51.100.62", 1);
    expect_count(1, &dir);
    eventually("ban after the restart", &dir, || {
        banned(&ns, "198.51.100.62")
    });
    // logrotate: the file is moved away and a new one created; the old file's last lines
    // and the new file's first both count.
    fail(&log, "198.51.100.63", 2);
    std::fs::rename(&log, dir.join("full.1")).unwrap();
    std::fs::write(&log, "").unwrap();
    fail(&log, "198.51.100.63", 1);
    expect_count(3, &dir);
    eventually("ban across the rotation", &dir, || {
        banned(&ns, "198.51.100.63")
    });
    // copytruncate: the file is emptied in place and written again.
    std::fs::write(&log, "").unwrap();
    fail(&log, "198.51.100.64", 2);
    expect_count(2, &dir);
    fail(&log, "198.51.100.64", 1);
    expect_count(1, &dir);
    eventually("ban after the truncation", &dir, || {
        banned(&ns, "198.51.100.64")
    });
    drop(d);
    // `pbxfw status` shows the daemon's counters.
    let state_dir = dir.join("statedir");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::copy(dir.join("state.json"), state_dir.join("responsive.json")).unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_pbxfw")])
        .args(["status", "--format", "json"])
        .env("PBXFW_STATE_DIR", &state_dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["responsive"]["counters"]["events"], 12, "{v:#}");
    assert_eq!(v["responsive"]["bans"], 4, "{v:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_lines_on_a_unix_socket_ban() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("sock");
    let sock = dir.join("events.sock");
    let _d = daemon(&ns, &dir, &["--events-socket", sock.to_str().unwrap()]);
    eventually("the socket listens", &dir, || sock.exists());
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    // One malformed line is reported and skipped; the next one still counts.
    writeln!(s, "{{\"event\":\"nonsense\"}}").unwrap();
    writeln!(
        s,
        "{{\"event\":\"auth_failed\",\"source\":\"192.0.2.77\",\"reason\":\"wrong_password\",\"user_agent\":\"friendly-scanner\"}}"
    )
    .unwrap();
    eventually("ban from the socket", &dir, || banned(&ns, "192.0.2.77"));
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(
        log.contains("event=refused") && log.contains("JSON event"),
        "{log}"
    );
    // Created 0600 whatever the umask: only root may write events.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The table deleted and loaded again (`nft delete table`, `pbxfw apply`): the same ruleset,
/// but empty sets. The daemon notices at its next tick and puts its bans back.
#[test]
fn a_table_created_anew_gets_its_bans_back() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("reseed");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let _d = daemon(&ns, &dir, &["--events", events.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(
        &events,
        "{\"event\":\"auth_failed\",\"source\":\"192.0.2.81\",\"reason\":\"unknown_account\",\"user_agent\":\"sipvicious\"}\n",
    )
    .unwrap();
    eventually("the ban", &dir, || banned(&ns, "192.0.2.81"));
    assert!(ns
        .exec(&["nft", "delete", "table", "inet", "pbxfw"])
        .status
        .success());
    let out = ns.exec(&[
        env!("CARGO_BIN_EXE_pbxfw"),
        "apply",
        dir.join("pbxfw.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(
        !banned(&ns, "192.0.2.81"),
        "the new table kept the ban by itself?"
    );
    eventually("the ban put back", &dir, || banned(&ns, "192.0.2.81"));
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(log.contains("event=reseed"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refused AMI login is an error the daemon logs, and it tries again.
#[test]
fn a_refused_ami_login_is_logged_and_retried() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("amilogin");
    let listener = in_netns(&ns, || TcpListener::bind("127.0.0.1:5038").unwrap());
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.write_all(b"Asterisk Call Manager/5.0.1\r\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let _ = s.write_all(
                b"Response: Error\r\nActionID: pbxfw-login\r\nMessage: Authentication failed\r\n\r\n",
            );
            let _ = tx.send(());
        }
    });
    let _d = daemon(
        &ns,
        &dir,
        &[
            "--ami",
            "127.0.0.1:5038",
            "--ami-user",
            "pbxfw",
            "--ami-secret",
            "wrong",
        ],
    );
    // Two attempts, a second apart.
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    eventually("the refusal logged", &dir, || {
        std::fs::read_to_string(dir.join("daemon.log"))
            .unwrap_or_default()
            .contains("login refused: Authentication failed")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Started by systemd as `Type=notify`, the daemon says it is ready once its state is back in
/// the kernel, and not before.
#[test]
fn the_daemon_tells_systemd_it_is_ready() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("notify");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let socket = dir.join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let policy = dir.join("pbxfw.toml");
    let _d = ns.spawn(
        &[
            env!("CARGO_BIN_EXE_pbxfw"),
            "daemon",
            policy.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        &[("NOTIFY_SOCKET", socket.to_str().unwrap())],
        &dir.join("daemon.log"),
    );
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("a notification");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.starts_with("READY=1\nSTATUS=restored"), "{text}");
}

/// `--hook`: every ban (the machine's and one by hand) and every unban reaches the program
/// exactly once, with its reason, and a slow program never delays the bans themselves.
#[test]
fn hooks_hear_of_every_ban_once_and_never_delay_one() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("hooks");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let calls = dir.join("calls.jsonl");
    let hook = dir.join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nsleep 0.5\nline=$(cat)\necho \"$PBXFW_EVENT $PBXFW_PREFIX $line\" >> {}\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _d = daemon(
        &ns,
        &dir,
        &[
            "--events",
            events.to_str().unwrap(),
            "--hook",
            hook.to_str().unwrap(),
        ],
    );
    started(&dir);
    let mut feed = String::new();
    for i in 0..20 {
        feed += &format!(
            "{{\"event\":\"auth_failed\",\"source\":\"198.51.100.{}\",\"reason\":\"unknown_account\",\"user_agent\":\"friendly-scanner\"}}\n",
            i + 10
        );
    }
    let started = Instant::now();
    std::fs::write(&events, feed).unwrap();
    eventually("every scanner banned", &dir, || {
        (10..30).all(|i| banned(&ns, &format!("198.51.100.{i}")))
    });
    // The hooks take 20 × 0.5 s on 4 workers; the bans did not wait for them.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let pbxfw = |args: &[&str]| {
        let out = ns.exec(&[&[env!("CARGO_BIN_EXE_pbxfw")][..], args].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    pbxfw(&["unban", "198.51.100.10"]);
    pbxfw(&[
        "ban",
        "203.0.113.99",
        "--for",
        "1h",
        "--reason",
        "seen on the web server",
        "--policy",
        dir.join("pbxfw.toml").to_str().unwrap(),
    ]);
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let start = Instant::now();
    while lines().len() < 22 {
        assert!(start.elapsed() < Duration::from_secs(20), "{:?}", lines());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let got = lines();
    assert_eq!(got.len(), 22, "{got:#?}");
    for i in 10..30 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|l| l.starts_with(&format!("ban 198.51.100.{i} ")))
            .collect();
        assert_eq!(mine.len(), 1, "198.51.100.{i}: {got:#?}");
        assert!(mine[0].contains("attack tool"), "{}", mine[0]);
    }
    assert!(got.iter().any(|l| l.starts_with("unban 198.51.100.10 ")));
    assert!(got
        .iter()
        .any(|l| l.starts_with("ban 203.0.113.99 ") && l.contains("seen on the web server")));
}

/// `--metrics`: a scrape during a flood of scanners shows the bans by cause and the kernel's
/// ban set; a non-loopback address is refused.
#[test]
fn metrics_show_the_bans_during_a_flood() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("metrics");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let _d = daemon(
        &ns,
        &dir,
        &[
            "--events",
            events.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:9477",
        ],
    );
    started(&dir);
    let mut feed = String::new();
    for i in 0..50 {
        feed += &format!(
            "{{\"event\":\"auth_failed\",\"source\":\"198.51.100.{}\",\"reason\":\"unknown_account\",\"user_agent\":\"friendly-scanner\"}}\n",
            i + 10
        );
    }
    std::fs::write(&events, feed).unwrap();
    let scrape = |ns: &Netns| -> String {
        in_netns(ns, || {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9477").unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            std::io::Read::read_to_string(&mut s, &mut out).unwrap();
            out
        })
    };
    eventually("the bans in the metrics", &dir, || {
        scrape(&ns).contains("pbxfw_bans{origin=\"state_machine\",cause=\"attack_tool\"} 50")
    });
    let text = scrape(&ns);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for want in [
        "pbxfw_set_elements{set=\"ban4\"} 50",
        "pbxfw_events_total{outcome=\"acted_on\"} 50",
        "pbxfw_loaded 1",
        "# TYPE pbxfw_queue_depth gauge",
        "pbxfw_events_by_kind_total{kind=\"auth_failed\"} 50",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // The kernel updates that made the bans were timed.
    let count = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert!(count("pbxfw_kernel_update_seconds_count ") >= 1.0, "{text}");
    assert!(count("pbxfw_kernel_update_seconds_sum ") > 0.0, "{text}");
    assert!(count("pbxfw_kernel_update_max_seconds ") > 0.0, "{text}");
    let out = ns.exec(&[
        env!("CARGO_BIN_EXE_pbxfw"),
        "daemon",
        dir.join("pbxfw.toml").to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--metrics",
        "0.0.0.0:9478",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a loopback address"));
}

/// Run by systemd (standard error is the journal, `$JOURNAL_STREAM` says so), the daemon logs
/// through the journal's native protocol: a ban is NOTICE with its fields.
#[test]
fn under_systemd_a_ban_reaches_the_journal_as_notice() {
    if skipped() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let (ns, dir) = setup("journal");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let socket = dir.join("journal.sock");
    let journal = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let log = dir.join("daemon.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let policy = dir.join("pbxfw.toml");
    let _d = ns.spawn(
        &[
            env!("CARGO_BIN_EXE_pbxfw"),
            "daemon",
            policy.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
        ],
        &[
            ("JOURNAL_STREAM", stream.as_str()),
            ("PBXFW_JOURNAL_SOCKET", socket.to_str().unwrap()),
        ],
        &log,
    );
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        &events,
        "{\"event\":\"auth_failed\",\"source\":\"192.0.2.91\",\"reason\":\"unknown_account\",\"user_agent\":\"friendly-scanner\"}\n",
    )
    .unwrap();
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no ban in the journal"
        );
        let n = journal.recv(&mut buf).expect("a journal record");
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.contains("PBXFW_ACTION") && text.contains("192.0.2.91") {
            assert!(
                text.contains("PRIORITY\n\u{1}\0\0\0\0\0\0\0\x35"),
                "{text:?}"
            );
            assert!(text.contains("SYSLOG_IDENTIFIER"), "{text:?}");
            break;
        }
    }
    // Nothing of it went to standard error.
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains("action=ban"));
}

/// The units' sandbox, where systemd is not PID 1 to apply it (docs/install.md, "Without
/// systemd"): the daemon runs with only CAP_NET_ADMIN, CAP_NET_RAW and CAP_CHOWN in its
/// bounding set, no new privileges, and a read-only file system but for its state, run and
/// test directories (`unshare --mount`, `setpriv`), and still bans and serves its control
/// socket with its group.
#[test]
fn the_daemon_works_inside_the_units_sandbox() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("sandbox");
    let events = dir.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let policy = dir.join("pbxfw.toml");
    let state = dir.join("state.json");
    let writable = [dir.clone(), ns.host_dir.clone()];
    std::fs::create_dir_all(&ns.host_dir).unwrap();
    let binds: String = writable
        .iter()
        .map(|p| format!("mount --bind {0} {0} && ", p.display()))
        .collect();
    let script = format!(
        "{binds}mount -o remount,bind,ro / && \
         if touch /usr/pbxfw-sandbox-probe 2>/dev/null; then echo 'the root is writable' >&2; exit 9; fi && \
         exec setpriv --no-new-privs --bounding-set=-all,+net_admin,+net_raw,+chown {bin} daemon {policy} \
         --events {events} --state {state} --tick 1 --control-group 64401",
        bin = env!("CARGO_BIN_EXE_pbxfw"),
        policy = policy.display(),
        events = events.display(),
        state = state.display(),
    );
    let _d = ns.spawn(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        &[],
        &dir.join("daemon.log"),
    );
    eventually("the daemon started in the sandbox", &dir, || {
        // Up, and following its events file (a line written before the follower
        // opened it would be skipped: it starts at the end).
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        log.contains("event=start") && log.contains("event=source")
    });
    std::fs::write(
        &events,
        "{\"event\":\"auth_failed\",\"source\":\"192.0.2.95\",\"reason\":\"unknown_account\",\"user_agent\":\"friendly-scanner\"}\n",
    )
    .unwrap();
    eventually("a ban from inside the sandbox", &dir, || {
        banned(&ns, "192.0.2.95")
    });
    eventually("its state written", &dir, || state.exists());
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(!log.contains("error="), "{log}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let socket = std::fs::metadata(ns.host_dir.join("run").join("control.sock")).unwrap();
    assert_eq!(
        (socket.permissions().mode() & 0o777, socket.gid()),
        (0o660, 64401),
        "{log}"
    );
}

/// A known device with a wrong password (docs/responsive.md, "Known devices"): announced in
/// the log, listed by `pbxfw status`, and never banned for it.
#[test]
fn a_known_device_with_a_wrong_password_is_shown_in_status() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("knowndev");
    let sock = dir.join("events.sock");
    let policy = dir.join("pbxfw.toml");
    let _d = ns.spawn(
        &[
            env!("CARGO_BIN_EXE_pbxfw"),
            "daemon",
            policy.to_str().unwrap(),
            "--tick",
            "1",
            "--events-socket",
            sock.to_str().unwrap(),
        ],
        &[],
        &dir.join("daemon.log"),
    );
    eventually("the socket listens", &dir, || sock.exists());
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    writeln!(
        s,
        "{{\"event\":\"registered\",\"source\":\"198.51.100.50\",\"account\":\"300\",\"expires\":60}}"
    )
    .unwrap();
    for _ in 0..45 {
        writeln!(
            s,
            "{{\"event\":\"auth_failed\",\"source\":\"198.51.100.50\",\"account\":\"300\",\"reason\":\"wrong_password\"}}"
        )
        .unwrap();
    }
    eventually("status lists the device", &dir, || {
        let out = ns.exec(&[env!("CARGO_BIN_EXE_pbxfw"), "status"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("account 300 at 198.51.100.50 has the wrong password since")
    });
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(log.contains("has the wrong password"), "{log}");
    assert!(!banned(&ns, "198.51.100.50"));
    let _ = std::fs::remove_dir_all(&dir);
}
