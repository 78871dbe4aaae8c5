//! Replays every committed fuzz crasher (`tests/fuzz_regressions/<target>/*`) through the
//! assertions of its fuzz target (`fuzz/src/lib.rs`), as an ordinary test.
//!
//! To add one: copy `fuzz/artifacts/<target>/crash-*` into the folder of its target under a
//! name saying what it exercises, and add a line to [`ROOT_CAUSES`] with the root cause.

use std::path::{Path, PathBuf};

use pbxfw_core::Ruleset;
use pbxfw_core::{compile, eval, DynamicState, Packet, Policy, Proto};

/// Every committed crasher, as `target/file`, with the root cause of the crash it caused.
const ROOT_CAUSES: &[(&str, &str)] = &[];

/// The fuzz targets, each a folder here.
const TARGETS: &[&str] = &["policy_toml", "policy_json", "ir_text"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions")
}

/// Every input file, as `target/file`, sorted.
fn inputs() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir()).expect("tests/fuzz_regressions exists") {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().unwrap().is_dir() {
            assert_eq!(
                name, "README.md",
                "inputs belong in a folder named after their target"
            );
            continue;
        }
        assert!(
            TARGETS.contains(&name.as_str()),
            "{name} is not a fuzz target"
        );
        for file in std::fs::read_dir(entry.path()).unwrap() {
            let file = file.unwrap().file_name().to_string_lossy().into_owned();
            out.push(format!("{name}/{file}"));
        }
    }
    out.sort();
    out
}

/// The core half of the `policy_toml` and `policy_json` targets.
fn check_policy(parsed: Result<Policy, pbxfw_core::ParseError>) {
    let Ok(policy) = parsed else { return };
    let Ok(valid) = policy.validate() else { return };
    let rs = compile(&valid);
    if let Err(e) = pbxfw_core::verify_ir(&rs) {
        panic!("compiled IR does not verify: {e}\n{}", rs.to_text());
    }
    let text = rs.to_text();
    match pbxfw_core::parse_ir(&text) {
        Ok(back) => assert!(
            back == rs,
            "IR text round trip changed the ruleset:\n{text}"
        ),
        Err(e) => panic!("printed IR does not parse back: {e}\n{text}"),
    }
}

/// The core half of the `ir_text` target.
fn check_ir(text: &str) {
    let Ok(rs) = pbxfw_core::parse_ir(text) else {
        return;
    };
    let printed = rs.to_text();
    let again: Ruleset = match pbxfw_core::parse_ir(&printed) {
        Ok(r) => r,
        Err(e) => panic!("printed IR does not parse back: {e}\n{printed}"),
    };
    assert!(again == rs, "print/parse changed the ruleset:\n{printed}");
    assert_eq!(again.to_text(), printed, "printing is not stable");
    if pbxfw_core::verify_ir(&rs).is_ok() {
        let state = DynamicState::default();
        for (iif, src, proto, dport) in [
            ("eth0", "203.0.113.10", Proto::Udp, Some(5060)),
            ("eth1", "192.168.1.7", Proto::Tcp, Some(22)),
            ("lo", "::1", Proto::Icmpv6, None),
            ("eth0", "2001:db8::1", Proto::Udp, Some(10000)),
        ] {
            let _ = eval(
                &rs,
                &Packet::new(iif, src.parse().unwrap(), proto, dport),
                &state,
            );
        }
    }
}

#[test]
fn every_crasher_has_a_root_cause() {
    let files = inputs();
    let listed: Vec<&str> = ROOT_CAUSES.iter().map(|(f, _)| *f).collect();
    for f in &files {
        assert!(
            listed.contains(&f.as_str()),
            "{f} has no entry in ROOT_CAUSES"
        );
    }
    for f in &listed {
        assert!(
            files.iter().any(|x| x == f),
            "ROOT_CAUSES lists {f}, which does not exist"
        );
    }
}

#[test]
fn crashers_no_longer_crash() {
    assert!(
        dir().join("README.md").is_file(),
        "tests/fuzz_regressions/README.md exists"
    );
    for f in inputs() {
        let bytes = std::fs::read(dir().join(&f)).unwrap();
        // The targets skip input that is not UTF-8.
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let (target, _) = f.split_once('/').unwrap();
        let run = || match target {
            "policy_toml" => check_policy(Policy::from_toml(text)),
            "policy_json" => check_policy(Policy::from_json(text)),
            "ir_text" => check_ir(text),
            _ => unreachable!("inputs() admits only known targets"),
        };
        if let Err(e) = std::panic::catch_unwind(run) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{f} still crashes: {msg}");
        }
    }
}
