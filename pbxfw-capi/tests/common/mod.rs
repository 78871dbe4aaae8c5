//! What the C and PHP suites share: the built library.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The crate directory and the directory holding `libpbxfw.so` and `libpbxfw.a`, built for
/// this profile first: `cargo test` itself builds only the Rust library the tests link.
pub fn paths() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<()> = OnceLock::new();
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // target/<profile>/deps/<test>-… → target/<profile>
    let lib_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "--lib", "-p", "pbxfw-capi"])
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"));
        if lib_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p pbxfw-capi failed");
    });
    assert!(
        lib_dir.join("libpbxfw.so").is_file() && lib_dir.join("libpbxfw.a").is_file(),
        "no libpbxfw.so/.a in {}",
        lib_dir.display()
    );
    (crate_dir, lib_dir)
}
