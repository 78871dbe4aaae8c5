//! A real DNS server for kernel tests: Debian's dnsmasq inside a test's namespace.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::netns::{Killed, Netns};

/// dnsmasq on 127.0.0.1:5353 inside `ns`, answering `*.test` from `hosts` with TTL 1 s.
pub fn dnsmasq(ns: &Netns, hosts: &Path, extra: &[&str]) -> Killed {
    let bin = std::env::var("PBXFW_DNSMASQ").unwrap_or("/usr/sbin/dnsmasq".into());
    assert!(
        Path::new(&bin).exists(),
        "{bin} is missing (apt-get install dnsmasq-base; scripts/test installs it)"
    );
    let addn = format!("--addn-hosts={}", hosts.display());
    let log = format!(
        "--log-facility={}",
        hosts.with_file_name("dnsmasq.log").display()
    );
    let mut argv = vec![
        bin.as_str(),
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--port=5353",
        "--pid-file=",
        "--user=root",
        "--local=/test/",
        "--local-ttl=1",
        addn.as_str(),
        "--log-queries",
        log.as_str(),
    ];
    argv.extend_from_slice(extra);
    let guard = ns.spawn(&argv, &[], &hosts.with_file_name("dnsmasq.stderr"));
    // Ready when it listens (a query sent earlier would wait out the resolver's timeout).
    let start = Instant::now();
    while !ns.run(&["ss", "-lun"]).contains("127.0.0.1:5353") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "dnsmasq did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    guard
}
