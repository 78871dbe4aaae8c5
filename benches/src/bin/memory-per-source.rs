//! Heap bytes per tracked source in the responsive state machine, measured with a counting
//! allocator: as many sources as the machine tracks by default, each with a few failures (the
//! shape of a distributed attack); then a flood of four times as many new sources, which makes
//! the machine evict over and over, reported as the peak heap over the bound.
//!
//! `cargo run --release -p pbxfw-benches --bin memory-per-source`

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

use pbxfw_core::Policy;
use pbxfw_core::{AuthFailure, SecurityEvent};
use pbxfw_core::{Machine, MachineConfig as Config};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n as isize - l.size() as isize);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let p = Policy::from_toml("[interfaces]\neth0 = \"internet\"\n")
        .unwrap()
        .validate()
        .unwrap();
    let cfg = Config::from_policy(&p);
    let bound = cfg.max_sources;
    let failure = |i: u32| SecurityEvent::AuthFailed {
        source: IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i)),
        account: None,
        reason: if i % 2 == 0 {
            AuthFailure::WrongPassword
        } else {
            AuthFailure::Other
        },
        user_agent: None,
        protocol: None,
    };
    // Counted from before the machine exists: it sizes its table for the bound up front.
    let before = LIVE.load(Ordering::Relaxed);
    let mut m = Machine::new(cfg);
    // One under the bound (reaching it evicts), two failures each.
    let full = bound as u32 - 1;
    for round in 0..2u64 {
        for i in 0..full {
            m.on_event(&failure(i), 1_795_000_000 + round);
        }
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "full: {} sources tracked, {} bytes of heap, {:.1} bytes per source",
        m.tracked(),
        bytes,
        bytes as f64 / m.tracked() as f64
    );
    // A flood of new sources, one failure each, a second apart per thousand.
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    for i in 0..4 * bound as u32 {
        m.on_event(&failure(full + i), 1_795_000_002 + u64::from(i / 1000));
    }
    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "flood of {} new sources: peak {} bytes of heap, {:.1} bytes per source of the bound ({bound})",
        4 * bound,
        peak,
        peak as f64 / bound as f64
    );
}
