//! Golden IR text and nft scripts for every policy in `testdata/cases/`. `PBXFW_BLESS=1`
//! rewrites them.

use pbxfw_core::compile;
use pbxfw_testkit::cases::CaseFile;
use pbxfw_testkit::{golden, root};

#[test]
fn ir_and_nft_match_golden_files() {
    let mut errors = Vec::new();
    let files = pbxfw_testkit::case_files();
    for path in &files {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let case = CaseFile::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rs = compile(&case.policy.validate().unwrap());
        pbxfw_core::verify_ir(&rs).unwrap();
        let text = rs.to_text();
        assert_eq!(
            pbxfw_core::parse_ir(&text).as_ref(),
            Ok(&rs),
            "{stem}: parse(print(ir)) != ir"
        );
        if let Err(e) = golden(&root().join(format!("testdata/golden/{stem}.ir")), &text) {
            errors.push(e);
        }
        let script = pbxfw_nft::lower(&rs, &pbxfw_nft::Options::default()).unwrap();
        if let Err(e) = golden(
            &root().join(format!("testdata/golden/{stem}.nft")),
            &script.text,
        ) {
            errors.push(e);
        }
    }
    assert!(files.len() >= 8, "at least 8 policies in testdata/cases");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
