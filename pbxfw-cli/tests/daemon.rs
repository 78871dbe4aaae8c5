//! `pbxfw daemon` event sources against the kernel of a network namespace: an Asterisk AMI
//! server (login, events, a dropped connection and the reconnect), and an Asterisk log file
//! followed across a rotation.

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

#[test]
fn a_log_file_is_followed_across_rotation() {
    if skipped() {
        return;
    }
    let (ns, dir) = setup("logf");
    let log = dir.join("full");
    std::fs::write(
        &log,
        "[2026-11-20 10:00:00] NOTICE[1] chan_sip.c: old line before start\n",
    )
    .unwrap();
    let _d = daemon(&ns, &dir, &["--log", log.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(800));
    let append = |path: &PathBuf, addr: &str| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for n in 0..3 {
            writeln!(
                f,
                "[2026-11-20 10:15:3{n}] NOTICE[1638] chan_sip.c: Registration from '<sip:10{n}@pbx>' failed for '{addr}:5060' - No matching peer found"
            )
            .unwrap();
        }
    };
    append(&log, "198.51.100.61");
    eventually("ban from the log", &dir, || banned(&ns, "198.51.100.61"));
    // logrotate: the file is moved away and a new one created.
    std::fs::rename(&log, dir.join("full.1")).unwrap();
    std::fs::write(&log, "").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    append(&log, "198.51.100.62");
    eventually("ban from the new file", &dir, || {
        banned(&ns, "198.51.100.62")
    });
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
    assert!(log.contains("bad event line"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
