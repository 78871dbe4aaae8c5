//! The PHP suite (`php/tests/suite.php`) against the `libpbxfw.so` cargo just built: with
//! Debian's `php-cli` loading the library through `FFI::cdef`; with `php-cgi` using
//! `ffi.preload` of `pbxfw_php.h` and `opcache.preload` of the wrapper, as a PBX's php-fpm
//! would; and with `php-cli` inside a network namespace this test creates, for apply, status,
//! set updates and disable.

mod common;

use std::path::PathBuf;

use std::process::{Command, Output};

fn passed(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("checks passed"),
        "{what} failed ({:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // No warning or notice may reach the output either.
    assert!(
        !stdout.contains("Warning") && !stdout.contains("Notice") && !stdout.contains("Deprecated"),
        "{what}: {stdout}"
    );
    stdout
}

/// State and run directories of the test's own: the suite never reads the host's (an applied
/// record there changes what a command without a backend acts on, and how long it takes).
fn own_dirs(cmd: &mut Command) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    cmd.env("PBXFW_STATE_DIR", dir.path().join("state"))
        .env("PBXFW_RUN_DIR", dir.path().join("run"));
    dir
}

#[test]
fn php_cli_through_ffi_cdef() {
    let (crate_dir, lib_dir) = common::paths();
    let mut cmd = Command::new("php");
    let _dirs = own_dirs(&mut cmd);
    let out = cmd
        .args([
            "-d",
            "ffi.enable=1",
            "-d",
            "error_reporting=-1",
            "-d",
            "display_errors=stderr",
        ])
        .arg(crate_dir.join("php/tests/suite.php"))
        .arg("library")
        .arg(lib_dir.join("libpbxfw.so"))
        .output()
        .expect("php-cli is installed (scripts/test installs it)");
    eprintln!("{}", passed(out, "php-cli"));
}

#[test]
fn php_cgi_with_ffi_preload_and_opcache_preload() {
    let (crate_dir, lib_dir) = common::paths();
    let header = crate_dir.join("include/pbxfw_php.h");
    let preload = crate_dir.join("php/preload.php");
    let mut cmd = Command::new("php-cgi");
    let _dirs = own_dirs(&mut cmd);
    let out = cmd
        .arg("-q")
        .args(["-d", "ffi.enable=preload"])
        .arg("-d")
        .arg(format!("ffi.preload={}", header.display()))
        .args(["-d", "opcache.enable=1", "-d", "opcache.preload_user=root"])
        .arg("-d")
        .arg(format!("opcache.preload={}", preload.display()))
        .args(["-d", "error_reporting=-1", "-d", "display_errors=stderr"])
        .arg(crate_dir.join("php/tests/suite.php"))
        // FFI_LIB "libpbxfw.so" is found the way dlopen finds libraries.
        .env("LD_LIBRARY_PATH", &lib_dir)
        .env("PBXFW_PHP_ARGS", "scope")
        .output()
        .expect("php-cgi is installed (scripts/test installs it)");
    eprintln!("{}", passed(out, "php-cgi"));
}

#[test]
fn php_applies_reports_and_disables_in_a_namespace() {
    if pbxfw_testkit::netns::skipped() {
        return;
    }
    let (crate_dir, lib_dir) = common::paths();
    let ns = pbxfw_testkit::netns::Netns::new("php");
    let suite = crate_dir.join("php/tests/suite.php");
    let lib = lib_dir.join("libpbxfw.so");
    let lock = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("php-suite.lock");
    let _ = std::fs::remove_file(&lock);
    // An apply keeps its record (what a rollback returns to) where the host's state lives.
    let state = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let out = ns.exec_env(
        &[
            ("PBXFW_LOCK_FILE", lock.to_str().unwrap()),
            ("PBXFW_STATE_DIR", state.path().to_str().unwrap()),
            ("PBXFW_RUN_DIR", run.path().to_str().unwrap()),
        ],
        &[
            "php",
            "-d",
            "ffi.enable=1",
            "-d",
            "error_reporting=-1",
            "-d",
            "display_errors=stderr",
            suite.to_str().unwrap(),
            "library",
            lib.to_str().unwrap(),
            "kernel",
        ],
    );
    eprintln!("{}", passed(out, "php-cli in a namespace"));
}
