//! The daemon under a flood of events, through the real `pbxfw daemon` and the kernel of a
//! network namespace (not a test: numbers for BENCHMARKS.md).
//!
//! 1. **Ingest**: a million events that ask for nothing (one wrong password from each of a
//!    million sources, so the machine's table fills and evicts) appended at once to the JSON
//!    file the daemon follows; events per second until its state counts them all, and its
//!    peak memory (VmHWM).
//! 2. **Bans**: 50,000 events that each ban (an attack tool's User-Agent from a new source);
//!    bans per second until the kernel's `ban4` set holds them all, and peak memory.
//! 3. **SIGKILL**: a writer appends such events at a steady rate while the daemon is killed
//!    with SIGKILL at random moments and started again, `KILLS` times (default 100); then every
//!    source written must be banned in the kernel and in the daemon's state: the bans lost are
//!    counted (the target is none).
//!
//! Run as root, after `cargo build --release -p pbxfw-cli`:
//! `cargo run --release -p pbxfw-benches --bin daemon-flood` (env `EVENTS`, `BANS`, `KILLS`).
//! It creates and removes its own namespace and temporary directory.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::Netns;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `pbxfw` binary built beside this one.
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

struct Bed {
    ns: Netns,
    dir: PathBuf,
    events: PathBuf,
    state: PathBuf,
    daemon: Option<Child>,
}

impl Bed {
    fn new(tag: &str) -> Bed {
        let ns = Netns::new(tag);
        let dir = std::env::temp_dir().join(format!("pbxfw-flood-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("pbxfw.toml"),
            "[interfaces]\neth0 = \"internet\"\n",
        )
        .unwrap();
        let out = ns.exec(&[
            pbxfw().to_str().unwrap(),
            "apply",
            dir.join("pbxfw.toml").to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events = dir.join("events.jsonl");
        std::fs::write(&events, "").unwrap();
        let state = dir.join("responsive.json");
        Bed {
            ns,
            dir,
            events,
            state,
            daemon: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .arg(pbxfw())
            .arg("daemon")
            .arg(self.dir.join("pbxfw.toml"))
            .arg("--events")
            .arg(&self.events)
            .arg("--state")
            .arg(&self.state)
            .args(["--tick", "1"])
            .env("PBXFW_STATE_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's pid (`ip netns exec` execs it: the child is the daemon).
    fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("running").id()
    }

    /// Peak resident memory of the daemon, in MiB.
    fn peak_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    /// Events the daemon's state says it acted on.
    fn counted(&self) -> u64 {
        std::fs::read_to_string(&self.state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["data"]["counters"]["events"].as_u64())
            .unwrap_or(0)
    }

    /// The sources the daemon's state bans.
    fn state_bans(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.state).unwrap()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        v["data"]["machine"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s[1]["banned_until"].as_u64().unwrap_or(0) > now)
            .filter_map(|s| s[0].as_str().map(|p| p.trim_end_matches("/32").to_string()))
            .collect()
    }

    /// The elements of the kernel's `ban4` set.
    fn kernel_bans(&self) -> Vec<String> {
        let out = self
            .ns
            .exec(&["nft", "-j", "list", "set", "inet", "pbxfw", "ban4"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["set"]["elem"].as_array())
            .flatten()
            .filter_map(|e| {
                e["elem"]["val"]
                    .as_str()
                    .or_else(|| e.as_str())
                    .map(str::to_string)
            })
            .collect()
    }

    fn append(&self, text: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&self.events)
            .unwrap()
            .write_all(text)
            .unwrap();
    }

    /// Wait until the daemon follows its file (it starts at the end).
    fn ready(&self) {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
            if log.matches("started at the end").count()
                + log.matches("read on").count()
                + log.matches("event=start").count()
                > 0
                && self.state.exists()
                || start.elapsed() > Duration::from_secs(3)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

fn quiet_events(n: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 110);
    for i in 0..n {
        writeln!(
            out,
            "{{\"event\":\"auth_failed\",\"source\":\"{}\",\"reason\":\"wrong_password\",\"account\":\"300\"}}",
            source(i)
        )
        .unwrap();
    }
    out
}

fn ban_event(i: u32) -> String {
    format!(
        "{{\"event\":\"auth_failed\",\"source\":\"{}\",\"reason\":\"unknown_account\",\"user_agent\":\"sipvicious\"}}\n",
        source(i)
    )
}

fn main() {
    let events = env("EVENTS", 1_000_000);
    let bans = env("BANS", 50_000).min(60_000);
    let kills = env("KILLS", 100);

    // 1. Ingest.
    {
        let mut bed = Bed::new("ingest");
        bed.start();
        std::thread::sleep(Duration::from_millis(500));
        bed.ready();
        let data = quiet_events(events);
        let t = Instant::now();
        bed.append(&data);
        while bed.counted() < u64::from(events) {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "ingest did not finish"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "ingest: {events} events in {secs:.3} s = {:.0} events/s (until the state counted them all); peak RSS {:.1} MiB",
            f64::from(events) / secs,
            bed.peak_mib()
        );
    }

    // 2. Bans.
    {
        let mut bed = Bed::new("bans");
        bed.start();
        std::thread::sleep(Duration::from_millis(500));
        bed.ready();
        let data: String = (0..bans).map(ban_event).collect();
        let t = Instant::now();
        bed.append(data.as_bytes());
        loop {
            let n = bed.kernel_bans().len();
            if n >= bans as usize {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "bans did not finish: {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "bans: {bans} in {secs:.3} s = {:.0} bans/s into the kernel's ban4 set; peak RSS {:.1} MiB",
            f64::from(bans) / secs,
            bed.peak_mib()
        );
    }

    // 3. SIGKILL during a flood.
    {
        let mut bed = Bed::new("kill");
        bed.start();
        std::thread::sleep(Duration::from_millis(500));
        bed.ready();
        let written = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (written, stop) = (written.clone(), stop.clone());
            let events = bed.events.clone();
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&events)
                    .unwrap();
                // 2,000 bans a second, in writes of 20.
                while !stop.load(Ordering::Relaxed) {
                    let at = written.load(Ordering::Relaxed);
                    let chunk: String = (at..at + 20).map(ban_event).collect();
                    f.write_all(chunk.as_bytes()).unwrap();
                    written.store(at + 20, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let mut rng = 0x9e37_79b9_u32;
        for _ in 0..kills {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            std::thread::sleep(Duration::from_millis(50 + u64::from(rng % 250)));
            bed.kill();
            bed.start();
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let total = written.load(Ordering::Relaxed);
        let t = Instant::now();
        while bed.counted() < u64::from(total) && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        let kernel: std::collections::HashSet<String> = bed.kernel_bans().into_iter().collect();
        let state: std::collections::HashSet<String> = bed.state_bans().into_iter().collect();
        let lost_kernel = (0..total)
            .filter(|i| !kernel.contains(&source(*i).to_string()))
            .count();
        let lost_state = (0..total)
            .filter(|i| !state.contains(&source(*i).to_string()))
            .count();
        println!(
            "sigkill: {kills} kills during a flood of {total} banning events: {lost_kernel} ban(s) missing from the kernel, {lost_state} from the state; {} events counted",
            bed.counted()
        );
    }
}
