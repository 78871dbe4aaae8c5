//! Test support shared by pbxfw's crates: policy and packet generators for property tests, and
//! network namespaces with real-packet probes for kernel tests. Not published; used as a
//! dev-dependency only.
#![deny(missing_docs)]

pub mod gen;
pub mod netns;
pub mod probe;

/// The shared case files, `testdata/cases/*.toml`, sorted.
pub fn case_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/cases");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}
