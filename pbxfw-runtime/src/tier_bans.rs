//! The kernel tiers' bans cut flows too (docs/responsive.md, "Flows of a banned source").
//!
//! The ruleset accepts a peer's established packets before any ban is looked up (docs/policy.md,
//! "The packet path"), so every ban must delete the banned source's connection-tracking
//! entries. pbxfw's own writes do (the flow cut, [`crate::flow_cut`]); the kernel tiers ban by
//! themselves, in the packet path, and hand each source they ban to nfnetlink_log group
//! [`names::TIER_BAN_LOG_GROUP`]. The daemon listens there on a thread of its own and cuts the
//! flows of every source handed over, within about a millisecond of the ban.
//!
//! A notification is the first bytes of a packet an attacker sent, so it decides nothing by
//! itself: a source's flows are cut only when the kernel's ban set holds the source's prefix
//! (another program's rule logging to the same group, or a ban that expired meanwhile, cuts
//! nothing), and never the host's own. When notifications were lost (the socket's buffer
//! overflowed in a distributed flood) or nobody listened (the daemon starting, the group held
//! by another program), the flows of every source in the ban sets are cut instead; a whole
//! load does the same (the flow cut reads the dynamic sets).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbxfw_core::{names, Backend, Family, Prefix, Ruleset, SetKind};
use pbxfw_nft::netlink::conntrack;
use pbxfw_nft::netlink::nflog::{Listener, Received};

use crate::backends::BackendName;
use crate::context::Context;

/// How long to wait before binding the group again after it failed (another program holds
/// it, or the kernel has no nfnetlink_log).
const RETRY: Duration = Duration::from_secs(10);

/// The listening thread, stopped when this is dropped.
pub struct Watch {
    keys: Arc<[AtomicU8; 2]>,
    stop: Arc<AtomicBool>,
}

impl Watch {
    /// Start listening for the bans of the tiers of `rs` on `backend`'s kernel, in the calling
    /// thread's network namespace.
    pub fn start(ctx: &Context, backend: BackendName, rs: &Ruleset) -> Watch {
        let keys = Arc::new([AtomicU8::new(32), AtomicU8::new(64)]);
        let w = Watch {
            keys,
            stop: Arc::new(AtomicBool::new(false)),
        };
        w.update(rs);
        let (ctx, keys, stop) = (ctx.clone(), w.keys.clone(), w.stop.clone());
        // Threads start in the namespace of the thread that spawns them.
        std::thread::spawn(move || watch(&ctx, backend, &keys, &stop));
        w
    }

    /// Take the key lengths of the ban sets of a new ruleset.
    pub fn update(&self, rs: &Ruleset) {
        for (i, f) in Family::BOTH.into_iter().enumerate() {
            if let Some(SetKind::Dynamic(d)) = rs.sets.get(&names::tier_ban(f)).map(|s| &s.kind) {
                self.keys[i].store(d.key_len, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn watch(ctx: &Context, backend: BackendName, keys: &[AtomicU8; 2], stop: &AtomicBool) {
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
                                 cut at the next load, retrying every {}s",
                                RETRY.as_secs()
                            ),
                        ),
                    ]);
                    failing = true;
                }
                std::thread::sleep(RETRY);
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
        cut(ctx, kernel.as_ref(), keys, None, Instant::now());
        while !stop.load(Ordering::Relaxed) {
            let received = listener.receive();
            let at = Instant::now();
            let got = match received {
                Ok(Received::Sources(s)) if s.is_empty() => continue,
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
            cut(ctx, kernel.as_ref(), keys, got.as_deref(), at);
        }
    }
}

/// Cut the flows of `sources` that the kernel's tier ban sets hold (every source they hold,
/// for `None`). The log line says how long it took since `at`, when the notification came.
fn cut(
    ctx: &Context,
    kernel: &dyn Backend,
    keys: &[AtomicU8; 2],
    sources: Option<&[IpAddr]>,
    at: Instant,
) {
    let mut blocked: Vec<Prefix> = Vec::new();
    for (i, f) in Family::BOTH.into_iter().enumerate() {
        let len = keys[i].load(Ordering::Relaxed).min(f.bits());
        let wanted: Option<Vec<Prefix>> = sources.map(|s| {
            s.iter()
                .filter(|a| Family::of(a) == f)
                .filter_map(|a| Prefix::new(*a, len).ok())
                .collect()
        });
        if wanted.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let set = names::tier_ban(f);
        let held: Vec<Prefix> = match crate::flow_cut::held(kernel, &set, f) {
            Ok(h) => h
                .into_iter()
                .filter_map(|p| Prefix::new(p.addr(), len.min(p.prefix_len())).ok())
                .collect(),
            Err(e) => {
                ctx.log(&[
                    ("error", "tier_bans".into()),
                    ("detail", format!("could not read set {set}: {e}")),
                ]);
                continue;
            }
        };
        match wanted {
            None => blocked.extend(held),
            Some(w) => blocked.extend(w.into_iter().filter(|p| held.contains(p))),
        }
    }
    blocked.sort_by_key(|p| (p.family() == Family::Ipv6, p.start(), p.prefix_len()));
    blocked.dedup();
    if blocked.is_empty() {
        return;
    }
    match conntrack::cut(&blocked, &crate::flow_cut::local()) {
        Ok(c) if c.deleted > 0 => ctx.log(&[
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
        ]),
        Ok(_) => {}
        Err(e) => ctx.log(&[
            ("error", "tier_bans".into()),
            (
                "detail",
                format!("the flows of sources the kernel tiers banned could not be cut ({e})"),
            ),
        ]),
    }
}
