//! The C test suite (`tests/c/test_capi.c`): compiled with `gcc -Wall -Wextra -Werror` against
//! the committed `pbxfw.h`, linked to the `libpbxfw.so` cargo just built, run, and run again under
//! valgrind, which must report no error and no leak.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where the suite finds `testdata/` (the Asterisk tree for discovery).
fn testdata_define(crate_dir: &std::path::Path) -> String {
    format!(
        "-DPBXFW_TESTDATA=\"{}\"",
        crate_dir.join("../testdata").display()
    )
}

#[test]
fn c_suite_passes_and_valgrind_is_clean() {
    let (crate_dir, lib_dir) = common::paths();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test_capi");
    // The flags come from the committed pbxfw.pc, pointed at the build tree.
    let flags = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &crate_dir)
        .arg(format!("--define-variable=libdir={}", lib_dir.display()))
        .arg(format!(
            "--define-variable=includedir={}",
            crate_dir.join("include").display()
        ))
        .args(["--cflags", "--libs", "pbxfw"]));
    run(Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg(testdata_define(&crate_dir))
        .arg(crate_dir.join("tests/c/test_capi.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(&exe));
    assert!(run(&mut Command::new(&exe)).contains("all checks passed"));
    run(Command::new("valgrind")
        .args([
            "-q",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=99",
        ])
        .arg(&exe));
}

#[test]
fn the_c_header_compiles_as_cpp_too() {
    let (crate_dir, _) = common::paths();
    let src = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("header.cpp");
    std::fs::write(
        &src,
        "#include \"pbxfw.h\"\nint main() { return PBXFW_OK; }\n",
    )
    .unwrap();
    run(Command::new("g++")
        .args(["-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
        .arg(crate_dir.join("include"))
        .arg(&src));
}

#[test]
fn the_static_library_links_with_the_private_libs_of_pbxfw_pc() {
    let (crate_dir, lib_dir) = common::paths();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test_capi_static");
    let private = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &crate_dir)
        .args(["--libs-only-l", "--static", "pbxfw"]));
    let private: Vec<&str> = private
        .split_whitespace()
        .filter(|l| *l != "-lpbxfw")
        .collect();
    run(Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir.join("include"))
        .arg(testdata_define(&crate_dir))
        .arg(crate_dir.join("tests/c/test_capi.c"))
        .arg(lib_dir.join("libpbxfw.a"))
        .args(private)
        .arg("-o")
        .arg(&exe));
    assert!(run(&mut Command::new(&exe)).contains("all checks passed"));
}
