//! `pbxfw`: the command line of the pbxfw firewall for PBX hosts.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use pbxfw_core::BackendError;
use pbxfw_core::Explanation;
use pbxfw_core::Severity;
use pbxfw_runtime::render::{render, Target};
use pbxfw_runtime::{ApplyRequest, BackendName, Error, Loaded};

/// `println!` that ends the process quietly when standard output is closed
/// (`pbxfw status | head`) instead of panicking.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

use pbxfw_runtime::{daemon, edit, names, replay, safety};

/// Exit codes, as documented in `--help`.
mod remote;

mod exit {
    pub const OK: u8 = 0;
    pub const WARNINGS: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const IO: u8 = 3;
    pub const UNSUPPORTED: u8 = 4;
    pub const KERNEL: u8 = 5;
    pub const SAFETY: u8 = 6;
    /// The daemon could not be asked through its control socket.
    pub const UNAVAILABLE: u8 = 7;
    /// `status`, `bans`: pbxfw is not loaded (the answer is printed all the same).
    pub const NOT_LOADED: u8 = 3;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  `check --strict`: the policy has warnings
  2  the policy is invalid (every problem is printed with its path), or the command line is wrong
  3  a file could not be read
  4  the requested backend or feature is not available
  5  the kernel refused the change or could not be reached (the previous ruleset stays loaded)
  6  refused for safety: the lock file exists, the apply would lock the administrator out, or an
     apply is already waiting for confirmation; or the control socket does not allow the caller
  7  the daemon could not be asked through its control socket (not running, busy, no answer)
`status` and `bans` exit with 3 when pbxfw is not loaded (and print their answer all the same).

Run by a user other than root while the daemon serves its control socket (/run/pbxfw/control.sock,
or $PBXFW_CONTROL_SOCKET), `status`, `bans`, `explain --live`, `apply`, `confirm`, `rollback`,
`disable`, `ban`, `unban`, `trust`, `untrust` and `blacklist add|del` ask the daemon through it
(members of group pbxfw may look, of pbxfw-admin change; docs/control-socket.md).

With no POLICY, $PBXFW_POLICY is read, else /etc/pbxfw/pbxfw.toml; without either a command
refuses. `--example` uses the embedded example policy of a typical PBX (a demonstration, not
your network). POLICY `-` reads standard input; a name ending in .json is read as JSON,
anything else as TOML.";

#[derive(Parser)]
#[command(name = "pbxfw", version, about = "A firewall for VoIP PBX hosts", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which kernel backend. `iptables` uses the variant the host uses (see
/// `pbxfw_ipt::Variant::detect`); the other two force one.
#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// nftables (`table inet pbxfw`).
    Nft,
    /// iptables + ipset, on the variant the host uses.
    Iptables,
    /// iptables + ipset, forcing iptables-nft.
    IptablesNft,
    /// iptables + ipset, forcing iptables-legacy.
    IptablesLegacy,
}

/// The backend a command acts on: the one asked for, else the one pbxfw last applied with (so
/// that `status`, `disable` and the edits follow an `apply --backend iptables`), else nft.
trait Chosen {
    fn name(self) -> BackendName;
}

impl Chosen for Option<Backend> {
    fn name(self) -> BackendName {
        self.map_or_else(BackendName::current, Backend::name)
    }
}

impl Backend {
    /// The runtime's name for it.
    fn name(self) -> BackendName {
        match self {
            Backend::Nft => BackendName::Nft,
            Backend::Iptables => BackendName::Iptables,
            Backend::IptablesNft => BackendName::IptablesNft,
            Backend::IptablesLegacy => BackendName::IptablesLegacy,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum DiscoverFormat {
    Toml,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    Udp,
    Tcp,
    Icmp,
    Icmpv6,
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    New,
    Established,
    Related,
    Invalid,
}

/// The policy file of a command that takes it as its argument: `pbxfw apply FILE` or, as
/// every command takes it, `pbxfw apply --policy FILE`.
#[derive(clap::Args, Clone)]
struct PolicyArg {
    /// Policy file (TOML or JSON); default: $PBXFW_POLICY, else /etc/pbxfw/pbxfw.toml.
    #[arg(value_name = "POLICY")]
    policy: Option<String>,
    /// The same, as an option (as `blacklist`, `trust`, `ban`, `show` and `replay` take it).
    #[arg(long = "policy", value_name = "FILE", conflicts_with = "policy")]
    policy_file: Option<String>,
}

impl PolicyArg {
    fn get(&self) -> Option<&str> {
        self.policy.as_deref().or(self.policy_file.as_deref())
    }
}

/// What an edit of the policy file (`blacklist`, `trust`, `untrust`) acts on, and whom it must
/// not cut off.
#[derive(clap::Args, Clone)]
struct EditArgs {
    /// The policy file (edited by `blacklist`, `trust` and `untrust`; read by `ban`).
    #[arg(long)]
    policy: Option<String>,
    /// Backend (default: the one pbxfw last applied with, else nft).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// An administrator address whose SSH access (the policy's SSH port), or with `:PORT`
    /// another TCP port, must survive the edit (repeatable; the session in $SSH_CONNECTION and
    /// `settings.admins` are always checked).
    #[arg(long = "admin", value_name = "ADDR[:PORT]")]
    admins: Vec<pbxfw_runtime::safety::Admin>,
    /// Edit even if an administrator would be cut off.
    #[arg(long)]
    force: bool,
}

impl EditArgs {
    /// The file and the request.
    fn request(self) -> Result<(String, edit::EditRequest), Fail> {
        let file = edit::file(self.policy.as_deref())?;
        Ok((
            file,
            edit::EditRequest {
                backend: self.backend.name(),
                admins: self.admins,
                force: self.force,
            },
        ))
    }
}

/// How hostnames are resolved (`daemon`, `resolve`).
#[derive(clap::Args, Clone)]
struct DnsArgs {
    /// Nameserver to ask (repeatable; ADDR or ADDR:PORT). Default: those of /etc/resolv.conf.
    #[arg(long = "dns-server", value_name = "ADDR[:PORT]", value_parser = parse_dns_server)]
    dns_servers: Vec<std::net::SocketAddr>,
    /// An answer is kept at least this many seconds, whatever its TTL.
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    dns_ttl_floor: u32,
    /// An answer is kept at most this many seconds, whatever its TTL.
    #[arg(long, value_name = "SECONDS", default_value = "3600")]
    dns_ttl_ceiling: u32,
    /// How long to wait for each reply before trying again or the next server (default: the
    /// `options timeout:` of /etc/resolv.conf, else 5 s as glibc; 2 s with --dns-server).
    #[arg(long, value_name = "MS")]
    dns_timeout_ms: Option<u64>,
}

impl DnsArgs {
    fn options(&self) -> names::DnsOptions {
        names::DnsOptions {
            servers: self.dns_servers.clone(),
            ttl_floor: self.dns_ttl_floor.max(1),
            ttl_ceiling: self.dns_ttl_ceiling,
            timeout: self
                .dns_timeout_ms
                .map(|ms| std::time::Duration::from_millis(ms.max(10))),
        }
    }
}

fn parse_dns_server(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{s}` is not ADDR or ADDR:PORT"))
}

#[derive(Subcommand)]
enum BlacklistCmd {
    /// Add addresses, CIDRs or hostnames to the blacklist (policy file and kernel).
    Add {
        /// Entries to add.
        #[arg(required = true)]
        entries: Vec<String>,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Remove entries from the blacklist (policy file and kernel).
    Del {
        /// Entries to remove.
        #[arg(required = true)]
        entries: Vec<String>,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// List the blacklist of the policy file.
    List {
        /// The policy file.
        #[arg(long)]
        policy: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(Subcommand)]
enum VpnCmd {
    /// The client is connected: its address gets its user's grants.
    #[command(after_help = AFTER_HELP)]
    Connect(VpnArgs),
    /// The client is gone: the grants end now.
    #[command(after_help = AFTER_HELP)]
    Disconnect(VpnArgs),
}

#[derive(clap::Args)]
struct VpnArgs {
    /// The public address the client came from (OpenVPN sets $untrusted_ip).
    #[arg(long, env = "untrusted_ip")]
    address: String,
    /// The identity it authenticated as (OpenVPN sets $common_name).
    #[arg(long, env = "common_name")]
    identity: String,
    /// How long the grant lasts unless it disconnects first: `12h` (60 s to 24 h; default 24 h).
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
}

#[derive(Subcommand)]
enum AcmeCmd {
    /// Open a window (or give the open one a new length): it closes by itself.
    #[command(after_help = AFTER_HELP)]
    Open {
        /// How long: `60s`, `5m` (1 s to 1 h).
        #[arg(long = "for", value_name = "DURATION", default_value = "60s")]
        duration: String,
        #[command(flatten)]
        out: AcmeOut,
    },
    /// Close the window now.
    #[command(after_help = AFTER_HELP)]
    Close {
        #[command(flatten)]
        out: AcmeOut,
    },
    /// Whether a window is open, and until when.
    #[command(after_help = AFTER_HELP)]
    Status {
        #[command(flatten)]
        out: AcmeOut,
    },
}

#[derive(clap::Args)]
struct AcmeOut {
    /// Backend (default: the one pbxfw last applied with, else nft).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Subcommand)]
enum ZoneCmd {
    /// Put each ID (address, CIDR or hostname) in ZONE, moving it from another zone; into the
    /// trusted zone, its bans are lifted. Refused when it would cut off an administrator.
    #[command(after_help = AFTER_HELP)]
    Add {
        /// trusted, local (internal), other, internet (external) or reject.
        zone: String,
        /// Addresses, CIDRs or hostnames.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Take each ID out of ZONE (it falls back to its interface's zone).
    #[command(after_help = AFTER_HELP)]
    Del {
        /// The zone.
        zone: String,
        /// Addresses, CIDRs or hostnames.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// What is in ZONE (default: every zone): interfaces, networks and hosts.
    #[command(after_help = AFTER_HELP)]
    List {
        /// The zone.
        zone: Option<String>,
        /// The policy file.
        #[arg(long)]
        policy: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

// Parsed once per process: the size of the largest variant (the daemon's options) costs
// nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Load a policy into the kernel of this network namespace, atomically.
    #[command(after_help = AFTER_HELP)]
    Apply {
        #[command(flatten)]
        policy: PolicyArg,
        /// Use the embedded example policy of a typical PBX (a demonstration, not your
        /// network) instead of a file.
        #[arg(long, conflicts_with_all = ["policy", "policy_file"])]
        example: bool,
        /// Backend (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Add a counter to every rule (shown by `status`).
        #[arg(long)]
        counters: bool,
        /// Roll back to the previous ruleset unless `pbxfw confirm` comes within SECONDS.
        #[arg(long, value_name = "SECONDS")]
        confirm: Option<u64>,
        /// An administrator address whose SSH access (the policy's SSH port), or with `:PORT` another TCP
        /// port, must survive (repeatable; the session in $SSH_CONNECTION is always checked).
        #[arg(long = "admin", value_name = "ADDR[:PORT]")]
        admins: Vec<pbxfw_runtime::safety::Admin>,
        /// Apply even if the administrator would be locked out.
        #[arg(long)]
        force: bool,
        /// How the policy's hostnames are resolved when some have no answer yet (at most 2 s).
        #[command(flatten)]
        dns: DnsArgs,
    },
    /// Keep the ruleset of the last `apply --confirm`.
    #[command(after_help = AFTER_HELP)]
    Confirm,
    /// Go back to the ruleset before the last `apply --confirm`, now.
    #[command(after_help = AFTER_HELP)]
    Rollback {
        /// Backend (default: the one the apply waiting for confirmation used; another is
        /// refused).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Wait for the deadline of this confirmation, and roll back only if it is still
        /// unconfirmed then (used by the timer `apply --confirm` starts).
        #[arg(long, value_name = "ID", hide = true)]
        when_due: Option<String>,
    },
    /// At boot (the pbxfw-boot systemd unit): Safe Mode, an overdue rollback, then apply.
    #[command(after_help = AFTER_HELP)]
    Boot {
        #[command(flatten)]
        policy: PolicyArg,
        /// Use the embedded example policy of a typical PBX (a demonstration, not your
        /// network) instead of a file.
        #[arg(long, conflicts_with_all = ["policy", "policy_file"])]
        example: bool,
        /// Backend (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Never hold the rules back, whatever the boot history says.
        #[arg(long)]
        no_safe_mode: bool,
        /// Seconds between updates of this boot's length in the boot history.
        #[arg(long, default_value = "30", hide = true)]
        heartbeat: u64,
    },
    /// Show what is loaded: fingerprint, sets, bans with remaining time, counters.
    #[command(after_help = AFTER_HELP)]
    Status {
        /// Backend (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Remove pbxfw's rules (its own table only) from the kernel.
    #[command(after_help = AFTER_HELP)]
    Disable {
        /// Backend (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
    },
    /// Edit the blacklist.
    #[command(subcommand, after_help = AFTER_HELP)]
    Blacklist(BlacklistCmd),
    /// Certificate renewal (Let's Encrypt HTTP-01) without opening port 80: a window admits,
    /// from everyone, TCP connections to port 80 whose first request line is
    /// `GET /.well-known/acme-challenge/` (docs/acme.md; needs `settings.acme`).
    #[command(subcommand, after_help = AFTER_HELP)]
    Acme(AcmeCmd),
    /// First run: look at this host (interfaces, routes, your SSH session, Asterisk's files),
    /// propose a policy, check it keeps you in, and write it. Applies nothing.
    #[command(after_help = AFTER_HELP)]
    Init {
        /// Where to write the policy.
        #[arg(long, default_value = "/etc/pbxfw/pbxfw.toml")]
        output: PathBuf,
        /// The Asterisk configuration to discover ports, media ranges and trunks from.
        #[arg(long, default_value = "/etc/asterisk")]
        asterisk_dir: PathBuf,
        /// Ask nothing: take the proposals and the flags.
        #[arg(long)]
        non_interactive: bool,
        /// A zone for an interface instead of the proposal (repeatable): IFACE=ZONE.
        #[arg(long = "zone", value_name = "IFACE=ZONE")]
        zones: Vec<String>,
        /// The administrator's address (default: the client of $SSH_CONNECTION).
        #[arg(long, value_name = "ADDR[:PORT]")]
        admin: Option<pbxfw_runtime::safety::Admin>,
        /// Keep phones from registering from unknown addresses (the responsive layer off).
        #[arg(long)]
        no_responsive: bool,
        /// Replace an existing policy file.
        #[arg(long)]
        force: bool,
    },
    /// Print the completion script for SHELL (bash, zsh, fish, …) on standard output.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (pbxfw.8 and one per command) into DIR, for packaging.
    #[command(hide = true)]
    Manpages {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
    /// What each zone opens (or ZONE's): interfaces, networks, services with their ports and
    /// where they came from (catalogue, policy, custom, discovery), and what is open before the
    /// zones (trunks, media, registered devices).
    #[command(after_help = AFTER_HELP)]
    Show {
        /// trusted, local, other, internet or reject (default: every zone).
        zone: Option<String>,
        /// Policy file (TOML or JSON).
        #[arg(long)]
        policy: Option<String>,
        /// Use the embedded example policy of a typical PBX (a demonstration, not your
        /// network) instead of a file.
        #[arg(long, conflicts_with = "policy")]
        example: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// List the bans in force: prefix, origin (kernel tier, state machine, by hand), reason,
    /// start and end.
    #[command(after_help = AFTER_HELP)]
    Bans {
        /// Backend (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Ban an address or network by hand for a while (it comes back after a reboot until it
    /// ends; `unban` lifts it). What the policy protects is never banned.
    #[command(after_help = AFTER_HELP)]
    Ban {
        /// Address or CIDR.
        prefix: String,
        /// How long: `90s`, `30m`, `12h`, `7d` (at most 24 d 20 h; for longer, the blacklist).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why, recorded with the ban and shown by `pbxfw bans`.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Lift bans for good: the kernel's (state machine, tiers, by hand, slow lane) and the
    /// daemon's memory of them, whose strikes are forgiven.
    #[command(after_help = AFTER_HELP)]
    Unban {
        /// Addresses or CIDRs; every ban overlapping one is lifted.
        #[arg(required = true)]
        prefixes: Vec<String>,
        /// Backend (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
    },
    /// Zone membership, as `fwconsole firewall add|del|list`: put addresses, networks or
    /// hostnames in a zone (policy file and kernel), take them out, list them.
    #[command(subcommand)]
    Zone(ZoneCmd),
    /// A VPN client connected or disconnected: while connected, the public address it came
    /// from gets the grants of the user it authenticated as (docs/vpn.md). For OpenVPN's
    /// client-connect and client-disconnect scripts; always through the daemon's control
    /// socket.
    #[command(subcommand)]
    Vpn(VpnCmd),
    /// The five zones, their other names (FreePBX's `internal`, `external`), what each is
    /// for, and what is in it (`fwconsole firewall listzones`).
    #[command(after_help = AFTER_HELP)]
    Zones {
        /// The policy file.
        #[arg(long)]
        policy: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Put an address or network in the trusted zone (policy file and kernel), and lift its
    /// bans.
    #[command(after_help = AFTER_HELP)]
    Trust {
        /// Address or CIDR.
        addr: String,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Follow PBX security events and drive the responsive layer (bans, clamps, registrations).
    #[command(after_help = AFTER_HELP)]
    Daemon {
        #[command(flatten)]
        policy: PolicyArg,
        /// Asterisk AMI address (host:port).
        #[arg(long, value_name = "HOST:PORT", env = "PBXFW_AMI")]
        ami: Option<String>,
        /// AMI user.
        #[arg(long, default_value = "pbxfw", env = "PBXFW_AMI_USER")]
        ami_user: String,
        /// AMI secret (or $PBXFW_AMI_SECRET).
        #[arg(
            long,
            env = "PBXFW_AMI_SECRET",
            hide_env_values = true,
            default_value = ""
        )]
        ami_secret: String,
        /// Asterisk log file to follow (repeatable). Not followed when AMI is configured,
        /// unless --log-with-ami: a sender can write into Asterisk's logs (docs/events.md).
        #[arg(long = "log", value_name = "FILE")]
        logs: Vec<PathBuf>,
        /// Follow the --log files even when AMI is configured.
        #[arg(long)]
        log_with_ami: bool,
        /// JSON-lines event file to follow (repeatable).
        #[arg(long = "events", value_name = "FILE")]
        events: Vec<PathBuf>,
        /// Unix socket accepting JSON-lines events (created 0600: root only).
        #[arg(long, value_name = "PATH")]
        events_socket: Option<PathBuf>,
        /// Let this group write events to the socket too (mode 0660).
        #[arg(long, value_name = "GROUP", requires = "events_socket")]
        events_socket_group: Option<String>,
        /// Where the responsive state is kept across restarts (default:
        /// /var/lib/pbxfw/responsive.json, under $PBXFW_STATE_DIR when set; `status` and
        /// `bans` read it there).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Seconds between housekeeping ticks.
        #[arg(long, default_value = "10")]
        tick: u64,
        /// Backend (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        #[command(flatten)]
        dns: DnsArgs,
        /// A program to run for each ban, unban, registration and reported identity, with the facts in its
        /// environment and the action as JSON on its input (an absolute path root owns and
        /// only root may write).
        #[arg(long, value_name = "PROGRAM", env = "PBXFW_HOOK")]
        hook: Option<PathBuf>,
        /// A hook still running after this many seconds is killed.
        #[arg(long, value_name = "SECONDS", default_value = "10", requires = "hook")]
        hook_timeout: u64,
        /// Hooks run at once at most.
        #[arg(long, value_name = "N", default_value = "4", requires = "hook")]
        hook_workers: usize,
        /// Serve metrics for Prometheus on this loopback address (GET /metrics).
        #[arg(long, value_name = "ADDR:PORT", env = "PBXFW_METRICS")]
        metrics: Option<std::net::SocketAddr>,
        /// The control socket, through which members of the pbxfw groups look at and change
        /// the firewall without root (default: /run/pbxfw/control.sock, or
        /// $PBXFW_CONTROL_SOCKET).
        #[arg(long, value_name = "PATH")]
        control: Option<PathBuf>,
        /// Serve no control socket.
        #[arg(long, conflicts_with = "control")]
        no_control: bool,
        /// The group that may connect to the control socket and look (name or gid).
        #[arg(
            long,
            value_name = "GROUP",
            default_value = "pbxfw",
            env = "PBXFW_CONTROL_GROUP"
        )]
        control_group: String,
        /// The group that may also change things through it (name or gid; its members must be
        /// in --control-group too).
        #[arg(
            long,
            value_name = "GROUP",
            default_value = "pbxfw-admin",
            env = "PBXFW_CONTROL_ADMIN_GROUP"
        )]
        control_admin_group: String,
        /// The group that may also tell of VPN clients connecting (name or gid; a VPN server's
        /// scripts; its members must be in --control-group too).
        #[arg(
            long,
            value_name = "GROUP",
            default_value = "pbxfw-vpn",
            env = "PBXFW_CONTROL_VPN_GROUP"
        )]
        control_vpn_group: String,
        /// Seconds a WireGuard peer (users.*.wireguard) stays connected after its latest
        /// handshake. While traffic flows WireGuard makes one before a session's keys reach
        /// 180 s, so a bound under about 200 s can drop active peers between handshakes
        /// (docs/vpn.md).
        #[arg(long, value_name = "SECS", default_value_t = pbxfw_runtime::wireguard::DEFAULT_IDLE,
              value_parser = clap::value_parser!(u64).range(5..=86_400))]
        wireguard_idle: u64,
        /// Seconds between two readings of the WireGuard peers (`wg show all dump`).
        #[arg(long, value_name = "SECS", default_value_t = 5,
              value_parser = clap::value_parser!(u64).range(1..=60))]
        wireguard_poll: u64,
    },
    /// Resolve the policy's hostnames now and bring the kernel's sets up to date (the daemon
    /// does this continuously); print each hostname's addresses.
    #[command(after_help = AFTER_HELP)]
    Resolve {
        #[command(flatten)]
        policy: PolicyArg,
        /// Use the embedded example policy of a typical PBX (a demonstration, not your
        /// network) instead of a file.
        #[arg(long, conflicts_with_all = ["policy", "policy_file"])]
        example: bool,
        /// Backend (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// Only resolve and print; leave the kernel alone.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        dns: DnsArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Run a recorded Asterisk log, AMI transcript or JSON-lines file through the responsive
    /// state machine as a dry run: what would have been banned, clamped, promoted, and why.
    #[command(after_help = AFTER_HELP)]
    Replay {
        /// Recorded files (the kind is detected from the content).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Policy file.
        #[arg(long)]
        policy: Option<String>,
        /// Use the embedded example policy of a typical PBX instead of a file.
        #[arg(long, conflicts_with = "policy")]
        example: bool,
        /// Year of log timestamps that carry none (default: this year).
        #[arg(long)]
        year: Option<i32>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Take an address or network out of the trusted zone (policy file and kernel).
    #[command(after_help = AFTER_HELP)]
    Untrust {
        /// Address or CIDR.
        addr: String,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Print the ruleset a policy compiles to.
    #[command(after_help = AFTER_HELP)]
    Compile {
        #[command(flatten)]
        policy: PolicyArg,
        /// Use the embedded example policy of a typical PBX (a demonstration, not your
        /// network) instead of a file.
        #[arg(long, conflicts_with_all = ["policy", "policy_file"])]
        example: bool,
        /// Which backend's rules to print.
        #[arg(long, value_enum, default_value = "nft")]
        backend: Backend,
        /// Print the backend-neutral IR instead.
        #[arg(long)]
        ir: bool,
        /// Add a counter to every rule.
        #[arg(long)]
        counters: bool,
    },
    /// Read the Asterisk configuration and print the ports, media ranges and trunks it implies,
    /// as a policy fragment; each item names the file and line it came from.
    #[command(after_help = AFTER_HELP)]
    Discover {
        /// The Asterisk configuration directory.
        #[arg(long, value_name = "DIR", default_value = "/etc/asterisk")]
        asterisk_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "toml")]
        format: DiscoverFormat,
    },
    /// Validate a policy and print every problem with its path.
    #[command(after_help = AFTER_HELP)]
    Check {
        #[command(flatten)]
        policy: PolicyArg,
        /// Use the embedded example policy of a typical PBX (a demonstration, not your
        /// network) instead of a file.
        #[arg(long, conflicts_with_all = ["policy", "policy_file"])]
        example: bool,
        /// Exit 1 when there are warnings.
        #[arg(long)]
        strict: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Say what happens to a packet and which rule decides.
    #[command(after_help = AFTER_HELP)]
    Explain {
        #[command(flatten)]
        policy: PolicyArg,
        /// Use the embedded example policy of a typical PBX (a demonstration, not your
        /// network) instead of a file.
        #[arg(long, conflicts_with_all = ["policy", "policy_file"])]
        example: bool,
        /// Input interface.
        #[arg(long = "in", value_name = "IFACE")]
        iif: String,
        /// Source address.
        #[arg(long)]
        src: IpAddr,
        /// Protocol.
        #[arg(long, value_enum)]
        proto: ProtoArg,
        /// Destination port (udp, tcp).
        #[arg(long)]
        dport: Option<u16>,
        /// Source port (udp, tcp).
        #[arg(long)]
        sport: Option<u16>,
        /// ICMP or ICMPv6 type (default: echo request).
        #[arg(long)]
        icmp_type: Option<u8>,
        /// Connection-tracking state.
        #[arg(long, value_enum, default_value = "new")]
        state: StateArg,
        /// The packet answers a connection the PBX opened (with --state established or
        /// related): such answers meet the blacklist and bans on every packet.
        #[arg(long)]
        reply: bool,
        /// Treat the source as a registered device.
        #[arg(long, conflicts_with = "live")]
        registered: bool,
        /// Ask the kernel: the loaded ruleset with its bans, slow lane and registrations as
        /// they are now (no policy file).
        #[arg(long, conflicts_with_all = ["policy", "policy_file", "example"])]
        live: bool,
        /// Backend asked by --live (default: the one pbxfw last applied with, else nft).
        #[arg(long, value_enum, requires = "live")]
        backend: Option<Backend>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

/// A failure that ends the command: its message and exit code.
struct Fail(u8, String);

/// The one place a runtime error becomes an exit code (documented in `--help`).
impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let code = match &e {
            Error::Parse { .. } | Error::Invalid { .. } | Error::Usage(_) => exit::INVALID,
            Error::Io { .. } | Error::State(_) => exit::IO,
            Error::Refused(_) | Error::Backend(BackendError::Locked(_)) => exit::SAFETY,
            Error::Backend(BackendError::Unsupported { .. }) => exit::UNSUPPORTED,
            Error::Backend(_) => exit::KERNEL,
            Error::Denied(_) => exit::SAFETY,
            Error::Unavailable(_) => exit::UNAVAILABLE,
        };
        let message = match e {
            // One line per problem, each with its path, as `check` prints them.
            Error::Invalid { name, diagnostics } => diagnostics
                .iter()
                .map(|d| format!("{name}: {d}"))
                .collect::<Vec<_>>()
                .join("\n"),
            e => e.to_string(),
        };
        Fail(code, message)
    }
}

/// The name clap takes for a value (`udp`, `established`).
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .expect("no value is skipped")
        .get_name()
        .to_string()
}

/// The policy, its warnings printed.
fn load(path: Option<&str>, example: bool) -> Result<Loaded, Fail> {
    let loaded = if example {
        eprintln!("pbxfw: the example policy of a typical PBX (a demonstration, not your network)");
        pbxfw_runtime::policy::example()?
    } else {
        pbxfw_runtime::load(path)?
    };
    for w in loaded.warnings() {
        eprintln!("{}: {w}", loaded.name);
    }
    Ok(loaded)
}

fn print_edit(o: &pbxfw_runtime::edit::EditOutcome) {
    use pbxfw_runtime::edit::KernelChange;
    println!(
        "{}: {}{}",
        o.file,
        o.summary,
        if o.indexed {
            " (by the edit index)"
        } else {
            ""
        }
    );
    match &o.kernel {
        KernelChange::NotLoaded => {
            println!("pbxfw is not loaded; the change takes effect at the next apply")
        }
        KernelChange::Elements {
            added,
            removed,
            elapsed_ms,
            fingerprint,
        } => println!(
            "kernel: {added} element(s) added, {removed} removed without a reload in {elapsed_ms:.1} ms; fingerprint {fingerprint}"
        ),
        KernelChange::Reloaded {
            reason,
            fingerprint,
        } => println!("kernel: ruleset reloaded ({reason}); fingerprint {fingerprint}"),
    }
    for w in &o.warnings {
        eprintln!("warning: {w}");
    }
}

fn run(cli: Cli) -> Result<u8, Fail> {
    let command = match remote::run(cli.command)? {
        remote::Ran::Done(code) => return Ok(code),
        remote::Ran::Local(command) => command,
    };
    match command {
        Command::Apply {
            policy,
            example,
            backend,
            counters,
            confirm,
            admins,
            force,
            dns,
        } => {
            let loaded = load(policy.get(), example)?;
            let out = pbxfw_runtime::apply(
                &loaded,
                &ApplyRequest {
                    backend: backend.name(),
                    counters,
                    confirm,
                    admins,
                    force,
                    dns: dns.options(),
                },
            )?;
            print_applied(&out, confirm);
            Ok(exit::OK)
        }
        Command::Confirm => {
            let fp = pbxfw_runtime::confirm()?;
            println!("confirmed: ruleset {fp} stays");
            Ok(exit::OK)
        }
        Command::Rollback { backend, when_due } => {
            let backend = backend.map(|b| b.name());
            let msg = match when_due {
                Some(id) => safety::rollback(Some(&id), backend)?,
                None => pbxfw_runtime::rollback(backend)?,
            };
            println!("{msg}");
            Ok(exit::OK)
        }
        Command::Boot {
            policy,
            example,
            backend,
            no_safe_mode,
            heartbeat,
        } => {
            let loaded = load(policy.get(), example)?;
            pbxfw_runtime::apply::boot(
                &loaded,
                backend.name(),
                !no_safe_mode,
                std::time::Duration::from_secs(heartbeat.max(1)),
            )?;
            Ok(exit::OK)
        }
        Command::Status { backend, format } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Ok(print_status_answer(
                &pbxfw_runtime::status(backend.name(), now)?,
                format,
            ))
        }
        Command::Disable { backend } => {
            print_disabled(pbxfw_runtime::disable(backend.name())?, backend.name());
            Ok(exit::OK)
        }
        Command::Acme(cmd) => {
            let now = unix_now();
            let (w, format) = match cmd {
                AcmeCmd::Open { duration, out } => {
                    let seconds = acme_seconds(&duration)?;
                    (
                        pbxfw_runtime::acme::open(out.backend.name(), seconds, now)?,
                        out.format,
                    )
                }
                AcmeCmd::Close { out } => (
                    pbxfw_runtime::acme::close(out.backend.name(), now)?,
                    out.format,
                ),
                AcmeCmd::Status { out } => (
                    pbxfw_runtime::acme::status(out.backend.name(), now)?,
                    out.format,
                ),
            };
            print_acme(&w, format, now);
            Ok(exit::OK)
        }
        Command::Blacklist(BlacklistCmd::Add { entries, edit }) => {
            let (file, req) = edit.request()?;
            print_edit(&edit::blacklist_add(&file, &req, &entries)?);
            Ok(exit::OK)
        }
        Command::Blacklist(BlacklistCmd::Del { entries, edit }) => {
            let (file, req) = edit.request()?;
            print_edit(&edit::blacklist_del(&file, &req, &entries)?);
            Ok(exit::OK)
        }
        Command::Blacklist(BlacklistCmd::List { policy, format }) => {
            let entries = edit::blacklist_list(policy.as_deref())?;
            match format {
                Format::Json => println!("{:#}", serde_json::json!(entries)),
                Format::Text => entries.iter().for_each(|e| println!("{e}")),
            }
            Ok(exit::OK)
        }
        Command::Init {
            output,
            asterisk_dir,
            non_interactive,
            zones,
            admin,
            no_responsive,
            force,
        } => init(
            &output,
            &asterisk_dir,
            !non_interactive && std::io::IsTerminal::is_terminal(&std::io::stdin()),
            &zones,
            admin,
            !no_responsive,
            force,
        ),
        Command::Completions { shell } => {
            // Into a buffer, then printed as everything else is (a reader that goes away
            // ends the output quietly).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pbxfw", &mut script);
            print!("{}", String::from_utf8_lossy(&script));
            Ok(exit::OK)
        }
        Command::Manpages { dir } => {
            let written = write_manpages(&dir)
                .map_err(|e| Fail(exit::IO, format!("{}: {e}", dir.display())))?;
            println!("{written} man page(s) written to {}", dir.display());
            Ok(exit::OK)
        }
        Command::Show {
            zone,
            policy,
            example,
            format,
        } => {
            let zone = zone
                .map(|z| {
                    z.parse::<pbxfw_core::Zone>().map_err(|()| {
                        Fail(
                            exit::INVALID,
                            format!(
                                "{z:?} is not a zone: trusted, local, other, internet or reject"
                            ),
                        )
                    })
                })
                .transpose()?;
            let loaded = load(policy.as_deref(), example)?;
            let s = pbxfw_runtime::show::show(&loaded, zone);
            match format {
                Format::Json => println!("{:#}", serde_json::to_value(&s).expect("serialisable")),
                Format::Text => print_show(&s),
            }
            Ok(exit::OK)
        }
        Command::Bans { backend, format } => {
            let now = unix_now();
            Ok(print_bans_answer(
                &pbxfw_runtime::bans::list(backend.name(), now)?,
                format,
                now,
            ))
        }
        Command::Ban {
            prefix,
            duration,
            reason,
            edit,
        } => {
            let prefix = pbxfw_runtime::bans::parse_prefixes(&[prefix])?[0];
            let seconds = pbxfw_core::parse_seconds(&duration).ok_or_else(|| {
                Fail(
                    exit::INVALID,
                    format!("--for {duration:?} is not a duration such as 90s, 30m, 12h or 7d"),
                )
            })?;
            let loaded = load(edit.policy.as_deref(), false)?;
            let req = pbxfw_runtime::bans::BanRequest {
                backend: edit.backend.name(),
                prefix,
                seconds: u64::from(seconds),
                reason,
                admins: edit.admins,
                force: edit.force,
            };
            let now = unix_now();
            let b = pbxfw_runtime::bans::ban(
                &loaded.policy,
                &req,
                now,
                &pbxfw_runtime::bans::requester(),
            )?;
            print_banned(&b, now);
            Ok(exit::OK)
        }
        Command::Unban { prefixes, backend } => {
            let prefixes = pbxfw_runtime::bans::parse_prefixes(&prefixes)?;
            let u = pbxfw_runtime::bans::unban(
                backend.name(),
                &prefixes,
                unix_now(),
                &pbxfw_runtime::bans::requester(),
            )?;
            print_unbanned(&u);
            Ok(exit::OK)
        }
        Command::Trust { addr, edit } => {
            let (file, req) = edit.request()?;
            print_edit(&edit::trust(&file, &req, &addr, unix_now())?);
            Ok(exit::OK)
        }
        Command::Zone(ZoneCmd::Add { zone, ids, edit }) => {
            let zone = edit::zone_named(&zone)?;
            let (file, req) = edit.request()?;
            print_edit(&edit::zone_add(&file, &req, zone, &ids, unix_now())?);
            Ok(exit::OK)
        }
        Command::Zone(ZoneCmd::Del { zone, ids, edit }) => {
            let zone = edit::zone_named(&zone)?;
            let (file, req) = edit.request()?;
            print_edit(&edit::zone_del(&file, &req, zone, &ids)?);
            Ok(exit::OK)
        }
        Command::Zone(ZoneCmd::List {
            zone,
            policy,
            format,
        }) => {
            let zone = zone.as_deref().map(edit::zone_named).transpose()?;
            let loaded = load(policy.as_deref(), false)?;
            print_zones(&edit::zone_members(&loaded, zone), format, false);
            Ok(exit::OK)
        }
        // Handled by `remote::run`, always through the socket.
        Command::Vpn(_) => Err(Fail(
            exit::UNAVAILABLE,
            "vpn: only the daemon acts on VPN sessions".into(),
        )),
        Command::Zones { policy, format } => {
            let loaded = load(policy.as_deref(), false)?;
            print_zones(&edit::zone_members(&loaded, None), format, true);
            Ok(exit::OK)
        }
        Command::Untrust { addr, edit } => {
            let (file, req) = edit.request()?;
            print_edit(&edit::untrust(&file, &req, &addr)?);
            Ok(exit::OK)
        }
        Command::Daemon {
            policy,
            ami,
            ami_user,
            ami_secret,
            logs,
            log_with_ami,
            events,
            events_socket,
            events_socket_group,
            state,
            tick,
            backend,
            dns,
            hook,
            hook_timeout,
            hook_workers,
            metrics,
            control,
            no_control,
            control_group,
            control_admin_group,
            control_vpn_group,
            wireguard_idle,
            wireguard_poll,
        } => {
            let daemon = daemon::Daemon::new(daemon::DaemonConfig {
                policy: policy.get().map(String::from),
                sources: daemon::Sources {
                    ami: ami.map(|a| (a, ami_user, ami_secret)),
                    logs,
                    json_files: events,
                    json_socket: events_socket,
                    json_socket_group: events_socket_group,
                },
                logs_with_ami: log_with_ami,
                state: state
                    .unwrap_or_else(|| pbxfw_host::dirs::state_dir().join("responsive.json")),
                tick: std::time::Duration::from_secs(tick.max(1)),
                backend: backend.name(),
                dns: dns.options(),
                hooks: hook.map(|program| pbxfw_runtime::hooks::HookConfig {
                    program,
                    timeout: std::time::Duration::from_secs(hook_timeout.max(1)),
                    workers: hook_workers.clamp(1, 64),
                }),
                metrics,
                control: (!no_control).then(|| pbxfw_runtime::control::ControlConfig {
                    path: control.unwrap_or_else(pbxfw_runtime::control::socket_path),
                    group: control_group,
                    admin_group: control_admin_group,
                    vpn_group: control_vpn_group,
                    policy: policy.get().map(String::from),
                }),
                wireguard: pbxfw_runtime::wireguard::WireGuardConfig {
                    idle: wireguard_idle,
                    poll: wireguard_poll,
                    ..Default::default()
                },
            })?;
            daemon.run()?;
            Ok(exit::OK)
        }
        Command::Resolve {
            policy,
            example,
            backend,
            dry_run,
            dns,
            format,
        } => {
            let loaded = load(policy.get(), example)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Everything is looked up now, whatever the schedule says: the user asked.
            let r = names::resolve_now(
                &loaded,
                (!dry_run).then(|| backend.name()),
                &dns.options(),
                now,
            )?;
            if let Some(p) = &r.problem {
                eprintln!("warning: {p}; starting from no answers");
            }
            for c in &r.changes {
                let list = |v: &[pbxfw_core::Prefix]| {
                    v.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                eprintln!(
                    "{}: added [{}], removed [{}]",
                    c.set,
                    list(&c.added),
                    list(&c.removed)
                );
            }
            match format {
                Format::Json => {
                    println!(
                        "{:#}",
                        serde_json::to_value(&r.status).expect("serialisable")
                    )
                }
                Format::Text => {
                    for l in names::status_lines(&r.status) {
                        println!("{l}");
                    }
                }
            }
            if r.errors.is_empty() {
                Ok(exit::OK)
            } else {
                Err(Fail(exit::KERNEL, r.errors.join("\n")))
            }
        }
        Command::Replay {
            files,
            policy,
            example,
            year,
            format,
        } => {
            let loaded = load(policy.as_deref(), example)?;
            let year = year.unwrap_or_else(daemon::current_year);
            let start = std::time::Instant::now();
            // Only the JSON report lists every action.
            let detail = match format {
                Format::Json => replay::Detail::Actions,
                Format::Text => replay::Detail::Summary,
            };
            let (report, leftovers) = replay::replay_files(&loaded.policy, &files, year, detail)?;
            let elapsed = start.elapsed();
            match format {
                Format::Json => {
                    println!("{:#}", serde_json::to_value(&report).expect("serialisable"))
                }
                Format::Text => print_replay(&report, elapsed),
            }
            // The process ends now: freeing the report's thousands of entries, and the
            // machine's tens of thousands, one by one would only delay the exit (milliseconds
            // for a large log).
            std::mem::forget(report);
            std::mem::forget(leftovers);
            Ok(exit::OK)
        }
        Command::Compile {
            policy,
            example,
            backend,
            ir,
            counters,
        } => {
            let loaded = load(policy.get(), example)?;
            let target = if ir {
                Target::Ir
            } else {
                backend.name().as_str().parse()?
            };
            print!("{}", render(&loaded.ruleset, target, counters)?);
            Ok(exit::OK)
        }
        Command::Discover {
            asterisk_dir,
            format,
        } => {
            let found = pbxfw_runtime::policy::discover(&asterisk_dir)?;
            match format {
                DiscoverFormat::Toml => {
                    print!("{}", found.to_toml(&asterisk_dir.display().to_string()))
                }
                DiscoverFormat::Json => println!(
                    "{:#}",
                    pbxfw_runtime::policy::discovery_json(&asterisk_dir, &found)
                ),
            }
            Ok(exit::OK)
        }
        Command::Check {
            policy,
            example,
            strict,
            format,
        } => {
            let loaded = if example {
                pbxfw_runtime::policy::example()
            } else {
                pbxfw_runtime::load(policy.get())
            };
            let (name, diags) = match loaded {
                Ok(l) => (l.name, l.policy.warnings),
                Err(Error::Invalid { name, diagnostics }) => (name, diagnostics.0),
                Err(e @ Error::Parse { .. }) if format == Format::Json => {
                    let out = serde_json::json!({
                        "ok": false, "errors": 1, "warnings": 0,
                        "diagnostics": [{"path": "(policy)", "severity": "error", "message": e.to_string()}],
                    });
                    println!("{out:#}");
                    return Ok(exit::INVALID);
                }
                Err(e) => return Err(e.into()),
            };
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let warnings = diags.len() - errors;
            match format {
                Format::Json => {
                    let out = serde_json::json!({
                        "ok": errors == 0,
                        "errors": errors,
                        "warnings": warnings,
                        "diagnostics": diags,
                    });
                    println!("{out:#}");
                }
                Format::Text => {
                    for d in &diags {
                        println!("{name}: {d}");
                    }
                    println!("{name}: {errors} error(s), {warnings} warning(s)");
                }
            }
            Ok(if errors > 0 {
                exit::INVALID
            } else if strict && warnings > 0 {
                exit::WARNINGS
            } else {
                exit::OK
            })
        }
        Command::Explain {
            policy,
            example,
            iif,
            src,
            proto,
            dport,
            sport,
            icmp_type,
            state,
            reply,
            registered,
            live,
            backend,
            format,
        } => {
            let query = pbxfw_runtime::explain::Query {
                iface: iif,
                src,
                proto: value_name(proto),
                dport,
                sport,
                icmp_type,
                state: Some(value_name(state)),
                registered,
                reply,
            };
            if live {
                let now = unix_now();
                let e = pbxfw_runtime::explain::live(backend.name(), &query, now)?;
                print_live_answer(&e, format, now);
                return Ok(exit::OK);
            }
            let loaded = load(policy.get(), example)?;
            let e = pbxfw_runtime::explain::explain(&loaded.ruleset, &query)?;
            match format {
                Format::Json => println!("{:#}", serde_json::to_value(&e).expect("serialisable")),
                Format::Text => print_explanation(&e),
            }
            Ok(exit::OK)
        }
    }
}

/// What an apply did.
fn print_applied(out: &pbxfw_runtime::ApplyOutcome, confirm: Option<u64>) {
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    match (confirm, out.elapsed_ms) {
        (Some(secs), _) => println!(
            "applied: fingerprint {}; run `pbxfw confirm` within {secs} s, or it is rolled back",
            out.fingerprint
        ),
        (None, ms) => println!(
            "applied: fingerprint {} in {:.1} ms",
            out.fingerprint,
            ms.unwrap_or_default()
        ),
    }
}

/// What `disable` did.
fn print_disabled(was_loaded: bool, backend: BackendName) {
    if was_loaded {
        println!(
            "pbxfw disabled: {} removed",
            match backend {
                BackendName::Nft => "table inet pbxfw",
                _ => "the PBXFW chains, the jump from INPUT and the pbxfw_ ipsets",
            }
        );
    } else {
        println!("pbxfw was not loaded");
    }
}

/// `--for` of `acme open`.
fn acme_seconds(duration: &str) -> Result<u64, Fail> {
    pbxfw_core::parse_seconds(duration)
        .map(u64::from)
        .ok_or_else(|| {
            Fail(
                exit::INVALID,
                format!("--for {duration:?} is not a duration such as 60s or 5m"),
            )
        })
}

/// A certificate-renewal window.
fn print_acme(w: &pbxfw_runtime::acme::Window, format: Format, now: u64) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(w).expect("serializable"));
        return;
    }
    match (w.open, w.until) {
        (true, Some(until)) => println!(
            "acme: window open on tcp/{} until {} ({}), for connections starting {:?}",
            w.port,
            pbxfw_core::human::iso8601(until),
            pbxfw_runtime::human::relative(now, until),
            w.request
        ),
        (true, None) => println!(
            "acme: window open on tcp/{} with no end (an element without a timeout): `pbxfw acme close` closes it",
            w.port
        ),
        (false, _) => println!("acme: no window open; tcp/{} is as the policy has it", w.port),
    }
}

/// What a ban by hand did.
fn print_banned(b: &pbxfw_runtime::bans::Banned, now: u64) {
    println!(
        "banned {} until {} ({}) in {}: {}{}",
        b.prefix,
        b.until_iso,
        pbxfw_runtime::human::relative(now, b.until),
        b.set,
        b.reason,
        if b.kept_longer {
            " (it was banned for longer already: that ban stays)"
        } else {
            ""
        }
    );
}

/// What `unban` did.
fn print_unbanned(u: &pbxfw_runtime::bans::Unbanned) {
    for l in &u.lifted {
        println!("lifted {} from {}", l.element, l.set);
    }
    if !u.loaded {
        println!("pbxfw is not loaded: the daemon forgets these bans when it starts");
    } else if u.lifted.is_empty() {
        println!("no ban of these in the kernel; the daemon forgets any it remembers");
    } else {
        println!("the daemon forgets these bans and their strikes");
    }
}

/// `status`'s answer; its exit code, as `systemctl status` answers for a unit that is not
/// running.
fn print_status_answer(s: &pbxfw_runtime::Status, format: Format) -> u8 {
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    match format {
        Format::Json => println!("{}", s.to_json()),
        Format::Text => print_full_status(s),
    }
    if s.kernel.loaded {
        exit::OK
    } else {
        exit::NOT_LOADED
    }
}

/// `bans`'s answer, and its exit code.
fn print_bans_answer(b: &pbxfw_runtime::bans::Bans, format: Format, now: u64) -> u8 {
    for w in &b.warnings {
        eprintln!("warning: {w}");
    }
    match format {
        Format::Json => println!("{:#}", serde_json::to_value(b).expect("serialisable")),
        Format::Text => print_bans(b, now),
    }
    if b.loaded {
        exit::OK
    } else {
        exit::NOT_LOADED
    }
}

/// `explain --live`'s answer.
fn print_live_answer(e: &pbxfw_runtime::explain::LiveExplanation, format: Format, now: u64) {
    match format {
        Format::Json => println!("{:#}", serde_json::to_value(e).expect("serialisable")),
        Format::Text => print_live(e, now),
    }
}

/// `pbxfw status` as text.
fn print_full_status(s: &pbxfw_runtime::Status) {
    if let Some(m) = &s.safe_mode {
        println!(
            "SAFE MODE: {}",
            m["reason"].as_str().unwrap_or("rules held back")
        );
    }
    for p in &s.state_problems {
        println!(
            "STATE PROBLEM ({}): {}",
            p["state"].as_str().unwrap_or("?"),
            p["detail"].as_str().unwrap_or("?")
        );
    }
    if let Some(p) = &s.pending_confirmation {
        let now = unix_now();
        let deadline = p.deadline_ms.div_ceil(1000);
        println!(
            "waiting for confirmation: ruleset {} is rolled back at {} ({}) unless `pbxfw confirm` comes first",
            p.fingerprint,
            p.deadline_iso,
            pbxfw_runtime::human::relative(now, deadline)
        );
    }
    print_status(&s.kernel);
    if let Some(f) = &s.fleet {
        println!(
            "fleet: {} — {} decision(s) enforced, {} held, {} refused (pbxfw bans lists them); last pull {}",
            f.url,
            f.enforced,
            f.decisions,
            f.refused,
            f.last_pull
                .map_or("never".into(), |t| pbxfw_runtime::human::relative(unix_now(), t))
        );
    }
    if let Some(r) = &s.responsive {
        let c = &r["counters"];
        println!(
            "responsive daemon: {} event(s) acted on, {} ambiguous record(s) ignored, {} malformed; {} ban(s) in its state",
            c["events"], c["ambiguous"], c["malformed"], r["bans"]
        );
        for w in r["wrong_passwords"].as_array().into_iter().flatten() {
            let since = w["since"].as_u64().unwrap_or_default();
            println!(
                "account {} at {} has the wrong password since {} ({}): a known device, kept in the slow lane, never banned for it",
                w["account"].as_str().unwrap_or("?"),
                w["source"].as_str().unwrap_or("?"),
                w["since_iso"].as_str().unwrap_or("?"),
                pbxfw_runtime::human::relative(unix_now(), since)
            );
        }
    }
    if !s.hostnames.is_empty() {
        println!("hostnames:");
        for l in names::status_lines(&s.hostnames) {
            println!("{l}");
        }
    }
    if let Some(d) = &s.discovery {
        print_discovery(d);
    }
}

/// The discovery part of `status`: where it came from, what it found, and its notes.
fn print_discovery(d: &serde_json::Value) {
    println!(
        "discovered from {} ({} files):",
        d["dir"].as_str().unwrap_or("?"),
        d["files"].as_array().map_or(0, Vec::len)
    );
    let origins = d["origins"].as_array().cloned().unwrap_or_default();
    let origin_of = |path: &str| {
        origins
            .iter()
            .find(|o| o["path"] == path)
            .and_then(|o| o["origin"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    let p = &d["policy"];
    for key in ["rtp", "udptl"] {
        if let Some(r) = p["pbx"][key].as_str() {
            println!("  {key} {r} ({})", origin_of(&format!("pbx.{key}")));
        }
    }
    if let Some(services) = p["services"].as_object() {
        for (name, body) in services {
            let ports: Vec<String> = body["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, v)| {
                    format!(
                        "{} ({})",
                        v.as_str().unwrap_or("?"),
                        origin_of(&format!("services.{name}.ports[{i}]"))
                    )
                })
                .collect();
            println!("  {name}: {}", ports.join(", "));
        }
    }
    for (i, t) in p["pbx"]["trunks"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        println!(
            "  trunk {} {} {} ({})",
            t["name"].as_str().unwrap_or("?"),
            t["protocol"].as_str().unwrap_or("?"),
            t["host"].as_str().unwrap_or("?"),
            origin_of(&format!("pbx.trunks[{i}]"))
        );
    }
    for n in d["notes"].as_array().into_iter().flatten() {
        match n["origin"].as_object() {
            Some(o) => println!(
                "  note: {}:{}: {}",
                o.get("file").and_then(|f| f.as_str()).unwrap_or("?"),
                o.get("line").and_then(|l| l.as_u64()).unwrap_or(0),
                n["message"].as_str().unwrap_or("")
            ),
            None => println!("  note: {}", n["message"].as_str().unwrap_or("")),
        }
    }
}

fn print_replay(r: &replay::ReplayReport, elapsed: std::time::Duration) {
    // One write for the whole report: stdout is line-buffered, and a line per banned source
    // made a write(2) each, a tenth of the replay of a large log.
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    // A reader that went away (`| head`) is not an error of the replay.
    let _ = write_replay(&mut out, r, elapsed).and_then(|()| out.flush());
}

fn write_replay(
    out: &mut impl std::io::Write,
    r: &replay::ReplayReport,
    elapsed: std::time::Duration,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} records, {} security events, in {:.1} ms",
        r.records,
        r.events,
        elapsed.as_secs_f64() * 1000.0
    )?;
    writeln!(out, "would ban {} source(s):", r.banned.len())?;
    for (src, (at, why)) in &r.banned {
        write_ban(out, src, *at, why)?;
    }
    writeln!(out, "would clamp {} source(s):", r.clamped.len())?;
    for (src, at) in &r.clamped {
        writeln!(out, "  {:<40} at {at}", src.to_string())?;
    }
    writeln!(
        out,
        "would promote {} account(s) as registered:",
        r.registered.len()
    )?;
    for (acc, addrs) in &r.registered {
        write!(out, "  {acc:<20} from ")?;
        for (i, a) in addrs.iter().enumerate() {
            if i > 0 {
                out.write_all(b", ")?;
            }
            write_addr(out, a)?;
        }
        writeln!(out)?;
    }
    if r.reported > 0 {
        writeln!(
            out,
            "{} identity report(s) instead of bans (protected or NATed sources)",
            r.reported
        )?;
    }
    if r.ambiguous > 0 {
        writeln!(
            out,
            "{} record(s) ignored: a sender may have written them (see docs/events.md, \"Trust\")",
            r.ambiguous
        )?;
    }
    Ok(())
}

/// A banned source's line, `  {src:<40} at {at}  {why}`; for an IPv4 host (nearly all of
/// them) without the formatting machinery and the string `{:<40}` needs, which were most of
/// printing the report (half a millisecond for a thousand bans).
fn write_ban(
    out: &mut impl std::io::Write,
    src: &pbxfw_core::Prefix,
    at: u64,
    why: &str,
) -> std::io::Result<()> {
    let v4 = match src.addr() {
        IpAddr::V4(v4) if src.is_host() => v4,
        _ => return writeln!(out, "  {:<40} at {at}  {why}", src.to_string()),
    };
    let mut line = [b' '; 2 + 40 + 4];
    let mut addr = [0u8; 15];
    let n = ipv4_text(v4, &mut addr);
    line[2..2 + n].copy_from_slice(&addr[..n]);
    line[42..].copy_from_slice(b" at ");
    out.write_all(&line)?;
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = at;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.write_all(&digits[i..])?;
    out.write_all(b"  ")?;
    out.write_all(why.as_bytes())?;
    out.write_all(b"\n")
}

/// `a` as `Display` writes it; an IPv4 address without the formatting machinery, which was
/// most of printing a large replay's report (an account can register from thousands).
fn write_addr(out: &mut impl std::io::Write, a: &IpAddr) -> std::io::Result<()> {
    let IpAddr::V4(v4) = a else {
        return write!(out, "{a}");
    };
    let mut buf = [0u8; 15];
    let n = ipv4_text(*v4, &mut buf);
    out.write_all(&buf[..n])
}

/// Dotted-quad text of `v4` into `buf`; returns its length.
fn ipv4_text(v4: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> usize {
    let mut n = 0;
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    n
}

fn print_status(s: &pbxfw_core::Status) {
    let Some(fp) = &s.fingerprint else {
        println!("pbxfw is not loaded");
        return;
    };
    println!("pbxfw is loaded; fingerprint {fp}");
    println!("sets:");
    for set in &s.sets {
        println!("  {:<24} {} element(s)", set.name, set.size);
        // A fleet set holds up to a million decisions: the first ones, and where the rest are.
        const SHOWN: usize = 50;
        if set.elements.len() > SHOWN {
            println!(
                "    ({} more below the first {SHOWN}: --format json lists them all)",
                set.elements.len() - SHOWN
            );
        }
        for e in set.elements.iter().take(SHOWN) {
            match e.expires_in {
                Some(secs) => println!(
                    "    {:<40} expires in {}",
                    e.element,
                    pbxfw_runtime::human::duration(secs)
                ),
                None => println!("    {}", e.element),
            }
        }
    }
    if !s.counters.is_empty() {
        println!("counters:");
        for c in s.counters.iter().filter(|c| c.packets > 0) {
            println!(
                "  {:<12} {:>10} packets {:>12} bytes  {}",
                c.chain, c.packets, c.bytes, c.origin
            );
        }
    }
}

fn print_explanation(e: &Explanation) {
    let zone = e.zone.map_or("(none)".to_string(), |z| z.to_string());
    println!("verdict:    {}", e.verdict);
    println!("zone:       {zone}");
    println!("decided by: {}", e.decided_by);
    println!("step:       {} ({})", e.step, e.step_name);
    if let Some(r) = &e.rule {
        println!(
            "rule:       chain {} rule {}: {}",
            r.chain, r.index, r.origin
        );
    } else {
        println!("rule:       (chain policy)");
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `pbxfw init`: gather the facts, take the flags (and, on a terminal, the answers), write
/// and check the policy, say what to do next.
fn init(
    output: &std::path::Path,
    asterisk_dir: &std::path::Path,
    ask: bool,
    zone_flags: &[String],
    admin: Option<pbxfw_runtime::safety::Admin>,
    responsive: bool,
    force: bool,
) -> Result<u8, Fail> {
    use pbxfw_core::Zone;
    use pbxfw_runtime::init;
    let mut facts = init::Facts {
        interfaces: init::interfaces()?,
        admin: admin.or_else(init::ssh_admin),
        asterisk_dir: None,
    };
    match pbxfw_runtime::policy::discover(asterisk_dir) {
        Ok(d) => {
            println!(
                "Asterisk: {} file(s) in {}, {} trunk(s)",
                d.files.len(),
                asterisk_dir.display(),
                d.trunks.len()
            );
            facts.asterisk_dir = Some(asterisk_dir.to_path_buf());
        }
        Err(e) => println!("Asterisk: not discovered ({e}); ports are the catalogue's"),
    }
    let mut zones: std::collections::BTreeMap<String, Zone> = facts
        .interfaces
        .iter()
        .map(|i| (i.name.clone(), init::propose(i)))
        .collect();
    for z in zone_flags {
        let (iface, zone) = z
            .split_once('=')
            .and_then(|(i, z)| Some((i, z.parse::<Zone>().ok()?)))
            .ok_or_else(|| Fail(exit::INVALID, format!("--zone {z:?} is not IFACE=ZONE")))?;
        zones.insert(iface.to_string(), zone);
    }
    let mut responsive = responsive;
    if ask {
        let read = |prompt: &str| -> String {
            use std::io::Write;
            print!("{prompt}");
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            line.trim().to_string()
        };
        for i in &facts.interfaces {
            let addrs: Vec<String> = i
                .addresses
                .iter()
                .map(|(a, l)| format!("{a}/{l}"))
                .collect();
            loop {
                let answer = read(&format!(
                    "{} ({}{}) zone [{}]: ",
                    i.name,
                    addrs.join(" "),
                    if i.default_route {
                        ", default route"
                    } else {
                        ""
                    },
                    zones[&i.name]
                ));
                if answer.is_empty() {
                    break;
                }
                match answer.parse::<Zone>() {
                    Ok(z) => {
                        zones.insert(i.name.clone(), z);
                        break;
                    }
                    Err(()) => println!("  trusted, local, other, internet or reject"),
                }
            }
        }
        let current = facts.admin.map(|a| a.to_string()).unwrap_or_default();
        let answer = read(&format!(
            "administrator address (ADDR[:PORT]) [{current}]: "
        ));
        if !answer.is_empty() {
            facts.admin = Some(answer.parse().map_err(|e| Fail(exit::INVALID, e))?);
        }
        let answer = read("let phones register from anywhere (the responsive layer)? [Y/n]: ");
        responsive = !answer.eq_ignore_ascii_case("n") && !answer.eq_ignore_ascii_case("no");
    }
    let choices = init::Choices { zones, responsive };
    let text = init::render(&facts, &choices);
    let checked = init::write(output, &text, &facts, force)?;
    println!("wrote {}", checked.file);
    for w in &checked.warnings {
        println!("warning: {w}");
    }
    match (&facts.admin, &checked.admin_access) {
        (Some(a), Some(e)) => println!(
            "your access: a new connection from {} is {} ({})",
            a.addr, e.verdict, e.decided_by
        ),
        _ => println!(
            "warning: no administrator known (no $SSH_CONNECTION, no --admin): nothing checks your access"
        ),
    }
    println!(
        "nothing is applied yet. Next: pbxfw show --policy {0}; pbxfw apply {0} --confirm 60, then pbxfw confirm from a new session",
        checked.file
    );
    Ok(exit::OK)
}

/// Write `pbxfw.8` and a page per visible command (`pbxfw-apply.8`, `pbxfw-blacklist-add.8`,
/// …) into `dir`. Returns how many.
fn write_manpages(dir: &std::path::Path) -> std::io::Result<usize> {
    fn page(dir: &std::path::Path, cmd: clap::Command, name: &str) -> std::io::Result<usize> {
        let mut out = Vec::new();
        let visible: Vec<clap::Command> = cmd
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
            .cloned()
            .collect();
        clap_mangen::Man::new(cmd.name(name.to_string()))
            .section("8")
            .manual("pbxfw")
            .render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.8")), out)?;
        let mut n = 1;
        for sub in visible {
            let sub_name = format!("{name}-{}", sub.get_name());
            n += page(dir, sub, &sub_name)?;
        }
        Ok(n)
    }
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    page(dir, cmd, "pbxfw")
}

/// `zone list` (members, one a line under their zone) and `zones` (a line a zone).
fn print_zones(zones: &[edit::ZoneMembers], format: Format, summary: bool) {
    if format == Format::Json {
        println!("{:#}", serde_json::to_value(zones).expect("serialisable"));
        return;
    }
    for z in zones {
        let aliases = if z.aliases.is_empty() {
            String::new()
        } else {
            format!(" ({})", z.aliases.join(", "))
        };
        if summary {
            println!(
                "{:<9}{:<12} {}; {} interface(s), {} network(s)",
                z.zone.name(),
                aliases,
                z.description,
                z.interfaces.len(),
                z.networks.len()
            );
            continue;
        }
        println!("{}{aliases}: {}", z.zone.name(), z.description);
        for i in &z.interfaces {
            println!("  interface {i}");
        }
        for (n, d) in &z.networks {
            match d {
                Some(d) => println!("  {n}  ({d})"),
                None => println!("  {n}"),
            }
        }
    }
}

/// `pbxfw show` as text, as `firewall-cmd --list-all` prints a zone.
fn print_show(s: &pbxfw_runtime::show::Show) {
    for z in &s.zones {
        println!("{}", z.zone);
        let none = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(" ")
            }
        };
        println!("  interfaces: {}", none(&z.interfaces));
        println!("  networks:   {}", none(&z.networks));
        println!("  opens:      {}", z.summary);
        for svc in &z.services {
            println!(
                "    {:<14} {:<32} {}",
                svc.name,
                svc.ports.join(" "),
                svc.origin
            );
        }
        println!();
    }
    if !s.everywhere.is_empty() {
        println!("before the zones (every zone)");
        for line in &s.everywhere {
            println!("  {line}");
        }
    }
}

/// `pbxfw bans` as text: one ban per line.
fn print_bans(b: &pbxfw_runtime::bans::Bans, now: u64) {
    use pbxfw_runtime::bans::Origin;
    if !b.loaded {
        println!("pbxfw is not loaded ({}): no ban is enforced", b.backend);
        return;
    }
    if b.bans.is_empty() {
        println!("no bans");
    }
    for ban in &b.bans {
        let origin = match ban.origin {
            Origin::KernelTier => "kernel tier",
            Origin::StateMachine => "state machine",
            Origin::Manual => "by hand",
            Origin::Unknown => "unknown",
            Origin::Fleet => "fleet",
        };
        let mut line = format!(
            "{:<20} {:<13} until {} ({})  {}",
            ban.prefix.to_string(),
            origin,
            ban.until_iso,
            pbxfw_runtime::human::relative(now, ban.until),
            ban.reason
        );
        if let Some(since) = ban.since {
            line += &format!("; since {}", pbxfw_runtime::human::relative(now, since));
        }
        if let Some(s) = ban.strikes {
            line += &format!("; strike {s}");
        }
        if let Some(by) = &ban.by {
            line += &format!("; by {by}");
        }
        println!("{line}");
    }
    if !b.fleet_refused.is_empty() {
        println!("fleet decisions not enforced here:");
        for d in &b.fleet_refused {
            println!(
                "  {:<20} until {} ({})  {} (origin {}): {}",
                d.prefix.to_string(),
                pbxfw_runtime::human::iso8601(d.until),
                pbxfw_runtime::human::relative(now, d.until),
                pbxfw_runtime::fleet::lapi::clip(&d.scenario, 128),
                pbxfw_runtime::fleet::lapi::clip(&d.origin, 64),
                d.refused.as_deref().unwrap_or("")
            );
        }
    }
}

/// `pbxfw explain --live` as text: the explanation, then what the kernel holds for the source.
fn print_live(e: &pbxfw_runtime::explain::LiveExplanation, now: u64) {
    print_explanation(&e.explanation);
    println!("ruleset:    {} (loaded)", e.fingerprint);
    for b in &e.bans {
        println!(
            "live:       banned until {} ({}): {}",
            b.until_iso,
            pbxfw_runtime::human::relative(now, b.until),
            b.reason
        );
    }
    if let Some(until) = e.clamped_until {
        println!(
            "live:       in the slow lane until {} ({})",
            pbxfw_runtime::human::iso8601(until),
            pbxfw_runtime::human::relative(now, until)
        );
    }
    for r in &e.registrations {
        println!(
            "live:       registered{} until {} ({})",
            r.account
                .as_deref()
                .map(|a| format!(" as {a}"))
                .unwrap_or_default(),
            r.until_iso,
            pbxfw_runtime::human::relative(now, r.until)
        );
    }
    if e.bans.is_empty() && e.clamped_until.is_none() && e.registrations.is_empty() {
        println!("live:       no ban, slow lane or registration for this source");
    }
}

/// A reader that went away (`pbxfw compile | head -1`) ends the program quietly, with the
/// status a shell gives a process killed by SIGPIPE (128 + 13), as `cat` and `nft` end: Rust
/// ignores SIGPIPE, so writing to a closed pipe fails, and `println!` panics on the failure.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, msg)) => {
            // Under systemd the journal reads a `<3>` (ERR) prefix as the line's priority: an
            // apply that failed at boot is an error there, not an information.
            let prio = if pbxfw_runtime::context::Journal::for_stderr().is_some() {
                "<3>"
            } else {
                ""
            };
            eprintln!("{prio}pbxfw: {msg}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand's arguments are consistent (a conflict naming an argument that does
    /// not exist panics only when that subcommand is parsed).
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut all: Vec<IpAddr> = ["2001:db8::7", "::ffff:1.2.3.4", "::"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        all.extend(
            [0u8, 1, 9, 10, 99, 100, 199, 200, 255]
                .iter()
                .flat_map(|&a| [a, 7, 200].map(|b| IpAddr::from([a, b, 255 - a, 0]))),
        );
        for a in all {
            let mut out = Vec::new();
            write_addr(&mut out, &a).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), a.to_string());
        }
    }

    /// A ban's line is what the `format!` it replaces wrote, for hosts and wider prefixes of
    /// both families, and times with any number of digits.
    #[test]
    fn ban_lines_are_written_as_format_writes_them() {
        use pbxfw_core::Prefix;
        let prefixes: Vec<Prefix> = [
            "203.0.113.7",
            "1.2.3.4",
            "255.255.255.255",
            "0.0.0.0",
            "10.0.0.0/8",
            "198.51.100.0/24",
            "2001:db8::/64",
            "2001:db8::1",
        ]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
        for p in &prefixes {
            for at in [0, 7, 10, 1_795_170_123, u64::MAX] {
                let mut out = Vec::new();
                write_ban(&mut out, p, at, "attack tool \"friendly-scanner\"").unwrap();
                let want = format!(
                    "  {:<40} at {at}  attack tool \"friendly-scanner\"\n",
                    p.to_string()
                );
                assert_eq!(String::from_utf8(out).unwrap(), want);
            }
        }
    }
}
