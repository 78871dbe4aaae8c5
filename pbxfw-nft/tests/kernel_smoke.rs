//! Kernel smoke test: every case policy's nft script passes `nft -c -f` and loads with `nft -f`
//! in a fresh network namespace; loading it again leaves the same ruleset, keeps dynamic set
//! elements, and leaves another table alone.

use pbxfw_testkit::netns as common;

use pbxfw_core::compile;
use pbxfw_testkit::cases::CaseFile;

fn scripts() -> Vec<(String, String)> {
    pbxfw_testkit::case_files()
        .iter()
        .map(|path| {
            let case = CaseFile::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
            let rs = compile(&case.policy.validate().unwrap());
            let script = pbxfw_nft::lower(&rs, &pbxfw_nft::Options::default()).unwrap();
            (
                path.file_stem().unwrap().to_string_lossy().to_string(),
                script.text,
            )
        })
        .collect()
}

#[test]
fn every_case_script_checks_and_loads_idempotently() {
    if common::skipped() {
        return;
    }
    let ns = common::Netns::new("smoke");
    // Someone else's table, present before pbxfw: it must survive every load.
    let made = ns.exec_stdin(
        &["nft", "-f", "/dev/stdin"],
        "table inet admin {\n chain input {\n  type filter hook input priority 10; policy accept;\n  tcp dport 9999 counter accept\n }\n}\n",
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let foreign = ns.run(&["nft", "list", "table", "inet", "admin"]);
    let list = || ns.run(&["nft", "list", "table", "inet", "pbxfw"]);

    for (name, script) in scripts() {
        let check = ns.exec_stdin(&["nft", "-c", "-f", "/dev/stdin"], &script);
        assert!(
            check.status.success(),
            "{name}: nft -c -f failed:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let load = ns.exec_stdin(&["nft", "-f", "/dev/stdin"], &script);
        assert!(
            load.status.success(),
            "{name}: nft -f failed:\n{}",
            String::from_utf8_lossy(&load.stderr)
        );
        let first = list();
        // A ban added at run time must survive the reload.
        ns.run(&[
            "nft",
            "add",
            "element",
            "inet",
            "pbxfw",
            "ban4",
            "{ 192.0.2.99 timeout 1h }",
        ]);
        let load = ns.exec_stdin(&["nft", "-f", "/dev/stdin"], &script);
        assert!(
            load.status.success(),
            "{name}: second nft -f failed:\n{}",
            String::from_utf8_lossy(&load.stderr)
        );
        let bans = ns.run(&["nft", "list", "set", "inet", "pbxfw", "ban4"]);
        assert!(
            bans.contains("192.0.2.99"),
            "{name}: the ban did not survive the reload:\n{bans}"
        );
        ns.run(&[
            "nft",
            "delete",
            "element",
            "inet",
            "pbxfw",
            "ban4",
            "{ 192.0.2.99 }",
        ]);
        assert_eq!(first, list(), "{name}: loading twice changed the ruleset");
        assert_eq!(
            foreign,
            ns.run(&["nft", "list", "table", "inet", "admin"]),
            "{name}: touched another table"
        );
        // Start the next policy from an empty namespace table, as a first load would.
        ns.run(&["nft", "delete", "table", "inet", "pbxfw"]);
    }
}
