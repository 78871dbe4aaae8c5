//! The systemd units of dist/systemd, installed with the binary into a scratch root: they pass
//! `systemd-analyze verify`, and `systemd-analyze security --offline` rates each 2.5 or better
//! (docs/install.md). Skipped where systemd-analyze is missing.

use std::path::Path;
use std::process::Command;

fn analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze").args(args).output().unwrap()
}

#[test]
fn the_units_verify_and_are_sandboxed() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["usr/bin", "etc/systemd/system", "lib/systemd"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    // The host's own units, for the targets ours name (sysinit.target, network-pre.target).
    let copied = Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(r.join("lib/systemd/"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::copy(env!("CARGO_BIN_EXE_pbxfw"), r.join("usr/bin/pbxfw")).unwrap();
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd");
    let root_arg = format!("--root={}", r.display());
    for (unit, limit) in [("pbxfw.service", 2.5), ("pbxfw-boot.service", 2.5)] {
        std::fs::copy(dist.join(unit), r.join("etc/systemd/system").join(unit)).unwrap();
        let out = analyze(&[
            "verify",
            "--man=no",
            &root_arg,
            &format!("/etc/systemd/system/{unit}"),
        ]);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = analyze(&["security", "--offline=true", &root_arg, unit]);
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for ").map(|(_, s)| s))
            .and_then(|s| s.split(':').nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no score in\n{text}"));
        assert!(score <= limit, "{unit}: exposure {score} > {limit}\n{text}");
        eprintln!("{unit}: exposure {score}");
    }
}
