//! A command run by a user other than root goes through the daemon's control socket when it
//! serves one: the daemon runs the very procedure root's command would, for a member of the
//! `pbxfw` groups (docs/control-socket.md). Only the output is this side's, printed by the
//! same functions as a local command's.

use std::time::Duration;

use pbxfw_runtime::control::wire::{self, Call, Requester};
use pbxfw_runtime::control::Client;

use super::*;

/// How long a command waits for the daemon's answer (an apply of a large policy with
/// hostnames to resolve takes seconds).
const TIMEOUT: Duration = Duration::from_secs(120);

// Made once per process, as `Command` itself (whose size it takes).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Ran {
    /// Run through the socket, with this exit code.
    Done(u8),
    /// To run here.
    Local(Command),
}

/// Whether this process runs as root.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Run `command` through the control socket when it is one the socket serves, this process is
/// not root, and the socket exists; else hand it back.
pub(crate) fn run(command: Command) -> Result<Ran, Fail> {
    // Only the daemon can act on a VPN session: root asks it too.
    if let Command::Vpn(cmd) = command {
        let path = pbxfw_runtime::control::socket_path();
        let mut client = Client::connect(&path, TIMEOUT)?;
        return vpn(&mut client, cmd).map(Ran::Done);
    }
    if !served(&command) || is_root() {
        return Ok(Ran::Local(command));
    }
    let path = pbxfw_runtime::control::socket_path();
    if !path.exists() {
        return Ok(Ran::Local(command));
    }
    eprintln!(
        "pbxfw: not root: asking the daemon through {}",
        path.display()
    );
    let mut client = Client::connect(&path, TIMEOUT)?;
    remote(&mut client, command).map(Ran::Done)
}

fn served(command: &Command) -> bool {
    matches!(
        command,
        Command::Status { .. }
            | Command::Bans { .. }
            | Command::Apply { .. }
            | Command::Confirm
            | Command::Rollback { when_due: None, .. }
            | Command::Disable { .. }
            | Command::Ban { .. }
            | Command::Unban { .. }
            | Command::Trust { .. }
            | Command::Untrust { .. }
            | Command::Blacklist(BlacklistCmd::Add { .. } | BlacklistCmd::Del { .. })
            | Command::Zone(ZoneCmd::Add { .. } | ZoneCmd::Del { .. })
            | Command::Explain { live: true, .. }
            | Command::Acme(_)
    )
}

fn backend(b: Option<Backend>) -> Option<String> {
    b.map(|b| b.name().as_str().to_string())
}

/// This session, for anti-lockout: the client of `$SSH_CONNECTION` and the port it reached
/// (the daemon has no session of its own to check).
fn requester(admins: &[pbxfw_runtime::safety::Admin], force: bool) -> Requester {
    let client = std::env::var("SSH_CONNECTION").ok().and_then(|s| {
        let f: Vec<&str> = s.split_whitespace().collect();
        let addr: IpAddr = f.first()?.parse().ok()?;
        let port: u16 = f.get(3)?.parse().ok()?;
        Some(std::net::SocketAddr::new(addr, port).to_string())
    });
    Requester {
        client,
        admins: admins.iter().map(ToString::to_string).collect(),
        force,
    }
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, Fail> {
    serde_json::from_value(v).map_err(|e| {
        Fail(
            exit::UNAVAILABLE,
            format!("the daemon's answer is not what this pbxfw understands: {e}"),
        )
    })
}

fn edit_call(edit: EditArgs, entries: Vec<String>) -> Result<wire::EditParams, Fail> {
    if edit.policy.is_some() {
        return Err(Fail(
            exit::INVALID,
            "through the control socket, edits act on the daemon's policy file: --policy cannot be used".into(),
        ));
    }
    Ok(wire::EditParams {
        entries,
        backend: backend(edit.backend),
        requester: requester(&edit.admins, edit.force),
    })
}

fn remote(client: &mut Client, command: Command) -> Result<u8, Fail> {
    let now = unix_now();
    match command {
        Command::Status { backend: b, format } => {
            let s = client.call(&Call::Status(wire::BackendParams {
                backend: backend(b),
            }))?;
            Ok(print_status_answer(&typed(s)?, format))
        }
        Command::Bans { backend: b, format } => {
            let v = client.call(&Call::Bans(wire::BackendParams {
                backend: backend(b),
            }))?;
            Ok(print_bans_answer(&typed(v)?, format, now))
        }
        Command::Explain {
            iif,
            src,
            proto,
            dport,
            sport,
            icmp_type,
            state,
            reply,
            backend: b,
            format,
            ..
        } => {
            let packet = pbxfw_runtime::explain::Query {
                iface: iif,
                src,
                proto: value_name(proto),
                dport,
                sport,
                icmp_type,
                state: Some(value_name(state)),
                registered: false,
                reply,
            };
            let v = client.call(&Call::Explain(wire::ExplainParams {
                packet,
                live: true,
                backend: backend(b),
            }))?;
            print_live_answer(&typed(v)?, format, now);
            Ok(exit::OK)
        }
        Command::Apply {
            policy,
            example,
            backend: b,
            counters,
            confirm,
            admins,
            force,
            dns: _,
        } => {
            let (text, name) = if example {
                eprintln!(
                    "pbxfw: the example policy of a typical PBX (a demonstration, not your network)"
                );
                (
                    pbxfw_core::DEFAULT_POLICY_TOML.to_string(),
                    "(example)".to_string(),
                )
            } else {
                let path = pbxfw_runtime::policy::resolve(policy.get())
                    .ok_or_else(pbxfw_runtime::policy::no_policy)?;
                let text = if path == "-" {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                        .map_err(|e| Error::io("(stdin)", e))?;
                    s
                } else {
                    std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?
                };
                (text, path)
            };
            let format = match pbxfw_runtime::policy::Format::of_name(&name) {
                pbxfw_runtime::policy::Format::Json => Some("json".to_string()),
                pbxfw_runtime::policy::Format::Toml => None,
            };
            let v = client.call(&Call::Apply(wire::ApplyParams {
                policy: text,
                format,
                backend: backend(b),
                counters,
                confirm,
                // As root's `pbxfw apply FILE`: the kernel, not the daemon's policy file.
                save: false,
                requester: requester(&admins, force),
            }))?;
            print_applied(&typed(v)?, confirm);
            Ok(exit::OK)
        }
        Command::Confirm => {
            let fp: String = typed(client.call(&Call::Confirm(wire::NoParams {}))?)?;
            println!("confirmed: ruleset {fp} stays");
            Ok(exit::OK)
        }
        Command::Rollback { backend: b, .. } => {
            let msg: String = typed(client.call(&Call::Rollback(wire::BackendParams {
                backend: backend(b),
            }))?)?;
            println!("{msg}");
            Ok(exit::OK)
        }
        Command::Acme(cmd) => {
            let now = unix_now();
            let (call, format) = match cmd {
                AcmeCmd::Open { duration, out } => (
                    Call::AcmeOpen(wire::AcmeParams {
                        seconds: Some(acme_seconds(&duration)?),
                        backend: backend(out.backend),
                    }),
                    out.format,
                ),
                AcmeCmd::Close { out } => (
                    Call::AcmeClose(wire::BackendParams {
                        backend: backend(out.backend),
                    }),
                    out.format,
                ),
                AcmeCmd::Status { out } => (
                    Call::AcmeStatus(wire::BackendParams {
                        backend: backend(out.backend),
                    }),
                    out.format,
                ),
            };
            let v = client.call(&call)?;
            print_acme(&typed(v)?, format, now);
            Ok(exit::OK)
        }
        Command::Disable { backend: b } => {
            let v = client.call(&Call::Disable(wire::BackendParams {
                backend: backend(b),
            }))?;
            let name: BackendName = v["backend"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .unwrap_or_default();
            print_disabled(v["was_loaded"].as_bool().unwrap_or(false), name);
            Ok(exit::OK)
        }
        Command::Ban {
            prefix,
            duration,
            reason,
            edit,
        } => {
            let seconds = pbxfw_core::parse_seconds(&duration).ok_or_else(|| {
                Fail(
                    exit::INVALID,
                    format!("--for {duration:?} is not a duration such as 90s, 30m, 12h or 7d"),
                )
            })?;
            let p = edit_call(edit, Vec::new())?;
            let v = client.call(&Call::Ban(wire::BanParams {
                prefix,
                seconds: u64::from(seconds),
                reason,
                backend: p.backend,
                requester: p.requester,
            }))?;
            print_banned(&typed(v)?, now);
            Ok(exit::OK)
        }
        Command::Unban {
            prefixes,
            backend: b,
        } => {
            let v = client.call(&Call::Unban(wire::UnbanParams {
                prefixes,
                backend: backend(b),
            }))?;
            print_unbanned(&typed(v)?);
            Ok(exit::OK)
        }
        Command::Trust { addr, edit } => {
            let v = client.call(&Call::Trust(edit_call(edit, vec![addr])?))?;
            print_edit(&typed(v)?);
            Ok(exit::OK)
        }
        Command::Untrust { addr, edit } => {
            let v = client.call(&Call::Untrust(edit_call(edit, vec![addr])?))?;
            print_edit(&typed(v)?);
            Ok(exit::OK)
        }
        Command::Blacklist(BlacklistCmd::Add { entries, edit }) => {
            let v = client.call(&Call::BlacklistAdd(edit_call(edit, entries)?))?;
            print_edit(&typed(v)?);
            Ok(exit::OK)
        }
        Command::Blacklist(BlacklistCmd::Del { entries, edit }) => {
            let v = client.call(&Call::BlacklistDel(edit_call(edit, entries)?))?;
            print_edit(&typed(v)?);
            Ok(exit::OK)
        }
        Command::Zone(ZoneCmd::Add { zone, ids, edit }) => {
            zone_edit(client, Call::ZoneAdd, zone, ids, edit)
        }
        Command::Zone(ZoneCmd::Del { zone, ids, edit }) => {
            zone_edit(client, Call::ZoneDel, zone, ids, edit)
        }
        // `served` lets no other through.
        _ => Err(Fail(
            exit::INVALID,
            "this command is not served by the control socket".into(),
        )),
    }
}

/// `zone add` or `zone del` (`call` builds which) through the socket.
fn zone_edit(
    client: &mut Client,
    call: fn(wire::ZoneParams) -> Call,
    zone: String,
    ids: Vec<String>,
    edit: EditArgs,
) -> Result<u8, Fail> {
    let p = edit_call(edit, Vec::new())?;
    let v = client.call(&call(wire::ZoneParams {
        zone,
        entries: ids,
        backend: p.backend,
        requester: p.requester,
    }))?;
    print_edit(&typed(v)?);
    Ok(exit::OK)
}

/// `vpn connect` or `vpn disconnect` through the socket.
fn vpn(client: &mut Client, cmd: VpnCmd) -> Result<u8, Fail> {
    let (connect, a) = match cmd {
        VpnCmd::Connect(a) => (true, a),
        VpnCmd::Disconnect(a) => (false, a),
    };
    let seconds = a
        .duration
        .as_deref()
        .map(|d| {
            pbxfw_core::parse_seconds(d).map(u64::from).ok_or_else(|| {
                Fail(
                    exit::INVALID,
                    format!("--for {d:?} is not a duration such as 30m or 12h"),
                )
            })
        })
        .transpose()?;
    let p = wire::VpnParams {
        address: a.address,
        identity: a.identity,
        seconds,
    };
    let v = client.call(&if connect {
        Call::VpnConnect(p)
    } else {
        Call::VpnDisconnect(p)
    })?;
    let user = v["user"].as_str().unwrap_or("?");
    let address = v["address"].as_str().unwrap_or("?");
    match v["until"].as_u64() {
        Some(until) => println!(
            "{user} at {address}: granted until {} ({})",
            pbxfw_runtime::human::iso8601(until),
            pbxfw_runtime::human::relative(unix_now(), until)
        ),
        None => println!("{user} at {address}: grants withdrawn"),
    }
    Ok(exit::OK)
}
