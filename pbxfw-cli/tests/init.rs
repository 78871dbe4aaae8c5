//! `pbxfw init --non-interactive` in a namespace with two interfaces, an SSH session and the
//! test Asterisk tree: the policy it writes checks clean, keeps the administrator in, and
//! nothing is applied.

use std::process::Command;

use pbxfw_testkit::netns::{skipped, Netns};

#[test]
fn init_proposes_a_policy_that_checks_clean_and_applies_nothing() {
    if skipped() {
        return;
    }
    let ns = Netns::new("init");
    for (dev, net) in [("eth0", "198.51.100.2/24"), ("eth1", "192.168.1.1/24")] {
        let peer = format!("{dev}p");
        ns.run(&[
            "ip", "link", "add", dev, "type", "veth", "peer", "name", &peer,
        ]);
        ns.run(&["ip", "link", "set", &peer, "up"]);
        ns.run(&["ip", "addr", "add", net, "dev", dev]);
        ns.run(&["ip", "link", "set", dev, "up"]);
    }
    ns.run(&["ip", "route", "add", "default", "via", "198.51.100.1"]);
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("etc/pbxfw.toml");
    // Where the package put its template: refused by every command, replaced by `init`
    // without --force.
    std::fs::create_dir_all(out_file.parent().unwrap()).unwrap();
    std::fs::write(
        &out_file,
        "# pbxfw: not initialised\n#\n# [interfaces]\n# eth0 = \"internet\"\n",
    )
    .unwrap();
    let asterisk = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/asterisk");
    let run = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_pbxfw")])
            .args(args)
            .envs(ns.host_env())
            .env("SSH_CONNECTION", "203.0.113.9 50000 198.51.100.2 2222")
            .env_remove("PBXFW_POLICY")
            .output()
            .unwrap()
    };
    for args in [&["check"][..], &["apply"], &["daemon"]] {
        let mut argv = args.to_vec();
        argv.extend(["--policy", out_file.to_str().unwrap()]);
        let out = run(&argv);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("run `pbxfw init`"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(String::from_utf8_lossy(&ns.exec(&["nft", "list", "tables"]).stdout).is_empty());
    let out = run(&[
        "init",
        "--non-interactive",
        "--asterisk-dir",
        asterisk,
        "--output",
        out_file.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("a new connection from 203.0.113.9 is accept"),
        "{said}"
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    for want in [
        "eth0 = \"internet\"",
        "eth1 = \"local\"",
        "source = \"203.0.113.9\"",
        "ports = [\"tcp/2222\"]",
        "admins = [\"203.0.113.9:2222\"]",
        "discover = ",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(
        !text.contains("= \"trusted\"  #"),
        "an interface proposed as trusted:\n{text}"
    );
    let check = run(&["check", "--strict", out_file.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // Nothing applied; and a second run does not replace the file.
    assert!(String::from_utf8_lossy(&ns.exec(&["nft", "list", "tables"]).stdout).is_empty());
    let again = run(&[
        "init",
        "--non-interactive",
        "--output",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
}
