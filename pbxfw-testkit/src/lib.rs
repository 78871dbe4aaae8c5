//! Test support shared by pbxfw's crates: policy and packet generators for property tests, and
//! network namespaces with real-packet probes for kernel tests. Not published; used as a
//! dev-dependency only.
#![deny(missing_docs)]

pub mod cases;
pub mod contract;
pub mod dns;
pub mod gen;
pub mod kamailio;
pub mod lapi;
pub mod memory;
pub mod netns;
pub mod probe;
pub mod responsive;
pub mod suites;

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

/// The standard output of a command that must have succeeded; otherwise a failure showing its
/// exit code and both outputs.
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's exit code and both outputs, for a failure message.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The repository root.
pub fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compare `actual` with the golden file at `path` (a unified diff on mismatch);
/// `PBXFW_BLESS=1` rewrites the file instead.
pub fn golden(path: &std::path::Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("PBXFW_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
        .unified_diff()
        .header(&path.display().to_string(), "actual")
        .to_string();
    Err(format!(
        "{} differs (PBXFW_BLESS=1 to accept):\n{diff}",
        path.display()
    ))
}

/// The ruleset a TOML policy compiles to (the policy must be valid).
pub fn ruleset(toml: &str) -> pbxfw_core::Ruleset {
    pbxfw_core::compile(
        &pbxfw_core::Policy::from_toml(toml)
            .unwrap()
            .validate()
            .unwrap(),
    )
}

/// A set element from its text (`192.0.2.9`, `2001:db8:9:9::/64`), with a timeout in seconds.
pub fn element(prefix: &str, timeout: Option<u64>) -> pbxfw_core::Element {
    pbxfw_core::Element {
        prefix: prefix.parse().unwrap(),
        timeout: timeout.map(std::time::Duration::from_secs),
    }
}
