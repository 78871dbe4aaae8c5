//! `pbxfw apply/status/blacklist/trust/disable` against the kernel, in a network namespace the
//! test creates (and removes, also on failure), one per test so that they can run in parallel.

use std::process::{Command, Output};

use pbxfw_testkit::netns::Netns;
use pbxfw_testkit::ok;

/// The pbxfw under test, inside `ns`, with no policy from the environment.
fn pbxfw(ns: &Netns, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_pbxfw")])
        .args(args)
        .envs(ns.host_env())
        .env_remove("PBXFW_POLICY")
        .output()
        .unwrap()
}

/// The output of a `status` that found pbxfw not loaded: printed, and exit 3.
fn not_loaded(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft`'s standard output inside `ns`.
fn nft(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    String::from_utf8_lossy(&ns.exec(&argv).stdout).into_owned()
}

#[test]
fn apply_edit_status_disable() {
    if std::env::var_os("PBXFW_SKIP_KERNEL").is_some() {
        return;
    }
    let ns = Netns::new("cli-nft");
    let dir = std::env::temp_dir().join(format!("pbxfw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("pbxfw.toml");
    std::fs::write(
        &policy,
        "# office PBX\n[interfaces]\neth0 = \"internet\"\n\n[blacklist]\nentries = [\"198.51.100.0/24\"] # known scanners\n",
    )
    .unwrap();
    let p = policy.to_str().unwrap();

    // Nothing loaded yet; an invalid policy is refused and loads nothing.
    assert!(not_loaded(&pbxfw(&ns, &["status"])).contains("not loaded"));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[interfaces]\neth0 = \"dmz\"\n").unwrap();
    assert_eq!(
        pbxfw(&ns, &["apply", bad.to_str().unwrap()]).status.code(),
        Some(2)
    );
    assert!(nft(&ns, &["list", "tables"]).is_empty());

    assert!(ok(&pbxfw(&ns, &["apply", p])).contains("applied: fingerprint"));
    let status: serde_json::Value =
        serde_json::from_str(&ok(&pbxfw(&ns, &["status", "--format", "json"]))).unwrap();
    assert_eq!(status["loaded"], true);

    // Blacklist edits go over netlink and into the file, comments kept.
    let out = ok(&pbxfw(
        &ns,
        &[
            "blacklist",
            "add",
            "192.0.2.9",
            "2001:db8:bad::/48",
            "--policy",
            p,
        ],
    ));
    assert!(
        out.contains("2 element(s) added, 0 removed without a reload"),
        "{out}"
    );
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(
        text.contains("# office PBX") && text.contains("192.0.2.9"),
        "{text}"
    );
    assert!(nft(&ns, &["list", "set", "inet", "pbxfw", "blacklist_hosts4"]).contains("192.0.2.9"));
    assert!(nft(&ns, &["list", "set", "inet", "pbxfw", "blacklist6"]).contains("2001:db8:bad::/48"));
    let listed = ok(&pbxfw(&ns, &["blacklist", "list", "--policy", p]));
    assert_eq!(listed.lines().count(), 3, "{listed}");
    // The kernel's fingerprint follows the file: a reload of the file changes nothing.
    let fp = |ns: &Netns| {
        let s: serde_json::Value =
            serde_json::from_str(&ok(&pbxfw(ns, &["status", "--format", "json"]))).unwrap();
        s["fingerprint"].as_str().unwrap().to_string()
    };
    let after_edit = fp(&ns);
    ok(&pbxfw(&ns, &["apply", p]));
    assert_eq!(after_edit, fp(&ns));

    let out = ok(&pbxfw(
        &ns,
        &["blacklist", "del", "192.0.2.9", "--policy", p],
    ));
    assert!(out.contains("0 element(s) added, 1 removed"), "{out}");
    assert!(!nft(&ns, &["list", "set", "inet", "pbxfw", "blacklist_hosts4"]).contains("192.0.2.9"));
    assert_eq!(
        pbxfw(&ns, &["blacklist", "del", "192.0.2.9", "--policy", p])
            .status
            .code(),
        Some(2)
    );

    // Trust a host: an element of the trusted host set, over netlink.
    let out = ok(&pbxfw(&ns, &["trust", "203.0.113.5", "--policy", p]));
    assert!(out.contains("1 element(s) added"), "{out}");
    assert!(nft(
        &ns,
        &["list", "set", "inet", "pbxfw", "zone_trusted_hosts4"]
    )
    .contains("203.0.113.5"));
    // Trusting a network changes the zone map: a reload.
    let out = ok(&pbxfw(&ns, &["trust", "10.20.0.0/16", "--policy", p]));
    assert!(out.contains("ruleset reloaded"), "{out}");
    ok(&pbxfw(&ns, &["untrust", "203.0.113.5", "--policy", p]));
    assert!(!nft(
        &ns,
        &["list", "set", "inet", "pbxfw", "zone_trusted_hosts4"]
    )
    .contains("203.0.113.5"));
    // An edit that would make the policy invalid leaves the file alone.
    let before = std::fs::read_to_string(&policy).unwrap();
    assert_eq!(
        pbxfw(&ns, &["blacklist", "add", "0.0.0.0/0", "--policy", p])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(before, std::fs::read_to_string(&policy).unwrap());

    assert!(ok(&pbxfw(&ns, &["disable"])).contains("removed"));
    assert!(nft(&ns, &["list", "tables"]).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same commands with `--backend iptables-nft` and `--backend iptables-legacy`, each in a
/// namespace of its own.
#[test]
fn iptables_backends_apply_edit_status_disable() {
    if std::env::var_os("PBXFW_SKIP_KERNEL").is_some() {
        return;
    }
    for backend in ["iptables-nft", "iptables-legacy"] {
        let ns = Netns::new(&format!("cli-{backend}"));
        let dir = std::env::temp_dir().join(format!("pbxfw-cli-{backend}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("pbxfw.toml");
        std::fs::write(
            &policy,
            "[interfaces]\neth0 = \"internet\"\n\n[blacklist]\nentries = [\"198.51.100.0/24\"]\n",
        )
        .unwrap();
        let p = policy.to_str().unwrap();
        let b = ["--backend", backend];
        assert!(not_loaded(&pbxfw(&ns, &["status", b[0], b[1]])).contains("not loaded"));
        assert!(ok(&pbxfw(&ns, &["apply", p, b[0], b[1]])).contains("applied: fingerprint"));
        let status = ok(&pbxfw(&ns, &["status", "--format", "json", b[0], b[1]]));
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(v["backend"], "iptables");
        assert_eq!(v["loaded"], true);
        // An edit goes to the kernel as set elements only.
        let out = ok(&pbxfw(
            &ns,
            &["blacklist", "add", "192.0.2.99", "--policy", p, b[0], b[1]],
        ));
        assert!(out.contains("1 element(s) added"), "{out}");
        let test = ns.exec(&["ipset", "test", "pbxfw_blacklist_hosts4", "192.0.2.99"]);
        assert!(test.status.success());
        // Without --backend, every command follows the backend of the last apply.
        let status = ok(&pbxfw(&ns, &["status", "--format", "json"]));
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(
            (&v["backend"], &v["loaded"]),
            (&"iptables".into(), &true.into())
        );
        let out = ok(&pbxfw(
            &ns,
            &["blacklist", "add", "192.0.2.98", "--policy", p],
        ));
        assert!(out.contains("1 element(s) added"), "{out}");
        let test = ns.exec(&["ipset", "test", "pbxfw_blacklist_hosts4", "192.0.2.98"]);
        assert!(test.status.success());
        assert!(ok(&pbxfw(&ns, &["disable"])).contains("PBXFW chains"));
        assert!(not_loaded(&pbxfw(&ns, &["status", b[0], b[1]])).contains("not loaded"));
        let chains = ns.exec(&[&backend.replace("iptables", "iptables-save")]);
        assert!(!String::from_utf8_lossy(&chains.stdout).contains("PBXFW"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn edits_and_disable_never_cut_off_the_admin_nor_undo_a_confirmation() {
    if std::env::var_os("PBXFW_SKIP_KERNEL").is_some() {
        return;
    }
    let ns = Netns::new("cli-edit-safety");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("pbxfw.toml");
    // SSH moved to 2222 and open to the internet; the administrator is out there.
    let text = "[interfaces]\neth0 = \"internet\"\n[services.ssh]\nports = [\"tcp/2222\"]\nzones = [\"internet\", \"local\"]\n[settings]\nadmins = [\"198.51.100.9\"]\n";
    std::fs::write(&policy, text).unwrap();
    let p = policy.to_str().unwrap();
    ok(&pbxfw(&ns, &["apply", p]));
    let fp = || {
        let s = ok(&pbxfw(&ns, &["status", "--format", "json"]));
        serde_json::from_str::<serde_json::Value>(&s).unwrap()["fingerprint"].clone()
    };
    let before = fp();

    // Blacklisting the administrator, alone or with its network, is refused; nothing changes.
    for entry in ["198.51.100.9", "198.51.100.0/24"] {
        let out = pbxfw(&ns, &["blacklist", "add", entry, "--policy", p]);
        assert_eq!(out.status.code(), Some(6), "{entry}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("198.51.100.9 (tcp/2222"), "{err}");
        assert_eq!(std::fs::read_to_string(&policy).unwrap(), text);
        assert_eq!(fp(), before);
    }
    // An address given on the command line is checked the same way.
    let out = pbxfw(
        &ns,
        &[
            "blacklist",
            "add",
            "203.0.113.0/24",
            "--policy",
            p,
            "--admin",
            "203.0.113.5",
        ],
    );
    assert_eq!(out.status.code(), Some(6));
    // Forced, it goes through; removing it again is harmless.
    ok(&pbxfw(
        &ns,
        &[
            "blacklist",
            "add",
            "198.51.100.0/24",
            "--policy",
            p,
            "--force",
        ],
    ));
    assert_ne!(fp(), before);
    ok(&pbxfw(
        &ns,
        &["blacklist", "del", "198.51.100.0/24", "--policy", p],
    ));

    // While an apply waits for confirmation, neither a disable nor an edit nor a plain apply
    // goes through: its timer would undo them. Each says when it is rolled back.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_pbxfw"));
    let confirm = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin)
        .args(["apply", p, "--confirm", "120"])
        .envs(ns.host_env())
        .env("PBXFW_BIN", bin)
        .output()
        .unwrap();
    ok(&confirm);
    for args in [
        vec!["disable"],
        vec!["blacklist", "add", "192.0.2.1", "--policy", p],
        vec!["apply", p],
    ] {
        let out = pbxfw(&ns, &args);
        assert_eq!(out.status.code(), Some(6), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("rolled back in 1 min") || err.contains("rolled back in 2 min"),
            "{err}"
        );
    }
    assert!(ok(&pbxfw(&ns, &["rollback"])).contains("rolled back"));

    // The timer firing: a plain apply tried during the window was refused, so what the
    // rollback restores is exactly what was loaded before the confirm, and nothing the admin
    // did meanwhile is silently undone.
    let before_confirm = fp();
    std::fs::write(
        &policy,
        text.replace(
            "[settings]",
            "[blacklist]\nentries = [\"192.0.2.77\"]\n[settings]",
        ),
    )
    .unwrap();
    let confirm = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin)
        .args(["apply", p, "--confirm", "2"])
        .envs(ns.host_env())
        .env("PBXFW_BIN", bin)
        .output()
        .unwrap();
    ok(&confirm);
    let pending = fp();
    assert_ne!(pending, before_confirm);
    std::fs::write(&policy, text).unwrap();
    assert_eq!(pbxfw(&ns, &["apply", p]).status.code(), Some(6));
    let start = std::time::Instant::now();
    while fp() != before_confirm {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "the timer did not roll back"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Nothing waits any more: the plain apply goes through now, and stays.
    ok(&pbxfw(&ns, &["apply", p]));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(fp(), before_confirm);
    assert!(ok(&pbxfw(&ns, &["disable"])).contains("disabled"));
}
