//! Nobody gets locked out, nothing is lost (docs/safety.md), with the real binary in network
//! namespaces the tests create: anti-lockout, `apply --confirm` with `confirm` and the rollback
//! timer (also when the applying process is killed with SIGKILL), the lock file, Safe Mode with
//! a fake uptime source, and crash consistency under SIGKILL at random points.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::{self as common, Netns};

const A: &str = "[interfaces]\neth0 = \"internet\"\neth1 = \"local\"\n";
const B: &str =
    "[interfaces]\neth0 = \"internet\"\neth1 = \"local\"\n[blacklist]\nentries = [\"192.0.2.66\"]\n";

/// A namespace with `eth0` (198.51.100.0/24) and `eth1` (192.168.1.0/24), and a private state
/// directory, run directory and lock file.
struct Host {
    ns: Netns,
    dir: tempfile::TempDir,
}

impl Host {
    fn new(tag: &str) -> Host {
        let ns = Netns::new(tag);
        for (dev, net) in [("eth0", "198.51.100.1/24"), ("eth1", "192.168.1.1/24")] {
            // A veth pair inside the namespace (no dummy module here).
            let peer = format!("{dev}p");
            ns.run(&[
                "ip", "link", "add", dev, "type", "veth", "peer", "name", &peer,
            ]);
            ns.run(&["ip", "link", "set", &peer, "up"]);
            ns.run(&["ip", "addr", "add", net, "dev", dev]);
            ns.run(&["ip", "link", "set", dev, "up"]);
        }
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("a.toml", A), ("b.toml", B)] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Host { ns, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns.name, env!("CARGO_BIN_EXE_pbxfw")])
            .args(args)
            .env("PBXFW_STATE_DIR", self.path("state"))
            .env("PBXFW_RUN_DIR", self.path("run"))
            .env("PBXFW_LOCK_FILE", self.path("lock"))
            .env("PBXFW_UPTIME_FILE", self.path("uptime"))
            .env("PBXFW_BOOT_ID_FILE", self.path("boot_id"))
            .env_remove("SSH_CONNECTION")
            .env_remove("PBXFW_POLICY");
        c
    }

    fn pbxfw(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.pbxfw(args);
        assert!(
            out.status.success(),
            "pbxfw {args:?}: exit {:?}\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `pbxfw status ARGS`: exit 0 when loaded, 3 when not; both print the status.
    fn status(&self, args: &[&str]) -> String {
        let mut argv = vec!["status"];
        argv.extend_from_slice(args);
        let out = self.pbxfw(&argv);
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "pbxfw status: exit {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn policy(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// The fingerprint the kernel holds, if any.
    fn loaded(&self) -> Option<String> {
        let out = self.status(&["--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["fingerprint"].as_str().map(str::to_string)
    }

    fn fingerprint_of(&self, name: &str) -> String {
        let ir = self.ok(&["compile", "--ir", &self.policy(name)]);
        pbxfw_core::parse_ir(&ir).unwrap().fingerprint()
    }

    fn has_ban(&self, addr: &str) -> bool {
        let out = self
            .ns
            .exec(&["nft", "list", "set", "inet", "pbxfw", "ban4"]);
        String::from_utf8_lossy(&out.stdout).contains(addr)
    }
}

#[test]
fn an_apply_that_would_cut_off_the_admin_is_refused() {
    if common::skipped() {
        return;
    }
    let h = Host::new("lockout");
    // The administrator is logged in over SSH from the internet side.
    let mut c = h.cmd(&["apply", &h.policy("a.toml")]);
    c.env("SSH_CONNECTION", "198.51.100.20 50022 198.51.100.1 22");
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("lock the administrator out"), "{err}");
    assert!(
        err.contains("198.51.100.20") && err.contains("eth0") && err.contains("default"),
        "{err}"
    );
    assert_eq!(h.loaded(), None, "a refused apply loaded something");
    // The same from the LAN is fine; so is an --admin on the LAN.
    let mut c = h.cmd(&["apply", &h.policy("a.toml"), "--admin", "192.168.1.50"]);
    c.env("SSH_CONNECTION", "192.168.1.20 50022 192.168.1.1 22");
    assert!(c.output().unwrap().status.success());
    // An --admin on the internet side is protected too, and --force overrides.
    let out = h.pbxfw(&["apply", &h.policy("b.toml"), "--admin", "198.51.100.7"]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(h.loaded(), Some(h.fingerprint_of("a.toml")));
    h.ok(&[
        "apply",
        &h.policy("b.toml"),
        "--admin",
        "198.51.100.7",
        "--force",
    ]);
    assert_eq!(h.loaded(), Some(h.fingerprint_of("b.toml")));
    // Administrators listed in the policy itself.
    write(
        &h.path("admins.toml"),
        &format!("{A}[settings]\nadmins = [\"198.51.100.8\"]\n"),
    );
    let out = h.pbxfw(&["apply", &h.policy("admins.toml")]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("settings.admins"));
    write(
        &h.path("bad.toml"),
        "[settings]\nadmins = [\"not-an-address\"]\n",
    );
    let out = h.pbxfw(&["check", &h.policy("bad.toml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("settings.admins[0]"));
}

/// Wait until the kernel holds `fp`; returns how long that took.
fn wait_for(h: &Host, fp: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while h.loaded().as_deref() != Some(fp) {
        assert!(
            start.elapsed() < limit,
            "the kernel did not get to {fp} within {limit:?}; rollback log:\n{}",
            std::fs::read_to_string(h.path("state/rollback.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn confirmed_applies_stay_and_unconfirmed_ones_roll_back_with_their_bans() {
    if common::skipped() {
        return;
    }
    let h = Host::new("confirm");
    let (fa, fb) = (h.fingerprint_of("a.toml"), h.fingerprint_of("b.toml"));
    h.ok(&["apply", &h.policy("a.toml")]);
    h.ns.run(&[
        "nft",
        "add",
        "element",
        "inet",
        "pbxfw",
        "ban4",
        "{ 203.0.113.9 timeout 300s }",
    ]);

    // Unconfirmed: rolled back within the deadline plus one second, the ban kept.
    let start = Instant::now();
    let out = h.ok(&["apply", &h.policy("b.toml"), "--confirm", "2"]);
    assert!(out.contains("pbxfw confirm"), "{out}");
    assert_eq!(h.loaded(), Some(fb.clone()));
    assert!(h.status(&[]).contains("waiting for confirmation"));
    wait_for(&h, &fa, Duration::from_secs(4));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_secs(3),
        "rolled back after {took:?}"
    );
    assert!(h.has_ban("203.0.113.9"), "the rollback lost a ban");
    assert!(!h.status(&[]).contains("waiting for confirmation"));

    // Confirmed: stays past the deadline; a second confirm has nothing to confirm.
    h.ok(&["apply", &h.policy("b.toml"), "--confirm", "2"]);
    assert!(h.ok(&["confirm"]).contains(&fb));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(h.loaded(), Some(fb.clone()));
    assert_eq!(h.pbxfw(&["confirm"]).status.code(), Some(2));

    // A rollback on demand; and a second apply --confirm while one is pending is refused.
    h.ok(&["apply", &h.policy("a.toml"), "--confirm", "60"]);
    let out = h.pbxfw(&["apply", &h.policy("b.toml"), "--confirm", "60"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(h.ok(&["rollback"]).contains("rolled back"));
    assert_eq!(h.loaded(), Some(fb.clone()));
    assert_eq!(h.pbxfw(&["rollback"]).status.code(), Some(2));

    // Nothing loaded before: rolling back removes pbxfw.
    h.ok(&["disable"]);
    h.ok(&["apply", &h.policy("a.toml"), "--confirm", "1"]);
    let start = Instant::now();
    while h.loaded().is_some() {
        assert!(start.elapsed() < Duration::from_secs(3), "not removed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_rollback_happens_when_the_applying_process_is_killed() {
    if common::skipped() {
        return;
    }
    let h = Host::new("sigkill");
    let (fa, fb) = (h.fingerprint_of("a.toml"), h.fingerprint_of("b.toml"));
    h.ok(&["apply", &h.policy("a.toml")]);
    let start = Instant::now();
    let mut child = h
        .cmd(&["apply", &h.policy("b.toml"), "--confirm", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the new ruleset is in (or right away, if it is quicker than we are).
    let _ = wait_for(&h, &fb, Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();
    wait_for(&h, &fa, Duration::from_secs(4));
    assert!(
        start.elapsed() <= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn the_lock_file_refuses_disable() {
    if common::skipped() {
        return;
    }
    let h = Host::new("lock");
    h.ok(&["apply", &h.policy("a.toml")]);
    std::fs::write(h.path("lock"), "").unwrap();
    let out = h.pbxfw(&["disable"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock file"));
    assert!(h.loaded().is_some(), "disabled despite the lock file");
    std::fs::remove_file(h.path("lock")).unwrap();
    h.ok(&["disable"]);
    assert_eq!(h.loaded(), None);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn safe_mode_holds_the_rules_after_a_short_boot() {
    if common::skipped() {
        return;
    }
    let h = Host::new("safemode");
    let fa = h.fingerprint_of("a.toml");
    // A first boot, cut short after 40 s (killed, as a power cut would).
    write(&h.path("boot_id"), "boot-1\n");
    write(&h.path("uptime"), "40.00 10.00\n");
    let boot = |h: &Host| {
        Kill(
            h.cmd(&["boot", &h.policy("a.toml"), "--heartbeat", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let first = boot(&h);
    wait_for(&h, &fa, Duration::from_secs(5));
    assert!(!h.path("run/safe-mode").exists());
    drop(first);
    h.ok(&["disable"]);

    // The next boot, 30 s up: Safe Mode holds the rules back and says so, to systemd too
    // (`Type=notify`): a status while held, and ready only once the rules are in.
    write(&h.path("boot_id"), "boot-2\n");
    write(&h.path("uptime"), "30.00 10.00\n");
    let socket = h.path("notify.sock");
    let notified = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    notified
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut second = Kill(
        h.cmd(&["boot", &h.policy("a.toml"), "--heartbeat", "1"])
            .env("NOTIFY_SOCKET", &socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 256];
    let n = notified.recv(&mut buf).unwrap();
    let held = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(held.starts_with("STATUS=Safe Mode"), "{held}");
    let start = Instant::now();
    while !h.path("run/safe-mode").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no Safe Mode marker"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(h.loaded(), None, "rules applied during Safe Mode");
    assert!(h.status(&[]).contains("SAFE MODE"));
    // At 5 minutes of uptime the rules go in and the marker goes away.
    write(&h.path("uptime"), "301.00 10.00\n");
    wait_for(&h, &fa, Duration::from_secs(5));
    let n = notified.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(ready, format!("READY=1\nSTATUS=applied ruleset {fa}"));
    assert!(!h.path("run/safe-mode").exists());
    // Past 10 minutes the boot counts as a good one and `boot` ends.
    write(&h.path("uptime"), "700.00 10.00\n");
    let start = Instant::now();
    while second.0.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(5), "boot did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let history = std::fs::read_to_string(h.path("state/boots.json")).unwrap();
    assert!(history.contains("\"boot-2\",\"lasted\":700"), "{history}");

    // A third boot after a long one: no hold.
    h.ok(&["disable"]);
    write(&h.path("boot_id"), "boot-3\n");
    write(&h.path("uptime"), "20.00 10.00\n");
    let _third = boot(&h);
    wait_for(&h, &fa, Duration::from_secs(5));
}

/// Damaged boot history and pending confirmation never keep the firewall from loading at
/// boot: the policy is loaded, and `status` says what could not be used.
#[test]
fn damaged_boot_state_still_loads_the_policy() {
    if common::skipped() {
        return;
    }
    let h = Host::new("damaged");
    let fa = h.fingerprint_of("a.toml");
    write(&h.path("boot_id"), "boot-1\n");
    write(&h.path("uptime"), "700.00 10.00\n");
    std::fs::create_dir_all(h.path("state")).unwrap();
    write(
        &h.path("state/boots.json"),
        "{\"pbxfw_state\":\"boots\",\"ver",
    );
    write(&h.path("state/pending.json"), "\u{0}garbage");
    let out = h
        .cmd(&["boot", &h.policy("a.toml"), "--heartbeat", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&h, &fa, Duration::from_secs(5));
    let status: serde_json::Value = serde_json::from_str(&h.status(&["--format", "json"])).unwrap();
    let problems = status["state_problems"].to_string();
    assert!(
        problems.contains("boot history") && problems.contains("pending confirmation"),
        "{status:#}"
    );
    assert!(h.status(&[]).contains("STATE PROBLEM"));
    // The damaged confirmation was moved aside: an apply is not refused by it.
    assert!(h.path("state/pending.json.damaged").exists());
    h.ok(&["apply", &h.policy("a.toml")]);
}

#[test]
fn sigkill_at_random_points_leaves_the_old_or_the_new_ruleset_and_readable_state() {
    if common::skipped() {
        return;
    }
    let iterations: usize = std::env::var("PBXFW_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let h = Host::new("crash");
    let prints = [h.fingerprint_of("a.toml"), h.fingerprint_of("b.toml")];
    // A daemon with a steady stream of events, killed and restarted along the way.
    let events = h.path("events.jsonl");
    let mut lines = String::new();
    for i in 0..200 {
        lines.push_str(&format!(
            "{{\"event\":\"auth_failed\",\"source\":\"203.0.113.{}\",\"reason\":\"unknown_account\",\"account\":\"{i}\"}}\n",
            i % 250
        ));
    }
    write(&events, &lines);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    h.ok(&["apply", &h.policy("a.toml")]);
    for i in 0..iterations {
        let name = if i % 2 == 0 { "b.toml" } else { "a.toml" };
        let mut apply = h
            .cmd(&["apply", &h.policy(name)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut daemon = h
            .cmd(&[
                "daemon",
                &h.policy("a.toml"),
                "--events",
                events.to_str().unwrap(),
                "--state",
                h.path("state/responsive.json").to_str().unwrap(),
                "--tick",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rand(60)));
        let _ = apply.kill();
        let _ = apply.wait();
        std::thread::sleep(Duration::from_millis(rand(30)));
        let _ = daemon.kill();
        let _ = daemon.wait();
        let fp = h.loaded();
        assert!(
            fp.as_ref().is_some_and(|f| prints.contains(f)),
            "iteration {i}: the kernel holds {fp:?}, neither old nor new"
        );
        // Every state file reads back.
        let applied: Option<serde_json::Value> =
            pbxfw_host::state::read(&h.path("state/applied.json"), "applied")
                .unwrap_or_else(|e| panic!("iteration {i}: {e}"));
        assert!(applied.is_some());
        if let Ok(text) = std::fs::read_to_string(h.path("state/responsive.json")) {
            pbxfw_core::Machine::restore(&text)
                .unwrap_or_else(|e| panic!("iteration {i}: responsive state: {e}"));
        }
    }
}

#[test]
fn custom_rules_are_checked_then_loaded_into_their_chain() {
    if common::skipped() {
        return;
    }
    use pbxfw_core::{FinalVerdict, Packet, Proto};
    use pbxfw_testkit::probe::Topology;
    let h = Host::new("custom");
    let custom = tempfile::tempdir().unwrap();
    let run = |ns: &str, args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_pbxfw")])
            .args(args)
            .env("PBXFW_STATE_DIR", h.path("state"))
            .env("PBXFW_CUSTOM_DIR", custom.path())
            .env_remove("SSH_CONNECTION")
            .output()
            .unwrap()
    };
    let mut topo = Topology::new("custom-pk", &["eth0".to_string()]);
    let api = Packet::new(
        "eth0",
        "198.51.100.9".parse().unwrap(),
        Proto::Tcp,
        Some(8443),
    );
    let policy = h.policy("a.toml");
    assert!(run(&topo.pbx.name, &["apply", &policy]).status.success());
    assert_eq!(topo.probe(&api), Some(FinalVerdict::Drop));

    // nft: a rule of the administrator's own opens tcp/8443.
    let file = custom.path().join("custom.nft");
    write(
        &file,
        "# the billing API\ntcp dport 8443 accept comment \"billing api\"\n",
    );
    let out = run(&topo.pbx.name, &["apply", &policy]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(topo.probe(&api), Some(FinalVerdict::Accept));

    // A file others could have written is refused, and so is one the kernel refuses; either way
    // the loaded ruleset, custom rules included, stays.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = run(&topo.pbx.name, &["apply", &policy]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("owned by root"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    write(&file, "tcp dport nonsense accept\n");
    let out = run(&topo.pbx.name, &["apply", &policy]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("custom rules were refused"));
    assert_eq!(topo.probe(&api), Some(FinalVerdict::Accept));
    // A file that closes the chain to run commands of its own is refused before the kernel
    // sees it: every line is a rule of the custom chain, or nothing loads.
    let other = topo.pbx.exec_stdin(
        &["nft", "-f", "/dev/stdin"],
        "table inet someone_else {\n chain c {\n type filter hook input priority 10;\n }\n}\n",
    );
    assert!(other.status.success());
    for escape in [
        "tcp dport 8443 accept\n}\n}\nflush ruleset\n",
        "tcp dport 8443 accept; flush ruleset\n",
        "delete table inet someone_else\n",
        "table inet x { chain y { } }\n",
        "tcp dport { 1, 2 accept\n",
    ] {
        write(&file, escape);
        let out = run(&topo.pbx.name, &["apply", &policy]);
        assert_eq!(out.status.code(), Some(5), "{escape}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("custom rules were refused"),
            "{escape}"
        );
        let tables = topo.pbx.exec(&["nft", "list", "tables"]);
        assert!(
            String::from_utf8_lossy(&tables.stdout).contains("someone_else"),
            "{escape}: another table was touched"
        );
        assert_eq!(topo.probe(&api), Some(FinalVerdict::Accept), "{escape}");
    }

    // iptables: rule arguments, `-6 ` for one family; a line naming a chain is refused.
    let ipt = custom.path().join("custom.iptables");
    write(
        &ipt,
        "-p tcp --dport 8443 -j ACCEPT\n-6 -p tcp --dport 8444 -j ACCEPT\n",
    );
    let out = run(&h.ns.name, &["apply", &policy, "--backend", "iptables-nft"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v4 = String::from_utf8_lossy(&h.ns.exec(&["iptables-nft", "-S", "PBXFW_custom"]).stdout)
        .into_owned();
    let v6 = String::from_utf8_lossy(&h.ns.exec(&["ip6tables-nft", "-S", "PBXFW_custom"]).stdout)
        .into_owned();
    assert!(v4.contains("--dport 8443") && !v4.contains("8444"), "{v4}");
    assert!(
        v6.contains("--dport 8443") && v6.contains("--dport 8444"),
        "{v6}"
    );
    write(&ipt, "-A INPUT -j ACCEPT\n");
    let out = run(&h.ns.name, &["apply", &policy, "--backend", "iptables-nft"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rule arguments only"));
}

#[test]
fn a_corrupt_state_file_is_an_error_that_names_the_last_good_copy() {
    // No kernel needed: the daemon refuses to start before it touches one.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("responsive.json");
    let events = dir.path().join("events.jsonl");
    write(&events, "");
    let policy = dir.path().join("pbxfw.toml");
    write(&policy, "");
    let daemon = |state: &Path| {
        Command::new(env!("CARGO_BIN_EXE_pbxfw"))
            .arg("daemon")
            .arg(&policy)
            .arg("--events")
            .arg(&events)
            .arg("--state")
            .arg(state)
            .env("PBXFW_STATE_DIR", dir.path())
            .env_remove("PBXFW_POLICY")
            .stdout(Stdio::null())
            .output()
            .unwrap()
    };
    let good = pbxfw_core::Machine::new(pbxfw_core::MachineConfig::from_policy(
        &pbxfw_core::Policy::from_toml("")
            .unwrap()
            .validate()
            .unwrap(),
    ))
    .snapshot();
    write(&dir.path().join("responsive.json.prev"), &good);
    for bad in ["{\"version\":1,\"conf", "{\"version\":999}"] {
        write(&state, bad);
        let out = daemon(&state);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("the last good copy is"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            bad,
            "the file was reset"
        );
    }
    // The state kept by `apply` and `boot` says the same.
    let applied = dir.path().join("applied.json");
    write(
        &applied,
        "{\"pbxfw_state\":\"applied\",\"version\":7,\"data\":{}}",
    );
    let e = pbxfw_host::state::read::<serde_json::Value>(&applied, "applied").unwrap_err();
    assert!(e.to_string().contains("newer pbxfw"), "{e}");
}
