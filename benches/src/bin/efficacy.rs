//! The responsive layer's efficacy, side by side with a FreePBX-shaped reference
//! (docs/responsive.md, "Efficacy"): every scenario runs twice, each time in fresh network
//! namespaces with the project's Kamailio registrar (`testdata/e2e/kamailio.cfg`, digest
//! authentication, writing pbxfw's JSON events):
//!
//! - **pbxfw**: the policy below applied with nft, `pbxfw daemon` following Kamailio's events;
//! - **reference**: `benches/reference/freepbx-shaped.rules` loaded with `iptables-legacy-restore`
//!   (xt_recent lists of the kernel's default 100 entries), nothing following the events.
//!
//! The attackers and phones are real SIP clients: SIPVicious 0.3.3 (`svwar`, `svcrack`, with
//! their own User-Agent) and `benches/scripts/sipcrowd.py` (password guessing from many
//! sources with a phone's User-Agent, a phone's boot and keep-alives, a trunk's requests).
//! A guess is *answered* when Kamailio's final answer to the request carrying the password
//! reaches the client; SIPVicious's rows count every answer that leaves the PBX for the tool.
//! Run as root (`benches/scripts/efficacy.sh` installs the packages first):
//!
//! ```sh
//! cargo build --release -p pbxfw-cli -p pbxfw-benches --bin pbxfw --bin efficacy
//! ./target/release/efficacy            # ONLY=crack,phone to run some rows
//! ```
//!
//! `TARGETS=pbxfw` (or `reference`) runs one side only: the two-hour row's sides can then run
//! as two processes at once, since every bed's namespaces carry the target in their names.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pbxfw_testkit::netns::Killed;
use pbxfw_testkit::probe::{counted, Topology, DST4, DST6};

const POLICY: &str = r#"
[interfaces]
eth0 = "internet"
[[pbx.trunks]]
name = "provider"
protocol = "pjsip"
host = "203.0.113.10"
[responsive]
protocols = ["pjsip"]
"#;

const PHONE_UA: &str = "Yealink SIP-T46S 66.86.0.15";
const TRUNK: &str = "203.0.113.10";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pbxfw_bin() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("pbxfw")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Pbxfw,
    Reference,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Pbxfw => "pbxfw",
            Target::Reference => "reference",
        }
    }
}

/// One scenario's network: the PBX namespace with Kamailio and the target's firewall, and a
/// client namespace behind `eth0`.
struct Bed {
    topo: Topology,
    dir: PathBuf,
    _kamailio: Killed,
    _daemon: Option<Killed>,
    target: Target,
}

impl Bed {
    fn new(target: Target, tag: &str) -> Bed {
        let topo = Topology::new(&format!("eff-{tag}"), &["eth0".to_string()]);
        let dir = std::env::temp_dir().join(format!("pbxfw-efficacy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Answers to the clients, counted as they leave the PBX.
        let made = topo.pbx.exec_stdin(
            &["nft", "-f", "/dev/stdin"],
            "table inet eff {\n chain out {\n  type filter hook output priority 0; policy accept;\n }\n}\n",
        );
        assert!(made.status.success());
        match target {
            Target::Pbxfw => {
                std::fs::write(dir.join("pbxfw.toml"), POLICY).unwrap();
                let out = topo.pbx.exec(&[
                    pbxfw_bin().to_str().unwrap(),
                    "apply",
                    dir.join("pbxfw.toml").to_str().unwrap(),
                ]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Target::Reference => {
                let rules =
                    std::fs::read_to_string(root().join("benches/reference/freepbx-shaped.rules"))
                        .unwrap();
                // The same chains for IPv6 (ICMPv6; the trunk is an IPv4 host).
                let rules6: String = rules
                    .lines()
                    .filter(|l| !l.contains(TRUNK))
                    .map(|l| l.replace("-p icmp", "-p ipv6-icmp") + "\n")
                    .collect();
                for (cmd, text) in [
                    ("iptables-legacy-restore", rules),
                    ("ip6tables-legacy-restore", rules6),
                ] {
                    let out = topo.pbx.exec_stdin(&[cmd], &text);
                    assert!(
                        out.status.success(),
                        "{cmd}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        let kamailio = pbxfw_testkit::kamailio::start(&topo.pbx, &dir);
        let daemon = (target == Target::Pbxfw).then(|| {
            let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
            Killed(
                Command::new("ip")
                    .args(["netns", "exec", &topo.pbx.name])
                    .arg(pbxfw_bin())
                    .arg("daemon")
                    .arg(dir.join("pbxfw.toml"))
                    .arg("--events")
                    .arg(dir.join("events.log"))
                    .arg("--state")
                    .arg(dir.join("state.json"))
                    .args(["--tick", "1"])
                    .envs(topo.pbx.host_env())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            )
        });
        let bed = Bed {
            topo,
            dir,
            _kamailio: kamailio,
            _daemon: daemon,
            target,
        };
        // Kamailio answers on the PBX itself.
        let start = Instant::now();
        while !bed.kamailio_ready() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "kamailio did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        bed
    }

    fn kamailio_ready(&self) -> bool {
        let out = self.topo.pbx.exec(&[
            "python3",
            root().join("benches/scripts/sipcrowd.py").to_str().unwrap(),
            "--dst",
            DST4,
            "--sources",
            DST4,
            "--mode",
            "mixed",
            "--count",
            "1",
            "--timeout",
            "0.5",
        ]);
        String::from_utf8_lossy(&out.stdout).contains("\"answered\": 1")
    }

    fn sources(&self, list: &[String]) {
        for s in list {
            self.topo.add_source("eth0", s.parse().unwrap());
        }
    }

    /// Run sipcrowd from the client side.
    /// `sipcrowd.py` from the IPv4 source `src` in `mode`, with `more` arguments and the
    /// clients' half-second answer timeout.
    fn client(&self, src: &str, mode: &str, more: &[&str]) -> serde_json::Value {
        let mut args = vec!["--dst", DST4, "--sources", src, "--mode", mode];
        args.extend_from_slice(more);
        args.extend_from_slice(&["--timeout", "0.5"]);
        self.crowd(&args)
    }

    fn crowd(&self, args: &[&str]) -> serde_json::Value {
        let mut argv = vec![
            "python3".to_string(),
            root()
                .join("benches/scripts/sipcrowd.py")
                .display()
                .to_string(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = self.topo.client("eth0").exec(&argv);
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)))
    }

    /// Count from now on the answers the PBX sends to `dst` (an address or a network).
    fn count_answers(&self, dst: &str) {
        let fam = if dst.contains(':') { "ip6" } else { "ip" };
        let text = format!(
            "flush chain inet eff out\nadd rule inet eff out {fam} daddr {dst} udp sport 5060 counter\n"
        );
        let out = self
            .topo
            .pbx
            .exec_stdin(&["nft", "-f", "/dev/stdin"], &text);
        assert!(out.status.success());
    }

    fn answers(&self) -> u64 {
        counted(&self.topo.pbx, "eff", "out")
    }

    /// Whether `addr` is banned: pbxfw's ban sets, or the reference's ATTACKER list.
    fn banned(&self, addr: &str) -> bool {
        match self.target {
            Target::Pbxfw => ["ban4", "tier_ban4", "ban6", "tier_ban6"]
                .iter()
                .any(|s| self.topo.set_has(s, addr)),
            Target::Reference => {
                // One list for both families (ip6tables' entries carry their family).
                let out = self.topo.pbx.exec(&["cat", "/proc/net/xt_recent/ATTACKER"]);
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.starts_with(&format!("src={addr} ")))
            }
        }
    }

    /// SIPVicious from the client side, bound to `src`.
    fn tool(&self, src: &str, argv: &[&str]) {
        self.topo.prefer_source("eth0", src.parse().unwrap());
        let mut full = vec!["timeout", "60"];
        full.extend_from_slice(argv);
        let _ = self.topo.client("eth0").exec(&full);
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::env::var_os("EFFICACY_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One row of the table: what each target let through, and whether it is an attack (`None`:
/// fewer is better) or legitimate traffic (`Some(total)`: all of it must pass, nothing banned).
struct Row {
    name: String,
    legit: Option<u64>,
    unit: &'static str,
    results: Vec<(Target, String, u64, bool)>,
}

fn ips4(net: &str, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("{net}.{}.{}", i / 200, 1 + i % 200))
        .collect()
}

fn ips6(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("2001:db8:66:1::{i:x}")).collect()
}

/// Run `scenario` against both targets.
/// The sides to run: `TARGETS` (comma-separated), both by default.
fn targets() -> Vec<Target> {
    let wanted = std::env::var("TARGETS").unwrap_or_default();
    [Target::Pbxfw, Target::Reference]
        .into_iter()
        .filter(|t| wanted.is_empty() || wanted.split(',').any(|w| w == t.name()))
        .collect()
}

fn row(
    name: &str,
    legit: Option<u64>,
    unit: &'static str,
    tag: &str,
    scenario: impl Fn(&Bed) -> (u64, String, bool),
) -> Row {
    let mut results = Vec::new();
    for target in targets() {
        let bed = Bed::new(target, &format!("{tag}-{}", &target.name()[..3]));
        let (n, detail, banned) = scenario(&bed);
        eprintln!("{name} [{}]: {n} {unit}; {detail}", target.name());
        results.push((target, detail, n, banned));
    }
    Row {
        name: name.to_string(),
        legit,
        unit,
        results,
    }
}

fn crack(bed: &Bed, sources: &[String], guesses: u32, order: &str, ua: &str) -> (u64, String) {
    bed.sources(sources);
    let joined = sources.join(",");
    let g = guesses.to_string();
    let r = bed.crowd(&[
        "--dst",
        if sources[0].contains(':') { DST6 } else { DST4 },
        "--sources",
        &joined,
        "--mode",
        "crack",
        "--guesses",
        &g,
        "--order",
        order,
        "--ua",
        ua,
    ]);
    (
        r["answered"].as_u64().unwrap(),
        format!(
            "{} of {} guesses answered, at most {} per source",
            r["answered"], r["guesses"], r["max_per_source"]
        ),
    )
}

fn main() {
    let only: Option<Vec<String>> = std::env::var("ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let wanted = |k: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == k));
    let mut rows = Vec::new();

    // SIPVicious with its own User-Agent: (key, scenario, tag, source, command).
    let tools: [(&str, &str, &str, &str, &[&str]); 2] = [
        (
            "svcrack",
            "svcrack -u 300 -r 1000-1999 (stock User-Agent)",
            "svc",
            "198.51.100.67",
            &["svcrack", "-u", "300", "-r", "1000-1999", DST4],
        ),
        (
            "svwar",
            "svwar -e100-999 -m REGISTER (stock User-Agent)",
            "svw",
            "198.51.100.66",
            &["svwar", "-e100-999", "-m", "REGISTER", DST4],
        ),
    ];
    for (key, name, tag, src, argv) in tools {
        if wanted(key) {
            rows.push(row(name, None, "answers", tag, |b| {
                b.sources(&[src.to_string()]);
                b.count_answers(src);
                b.tool(src, argv);
                let n = b.answers();
                (n, format!("{n} answers"), b.banned(src))
            }));
        }
    }
    if wanted("crack") {
        rows.push(row(
            "password guessing, one source, phone User-Agent, 500 guesses",
            None,
            "guesses",
            "crk",
            |b| {
                let s = vec!["198.51.100.70".to_string()];
                let (n, d) = crack(b, &s, 500, "each", PHONE_UA);
                (n, d, b.banned(&s[0]))
            },
        ));
    }
    // Guessing from many sources: (key, scenario, tag, sources, guesses each, order).
    type Crowd = (
        &'static str,
        &'static str,
        &'static str,
        Vec<String>,
        u32,
        &'static str,
    );
    let crowds: [Crowd; 4] = [
        (
            "sources",
            "200 IPv4 sources x 5 guesses, phone User-Agent",
            "src",
            ips4("10.77", 200),
            5,
            "each",
        ),
        (
            "round-robin",
            "200 IPv4 sources round-robin, 10 guesses each, phone User-Agent",
            "rr",
            ips4("10.78", 200),
            10,
            "round-robin",
        ),
        (
            "ipv6",
            "150 addresses of one IPv6 /64, 4 guesses each, phone User-Agent",
            "v6",
            ips6(150),
            4,
            "each",
        ),
        (
            "ipv6",
            "150 addresses of one IPv6 /64 round-robin, 4 guesses each, phone User-Agent",
            "v6rr",
            ips6(150),
            4,
            "round-robin",
        ),
    ];
    for (key, name, tag, sources, guesses, order) in crowds {
        if wanted(key) {
            rows.push(row(name, None, "guesses", tag, |b| {
                let (n, d) = crack(b, &sources, guesses, order, PHONE_UA);
                (n, d, false)
            }));
        }
    }
    if wanted("phone") {
        rows.push(row(
            "phone boot, then 30 SUBSCRIBE + 30 OPTIONS over a minute, then 150 back to back",
            Some(210),
            "answered",
            "ph",
            |b| {
                let src = "198.51.100.30";
                b.sources(&[src.to_string()]);
                let boot = b.client(src, "phone", &["--count", "60", "--interval", "1.0"]);
                let burst = b.client(src, "phone", &["--count", "150"]);
                let registered = boot["registered"] == true && burst["registered"] == true;
                let n = boot["answered"].as_u64().unwrap() + burst["answered"].as_u64().unwrap();
                (
                    n,
                    format!("{n} of 210 answered, registered: {registered}"),
                    b.banned(src),
                )
            },
        ));
    }
    if wanted("trunk") {
        rows.push(row(
            "trunk: 150 mixed requests (OPTIONS, INVITE, REGISTER, SUBSCRIBE)",
            Some(150),
            "answered",
            "tr",
            |b| {
                b.sources(&[TRUNK.to_string()]);
                let r = b.client(TRUNK, "mixed", &["--count", "150"]);
                let n = r["answered"].as_u64().unwrap();
                (n, format!("{n} of 150 answered"), b.banned(TRUNK))
            },
        ));
    }

    // Two hours: only when asked for (docs/responsive.md, "Efficacy").
    if only
        .as_ref()
        .is_some_and(|o| o.iter().any(|x| x == "long-phone"))
    {
        rows.push(row(
            "known phone, wrong password every 30 s for 2 h, then fixed",
            Some(1),
            "registered",
            "long",
            |b| {
                let src = "198.51.100.31";
                b.sources(&[src.to_string()]);
                let first = b.client(src, "phone", &["--count", "0"]);
                let wrong = b.client(src, "crack", &["--guesses", "240", "--interval", "30"]);
                let fixed = b.client(src, "phone", &["--count", "0"]);
                let n = u64::from(fixed["registered"] == true);
                (
                    n,
                    format!(
                        "registered first: {}; {} of 240 wrong attempts answered; registered when fixed: {}",
                        first["registered"], wrong["answered"], fixed["registered"]
                    ),
                    b.banned(src),
                )
            },
        ));
    }

    println!("| scenario | pbxfw | FreePBX-shaped reference |");
    println!("|---|---|---|");
    let mut lost = Vec::new();
    for r in &rows {
        let cell = |t: Target| match r.results.iter().find(|x| x.0 == t) {
            Some((_, detail, _, banned)) => {
                format!("{detail}{}", if *banned { "; banned" } else { "" })
            }
            None => "not run".to_string(),
        };
        println!(
            "| {} | {} | {} |",
            r.name,
            cell(Target::Pbxfw),
            cell(Target::Reference)
        );
        let side = |t: Target| r.results.iter().find(|x| x.0 == t);
        match (r.legit, side(Target::Pbxfw), side(Target::Reference)) {
            (None, Some(p), Some(f)) if p.2 > f.2 => {
                lost.push(format!("{}: pbxfw let more {} through", r.name, r.unit));
            }
            (Some(total), Some((_, _, got, banned)), _) if *banned || *got < total => {
                lost.push(format!("{}: pbxfw lost legitimate traffic", r.name));
            }
            _ => {}
        }
    }
    if !lost.is_empty() {
        println!("\nwhere pbxfw does worse:\n- {}", lost.join("\n- "));
    }
}
