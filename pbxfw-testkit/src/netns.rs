//! Network namespaces for kernel tests: created per test, removed on drop (also on panic).

use std::process::{Command, Output};

/// Whether kernel tests are switched off for this run (`PBXFW_SKIP_KERNEL=1`). Without that
/// variable they run, and fail loudly when the machine cannot run them (not root, no nft).
pub fn skipped() -> bool {
    if std::env::var_os("PBXFW_SKIP_KERNEL").is_some() {
        eprintln!("kernel test skipped: PBXFW_SKIP_KERNEL is set");
        return true;
    }
    false
}

/// A network namespace that is deleted when dropped. What pbxfw keeps on the host (the
/// applied record, pending confirmations, the daemon's state) goes to a directory of the
/// namespace's own for every command run through it, never to /var/lib/pbxfw: a test neither
/// reads another's nor leaves its own behind.
pub struct Netns {
    /// The name under /run/netns.
    pub name: String,
    /// `PBXFW_STATE_DIR` and `PBXFW_RUN_DIR` of the commands run inside (under it), removed on
    /// drop.
    pub host_dir: std::path::PathBuf,
}

impl Netns {
    /// `program` (the command line under test) run inside, as the CLI tests run it: with
    /// [`Netns::host_env`], and neither `$PBXFW_POLICY` nor `$SSH_CONNECTION` from the test's
    /// own environment (a test that wants a session sets one).
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program])
            .envs(self.host_env())
            .env_remove("PBXFW_POLICY")
            .env_remove("SSH_CONNECTION");
        c
    }

    /// The environment every command run inside gets (a caller's own entries win).
    pub fn host_env(&self) -> [(&'static str, String); 2] {
        [
            (
                "PBXFW_STATE_DIR",
                self.host_dir.join("state").display().to_string(),
            ),
            (
                "PBXFW_RUN_DIR",
                self.host_dir.join("run").display().to_string(),
            ),
        ]
    }
}

impl Netns {
    /// Create `pbxfw-test-<tag>-<pid>`, first removing leftovers with the same tag.
    pub fn new(tag: &str) -> Netns {
        let prefix = format!("pbxfw-test-{tag}-");
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&prefix) {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            }
        }
        let name = format!("{prefix}{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("the ip command (iproute2) is installed");
        assert!(
            out.status.success(),
            "ip netns add {name} failed (kernel tests need root; PBXFW_SKIP_KERNEL=1 skips them): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let host_dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&host_dir);
        let ns = Netns { name, host_dir };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a command inside the namespace; returns its output.
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.exec_env(&[], argv)
    }

    /// Run a command inside the namespace with extra environment variables.
    pub fn exec_env(&self, env: &[(&str, &str)], argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .envs(self.host_env())
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
    }

    /// Run a command inside the namespace with stdin; returns its output.
    pub fn exec_stdin(&self, argv: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .envs(self.host_env())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Start a long-running command inside the namespace (a daemon, a DNS or SIP server) with
    /// extra environment variables, its standard error appended to `stderr`; it is killed when
    /// the returned guard is dropped, also when the test fails.
    pub fn spawn(&self, argv: &[&str], env: &[(&str, &str)], stderr: &std::path::Path) -> Killed {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr)
            .unwrap_or_else(|e| panic!("{}: {e}", stderr.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .envs(self.host_env())
            .envs(env.iter().copied())
            .env_remove("PBXFW_POLICY")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        Killed(child)
    }

    /// Run a command that must succeed; returns its stdout.
    pub fn run(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?} failed in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A spawned process, killed and reaped when dropped (also on panic). A process that forks
/// workers (Kamailio) must be spawned as the leader of its own process group
/// (`CommandExt::process_group(0)`): the whole group is killed, or the workers outlive the
/// test, orphaned in a namespace that no longer exists.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let Ok(pid) = libc::pid_t::try_from(self.0.id()) else {
            return;
        };
        // SAFETY: kill(2) takes plain integers. A negative pid names a process group; when
        // the child leads none, this fails with ESRCH and the child alone is killed below.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.host_dir);
    }
}

/// Run `f` on a thread switched into the namespace: library calls that act on "the current
/// network namespace" (and the `nft` processes they spawn) then act on this one.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a valid namespace descriptor; only this thread changes namespace.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
