//! Zero configuration (issue: discovery and hostnames): `pbxfw discover` over the FreePBX tree
//! in `testdata/asterisk` (golden output), the discovered policy in the kernel with real
//! packets, and hostnames kept fresh from a real DNS server (dnsmasq) without reloads.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pbxfw_core::{compile, eval, DynamicState, Policy};
use pbxfw_core::{FinalVerdict, Packet, Proto};
use pbxfw_testkit::dns::dnsmasq;
use pbxfw_testkit::netns::{skipped, Killed, Netns};
use pbxfw_testkit::ok;
use pbxfw_testkit::probe::{observable, Topology};

fn asterisk_dir() -> PathBuf {
    pbxfw_testkit::root()
        .join("testdata/asterisk")
        .canonicalize()
        .unwrap()
}

fn pbxfw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pbxfw"))
        .args(args)
        .env_remove("PBXFW_POLICY")
        .current_dir(pbxfw_testkit::root())
        .output()
        .unwrap()
}

#[test]
fn discover_golden_output() {
    let root = pbxfw_testkit::root();
    for (format, file) in [("toml", "discover.toml"), ("json", "discover.json")] {
        let out = ok(&pbxfw(&[
            "discover",
            "--asterisk-dir",
            "testdata/asterisk",
            "--format",
            format,
        ]));
        pbxfw_testkit::golden(&root.join("testdata/golden").join(file), &out).unwrap();
    }
    // The printed fragment is a policy of its own, with what EXPECTED.md lists.
    let text = ok(&pbxfw(&["discover", "--asterisk-dir", "testdata/asterisk"]));
    let v = Policy::from_toml(&text).unwrap().validate().unwrap();
    let trunks: Vec<String> = v
        .pbx
        .trunks
        .iter()
        .map(|t| format!("{} {}", t.protocol, t.host))
        .collect();
    assert_eq!(trunks.len(), 13, "{trunks:?}");
    for want in [
        "pjsip 203.0.113.10",
        "pjsip 198.51.100.0/28",
        "pjsip 198.51.100.40",
        "pjsip 198.51.100.41",
        "pjsip sip.provider-c.example",
        "pjsip 2001:db8:100::10",
        "chansip sip.provider-d.example",
        "chansip 203.0.113.48/28",
        "chansip 203.0.113.50",
        "chansip 203.0.113.51",
        "chansip 203.0.113.60",
        "iax 192.0.2.80",
        "iax iax.provider-e.example",
    ] {
        assert!(
            trunks.iter().any(|t| t == want),
            "{want} missing: {trunks:?}"
        );
    }
    // Phones, the PBX's own addresses and commented-out peers are not trunks.
    for never in ["chansip 203.0.113.1", "chansip 203.0.113.99", "dynamic"] {
        assert!(!trunks.iter().any(|t| t == never), "{never} in {trunks:?}");
    }
    assert!(!text.contains("old-carrier") && !text.contains("\"1004\""));
    assert_eq!(v.pbx.rtp.unwrap().to_string(), "10000-20000");
    assert_eq!(v.pbx.udptl.unwrap().to_string(), "4000-4999");
    let ports = |s: &str| -> Vec<String> {
        v.services[s]
            .ports
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(ports("pjsip"), ["udp/5060", "tcp/5060", "tcp/5061"]);
    assert_eq!(ports("chansip"), ["udp/5160", "tcp/5160"]);
    assert_eq!(ports("iax"), ["udp/4569"]);
    assert_eq!(ports("webrtc"), ["tcp/8088", "tcp/8089"]);

    // A directory without Asterisk files is an error, not an empty policy.
    let none = pbxfw(&["discover", "--asterisk-dir", "testdata/cases"]);
    assert_eq!(none.status.code(), Some(3));
}

#[test]
fn policy_entries_win_over_discovery_with_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "[pbx]\ndiscover = \"{}\"\nrtp = \"12000-12999\"\n[[pbx.trunks]]\nname = \"provider-a\"\nprotocol = \"pjsip\"\nhost = \"192.0.2.200\"\n",
            asterisk_dir().display()
        ),
    )
    .unwrap();
    let out = pbxfw(&["check", p.to_str().unwrap(), "--format", "json"]);
    let diags: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = diags.to_string();
    assert!(text.contains("\"path\":\"pbx.rtp\""), "{text}");
    assert!(
        text.contains("10000-20000 at rtp_additional.conf:11"),
        "{text}"
    );
    assert!(
        text.contains("pjsip.identify.conf:15 with host 203.0.113.10"),
        "{text}"
    );
    let ir = ok(&pbxfw(&["compile", p.to_str().unwrap(), "--ir"]));
    assert!(ir.contains("12000-12999") && !ir.contains("10000-20000"));
    assert!(ir.contains("192.0.2.200") && !ir.contains("203.0.113.10 "));
    assert!(ir.contains("198.51.100.40"), "discovered trunks are added");

    // A relative path is refused with its path.
    std::fs::write(&p, "[pbx]\ndiscover = \"etc/asterisk\"\n").unwrap();
    let out = pbxfw(&["check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("pbx.discover"), "{all}");
}

/// The discovered policy in the kernel: each trunk is accepted on its own protocol's
/// signalling and refused on another's, as the evaluator says.
#[test]
fn discovered_trunks_in_the_kernel() {
    if skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pbxfw.toml");
    let text = format!(
        "[interfaces]\neth0 = \"internet\"\n[pbx]\ndiscover = \"{}\"\n",
        asterisk_dir().display()
    );
    std::fs::write(&p, &text).unwrap();
    let mut policy = Policy::from_toml(&text).unwrap();
    policy.merge_discovery(&pbxfw_host::asterisk::Dir::new(asterisk_dir()).discover());
    let rs = compile(&policy.validate().unwrap());

    let mut topo = Topology::new("disc", &["eth0".to_string()]);
    let state = dir.path().join("state");
    let env = [("PBXFW_STATE_DIR", state.to_str().unwrap())];
    let out = topo.pbx.exec_env(
        &env,
        &[env!("CARGO_BIN_EXE_pbxfw"), "apply", p.to_str().unwrap()],
    );
    ok(&out);
    // Unknown sources reach SIP only through the responsive tiers (on by default); a trunk of
    // another protocol is kept out of them: an IAX peer cannot send SIP.
    let cases = [
        // (source, port, kernel verdict, deciding policy object)
        (
            "203.0.113.10",
            5060,
            FinalVerdict::Accept,
            "trunk:provider-a",
        ),
        ("203.0.113.10", 4569, FinalVerdict::Drop, "default"), // IAX from a pjsip trunk
        ("203.0.113.10", 5160, FinalVerdict::Drop, "default"), // chan_sip from it
        (
            "192.0.2.80",
            4569,
            FinalVerdict::Accept,
            "trunk:branch-office",
        ),
        ("192.0.2.80", 5060, FinalVerdict::Drop, "default"), // SIP from an IAX trunk
        (
            "203.0.113.50",
            5160,
            FinalVerdict::Accept,
            "trunk:provider-d#2",
        ), // in its permit /28
        ("203.0.113.50", 4569, FinalVerdict::Drop, "default"),
        (
            "2001:db8:100::10",
            5060,
            FinalVerdict::Accept,
            "trunk:provider-f",
        ),
        ("2001:db8:100::10", 4569, FinalVerdict::Drop, "default"),
        (
            "198.51.100.7",
            5060,
            FinalVerdict::Accept,
            "trunk:provider-b",
        ), // inside the /28
        ("198.51.100.77", 5060, FinalVerdict::Accept, "responsive"), // outside: the tiers
        ("198.51.100.77", 4569, FinalVerdict::Drop, "default"),
    ];
    for (src, port, want, by) in cases {
        let addr: IpAddr = src.parse().unwrap();
        let packet = Packet::new("eth0", addr, Proto::Udp, Some(port));
        let expected = eval(&rs, &packet, &DynamicState::default());
        assert_eq!(
            (
                observable(&packet, expected.verdict),
                expected.decided_by.as_str()
            ),
            (want, by),
            "evaluator for {src} udp/{port}"
        );
        let got = topo.probe(&packet).expect("a udp probe runs");
        assert_eq!(got, want, "kernel for {src} udp/{port}");
    }
    // `status` shows what was discovered, with origins.
    let st = ok(&topo
        .pbx
        .exec_env(&env, &[env!("CARGO_BIN_EXE_pbxfw"), "status"]));
    assert!(st.contains("discovered from"), "{st}");
    assert!(
        st.contains("trunk branch-office iax 192.0.2.80 (iax_additional.conf:25)"),
        "{st}"
    );
}

/// A temporary directory with the test's `pbxfw.toml` and the `hosts` file dnsmasq answers
/// from; returns it with the two paths.
fn dns_case(policy: &str, hosts: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (p, h) = (dir.path().join("pbxfw.toml"), dir.path().join("hosts"));
    std::fs::write(&p, policy).unwrap();
    std::fs::write(&h, hosts).unwrap();
    (dir, p, h)
}

fn daemon(ns: &Netns, dir: &Path, args: &[&str]) -> Killed {
    let policy = dir.join("pbxfw.toml");
    let state_dir = dir.join("state");
    let state = state_dir.join("responsive.json");
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
    ns.spawn(
        &argv,
        &[("PBXFW_STATE_DIR", state_dir.to_str().unwrap())],
        &dir.join("daemon.log"),
    )
}

fn set_elements(ns: &Netns, set: &str) -> String {
    let out = ns.exec(&["nft", "list", "set", "inet", "pbxfw", set]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait for `f`, up to `limit`; returns how long it took.
fn within(what: &str, dir: &Path, limit: Duration, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        let dns = std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default();
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{log}\ndnsmasq:\n{dns}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The rule handles of pbxfw's input chain: a reload creates the table anew, with new handles.
fn handles(ns: &Netns) -> String {
    let out = ns.exec(&["nft", "-a", "list", "chain", "inet", "pbxfw", "input"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_ddns_name_moving_changes_the_set_within_its_ttl_without_a_reload() {
    if skipped() {
        return;
    }
    let others = "192.0.2.23 sipb.ddns.test\n198.51.100.66 bad.ddns.test\n";
    let (dir, _, hosts) = dns_case(
        "[interfaces]\neth0 = \"internet\"\n\n[responsive]\nenabled = false\n\n[[pbx.trunks]]\nname = \"home-office\"\nprotocol = \"pjsip\"\nhost = \"peer.ddns.test\"\n\n[blacklist]\nentries = [\"bad.ddns.test\"]\n",
        &format!("192.0.2.21 peer.ddns.test\n2001:db8::21 peer.ddns.test\n{others}"),
    );
    let d = dir.path();

    let mut topo = Topology::new("ddns", &["eth0".to_string()]);
    // The trunk's provider also publishes an SRV record naming a second server.
    let dns = dnsmasq(
        &topo.pbx,
        &hosts,
        &["--srv-host=_sip._udp.peer.ddns.test,sipb.ddns.test,5060"],
    );
    let state = d.join("state");
    ok(&topo.pbx.exec_env(
        &[("PBXFW_STATE_DIR", state.to_str().unwrap())],
        &[
            env!("CARGO_BIN_EXE_pbxfw"),
            "apply",
            d.join("pbxfw.toml").to_str().unwrap(),
        ],
    ));
    let before = handles(&topo.pbx);
    let _daemon = daemon(
        &topo.pbx,
        d,
        &["--dns-server", "127.0.0.1:5353", "--dns-ttl-floor", "1"],
    );
    within(
        "first answers in the sets",
        d,
        Duration::from_secs(5),
        || {
            let v4 = set_elements(&topo.pbx, "trunk_pjsip_dns4");
            v4.contains("192.0.2.21")
                && v4.contains("192.0.2.23")
                && set_elements(&topo.pbx, "trunk_pjsip_dns6").contains("2001:db8::21")
                && set_elements(&topo.pbx, "blacklist_dns4").contains("198.51.100.66")
        },
    );
    for (src, want) in [
        ("192.0.2.21", FinalVerdict::Accept),
        ("192.0.2.22", FinalVerdict::Drop),
    ] {
        let addr: IpAddr = src.parse().unwrap();
        let got = topo.probe(&Packet::new("eth0", addr, Proto::Udp, Some(5060)));
        assert_eq!(got, Some(want), "{src} before the move");
    }

    // The name moves: dnsmasq re-reads its hosts file on SIGHUP.
    std::fs::write(
        &hosts,
        format!("192.0.2.22 peer.ddns.test\n2001:db8::21 peer.ddns.test\n{others}"),
    )
    .unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &dns.0.id().to_string()])
        .status();
    // TTL 1 s (the floor is 1 s here): the kernel follows within a few seconds.
    let took = within(
        "the moved address in the set",
        d,
        Duration::from_secs(5),
        || {
            let s = set_elements(&topo.pbx, "trunk_pjsip_dns4");
            s.contains("192.0.2.22") && !s.contains("192.0.2.21")
        },
    );
    eprintln!("DDNS move reached the kernel in {took:?}");
    assert!(set_elements(&topo.pbx, "trunk_pjsip_dns6").contains("2001:db8::21"));
    for (src, want) in [
        ("192.0.2.22", FinalVerdict::Accept),
        ("192.0.2.21", FinalVerdict::Drop),
    ] {
        let got = topo.probe(&Packet::new(
            "eth0",
            src.parse().unwrap(),
            Proto::Udp,
            Some(5060),
        ));
        assert_eq!(got, Some(want), "{src} after the move");
    }
    assert_eq!(
        handles(&topo.pbx),
        before,
        "no reload: the rules are the same objects"
    );
    let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
    assert!(log.contains("event=dns-update"), "{log}");

    // `status` shows the hostname, its addresses and the age of the answer.
    let st = ok(&topo.pbx.exec_env(
        &[("PBXFW_STATE_DIR", state.to_str().unwrap())],
        &[env!("CARGO_BIN_EXE_pbxfw"), "status", "--format", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    let h = &v["hostnames"][1];
    assert_eq!(h["name"], "peer.ddns.test", "{v:#}");
    assert_eq!(
        h["addresses"],
        serde_json::json!(["192.0.2.22", "192.0.2.23", "2001:db8::21"])
    );
    assert!(h["age"].as_u64().is_some_and(|a| a < 60), "{h}");
}

#[test]
fn an_unreachable_dns_server_delays_nothing_and_the_last_answer_is_kept() {
    if skipped() {
        return;
    }
    let (dir, policy, hosts) = dns_case(
        "[interfaces]\neth0 = \"internet\"\n\n[[pbx.trunks]]\nname = \"carrier\"\nprotocol = \"pjsip\"\nhost = \"sip.carrier.test\"\n",
        "192.0.2.31 sip.carrier.test\n",
    );
    let d = dir.path();
    let ns = Netns::new("dnsdown");
    let state = d.join("state");
    let env = [("PBXFW_STATE_DIR", state.to_str().unwrap())];
    let p = policy.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_pbxfw");

    // A first resolution while DNS works leaves its answer in the state file.
    {
        let _dns = dnsmasq(&ns, &hosts, &[]);
        ok(&ns.exec_env(&env, &[bin, "apply", p]));
        let out = ok(&ns.exec_env(&env, &[bin, "resolve", p, "--dns-server", "127.0.0.1:5353"]));
        assert!(out.contains("sip.carrier.test [srv]: 192.0.2.31"), "{out}");
    }
    // The ruleset loaded from scratch, DNS gone: the apply seeds the kept answer at once and
    // looks nothing up (the name has an answer).
    ok(&ns.exec_env(&env, &[bin, "disable"]));
    let start = Instant::now();
    ok(&ns.exec_env(&env, &[bin, "apply", p]));
    let apply_took = start.elapsed();
    assert!(
        apply_took < Duration::from_secs(2),
        "apply never waits for DNS: {apply_took:?}"
    );
    assert!(set_elements(&ns, "trunk_pjsip_dns4").contains("192.0.2.31"));
    // As after a reboot (`boot` never waits on the DNS): the resolving sets empty.
    ns.run(&["nft", "flush", "set", "inet", "pbxfw", "trunk_pjsip_dns4"]);

    let events = d.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let started = Instant::now();
    let _daemon = daemon(
        &ns,
        d,
        &[
            "--events",
            events.to_str().unwrap(),
            "--dns-server",
            "127.0.0.1:5353",
            "--dns-ttl-floor",
            "1",
            "--dns-timeout-ms",
            "200",
        ],
    );
    // The last good answer is seeded at start, before any lookup could time out.
    let seeded = within("restored answer seeded", d, Duration::from_secs(2), || {
        set_elements(&ns, "trunk_pjsip_dns4").contains("192.0.2.31")
    });
    // And the responsive layer works at once, while the lookups time out on their thread.
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(
        &events,
        "{\"event\":\"auth_failed\",\"source\":\"203.0.113.66\",\"reason\":\"unknown_account\",\"user_agent\":\"friendly-scanner\"}\n",
    )
    .unwrap();
    within("ban while DNS is down", d, Duration::from_secs(3), || {
        set_elements(&ns, "ban4").contains("203.0.113.66")
    });
    let ban_at = started.elapsed();
    eprintln!("seeded after {seeded:?}, ban after {ban_at:?} from daemon start");
    // Lookups fail (no server): the answer stays.
    within("a failed lookup logged", d, Duration::from_secs(15), || {
        std::fs::read_to_string(d.join("daemon.log"))
            .unwrap_or_default()
            .contains("event=dns-failed")
    });
    assert!(set_elements(&ns, "trunk_pjsip_dns4").contains("192.0.2.31"));
    let st = ok(&ns.exec_env(&env, &[bin, "status"]));
    assert!(st.contains("sip.carrier.test [srv]: 192.0.2.31"), "{st}");
    assert!(st.contains("failed"), "{st}");
}

/// The same resolution through the iptables backend: ipsets updated in place.
#[test]
fn resolve_updates_ipsets_on_iptables() {
    if skipped() {
        return;
    }
    let (dir, policy, hosts) = dns_case(
        "[interfaces]\neth0 = \"internet\"\n\n[[networks]]\nsource = \"office.ddns.test\"\nzone = \"trusted\"\n",
        "192.0.2.41 office.ddns.test\n",
    );
    let d = dir.path();
    let ns = Netns::new("dnsipt");
    let dns = dnsmasq(&ns, &hosts, &[]);
    let state = d.join("state");
    let env = [("PBXFW_STATE_DIR", state.to_str().unwrap())];
    let (p, bin) = (policy.to_str().unwrap(), env!("CARGO_BIN_EXE_pbxfw"));
    let be = ["--backend", "iptables-legacy"];
    let resolve = |ns: &Netns| {
        ok(&ns.exec_env(
            &env,
            &[
                bin,
                "resolve",
                p,
                "--dns-server",
                "127.0.0.1:5353",
                be[0],
                be[1],
            ],
        ))
    };
    ok(&ns.exec_env(&env, &[bin, "apply", p, be[0], be[1]]));
    resolve(&ns);
    let list = |ns: &Netns| ns.run(&["ipset", "list", "pbxfw_zone_trusted_dns4"]);
    assert!(list(&ns).contains("192.0.2.41"), "{}", list(&ns));
    std::fs::write(&hosts, "192.0.2.42 office.ddns.test\n").unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &dns.0.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    resolve(&ns);
    let now = list(&ns);
    assert!(
        now.contains("192.0.2.42") && !now.contains("192.0.2.41"),
        "{now}"
    );
    ok(&ns.exec_env(&env, &[bin, "disable", be[0], be[1]]));
}

/// `pbxfw apply` of a policy with a new hostname while the daemon runs: the daemon notices the
/// new ruleset on its next tick, adopts the policy and resolves the name, without a restart.
#[test]
fn the_daemon_follows_an_apply_that_adds_a_hostname() {
    if skipped() {
        return;
    }
    let (dir, policy, hosts) = dns_case(
        "[interfaces]\neth0 = \"internet\"\n",
        "192.0.2.51 new.ddns.test\n",
    );
    let d = dir.path();
    let ns = Netns::new("dnsreload");
    let _dns = dnsmasq(&ns, &hosts, &[]);
    let state = d.join("state");
    let env = [
        ("PBXFW_STATE_DIR", state.to_str().unwrap()),
        ("PBXFW_POLICY", policy.to_str().unwrap()),
    ];
    let bin = env!("CARGO_BIN_EXE_pbxfw");
    ok(&ns.exec_env(&env, &[bin, "apply"]));
    let events = d.join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let _daemon = daemon(
        &ns,
        d,
        &[
            "--events",
            events.to_str().unwrap(),
            "--dns-server",
            "127.0.0.1:5353",
            "--dns-ttl-floor",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(
        &policy,
        "[interfaces]\neth0 = \"internet\"\n\n[[pbx.trunks]]\nname = \"new\"\nprotocol = \"iax\"\nhost = \"new.ddns.test\"\n",
    )
    .unwrap();
    ok(&ns.exec_env(&env, &[bin, "apply"]));
    let took = within(
        "the new name resolved by the running daemon",
        d,
        Duration::from_secs(6),
        || set_elements(&ns, "trunk_iax_dns4").contains("192.0.2.51"),
    );
    eprintln!("a new hostname reached the kernel {took:?} after apply");
    let log = std::fs::read_to_string(d.join("daemon.log")).unwrap();
    assert!(log.contains("event=reload"), "{log}");
}

/// A trunk given by hostname, resolved through a real DNS server, is protected like one given
/// by address: events that name it (forged JSON events with an attack tool's User-Agent, and an
/// Asterisk log line whose Call-ID frames it) never ban it, each refusal is reported naming the
/// trunk, and a flood from its own address on the signalling port is never metered or banned.
#[test]
fn a_hostname_trunk_survives_framing_and_its_own_flood() {
    if skipped() {
        return;
    }
    let trunk = "192.0.2.41";
    let (dir, _, hosts) = dns_case(
        "[interfaces]\neth0 = \"internet\"\n\n[[pbx.trunks]]\nname = \"carrier\"\nprotocol = \"pjsip\"\nhost = \"carrier.ddns.test\"\n",
        &format!("{trunk} carrier.ddns.test\n"),
    );
    let d = dir.path();
    let mut topo = Topology::new("trunkdns", &["eth0".to_string()]);
    let _dns = dnsmasq(&topo.pbx, &hosts, &[]);
    let state = d.join("state");
    ok(&topo.pbx.exec_env(
        &[("PBXFW_STATE_DIR", state.to_str().unwrap())],
        &[
            env!("CARGO_BIN_EXE_pbxfw"),
            "apply",
            d.join("pbxfw.toml").to_str().unwrap(),
        ],
    ));
    let events = d.join("events.jsonl");
    let log = d.join("full");
    std::fs::write(&events, "").unwrap();
    std::fs::write(&log, "").unwrap();
    let _daemon = daemon(
        &topo.pbx,
        d,
        &[
            "--dns-server",
            "127.0.0.1:5353",
            "--events",
            events.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ],
    );
    within("the trunk resolved", d, Duration::from_secs(5), || {
        set_elements(&topo.pbx, "trunk_pjsip_dns4").contains(trunk)
    });
    std::thread::sleep(Duration::from_millis(500));
    // Framing: an attack tool's User-Agent bans at once; three unknown accounts ban too.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap();
    for i in 0..5 {
        writeln!(
            f,
            "{{\"event\":\"auth_failed\",\"source\":\"{trunk}\",\"reason\":\"unknown_account\",\"account\":\"{i}\",\"user_agent\":\"sipvicious\"}}"
        )
        .unwrap();
    }
    let mut l = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(
        l,
        "[2026-11-20 10:15:32] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:1@pbx>' failed for '203.0.113.66:5060' (callid: z' failed for '{trunk}:5060' (callid: q) - No matching endpoint found"
    )
    .unwrap();
    within("the refusal reported", d, Duration::from_secs(5), || {
        let text = std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default();
        text.contains("action=report") && text.contains("not banned: trunk carrier")
    });
    // The trunk floods its own signalling port: trunks never reach the meters.
    let src: IpAddr = trunk.parse().unwrap();
    topo.add_source("eth0", src);
    topo.send_udp("eth0", src, 5060, 5060, 300, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(500));
    for set in ["ban4", "tier_ban4", "clamped4"] {
        assert!(!topo.set_has(set, trunk), "the trunk is in {set}");
    }
    // The probe gives the client the address again itself.
    topo.client("eth0")
        .run(&["ip", "addr", "del", &format!("{trunk}/32"), "dev", "c0"]);
    let got = topo.probe(&Packet::new("eth0", src, Proto::Udp, Some(5060)));
    assert_eq!(got, Some(FinalVerdict::Accept));
    let text = std::fs::read_to_string(d.join("daemon.log")).unwrap();
    assert!(!text.contains("action=ban"), "{text}");
    assert!(
        text.contains("event=refused"),
        "the framing line was not refused:\n{text}"
    );
}
