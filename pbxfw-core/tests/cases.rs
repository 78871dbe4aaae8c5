//! The shared case suite (`testdata/cases/*.toml`) against the reference evaluator.

use pbxfw_core::compile;
use pbxfw_testkit::cases::CaseFile;

#[test]
fn every_case_gets_its_expected_verdict() {
    let mut failures = Vec::new();
    let mut total = 0;
    for path in pbxfw_testkit::case_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let case = CaseFile::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let policy = case
            .policy
            .validate()
            .unwrap_or_else(|d| panic!("{name}: invalid policy:\n{d}"));
        let rs = compile(&policy);
        for (i, e) in case.expects.iter().enumerate() {
            total += 1;
            if let Err(diff) = e.run(&rs) {
                failures.push(format!("{name} expect[{i}] ({}): {diff}", e.note));
            }
        }
    }
    assert!(
        total >= 60,
        "the suite must hold at least 60 cases, found {total}"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
