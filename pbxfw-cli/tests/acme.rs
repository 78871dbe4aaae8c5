//! Certificate-renewal windows in the kernel (docs/acme.md), with real TCP connections: an
//! HTTP server on the PBX's port 80 and a client on the internet side, through pbxfw loaded by
//! `apply`, for both backends. While `pbxfw acme open` holds a window, a connection whose
//! first request line is the HTTP-01 challenge's gets its answer, with TCP timestamps on and
//! off (the TCP header's length changes, and with it where the request starts), over IPv4 and
//! IPv6; any other request line is reset. After `acme close`, and after a window whose opener
//! died (nobody closed it), the port is closed again.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::{skipped, Netns};
use pbxfw_testkit::probe::{Topology, DST4, DST6};
use pbxfw_testkit::text;

const POLICY: &str = "[settings]\nacme = true\n\n[interfaces]\neth0 = \"internet\"\n";
const CLIENT4: &str = "203.0.113.9";
const CLIENT6: &str = "2001:db8:9::9";
const TOKEN: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

/// A client: connect to port 80, send one request, say what came back. With a third argument
/// N, the first N bytes go in a segment of their own and the rest 0.2 s later.
const CLIENT: &str = r#"
import socket, sys, time
dst, line = sys.argv[1], sys.argv[2]
split = int(sys.argv[3]) if len(sys.argv) > 3 else 0
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect((dst, 80))
except OSError as e:
    print("no connection", e)
    sys.exit(0)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
request = (line + "\r\nHost: pbx.example.net\r\nConnection: close\r\n\r\n").encode()
try:
    if split:
        s.sendall(request[:split])
        time.sleep(0.2)
        s.sendall(request[split:])
    else:
        s.sendall(request)
except (ConnectionResetError, BrokenPipeError):
    print("reset")
    sys.exit(0)
data = b""
try:
    while True:
        c = s.recv(4096)
        if not c:
            break
        data += c
except (ConnectionResetError, BrokenPipeError):
    print("reset")
    sys.exit(0)
except socket.timeout:
    print("timeout", data[:40])
    sys.exit(0)
head, _, body = data.partition(b"\r\n\r\n")
print(head.split(b"\r\n", 1)[0].decode(), body.decode().strip())
"#;

fn pbxfw(ns: &Netns, args: &[&str]) -> Output {
    ns.command(env!("CARGO_BIN_EXE_pbxfw"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(ns: &Netns, args: &[&str]) -> String {
    let out = pbxfw(ns, args);
    assert!(out.status.success(), "pbxfw {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Bed {
    t: Topology,
    _server: pbxfw_testkit::netns::Killed,
    _dir: tempfile::TempDir,
}

fn bed(tag: &str, backend: &str) -> Bed {
    let t = Topology::new(tag, &["eth0".to_string()]);
    for src in [CLIENT4, CLIENT6] {
        t.add_source("eth0", src.parse().unwrap());
        t.prefer_source("eth0", src.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join(".well-known/acme-challenge")).unwrap();
    std::fs::write(
        www.join(".well-known/acme-challenge").join(TOKEN),
        format!("{TOKEN}.thumbprint"),
    )
    .unwrap();
    std::fs::create_dir_all(www.join("admin")).unwrap();
    std::fs::write(www.join("admin/index.html"), "the admin page").unwrap();
    let server = t.pbx.spawn(
        &[
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            "::",
            "--directory",
            www.to_str().unwrap(),
        ],
        &[],
        &dir.path().join("http.log"),
    );
    let policy = dir.path().join("pbxfw.toml");
    std::fs::write(&policy, POLICY).unwrap();
    ok(
        &t.pbx,
        &["apply", policy.to_str().unwrap(), "--backend", backend],
    );
    // The server answers on the PBX itself.
    let start = Instant::now();
    loop {
        let out = t
            .pbx
            .exec(&["python3", "-c", CLIENT, "127.0.0.1", "GET /admin/ HTTP/1.1"]);
        if String::from_utf8_lossy(&out.stdout).contains("200") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
    Bed {
        t,
        _server: server,
        _dir: dir,
    }
}

/// What a request from the internet side gets.
fn request(t: &Topology, dst: &str, line: &str, timestamps: bool) -> String {
    request_split(t, dst, line, timestamps, 0)
}

/// The same, the first `split` bytes in a segment of their own.
fn request_split(t: &Topology, dst: &str, line: &str, timestamps: bool, split: usize) -> String {
    let c = t.client("eth0");
    c.run(&[
        "sysctl",
        "-qw",
        &format!("net.ipv4.tcp_timestamps={}", u8::from(timestamps)),
    ]);
    let split = split.to_string();
    let out = c.exec(&["python3", "-c", CLIENT, dst, line, &split]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn challenge() -> String {
    format!("GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1")
}

fn windows_admit_challenges_only(backend: &str, tag: &str) {
    let b = bed(tag, backend);
    let t = &b.t;
    let status = |t: &Topology| ok(&t.pbx, &["acme", "status", "--format", "json"]);

    // No window: port 80 is closed to the internet.
    assert!(status(t).contains("\"open\": false"), "{}", status(t));
    let r = request(t, DST4, &challenge(), true);
    assert!(r.starts_with("no connection"), "{r}");

    // A window: the challenge gets its answer, with and without TCP timestamps, on both
    // families; anything else is reset.
    let out = ok(&t.pbx, &["acme", "open", "--for", "60s"]);
    assert!(out.contains("window open on tcp/80"), "{out}");
    assert!(status(t).contains("\"open\": true"), "{}", status(t));
    for timestamps in [true, false] {
        for dst in [DST4, DST6] {
            let r = request(t, dst, &challenge(), timestamps);
            assert_eq!(
                r,
                format!("HTTP/1.0 200 OK {TOKEN}.thumbprint"),
                "challenge to {dst}, timestamps {timestamps}"
            );
            for other in [
                "GET /admin/ HTTP/1.1",
                "POST /.well-known/acme-challenge/x HTTP/1.1",
                "GET /.well-known/acme-challengX/ HTTP/1.1",
            ] {
                let r = request(t, dst, other, timestamps);
                assert_eq!(r, "reset", "{other:?} to {dst}, timestamps {timestamps}");
            }
        }
    }

    // Every data segment must start with the request line: a request whose headers come in
    // a second segment, or whose first segment is a single byte, is reset.
    for split in [challenge().len() + 2, 1] {
        let r = request_split(t, DST4, &challenge(), true, split);
        assert_eq!(r, "reset", "the request split after {split} bytes");
    }

    // Closed: the port is closed again.
    let out = ok(&t.pbx, &["acme", "close"]);
    assert!(out.contains("no window open"), "{out}");
    let r = request(t, DST4, &challenge(), true);
    assert!(r.starts_with("no connection"), "{r}");

    // The opener dies before it closes the window (a certbot hook killed mid-renewal): the
    // window closes by itself at its end.
    let mut hook = Command::new("ip")
        .args(["netns", "exec", &t.pbx.name, "sh", "-c"])
        .arg(format!(
            "{} acme open --for 3s && sleep 60 && {} acme close",
            env!("CARGO_BIN_EXE_pbxfw"),
            env!("CARGO_BIN_EXE_pbxfw")
        ))
        .envs(t.pbx.host_env())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let opened = Instant::now();
    let start = Instant::now();
    while !status(t).contains("\"open\": true") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the hook opened no window"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = request(t, DST4, &challenge(), true);
    assert!(r.contains("200 OK"), "{r}");
    hook.kill().unwrap();
    let _ = hook.wait();
    let left = Duration::from_secs(3).saturating_sub(opened.elapsed());
    std::thread::sleep(left + Duration::from_millis(1500));
    let r = request(t, DST4, &challenge(), true);
    assert!(r.starts_with("no connection"), "{r}");
    assert!(status(t).contains("\"open\": false"), "{}", status(t));
}

#[test]
fn an_acme_window_admits_challenge_requests_only_nft() {
    if skipped() {
        return;
    }
    windows_admit_challenges_only("nft", "acme-nft");
}

#[test]
fn an_acme_window_admits_challenge_requests_only_iptables() {
    if skipped() {
        return;
    }
    windows_admit_challenges_only("iptables", "acme-ipt");
}

/// Without `settings.acme` there is nothing to open: the command says so and changes nothing.
#[test]
fn a_policy_without_acme_has_no_window() {
    if skipped() {
        return;
    }
    let t = Topology::new("acme-off", &["eth0".to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    std::fs::write(&policy, "[interfaces]\neth0 = \"internet\"\n").unwrap();
    ok(&t.pbx, &["apply", policy.to_str().unwrap()]);
    let out = pbxfw(&t.pbx, &["acme", "open"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("settings"), "{}", text(&out));
}
