//! Event to kernel ban, through the real `pbxfw daemon` and the kernel of a network namespace
//! (not a test: numbers for BENCHMARKS.md).
//!
//! For each of the daemon's event sources — a JSON-lines file it follows, and its JSON-lines
//! socket — `COUNT` events (default 200), one at a time 20 ms apart, each from a new source
//! with an attack tool's User-Agent (banned at once). The clock starts when the event is
//! written (the `write` returns) and stops when the kernel says the ban is in: `nft monitor`
//! prints each element added to the ban set as the kernel announces it, read by a thread that
//! notes when each line arrives. p50, p99 and the worst, in milliseconds.
//!
//! Run as root, after `cargo build --release -p pbxfw-cli`:
//! `cargo run --release -p pbxfw-benches --bin ban-latency` (env `COUNT`).
//! It creates and removes its own namespace and temporary directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::{Killed, Netns};

fn pbxfw() -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    let p = me.parent().expect("a directory").join("pbxfw");
    assert!(
        p.exists(),
        "{} is missing: cargo build --release -p pbxfw-cli",
        p.display()
    );
    p
}

fn event(src: &str) -> String {
    format!(
        "{{\"event\":\"auth_failed\",\"source\":\"{src}\",\"reason\":\"unknown_account\",\"user_agent\":\"friendly-scanner\"}}\n"
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let count: u32 = std::env::var("COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let ns = Netns::new("banlat");
    let dir = std::env::temp_dir().join(format!("pbxfw-banlat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("pbxfw.toml");
    std::fs::write(&policy, "[interfaces]\neth0 = \"internet\"\n").unwrap();
    let out = ns.exec(&[pbxfw().to_str().unwrap(), "apply", policy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = dir.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let sock = dir.join("events.sock");
    let log = dir.join("daemon.log");
    let _daemon = ns.spawn(
        &[
            pbxfw().to_str().unwrap(),
            "daemon",
            policy.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--events-socket",
            sock.to_str().unwrap(),
            "--state",
            dir.join("state.json").to_str().unwrap(),
            "--no-control",
        ],
        &[],
        &log,
    );
    // The kernel's own announcements of new elements.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut monitor = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "nft", "monitor", "new", "elements",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nft");
    let stdout = monitor.stdout.take().unwrap();
    let _monitor = Killed(monitor);
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                if !line.contains("ban4") {
                    continue;
                }
                for word in line.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
                    if word.starts_with("10.") {
                        seen.lock().unwrap().entry(word.to_string()).or_insert(at);
                    }
                }
            }
        });
    }
    let start = Instant::now();
    while !(sock.exists()
        && std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("event=start"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the monitor and the follower settle.
    std::thread::sleep(Duration::from_millis(500));

    let mut socket = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap();
    for (source, net) in [("file", 1u32), ("socket", 2u32)] {
        let mut written = Vec::new();
        for i in 0..count {
            let src = format!("10.{net}.{}.{}", i / 250, 1 + i % 250);
            let line = event(&src);
            let at = Instant::now();
            match source {
                "file" => file.write_all(line.as_bytes()).unwrap(),
                _ => socket.write_all(line.as_bytes()).unwrap(),
            }
            written.push((src, at));
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs(1));
        let seen = seen.lock().unwrap();
        let mut ms: Vec<f64> = Vec::new();
        let mut missing = 0;
        for (src, at) in &written {
            match seen.get(src) {
                Some(t) => ms.push(t.duration_since(*at).as_secs_f64() * 1000.0),
                None => missing += 1,
            }
        }
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{source}: {} events, {} banned, {missing} missing: p50 {:.2} ms, p99 {:.2} ms, worst {:.2} ms",
            written.len(),
            ms.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
