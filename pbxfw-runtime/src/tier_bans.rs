//! The kernel tiers' bans cut flows too (docs/responsive.md, "Flows of a banned source").
//!
//! The ruleset accepts a peer's established packets before any ban is looked up (docs/policy.md,
//! "The packet path"), so every ban must delete the banned source's connection-tracking
//! entries. pbxfw's own writes do (the flow cut, [`crate::flow_cut`]); the kernel tiers ban by
//! themselves, in the packet path, and hand each source they ban to nfnetlink_log group
//! [`names::TIER_BAN_LOG_GROUP`]. The daemon listens there on a thread of its own and cuts the
//! flows of every source handed over, milliseconds after the ban (docs/responsive.md gives the
//! measured figures).
//!
//! A notification is the first bytes of a packet an attacker sent, so it decides nothing by
//! itself: a source's flows are cut only when the kernel's ban set holds the source's prefix
//! (another program's rule logging to the same group, or a ban that expired meanwhile, cuts
//! nothing), and never the host's own. When notifications were lost (the socket's buffer
//! overflowed in a distributed flood) or nobody listened (the daemon starting, the group held
//! by another program), the flows of every source in the ban sets are cut instead; a whole
//! load does the same (the flow cut reads the dynamic sets). A cut that failed (a set that
//! could not be read, a refusal of the kernel) is made again at the next quiet moment, and
//! every five minutes all the ban sets are swept again.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pbxfw_core::{names, Backend, Family, Prefix, Ruleset, SetKind};
use pbxfw_nft::netlink::conntrack;
use pbxfw_nft::netlink::nflog::{Listener, Received};

use crate::backends::BackendName;
use crate::context::Context;

/// How long to wait before binding the group again after it failed (another program holds
/// it, or the kernel has no nfnetlink_log).
const RETRY: Duration = Duration::from_secs(10);

/// How often, at the latest, every source in the ban sets has its flows cut again: a safety
/// net for a notification the kernel could not deliver.
const SWEEP: Duration = Duration::from_secs(300);

/// What the daemon knows of the ruleset it runs: the ban sets' key lengths (IPv4, IPv6) and
/// its fingerprint, to tell whether the kernel holds that ruleset.
#[derive(Debug, Clone, Default)]
struct Known {
    lens: [u8; 2],
    fingerprint: String,
}

/// The listening thread, stopped when this is dropped.
pub struct Watch {
    known: Arc<Mutex<Known>>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    /// Start listening for the bans of the tiers of `rs` on `backend`'s kernel, in the calling
    /// thread's network namespace.
    pub fn start(ctx: &Context, backend: BackendName, rs: &Ruleset) -> Watch {
        let w = Watch {
            known: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        w.update(rs);
        let (ctx, known, stop) = (ctx.clone(), w.known.clone(), w.stop.clone());
        // Threads start in the namespace of the thread that spawns them.
        std::thread::spawn(move || watch(&ctx, backend, &known, &stop));
        w
    }

    /// Take the key lengths and fingerprint of a new ruleset.
    pub fn update(&self, rs: &Ruleset) {
        let mut k = Known {
            lens: [Family::Ipv4.bits(), Family::Ipv6.bits()],
            fingerprint: rs.fingerprint(),
        };
        for (i, f) in Family::BOTH.into_iter().enumerate() {
            if let Some(SetKind::Dynamic(d)) = rs.sets.get(&names::tier_ban(f)).map(|s| &s.kind) {
                k.lens[i] = d.key_len;
            }
        }
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = k;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn watch(ctx: &Context, backend: BackendName, keys: &Mutex<Known>, stop: &AtomicBool) {
    let kernel = backend.open();
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let mut listener = match Listener::bind(names::TIER_BAN_LOG_GROUP) {
            Ok(l) => l,
            Err(e) => {
                if !failing {
                    ctx.log(&[
                        ("error", "tier_bans".into()),
                        (
                            "detail",
                            format!(
                                "cannot listen for the kernel tiers' bans ({e}); their flows are \
                                 cut at the next load; retrying every {}s",
                                RETRY.as_secs()
                            ),
                        ),
                    ]);
                    failing = true;
                }
                pause(RETRY, stop);
                continue;
            }
        };
        if failing {
            ctx.log(&[
                ("event", "tier_bans".into()),
                ("detail", "listening".into()),
            ]);
            failing = false;
        }
        // Bans made while nobody listened.
        let mut owed = !cut(ctx, kernel.as_ref(), keys, None, Instant::now());
        let mut swept = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let received = listener.receive();
            let at = Instant::now();
            let got = match received {
                Ok(Received::Sources(s)) if s.is_empty() => {
                    // A quiet moment: a cut that failed is made again, and every so often all
                    // the ban sets are swept, in case anything was missed.
                    if owed || swept.elapsed() >= SWEEP {
                        owed = !cut(ctx, kernel.as_ref(), keys, None, at);
                        swept = Instant::now();
                    }
                    continue;
                }
                Ok(Received::Sources(mut s)) => match listener.drain() {
                    Ok(Received::Sources(more)) => {
                        s.extend(more);
                        Some(s)
                    }
                    Ok(Received::Lost) => None,
                    Err(e) => {
                        ctx.log(&[("error", "tier_bans".into()), ("detail", e.to_string())]);
                        break;
                    }
                },
                Ok(Received::Lost) => None,
                Err(e) => {
                    ctx.log(&[("error", "tier_bans".into()), ("detail", e.to_string())]);
                    break;
                }
            };
            if !cut(ctx, kernel.as_ref(), keys, got.as_deref(), at) {
                owed = true;
            }
        }
        // An error on the socket: a pause before it is opened again, so that one that
        // persists does not spin.
        pause(Duration::from_secs(1), stop);
    }
}

/// Sleep up to `d`, waking early when `stop` is set.
fn pause(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200).min(end - Instant::now()));
    }
}

/// What to cut of family `f` for `sources` (all, for `None`) and the keys the kernel's ban
/// set holds: at key length `len`, or, when it is not known (`None`), each address alone
/// (see [`cut`]).
fn to_cut(
    f: Family,
    len: Option<u8>,
    sources: Option<&[IpAddr]>,
    held: &HashSet<u128>,
) -> Vec<Prefix> {
    match (sources, len) {
        (Some(s), Some(len)) => s
            .iter()
            .filter(|a| Family::of(a) == f)
            .filter_map(|a| Prefix::new(*a, len).ok())
            .filter(|p| held.contains(&p.start()))
            .collect(),
        // A key is the source with its low bits cleared at a length not known here, which the
        // key alone does not tell (2001:db8:6:: is as much 2001:db8:7::7 masked at /47 as
        // 2001:db8:6::7 at /64): only a key that is the address itself counts. The next load,
        // which knows its own lengths, cuts the rest.
        (Some(s), None) => s
            .iter()
            .filter(|a| Family::of(a) == f)
            .map(|a| Prefix::host(*a))
            .filter(|p| held.contains(&p.start()))
            .collect(),
        (None, Some(len)) => held
            .iter()
            .filter_map(|&key| Prefix::new(pbxfw_core::value_addr(f, key), len).ok())
            .filter(|p| held.contains(&p.start()))
            .collect(),
        (None, None) => held
            .iter()
            .map(|&key| Prefix::host(pbxfw_core::value_addr(f, key)))
            .collect(),
    }
}

/// Cut the flows of `sources` that the kernel's tier ban sets hold (every source they hold,
/// for `None`); false when a set could not be read or the kernel refused the cut (the caller
/// tries again). The log line says how long it took since `at`, when the notification came.
///
/// The prefix cut is the source's at the key length of the daemon's ruleset, when the kernel
/// holds that ruleset (its fingerprint) and its ban set exactly that key. While the kernel runs
/// another ruleset (an apply the daemon has not adopted), whose key lengths the daemon does not
/// know, only an address banned as itself (a /32 or /128 key) is cut: never wider than it was
/// banned, nor a guess; the next load cuts the rest.
fn cut(
    ctx: &Context,
    kernel: &dyn Backend,
    known: &Mutex<Known>,
    sources: Option<&[IpAddr]>,
    at: Instant,
) -> bool {
    let known = known.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ours = kernel.fingerprint().ok().flatten().as_deref() == Some(known.fingerprint.as_str());
    let mut blocked: Vec<Prefix> = Vec::new();
    let mut complete = true;
    for (i, f) in Family::BOTH.into_iter().enumerate() {
        let len = ours.then_some(known.lens[i].min(f.bits()));
        if sources.is_some_and(|s| !s.iter().any(|a| Family::of(a) == f)) {
            continue;
        }
        let set = names::tier_ban(f);
        // The keys the kernel holds (a key is the banned source masked to the key length).
        let held: HashSet<u128> = match crate::flow_cut::held(kernel, &set, f) {
            Ok(h) => h.iter().map(Prefix::start).collect(),
            Err(e) => {
                ctx.log(&[
                    ("error", "tier_bans".into()),
                    ("detail", format!("could not read set {set}: {e}")),
                ]);
                complete = false;
                continue;
            }
        };
        blocked.extend(to_cut(f, len, sources, &held));
    }
    blocked.sort_by_key(|p| (p.family() == Family::Ipv6, p.start(), p.prefix_len()));
    blocked.dedup();
    if blocked.is_empty() {
        return complete;
    }
    match conntrack::cut(&blocked, &crate::flow_cut::local()) {
        Ok(c) => {
            if c.deleted > 0 {
                ctx.log(&[
                    ("event", "tier_ban_cut".into()),
                    (
                        "sources",
                        blocked
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    ("flows", c.deleted.to_string()),
                    ("took_us", at.elapsed().as_micros().to_string()),
                ]);
            }
            complete
        }
        Err(e) => {
            ctx.log(&[
                ("error", "tier_bans".into()),
                (
                    "detail",
                    format!("the flows of sources the kernel tiers banned could not be cut ({e})"),
                ),
            ]);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: &str, len: u8) -> u128 {
        Prefix::new(a.parse().unwrap(), len).unwrap().start()
    }

    fn cut_text(len: Option<u8>, sources: Option<&[&str]>, held: &[u128]) -> Vec<String> {
        let s: Option<Vec<IpAddr>> =
            sources.map(|s| s.iter().map(|a| a.parse().unwrap()).collect());
        let held: HashSet<u128> = held.iter().copied().collect();
        let mut out: Vec<String> = to_cut(Family::Ipv6, len, s.as_deref(), &held)
            .iter()
            .map(ToString::to_string)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_notified_source_is_cut_at_its_ban_key_and_only_when_banned() {
        let held = [key("2001:db8:6::7", 64)];
        assert_eq!(
            cut_text(Some(64), Some(&["2001:db8:6::7"]), &held),
            ["2001:db8:6::/64"]
        );
        // Not in the set (another program's notification, an expired ban): nothing.
        assert!(cut_text(Some(64), Some(&["2001:db8:7::7"]), &held).is_empty());
        // IPv4 sources are not looked for in the IPv6 set.
        assert!(cut_text(Some(64), Some(&["203.0.113.11"]), &held).is_empty());
        // The kernel runs a ruleset the daemon does not know: only a key that is the address
        // itself (a /128 or /32 ban), never a guess at the key's length.
        assert!(cut_text(None, Some(&["2001:db8:6::7"]), &held).is_empty());
        assert!(cut_text(None, Some(&["2001:db8:7::7"]), &held).is_empty());
        assert_eq!(
            cut_text(None, Some(&["2001:db8:6::7"]), &[key("2001:db8:6::7", 128)]),
            ["2001:db8:6::7"]
        );
    }

    #[test]
    fn a_sweep_cuts_each_key_at_the_known_length_or_alone() {
        let held = [key("2001:db8:6::", 64), key("2001:db8:6:1::", 64)];
        assert_eq!(
            cut_text(Some(64), None, &held),
            ["2001:db8:6:1::/64", "2001:db8:6::/64"]
        );
        assert_eq!(
            cut_text(None, None, &held),
            ["2001:db8:6:1::", "2001:db8:6::"]
        );
    }
}
