//! The control socket (docs/control-socket.md) with a real daemon in a namespace, real users
//! (`setpriv` gives each client its uid and groups) and real packets:
//! - roles: a member of the read group looks and is refused every change, a member of the
//!   admin group bans and unbans (the next packet is dropped, then passes), anyone else is
//!   refused at connect; every change is logged with the caller's uid;
//! - hostile clients: malformed, oversized, slow (slowloris) and too many connections, while
//!   the daemon keeps acting on events and answering the others;
//! - a PHP page under a real php-fpm pool (an unprivileged user in the groups, reached with
//!   `cgi-fcgi`) applies a policy with `PbxfwClient`, reads status and bans, unbans an address
//!   (a real packet then passes), and is refused an apply that would cut off its own web client.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::{skipped, Killed, Netns};
use pbxfw_testkit::probe::{SetStore, Topology};
use pbxfw_testkit::text;

/// Groups and users that exist nowhere but in these processes' credentials.
const READ_GID: u32 = 64_101;
const ADMIN_GID: u32 = 64_102;
const VPN_GID: u32 = 64_103;
const READER: u32 = 64_110;
const ADMIN: u32 = 64_111;
const OUTSIDER: u32 = 64_112;

const POLICY: &str = "[interfaces]\neth0 = \"internet\"\n\
[services.https]\nzones = [\"internet\"]\n\
[[pbx.trunks]]\nname = \"provider\"\nhost = \"203.0.113.200\"\nprotocol = \"pjsip\"\n";

/// The same without the web interface open to the internet: it would cut off a web client
/// there.
const POLICY_NO_WEB: &str = "[interfaces]\neth0 = \"internet\"\n\
[[pbx.trunks]]\nname = \"provider\"\nhost = \"203.0.113.200\"\nprotocol = \"pjsip\"\n";

const WEB_CLIENT: &str = "198.51.100.7";

struct Setup {
    t: Topology,
    dir: tempfile::TempDir,
    policy: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    events: PathBuf,
    lock: PathBuf,
    _daemon: Killed,
}

fn setup(tag: &str) -> Setup {
    setup_with(tag, POLICY)
}

fn setup_with(tag: &str, policy_text: &str) -> Setup {
    setup_args(tag, policy_text, &[])
}

/// The same with more arguments for the daemon.
fn setup_args(tag: &str, policy_text: &str, daemon_args: &[&str]) -> Setup {
    let mut t = Topology::new(tag, &["eth0".to_string()]);
    t.sets = SetStore::Nft;
    for src in ["203.0.113.66", "203.0.113.77", WEB_CLIENT] {
        t.add_source("eth0", src.parse().unwrap());
    }
    t.watch("udp dport 5060");
    let dir = tempfile::tempdir().unwrap();
    // The pool's user must reach the PHP files and the socket's directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let policy = dir.path().join("pbxfw.toml");
    std::fs::write(&policy, policy_text).unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let log = dir.path().join("daemon.log");
    let socket = t.pbx.host_dir.join("run").join("control.sock");
    let lock = dir.path().join("lock");
    let ns = &t.pbx;
    let applied = root(ns, &["apply", policy.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    let mut argv = vec![env!("CARGO_BIN_EXE_pbxfw"), "daemon"];
    argv.extend_from_slice(daemon_args);
    let daemon = ns.spawn(
        &[
            &argv[..],
            &[
                "--policy",
                policy.to_str().unwrap(),
                "--events",
                events.to_str().unwrap(),
                "--tick",
                "1",
                "--control-group",
                &READ_GID.to_string(),
                "--control-admin-group",
                &ADMIN_GID.to_string(),
                "--control-vpn-group",
                &VPN_GID.to_string(),
            ],
        ]
        .concat(),
        &[("PBXFW_LOCK_FILE", lock.to_str().unwrap())],
        &log,
    );
    eventually("the daemon serves its control socket", &log, || {
        // Up, and following its events file (a line written before the follower
        // opened it would be skipped: it starts at the end).
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        log.contains("event=start") && log.contains("event=source") && socket.exists()
    });
    Setup {
        t,
        dir,
        policy,
        socket,
        log,
        events,
        lock,
        _daemon: daemon,
    }
}

fn root(ns: &Netns, args: &[&str]) -> Output {
    ns.command(env!("CARGO_BIN_EXE_pbxfw"))
        .args(args)
        .output()
        .unwrap()
}

/// `argv` run as `uid` with primary group `gid` and `groups`, in the namespace.
fn as_user(ns: &Netns, (uid, gid, groups): (u32, u32, &[u32]), argv: &[&str]) -> Output {
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "setpriv"])
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            groups,
            "--".into(),
        ])
        .args(argv)
        .envs(ns.host_env())
        .env_remove("PBXFW_POLICY")
        .env_remove("SSH_CONNECTION")
        .output()
        .unwrap()
}

fn cli(ns: &Netns, who: (u32, u32, &[u32]), args: &[&str]) -> Output {
    let mut argv = vec![env!("CARGO_BIN_EXE_pbxfw")];
    argv.extend_from_slice(args);
    as_user(ns, who, &argv)
}

const READ: (u32, u32, &[u32]) = (READER, READ_GID, &[]);
const WRITE: (u32, u32, &[u32]) = (ADMIN, READ_GID, &[ADMIN_GID]);
const NOBODY: (u32, u32, &[u32]) = (OUTSIDER, OUTSIDER, &[]);

fn eventually(what: &str, log: &Path, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: not within 15 s\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether one SIP packet from `src` gets through pbxfw to udp/5060.
fn passes(t: &Topology, src: &str) -> bool {
    let before = t.watched();
    t.send_udp("eth0", src.parse().unwrap(), 5062, 5060, 1, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(100));
    t.watched() > before
}

#[test]
fn roles_come_from_the_kernel_and_every_change_is_logged() {
    if skipped() {
        return;
    }
    let s = setup("ctlroles");
    let ns = &s.t.pbx;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&s.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, READ_GID));

    // The read role looks, through the socket, and says so.
    let out = cli(ns, READ, &["status", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("asking the daemon through"),
        "{}",
        text(&out)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["loaded"], true);
    let out = cli(ns, READ, &["bans"]);
    assert!(out.status.success(), "{}", text(&out));
    // … and is refused every change, which changes nothing.
    for args in [
        &["ban", "203.0.113.66", "--for", "1h"][..],
        &["unban", "203.0.113.66"],
        &["disable"],
        &["blacklist", "add", "203.0.113.77"],
        &["trust", "203.0.113.77"],
        &["zone", "add", "local", "203.0.113.77"],
        &["apply", s.policy.to_str().unwrap()],
    ] {
        let out = cli(ns, READ, args);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("denied:"), "{}", text(&out));
    }
    assert!(passes(&s.t, "203.0.113.66"));

    // The admin role bans (a real packet is dropped) and lifts it (the next one passes).
    let out = cli(
        ns,
        WRITE,
        &[
            "ban",
            "203.0.113.66",
            "--for",
            "1h",
            "--reason",
            "from the web",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!passes(&s.t, "203.0.113.66"));
    let bans = root(ns, &["bans", "--format", "json"]);
    let bans: serde_json::Value = serde_json::from_slice(&bans.stdout).unwrap();
    assert_eq!(bans["bans"][0]["reason"], "from the web");
    assert!(
        bans["bans"][0]["by"]
            .as_str()
            .unwrap()
            .contains(&format!("uid {ADMIN} via the control socket")),
        "{bans}"
    );
    let out = cli(ns, WRITE, &["unban", "203.0.113.66"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(passes(&s.t, "203.0.113.66"));
    // What the policy protects is never banned, through the socket as from root.
    let out = cli(ns, WRITE, &["ban", "203.0.113.200", "--for", "1h"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("is never banned"), "{}", text(&out));

    // Zone edits go to the daemon's policy file, and the kernel follows.
    let out = cli(ns, WRITE, &["zone", "add", "internal", "203.0.113.77"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("added to the local zone"),
        "{}",
        text(&out)
    );
    assert!(std::fs::read_to_string(&s.policy)
        .unwrap()
        .contains("203.0.113.77"));
    let out = cli(ns, WRITE, &["zone", "del", "local", "203.0.113.77"]);
    assert!(out.status.success(), "{}", text(&out));

    // Anyone else is refused at connect.
    let out = cli(ns, NOBODY, &["status"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));

    let log = std::fs::read_to_string(&s.log).unwrap();
    for needle in [
        format!("event=control method=ban uid={ADMIN} gid={READ_GID}"),
        format!("event=control method=unban uid={ADMIN}"),
        format!("event=refused control=unban uid={READER}"),
    ] {
        assert!(log.contains(&needle), "{needle}\n{log}");
    }
}

/// One request on a fresh root connection; the answer.
fn ask(socket: &Path, line: &str) -> serde_json::Value {
    let mut c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    writeln!(c, "{line}").unwrap();
    let mut answer = String::new();
    BufReader::new(c).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[test]
fn hostile_clients_neither_stall_the_daemon_nor_other_clients() {
    if skipped() {
        return;
    }
    let s = setup("ctlhostile");
    let status = r#"{"v":1,"id":"s","method":"status"}"#;

    // Malformed requests get a usage error each, and the connection stays usable.
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for bad in [
        "not json",
        r#"{"v":1,"id":1,"method":"reboot"}"#,
        r#"{"v":1,"id":2,"method":"unban","params":{"prefixes":"x"}}"#,
        r#"{"v":9,"id":3,"method":"status"}"#,
        "\u{1b}[31m{}",
    ] {
        writeln!(c, "{bad}").unwrap();
        let mut answer = String::new();
        r.read_line(&mut answer).unwrap();
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["ok"], false, "{bad}: {v}");
        assert_eq!(v["error"]["kind"], "usage", "{bad}: {v}");
        assert_eq!(v["error"]["code"], 5, "{bad}: {v}");
    }
    writeln!(c, "{status}").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    assert!(answer.contains(r#""ok":true"#), "{answer}");

    drop((c, r));

    // Too many connections: the ones over the bound are told the daemon is busy, and served
    // again once the others go.
    let mut held = Vec::new();
    let mut busy = None;
    for _ in 0..40 {
        let mut c = UnixStream::connect(&s.socket).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 512];
        match c.read(&mut buf) {
            Ok(n) if n > 0 => {
                busy = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
            _ => held.push(c),
        }
    }
    let busy = busy.expect("a bound on connections");
    assert!(busy.contains("busy"), "{busy}");
    assert_eq!(held.len(), 32, "connections held before the bound");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ask(&s.socket, status)["ok"], true);

    // Slow clients: a request that never ends holds its own connection only.
    let mut slow: Vec<UnixStream> = (0..6)
        .map(|_| {
            let mut c = UnixStream::connect(&s.socket).unwrap();
            c.write_all(br#"{"v":1,"id":1,"meth"#).unwrap();
            c
        })
        .collect();
    // An oversized request is cut off at the bound, not read into memory.
    let big = std::thread::spawn({
        let socket = s.socket.clone();
        move || {
            let mut c = UnixStream::connect(&socket).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..20 {
                if c.write_all(&chunk).is_err() {
                    break;
                }
            }
            let mut answer = String::new();
            let _ = BufReader::new(c).read_line(&mut answer);
            answer
        }
    });
    // Meanwhile the others are answered, and events are acted on. Each answer comes well
    // inside the time a request may take (`REQUEST_TIME`, 10 s), which is what waiting behind
    // one of the slow clients would cost; a bound on each answer, not on the 20 together,
    // since a loaded CI machine stretches them all.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let start = Instant::now();
        let v = ask(&s.socket, status);
        assert_eq!(v["ok"], true, "{v}");
        slowest = slowest.max(start.elapsed());
    }
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&s.events)
            .unwrap();
        for _ in 0..3 {
            writeln!(
                f,
                r#"{{"event":"auth_failed","source":"203.0.113.77","reason":"unknown_account"}}"#
            )
            .unwrap();
        }
    }
    eventually("the daemon bans the scanner", &s.log, || {
        std::fs::read_to_string(&s.log)
            .unwrap_or_default()
            .contains("action=ban source=203.0.113.77")
    });
    assert!(!passes(&s.t, "203.0.113.77"));
    let answer = big.join().unwrap();
    assert!(answer.contains("longer than"), "{answer}");

    // The slow ones are cut off when their time is up, with why.
    let mut answer = String::new();
    slow[0]
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    BufReader::new(slow.remove(0))
        .read_line(&mut answer)
        .unwrap();
    assert!(answer.contains("did not arrive within"), "{answer}");
}

/// A php-fpm pool as `www-data` (uid 33) whose groups are `groups`, listening in `dir`;
/// returns the guard and its socket.
fn php_fpm(dir: &Path, gid: u32, groups: &[u32], env: &[(&str, &str)]) -> (Killed, PathBuf) {
    let fpm = std::fs::read_dir("/usr/sbin")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("php-fpm"))
        })
        .expect("php-fpm is installed (scripts/test installs it)");
    let run = dir.join("fpm");
    std::fs::create_dir_all(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(33), Some(gid)).unwrap();
    let listen = run.join("fpm.sock");
    let conf = dir.join("fpm.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nerror_log = {run}/error.log\npid = {run}/fpm.pid\ndaemonize = no\n\
             [pbx]\nlisten = {listen}\npm = static\npm.max_children = 2\nclear_env = no\n\
             catch_workers_output = yes\n",
            run = run.display(),
            listen = listen.display()
        ),
    )
    .unwrap();
    let groups = groups
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let child = Command::new("setpriv")
        .args([
            "--reuid=33".to_string(),
            format!("--regid={gid}"),
            format!("--groups={groups}"),
            "--".into(),
        ])
        .arg(&fpm)
        .args(["-n", "-F", "-y"])
        .arg(&conf)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = Killed(child);
    let start = Instant::now();
    while !listen.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "php-fpm did not start: {}",
            std::fs::read_to_string(run.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, listen)
}

/// The PHP page a module would have: one step per request, the answer as JSON.
const PAGE: &str = r#"<?php
require getenv('PBXFW_PHP') ?: $_SERVER['PBXFW_PHP'];
parse_str($_SERVER['QUERY_STRING'] ?? ($argv[1] ?? ''), $q);
$socket = getenv('PBXFW_CONTROL_SOCKET');
$client = getenv('WEB_CLIENT') . ':443';
header('Content-Type: application/json');
try {
    $fw = new PbxfwClient($socket, 10.0);
    $result = match ($q['step']) {
        'version' => $fw->version(),
        'apply' => $fw->applyPolicy(file_get_contents($q['policy']), '', ['client' => $client, 'save' => true]),
        'status' => $fw->status(),
        'bans' => $fw->bans(),
        'ban' => $fw->ban(['prefix' => $q['prefix'], 'seconds' => 3600, 'reason' => 'web', 'client' => $client]),
        'unban' => $fw->unban([$q['prefix']]),
        'disable' => $fw->disable(),
        'check' => $fw->check("[interfaces]\neth0 = 7\n"),
    };
    echo json_encode(['ok' => true, 'result' => $result]);
} catch (PbxfwException $e) {
    echo json_encode(['ok' => false, 'code' => $e->getCode(), 'message' => $e->getMessage(), 'diagnostics' => $e->diagnostics]);
}
"#;

fn php_file() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pbxfw-capi/php/Pbxfw.php")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// One request to the pool through FastCGI (`cgi-fcgi`, as a web server would).
fn fcgi(listen: &Path, page: &Path, query: &str) -> serde_json::Value {
    let out = Command::new("cgi-fcgi")
        .args(["-bind", "-connect"])
        .arg(listen)
        .env_clear()
        .env("SCRIPT_FILENAME", page)
        .env("REQUEST_METHOD", "GET")
        .env("QUERY_STRING", query)
        .env("PBXFW_PHP", php_file())
        .output()
        .expect("cgi-fcgi is installed (libfcgi-bin; scripts/test installs it)");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = body.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The same page run by php-cli as another user.
fn php_cli(
    ns: &Netns,
    who: (u32, u32, &[u32]),
    page: &Path,
    query: &str,
    socket: &Path,
) -> serde_json::Value {
    let out = as_user(
        ns,
        who,
        &[
            "env",
            &format!("PBXFW_PHP={}", php_file()),
            &format!("PBXFW_CONTROL_SOCKET={}", socket.display()),
            &format!("WEB_CLIENT={WEB_CLIENT}"),
            "php",
            "-n",
            page.to_str().unwrap(),
            query,
        ],
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

#[test]
fn a_php_module_under_php_fpm_manages_the_firewall_without_root() {
    if skipped() {
        return;
    }
    let s = setup("ctlphp");
    let ns = &s.t.pbx;
    let page = s.dir.path().join("firewall.php");
    std::fs::write(&page, PAGE).unwrap();
    let policy_ok = s.dir.path().join("web.toml");
    std::fs::write(
        &policy_ok,
        format!("{POLICY}[blacklist]\nentries = [\"192.0.2.66\"]\n"),
    )
    .unwrap();
    let policy_cut = s.dir.path().join("cut.toml");
    std::fs::write(&policy_cut, POLICY_NO_WEB).unwrap();
    for f in [&page, &policy_ok, &policy_cut] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    // The pool's environment, as `env[...]` in a pool file would set it.
    let (_fpm, listen) = php_fpm(
        s.dir.path(),
        READ_GID,
        &[ADMIN_GID],
        &[
            ("PBXFW_CONTROL_SOCKET", s.socket.to_str().unwrap()),
            ("WEB_CLIENT", WEB_CLIENT),
        ],
    );

    let v = fcgi(&listen, &page, "step=version");
    assert_eq!(v["ok"], true, "{v}");

    // An apply through the socket, checked for the web client's own access, saved as the
    // daemon's policy.
    let q = format!("step=apply&policy={}", policy_ok.display());
    let v = fcgi(&listen, &page, &q);
    assert_eq!(v["ok"], true, "{v}");
    let fp = v["result"]["fingerprint"].as_str().unwrap().to_string();
    assert!(std::fs::read_to_string(&s.policy)
        .unwrap()
        .contains("192.0.2.66"));
    let v = fcgi(&listen, &page, "step=status");
    assert_eq!(v["result"]["fingerprint"], fp.as_str(), "{v}");

    // Ban, see it, unban: the next real packet passes.
    let v = fcgi(&listen, &page, "step=ban&prefix=203.0.113.66");
    assert_eq!(v["ok"], true, "{v}");
    assert!(!passes(&s.t, "203.0.113.66"));
    let v = fcgi(&listen, &page, "step=bans");
    assert_eq!(v["result"]["bans"][0]["prefix"], "203.0.113.66", "{v}");
    let v = fcgi(&listen, &page, "step=unban&prefix=203.0.113.66");
    assert_eq!(v["ok"], true, "{v}");
    assert!(passes(&s.t, "203.0.113.66"));

    // A policy that would cut off the web client itself is refused; nothing changes.
    let q = format!("step=apply&policy={}", policy_cut.display());
    let v = fcgi(&listen, &page, &q);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["code"], 11, "{v}");
    assert!(v["message"].as_str().unwrap().contains(WEB_CLIENT), "{v}");
    let st = root(ns, &["status", "--format", "json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["fingerprint"], fp.as_str());
    // An invalid policy's diagnostics reach PHP with their paths.
    let v = fcgi(&listen, &page, "step=check");
    assert_eq!(v["result"]["ok"], false, "{v}");
    assert_eq!(
        v["result"]["diagnostics"][0]["path"], "interfaces.eth0",
        "{v}"
    );

    // A member of the read group only: refused every change (DENIED), answered looks.
    let v = php_cli(ns, READ, &page, "step=unban&prefix=203.0.113.66", &s.socket);
    assert_eq!(
        (v["ok"].clone(), v["code"].clone()),
        (false.into(), 13.into()),
        "{v}"
    );
    let v = php_cli(ns, READ, &page, "step=bans", &s.socket);
    assert_eq!(v["ok"], true, "{v}");
    // Outside the groups: refused at connect.
    let v = php_cli(ns, NOBODY, &page, "step=status", &s.socket);
    assert_eq!(
        (v["ok"].clone(), v["code"].clone()),
        (false.into(), 13.into()),
        "{v}"
    );
    // Disable under the lock file is refused even to the admin role.
    std::fs::write(&s.lock, "").unwrap();
    let v = fcgi(&listen, &page, "step=disable");
    assert_eq!(
        (v["ok"].clone(), v["code"].clone()),
        (false.into(), 10.into()),
        "{v}"
    );
    assert!(passes(&s.t, "203.0.113.66"));
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("event=control method=apply uid=33"), "{log}");
}

/// `apply` with `save` and `confirm` through the socket: the policy file is written only when
/// the apply is confirmed (here by root's command line), never when it is rolled back.
#[test]
fn a_saved_apply_reaches_the_policy_file_only_when_confirmed() {
    if skipped() {
        return;
    }
    let s = setup("ctlsave");
    let ns = &s.t.pbx;
    let with_blacklist = |ip: &str| format!("{POLICY}[blacklist]\nentries = [\"{ip}\"]\n");
    let apply = |text: &str| {
        let line = serde_json::json!({
            "v": 1, "id": 1, "method": "apply",
            "params": {"policy": text, "confirm": 120, "save": true, "client": format!("{WEB_CLIENT}:443")},
        });
        ask(&s.socket, &line.to_string())
    };
    // Rolled back: the file keeps the policy it had.
    let v = apply(&with_blacklist("192.0.2.71"));
    assert_eq!(v["ok"], true, "{v}");
    assert!(!std::fs::read_to_string(&s.policy)
        .unwrap()
        .contains("192.0.2.71"));
    let out = root(ns, &["rollback"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!std::fs::read_to_string(&s.policy)
        .unwrap()
        .contains("192.0.2.71"));
    // Confirmed, by root's command line: the file follows.
    let v = apply(&with_blacklist("192.0.2.72"));
    assert_eq!(v["ok"], true, "{v}");
    assert!(!std::fs::read_to_string(&s.policy)
        .unwrap()
        .contains("192.0.2.72"));
    let out = root(ns, &["confirm"]);
    assert!(out.status.success(), "{}", text(&out));
    let saved = std::fs::read_to_string(&s.policy).unwrap();
    assert!(
        saved.contains("192.0.2.72") && !saved.contains("192.0.2.71"),
        "{saved}"
    );
    // What the kernel holds is what the saved file compiles to (the boot applies the same).
    let status = root(ns, &["status", "--format", "json"]);
    let loaded = serde_json::from_slice::<serde_json::Value>(&status.stdout).unwrap()
        ["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let compiled = root(ns, &["compile", s.policy.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&compiled.stdout).contains(&format!("fingerprint {loaded}")),
        "{}",
        text(&compiled)
    );
}

/// An OpenVPN server's client-connect and client-disconnect scripts, driven directly with the
/// environment OpenVPN sets (`untrusted_ip`, `common_name`), as a user of the VPN role: while
/// connected, the client's public address gets its user's grants and its signalling is not
/// metered; after the disconnect, both are gone. (OpenVPN itself is not run: the scripts are
/// what it calls.)
#[test]
fn a_vpn_client_opens_the_way_for_its_users_phone() {
    if skipped() {
        return;
    }
    let policy = format!(
        "{POLICY}[[users]]\nname = \"alice\"\nservices = [\"ssh\"]\nvpn = [\"alice-laptop\"]\n"
    );
    let s = setup_with("ctlvpn", &policy);
    let ns = &s.t.pbx;
    const VPN: (u32, u32, &[u32]) = (64_113, READ_GID, &[VPN_GID]);
    let script = |who, verb: &str, ip: &str, cn: &str| {
        as_user(
            ns,
            who,
            &[
                "env",
                &format!("untrusted_ip={ip}"),
                &format!("common_name={cn}"),
                env!("CARGO_BIN_EXE_pbxfw"),
                "vpn",
                verb,
            ],
        )
    };
    let ssh = |t: &Topology| {
        let out = root(
            &t.pbx,
            &[
                "explain",
                "--live",
                "--in",
                "eth0",
                "--src",
                "203.0.113.66",
                "--proto",
                "tcp",
                "--dport",
                "22",
                "--format",
                "json",
            ],
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["verdict"].clone()
    };
    assert_eq!(ssh(&s.t), "drop");

    let out = script(VPN, "connect", "203.0.113.66", "alice-laptop");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("alice at 203.0.113.66: granted until"),
        "{}",
        text(&out)
    );
    eventually("the endpoint registered", &s.log, || {
        s.t.set_has("registered4", "203.0.113.66")
    });
    // The user's grants, and signalling without the tiers' admission (a phone behind the
    // same NAT registers however much it sends).
    assert_eq!(ssh(&s.t), "accept");
    s.t.watch("ip saddr 203.0.113.66 udp dport 5060");
    s.t.send_udp(
        "eth0",
        "203.0.113.66".parse().unwrap(),
        5062,
        5060,
        100,
        Duration::ZERO,
    );
    assert_eq!(s.t.watched(), 100, "the endpoint's signalling was metered");

    let out = script(VPN, "disconnect", "203.0.113.66", "alice-laptop");
    assert!(out.status.success(), "{}", text(&out));
    eventually("the grant withdrawn", &s.log, || {
        !s.t.set_has("registered4", "203.0.113.66")
    });
    assert_eq!(ssh(&s.t), "drop");

    // An identity no user has, and a caller without the VPN role, change nothing.
    let out = script(VPN, "connect", "203.0.113.77", "mallory");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = script(READ, "connect", "203.0.113.77", "alice-laptop");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(!s.t.set_has("registered4", "203.0.113.77"));
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(
        log.contains("event=control method=vpn_connect uid=64113"),
        "{log}"
    );
}

/// A WireGuard interface in a namespace: the kernel's where it has WireGuard, else BoringTun
/// (a userspace WireGuard, `cargo install boringtun-cli`; scripts/test installs it), which
/// `wg` configures and reads the same way. Its process, if any, ends with the value.
struct WgIface {
    name: String,
    _userspace: Option<Killed>,
}

fn boringtun() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|h| h.join("bin")))
        .map(|d| d.join("boringtun-cli"))
        .find(|p| p.is_file())
}

fn wg_iface(ns: &Netns, name: &str, log: &Path) -> WgIface {
    let kernel = ns
        .exec(&["ip", "link", "add", name, "type", "wireguard"])
        .status
        .success();
    let userspace = (!kernel).then(|| {
        let bin = boringtun().expect(
            "no WireGuard: this kernel has none and boringtun-cli is not installed (scripts/test installs it)",
        );
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        let p = ns.spawn(
            &[
                bin.to_str().unwrap(),
                name,
                "--foreground",
                "--disable-drop-privileges",
                "--threads",
                "1",
            ],
            &[],
            log,
        );
        let sock = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
        eventually("BoringTun's interface", log, || {
            sock.exists() && ns.exec(&["ip", "link", "show", name]).status.success()
        });
        p
    });
    WgIface {
        name: name.to_string(),
        _userspace: userspace,
    }
}

/// A WireGuard peer whose public key a user lists: while its handshake is recent, the public
/// address it comes from (its endpoint, not its tunnel address) has the user's grants and its
/// signalling is not metered; once it goes quiet past the daemon's idle bound, both are gone.
/// Both ends are real WireGuard interfaces in network namespaces.
#[test]
fn a_wireguard_peer_opens_the_way_for_its_users_phone() {
    if skipped() {
        return;
    }
    let key = |args: &[&str], input: &str| {
        let out = Command::new("wg")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(input.as_bytes())?;
                c.wait_with_output()
            })
            .expect("wg (wireguard-tools) runs");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (server_key, client_key) = (key(&["genkey"], ""), key(&["genkey"], ""));
    let client_pub = key(&["pubkey"], &client_key);
    let server_pub = key(&["pubkey"], &server_key);
    let policy = format!(
        "{POLICY}[[custom_services]]\nname = \"wireguard\"\nports = [\"udp/51820\"]\nzones = [\"internet\"]\n\
         [[users]]\nname = \"alice\"\nservices = [\"ssh\"]\nwireguard = [\"{client_pub}\"]\n"
    );
    let s = setup_args(
        "ctlwg",
        &policy,
        &["--wireguard-idle", "6", "--wireguard-poll", "1"],
    );
    let ns = &s.t.pbx;
    const PHONE: &str = "203.0.113.88";
    s.t.add_source("eth0", PHONE.parse().unwrap());
    s.t.prefer_source("eth0", PHONE.parse().unwrap());
    let ssh = |t: &Topology| {
        let out = root(
            &t.pbx,
            &[
                "explain", "--live", "--in", "eth0", "--src", PHONE, "--proto", "tcp", "--dport",
                "22", "--format", "json",
            ],
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["verdict"].clone()
    };
    assert_eq!(ssh(&s.t), "drop");

    let wlog = s.dir.path().join("wg.log");
    let server = wg_iface(ns, "pbxfwt-wgs", &wlog);
    let client_ns = s.t.client("eth0");
    let client = wg_iface(client_ns, "pbxfwt-wgc", &wlog);
    let keyfile = |k: &str, name: &str| {
        let p = s.dir.path().join(name);
        std::fs::write(&p, k).unwrap();
        p.display().to_string()
    };
    let (skf, ckf) = (keyfile(&server_key, "s.key"), keyfile(&client_key, "c.key"));
    ns.run(&[
        "wg",
        "set",
        &server.name,
        "private-key",
        &skf,
        "listen-port",
        "51820",
        "peer",
        &client_pub,
        "allowed-ips",
        "10.99.0.2/32",
    ]);
    ns.run(&["ip", "addr", "add", "10.99.0.1/24", "dev", &server.name]);
    ns.run(&["ip", "link", "set", &server.name, "up"]);
    let endpoint = format!("{}:51820", pbxfw_testkit::probe::DST4);
    client_ns.run(&[
        "wg",
        "set",
        &client.name,
        "private-key",
        &ckf,
        "peer",
        &server_pub,
        "allowed-ips",
        "10.99.0.1/32",
        "endpoint",
        &endpoint,
    ]);
    client_ns.run(&["ip", "addr", "add", "10.99.0.2/24", "dev", &client.name]);
    client_ns.run(&["ip", "link", "set", &client.name, "up"]);
    // Traffic into the tunnel makes the handshake.
    let poke = || {
        client_ns.run(&["bash", "-c", "echo hello > /dev/udp/10.99.0.1/9"]);
    };
    poke();
    eventually("the handshake", &s.log, || {
        let dump = ns.run(&["wg", "show", &server.name, "endpoints"]);
        poke();
        dump.contains(&format!("{PHONE}:"))
    });
    eventually("the endpoint registered", &s.log, || {
        s.t.set_has("registered4", PHONE)
    });
    // The user's grants, and signalling without the tiers' admission.
    assert_eq!(ssh(&s.t), "accept");
    s.t.watch(&format!("ip saddr {PHONE} udp dport 5060"));
    s.t.send_udp(
        "eth0",
        PHONE.parse().unwrap(),
        5062,
        5060,
        100,
        Duration::ZERO,
    );
    assert_eq!(s.t.watched(), 100, "the endpoint's signalling was metered");
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("event=wireguard idle_s=6 poll_s=1"), "{log}");

    // The peer goes quiet (its interface is gone): past the bound, the grant is withdrawn.
    drop(client);
    let _ = client_ns.exec(&["ip", "link", "del", "pbxfwt-wgc"]);
    let quiet = Instant::now();
    eventually("the grant withdrawn", &s.log, || {
        !s.t.set_has("registered4", PHONE)
    });
    let waited = quiet.elapsed();
    assert!(
        waited <= Duration::from_secs(6 + 1 + 2),
        "withdrawn {waited:?} after the peer went quiet"
    );
    assert_eq!(ssh(&s.t), "drop");
    drop(server);
}
