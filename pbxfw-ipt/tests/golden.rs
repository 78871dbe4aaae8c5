//! Golden ipset + iptables-restore scripts for every policy in `testdata/cases/`.
//! `PBXFW_BLESS=1` rewrites them.

use pbxfw_core::compile;
use pbxfw_testkit::cases::CaseFile;
use pbxfw_testkit::{golden, root};

#[test]
fn iptables_scripts_match_golden_files() {
    let mut errors = Vec::new();
    let files = pbxfw_testkit::case_files();
    for path in &files {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let case = CaseFile::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rs = compile(&case.policy.validate().unwrap());
        let script = pbxfw_ipt::lower(&rs).unwrap_or_else(|e| panic!("{stem}: {e}"));
        if let Err(e) = golden(
            &root().join(format!("testdata/golden/{stem}.ipt")),
            &script.text(),
        ) {
            errors.push(e);
        }
    }
    assert!(files.len() >= 8, "at least 8 policies in testdata/cases");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
