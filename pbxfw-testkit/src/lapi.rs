//! A real CrowdSec Local API for fleet tests and benchmarks: Debian's `crowdsec` run as LAPI
//! only (`-no-cs -no-capi`) inside a network namespace, with its own configuration and SQLite
//! database in a temporary directory. `cscli` provisions machines and bouncer keys by writing
//! the database directly, as an administrator does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::netns::{Killed, Netns};

/// Port the LAPI listens on inside its namespace.
pub const PORT: u16 = 18080;

/// Whether Debian's crowdsec (the LAPI and cscli) is installed.
pub fn installed() -> bool {
    Path::new("/usr/bin/crowdsec").exists() && Path::new("/usr/bin/cscli").exists()
}

/// A LAPI running in a namespace; stopped and removed when dropped.
pub struct Lapi {
    /// Its directory: `config.yaml`, `data/`, `lapi.log`.
    pub dir: PathBuf,
    listen: String,
    child: Option<Killed>,
    ns_name: String,
    tls: bool,
}

impl Lapi {
    /// Write a configuration for a LAPI listening on `listen` (`ADDR:PORT`) with its database
    /// in `dir`; nothing is started yet.
    pub fn new(dir: &Path, listen: &str, ns: &Netns) -> Lapi {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::create_dir_all(dir.join("notifications")).unwrap();
        let d = dir.display();
        // The alert flush keeps every alert for the length of a test or a benchmark: LAPI 1.4
        // deletes the oldest alerts (and their live decisions) above `max_items`.
        let config = format!(
            "common:\n  daemonize: false\n  log_media: stdout\n  log_level: info\n  working_dir: .\n\
             config_paths:\n  config_dir: {d}/\n  data_dir: {d}/data/\n  simulation_path: /etc/crowdsec/simulation.yaml\n  \
             hub_dir: /var/lib/crowdsec/hub/\n  index_path: /var/lib/crowdsec/hub/.index.json\n  notification_dir: {d}/notifications/\n  \
             plugin_dir: /usr/lib/crowdsec/plugins/\n\
             cscli:\n  output: human\n  color: \"no\"\n\
             db_config:\n  log_level: info\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n  use_wal: true\n  flush:\n    max_items: 10000000\n    max_age: 30d\n\
             plugin_config:\n  user: nobody\n  group: nogroup\n\
             api:\n  client:\n    insecure_skip_verify: false\n    credentials_path: {d}/local_api_credentials.yaml\n  \
             server:\n    log_level: info\n    listen_uri: {listen}\n    profiles_path: /etc/crowdsec/profiles.yaml\n    trusted_ips:\n      - 127.0.0.1\n      - ::1\n\
             prometheus:\n  enabled: false\n"
        );
        std::fs::write(dir.join("config.yaml"), config).unwrap();
        let lapi = Lapi {
            dir: dir.to_path_buf(),
            listen: listen.to_string(),
            child: None,
            ns_name: ns.name.clone(),
            tls: false,
        };
        // cscli's own machine: `decisions add/delete` go through the API as it.
        let creds = dir.join("local_api_credentials.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            "cscli-admin",
            "--password",
            "cscli-admin-password",
            "-f",
            &creds.display().to_string(),
            "--force",
        ]);
        let (host, port) = listen.rsplit_once(':').unwrap();
        let host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
        std::fs::write(
            &creds,
            format!(
                "url: http://{host}:{port}\nlogin: cscli-admin\npassword: cscli-admin-password\n"
            ),
        )
        .unwrap();
        lapi
    }

    fn config(&self) -> String {
        self.dir.join("config.yaml").display().to_string()
    }

    /// Run `cscli` on this LAPI's configuration (inside the namespace: some commands call the
    /// API); panics when it fails.
    pub fn cscli(&self, args: &[&str]) -> String {
        let out = self.cscli_output(args);
        assert!(
            out.status.success(),
            "cscli {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `cscli`, whatever it answers.
    pub fn cscli_output(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "cscli",
                "-c",
                &self.config(),
            ])
            .args(args)
            .output()
            .expect("cscli runs")
    }

    /// Create a validated machine.
    pub fn add_machine(&self, name: &str, password: &str) {
        let creds = self.dir.join(format!("{name}.yaml"));
        self.cscli(&[
            "machines",
            "add",
            name,
            "--password",
            password,
            "-f",
            &creds.display().to_string(),
            "--force",
        ]);
    }

    /// Create a bouncer with a chosen key.
    pub fn add_bouncer(&self, name: &str, key: &str) {
        self.cscli(&["bouncers", "add", name, "-k", key]);
    }

    /// Serve HTTPS with `cert` and `key` (PEM files) from the next start; `cscli` keeps
    /// talking to it without checking the certificate.
    pub fn enable_tls(&mut self, cert: &Path, key: &Path) {
        let config = std::fs::read_to_string(self.dir.join("config.yaml")).unwrap();
        let config = config
            .replacen(
                "    trusted_ips:",
                &format!(
                    "    tls:\n      cert_file: {}\n      key_file: {}\n    trusted_ips:",
                    cert.display(),
                    key.display()
                ),
                1,
            )
            .replacen(
                "insecure_skip_verify: false",
                "insecure_skip_verify: true",
                1,
            );
        std::fs::write(self.dir.join("config.yaml"), config).unwrap();
        let creds = self.dir.join("local_api_credentials.yaml");
        let text = std::fs::read_to_string(&creds).unwrap();
        std::fs::write(&creds, text.replacen("url: http://", "url: https://", 1)).unwrap();
        self.tls = true;
    }

    /// Start the LAPI and wait until it answers (at most 20 s).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the LAPI is already running");
        let log = self.dir.join("lapi.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_name,
                "crowdsec",
                "-c",
                &self.config(),
            ])
            .args(["-no-cs", "-no-capi"])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("crowdsec runs");
        self.child = Some(Killed(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        let (host, port) = self.listen.rsplit_once(':').unwrap();
        let host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
        let scheme = if self.tls { "https" } else { "http" };
        loop {
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns_name,
                    "curl",
                    "-skf",
                    "-o",
                    "/dev/null",
                ])
                .arg(format!("{scheme}://{host}:{port}/health"))
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the LAPI did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the LAPI (its database stays).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// The decisions the LAPI holds as `cscli decisions list -o json` says (values).
    pub fn decision_values(&self) -> Vec<String> {
        let text = self.cscli(&["decisions", "list", "-o", "json", "--limit", "0"]);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
        let mut out = Vec::new();
        for alert in v.as_array().into_iter().flatten() {
            for d in alert["decisions"].as_array().into_iter().flatten() {
                if let Some(s) = d["value"].as_str() {
                    out.push(s.to_string());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
