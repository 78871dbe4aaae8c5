//! Hooks (`pbxfw daemon --hook PROGRAM`): a program the daemon runs for each ban, unban,
//! registration and reported identity (a bad account behind a source that is not banned: a
//! known device with a wrong password, a NAT with registered phones), as fail2ban runs its
//! actions — to tell a ticketing system, a chat, a provider's portal. The facts are in its
//! environment (`PBXFW_EVENT`, `PBXFW_PREFIX` or `PBXFW_ADDRESS`, `PBXFW_UNTIL`,
//! `PBXFW_REASON`, `PBXFW_ACCOUNT`, `PBXFW_USER_AGENT`) and the action is one line of JSON on
//! its standard input. The account and User-Agent of a report are a sender's text: checked by
//! the parser that read them, never to be given to a shell unquoted.
//!
//! A hook is never in the way of enforcement: the kernel is changed first; calls go into a
//! bounded queue (when it is full, the call is dropped, counted and logged, never waited for);
//! a few workers run them, each call killed after its timeout. The program must be an absolute
//! path root owns and only root may write: it runs with the daemon's rights.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pbxfw_core::Action;
use serde::Serialize;

use crate::context::Context;
use crate::error::Result;

/// Calls waiting at most; beyond, a call is dropped.
pub const QUEUE: usize = 1024;

/// How hooks run.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The program.
    pub program: PathBuf,
    /// A call still running after this is killed.
    pub timeout: Duration,
    /// Calls run at once at most.
    pub workers: usize,
}

/// One call: what happened, as the program gets it on its standard input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    /// `ban`, `unban`, `registered` or `report`.
    pub event: &'static str,
    /// The action as the state machine gave it.
    pub action: Action,
    /// Unix seconds at which it was carried out.
    pub at: u64,
}

impl Call {
    /// The call for `action`, if hooks are told about it (bans, unbans, registrations).
    pub fn of(action: &Action, at: u64) -> Option<Call> {
        let event = match action {
            Action::Ban { .. } => "ban",
            Action::Unban { .. } => "unban",
            Action::AllowRegistered { .. } => "registered",
            Action::ReportIdentity { .. } => "report",
            _ => return None,
        };
        Some(Call {
            event,
            action: action.clone(),
            at,
        })
    }

    /// The environment the program gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PBXFW_EVENT", self.event.to_string())];
        env.push(("PBXFW_AT", self.at.to_string()));
        match &self.action {
            Action::Ban {
                prefix,
                until,
                reason,
            } => {
                env.push(("PBXFW_PREFIX", prefix.to_string()));
                env.push(("PBXFW_UNTIL", until.to_string()));
                env.push(("PBXFW_REASON", reason.clone()));
            }
            Action::Unban { prefix } => env.push(("PBXFW_PREFIX", prefix.to_string())),
            Action::AllowRegistered {
                addr,
                until,
                account,
                ..
            } => {
                env.push(("PBXFW_ADDRESS", addr.to_string()));
                env.push(("PBXFW_UNTIL", until.to_string()));
                env.push(("PBXFW_ACCOUNT", account.clone()));
            }
            Action::ReportIdentity {
                source,
                account,
                user_agent,
                reason,
            } => {
                env.push(("PBXFW_ADDRESS", source.to_string()));
                env.push(("PBXFW_REASON", reason.clone()));
                if let Some(a) = account {
                    env.push(("PBXFW_ACCOUNT", a.clone()));
                }
                if let Some(u) = user_agent {
                    env.push(("PBXFW_USER_AGENT", u.clone()));
                }
            }
            _ => {}
        }
        env
    }
}

/// The running hooks.
pub struct Hooks {
    tx: SyncSender<Call>,
    dropped: Arc<AtomicU64>,
}

impl Hooks {
    /// Check the program and start the workers.
    pub fn start(cfg: HookConfig, ctx: &Context) -> Result<Hooks> {
        let program = crate::safety::trusted_program(&cfg.program)?;
        let (tx, rx) = sync_channel::<Call>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..cfg.workers.max(1) {
            let (rx, ctx, program) = (Arc::clone(&rx), ctx.clone(), program.clone());
            std::thread::spawn(move || worker(&rx, &ctx, &program, cfg.timeout));
        }
        Ok(Hooks {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queue the calls for `actions` carried out at `at`, without waiting: when the queue is
    /// full a call is dropped and counted. Returns how many were dropped now.
    pub fn offer(&self, actions: &[Action], at: u64) -> u64 {
        let mut dropped = 0;
        for call in actions.iter().filter_map(|a| Call::of(a, at)) {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.tx.try_send(call)
            {
                dropped += 1;
            }
        }
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        dropped
    }

    /// Calls dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn worker(rx: &Mutex<Receiver<Call>>, ctx: &Context, program: &Path, timeout: Duration) {
    loop {
        let call = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
            Err(_) => return,
        };
        if let Err(why) = run(program, &call, timeout) {
            ctx.log(&[
                ("error", "hook".into()),
                ("program", program.display().to_string()),
                ("event", call.event.into()),
                ("detail", why),
            ]);
        }
    }
}

/// Run `program` for `call`, killing it after `timeout`.
pub fn run(program: &Path, call: &Call, timeout: Duration) -> Result<(), String> {
    let mut child = Command::new(program)
        .envs(call.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    let line = serde_json::to_string(call).expect("a call serialises") + "\n";
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its input is not an error.
        let _ = stdin.write_all(line.as_bytes());
    }
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("exited with {status}")),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {} s", timeout.as_secs_f64()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_unbans_registrations_and_reports_call_hooks_with_their_facts() {
        let ban = Action::Ban {
            prefix: "203.0.113.66/32".parse().unwrap(),
            until: 1_800_000_000,
            reason: "attack tool \"friendly-scanner\"".into(),
        };
        let call = Call::of(&ban, 1_799_000_000).unwrap();
        let env = call.env();
        assert!(env.contains(&("PBXFW_EVENT", "ban".into())));
        assert!(env.contains(&("PBXFW_PREFIX", "203.0.113.66".into())));
        assert!(env.contains(&("PBXFW_REASON", "attack tool \"friendly-scanner\"".into())));
        let clamp = Action::Unclamp {
            prefix: "203.0.113.66/32".parse().unwrap(),
        };
        assert!(Call::of(&clamp, 0).is_none());
        let report = Action::ReportIdentity {
            source: "198.51.100.22".parse().unwrap(),
            account: Some("300".into()),
            user_agent: Some("Yealink SIP-T46S".into()),
            reason: "account 300 at 198.51.100.22 has the wrong password".into(),
        };
        let env = Call::of(&report, 0).unwrap().env();
        assert!(env.contains(&("PBXFW_EVENT", "report".into())));
        assert!(env.contains(&("PBXFW_ADDRESS", "198.51.100.22".into())));
        assert!(env.contains(&("PBXFW_ACCOUNT", "300".into())));
        assert!(env.contains(&("PBXFW_USER_AGENT", "Yealink SIP-T46S".into())));
    }

    #[test]
    fn a_hook_that_hangs_is_killed_after_its_timeout() {
        let call = Call::of(
            &Action::Unban {
                prefix: "203.0.113.66/32".parse().unwrap(),
            },
            0,
        )
        .unwrap();
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hang");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = run(&script, &call, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("killed after"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
