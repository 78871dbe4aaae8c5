//! Heap bytes per tracked source in the responsive state machine, measured with a counting
//! allocator: as many sources as the machine tracks by default, each with a few failures (the
//! shape of a distributed attack).
//!
//! `cargo run --release -p pbxfw-benches --bin memory-per-source`

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

use pbxfw_core::events::{AuthFailure, SecurityEvent};
use pbxfw_core::responsive::{Config, Machine};
use pbxfw_core::Policy;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
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
    let sources = cfg.max_sources as u32;
    let mut m = Machine::new(cfg);
    let before = LIVE.load(Ordering::Relaxed);
    for round in 0..2u64 {
        for i in 0..sources {
            let e = SecurityEvent::AuthFailed {
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
            m.on_event(&e, 1_795_000_000 + round);
        }
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "{} sources tracked, {} bytes of heap, {:.1} bytes per source",
        m.tracked(),
        bytes,
        bytes as f64 / m.tracked() as f64
    );
}
