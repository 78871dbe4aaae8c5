//! The project's Kamailio registrar (`testdata/e2e/kamailio.cfg`: digest authentication, its
//! results written as pbxfw JSON events) run inside a network namespace, for the responsive
//! end-to-end test and the efficacy harness.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::netns::{Killed, Netns};
use crate::probe::{DST4, DST6};

/// The recipe in the repository.
pub fn recipe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/e2e/kamailio.cfg")
}

/// Start Kamailio in `ns`, listening on the PBX's addresses ([`DST4`], [`DST6`]), with its
/// configuration and run files in `dir` and its events (its standard error) in
/// `dir/events.log`. It leads its own process group, so the returned guard ends the workers
/// it forks too.
pub fn start(ns: &Netns, dir: &Path) -> Killed {
    let cfg = std::fs::read_to_string(recipe())
        .unwrap()
        .replace("LISTEN_ADDR6", DST6)
        .replace("LISTEN_ADDR", DST4);
    std::fs::write(dir.join("kamailio.cfg"), cfg).unwrap();
    let events = std::fs::File::create(dir.join("events.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "kamailio", "-f"])
        .arg(dir.join("kamailio.cfg"))
        .args(["-DD", "-E", "-Y"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(events)
        .process_group(0)
        .spawn()
        .expect("kamailio is installed");
    Killed(child)
}
