//! `pbxfw`: the command line of the pbxfw firewall for PBX hosts.
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pbxfw_core::explain::{explain, Explanation};
use pbxfw_core::ir::CtState;
use pbxfw_core::{compile, Packet, Policy, Proto, Severity, ValidPolicy, DEFAULT_POLICY_TOML};

/// Exit codes, as documented in `--help`.
mod exit {
    pub const OK: u8 = 0;
    pub const WARNINGS: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const IO: u8 = 3;
    pub const UNSUPPORTED: u8 = 4;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  `check --strict`: the policy has warnings
  2  the policy is invalid (every problem is printed with its path), or the command line is wrong
  3  a file could not be read
  4  the requested backend or feature is not available

With no POLICY, the embedded default policy of a typical PBX is used. POLICY `-` reads standard
input; a name ending in .json is read as JSON, anything else as TOML.";

#[derive(Parser)]
#[command(name = "pbxfw", version, about = "A firewall for VoIP PBX hosts", after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Nft,
    Iptables,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Text,
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

#[derive(Subcommand)]
enum Command {
    /// Print the ruleset a policy compiles to.
    #[command(after_help = AFTER_HELP)]
    Compile {
        /// Policy file (TOML or JSON).
        policy: Option<String>,
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
    /// Validate a policy and print every problem with its path.
    #[command(after_help = AFTER_HELP)]
    Check {
        /// Policy file (TOML or JSON).
        policy: Option<String>,
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
        /// Policy file (TOML or JSON).
        policy: Option<String>,
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
        /// Treat the source as a registered device.
        #[arg(long)]
        registered: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

/// A failure that ends the command: its message and exit code.
struct Fail(u8, String);

fn read_policy(path: Option<&str>) -> Result<(String, Policy), Fail> {
    let (name, text) = match path {
        None => (
            "(default policy)".to_string(),
            DEFAULT_POLICY_TOML.to_string(),
        ),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Fail(exit::IO, format!("standard input: {e}")))?;
            ("(stdin)".to_string(), s)
        }
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Fail(exit::IO, format!("{p}: cannot read: {e}")))?;
            (p.to_string(), text)
        }
    };
    let policy =
        Policy::from_text(&text, &name).map_err(|e| Fail(exit::INVALID, format!("{name}: {e}")))?;
    Ok((name, policy))
}

fn load_valid(path: Option<&str>) -> Result<ValidPolicy, Fail> {
    let (name, policy) = read_policy(path)?;
    match policy.validate() {
        Ok(v) => {
            for w in &v.warnings {
                eprintln!("{name}: {w}");
            }
            Ok(v)
        }
        Err(diags) => {
            let lines: Vec<String> = diags.iter().map(|d| format!("{name}: {d}")).collect();
            Err(Fail(exit::INVALID, lines.join("\n")))
        }
    }
}

fn run(cli: Cli) -> Result<u8, Fail> {
    match cli.command {
        Command::Compile {
            policy,
            backend,
            ir,
            counters,
        } => {
            let valid = load_valid(policy.as_deref())?;
            let rs = compile(&valid);
            if ir {
                print!("{}", rs.to_text());
                return Ok(exit::OK);
            }
            match backend {
                Backend::Nft => {
                    let opts = pbxfw_nft::Options {
                        counters,
                        ..Default::default()
                    };
                    let script = pbxfw_nft::lower(&rs, &opts)
                        .map_err(|e| Fail(exit::UNSUPPORTED, format!("nft: {e}")))?;
                    print!("{}", script.text);
                }
                Backend::Iptables => return Err(Fail(
                    exit::UNSUPPORTED,
                    "the iptables backend is not available in this build yet; use --backend nft"
                        .into(),
                )),
            }
            Ok(exit::OK)
        }
        Command::Check {
            policy,
            strict,
            format,
        } => {
            let (name, policy) = match read_policy(policy.as_deref()) {
                Ok(p) => p,
                Err(Fail(code, msg)) if format == Format::Json && code == exit::INVALID => {
                    let out = serde_json::json!({
                        "ok": false, "errors": 1, "warnings": 0,
                        "diagnostics": [{"path": "(policy)", "severity": "error", "message": msg}],
                    });
                    println!("{out:#}");
                    return Ok(code);
                }
                Err(e) => return Err(e),
            };
            let diags = match policy.validate() {
                Ok(v) => v.warnings,
                Err(d) => d.0,
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
            iif,
            src,
            proto,
            dport,
            sport,
            icmp_type,
            state,
            registered,
            format,
        } => {
            let valid = load_valid(policy.as_deref())?;
            let rs = compile(&valid);
            let proto = match proto {
                ProtoArg::Udp => Proto::Udp,
                ProtoArg::Tcp => Proto::Tcp,
                ProtoArg::Icmp => Proto::Icmp,
                ProtoArg::Icmpv6 => Proto::Icmpv6,
            };
            let ported = matches!(proto, Proto::Udp | Proto::Tcp);
            if ported && dport.is_none() {
                return Err(Fail(
                    exit::INVALID,
                    "--dport is required for udp and tcp".into(),
                ));
            }
            if !ported && (dport.is_some() || sport.is_some()) {
                return Err(Fail(
                    exit::INVALID,
                    "--dport and --sport apply to udp and tcp only".into(),
                ));
            }
            let mut packet = Packet::new(&iif, src, proto, dport);
            packet.sport = sport;
            packet.icmp_type = match proto {
                Proto::Icmp => Some(icmp_type.unwrap_or(8)),
                Proto::Icmpv6 => Some(icmp_type.unwrap_or(128)),
                _ => None,
            };
            packet.ct = match state {
                StateArg::New => CtState::New,
                StateArg::Established => CtState::Established,
                StateArg::Related => CtState::Related,
                StateArg::Invalid => CtState::Invalid,
            };
            let e = explain(&rs, &packet, registered);
            match format {
                Format::Json => println!("{:#}", serde_json::to_value(&e).expect("serialisable")),
                Format::Text => print_explanation(&e),
            }
            Ok(exit::OK)
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, msg)) => {
            eprintln!("pbxfw: {msg}");
            ExitCode::from(code)
        }
    }
}
