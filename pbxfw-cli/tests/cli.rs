//! The `pbxfw` binary: outputs and exit codes as documented in `--help`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn pbxfw(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pbxfw"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_example_policy_is_used_only_when_asked_for() {
    // No file, no $PBXFW_POLICY, no /etc/pbxfw/pbxfw.toml: every command refuses, apply too.
    for args in [
        &["compile"][..],
        &["apply"],
        &["check"],
        &["blacklist", "list"],
    ] {
        let out = pbxfw(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("no policy"), "{args:?}");
    }
    let out = pbxfw(&["compile", "--example"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("example policy of a typical PBX"));
    let s = text(&out.stdout);
    assert!(s.contains("table inet pbxfw {"));
    assert!(s.contains("elements = { 203.0.113.10 }"), "{s}");
    let ir = pbxfw(&["compile", "--example", "--ir"], None);
    assert!(text(&ir.stdout).starts_with("pbxfw-ir 1\n"));
    let both = pbxfw(&["compile", "--example", "pbxfw.toml"], None);
    assert_eq!(both.status.code(), Some(2), "a file and --example conflict");
}

#[test]
fn explain_json_names_verdict_zone_and_deciding_object() {
    let out = pbxfw(
        &[
            "explain",
            "--example",
            "--in",
            "eth0",
            "--src",
            "203.0.113.10",
            "--proto",
            "udp",
            "--dport",
            "5060",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "accept");
    assert_eq!(v["zone"], "internet");
    assert_eq!(v["decided_by"], "trunk:provider");
    assert_eq!(v["step"], 6);

    // An established packet of a blacklisted source is accepted at step 2 (the flow was cut
    // when the source was blacklisted, so it opened this one before); an answer on a
    // connection the PBX opened meets the blacklist on every packet.
    let blacklisting =
        "[interfaces]\neth0 = \"internet\"\n[blacklist]\nentries = [\"198.51.100.0/24\"]\n";
    let established = |reply: bool| {
        let mut args = vec![
            "explain",
            "-",
            "--in",
            "eth0",
            "--src",
            "198.51.100.1",
            "--proto",
            "tcp",
            "--dport",
            "22",
            "--state",
            "established",
            "--format",
            "json",
        ];
        if reply {
            args.push("--reply");
        }
        let out = pbxfw(&args, Some(blacklisting));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(established(false)["step"], 2);
    assert_eq!(established(true)["verdict"], "drop");
    assert_eq!(established(true)["decided_by"], "blacklist:198.51.100.0/24");

    let out = pbxfw(
        &[
            "explain",
            "-",
            "--in",
            "eth9",
            "--src",
            "2001:db8::1",
            "--proto",
            "tcp",
            "--dport",
            "22",
            "--registered",
            "--format",
            "json",
        ],
        Some("[interfaces]\neth0 = \"local\"\n"),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["verdict"].as_str(), v["zone"].as_str()),
        (Some("drop"), Some("internet"))
    );
}

#[test]
fn check_reports_every_problem_and_exits_by_severity() {
    let bad = "[settings]\ndefault_verdict = \"maybe\"\n[[networks]]\nsource = \"10.0.0.300\"\nzone = \"lan\"\n";
    let out = pbxfw(&["check", "-"], Some(bad));
    assert_eq!(out.status.code(), Some(2));
    let s = text(&out.stdout);
    assert!(
        s.contains("settings.default_verdict: \"maybe\" is not \"drop\" or \"reject\""),
        "{s}"
    );
    assert!(
        s.contains(
            "networks[0].source: \"10.0.0.300\" is neither an address, a CIDR nor a hostname"
        ),
        "{s}"
    );
    assert!(s.contains("networks[0].zone: \"lan\" is not a zone"), "{s}");

    let json = pbxfw(&["check", "-", "--format", "json"], Some(bad));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["errors"], 3);
    assert_eq!(v["diagnostics"][1]["path"], "networks[0].source");

    let warn = "[interfaces]\neth0 = \"trusted\"\n";
    assert_eq!(pbxfw(&["check", "-"], Some(warn)).status.code(), Some(0));
    assert_eq!(
        pbxfw(&["check", "-", "--strict"], Some(warn)).status.code(),
        Some(1)
    );
}

#[test]
fn bad_input_gets_a_message_and_an_exit_code_never_a_panic() {
    let missing = pbxfw(&["compile", "/nonexistent/pbxfw.toml"], None);
    assert_eq!(missing.status.code(), Some(3));
    assert!(text(&missing.stderr).contains("/nonexistent/pbxfw.toml: No such file"));
    let syntax = pbxfw(&["compile", "-"], Some("[x"));
    assert_eq!(syntax.status.code(), Some(2));
    assert!(text(&syntax.stderr).contains("TOML syntax error"));
    let ipt = pbxfw(&["compile", "--example", "--backend", "iptables"], None);
    assert_eq!(ipt.status.code(), Some(0));
    assert!(text(&ipt.stdout).contains("-I INPUT 1 -m comment --comment \"pbxfw\" -j PBXFW"));
    let no_port = pbxfw(
        &[
            "explain",
            "--example",
            "--in",
            "eth0",
            "--src",
            "192.0.2.1",
            "--proto",
            "udp",
        ],
        None,
    );
    assert_eq!(no_port.status.code(), Some(2));
    for out in [missing, syntax, ipt, no_port] {
        assert!(!text(&out.stderr).contains("panicked"));
    }
}

#[test]
fn replay_reports_what_would_have_happened() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let jsonl = root.join("testdata/events/events.jsonl");
    let out = pbxfw(
        &[
            "replay",
            "--example",
            jsonl.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["banned"]["203.0.113.9"].is_array(), "{v:#}");
    assert!(v["registered"]["300"].is_array(), "{v:#}");
    assert!(
        v["banned"]["203.0.113.83"][1]
            .as_str()
            .is_some_and(|r| r.contains("attack tool")),
        "{v:#}"
    );
    // The fixture of log lines holds lines a sender could have written: counted, never read.
    let log = root.join("testdata/events/asterisk-full.log");
    let out = pbxfw(
        &[
            "replay",
            "--example",
            log.to_str().unwrap(),
            "--year",
            "2026",
        ],
        None,
    );
    let s = text(&out.stdout);
    assert!(
        s.contains("security events") && s.contains("record(s) ignored"),
        "{s}"
    );
    assert_eq!(
        pbxfw(&["replay", "--example", "/nonexistent.log"], None)
            .status
            .code(),
        Some(3)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // Large enough that the output does not fit in a pipe's buffer.
    let entries: Vec<String> = (1..30_000u32)
        .map(|i| format!("\"10.{}.{}.{}\"", i >> 16 & 255, i >> 8 & 255, i & 255))
        .collect();
    let policy = format!(
        "[interfaces]\neth0 = \"internet\"\n[blacklist]\nentries = [{}]\n",
        entries.join(",")
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_pbxfw"))
        .args(["compile", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(policy.as_bytes())
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert!(first.starts_with(b"#!"));
    drop(child.stdout.take()); // as `head -1` does
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert_eq!(text(&out.stderr), "", "no panic, no backtrace");
}

#[test]
fn show_says_what_each_zone_opens_and_where_it_came_from() {
    // With discovery: pjsip's ports come from the Asterisk files, with their lines.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    let asterisk = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/asterisk");
    std::fs::write(
        &policy,
        format!("[interfaces]\neth1 = \"local\"\n[pbx]\ndiscover = \"{asterisk}\"\n"),
    )
    .unwrap();
    let out = pbxfw(
        &[
            "show",
            "local",
            "--policy",
            policy.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let zones = v["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0]["interfaces"][0], "eth1");
    let pjsip = zones[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "pjsip")
        .unwrap();
    let origin = pjsip["origin"].as_str().unwrap();
    assert!(
        origin.starts_with("discovery (pjsip.transports"),
        "{origin}"
    );
    let ssh = zones[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ssh")
        .unwrap();
    assert_eq!(ssh["origin"], "catalogue");
    assert!(v["everywhere"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().starts_with("trunk provider-a")));
    let bad = pbxfw(&["show", "dmz", "--example"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("is not a zone"));
}

#[test]
fn every_command_takes_the_policy_as_an_option_too() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pbxfw.toml");
    std::fs::write(&p, "[interfaces]\neth0 = \"internet\"\n").unwrap();
    let p = p.to_str().unwrap();
    for cmd in ["compile", "check"] {
        let positional = pbxfw(&[cmd, p], None);
        let option = pbxfw(&[cmd, "--policy", p], None);
        assert!(positional.status.success(), "{}", text(&positional.stderr));
        assert_eq!(positional.stdout, option.stdout, "{cmd}");
        assert_eq!(pbxfw(&[cmd, p, "--policy", p], None).status.code(), Some(2));
    }
    let out = pbxfw(
        &[
            "explain",
            "--policy",
            p,
            "--in",
            "eth0",
            "--src",
            "192.0.2.1",
            "--proto",
            "udp",
            "--dport",
            "5060",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_itself() {
    let out = pbxfw(&["completions", "bash"], None);
    assert!(out.status.success());
    let script = text(&out.stdout);
    assert!(
        script.contains("unban") && script.contains("--for"),
        "{script}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pbxfw.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    for shell in ["zsh", "fish"] {
        assert!(
            pbxfw(&["completions", shell], None).status.success(),
            "{shell}"
        );
    }

    let man = dir.path().join("man");
    let out = pbxfw(&["manpages", man.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "pbxfw.8",
        "pbxfw-apply.8",
        "pbxfw-ban.8",
        "pbxfw-blacklist-add.8",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} missing: {pages:?}");
    }
    assert!(!pages
        .iter()
        .any(|p| p.contains("help") || p.contains("manpages")));
    // Rendered by man(1) without a complaint, where man is installed.
    if std::path::Path::new("/usr/bin/man").exists() {
        for p in &pages {
            let r = Command::new("man")
                .arg("-l")
                .arg(man.join(p))
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            assert!(
                r.status.success() && r.stderr.is_empty(),
                "{p}: {}",
                text(&r.stderr)
            );
            assert!(text(&r.stdout).contains("SYNOPSIS"), "{p}");
        }
    }
}
